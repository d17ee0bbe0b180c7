//! The Twilio-facing edge: signature check, form to typed input, one flow step, records
//! committed, TwiML answered. Every answer is 200 TwiML except 403 (bad signature) and
//! 413 (body too large): an internal error becomes an apology and the safe route.

use crate::app::AppState;
use crate::domain::{CallSid, Digits, PhoneNumber, TicketNumber};
use crate::flow::engine::{
    self, Action, CallState, EngineError, Env, Input, Phase, Step, TicketFacts, Vars,
};
use crate::flow::{NodeRef, ERROR_ENTRY};
use crate::records::{ExistingTicket, Record, StepRecord};
use crate::signature;
use crate::storage::{CallInfo, StatusUpdate, StepBatch};
use crate::twiml;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

/// Largest webhook body accepted; Twilio's forms are a few kilobytes.
pub const MAX_BODY: usize = 64 * 1024;
/// The longest a webhook's body may take to arrive. The platform sends it at once; a
/// client that trickles it holds a connection and its buffers, so it is cut off.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);

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
    params: Form,
    query: Vec<(String, String)>,
}

/// A form body, decoded into one string: each name and value is a range of it. Twilio
/// posts some twenty parameters per webhook; this is two allocations instead of forty.
#[derive(Debug, Clone, Default)]
struct Form {
    text: String,
    pairs: Vec<(Range<usize>, Range<usize>)>,
}

impl Form {
    fn parse(body: &[u8]) -> Self {
        // Decoding shortens names and values (but for invalid UTF-8, replaced): a hint.
        let mut text = String::with_capacity(body.len());
        // Twilio posts some twenty; a hostile body of ampersands is not sized up front.
        let mut pairs = Vec::with_capacity(32);
        for (name, value) in form_urlencoded::parse(body) {
            let start = text.len();
            text.push_str(&name);
            let mid = text.len();
            text.push_str(&value);
            pairs.push((start..mid, mid..text.len()));
        }
        Self { text, pairs }
    }

    /// Every name and value, in the order posted.
    fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs
            .iter()
            .map(|(k, v)| (&self.text[k.clone()], &self.text[v.clone()]))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
}

impl Webhook {
    /// A webhook from its form body and query string, parsed as the edge parses them
    /// (after the signature check); for tools such as the fuzz target.
    pub fn from_raw(body: &[u8], query: &str) -> Self {
        Self {
            params: Form::parse(body),
            query: form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        }
    }

    /// Call variables carried in the webhook's URL.
    pub fn vars(&self) -> Vars {
        vars_of(self)
    }

    /// The first value of a POST parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name)
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

/// Rejected webhooks logged each second at most; the rest are counted in the next line.
static REJECTIONS_LOGGED: crate::logging::Throttle = crate::logging::Throttle::new(5);

/// The `endpoint` label of a webhook path: one of ours, or `unknown`. Never the raw path,
/// which anyone can vary without a signature: one series per path sent grew `/metrics` to
/// 244 MB under 60,000 unsigned requests.
pub fn endpoint_label(path: &str) -> &'static str {
    match path.strip_prefix("/voice/").unwrap_or("") {
        "incoming" => "incoming",
        "gather" => "gather",
        "dial" => "dial",
        "record" => "record",
        "queue" => "queue",
        "queue/wait" => "queue_wait",
        "status" => "status",
        "fallback" => "fallback",
        _ => "unknown",
    }
}

/// The answer to a webhook body over [`MAX_BODY`]: 413 (the platform never sends one, so
/// the sender is hardly a caller's platform), with the safe route's TwiML all the same.
pub fn too_large(state: &AppState, path: &str) -> Response {
    state.metrics.webhook(endpoint_label(path), "too_large");
    state
        .metrics
        .refused
        .with_label_values(&["too_large"])
        .inc();
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        state.last_resort.clone(),
    )
        .into_response()
}

impl FromRequest<AppState> for Webhook {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let endpoint = endpoint_label(parts.uri.path());
        let bytes: Bytes =
            match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, MAX_BODY))
                .await
            {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(_)) => return Err(too_large(state, parts.uri.path())),
                Err(_) => {
                    state
                        .metrics
                        .refused
                        .with_label_values(&["body_timeout"])
                        .inc();
                    return Err(plain(
                        StatusCode::REQUEST_TIMEOUT,
                        "request body too slow\n",
                    ));
                }
            };
        let params = Form::parse(&bytes);
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
            if given.is_empty()
                || !signature::verify(
                    token.expose(),
                    &url,
                    &params.iter().collect::<Vec<_>>(),
                    given,
                )
            {
                if let Some(skipped) = REJECTIONS_LOGGED.allow() {
                    tracing::warn!(
                        path = %crate::domain::redact_path(parts.uri.path()),
                        signed = !given.is_empty(),
                        skipped,
                        "webhook rejected: invalid signature (skipped: rejections not logged since the last)"
                    );
                }
                state.metrics.webhook(endpoint, "forbidden");
                return Err(plain(StatusCode::FORBIDDEN, "invalid signature\n"));
            }
        }
        Ok(Self { params, query })
    }
}

/// The longest a step may take before the caller is sent down the safe route instead;
/// with the error route's own limit this keeps every answer well inside Twilio's 15 s.
const STEP_DEADLINE: Duration = Duration::from_secs(6);
/// The longest the error route waits to record itself before answering anyway.
const ERROR_RECORD_DEADLINE: Duration = Duration::from_secs(3);

/// What had already happened when a webhook failed, so the safe route does not undo it.
#[derive(Debug, Clone)]
enum Before {
    /// Nothing the caller would miss.
    Nothing,
    /// The caller left a voicemail: keep it, thank them and hang up.
    Recorded { url: String, duration: Option<i64> },
    /// The transfer connected and ended: hang up, do not dial again.
    Connected,
}

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

/// Call variables from a webhook URL; malformed ones are dropped.
fn vars_of(hook: &Webhook) -> Vars {
    hook.query
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("v.")?;
            let ok_name = crate::domain::is_ident(name);
            let ok_value = v.len() <= 2048 && !v.chars().any(char::is_control);
            (ok_name && ok_value).then(|| (name.to_string(), v.clone()))
        })
        .take(32)
        .collect()
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
    let seq = hook.query_u32("seq");
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
        vars: vars_of(hook),
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

fn node_of(hook: &Webhook) -> Result<NodeRef, EngineError> {
    let raw = hook.query("node").unwrap_or("");
    NodeRef::parse_qualified(raw)
        .ok_or_else(|| EngineError::UnknownNode(raw.chars().take(80).collect()))
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
    let phase = match hook.query("phase") {
        Some("confirm") => Phase::Confirm,
        _ => Phase::Enter,
    };
    let pending = hook
        .query("value")
        .filter(|v| v.len() <= 64 && !v.chars().any(char::is_control))
        .map(str::to_owned);
    node_of(hook).map(|node| Input::Gather {
        node,
        attempt: hook.query_u32("attempt").max(1),
        digits,
        phase,
        pending,
    })
}

/// `POST /voice/gather`: a menu's answer, or the redirect after silence.
pub async fn gather(State(state): State<AppState>, hook: Webhook) -> TwiML {
    if hook.query("silence").is_some() {
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
        node_of(hook).map(|node| Input::Dial { node, status })
    })
    .await
}

/// `POST /voice/queue`: the caller left the escalation queue.
pub async fn queue(State(state): State<AppState>, hook: Webhook) -> TwiML {
    guarded(state, hook, "queue", |_, _, hook| {
        let result = hook.param("QueueResult").unwrap_or("error").to_string();
        node_of(hook).map(|node| Input::Queue { node, result })
    })
    .await
}

/// `POST /voice/record`: a voicemail, or the redirect when nothing was recorded.
pub async fn record(State(state): State<AppState>, hook: Webhook) -> TwiML {
    if hook.query("silence").is_some() {
        guarded(state, hook, "silence", |_, _, hook| {
            node_of(hook).map(|node| Input::Recorded {
                node,
                url: None,
                duration: None,
            })
        })
        .await
    } else {
        guarded(state, hook, "record", |_, _, hook| {
            let rec = recording_of(hook);
            node_of(hook).map(|node| Input::Recorded {
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
            tracing::warn!(error = %crate::domain::redact_numbers(&e.to_string()), "queue wait: bad node");
            TwiML(twiml::render(&[Action::Pause(20)], &state.style))
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

/// The manager's hours override, or none when the database cannot say in time.
async fn read_override(state: &AppState) -> Option<crate::hours::OverrideState> {
    match tokio::time::timeout(ERROR_RECORD_DEADLINE, state.store.hours_override()).await {
        Ok(Ok(over)) => over,
        _ => None,
    }
}

/// `POST /voice/status`: a status callback. Stored even for calls we never saw.
pub async fn status(State(state): State<AppState>, hook: Webhook) -> TwiML {
    let ctx = call_ctx(&state, &hook, "status");
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
    }
}

/// Takes a step and commits its records, or falls back to the error route.
async fn run(state: &AppState, ctx: &CallCtx, input: Result<Input, EngineError>) -> TwiML {
    if ctx.sid.is_none() {
        return error_route(
            state,
            ctx,
            Fault::BadRequest,
            "missing or invalid CallSid",
            None,
        )
        .await;
    }
    let now = state.now();
    let over = match state.store.hours_override().await {
        Ok(o) => o,
        Err(e) => return error_route(state, ctx, Fault::Database, &e.to_string(), None).await,
    };
    let input = match input {
        Ok(i) => i,
        Err(e) => return error_route(state, ctx, Fault::Flow, &e.to_string(), over).await,
    };
    // Whether the call has a ticket is looked up only when a node needs it.
    let call_state = CallState {
        has_ticket: None,
        seq: ctx.seq,
        vars: ctx.vars.clone(),
    };
    let step = match step_with_facts(state, ctx, now, over, call_state, &input, false).await {
        Ok(step) => step,
        Err((fault, e)) => return error_route(state, ctx, fault, &e, over).await,
    };
    let answer = twiml::render(&step.actions, &state.style);
    let batch = StepBatch {
        call: &ctx.info,
        request_key: &ctx.key,
        at: now,
        records: &step.records,
        error: None,
        answer: &answer,
    };
    match state.store.commit_step(&batch).await {
        Ok(done) => {
            log_step(ctx, &step, done.replay.is_some());
            count_step(state, ctx, &step.records, done.replay.is_some());
            fill_ticket(done.replay.unwrap_or(answer), done.ticket)
        }
        Err(e) => error_route(state, ctx, Fault::Database, &e.to_string(), over).await,
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
    loop {
        let stepped = {
            let mut env = env_for(state, ctx, now, over);
            env.facts = facts.external.as_ref();
            env.caller_tickets = Some(&facts.caller_tickets);
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
        .unwrap_or(Err(crate::storage::StoreError::TimedOut("a lookup")))
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

/// What kind of internal failure sent a caller down the safe route, as counted.
#[derive(Debug, Clone, Copy)]
enum Fault {
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

/// Fills `{ticket_number}` in the TwiML with the ticket number spelled out for speech.
fn fill_ticket(answer: String, ticket: Option<TicketNumber>) -> TwiML {
    if !answer.contains("{ticket_number}") {
        return TwiML(answer);
    }
    match ticket {
        Some(t) => TwiML(answer.replace("{ticket_number}", &t.spoken())),
        // Journalled while the database is unavailable: the number is not known yet.
        None => TwiML(
            answer
                .replace("ticket {ticket_number}", "your ticket")
                .replace("{ticket_number}", "your ticket"),
        ),
    }
}

/// The apology and safe route after an internal error, recorded against the call when
/// possible: Guest Care OOM when open, voicemail and a ticket when closed. A voicemail
/// already left is kept and a transfer already made is not dialled again.
async fn error_route(
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
        said: String::new(),
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
    let answer = twiml::render(&step.actions, &state.style);
    if ctx.sid.is_none() {
        tracing::warn!(
            event = ctx.event,
            "webhook without a valid CallSid: nothing recorded"
        );
        return fill_ticket(answer, None);
    }
    let key = format!("{}:error", ctx.key);
    let batch = StepBatch {
        call: &ctx.info,
        request_key: &key,
        at: now,
        records: &records,
        error: Some(error),
        answer: &answer,
    };
    match tokio::time::timeout(ERROR_RECORD_DEADLINE, state.store.commit_step(&batch)).await {
        Ok(Ok(done)) => fill_ticket(done.replay.unwrap_or(answer), done.ticket),
        Ok(Err(e)) => {
            tracing::error!(call_sid = %ctx.info.call_sid, error = %e, "error route not recorded");
            fill_ticket(answer, None)
        }
        Err(_) => {
            tracing::error!(call_sid = %ctx.info.call_sid, "error route not recorded in time");
            fill_ticket(answer, None)
        }
    }
}

const THANKS: &str =
    "Thank you, we have your message. A Guest Care agent will call you back. Goodbye.";

/// When even the error flow cannot be taken: an apology, then Guest Care OOM when open,
/// or the hours and goodbye when closed. Built from configuration alone.
fn last_resort(
    state: &AppState,
    ctx: &CallCtx,
    over: Option<crate::hours::OverrideState>,
) -> TwiML {
    tracing::error!(call_sid = %ctx.info.call_sid, "error flow unavailable: last-resort answer");
    let open = state.config.schedule.is_open(state.now(), over);
    TwiML(crate::app::last_resort_twiml(
        &state.config,
        &state.style,
        open,
        ctx.seq + 1,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_is_decoded_into_its_names_and_values_in_order() {
        let form = Form::parse(
            b"From=%2B15145550123&SpeechResult=two+words&Digits=&Digits=7&Caf%C3%A9=%E2%82%AC&bare",
        );
        assert_eq!(
            form.iter().collect::<Vec<_>>(),
            [
                ("From", "+15145550123"),
                ("SpeechResult", "two words"),
                ("Digits", ""),
                ("Digits", "7"),
                ("Café", "€"),
                ("bare", ""),
            ]
        );
        assert_eq!(form.get("Digits"), Some(""), "the first of a repeated name");
        assert_eq!(form.get("To"), None);
        assert_eq!(Form::parse(b"").iter().count(), 0);
        let lossy = Form::parse(b"Body=%FF");
        assert_eq!(
            lossy.get("Body"),
            Some("\u{FFFD}"),
            "invalid UTF-8 replaced"
        );
    }
}
