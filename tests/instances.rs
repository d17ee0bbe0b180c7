//! Several instances on one PostgreSQL database, as behind a load balancer: any instance
//! answers any step of any call, a webhook retried on two instances at once is written
//! once and answered the same, and ticket numbers stay unique.

mod common;

use common::database::TestDb;
use common::*;
use serde_json::Value;
use std::sync::Arc;

/// The URL the platform signs: the load balancer's, the same for every instance.
const PUBLIC: &str = "https://ivr.example.test";

/// `n` instances on one new PostgreSQL database.
async fn instances(n: usize) -> Vec<TestApp> {
    let db = Arc::new(TestDb::new_postgres().await);
    let mut apps = Vec::new();
    for _ in 0..n {
        apps.push(
            spawn_with(Options {
                shared_db: Some(db.clone()),
                public_url: Some(PUBLIC.into()),
                ..Options::default()
            })
            .await,
        );
    }
    apps
}

/// A morning's calls, each step sent to the next instance in turn; the call ids are the
/// script's own, so that two runs can be compared.
async fn script<'a>(apps: &'a [TestApp]) -> Vec<String> {
    let mut sids = Vec::new();
    let mut turn = 0;
    let mut next = |c: &mut Call<'a>| {
        turn += 1;
        c.app = &apps[turn % apps.len()];
    };
    // Guest Care: an order question transferred to OOM, completed.
    let mut c = apps[0].call(GUEST_CARE).await;
    for key in ["1", "4", "2"] {
        next(&mut c);
        c.press(key).await;
    }
    next(&mut c);
    c.completes(95).await;
    sids.push(c.sid.clone());
    // Store line: a new service concern, an Initial ticket and after-sales.
    let mut c = apps[1 % apps.len()].call(STORE).await;
    for key in ["1", "2", "2"] {
        next(&mut c);
        c.press(key).await;
    }
    next(&mut c);
    c.completes(40).await;
    sids.push(c.sid.clone());
    // Store line: a court summons, a Follow-Up ticket, legal notified, a voicemail.
    let mut c = apps[0].call(STORE).await;
    for key in ["7", "1"] {
        next(&mut c);
        c.press(key).await;
    }
    next(&mut c);
    c.leave_voicemail("https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1")
        .await;
    next(&mut c);
    c.completes(70).await;
    sids.push(c.sid.clone());
    sids
}

/// A call's record as managers read it, without what differs between two databases by
/// design (nothing, today: the clock is fixed and ids follow the same order).
async fn record(app: &TestApp, sid: &str) -> Value {
    app.api(&format!("/api/calls/{sid}")).await
}

#[tokio::test]
async fn calls_whose_steps_alternate_between_two_instances_are_recorded_as_on_one() {
    let pair = instances(2).await;
    let alternated = script(&pair).await;
    let single = instances(1).await;
    let alone = script(&single).await;
    assert_eq!(alternated.len(), alone.len());
    for (a, b) in alternated.iter().zip(&alone) {
        // The call ids differ (each run makes its own); everything else is the same.
        let on_two = record(&pair[0], a)
            .await
            .to_string()
            .replace(a.as_str(), "CALL");
        let on_one = record(&single[0], b)
            .await
            .to_string()
            .replace(b.as_str(), "CALL");
        assert_eq!(on_two, on_one, "call {a} on two instances vs {b} on one");
        assert!(on_two.contains("\"steps\":[{"), "{on_two}");
    }
    // And each instance reads what the other wrote.
    for sid in &alternated {
        assert_eq!(record(&pair[0], sid).await, record(&pair[1], sid).await);
    }
}

#[tokio::test]
async fn the_same_webhook_on_two_instances_at_once_writes_once_and_answers_the_same() {
    let pair = instances(2).await;
    for round in 0..10 {
        // A store call at the menu whose answer opens an Initial ticket for a new service
        // concern and transfers to after-sales.
        let mut c = pair[round % 2].call(STORE).await;
        c.press("1").await;
        c.press("2").await;
        let action = c.gather_action();
        let url = pair[0].url(&action);
        let params = c.params(&[("Digits", "2")]);
        let (a, b) = tokio::join!(
            pair[0].post_signed(&url, &params),
            pair[1].post_signed(&url, &params)
        );
        assert_eq!((a.status, b.status), (200, 200), "{} / {}", a.body, b.body);
        assert_eq!(a.body, b.body, "both instances answer the same");
        parse_twiml(&a.body);
        let rec = record(&pair[0], &c.sid).await;
        assert_eq!(
            rec["tickets"].as_array().map(Vec::len),
            Some(1),
            "one ticket: {rec}"
        );
        // Each step of this path is a distinct node and result: none written twice.
        let steps: Vec<String> = rec["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|s| format!("{} {}", s["node"], s["result"]))
            .collect();
        let mut unique = steps.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            steps.len(),
            unique.len(),
            "no step written twice: {steps:?}"
        );
        assert_eq!(steps.len(), 9, "{steps:?}");
    }
}

#[tokio::test]
async fn tickets_opened_at_once_on_two_instances_get_distinct_numbers() {
    let pair = instances(2).await;
    let calls = (0..24).map(|i| {
        let app = &pair[i % 2];
        async move {
            let mut c = app.call_from(STORE, &another_caller()).await;
            for key in ["1", "2", "2"] {
                c.press(key).await;
            }
            c.sid.clone()
        }
    });
    let sids = futures_util::future::join_all(calls).await;
    let mut numbers = Vec::new();
    for sid in &sids {
        let rec = record(&pair[0], sid).await;
        let t = rec["tickets"].as_array().expect("tickets");
        assert_eq!(t.len(), 1, "{rec}");
        numbers.push(t[0]["number"].as_str().expect("number").to_string());
    }
    numbers.sort();
    numbers.dedup();
    assert_eq!(
        numbers.len(),
        24,
        "every ticket has its own number: {numbers:?}"
    );
}

#[tokio::test]
async fn two_instances_sending_the_outbox_at_once_send_each_email_once() {
    let sink = common::smtp::SmtpSink::start();
    let db = Arc::new(TestDb::new_postgres().await);
    let toml = format!(
        "[smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         from = \"Guest Care IVR <ivr@example.com>\"\npoll_ms = 50\n\
         [lines.stores]\n\"{STORE}\" = \"Polo Park\"\n",
        sink.port
    );
    let mut pair = Vec::new();
    for _ in 0..2 {
        pair.push(
            spawn_with(Options {
                toml: toml.clone(),
                shared_db: Some(db.clone()),
                public_url: Some(PUBLIC.into()),
                running_clock: true,
                jobs: true,
                ..Options::default()
            })
            .await,
        );
    }
    // 16 store calls about a lawyer or agency (7, 2): each queues one e-mail to the manager.
    for i in 0..16 {
        let mut c = pair[i % 2].call_from(STORE, &another_caller()).await;
        c.press("7").await;
        c.press("2").await;
    }
    let messages = sink.wait_for(16, std::time::Duration::from_secs(30)).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let messages = if sink.messages().len() > messages.len() {
        sink.messages()
    } else {
        messages
    };
    let mut ids: Vec<&str> = messages
        .iter()
        .map(|m| common::smtp::header(m, "Message-ID"))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(messages.len(), 16, "sixteen e-mails sent, none twice");
    assert_eq!(ids.len(), 16, "each with its own Message-ID");
    report(format!(
        "outbox: two instances sending at once, 16 e-mails queued -> {} sent, none twice",
        messages.len()
    ));
}

#[tokio::test]
async fn two_instances_running_retention_at_once_forget_each_call_once() {
    let pair = instances(2).await;
    for i in 0..30 {
        let mut c = pair[i % 2].call_from(STORE, &another_caller()).await;
        c.press("1").await;
    }
    let stores: Vec<_> = pair
        .iter()
        .map(|a| a.state.as_ref().expect("in-process").db.clone())
        .collect();
    let later = monday_morning() + chrono::Duration::days(400);
    let cutoff = later - chrono::Duration::days(365);
    let (a, b) = tokio::join!(
        stores[0].forget_callers_before(cutoff, later),
        stores[1].forget_callers_before(cutoff, later)
    );
    let (a, b) = (a.expect("retention a"), b.expect("retention b"));
    assert_eq!(
        a.calls + b.calls,
        30,
        "each call forgotten once: {a:?} + {b:?}"
    );
    assert_eq!(
        pair[0]
            .count("SELECT count(*) FROM calls WHERE anonymised_at IS NULL")
            .await,
        0,
        "every call forgotten"
    );
}
