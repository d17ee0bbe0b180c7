//! Wiring: state, layers, router, start-up and graceful shutdown.

use crate::config::Config;
use crate::flow::{self};
pub use crate::state::{App, AppState, Clock};
use crate::storage::{self, Store};
use crate::twiml::Style;
use crate::{api, voice};
use anyhow::{bail, Context};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower_http::catch_panic::{CatchPanicLayer, ResponseForPanic};

/// Loads flows, opens and migrates the database, and builds the state.
pub async fn build_state(config: Config, clock: Clock) -> anyhow::Result<AppState> {
    let flows = flow::load_dir(&config.flows_dir, &config)
        .map_err(|p| anyhow::anyhow!("{p}"))
        .with_context(|| format!("loading flows from {}", config.flows_dir.display()))?;
    let storage::Backend {
        calls: db,
        work,
        console,
        insights,
    } = storage::open_with(
        &config.database_url,
        config.sqlite_synchronous,
        config.postgres,
    )
    .await
    .context("opening the database")?;
    db.migrate().await.context("migrating the database")?;
    let style = Style {
        base_url: config.public_url.clone(),
        voice: config.say_voice.clone(),
        language: config.say_language.clone(),
    };
    let last_resort = voice::last_resort_twiml(&config, &style, true, 1);
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
        console,
        insights,
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
        .route("/voice/whisper", post(voice::whisper))
        .route("/voice/screen", post(voice::screen))
        .route("/voice/status", post(voice::status))
        .route("/voice/fallback", post(voice::fallback))
        .route("/voice/", post(voice::unknown))
        .route("/voice/{*rest}", post(voice::unknown))
        .layer(CatchPanicLayer::custom(PanicAnswer(
            Arc::new(state.last_resort.clone()),
            state.metrics.clone(),
        )));
    Router::new()
        .merge(voice)
        .merge(api::router(state.clone()))
        .merge(crate::console::router(state.clone()))
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
    crate::console::spawn_rollups(state);
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
        crate::http_server::stop_signal(),
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
