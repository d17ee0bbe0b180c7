//! A real SMTP server for the e-mail tests: aiosmtpd, started by `tests/support/smtp_sink.py`
//! on a port of its own; every message it accepts is read back with its headers.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An SMTP server the tests control: its port is reserved at once, and it listens only
/// once started (until then, connections are refused).
pub struct SmtpSink {
    /// The port it listens on once started.
    pub port: u16,
    /// Where it writes what it accepts.
    pub dir: PathBuf,
    /// While this file exists, it refuses recipients with a temporary error (451).
    pub refuse_file: PathBuf,
    child: Option<Child>,
    _tmp: tempfile::TempDir,
}

impl SmtpSink {
    /// A sink not started yet: connections to its port are refused.
    pub fn reserve() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let tmp = tempfile::tempdir().expect("temp dir");
        Self {
            port,
            dir: tmp.path().join("received"),
            refuse_file: tmp.path().join("refuse"),
            child: None,
            _tmp: tmp,
        }
    }

    /// A sink listening now.
    pub fn start() -> Self {
        let mut sink = Self::reserve();
        sink.listen(None);
        sink
    }

    /// Starts listening; `slow_data` delays each 250 reply after the message is kept.
    pub fn listen(&mut self, slow_data: Option<f64>) {
        let mut cmd = Command::new("python3");
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/smtp_sink.py"
        ))
        .arg(self.port.to_string())
        .arg(&self.dir)
        .arg("--refuse-file")
        .arg(&self.refuse_file);
        if let Some(s) = slow_data {
            cmd.arg("--slow-data").arg(s.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with aiosmtpd (pip install -r tests/requirements.txt)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the SMTP sink's first line");
        assert!(
            line.starts_with("ready"),
            "the SMTP sink did not start (is aiosmtpd installed?): {line:?}"
        );
        self.child = Some(child);
    }

    /// Refuses every recipient with 451 until `accept`.
    pub fn refuse(&self) {
        std::fs::write(&self.refuse_file, b"").expect("refuse file");
    }

    /// Accepts recipients again.
    pub fn accept(&self) {
        let _ = std::fs::remove_file(&self.refuse_file);
    }

    /// Every message accepted so far, in order: `mail_from`, `rcpt_tos`, `headers`, `body`.
    pub fn messages(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .map(|p| {
                serde_json::from_str(&std::fs::read_to_string(p).expect("message"))
                    .expect("message json")
            })
            .collect()
    }

    /// Waits until `n` messages have arrived (or `limit` passes) and returns them all.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let got = self.messages();
            if got.len() >= n || started.elapsed() > limit {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A header of a received message.
pub fn header<'m>(message: &'m Value, name: &str) -> &'m str {
    message["headers"]
        .as_object()
        .and_then(|h| {
            h.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.as_str())
        })
        .unwrap_or("")
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
