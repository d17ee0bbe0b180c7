//! The manager console in a real browser (Debian's Chromium through ChromeDriver): signing
//! in, filtering calls, a call's page with its player, the CSV download, assigning and
//! resolving a ticket, a forged form, roles and an idle session; axe-core checks every page; screenshots of the main pages go
//! to target/console-screenshots/.

#[path = "common/browser.rs"]
mod browser;
mod common;

use browser::Browser;
use common::console::{add_user, PASSWORD};
use common::*;

/// A server with recording playback configured, and some calls: a store court summons
/// with its voicemail from +1 204 555 9876, and two Guest Care calls.
async fn console_with_calls() -> (TestApp, String) {
    let app = spawn_with(Options {
        account_sid: Some("AC123"),
        ..Options::default()
    })
    .await;
    let mut summons = app.call_from(STORE, "+12045559876").await;
    summons.press("7").await;
    summons.press("1").await;
    summons
        .leave_voicemail("https://api.twilio.com/2010-04-01/Accounts/AC123/Recordings/RE5")
        .await;
    for _ in 0..2 {
        let mut gc = app.call_from_another(GUEST_CARE).await;
        gc.press("1").await;
    }
    let sid = summons.sid.clone();
    (app, sid)
}

#[tokio::test]
async fn a_manager_signs_in_filters_opens_a_call_and_downloads_the_csv() {
    let (app, sid) = console_with_calls().await;
    add_user(&app, "mgr", "manager").await;
    let b = Browser::start(&app.addr).await;

    b.goto("/console/calls").await;
    assert!(b.path().await.starts_with("/console/login?next="));
    b.assert_accessible("sign-in").await;
    b.screenshot("sign-in").await;
    b.sign_in("mgr", PASSWORD).await;
    b.wait_for_text("h1", "Calls").await;
    assert_eq!(b.path().await, "/console/calls");
    b.wait_for_text("table.calls caption", "3 calls on this page")
        .await;
    b.assert_accessible("calls").await;
    b.screenshot("calls").await;

    // Filter by the caller's last four digits: htmx swaps the results and the address.
    b.fill("#caller", "9876").await;
    b.click(".filters button[type=submit]").await;
    b.wait_for_text("table.calls caption", "1 calls on this page")
        .await;
    assert!(b.path().await.contains("caller=9876"), "{}", b.path().await);
    assert!(b
        .text("table.calls tbody")
        .await
        .contains("Store: Polo Park"));

    // The CSV of the filtered set, as the browser downloads it.
    b.click("a.export").await;
    let csv = b.downloaded("calls.csv").await;
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(rows[0].starts_with("call_sid,started_at,line,store,caller"));
    assert!(rows[1].starts_with(&format!("{sid},")), "{csv}");
    assert!(rows[1].contains(",store,Polo Park,+12045559876,"), "{csv}");

    // The call's page: the timeline, the ticket, the player.
    b.click("table.calls tbody a").await;
    b.wait_for_text("h1", &sid).await;
    let steps = b.text("ol.timeline").await;
    assert!(steps.contains("Keys pressed: 7"), "{steps}");
    let audio = b.find("audio").await;
    assert!(audio.attr("controls").await.expect("attr").is_some());
    assert_eq!(
        audio.attr("src").await.expect("src").as_deref(),
        Some(format!("/console/calls/{sid}/recording").as_str())
    );
    b.assert_accessible("call").await;
    b.screenshot("call").await;

    // User admin: add an agent, then a form whose token was tampered with.
    b.click("nav a[href='/console/users']").await;
    b.wait_for_text("h1", "Console accounts").await;
    b.assert_accessible("users").await;
    b.fill("#new-name", "agent.one").await;
    b.fill("#new-password", PASSWORD).await;
    b.click("form.stack button[type=submit]").await;
    b.wait_for_text("table tbody", "agent.one").await;
    b.screenshot("users").await;
    b.client
        .execute(
            "document.querySelector('form.stack input[name=csrf]').value = 'forged';",
            vec![],
        )
        .await
        .expect("tamper");
    b.fill("#new-name", "agent.two").await;
    b.fill("#new-password", PASSWORD).await;
    b.click("form.stack button[type=submit]").await;
    b.wait_for_text("main", "nothing was changed").await;
    b.assert_accessible("refused form").await;
    b.goto("/console/users").await;
    assert!(!b.text("table tbody").await.contains("agent.two"));

    b.click("nav a[href='/console/audit']").await;
    b.wait_for_text("table tbody", "user.add").await;
    b.assert_accessible("audit").await;
    b.screenshot("audit").await;

    // Insights: the charts drawn as SVG, their figures in tables.
    b.click("nav a[href='/console/insights']").await;
    b.wait_for_text("p.summary", "3 calls").await;
    assert!(b.count("svg.chart").await >= 4);
    b.assert_accessible("insights").await;
    b.screenshot("insights").await;

    b.click("nav a[href='/console/flows']").await;
    b.wait_for_text("main", "guest_care").await;
    assert!(b.count("svg.flow").await >= 2);
    b.assert_accessible("flows").await;
    b.screenshot("flows").await;

    // Hours: a manager closes Guest Care by the override.
    b.click("nav a[href='/console/hours']").await;
    b.wait_for_text("p.now", "Guest Care is open now").await;
    b.click("#over-closed").await;
    b.click("form.stack button[type=submit]").await;
    b.wait_for_text("p.now", "Guest Care is closed now, by the override.")
        .await;
    b.assert_accessible("hours").await;
    b.screenshot("hours").await;
    b.quit().await;
}

#[tokio::test]
async fn an_agent_works_a_ticket_is_kept_from_user_admin_and_an_idle_session_ends() {
    let (app, _) = console_with_calls().await;
    add_user(&app, "agent.one", "agent").await;
    let b = Browser::start(&app.addr).await;
    b.goto("/console/login").await;
    b.sign_in("agent.one", PASSWORD).await;
    b.wait_for_text("h1", "Calls").await;
    assert_eq!(b.count("nav a[href='/console/users']").await, 0);
    b.goto("/console/users").await;
    b.wait_for_text("main", "Only managers may see and change console accounts.")
        .await;
    b.assert_accessible("forbidden").await;

    // The ticket queue: the summons ticket, assigned to the agent, then resolved.
    b.goto("/console/calls").await;
    b.click("nav a[href='/console/tickets']").await;
    b.wait_for_text("table.tickets caption", "1 tickets on this page")
        .await;
    assert!(b.text("table.tickets tbody").await.contains("due in"));
    b.assert_accessible("tickets").await;
    b.screenshot("tickets").await;
    b.click("table.tickets tbody td:first-child a").await;
    b.wait_for_text("h1", "Ticket GC-").await;
    b.find("#assignee")
        .await
        .select_by_value("agent.one")
        .await
        .expect("choose the agent");
    b.click("form:has(#assignee) button[type=submit]").await;
    b.wait_for_text("dd.assignee", "agent.one").await;
    b.fill("#resolution", "Sent the summons to legal").await;
    b.click("form:has(#resolution) button[type=submit]").await;
    b.wait_for_text("dd.status", "resolved: Sent the summons to legal")
        .await;
    assert!(b.text("table.trail").await.contains("agent.one"));
    b.assert_accessible("ticket").await;
    b.screenshot("ticket").await;
    b.click("nav a[href='/console/tickets']").await;
    b.wait_for_text("table.tickets tbody", "No tickets here.")
        .await;
    b.click("nav.tabs a[href^='/console/tickets?tab=resolved']")
        .await;
    b.wait_for_text("table.tickets caption", "1 tickets on this page")
        .await;

    // 31 minutes later the next filter (an htmx request) lands on the sign-in page.
    b.goto("/console/calls").await;
    b.wait_for_text("h1", "Calls").await;
    // A filter the server refuses says why in the page (htmx swaps the 400 in).
    b.fill("#caller", "12").await;
    b.click(".filters button[type=submit]").await;
    b.wait_for_text("#results", "caller must be a whole phone number")
        .await;
    app.clock
        .set(monday_morning() + chrono::Duration::minutes(31));
    b.fill("#caller", "9876").await;
    b.click(".filters button[type=submit]").await;
    b.wait_for_text("main", "Your session has ended. Sign in again.")
        .await;
    assert!(b.path().await.starts_with("/console/login"));
    b.sign_in("agent.one", PASSWORD).await;
    b.wait_for_text("h1", "Calls").await;
    b.quit().await;
}
