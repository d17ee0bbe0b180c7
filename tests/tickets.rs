//! Tickets that can be worked: opened by number, resolved, reopened, assigned and noted
//! with an audit trail; due by the service level of their category, counted in business
//! hours; overdue ones e-mailed to the manager once, by one sweep even on two instances;
//! repeat callers linked to their open ticket; found by caller number.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

/// Store line, delivered, new concern, order: a ticket Initial and a transfer to OOM.
async fn order_call<'a>(app: &'a TestApp, from: &str) -> Call<'a> {
    let mut call = app.call_from(STORE, from).await;
    for key in ["1", "2", "1"] {
        call.press(key).await;
    }
    assert_eq!(call.dialled(), expect(OOM), "{}", call.xml);
    call
}

async fn patch(app: &TestApp, number: &str, body: Value) -> (u16, Value) {
    app.api_call(Method::PATCH, &format!("/api/tickets/{number}"), Some(body))
        .await
}

#[tokio::test]
async fn a_ticket_is_opened_by_number_assigned_noted_resolved_and_reopened_with_a_trail() {
    let app = spawn_app().await;
    let call = order_call(&app, &another_caller()).await;
    let number = call.record().await["tickets"][0]["number"]
        .as_str()
        .expect("ticket")
        .to_string();

    let t = app.api(&format!("/api/tickets/{number}")).await;
    assert_eq!(t["number"], number);
    assert_eq!(t["status"], "open");
    assert_eq!(t["category"], "Initial");
    assert_eq!(t["node"], "store.order_ticket");
    assert_eq!(t["calls"][0]["call_sid"], call.sid);
    assert_eq!(t["calls"][0]["relation"], "opened");
    assert_eq!(t["events"], json!([]));

    let (s, t) = patch(
        &app,
        &number,
        json!({"by": "Dana", "assignee": "Sam", "note": "Called the guest, no answer."}),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["assignee"], "Sam");
    let (s, err) = patch(&app, &number, json!({"by": "Dana", "status": "resolved"})).await;
    assert_eq!(s, 400);
    assert!(
        err["error"].as_str().unwrap_or("").contains("resolution"),
        "{err}"
    );
    let (s, err) = patch(
        &app,
        &number,
        json!({"status": "resolved", "resolution": "x"}),
    )
    .await;
    assert_eq!(s, 400, "who is required");
    assert!(
        err["error"].as_str().unwrap_or("").contains("`by`"),
        "{err}"
    );
    let (s, err) = patch(&app, &number, json!({"by": "Dana", "status": "escalated"})).await;
    assert_eq!(s, 400, "{err}");
    let (s, err) = patch(&app, &number, json!({"by": "Dana"})).await;
    assert_eq!(s, 400, "nothing to change: {err}");
    let (s, err) = patch(&app, &number, json!({"by": "Dana", "colour": "red"})).await;
    assert_eq!(s, 400, "unknown field: {err}");

    app.clock.set(monday_morning() + chrono::Duration::hours(2));
    let (s, t) = patch(
        &app,
        &number,
        json!({"by": "Sam", "status": "resolved", "resolution": "Delivery rebooked for Friday."}),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["status"], "resolved");
    assert_eq!(t["resolution"], "Delivery rebooked for Friday.");
    assert!(t["resolved_at"].is_string());
    let (s, t) = patch(&app, &number, json!({"by": "Dana", "status": "open", "note": "Guest called: not rebooked.", "assignee": null})).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["status"], "open");
    assert_eq!(t["resolved_at"], Value::Null);
    assert_eq!(t["assignee"], Value::Null);

    let events: Vec<(String, String, String)> = t["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            assert!(e["at"].is_string());
            (
                e["by"].as_str().unwrap_or("").to_string(),
                e["action"].as_str().unwrap_or("").to_string(),
                e["detail"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("Dana", "assignee", "(nobody) -> Sam"),
        ("Dana", "note", "Called the guest, no answer."),
        (
            "Sam",
            "status",
            "open -> resolved: Delivery rebooked for Friday.",
        ),
        ("Dana", "status", "resolved -> open"),
        ("Dana", "assignee", "Sam -> (nobody)"),
        ("Dana", "note", "Guest called: not rebooked."),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(events, expected);
    let listed = app.api("/api/tickets?status=open").await;
    assert_eq!(listed["tickets"][0]["number"], number);

    app.api_refused("/api/tickets/GC-999999", 404, "ticket")
        .await;
    let (s, _) = patch(&app, "GC-999999", json!({"by": "Dana", "note": "x"})).await;
    assert_eq!(s, 404);
    app.api_refused("/api/tickets/banana", 400, "expected GC-000123")
        .await;
    report(format!(
        "ticket {number}: assigned, noted, resolved, reopened; 6 trail entries"
    ));
}

#[tokio::test]
async fn calls_and_tickets_are_found_by_the_whole_caller_number_or_its_last_four_digits() {
    let app = spawn_app().await;
    order_call(&app, "+12045550111").await;
    order_call(&app, "+12045550222").await;
    let mut other = app.call_from(STORE, "+13065550222").await;
    other.press("2").await;
    other.press("1").await;

    let calls = |v: Value| v["calls"].as_array().map(Vec::len).unwrap_or(0);
    let tickets = |v: Value| v["tickets"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(calls(app.api("/api/calls?caller=0222").await), 2);
    assert_eq!(calls(app.api("/api/calls?caller=%2B12045550222").await), 1);
    assert_eq!(calls(app.api("/api/calls?caller=204-555-0222").await), 1);
    assert_eq!(calls(app.api("/api/calls?caller=0111").await), 1);
    assert_eq!(tickets(app.api("/api/tickets?caller=0222").await), 2);
    assert_eq!(
        tickets(app.api("/api/tickets?caller=(306)%20555-0222").await),
        1
    );
    assert_eq!(tickets(app.api("/api/tickets?caller=9999").await), 0);
    app.api_refused("/api/calls?caller=55", 400, "last 4 digits")
        .await;
}

#[tokio::test]
async fn tickets_are_due_in_business_hours_and_the_caller_hears_when_to_expect_a_call_back() {
    // Sunday 10:00 in Winnipeg, closed: the voicemail's Follow-Up ticket is due after 8
    // business hours, Monday 08:00 to 16:00.
    let app = spawn_at(sunday_morning()).await;
    let mut call = app.call_from(GUEST_CARE, &another_caller()).await;
    call.press("2").await;
    assert!(call.twiml.first("Record").is_some(), "{}", call.xml);
    call.leave_voicemail("https://api.twilio.com/recordings/RE5")
        .await;
    let said = call.says();
    assert!(
        said.contains(
            "A Guest Care agent will call you back by 4:00 PM on Monday, November 23rd, 2026."
        ),
        "{said}"
    );
    let t = &call.record().await["tickets"][0];
    assert_eq!(t["category"], "Follow-Up");
    assert_eq!(t["due_at"], "2026-11-23T22:00:00Z", "16:00 Winnipeg");

    // A store path's ticket Initial (16 business hours: Monday 8-20, Tuesday 8-12), opened
    // before the transfer met closed hours; the voicemail keeps the call's ticket.
    let mut call = app.call_from(STORE, &another_caller()).await;
    for key in ["1", "2", "1"] {
        call.press(key).await;
    }
    call.leave_voicemail("https://api.twilio.com/recordings/RE6")
        .await;
    assert!(
        call.says()
            .contains("call you back by 12:00 PM on Tuesday, November 24th, 2026."),
        "{}",
        call.says()
    );
    let record = call.record().await;
    let tickets = record["tickets"].as_array().expect("tickets");
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    assert_eq!(tickets[0]["category"], "Initial");
    assert_eq!(tickets[0]["due_at"], "2026-11-24T18:00:00Z");

    // Open on Monday 10:00: a Follow-Up ticket (escalation, 8 business hours) is due at 18:00.
    let app = spawn_app().await;
    let mut call = app.call_from(STORE, &another_caller()).await;
    call.press("1").await;
    call.press("1").await;
    let t = &call.record().await["tickets"][0];
    assert_eq!(t["category"], "Follow-Up");
    assert_eq!(
        t["due_at"], "2026-11-24T00:00:00Z",
        "18:00 Winnipeg is midnight UTC"
    );
}

async fn sweep(app: &TestApp) -> u64 {
    let state = app.state.as_ref().expect("in-process");
    ivr::sla::sweep(
        state.work.as_ref(),
        &state.config.sla,
        &state.config.contacts,
        app.clock.now(),
    )
    .await
    .expect("sweep")
}

#[tokio::test]
async fn an_overdue_follow_up_ticket_is_emailed_to_the_manager_once() {
    let app = spawn_app().await;
    // Follow-Up (escalation, due 18:00), Initial (order, due Tuesday 12:00), a resolved
    // Follow-Up.
    let mut escalated = app.call_from(STORE, &another_caller()).await;
    escalated.press("1").await;
    escalated.press("1").await;
    let follow_up = escalated.record().await["tickets"][0]["number"].clone();
    order_call(&app, &another_caller()).await;
    let mut resolved = app.call_from(STORE, &another_caller()).await;
    resolved.press("1").await;
    resolved.press("1").await;
    let done = resolved.record().await["tickets"][0]["number"].clone();
    let (s, _) = patch(
        &app,
        done.as_str().unwrap_or(""),
        json!({"by": "Sam", "status": "resolved", "resolution": "Sorted on the phone."}),
    )
    .await;
    assert_eq!(s, 200);

    assert_eq!(sweep(&app).await, 0, "nothing due yet");
    app.clock.set(monday_morning() + chrono::Duration::hours(9));
    assert_eq!(sweep(&app).await, 1, "the Follow-Up ticket is overdue");
    assert_eq!(sweep(&app).await, 0, "once");
    app.clock
        .set(monday_morning() + chrono::Duration::hours(60));
    assert_eq!(sweep(&app).await, 0, "Initial tickets are not e-mailed");

    let queued = app.api("/api/notifications").await;
    let overdue: Vec<&Value> = queued["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .filter(|n| n["subject"].as_str().unwrap_or("").starts_with("Overdue"))
        .collect();
    assert_eq!(overdue.len(), 1);
    let n = overdue[0];
    assert_eq!(n["contact"], "guest_care_manager");
    assert_eq!(n["address"], "guest-care-manager@example.com");
    assert_eq!(n["ticket"], follow_up);
    let number = follow_up.as_str().unwrap_or("");
    assert!(n["subject"].as_str().unwrap_or("").contains(number), "{n}");
    assert!(
        n["body"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("Ticket {number}")),
        "{n}"
    );
    let t = app.api(&format!("/api/tickets/{number}")).await;
    assert_eq!(t["overdue"], true);
    assert_eq!(t["notifications"][0]["subject"], n["subject"]);
}

#[tokio::test]
async fn a_home_service_perks_ticket_past_24_hours_is_emailed_to_the_manager() {
    let app = spawn_app().await;
    let mut call = app.call_from(GUEST_CARE, &another_caller()).await;
    for key in ["3", "3"] {
        call.press(key).await;
    }
    call.press("48151623#").await;
    call.press("1").await;
    let record = call.record().await;
    let t = &record["tickets"][0];
    assert_eq!(t["category"], "Shopping Dollars", "{record}");
    app.clock
        .set(monday_morning() + chrono::Duration::hours(23));
    assert_eq!(sweep(&app).await, 0);
    app.clock
        .set(monday_morning() + chrono::Duration::hours(25));
    assert_eq!(sweep(&app).await, 1);
    let n = app.api("/api/notifications").await["notifications"][0].clone();
    assert_eq!(n["contact"], "guest_care_manager");
    assert_eq!(n["ticket"], t["number"]);
}

#[tokio::test]
async fn two_instances_sweeping_at_once_send_one_email_per_ticket() {
    let app = spawn_app().await;
    for _ in 0..20 {
        let mut c = app.call_from(STORE, &another_caller()).await;
        c.press("1").await;
        c.press("1").await;
    }
    let url = app.db.url.clone();
    let state = app.state.as_ref().expect("in-process");
    let mut sweeps = Vec::new();
    for _ in 0..2 {
        let backend = ivr::storage::open(&url, ivr::config::SqliteSync::Normal)
            .await
            .expect("a second connection to the database");
        let (sla, contacts) = (state.config.sla.clone(), state.config.contacts.clone());
        let at = monday_morning() + chrono::Duration::hours(9);
        sweeps.push(tokio::spawn(async move {
            let mut n = 0;
            for _ in 0..5 {
                n += ivr::sla::sweep(backend.work.as_ref(), &sla, &contacts, at)
                    .await
                    .expect("sweep");
            }
            n
        }));
    }
    let mut total = 0;
    for s in sweeps {
        total += s.await.expect("sweep task");
    }
    assert_eq!(total, 20, "20 overdue tickets, 20 e-mails between the two");
    let listed = app.api("/api/notifications?limit=200").await;
    let mut tickets: Vec<String> = listed["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .map(|n| n["ticket"].as_str().unwrap_or("").to_string())
        .collect();
    tickets.sort();
    tickets.dedup();
    assert_eq!(tickets.len(), 20, "one per ticket");
    report("overdue sweep: two instances at once, 20 overdue tickets -> 20 e-mails, none twice");
}

#[tokio::test]
async fn a_repeat_caller_is_linked_to_their_open_ticket_instead_of_a_duplicate() {
    let app = spawn_app().await;
    let first = order_call(&app, "+12045550333").await;
    let number = first.record().await["tickets"][0]["number"].clone();
    let second = order_call(&app, "+12045550333").await;
    let record = second.record().await;
    let tickets = record["tickets"].as_array().expect("tickets");
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    assert_eq!(tickets[0]["number"], number);
    assert_eq!(
        tickets[0]["relation"], "repeat",
        "the agent sees a repeat caller"
    );
    let steps: Vec<&str> = record["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["result"].as_str())
        .collect();
    assert!(
        steps.contains(
            &format!(
                "repeat caller: linked to open ticket {}",
                number.as_str().unwrap_or("")
            )
            .as_str()
        ),
        "{steps:?}"
    );
    let t = app
        .api(&format!("/api/tickets/{}", number.as_str().unwrap_or("")))
        .await;
    let relations: Vec<&str> = t["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .filter_map(|c| c["relation"].as_str())
        .collect();
    assert_eq!(relations, ["opened", "repeat"]);
    let all = app.api("/api/tickets?caller=0333").await;
    assert_eq!(
        all["tickets"].as_array().map(Vec::len),
        Some(1),
        "no duplicate"
    );

    // Another path, or the same one once the ticket is resolved: a new ticket.
    let mut service = app.call_from(STORE, "+12045550333").await;
    for key in ["1", "2", "2"] {
        service.press(key).await;
    }
    assert_eq!(service.record().await["tickets"][0]["relation"], "opened");
    let (s, _) = patch(
        &app,
        number.as_str().unwrap_or(""),
        json!({"by": "Sam", "status": "resolved", "resolution": "Done."}),
    )
    .await;
    assert_eq!(s, 200);
    let third = order_call(&app, "+12045550333").await;
    let t3 = &third.record().await["tickets"][0];
    assert_eq!(t3["relation"], "opened");
    assert_ne!(t3["number"], number);
}

#[tokio::test]
async fn the_error_route_keeps_the_calls_ticket_and_its_voicemail() {
    let app = spawn_app().await;
    let mut call = order_call(&app, &another_caller()).await;
    let number = call.record().await["tickets"][0]["number"].clone();
    // Guest Care closes while the transfer rings; the transfer's outcome then comes back
    // to a node that does not exist: the error route, closed, takes a voicemail.
    app.clock.set(sunday_morning());
    call.post(
        "/voice/dial?node=store.no_such_node&attempt=1&seq=9",
        &[("DialCallStatus", "no-answer")],
    )
    .await;
    assert!(call.twiml.first("Record").is_some(), "{}", call.xml);
    call.leave_voicemail("https://api.twilio.com/recordings/RE9")
        .await;
    let record = call.record().await;
    let tickets = record["tickets"].as_array().expect("tickets");
    assert_eq!(tickets.len(), 1, "no second ticket: {tickets:?}");
    assert_eq!(tickets[0]["number"], number);
    assert_eq!(
        tickets[0]["recording_url"],
        "https://api.twilio.com/recordings/RE9"
    );
    assert_eq!(record["error_count"], 1);
}

#[tokio::test]
async fn a_caller_who_hangs_up_in_the_escalation_queue_is_abandoned_with_a_follow_up_ticket() {
    let app = spawn_app().await;
    let mut call = app.call_from(GUEST_CARE, &another_caller()).await;
    call.press("5").await;
    assert!(call.twiml.first("Enqueue").is_some(), "{}", call.xml);
    call.queue_ends("hangup").await;
    let record = call.record().await;
    assert_eq!(record["outcome"], "abandoned_in_queue");
    let tickets = record["tickets"].as_array().expect("tickets");
    assert_eq!(tickets.len(), 1);
    assert_eq!(tickets[0]["category"], "Follow-Up");
    assert!(tickets[0]["reason"]
        .as_str()
        .unwrap_or("")
        .contains("escalation queue"));
    call.completes(80).await;
    assert_eq!(call.record().await["outcome"], "abandoned_in_queue");
}

#[tokio::test]
async fn date_filters_are_days_in_guest_care_time() {
    // 00:30 on 23 November in Winnipeg is 06:30 UTC; 20:00 on the 22nd is 02:00 UTC on the 23rd.
    let app = spawn_at(winnipeg(2026, 11, 23, 0, 30)).await;
    let early = app.call_from(STORE, &another_caller()).await;
    app.clock.set(winnipeg(2026, 11, 22, 20, 0));
    let late = app.call_from(STORE, &another_caller()).await;
    let sids = |v: Value| -> Vec<String> {
        v["calls"]
            .as_array()
            .expect("calls")
            .iter()
            .map(|c| c["call_sid"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(
        sids(app.api("/api/calls?since=2026-11-23").await),
        std::slice::from_ref(&early.sid)
    );
    assert_eq!(
        sids(app.api("/api/calls?until=2026-11-23").await),
        std::slice::from_ref(&late.sid)
    );
    app.api_refused(
        "/api/calls?since=23/11/2026",
        400,
        "Guest Care time, America/Winnipeg",
    )
    .await;
}

#[tokio::test]
async fn unknown_api_paths_answer_404_with_the_json_error() {
    let app = spawn_app().await;
    for path in ["/api/nope", "/api/", "/api/calls/CA1/steps", "/api"] {
        let (s, body) = app.api_call(Method::GET, path, None).await;
        assert_eq!(s, 404, "{path}");
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    let res = app
        .http
        .get(format!("{}/api/nope", app.addr))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 401, "the token is asked first");
}
