//! Hostile input never breaks a call: random requests through the real router (in process,
//! with a real SQLite file), in development mode so that every request reaches a handler.
//! Every answer on `/voice/*` (unknown paths there included) is 200 well-formed TwiML, or
//! 413 for a body over 64 kB; no panic, no 5xx. `IVR_PROPERTY_CASES` sets the count (default 100,000); the seed is printed
//! so a failure can be replayed with `IVR_PROPERTY_SEED`.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::parse_twiml;
use ivr::app::{build_router, build_state, Clock};
use ivr::config::Config;
use tower::ServiceExt;

const PATHS: &[&str] = &[
    "/voice/incoming",
    "/voice/gather",
    "/voice/dial",
    "/voice/record",
    "/voice/queue",
    "/voice/queue/wait",
    "/voice/whisper",
    "/voice/screen",
    "/voice/status",
    "/voice/fallback",
];

const NODES: &[&str] = &[
    "store.main",
    "guest_care.main",
    "orders.main",
    "legal.main",
    "shopping_dollars.main",
    "shopping_dollars.purchase_date",
    "shopping_dollars.callback",
    "shopping_dollars.rule",
    "shopping_dollars.hsp_ticket",
    "shopping_dollars.hsp_check",
    "shopping_dollars.details",
    "common.closed_voicemail",
    "common.error_transfer",
    "store.order_transfer",
    "guest_care.escalation_queue",
    "store.nowhere",
    "nowhere.main",
    "..",
    "",
];

const PARAMS: &[&str] = &[
    "CallSid",
    "From",
    "To",
    "Digits",
    "DialCallStatus",
    "QueueResult",
    "RecordingUrl",
    "RecordingDuration",
    "CallStatus",
    "SequenceNumber",
    "Timestamp",
    "CallDuration",
    "ErrorCode",
    "ErrorUrl",
    "ParentCallSid",
    "AnsweredBy",
];

const QUERY: &[&str] = &[
    "node",
    "attempt",
    "seq",
    "silence",
    "phase",
    "value",
    "v.purchase_date",
    "v.paid",
    "v.hsp_ticket",
    "v.days",
    "v.details_recording",
    "v.",
];

/// A random value: plausible, hostile, malformed or huge.
fn value(rng: &mut fastrand::Rng) -> Vec<u8> {
    let pick: &[&str] = &[
        "CA0123456789abcdef0123456789abcdef",
        "CAshort",
        "+18007373233",
        "+12045550100",
        "+12045551234",
        "anonymous",
        "1",
        "2",
        "3",
        "*",
        "#",
        "03052026",
        "02302026",
        "2024-02-29",
        "123456",
        "yes",
        "completed",
        "busy",
        "bridged",
        "queue-full",
        "https://api.twilio.com/recordings/RE1",
        "javascript:alert(1)",
        "Mon, 23 Nov 2026 16:10:00 +0000",
        "-1",
        "4294967296",
        "99999999999999999999",
        "<Say>&amp;'\"</Say>",
        "]]>",
        "{ticket_number}{var.days}",
        "",
    ];
    match rng.u8(0..10) {
        0 => {
            let len = rng.usize(0..300);
            (0..len).map(|_| rng.u8(..)).collect()
        }
        1 => {
            let len = rng.usize(0..64);
            (0..len).map(|_| rng.u8(0..32)).collect()
        }
        2 if rng.u8(0..50) == 0 => vec![b'x'; rng.usize(60_000..110_000)],
        _ => pick[rng.usize(..pick.len())].as_bytes().to_vec(),
    }
}

fn encode(bytes: &[u8]) -> String {
    form_urlencoded::byte_serialize(bytes).collect()
}

fn random_request(rng: &mut fastrand::Rng) -> Request<Body> {
    let path = if rng.u8(0..20) == 0 {
        format!("/voice/{}", encode(&value(rng)))
    } else if rng.u8(0..50) == 0 {
        format!("/{}", encode(&value(rng)))
    } else {
        PATHS[rng.usize(..PATHS.len())].to_string()
    };
    let mut query = Vec::new();
    for _ in 0..rng.usize(0..6) {
        let name = QUERY[rng.usize(..QUERY.len())];
        let v = if name == "node" && rng.bool() {
            NODES[rng.usize(..NODES.len())].as_bytes().to_vec()
        } else {
            value(rng)
        };
        query.push(format!("{}={}", encode(name.as_bytes()), encode(&v)));
    }
    let mut body = Vec::new();
    for _ in 0..rng.usize(0..8) {
        if !body.is_empty() {
            body.push(b'&');
        }
        let name = if rng.u8(0..10) == 0 {
            value(rng)
        } else {
            PARAMS[rng.usize(..PARAMS.len())].as_bytes().to_vec()
        };
        // Call ids well formed half the time, so that an agent's leg finds a "parent".
        let v = if (name == b"CallSid" || name == b"ParentCallSid") && rng.bool() {
            format!("CA{:032x}", rng.u64(..)).into_bytes()
        } else {
            value(rng)
        };
        // Raw, undecodable bytes sometimes; percent-encoded otherwise.
        if rng.u8(0..8) == 0 {
            body.extend_from_slice(&name);
            body.push(b'=');
            body.extend_from_slice(&v);
        } else {
            body.extend_from_slice(encode(&name).as_bytes());
            body.push(b'=');
            body.extend_from_slice(encode(&v).as_bytes());
        }
    }
    let uri = if query.is_empty() {
        path
    } else {
        format!("{path}?{}", query.join("&"))
    };
    Request::post(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("host", "127.0.0.1")
        .body(Body::from(body))
        .unwrap_or_else(|_| Request::new(Body::empty()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_hostile_requests_always_get_twiml_or_a_clear_refusal() {
    let cases: u64 = std::env::var("IVR_PROPERTY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let seed: u64 = std::env::var("IVR_PROPERTY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::from_toml("").expect("configuration");
    config.database_url = format!("sqlite://{}", dir.path().join("ivr.db").display());
    config.journal_path = ivr::config::default_journal_path(&config.database_url);
    config.flows_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/ivr_flows").into();
    config.twilio_auth_token = None;
    common::privacy::capture_logs();
    let state = build_state(config, Clock::fixed(common::monday_morning()))
        .await
        .expect("state");
    let router = build_router(state.clone());
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut twiml, mut too_large, mut not_found) = (0u64, 0u64, 0u64);
    for i in 0..cases {
        let req = random_request(&mut rng);
        let uri = req.uri().to_string();
        let res = router
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|e| match e {});
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .expect("body");
        match status {
            StatusCode::OK => {
                let text = std::str::from_utf8(&body)
                    .unwrap_or_else(|_| panic!("case {i} (seed {seed}) {uri}: not UTF-8"));
                if uri.starts_with("/voice/") {
                    let doc = parse_twiml(text);
                    assert_eq!(doc.name, "Response", "case {i} (seed {seed}) {uri}");
                }
                twiml += 1;
            }
            StatusCode::PAYLOAD_TOO_LARGE => too_large += 1,
            StatusCode::NOT_FOUND if !uri.starts_with("/voice/") => not_found += 1,
            other => panic!("case {i} (seed {seed}) {uri}: status {other}"),
        }
    }
    let metrics = state.metrics.render();
    let panics = metrics
        .lines()
        .find(|l| l.starts_with(r#"ivr_errors_total{kind="panic"}"#))
        .map(str::to_owned);
    assert_eq!(panics, None, "no panic, even a caught one");
    common::privacy::assert_logs_private();
    common::report(format!(
        "hostile requests (seed {seed}): {cases} random requests -> {twiml} TwiML, {too_large} x 413, {not_found} x 404 (paths outside /voice/), 0 errors, 0 panics"
    ));
}
