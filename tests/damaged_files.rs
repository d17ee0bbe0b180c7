//! Issue 21, items 4 and 5: the SQLite files damaged or deleted under the running server.
//! A truncated, unwritable `-shm` file killed the process with SIGBUS and nothing logged;
//! a deleted database went unnoticed while records went into the deleted file. Each test
//! does it to the real binary, then calls in, then restarts it and counts what was kept.

mod common;

use common::process::Server;
use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// A call in and the first choice made: two webhooks, each answered with its prompt.
async fn a_call(app: &TestApp) -> String {
    let mut call = app.call(STORE).await;
    assert!(
        call.says().contains("press 1"),
        "the caller hears the menu: {}",
        call.says()
    );
    call.press("1").await;
    assert!(
        !call.hung_up() && !call.says().is_empty(),
        "the caller hears the next menu"
    );
    call.sid.clone()
}

async fn readyz_until(app: &TestApp, wanted: &str) -> (u16, String) {
    let started = Instant::now();
    loop {
        let (status, body) = readyz(&app.http, &app.addr).await;
        if body.contains(wanted) || started.elapsed() > Duration::from_secs(5) {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Restarts the server on the same files and waits until the journal is replayed.
async fn restart(mut server: Server, dir: &Path) -> Server {
    server.terminate();
    assert!(
        server.wait_exit(Duration::from_secs(10)).await.is_some(),
        "the server stops"
    );
    drop(server);
    let server = Server::start(dir, "", "after").await;
    server.wait_ready().await;
    server
}

async fn calls_kept(db: &Path, sids: &[String]) -> usize {
    let mut kept = 0;
    for sid in sids {
        let n = count_rows(
            db,
            &format!(
                "SELECT COUNT(*) FROM steps WHERE call_id = \
                 (SELECT id FROM calls WHERE call_sid = '{sid}')"
            ),
        )
        .await;
        if n >= 2 {
            kept += 1;
        }
    }
    kept
}

/// The `-shm` file truncated and made immutable under the running server (it died of
/// SIGBUS at the next step, with nothing logged): the damage is caught before SQLite
/// touches the mapping, reported in the log, `/readyz` and `/metrics`, every caller is
/// answered as usual with the records journalled, and a restart keeps every call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_unwritable_shm_file_is_caught_and_reported_and_calls_are_answered() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path(), "", "shm").await;
    let app = server.app.clone();
    let db = app.db_path.clone();
    let mut sids = Vec::new();
    for _ in 0..3 {
        sids.push(a_call(&app).await);
    }
    // Between calls, as an operator's mistake would come: the checkpointer has caught up
    // and, the server idle, nothing touches the files (a truncation during a checkpoint
    // pass can still end the process: README, Reliability).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shm = sibling(&db, "-shm");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shm)
        .and_then(|f| f.set_len(0))
        .expect("truncate the -shm file");
    let immutable = ReadOnly::make(std::slice::from_ref(&shm));
    // At once, before the watch thread has looked: the hot path looks before each use.
    for _ in 0..5 {
        sids.push(a_call(&app).await);
    }
    let listing = app
        .http
        .get(format!("{}/api/calls", app.addr))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("the API answers");
    assert_eq!(
        listing.status(),
        503,
        "the API says the database is unavailable"
    );
    let (status, body) = readyz_until(&app, "truncated").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("-shm was truncated"), "{body}");
    let metrics = metrics_text(&app).await;
    assert_eq!(
        sample(&metrics, "ivr_database_fault"),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        sample(&metrics, "ivr_journal_appended_total").unwrap_or(0.0) >= 10.0,
        "the 5 calls' 10 webhooks are journalled: {metrics}"
    );
    let logs = server.logs_with("DATABASE FILES DAMAGED").await;
    assert!(logs.contains("DATABASE FILES DAMAGED"), "{logs}");
    drop(immutable);
    let after = restart(server, dir.path()).await;
    let kept = calls_kept(&db, &sids).await;
    assert_eq!(kept, 8, "every call's steps are kept:\n{}", after.logs());
    report(format!(
        "-shm truncated and immutable: 5 calls (10 webhooks) answered normally, the process alive, /readyz 503 \"{}\"; after a restart {kept}/8 calls with all their steps",
        body.trim()
    ));
}

/// The database, WAL and `-shm` files deleted under the running server (records went
/// into the deleted files, `/readyz` said ready, and a restart began an empty database):
/// noticed, the open database copied back to its path, the records since journalled, and
/// after a restart every call is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_deleted_while_running_is_noticed_copied_back_and_nothing_is_lost() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path(), "", "deleted").await;
    let app = server.app.clone();
    let db = app.db_path.clone();
    let mut sids = Vec::new();
    for _ in 0..3 {
        sids.push(a_call(&app).await);
    }
    for suffix in ["", "-wal", "-shm"] {
        std::fs::remove_file(sibling(&db, suffix)).expect("delete");
    }
    for _ in 0..3 {
        sids.push(a_call(&app).await);
    }
    let (status, body) = readyz_until(&app, "copied back").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("was deleted while in use"), "{body}");
    assert!(db.exists(), "the database is back at its path");
    let logs = server.logs_with("DATABASE FILE DELETED").await;
    assert!(logs.contains("DATABASE FILE DELETED"), "{body}\n{logs}");
    let after = restart(server, dir.path()).await;
    let kept = calls_kept(&db, &sids).await;
    assert_eq!(kept, 6, "every call's steps are kept:\n{}", after.logs());
    report(format!(
        "database deleted while running: 3 more calls answered normally, /readyz 503 \"{}\"; after a restart {kept}/6 calls with all their steps",
        body.trim()
    ));
}
