//! What a call step writes: the records the flow engine produces and storage commits.

use crate::domain::TicketNumber;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Text a step produced, with the call's ticket number in it where the flow asks for it:
/// the number is known only once the records are committed, so it stays a typed part
/// until then and is filled in by whoever holds the committed ticket (the TwiML after the
/// commit, the commit for stored text).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "SaidForm", into = "SaidForm")]
pub struct Said(Vec<Piece>);

/// A part of [`Said`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Piece {
    /// Text as it is said or written.
    Text(String),
    /// The call's ticket number: "ticket G C 0 0 0 1 2 3" spoken, or "your ticket" while
    /// it is not known (the records journalled); "ticket GC000123" written.
    Ticket {
        /// Whether the word "ticket" comes with the number (`ticket {ticket_number}` in
        /// the flow file; a spoken number always has it).
        ticket: bool,
    },
}

/// How [`Said`] is kept in the journal: a list of parts, or, from a journal written before
/// the parts were typed, one string with `{ticket_number}` in it.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum SaidForm {
    Parts(Vec<Piece>),
    Legacy(String),
}

impl From<SaidForm> for Said {
    fn from(form: SaidForm) -> Self {
        match form {
            SaidForm::Parts(parts) => Said(parts),
            SaidForm::Legacy(text) => {
                let mut said = Said::default();
                let mut rest = text.as_str();
                while let Some(at) = rest.find("{ticket_number}") {
                    said.push_text(&rest[..at]);
                    said.push_ticket();
                    rest = &rest[at + "{ticket_number}".len()..];
                }
                said.push_text(rest);
                said
            }
        }
    }
}

impl From<Said> for SaidForm {
    fn from(said: Said) -> Self {
        SaidForm::Parts(said.0)
    }
}

impl From<&str> for Said {
    fn from(text: &str) -> Self {
        let mut said = Said::default();
        said.push_text(text);
        said
    }
}

impl Said {
    /// Appends text.
    pub fn push_text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        match self.0.last_mut() {
            Some(Piece::Text(t)) => t.push_str(text),
            _ => self.0.push(Piece::Text(text.to_string())),
        }
    }

    /// Appends the ticket number; a "ticket " just before it goes with it, so that it reads
    /// "your ticket" while the number is not known.
    pub fn push_ticket(&mut self) {
        let mut word = false;
        if let Some(Piece::Text(t)) = self.0.last_mut() {
            if let Some(kept) = t.strip_suffix("ticket ") {
                *t = kept.to_string();
                word = true;
                if t.is_empty() {
                    self.0.pop();
                }
            }
        }
        self.0.push(Piece::Ticket { ticket: word });
    }

    /// Appends another text, with a space between.
    pub fn append(&mut self, other: Said) {
        if !self.0.is_empty() && !other.0.is_empty() {
            self.push_text(" ");
        }
        for piece in other.0 {
            match piece {
                Piece::Text(t) => self.push_text(&t),
                ticket => self.0.push(ticket),
            }
        }
    }

    /// Whether the ticket number is in it.
    pub fn has_ticket(&self) -> bool {
        self.0.iter().any(|p| matches!(p, Piece::Ticket { .. }))
    }

    /// As the caller hears it.
    pub fn spoken(&self, ticket: Option<&TicketNumber>) -> String {
        self.fill_with(|out, _| match ticket {
            Some(t) => {
                out.push_str("ticket ");
                out.push_str(&t.spoken());
            }
            None => out.push_str("your ticket"),
        })
    }

    /// As staff read it (the stored step, a ticket's reason, an e-mail).
    pub fn written(&self, ticket: Option<&TicketNumber>) -> String {
        self.fill_with(|out, word| {
            if word {
                out.push_str("ticket ");
            }
            match ticket {
                Some(t) => out.push_str(&t.to_string()),
                None => out.push_str("(no ticket yet)"),
            }
        })
    }

    fn fill_with(&self, mut number: impl FnMut(&mut String, bool)) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Ticket { ticket } => number(&mut out, *ticket),
            }
        }
        out
    }
}

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
        reason: Said,
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
    /// An e-mail queued for a named contact; the ticket number is filled in at commit.
    Notification {
        /// Contact name from configuration.
        contact: String,
        /// Its e-mail address.
        address: String,
        /// Subject line.
        subject: Said,
        /// Body text.
        body: Said,
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
    pub said: Said,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticket_number_is_spoken_written_or_your_ticket_while_unknown() {
        let mut said = Said::from("We have logged ticket ");
        said.push_ticket();
        said.push_text(" for you.");
        let t = TicketNumber(123);
        assert_eq!(
            said.spoken(Some(&t)),
            format!("We have logged ticket {} for you.", t.spoken())
        );
        assert_eq!(said.spoken(None), "We have logged your ticket for you.");
        assert_eq!(
            said.written(Some(&t)),
            format!("We have logged ticket {t} for you.")
        );
        let mut bare = Said::from("Ticket: ");
        bare.push_ticket();
        assert_eq!(bare.written(Some(&t)), format!("Ticket: {t}"));
        assert!(bare.has_ticket() && !Said::from("no number").has_ticket());
    }

    #[test]
    fn a_journal_entry_of_an_earlier_version_reads_as_typed_parts() {
        let old: Said =
            serde_json::from_str(r#""Logged ticket {ticket_number}. Goodbye.""#).expect("legacy");
        let mut new = Said::from("Logged ticket ");
        new.push_ticket();
        new.push_text(". Goodbye.");
        assert_eq!(old, new);
        let round: Said =
            serde_json::from_str(&serde_json::to_string(&new).expect("json")).expect("parts");
        assert_eq!(round, new);
    }
}
