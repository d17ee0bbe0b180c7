//! Hardening (issue 4): signatures behind proxies, forged requests at volume, retries sent
//! concurrently and in sequence, status callbacks in every order. Each test prints the
//! figure it reached on its last line (`cargo test --test reliability -- --nocapture`).

mod common;

use common::*;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::collections::BTreeSet;
use std::str::FromStr;

/// Rows in every table the server writes, read straight from the SQLite file.
async fn rows_everywhere(app: &TestApp) -> i64 {
    let mut total = 0;
    for table in [
        "calls",
        "steps",
        "tickets",
        "notifications",
        "webhooks",
        "call_tickets",
    ] {
        total += count_rows(&app.db_path, &format!("SELECT count(*) FROM {table}")).await;
    }
    total
}

#[tokio::test]
async fn behind_a_proxy_only_the_public_url_verifies_and_forwarded_headers_change_nothing() {
    let public = "https://ivr.example.com:8443/twilio";
    let app = spawn_with(Options {
        public_url: Some(public.into()),
        ..Options::default()
    })
    .await;
    let socket = format!("{}/voice/incoming", app.addr);
    let send = |p: Vec<(String, String)>, sig: String, forwarded: Option<&'static str>| {
        let mut req = app
            .http
            .post(&socket)
            .form(&p)
            .header("X-Twilio-Signature", sig);
        if let Some(host) = forwarded {
            req = req
                .header("X-Forwarded-Host", host)
                .header("X-Forwarded-Proto", "https");
        }
        async move { req.send().await.expect("request").status().as_u16() }
    };
    let p = incoming("CAproxy01");
    let signed_public = twilio_signature(AUTH_TOKEN, &format!("{public}/voice/incoming"), &p);
    let signed_internal = twilio_signature(AUTH_TOKEN, &socket, &p);
    let signed_fragment = twilio_signature(
        AUTH_TOKEN,
        &format!("{public}/voice/incoming#rc=2&rp=all"),
        &p,
    );
    let signed_spoof = twilio_signature(AUTH_TOKEN, "https://evil.example.com/voice/incoming", &p);
    assert_eq!(
        send(p.clone(), signed_internal, None).await,
        403,
        "internal URL"
    );
    assert_eq!(
        send(p.clone(), signed_fragment, None).await,
        403,
        "Twilio signs the URL without its #rc= fragment"
    );
    assert_eq!(
        send(p.clone(), signed_spoof, Some("evil.example.com")).await,
        403,
        "X-Forwarded-Host does not change the verified URL"
    );
    assert_eq!(rows_everywhere(&app).await, 0);
    assert_eq!(
        send(p.clone(), signed_public.clone(), Some("evil.example.com")).await,
        200,
        "the public URL verifies whatever the forwarded headers say"
    );
    report("proxy: public URL with port and prefix verified; internal, fragment and forwarded-host signatures refused");
}

#[tokio::test]
async fn without_a_public_url_forwarded_headers_are_ignored_too() {
    let app = spawn_with(Options {
        host_header_only: true,
        ..Options::default()
    })
    .await;
    let socket = format!("{}/voice/incoming", app.addr);
    let p = incoming("CAhost01");
    let spoof = twilio_signature(AUTH_TOKEN, "https://evil.example.com/voice/incoming", &p);
    let status = app
        .http
        .post(&socket)
        .form(&p)
        .header("X-Twilio-Signature", spoof)
        .header("X-Forwarded-Host", "evil.example.com")
        .header("X-Forwarded-Proto", "https")
        .send()
        .await
        .expect("request")
        .status();
    assert_eq!(status, 403);
    assert_eq!(rows_everywhere(&app).await, 0);
    report("host header: forwarded headers ignored");
}

#[tokio::test]
async fn a_thousand_forged_missing_or_altered_signatures_are_refused_and_write_nothing() {
    let app = spawn_app().await;
    let socket = format!("{}/voice/incoming", app.addr);
    let url = app.url("/voice/incoming");
    let good = incoming("CAforged0000000000000000000000001");
    let good_sig = twilio_signature(AUTH_TOKEN, &url, &good);
    let other_token = twilio_signature("not-our-token", &url, &good);
    let mut refused = 0;
    for i in 0..1000u32 {
        let mut p = good.clone();
        let sig: Option<String> = match i % 5 {
            0 => None,
            1 => Some(format!("{:0>27}=", i)),
            2 => Some(other_token.clone()),
            3 => {
                // Altered after signing: another caller, another call, another digit.
                p[1].1 = format!("+1204555{:04}", i % 10_000);
                Some(good_sig.clone())
            }
            _ => {
                p.push(("Digits".into(), (i % 10).to_string()));
                Some(good_sig.clone())
            }
        };
        let answer = app.post_raw(&socket, &p, sig.as_deref()).await;
        assert_eq!(answer.status, 403, "request {i}");
        refused += 1;
    }
    let rows = rows_everywhere(&app).await;
    assert_eq!(rows, 0);
    let answer = app.post_raw(&socket, &good, Some(&good_sig)).await;
    assert_eq!(answer.status, 200, "the genuine request still passes");
    report(format!(
        "signatures: 1000 forged, missing or altered -> {refused} x 403, {rows} rows written"
    ));
}

/// A court summons on the store line: a step that writes a ticket, a notification and steps.
const SUMMONS: &str = "/voice/gather?node=legal.main&attempt=1&seq=2";

#[tokio::test]
async fn six_retries_concurrent_and_sequential_write_once_and_answer_the_same() {
    let app = spawn_app().await;
    let mut results = Vec::new();
    for (mode, token) in [
        ("concurrent", None),
        ("concurrent", Some("idem-1")),
        ("sequential", None),
        ("sequential", Some("idem-2")),
    ] {
        let call = app.call(STORE).await;
        let url = app.url(SUMMONS);
        let p = call.params(&[("Digits", "1")]);
        let sig = twilio_signature(AUTH_TOKEN, &url, &p);
        let socket = format!("{}{SUMMONS}", app.addr);
        let send = {
            let client = app.http.clone();
            move || {
                let mut req = client
                    .post(&socket)
                    .form(&p)
                    .header("X-Twilio-Signature", &sig);
                if let Some(t) = token {
                    req = req.header("I-Twilio-Idempotency-Token", t);
                }
                async move {
                    let res = req.send().await.expect("request");
                    assert_eq!(res.status(), 200);
                    res.text().await.expect("body")
                }
            }
        };
        let answers: Vec<String> = if mode == "concurrent" {
            let tasks: Vec<_> = (0..6).map(|_| tokio::spawn(send())).collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.expect("task"));
            }
            out
        } else {
            let mut out = Vec::new();
            for _ in 0..6 {
                out.push(send().await);
            }
            out
        };
        let distinct: BTreeSet<&String> = answers.iter().collect();
        assert_eq!(distinct.len(), 1, "{mode} {token:?}: {answers:#?}");
        assert!(answers[0].contains("<Record"), "{}", answers[0]);
        let rec = call.record().await;
        let tickets = rec["tickets"].as_array().unwrap().len();
        let notes = rec["notifications"].as_array().unwrap().len();
        let ticket_steps = rec["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["node"] == "legal.summons_ticket")
            .count();
        assert_eq!(
            (tickets, notes, ticket_steps),
            (1, 1, 1),
            "{mode} {token:?}"
        );
        results.push(format!(
            "{mode}{}: 6 sent, {ticket_steps} step, {tickets} ticket, {notes} notification, {} answer",
            if token.is_some() { " with token" } else { "" },
            distinct.len()
        ));
    }
    report(format!("retries: {}", results.join("; ")));
}

fn permutations(items: &[&'static str]) -> Vec<Vec<&'static str>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, first);
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn status_callbacks_in_all_24_orders_end_completed_with_the_duration() {
    let app = spawn_app().await;
    let statuses = ["initiated", "ringing", "in-progress", "completed"];
    let orders = permutations(&statuses);
    assert_eq!(orders.len(), 24);
    let url = app.url("/voice/status");
    let mut ok = 0;
    for (n, order) in orders.iter().enumerate() {
        let sid = format!("CAorder{n:026}");
        for status in order {
            let seq = statuses.iter().position(|s| s == status).unwrap_or(0);
            let minute = 10 + seq;
            let mut p = params(&[
                ("CallSid", sid.as_str()),
                ("From", CALLER),
                ("To", STORE),
                ("CallStatus", status),
                ("SequenceNumber", &seq.to_string()),
                (
                    "Timestamp",
                    &format!("Mon, 23 Nov 2026 16:{minute:02}:00 +0000"),
                ),
            ]);
            if *status == "completed" {
                p.push(("CallDuration".into(), "95".into()));
            }
            let answer = app.post_signed(&url, &p).await;
            assert_eq!(answer.status, 200);
        }
        let rec = app.api(&format!("/api/calls/{sid}")).await;
        assert_eq!(rec["status"], "completed", "order {order:?}");
        assert_eq!(rec["duration_seconds"], 95, "order {order:?}");
        assert_eq!(rec["ended_at"], "2026-11-23T16:13:00Z", "order {order:?}");
        ok += 1;
    }
    report(format!(
        "status callbacks: {ok} of 24 orderings ended completed with duration 95 s"
    ));
}

#[tokio::test]
async fn metrics_count_webhooks_nodes_errors_tickets_and_latency() {
    let app = spawn_app().await;
    let mut call = app.call(STORE).await;
    call.press("7").await;
    call.press("1").await;
    let forged = app
        .post_raw(
            &format!("{}/voice/incoming", app.addr),
            &incoming("CAforgedmetrics"),
            Some("bm9wZQ=="),
        )
        .await;
    assert_eq!(forged.status, 403);
    call.post(
        "/voice/gather?node=store.nowhere&attempt=1&seq=9",
        &[("Digits", "1")],
    )
    .await;
    let text = metrics_text(&app).await;
    let expect = [
        (
            r#"ivr_webhooks_total{endpoint="incoming",result="ok"}"#,
            1.0,
        ),
        (r#"ivr_webhooks_total{endpoint="gather",result="ok"}"#, 2.0),
        (
            r#"ivr_webhooks_total{endpoint="incoming",result="forbidden"}"#,
            1.0,
        ),
        (
            r#"ivr_webhooks_total{endpoint="gather",result="error_route"}"#,
            1.0,
        ),
        (r#"ivr_errors_total{kind="flow"}"#, 1.0),
        (r#"ivr_node_steps_total{node="legal.summons_ticket"}"#, 1.0),
        (r#"ivr_tickets_opened_total{category="Follow-Up"}"#, 1.0),
        (
            r#"ivr_webhook_duration_seconds_count{endpoint="gather"}"#,
            3.0,
        ),
        ("ivr_database_degraded", 0.0),
        // Four webhooks recorded one after another: four commits of one.
        ("ivr_db_commit_group_size_count", 4.0),
        ("ivr_db_commit_group_size_sum", 4.0),
        (r#"ivr_db_commit_group_size_bucket{le="1"}"#, 4.0),
        ("ivr_db_checkpoint_errors_total", 0.0),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    report(format!(
        "metrics: {} series exposed, counts match the calls made",
        text.lines().filter(|l| !l.starts_with('#')).count()
    ));
}

#[tokio::test]
async fn a_database_error_inside_a_step_still_routes_the_caller_and_is_counted_once() {
    let app = spawn_app().await;
    // Break the database under the running server: the step's commit fails.
    {
        let mut db = SqliteConnectOptions::from_str(&format!("sqlite://{}", app.db_path.display()))
            .expect("sqlite url")
            .connect()
            .await
            .expect("open the test database");
        sqlx::query("DROP TABLE webhooks")
            .execute(&mut db)
            .await
            .expect("drop a table");
        let _ = db.close().await;
    }
    let call = app.call(GUEST_CARE).await;
    assert!(call.says().contains("technical problem"), "{}", call.xml);
    assert_eq!(
        call.dialled(),
        expect(OOM),
        "the safe route: Guest Care OOM"
    );
    let text = metrics_text(&app).await;
    assert_eq!(
        sample(&text, r#"ivr_errors_total{kind="database"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"ivr_webhooks_total{endpoint="incoming",result="error_route"}"#
        ),
        Some(1.0)
    );
    report("database error: caller routed to Guest Care OOM with 200 TwiML; counted 1 time");
}

/// The real store, except that a step of a call whose id says PANIC panics mid-commit.
struct PanicOnStep(std::sync::Arc<dyn ivr::storage::Store>);

#[async_trait::async_trait]
impl ivr::storage::Store for PanicOnStep {
    async fn migrate(&self) -> ivr::storage::StoreResult<()> {
        self.0.migrate().await
    }
    async fn ping(&self) -> ivr::storage::StoreResult<()> {
        self.0.ping().await
    }
    async fn hours_override(&self) -> ivr::storage::StoreResult<Option<ivr::hours::OverrideState>> {
        self.0.hours_override().await
    }
    async fn set_hours_override(
        &self,
        state: Option<ivr::hours::OverrideState>,
        at: chrono::DateTime<chrono::Utc>,
    ) -> ivr::storage::StoreResult<()> {
        self.0.set_hours_override(state, at).await
    }
    async fn call_has_ticket(&self, call_sid: &str) -> ivr::storage::StoreResult<bool> {
        self.0.call_has_ticket(call_sid).await
    }
    async fn find_external_ticket(
        &self,
        category: &str,
        external_ref: &str,
    ) -> ivr::storage::StoreResult<Option<ivr::records::ExistingTicket>> {
        self.0.find_external_ticket(category, external_ref).await
    }
    async fn find_caller_ticket(
        &self,
        caller: &str,
        node: &str,
    ) -> ivr::storage::StoreResult<Option<ivr::records::ExistingTicket>> {
        self.0.find_caller_ticket(caller, node).await
    }
    async fn commit_step(
        &self,
        batch: &ivr::storage::StepBatch<'_>,
    ) -> ivr::storage::StoreResult<ivr::storage::Committed> {
        if batch.call.call_sid.contains("PANIC") && !batch.request_key.ends_with(":error") {
            panic!("injected panic inside the step handler");
        }
        self.0.commit_step(batch).await
    }
    async fn record_status(
        &self,
        update: &ivr::storage::StatusUpdate<'_>,
    ) -> ivr::storage::StoreResult<()> {
        self.0.record_status(update).await
    }
    async fn list_calls(
        &self,
        q: &ivr::storage::CallQuery,
    ) -> ivr::storage::StoreResult<Vec<ivr::storage::CallView>> {
        self.0.list_calls(q).await
    }
    async fn get_call(
        &self,
        call_sid: &str,
    ) -> ivr::storage::StoreResult<Option<ivr::storage::CallDetail>> {
        self.0.get_call(call_sid).await
    }
    async fn list_tickets(
        &self,
        q: &ivr::storage::TicketQuery,
    ) -> ivr::storage::StoreResult<Vec<ivr::storage::TicketView>> {
        self.0.list_tickets(q).await
    }
    async fn forget_callers_before(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
        at: chrono::DateTime<chrono::Utc>,
    ) -> ivr::storage::StoreResult<ivr::storage::Forgotten> {
        self.0.forget_callers_before(cutoff, at).await
    }
}

#[tokio::test]
async fn a_panic_inside_a_step_still_routes_the_caller_and_is_counted_and_logged_once() {
    let app = spawn_app().await;
    // The same server, its store swapped for one that panics on the PANIC call's steps.
    let state = app.state.clone().expect("in-process server");
    let inner = state.store.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    let mut config = state.config.clone();
    config.public_url = Some(addr.clone());
    let style = ivr::twiml::Style {
        base_url: Some(addr.clone()),
        ..state.style.clone()
    };
    let panicking = ivr::app::AppState(std::sync::Arc::new(ivr::app::App {
        config,
        flows: state.flows.clone(),
        store: std::sync::Arc::new(PanicOnStep(inner)),
        db: state.db.clone(),
        work: state.work.clone(),
        journal: state.journal.clone(),
        metrics: ivr::metrics::Metrics::new().expect("metrics"),
        clock: state.clock.clone(),
        style,
        last_resort: state.last_resort.clone(),
        console: state.console.clone(),
        insights: state.insights.clone(),
    }));
    let served = panicking.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, ivr::app::build_router(served).into_make_service()).await;
    });
    let url = format!("{addr}/voice/incoming");
    let sid = "CAPANIC000000000000000000000000001";
    let answer = app.post_signed(&url, &incoming(sid)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let twiml = parse_twiml(&answer.body);
    assert!(answer.body.contains("technical problem"), "{}", answer.body);
    assert!(
        twiml.first("Dial").is_some(),
        "the safe route: {}",
        answer.body
    );
    let text = panicking.metrics.render();
    assert_eq!(
        sample(&text, r#"ivr_errors_total{kind="panic"}"#),
        Some(1.0),
        "{text}"
    );
    let rec = app.api(&format!("/api/calls/{sid}")).await;
    assert_eq!(rec["error_count"], 1, "recorded against the call once");
    assert_eq!(rec["steps"][0]["kind"], "error");
    let logged = common::privacy::logged_lines(&[sid, "ERROR"]);
    assert_eq!(logged.len(), 1, "logged once: {logged:#?}");
    assert!(logged[0].contains("fault=\"panic\""), "{}", logged[0]);
    report("panic inside a step: 200 TwiML with the apology and the transfer to Guest Care OOM; counted, logged and recorded once");
}
