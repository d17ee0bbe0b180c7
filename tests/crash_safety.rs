//! Issue 4, item 7: `kill -9` under load. A load generator starts 200 complete calls a
//! second (incoming, three menu answers that open a ticket and transfer, the Dial action,
//! the final status callback) against the real binary; the server is killed mid-load, ten
//! rounds on the same database. After each restart every webhook that got a 200 is in the
//! database, nothing is there twice, and SQLite's `integrity_check` says ok. In three of
//! the rounds the database is locked part-way, so that what was acknowledged at the kill
//! sits only in the journal and must be replayed at start-up.

mod common;

use common::process::Server;
use common::*;
use sqlx::{ConnectOptions, Connection};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Webhooks of one call that got a 200: their request keys, and whether the final status was.
#[derive(Debug, Default)]
struct Acks {
    keys: BTreeSet<String>,
    ticket_key: Option<String>,
    completed: bool,
}

type Ledger = Arc<Mutex<BTreeMap<String, Acks>>>;

fn request_key(url: &str, event: &str) -> String {
    let seq = url
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("seq="))
        .unwrap_or("0");
    format!("{seq}:{event}")
}

/// Follows one call as Twilio would until it ends or the server goes away.
async fn drive_call(app: Arc<TestApp>, sid: String, ledger: Ledger) {
    // Each call a guest of its own: a guest who calls again is linked to their open ticket.
    let from = another_caller();
    let base = |extra: &[(&str, &str)]| {
        let mut p = params(&[
            ("CallSid", sid.as_str()),
            ("From", from.as_str()),
            ("To", GUEST_CARE),
            ("CallStatus", "in-progress"),
        ]);
        for (k, v) in params(extra) {
            p.retain(|(pk, _)| *pk != k);
            p.push((k, v));
        }
        p
    };
    let ack = |key: String, opens_ticket: bool| {
        let mut l = ledger.lock().unwrap_or_else(|e| e.into_inner());
        let a = l.entry(sid.clone()).or_default();
        if opens_ticket {
            a.ticket_key = Some(key.clone());
        }
        a.keys.insert(key);
    };
    let mut url = app.url("/voice/incoming");
    let mut event = "incoming";
    let mut answer = match app.try_post_signed(&url, &base(&[])).await {
        Ok(a) if a.status == 200 => a,
        _ => return,
    };
    ack(request_key(&url, event), false);
    for (n, key) in ["1", "4", "2"].iter().enumerate() {
        let twiml = parse_twiml(&answer.body);
        let Some(gather) = twiml.first("Gather") else {
            panic!("a menu: {}", answer.body)
        };
        url = gather.attr("action").to_string();
        event = "gather";
        answer = match app.try_post_signed(&url, &base(&[("Digits", key)])).await {
            Ok(a) if a.status == 200 => a,
            _ => return,
        };
        ack(request_key(&url, event), n == 2);
    }
    let twiml = parse_twiml(&answer.body);
    let Some(dial) = twiml.first("Dial") else {
        panic!("a transfer: {}", answer.body)
    };
    url = dial.attr("action").to_string();
    let dialled = base(&[("DialCallStatus", "completed"), ("DialCallDuration", "30")]);
    match app.try_post_signed(&url, &dialled).await {
        Ok(a) if a.status == 200 => ack(request_key(&url, "dial"), false),
        _ => return,
    }
    let status = base(&[
        ("CallStatus", "completed"),
        ("CallDuration", "40"),
        ("SequenceNumber", "3"),
    ]);
    if let Ok(a) = app
        .try_post_signed(&app.url("/voice/status"), &status)
        .await
    {
        if a.status == 200 {
            let mut l = ledger.lock().unwrap_or_else(|e| e.into_inner());
            l.entry(sid.clone()).or_default().completed = true;
        }
    }
}

/// What the database holds, read from the file after the restart.
struct Found {
    webhooks: BTreeSet<(String, String)>,
    tickets: BTreeMap<String, i64>,
    completed: BTreeSet<String>,
    duplicated_steps: i64,
    integrity: String,
}

async fn read_back(db: &std::path::Path) -> Found {
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .expect("open the database");
    let webhooks = sqlx::query_as::<_, (String, String)>(
        "SELECT c.call_sid, w.request_key FROM webhooks w JOIN calls c ON c.id = w.call_id",
    )
    .fetch_all(&mut conn)
    .await
    .expect("webhooks")
    .into_iter()
    .collect();
    let tickets = sqlx::query_as::<_, (String, i64)>(
        "SELECT call_sid, count(*) FROM tickets GROUP BY call_sid",
    )
    .fetch_all(&mut conn)
    .await
    .expect("tickets")
    .into_iter()
    .collect();
    let completed =
        sqlx::query_scalar::<_, String>("SELECT call_sid FROM calls WHERE status = 'completed'")
            .fetch_all(&mut conn)
            .await
            .expect("calls")
            .into_iter()
            .collect();
    let duplicated_steps: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT call_id, node, request_key FROM steps \
         GROUP BY call_id, node, request_key HAVING count(*) > 1)",
    )
    .fetch_one(&mut conn)
    .await
    .expect("duplicates");
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .expect("integrity check");
    let _ = conn.close().await;
    Found {
        webhooks,
        tickets,
        completed,
        duplicated_steps,
        integrity,
    }
}

const CALLS_PER_SECOND: u64 = 200;
const ROUNDS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_200_calls_a_second_loses_no_acknowledged_record_in_10_rounds() {
    let dir = tempfile::tempdir().expect("dir");
    let mut acknowledged_total = 0usize;
    let mut found_total = 0usize;
    let mut journal_rounds = 0;
    let mut started_calls = 0u64;
    let mut completed_calls = 0usize;
    for round in 0..ROUNDS {
        let mut server = Server::start(dir.path(), "", &format!("round{round}")).await;
        server.wait_ready().await;
        let app = server.app.clone();
        let ledger: Ledger = Arc::default();
        let locked_round = round % 4 == 3;
        // A locked round runs on long enough after the lock for writes to time out (1 s)
        // and go to the journal.
        let run_for = Duration::from_millis(
            600 + fastrand::u64(0..600) + if locked_round { 1500 } else { 0 },
        );
        let mut calls = tokio::task::JoinSet::new();
        let mut lock = None;
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / CALLS_PER_SECOND));
        let mut n = 0u64;
        while started.elapsed() < run_for {
            tick.tick().await;
            if locked_round && lock.is_none() && started.elapsed() > Duration::from_millis(300) {
                lock = Some(lock_database(&app.db_path).await);
            }
            n += 1;
            let sid = format!("CA{round:08x}{n:024x}");
            calls.spawn(drive_call(app.clone(), sid, ledger.clone()));
        }
        started_calls += n;
        server.kill();
        while let Some(joined) = calls.join_next().await {
            if let Err(e) = joined {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
        if let Some(lock) = lock.take() {
            journal_rounds += 1;
            unlock_database(lock).await;
        }
        let journal =
            std::fs::metadata(app.db_path.with_extension("db.journal")).map_or(0, |m| m.len());
        if locked_round {
            assert!(
                journal > 0,
                "round {round}: records were journalled at the kill"
            );
        }

        // Restart: the journal is replayed, then the database is checked.
        let restarted = Server::start(dir.path(), "", &format!("round{round}-restart")).await;
        restarted.wait_ready().await;
        drop(restarted);
        let found = read_back(&app.db_path).await;
        assert_eq!(found.integrity, "ok", "round {round}");
        assert_eq!(found.duplicated_steps, 0, "round {round}");
        let ledger = ledger.lock().unwrap_or_else(|e| e.into_inner());
        let mut acknowledged = 0;
        for (sid, acks) in ledger.iter() {
            for key in &acks.keys {
                assert!(
                    found.webhooks.contains(&(sid.clone(), key.clone())),
                    "round {round}: acknowledged webhook {key} of {sid} is not in the database"
                );
                acknowledged += 1;
            }
            let tickets = found.tickets.get(sid).copied().unwrap_or(0);
            assert!(tickets <= 1, "round {round}: {sid} has {tickets} tickets");
            if acks.ticket_key.is_some() {
                assert_eq!(
                    tickets, 1,
                    "round {round}: acknowledged ticket of {sid} lost"
                );
            }
            if acks.completed {
                assert!(
                    found.completed.contains(sid),
                    "round {round}: status of {sid} lost"
                );
                acknowledged += 1;
            }
        }
        acknowledged_total += acknowledged;
        completed_calls += ledger.values().filter(|a| a.completed).count();
        found_total += ledger
            .iter()
            .map(|(sid, acks)| {
                found.webhooks.iter().filter(|(s, _)| s == sid).count()
                    + usize::from(acks.completed && found.completed.contains(sid))
            })
            .sum::<usize>();
    }
    assert!(
        acknowledged_total > 1000,
        "enough load to mean something: {acknowledged_total}"
    );
    report(format!(
        "kill -9: {ROUNDS} rounds at {CALLS_PER_SECOND} calls/s, {started_calls} calls started, {completed_calls} completed before the kill; \
         {acknowledged_total} webhooks acknowledged, {found_total} found after restart \
         ({} answered but unacknowledged at the kill), 0 lost, 0 duplicated, integrity ok; \
         {journal_rounds} rounds killed while records waited in the journal",
        found_total - acknowledged_total
    ));
}
