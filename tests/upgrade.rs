//! A database written by an earlier release, upgraded in place by `ivr migrate`: migration
//! 0006 rebuilds `calls`, `webhooks` and `steps` (keyed by the call's row number instead of
//! its CallSid) and must keep every call, step, ticket, e-mail and stored answer.

mod common;

use common::*;
use sqlx::{ConnectOptions, Connection};
use std::path::Path;

const OLD: &str = "CA00000000000000000000000000000a01";
const LINKED: &str = "CA00000000000000000000000000000b02";
const STORED: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say>Stored before the upgrade.</Say></Response>";

/// A database at migration 0005, with rows as that release's writer left them.
async fn database_before_call_ids(dir: &Path) -> std::path::PathBuf {
    let migrations = dir.join("migrations-0005");
    std::fs::create_dir(&migrations).unwrap();
    for entry in
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite")).unwrap()
    {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().as_ref() < "0006" {
            std::fs::copy(entry.path(), migrations.join(entry.file_name())).unwrap();
        }
    }
    let db = dir.join("ivr.db");
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&db)
        .create_if_missing(true)
        .foreign_keys(true)
        .connect()
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(migrations.as_path())
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    for sql in [
        "INSERT INTO calls (call_sid, line, from_number, to_number, flow, flow_version, started_at, \
         ended_at, status, outcome) VALUES \
         ('CA00000000000000000000000000000a01', 'guest_care', '+12045551234', '+18007373233', \
          'guest_care', 'v0', 1700000000000, 1700000060000, 'completed', 'voicemail'), \
         ('CA00000000000000000000000000000b02', 'guest_care', '+12045551234', '+18007373233', \
          'guest_care', 'v0', 1700000100000, NULL, 'in-progress', NULL)",
        "INSERT INTO webhooks (call_sid, request_key, at, answer) VALUES \
         ('CA00000000000000000000000000000a01', '0:incoming', 1700000000000, \
          '<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say>Stored before the upgrade.</Say></Response>'), \
         ('CA00000000000000000000000000000b02', '0:incoming', 1700000100000, '<Response/>'), \
         ('CA00000000000000000000000000000a01', '1:menu', 1700000010000, '<Response/>')",
        "INSERT INTO steps (id, call_sid, request_key, idx, at, node, kind, said, digits, result) VALUES \
         (40, 'CA00000000000000000000000000000a01', '0:incoming', 0, 1700000000000, 'guest_care.menu', 'menu', 'For orders, press 1.', NULL, 'offered'), \
         (41, 'CA00000000000000000000000000000b02', '0:incoming', 0, 1700000100000, 'guest_care.menu', 'menu', 'For orders, press 1.', NULL, 'offered'), \
         (42, 'CA00000000000000000000000000000a01', '1:menu', 0, 1700000010000, 'guest_care.menu', 'menu', '', '1', 'pressed 1')",
        "INSERT INTO tickets (id, call_sid, request_key, idx, category, reason, caller_number, created_at) \
         VALUES (7, 'CA00000000000000000000000000000a01', '1:menu', 1, 'Follow-Up', 'Guest asked for a call back', \
                 '+12045551234', 1700000010000)",
        "UPDATE webhooks SET ticket_id = 7 WHERE request_key = '1:menu'",
        "INSERT INTO notifications (call_sid, ticket_id, request_key, idx, contact, address, subject, body, created_at) \
         VALUES ('CA00000000000000000000000000000a01', 7, '1:menu', 2, 'oom', 'oom@example.com', 'GC-000007', 'Call back', 1700000010000)",
        "INSERT INTO call_tickets (call_sid, ticket_id, relation, at) \
         VALUES ('CA00000000000000000000000000000b02', 7, 'linked', 1700000100000)",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
    db
}

#[tokio::test]
async fn ivr_migrate_keeps_every_record_of_an_earlier_database_and_its_stored_answers() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_before_call_ids(dir.path()).await;

    // The administrator's upgrade command.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ivr"))
        .arg("migrate")
        .current_dir(dir.path())
        .env_remove("IVR_CONFIG")
        .env_remove("IVR_DATABASE_URL")
        .env(
            "IVR_FLOWS_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/ivr_flows"),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ivr migrate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wal = std::fs::metadata(dir.path().join("ivr.db-wal")).map_or(0, |m| m.len());
    assert_eq!(
        wal, 0,
        "the rebuilt tables are in the database file, not left in the WAL"
    );

    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&db)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    let broken = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(broken.is_empty(), "{} rows lost their call", broken.len());
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(integrity, "ok");
    // Calls keep the order they were first seen in; steps keep their ids.
    let calls: Vec<(i64, String)> = sqlx::query_as("SELECT id, call_sid FROM calls ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(calls, [(1, OLD.to_string()), (2, LINKED.to_string())]);
    let steps: Vec<(i64, i64)> = sqlx::query_as("SELECT id, call_id FROM steps ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(steps, [(40, 1), (41, 2), (42, 1)]);
    conn.close().await.unwrap();

    // What a manager reads and what a retried webhook hears, from the upgraded file.
    let app = spawn_with(Options {
        database: Some(db),
        ..Options::default()
    })
    .await;
    let old = app.api(&format!("/api/calls/{OLD}")).await;
    assert_eq!(old["outcome"], "voicemail");
    let results: Vec<&str> = old["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["offered", "pressed 1"]);
    assert_eq!(old["tickets"][0]["number"], "GC-000007");
    assert_eq!(old["tickets"][0]["category"], "Follow-Up");
    assert_eq!(old["notifications"][0]["subject"], "GC-000007");
    let linked = app.api(&format!("/api/calls/{LINKED}")).await;
    assert_eq!(linked["steps"].as_array().unwrap().len(), 1);

    let retry = app
        .post_signed(&app.url("/voice/incoming"), &incoming(OLD))
        .await;
    assert_eq!(retry.status, 200);
    assert_eq!(
        retry.body, STORED,
        "a retry hears the answer stored before the upgrade"
    );
    // A new webhook of the linked call is recorded under its upgraded row.
    let next = app
        .post_signed(&app.url("/voice/incoming?seq=1"), &incoming(LINKED))
        .await;
    assert_eq!(next.status, 200);
    let linked = app.api(&format!("/api/calls/{LINKED}")).await;
    assert_eq!(linked["steps"].as_array().unwrap().len(), 2, "{linked}");
}
