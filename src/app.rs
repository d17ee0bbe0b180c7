//! Wiring: state, layers, router, start-up and graceful shutdown.

use crate::config::{Config, Target};
use crate::flow::{self, FlowSet};
use crate::storage::{self, Store};
use crate::twiml::{self, Style};
use crate::{api, voice};
use anyhow::{bail, Context};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tower_http::catch_panic::{CatchPanicLayer, ResponseForPanic};

/// The time source: the system clock, or a clock a test sets (stopped, or running on
/// from the time it was set).
#[derive(Debug, Clone, Default)]
pub struct Clock(Option<Arc<Mutex<SetClock>>>);

#[derive(Debug, Clone, Copy)]
struct SetClock {
    at: DateTime<Utc>,
    running_since: Option<std::time::Instant>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(None)
    }

    /// A clock stopped at `at` until `set` moves it.
    pub fn fixed(at: DateTime<Utc>) -> Self {
        Self(Some(Arc::new(Mutex::new(SetClock {
            at,
            running_since: None,
        }))))
    }

    /// A clock that reads `at` now and runs on from there, as the system clock does.
    pub fn running_from(at: DateTime<Utc>) -> Self {
        Self(Some(Arc::new(Mutex::new(SetClock {
            at,
            running_since: Some(std::time::Instant::now()),
        }))))
    }

    /// Moves a set clock (a running one runs on from `at`); no effect on the system clock.
    pub fn set(&self, at: DateTime<Utc>) {
        if let Some(m) = &self.0 {
            if let Ok(mut t) = m.lock() {
                t.at = at;
                if t.running_since.is_some() {
                    t.running_since = Some(std::time::Instant::now());
                }
            }
        }
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        let Some(m) = &self.0 else {
            return Utc::now();
        };
        match m.lock().map(|t| *t) {
            Ok(SetClock {
                at,
                running_since: Some(since),
            }) => at + chrono::Duration::from_std(since.elapsed()).unwrap_or_default(),
            Ok(SetClock { at, .. }) => at,
            Err(_) => Utc::now(),
        }
    }
}

/// Everything a request needs.
pub struct App {
    /// Settings.
    pub config: Config,
    /// Validated flows.
    pub flows: FlowSet,
    /// Records, as webhooks write them: the database with the journal in front.
    pub store: Arc<dyn Store>,
    /// The database itself.
    pub db: Arc<dyn Store>,
    /// Tickets being worked, the outbox and the overdue sweep, in the same database.
    pub work: Arc<dyn storage::WorkStore>,
    /// Records waiting for the database.
    pub journal: Arc<storage::Journal>,
    /// Operational metrics.
    pub metrics: crate::metrics::Metrics,
    /// Time source.
    pub clock: Clock,
    /// TwiML settings.
    pub style: Style,
    /// TwiML answered when a panic escapes every other guard (the open-hours last resort).
    pub last_resort: String,
}

/// Shared application state, cheap to clone.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

impl AppState {
    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
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
            },
        ],
        None => vec![
            Action::Say(format!(
                "We're sorry, we are having a technical problem and cannot take a message right now. \
                 Please call back during Guest Care hours: {}. Goodbye.",
                config.schedule.describe()
            )),
            Action::Hangup,
        ],
    };
    twiml::render(&actions, style)
}

/// Loads flows, opens and migrates the database, and builds the state.
pub async fn build_state(config: Config, clock: Clock) -> anyhow::Result<AppState> {
    let flows = flow::load_dir(&config.flows_dir, &config)
        .map_err(|p| anyhow::anyhow!("{p}"))
        .with_context(|| format!("loading flows from {}", config.flows_dir.display()))?;
    let storage::Backend { calls: db, work } =
        storage::open(&config.database_url, config.sqlite_synchronous)
            .await
            .context("opening the database")?;
    db.migrate().await.context("migrating the database")?;
    let style = Style {
        base_url: config.public_url.clone(),
        voice: config.say_voice.clone(),
        language: config.say_language.clone(),
    };
    let last_resort = last_resort_twiml(&config, &style, true, 1);
    let metrics = crate::metrics::Metrics::new().context("registering metrics")?;
    for c in db.collectors() {
        metrics.register(c).context("registering metrics")?;
    }
    let journal = Arc::new(
        storage::Journal::open(
            &config.journal_path,
            metrics.clone(),
            config.journal_reserve_bytes,
        )
        .with_context(|| format!("opening the journal {}", config.journal_path.display()))?,
    );
    storage::spawn_replayer(journal.clone(), db.clone(), config.write_timeout);
    let store: Arc<dyn Store> = Arc::new(storage::Journaled::new(
        db.clone(),
        journal.clone(),
        config.write_timeout,
    ));
    Ok(AppState(Arc::new(App {
        config,
        flows,
        store,
        db,
        work,
        journal,
        metrics,
        clock,
        style,
        last_resort,
    })))
}

#[derive(Clone)]
struct PanicAnswer(Arc<String>, crate::metrics::Metrics);

impl ResponseForPanic for PanicAnswer {
    type ResponseBody = axum::body::Body;
    fn response_for_panic(
        &mut self,
        _err: Box<dyn std::any::Any + Send + 'static>,
    ) -> axum::http::Response<Self::ResponseBody> {
        tracing::error!("panic in a voice webhook: safe route answered");
        self.1.errors.with_label_values(&["panic"]).inc();
        voice::TwiML(self.0.as_ref().clone()).into_response()
    }
}

/// The router: voice webhooks, manager API, health.
pub fn build_router(state: AppState) -> Router {
    let voice = Router::new()
        .route("/voice/incoming", post(voice::incoming))
        .route("/voice/gather", post(voice::gather))
        .route("/voice/dial", post(voice::dial))
        .route("/voice/record", post(voice::record))
        .route("/voice/queue", post(voice::queue))
        .route("/voice/queue/wait", post(voice::queue_wait))
        .route("/voice/status", post(voice::status))
        .route("/voice/fallback", post(voice::fallback))
        .route("/voice/", post(voice::unknown))
        .route("/voice/{*rest}", post(voice::unknown))
        .layer(CatchPanicLayer::custom(PanicAnswer(
            Arc::new(state.last_resort.clone()),
            state.metrics.clone(),
        )));
    let router = Router::new().merge(voice);
    let router = if state.config.bench_endpoint {
        router.route("/bench/bare", post(bench_bare))
    } else {
        router
    };
    router
        .merge(api::router(state.clone()))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(axum::extract::DefaultBodyLimit::max(voice::MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_large_bodies,
        ))
        .with_state(state)
}

/// Refuses a body declared over [`voice::MAX_BODY`] before it is read, in the form its
/// path speaks (TwiML for webhooks, the JSON error for the API), and counts it. A body
/// that grows past the limit without declaring its length is refused where it is read.
async fn refuse_large_bodies(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_none_or(|n| n <= voice::MAX_BODY as u64) {
        return next.run(req).await;
    }
    let path = req.uri().path();
    if path.starts_with("/voice/") {
        return voice::too_large(&state, path);
    }
    state
        .metrics
        .refused
        .with_label_values(&["too_large"])
        .inc();
    let error = format!("request body too large (at most {} bytes)", voice::MAX_BODY);
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        axum::Json(serde_json::json!({ "error": error })),
    )
        .into_response()
}

/// The fixed answer of `POST /bench/bare`.
const BARE_TWIML: &str =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Gather input=\"dtmf\" \
     numDigits=\"1\" action=\"/voice/gather\"><Say>For orders, press 1.</Say></Gather></Response>";

/// `POST /bench/bare` (only with `bench_endpoint`): the benchmark's baseline, what any web
/// framework can do: parse a Twilio-style form, answer fixed TwiML. No signature, no flow,
/// no record.
async fn bench_bare(body: axum::body::Bytes) -> impl IntoResponse {
    let fields = form_urlencoded::parse(&body).count();
    (
        [(axum::http::header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        if fields > 0 {
            BARE_TWIML
        } else {
            "<Response/>"
        },
    )
}

/// `GET /readyz`: 200 when the database answers and takes writes (the journal empty or
/// draining), 503 while records go to the journal; the body says which and how many wait.
async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    let depth = state.journal.depth();
    if let Some(fault) = state.db.fault() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("degraded: {fault}; journal depth {depth}\n"),
        );
    }
    let reachable = state.store.ping().await.is_ok();
    if !reachable || state.journal.is_degraded() {
        let why = if reachable {
            "database not taking writes"
        } else {
            "database unreachable"
        };
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("degraded: {why}; journal depth {depth}\n"),
        );
    }
    let flows = state.flows.flows.len();
    if depth > 0 {
        (
            StatusCode::OK,
            format!("ready: {flows} flows loaded; journal draining, depth {depth}\n"),
        )
    } else {
        (
            StatusCode::OK,
            format!("ready: {flows} flows loaded; journal empty\n"),
        )
    }
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Refuses development mode (no auth token) on anything but loopback, and says so loudly.
pub fn check_mode(config: &Config) -> anyhow::Result<()> {
    if config.twilio_auth_token.is_none() {
        if !config.listen.ip().is_loopback() {
            bail!(
                "TWILIO_AUTH_TOKEN is not set: development mode refuses to listen on {} (only loopback). \
                 Set TWILIO_AUTH_TOKEN to serve the telephony platform.",
                config.listen
            );
        }
        tracing::warn!("==============================================================");
        tracing::warn!("DEVELOPMENT MODE: TWILIO_AUTH_TOKEN is not set.");
        tracing::warn!("Webhook signatures are NOT checked. Listening on loopback only.");
        tracing::warn!("==============================================================");
    }
    if config.api_token.is_none() {
        tracing::warn!("IVR_API_TOKEN is not set: the manager API is closed");
    }
    Ok(())
}

/// Connections the kernel holds for the server until it accepts them. In a storm the
/// platform opens many at once, one per webhook in flight; when this queue is full the
/// kernel drops the attempt, and a client tries again only after a second (Linux's: then
/// two more, then four more), which a caller hears as silence. Linux caps it at
/// `net.core.somaxconn` (4096 by default since 5.4). `TcpListener::bind` asked for 128: in
/// a run of 1,000 callers opening their connections at once, thousands of attempts were
/// dropped and the slowest webhooks took 1.1 to 1.3 s instead of about 0.1 s.
const LISTEN_BACKLOG: u32 = 4096;

/// The listening socket: as `TcpListener::bind` (address reuse on), with a longer queue.
fn listener(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Starts the background jobs besides retention: the outbox worker that sends e-mails, and
/// the sweep that e-mails the manager about overdue tickets. Both are safe to run on every
/// instance at once.
pub fn spawn_jobs(state: &AppState) -> anyhow::Result<()> {
    let clock = state.clock.clone();
    crate::outbox::spawn(state.work.clone(), state.config.smtp.clone(), move || {
        clock.now()
    })
    .context("starting the outbox")?;
    let clock = state.clock.clone();
    crate::sla::spawn(
        state.work.clone(),
        state.config.sla.clone(),
        state.config.contacts.clone(),
        move || clock.now(),
    );
    Ok(())
}

/// Serves until SIGTERM or Ctrl-C, then finishes the requests in flight.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    check_mode(&config)?;
    serve_state(build_state(config, Clock::system()).await?).await
}

/// Serves `state` on its configured address as [`serve`] does (the call-load benchmark
/// serves a state of its own so, with a store that records nothing).
pub async fn serve_state(state: AppState) -> anyhow::Result<()> {
    let listen = state.config.listen;
    let listener = listener(listen).with_context(|| format!("listening on {listen}"))?;
    tracing::info!(
        %listen,
        flows = state.flows.flows.len(),
        flow_version = %state.flows.version,
        public_url = state.config.public_url.as_deref().unwrap_or("(from Host header)"),
        "answering calls"
    );
    crate::retention::spawn(state.clone());
    spawn_jobs(&state)?;
    let max_connections = crate::http_server::raise_fd_limit();
    crate::http_server::serve(
        listener,
        build_router(state.clone()),
        state.config.header_read_timeout,
        max_connections,
        state.metrics.clone(),
        shutdown_signal(),
    )
    .await;
    // What the journal still holds is replayed at the next start if not now.
    let replayed = tokio::time::timeout(
        Duration::from_secs(3),
        state
            .journal
            .drain(state.db.as_ref(), state.config.write_timeout),
    )
    .await
    .unwrap_or(0);
    if let Err(e) = state.db.close().await {
        // Not lost: the WAL is read back at the next start, only more slowly.
        tracing::warn!(error = %e, "database not closed cleanly");
    }
    tracing::info!(
        journal_replayed = replayed,
        journal_left = state.journal.depth(),
        "stopped"
    );
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
