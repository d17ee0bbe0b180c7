//! The server's logs: one line per event on stdout, written by a thread of their own.
//!
//! A webhook only appends its line to a buffer in memory; a log thread writes the buffer out
//! every [`FLUSH_EVERY`] in one write. So a line costs no system call and wakes no thread,
//! and a stdout that stalls (a full pipe, a journald that falls behind) never holds a
//! caller's webhook: the buffer grows up to [`BUFFER_LIMIT`] and, past that, lines are
//! dropped and counted (`ivr_log_lines_dropped_total`) until stdout takes writes again.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// How often the log thread writes out what has been logged.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Bytes of log lines that may wait for stdout before new lines are dropped (about 40,000
/// lines at the usual 200 bytes).
pub const BUFFER_LIMIT: usize = 8 * 1024 * 1024;

#[derive(Default)]
struct Pending {
    text: Vec<u8>,
    /// Set by [`LogGuard`]'s drop: write out what is left, then stop.
    closing: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the log thread early, to close.
    wake: Condvar,
    dropped: AtomicU64,
}

impl Shared {
    fn append(&self, line: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.text.len() + line.len() > BUFFER_LIMIT {
            drop(pending);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            pending.text.extend_from_slice(line);
        }
    }
}

/// What `tracing` writes each event's line to.
#[derive(Clone)]
struct Buffered(Arc<Shared>);

impl Write for Buffered {
    /// The formatter hands over each event's whole line in one call.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffered {
    type Writer = Buffered;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Writes out the lines still buffered and stops the log thread when dropped: keep it
/// until the process ends.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The log thread: every [`FLUSH_EVERY`], takes what is buffered and writes it to `out`.
fn write_out(shared: &Shared, mut out: impl Write) {
    let mut spare = Vec::new();
    loop {
        let closing = {
            let pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
            let (mut pending, _) = shared
                .wake
                .wait_timeout_while(pending, FLUSH_EVERY, |p| !p.closing)
                .unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut pending.text, &mut spare);
            pending.closing
        };
        if !spare.is_empty() {
            // Nowhere to report a failed write of the log; the lines are lost either way.
            let _ = out.write_all(&spare).and_then(|()| out.flush());
            spare.clear();
        }
        if closing {
            return;
        }
    }
}

/// The log buffer, for the count of dropped lines; process-wide, like the subscriber itself.
static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();

/// Installs the subscriber (filter from `RUST_LOG`, default `info,sqlx=warn`) writing to
/// stdout through the log thread.
pub fn init() -> std::io::Result<LogGuard> {
    let stdout = std::io::stdout();
    let ansi = std::io::IsTerminal::is_terminal(&stdout);
    let shared = Arc::new(Shared::default());
    let thread = std::thread::Builder::new().name("ivr-log".into()).spawn({
        let shared = shared.clone();
        move || write_out(&shared, stdout)
    })?;
    let _ = SHARED.set(shared.clone());
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")),
        )
        .with_ansi(ansi)
        .with_writer(Buffered(shared.clone()))
        .init();
    Ok(LogGuard {
        shared,
        thread: Some(thread),
    })
}

/// Log lines dropped because stdout did not keep up (0 if [`init`] was not called).
pub fn dropped_lines() -> u64 {
    SHARED
        .get()
        .map_or(0, |s| s.dropped.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that records each write, to see what the log thread wrote and in how many writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_come_out_in_order_in_few_writes_and_all_of_them_at_close() {
        let shared = Arc::new(Shared::default());
        let sink = Sink::default();
        let thread = std::thread::spawn({
            let (shared, sink) = (shared.clone(), sink.clone());
            move || write_out(&shared, sink)
        });
        let guard = LogGuard {
            shared: shared.clone(),
            thread: Some(thread),
        };
        let mut w = Buffered(shared.clone());
        for n in 0..1000 {
            writeln!(w, "line {n}").unwrap_or_default();
        }
        drop(guard);
        let writes = sink.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let text = String::from_utf8(writes.concat()).unwrap_or_default();
        let expected: String = (0..1000).map(|n| format!("line {n}\n")).collect();
        assert_eq!(text, expected);
        assert!(writes.len() < 100, "{} writes for 1000 lines", writes.len());
    }

    #[test]
    fn past_the_limit_lines_are_dropped_and_counted_not_waited_for() {
        let shared = Shared::default();
        let line = vec![b'x'; 1024];
        for _ in 0..(BUFFER_LIMIT / 1024 + 10) {
            shared.append(&line);
        }
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 10);
        let pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(pending.text.len(), BUFFER_LIMIT);
    }
}
