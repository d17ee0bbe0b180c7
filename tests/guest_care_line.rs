//! Every path of the 1-800 Guest Care line's menu.

mod common;

use common::*;

#[tokio::test]
async fn the_guest_care_line_answers_with_its_own_menu() {
    let app = spawn_app().await;
    let call = app.call(GUEST_CARE).await;
    assert!(call.says().contains("Guest Care"));
    assert!(call.says().contains("press 5"));
    let rec = call.record().await;
    assert_eq!(rec["line"], "guest_care");
    assert_eq!(rec["flow"], "guest_care");
    assert_eq!(rec["store_name"], serde_json::Value::Null);
}

#[tokio::test]
async fn option_1_is_the_shared_not_delivered_menu() {
    let app = spawn_app().await;
    let mut call = app.call(GUEST_CARE).await;
    call.press("1").await;
    assert!(call.says().contains("For your delivery date, press 1"));
    call.press("4").await;
    call.press("2").await;
    assert_eq!(call.dialled(), expect(OOM));
    call.connects("oom").await;
    assert_eq!(call.ticket_categories().await, ["OOM"]);
    let rec = call.record().await;
    assert_eq!(
        rec["steps"][2]["node"], "orders.main",
        "the store line's menu, shared"
    );
}

#[tokio::test]
async fn option_2_transfers_to_after_sales() {
    let app = spawn_app().await;
    let mut call = app.call(GUEST_CARE).await;
    call.press("2").await;
    assert_eq!(call.dialled(), expect(AFTER_SALES));
    assert!(call.ticket_categories().await.is_empty());
    call.agent_takes_the_call().await;
    call.dial_ends("answered").await;
    assert_eq!(call.record().await["outcome"], "transferred:after_sales");
}

#[tokio::test]
async fn option_3_opens_the_shopping_dollars_menu() {
    let app = spawn_app().await;
    let mut call = app.call(GUEST_CARE).await;
    call.press("3").await;
    let says = call.says();
    assert!(
        says.contains("shopping dollars will arrive, press 1"),
        "{says}"
    );
    assert!(
        says.contains("rewards site is not working, press 2"),
        "{says}"
    );
    assert!(says.contains("Home Service Perks"), "{says}");
    assert_eq!(
        call.step_nodes().await.last().map(String::as_str),
        Some("shopping_dollars.main")
    );
}

#[tokio::test]
async fn option_5_enqueues_the_caller_in_the_escalation_queue_with_a_wait_message() {
    let app = spawn_app().await;
    let mut call = app.call(GUEST_CARE).await;
    call.press("5").await;
    let enqueue = call.twiml.first("Enqueue").expect("an <Enqueue>").clone();
    assert_eq!(enqueue.text, "escalation");
    let wait_url = enqueue.attr("waitUrl").to_string();
    assert!(wait_url.starts_with(&app.public));

    let mut waiting = app.call(GUEST_CARE).await;
    waiting.sid = call.sid.clone();
    waiting
        .post(&wait_url, &[("QueueSid", "QU1"), ("QueuePosition", "2")])
        .await;
    assert!(
        waiting.says().contains("stay on the line"),
        "{}",
        waiting.xml
    );

    call.queue_ends("bridged").await;
    assert!(call.hung_up());
    assert_eq!(
        call.record().await["outcome"],
        "transferred:escalation_queue"
    );
}

#[tokio::test]
async fn a_full_escalation_queue_falls_back_to_voicemail_and_a_ticket() {
    let app = spawn_app().await;
    let mut call = app.call(GUEST_CARE).await;
    call.press("5").await;
    call.queue_ends("queue-full").await;
    assert!(call.twiml.first("Record").is_some(), "{}", call.xml);
    call.leave_voicemail("https://api.twilio.com/recordings/RE9")
        .await;
    assert_eq!(call.ticket_categories().await, ["Follow-Up"]);
}

#[tokio::test]
async fn option_7_is_the_shared_legal_menu() {
    let app = spawn_app().await;
    let mut call = app.call(GUEST_CARE).await;
    call.press("7").await;
    assert!(call.says().contains("court summons, press 1"));
    call.press("2").await;
    assert_eq!(call.dialled(), expect(ESCALATION));
    call.connects("escalation").await;
    let rec = call.record().await;
    assert_eq!(rec["tickets"][0]["category"], "Follow-Up");
    assert_eq!(rec["notifications"][0]["contact"], "guest_care_manager");
    assert!(rec["notifications"][0]["body"]
        .as_str()
        .unwrap()
        .contains("Guest Care"));
}

#[tokio::test]
async fn option_7_then_1_is_a_court_summons_with_a_ticket_a_legal_notice_and_a_voicemail() {
    let app = spawn_app().await;
    let mut call = app.call(GUEST_CARE).await;
    call.press("7").await;
    call.press("1").await;
    assert!(call.twiml.first("Record").is_some(), "{}", call.xml);
    let rec = call.record().await;
    assert_eq!(rec["tickets"].as_array().unwrap().len(), 1);
    assert_eq!(rec["tickets"][0]["category"], "Follow-Up");
    assert_eq!(rec["tickets"][0]["reason"], "Court summons");
    assert_eq!(rec["notifications"][0]["contact"], "legal");
    assert!(rec["notifications"][0]["body"]
        .as_str()
        .unwrap()
        .contains("Guest Care"));
    call.leave_voicemail("https://api.twilio.com/recordings/RE71")
        .await;
    assert!(call.hung_up());
    assert!(call.says().contains("We have logged ticket G C"));
    let rec = call.record().await;
    assert_eq!(rec["outcome"], "voicemail");
    assert_eq!(
        rec["tickets"][0]["recording_url"],
        "https://api.twilio.com/recordings/RE71"
    );
    assert_eq!(
        call.step_nodes().await,
        [
            "guest_care.main",
            "guest_care.main",
            "legal.main",
            "legal.main",
            "legal.summons_ticket",
            "legal.summons_notify",
            "legal.summons_voicemail",
            "legal.summons_voicemail",
            "legal.summons_goodbye",
        ]
    );
}

#[tokio::test]
async fn when_closed_option_5_takes_a_voicemail_and_a_follow_up_instead_of_the_queue() {
    let app = spawn_at(sunday_morning()).await;
    let mut call = app.call(GUEST_CARE).await;
    call.press("5").await;
    assert!(call.twiml.first("Enqueue").is_none(), "{}", call.xml);
    assert!(call.says().contains("Guest Care is closed"));
    assert!(call.twiml.first("Record").is_some());
    call.leave_voicemail("https://api.twilio.com/recordings/RE75")
        .await;
    assert!(call.hung_up());
    let rec = call.record().await;
    assert_eq!(rec["outcome"], "voicemail");
    assert_eq!(rec["tickets"].as_array().unwrap().len(), 1);
    assert_eq!(rec["tickets"][0]["category"], "Follow-Up");
    assert_eq!(
        rec["tickets"][0]["recording_url"],
        "https://api.twilio.com/recordings/RE75"
    );
    assert!(rec["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["result"] == "escalation_queue not reached: Guest Care closed"));
}

#[tokio::test]
async fn when_closed_option_7_then_2_keeps_its_ticket_and_notice_and_takes_a_voicemail() {
    let app = spawn_at(sunday_morning()).await;
    let mut call = app.call(GUEST_CARE).await;
    call.press("7").await;
    call.press("2").await;
    assert!(call.twiml.first("Dial").is_none(), "{}", call.xml);
    assert!(call.says().contains("Guest Care is closed"));
    let rec = call.record().await;
    assert_eq!(
        rec["notifications"][0]["contact"], "guest_care_manager",
        "the manager hears of it even at night"
    );
    call.leave_voicemail("https://api.twilio.com/recordings/RE72")
        .await;
    assert!(call.hung_up());
    let rec = call.record().await;
    assert_eq!(rec["outcome"], "voicemail");
    assert_eq!(rec["tickets"].as_array().unwrap().len(), 1, "one ticket");
    assert_eq!(rec["tickets"][0]["category"], "Follow-Up");
    assert!(rec["tickets"][0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("Legal or agency matter"));
    assert_eq!(
        rec["tickets"][0]["recording_url"],
        "https://api.twilio.com/recordings/RE72"
    );
}
