//! Issue 4, item 9: the retention setting. After `retention_days` a call forgets its
//! caller: the number is masked in the call, its tickets, steps and e-mails, and its
//! recordings are removed; younger calls keep theirs. Shown on a clock the test moves.

mod common;

use common::*;

const RECORDING: &str = "https://api.twilio.com/recordings/RE1";

/// A court summons from a store line: a ticket, an e-mail with the caller's number, a voicemail.
async fn summons(app: &TestApp) -> String {
    let mut call = app.call(STORE).await;
    call.press("7").await;
    call.press("1").await;
    call.leave_voicemail(RECORDING).await;
    call.sid.clone()
}

#[tokio::test]
async fn after_the_retention_days_a_call_forgets_its_callers_number_and_recording() {
    let start = monday_morning();
    let app = spawn_with(Options {
        toml: format!("retention_days = 30\n[lines.stores]\n\"{STORE}\" = \"Polo Park\"\n"),
        now: start,
        ..Options::default()
    })
    .await;
    let state = app.state.clone().expect("in-process server");
    let old = summons(&app).await;
    app.clock.set(start + chrono::Duration::days(20));
    let young = summons(&app).await;

    // Day 30: nothing is old enough yet.
    app.clock
        .set(start + chrono::Duration::days(30) - chrono::Duration::minutes(1));
    let done = ivr::retention::sweep(&state).await.expect("sweep");
    assert_eq!(done.calls, 0);

    app.clock.set(start + chrono::Duration::days(31));
    let done = ivr::retention::sweep(&state).await.expect("sweep");
    assert_eq!(done.calls, 1);
    assert_eq!(done.recordings, 2, "the call's and its ticket's");

    let rec = app.api(&format!("/api/calls/{old}")).await;
    let text = rec.to_string();
    assert_eq!(rec["from"], "+1******1234");
    assert_eq!(rec["recording_url"], serde_json::Value::Null);
    assert_eq!(rec["tickets"][0]["caller_number"], "+1******1234");
    assert_eq!(rec["tickets"][0]["recording_url"], serde_json::Value::Null);
    assert_eq!(
        rec["tickets"][0]["category"], "Follow-Up",
        "the ticket itself stays"
    );
    assert!(!text.contains(CALLER), "no full number anywhere: {text}");
    assert!(!text.contains(RECORDING), "no recording anywhere: {text}");
    let note = rec["notifications"][0]["body"].as_str().unwrap_or_default();
    assert!(
        note.contains("Court summons") || note.contains("court summons"),
        "{note}"
    );
    let answers = app
        .count(&format!(
            "SELECT count(*) FROM webhooks JOIN calls ON calls.id = webhooks.call_id \
             WHERE calls.call_sid = '{old}'"
        ))
        .await;
    assert_eq!(answers, 0, "stored answers of the old call are gone");

    let rec = app.api(&format!("/api/calls/{young}")).await;
    assert_eq!(rec["from"], CALLER, "a younger call keeps its caller");
    assert_eq!(rec["recording_url"], RECORDING);

    let again = ivr::retention::sweep(&state).await.expect("sweep");
    assert_eq!(again.calls, 0, "a sweep is done once per call");
    report(format!(
        "retention 30 days: at day 31, 1 of 2 calls forgot its caller ({} recordings removed, number masked as +1******1234 everywhere); the 11-day-old call kept its own; a second sweep changed {}",
        done.recordings, again.calls
    ));
}
