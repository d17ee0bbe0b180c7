//! The safe route: what a caller hears when a webhook fails (an apology, then Guest Care
//! OOM when open, or voicemail and a ticket when closed), recorded against the call when
//! the database allows; and the last resort, built from configuration alone.

use super::{answer, kept, speaks_ticket, step_with_facts, CallCtx, TwiML};
use crate::config::{Config, Target};
use crate::flow::engine::{Action, CallState, Input, Step, Vars};
use crate::flow::{NodeRef, ERROR_ENTRY};
use crate::records::{Record, Said, StepRecord};
use crate::state::AppState;
use crate::storage::StepBatch;
use crate::twiml::{self, Style};
use std::time::Duration;

/// The longest the error route waits to record itself before answering anyway.
pub(super) const ERROR_RECORD_DEADLINE: Duration = Duration::from_secs(3);

/// What had already happened when a webhook failed, so the safe route does not undo it.
#[derive(Debug, Clone)]
pub(super) enum Before {
    /// Nothing the caller would miss.
    Nothing,
    /// The caller left a voicemail: keep it, thank them and hang up.
    Recorded { url: String, duration: Option<i64> },
    /// The transfer connected and ended: hang up, do not dial again.
    Connected,
}

/// What kind of internal failure sent a caller down the safe route, as counted.
#[derive(Debug, Clone, Copy)]
pub(super) enum Fault {
    Database,
    Flow,
    Panic,
    Timeout,
    BadRequest,
    PlatformFallback,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Fault::Database => "database",
            Fault::Flow => "flow",
            Fault::Panic => "panic",
            Fault::Timeout => "timeout",
            Fault::BadRequest => "bad_request",
            Fault::PlatformFallback => "platform_fallback",
        }
    }
}

/// The manager's hours override, or none when the database cannot say in time.
pub(super) async fn read_override(state: &AppState) -> Option<crate::hours::OverrideState> {
    match tokio::time::timeout(ERROR_RECORD_DEADLINE, state.store.hours_override()).await {
        Ok(Ok(over)) => over,
        _ => None,
    }
}

/// The apology and safe route after an internal error, recorded against the call when
/// possible: Guest Care OOM when open, voicemail and a ticket when closed. A voicemail
/// already left is kept and a transfer already made is not dialled again.
pub(super) async fn error_route(
    state: &AppState,
    ctx: &CallCtx,
    fault: Fault,
    error: &str,
    over: Option<crate::hours::OverrideState>,
) -> TwiML {
    tracing::error!(call_sid = %ctx.info.call_sid, from = %ctx.from, event = ctx.event, fault = fault.label(),
        error = %crate::domain::redact_numbers(error), "call step failed: safe route");
    state
        .metrics
        .errors
        .with_label_values(&[fault.label()])
        .inc();
    state.metrics.webhook(ctx.event, "error_route");
    let now = state.now();
    // Whether the call already has a ticket is looked up (the error route once opened a
    // second one and moved the voicemail to it).
    let call_state = CallState {
        has_ticket: None,
        seq: ctx.seq,
        vars: Vars::new(),
    };
    let mut records = vec![Record::Step(StepRecord {
        node: ERROR_ENTRY.into(),
        kind: "error".into(),
        said: Said::default(),
        digits: None,
        result: error.chars().take(500).collect(),
        data: Default::default(),
    })];
    let mut step = match &ctx.before {
        Before::Recorded { url, duration } => {
            records.push(Record::Recording {
                url: url.clone(),
                duration_seconds: *duration,
            });
            records.push(Record::Outcome {
                value: "voicemail".into(),
                replace: true,
            });
            Step {
                actions: vec![Action::Say(THANKS.into()), Action::Hangup],
                records: Vec::new(),
            }
        }
        Before::Connected => Step {
            actions: vec![Action::Hangup],
            records: Vec::new(),
        },
        Before::Nothing => {
            let Some(entry) = NodeRef::parse_qualified(ERROR_ENTRY) else {
                return last_resort(state, ctx, over);
            };
            let input = Input::Enter(entry);
            match step_with_facts(state, ctx, now, over, call_state, &input, true).await {
                Ok(step) => step,
                Err(_) => return last_resort(state, ctx, over),
            }
        }
    };
    records.append(&mut step.records);
    if ctx.sid.is_none() {
        tracing::warn!(
            event = ctx.event,
            "webhook without a valid CallSid: nothing recorded"
        );
        return answer(state, &step.actions, None, None);
    }
    let key = format!("{}:error", ctx.key);
    let batch = StepBatch {
        call: &ctx.info,
        request_key: &key,
        at: now,
        records: &records,
        error: Some(error),
        answer: &kept(&step.actions),
        answer_speaks_ticket: speaks_ticket(&step.actions),
    };
    match tokio::time::timeout(ERROR_RECORD_DEADLINE, state.store.commit_step(&batch)).await {
        Ok(Ok(done)) => answer(
            state,
            &step.actions,
            done.replay.as_deref(),
            done.ticket.as_ref(),
        ),
        Ok(Err(e)) => {
            tracing::error!(call_sid = %ctx.info.call_sid, error = %e, "error route not recorded");
            answer(state, &step.actions, None, None)
        }
        Err(_) => {
            tracing::error!(call_sid = %ctx.info.call_sid, "error route not recorded in time");
            answer(state, &step.actions, None, None)
        }
    }
}

pub(super) const THANKS: &str =
    "Thank you, we have your message. A Guest Care agent will call you back. Goodbye.";

/// When even the error flow cannot be taken: an apology, then Guest Care OOM when open,
/// or the hours and goodbye when closed. Built from configuration alone.
pub(super) fn last_resort(
    state: &AppState,
    ctx: &CallCtx,
    over: Option<crate::hours::OverrideState>,
) -> TwiML {
    tracing::error!(call_sid = %ctx.info.call_sid, "error flow unavailable: last-resort answer");
    let open = state.config.schedule.is_open(state.now(), over);
    TwiML(last_resort_twiml(
        &state.config,
        &state.style,
        open,
        ctx.seq + 1,
    ))
}

/// The answer when even the error flow cannot be taken, built from configuration alone:
/// an apology, then a dial to Guest Care OOM when open (its outcome comes back to the
/// error route's transfer node), or the hours and goodbye when closed.
pub fn last_resort_twiml(config: &Config, style: &Style, open: bool, seq: u32) -> String {
    use crate::flow::engine::{Action, Endpoint, Link};
    let oom = match config.targets.get("oom") {
        Some(t @ (Target::Number { .. } | Target::Sip { .. })) if open => Some(t.clone()),
        _ => None,
    };
    let actions = match oom {
        Some(target) => vec![
            Action::Say("We're sorry, we are having a technical problem. Please hold while we connect you to Guest Care.".into()),
            Action::Dial {
                target,
                timeout: config.dial_timeout,
                action: Link {
                    endpoint: Endpoint::Dial,
                    node: crate::flow::NodeRef {
                        flow: "common".into(),
                        node: "error_transfer".into(),
                    },
                    attempt: 1,
                    seq,
                    silence: false,
                    phase: Default::default(),
                    pending: None,
                    vars: Default::default(),
                },
                // Blind, as common.error_transfer is: nothing here may need the database.
                whisper: None,
            },
        ],
        None => vec![
            Action::Say(Said::from(
                format!(
                    "We're sorry, we are having a technical problem and cannot take a message right now. \
                     Please call back during Guest Care hours: {}. Goodbye.",
                    config.schedule.describe()
                )
                .as_str(),
            )),
            Action::Hangup,
        ],
    };
    twiml::render(&actions, style, None)
}
