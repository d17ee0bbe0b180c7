//! E-mails that leave: the outbox sends every notification to a real SMTP server (aiosmtpd),
//! keeps what went wrong, retries, holds the court-summons e-mail for its voicemail, and
//! sends again after a crash without losing one.

mod common;

use common::process::Server;
use common::smtp::{header, SmtpSink};
use common::*;
use reqwest::Method;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// `[smtp]` for a sink on `port`: plain SMTP on loopback, quick retries.
fn smtp_toml(port: u16) -> String {
    format!(
        "[smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         from = \"Guest Care IVR <ivr@example.com>\"\n\
         retry_first_ms = 200\nretry_max_ms = 1000\npoll_ms = 100\ntimeout_ms = 2500\n"
    )
}

async fn spawn_mailing(sink_port: u16, now: chrono::DateTime<chrono::Utc>) -> TestApp {
    spawn_with(Options {
        toml: format!(
            "{}\n[lines.stores]\n\"{STORE}\" = \"Polo Park\"\n",
            smtp_toml(sink_port)
        ),
        now,
        running_clock: true,
        jobs: true,
        ..Options::default()
    })
    .await
}

/// A store call about a lawyer or agency (7, 2): a Follow-Up ticket and an e-mail to the
/// Guest Care manager.
async fn legal_call(app: &TestApp) -> Call<'_> {
    let mut call = app.call_from_another(STORE).await;
    call.press("7").await;
    call.press("2").await;
    call
}

async fn notifications(app: &TestApp, query: &str) -> Vec<Value> {
    app.api(&format!("/api/notifications{query}")).await["notifications"]
        .as_array()
        .expect("notifications")
        .clone()
}

/// Waits until every notification is `sent` (or `limit` passes).
async fn wait_all_sent(app: &TestApp, limit: Duration) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let all = notifications(app, "?limit=200").await;
        if all.iter().all(|n| n["status"] == "sent") || started.elapsed() > limit {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_queued_email_reaches_the_smtp_server_with_its_message_id_and_is_shown_sent() {
    let sink = SmtpSink::start();
    let app = spawn_mailing(sink.port, monday_morning()).await;
    let call = legal_call(&app).await;
    let record = call.record().await;
    let ticket = record["tickets"][0]["number"]
        .as_str()
        .expect("a ticket")
        .to_string();

    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "one e-mail");
    let m = &got[0];
    let sent = wait_all_sent(&app, Duration::from_secs(5)).await;
    let n = &sent[0];
    assert_eq!(n["status"], "sent", "{n}");
    assert_eq!(n["attempts"], 1);
    assert!(n["sent_at"].is_string());
    assert_eq!(n["last_error"], Value::Null);
    assert_eq!(m["rcpt_tos"][0], "guest-care-manager@example.com");
    assert_eq!(m["mail_from"], "ivr@example.com");
    assert_eq!(header(m, "To"), "guest-care-manager@example.com");
    assert_eq!(header(m, "From"), "Guest Care IVR <ivr@example.com>");
    assert_eq!(
        header(m, "Message-ID"),
        format!("<notification-{}@example.com>", n["id"]),
        "the Message-ID comes from the notification"
    );
    assert_eq!(
        header(m, "Subject"),
        format!("Escalated guest (legal or agency): ticket {ticket}")
    );
    let body = m["body"].as_str().expect("body");
    assert!(
        body.contains(&format!("Service Desk ticket: {ticket}")),
        "{body}"
    );
    assert!(
        body.contains(&call.from),
        "the manager gets the caller's number: {body}"
    );
    assert!(
        body.contains("being transferred to the escalation team"),
        "{body}"
    );
    report(format!(
        "e-mail: {ticket} sent to {} with Message-ID {}",
        m["rcpt_tos"][0].as_str().unwrap_or(""),
        header(m, "Message-ID")
    ));
}

#[tokio::test]
async fn smtp_refused_for_a_while_then_accepted_every_email_arrives_once() {
    // Nothing listens at first (connection refused), then the server answers 451 to every
    // recipient, then it accepts.
    let mut sink = SmtpSink::reserve();
    let app = spawn_mailing(sink.port, monday_morning()).await;
    let mut tickets = Vec::new();
    for _ in 0..12 {
        let call = legal_call(&app).await;
        tickets.push(call.record().await["tickets"][0]["number"].clone());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let down = notifications(&app, "?status=queued").await;
    assert_eq!(down.len(), 12, "all queued while the server is down");
    for n in &down {
        assert!(n["attempts"].as_i64().unwrap_or(0) >= 1, "{n}");
        assert!(
            n["last_error"].as_str().is_some_and(|e| !e.is_empty()),
            "the failure is shown: {n}"
        );
        assert!(n["next_attempt_at"].is_string(), "{n}");
    }
    sink.refuse();
    sink.listen(None);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(sink.messages().is_empty(), "451: nothing accepted yet");
    let refused = notifications(&app, "?status=queued").await;
    assert!(
        refused
            .iter()
            .any(|n| n["last_error"].as_str().unwrap_or("").contains("451")),
        "the 451 is shown: {:?}",
        refused.first()
    );
    sink.accept();
    let sent = wait_all_sent(&app, Duration::from_secs(20)).await;
    let got = sink.wait_for(12, Duration::from_secs(5)).await;
    assert!(sent.iter().all(|n| n["status"] == "sent"), "{sent:?}");
    let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
    for m in &got {
        *by_id
            .entry(header(m, "Message-ID").to_string())
            .or_default() += 1;
    }
    let duplicates: usize = by_id.values().map(|c| c - 1).sum();
    assert_eq!(by_id.len(), 12, "every e-mail arrived");
    assert_eq!(duplicates, 0, "no crash, no duplicate");
    for t in &tickets {
        let t = t.as_str().unwrap_or_default();
        assert!(
            got.iter().any(|m| header(m, "Subject").ends_with(t)),
            "{t} arrived"
        );
    }
    let attempts: Vec<i64> = sent.iter().filter_map(|n| n["attempts"].as_i64()).collect();
    report(format!(
        "smtp fault: 12 e-mails, connection refused for 1.5 s, then 451 for 1.5 s, then accepted: {} arrived, \
         {duplicates} duplicates, attempts per e-mail {}..{}",
        by_id.len(),
        attempts.iter().min().unwrap_or(&0),
        attempts.iter().max().unwrap_or(&0)
    ));
}

#[tokio::test]
async fn the_court_summons_email_waits_for_the_voicemail_and_carries_its_link() {
    let sink = SmtpSink::start();
    let app = spawn_mailing(sink.port, monday_morning()).await;
    let mut call = app.call_from_another(STORE).await;
    call.press("7").await;
    call.press("1").await;
    assert!(call.twiml.first("Record").is_some(), "{}", call.xml);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        sink.messages().is_empty(),
        "held until the voicemail is recorded"
    );
    let held = notifications(&app, "").await;
    assert_eq!(held[0]["status"], "queued");
    assert_eq!(held[0]["attempts"], 0);

    let recording = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE77";
    call.leave_voicemail(recording).await;
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["rcpt_tos"][0], "legal@example.com");
    let body = got[0]["body"].as_str().expect("body");
    assert!(
        body.contains(&format!("Voicemail recording: {recording}")),
        "{body}"
    );
    report("court summons: the e-mail to legal left after the voicemail, with its link");
}

#[tokio::test]
async fn a_summons_caller_who_hangs_up_before_the_tone_still_reaches_legal() {
    let sink = SmtpSink::start();
    let app = spawn_mailing(sink.port, monday_morning()).await;
    let mut call = app.call_from_another(STORE).await;
    call.press("7").await;
    call.press("1").await;
    call.completes(20).await;
    // The end of the call releases the e-mail 30 s later, in case the voicemail's own
    // callback is still on its way.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sink.messages().is_empty());
    app.clock
        .set(monday_morning() + chrono::Duration::seconds(45));
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "legal is told even without a voicemail");
    let body = got[0]["body"].as_str().expect("body");
    assert!(
        body.contains("Voicemail recording: the guest left none."),
        "{body}"
    );
}

#[tokio::test]
async fn the_closed_hours_legal_email_says_voicemail_with_its_link_not_transfer() {
    let sink = SmtpSink::start();
    let app = spawn_mailing(sink.port, sunday_morning()).await;
    let mut call = legal_call(&app).await;
    assert!(
        call.twiml.first("Record").is_some(),
        "closed: voicemail {}",
        call.xml
    );
    let recording = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE78";
    call.leave_voicemail(recording).await;
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    let body = got[0]["body"].as_str().expect("body");
    assert!(!body.contains("being transferred"), "{body}");
    assert!(body.contains("Guest Care was closed"), "{body}");
    assert!(body.contains(recording), "{body}");
    let record = call.record().await;
    assert_eq!(
        record["tickets"].as_array().map(Vec::len),
        Some(1),
        "one ticket"
    );
    assert_eq!(record["tickets"][0]["recording_url"], recording);
}

#[tokio::test]
async fn notifications_are_listed_by_status_and_a_resend_keeps_the_message_id() {
    let sink = SmtpSink::start();
    let app = spawn_mailing(sink.port, monday_morning()).await;
    legal_call(&app).await;
    sink.wait_for(1, Duration::from_secs(10)).await;
    let sent = wait_all_sent(&app, Duration::from_secs(5)).await;
    let id = sent[0]["id"].as_i64().expect("id");
    assert_eq!(notifications(&app, "?status=sent").await.len(), 1);
    assert!(notifications(&app, "?status=failed").await.is_empty());
    app.api_refused(
        "/api/notifications?status=lost",
        400,
        "queued, sent or failed",
    )
    .await;

    let (status, again) = app
        .api_call(
            Method::POST,
            &format!("/api/notifications/{id}/resend"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["status"], "queued");
    assert_eq!(
        again["attempts"], 0,
        "a resend starts a fresh run of attempts"
    );
    let got = sink.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2);
    assert_eq!(header(&got[0], "Message-ID"), header(&got[1], "Message-ID"));
    let (status, _) = app
        .api_call(Method::POST, "/api/notifications/999999/resend", None)
        .await;
    assert_eq!(status, 404);
}

/// The server is killed (1) with e-mails committed but SMTP down, and (2) while the SMTP
/// server holds an e-mail it has kept but not yet acknowledged. After each restart every
/// e-mail arrives; the only duplicate is the one the crash left unacknowledged.
#[tokio::test]
async fn a_server_killed_before_or_during_a_send_loses_no_email() {
    let dir = tempfile::tempdir().expect("dir");
    let mut sink = SmtpSink::reserve();
    let toml = format!("{}\n", smtp_toml(sink.port));
    let mut server = Server::start(dir.path(), &toml, "mail-1").await;
    let mut expected = Vec::new();
    for _ in 0..5 {
        let call = legal_call(&server.app).await;
        expected.push(call.record().await["tickets"][0]["number"].clone());
    }
    server.kill();

    sink.listen(Some(1.5));
    let mut server = Server::start(dir.path(), &toml, "mail-2").await;
    // The first e-mail is kept by the SMTP server, which waits 1.5 s to say so: killed then.
    let first = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(first.len(), 1, "one e-mail handed over");
    server.kill();
    let server = Server::start(dir.path(), &toml, "mail-3").await;
    // The e-mail caught by the kill is claimed until its lease runs out (about 10 s here).
    let all = wait_all_sent(&server.app, Duration::from_secs(60)).await;
    assert!(all.iter().all(|n| n["status"] == "sent"), "{all:?}");
    let got = sink.messages();
    let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
    for m in &got {
        *by_id
            .entry(header(m, "Message-ID").to_string())
            .or_default() += 1;
    }
    assert_eq!(by_id.len(), 5, "every e-mail arrived: {by_id:?}");
    let duplicates: usize = by_id.values().map(|c| c - 1).sum();
    assert_eq!(
        duplicates, 1,
        "the e-mail caught by the kill arrives twice, with the same Message-ID: {by_id:?}"
    );
    for t in &expected {
        let t = t.as_str().unwrap_or_default();
        assert!(got.iter().any(|m| header(m, "Subject").ends_with(t)), "{t}");
    }
    report(format!(
        "crash: 5 e-mails, server killed with SMTP down and again mid-send: {} arrived, \
         {duplicates} duplicate (same Message-ID) after the second kill",
        by_id.len()
    ));
}
