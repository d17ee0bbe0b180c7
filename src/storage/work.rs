//! What managers work with beyond the call records: tickets they change, the audit trail
//! of those changes, and the outbox of e-mails.

use super::{NotificationView, StoreResult, TicketView};
use crate::domain::TicketNumber;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// A caller number to search by: its last four digits, and the whole number when given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerMatch {
    /// The last four digits.
    pub last4: String,
    /// The whole number as stored (`+12045551234`), or `None` to match by the last four.
    pub full: Option<String>,
}

impl CallerMatch {
    /// Parses what a manager types: four digits, or a whole number in any usual form
    /// (`+1 204-555-1234`, `2045551234`); a 10-digit number is taken as North American.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
        let junk = raw
            .chars()
            .any(|c| !(c.is_ascii_digit() || " +-().".contains(c)));
        let full = match digits.len() {
            _ if junk => None,
            4 => {
                return Ok(Self {
                    last4: digits,
                    full: None,
                })
            }
            10 => Some(format!("+1{digits}")),
            7..=15 => Some(format!("+{digits}")),
            _ => None,
        };
        match full {
            Some(full) => Ok(Self {
                last4: digits[digits.len() - 4..].to_string(),
                full: Some(full),
            }),
            None => Err(format!(
                "caller must be a whole phone number (+12045551234) or its last 4 digits, not {raw:?}"
            )),
        }
    }
}

/// A change to a ticket, by someone.
#[derive(Debug, Clone, Default)]
pub struct TicketChange {
    /// Who makes it (shown in the audit trail).
    pub by: String,
    /// `open` or `resolved`.
    pub status: Option<String>,
    /// Required when resolving: how it was resolved.
    pub resolution: Option<String>,
    /// `Some(None)` unassigns.
    pub assignee: Option<Option<String>>,
    /// A note for the trail.
    pub note: Option<String>,
}

/// Text a person wrote: trimmed, 1 to `max` characters, no control characters but line
/// breaks.
pub fn checked_text(value: &str, field: &str, max: usize) -> Result<String, String> {
    let t = value.trim();
    if t.is_empty() || t.chars().count() > max {
        return Err(format!("{field} must be 1 to {max} characters"));
    }
    if t.chars().any(|c| c.is_control() && c != '\n') {
        return Err(format!("{field} may not hold control characters"));
    }
    Ok(t.to_string())
}

impl TicketChange {
    /// A change as a person asks for it (API or console), checked: who, a status of `open`
    /// or `resolved` (a resolution goes with resolving, and only with it), and at least
    /// one thing to change. `assignee: Some(None)` unassigns.
    pub fn checked(
        by: &str,
        status: Option<&str>,
        resolution: Option<&str>,
        assignee: Option<Option<&str>>,
        note: Option<&str>,
    ) -> Result<Self, String> {
        let by = checked_text(by, "by", 100)?;
        let status = match status {
            None => None,
            Some(s @ ("open" | "resolved")) => Some(s.to_string()),
            Some(_) => {
                return Err("status must be open or resolved (escalation comes from calls)".into())
            }
        };
        let resolution = resolution
            .map(|r| checked_text(r, "resolution", 2000))
            .transpose()?;
        match (status.as_deref(), &resolution) {
            (Some("resolved"), None) => {
                return Err("resolving a ticket needs a `resolution`: how it was resolved".into())
            }
            (Some("open") | None, Some(_)) => {
                return Err("`resolution` goes with \"status\": \"resolved\"".into())
            }
            _ => {}
        }
        let assignee = assignee
            .map(|a| a.map(|a| checked_text(a, "assignee", 100)).transpose())
            .transpose()?;
        let note = note.map(|n| checked_text(n, "note", 4000)).transpose()?;
        if status.is_none() && assignee.is_none() && note.is_none() {
            return Err("nothing to change: give status, assignee or note".into());
        }
        Ok(Self {
            by,
            status,
            resolution,
            assignee,
            note,
        })
    }
}

/// What a change does to a ticket as it stands, for a backend to apply: the status to set
/// (with the resolution when resolving), the assignee to set, and the trail's entries.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PlannedChange {
    /// `resolved` or `open`, when it changes (resolving again records a new resolution).
    pub(crate) status: Option<String>,
    /// The resolution, when resolving.
    pub(crate) resolution: String,
    /// The assignee, when it changes (`Some(None)` unassigns).
    pub(crate) assignee: Option<Option<String>>,
    /// `(action, detail)` entries of the trail, in order.
    pub(crate) events: Vec<(&'static str, String)>,
}

impl TicketChange {
    /// What this change does to a ticket whose status and assignee are these.
    pub(crate) fn plan(&self, old_status: &str, old_assignee: &Option<String>) -> PlannedChange {
        let mut plan = PlannedChange {
            status: None,
            resolution: self.resolution.clone().unwrap_or_default(),
            assignee: None,
            events: Vec::new(),
        };
        if let Some(status) = &self.status {
            if status != old_status || status == "resolved" {
                plan.events.push(if status == "resolved" {
                    (
                        "status",
                        format!("{old_status} -> resolved: {}", plan.resolution),
                    )
                } else {
                    ("status", format!("{old_status} -> {status}"))
                });
                plan.status = Some(status.clone());
            }
        }
        if let Some(assignee) = &self.assignee {
            if assignee != old_assignee {
                let shown = |a: &Option<String>| a.clone().unwrap_or_else(|| "(nobody)".into());
                plan.events.push((
                    "assignee",
                    format!("{} -> {}", shown(old_assignee), shown(assignee)),
                ));
                plan.assignee = Some(assignee.clone());
            }
        }
        if let Some(note) = &self.note {
            plan.events.push(("note", note.clone()));
        }
        plan
    }
}

/// An overdue ticket the sweep found, as its e-mail tells it.
pub(crate) struct Overdue {
    pub(crate) number: TicketNumber,
    pub(crate) category: String,
    pub(crate) reason: String,
    pub(crate) status: String,
    pub(crate) assignee: Option<String>,
    pub(crate) caller: String,
    pub(crate) opened: DateTime<Utc>,
    pub(crate) due: DateTime<Utc>,
    pub(crate) call_sid: String,
}

impl Overdue {
    /// The e-mail's subject and body.
    pub(crate) fn email(&self) -> (String, String) {
        let number = self.number;
        let category = &self.category;
        let subject = format!("Overdue {category} ticket {number}: not resolved by its due time");
        let body = format!(
            "Ticket {number} is still unresolved past its due time.\n\
             Category: {category}\nReason: {}\nStatus: {}\nAssigned to: {}\n\
             Caller: {}\nOpened: {}\nDue: {}\nCall: {}\n\
             Please follow up with the guest and resolve the ticket.",
            self.reason,
            self.status,
            self.assignee.as_deref().unwrap_or("nobody"),
            self.caller,
            self.opened.to_rfc3339(),
            self.due.to_rfc3339(),
            self.call_sid,
        );
        (subject, body)
    }
}

/// One entry of a ticket's audit trail.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TicketEvent {
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub by: String,
    /// `note`, `status` or `assignee`.
    pub action: String,
    /// The note, or what changed (`open -> resolved: refund issued`).
    pub detail: String,
}

/// A call that opened a ticket or was linked to it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TicketCall {
    /// Call id.
    pub call_sid: String,
    /// `opened`, `linked`, `repeat` (the caller called again on the same path while it was
    /// open) or `escalated`.
    pub relation: String,
    /// When the call started.
    pub started_at: DateTime<Utc>,
    /// The call's outcome.
    pub outcome: Option<String>,
    /// The call's voicemail.
    pub recording_url: Option<String>,
}

/// A ticket with its trail, its calls and its e-mails (`GET /api/tickets/{number}`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TicketDetail {
    /// The ticket.
    #[serde(flatten)]
    pub ticket: TicketView,
    /// Its audit trail, oldest first.
    pub events: Vec<TicketEvent>,
    /// Calls about it, the one that opened it first.
    pub calls: Vec<TicketCall>,
    /// E-mails about it.
    pub notifications: Vec<NotificationView>,
}

/// Filters of the notification list.
#[derive(Debug, Clone, Default)]
pub struct NotificationQuery {
    /// `queued`, `sent` or `failed`.
    pub status: Option<String>,
    /// Page size.
    pub limit: u32,
    /// Keyset cursor: id of the last notification of the previous page.
    pub before_id: Option<i64>,
}

/// A notification claimed by the outbox worker for sending.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    /// Notification id (the Message-ID is made from it).
    pub id: i64,
    /// Contact name.
    pub contact: String,
    /// Address.
    pub address: String,
    /// Subject.
    pub subject: String,
    /// Body.
    pub body: String,
    /// Attempts so far, this one included.
    pub attempts: u32,
    /// Whether the call's voicemail link goes with it.
    pub attach_recording: bool,
    /// The call's voicemail, if any.
    pub recording_url: Option<String>,
}

/// Tickets that managers work, the outbox of e-mails and the overdue sweep: what the
/// manager API and the background jobs change, off the call path.
#[async_trait]
pub trait WorkStore: Send + Sync + 'static {
    /// A ticket with its trail, calls and e-mails.
    async fn get_ticket(&self, number: TicketNumber) -> StoreResult<Option<TicketDetail>>;
    /// Applies a manager's change and records it in the trail; `None` when there is no
    /// such ticket.
    async fn update_ticket(
        &self,
        number: TicketNumber,
        change: &TicketChange,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<TicketDetail>>;
    /// One page of notifications, newest first.
    async fn list_notifications(&self, q: &NotificationQuery)
        -> StoreResult<Vec<NotificationView>>;
    /// Queues a notification again, whatever its status; `None` when there is none.
    async fn resend_notification(
        &self,
        id: i64,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<NotificationView>>;
    /// Claims up to `limit` queued notifications due at `now` until `lease_until`, counting
    /// an attempt for each.
    async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxMessage>>;
    /// A claimed notification was accepted by the SMTP server.
    async fn outbox_sent(&self, id: i64, at: DateTime<Utc>) -> StoreResult<()>;
    /// A claimed notification was not sent: tried again at `retry_at`, or `failed` when
    /// `None`.
    async fn outbox_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> StoreResult<()>;
    /// Queues one e-mail to `contact` for each open or escalated ticket of `categories`
    /// past due at `now` that has not had one, and marks the ticket; returns how many.
    async fn sweep_overdue(
        &self,
        now: DateTime<Utc>,
        categories: &[String],
        contact: &str,
        address: &str,
    ) -> StoreResult<u64>;
}
