//! The HTTP/1.1 server under the router: its own accept loop so that every connection has
//! bounds. A client has `header_read_timeout` to send its request headers, and the same
//! time to start its next request on a kept-alive connection; a body is bounded where it
//! is read (see `voice::BODY_READ_TIMEOUT`). Connections are capped below the process's
//! file-descriptor limit, and on shutdown in-flight requests get [`STOP_GRACE`], then the
//! remaining connections are cut.

use crate::metrics::Metrics;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long requests in flight may take to finish after a stop signal. With the journal's
/// drain after it (3 s), a stop takes at most 9 s whatever the clients do.
pub const STOP_GRACE: Duration = Duration::from_secs(6);

/// File descriptors kept back from the connection cap for the database, the journal, the
/// logs and the outbox's SMTP connections.
const RESERVED_FDS: u64 = 128;

/// Raises the soft limit on open files to the hard limit (systemd's default soft limit,
/// 1024, is met by a thousand idle clients) and returns the connection cap that leaves
/// [`RESERVED_FDS`] free.
pub fn raise_fd_limit() -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    if let (Some(cur), Some(max)) = (limit.current, limit.maximum) {
        if cur < max {
            limit.current = Some(max);
            match setrlimit(Resource::Nofile, limit) {
                Ok(()) => tracing::info!(from = cur, to = max, "open-file limit raised"),
                Err(e) => {
                    tracing::warn!(error = %e, soft = cur, hard = max, "could not raise the open-file limit");
                    limit.current = before;
                }
            }
        }
    }
    let files = limit.current.unwrap_or(1 << 20);
    let cap = files.saturating_sub(RESERVED_FDS).max(64);
    if files < 4096 {
        tracing::warn!(
            open_files = files,
            connections = cap,
            "the open-file limit is low; set LimitNOFILE=65536 (see the README)"
        );
    }
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// Serves `router` on `listener` until `signal` resolves, then lets requests in flight
/// finish for at most [`STOP_GRACE`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    max_connections: usize,
    metrics: Metrics,
    signal: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Some(header_timeout))
        // A connection's read buffer: room for any real request head (Twilio's are under
        // 2 kB); bodies stream through it. hyper's default lets each grow to 400 kB.
        .max_buf_size(16 * 1024);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(max_connections));
    let service = TowerToHyperService::new(router);
    tokio::pin!(signal);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or a connection reset before it was
                    // accepted: wait a little rather than spin, and go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics
                .refused
                .with_label_values(&["connection_limit"])
                .inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = builder.serve_connection(TokioIo::new(stream), service.clone());
        let conn = graceful.watch(conn);
        let open = metrics.connections.clone();
        open.inc();
        tokio::spawn(async move {
            // An error here is the client's (reset, header timeout, bad request); hyper
            // has already answered what could be answered.
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended");
            }
            open.dec();
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(STOP_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = STOP_GRACE.as_secs(),
            "connections still open after the grace period; cut"
        );
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn stop_signal() {
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
