//! Flows: the call menus as data. Loading and validation live here; the step function in `engine`.
//!
//! A flow file `ivr_flows/NAME.toml` holds `[nodes.ID]` tables, each with a `kind`. A node is
//! referred to as `ID` within its own flow or `FLOW.ID` from any flow.

pub mod engine;

use crate::config::{Config, Target};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

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

/// Ticket categories of the Service Desk.
pub const CATEGORIES: &[&str] = &["Initial", "Follow-Up", "OOM", "Shopping Dollars"];

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
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

use crate::domain::is_ident;

/// A menu: a prompt, keypad options, and what to do on no or wrong input.
#[derive(Debug, Clone)]
pub struct Menu {
    /// Spoken while waiting for a key.
    pub prompt: String,
    /// Key → node.
    pub options: Vec<(char, NodeRef)>,
    /// Key → call variables the choice sets (`set = { paid = "yes" }`).
    pub sets: BTreeMap<char, Vec<(String, String)>>,
    /// Said before the prompt is repeated after silence.
    pub no_input: String,
    /// Said before the prompt is repeated after a wrong key.
    pub invalid: String,
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
    pub wait_message: Option<String>,
    /// Queues: where the call goes when the caller hangs up while waiting (a ticket to
    /// call them back); `None` for other targets.
    pub abandoned: Option<NodeRef>,
}

/// A voicemail: prompt, recording, and the ticket to open when the call has none.
#[derive(Debug, Clone)]
pub struct Voicemail {
    /// Said before the beep.
    pub prompt: String,
    /// Longest recording in seconds; configuration's default when unset.
    pub max_length: Option<u32>,
    /// Category and reason of the ticket opened before the tone when the call has none;
    /// `None` when a later ticket node opens it.
    pub ticket: Option<(String, String)>,
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
    pub prompt: String,
    /// What is collected.
    pub format: EntryFormat,
    /// The call variable that keeps the confirmed value.
    pub var: String,
    /// Fewest digits (digits format).
    pub min_digits: u32,
    /// Most digits.
    pub max_digits: u32,
    /// Read-back, with `{value}`: 1 = correct, 2 = enter again.
    pub confirm: String,
    /// Phone only: offer the caller ID first, read back masked as `{value}`.
    pub confirm_caller: Option<String>,
    /// Why an entry was refused, by reason: `length`, and for dates `not_a_date`,
    /// `future`, `too_old`.
    pub errors: BTreeMap<String, String>,
    /// Said before asking again after silence.
    pub no_input: String,
    /// Said before asking again after a wrong key at the read-back.
    pub invalid: String,
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
    pub reason: String,
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
        text: String,
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
        reason: String,
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
        subject: String,
        /// Body.
        body: String,
        /// Held until the call's voicemail is recorded (or the call ends), and sent with
        /// the recording's link.
        attach_recording: bool,
        /// Next node.
        next: NodeRef,
    },
    /// Say goodbye and hang up.
    Hangup {
        /// Spoken before hanging up.
        text: Option<String>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[allow(dead_code)]
    description: Option<String>,
    start: Option<toml::Spanned<String>>,
    #[serde(default)]
    nodes: BTreeMap<String, toml::Spanned<RawNode>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    kind: Option<String>,
    prompt: Option<String>,
    text: Option<String>,
    options: Option<Vec<RawOption>>,
    no_input: Option<String>,
    invalid: Option<String>,
    fallback: Option<String>,
    timeout: Option<u32>,
    attempts: Option<u32>,
    next: Option<String>,
    target: Option<String>,
    closed: Option<String>,
    open: Option<String>,
    failed: Option<String>,
    wait_message: Option<String>,
    category: Option<String>,
    reason: Option<String>,
    max_length: Option<u32>,
    ticket_category: Option<String>,
    ticket_reason: Option<String>,
    contact: Option<String>,
    subject: Option<String>,
    body: Option<String>,
    format: Option<String>,
    var: Option<String>,
    min_digits: Option<u32>,
    max_digits: Option<u32>,
    confirm: Option<String>,
    confirm_caller: Option<String>,
    errors: Option<BTreeMap<String, String>>,
    max_age_years: Option<u32>,
    date_var: Option<String>,
    paid_var: Option<String>,
    days_var: Option<String>,
    within_review: Option<String>,
    unpaid: Option<String>,
    grace: Option<String>,
    overdue: Option<String>,
    new: Option<String>,
    pending: Option<String>,
    escalated: Option<String>,
    due_hours: Option<u32>,
    save_as: Option<String>,
    recording_var: Option<String>,
    abandoned: Option<String>,
    attach_recording: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOption {
    digit: String,
    next: String,
    #[serde(default)]
    set: BTreeMap<String, String>,
}

/// Loads and validates every `*.toml` in `dir` against the configuration.
pub fn load_dir(dir: &Path, config: &Config) -> Result<FlowSet, Problems> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            return Err(Problems(vec![Problem {
                file: dir.display().to_string(),
                line: None,
                node: None,
                message: format!("cannot read the flows directory: {e}"),
            }]))
        }
    };
    files.sort();
    let mut sources = Vec::new();
    let mut problems = Vec::new();
    for path in files {
        match std::fs::read_to_string(&path) {
            Ok(text) => sources.push((path, text)),
            Err(e) => problems.push(Problem {
                file: path.display().to_string(),
                line: None,
                node: None,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    load_sources(&sources, config)
}

/// Loads flows from `(path, text)` pairs; the file stem names the flow.
pub fn load_sources(sources: &[(PathBuf, String)], config: &Config) -> Result<FlowSet, Problems> {
    let mut loader = Loader {
        problems: Vec::new(),
        opaque: BTreeMap::new(),
        var_defs: BTreeMap::new(),
        var_uses: Vec::new(),
        config,
    };
    let mut flows = BTreeMap::new();
    let mut lines: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut set_hash = Sha256::new();
    for (path, text) in sources {
        let file = path.display().to_string();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !is_ident(&name) {
            loader.problem(
                &file,
                None,
                None,
                "a flow file name may use only a-z, 0-9 and _".into(),
            );
            continue;
        }
        let raw: RawFile = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                let line = e.span().map(|s| line_of(text, s.start));
                loader.problem(&file, line, None, e.message().to_string());
                continue;
            }
        };
        let file_hash = hex(&Sha256::digest(text.as_bytes()));
        set_hash.update(name.as_bytes());
        set_hash.update(file_hash.as_bytes());
        let mut node_lines = BTreeMap::new();
        let mut nodes = BTreeMap::new();
        for (id, spanned) in raw.nodes {
            let line = line_of(text, spanned.span().start);
            node_lines.insert(id.clone(), line);
            if !is_ident(&id) {
                loader.problem(
                    &file,
                    Some(line),
                    Some(&id),
                    "node ids may use only a-z, 0-9 and _".into(),
                );
                continue;
            }
            let mut ctx = NodeCtx {
                loader: &mut loader,
                file: &file,
                flow: &name,
                id: &id,
                line,
            };
            let raw_node = spanned.into_inner();
            let exits = raw_exits(&raw_node, &name);
            match ctx.build(raw_node) {
                Some(node) => {
                    nodes.insert(id, node);
                }
                None => {
                    // Keep its references, so what lies behind it is still checked.
                    loader.opaque.insert(
                        NodeRef {
                            flow: name.clone(),
                            node: id,
                        },
                        exits,
                    );
                }
            }
        }
        let start = raw.start.map(|s| {
            let line = line_of(text, s.span().start);
            (s.into_inner(), line)
        });
        if let Some((start, line)) = &start {
            if !node_lines.contains_key(start) {
                loader.problem(
                    &file,
                    Some(*line),
                    Some(start),
                    format!("start node `{start}` does not exist"),
                );
            }
        }
        let start = start.map(|(s, _)| s);
        lines.insert(name.clone(), node_lines);
        flows.insert(
            name.clone(),
            Flow {
                name,
                file: path.clone(),
                start,
                nodes,
                version: file_hash[..12].to_string(),
            },
        );
    }
    let set = FlowSet {
        flows,
        version: hex(&set_hash.finalize())[..12].to_string(),
        vars: loader
            .var_defs
            .iter()
            .map(|(k, v)| (k.clone(), v.0))
            .collect(),
    };
    loader.check_graph(&set, &lines);
    loader.check_vars();
    if loader.problems.is_empty() {
        Ok(set)
    } else {
        Err(Problems(loader.problems))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map(|t| t.bytes().filter(|b| *b == b'\n').count() + 1)
        .unwrap_or(1)
}

struct Loader<'a> {
    problems: Vec<Problem>,
    config: &'a Config,
    /// Nodes that failed to build, with the references their raw fields hold.
    opaque: BTreeMap<NodeRef, Vec<NodeRef>>,
    /// Call variables set by nodes: kind, and where first set.
    var_defs: BTreeMap<String, (VarKind, Place)>,
    /// `{var.NAME}` placeholders and where they are used.
    var_uses: Vec<(String, Place)>,
}

/// Prompt placeholders plus `{value}`, the entry being read back.
fn with_value<'p>(p: &[&'p str]) -> Vec<&'p str> {
    let mut v = p.to_vec();
    v.push("value");
    v
}

/// Where something is in the flow files.
#[derive(Debug, Clone)]
struct Place {
    file: String,
    line: usize,
    node: String,
}

/// The node references a raw node's fields hold, as written (defaults included).
fn raw_exits(raw: &RawNode, flow: &str) -> Vec<NodeRef> {
    let resolve = |v: &str| NodeRef::relative(v, flow);
    let mut refs: Vec<NodeRef> = [
        &raw.next,
        &raw.open,
        &raw.fallback,
        &raw.within_review,
        &raw.unpaid,
        &raw.grace,
        &raw.overdue,
        &raw.new,
        &raw.pending,
        &raw.escalated,
    ]
    .into_iter()
    .flatten()
    .map(|v| resolve(v))
    .collect();
    if raw.kind.as_deref() == Some("transfer") {
        refs.push(resolve(raw.closed.as_deref().unwrap_or("common.closed")));
        refs.push(resolve(
            raw.failed.as_deref().unwrap_or("common.transfer_failed"),
        ));
    } else {
        refs.extend(raw.closed.iter().chain(&raw.failed).map(|v| resolve(v)));
    }
    refs.extend(raw.abandoned.iter().map(|v| resolve(v)));
    refs.extend(raw.options.iter().flatten().map(|o| resolve(&o.next)));
    refs
}

impl Loader<'_> {
    fn problem(&mut self, file: &str, line: Option<usize>, node: Option<&str>, message: String) {
        self.problems.push(Problem {
            file: file.into(),
            line,
            node: node.map(str::to_owned),
            message,
        });
    }

    /// Every `{var.NAME}` must be set by some node.
    fn check_vars(&mut self) {
        let uses = std::mem::take(&mut self.var_uses);
        for (name, at) in uses {
            if !self.var_defs.contains_key(&name) {
                let known: Vec<&str> = self.var_defs.keys().map(String::as_str).collect();
                let known = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                self.problem(
                    &at.file,
                    Some(at.line),
                    Some(&at.node),
                    format!("uses {{var.{name}}}, which no node sets; set by the flows: {known}"),
                );
            }
        }
    }

    /// Checks what needs every flow: references, reachability, loops that never wait.
    fn check_graph(&mut self, set: &FlowSet, lines: &BTreeMap<String, BTreeMap<String, usize>>) {
        let where_is = |r: &NodeRef| -> (String, Option<usize>) {
            let file = set
                .flows
                .get(&r.flow)
                .map(|f| f.file.display().to_string())
                .unwrap_or_else(|| format!("{}.toml", r.flow));
            let line = lines.get(&r.flow).and_then(|l| l.get(&r.node)).copied();
            (file, line)
        };
        // Unknown references, from built nodes and from nodes that failed to build.
        let exists = |r: &NodeRef| lines.get(&r.flow).is_some_and(|l| l.contains_key(&r.node));
        let mut refs: Vec<(NodeRef, NodeRef)> = Vec::new();
        for flow in set.flows.values() {
            for (id, node) in &flow.nodes {
                let from = NodeRef {
                    flow: flow.name.clone(),
                    node: id.clone(),
                };
                refs.extend(node.exits().into_iter().map(|e| (from.clone(), e.clone())));
            }
        }
        for (from, exits) in &self.opaque {
            refs.extend(exits.iter().map(|e| (from.clone(), e.clone())));
        }
        for (from, exit) in refs {
            if !exists(&exit) {
                let (file, line) = where_is(&from);
                self.problem(
                    &file,
                    line,
                    Some(&from.node),
                    format!("refers to unknown node `{exit}`"),
                );
            }
        }
        // Entry points the server relies on.
        let mut roots: Vec<NodeRef> = Vec::new();
        for (what, flow) in [
            ("lines.guest_care_flow", &self.config.guest_care_flow),
            ("lines.store_flow", &self.config.store_flow),
        ] {
            match set.start(flow) {
                Some(r) => roots.push(r),
                None => self.problem(
                    &format!("{flow}.toml"),
                    None,
                    None,
                    format!("flow `{flow}` ({what}) must exist and have a `start` node"),
                ),
            }
        }
        match NodeRef::parse_qualified(ERROR_ENTRY) {
            Some(r) if set.node(&r).is_some() => roots.push(r),
            _ => self.problem(
                "common.toml",
                None,
                None,
                format!("node `{ERROR_ENTRY}` (the apology and safe route after an internal error) must exist"),
            ),
        }
        roots.extend(set.flows.keys().filter_map(|f| set.start(f)));
        // Reachability from every entry point, through nodes that failed to build too.
        let mut seen: BTreeSet<NodeRef> = BTreeSet::new();
        let mut stack = roots;
        while let Some(r) = stack.pop() {
            if !seen.insert(r.clone()) {
                continue;
            }
            if let Some(node) = set.node(&r) {
                stack.extend(node.exits().into_iter().cloned());
            } else if let Some(exits) = self.opaque.get(&r) {
                stack.extend(exits.iter().cloned());
            }
        }
        for flow in set.flows.values() {
            for id in flow.nodes.keys() {
                let r = NodeRef {
                    flow: flow.name.clone(),
                    node: id.clone(),
                };
                if !seen.contains(&r) {
                    let (file, line) = where_is(&r);
                    self.problem(
                        &file,
                        line,
                        Some(id),
                        "is unreachable: no start node or other node leads to it".into(),
                    );
                }
            }
        }
        // A chain of nodes that never waits for the caller must end somewhere.
        for flow in set.flows.values() {
            for (id, node) in &flow.nodes {
                if node.immediate_exits().is_empty() {
                    continue;
                }
                let start = NodeRef {
                    flow: flow.name.clone(),
                    node: id.clone(),
                };
                if loops_without_waiting(set, &start) {
                    let (file, line) = where_is(&start);
                    self.problem(
                        &file,
                        line,
                        Some(id),
                        "has no way out: it loops back to itself without waiting for the caller"
                            .into(),
                    );
                }
            }
        }
    }
}

/// Whether following exits taken within one webhook from `start` can come back to `start`.
fn loops_without_waiting(set: &FlowSet, start: &NodeRef) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<NodeRef> = set
        .node(start)
        .map(|n| n.immediate_exits().into_iter().cloned().collect())
        .unwrap_or_default();
    while let Some(r) = stack.pop() {
        if &r == start {
            return true;
        }
        if !seen.insert(r.clone()) {
            continue;
        }
        if let Some(node) = set.node(&r) {
            stack.extend(node.immediate_exits().into_iter().cloned());
        }
    }
    false
}

struct NodeCtx<'a, 'b> {
    loader: &'a mut Loader<'b>,
    file: &'a str,
    flow: &'a str,
    id: &'a str,
    line: usize,
}

impl NodeCtx<'_, '_> {
    fn err(&mut self, message: String) {
        self.loader
            .problem(self.file, Some(self.line), Some(self.id), message);
    }

    fn place(&self) -> Place {
        Place {
            file: self.file.to_string(),
            line: self.line,
            node: self.id.to_string(),
        }
    }

    /// Declares a call variable this node sets; one name has one kind across the flows.
    fn define_var(&mut self, name: &str, kind: VarKind, field: &str) -> Option<String> {
        if !is_ident(name) {
            self.err(format!(
                "`{field}` = {name:?}: a variable name may use only a-z, 0-9 and _"
            ));
            return None;
        }
        match self.loader.var_defs.get(name) {
            Some((k, at)) if *k != kind => {
                let message = format!(
                    "variable `{name}` is set here as {kind:?} but as {k:?} at {}:{}",
                    at.file, at.line
                );
                self.err(message);
                None
            }
            Some(_) => Some(name.to_string()),
            None => {
                let place = self.place();
                self.loader.var_defs.insert(name.to_string(), (kind, place));
                Some(name.to_string())
            }
        }
    }

    /// A variable this node reads; checked against the definitions once all are loaded.
    fn use_var(&mut self, value: Option<String>, field: &str, kind: &str) -> Option<String> {
        let v = self.required(value, field, kind)?;
        if !is_ident(&v) {
            self.err(format!(
                "`{field}` = {v:?}: a variable name may use only a-z, 0-9 and _"
            ));
            return None;
        }
        let place = self.place();
        self.loader.var_uses.push((v.clone(), place));
        Some(v)
    }

    fn required(&mut self, value: Option<String>, field: &str, kind: &str) -> Option<String> {
        match value {
            Some(v) if !v.trim().is_empty() => Some(v),
            _ => {
                self.err(format!("a {kind} node needs `{field}`"));
                None
            }
        }
    }

    fn text(
        &mut self,
        value: Option<String>,
        field: &str,
        kind: &str,
        allowed: &[&str],
    ) -> Option<String> {
        let v = self.required(value, field, kind)?;
        self.placeholders(&v, field, allowed);
        Some(v)
    }

    fn placeholders(&mut self, text: &str, field: &str, allowed: &[&str]) {
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                self.err(format!("`{field}` has a `{{` without a closing `}}`"));
                return;
            };
            let name = &after[..close];
            if let Some(var) = name.strip_prefix("var.") {
                if is_ident(var) {
                    let place = self.place();
                    self.loader.var_uses.push((var.to_string(), place));
                } else {
                    self.err(format!(
                        "`{field}` uses {{{name}}}: a variable name may use only a-z, 0-9 and _"
                    ));
                }
            } else if !allowed.contains(&name) {
                self.err(format!(
                    "`{field}` uses unknown placeholder {{{name}}}; known: {}",
                    allowed.join(", ")
                ));
            } else if name == "ticket_number"
                && !matches!(field, "subject" | "body")
                && !rest[..open].ends_with("ticket ")
            {
                // While the database is unavailable the number is not known yet, and the
                // caller hears "your ticket" in place of "ticket {ticket_number}".
                self.err(format!(
                    "`{field}` must say \"ticket {{ticket_number}}\" so that it still reads well \
                     as \"your ticket\" while the number is not known"
                ));
            }
            rest = &after[close + 1..];
        }
    }

    fn reference(&mut self, value: Option<String>, field: &str, kind: &str) -> Option<NodeRef> {
        let v = self.required(value, field, kind)?;
        self.parse_ref(&v, field)
    }

    fn parse_ref(&mut self, v: &str, field: &str) -> Option<NodeRef> {
        let r = NodeRef::relative(v, self.flow);
        if is_ident(&r.flow) && is_ident(&r.node) {
            Some(r)
        } else {
            self.err(format!(
                "`{field}` = {v:?} is not a node id (`node` or `flow.node`)"
            ));
            None
        }
    }

    fn default_ref(
        &mut self,
        value: Option<String>,
        field: &str,
        default: &str,
    ) -> Option<NodeRef> {
        let v = value.unwrap_or_else(|| default.into());
        self.parse_ref(&v, field)
    }

    fn category(&mut self, value: Option<String>, field: &str, kind: &str) -> Option<String> {
        let c = self.required(value, field, kind)?;
        if CATEGORIES.contains(&c.as_str()) {
            Some(c)
        } else {
            self.err(format!(
                "unknown ticket category {c:?}; known: {}",
                CATEGORIES.join(", ")
            ));
            None
        }
    }

    /// Reports fields set on a node whose kind does not use them.
    fn unused(&mut self, kind: &str, fields: &[(&str, bool)]) {
        for (name, set) in fields {
            if *set {
                self.err(format!("`{name}` does not apply to a {kind} node"));
            }
        }
    }

    fn entry(&mut self, raw: RawNode, p: &[&str]) -> Option<Node> {
        let kind = "entry";
        let format = match raw.format.as_deref() {
            Some("date") => Some(EntryFormat::Date),
            Some("digits") => Some(EntryFormat::Digits),
            Some("phone") => Some(EntryFormat::Phone),
            other => {
                self.err(format!(
                    "an entry node needs `format` = \"date\", \"digits\" or \"phone\", not {other:?}"
                ));
                None
            }
        };
        let prompt = self.text(raw.prompt, "prompt", kind, p);
        let confirm = self.text(raw.confirm, "confirm", kind, &with_value(p));
        let confirm_caller = match raw.confirm_caller {
            Some(t) if format == Some(EntryFormat::Phone) => {
                self.placeholders(&t, "confirm_caller", &with_value(p));
                Some(t)
            }
            Some(_) => {
                self.err("`confirm_caller` applies only to phone entries".into());
                None
            }
            None => None,
        };
        let no_input = self.text(raw.no_input, "no_input", kind, p);
        let invalid = self.text(raw.invalid, "invalid", kind, p);
        let fallback = self.reference(raw.fallback, "fallback", kind);
        let next = self.reference(raw.next, "next", kind);
        let (min_digits, max_digits) = match format {
            Some(EntryFormat::Date) => (8, 8),
            Some(EntryFormat::Phone) => (10, 10),
            _ => (raw.min_digits.unwrap_or(1), raw.max_digits.unwrap_or(20)),
        };
        if format != Some(EntryFormat::Digits)
            && (raw.min_digits.is_some() || raw.max_digits.is_some())
        {
            self.err("`min_digits` and `max_digits` apply only to digits entries".into());
        }
        if !(1..=30).contains(&min_digits) || !(min_digits..=30).contains(&max_digits) {
            self.err("digits entries need 1 ≤ `min_digits` ≤ `max_digits` ≤ 30".into());
        }
        let needed: &[&str] = match format {
            Some(EntryFormat::Date) => &["length", "not_a_date", "future", "too_old"],
            _ => &["length"],
        };
        let errors = raw.errors.unwrap_or_default();
        for n in needed {
            if !errors.contains_key(*n) {
                self.err(format!(
                    "an entry node needs `errors.{n}`, said when the caller's entry is refused for that reason"
                ));
            }
        }
        for (name, text) in &errors {
            if !needed.contains(&name.as_str()) {
                self.err(format!(
                    "`errors.{name}` is not a reason this entry can refuse; reasons: {}",
                    needed.join(", ")
                ));
            }
            self.placeholders(text, "errors", p);
        }
        let var_kind = match format {
            Some(EntryFormat::Date) => VarKind::Date,
            Some(EntryFormat::Phone) => VarKind::Phone,
            _ => VarKind::Digits,
        };
        let var = self
            .required(raw.var, "var", kind)
            .and_then(|v| self.define_var(&v, var_kind, "var"));
        let attempts = raw.attempts.unwrap_or(3);
        if !(1..=5).contains(&attempts) {
            self.err("`attempts` must be 1 to 5".into());
        }
        let timeout = raw.timeout.unwrap_or(10);
        if !(1..=60).contains(&timeout) {
            self.err("`timeout` must be 1 to 60 seconds".into());
        }
        if raw.max_age_years.is_some() && format != Some(EntryFormat::Date) {
            self.err("`max_age_years` applies only to date entries".into());
        }
        Some(Node::Entry(Entry {
            prompt: prompt?,
            format: format?,
            var: var?,
            min_digits,
            max_digits,
            confirm: confirm?,
            confirm_caller,
            errors,
            no_input: no_input?,
            invalid: invalid?,
            fallback: fallback?,
            attempts,
            timeout,
            max_age_years: raw.max_age_years.unwrap_or(5),
            next: next?,
        }))
    }

    fn build(&mut self, raw: RawNode) -> Option<Node> {
        let Some(kind) = raw.kind.clone() else {
            self.err(format!("needs a `kind` ({})", KINDS.join(", ")));
            return None;
        };
        let kind = kind.as_str();
        let used: &[&str] = match kind {
            "menu" => &[
                "prompt", "options", "no_input", "invalid", "fallback", "timeout", "attempts",
            ],
            "say" => &["text", "next"],
            "transfer" => &["target", "closed", "failed", "wait_message", "abandoned"],
            "ticket" => &["category", "reason", "recording_var", "next"],
            "hours" => &["open", "closed"],
            "voicemail" => &[
                "prompt",
                "max_length",
                "ticket_category",
                "ticket_reason",
                "save_as",
                "next",
            ],
            "notify" => &["contact", "subject", "body", "attach_recording", "next"],
            "hangup" => &["text"],
            "goto" => &["next"],
            "entry" => &[
                "prompt",
                "format",
                "var",
                "min_digits",
                "max_digits",
                "confirm",
                "confirm_caller",
                "errors",
                "no_input",
                "invalid",
                "fallback",
                "attempts",
                "timeout",
                "max_age_years",
                "next",
            ],
            "shopping_dollars" => &[
                "date_var",
                "paid_var",
                "days_var",
                "within_review",
                "unpaid",
                "grace",
                "overdue",
            ],
            "external_ticket" => &[
                "category",
                "var",
                "reason",
                "due_hours",
                "new",
                "pending",
                "overdue",
                "escalated",
            ],
            other => {
                self.err(format!(
                    "unknown kind {other:?}; known: {}",
                    KINDS.join(", ")
                ));
                return None;
            }
        };
        let present = [
            ("prompt", raw.prompt.is_some()),
            ("text", raw.text.is_some()),
            ("options", raw.options.is_some()),
            ("no_input", raw.no_input.is_some()),
            ("invalid", raw.invalid.is_some()),
            ("fallback", raw.fallback.is_some()),
            ("timeout", raw.timeout.is_some()),
            ("attempts", raw.attempts.is_some()),
            ("next", raw.next.is_some()),
            ("target", raw.target.is_some()),
            ("closed", raw.closed.is_some()),
            ("open", raw.open.is_some()),
            ("failed", raw.failed.is_some()),
            ("wait_message", raw.wait_message.is_some()),
            ("category", raw.category.is_some()),
            ("reason", raw.reason.is_some()),
            ("max_length", raw.max_length.is_some()),
            ("ticket_category", raw.ticket_category.is_some()),
            ("ticket_reason", raw.ticket_reason.is_some()),
            ("contact", raw.contact.is_some()),
            ("subject", raw.subject.is_some()),
            ("body", raw.body.is_some()),
            ("format", raw.format.is_some()),
            ("var", raw.var.is_some()),
            ("min_digits", raw.min_digits.is_some()),
            ("max_digits", raw.max_digits.is_some()),
            ("confirm", raw.confirm.is_some()),
            ("confirm_caller", raw.confirm_caller.is_some()),
            ("errors", raw.errors.is_some()),
            ("max_age_years", raw.max_age_years.is_some()),
            ("date_var", raw.date_var.is_some()),
            ("paid_var", raw.paid_var.is_some()),
            ("days_var", raw.days_var.is_some()),
            ("within_review", raw.within_review.is_some()),
            ("unpaid", raw.unpaid.is_some()),
            ("grace", raw.grace.is_some()),
            ("overdue", raw.overdue.is_some()),
            ("new", raw.new.is_some()),
            ("pending", raw.pending.is_some()),
            ("escalated", raw.escalated.is_some()),
            ("due_hours", raw.due_hours.is_some()),
            ("save_as", raw.save_as.is_some()),
            ("recording_var", raw.recording_var.is_some()),
            ("abandoned", raw.abandoned.is_some()),
            ("attach_recording", raw.attach_recording.is_some()),
        ];
        let extra: Vec<(&str, bool)> = present
            .iter()
            .filter(|(name, _)| !used.contains(name))
            .copied()
            .collect();
        self.unused(kind, &extra);
        let texts: Vec<String> = self.loader.config.texts.keys().cloned().collect();
        let p_owned: Vec<&str> = PROMPT_PLACEHOLDERS
            .iter()
            .copied()
            .chain(texts.iter().map(String::as_str))
            .collect();
        let p = p_owned.as_slice();
        let next_or_dead_end = |ctx: &mut Self, next: Option<String>| -> Option<NodeRef> {
            match next {
                Some(n) => ctx.parse_ref(&n, "next"),
                None => {
                    ctx.err(format!("has no way out: a {kind} node needs `next`"));
                    None
                }
            }
        };
        match kind {
            "menu" => {
                let prompt = self.text(raw.prompt, "prompt", kind, p);
                let no_input = match raw.no_input {
                    Some(t) => Some(t),
                    None => {
                        self.err("a menu needs no-input handling: set `no_input`, said when the caller presses nothing".into());
                        None
                    }
                };
                let invalid = match raw.invalid {
                    Some(t) => Some(t),
                    None => {
                        self.err("a menu needs invalid-input handling: set `invalid`, said when the caller presses a wrong key".into());
                        None
                    }
                };
                let fallback = match raw.fallback {
                    Some(f) => self.parse_ref(&f, "fallback"),
                    None => {
                        self.err("a menu needs `fallback`, where callers go after the last failed attempt".into());
                        None
                    }
                };
                let mut options = Vec::new();
                let mut sets = BTreeMap::new();
                let mut seen = BTreeSet::new();
                let raw_options = raw.options.unwrap_or_default();
                if raw_options.is_empty() {
                    self.err("a menu needs at least one entry in `options`".into());
                }
                for o in raw_options {
                    let mut chars = o.digit.chars();
                    let digit = match (chars.next(), chars.next()) {
                        (Some(c), None) if c.is_ascii_digit() || c == '#' => c,
                        (Some('*'), None) => {
                            self.err("digit `*` is reserved: it repeats the menu".into());
                            continue;
                        }
                        _ => {
                            self.err(format!(
                                "option digit {:?} must be one key, 0-9 or #",
                                o.digit
                            ));
                            continue;
                        }
                    };
                    if !seen.insert(digit) {
                        self.err(format!("duplicate digit `{digit}` in the menu's options"));
                        continue;
                    }
                    if let Some(r) = self.parse_ref(&o.next, "options.next") {
                        options.push((digit, r));
                    }
                    if !o.set.is_empty() {
                        let mut assigned = Vec::new();
                        for (name, value) in o.set {
                            if let Some(name) = self.define_var(&name, VarKind::Text, "options.set")
                            {
                                assigned.push((name, value));
                            }
                        }
                        sets.insert(digit, assigned);
                    }
                }
                let timeout = raw.timeout.unwrap_or(5);
                if !(1..=60).contains(&timeout) {
                    self.err("`timeout` must be 1 to 60 seconds".into());
                }
                let attempts = raw.attempts.unwrap_or(3);
                if !(1..=5).contains(&attempts) {
                    self.err("`attempts` must be 1 to 5".into());
                }
                for (field, t) in [("no_input", &no_input), ("invalid", &invalid)] {
                    if let Some(t) = t {
                        self.placeholders(t, field, p);
                    }
                }
                Some(Node::Menu(Menu {
                    prompt: prompt?,
                    options,
                    sets,
                    no_input: no_input?,
                    invalid: invalid?,
                    fallback: fallback?,
                    timeout,
                    attempts,
                }))
            }
            "say" => {
                let text = self.text(raw.text, "text", kind, p);
                let next = next_or_dead_end(self, raw.next);
                Some(Node::Say {
                    text: text?,
                    next: next?,
                })
            }
            "transfer" => {
                let target = self.required(raw.target, "target", kind)?;
                let Some(t) = self.loader.config.targets.get(&target).cloned() else {
                    let known: Vec<&str> = self
                        .loader
                        .config
                        .targets
                        .keys()
                        .map(String::as_str)
                        .collect();
                    self.err(format!(
                        "unknown target `{target}`; configured: {}",
                        known.join(", ")
                    ));
                    return None;
                };
                let is_queue = matches!(t, Target::Queue { .. });
                if is_queue && raw.wait_message.is_none() {
                    self.err(format!("target `{target}` is a queue: set `wait_message`, said while the caller waits"));
                }
                if !is_queue && raw.abandoned.is_some() {
                    self.err(format!(
                        "`abandoned` applies only to queue targets, and `{target}` is not one"
                    ));
                }
                if !is_queue && raw.wait_message.is_some() {
                    self.err(format!(
                        "`wait_message` applies only to queue targets, and `{target}` is not one"
                    ));
                }
                if let Some(w) = &raw.wait_message {
                    self.placeholders(w, "wait_message", p);
                }
                let closed = self.default_ref(raw.closed, "closed", "common.closed");
                let failed = self.default_ref(raw.failed, "failed", "common.transfer_failed");
                let abandoned = if is_queue {
                    Some(self.default_ref(raw.abandoned, "abandoned", ABANDONED_IN_QUEUE)?)
                } else {
                    None
                };
                Some(Node::Transfer(Transfer {
                    target,
                    closed: closed?,
                    failed: failed?,
                    wait_message: raw.wait_message,
                    abandoned,
                }))
            }
            "ticket" => {
                let category = self.category(raw.category, "category", kind);
                let reason = self.text(raw.reason, "reason", kind, NOTIFY_PLACEHOLDERS);
                let recording_var = match raw.recording_var {
                    Some(v) => Some(self.use_var(Some(v), "recording_var", kind)?),
                    None => None,
                };
                self.define_var(TICKET_DUE_VAR, VarKind::DateTime, "ticket");
                let next = next_or_dead_end(self, raw.next);
                Some(Node::Ticket {
                    category: category?,
                    reason: reason?,
                    recording_var,
                    next: next?,
                })
            }
            "entry" => self.entry(raw, p),
            "shopping_dollars" => {
                let date_var = self.use_var(raw.date_var, "date_var", kind);
                let paid_var = self.use_var(raw.paid_var, "paid_var", kind);
                let days_var = self
                    .required(raw.days_var, "days_var", kind)
                    .and_then(|v| self.define_var(&v, VarKind::Number, "days_var"));
                let within_review = self.reference(raw.within_review, "within_review", kind);
                let unpaid = self.reference(raw.unpaid, "unpaid", kind);
                let grace = self.reference(raw.grace, "grace", kind);
                let overdue = self.reference(raw.overdue, "overdue", kind);
                Some(Node::ShoppingDollars(ShoppingDollars {
                    date_var: date_var?,
                    paid_var: paid_var?,
                    days_var: days_var?,
                    within_review: within_review?,
                    unpaid: unpaid?,
                    grace: grace?,
                    overdue: overdue?,
                }))
            }
            "external_ticket" => {
                let category = self.category(raw.category, "category", kind);
                let var = self.use_var(raw.var, "var", kind);
                let reason = self.text(raw.reason, "reason", kind, NOTIFY_PLACEHOLDERS);
                let due_hours = raw.due_hours.unwrap_or(24);
                if !(1..=720).contains(&due_hours) {
                    self.err("`due_hours` must be 1 to 720".into());
                }
                for (name, k) in EXTERNAL_TICKET_VARS {
                    self.define_var(name, *k, "external_ticket");
                }
                let new = self.reference(raw.new, "new", kind);
                let pending = self.reference(raw.pending, "pending", kind);
                let overdue = self.reference(raw.overdue, "overdue", kind);
                let escalated = self.reference(raw.escalated, "escalated", kind);
                Some(Node::ExternalTicket(ExternalTicket {
                    category: category?,
                    var: var?,
                    reason: reason?,
                    due_hours,
                    new: new?,
                    pending: pending?,
                    overdue: overdue?,
                    escalated: escalated?,
                }))
            }
            "hours" => {
                let open = self.reference(raw.open, "open", kind);
                let closed = self.reference(raw.closed, "closed", kind);
                Some(Node::Hours {
                    open: open?,
                    closed: closed?,
                })
            }
            "voicemail" => {
                let prompt = self.text(raw.prompt, "prompt", kind, p);
                // The ticket opened before the tone, unless the node keeps the recording
                // for a later ticket node (`save_as` without a ticket).
                let ticket = match (raw.ticket_category, raw.ticket_reason, &raw.save_as) {
                    (None, None, Some(_)) => None,
                    (c, r, _) => {
                        let c = self.category(c, "ticket_category", kind);
                        let r = self.required(r, "ticket_reason", kind);
                        self.define_var(TICKET_DUE_VAR, VarKind::DateTime, "ticket_category");
                        Some((c?, r?))
                    }
                };
                let save_as = match raw.save_as {
                    Some(v) => Some(self.define_var(&v, VarKind::Url, "save_as")?),
                    None => None,
                };
                let next = next_or_dead_end(self, raw.next);
                if raw.max_length.is_some_and(|m| !(5..=3600).contains(&m)) {
                    self.err("`max_length` must be 5 to 3600 seconds".into());
                }
                Some(Node::Voicemail(Voicemail {
                    prompt: prompt?,
                    max_length: raw.max_length,
                    ticket,
                    save_as,
                    next: next?,
                }))
            }
            "notify" => {
                let contact = self.required(raw.contact, "contact", kind);
                if let Some(c) = &contact {
                    if !self.loader.config.contacts.contains_key(c) {
                        let known: Vec<&str> = self
                            .loader
                            .config
                            .contacts
                            .keys()
                            .map(String::as_str)
                            .collect();
                        self.err(format!(
                            "unknown contact `{c}`; configured: {}",
                            known.join(", ")
                        ));
                    }
                }
                let subject = self.text(raw.subject, "subject", kind, NOTIFY_PLACEHOLDERS);
                let body = self.text(raw.body, "body", kind, NOTIFY_PLACEHOLDERS);
                let next = next_or_dead_end(self, raw.next);
                Some(Node::Notify {
                    contact: contact?,
                    subject: subject?,
                    body: body?,
                    attach_recording: raw.attach_recording.unwrap_or(false),
                    next: next?,
                })
            }
            "hangup" => {
                if let Some(t) = &raw.text {
                    self.placeholders(t, "text", p);
                }
                Some(Node::Hangup { text: raw.text })
            }
            "goto" => {
                let next = next_or_dead_end(self, raw.next);
                Some(Node::Goto { next: next? })
            }
            _ => None,
        }
    }
}
