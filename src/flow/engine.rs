//! The step function: (flows, call state, input, time) → what to do, records to write.
//!
//! Pure: no HTTP, SQL, XML or clock. The webhook edge turns `Action`s into TwiML and
//! `Link`s into URLs, and commits the `Record`s before it answers.

use super::{FlowSet, Menu, Node, NodeRef};
use crate::config::{Config, Target};
use crate::hours::OverrideState;
use crate::records::{Record, StepRecord};
use chrono::{DateTime, Utc};

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
}

/// What the step knows about the call so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallState {
    /// Whether the call already has a ticket.
    pub has_ticket: bool,
    /// Sequence number of this webhook within the call (0 for the incoming call).
    pub seq: u32,
}

/// The event that triggered the step.
#[derive(Debug, Clone)]
pub enum Input {
    /// Start the call (or an error route) at a node.
    Enter(NodeRef),
    /// A menu's answer: keys pressed, or `None` after silence.
    Gather {
        /// The menu node.
        node: NodeRef,
        /// Attempt number, from 1.
        attempt: u32,
        /// Keys pressed.
        digits: Option<String>,
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
}

/// One thing the caller hears or the platform does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Speak.
    Say(String),
    /// Speak the prompt while waiting for one key.
    Gather {
        /// Prompt.
        prompt: String,
        /// Seconds to wait.
        timeout: u32,
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
        } => run.answer_menu(node, attempt, digits)?,
        Input::Dial { node, status } => {
            let answered = matches!(status.as_str(), "completed" | "answered");
            run.transfer_result(node, answered, &status)?
        }
        Input::Queue { node, result } => {
            // The caller talked to someone, hung up, or was moved on by an agent: done.
            // `leave` (the caller left the queue), a full queue, an error or a shutdown
            // take the transfer's failed route: voicemail and a ticket.
            let done = matches!(
                result.as_str(),
                "bridged"
                    | "bridging-in-process"
                    | "hangup"
                    | "redirected"
                    | "redirected-from-bridged"
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
            let said = run.render(&text);
            run.out.actions.push(Action::Say(said));
            run.out.actions.push(Action::Pause(20));
        }
    }
    Ok(run.out)
}

struct Run<'a, 'e> {
    flows: &'a FlowSet,
    env: &'a Env<'e>,
    state: CallState,
    out: Step,
}

impl<'a> Run<'a, '_> {
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
        let mut out = text.to_string();
        for (name, value) in &c.texts {
            let key = format!("{{{name}}}");
            if out.contains(&key) {
                out = out.replace(&key, value);
            }
        }
        out.replace("{store_name}", self.env.store_name)
            .replace("{brand}", &c.brand)
            .replace("{website}", &c.website)
            .replace("{texting_number}", &spaced(&c.texting_number))
            .replace("{hours}", &c.schedule.describe())
    }

    fn render_notification(&self, text: &str) -> String {
        text.replace("{store_name}", self.env.store_name)
            .replace("{caller}", self.env.caller)
            .replace("{call_sid}", self.env.call_sid)
    }

    fn link(&self, endpoint: Endpoint, node: &NodeRef, attempt: u32, silence: bool) -> Link {
        Link {
            endpoint,
            node: node.clone(),
            attempt,
            seq: self.state.seq + 1,
            silence,
        }
    }

    fn record_step(
        &mut self,
        node: &NodeRef,
        kind: &str,
        said: &str,
        digits: Option<&str>,
        result: String,
    ) {
        self.out.records.push(Record::Step(StepRecord {
            node: node.to_string(),
            kind: kind.into(),
            said: said.into(),
            digits: digits.map(str::to_owned),
            result,
        }));
    }

    fn outcome(&mut self, value: String, replace: bool) {
        self.out.records.push(Record::Outcome { value, replace });
    }

    fn say(&mut self, text: String) -> String {
        self.out.actions.push(Action::Say(text.clone()));
        text
    }

    fn gather(&mut self, node: &NodeRef, menu: &Menu, attempt: u32, lead: Option<&str>) -> String {
        let prompt = self.render(&menu.prompt);
        let said = match lead {
            Some(l) => format!("{} {prompt}", self.render(l)),
            None => prompt,
        };
        self.out.actions.push(Action::Gather {
            prompt: said.clone(),
            timeout: menu.timeout,
            action: self.link(Endpoint::Gather, node, attempt, false),
            on_silence: self.link(Endpoint::Gather, node, attempt, true),
        });
        said
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
                    let said = self.say(self.render(text));
                    self.record_step(&current, kind, &said, None, "said".into());
                    current = next.clone();
                }
                Node::Ticket {
                    category,
                    reason,
                    next,
                } => {
                    self.out.records.push(Record::Ticket {
                        category: category.clone(),
                        reason: reason.clone(),
                    });
                    self.state.has_ticket = true;
                    self.record_step(&current, kind, "", None, format!("ticket {category}"));
                    current = next.clone();
                }
                Node::Notify {
                    contact,
                    subject,
                    body,
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
                        subject: self.render_notification(subject),
                        body: self.render_notification(body),
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
                    if !self.state.has_ticket {
                        self.out.records.push(Record::Ticket {
                            category: v.ticket_category.clone(),
                            reason: v.ticket_reason.clone(),
                        });
                        self.state.has_ticket = true;
                        self.record_step(
                            &current,
                            kind,
                            "",
                            None,
                            format!("ticket {}", v.ticket_category),
                        );
                    }
                    let said = self.say(self.render(&v.prompt));
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
                Node::Hangup { text } => {
                    let said = match text {
                        Some(t) => self.say(self.render(t)),
                        None => String::new(),
                    };
                    self.out.actions.push(Action::Hangup);
                    self.record_step(&current, kind, &said, None, "hung up".into());
                    self.outcome("self_service".into(), false);
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
            Some((_, next)) => {
                self.record_step(&node, "menu", "", Some(&keys), format!("chose {keys}"));
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

/// Spaces out digits so text-to-speech reads them one by one.
fn spaced(number: &str) -> String {
    let chars: Vec<String> = number.chars().map(String::from).collect();
    chars.join(" ")
}
