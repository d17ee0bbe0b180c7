//! The step function: (flows, call state, input, time) → what to do, records to write.
//!
//! Pure: no HTTP, SQL, XML or clock. The webhook edge turns `Action`s into TwiML and
//! `Link`s into URLs, and commits the `Record`s before it answers.

use super::{
    Entry, EntryFormat, FlowSet, Menu, Node, NodeRef, VarKind, EXTERNAL_TICKET_VARS, TICKET_DUE_VAR,
};
use crate::config::{Config, Target};
use crate::domain::TicketNumber;
use crate::hours::OverrideState;
use crate::records::{ExistingTicket, Record, StepRecord};
use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use std::collections::BTreeMap;

/// Call variables: what earlier steps of the call learned, carried in the call's URLs.
pub type Vars = BTreeMap<String, String>;

/// What the database knows about a partner ticket number, fetched by the edge when a
/// step asks for it (`EngineError::NeedsLookup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketFacts {
    /// Ticket category looked in.
    pub category: String,
    /// The partner's ticket number.
    pub external_ref: String,
    /// The open or escalated ticket for it, if any.
    pub found: Option<ExistingTicket>,
}

/// What the step knows about the world besides the call.
#[derive(Debug, Clone)]
pub struct Env<'a> {
    /// Targets, hours, contacts and wording settings.
    pub config: &'a Config,
    /// The time of the webhook.
    pub now: DateTime<Utc>,
    /// A manager's override of Guest Care hours.
    pub hours_override: Option<OverrideState>,
    /// Name of the store called (or the brand).
    pub store_name: &'a str,
    /// Caller number, full: only notifications to staff carry it.
    pub caller: &'a str,
    /// The call id.
    pub call_sid: &'a str,
    /// Facts the step asked for, fetched by the edge.
    pub facts: Option<&'a TicketFacts>,
    /// The caller's open tickets by the flow node that opened them, fetched by the edge
    /// when a ticket node asks (`EngineError::NeedsCallerTicket`).
    pub caller_tickets: Option<&'a BTreeMap<String, Option<ExistingTicket>>>,
}

/// What the step knows about the call so far.
#[derive(Debug, Clone)]
pub struct CallState {
    /// Whether the call already has a ticket; `None` when the edge has not looked it up:
    /// the few nodes that need it then ask for it (`EngineError::NeedsTicketState`), so
    /// that most steps are taken without reading the database.
    pub has_ticket: Option<bool>,
    /// Sequence number of this webhook within the call (0 for the incoming call).
    pub seq: u32,
    /// Call variables.
    pub vars: Vars,
}

impl Default for CallState {
    /// A new call: no ticket yet.
    fn default() -> Self {
        CallState {
            has_ticket: Some(false),
            seq: 0,
            vars: Vars::default(),
        }
    }
}

/// Which question of an entry node a Gather answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// The caller keys in a value (or a menu key).
    #[default]
    Enter,
    /// The caller confirms a read-back: 1 = correct, 2 = enter again.
    Confirm,
}

/// The event that triggered the step.
#[derive(Debug, Clone)]
pub enum Input {
    /// Start the call (or an error route) at a node.
    Enter(NodeRef),
    /// A menu's or entry's answer: keys pressed, or `None` after silence.
    Gather {
        /// The menu or entry node.
        node: NodeRef,
        /// Attempt number, from 1.
        attempt: u32,
        /// Keys pressed.
        digits: Option<String>,
        /// Entry nodes: which question.
        phase: Phase,
        /// Entry nodes: the value being confirmed.
        pending: Option<String>,
    },
    /// The outcome of a `<Dial>`.
    Dial {
        /// The transfer node.
        node: NodeRef,
        /// `DialCallStatus`.
        status: String,
    },
    /// The outcome of an `<Enqueue>`.
    Queue {
        /// The transfer node.
        node: NodeRef,
        /// `QueueResult`.
        result: String,
    },
    /// The outcome of a `<Record>`: the recording, or `None` when nothing was recorded.
    Recorded {
        /// The voicemail node.
        node: NodeRef,
        /// Recording URL.
        url: Option<String>,
        /// Recording length in seconds.
        duration: Option<i64>,
    },
    /// The platform asks what callers waiting in a queue hear.
    QueueWait {
        /// The transfer node.
        node: NodeRef,
    },
}

/// Which webhook a link points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Gather action (menu answer) or its no-input redirect.
    Gather,
    /// Dial action.
    Dial,
    /// Record action or its no-recording redirect.
    Record,
    /// Enqueue action.
    Queue,
    /// Enqueue wait URL.
    QueueWait,
}

/// A later webhook of this call, with the state it needs encoded in its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Which webhook.
    pub endpoint: Endpoint,
    /// The node the webhook continues at.
    pub node: NodeRef,
    /// Menu attempt.
    pub attempt: u32,
    /// Sequence number of the webhook within the call.
    pub seq: u32,
    /// Marks the redirect that follows a Gather or Record that got nothing.
    pub silence: bool,
    /// Entry nodes: which question.
    pub phase: Phase,
    /// Entry nodes: the value being confirmed.
    pub pending: Option<String>,
    /// Call variables so far.
    pub vars: Vars,
}

/// One thing the caller hears or the platform does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Speak.
    Say(String),
    /// Speak the prompt while waiting for keys.
    Gather {
        /// Prompt.
        prompt: String,
        /// Seconds to wait.
        timeout: u32,
        /// Keys to collect: 1 for menus.
        num_digits: u32,
        /// Whether `#` ends the entry early.
        finish_on_key: bool,
        /// Where the key goes.
        action: Link,
        /// Where the call goes after silence.
        on_silence: Link,
    },
    /// Connect the caller to a target.
    Dial {
        /// Target.
        target: Target,
        /// Seconds to ring.
        timeout: u32,
        /// Where the outcome goes.
        action: Link,
    },
    /// Put the caller in a queue.
    Enqueue {
        /// Queue name.
        queue: String,
        /// Where the outcome goes.
        action: Link,
        /// What the caller hears while waiting.
        wait: Link,
    },
    /// Record a voicemail.
    Record {
        /// Longest recording in seconds.
        max_length: u32,
        /// Where the recording goes.
        action: Link,
        /// Where the call goes if nothing was recorded.
        on_silence: Link,
    },
    /// Wait, in seconds (queue hold).
    Pause(u32),
    /// End the call.
    Hangup,
}

/// The result of a step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// TwiML to answer, in order.
    pub actions: Vec<Action>,
    /// Records to commit before answering, in order.
    pub records: Vec<Record>,
}

/// Why a step could not be taken; the edge answers with the safe route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The URL names a node that does not exist.
    #[error("unknown node `{0}`")]
    UnknownNode(String),
    /// The URL's node is not of the kind the webhook expects.
    #[error("node `{node}` is not a {expected} node")]
    WrongKind {
        /// The node.
        node: String,
        /// The kind the webhook expected.
        expected: &'static str,
    },
    /// A chain of nodes ran too long without waiting for the caller.
    #[error("node `{0}` led to more than 64 nodes without waiting for the caller")]
    TooManyNodes(String),
    /// A node needs a call variable the call does not carry.
    #[error("node `{node}` needs call variable `{var}`, which the call does not carry")]
    MissingVar {
        /// The node.
        node: String,
        /// The variable.
        var: String,
    },
    /// The step needs to know whether the call has a ticket: the edge looks it up and
    /// steps again.
    #[error("needs to know whether the call has a ticket")]
    NeedsTicketState,
    /// A ticket node needs the caller's open ticket from that node, if any (a repeat
    /// caller is linked to it): the edge fetches it and steps again.
    #[error("needs the caller's open ticket from {node}")]
    NeedsCallerTicket {
        /// The ticket node, `flow.node`.
        node: String,
    },
    /// The step needs to know about a partner ticket: the edge fetches it and steps again.
    #[error("needs the ticket for {category} {external_ref}")]
    NeedsLookup {
        /// Ticket category.
        category: String,
        /// The partner's ticket number.
        external_ref: String,
    },
}

const MAX_NODES_PER_STEP: usize = 64;

/// Takes one step of a call.
pub fn step(
    flows: &FlowSet,
    env: &Env<'_>,
    state: CallState,
    input: Input,
) -> Result<Step, EngineError> {
    let mut run = Run {
        flows,
        env,
        state,
        out: Step::default(),
    };
    match input {
        Input::Enter(node) => run.walk(node)?,
        Input::Gather {
            node,
            attempt,
            digits,
            phase,
            pending,
        } => match run.node(&node)? {
            Node::Entry(e) => run.answer_entry(node.clone(), e, attempt, phase, digits, pending)?,
            _ => run.answer_menu(node, attempt, digits)?,
        },
        Input::Dial { node, status } => {
            let answered = matches!(status.as_str(), "completed" | "answered");
            run.transfer_result(node, answered, &status)?
        }
        Input::Queue { node, result } if result == "hangup" => run.abandoned(node)?,
        Input::Queue { node, result } => {
            // The caller talked to someone or was moved on by an agent: done.
            // `leave` (the caller left the queue), a full queue, an error or a shutdown
            // take the transfer's failed route: voicemail and a ticket.
            let done = matches!(
                result.as_str(),
                "bridged" | "bridging-in-process" | "redirected" | "redirected-from-bridged"
            );
            run.transfer_result(node, done, &result)?
        }
        Input::Recorded {
            node,
            url,
            duration,
        } => run.recorded(node, url, duration)?,
        Input::QueueWait { node } => {
            let t = run.transfer(&node)?;
            let text = t.wait_message.clone().unwrap_or_default();
            let said = run.speak(&text);
            run.out.actions.push(Action::Say(said));
            run.out.actions.push(Action::Pause(20));
        }
    }
    Ok(run.out)
}

/// How a Gather collects keys.
struct Keys {
    timeout: u32,
    num_digits: u32,
    finish_on_key: bool,
    phase: Phase,
    pending: Option<String>,
}

impl Keys {
    /// One key, as menus and read-backs take.
    fn one(timeout: u32) -> Self {
        Self {
            timeout,
            num_digits: 1,
            finish_on_key: false,
            phase: Phase::Enter,
            pending: None,
        }
    }
}

struct Run<'a, 'e> {
    flows: &'a FlowSet,
    env: &'a Env<'e>,
    state: CallState,
    out: Step,
}

impl<'a> Run<'a, '_> {
    /// Whether the call has a ticket; the edge is asked to look it up when it has not.
    fn has_ticket(&self) -> Result<bool, EngineError> {
        self.state.has_ticket.ok_or(EngineError::NeedsTicketState)
    }

    fn node(&self, r: &NodeRef) -> Result<&'a Node, EngineError> {
        self.flows
            .node(r)
            .ok_or_else(|| EngineError::UnknownNode(r.to_string()))
    }

    fn menu(&self, r: &NodeRef) -> Result<&'a Menu, EngineError> {
        match self.node(r)? {
            Node::Menu(m) => Ok(m),
            _ => Err(EngineError::WrongKind {
                node: r.to_string(),
                expected: "menu",
            }),
        }
    }

    fn transfer(&self, r: &NodeRef) -> Result<&'a super::Transfer, EngineError> {
        match self.node(r)? {
            Node::Transfer(t) => Ok(t),
            _ => Err(EngineError::WrongKind {
                node: r.to_string(),
                expected: "transfer",
            }),
        }
    }

    fn open(&self) -> bool {
        self.env
            .config
            .schedule
            .is_open(self.env.now, self.env.hours_override)
    }

    /// Fills the placeholders of a prompt. `{ticket_number}` is left for the edge,
    /// which knows the number only once the ticket is committed.
    fn render(&self, text: &str) -> String {
        let c = self.env.config;
        // Configured texts first: they may use the placeholders below, such as {website}.
        // Two passes, so that a text may use another text.
        let mut out = text.to_string();
        for _ in 0..2 {
            if !out.contains('{') {
                return out;
            }
            for (name, value) in &c.texts {
                let key = format!("{{{name}}}");
                if out.contains(&key) {
                    out = out.replace(&key, value);
                }
            }
        }
        // Each placeholder's value is worked out only when the text uses it: this runs for
        // every prompt of every step.
        let placeholders: [(&str, &dyn Fn() -> String); 8] = [
            ("{callback_by}", &|| self.callback_by()),
            ("{store_name}", &|| self.env.store_name.to_string()),
            ("{review_days}", &|| {
                c.shopping_dollars.review_days.to_string()
            }),
            ("{grace_days}", &|| {
                c.shopping_dollars.grace_days.to_string()
            }),
            ("{brand}", &|| c.brand.clone()),
            ("{website}", &|| c.website.clone()),
            ("{texting_number}", &|| spaced(&c.texting_number)),
            ("{hours}", &|| c.schedule.describe()),
        ];
        for (key, value) in placeholders {
            if !out.contains('{') {
                break;
            }
            if out.contains(key) {
                out = out.replace(key, &value());
            }
        }
        out
    }

    /// Text for staff (ticket reasons, notifications): stored forms of variables.
    fn render_for_staff(&self, text: &str) -> String {
        let out = text
            .replace("{store_name}", self.env.store_name)
            .replace("{caller}", self.env.caller)
            .replace("{call_sid}", self.env.call_sid);
        self.fill_vars(out, false)
    }

    /// A prompt: configured texts, placeholders and variables in words.
    fn speak(&self, text: &str) -> String {
        self.fill_vars(self.render(text), true)
    }

    fn fill_vars(&self, mut text: String, spoken: bool) -> String {
        if !text.contains("{var.") {
            return text;
        }
        for (name, kind) in &self.flows.vars {
            let key = format!("{{var.{name}}}");
            if text.contains(&key) {
                let value = self.state.vars.get(name).map(String::as_str).unwrap_or("");
                let shown = if spoken {
                    say_value(*kind, value, self.env.config)
                } else {
                    show_value(*kind, value, self.env.config)
                };
                text = text.replace(&key, &shown);
            }
        }
        text
    }

    fn link(&self, endpoint: Endpoint, node: &NodeRef, attempt: u32, silence: bool) -> Link {
        Link {
            endpoint,
            node: node.clone(),
            attempt,
            seq: self.state.seq + 1,
            silence,
            phase: Phase::Enter,
            pending: None,
            vars: self.state.vars.clone(),
        }
    }

    fn var(&self, node: &NodeRef, name: &str) -> Result<String, EngineError> {
        self.state
            .vars
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::MissingVar {
                node: node.to_string(),
                var: name.into(),
            })
    }

    fn record_step(
        &mut self,
        node: &NodeRef,
        kind: &str,
        said: &str,
        digits: Option<&str>,
        result: String,
    ) {
        self.record_data(node, kind, said, digits, result, BTreeMap::new());
    }

    fn record_data(
        &mut self,
        node: &NodeRef,
        kind: &str,
        said: &str,
        digits: Option<&str>,
        result: String,
        data: BTreeMap<String, String>,
    ) {
        self.out.records.push(Record::Step(StepRecord {
            node: node.to_string(),
            kind: kind.into(),
            said: said.into(),
            digits: digits.map(str::to_owned),
            result,
            data,
        }));
    }

    fn outcome(&mut self, value: String, replace: bool) {
        self.out.records.push(Record::Outcome { value, replace });
    }

    fn say(&mut self, text: String) -> String {
        self.out.actions.push(Action::Say(text.clone()));
        text
    }

    /// Speaks `lead` (a reason to ask again) then `prompt` while waiting for keys; the
    /// keys come back to `node` at `attempt`, with the entry phase and value of `keys`.
    fn ask(
        &mut self,
        node: &NodeRef,
        prompt: &str,
        lead: Option<&str>,
        attempt: u32,
        keys: Keys,
    ) -> String {
        let prompt = self.speak(prompt);
        let said = match lead {
            Some(l) => format!("{} {prompt}", self.speak(l)),
            None => prompt,
        };
        let mut action = self.link(Endpoint::Gather, node, attempt, false);
        action.phase = keys.phase;
        action.pending = keys.pending;
        let mut on_silence = action.clone();
        on_silence.silence = true;
        self.out.actions.push(Action::Gather {
            prompt: said.clone(),
            timeout: keys.timeout,
            num_digits: keys.num_digits,
            finish_on_key: keys.finish_on_key,
            action,
            on_silence,
        });
        said
    }

    /// Asks a menu's question: one key.
    fn gather(&mut self, node: &NodeRef, menu: &Menu, attempt: u32, lead: Option<&str>) -> String {
        self.ask(node, &menu.prompt, lead, attempt, Keys::one(menu.timeout))
    }

    /// Asks for an entry's value.
    fn ask_entry(&mut self, node: &NodeRef, e: &Entry, attempt: u32, lead: Option<&str>) -> String {
        let keys = Keys {
            num_digits: e.max_digits,
            finish_on_key: true,
            ..Keys::one(e.timeout)
        };
        self.ask(node, &e.prompt, lead, attempt, keys)
    }

    /// Reads a value back and asks 1 = correct, 2 = enter again.
    fn ask_confirm(
        &mut self,
        node: &NodeRef,
        e: &Entry,
        attempt: u32,
        value: &str,
        lead: Option<&str>,
    ) -> String {
        let from_caller = e.confirm_caller.is_some() && value == self.env.caller;
        let (template, shown) = match (&e.confirm_caller, from_caller) {
            (Some(t), true) => (t.as_str(), say_last_four(value)),
            _ => (e.confirm.as_str(), say_entry(e.format, value)),
        };
        let keys = Keys {
            phase: Phase::Confirm,
            pending: Some(value.to_string()),
            ..Keys::one(5)
        };
        self.ask(
            node,
            &template.replace("{value}", &shown),
            lead,
            attempt,
            keys,
        )
    }

    /// Follows nodes from `start` until one waits for the caller or ends the call.
    fn walk(&mut self, start: NodeRef) -> Result<(), EngineError> {
        let mut current = start;
        for _ in 0..MAX_NODES_PER_STEP {
            let node = self.node(&current)?;
            let kind = node.kind();
            match node {
                Node::Menu(m) => {
                    let said = self.gather(&current, m, 1, None);
                    self.record_step(&current, kind, &said, None, "prompted".into());
                    return Ok(());
                }
                Node::Say { text, next } => {
                    let said = self.say(self.speak(text));
                    self.record_step(&current, kind, &said, None, "said".into());
                    current = next.clone();
                }
                Node::Ticket {
                    category,
                    reason,
                    recording_var,
                    next,
                } => {
                    let recording_url = recording_var
                        .as_ref()
                        .and_then(|v| self.state.vars.get(v))
                        .filter(|u| !u.is_empty())
                        .cloned();
                    let reason = self.render_for_staff(reason);
                    let result = self.open_ticket(&current, category, reason, recording_url)?;
                    self.record_step(&current, kind, "", None, result);
                    current = next.clone();
                }
                Node::Notify {
                    contact,
                    subject,
                    body,
                    attach_recording,
                    next,
                } => {
                    let address = self
                        .env
                        .config
                        .contacts
                        .get(contact)
                        .cloned()
                        .unwrap_or_default();
                    self.out.records.push(Record::Notification {
                        contact: contact.clone(),
                        address,
                        subject: self.render_for_staff(subject),
                        body: self.render_for_staff(body),
                        recording_wait_until: attach_recording.then(|| {
                            self.env.now
                                + chrono::Duration::from_std(
                                    self.env.config.smtp.hold_for_recording,
                                )
                                .unwrap_or_default()
                        }),
                    });
                    self.record_step(&current, kind, "", None, format!("notified {contact}"));
                    current = next.clone();
                }
                Node::Hours { open, closed } => {
                    let is_open = self.open();
                    let result = if is_open { "open" } else { "closed" };
                    self.record_step(&current, kind, "", None, result.into());
                    current = if is_open {
                        open.clone()
                    } else {
                        closed.clone()
                    };
                }
                Node::Goto { next } => {
                    self.record_step(&current, kind, "", None, format!("to {next}"));
                    current = next.clone();
                }
                Node::Transfer(t) => {
                    if !self.open() {
                        self.record_step(
                            &current,
                            kind,
                            "",
                            None,
                            format!("{} not reached: Guest Care closed", t.target),
                        );
                        current = t.closed.clone();
                        continue;
                    }
                    let Some(target) = self.env.config.targets.get(&t.target).cloned() else {
                        return Err(EngineError::UnknownNode(format!("target {}", t.target)));
                    };
                    match target {
                        Target::Queue { name } => self.out.actions.push(Action::Enqueue {
                            queue: name,
                            action: self.link(Endpoint::Queue, &current, 1, false),
                            wait: self.link(Endpoint::QueueWait, &current, 1, false),
                        }),
                        other => self.out.actions.push(Action::Dial {
                            target: other,
                            timeout: self.env.config.dial_timeout,
                            action: self.link(Endpoint::Dial, &current, 1, false),
                        }),
                    }
                    self.record_step(
                        &current,
                        kind,
                        "",
                        None,
                        format!("transferring to {}", t.target),
                    );
                    self.outcome(format!("transferring:{}", t.target), true);
                    return Ok(());
                }
                Node::Voicemail(v) => {
                    // The ticket is opened before the recording, so a guest who hangs up
                    // at the tone still leaves a ticket to call back.
                    if let Some((category, reason)) = &v.ticket {
                        if !self.has_ticket()? {
                            let reason = self.render_for_staff(reason);
                            let result = self.open_ticket(&current, category, reason, None)?;
                            self.record_step(&current, kind, "", None, result);
                        }
                    }
                    let said = self.say(self.speak(&v.prompt));
                    self.out.actions.push(Action::Record {
                        max_length: v
                            .max_length
                            .unwrap_or(self.env.config.voicemail_max_seconds),
                        action: self.link(Endpoint::Record, &current, 1, false),
                        on_silence: self.link(Endpoint::Record, &current, 1, true),
                    });
                    self.record_step(&current, kind, &said, None, "recording".into());
                    return Ok(());
                }
                Node::Entry(e) => {
                    let caller_ok = e.confirm_caller.is_some() && is_nanp(self.env.caller);
                    let said = if caller_ok {
                        let caller = self.env.caller.to_string();
                        self.ask_confirm(&current, e, 1, &caller, None)
                    } else {
                        self.ask_entry(&current, e, 1, None)
                    };
                    self.record_step(&current, kind, &said, None, "prompted".into());
                    return Ok(());
                }
                Node::ShoppingDollars(d) => {
                    let date = self.var(&current, &d.date_var)?;
                    let purchased = NaiveDate::parse_from_str(&date, "%Y-%m-%d").map_err(|_| {
                        EngineError::MissingVar {
                            node: current.to_string(),
                            var: d.date_var.clone(),
                        }
                    })?;
                    let paid = self.state.vars.get(&d.paid_var).map(String::as_str) == Some("yes");
                    let today = self.env.config.schedule.local_date(self.env.now);
                    let days = (today - purchased).num_days();
                    let rule = &self.env.config.shopping_dollars;
                    let review = i64::from(rule.review_days);
                    let grace = i64::from(rule.grace_days);
                    let (decision, next) = if days <= review {
                        ("within review period", &d.within_review)
                    } else if !paid {
                        ("awaiting first payment", &d.unpaid)
                    } else if days <= review + grace {
                        ("within grace days", &d.grace)
                    } else {
                        ("overdue", &d.overdue)
                    };
                    self.state.vars.insert(d.days_var.clone(), days.to_string());
                    let data = BTreeMap::from([
                        ("purchase_date".to_string(), date.clone()),
                        ("days".to_string(), days.to_string()),
                        (
                            "paid".to_string(),
                            if paid { "yes" } else { "no" }.to_string(),
                        ),
                        ("decision".to_string(), decision.to_string()),
                    ]);
                    self.record_data(
                        &current,
                        kind,
                        "",
                        None,
                        format!(
                            "{decision}: {days} days since purchase, paid {}",
                            if paid { "yes" } else { "no" }
                        ),
                        data,
                    );
                    current = next.clone();
                }
                Node::ExternalTicket(t) => {
                    let external_ref = self.var(&current, &t.var)?;
                    let found = match self.env.facts {
                        Some(f) if f.category == t.category && f.external_ref == external_ref => {
                            f.found.clone()
                        }
                        _ => {
                            return Err(EngineError::NeedsLookup {
                                category: t.category.clone(),
                                external_ref,
                            })
                        }
                    };
                    let mut data =
                        BTreeMap::from([("external_ref".to_string(), external_ref.clone())]);
                    let now = self.env.now;
                    let (result, next) = match found {
                        None => {
                            let due = now + chrono::Duration::hours(i64::from(t.due_hours));
                            self.out.records.push(Record::Ticket {
                                category: t.category.clone(),
                                reason: self.render_for_staff(&t.reason),
                                external_ref: Some(external_ref.clone()),
                                due_at: Some(due),
                                recording_url: None,
                                node: Some(current.to_string()),
                            });
                            self.state.has_ticket = Some(true);
                            self.set_ticket_vars(None, None, Some(due));
                            data.insert("due_at".into(), due.to_rfc3339());
                            (format!("opened a {} ticket", t.category), &t.new)
                        }
                        Some(existing) => {
                            let number = TicketNumber(existing.id).to_string();
                            self.set_ticket_vars(
                                Some(&number),
                                Some(existing.created_at),
                                existing.due_at,
                            );
                            data.insert("ticket".into(), number.clone());
                            let overdue = existing.due_at.is_some_and(|d| d <= now);
                            let (relation, result, next) = if existing.status == "escalated" {
                                (
                                    "linked",
                                    format!("{number} already escalated"),
                                    &t.escalated,
                                )
                            } else if overdue {
                                self.out.records.push(Record::Escalate {
                                    ticket_id: existing.id,
                                });
                                (
                                    "escalated",
                                    format!("{number} overdue: escalated"),
                                    &t.overdue,
                                )
                            } else {
                                ("linked", format!("{number} open, not yet due"), &t.pending)
                            };
                            self.out.records.push(Record::LinkTicket {
                                ticket_id: existing.id,
                                relation: relation.into(),
                            });
                            self.state.has_ticket = Some(true);
                            (result, next)
                        }
                    };
                    self.record_data(&current, kind, "", None, result, data);
                    current = next.clone();
                }
                Node::Hangup { text } => {
                    let said = match text {
                        Some(t) => self.say(self.speak(t)),
                        None => String::new(),
                    };
                    self.out.actions.push(Action::Hangup);
                    self.record_step(&current, kind, &said, None, "hung up".into());
                    let outcome = if self.has_ticket()? {
                        "ticket_logged"
                    } else {
                        "self_service"
                    };
                    self.outcome(outcome.into(), false);
                    return Ok(());
                }
            }
        }
        Err(EngineError::TooManyNodes(current.to_string()))
    }

    fn answer_menu(
        &mut self,
        node: NodeRef,
        attempt: u32,
        digits: Option<String>,
    ) -> Result<(), EngineError> {
        let menu = self.menu(&node)?;
        let attempt = attempt.clamp(1, menu.attempts);
        let pressed = digits.filter(|d| !d.is_empty());
        let Some(keys) = pressed else {
            return self.retry(node, menu, attempt, None, &menu.no_input, "no input");
        };
        if keys == "*" {
            let said = self.gather(&node, menu, attempt, None);
            self.record_step(&node, "menu", &said, Some(&keys), "repeat".into());
            return Ok(());
        }
        let mut chars = keys.chars();
        let chosen = match (chars.next(), chars.next()) {
            (Some(k), None) => menu.options.iter().find(|(d, _)| *d == k),
            _ => None,
        };
        match chosen {
            Some((digit, next)) => {
                let set = menu.sets.get(digit).cloned().unwrap_or_default();
                let data: BTreeMap<String, String> = set.iter().cloned().collect();
                self.state.vars.extend(set);
                self.record_data(
                    &node,
                    "menu",
                    "",
                    Some(&keys),
                    format!("chose {keys}"),
                    data,
                );
                self.walk(next.clone())
            }
            None => self.retry(
                node,
                menu,
                attempt,
                Some(&keys),
                &menu.invalid,
                "invalid input",
            ),
        }
    }

    fn retry(
        &mut self,
        node: NodeRef,
        menu: &Menu,
        attempt: u32,
        keys: Option<&str>,
        lead: &str,
        what: &str,
    ) -> Result<(), EngineError> {
        if attempt >= menu.attempts {
            self.record_step(
                &node,
                "menu",
                "",
                keys,
                format!("{what} (attempt {attempt} of {}): fallback", menu.attempts),
            );
            return self.walk(menu.fallback.clone());
        }
        let said = self.gather(&node, menu, attempt + 1, Some(lead));
        self.record_step(
            &node,
            "menu",
            &said,
            keys,
            format!("{what} (attempt {attempt} of {})", menu.attempts),
        );
        Ok(())
    }

    fn transfer_result(
        &mut self,
        node: NodeRef,
        done: bool,
        status: &str,
    ) -> Result<(), EngineError> {
        let t = self.transfer(&node)?;
        if done {
            self.record_step(&node, "transfer", "", None, status.into());
            self.outcome(format!("transferred:{}", t.target), true);
            self.out.actions.push(Action::Hangup);
            return Ok(());
        }
        self.record_step(&node, "transfer", "", None, format!("failed: {status}"));
        self.outcome(format!("transfer_failed:{}", t.target), true);
        self.walk(t.failed.clone())
    }

    fn recorded(
        &mut self,
        node: NodeRef,
        url: Option<String>,
        duration: Option<i64>,
    ) -> Result<(), EngineError> {
        let v = match self.node(&node)? {
            Node::Voicemail(v) => v,
            _ => {
                return Err(EngineError::WrongKind {
                    node: node.to_string(),
                    expected: "voicemail",
                })
            }
        };
        let (result, outcome) = match url {
            Some(url) => {
                if let Some(var) = &v.save_as {
                    self.state.vars.insert(var.clone(), url.clone());
                }
                self.out.records.push(Record::Recording {
                    url,
                    duration_seconds: duration,
                });
                (format!("recorded {} s", duration.unwrap_or(0)), "voicemail")
            }
            None => ("nothing recorded".into(), "voicemail_empty"),
        };
        self.record_step(&node, "voicemail", "", None, result);
        self.outcome(outcome.into(), true);
        self.walk(v.next.clone())
    }
}

impl Run<'_, '_> {
    /// Opens a ticket at `node` (due as the category's service level says), or, for a
    /// caller who already has an open ticket from the same node, links the call to it
    /// instead of opening a second one. Returns the step's result.
    fn open_ticket(
        &mut self,
        node: &NodeRef,
        category: &str,
        reason: String,
        recording_url: Option<String>,
    ) -> Result<String, EngineError> {
        let path = node.to_string();
        if is_callable(self.env.caller) {
            let found = match self.env.caller_tickets.and_then(|m| m.get(&path)) {
                Some(found) => found.clone(),
                None => return Err(EngineError::NeedsCallerTicket { node: path }),
            };
            if let Some(open) = found {
                self.out.records.push(Record::LinkTicket {
                    ticket_id: open.id,
                    relation: "repeat".into(),
                });
                self.state.has_ticket = Some(true);
                self.set_due(open.due_at);
                return Ok(format!(
                    "repeat caller: linked to open ticket {}",
                    TicketNumber(open.id)
                ));
            }
        }
        let c = self.env.config;
        let due = c.sla.due_at(category, self.env.now, &c.schedule);
        self.out.records.push(Record::Ticket {
            category: category.to_string(),
            reason,
            external_ref: None,
            due_at: due,
            recording_url,
            node: Some(path),
        });
        self.state.has_ticket = Some(true);
        self.set_due(due);
        Ok(format!("ticket {category}"))
    }

    /// Keeps the call's ticket's due time for `{callback_by}` in later steps.
    fn set_due(&mut self, due: Option<DateTime<Utc>>) {
        match due {
            Some(d) => self.state.vars.insert(
                TICKET_DUE_VAR.to_string(),
                d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
            None => self.state.vars.remove(TICKET_DUE_VAR),
        };
    }

    /// `{callback_by}`: "by 10:00 AM on Monday, …" from the call's ticket, or "as soon as
    /// we can" when the call has no due time.
    fn callback_by(&self) -> String {
        match self
            .state
            .vars
            .get(TICKET_DUE_VAR)
            .and_then(|due| DateTime::parse_from_rfc3339(due).ok())
        {
            Some(due) => {
                let local = due.with_timezone(&self.env.config.schedule.tz);
                format!(
                    "by {} on {}, {}",
                    local.format("%-I:%M %p"),
                    local.format("%A"),
                    say_date(local.date_naive())
                )
            }
            None => "as soon as we can".into(),
        }
    }

    /// The caller hung up while waiting in a queue: recorded as abandoned, and the
    /// transfer's `abandoned` route taken (a ticket to call them back).
    fn abandoned(&mut self, node: NodeRef) -> Result<(), EngineError> {
        let t = self.transfer(&node)?;
        self.record_step(
            &node,
            "transfer",
            "",
            None,
            "caller hung up in the queue".into(),
        );
        self.outcome("abandoned_in_queue".into(), true);
        match &t.abandoned {
            Some(next) => self.walk(next.clone()),
            None => {
                self.out.actions.push(Action::Hangup);
                Ok(())
            }
        }
    }

    fn set_ticket_vars(
        &mut self,
        number: Option<&str>,
        logged: Option<DateTime<Utc>>,
        due: Option<DateTime<Utc>>,
    ) {
        let values = [
            number.map(str::to_owned),
            logged.map(|t| self.env.config.schedule.local_date(t).to_string()),
            due.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        ];
        for ((name, _), value) in EXTERNAL_TICKET_VARS.iter().zip(values) {
            match value {
                Some(v) => self.state.vars.insert((*name).to_string(), v),
                None => self.state.vars.remove(*name),
            };
        }
    }

    fn answer_entry(
        &mut self,
        node: NodeRef,
        e: &Entry,
        attempt: u32,
        phase: Phase,
        digits: Option<String>,
        pending: Option<String>,
    ) -> Result<(), EngineError> {
        let attempt = attempt.clamp(1, e.attempts);
        let keys = digits
            .map(|d| d.trim_end_matches('#').to_string())
            .filter(|d| !d.is_empty());
        match (phase, pending) {
            // The value comes back in the webhook URL: signed, but checked again as if
            // the caller had keyed it, so a crafted URL cannot store what no caller could.
            (Phase::Confirm, Some(value)) if !self.stored_entry_ok(e, &value) => {
                let said = self.ask_entry(&node, e, 1, None);
                self.record_step(
                    &node,
                    "entry",
                    &said,
                    keys.as_deref(),
                    "read-back value not valid: asked again".into(),
                );
                Ok(())
            }
            (Phase::Confirm, Some(value)) => match keys.as_deref() {
                Some("1") => {
                    self.state.vars.insert(e.var.clone(), value.clone());
                    let data = BTreeMap::from([(e.var.clone(), value.clone())]);
                    self.record_data(&node, "entry", "", Some("1"), "confirmed".into(), data);
                    self.walk(e.next.clone())
                }
                Some("2") => {
                    let said = self.ask_entry(&node, e, 1, None);
                    self.record_step(&node, "entry", &said, Some("2"), "enter again".into());
                    Ok(())
                }
                Some("*") => {
                    let said = self.ask_confirm(&node, e, attempt, &value, None);
                    self.record_step(&node, "entry", &said, Some("*"), "repeat".into());
                    Ok(())
                }
                other => {
                    let (lead, what) = match other {
                        None => (&e.no_input, "no input"),
                        Some(_) => (&e.invalid, "invalid input"),
                    };
                    let result = format!(
                        "{what} at the read-back (attempt {attempt} of {})",
                        e.attempts
                    );
                    if attempt >= e.attempts {
                        self.record_step(&node, "entry", "", other, format!("{result}: fallback"));
                        return self.walk(e.fallback.clone());
                    }
                    let said = self.ask_confirm(&node, e, attempt + 1, &value, Some(lead));
                    self.record_step(&node, "entry", &said, other, result);
                    Ok(())
                }
            },
            _ => {
                let Some(keys) = keys else {
                    return self.entry_failed(node, e, attempt, None, &e.no_input, "no input");
                };
                let today = self.env.config.schedule.local_date(self.env.now);
                match validate_entry(e, &keys, today) {
                    Ok(value) => {
                        let said = self.ask_confirm(&node, e, 1, &value, None);
                        let data = BTreeMap::from([(e.var.clone(), value)]);
                        self.record_data(
                            &node,
                            "entry",
                            &said,
                            Some(&keys),
                            "entered".into(),
                            data,
                        );
                        Ok(())
                    }
                    Err(reason) => {
                        let lead = e.errors.get(reason).cloned().unwrap_or_default();
                        self.entry_failed(node, e, attempt, Some(&keys), &lead, reason)
                    }
                }
            }
        }
    }

    fn entry_failed(
        &mut self,
        node: NodeRef,
        e: &Entry,
        attempt: u32,
        keys: Option<&str>,
        lead: &str,
        what: &str,
    ) -> Result<(), EngineError> {
        let result = format!("refused: {what} (attempt {attempt} of {})", e.attempts);
        if attempt >= e.attempts {
            self.record_step(&node, "entry", "", keys, format!("{result}: fallback"));
            return self.walk(e.fallback.clone());
        }
        let said = self.ask_entry(&node, e, attempt + 1, Some(lead));
        self.record_step(&node, "entry", &said, keys, result);
        Ok(())
    }
}

/// Whether a caller number is a real number a ticket can be kept for (seven digits or
/// more, not anonymous or masked): only such callers are recognised when they call again.
fn is_callable(number: &str) -> bool {
    !number.contains('*') && number.chars().filter(char::is_ascii_digit).count() >= 7
}

/// Checks keys against an entry's format; the stored value, or the reason it is refused
/// (`length`, `not_a_date`, `future`, `too_old`).
pub fn validate_entry(e: &Entry, keys: &str, today: NaiveDate) -> Result<String, &'static str> {
    let len = keys.len() as u32;
    if !keys.bytes().all(|b| b.is_ascii_digit()) || len < e.min_digits || len > e.max_digits {
        return Err("length");
    }
    match e.format {
        EntryFormat::Digits => Ok(keys.to_string()),
        EntryFormat::Phone => {
            if keys.starts_with(['0', '1']) {
                Err("length")
            } else {
                Ok(format!("+1{keys}"))
            }
        }
        EntryFormat::Date => {
            let num = |r: std::ops::Range<usize>| keys.get(r).and_then(|s| s.parse::<u32>().ok());
            let (Some(m), Some(d), Some(y)) = (num(0..2), num(2..4), num(4..8)) else {
                return Err("length");
            };
            let date = i32::try_from(y)
                .ok()
                .and_then(|y| NaiveDate::from_ymd_opt(y, m, d))
                .ok_or("not_a_date")?;
            if date > today {
                return Err("future");
            }
            let oldest = today
                .checked_sub_months(Months::new(12 * e.max_age_years))
                .unwrap_or(NaiveDate::MIN);
            if date < oldest {
                return Err("too_old");
            }
            Ok(date.format("%Y-%m-%d").to_string())
        }
    }
}

impl Run<'_, '_> {
    /// Whether `value`, an entry's stored form carried to the read-back, is one the entry
    /// accepts: the caller's own number (where offered), or keys that validate to it.
    fn stored_entry_ok(&self, e: &Entry, value: &str) -> bool {
        if e.format == EntryFormat::Phone
            && e.confirm_caller.is_some()
            && value == self.env.caller
            && is_nanp(value)
        {
            return true;
        }
        let keys = match e.format {
            EntryFormat::Digits => Some(value.to_string()),
            EntryFormat::Phone => value.strip_prefix("+1").map(str::to_owned),
            EntryFormat::Date => NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .ok()
                .map(|d| d.format("%m%d%Y").to_string()),
        };
        let today = self.env.config.schedule.local_date(self.env.now);
        keys.is_some_and(|k| validate_entry(e, &k, today).as_deref() == Ok(value))
    }
}

/// Whether a number is a North American number a callback can use.
fn is_nanp(number: &str) -> bool {
    number.strip_prefix("+1").is_some_and(|n| {
        n.len() == 10 && n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with(['0', '1'])
    })
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// A date in words: "March 5th, 2026".
pub fn say_date(d: NaiveDate) -> String {
    format!("{} {}, {}", d.format("%B"), ordinal(d.day()), d.year())
}

fn say_entry(format: EntryFormat, value: &str) -> String {
    match format {
        EntryFormat::Date => NaiveDate::parse_from_str(value, "%Y-%m-%d")
            .map(say_date)
            .unwrap_or_default(),
        EntryFormat::Phone => say_phone(value),
        EntryFormat::Digits => spaced(value),
    }
}

/// A 10-digit number read in groups: "2 0 4, 5 5 5, 0 1 2 3".
fn say_phone(value: &str) -> String {
    let digits: String = value.trim_start_matches("+1").chars().collect();
    match (digits.get(0..3), digits.get(3..6), digits.get(6..)) {
        (Some(a), Some(b), Some(c)) if digits.len() == 10 => {
            format!("{}, {}, {}", spaced(a), spaced(b), spaced(c))
        }
        _ => spaced(&digits),
    }
}

/// The last four digits of a number, for a masked read-back.
fn say_last_four(value: &str) -> String {
    let digits: Vec<char> = value.chars().filter(char::is_ascii_digit).collect();
    let tail: String = digits[digits.len().saturating_sub(4)..].iter().collect();
    spaced(&tail)
}

/// A variable as a prompt says it.
fn say_value(kind: VarKind, value: &str, config: &Config) -> String {
    match kind {
        VarKind::Date => NaiveDate::parse_from_str(value, "%Y-%m-%d")
            .map(say_date)
            .unwrap_or_default(),
        VarKind::DateTime => DateTime::parse_from_rfc3339(value)
            .map(|t| {
                let local = t.with_timezone(&config.schedule.tz);
                format!(
                    "{} on {}",
                    local.format("%-I:%M %p"),
                    say_date(local.date_naive())
                )
            })
            .unwrap_or_default(),
        VarKind::Phone => say_phone(value),
        VarKind::Digits => spaced(value),
        VarKind::Ticket => TicketNumber::parse(value)
            .map(|t| t.spoken())
            .unwrap_or_default(),
        VarKind::Number | VarKind::Text => value.to_string(),
        VarKind::Url => String::new(),
    }
}

/// A variable as staff read it in a ticket or an e-mail.
fn show_value(kind: VarKind, value: &str, config: &Config) -> String {
    match kind {
        VarKind::DateTime => DateTime::parse_from_rfc3339(value)
            .map(|t| {
                t.with_timezone(&config.schedule.tz)
                    .format("%Y-%m-%d %H:%M %Z")
                    .to_string()
            })
            .unwrap_or_default(),
        _ if value.is_empty() => "(not given)".into(),
        _ => value.to_string(),
    }
}

/// Spaces out digits so text-to-speech reads them one by one.
fn spaced(number: &str) -> String {
    let chars: Vec<String> = number.chars().map(String::from).collect();
    chars.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn date_entry() -> Entry {
        let r = NodeRef {
            flow: "f".into(),
            node: "n".into(),
        };
        Entry {
            prompt: String::new(),
            format: EntryFormat::Date,
            var: "d".into(),
            min_digits: 8,
            max_digits: 8,
            confirm: String::new(),
            confirm_caller: None,
            errors: BTreeMap::new(),
            no_input: String::new(),
            invalid: String::new(),
            fallback: r.clone(),
            attempts: 3,
            timeout: 10,
            max_age_years: 5,
            next: r,
        }
    }

    #[test]
    fn dates_are_checked_for_length_reality_future_and_age() {
        let e = date_entry();
        let today = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let check = |k: &str| validate_entry(&e, k, today);
        assert_eq!(check("03052026"), Ok("2026-03-05".into()));
        assert_eq!(check("02292024"), Ok("2024-02-29".into()));
        assert_eq!(check("11232026"), Ok("2026-11-23".into()), "today");
        assert_eq!(
            check("11232021"),
            Ok("2021-11-23".into()),
            "exactly 5 years"
        );
        assert_eq!(check("02292025"), Err("not_a_date"));
        assert_eq!(check("02302026"), Err("not_a_date"));
        assert_eq!(check("13012026"), Err("not_a_date"));
        assert_eq!(check("00000000"), Err("not_a_date"));
        assert_eq!(check("0305202"), Err("length"));
        assert_eq!(check("030520261"), Err("length"));
        assert_eq!(check("11242026"), Err("future"));
        assert_eq!(check("11222021"), Err("too_old"));
    }

    #[test]
    fn values_are_said_the_way_a_person_would() {
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).unwrap();
        assert_eq!(say_date(d(2026, 3, 5)), "March 5th, 2026");
        assert_eq!(say_date(d(2026, 3, 1)), "March 1st, 2026");
        assert_eq!(say_date(d(2026, 3, 22)), "March 22nd, 2026");
        assert_eq!(say_date(d(2026, 3, 13)), "March 13th, 2026");
        assert_eq!(say_phone("+12045550199"), "2 0 4, 5 5 5, 0 1 9 9");
        assert_eq!(say_last_four("+12045551234"), "1 2 3 4");
        assert!(is_nanp("+12045551234"));
        assert!(!is_nanp("+442071234567"));
        assert!(!is_nanp("anonymous"));
    }
}
