//! The server's logs: one line per event on stdout, written by a thread of their own.
//!
//! A webhook only queues its line. If stdout stalls (a full pipe, a journald that falls
//! behind), lines queue up to [`QUEUED_LINES`] and, past that, are dropped and counted
//! (`ivr_log_lines_dropped_total`): a caller is never kept waiting for a log line. The
//! thread writes whatever has queued in one write and flushes when the queue is empty.

use std::sync::OnceLock;
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Lines that may wait for stdout before new ones are dropped.
pub const QUEUED_LINES: usize = 65_536;

/// The lines dropped so far; process-wide, like the subscriber itself.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Installs the subscriber (filter from `RUST_LOG`, default `info,sqlx=warn`). The guard
/// writes out what is still queued when it is dropped: keep it until the process ends.
pub fn init() -> WorkerGuard {
    let stdout = std::io::stdout();
    let ansi = std::io::IsTerminal::is_terminal(&stdout);
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("ivr-log")
        .finish(std::io::BufWriter::with_capacity(64 * 1024, stdout));
    let _ = DROPPED.set(writer.error_counter());
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")),
        )
        .with_ansi(ansi)
        .with_writer(writer)
        .init();
    guard
}

/// Log lines dropped because stdout did not keep up (0 if [`init`] was not called).
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |c| u64::try_from(c.dropped_lines()).unwrap_or(u64::MAX))
}
