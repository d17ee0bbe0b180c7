//! The manager API: authentication, call logs with filters and keyset pages, tickets.

mod common;

use common::*;
use serde_json::Value;

#[tokio::test]
async fn the_api_needs_the_bearer_token() {
    let app = spawn_app().await;
    let none = app
        .http
        .get(format!("{}/api/calls", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    let wrong = app
        .http
        .get(format!("{}/api/calls", app.addr))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let put = app
        .http
        .put(format!("{}/api/hours/override", app.addr))
        .json(&serde_json::json!({"state": "closed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 401);
}

#[tokio::test]
async fn without_a_configured_token_the_api_is_closed() {
    let app = spawn_with(Options {
        api_token: None,
        ..Options::default()
    })
    .await;
    let res = app
        .http
        .get(format!("{}/api/tickets", app.addr))
        .bearer_auth("")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("IVR_API_TOKEN"));
}

#[tokio::test]
async fn a_bad_override_or_filter_gets_a_clear_400() {
    let app = spawn_app().await;
    let res = app
        .http
        .put(format!("{}/api/hours/override", app.addr))
        .bearer_auth(API_TOKEN)
        .json(&serde_json::json!({"state": "maybe"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("\"open\" | \"closed\" | null"));
    let res = app
        .http
        .put(format!("{}/api/hours/override", app.addr))
        .bearer_auth(API_TOKEN)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "a missing state is not a silent clear");
    let body: Value = res.json().await.unwrap();
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("`state` is required"));
    for q in [
        "since=yesterday",
        "limit=0",
        "limit=many",
        "colour=red",
        "line=moon",
        "cursor=zzz",
    ] {
        let res = app
            .http
            .get(format!("{}/api/calls?{q}", app.addr))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{q}");
        let body: Value = res.json().await.expect("a JSON error body");
        assert!(!body["error"].as_str().unwrap_or("").is_empty(), "{q}");
    }
    let res = app
        .http
        .get(format!("{}/api/calls/CAnope", app.addr))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

async fn make_calls(app: &TestApp) -> Vec<String> {
    let mut sids = Vec::new();
    // 1: store, Initial ticket, after sales. 2: guest care, no ticket. 3: store, OOM ticket.
    app.clock.set(winnipeg(2026, 11, 23, 9, 0));
    let mut c = app.call(STORE).await;
    c.press("2").await;
    c.press("2").await;
    sids.push(c.sid.clone());
    app.clock.set(winnipeg(2026, 11, 24, 9, 0));
    let mut c = app.call(GUEST_CARE).await;
    c.press("2").await;
    c.connects("after_sales").await;
    sids.push(c.sid.clone());
    app.clock.set(winnipeg(2026, 11, 25, 9, 0));
    let mut c = app.call(STORE).await;
    c.press("2").await;
    c.press("1").await;
    sids.push(c.sid.clone());
    sids
}

fn sids_of(page: &Value) -> Vec<String> {
    page["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["call_sid"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn calls_are_listed_newest_first_with_filters() {
    let app = spawn_app().await;
    let sids = make_calls(&app).await;
    let all = app.api("/api/calls").await;
    assert_eq!(
        sids_of(&all),
        [sids[2].clone(), sids[1].clone(), sids[0].clone()]
    );
    assert_eq!(
        sids_of(&app.api("/api/calls?line=store").await),
        [sids[2].clone(), sids[0].clone()]
    );
    assert_eq!(
        sids_of(&app.api("/api/calls?category=OOM").await),
        [sids[2].clone()]
    );
    assert_eq!(
        sids_of(&app.api("/api/calls?outcome=transferred:after_sales").await),
        [sids[1].clone()]
    );
    assert_eq!(
        sids_of(&app.api("/api/calls?outcome=transferring:*").await),
        [sids[2].clone(), sids[0].clone()]
    );
    assert_eq!(
        sids_of(
            &app.api("/api/calls?since=2026-11-24&until=2026-11-25T12:00:00Z")
                .await
        ),
        [sids[1].clone()]
    );
    // A category over a bounded range is answered from the tickets of that range: the
    // calls' own start times still decide.
    assert_eq!(
        sids_of(
            &app.api("/api/calls?category=Initial&line=store&since=2026-11-23&until=2026-11-26")
                .await
        ),
        [sids[0].clone()]
    );
    assert_eq!(
        sids_of(
            &app.api("/api/calls?category=OOM&since=2026-11-25&until=2026-11-26")
                .await
        ),
        [sids[2].clone()]
    );
    assert!(sids_of(
        &app.api("/api/calls?category=OOM&since=2026-11-23&until=2026-11-25T12:00:00Z")
            .await
    )
    .is_empty());
    assert!(sids_of(
        &app.api("/api/calls?category=Initial&since=2026-11-24&until=2026-11-26")
            .await
    )
    .is_empty());
}

#[tokio::test]
async fn calls_page_through_a_keyset_cursor() {
    let app = spawn_app().await;
    let sids = make_calls(&app).await;
    let first = app.api("/api/calls?limit=2").await;
    assert_eq!(sids_of(&first), [sids[2].clone(), sids[1].clone()]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = app
        .api(&format!("/api/calls?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(sids_of(&second), [sids[0].clone()]);
    assert_eq!(second["next_cursor"], Value::Null);
}

#[tokio::test]
async fn a_call_shows_its_steps_and_tickets_with_their_categories() {
    let app = spawn_app().await;
    let sids = make_calls(&app).await;
    let call = app.api(&format!("/api/calls/{}", sids[0])).await;
    assert_eq!(call["tickets"][0]["category"], "Initial");
    assert!(call["steps"][0]["said"]
        .as_str()
        .unwrap()
        .contains("Polo Park"));
    assert_eq!(call["started_at"], "2026-11-23T15:00:00Z");
    assert_eq!(call["outcome"], "transferring:after_sales");
}

#[tokio::test]
async fn tickets_are_listed_with_status_and_category_filters() {
    let app = spawn_app().await;
    make_calls(&app).await;
    let all = app.api("/api/tickets").await;
    let cats: Vec<&str> = all["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["category"].as_str().unwrap())
        .collect();
    assert_eq!(cats, ["OOM", "Initial"]);
    let oom = app.api("/api/tickets?category=OOM&status=open").await;
    assert_eq!(oom["tickets"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.api("/api/tickets?status=resolved").await["tickets"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let page = app.api("/api/tickets?limit=1").await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let next = app
        .api(&format!("/api/tickets?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(next["tickets"][0]["category"], "Initial");
}

#[tokio::test]
async fn the_flows_are_served_as_a_picture_with_each_menu_options_label() {
    let app = spawn_app().await;
    let flows = app.api("/api/flows").await;
    let edges = flows["edges"].as_array().expect("edges");
    let option = edges
        .iter()
        .find(|e| e["from"] == "store.main" && e["digit"] == "2")
        .expect("store.main option 2");
    assert_eq!(option["to"], "orders.main");
    assert_eq!(option["label"], "the purchase is not delivered yet");
    let nodes = flows["nodes"].as_array().expect("nodes");
    let transfer = nodes
        .iter()
        .find(|n| n["id"] == "store.service_transfer")
        .expect("the after-sales transfer");
    assert_eq!(transfer["kind"], "transfer");
    assert_eq!(
        transfer["transfer"],
        serde_json::json!(["after_sales", "screen"])
    );
    assert_eq!(flows["starts"]["store"], "store.main");
}
