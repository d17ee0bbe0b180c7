//! Issue 21, hardening round two: what anyone who can reach the port can do without
//! credentials, and what a full or tampered disk does. Each test reproduces the attack or
//! fault against the real binary (or the real router) and asserts the bound.

mod common;

use common::process::Server;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

fn metrics_of(text: &str) -> usize {
    text.len()
}

/// 60,000 unsigned requests to 60,000 different paths: `/metrics` and the server's memory
/// stay flat (they grew to 244 MB and 1 GB when the raw path was a label), and the log
/// keeps a few lines a second instead of one 4 kB line each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_thousand_unsigned_unique_paths_leave_metrics_memory_and_log_flat() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path(), "", "flood").await;
    let app = server.app.clone();
    let flood = |from: usize, to: usize| {
        let app = app.clone();
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            let per = (to - from) / 16;
            for w in 0..16 {
                let app = app.clone();
                tasks.spawn(async move {
                    for i in from + w * per..from + (w + 1) * per {
                        // Long, phone-like, different every time.
                        let path = format!(
                            "/voice/%2B1%20(204)%20555-{:04}/{}-{i}",
                            i % 10_000,
                            "x".repeat(200),
                        );
                        let res = app
                            .http
                            .post(format!("{}{path}", app.addr))
                            .header("X-Twilio-Signature", "forged")
                            .form(&[("CallSid", "CA1"), ("From", CALLER)])
                            .send()
                            .await
                            .expect("answer");
                        assert_eq!(res.status(), 403);
                    }
                });
            }
            while let Some(done) = tasks.join_next().await {
                done.expect("flood task");
            }
        }
    };
    flood(0, 2_000).await;
    let metrics_before = metrics_of(&metrics_text(&app).await);
    let rss_before = server.rss_kib();
    let log_before = server.logs().len();
    let started = Instant::now();
    flood(2_000, 62_000).await;
    let took = started.elapsed();
    let metrics_text_after = metrics_text(&app).await;
    let metrics_after = metrics_of(&metrics_text_after);
    let rss_after = server.rss_kib();
    let logs = server.logs();
    let log_growth = logs.len() - log_before;
    assert!(
        metrics_after <= metrics_before + 512,
        "/metrics grew from {metrics_before} to {metrics_after} bytes"
    );
    assert!(
        sample(
            &metrics_text_after,
            "ivr_webhooks_total{endpoint=\"unknown\",result=\"forbidden\"}"
        )
        .unwrap_or(0.0)
            >= 62_000.0,
        "{metrics_text_after}"
    );
    assert!(
        rss_after <= rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // At most 5 rejection lines a second, each short.
    let seconds = took.as_secs() + 2;
    assert!(
        log_growth as u64 <= seconds * 5 * 600,
        "{log_growth} bytes of log in {seconds} s"
    );
    let rejections: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("invalid signature"))
        .collect();
    assert!(!rejections.is_empty(), "rejections are still logged");
    for line in &rejections {
        assert!(
            !line.contains("(204)") && line.contains("(***) ***-**"),
            "phone-like paths are masked: {line}"
        );
    }
    assert!(!logs.contains(&"x".repeat(200)), "paths are cut short");
    report(format!(
        "unsigned flood: 60000 unique paths in {:.1} s -> /metrics {metrics_before} -> {metrics_after} bytes, RSS {rss_before} -> {rss_after} KiB, {log_growth} bytes of log",
        took.as_secs_f64()
    ));
}

/// Bodies over 64 kB: a webhook gets the safe route as TwiML, the API its JSON error, and
/// both are counted (they were text/plain and uncounted).
#[tokio::test]
async fn a_body_over_64_kb_is_refused_in_the_paths_own_form_and_counted() {
    let app = spawn_app().await;
    let big = "x".repeat(70 * 1024);
    let res = app
        .http
        .post(app.url("/voice/incoming"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("CallSid=CA1&Pad={big}"))
        .send()
        .await
        .expect("answer");
    assert_eq!(res.status(), 413);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/xml"));
    let twiml = parse_twiml(&res.text().await.unwrap());
    assert!(
        twiml.verbs().contains(&"Say"),
        "the caller hears the apology"
    );
    let res = app
        .http
        .patch(format!("{}/api/tickets/GC-000001", app.addr))
        .bearer_auth(API_TOKEN)
        .header("Content-Type", "application/json")
        .body(format!("{{\"by\": \"{big}\"}}"))
        .send()
        .await
        .expect("answer");
    assert_eq!(res.status(), 413);
    let body: serde_json::Value = res.json().await.expect("JSON");
    assert!(body["error"].as_str().unwrap_or("").contains("too large"));
    let metrics = metrics_text(&app).await;
    assert_eq!(
        sample(&metrics, "ivr_http_refused_total{reason=\"too_large\"}"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "ivr_webhooks_total{endpoint=\"incoming\",result=\"too_large\"}"
        ),
        Some(1.0)
    );
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The database, its WAL and shared-memory files, the journal and its reserve hold
/// callers' numbers: readable by their owner only, and tightened if they were not.
#[tokio::test]
async fn the_database_and_journal_files_are_readable_by_their_owner_only() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let server = Server::start(dir.path(), "journal_reserve_mb = 1", "files").await;
        server.app.call(STORE).await;
        let db = dir.path().join("ivr.db");
        for suffix in ["", "-wal", "-shm", ".journal", ".journal.reserve"] {
            let p = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
    // Files a looser umask made are tightened at the next start.
    let db = dir.path().join("ivr.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let journal = dir.path().join("ivr.db.journal");
    std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _server = Server::start(dir.path(), "journal_reserve_mb = 1", "files2").await;
    assert_eq!(mode(&db), 0o600);
    assert_eq!(mode(&journal), 0o600);
    report("files: database, WAL, shared memory, journal and reserve 0600; 0644 ones tightened at start-up");
}

/// A small file system of its own (tmpfs), unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m,mode=0700")])
            .arg("tmpfs")
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "mounting a {megabytes} MB tmpfs failed: this test needs root (CAP_SYS_ADMIN)"
        );
        Self { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Fills the disk with a file of zeros until it takes no more.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 16 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn wait_ready_again(server: &Server, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let (status, body) = readyz(&server.app.http, &server.app.addr).await;
        if status == 200 && body.contains("journal empty") {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The disk fills up under the database and the journal. The journal's reserve is
/// released, so every answered webhook's records are kept; once space is freed they reach
/// the database and `/readyz` says ready again by itself (it stayed 503 until a restart,
/// and a call kept 3 of its 9 steps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_full_disk_answered_webhooks_keep_their_records_and_readyz_recovers() {
    let disk = SmallDisk::mount(6);
    let dir = tempfile::tempdir().expect("dir");
    let db = disk.path().join("ivr.db");
    let server = Server::start_with_db(dir.path(), &db, "journal_reserve_mb = 1", "full").await;
    server.app.call(STORE).await; // the database made and warm
    let filler = disk.fill();
    // SQLite reuses its WAL file's space for a while: calls go on until the disk is
    // really full for the database too, then five more.
    let mut sids = Vec::new();
    let mut after_full = 0;
    while after_full < 5 {
        let mut call = server.app.call_from_another(STORE).await;
        call.press("2").await;
        call.press("1").await;
        assert!(
            !call.says().contains("technical problem"),
            "{}",
            call.says()
        );
        sids.push(call.sid.clone());
        if server.logs().contains("DISK FULL") {
            after_full += 1;
        }
        assert!(sids.len() < 200, "the disk never filled up");
    }
    let metrics = metrics_text(&server.app).await;
    assert_eq!(sample(&metrics, "ivr_records_lost_total"), Some(0.0));
    let journalled = sample(&metrics, "ivr_journal_appended_total").unwrap_or(0.0);
    assert!(journalled > 0.0, "{metrics}");
    std::fs::remove_file(&filler).expect("free the space");
    let recovered = wait_ready_again(&server, Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("/readyz did not recover:\n{}", server.logs()));
    let mut steps = 0;
    for sid in &sids {
        let rec = server.app.api(&format!("/api/calls/{sid}")).await;
        let n = rec["steps"].as_array().map_or(0, Vec::len);
        assert!(n >= 4, "{sid}: {rec}");
        steps += n;
    }
    report(format!(
        "full disk: {} calls answered normally as the disk filled (the 1 MB reserve released, {journalled} webhooks journalled), {steps} steps kept, 0 lost; /readyz ready {:.1} s after space was freed",
        sids.len(),
        recovered.as_secs_f64()
    ));
}

/// With no reserve left, a webhook neither the database nor the journal can keep: the
/// caller gets the safe route, and the loss is counted and logged as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_room_left_the_caller_gets_the_safe_route_and_the_loss_is_counted() {
    let disk = SmallDisk::mount(4);
    let dir = tempfile::tempdir().expect("dir");
    let db = disk.path().join("ivr.db");
    let server = Server::start_with_db(dir.path(), &db, "journal_reserve_mb = 0", "lost").await;
    server.app.call(STORE).await;
    let filler = disk.fill();
    // SQLite reuses its WAL file's space for a while; calls go on until a write fails.
    let mut lost = 0.0;
    let mut safe_route = false;
    for _ in 0..40 {
        let mut call = server.app.call_from_another(STORE).await;
        if call.twiml.first("Gather").is_some() {
            call.press("2").await;
        }
        safe_route |= call.says().contains("technical problem");
        lost = sample(&metrics_text(&server.app).await, "ivr_records_lost_total").unwrap_or(0.0);
        if lost >= 1.0 {
            break;
        }
    }
    assert!(lost >= 1.0, "no loss after 40 calls on a full disk");
    assert!(
        safe_route,
        "the caller whose records were lost heard the safe route"
    );
    let logged = Instant::now();
    while !server.logs().contains("RECORDS LOST") {
        assert!(
            logged.elapsed() < Duration::from_secs(3),
            "the loss is logged:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::remove_file(&filler).expect("free the space");
    assert!(
        wait_ready_again(&server, Duration::from_secs(20))
            .await
            .is_some(),
        "/readyz recovers:\n{}",
        server.logs()
    );
    report(format!(
        "no room at all: the caller was answered with the safe route, {lost} record write(s) (the step, then its error route) counted and logged as lost"
    ));
}
