//! The Twilio-facing edge: signature check, form to typed input, one flow step, records
//! committed, TwiML answered. Every answer is 200 TwiML except 403 (bad signature) and
//! 413 (body too large): an internal error becomes an apology and the safe route.

use crate::app::AppState;
use crate::domain::{CallSid, Digits, PhoneNumber, TicketNumber};
use crate::flow::engine::{self, Action, CallState, EngineError, Env, Input, Step};
use crate::flow::{NodeRef, ERROR_ENTRY};
use crate::records::{Record, StepRecord};
use crate::signature;
use crate::storage::{CallInfo, StatusUpdate, StepBatch};
use crate::twiml;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use std::panic::AssertUnwindSafe;

/// Largest webhook body accepted; Twilio's forms are a few kilobytes.
pub const MAX_BODY: usize = 64 * 1024;

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

/// A verified webhook: its POST parameters and its query parameters.
#[derive(Debug, Clone)]
pub struct Webhook {
    params: Vec<(String, String)>,
    query: Vec<(String, String)>,
}

impl Webhook {
    /// The first value of a POST parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn query_u32(&self, name: &str) -> u32 {
        self.query(name).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

impl FromRequest<AppState> for Webhook {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes: Bytes = axum::body::to_bytes(body, MAX_BODY)
            .await
            .map_err(|_| plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"))?;
        let params: Vec<(String, String)> = form_urlencoded::parse(&bytes).into_owned().collect();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let query = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
        if let Some(token) = &state.config.twilio_auth_token {
            let url = match &state.config.public_url {
                Some(base) => format!("{base}{path_and_query}"),
                None => {
                    let host = parts
                        .headers
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("localhost");
                    format!("http://{host}{path_and_query}")
                }
            };
            let given = parts
                .headers
                .get("x-twilio-signature")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            if given.is_empty() || !signature::verify(token.expose(), &url, &params, given) {
                tracing::warn!(
                    path = parts.uri.path(),
                    signed = !given.is_empty(),
                    "webhook rejected: invalid signature"
                );
                return Err(plain(StatusCode::FORBIDDEN, "invalid signature\n"));
            }
        }
        Ok(Self { params, query })
    }
}

/// The call a webhook belongs to, from its parameters and configuration.
struct CallCtx {
    sid: Option<CallSid>,
    info: CallInfo,
    from: PhoneNumber,
}

fn call_ctx(state: &AppState, hook: &Webhook) -> CallCtx {
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
    }
}

/// `POST /voice/incoming`: a call comes in.
pub async fn incoming(state: axum::extract::State<AppState>, hook: Webhook) -> TwiML {
    let ctx = call_ctx(&state, &hook);
    let start = state.flows.start(&ctx.info.flow);
    let input = match start {
        Some(node) => Ok(Input::Enter(node)),
        None => Err(EngineError::UnknownNode(format!(
            "{} (no start)",
            ctx.info.flow
        ))),
    };
    run(&state, &ctx, 0, "incoming", input).await
}

fn node_of(hook: &Webhook) -> Result<NodeRef, EngineError> {
    let raw = hook.query("node").unwrap_or("");
    NodeRef::parse_qualified(raw)
        .ok_or_else(|| EngineError::UnknownNode(raw.chars().take(80).collect()))
}

/// `POST /voice/gather`: a menu's answer, or the redirect after silence.
pub async fn gather(state: axum::extract::State<AppState>, hook: Webhook) -> TwiML {
    let ctx = call_ctx(&state, &hook);
    let silence = hook.query("silence").is_some();
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
    let event = if silence { "silence" } else { "gather" };
    let input = node_of(&hook).map(|node| Input::Gather {
        node,
        attempt: hook.query_u32("attempt").max(1),
        digits,
    });
    run(&state, &ctx, hook.query_u32("seq"), event, input).await
}

/// `POST /voice/dial`: the outcome of a transfer.
pub async fn dial(state: axum::extract::State<AppState>, hook: Webhook) -> TwiML {
    let ctx = call_ctx(&state, &hook);
    let status = hook.param("DialCallStatus").unwrap_or("failed").to_string();
    let input = node_of(&hook).map(|node| Input::Dial { node, status });
    run(&state, &ctx, hook.query_u32("seq"), "dial", input).await
}

/// `POST /voice/queue`: the caller left the escalation queue.
pub async fn queue(state: axum::extract::State<AppState>, hook: Webhook) -> TwiML {
    let ctx = call_ctx(&state, &hook);
    let result = hook.param("QueueResult").unwrap_or("error").to_string();
    let input = node_of(&hook).map(|node| Input::Queue { node, result });
    run(&state, &ctx, hook.query_u32("seq"), "queue", input).await
}

/// `POST /voice/record`: a voicemail, or the redirect when nothing was recorded.
pub async fn record(state: axum::extract::State<AppState>, hook: Webhook) -> TwiML {
    let ctx = call_ctx(&state, &hook);
    let silence = hook.query("silence").is_some();
    let url = if silence {
        None
    } else {
        hook.param("RecordingUrl")
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .map(|u| u.chars().filter(|c| !c.is_control()).take(2048).collect())
    };
    let duration = hook.param("RecordingDuration").and_then(|d| d.parse().ok());
    let event = if silence { "silence" } else { "record" };
    let input = node_of(&hook).map(|node| Input::Recorded {
        node,
        url,
        duration,
    });
    run(&state, &ctx, hook.query_u32("seq"), event, input).await
}

/// `POST /voice/queue/wait`: what callers waiting in the queue hear (no records).
pub async fn queue_wait(state: axum::extract::State<AppState>, hook: Webhook) -> TwiML {
    let ctx = call_ctx(&state, &hook);
    let env = env_for(&state, &ctx, state.now(), None);
    let step = node_of(&hook).and_then(|node| {
        engine::step(
            &state.flows,
            &env,
            CallState::default(),
            Input::QueueWait { node },
        )
    });
    match step {
        Ok(step) => TwiML(twiml::render(&step.actions, &state.style)),
        Err(e) => {
            tracing::warn!(error = %e, "queue wait: bad node");
            TwiML(twiml::render(&[Action::Pause(20)], &state.style))
        }
    }
}

/// `POST /voice/fallback`: the platform could not use our answer; route the caller safely.
pub async fn fallback(state: axum::extract::State<AppState>, hook: Webhook) -> TwiML {
    let ctx = call_ctx(&state, &hook);
    let code = hook.param("ErrorCode").unwrap_or("unknown");
    let url = hook.param("ErrorUrl").unwrap_or("");
    let message = format!(
        "platform fallback: error {code} at {}",
        url.chars().take(200).collect::<String>()
    );
    let seq = hook.query_u32("seq");
    tracing::error!(call_sid = %ctx.info.call_sid, %message, "fallback URL requested");
    error_route(&state, &ctx, seq, "fallback", &message, None).await
}

/// `POST /voice/status`: a status callback. Stored even for calls we never saw.
pub async fn status(state: axum::extract::State<AppState>, hook: Webhook) -> TwiML {
    let ctx = call_ctx(&state, &hook);
    let empty = TwiML(twiml::render(&[], &state.style));
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
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(32)
        .collect();
    let update = StatusUpdate {
        call: &ctx.info,
        status: &status,
        sequence: hook.param("SequenceNumber").and_then(|s| s.parse().ok()),
        duration_seconds: hook.param("CallDuration").and_then(|s| s.parse().ok()),
        at,
    };
    if let Err(e) = state.store.record_status(&update).await {
        tracing::error!(call_sid = %ctx.info.call_sid, error = %e, "status callback not recorded");
    } else {
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
    }
}

/// Takes a step and commits its records, or falls back to the error route.
async fn run(
    state: &AppState,
    ctx: &CallCtx,
    seq: u32,
    event: &str,
    input: Result<Input, EngineError>,
) -> TwiML {
    let Some(sid) = &ctx.sid else {
        tracing::warn!(
            event,
            "webhook without a valid CallSid: safe route, nothing recorded"
        );
        return error_route(state, ctx, seq, event, "missing or invalid CallSid", None).await;
    };
    let now = state.now();
    let over = match state.store.hours_override().await {
        Ok(o) => o,
        Err(e) => return error_route(state, ctx, seq, event, &e.to_string(), None).await,
    };
    let has_ticket = match state.store.call_has_ticket(sid.as_str()).await {
        Ok(t) => t,
        Err(e) => return error_route(state, ctx, seq, event, &e.to_string(), over).await,
    };
    let input = match input {
        Ok(i) => i,
        Err(e) => return error_route(state, ctx, seq, event, &e.to_string(), over).await,
    };
    let env = env_for(state, ctx, now, over);
    let call_state = CallState { has_ticket, seq };
    let stepped = std::panic::catch_unwind(AssertUnwindSafe(|| {
        engine::step(&state.flows, &env, call_state, input)
    }));
    let step = match stepped {
        Ok(Ok(step)) => step,
        Ok(Err(e)) => return error_route(state, ctx, seq, event, &e.to_string(), over).await,
        Err(_) => {
            return error_route(state, ctx, seq, event, "panic in the flow engine", over).await
        }
    };
    let key = format!("{seq}:{event}");
    let batch = StepBatch {
        call: &ctx.info,
        request_key: &key,
        at: now,
        records: &step.records,
        error: None,
    };
    match state.store.commit_step(&batch).await {
        Ok(ticket) => {
            log_step(ctx, event, &step);
            answer(state, step, ticket)
        }
        Err(e) => error_route(state, ctx, seq, event, &e.to_string(), over).await,
    }
}

fn log_step(ctx: &CallCtx, event: &str, step: &Step) {
    let last = step.records.iter().rev().find_map(|r| match r {
        Record::Step(s) => Some(s),
        _ => None,
    });
    tracing::info!(
        call_sid = %ctx.info.call_sid,
        from = %ctx.from,
        event,
        node = last.map(|s| s.node.as_str()).unwrap_or(""),
        result = last.map(|s| s.result.as_str()).unwrap_or(""),
        "call step"
    );
}

/// Fills `{ticket_number}` in what the caller hears and renders the TwiML.
fn answer(state: &AppState, mut step: Step, ticket: Option<TicketNumber>) -> TwiML {
    let spoken = ticket.map(|t| t.spoken()).unwrap_or_default();
    for a in &mut step.actions {
        if let Action::Say(text) | Action::Gather { prompt: text, .. } = a {
            if text.contains("{ticket_number}") {
                *text = text.replace("{ticket_number}", &spoken);
            }
        }
    }
    TwiML(twiml::render(&step.actions, &state.style))
}

/// The apology and safe route after an internal error, recorded against the call when possible.
async fn error_route(
    state: &AppState,
    ctx: &CallCtx,
    seq: u32,
    event: &str,
    error: &str,
    over: Option<crate::hours::OverrideState>,
) -> TwiML {
    tracing::error!(call_sid = %ctx.info.call_sid, from = %ctx.from, event, error, "call step failed: safe route");
    let now = state.now();
    let env = env_for(state, ctx, now, over);
    let Some(entry) = NodeRef::parse_qualified(ERROR_ENTRY) else {
        return TwiML(state.last_resort.clone());
    };
    let call_state = CallState {
        has_ticket: false,
        seq,
    };
    let stepped = std::panic::catch_unwind(AssertUnwindSafe(|| {
        engine::step(&state.flows, &env, call_state, Input::Enter(entry))
    }));
    let Ok(Ok(mut step)) = stepped else {
        return TwiML(state.last_resort.clone());
    };
    let mut ticket = None;
    if ctx.sid.is_some() {
        let mut records = vec![Record::Step(StepRecord {
            node: ERROR_ENTRY.into(),
            kind: "error".into(),
            said: String::new(),
            digits: None,
            result: error.chars().take(500).collect(),
        })];
        records.append(&mut step.records);
        let key = format!("{seq}:{event}:error");
        let batch = StepBatch {
            call: &ctx.info,
            request_key: &key,
            at: now,
            records: &records,
            error: Some(error),
        };
        match state.store.commit_step(&batch).await {
            Ok(t) => ticket = t,
            Err(e) => {
                tracing::error!(call_sid = %ctx.info.call_sid, error = %e, "error route not recorded")
            }
        }
    }
    answer(state, step, ticket)
}
