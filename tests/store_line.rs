//! Every path of the store line's menus, driven over HTTP with signed requests.

mod common;

use common::*;

fn pair(p: (String, String)) -> (String, String) {
    p
}

#[tokio::test]
async fn a_store_call_is_greeted_with_the_store_name_and_the_main_menu() {
    let app = spawn_app().await;
    let call = app.call(STORE).await;
    assert!(
        call.says().starts_with("Thank you for calling Polo Park."),
        "{}",
        call.says()
    );
    assert!(call.says().contains("press 7"));
    let gather = call.twiml.first("Gather").expect("a menu");
    assert_eq!(gather.attr("numDigits"), "1");
    assert!(
        gather.attr("action").starts_with(&app.public),
        "absolute action URL"
    );
    let rec = call.record().await;
    assert_eq!(rec["line"], "store");
    assert_eq!(rec["store_name"], "Polo Park");
    assert_eq!(rec["flow"], "store");
    assert_eq!(rec["from"], CALLER);
    assert_eq!(rec["flow_version"].as_str().map(str::len), Some(12));
    assert_eq!(rec["steps"][0]["node"], "store.main");
}

#[tokio::test]
async fn an_unknown_store_number_is_greeted_with_the_brand() {
    let app = spawn_app().await;
    let call = app.call("+12045559999").await;
    assert!(call
        .says()
        .starts_with("Thank you for calling Example Furniture."));
}

#[tokio::test]
async fn delivered_and_already_with_guest_care_logs_a_follow_up_and_escalates() {
    let app = spawn_app().await;
    let mut call = app.call(STORE).await;
    call.press("1").await;
    assert!(call.says().contains("already working on this concern"));
    call.press("1").await;
    assert_eq!(pair(call.dialled()), expect(ESCALATION));
    assert_eq!(call.ticket_categories().await, ["Follow-Up"]);
    call.dial_ends("completed").await;
    assert!(call.hung_up());
    let rec = call.record().await;
    assert_eq!(rec["outcome"], "transferred:escalation");
    let nodes: Vec<&str> = rec["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["node"].as_str().unwrap())
        .collect();
    assert_eq!(
        nodes,
        [
            "store.main",
            "store.main",
            "store.delivered",
            "store.delivered",
            "store.escalate_ticket",
            "store.escalate_transfer",
            "store.escalate_transfer"
        ]
    );
    assert_eq!(rec["steps"][1]["digits"], "1");
    assert_eq!(rec["steps"][1]["result"], "chose 1");
    // The API shows each choice's label: the concern in words, as an agent will hear it.
    assert_eq!(
        rec["steps"][1]["data"]["label"],
        "the purchase was delivered"
    );
    assert_eq!(
        rec["steps"][3]["data"]["label"],
        "a concern Guest Care is already working on, to escalate"
    );
    assert_eq!(rec["tickets"][0]["caller_number"], CALLER);
    assert_eq!(rec["tickets"][0]["status"], "open");
    assert!(rec["tickets"][0]["number"]
        .as_str()
        .unwrap()
        .starts_with("GC-"));
}

#[tokio::test]
async fn a_new_order_concern_hears_about_online_claims_then_goes_to_oom_with_an_initial_ticket() {
    let app = spawn_app().await;
    let mut call = app.call(STORE).await;
    call.press("1").await;
    call.press("2").await;
    assert!(call
        .says()
        .contains("submit an Eva claim online, 24 hours a day, 7 days a week, at www.example.com"));
    call.press("1").await;
    assert_eq!(pair(call.dialled()), expect(OOM));
    call.connects("oom").await;
    assert_eq!(call.ticket_categories().await, ["Initial"]);
}

#[tokio::test]
async fn a_new_service_concern_goes_to_after_sales_with_an_initial_ticket() {
    let app = spawn_app().await;
    let mut call = app.call(STORE).await;
    call.press("1").await;
    call.press("2").await;
    call.press("2").await;
    assert_eq!(pair(call.dialled()), expect(AFTER_SALES));
    call.connects("after_sales").await;
    assert_eq!(call.ticket_categories().await, ["Initial"]);
}

#[tokio::test]
async fn a_delivery_date_question_hears_the_website_and_texting_then_oom_with_an_oom_ticket() {
    let app = spawn_app().await;
    let mut call = app.call(STORE).await;
    call.press("2").await;
    call.press("1").await;
    assert!(call.says().contains("www.example.com"));
    assert!(
        call.says().contains("texting 2 7 4 5 3 9"),
        "{}",
        call.says()
    );
    assert_eq!(pair(call.dialled()), expect(OOM));
    call.connects("oom").await;
    assert_eq!(call.ticket_categories().await, ["OOM"]);
}

#[tokio::test]
async fn an_attempted_delivery_goes_to_after_sales_with_an_initial_ticket() {
    let app = spawn_app().await;
    let mut call = app.call(STORE).await;
    call.press("2").await;
    call.press("2").await;
    assert_eq!(pair(call.dialled()), expect(AFTER_SALES));
    call.connects("after_sales").await;
    assert_eq!(call.ticket_categories().await, ["Initial"]);
}

#[tokio::test]
async fn a_broken_promise_cancellation_goes_to_oom_without_a_ticket() {
    let app = spawn_app().await;
    let mut call = app.call(STORE).await;
    call.press("2").await;
    call.press("3").await;
    call.press("1").await;
    assert_eq!(pair(call.dialled()), expect(OOM));
    call.connects("oom").await;
    assert!(call.ticket_categories().await.is_empty());
}

#[tokio::test]
async fn a_policy_cancellation_goes_to_oom_without_a_ticket() {
    let app = spawn_app().await;
    let mut call = app.call(STORE).await;
    call.press("2").await;
    call.press("3").await;
    call.press("2").await;
    assert_eq!(pair(call.dialled()), expect(OOM));
    call.connects("oom").await;
    assert!(call.ticket_categories().await.is_empty());
}

#[tokio::test]
async fn another_cancellation_hears_the_policy_logs_an_initial_ticket_and_may_reach_escalation() {
    let app = spawn_app().await;
    let mut call = app.call(STORE).await;
    call.press("2").await;
    call.press("3").await;
    call.press("3").await;
    assert!(call.says().contains("cancellation policy"));
    assert_eq!(call.ticket_categories().await, ["Initial"]);
    call.press("1").await;
    assert_eq!(pair(call.dialled()), expect(ESCALATION));
    call.connects("escalation").await;
    assert_eq!(
        call.ticket_categories().await,
        ["Initial"],
        "no second ticket"
    );
}

#[tokio::test]
async fn another_cancellation_that_does_not_want_escalation_hears_goodbye() {
    let app = spawn_app().await;
    for ending in ["9", ""] {
        let mut call = app.call(STORE).await;
        call.press("2").await;
        call.press("3").await;
        call.press("3").await;
        if ending.is_empty() {
            call.silence().await;
        } else {
            call.press(ending).await;
        }
        assert!(call.says().contains("Goodbye"), "{}", call.xml);
        assert!(call.hung_up());
        let rec = call.record().await;
        assert_eq!(rec["outcome"], "ticket_logged", "a ticket, no transfer");
        assert_eq!(rec["tickets"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn an_escalated_guest_already_in_touch_gets_a_follow_up_ticket_and_oom() {
    let app = spawn_app().await;
    let mut call = app.call(STORE).await;
    call.press("2").await;
    call.press("4").await;
    assert!(call.says().contains("already been in touch"));
    call.press("1").await;
    assert_eq!(pair(call.dialled()), expect(OOM));
    call.connects("oom").await;
    assert_eq!(call.ticket_categories().await, ["Follow-Up"]);
}

#[tokio::test]
async fn an_escalated_guest_not_yet_in_touch_gets_an_oom_ticket_and_oom() {
    let app = spawn_app().await;
    let mut call = app.call(STORE).await;
    call.press("2").await;
    call.press("4").await;
    call.press("2").await;
    assert_eq!(pair(call.dialled()), expect(OOM));
    call.connects("oom").await;
    assert_eq!(call.ticket_categories().await, ["OOM"]);
}

#[tokio::test]
async fn a_court_summons_logs_a_follow_up_notifies_legal_and_takes_a_voicemail() {
    let app = spawn_app().await;
    let mut call = app.call(STORE).await;
    call.press("7").await;
    call.press("1").await;
    assert!(call.twiml.first("Record").is_some(), "{}", call.xml);
    let rec = call.record().await;
    assert_eq!(rec["tickets"][0]["category"], "Follow-Up");
    assert_eq!(rec["tickets"][0]["reason"], "Court summons");
    let number = rec["tickets"][0]["number"].as_str().unwrap().to_string();
    let note = &rec["notifications"][0];
    assert_eq!(note["contact"], "legal");
    assert_eq!(note["address"], "legal@example.com");
    assert_eq!(note["status"], "queued");
    assert_eq!(note["ticket"], number.as_str());
    assert!(note["subject"].as_str().unwrap().contains(&number));
    assert!(note["body"].as_str().unwrap().contains(CALLER));

    call.leave_voicemail("https://api.twilio.com/recordings/RE1")
        .await;
    assert!(call.hung_up());
    let digits: String = number
        .trim_start_matches("GC-")
        .chars()
        .map(|c| format!(" {c}"))
        .collect();
    assert!(
        call.says()
            .contains(&format!("We have logged ticket G C{digits} for you.")),
        "{}",
        call.says()
    );
    let rec = call.record().await;
    assert_eq!(
        rec["tickets"].as_array().unwrap().len(),
        1,
        "the voicemail joins the summons ticket"
    );
    assert_eq!(
        rec["tickets"][0]["recording_url"],
        "https://api.twilio.com/recordings/RE1"
    );
    assert_eq!(
        rec["recording_url"],
        "https://api.twilio.com/recordings/RE1"
    );
    assert_eq!(rec["outcome"], "voicemail");
}

#[tokio::test]
async fn another_legal_matter_logs_a_follow_up_notifies_the_manager_and_escalates() {
    let app = spawn_app().await;
    let mut call = app.call(STORE).await;
    call.press("7").await;
    call.press("2").await;
    assert_eq!(pair(call.dialled()), expect(ESCALATION));
    call.connects("escalation").await;
    let rec = call.record().await;
    assert_eq!(rec["tickets"][0]["category"], "Follow-Up");
    assert!(rec["tickets"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("agency"));
    let number = rec["tickets"][0]["number"].as_str().unwrap();
    let note = &rec["notifications"][0];
    assert_eq!(note["address"], "guest-care-manager@example.com");
    assert!(
        note["body"].as_str().unwrap().contains(number),
        "the e-mail carries the ticket number"
    );
}
