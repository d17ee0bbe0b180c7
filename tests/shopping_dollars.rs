//! Option 3 of the 1-800 line: warranty shopping dollars. Every path over HTTP, signed,
//! with a controllable clock: day boundaries, invalid dates, re-entry, silence, the
//! rewards site, and Home Service Perks tickets across separate calls.

mod common;

use chrono::{Duration, NaiveDate};
use common::*;
use serde_json::Value;

/// Monday 23 November 2026, 10:00 in Winnipeg.
fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
}

/// The keypad form of a date: MMDDYYYY.
fn keys(d: NaiveDate) -> String {
    d.format("%m%d%Y").to_string()
}

fn days_ago(n: i64) -> NaiveDate {
    today() - Duration::days(n)
}

/// A 1-800 call at the shopping-dollars date prompt.
async fn at_date_prompt(app: &TestApp) -> Call<'_> {
    let mut call = app.call(GUEST_CARE).await;
    call.press("3").await;
    call.press("1").await;
    assert!(
        call.says().contains("enter 0 3 0 5 2 0 2 6"),
        "the prompt gives an example: {}",
        call.says()
    );
    let gather = call.twiml.first("Gather").unwrap();
    assert_eq!(gather.attr("numDigits"), "8");
    assert_eq!(gather.attr("finishOnKey"), "#");
    call
}

/// Enters a purchase date, confirms it, answers the payment question.
async fn answer(app: &TestApp, purchased: NaiveDate, paid: bool) -> Call<'_> {
    let mut call = at_date_prompt(app).await;
    call.press(&keys(purchased)).await;
    assert!(call.says().starts_with("You entered"), "{}", call.says());
    call.press("1").await;
    assert!(call.says().contains("first warranty payment"));
    call.press(if paid { "1" } else { "2" }).await;
    call
}

/// The data the shopping-dollars rule recorded on its step.
async fn rule_data(call: &Call<'_>) -> Value {
    let rec = call.record().await;
    rec["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "shopping_dollars")
        .map(|s| s["data"].clone())
        .expect("a shopping_dollars step")
}

#[tokio::test]
async fn the_date_is_read_back_in_words() {
    let app = spawn_at(monday_morning()).await;
    let mut call = at_date_prompt(&app).await;
    call.press("03052026").await;
    assert!(
        call.says().starts_with(
            "You entered March 5th, 2026. If that is correct, press 1. To enter it again, press 2."
        ),
        "{}",
        call.says()
    );
}

#[tokio::test]
async fn day_30_is_within_the_review_period_and_opens_no_ticket() {
    let app = spawn_at(monday_morning()).await;
    let call = answer(&app, days_ago(30), true).await;
    let says = call.says();
    assert!(says.contains("still in its 30-day review period"), "{says}");
    assert!(says.contains("the week after the review period"), "{says}");
    assert!(call.hung_up());
    let data = rule_data(&call).await;
    assert_eq!(data["days"], "30");
    assert_eq!(data["paid"], "yes");
    assert_eq!(data["purchase_date"], days_ago(30).to_string());
    let rec = call.record().await;
    assert!(rec["tickets"].as_array().unwrap().is_empty());
    assert_eq!(rec["outcome"], "self_service");
}

#[tokio::test]
async fn day_31_unpaid_waits_for_the_first_payment() {
    let app = spawn_at(monday_morning()).await;
    let call = answer(&app, days_ago(31), false).await;
    assert!(call
        .says()
        .contains("released once your first warranty payment"));
    let data = rule_data(&call).await;
    assert_eq!(data["days"], "31");
    assert_eq!(data["paid"], "no");
    assert_eq!(data["decision"], "awaiting first payment");
    assert!(call.ticket_categories().await.is_empty());
}

#[tokio::test]
async fn days_31_and_37_paid_are_within_the_grace_week() {
    let app = spawn_at(monday_morning()).await;
    for days in [31, 37] {
        let call = answer(&app, days_ago(days), true).await;
        let says = call.says();
        assert!(
            says.contains("within a week after your 30-day review period"),
            "{days}: {says}"
        );
        assert!(says.contains("call us back"), "{says}");
        assert_eq!(rule_data(&call).await["days"], days.to_string());
        assert!(call.ticket_categories().await.is_empty(), "{days}");
    }
}

#[tokio::test]
async fn day_38_paid_takes_details_confirms_the_callback_and_opens_a_ticket() {
    let app = spawn_at(monday_morning()).await;
    let mut call = answer(&app, days_ago(38), true).await;
    assert!(call.says().contains("We apologize for the delay"));
    let record = call
        .twiml
        .first("Record")
        .expect("a recording of name and e-mail");
    assert_eq!(record.attr("maxLength"), "60");
    assert!(call
        .says()
        .contains("first and last name and your e-mail address"));
    assert!(
        call.ticket_categories().await.is_empty(),
        "no ticket before the details"
    );

    call.leave_voicemail("https://api.twilio.com/recordings/RE38")
        .await;
    // The caller ID, masked to its last four digits.
    let says = call.says();
    assert!(says.contains("the number ending in 1 2 3 4"), "{says}");
    assert!(!says.contains("2 0 4"), "only the last four digits: {says}");
    call.press("1").await;

    assert!(call.hung_up());
    let says = call.says();
    assert!(says.contains("We have logged ticket G C"), "{says}");
    assert!(says.contains("product team"), "{says}");
    let rec = call.record().await;
    let tickets = rec["tickets"].as_array().unwrap();
    assert_eq!(tickets.len(), 1);
    let t = &tickets[0];
    assert_eq!(t["category"], "Shopping Dollars");
    let reason = t["reason"].as_str().unwrap();
    let purchased = days_ago(38).to_string();
    for part in [
        "Overdue shopping dollars",
        purchased.as_str(),
        "38 days",
        CALLER,
        "https://api.twilio.com/recordings/RE38",
    ] {
        assert!(reason.contains(part), "{part:?} in {reason}");
    }
    assert_eq!(t["recording_url"], "https://api.twilio.com/recordings/RE38");
    let note = &rec["notifications"][0];
    assert_eq!(note["contact"], "product_team");
    assert_eq!(note["address"], "product-team@example.com");
    assert_eq!(note["ticket"], t["number"]);
    let body = note["body"].as_str().unwrap();
    for part in [
        t["number"].as_str().unwrap(),
        purchased.as_str(),
        "Days since purchase: 38",
        "Callback number: +12045551234",
        "https://api.twilio.com/recordings/RE38",
    ] {
        assert!(body.contains(part), "{part:?} in {body}");
    }
    let callback = rec["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["node"] == "shopping_dollars.callback" && s["result"] == "confirmed")
        .expect("the confirmed callback number");
    assert_eq!(callback["data"]["callback"], CALLER);
}

#[tokio::test]
async fn a_guest_can_give_another_callback_number() {
    let app = spawn_at(monday_morning()).await;
    let mut call = answer(&app, days_ago(60), true).await;
    call.leave_voicemail("https://api.twilio.com/recordings/RE60")
        .await;
    call.press("2").await;
    assert!(call.says().contains("10-digit phone number"));
    call.press("20455").await;
    assert!(call.says().contains("needs 10 digits"), "{}", call.says());
    call.press("2045550199").await;
    assert!(
        call.says().contains("You entered 2 0 4, 5 5 5, 0 1 9 9."),
        "{}",
        call.says()
    );
    call.press("1").await;
    let rec = call.record().await;
    let reason = rec["tickets"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("Call back at +12045550199"), "{reason}");
}

#[tokio::test]
async fn a_purchase_on_29_february_is_a_real_date() {
    let app = spawn_at(monday_morning()).await;
    let mut call = at_date_prompt(&app).await;
    call.press("02292024").await;
    assert!(
        call.says().contains("February 29th, 2024"),
        "{}",
        call.says()
    );
    call.press("1").await;
    call.press("2").await;
    let data = rule_data(&call).await;
    assert_eq!(data["purchase_date"], "2024-02-29");
    assert_eq!(
        data["days"],
        (today() - NaiveDate::from_ymd_opt(2024, 2, 29).unwrap())
            .num_days()
            .to_string()
    );
}

#[tokio::test]
async fn every_invalid_date_is_explained_and_asked_again() {
    let app = spawn_at(monday_morning()).await;
    let future = keys(today() + Duration::days(1));
    let too_old = keys(NaiveDate::from_ymd_opt(2021, 11, 22).unwrap());
    let cases = [
        ("02302026", "not a real date"),
        ("13012026", "not a real date"),
        ("00000000", "not a real date"),
        ("0305202", "needs 8 digits"),
        (future.as_str(), "in the future"),
        (too_old.as_str(), "more than 5 years ago"),
    ];
    for (entered, why) in cases {
        let mut call = at_date_prompt(&app).await;
        call.press(entered).await;
        let says = call.says();
        assert!(says.contains(why), "{entered}: {says}");
        assert!(
            says.contains("Please enter the date"),
            "asked again: {says}"
        );
        let rec = call.record().await;
        let last = rec["steps"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["digits"], entered);
        assert!(
            last["result"].as_str().unwrap().starts_with("refused"),
            "{last}"
        );
    }
    // Exactly five years back is still accepted.
    let mut call = at_date_prompt(&app).await;
    call.press(&keys(NaiveDate::from_ymd_opt(2021, 11, 23).unwrap()))
        .await;
    assert!(
        call.says().contains("November 23rd, 2021"),
        "{}",
        call.says()
    );
}

#[tokio::test]
async fn three_invalid_dates_end_in_the_fallback_oom_when_open() {
    let app = spawn_at(monday_morning()).await;
    let mut call = at_date_prompt(&app).await;
    call.press("02302026").await;
    call.press("99999999").await;
    call.press("1234").await;
    assert_eq!(call.dialled(), expect(OOM));
    call.connects("oom").await;
}

#[tokio::test]
async fn three_invalid_dates_end_in_voicemail_and_an_initial_ticket_when_closed() {
    let app = spawn_at(sunday_morning()).await;
    let mut call = app.call(GUEST_CARE).await;
    call.press("3").await;
    call.press("1").await;
    for _ in 0..3 {
        call.press("00000000").await;
    }
    assert!(call.says().contains("Guest Care is closed"));
    call.leave_voicemail("https://api.twilio.com/recordings/RE3")
        .await;
    assert_eq!(call.ticket_categories().await, ["Initial"]);
    assert_eq!(call.record().await["outcome"], "voicemail");
}

#[tokio::test]
async fn pressing_2_enters_the_date_again_and_the_new_date_counts() {
    let app = spawn_at(monday_morning()).await;
    let mut call = at_date_prompt(&app).await;
    call.press(&keys(days_ago(10))).await;
    call.press("2").await;
    assert!(
        call.says().starts_with("Please enter the date"),
        "{}",
        call.says()
    );
    call.press(&keys(days_ago(45))).await;
    call.press("1").await;
    call.press("1").await;
    assert!(call.says().contains("We apologize for the delay"));
    assert_eq!(rule_data(&call).await["days"], "45");
}

/// Issue 21: the read-back's `value=` is signed, but a crafted one (a date in the future,
/// not a date at all) is refused as a keyed one would be: the caller is asked again and
/// nothing is stored.
#[tokio::test]
async fn a_crafted_read_back_value_is_refused_and_the_date_asked_again() {
    let app = spawn_at(monday_morning()).await;
    for crafted in ["2099-01-01", "2026-02-30", "banana"] {
        let mut call = at_date_prompt(&app).await;
        call.press(&keys(days_ago(10))).await;
        let action = call.gather_action();
        let genuine = days_ago(10).format("%Y-%m-%d").to_string();
        assert!(action.contains(&format!("value={genuine}")), "{action}");
        let forged = action.replace(&format!("value={genuine}"), &format!("value={crafted}"));
        call.post(&forged, &[("Digits", "1")]).await;
        assert!(
            call.says().starts_with("Please enter the date"),
            "{crafted}: {}",
            call.says()
        );
        let rec = call.record().await;
        let steps = rec["steps"].as_array().unwrap();
        let last = steps.last().unwrap();
        assert_eq!(last["result"], "read-back value not valid: asked again");
        assert!(
            steps.iter().all(|s| s["result"] != "confirmed"),
            "{crafted}: nothing confirmed"
        );
    }
}

#[tokio::test]
async fn a_caller_who_never_presses_anything_reaches_guest_care() {
    let app = spawn_at(monday_morning()).await;
    // Silent at the shopping-dollars menu.
    let mut call = app.call(GUEST_CARE).await;
    call.press("3").await;
    for _ in 0..3 {
        call.silence().await;
    }
    assert_eq!(call.dialled(), expect(OOM));
    // Silent at the date prompt.
    let mut call = at_date_prompt(&app).await;
    call.silence().await;
    assert!(call.says().contains("did not receive a date"));
    call.silence().await;
    call.silence().await;
    assert_eq!(call.dialled(), expect(OOM));
    let rec = call.record().await;
    assert!(rec["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["result"] == "refused: no input (attempt 3 of 3): fallback"));
}

#[tokio::test]
async fn the_rewards_site_is_self_service_with_repeat() {
    let app = spawn_at(monday_morning()).await;
    let mut call = app.call(GUEST_CARE).await;
    call.press("3").await;
    call.press("2").await;
    let says = call.says();
    for part in [
        "run by Home Service Perks",
        "all customer service for shopping dollars",
        "rewards dot example dot com",
        "online support form",
        "first and last name",
    ] {
        assert!(says.contains(part), "{part:?} in {says}");
    }
    call.press("*").await;
    assert_eq!(call.says(), says, "star repeats");
    call.silence().await;
    assert!(call.hung_up());
    assert!(call.says().contains("Goodbye"));
    let rec = call.record().await;
    assert_eq!(rec["outcome"], "self_service");
    assert!(rec["tickets"].as_array().unwrap().is_empty());
}

/// A 1-800 call that enters a Home Service Perks ticket number and confirms it.
async fn hsp_call<'a>(app: &'a TestApp, number: &str) -> Call<'a> {
    let mut call = app.call(GUEST_CARE).await;
    call.press("3").await;
    call.press("3").await;
    assert!(call
        .says()
        .contains("Home Service Perks ticket number, then press pound"));
    call.press(&format!("{number}#")).await;
    let spaced: Vec<String> = number.chars().map(String::from).collect();
    assert!(
        call.says()
            .contains(&format!("You entered {}.", spaced.join(" "))),
        "{}",
        call.says()
    );
    call.press("1").await;
    call
}

async fn tickets(app: &TestApp, query: &str) -> Vec<Value> {
    app.api(&format!("/api/tickets?{query}")).await["tickets"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn home_service_perks_new_then_pending_then_overdue_across_calls() {
    let app = spawn_at(monday_morning()).await;

    // First call: no ticket for 123456 yet.
    let first = hsp_call(&app, "123456").await;
    let says = first.says();
    assert!(says.contains("within 24 hours"), "{says}");
    assert!(
        says.contains("by this time tomorrow, please call us back"),
        "{says}"
    );
    assert!(first.hung_up());
    let rec = first.record().await;
    let t = rec["tickets"][0].clone();
    let number = t["number"].as_str().unwrap().to_string();
    assert_eq!(t["category"], "Shopping Dollars");
    assert_eq!(t["external_ref"], "123456");
    assert_eq!(t["status"], "open");
    assert_eq!(
        t["due_at"], "2026-11-24T16:00:00Z",
        "24 hours after 10:00 Winnipeg"
    );
    assert_eq!(t["overdue"], false);
    assert!(t["reason"]
        .as_str()
        .unwrap()
        .contains("No response from Home Service Perks"));
    assert_eq!(rec["notifications"][0]["contact"], "product_team");
    assert!(rec["notifications"][0]["body"]
        .as_str()
        .unwrap()
        .contains("123456"));

    // Two hours later: the same number, not yet due.
    app.clock.set(monday_morning() + Duration::hours(2));
    let second = hsp_call(&app, "123456").await;
    let says = second.says();
    assert!(says.contains("logged on November 23rd, 2026"), "{says}");
    assert!(
        says.contains("due to be answered by 10:00 AM on November 24th, 2026"),
        "{says}"
    );
    let digits: String = number
        .trim_start_matches("GC-")
        .chars()
        .map(|c| format!(" {c}"))
        .collect();
    assert!(says.contains(&format!("our ticket G C{digits}")), "{says}");
    let rec = second.record().await;
    let linked = rec["tickets"].as_array().unwrap();
    assert_eq!(linked.len(), 1, "linked, not a new ticket");
    assert_eq!(linked[0]["number"], number.as_str());
    assert_eq!(linked[0]["relation"], "linked");
    assert!(rec["notifications"].as_array().unwrap().is_empty());
    assert_eq!(tickets(&app, "category=Shopping%20Dollars").await.len(), 1);

    // A day and an hour later: overdue, so it is escalated.
    app.clock.set(monday_morning() + Duration::hours(25));
    assert_eq!(tickets(&app, "overdue=true").await.len(), 1);
    let third = hsp_call(&app, "123456").await;
    assert!(
        third.says().contains("We have escalated ticket G C"),
        "{}",
        third.says()
    );
    let rec = third.record().await;
    assert_eq!(rec["tickets"][0]["relation"], "escalated");
    assert_eq!(rec["tickets"][0]["status"], "escalated");
    let note = &rec["notifications"][0];
    assert_eq!(note["contact"], "guest_care_manager");
    assert_eq!(note["ticket"], number.as_str());
    for part in [number.as_str(), "123456"] {
        assert!(
            note["subject"].as_str().unwrap().contains(part),
            "{part} in {note}"
        );
        assert!(
            note["body"].as_str().unwrap().contains(part),
            "{part} in {note}"
        );
    }
    let escalated = tickets(&app, "status=escalated&category=Shopping%20Dollars").await;
    assert_eq!(escalated.len(), 1);
    assert!(escalated[0]["escalated_at"].is_string());
    assert_eq!(tickets(&app, "external_ref=123456").await.len(), 1);
    assert!(tickets(&app, "external_ref=999999").await.is_empty());

    // Calling again does not escalate twice.
    let fourth = hsp_call(&app, "123456").await;
    assert!(
        fourth.says().contains("already been escalated"),
        "{}",
        fourth.says()
    );
    assert!(fourth.record().await["notifications"]
        .as_array()
        .unwrap()
        .is_empty());

    // Another number is a new ticket.
    let other = hsp_call(&app, "7777").await;
    assert_eq!(other.ticket_categories().await, ["Shopping Dollars"]);
    assert_eq!(tickets(&app, "category=Shopping%20Dollars").await.len(), 2);
}

#[tokio::test]
async fn a_home_service_perks_number_must_have_4_to_12_digits() {
    let app = spawn_at(monday_morning()).await;
    let mut call = app.call(GUEST_CARE).await;
    call.press("3").await;
    call.press("3").await;
    call.press("123#").await;
    assert!(call.says().contains("4 to 12 digits"), "{}", call.says());
    call.press("1234567890123").await;
    assert!(call.says().contains("4 to 12 digits"), "{}", call.says());
}

#[tokio::test]
async fn the_review_and_grace_days_are_configuration() {
    let app = spawn_with(Options {
        toml: "[shopping_dollars]\nreview_days = 45\ngrace_days = 10\n".into(),
        ..Options::default()
    })
    .await;
    let call = answer(&app, days_ago(40), true).await;
    assert!(
        call.says().contains("45-day review period"),
        "{}",
        call.says()
    );
    let call = answer(&app, days_ago(55), true).await;
    assert!(call.says().contains("within a week"), "{}", call.says());
    let call = answer(&app, days_ago(56), true).await;
    assert!(
        call.says().contains("We apologize for the delay"),
        "{}",
        call.says()
    );
}
