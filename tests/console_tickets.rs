//! The console's ticket queue over HTTP: tabs and due timers, working one ticket (assign,
//! note, resolve, reopen) and bulk actions on the whole filtered set. The records a manager
//! reads through the API show the same changes.

mod common;

use common::console::{add_user, ConsoleClient, Page};
use common::*;
use serde_json::Value;

/// A store line court summons: opens a ticket. Its number.
async fn summons(app: &TestApp, from: &str) -> String {
    let mut call = app.call_from(STORE, from).await;
    call.press("7").await;
    call.press("1").await;
    call.leave_voicemail("https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1")
        .await;
    let record: Value = call.record().await;
    record["tickets"][0]["number"]
        .as_str()
        .expect("a ticket")
        .to_string()
}

/// The ticket numbers listed in a queue page.
fn listed(page: &Page) -> Vec<String> {
    page.body
        .split("<td><a href=\"/console/tickets/")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(str::to_owned)
        .collect()
}

/// A bulk action on the open OOM tickets.
async fn bulk_open_oom(c: &mut ConsoleClient, csrf: &str, action: &[(&str, &str)]) -> Page {
    let mut form = vec![("csrf", csrf), ("tab", "open"), ("category", "OOM")];
    form.extend_from_slice(action);
    c.post("/console/tickets/bulk", &form).await
}

async fn act(c: &mut ConsoleClient, number: &str, form: &[(&str, &str)]) -> Page {
    let csrf = c.get(&format!("/console/tickets/{number}")).await.csrf();
    let mut form = form.to_vec();
    form.push(("csrf", &csrf));
    c.post(&format!("/console/tickets/{number}"), &form).await
}

#[tokio::test]
async fn an_agent_assigns_notes_resolves_and_reopens_a_ticket() {
    let app = spawn_app().await;
    let number = summons(&app, "+12045559876").await;
    let other = summons(&app, "+12045550001").await;
    add_user(&app, "agent.one", "agent").await;
    let mut c = ConsoleClient::signed_in(&app, "agent.one").await;

    let open = c.get("/console/tickets").await;
    assert_eq!(open.status, 200, "{}", open.body);
    assert_eq!(listed(&open), vec![other.clone(), number.clone()]);
    assert!(open.body.contains("aria-current=\"page\">Open</a>"));
    assert!(open.body.contains("due in "), "a due timer: {}", open.body);
    assert!(listed(&c.get("/console/tickets?tab=mine").await).is_empty());

    let page = c.get(&format!("/console/tickets/{number}")).await;
    assert!(page.body.contains(&format!("<h1>Ticket {number}</h1>")));
    assert!(
        page.body.contains("href=\"/console/calls/CA"),
        "links to the call"
    );

    let assigned = act(
        &mut c,
        &number,
        &[("action", "assign"), ("assignee", "agent.one")],
    )
    .await;
    assert_eq!(assigned.status, 303, "{}", assigned.body);
    assert_eq!(
        assigned.header("location"),
        format!("/console/tickets/{number}")
    );
    assert_eq!(
        listed(&c.get("/console/tickets?tab=mine").await),
        vec![number.clone()]
    );

    let noted = act(
        &mut c,
        &number,
        &[("action", "note"), ("note", "Called back, left a message")],
    )
    .await;
    assert_eq!(noted.status, 303);

    // Resolving needs a resolution: said on the page, nothing changed.
    let refused = act(
        &mut c,
        &number,
        &[("action", "resolve"), ("resolution", "  ")],
    )
    .await;
    assert_eq!(refused.status, 400);
    assert!(
        refused
            .body
            .contains("resolution must be 1 to 2000 characters"),
        "{}",
        refused.body
    );
    assert!(refused.body.contains("<dd class=\"status\">open</dd>"));

    let resolved = act(
        &mut c,
        &number,
        &[("action", "resolve"), ("resolution", "Sent to legal")],
    )
    .await;
    assert_eq!(resolved.status, 303);
    let page = c.get(&format!("/console/tickets/{number}")).await;
    assert!(
        page.body
            .contains("<dd class=\"status\">resolved: Sent to legal</dd>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Called back, left a message"));
    assert_eq!(
        listed(&c.get("/console/tickets").await),
        vec![other.clone()]
    );
    assert_eq!(
        listed(&c.get("/console/tickets?tab=resolved").await),
        vec![number.clone()]
    );
    assert!(listed(&c.get("/console/tickets?tab=mine").await).is_empty());

    let reopened = act(&mut c, &number, &[("action", "reopen")]).await;
    assert_eq!(reopened.status, 303);

    // The manager API reads the same ticket, its trail by the agent.
    let t = app.api(&format!("/api/tickets/{number}")).await;
    assert_eq!(t["status"], "open");
    assert_eq!(t["assignee"], "agent.one");
    let trail: Vec<(String, String)> = t["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["by"].as_str().unwrap_or("").to_string(),
                e["action"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        trail,
        [("assignee"), ("note"), ("status"), ("status")]
            .iter()
            .map(|a| ("agent.one".to_string(), a.to_string()))
            .collect::<Vec<_>>()
    );

    // A form without its token, an unknown ticket, an unknown action.
    let forged = c
        .post(
            &format!("/console/tickets/{number}"),
            &[("action", "reopen"), ("csrf", "x")],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert_eq!(c.get("/console/tickets/GC-999999").await.status, 404);
    let odd = act(&mut c, &number, &[("action", "explode")]).await;
    assert_eq!(odd.status, 400);
    assert!(odd.body.contains("Choose assign, note, resolve or reopen."));
}

#[tokio::test]
async fn the_overdue_tab_shows_tickets_past_due_with_their_timers() {
    let app = spawn_app().await;
    let number = summons(&app, "+12045559876").await;
    let due = app.api(&format!("/api/tickets/{number}")).await["due_at"]
        .as_str()
        .expect("a due time")
        .to_string();
    add_user(&app, "agent.one", "agent").await;
    let mut c = ConsoleClient::signed_in(&app, "agent.one").await;
    assert!(listed(&c.get("/console/tickets?tab=overdue").await).is_empty());

    let due: chrono::DateTime<chrono::Utc> = due.parse().expect("RFC 3339");
    app.clock.set(due + chrono::Duration::minutes(125));
    let mut c = ConsoleClient::signed_in(&app, "agent.one").await;
    let overdue = c.get("/console/tickets?tab=overdue").await;
    assert_eq!(listed(&overdue), vec![number.clone()]);
    assert!(overdue.body.contains("<tr class=\"overdue\">"));
    assert!(
        overdue.body.contains("overdue by 2 h 5 min"),
        "{}",
        overdue.body
    );
    let page = c.get(&format!("/console/tickets/{number}")).await;
    assert!(page
        .body
        .contains("<dd class=\"due overdue\">overdue by 2 h 5 min</dd>"));
}

#[tokio::test]
async fn bulk_actions_change_every_ticket_of_the_filtered_set_not_only_the_page() {
    let (app, _dir) = spawn_seeded(20_000).await;
    add_user(&app, "mgr", "manager").await;
    add_user(&app, "agent.one", "agent").await;
    let mut c = ConsoleClient::signed_in(&app, "mgr").await;

    let count = |q: &'static str| {
        let app = &app;
        async move {
            let mut n = 0;
            let mut cursor = String::new();
            loop {
                let page = app
                    .api(&format!("/api/tickets?limit=200&{q}{cursor}"))
                    .await;
                n += page["tickets"].as_array().expect("tickets").len();
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = format!("&cursor={next}"),
                    None => return n,
                }
            }
        }
    };
    let open_oom = count("status=open&category=OOM").await;
    let open_all = count("status=open").await;
    assert!(
        open_oom > 50,
        "more than one page: {open_oom} of {open_all}, all {}",
        count("").await
    );

    let queue = c.get("/console/tickets?tab=open&category=OOM").await;
    assert_eq!(listed(&queue).len(), 50);
    let csrf = queue.csrf();
    let done = bulk_open_oom(
        &mut c,
        &csrf,
        &[("action", "assign"), ("assignee", "agent.one")],
    )
    .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let back = c.get(&done.header("location")).await;
    assert!(
        back.body
            .contains(&format!("{open_oom} tickets assigned to agent.one.")),
        "{}",
        back.body
    );
    let mut agent = ConsoleClient::signed_in(&app, "agent.one").await;
    let mine = agent.get("/console/tickets?tab=mine&category=OOM").await;
    assert_eq!(listed(&mine).len(), 50);
    assert!(mine.body.contains("Older tickets"));

    // Resolving the set needs a resolution; then none of it is open, the rest untouched.
    let refused = bulk_open_oom(&mut c, &csrf, &[("action", "resolve")]).await;
    assert_eq!(refused.status, 400);
    assert_eq!(count("status=open&category=OOM").await, open_oom);
    let done = bulk_open_oom(
        &mut c,
        &csrf,
        &[
            ("action", "resolve"),
            ("resolution", "Duplicate of a store ticket"),
        ],
    )
    .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(count("status=open&category=OOM").await, 0);
    assert_eq!(count("status=open").await, open_all - open_oom);
    assert!(listed(&agent.get("/console/tickets?tab=mine").await).is_empty());

    // On the resolved tab the form offers reopening, not resolving; resolving the resolved
    // again changes none of them (their resolutions stay).
    let resolved_tab = c.get("/console/tickets?tab=resolved&category=OOM").await;
    assert!(!resolved_tab.body.contains("<option value=\"resolve\">"));
    assert!(resolved_tab.body.contains("<option value=\"reopen\">"));
    let again = c
        .post(
            "/console/tickets/bulk",
            &[
                ("csrf", &csrf),
                ("tab", "resolved"),
                ("category", "OOM"),
                ("action", "resolve"),
                ("resolution", "Overwritten"),
            ],
        )
        .await;
    let back = c.get(&again.header("location")).await;
    assert!(back.body.contains("0 tickets resolved."), "{}", back.body);

    let audit = c.get("/console/audit").await;
    assert!(
        audit
            .body
            .contains(&format!("{open_oom} tickets resolved.")),
        "{}",
        audit.body
    );
    assert_eq!(audit.body.matches("<td>tickets.bulk</td>").count(), 3);
}
