//! The step function: (flows, call state, input, time) → what to do, records to write.
//!
//! Pure: no HTTP, SQL, XML or clock. The webhook edge turns `Action`s into TwiML and
//! `Link`s into URLs, and commits the `Record`s before it answers.

use super::prompt::{Part, Prompt};
use super::{
    Entry, EntryFormat, FlowSet, Menu, Node, NodeRef, EXTERNAL_TICKET_VARS, TICKET_DUE_VAR,
};
use crate::config::{Config, Target};
use crate::domain::TicketNumber;
use crate::hours::OverrideState;
use crate::records::{ExistingTicket, Record, Said, StepRecord};
use chrono::{DateTime, Months, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod agent;
mod tickets;
mod walk;

pub use agent::{agent_leg, is_machine, AgentBrief, AgentLeg, TicketBrief, SCREEN_TIMEOUT};

pub use super::speech::say_date;
use super::speech::*;
pub use tickets::validate_entry;

/// The key of a menu step's data that holds the chosen option's `label`.
pub const CHOSEN_LABEL: &str = "label";

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
    /// What the agent's leg of a soft transfer did, fetched by the edge when the transfer's
    /// outcome asks (`EngineError::NeedsAgentLeg`).
    pub agent_leg: Option<AgentLeg>,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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
    /// The agent answered a soft transfer (the agent's leg): what the agent hears.
    Whisper {
        /// The transfer node.
        node: NodeRef,
        /// What the agent is told, from the guest's call.
        brief: AgentBrief,
        /// An answering machine answered (`AnsweredBy`).
        machine: bool,
    },
    /// The agent's key after the announcement, or `None` when none came in time.
    Screen {
        /// The transfer node.
        node: NodeRef,
        /// The key.
        digits: Option<String>,
    },
}

/// Which webhook a link points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// A soft transfer's announcement, fetched on the agent's leg.
    Whisper,
    /// The agent's key after the announcement, or its no-key redirect.
    Screen,
}

/// A later webhook of this call, with the state it needs encoded in its URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// One thing the caller hears or the platform does; kept (as JSON) with a webhook's
/// records, so that a retry is answered the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Speak.
    Say(Said),
    /// Speak the prompt while waiting for keys.
    Gather {
        /// Prompt.
        prompt: Said,
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
        /// A soft transfer: what the agent hears first, before the guest is connected.
        #[serde(default)]
        whisper: Option<Link>,
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
    /// A soft transfer's outcome needs what the agent's leg did: the edge reads it from
    /// the call's records and steps again.
    #[error("needs what the agent's leg of {node} did")]
    NeedsAgentLeg {
        /// The transfer node, `flow.node`.
        node: String,
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
        Input::Dial { node, status } if run.transfer(&node)?.whisper != super::Whisper::Off => {
            run.whispered_transfer_result(node, &status)?
        }
        Input::Dial { node, status } => {
            let answered = matches!(status.as_str(), "completed" | "answered");
            run.transfer_result(node, answered, &status)?
        }
        Input::Whisper {
            node,
            brief,
            machine,
        } => run.whisper(node, &brief, machine)?,
        Input::Screen { node, digits } => run.screen(node, digits)?,
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

    /// A compiled prompt or staff text with the call's parts filled in: `spoken`, for the
    /// caller (variables in words), or written, for staff (variables in their stored
    /// form). `value` is the entry being read back. The ticket number stays a typed part
    /// until the records are committed.
    fn compose(&self, prompt: &Prompt, spoken: bool, value: Option<&str>) -> Said {
        let mut out = Said::default();
        for part in prompt.parts() {
            match part {
                Part::Text(t) => out.push_text(t),
                Part::StoreName => out.push_text(self.env.store_name),
                Part::CallbackBy => out.push_text(&self.callback_by()),
                Part::Var(name) => {
                    let value = self.state.vars.get(name).map(String::as_str).unwrap_or("");
                    match self.flows.vars.get(name) {
                        Some(kind) if spoken => {
                            out.push_text(&say_value(*kind, value, self.env.config))
                        }
                        Some(kind) => out.push_text(&show_value(*kind, value, self.env.config)),
                        None => out.push_text(value),
                    }
                }
                Part::Value => out.push_text(value.unwrap_or("")),
                Part::Caller => out.push_text(self.env.caller),
                Part::CallSid => out.push_text(self.env.call_sid),
                Part::TicketNumber => out.push_ticket(),
            }
        }
        out
    }

    /// A prompt, as the caller hears it.
    fn speak(&self, prompt: &Prompt) -> Said {
        self.compose(prompt, true, None)
    }

    /// Text for staff (ticket reasons, notifications).
    fn for_staff(&self, text: &Prompt) -> Said {
        self.compose(text, false, None)
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
        said: &Said,
        digits: Option<&str>,
        result: String,
    ) {
        self.record_data(node, kind, said, digits, result, BTreeMap::new());
    }

    fn record_data(
        &mut self,
        node: &NodeRef,
        kind: &str,
        said: &Said,
        digits: Option<&str>,
        result: String,
        data: BTreeMap<String, String>,
    ) {
        self.out.records.push(Record::Step(StepRecord {
            node: node.to_string(),
            kind: kind.into(),
            said: said.clone(),
            digits: digits.map(str::to_owned),
            result,
            data,
        }));
    }

    fn outcome(&mut self, value: String, replace: bool) {
        self.out.records.push(Record::Outcome { value, replace });
    }

    fn say(&mut self, text: Said) -> Said {
        self.out.actions.push(Action::Say(text.clone()));
        text
    }

    /// Speaks `lead` (a reason to ask again) then `prompt` while waiting for keys; the
    /// keys come back to `node` at `attempt`, with the entry phase and value of `keys`.
    fn ask(
        &mut self,
        node: &NodeRef,
        prompt: Said,
        lead: Option<&Prompt>,
        attempt: u32,
        keys: Keys,
    ) -> Said {
        let said = match lead {
            Some(l) => {
                let mut said = self.speak(l);
                said.append(prompt);
                said
            }
            None => prompt,
        };
        let mut action = self.link(Endpoint::Gather, node, attempt, false);
        action.phase = keys.phase;
        action.pending = keys.pending.clone();
        let mut on_silence = action.clone();
        on_silence.silence = true;
        self.push_gather(said.clone(), &keys, action, on_silence);
        said
    }

    /// Speaks `prompt` while waiting for `keys`; they go to `action`, silence to `on_silence`.
    fn push_gather(&mut self, prompt: Said, keys: &Keys, action: Link, on_silence: Link) {
        self.out.actions.push(Action::Gather {
            prompt,
            timeout: keys.timeout,
            num_digits: keys.num_digits,
            finish_on_key: keys.finish_on_key,
            action,
            on_silence,
        });
    }

    /// Asks a menu's question: one key.
    fn gather(&mut self, node: &NodeRef, menu: &Menu, attempt: u32, lead: Option<&Prompt>) -> Said {
        let prompt = self.speak(&menu.prompt);
        self.ask(node, prompt, lead, attempt, Keys::one(menu.timeout))
    }

    /// Asks for an entry's value.
    fn ask_entry(
        &mut self,
        node: &NodeRef,
        e: &Entry,
        attempt: u32,
        lead: Option<&Prompt>,
    ) -> Said {
        let keys = Keys {
            num_digits: e.max_digits,
            finish_on_key: true,
            ..Keys::one(e.timeout)
        };
        let prompt = self.speak(&e.prompt);
        self.ask(node, prompt, lead, attempt, keys)
    }

    /// Reads a value back and asks 1 = correct, 2 = enter again.
    fn ask_confirm(
        &mut self,
        node: &NodeRef,
        e: &Entry,
        attempt: u32,
        value: &str,
        lead: Option<&Prompt>,
    ) -> Said {
        let from_caller = e.confirm_caller.is_some() && value == self.env.caller;
        let (template, shown) = match (&e.confirm_caller, from_caller) {
            (Some(t), true) => (t, say_last_four(value)),
            _ => (&e.confirm, say_entry(e.format, value)),
        };
        let keys = Keys {
            phase: Phase::Confirm,
            pending: Some(value.to_string()),
            ..Keys::one(5)
        };
        let prompt = self.compose(template, true, Some(&shown));
        self.ask(node, prompt, lead, attempt, keys)
    }
}
