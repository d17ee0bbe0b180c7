//! Issue 4, item 9: what the server logs keeps callers' numbers masked and never holds a
//! token or a signature. Every test binary checks its own servers' logs as each test ends
//! (`tests/common/privacy.rs`); this test drives the paths that handle the most personal
//! data and reports what was checked. All lines are kept in `target/tmp/test-logs/`.

mod common;

use common::*;

#[tokio::test]
async fn the_logs_of_calls_tickets_refusals_and_failures_hold_no_number_token_or_signature() {
    let app = spawn_app().await;
    // A ticket, an e-mail with the caller's number and a voicemail.
    let mut call = app.call(STORE).await;
    call.press("7").await;
    call.press("1").await;
    call.leave_voicemail("https://api.twilio.com/recordings/RE1")
        .await;
    call.completes(30).await;
    // A forged signature, refused and logged.
    let url = app.url("/voice/incoming");
    let forged = app
        .post_raw(
            &url,
            &incoming("CAforged0001"),
            Some("bm90IGEgc2lnbmF0dXJl"),
        )
        .await;
    assert_eq!(forged.status, 403);
    // The platform's fallback naming a URL that carries a callback number.
    let fallback = app.url("/voice/fallback");
    let p = params(&[
        ("CallSid", "CAfallback0001"),
        ("From", CALLER),
        ("To", GUEST_CARE),
        ("ErrorCode", "11200"),
        (
            "ErrorUrl",
            "https://ivr.example.com/voice/gather?node=shopping_dollars.callback&v.callback=%2B12045559999",
        ),
    ]);
    assert_eq!(app.post_signed(&fallback, &p).await.status, 200);
    // A webhook path that does not exist, from a caller.
    let unknown = app.url("/voice/nowhere");
    assert_eq!(
        app.post_signed(&unknown, &incoming("CAunknown0001"))
            .await
            .status,
        200
    );
    let lines = common::privacy::lines_checked();
    assert!(lines >= 8, "the paths were logged: {lines} lines");
    let masked = common::privacy::logged_lines(&["+1******1234"]).len();
    assert!(masked >= 3, "callers appear masked: {masked} lines");
    common::privacy::assert_logs_private();
    report(format!(
        "log privacy: {lines} log lines checked, {masked} with the caller masked as +1******1234; \
         0 full numbers, 0 tokens, 0 signatures (every test binary checks its own logs the same way)"
    ));
}
