//! Soft transfers, driven as Twilio drives them: the guest's leg dials with a whisper URL;
//! the agent's leg (its own CallSid, the guest's as `ParentCallSid`) fetches the whisper
//! and posts the agent's key; then the guest's Dial action arrives with `DialCallStatus`.
//! Every request is signed by the Twilio library. Each case asserts what the guest heard,
//! what the agent heard, and the records a manager reads.

mod common;

use common::*;
use serde_json::Value;

/// The extension targets and a store-line path to each: the keys, and the concern the
/// agent is told (the labels of the menu choices).
const TARGETS: [(&str, &[&str], &str); 2] = [
    (
        "oom",
        &["1", "2", "1"],
        "the purchase was delivered, then a new concern, then the order or delivery",
    ),
    (
        "after_sales",
        &["1", "2", "2"],
        "the purchase was delivered, then a new concern, then service or a repair",
    ),
];

/// A guest at the Polo Park store follows `keys` to the transfer.
async fn to_the_transfer<'a>(app: &'a TestApp, keys: &[&str]) -> Call<'a> {
    let mut call = app.call_from_another(STORE).await;
    for k in keys {
        call.press(k).await;
    }
    call
}

/// What the guest hears while the transfer rings: a `<Dial>` with `answerOnBridge` and
/// the whisper on its noun, and nothing of the announcement.
fn guest_hears_ringing(call: &Call<'_>, target: &str) {
    let dial = call.twiml.first("Dial").expect("a Dial");
    assert_eq!(dial.attr("answerOnBridge"), "true", "{}", call.xml);
    let sip = dial.first("Sip").expect("an extension is a SIP URI");
    assert!(
        sip.attr("url").contains("/voice/whisper?"),
        "{target}: {}",
        call.xml
    );
    assert_eq!(sip.attr("method"), "POST");
    assert!(
        !call.says().contains("Press 1"),
        "the whisper never reaches the guest"
    );
    documented_attributes_only(&call.twiml);
}

/// Twilio's documented attributes of the verbs and nouns this server writes.
fn documented_attributes_only(el: &El) {
    let allowed: &[&str] = match el.name.as_str() {
        "Dial" => &[
            "action",
            "method",
            "timeout",
            "callerId",
            "record",
            "answerOnBridge",
            "hangupOnStar",
            "timeLimit",
            "ringTone",
        ],
        "Number" => &[
            "sendDigits",
            "url",
            "method",
            "statusCallbackEvent",
            "statusCallback",
            "statusCallbackMethod",
            "machineDetection",
            "machineDetectionTimeout",
            "amdStatusCallback",
        ],
        "Sip" => &[
            "username",
            "password",
            "url",
            "method",
            "statusCallbackEvent",
            "statusCallback",
            "statusCallbackMethod",
        ],
        "Gather" => &[
            "input",
            "numDigits",
            "finishOnKey",
            "timeout",
            "action",
            "method",
            "actionOnEmptyResult",
        ],
        "Say" => &["voice", "language", "loop"],
        "Redirect" => &["method"],
        _ => &[],
    };
    for name in el.attrs.keys() {
        assert!(
            allowed.contains(&name.as_str()),
            "<{}> has {name}, not a documented attribute",
            el.name
        );
    }
    for child in &el.children {
        documented_attributes_only(child);
    }
}

/// What the agent hears: the line and store, the concern, the ticket, and the question.
fn agent_is_told(agent: &Call<'_>, concern: &str) -> String {
    let gather = agent.twiml.first("Gather").expect("the screening question");
    assert_eq!(gather.attr("numDigits"), "1");
    assert!(
        gather.attr("action").contains("/voice/screen?"),
        "{}",
        agent.xml
    );
    assert!(
        agent
            .twiml
            .first("Redirect")
            .is_some_and(|r| r.text.contains("silence=1")),
        "no key goes to the screen's silence redirect: {}",
        agent.xml
    );
    documented_attributes_only(&agent.twiml);
    let said = agent.says();
    assert!(
        said.contains("Guest Care transfer from the Polo Park store line."),
        "{said}"
    );
    assert!(
        said.contains(&format!("The guest's concern: {concern}.")),
        "{said}"
    );
    assert!(said.contains(", Initial."), "ticket and category: {said}");
    assert!(said.contains("Ticket G C"), "{said}");
    assert!(
        said.ends_with("Press 1 to take this call, or any other key to decline it."),
        "{said}"
    );
    said
}

/// The records of the transfer: (kind, digits, result) of the steps at the transfer node.
async fn transfer_steps(call: &Call<'_>) -> (Value, Vec<(String, String, String)>) {
    let rec = call.record().await;
    let steps = rec["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["node"].as_str().is_some_and(|n| n.ends_with("_transfer")))
        .map(|s| {
            (
                s["kind"].as_str().unwrap_or_default().to_string(),
                s["digits"].as_str().unwrap_or_default().to_string(),
                s["result"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    (rec, steps)
}

fn step(kind: &str, digits: &str, result: &str) -> (String, String, String) {
    (kind.into(), digits.into(), result.into())
}

/// The guest, not connected, gets what an unanswered transfer gives: the apology and the
/// voicemail, whose recording goes on the path's ticket; the call is never `transferred`.
async fn guest_gets_voicemail(call: &mut Call<'_>, target: &str, outcome: &str) {
    assert!(
        call.says()
            .contains("no one is available to take your call"),
        "{target}: {}",
        call.xml
    );
    assert!(call.twiml.first("Record").is_some(), "{}", call.xml);
    let rec = call.record().await;
    assert_eq!(rec["outcome"], format!("{outcome}:{target}"));
    call.leave_voicemail("https://api.twilio.com/recordings/RE7")
        .await;
    let rec = call.record().await;
    assert_eq!(rec["outcome"], "voicemail", "{target}");
    let tickets = rec["tickets"].as_array().expect("tickets");
    assert_eq!(tickets.len(), 1, "the path's ticket, no other");
    assert_eq!(tickets[0]["category"], "Initial");
    assert_eq!(
        tickets[0]["recording_url"],
        "https://api.twilio.com/recordings/RE7"
    );
}

#[tokio::test]
async fn an_agent_who_presses_1_is_connected_after_hearing_the_concern_and_ticket() {
    let app = spawn_at(monday_morning()).await;
    for (target, keys, concern) in TARGETS {
        let mut call = to_the_transfer(&app, keys).await;
        guest_hears_ringing(&call, target);
        let mut agent = call.agent_answers(Some("human")).await;
        let said = agent_is_told(&agent, concern);
        report(format!("{target}: the agent heard: {said}"));
        report(format!("{target}: the guest's Dial: {}", call.xml));
        agent.press("1").await;
        assert!(agent.twiml.verbs().is_empty(), "connected: {}", agent.xml);
        call.dial_ends("completed").await;
        assert!(call.hung_up(), "{}", call.xml);
        let (rec, steps) = transfer_steps(&call).await;
        assert_eq!(rec["outcome"], format!("transferred:{target}"));
        assert_eq!(
            steps,
            [
                step("transfer", "", &format!("transferring to {target}")),
                step("whisper", "", "announced"),
                step("screen", "1", "answered by agent"),
                step("transfer", "", "answered by agent"),
            ]
        );
        let whisper = rec["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kind"] == "whisper")
            .expect("the whisper step");
        assert_eq!(whisper["said"], said, "the call shows what the agent heard");
        let ticket = rec["tickets"][0]["number"].as_str().expect("a ticket");
        let digits: String = ticket.chars().filter(char::is_ascii_digit).collect();
        let spoken: Vec<String> = digits.chars().map(String::from).collect();
        assert!(said.contains(&spoken.join(" ")), "{said} names {ticket}");
    }
}

#[tokio::test]
async fn an_agent_who_presses_another_key_declines_and_the_guest_gets_voicemail() {
    let app = spawn_at(monday_morning()).await;
    for (target, keys, concern) in TARGETS {
        let mut call = to_the_transfer(&app, keys).await;
        guest_hears_ringing(&call, target);
        let mut agent = call.agent_answers(Some("human")).await;
        agent_is_told(&agent, concern);
        agent.press("3").await;
        assert!(agent.says().contains("Declined"), "{}", agent.xml);
        assert!(agent.hung_up(), "the agent's leg hangs up: {}", agent.xml);
        // The agent's leg answered, so the platform may say completed: the records decide.
        call.dial_ends("completed").await;
        let (_, steps) = transfer_steps(&call).await;
        assert_eq!(
            steps,
            [
                step("transfer", "", &format!("transferring to {target}")),
                step("whisper", "", "announced"),
                step("screen", "3", "declined"),
                step("transfer", "", "declined"),
            ]
        );
        guest_gets_voicemail(&mut call, target, "declined").await;
    }
}

#[tokio::test]
async fn an_agent_who_presses_nothing_is_hung_up_on_and_the_guest_gets_voicemail() {
    let app = spawn_at(monday_morning()).await;
    for (target, keys, concern) in TARGETS {
        let mut call = to_the_transfer(&app, keys).await;
        guest_hears_ringing(&call, target);
        let mut agent = call.agent_answers(Some("human")).await;
        agent_is_told(&agent, concern);
        agent.silence().await;
        assert_eq!(agent.twiml.verbs(), ["Hangup"], "{}", agent.xml);
        call.dial_ends("completed").await;
        let (_, steps) = transfer_steps(&call).await;
        assert_eq!(
            steps,
            [
                step("transfer", "", &format!("transferring to {target}")),
                step("whisper", "", "announced"),
                step("screen", "", "no key"),
                step("transfer", "", "not answered: no key pressed"),
            ]
        );
        guest_gets_voicemail(&mut call, target, "not_answered").await;
    }
}

#[tokio::test]
async fn an_answering_machine_is_hung_up_on_at_once_and_the_guest_gets_voicemail() {
    let app = spawn_at(monday_morning()).await;
    for (target, keys, _) in TARGETS {
        let mut call = to_the_transfer(&app, keys).await;
        guest_hears_ringing(&call, target);
        let agent = call.agent_answers(Some("machine_start")).await;
        assert_eq!(agent.twiml.verbs(), ["Hangup"], "{}", agent.xml);
        assert!(agent.says().is_empty(), "nothing told to a machine");
        call.dial_ends("completed").await;
        let (_, steps) = transfer_steps(&call).await;
        assert_eq!(
            steps,
            [
                step("transfer", "", &format!("transferring to {target}")),
                step("whisper", "", "answering machine"),
                step("transfer", "", "not answered: answering machine"),
            ]
        );
        guest_gets_voicemail(&mut call, target, "not_answered").await;
    }
}

#[tokio::test]
async fn an_agent_who_hangs_up_during_the_whisper_leaves_the_guest_to_voicemail() {
    let app = spawn_at(monday_morning()).await;
    for (target, keys, concern) in TARGETS {
        for status in ["completed", "no-answer"] {
            let mut call = to_the_transfer(&app, keys).await;
            guest_hears_ringing(&call, target);
            let agent = call.agent_answers(Some("human")).await;
            agent_is_told(&agent, concern);
            // The agent hangs up: no key, no redirect; only the guest's Dial action comes.
            call.dial_ends(status).await;
            let (_, steps) = transfer_steps(&call).await;
            assert_eq!(
                steps,
                [
                    step("transfer", "", &format!("transferring to {target}")),
                    step("whisper", "", "announced"),
                    step(
                        "transfer",
                        "",
                        "not answered: the agent hung up during the whisper"
                    ),
                ],
                "{status}"
            );
            guest_gets_voicemail(&mut call, target, "not_answered").await;
        }
    }
}

#[tokio::test]
async fn when_guest_care_is_closed_there_is_no_transfer_and_no_whisper() {
    let app = spawn_at(sunday_morning()).await;
    for (target, keys, _) in TARGETS {
        let call = to_the_transfer(&app, keys).await;
        assert!(call.twiml.first("Dial").is_none(), "{}", call.xml);
        assert!(
            call.says().contains("Guest Care is closed right now"),
            "{}",
            call.xml
        );
        assert!(call.twiml.first("Record").is_some(), "{}", call.xml);
        let (rec, steps) = transfer_steps(&call).await;
        assert_eq!(
            steps,
            [step(
                "transfer",
                "",
                &format!("{target} not reached: Guest Care closed")
            )]
        );
        assert!(
            !rec["outcome"]
                .as_str()
                .unwrap_or_default()
                .starts_with("transferr"),
            "{}",
            rec["outcome"]
        );
    }
}

#[tokio::test]
async fn an_agent_hears_a_repeat_callers_open_ticket_and_when_it_was_opened() {
    let app = spawn_at(monday_morning()).await;
    let guest = another_caller();
    // The first call leaves an OOM ticket open (delivery date, then no one answers).
    let mut first = app.call_from(STORE, &guest).await;
    first.press("2").await;
    first.press("1").await;
    first.dial_ends("no-answer").await;
    let earlier = first.record().await["tickets"][0]["number"]
        .as_str()
        .expect("the first call's ticket")
        .to_string();
    // The next day the guest calls about a repair.
    app.clock.set(winnipeg(2026, 11, 24, 9, 30));
    let mut call = app.call_from(STORE, &guest).await;
    for k in ["1", "2", "2"] {
        call.press(k).await;
    }
    let agent = call.agent_answers(Some("human")).await;
    let said = agent.says();
    let digits: String = earlier.chars().filter(char::is_ascii_digit).collect();
    let spoken: Vec<String> = digits.chars().map(String::from).collect();
    assert!(
        said.contains(&format!(
            "This guest called before: ticket G C {}, OOM, opened November 23rd, 2026, is still open.",
            spoken.join(" ")
        )),
        "{said}"
    );
    assert!(
        said.contains(", Initial."),
        "this call's own ticket too: {said}"
    );
}

#[tokio::test]
async fn the_guest_care_line_is_named_and_an_agent_leg_without_a_parent_is_hung_up() {
    let app = spawn_at(monday_morning()).await;
    let mut call = app.call_from_another(GUEST_CARE).await;
    call.press("2").await;
    let agent = call.agent_answers(Some("human")).await;
    assert!(
        agent
            .says()
            .starts_with("Guest Care transfer from the Guest Care line."),
        "{}",
        agent.xml
    );
    // A whisper request that names no call of ours connects nobody.
    let url = call.whisper_url().expect("a whisper");
    let mut stray = call.agent_answers(Some("human")).await;
    stray.leg.clear();
    stray.post(&url, &[]).await;
    assert_eq!(stray.twiml.verbs(), ["Hangup"], "{}", stray.xml);
}

#[tokio::test]
async fn a_number_without_screening_hears_the_announcement_then_is_connected() {
    let app = spawn_with(Options {
        toml: format!(
            "[lines.stores]\n\"{STORE}\" = \"Polo Park\"\n\
             [targets.oom]\nnumber = \"+12045550150\"\n"
        ),
        ..Options::default()
    })
    .await;
    let mut call = to_the_transfer(&app, &["1", "2", "1"]).await;
    let dial = call.twiml.first("Dial").expect("a Dial");
    assert_eq!(dial.attr("answerOnBridge"), "true");
    let number = dial.first("Number").expect("a number");
    assert!(
        number.attr("url").contains("/voice/whisper?"),
        "{}",
        call.xml
    );
    assert_eq!(number.attr("machineDetection"), "Enable");
    documented_attributes_only(&call.twiml);
    let agent = call.agent_answers(Some("human")).await;
    assert_eq!(agent.twiml.verbs(), ["Say"], "no question: {}", agent.xml);
    assert!(
        agent
            .says()
            .ends_with("Ticket G C 0 0 0 0 0 1, Initial. Connecting the guest now."),
        "{}",
        agent.says()
    );
    call.dial_ends("completed").await;
    assert!(call.hung_up());
    let (rec, steps) = transfer_steps(&call).await;
    assert_eq!(rec["outcome"], "transferred:oom");
    assert_eq!(
        steps,
        [
            step("transfer", "", "transferring to oom"),
            step("whisper", "", "announced"),
            step("transfer", "", "answered by agent"),
        ]
    );
    // A machine on a number is found by machine detection and never connected.
    let mut call = to_the_transfer(&app, &["1", "2", "1"]).await;
    let agent = call.agent_answers(Some("machine_end_beep")).await;
    assert_eq!(agent.twiml.verbs(), ["Hangup"], "{}", agent.xml);
    call.dial_ends("completed").await;
    guest_gets_voicemail(&mut call, "oom", "not_answered").await;
}
