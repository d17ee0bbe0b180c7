//! The webhook edge: signatures, proxies, hostile input, internal errors and retries.

mod common;

use common::*;

#[test]
fn the_twilio_library_and_our_signer_agree_on_the_reference_vectors() {
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    let p = params(&[
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ]);
    assert_eq!(
        twilio_signature("12345", url, &p),
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    );
    assert_eq!(
        ivr::signature::compute("12345", url, &p),
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    );
    let odd = params(&[("Z", "<>&'\""), ("a", ""), ("É", "é"), ("B", "two words")]);
    assert_eq!(
        ivr::signature::compute("tok", url, &odd),
        twilio_signature("tok", url, &odd)
    );
}

#[tokio::test]
async fn missing_wrong_or_misdirected_signatures_get_403_and_record_nothing() {
    let app = spawn_app().await;
    let url = app.url("/voice/incoming");
    let good = incoming("CAforged01");
    let sig = twilio_signature(AUTH_TOKEN, &url, &good);
    let mut altered = good.clone();
    altered[1].1 = "+19995550000".into();
    type Case = (Vec<(String, String)>, Option<String>);
    let cases: Vec<Case> = vec![
        (good.clone(), None),
        (good.clone(), Some(String::new())),
        (good.clone(), Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into())),
        (
            good.clone(),
            Some(twilio_signature("another-token", &url, &good)),
        ),
        (
            good.clone(),
            Some(twilio_signature(
                AUTH_TOKEN,
                &app.url("/voice/status"),
                &good,
            )),
        ),
        (altered, Some(sig.clone())),
    ];
    for (p, s) in &cases {
        let answer = app
            .post_raw(&format!("{}/voice/incoming", app.addr), p, s.as_deref())
            .await;
        assert_eq!(answer.status, 403, "{s:?}");
    }
    let gather = app
        .post_raw(
            &format!("{}/voice/gather?node=store.main&attempt=1&seq=1", app.addr),
            &good,
            Some(&sig),
        )
        .await;
    assert_eq!(gather.status, 403, "a signature is bound to its URL");
    let calls = app.api("/api/calls").await;
    assert_eq!(
        calls["calls"].as_array().unwrap().len(),
        0,
        "nothing recorded"
    );
    let answer = app
        .post_raw(&format!("{}/voice/incoming", app.addr), &good, Some(&sig))
        .await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn behind_a_proxy_requests_are_verified_against_the_public_url() {
    let app = spawn_with(Options {
        public_url: Some("https://ivr.example.com:8443/twilio".into()),
        ..Options::default()
    })
    .await;
    let mut call = app.call(GUEST_CARE).await;
    let action = call.gather_action();
    assert!(
        action.starts_with("https://ivr.example.com:8443/twilio/voice/gather?"),
        "{action}"
    );
    call.press("2").await;
    assert!(call
        .twiml
        .first("Dial")
        .unwrap()
        .attr("action")
        .starts_with("https://ivr.example.com:8443/twilio/voice/dial?"));

    let p = incoming("CAinternal1");
    let internal = format!("{}/voice/incoming", app.addr);
    let answer = app
        .post_raw(
            &internal,
            &p,
            Some(&twilio_signature(AUTH_TOKEN, &internal, &p)),
        )
        .await;
    assert_eq!(answer.status, 403, "signed for the internal URL");
}

#[tokio::test]
async fn the_default_port_may_be_present_or_absent_in_what_twilio_signed() {
    let app = spawn_with(Options {
        public_url: Some("https://ivr.example.com".into()),
        ..Options::default()
    })
    .await;
    let p = incoming("CAport00001");
    let socket = format!("{}/voice/incoming", app.addr);
    for signed in [
        "https://ivr.example.com/voice/incoming",
        "https://ivr.example.com:443/voice/incoming",
    ] {
        let answer = app
            .post_raw(&socket, &p, Some(&twilio_signature(AUTH_TOKEN, signed, &p)))
            .await;
        assert_eq!(answer.status, 200, "{signed}");
    }
}

#[tokio::test]
async fn without_a_public_url_the_host_header_names_the_signed_url() {
    let app = spawn_with(Options {
        host_header_only: true,
        ..Options::default()
    })
    .await;
    let mut call = app.call(STORE).await;
    let action = call.gather_action();
    assert!(
        action.starts_with("/voice/gather?"),
        "relative links: {action}"
    );
    call.press("2").await;
    assert!(call.says().contains("delivery date"));
}

#[tokio::test]
async fn hostile_text_in_every_parameter_still_gets_well_formed_twiml() {
    let app = spawn_app().await;
    let nasty = "<Hangup/>&'\"\u{1}\u{7f}]]>";
    for path in [
        "/voice/incoming",
        "/voice/gather?node=store.main&attempt=1&seq=1",
        "/voice/gather?node=%3Cx%3E&attempt=%27&seq=%22",
        "/voice/dial?node=store.order_transfer&seq=2",
        "/voice/record?node=common.closed_voicemail&seq=3",
        "/voice/queue?node=guest_care.escalation_queue&seq=2",
        "/voice/queue/wait?node=guest_care.escalation_queue",
        "/voice/status",
        "/voice/fallback",
    ] {
        let mut p = params(&[
            ("CallSid", "CAhostile0001"),
            ("From", nasty),
            ("To", nasty),
            ("Digits", nasty),
            ("DialCallStatus", nasty),
            ("RecordingUrl", nasty),
            ("QueueResult", nasty),
            ("CallStatus", nasty),
            ("SequenceNumber", nasty),
            ("ErrorUrl", nasty),
        ]);
        p.push((nasty.into(), nasty.into()));
        let url = app.url(path);
        let answer = app.post_signed(&url, &p).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert!(answer.content_type.starts_with("text/xml"));
        let doc = parse_twiml(&answer.body);
        assert!(
            doc.first("Hangup").is_none() || path.contains("record"),
            "{path}: injected verb: {}",
            answer.body
        );
    }
    let rec = app.api("/api/calls/CAhostile0001").await;
    assert_eq!(
        rec["from"], "<Hangup/>&'\"]]>",
        "stored verbatim, control characters dropped"
    );
}

#[tokio::test]
async fn a_hostile_store_name_in_configuration_is_escaped_in_the_greeting() {
    let app = spawn_with(Options {
        toml: format!(
            "[lines.stores]\n\"{STORE}\" = \"Tom & Jerry's <Furniture> \\\"Outlet\\\"\"\n"
        ),
        ..Options::default()
    })
    .await;
    let call = app.call(STORE).await;
    assert!(
        call.xml
            .contains("Tom &amp; Jerry&apos;s &lt;Furniture&gt; &quot;Outlet&quot;"),
        "{}",
        call.xml
    );
    assert!(call
        .says()
        .starts_with("Thank you for calling Tom & Jerry's <Furniture> \"Outlet\"."));
}

#[tokio::test]
async fn a_webhook_without_a_call_sid_gets_an_apology_and_guest_care_and_records_nothing() {
    let app = spawn_app().await;
    let answer = app
        .post_signed(
            &app.url("/voice/incoming"),
            &params(&[("From", CALLER), ("To", STORE)]),
        )
        .await;
    assert_eq!(answer.status, 200);
    let doc = parse_twiml(&answer.body);
    assert!(doc.first("Say").unwrap().text.contains("technical problem"));
    assert_eq!(doc.first("Sip").unwrap().text, OOM.0);
    assert_eq!(
        app.api("/api/calls").await["calls"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn an_unknown_node_gets_the_safe_route_and_the_error_is_recorded_against_the_call() {
    let app = spawn_app().await;
    let mut call = app.call(STORE).await;
    call.post(
        "/voice/gather?node=store.no_such_node&attempt=1&seq=1",
        &[("Digits", "1")],
    )
    .await;
    assert!(call.says().contains("technical problem"));
    assert_eq!(call.dialled(), expect(OOM));
    let rec = call.record().await;
    assert_eq!(rec["error_count"], 1);
    assert!(rec["last_error"].as_str().unwrap().contains("unknown node"));
    assert!(rec["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["kind"] == "error"));
    call.dial_ends("completed").await;
    assert_eq!(call.record().await["outcome"], "transferred:oom");
}

#[tokio::test]
async fn an_internal_error_when_closed_takes_a_voicemail_and_opens_a_ticket() {
    let app = spawn_at(sunday_morning()).await;
    let mut call = app.call(STORE).await;
    call.post(
        "/voice/dial?node=store.main&seq=1",
        &[("DialCallStatus", "busy")],
    )
    .await;
    assert!(call.says().contains("technical problem"));
    assert!(call.says().contains("Guest Care is closed"));
    call.leave_voicemail("https://api.twilio.com/recordings/RE7")
        .await;
    assert_eq!(call.ticket_categories().await, ["Follow-Up"]);
}

#[tokio::test]
async fn an_error_after_a_completed_transfer_hangs_up_instead_of_dialling_again() {
    let app = spawn_app().await;
    let mut call = app.call(STORE).await;
    call.post(
        "/voice/dial?node=store.no_such_node&seq=3",
        &[("DialCallStatus", "completed"), ("DialCallDuration", "60")],
    )
    .await;
    assert_eq!(call.twiml.verbs(), ["Hangup"], "{}", call.xml);
    let rec = call.record().await;
    assert_eq!(rec["error_count"], 1);
    assert!(rec["tickets"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn an_error_after_a_voicemail_keeps_the_recording_and_says_goodbye() {
    let app = spawn_app().await;
    let mut call = app.call(STORE).await;
    call.post(
        "/voice/record?node=store.no_such_node&seq=4",
        &[
            ("RecordingUrl", "https://api.twilio.com/recordings/RE8"),
            ("RecordingDuration", "12"),
        ],
    )
    .await;
    assert!(call.hung_up());
    assert!(call.twiml.first("Record").is_none());
    assert!(call.twiml.first("Dial").is_none());
    assert!(call.says().contains("we have your message"));
    let rec = call.record().await;
    assert_eq!(
        rec["recording_url"],
        "https://api.twilio.com/recordings/RE8"
    );
    assert_eq!(rec["outcome"], "voicemail");
    assert_eq!(rec["error_count"], 1);
}

#[tokio::test]
async fn a_retried_webhook_is_answered_the_same_and_writes_nothing_twice() {
    let app = spawn_app().await;
    let mut call = app.call(STORE).await;
    call.press("7").await;
    let menu = call.xml.clone();
    // Court summons: a ticket, a notification, a voicemail prompt. Sent three times.
    let action = call.gather_action();
    let mut answers = Vec::new();
    for _ in 0..3 {
        call.post(&action, &[("Digits", "1")]).await;
        answers.push(call.xml.clone());
    }
    assert_ne!(answers[0], menu);
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    let record = call
        .twiml
        .first("Record")
        .unwrap()
        .attr("action")
        .to_string();
    for _ in 0..3 {
        call.post(
            &record,
            &[
                ("RecordingUrl", "https://api.twilio.com/recordings/RE5"),
                ("RecordingDuration", "9"),
            ],
        )
        .await;
    }
    let rec = call.record().await;
    assert_eq!(rec["tickets"].as_array().unwrap().len(), 1);
    assert_eq!(rec["notifications"].as_array().unwrap().len(), 1);
    let summons_steps = rec["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["node"] == "legal.summons_ticket")
        .count();
    assert_eq!(summons_steps, 1);
    let voicemail_results: Vec<&str> = rec["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["node"] == "legal.summons_voicemail")
        .map(|s| s["result"].as_str().unwrap())
        .collect();
    assert_eq!(voicemail_results, ["recording", "recorded 9 s"]);
}

#[tokio::test]
async fn a_retried_failing_webhook_counts_its_error_once() {
    let app = spawn_app().await;
    let mut call = app.call(STORE).await;
    for _ in 0..3 {
        call.post(
            "/voice/gather?node=store.no_such_node&attempt=1&seq=1",
            &[("Digits", "1")],
        )
        .await;
    }
    let rec = call.record().await;
    assert_eq!(rec["error_count"], 1);
    let errors = rec["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "error")
        .count();
    assert_eq!(errors, 1);
}

#[tokio::test]
async fn the_fallback_url_routes_the_caller_safely_and_records_the_platform_error() {
    let app = spawn_app().await;
    let mut call = app.call(GUEST_CARE).await;
    call.post(
        "/voice/fallback",
        &[
            ("ErrorCode", "11200"),
            ("ErrorUrl", "https://ivr.example.com/voice/gather"),
        ],
    )
    .await;
    assert!(call.says().contains("technical problem"));
    assert!(call.twiml.first("Dial").is_some());
    let rec = call.record().await;
    assert!(rec["last_error"].as_str().unwrap().contains("11200"));
}

#[tokio::test]
async fn the_fallback_url_respects_the_managers_hours_override() {
    let app = spawn_app().await;
    app.set_override(serde_json::json!("closed")).await;
    let mut call = app.call(GUEST_CARE).await;
    call.post(
        "/voice/fallback",
        &[
            ("ErrorCode", "11200"),
            ("ErrorUrl", "https://ivr.example.com/voice/gather?seq=2"),
        ],
    )
    .await;
    assert!(call.twiml.first("Dial").is_none(), "{}", call.xml);
    assert!(call.says().contains("Guest Care is closed"));
    assert!(call.twiml.first("Record").is_some());
    assert_eq!(call.ticket_categories().await, ["Follow-Up"]);
}

#[tokio::test]
async fn a_retried_webhook_writes_its_records_once_and_answers_the_same() {
    let app = spawn_app().await;
    let mut call = app.call(STORE).await;
    call.press("2").await;
    let action = call.gather_action();
    let mut answers = Vec::new();
    for _ in 0..3 {
        call.post(&action, &[("Digits", "1")]).await;
        answers.push(call.xml.clone());
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]));
    let rec = call.record().await;
    assert_eq!(rec["tickets"].as_array().unwrap().len(), 1);
    let steps = rec["steps"].as_array().unwrap().len();
    call.post(&action, &[("Digits", "1")]).await;
    assert_eq!(
        call.record().await["steps"].as_array().unwrap().len(),
        steps
    );
}

#[tokio::test]
async fn a_body_over_64_kilobytes_gets_413() {
    let app = spawn_app().await;
    let mut p = incoming("CAbig000001");
    p.push(("Padding".into(), "x".repeat(70 * 1024)));
    let answer = app.post_signed(&app.url("/voice/incoming"), &p).await;
    assert_eq!(answer.status, 413);
    assert_eq!(
        app.api("/api/calls").await["calls"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn a_non_utf8_parameter_still_gets_twiml() {
    let app = spawn_app().await;
    let body = "CallSid=CAbytes00001&From=%FF%FE%FD&To=%2B18007373233";
    let res = app
        .http
        .post(format!("{}/voice/incoming", app.addr))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "X-Twilio-Signature",
            ivr::signature::compute(AUTH_TOKEN, &app.url("/voice/incoming"), &form_pairs(body)),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    parse_twiml(&res.text().await.unwrap());
}

fn form_pairs(body: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    let h = app
        .http
        .get(format!("{}/healthz", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 200);
    let r = app
        .http
        .get(format!("{}/readyz", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
