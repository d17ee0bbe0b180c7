//! Soft transfers: what the agent who answers hears before the guest is connected (the
//! whisper), the agent's key (screening), and what the transfer's outcome then is.
//!
//! The agent's leg is a call of its own: its webhooks carry the guest's call as
//! `ParentCallSid`, and their records are written to the guest's call. The transfer's
//! outcome is decided from those records, not from `DialCallStatus` alone: the platform
//! reports a leg that answered and then hung up in the whisper as answered.

use super::{Action, Endpoint, EngineError, Keys, Run};
use crate::domain::TicketNumber;
use crate::flow::{NodeRef, Whisper};
use crate::records::Said;
use chrono::{DateTime, Utc};

/// Seconds the agent has to press 1 after the announcement.
pub const SCREEN_TIMEOUT: u32 = 10;

/// A ticket as the agent is told of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketBrief {
    /// Its number.
    pub number: TicketNumber,
    /// Its category.
    pub category: String,
    /// When it was opened.
    pub opened_at: DateTime<Utc>,
    /// Opened by an earlier call of the guest's, and linked to this one.
    pub earlier_call: bool,
}

/// What the agent is told, read by the edge from the guest's call as committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentBrief {
    /// `guest_care` or `store`.
    pub line: String,
    /// The store called, on store lines.
    pub store_name: Option<String>,
    /// The labels of the guest's menu choices, in order.
    pub concerns: Vec<String>,
    /// The ticket of this call.
    pub ticket: Option<TicketBrief>,
    /// The caller's open ticket from an earlier call (a repeat caller).
    pub earlier: Option<TicketBrief>,
}

/// What the agent's leg of a transfer did, from the guest's call's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentLeg {
    /// No agent's leg was announced: nobody answered, or the whisper was never fetched.
    Unheard,
    /// The agent heard the announcement and pressed nothing: with screening, the agent
    /// hung up during the whisper.
    Announced,
    /// An answering machine answered.
    Machine,
    /// The agent pressed 1.
    Accepted,
    /// The agent pressed another key.
    Declined,
    /// The agent pressed nothing in time.
    NoKey,
    /// The records could not be read (the database down, the agent's leg journalled):
    /// the platform's `DialCallStatus` decides.
    Unknown,
}

/// Step kinds and results the agent's leg writes.
pub const KIND_WHISPER: &str = "whisper";
/// The agent's key.
pub const KIND_SCREEN: &str = "screen";
const ANNOUNCED: &str = "announced";
const MACHINE: &str = "answering machine";
const ACCEPTED: &str = "answered by agent";
const DECLINED: &str = "declined";
const NO_KEY: &str = "no key";

/// What the agent's leg of the latest transfer at `node` did, from the call's steps
/// (node, kind, result) in order.
pub fn agent_leg<'s>(
    node: &str,
    steps: impl Iterator<Item = (&'s str, &'s str, &'s str)>,
) -> AgentLeg {
    let mut leg = AgentLeg::Unheard;
    for (n, kind, result) in steps {
        if n != node {
            continue;
        }
        leg = match (kind, result) {
            // A new attempt at this transfer starts afresh.
            ("transfer", r) if r.starts_with("transferring") => AgentLeg::Unheard,
            (KIND_WHISPER, MACHINE) => AgentLeg::Machine,
            (KIND_WHISPER, _) => AgentLeg::Announced,
            (KIND_SCREEN, ACCEPTED) => AgentLeg::Accepted,
            (KIND_SCREEN, DECLINED) => AgentLeg::Declined,
            (KIND_SCREEN, _) => AgentLeg::NoKey,
            _ => leg,
        };
    }
    leg
}

/// Whether the platform's `AnsweredBy` names a machine (or a fax).
pub fn is_machine(answered_by: Option<&str>) -> bool {
    answered_by.is_some_and(|a| a.starts_with("machine") || a == "fax")
}

impl Run<'_, '_> {
    /// The agent answered: the announcement (and the screening question), or a hang-up
    /// when a machine answered.
    pub(super) fn whisper(
        &mut self,
        node: NodeRef,
        brief: &AgentBrief,
        machine: bool,
    ) -> Result<(), EngineError> {
        let t = self.transfer(&node)?;
        if machine {
            self.record_step(&node, KIND_WHISPER, &Said::default(), None, MACHINE.into());
            self.out.actions.push(Action::Hangup);
            return Ok(());
        }
        let mut said = Said::from(self.announcement(brief).as_str());
        match t.whisper {
            Whisper::Screen => {
                said.push_text(" Press 1 to take this call, or any other key to decline it.");
                let (action, on_silence) = (
                    self.agent_link(Endpoint::Screen, &node, false),
                    self.agent_link(Endpoint::Screen, &node, true),
                );
                self.push_gather(said.clone(), &Keys::one(SCREEN_TIMEOUT), action, on_silence);
            }
            // Announced only (or a whisper turned off since the transfer began): the
            // document ends and the platform connects the guest.
            Whisper::Announce | Whisper::Off => {
                said.push_text(" Connecting the guest now.");
                self.out.actions.push(Action::Say(said.clone()));
            }
        }
        self.record_step(&node, KIND_WHISPER, &said, None, ANNOUNCED.into());
        Ok(())
    }

    /// The agent's key, or `None` after the screening question got none.
    pub(super) fn screen(
        &mut self,
        node: NodeRef,
        digits: Option<String>,
    ) -> Result<(), EngineError> {
        self.transfer(&node)?;
        let (result, actions) = match digits.as_deref() {
            // An empty document: the platform connects the guest.
            Some("1") => (ACCEPTED, vec![]),
            Some(_) => (
                DECLINED,
                vec![
                    Action::Say(Said::from("Declined. The guest will be offered voicemail.")),
                    Action::Hangup,
                ],
            ),
            None => (NO_KEY, vec![Action::Hangup]),
        };
        self.record_step(
            &node,
            KIND_SCREEN,
            &Said::default(),
            digits.as_deref(),
            result.into(),
        );
        self.out.actions.extend(actions);
        Ok(())
    }

    /// The Dial action of a soft transfer: connected only when the agent took the call.
    pub(super) fn whispered_transfer_result(
        &mut self,
        node: NodeRef,
        status: &str,
    ) -> Result<(), EngineError> {
        let t = self.transfer(&node)?;
        let leg = self
            .env
            .agent_leg
            .ok_or_else(|| EngineError::NeedsAgentLeg {
                node: node.to_string(),
            })?;
        let connected = matches!(status, "completed" | "answered");
        let (result, outcome) = match leg {
            AgentLeg::Accepted => (ACCEPTED.to_string(), "transferred"),
            AgentLeg::Announced if connected && t.whisper == Whisper::Announce => {
                (ACCEPTED.to_string(), "transferred")
            }
            AgentLeg::Declined => (DECLINED.to_string(), "declined"),
            AgentLeg::NoKey => ("not answered: no key pressed".into(), "not_answered"),
            AgentLeg::Machine => ("not answered: answering machine".into(), "not_answered"),
            AgentLeg::Announced => (
                "not answered: the agent hung up during the whisper".into(),
                "not_answered",
            ),
            AgentLeg::Unheard => (format!("not answered: {status}"), "not_answered"),
            // The edge logs that the platform's status decided; the agent's own records,
            // once replayed from the journal, show what the agent did.
            AgentLeg::Unknown if connected => (ACCEPTED.to_string(), "transferred"),
            AgentLeg::Unknown => (format!("not answered: {status}"), "not_answered"),
        };
        let done = outcome == "transferred";
        self.record_step(&node, "transfer", &Said::default(), None, result);
        self.outcome(format!("{outcome}:{}", t.target), true);
        if done {
            self.out.actions.push(Action::Hangup);
            return Ok(());
        }
        self.walk(t.failed.clone())
    }

    /// A link of the agent's leg (the whisper, the agent's key).
    pub(super) fn agent_link(
        &self,
        endpoint: Endpoint,
        node: &NodeRef,
        silence: bool,
    ) -> super::Link {
        let mut link = self.link(endpoint, node, 1, silence);
        // The agent's leg carries no call variables: nothing it does needs them.
        link.vars.clear();
        link
    }

    /// The words the agent hears: the line and store, the concern, the ticket, and a
    /// repeat caller's open ticket.
    fn announcement(&self, brief: &AgentBrief) -> String {
        let mut text = match (brief.line.as_str(), &brief.store_name) {
            ("store", Some(store)) => format!("Guest Care transfer from the {store} store line."),
            ("store", None) => "Guest Care transfer from a store line.".to_string(),
            _ => "Guest Care transfer from the Guest Care line.".to_string(),
        };
        if brief.concerns.is_empty() {
            text.push_str(" The guest made no menu choice.");
        } else {
            text.push_str(&format!(
                " The guest's concern: {}.",
                brief.concerns.join(", then ")
            ));
        }
        match &brief.ticket {
            Some(t) if t.earlier_call => text.push_str(&format!(
                " This guest called before: ticket {}, {}, opened {}, is still open.",
                t.number.spoken(),
                t.category,
                self.day_of(t.opened_at)
            )),
            Some(t) => text.push_str(&format!(" Ticket {}, {}.", t.number.spoken(), t.category)),
            None => text.push_str(" No ticket on this call."),
        }
        if let Some(e) = &brief.earlier {
            text.push_str(&format!(
                " This guest called before: ticket {}, {}, opened {}, is still open.",
                e.number.spoken(),
                e.category,
                self.day_of(e.opened_at)
            ));
        }
        text
    }

    /// A time's date in Guest Care's time zone, in words.
    fn day_of(&self, at: DateTime<Utc>) -> String {
        super::say_date(at.with_timezone(&self.env.config.schedule.tz).date_naive())
    }
}
