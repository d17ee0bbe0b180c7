//! What managers read: the filters of the lists and the views of calls, steps, tickets
//! and notifications.

use super::CallerMatch;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Filters of the call list.
#[derive(Debug, Clone, Default)]
pub struct CallQuery {
    /// Calls started at or after.
    pub since: Option<DateTime<Utc>>,
    /// Calls started before.
    pub until: Option<DateTime<Utc>>,
    /// `guest_care` or `store`.
    pub line: Option<String>,
    /// Store name (store lines).
    pub store: Option<String>,
    /// Exact outcome, e.g. `voicemail`; a trailing `*` matches a prefix (`transferred:*`).
    pub outcome: Option<String>,
    /// Calls with a ticket of this category.
    pub category: Option<String>,
    /// Calls from this caller.
    pub caller: Option<CallerMatch>,
    /// Page size.
    pub limit: u32,
    /// Keyset cursor: start time and call id of the last call of the previous page.
    pub after: Option<(i64, String)>,
}

/// Filters of the ticket list.
#[derive(Debug, Clone, Default)]
pub struct TicketQuery {
    /// `open`, …
    pub status: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// Page size.
    pub limit: u32,
    /// Keyset cursor: id of the last ticket of the previous page.
    pub before_id: Option<i64>,
    /// Only tickets still open or escalated and due at or before this time.
    pub overdue_at: Option<DateTime<Utc>>,
    /// A partner's ticket number.
    pub external_ref: Option<String>,
    /// Tickets of this caller.
    pub caller: Option<CallerMatch>,
    /// Tickets assigned to this person.
    pub assignee: Option<String>,
    /// Only tickets not resolved (open or escalated).
    pub unresolved: bool,
}

/// A call as managers read it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallView {
    /// Call id.
    pub call_sid: String,
    /// `guest_care` or `store`.
    pub line: String,
    /// Store name.
    pub store_name: Option<String>,
    /// Caller number.
    pub from: String,
    /// Called number.
    pub to: String,
    /// Flow and version.
    pub flow: String,
    /// Content hash of the flows.
    pub flow_version: String,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// End time.
    pub ended_at: Option<DateTime<Utc>>,
    /// Latest call status.
    pub status: String,
    /// Duration from the platform.
    pub duration_seconds: Option<i64>,
    /// Outcome, e.g. `transferred:oom`.
    pub outcome: Option<String>,
    /// Voicemail.
    pub recording_url: Option<String>,
    /// Internal errors during the call.
    pub error_count: i64,
    /// The last one.
    pub last_error: Option<String>,
}

/// A step as managers read it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepView {
    /// Time.
    pub at: DateTime<Utc>,
    /// `flow.node`.
    pub node: String,
    /// Node kind.
    pub kind: String,
    /// What the caller heard.
    pub said: String,
    /// Keys pressed.
    pub digits: Option<String>,
    /// What happened.
    pub result: String,
    /// What the step learned (purchase date, days, payment answer, …).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub data: std::collections::BTreeMap<String, String>,
}

/// A ticket as managers read it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TicketView {
    /// `GC-000123`.
    pub number: String,
    /// Category.
    pub category: String,
    /// Reason.
    pub reason: String,
    /// `open`, …
    pub status: String,
    /// Call that opened it.
    pub call_sid: String,
    /// Number to call back.
    pub caller_number: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Voicemail.
    pub recording_url: Option<String>,
    /// A partner's ticket number (Home Service Perks).
    pub external_ref: Option<String>,
    /// When it must be answered by.
    pub due_at: Option<DateTime<Utc>>,
    /// When it was escalated.
    pub escalated_at: Option<DateTime<Utc>>,
    /// The flow node that opened it, e.g. `store.order_ticket` (none for older tickets).
    pub node: Option<String>,
    /// Who works it.
    pub assignee: Option<String>,
    /// How it was resolved.
    pub resolution: Option<String>,
    /// When it was resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// When a manager last changed it.
    pub updated_at: Option<DateTime<Utc>>,
    /// Open (or escalated) past its due time.
    pub overdue: bool,
    /// In a call's detail: `opened` by this call, or `linked` / `escalated` by it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relation: Option<String>,
}

impl TicketView {
    /// Sets `overdue`: still open or escalated, and past its due time at `now`.
    pub fn mark_overdue(&mut self, now: DateTime<Utc>) {
        self.overdue = matches!(self.status.as_str(), "open" | "escalated")
            && self.due_at.is_some_and(|d| d <= now);
    }
}

/// An e-mail and how its delivery went.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NotificationView {
    /// Notification id; its e-mail's Message-ID is `<notification-ID@the sender's domain>`.
    pub id: i64,
    /// The call that queued it.
    pub call_sid: String,
    /// Contact name.
    pub contact: String,
    /// Address.
    pub address: String,
    /// Subject.
    pub subject: String,
    /// Body.
    pub body: String,
    /// `queued`, `sent` or `failed`.
    pub status: String,
    /// Ticket it is about.
    pub ticket: Option<String>,
    /// Times the outbox has tried to send it.
    pub attempts: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When the SMTP server accepted it.
    pub sent_at: Option<DateTime<Utc>>,
    /// While queued: when it is tried next (it may wait for the call's voicemail).
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// A call with everything it wrote.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallDetail {
    /// The call.
    #[serde(flatten)]
    pub call: CallView,
    /// Its steps, in order.
    pub steps: Vec<StepView>,
    /// Its tickets.
    pub tickets: Vec<TicketView>,
    /// Its queued notifications.
    pub notifications: Vec<NotificationView>,
}

/// Where calls, steps, tickets and settings are kept.
/// What a retention sweep changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Forgotten {
    /// Calls whose caller number was masked.
    pub calls: u64,
    /// Recordings removed (from calls and tickets).
    pub recordings: u64,
}
