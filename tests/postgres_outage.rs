//! PostgreSQL failing under several instances, on a cluster of the test's own
//! (`common::cluster`): stopped for 10 s while calls flow through two instances, every
//! caller is answered and, once it is back, every acknowledged record is present once; an
//! instance killed mid-call leaves the call to the other, which finishes it.

mod common;

use common::cluster::Cluster;
use common::database::TestDb;
use common::process::Server;
use common::*;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The URL the platform signs: the load balancer's, the same for every instance.
const PUBLIC: &str = "https://ivr.example.test";

/// What a manager reads of a call, less what differs from one call to the next.
async fn summary(app: &TestApp, sid: &str) -> Value {
    let rec = app.api(&format!("/api/calls/{sid}")).await;
    let list = |key: &str| rec[key].as_array().cloned().unwrap_or_default();
    let steps: Vec<Value> = list("steps")
        .iter()
        .map(|s| serde_json::json!([s["node"], s["digits"], s["result"]]))
        .collect();
    let tickets: Vec<Value> = list("tickets")
        .iter()
        .map(|t| serde_json::json!([t["category"], t["reason"], t["recording_url"]]))
        .collect();
    let notes: Vec<Value> = list("notifications")
        .iter()
        .map(|n| {
            let filled = n["subject"]
                .as_str()
                .zip(n["ticket"].as_str())
                .is_some_and(|(s, t)| s.contains(t));
            serde_json::json!([n["contact"], filled])
        })
        .collect();
    serde_json::json!({
        "status": rec["status"], "outcome": rec["outcome"], "recording": rec["recording_url"],
        "errors": rec["error_count"], "steps": steps, "tickets": tickets, "notifications": notes,
    })
}

const RECORDING: &str = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE7";

/// One whole call, its steps sent to the instances in turn: a transfer to after-sales
/// with an Initial ticket (`summons` false), or a court summons with a Follow-Up ticket,
/// an e-mail and a voicemail. Returns the call id and how many requests were answered.
async fn whole_call(apps: &[TestApp], first: usize, summons: bool) -> (String, usize) {
    let mut turn = first;
    let mut c = apps[turn % apps.len()]
        .call_from(STORE, &another_caller())
        .await;
    let keys: &[&str] = if summons {
        &["7", "1"]
    } else {
        &["1", "2", "2"]
    };
    for key in keys {
        turn += 1;
        c.app = &apps[turn % apps.len()];
        c.press(key).await;
    }
    turn += 1;
    c.app = &apps[turn % apps.len()];
    if summons {
        c.leave_voicemail(RECORDING).await;
    } else {
        // The agent hears the whisper and presses 1; then the transfer completes.
        let mut agent = c.agent_answers(Some("human")).await;
        if agent.twiml.first("Gather").is_some() {
            agent.press("1").await;
        }
        c.dial_ends("completed").await;
    }
    turn += 1;
    c.app = &apps[turn % apps.len()];
    c.completes(60).await;
    (c.sid.clone(), keys.len() + 3)
}

/// Two in-process instances on a new database of `cluster`, on one running clock (as
/// machines kept in time by NTP are).
async fn two_instances(cluster: &Cluster) -> Vec<TestApp> {
    let db = Arc::new(TestDb::on_server(&cluster.url("postgres")).await);
    let clock = ivr::app::Clock::running_from(monday_morning());
    let mut apps = Vec::new();
    for _ in 0..2 {
        apps.push(
            spawn_with(Options {
                shared_db: Some(db.clone()),
                public_url: Some(PUBLIC.into()),
                clock: Some(clock.clone()),
                ..Options::default()
            })
            .await,
        );
    }
    apps
}

async fn wait_journals_empty(apps: &[TestApp], limit: Duration) -> Duration {
    let started = Instant::now();
    for app in apps {
        loop {
            let (status, body) = readyz(&app.http, &app.addr).await;
            if status == 200 && body.contains("journal empty") {
                break;
            }
            assert!(
                started.elapsed() < limit,
                "journal not replayed: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_ten_seconds_under_two_instances_loses_no_acknowledged_record() {
    let cluster = Cluster::start();
    let apps = two_instances(&cluster).await;
    let apps = &apps;
    // The records each kind of call leaves, with the database up.
    let (transfer_sid, _) = whole_call(apps, 0, false).await;
    let (summons_sid, _) = whole_call(apps, 1, true).await;
    let reference_transfer = summary(&apps[0], &transfer_sid).await;
    let reference_summons = summary(&apps[0], &summons_sid).await;

    // Callers keep calling through both instances while the database stops for 10 s.
    let stop = Arc::new(AtomicBool::new(false));
    let mut callers = Vec::new();
    for caller in 0..6usize {
        let stop = stop.clone();
        callers.push(async move {
            let mut calls = Vec::new();
            let mut slowest = Duration::ZERO;
            let mut n = caller;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let summons = n % 3 == 0;
                let (sid, webhooks) = whole_call(apps, n, summons).await;
                slowest = slowest.max(started.elapsed() / webhooks as u32);
                calls.push((sid, summons, webhooks));
                n += 1;
            }
            (calls, slowest)
        });
    }
    let outage = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.down();
        let down_at = Instant::now();
        tokio::time::sleep(Duration::from_secs(10)).await;
        cluster.up(&[]);
        let down_for = down_at.elapsed();
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        down_for
    };
    let (down_for, results) = tokio::join!(outage, futures_util::future::join_all(callers));
    let drained = wait_journals_empty(apps, Duration::from_secs(60)).await;

    let mut calls = Vec::new();
    let mut slowest = Duration::ZERO;
    for (c, s) in results {
        calls.extend(c);
        slowest = slowest.max(s);
    }
    let webhooks: usize = calls.iter().map(|c| c.2).sum();
    let (mut transfers, mut summonses) = (0, 0);
    for (sid, summons, _) in &calls {
        let (reference, kind) = if *summons {
            summonses += 1;
            (&reference_summons, "summons")
        } else {
            transfers += 1;
            (&reference_transfer, "transfer")
        };
        assert_eq!(
            &summary(&apps[transfers % 2], sid).await,
            reference,
            "{kind} call {sid}\n{}",
            cluster.log()
        );
    }
    let steps_per = |r: &Value| r["steps"].as_array().map_or(0, Vec::len) as i64;
    let expected_steps = (transfers + 1) as i64 * steps_per(&reference_transfer)
        + (summonses + 1) as i64 * steps_per(&reference_summons);
    assert_eq!(
        apps[0].count("SELECT count(*) FROM steps").await,
        expected_steps,
        "no step lost, none twice"
    );
    assert_eq!(
        apps[0].count("SELECT count(*) FROM tickets").await,
        calls.len() as i64 + 2,
        "one ticket per call"
    );
    assert!(transfers > 0 && summonses > 0);
    report(format!(
        "PostgreSQL stopped {:.1} s under two instances: {} calls ({webhooks} webhooks) answered, \
         the slowest call {:.0} ms a webhook on average; journals replayed {:.1} s after it was back; \
         {expected_steps} steps and {} tickets, each once",
        down_for.as_secs_f64(),
        calls.len(),
        slowest.as_secs_f64() * 1000.0,
        drained.as_secs_f64(),
        calls.len() + 2,
    ));
}

#[tokio::test]
async fn an_instance_killed_mid_call_leaves_the_call_to_the_other_which_finishes_it() {
    let dir = tempfile::tempdir().expect("dir");
    let db = Arc::new(TestDb::new_postgres().await);
    let mut a = Server::start_instance(dir.path(), db.clone(), PUBLIC, "", "a").await;
    let b = Server::start_instance(dir.path(), db.clone(), PUBLIC, "", "b").await;
    let a_app = a.app.clone();
    let mut call = a_app.call_from(STORE, &another_caller()).await;
    call.press("1").await;
    let sid = call.sid.clone();
    a.kill();
    // The load balancer sends the next steps to the other instance.
    call.app = &b.app;
    call.press("2").await;
    call.press("2").await;
    assert_eq!(call.dialled(), expect(AFTER_SALES));
    call.connects("after_sales").await;
    call.completes(60).await;
    assert!(
        a_app
            .http
            .get(format!("{}/healthz", a_app.addr))
            .send()
            .await
            .is_err(),
        "instance a is gone"
    );
    let rec = b.app.api(&format!("/api/calls/{sid}")).await;
    assert_eq!(rec["status"], "completed");
    assert_eq!(rec["outcome"], "transferred:after_sales");
    let tickets: Vec<&str> = rec["tickets"]
        .as_array()
        .expect("tickets")
        .iter()
        .filter_map(|t| t["category"].as_str())
        .collect();
    assert_eq!(tickets, ["Initial"]);
    let nodes: Vec<&str> = rec["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["node"].as_str())
        .collect();
    assert_eq!(nodes.first(), Some(&"store.main"), "{nodes:?}");
    assert!(nodes.contains(&"store.service_transfer"), "{nodes:?}");
}

#[tokio::test]
async fn a_url_with_several_hosts_writes_to_the_one_that_takes_writes_and_follows_a_failover() {
    // Two clusters, each with the schema: `a` is read-only (as a standby would be), `b`
    // takes writes; a host that answers nothing comes first.
    let (a, b) = (Cluster::start(), Cluster::start());
    for c in [&a, &b] {
        let mut conn = connect(&c.url("postgres")).await;
        sqlx::query("CREATE DATABASE ivr")
            .execute(&mut conn)
            .await
            .expect("create ivr");
        let store = ivr::storage::open(&c.url("ivr"), ivr::config::SqliteSync::Normal)
            .await
            .expect("open")
            .calls;
        store.migrate().await.expect("migrate");
        store.close().await.expect("close");
    }
    a.down();
    a.up(&["default_transaction_read_only=on"]);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a port");
    let url = format!(
        "postgres://postgres@127.0.0.1:{dead},127.0.0.1:{},127.0.0.1:{}/ivr?target_session_attrs=read-write",
        a.port, b.port
    );
    let app = spawn_with(Options {
        shared_db: Some(Arc::new(TestDb::existing(&url))),
        ..Options::default()
    })
    .await;
    let calls_on = |c: &Cluster| {
        let url = c.url("ivr");
        async move {
            TestDb::existing(&url)
                .count("SELECT count(*) FROM calls")
                .await
        }
    };
    app.call_from(STORE, &another_caller()).await;
    assert_eq!(
        (calls_on(&a).await, calls_on(&b).await),
        (0, 1),
        "written to b"
    );

    // Failover: b stops, a is promoted (takes writes). Calls go on; within seconds the
    // store moves to a, and what the journal held meanwhile is replayed there.
    b.down();
    a.down();
    a.up(&[]);
    let failed_over = Instant::now();
    let mut answered = 0;
    while failed_over.elapsed() < Duration::from_secs(3) {
        let mut c = app.call_from(STORE, &another_caller()).await;
        c.press("1").await;
        answered += 1;
    }
    let moved = loop {
        let (status, body) = readyz(&app.http, &app.addr).await;
        if status == 200 && body.contains("journal empty") && calls_on(&a).await == answered {
            break failed_over.elapsed();
        }
        assert!(
            failed_over.elapsed() < Duration::from_secs(30),
            "not failed over: {status} {body}; {} of {answered} calls on a",
            calls_on(&a).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    report(format!(
        "failover: {answered} calls answered while b stopped and a was promoted; \
         all on a {:.1} s after",
        moved.as_secs_f64()
    ));
}

async fn connect(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url).await.expect("connect")
}
