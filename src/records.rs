//! What a call step writes: the records the flow engine produces and storage commits.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One record produced by a step, committed in order in one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A node visited: what was said, what was pressed, what happened.
    Step(StepRecord),
    /// A Service Desk ticket for the call; it becomes the call's current ticket.
    Ticket {
        /// Category such as `Initial`, `Follow-Up`, `OOM`, `Shopping Dollars`.
        category: String,
        /// Why the ticket was opened.
        reason: String,
        /// A partner's ticket number this ticket follows (Home Service Perks).
        external_ref: Option<String>,
        /// When the ticket must be answered by.
        due_at: Option<DateTime<Utc>>,
        /// A recording the ticket carries from the start.
        recording_url: Option<String>,
        /// The flow node that opened it (`store.order_ticket`): a repeat caller's call on
        /// the same path is linked to the open ticket instead of opening another.
        #[serde(default)]
        node: Option<String>,
    },
    /// The call concerns an existing ticket (of an earlier call); it becomes the call's
    /// current ticket.
    LinkTicket {
        /// Ticket id.
        ticket_id: i64,
        /// `linked`, `escalated`, or `repeat` (the caller's open ticket on the same path).
        relation: String,
    },
    /// An open ticket is escalated.
    Escalate {
        /// Ticket id.
        ticket_id: i64,
    },
    /// An e-mail queued for a named contact; `{ticket_number}` is filled in at commit.
    Notification {
        /// Contact name from configuration.
        contact: String,
        /// Its e-mail address.
        address: String,
        /// Subject line.
        subject: String,
        /// Body text.
        body: String,
        /// Sent with the call's voicemail link: held until the voicemail is recorded, the
        /// call ends, or this time, whichever comes first.
        #[serde(default)]
        recording_wait_until: Option<DateTime<Utc>>,
    },
    /// A voicemail, attached to the call and its current ticket.
    Recording {
        /// Recording URL from the platform.
        url: String,
        /// Length in seconds.
        duration_seconds: Option<i64>,
    },
    /// The call's outcome so far; `replace = false` keeps an earlier outcome.
    Outcome {
        /// e.g. `transferred:oom`, `voicemail`, `self_service`.
        value: String,
        /// Whether this replaces an outcome already recorded.
        replace: bool,
    },
}

/// A node the call passed through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Qualified node id, `flow.node`.
    pub node: String,
    /// Node kind (`menu`, `say`, …) or `error`.
    pub kind: String,
    /// Text spoken to the caller at this node.
    pub said: String,
    /// Keys pressed, when the step answers a menu.
    pub digits: Option<String>,
    /// What happened, e.g. `chose 1`, `no input (attempt 2)`, `busy`.
    pub result: String,
    /// What the step learned, as named values (a purchase date, days, a payment answer).
    pub data: BTreeMap<String, String>,
}

/// An open ticket found by its partner ticket number, for the flow engine to decide on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingTicket {
    /// Ticket id.
    pub id: i64,
    /// `open` or `escalated`.
    pub status: String,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// When it is due.
    pub due_at: Option<DateTime<Utc>>,
}
