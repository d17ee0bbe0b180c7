//! The Twilio-facing edge: signature check, form to typed input, one flow step, records
//! committed, TwiML answered. Every answer is 200 TwiML except 403 (bad signature) and
//! 413 (body too large): an internal error becomes an apology and the safe route.

mod agent_leg;
mod safe_route;
mod webhook;

pub use agent_leg::{screen, whisper};

pub use safe_route::last_resort_twiml;
pub use webhook::{endpoint_label, too_large, Webhook, BODY_READ_TIMEOUT, MAX_BODY};

use crate::domain::{CallSid, Digits, PhoneNumber};
use crate::flow::engine::{
    self, Action, CallState, EngineError, Env, Input, Step, TicketFacts, Vars,
};
use crate::records::{ExistingTicket, Record};
use crate::state::AppState;
use crate::storage::{CallInfo, StatusUpdate, StepBatch};
use crate::twiml;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use safe_route::{error_route, read_override, Before, Fault, ERROR_RECORD_DEADLINE};
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

/// A TwiML answer: `text/xml` with a `Content-Length`.
#[derive(Debug, Clone)]
pub struct TwiML(pub String);

impl IntoResponse for TwiML {
    fn into_response(self) -> Response {
        let mut res = (StatusCode::OK, self.0).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/xml; charset=utf-8"),
        );
        res
    }
}

/// The longest a step may take before the caller is sent down the safe route instead;
/// with the error route's own limit this keeps every answer well inside Twilio's 15 s.
const STEP_DEADLINE: Duration = Duration::from_secs(6);

/// The call a webhook belongs to and which webhook it is.
struct CallCtx {
    sid: Option<CallSid>,
    info: CallInfo,
    from: PhoneNumber,
    /// `incoming`, `gather`, `silence`, `dial`, …
    event: &'static str,
    /// Sequence number of the webhook within the call, from its URL.
    seq: u32,
    /// Identifies the webhook among the call's webhooks; retries share it.
    key: String,
    before: Before,
    /// Call variables carried in the webhook's URL (`v.NAME=value`).
    vars: Vars,
}

fn call_ctx(state: &AppState, hook: &Webhook, event: &'static str) -> CallCtx {
    let cfg = &state.config;
    let sid = hook.param("CallSid").and_then(|s| CallSid::parse(s).ok());
    let from = PhoneNumber::parse(hook.param("From").unwrap_or(""));
    let to = PhoneNumber::parse(hook.param("To").unwrap_or(""));
    let guest_care = to.as_str() == cfg.guest_care_number;
    let (line, flow, store_name) = if guest_care {
        ("guest_care", cfg.guest_care_flow.clone(), None)
    } else {
        (
            "store",
            cfg.store_flow.clone(),
            Some(cfg.store_name(to.as_str()).to_string()),
        )
    };
    let seq = hook.url.seq;
    let key = match event {
        // The fallback URL is fixed in the console; the failed webhook's URL tells them apart.
        "fallback" => format!(
            "fallback:{}",
            hook.param("ErrorUrl")
                .unwrap_or("")
                .chars()
                .filter(|c| !c.is_control())
                .take(300)
                .collect::<String>()
        ),
        _ => format!("{seq}:{event}"),
    };
    let before = match event {
        "record" => recording_of(hook)
            .map(|(url, duration)| Before::Recorded { url, duration })
            .unwrap_or(Before::Nothing),
        "dial" if dial_connected(hook.param("DialCallStatus").unwrap_or("")) => Before::Connected,
        _ => Before::Nothing,
    };
    CallCtx {
        info: CallInfo {
            call_sid: sid.as_ref().map(|s| s.to_string()).unwrap_or_default(),
            line: line.into(),
            store_name,
            from: from.as_str().into(),
            to: to.as_str().into(),
            flow,
            flow_version: state.flows.version.clone(),
        },
        sid,
        from,
        event,
        seq,
        key,
        before,
        vars: hook.url.vars.clone(),
    }
}

fn dial_connected(status: &str) -> bool {
    matches!(status, "completed" | "answered")
}

/// The recording of a Record action: an http(s) URL and its length.
fn recording_of(hook: &Webhook) -> Option<(String, Option<i64>)> {
    let url = hook
        .param("RecordingUrl")
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))?
        .chars()
        .filter(|c| !c.is_control())
        .take(2048)
        .collect();
    let duration = hook.param("RecordingDuration").and_then(|d| d.parse().ok());
    Some((url, duration))
}

/// Counts a webhook in flight until it is answered or dropped.
struct InFlight(prometheus::IntGauge);

impl InFlight {
    fn enter(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

type StepFn = fn(&AppState, &CallCtx, &Webhook) -> Result<Input, EngineError>;

/// Runs one call webhook on its own task, under a deadline: a panic, an error or a step
/// that runs too long all end in the error route, recorded against the call.
async fn guarded(state: AppState, hook: Webhook, event: &'static str, input: StepFn) -> TwiML {
    let started = std::time::Instant::now();
    let _in_flight = InFlight::enter(&state.metrics.in_flight);
    let answer = guarded_inner(&state, hook, event, input).await;
    state
        .metrics
        .latency
        .with_label_values(&[event])
        .observe(started.elapsed().as_secs_f64());
    answer
}

async fn guarded_inner(
    state: &AppState,
    hook: Webhook,
    event: &'static str,
    input: StepFn,
) -> TwiML {
    // Shared with the task, not copied: the error route below needs it too.
    let hook = std::sync::Arc::new(hook);
    let task = {
        let (state, hook) = (state.clone(), hook.clone());
        tokio::spawn(async move {
            let ctx = call_ctx(&state, &hook, event);
            let input = input(&state, &ctx, &hook);
            run(&state, &ctx, input).await
        })
    };
    let abort = task.abort_handle();
    let (fault, failure) = match tokio::time::timeout(STEP_DEADLINE, task).await {
        Ok(Ok(answer)) => return answer,
        Ok(Err(e)) if e.is_panic() => (Fault::Panic, "panic while answering the webhook".into()),
        Ok(Err(e)) => (Fault::Panic, format!("webhook task failed: {e}")),
        Err(_) => {
            abort.abort();
            (
                Fault::Timeout,
                format!("no answer within {} s", STEP_DEADLINE.as_secs()),
            )
        }
    };
    let ctx = call_ctx(state, &hook, event);
    error_route(state, &ctx, fault, &failure, None).await
}

/// `POST /voice/incoming`: a call comes in.
pub async fn incoming(State(state): State<AppState>, hook: Webhook) -> TwiML {
    guarded(state, hook, "incoming", |state, ctx, _| {
        let flow = &ctx.info.flow;
        state
            .flows
            .start(flow)
            .map(Input::Enter)
            .ok_or_else(|| EngineError::UnknownNode(format!("{flow} (no start)")))
    })
    .await
}

/// The flow input of a menu's answer (`silence`: the redirect after no input).
pub fn gather_input(hook: &Webhook, silence: bool) -> Result<Input, EngineError> {
    let digits = if silence {
        None
    } else {
        // Keys other than 0-9, * and # cannot come from a keypad: treat them as a wrong key.
        Some(
            hook.param("Digits")
                .map(|d| {
                    Digits::parse(d)
                        .map(|d| d.as_str().to_string())
                        .unwrap_or_else(|_| "?".into())
                })
                .unwrap_or_default(),
        )
    };
    hook.url.node().map(|node| Input::Gather {
        node,
        attempt: hook.url.attempt.max(1),
        digits,
        phase: hook.url.phase,
        pending: hook.url.pending.clone(),
    })
}

/// `POST /voice/gather`: a menu's answer, or the redirect after silence.
pub async fn gather(State(state): State<AppState>, hook: Webhook) -> TwiML {
    if hook.url.silence {
        guarded(state, hook, "silence", |_, _, hook| {
            gather_input(hook, true)
        })
        .await
    } else {
        guarded(state, hook, "gather", |_, _, hook| {
            gather_input(hook, false)
        })
        .await
    }
}

/// `POST /voice/dial`: the outcome of a transfer.
pub async fn dial(State(state): State<AppState>, hook: Webhook) -> TwiML {
    guarded(state, hook, "dial", |_, _, hook| {
        let status = hook.param("DialCallStatus").unwrap_or("failed").to_string();
        hook.url.node().map(|node| Input::Dial { node, status })
    })
    .await
}

/// `POST /voice/queue`: the caller left the escalation queue.
pub async fn queue(State(state): State<AppState>, hook: Webhook) -> TwiML {
    guarded(state, hook, "queue", |_, _, hook| {
        let result = hook.param("QueueResult").unwrap_or("error").to_string();
        hook.url.node().map(|node| Input::Queue { node, result })
    })
    .await
}

/// `POST /voice/record`: a voicemail, or the redirect when nothing was recorded.
pub async fn record(State(state): State<AppState>, hook: Webhook) -> TwiML {
    if hook.url.silence {
        guarded(state, hook, "silence", |_, _, hook| {
            hook.url.node().map(|node| Input::Recorded {
                node,
                url: None,
                duration: None,
            })
        })
        .await
    } else {
        guarded(state, hook, "record", |_, _, hook| {
            let rec = recording_of(hook);
            hook.url.node().map(|node| Input::Recorded {
                node,
                duration: rec.as_ref().and_then(|r| r.1),
                url: rec.map(|r| r.0),
            })
        })
        .await
    }
}

/// `POST /voice/…` that is none of ours (a mistyped console URL, a stale link): the
/// apology and the safe route, recorded against the call.
pub async fn unknown(State(state): State<AppState>, hook: Webhook) -> TwiML {
    guarded(state, hook, "unknown", |_, _, _| {
        Err(EngineError::UnknownNode(
            "a webhook path this server does not have".into(),
        ))
    })
    .await
}

/// `POST /voice/queue/wait`: what callers waiting in the queue hear (no records).
pub async fn queue_wait(State(state): State<AppState>, hook: Webhook) -> TwiML {
    let ctx = call_ctx(&state, &hook, "queue_wait");
    let env = env_for(&state, &ctx, state.now(), None);
    let step = hook.url.node().and_then(|node| {
        engine::step(
            &state.flows,
            &env,
            CallState::default(),
            Input::QueueWait { node },
        )
    });
    match step {
        Ok(step) => TwiML(twiml::render(&step.actions, &state.style, None)),
        Err(e) => {
            tracing::warn!(error = %crate::domain::redact_numbers(&e.to_string()), "queue wait: bad node");
            TwiML(twiml::render(&[Action::Pause(20)], &state.style, None))
        }
    }
}

/// `POST /voice/fallback`: the platform could not use our answer; route the caller safely.
pub async fn fallback(State(state): State<AppState>, hook: Webhook) -> TwiML {
    let ctx = call_ctx(&state, &hook, "fallback");
    let code = hook.param("ErrorCode").unwrap_or("unknown");
    let url = hook.param("ErrorUrl").unwrap_or("");
    // The path only: the query carries call variables such as a callback number.
    let path = url.split('?').next().unwrap_or_default();
    let code: String = code
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect();
    let message = format!(
        "platform fallback: error {code} at {}",
        path.chars().take(200).collect::<String>()
    );
    let over = read_override(&state).await;
    error_route(&state, &ctx, Fault::PlatformFallback, &message, over).await
}

/// `POST /voice/status`: a status callback. Stored even for calls we never saw.
pub async fn status(State(state): State<AppState>, hook: Webhook) -> TwiML {
    let ctx = call_ctx(&state, &hook, "status");
    let empty = TwiML(twiml::render(&[], &state.style, None));
    if ctx.sid.is_none() {
        tracing::warn!("status callback without a valid CallSid ignored");
        return empty;
    }
    let at = hook
        .param("Timestamp")
        .and_then(|t| DateTime::parse_from_rfc2822(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| state.now());
    let status: String = hook
        .param("CallStatus")
        .unwrap_or("unknown")
        .chars()
        .filter(|c| c.is_ascii_lowercase() || *c == '-')
        .take(32)
        .collect();
    // Statuses are words (`in-progress`); anything else is not one.
    let status = if status.is_empty() {
        "unknown".to_string()
    } else {
        status
    };
    let update = StatusUpdate {
        call: &ctx.info,
        status: &status,
        sequence: hook.param("SequenceNumber").and_then(|s| s.parse().ok()),
        duration_seconds: hook.param("CallDuration").and_then(|s| s.parse().ok()),
        at,
    };
    if let Err(e) = state.store.record_status(&update).await {
        state.metrics.webhook("status", "not_recorded");
        state.metrics.errors.with_label_values(&["database"]).inc();
        tracing::error!(call_sid = %ctx.info.call_sid, error = %e, "status callback not recorded");
    } else {
        state.metrics.webhook("status", "ok");
        tracing::info!(call_sid = %ctx.info.call_sid, from = %ctx.from, status = %status, "call status");
    }
    empty
}

fn env_for<'a>(
    state: &'a AppState,
    ctx: &'a CallCtx,
    now: DateTime<Utc>,
    hours_override: Option<crate::hours::OverrideState>,
) -> Env<'a> {
    Env {
        config: &state.config,
        now,
        hours_override,
        store_name: ctx.info.store_name.as_deref().unwrap_or("Guest Care"),
        caller: &ctx.info.from,
        call_sid: &ctx.info.call_sid,
        facts: None,
        caller_tickets: None,
        agent_leg: None,
    }
}

/// Takes a step and commits its records, or falls back to the error route.
async fn run(state: &AppState, ctx: &CallCtx, input: Result<Input, EngineError>) -> TwiML {
    match step_and_commit(state, ctx, input).await {
        Ok(answer) => answer,
        Err(failed) => error_route(state, ctx, failed.fault, &failed.message, failed.over).await,
    }
}

/// Why a step was not taken or not committed.
struct Failed {
    fault: Fault,
    message: String,
    /// The hours override, when it was read.
    over: Option<crate::hours::OverrideState>,
}

/// Takes a step and commits its records; answers the TwiML of the committed step.
async fn step_and_commit(
    state: &AppState,
    ctx: &CallCtx,
    input: Result<Input, EngineError>,
) -> Result<TwiML, Failed> {
    let fail = |fault, message: String, over| Failed {
        fault,
        message,
        over,
    };
    if ctx.sid.is_none() {
        return Err(fail(
            Fault::BadRequest,
            "missing or invalid CallSid".into(),
            None,
        ));
    }
    let now = state.now();
    let over = state
        .store
        .hours_override()
        .await
        .map_err(|e| fail(Fault::Database, e.to_string(), None))?;
    let input = input.map_err(|e| fail(Fault::Flow, e.to_string(), over))?;
    // Whether the call has a ticket is looked up only when a node needs it.
    let call_state = CallState {
        has_ticket: None,
        seq: ctx.seq,
        vars: ctx.vars.clone(),
    };
    let step = step_with_facts(state, ctx, now, over, call_state, &input, false)
        .await
        .map_err(|(fault, e)| fail(fault, e, over))?;
    let batch = StepBatch {
        call: &ctx.info,
        request_key: &ctx.key,
        at: now,
        records: &step.records,
        error: None,
        answer: &kept(&step.actions),
        answer_speaks_ticket: speaks_ticket(&step.actions),
    };
    let done = state
        .store
        .commit_step(&batch)
        .await
        .map_err(|e| fail(Fault::Database, e.to_string(), over))?;
    log_step(ctx, &step, done.replay.is_some());
    count_step(state, ctx, &step.records, done.replay.is_some());
    Ok(answer(
        state,
        &step.actions,
        done.replay.as_deref(),
        done.ticket.as_ref(),
    ))
}

/// What is kept with a webhook's records for a retry: its actions, typed (JSON). The
/// TwiML is rendered from them once the records are committed, with the ticket the commit
/// returns, and rendered again from them for a retry.
fn kept(actions: &[Action]) -> String {
    serde_json::to_string(actions).unwrap_or_default()
}

/// Whether the actions speak the call's ticket number.
fn speaks_ticket(actions: &[Action]) -> bool {
    actions.iter().any(|a| match a {
        Action::Say(said) | Action::Gather { prompt: said, .. } => said.has_ticket(),
        _ => false,
    })
}

/// The TwiML answered after the commit: the stored actions when this webhook was answered
/// before (a retry hears the same), else this step's.
fn answer(
    state: &AppState,
    actions: &[Action],
    replay: Option<&str>,
    ticket: Option<&crate::domain::TicketNumber>,
) -> TwiML {
    match replay {
        Some(kept) if kept.starts_with('<') => TwiML(kept_before_typed_prompts(kept, ticket)),
        Some(kept) => match serde_json::from_str::<Vec<Action>>(kept) {
            Ok(stored) => TwiML(twiml::render(&stored, &state.style, ticket)),
            Err(e) => {
                tracing::warn!(error = %e, "a kept answer unreadable: this step's answered");
                TwiML(twiml::render(actions, &state.style, ticket))
            }
        },
        None => TwiML(twiml::render(actions, &state.style, ticket)),
    }
}

/// An answer kept by a version before typed prompts: its TwiML, with the ticket number
/// still a `{ticket_number}` placeholder in it, replayed as it was kept. Only webhooks
/// answered before an upgrade and retried after it come here.
fn kept_before_typed_prompts(twiml: &str, ticket: Option<&crate::domain::TicketNumber>) -> String {
    match ticket {
        Some(t) => twiml.replace("{ticket_number}", &t.spoken()),
        None => twiml
            .replace("ticket {ticket_number}", "your ticket")
            .replace("{ticket_number}", "your ticket"),
    }
}

/// What a step asked the database for, each fetched once.
#[derive(Default)]
struct Facts {
    external: Option<TicketFacts>,
    caller_tickets: BTreeMap<String, Option<ExistingTicket>>,
}

/// Takes a step, fetching what it asks the database for and taking it again (each fact at
/// most once, so this ends). A fact the database cannot give fails the step, or, when
/// `lenient` (the error route's own step), is taken as "none" after at most
/// [`ERROR_RECORD_DEADLINE`].
async fn step_with_facts(
    state: &AppState,
    ctx: &CallCtx,
    now: DateTime<Utc>,
    over: Option<crate::hours::OverrideState>,
    mut call_state: CallState,
    input: &Input,
    lenient: bool,
) -> Result<Step, (Fault, String)> {
    let mut facts = Facts::default();
    let mut agent_leg = None;
    loop {
        let stepped = {
            let mut env = env_for(state, ctx, now, over);
            env.facts = facts.external.as_ref();
            env.caller_tickets = Some(&facts.caller_tickets);
            env.agent_leg = agent_leg;
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                engine::step(&state.flows, &env, call_state.clone(), input.clone())
            }))
        };
        let error = match stepped {
            Ok(Ok(step)) => return Ok(step),
            Ok(Err(e)) => e,
            Err(_) => return Err((Fault::Panic, "panic in the flow engine".into())),
        };
        let sid = &ctx.info.call_sid;
        let fetched = match &error {
            EngineError::NeedsTicketState if call_state.has_ticket.is_none() => {
                let found = bounded(lenient, state.store.call_has_ticket(sid)).await;
                call_state.has_ticket = Some(*found.as_ref().unwrap_or(&false));
                found.map(|_| ())
            }
            EngineError::NeedsLookup {
                category,
                external_ref,
            } if facts.external.is_none() => {
                let found = bounded(
                    lenient,
                    state.store.find_external_ticket(category, external_ref),
                )
                .await;
                facts.external = Some(TicketFacts {
                    category: category.clone(),
                    external_ref: external_ref.clone(),
                    found: found.as_ref().ok().cloned().flatten(),
                });
                found.map(|_| ())
            }
            EngineError::NeedsCallerTicket { node } if !facts.caller_tickets.contains_key(node) => {
                let found = bounded(
                    lenient,
                    state.store.find_caller_ticket(&ctx.info.from, node),
                )
                .await;
                facts
                    .caller_tickets
                    .insert(node.clone(), found.as_ref().ok().cloned().flatten());
                found.map(|_| ())
            }
            EngineError::NeedsAgentLeg { node } if agent_leg.is_none() => {
                // Unreadable, the platform's status decides: never the error route for
                // a guest whose conversation may just have ended.
                agent_leg = Some(match bounded(true, state.store.get_call(sid)).await {
                    // The agent's records may wait in the journal.
                    Ok(_) if state.store.records_pending() => engine::AgentLeg::Unknown,
                    Ok(detail) => engine::agent_leg(
                        node,
                        detail
                            .iter()
                            .flat_map(|d| d.steps.iter())
                            .map(|s| (s.node.as_str(), s.kind.as_str(), s.result.as_str())),
                    ),
                    Err(e) => {
                        tracing::warn!(call_sid = %sid, error = %e, "the agent's leg unreadable: the platform's status decides");
                        engine::AgentLeg::Unknown
                    }
                });
                Ok(())
            }
            _ => return Err((Fault::Flow, error.to_string())),
        };
        if let Err(e) = fetched {
            if !lenient {
                return Err((Fault::Database, e.to_string()));
            }
            tracing::warn!(call_sid = %sid, error = %e, "error route: a fact unreadable, taken as none");
        }
    }
}

/// A lookup, bounded by [`ERROR_RECORD_DEADLINE`] when `lenient`.
async fn bounded<T>(
    lenient: bool,
    lookup: impl std::future::Future<Output = crate::storage::StoreResult<T>>,
) -> crate::storage::StoreResult<T> {
    if !lenient {
        return lookup.await;
    }
    tokio::time::timeout(ERROR_RECORD_DEADLINE, lookup)
        .await
        .unwrap_or(Err(crate::storage::StoreError::timed_out("a lookup")))
}

/// Counts a committed webhook; a replayed retry counts as such and nothing else.
fn count_step(state: &AppState, ctx: &CallCtx, records: &[Record], replay: bool) {
    let m = &state.metrics;
    m.webhook(ctx.event, if replay { "replay" } else { "ok" });
    if replay {
        return;
    }
    for r in records {
        match r {
            Record::Step(s) => m.nodes.with_label_values(&[s.node.as_str()]).inc(),
            Record::Ticket { category, .. } => {
                m.tickets.with_label_values(&[category.as_str()]).inc()
            }
            _ => {}
        }
    }
}

fn log_step(ctx: &CallCtx, step: &Step, replay: bool) {
    let last = step.records.iter().rev().find_map(|r| match r {
        Record::Step(s) => Some(s),
        _ => None,
    });
    tracing::info!(
        call_sid = %ctx.info.call_sid,
        from = %ctx.from,
        event = ctx.event,
        node = last.map(|s| s.node.as_str()).unwrap_or(""),
        result = last.map(|s| s.result.as_str()).unwrap_or(""),
        replay,
        "call step"
    );
}
