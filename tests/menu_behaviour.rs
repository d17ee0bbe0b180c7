//! No input, wrong keys, `*`, closed hours, the manager's override, failed transfers, status callbacks.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn star_repeats_the_menu_without_using_up_an_attempt() {
    let app = spawn_app().await;
    let mut call = app.call(STORE).await;
    let first = call.says();
    call.press("*").await;
    assert_eq!(call.says(), first);
    call.silence().await;
    call.silence().await;
    assert!(
        call.twiml.first("Gather").is_some(),
        "two silences after a repeat still leave an attempt"
    );
    let rec = call.record().await;
    assert_eq!(rec["steps"][1]["result"], "repeat");
}

#[tokio::test]
async fn silence_reprompts_then_three_silences_transfer_to_oom_when_open() {
    let app = spawn_app().await;
    let mut call = app.call(STORE).await;
    call.silence().await;
    assert!(call
        .says()
        .starts_with("Sorry, we did not receive a selection. Thank you for calling Polo Park."));
    assert!(call
        .twiml
        .first("Gather")
        .unwrap()
        .attr("action")
        .contains("attempt=2"));
    call.silence().await;
    assert!(call
        .twiml
        .first("Gather")
        .unwrap()
        .attr("action")
        .contains("attempt=3"));
    call.silence().await;
    assert_eq!(call.dialled(), expect(OOM));
    call.connects("oom").await;
    assert!(
        call.ticket_categories().await.is_empty(),
        "no ticket when open"
    );
    let rec = call.record().await;
    let results: Vec<&str> = rec["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["result"].as_str().unwrap())
        .collect();
    assert!(
        results.contains(&"no input (attempt 3 of 3): fallback"),
        "{results:?}"
    );
}

#[tokio::test]
async fn wrong_keys_reprompt_then_fall_back_after_three_attempts() {
    let app = spawn_app().await;
    let mut call = app.call(GUEST_CARE).await;
    call.press("1").await;
    call.press("9").await;
    assert!(call
        .says()
        .starts_with("Sorry, that is not one of the options. For your delivery date"));
    call.press("0").await;
    call.press("#").await;
    assert_eq!(call.dialled(), expect(OOM));
    call.connects("oom").await;
    let rec = call.record().await;
    let digits: Vec<&str> = rec["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] != "screen") // the agent's key
        .filter_map(|s| s["digits"].as_str())
        .collect();
    assert_eq!(digits, ["1", "9", "0", "#"]);
}

#[tokio::test]
async fn when_closed_a_transfer_becomes_the_hours_voicemail_and_the_paths_ticket() {
    let app = spawn_at(sunday_morning()).await;
    let mut call = app.call(STORE).await;
    call.press("1").await;
    call.press("2").await;
    call.press("1").await;
    let says = call.says();
    assert!(says.contains("Guest Care is closed"), "{says}");
    assert!(
        says.contains("Monday to Friday, 8 AM to 8 PM; Saturday, 9 AM to 5 PM, Central time"),
        "{says}"
    );
    assert!(call.twiml.first("Dial").is_none());
    assert!(call.twiml.first("Record").is_some());
    call.leave_voicemail("https://api.twilio.com/recordings/RE2")
        .await;
    assert!(call.says().contains("Goodbye"));
    assert!(call.hung_up());
    let rec = call.record().await;
    assert_eq!(rec["tickets"].as_array().unwrap().len(), 1);
    assert_eq!(
        rec["tickets"][0]["category"], "Initial",
        "the ticket the path names"
    );
    assert_eq!(
        rec["tickets"][0]["recording_url"],
        "https://api.twilio.com/recordings/RE2"
    );
    assert_eq!(rec["outcome"], "voicemail");
}

#[tokio::test]
async fn when_closed_a_path_without_a_ticket_gets_a_follow_up_with_the_voicemail() {
    let app = spawn_at(sunday_morning()).await;
    let mut call = app.call(GUEST_CARE).await;
    call.press("2").await;
    assert!(call.says().contains("Guest Care is closed"));
    assert_eq!(
        call.ticket_categories().await,
        vec!["Follow-Up"],
        "the ticket is open before the tone, so a guest who hangs up is still called back"
    );
    call.leave_voicemail("https://api.twilio.com/recordings/RE3")
        .await;
    let rec = call.record().await;
    assert_eq!(rec["tickets"].as_array().unwrap().len(), 1);
    assert_eq!(rec["tickets"][0]["category"], "Follow-Up");
    assert_eq!(rec["outcome"], "voicemail");
    assert_eq!(
        rec["tickets"][0]["recording_url"],
        "https://api.twilio.com/recordings/RE3"
    );
}

#[tokio::test]
async fn when_closed_a_caller_who_leaves_no_message_still_gets_a_ticket() {
    let app = spawn_at(sunday_morning()).await;
    let mut call = app.call(GUEST_CARE).await;
    call.press("2").await;
    let redirect = call
        .twiml
        .first("Redirect")
        .expect("a redirect after <Record>")
        .text
        .clone();
    call.post(&redirect, &[]).await;
    assert!(call.hung_up());
    assert_eq!(call.ticket_categories().await, ["Follow-Up"]);
    let rec = call.record().await;
    assert_eq!(rec["outcome"], "voicemail_empty", "no message was left");
    assert!(rec["tickets"][0]["recording_url"].is_null());
}

#[tokio::test]
async fn when_closed_three_failed_attempts_end_in_voicemail_and_an_initial_ticket() {
    let app = spawn_at(sunday_morning()).await;
    let mut call = app.call(STORE).await;
    call.silence().await;
    call.press("8").await;
    call.silence().await;
    assert!(call.says().contains("Guest Care is closed"));
    call.leave_voicemail("https://api.twilio.com/recordings/RE4")
        .await;
    let rec = call.record().await;
    assert_eq!(rec["tickets"].as_array().unwrap().len(), 1);
    assert_eq!(rec["tickets"][0]["category"], "Initial");
    assert_eq!(
        rec["tickets"][0]["recording_url"],
        "https://api.twilio.com/recordings/RE4"
    );
}

#[tokio::test]
async fn a_holiday_closes_guest_care() {
    let app = spawn_with(Options {
        toml: "[hours]\nholidays = [\"2026-11-23\"]\n".into(),
        now: monday_morning(),
        ..Options::default()
    })
    .await;
    let mut call = app.call(GUEST_CARE).await;
    call.press("2").await;
    assert!(call.says().contains("Guest Care is closed"));
}

#[tokio::test]
async fn the_managers_override_closes_and_opens_guest_care_and_can_be_cleared() {
    let app = spawn_app().await;
    let view = app.set_override(json!("closed")).await;
    assert_eq!(view["state"], "closed");
    assert_eq!(view["open_now"], false);
    let mut call = app.call(GUEST_CARE).await;
    call.press("2").await;
    assert!(call.says().contains("Guest Care is closed"));

    app.clock.set(sunday_morning());
    app.set_override(json!("open")).await;
    let mut call = app.call(GUEST_CARE).await;
    call.press("2").await;
    assert_eq!(call.dialled(), expect(AFTER_SALES));
    call.connects("after_sales").await;

    let view = app.set_override(json!(null)).await;
    assert_eq!(view["state"], serde_json::Value::Null);
    assert_eq!(view["open_now"], false, "Sunday, by the schedule");
    let hours = app.api("/api/hours").await;
    assert_eq!(hours["time_zone"], "America/Winnipeg");
}

#[tokio::test]
async fn a_busy_or_unanswered_transfer_ends_in_voicemail_on_the_paths_ticket() {
    let app = spawn_app().await;
    for status in ["busy", "no-answer", "failed", "canceled"] {
        let mut call = app.call(STORE).await;
        call.press("2").await;
        call.press("2").await;
        call.dial_ends(status).await;
        assert!(
            call.says().contains("no one is available"),
            "{status}: {}",
            call.xml
        );
        call.leave_voicemail("https://api.twilio.com/recordings/RE5")
            .await;
        let rec = call.record().await;
        assert_eq!(rec["tickets"].as_array().unwrap().len(), 1, "{status}");
        assert_eq!(rec["tickets"][0]["category"], "Initial");
        assert_eq!(
            rec["tickets"][0]["recording_url"],
            "https://api.twilio.com/recordings/RE5"
        );
        let results: Vec<&str> = rec["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["result"].as_str().unwrap())
            .collect();
        // A soft transfer the agent never answered: not answered, never transferred.
        assert!(
            results.contains(&format!("not answered: {status}").as_str()),
            "{results:?}"
        );
        assert_eq!(rec["outcome"], "voicemail", "{status}");
    }
}

#[tokio::test]
async fn a_failed_transfer_without_a_ticket_opens_a_follow_up() {
    let app = spawn_app().await;
    let mut call = app.call(GUEST_CARE).await;
    call.press("2").await;
    call.dial_ends("no-answer").await;
    call.leave_voicemail("https://api.twilio.com/recordings/RE6")
        .await;
    assert_eq!(call.ticket_categories().await, ["Follow-Up"]);
}

async fn status(app: &TestApp, sid: &str, status: &str, seq: u32, duration: Option<&str>) {
    let mut params: Vec<(String, String)> = [
        ("CallSid", sid),
        ("From", CALLER),
        ("To", GUEST_CARE),
        ("CallStatus", status),
        ("SequenceNumber", &seq.to_string()),
        ("Timestamp", "Mon, 23 Nov 2026 16:05:00 +0000"),
        ("CallbackSource", "call-progress-events"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(d) = duration {
        params.push(("CallDuration".into(), d.into()));
    }
    let answer = app.post_signed(&app.url("/voice/status"), &params).await;
    assert_eq!(answer.status, 200);
    parse_twiml(&answer.body);
}

#[tokio::test]
async fn status_callbacks_out_of_order_end_completed_and_never_regress() {
    let app = spawn_app().await;
    let mut call = app.call(GUEST_CARE).await;
    call.press("2").await;
    status(&app, &call.sid, "completed", 3, Some("95")).await;
    status(&app, &call.sid, "ringing", 1, None).await;
    status(&app, &call.sid, "in-progress", 2, None).await;
    let rec = call.record().await;
    assert_eq!(rec["status"], "completed");
    assert_eq!(rec["duration_seconds"], 95);
    assert_eq!(rec["ended_at"], "2026-11-23T16:05:00Z");
}

#[tokio::test]
async fn a_call_hung_up_in_a_menu_is_recorded_as_abandoned() {
    let app = spawn_app().await;
    let call = app.call(STORE).await;
    status(&app, &call.sid, "completed", 2, Some("12")).await;
    assert_eq!(call.record().await["outcome"], "abandoned");
}

#[tokio::test]
async fn a_status_callback_for_a_call_we_never_saw_is_stored() {
    let app = spawn_app().await;
    status(&app, "CAunknown0001", "completed", 4, Some("7")).await;
    let rec = app.api("/api/calls/CAunknown0001").await;
    assert_eq!(rec["status"], "completed");
    assert_eq!(rec["duration_seconds"], 7);
    assert_eq!(rec["line"], "guest_care");
}
