//! The `ivr` binary as an administrator runs it.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ivr() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ivr"));
    for var in [
        "IVR_CONFIG",
        "IVR_LISTEN",
        "IVR_DATABASE_URL",
        "IVR_PUBLIC_URL",
        "TWILIO_AUTH_TOKEN",
        "IVR_API_TOKEN",
    ] {
        c.env_remove(var);
    }
    c.env(
        "IVR_FLOWS_DIR",
        concat!(env!("CARGO_MANIFEST_DIR"), "/ivr_flows"),
    );
    c.env("NO_COLOR", "1");
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn development_mode_refuses_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = ivr()
        .args(["serve"])
        .current_dir(dir.path())
        .env("IVR_LISTEN", "0.0.0.0:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TWILIO_AUTH_TOKEN is not set") && err.contains("loopback"),
        "{err}"
    );
    assert!(!dir.path().join("ivr.db").exists(), "nothing created");
}

#[test]
fn ivr_migrate_creates_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = ivr()
        .args(["migrate"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("ivr.db").exists());
}

#[test]
fn ivr_serve_with_no_configuration_answers_calls_from_an_embedded_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = ivr()
        .args(["serve"])
        .current_dir(dir.path())
        .env("IVR_LISTEN", format!("127.0.0.1:{port}"))
        .stderr(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let body = one_call(port, "CAcli0001");
    // A graceful stop: the log lines still buffered (up to 20 ms of them) are written out.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let stopping = Instant::now();
    while child.try_wait().ok().flatten().is_none() {
        if stopping.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the server did not stop within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut logs = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut logs);
    }
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.to_ascii_lowercase().contains("content-type: text/xml"));
    assert!(body.contains("<Gather"), "{body}");
    assert!(
        dir.path().join("ivr.db").exists(),
        "the embedded database file"
    );
    // Bytes 18 and 19 of the file header are 2 in WAL mode (the WAL file itself is gone
    // after a graceful stop).
    let header = std::fs::read(dir.path().join("ivr.db")).unwrap_or_default();
    assert_eq!(header.get(18..20), Some(&[2u8, 2][..]), "WAL mode");
    assert!(logs.contains("DEVELOPMENT MODE"), "{logs}");
    assert!(
        logs.contains("+1******1234"),
        "the caller is logged masked: {logs}"
    );
    assert!(!logs.contains("2045551234"), "never in full: {logs}");
}

/// Sends one incoming-call webhook to a development-mode server, waiting for it to start.
fn one_call(port: u16, sid: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sent = std::net::TcpStream::connect(("127.0.0.1", port)).ok().and_then(|mut s| {
            use std::io::Write;
            let form = format!("CallSid={sid}&From=%2B12045551234&To=%2B18007373233");
            write!(
                s,
                "POST /voice/incoming HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
                form.len()
            )
            .ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some(out)
        });
        match sent {
            Some(out) => return out,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            None => panic!("the server did not answer"),
        }
    }
}

#[test]
fn ivr_seed_fills_a_test_database_and_refuses_one_that_holds_real_calls() {
    let dir = tempfile::tempdir().unwrap();
    let calls = || -> i64 {
        let db = rusqlite::Connection::open(dir.path().join("ivr.db")).unwrap();
        db.query_row("SELECT count(*) FROM calls", [], |r| r.get(0))
            .unwrap()
    };
    let out = ivr()
        .args(["seed"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("seeded 1000 calls"),
        "a small default: {said}"
    );
    assert_eq!(calls(), 1000);
    // A real call comes in.
    let port = free_port();
    let mut server = ivr()
        .args(["serve"])
        .current_dir(dir.path())
        .env("IVR_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let answer = one_call(port, "CAcliseed01");
    let _ = server.kill();
    let _ = server.wait();
    assert!(answer.contains("<Gather"), "{answer}");
    assert_eq!(calls(), 1001);
    let out = ivr()
        .args(["seed", "--calls", "10"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused");
    assert!(
        err.contains("holds calls that ivr seed did not write (1)"),
        "{err}"
    );
    assert_eq!(calls(), 1001, "nothing added");
}
