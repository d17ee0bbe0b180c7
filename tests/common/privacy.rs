//! Log privacy, checked on every test: the server's logs (in-process, through a tracing
//! subscriber installed once per test binary, and the child processes' log files) must not
//! hold a full phone number, a token or a signature. Every line is also kept under
//! `target/tmp/test-logs/` for reading.

use super::{API_TOKEN, AUTH_TOKEN};
use std::collections::HashSet;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

struct Seen {
    lines: u64,
    /// The most recent lines, for tests that count what was logged.
    recent: std::collections::VecDeque<String>,
    violations: Vec<String>,
    file: Option<std::fs::File>,
}

fn seen() -> &'static Mutex<Seen> {
    static SEEN: OnceLock<Mutex<Seen>> = OnceLock::new();
    SEEN.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-logs");
        let _ = std::fs::create_dir_all(&dir);
        let name = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "tests".into());
        let file = std::fs::File::create(dir.join(format!("{name}.log"))).ok();
        Mutex::new(Seen {
            lines: 0,
            recent: std::collections::VecDeque::new(),
            violations: Vec::new(),
            file,
        })
    })
}

fn signatures() -> &'static Mutex<HashSet<String>> {
    static SIGS: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    SIGS.get_or_init(Mutex::default)
}

/// Remembers a signature a test sent, so that the logs can be searched for it.
pub fn remember_signature(sig: &str) {
    signatures()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(sig.to_string());
}

/// Why a log line is not private, if it is not.
pub fn leak(line: &str) -> Option<String> {
    for secret in [AUTH_TOKEN, API_TOKEN] {
        if line.contains(secret) {
            return Some("a token".into());
        }
    }
    let sigs = signatures().lock().unwrap_or_else(|e| e.into_inner());
    let signature = line
        .split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')))
        .find(|tok| tok.len() >= 20 && sigs.contains(*tok));
    if let Some(sig) = signature {
        return Some(format!("a signature ({sig})"));
    }
    drop(sigs);
    // A phone number: ten or more digits after a `+`, or standing alone (not part of a
    // call id or another word), that looks like a North American number.
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let run = &line[start..i];
            let before = start.checked_sub(1).map(|b| bytes[b]);
            let after = bytes.get(i).copied();
            let plus = before == Some(b'+');
            let alone = !before.is_some_and(|b| b.is_ascii_alphanumeric())
                && !after.is_some_and(|b| b.is_ascii_alphanumeric());
            let nanp = match run.len() {
                10 => !run.starts_with(['0', '1']),
                11 => run.starts_with('1') && !run[1..].starts_with(['0', '1']),
                _ => false,
            };
            if (plus && run.len() >= 8) || (alone && nanp) {
                return Some(format!("a phone number ({run})"));
            }
        } else {
            i += 1;
        }
    }
    None
}

/// Checks log text and counts its lines.
pub fn scan(text: &str) {
    let mut s = seen().lock().unwrap_or_else(|e| e.into_inner());
    for line in text.lines() {
        s.lines += 1;
        if s.recent.len() >= 100_000 {
            s.recent.pop_front();
        }
        s.recent.push_back(line.to_string());
        if let Some(what) = leak(line) {
            if s.violations.len() < 20 {
                s.violations.push(format!("{what}: {line}"));
            }
        }
    }
    if let Some(f) = s.file.as_mut() {
        let _ = f.write_all(text.as_bytes());
    }
}

struct Sink;

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        scan(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the checking subscriber (once per test binary): `ivr` at debug, the rest at info.
pub fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,ivr=debug,sqlx=warn",
            ))
            .with_ansi(false)
            .with_writer(|| Sink)
            .try_init();
    });
}

/// Fails the test (unless it is failing already) if any log line so far was not private.
pub fn assert_logs_private() {
    if std::thread::panicking() {
        return;
    }
    let s = seen().lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        s.violations.is_empty(),
        "the logs are not private:\n{}",
        s.violations.join("\n")
    );
}

/// Log lines checked so far in this test binary.
pub fn lines_checked() -> u64 {
    seen().lock().unwrap_or_else(|e| e.into_inner()).lines
}

/// Recent log lines (of this test binary's in-process servers) holding every needle.
pub fn logged_lines(needles: &[&str]) -> Vec<String> {
    let s = seen().lock().unwrap_or_else(|e| e.into_inner());
    s.recent
        .iter()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .cloned()
        .collect()
}
