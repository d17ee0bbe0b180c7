//! `ivr migrate-data`: a SQLite database copied into PostgreSQL, interrupted and resumed,
//! checked by counts, refused on a target holding other calls, and served afterwards.

mod common;

use common::console::add_user;
use common::database::TestDb;
use common::*;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn migrate_data(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ivr"))
        .arg("migrate-data")
        .args(args)
        .env_remove("IVR_CONFIG")
        .env(
            "IVR_FLOWS_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/ivr_flows"),
        )
        .output()
        .expect("run ivr migrate-data")
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn a_sqlite_database_is_copied_resumed_after_a_kill_checked_and_served() {
    // A seeded database with a real call, its ticket and an account on top.
    let (app, dir) = spawn_seeded(20_000).await;
    let mut call = app.call(STORE).await;
    for key in ["1", "2", "2"] {
        call.press(key).await;
    }
    call.completes(30).await;
    add_user(&app, "dana", "manager").await;
    let before = call.record().await;
    let state = app.state.clone().expect("in-process");
    state
        .db
        .close()
        .await
        .expect("stop writing to the SQLite file");
    let from = format!("sqlite://{}", dir.path().join("ivr.db").display());
    let target = TestDb::new_postgres().await;
    let to = target.url.clone();

    // A dry run counts and writes nothing.
    let dry = migrate_data(&["--from", &from, "--to", &to, "--dry-run"]);
    assert!(dry.status.success(), "{}", said(&dry));
    let text = said(&dry);
    assert!(text.contains("would copy"), "{text}");
    assert!(text.contains("calls") && text.contains("20001"), "{text}");
    assert_eq!(
        target
            .count("SELECT count(*) FROM pg_tables WHERE tablename = 'calls'")
            .await,
        0,
        "the dry run made no tables"
    );

    // A copy killed part way...
    let mut child = Command::new(env!("CARGO_BIN_EXE_ivr"))
        .args(["migrate-data", "--from", &from, "--to", &to])
        .env_remove("IVR_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the copy");
    let started = Instant::now();
    loop {
        let has_steps = target
            .count("SELECT count(*) FROM pg_tables WHERE tablename = 'migrate_data_progress'")
            .await
            == 1
            && target
                .count("SELECT count(*) FROM migrate_data_progress WHERE tbl = 'steps'")
                .await
                == 1;
        if has_steps || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("kill the copy");
    let _ = child.wait();
    let partial = target.count("SELECT count(*) FROM steps").await;
    assert!(
        partial > 0 && partial < 160_000,
        "the copy was stopped part way through the steps ({partial} of 160,000+)"
    );

    // ...resumes where it stopped, and checks the counts.
    let rest = migrate_data(&["--from", &from, "--to", &to]);
    let text = said(&rest);
    assert!(rest.status.success(), "{text}");
    assert!(text.contains("resuming an earlier copy"), "{text}");
    assert!(
        text.contains("every table holds as many rows in the target as in the source"),
        "{text}"
    );
    assert_eq!(target.count("SELECT count(*) FROM calls").await, 20_001);
    assert_eq!(
        target
            .count(
                "SELECT count(*) FROM (SELECT call_id, request_key, idx FROM steps \
                 GROUP BY 1, 2, 3 HAVING count(*) > 1) d"
            )
            .await,
        0,
        "no step copied twice"
    );

    // Another source into the same target is refused.
    let other = tempfile::tempdir().expect("dir");
    let other_app = spawn_with(Options {
        database: Some(other.path().join("other.db")),
        ..Options::default()
    })
    .await;
    other_app.call(STORE).await;
    let other_url = format!("sqlite://{}", other.path().join("other.db").display());
    let refused = migrate_data(&["--from", &other_url, "--to", &to]);
    assert!(!refused.status.success());
    assert!(
        said(&refused).contains("already holds 20001 calls"),
        "{}",
        said(&refused)
    );

    // A server on the copy reads the call as the SQLite one did, signs dana in, and
    // numbers new tickets after the copied ones.
    let served = spawn_with(Options {
        shared_db: Some(std::sync::Arc::new(target)),
        ..Options::default()
    })
    .await;
    let after = served.api(&format!("/api/calls/{}", call.sid)).await;
    assert_eq!(after, before);
    let mut dana = common::console::ConsoleClient::new(&served);
    assert_eq!(
        dana.sign_in("dana", common::console::PASSWORD).await.status,
        303
    );
    let mut next = served.call_from(STORE, &another_caller()).await;
    for key in ["1", "2", "2"] {
        next.press(key).await;
    }
    let old: i64 = before["tickets"][0]["number"]
        .as_str()
        .and_then(|n| n.trim_start_matches("GC-").parse().ok())
        .expect("a ticket number");
    let new: i64 = next.record().await["tickets"][0]["number"]
        .as_str()
        .and_then(|n| n.trim_start_matches("GC-").parse().ok())
        .expect("a ticket number");
    assert!(new > old, "GC-{new} follows GC-{old}");
}
