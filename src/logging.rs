//! The server's logs: one line per event on stdout, written by a thread of their own.
//!
//! A webhook only appends its line to a buffer in memory; a log thread writes the buffer out
//! every [`FLUSH_EVERY`] in one write. So a line costs no system call and wakes no thread,
//! and a stdout that stalls (a full pipe, a journald that falls behind) never holds a
//! caller's webhook: the buffer grows up to [`BUFFER_LIMIT`] and, past that, lines are
//! dropped and counted (`ivr_log_lines_dropped_total`) until stdout takes writes again.
//! Lines whose write fails are counted as dropped too.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// How often the log thread writes out what has been logged.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Bytes of log lines that may wait for stdout, those being written included, before new
/// lines are dropped (about 40,000 lines at the usual 200 bytes).
pub const BUFFER_LIMIT: usize = 8 * 1024 * 1024;
/// How long the last write-out at exit may wait for stdout before the process ends anyway.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Capacity a buffer keeps after a write-out; a larger one (stdout stalled for a while) is
/// given back.
const KEPT_CAPACITY: usize = 256 * 1024;

#[derive(Default)]
struct Pending {
    text: Vec<u8>,
    /// Bytes the log thread is writing out now.
    writing: usize,
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
        if pending.text.len() + pending.writing + line.len() > BUFFER_LIMIT {
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

/// Writes out the lines still buffered and stops the log thread when dropped (waiting at
/// most [`CLOSE_WAIT`] for a stdout that does not take them): keep it until the process ends.
pub struct LogGuard {
    shared: Arc<Shared>,
    /// Disconnected when the log thread has ended.
    ended: std::sync::mpsc::Receiver<()>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closing = true;
        self.shared.wake.notify_one();
        let _ = self.ended.recv_timeout(CLOSE_WAIT);
    }
}

/// Starts the log thread writing to `out`.
fn start(shared: &Arc<Shared>, out: impl Write + Send + 'static) -> std::io::Result<LogGuard> {
    let (ended_tx, ended) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new().name("ivr-log".into()).spawn({
        let shared = shared.clone();
        move || {
            write_out(&shared, out);
            drop(ended_tx);
        }
    })?;
    Ok(LogGuard {
        shared: shared.clone(),
        ended,
    })
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
            pending.writing = spare.len();
            pending.closing
        };
        if !spare.is_empty() {
            if out.write_all(&spare).and_then(|()| out.flush()).is_err() {
                let lines = spare.iter().filter(|&&b| b == b'\n').count();
                shared
                    .dropped
                    .fetch_add(u64::try_from(lines).unwrap_or(u64::MAX), Ordering::Relaxed);
            }
            spare.clear();
            spare.shrink_to(KEPT_CAPACITY);
            shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .writing = 0;
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
    let guard = start(&shared, stdout)?;
    let _ = SHARED.set(shared.clone());
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")),
        )
        .with_ansi(ansi)
        .with_writer(Buffered(shared))
        .init();
    Ok(guard)
}

/// Log lines dropped because stdout did not keep up (0 if [`init`] was not called).
pub fn dropped_lines() -> u64 {
    SHARED
        .get()
        .map_or(0, |s| s.dropped.load(Ordering::Relaxed))
}

/// Lets through at most `per_second` of one kind of log line a second and counts the rest,
/// so that a flood of bad requests (which anyone can send) cannot flood the log.
pub struct Throttle {
    per_second: u64,
    second: AtomicU64,
    seen: AtomicU64,
    skipped: AtomicU64,
}

impl Throttle {
    /// A throttle letting `per_second` lines through each second.
    pub const fn new(per_second: u64) -> Self {
        Self {
            per_second,
            second: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// `Some(lines skipped since the last one let through)` when this line may be logged.
    pub fn allow(&self) -> Option<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let second = self.second.load(Ordering::Relaxed);
        if second != now
            && self
                .second
                .compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.seen.store(0, Ordering::Relaxed);
        }
        if self.seen.fetch_add(1, Ordering::Relaxed) < self.per_second {
            Some(self.skipped.swap(0, Ordering::Relaxed))
        } else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
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
        let guard = start(&shared, sink.clone()).expect("log thread");
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

    /// A stdout that takes nothing: the writer blocks until it is released.
    struct Stuck(Arc<(Mutex<bool>, Condvar)>);

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (released, cv) = &*self.0;
            let guard = released.lock().unwrap_or_else(|e| e.into_inner());
            let _held = cv
                .wait_while(guard, |r| !*r)
                .unwrap_or_else(|e| e.into_inner());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stdout_that_takes_nothing_delays_exit_by_at_most_the_close_wait() {
        let shared = Arc::new(Shared::default());
        let stuck = Arc::new((Mutex::new(false), Condvar::new()));
        let guard = start(&shared, Stuck(stuck.clone())).expect("log thread");
        Buffered(shared.clone())
            .write_all(b"a line\n")
            .unwrap_or_default();
        std::thread::sleep(FLUSH_EVERY * 3);
        let started = std::time::Instant::now();
        drop(guard);
        let waited = started.elapsed();
        assert!(
            waited >= CLOSE_WAIT && waited < CLOSE_WAIT + Duration::from_secs(1),
            "{waited:?}"
        );
        *stuck.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        stuck.1.notify_all();
    }

    #[test]
    fn lines_being_written_count_against_the_limit() {
        let shared = Shared::default();
        shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .writing = BUFFER_LIMIT - 10;
        shared.append(&[b'x'; 8]);
        shared.append(&[b'x'; 8]);
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 1);
    }
}
