//! The flow model: nodes of each kind, flows, the set of flows, and load problems.

use super::prompt::Prompt;
pub use crate::config::Whisper;
use crate::domain::is_ident;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// Node kinds, as written in flow files.
pub const KINDS: &[&str] = &[
    "menu",
    "say",
    "transfer",
    "ticket",
    "hours",
    "voicemail",
    "notify",
    "hangup",
    "goto",
    "entry",
    "shopping_dollars",
    "external_ticket",
];

/// The node every internal error is routed to: an apology and the safe route.
pub const ERROR_ENTRY: &str = "common.error";

/// Placeholders a prompt may use; filled from configuration and the call.
pub const PROMPT_PLACEHOLDERS: &[&str] = &[
    "store_name",
    "brand",
    "website",
    "texting_number",
    "hours",
    "ticket_number",
    "callback_by",
    "review_days",
    "grace_days",
];

/// Placeholders a notification may use, beyond those of prompts.
pub const NOTIFY_PLACEHOLDERS: &[&str] = &["caller", "call_sid", "store_name", "ticket_number"];

/// Call variables an `external_ticket` node sets for the prompts after it.
pub const EXTERNAL_TICKET_VARS: &[(&str, VarKind)] = &[
    ("existing_ticket", VarKind::Ticket),
    ("ticket_logged", VarKind::Date),
    ("ticket_due", VarKind::DateTime),
];

/// The call variable every ticket sets: when it is due, RFC 3339 (`{callback_by}` says it).
pub const TICKET_DUE_VAR: &str = "ticket_due";

/// Where a queue transfer goes when the caller hangs up while waiting, unless it names
/// another node in `abandoned`.
pub const ABANDONED_IN_QUEUE: &str = "common.abandoned_in_queue";

/// How a call variable is stored and read out. Prompts say `{var.NAME}` in words;
/// tickets and notifications carry the stored form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarKind {
    /// `2026-03-05`; said "March 5th, 2026".
    Date,
    /// RFC 3339 UTC; said as a time and date in the Guest Care time zone.
    DateTime,
    /// `+12045551234`; said digit by digit.
    Phone,
    /// Keypad digits; said one by one.
    Digits,
    /// A whole number, said as such.
    Number,
    /// `GC-000123`; said "G C 0 0 0 1 2 3".
    Ticket,
    /// Free text (a menu's `set`).
    Text,
    /// A link (a recording); never said.
    Url,
}

/// A node's full name.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct NodeRef {
    /// Flow (file stem).
    pub flow: String,
    /// Node id within the flow.
    pub node: String,
}

impl NodeRef {
    /// Resolves a reference as written in a flow file: `node` within `flow`, or `flow.node`.
    /// The parts are not checked here.
    pub fn relative(v: &str, flow: &str) -> Self {
        match v.split_once('.') {
            Some((f, n)) => Self {
                flow: f.into(),
                node: n.into(),
            },
            None => Self {
                flow: flow.into(),
                node: v.into(),
            },
        }
    }

    /// Parses `flow.node`, the form used in webhook URLs.
    pub fn parse_qualified(raw: &str) -> Option<Self> {
        let (flow, node) = raw.split_once('.')?;
        (is_ident(flow) && is_ident(node)).then(|| Self {
            flow: flow.into(),
            node: node.into(),
        })
    }
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.flow, self.node)
    }
}

/// A menu: a prompt, keypad options, and what to do on no or wrong input.
#[derive(Debug, Clone)]
pub struct Menu {
    /// Spoken while waiting for a key.
    pub prompt: Prompt,
    /// Key → node.
    pub options: Vec<(char, NodeRef)>,
    /// Key → the concern in a few words (`label`), for the agent who takes a transfer.
    pub labels: BTreeMap<char, String>,
    /// Key → call variables the choice sets (`set = { paid = "yes" }`).
    pub sets: BTreeMap<char, Vec<(String, String)>>,
    /// Said before the prompt is repeated after silence.
    pub no_input: Prompt,
    /// Said before the prompt is repeated after a wrong key.
    pub invalid: Prompt,
    /// Where the caller goes after the last failed attempt.
    pub fallback: NodeRef,
    /// Seconds to wait for a key.
    pub timeout: u32,
    /// Attempts before the fallback.
    pub attempts: u32,
}

/// A transfer to a named target.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// Target name from configuration.
    pub target: String,
    /// Where the caller goes when Guest Care is closed.
    pub closed: NodeRef,
    /// Where the caller goes when the transfer fails.
    pub failed: NodeRef,
    /// What callers hear while they wait in a queue.
    pub wait_message: Option<Prompt>,
    /// Queues: where the call goes when the caller hangs up while waiting (a ticket to
    /// call them back); `None` for other targets.
    pub abandoned: Option<NodeRef>,
    /// What the agent hears before the guest is connected.
    pub whisper: Whisper,
}

/// A voicemail: prompt, recording, and the ticket to open when the call has none.
#[derive(Debug, Clone)]
pub struct Voicemail {
    /// Said before the beep.
    pub prompt: Prompt,
    /// Longest recording in seconds; configuration's default when unset.
    pub max_length: Option<u32>,
    /// Category and reason of the ticket opened before the tone when the call has none;
    /// `None` when a later ticket node opens it.
    pub ticket: Option<(String, Prompt)>,
    /// Call variable that keeps the recording's URL.
    pub save_as: Option<String>,
    /// Where the call goes after the recording.
    pub next: NodeRef,
}

/// What an entry node collects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryFormat {
    /// A date as MMDDYYYY, not in the future, not older than `max_age_years`.
    Date,
    /// `min_digits` to `max_digits` digits, finished with `#`.
    Digits,
    /// A 10-digit North American number.
    Phone,
}

/// Collects digits, reads them back and asks the caller to confirm.
#[derive(Debug, Clone)]
pub struct Entry {
    /// What to enter (with an example).
    pub prompt: Prompt,
    /// What is collected.
    pub format: EntryFormat,
    /// The call variable that keeps the confirmed value.
    pub var: String,
    /// Fewest digits (digits format).
    pub min_digits: u32,
    /// Most digits.
    pub max_digits: u32,
    /// Read-back, with `{value}`: 1 = correct, 2 = enter again.
    pub confirm: Prompt,
    /// Phone only: offer the caller ID first, read back masked as `{value}`.
    pub confirm_caller: Option<Prompt>,
    /// Why an entry was refused, by reason: `length`, and for dates `not_a_date`,
    /// `future`, `too_old`.
    pub errors: BTreeMap<String, Prompt>,
    /// Said before asking again after silence.
    pub no_input: Prompt,
    /// Said before asking again after a wrong key at the read-back.
    pub invalid: Prompt,
    /// Where the caller goes after the last failed attempt.
    pub fallback: NodeRef,
    /// Failed attempts before the fallback.
    pub attempts: u32,
    /// Seconds to wait for the first key.
    pub timeout: u32,
    /// Dates: how many years back are accepted.
    pub max_age_years: u32,
    /// Where the call goes once the value is confirmed.
    pub next: NodeRef,
}

/// The warranty shopping-dollars rule, from a purchase date and a payment answer.
#[derive(Debug, Clone)]
pub struct ShoppingDollars {
    /// Variable with the purchase date.
    pub date_var: String,
    /// Variable with the payment answer (`yes` when paid).
    pub paid_var: String,
    /// Variable that keeps the days since purchase.
    pub days_var: String,
    /// Days ≤ review days.
    pub within_review: NodeRef,
    /// Past the review period, no payment yet.
    pub unpaid: NodeRef,
    /// Paid, within the grace days after the review period.
    pub grace: NodeRef,
    /// Paid, past the grace days: overdue.
    pub overdue: NodeRef,
}

/// Opens, finds or escalates a ticket that follows a partner's ticket number.
#[derive(Debug, Clone)]
pub struct ExternalTicket {
    /// Ticket category.
    pub category: String,
    /// Variable with the partner's ticket number.
    pub var: String,
    /// Reason of a new ticket.
    pub reason: Prompt,
    /// A new ticket is due this many hours after it is opened.
    pub due_hours: u32,
    /// No open ticket yet: one was opened.
    pub new: NodeRef,
    /// An open ticket, not yet due: the call is linked to it.
    pub pending: NodeRef,
    /// An open ticket past due: it is escalated and the call linked.
    pub overdue: NodeRef,
    /// A ticket already escalated: the call is linked.
    pub escalated: NodeRef,
}

/// What a node does.
#[derive(Debug, Clone)]
pub enum Node {
    /// Wait for a key.
    Menu(Menu),
    /// Say something and go on.
    Say {
        /// Spoken text.
        text: Prompt,
        /// Next node.
        next: NodeRef,
    },
    /// Transfer the caller.
    Transfer(Transfer),
    /// Open a ticket and go on.
    Ticket {
        /// Category.
        category: String,
        /// Reason.
        reason: Prompt,
        /// Variable with a recording the ticket carries.
        recording_var: Option<String>,
        /// Next node.
        next: NodeRef,
    },
    /// Collect digits with a read-back.
    Entry(Entry),
    /// Branch on the shopping-dollars rule.
    ShoppingDollars(ShoppingDollars),
    /// Open, find or escalate a partner-linked ticket.
    ExternalTicket(ExternalTicket),
    /// Branch on Guest Care hours.
    Hours {
        /// When open.
        open: NodeRef,
        /// When closed.
        closed: NodeRef,
    },
    /// Record a voicemail.
    Voicemail(Voicemail),
    /// Queue an e-mail to a named contact and go on.
    Notify {
        /// Contact name.
        contact: String,
        /// Subject.
        subject: Prompt,
        /// Body.
        body: Prompt,
        /// Held until the call's voicemail is recorded (or the call ends), and sent with
        /// the recording's link.
        attach_recording: bool,
        /// Next node.
        next: NodeRef,
    },
    /// Say goodbye and hang up.
    Hangup {
        /// Spoken before hanging up.
        text: Option<Prompt>,
    },
    /// Go to another node, in this or another flow.
    Goto {
        /// The node.
        next: NodeRef,
    },
}

impl Node {
    /// The kind's name as written in flow files.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Menu(_) => "menu",
            Node::Say { .. } => "say",
            Node::Transfer(_) => "transfer",
            Node::Ticket { .. } => "ticket",
            Node::Hours { .. } => "hours",
            Node::Voicemail(_) => "voicemail",
            Node::Notify { .. } => "notify",
            Node::Hangup { .. } => "hangup",
            Node::Goto { .. } => "goto",
            Node::Entry(_) => "entry",
            Node::ShoppingDollars(_) => "shopping_dollars",
            Node::ExternalTicket(_) => "external_ticket",
        }
    }

    /// Nodes this one can lead to.
    pub fn exits(&self) -> Vec<&NodeRef> {
        match self {
            Node::Menu(m) => m
                .options
                .iter()
                .map(|(_, r)| r)
                .chain(std::iter::once(&m.fallback))
                .collect(),
            Node::Say { next, .. }
            | Node::Ticket { next, .. }
            | Node::Notify { next, .. }
            | Node::Goto { next } => vec![next],
            Node::Transfer(t) => [&t.closed, &t.failed]
                .into_iter()
                .chain(t.abandoned.as_ref())
                .collect(),
            Node::Hours { open, closed } => vec![open, closed],
            Node::Voicemail(v) => vec![&v.next],
            Node::Hangup { .. } => vec![],
            Node::Entry(e) => vec![&e.next, &e.fallback],
            Node::ShoppingDollars(d) => vec![&d.within_review, &d.unpaid, &d.grace, &d.overdue],
            Node::ExternalTicket(t) => vec![&t.new, &t.pending, &t.overdue, &t.escalated],
        }
    }

    /// The exits taken within the same webhook, without waiting for the caller or the
    /// platform: a transfer goes on to `closed` at once when Guest Care is closed.
    pub fn immediate_exits(&self) -> Vec<&NodeRef> {
        match self {
            Node::Say { next, .. }
            | Node::Ticket { next, .. }
            | Node::Notify { next, .. }
            | Node::Goto { next } => vec![next],
            Node::Hours { open, closed } => vec![open, closed],
            Node::Transfer(t) => vec![&t.closed],
            Node::ShoppingDollars(d) => vec![&d.within_review, &d.unpaid, &d.grace, &d.overdue],
            Node::ExternalTicket(t) => vec![&t.new, &t.pending, &t.overdue, &t.escalated],
            Node::Menu(_) | Node::Voicemail(_) | Node::Hangup { .. } | Node::Entry(_) => vec![],
        }
    }
}

/// One loaded flow file.
#[derive(Debug, Clone)]
pub struct Flow {
    /// File stem.
    pub name: String,
    /// Where the file was read from.
    pub file: PathBuf,
    /// Entry node, for flows that answer a line.
    pub start: Option<String>,
    /// Nodes by id.
    pub nodes: BTreeMap<String, Node>,
    /// Content hash of the file.
    pub version: String,
}

/// All flows, validated together.
#[derive(Debug, Clone)]
pub struct FlowSet {
    /// Flows by name.
    pub flows: BTreeMap<String, Flow>,
    /// Content hash of every file, the version recorded with each call.
    pub version: String,
    /// Call variables the flows set, and how each is stored and said.
    pub vars: BTreeMap<String, VarKind>,
}

impl FlowSet {
    /// Looks up a node.
    pub fn node(&self, r: &NodeRef) -> Option<&Node> {
        self.flows.get(&r.flow)?.nodes.get(&r.node)
    }

    /// The start node of a flow.
    pub fn start(&self, flow: &str) -> Option<NodeRef> {
        let f = self.flows.get(flow)?;
        f.start.as_ref().map(|s| NodeRef {
            flow: flow.into(),
            node: s.clone(),
        })
    }
}

/// One problem found in a flow file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File the problem is in.
    pub file: String,
    /// Line, 1-based, when known.
    pub line: Option<usize>,
    /// Node id, when the problem belongs to one.
    pub node: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(n) = &self.node {
            write!(f, ": node `{n}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found while loading flows.
#[derive(Debug, Clone)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            writeln!(f, "{p}")?;
        }
        write!(f, "{} problem(s) in flows", self.0.len())
    }
}

impl std::error::Error for Problems {}
