//! The flow engine without HTTP: every path through the shipped flows (`ivr_flows/`),
//! taken key by key through `engine::step` with a fixed time, in a table: where the caller
//! ends up, which tickets were opened, the outcome recorded, and what was said. The HTTP
//! stories (`store_line.rs`, `guest_care_line.rs`, …) stay as smoke tests of the edge.

use chrono::{DateTime, Duration, TimeZone, Utc};
use ivr::config::{Config, Target};
use ivr::flow::engine::{self, Action, CallState, EngineError, Env, Input};
use ivr::flow::FlowSet;
use ivr::records::{ExistingTicket, Record};
use std::collections::BTreeMap;

/// Where a walk through the flows ended.
#[derive(Debug, PartialEq)]
enum End {
    /// Transferred to a configured target.
    Dial(Target),
    /// Put in a queue.
    Queue(String),
    /// Asked for a voicemail.
    Voicemail,
    /// Hung up.
    Hangup,
    /// Still waiting for a key when the keys ran out.
    Waiting,
}

/// What a walk produced.
#[derive(Debug)]
struct Walked {
    end: End,
    tickets: Vec<String>,
    outcome: Option<String>,
    said: String,
    /// The labels of the menu options chosen, in order.
    concerns: Vec<String>,
}

fn config() -> Config {
    Config::from_toml("").expect("the default configuration")
}

/// What a step knows besides the call: a first-time caller at Store 1.
fn env<'a>(
    config: &'a Config,
    now: DateTime<Utc>,
    caller_tickets: Option<&'a BTreeMap<String, Option<ExistingTicket>>>,
) -> Env<'a> {
    Env {
        config,
        now,
        hours_override: None,
        store_name: "Store 1",
        caller: "+12045551234",
        call_sid: "CA00000000000000000000000000000001",
        facts: None,
        caller_tickets,
        agent_leg: None,
    }
}

fn flows(config: &Config) -> FlowSet {
    ivr::flow::load_dir(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/ivr_flows")),
        config,
    )
    .expect("the shipped flows load")
}

/// A time in the week ahead of 1 December 2026 at which Guest Care is open (or closed).
fn a_time(config: &Config, open: bool) -> DateTime<Utc> {
    let monday = Utc
        .with_ymd_and_hms(2026, 11, 30, 0, 30, 0)
        .single()
        .expect("a date");
    (0..7 * 24)
        .map(|h| monday + Duration::hours(h))
        .find(|t| config.schedule.is_open(*t, None) == open)
        .expect("open and closed hours in a week")
}

/// Takes a call from the start of `flow`, pressing `keys` one Gather after another, and
/// answering the engine's questions as the edge does for a first-time caller with no
/// ticket.
fn walk(flows: &FlowSet, config: &Config, flow: &str, keys: &[&str], now: DateTime<Utc>) -> Walked {
    let mut input = Input::Enter(flows.start(flow).expect("a start node"));
    let mut state = CallState {
        has_ticket: Some(false),
        seq: 0,
        vars: Default::default(),
    };
    let mut caller_tickets: BTreeMap<String, Option<ExistingTicket>> = BTreeMap::new();
    let mut keys = keys.iter();
    let mut walked = Walked {
        end: End::Waiting,
        tickets: Vec::new(),
        outcome: None,
        said: String::new(),
        concerns: Vec::new(),
    };
    for _ in 0..50 {
        let env = env(config, now, Some(&caller_tickets));
        let step = match engine::step(flows, &env, state.clone(), input.clone()) {
            Ok(step) => step,
            Err(EngineError::NeedsCallerTicket { node }) => {
                caller_tickets.insert(node, None);
                continue;
            }
            Err(e) => panic!("{flow} {keys:?}: {e}"),
        };
        for r in &step.records {
            match r {
                Record::Ticket { category, .. } => {
                    walked.tickets.push(category.clone());
                    state.has_ticket = Some(true);
                }
                Record::Outcome { value, replace } if *replace || walked.outcome.is_none() => {
                    walked.outcome = Some(value.clone());
                }
                Record::Step(s) => {
                    walked.said.push_str(&s.said.written(None));
                    walked.said.push('\n');
                    if let Some(label) = s.data.get(engine::CHOSEN_LABEL) {
                        walked.concerns.push(label.clone());
                    }
                }
                _ => {}
            }
        }
        let next = step.actions.iter().find_map(|a| match a {
            Action::Gather { action, .. } => Some(Ok(action.clone())),
            Action::Dial { target, .. } => Some(Err(End::Dial(target.clone()))),
            Action::Enqueue { queue, .. } => Some(Err(End::Queue(queue.clone()))),
            Action::Record { .. } => Some(Err(End::Voicemail)),
            Action::Hangup => Some(Err(End::Hangup)),
            _ => None,
        });
        match next {
            Some(Ok(link)) => {
                let Some(key) = keys.next() else {
                    return walked;
                };
                state.seq = link.seq;
                state.vars = link.vars.clone();
                input = Input::Gather {
                    node: link.node.clone(),
                    attempt: link.attempt,
                    digits: Some(key.to_string()),
                    phase: link.phase,
                    pending: link.pending.clone(),
                };
            }
            Some(Err(end)) => {
                walked.end = end;
                return walked;
            }
            None => panic!(
                "{flow}: a step that neither waits nor ends: {:?}",
                step.actions
            ),
        }
    }
    panic!("{flow} {keys:?}: more than 50 steps");
}

/// A path: the flow, the keys, whether Guest Care is open, where it ends, the tickets
/// opened and the outcome recorded.
type Row = (
    &'static str,
    &'static [&'static str],
    bool,
    End,
    &'static [&'static str],
    Option<&'static str>,
);

fn target(config: &Config, name: &str) -> End {
    End::Dial(
        config
            .targets
            .get(name)
            .cloned()
            .expect("a configured target"),
    )
}

#[test]
fn every_menu_path_of_the_shipped_flows_ends_where_the_procedures_say() {
    let config = config();
    let flows = flows(&config);
    let open = a_time(&config, true);
    let closed = a_time(&config, false);
    let escalation_queue = match config.targets.get("escalation_queue") {
        Some(Target::Queue { name }) => End::Queue(name.clone()),
        other => panic!("the escalation queue is a queue: {other:?}"),
    };
    let table: Vec<Row> = vec![
        (
            "store",
            &["1", "1"],
            true,
            target(&config, "escalation"),
            &["Follow-Up"],
            Some("transferring:escalation"),
        ),
        (
            "store",
            &["1", "2", "1"],
            true,
            target(&config, "oom"),
            &["Initial"],
            Some("transferring:oom"),
        ),
        (
            "store",
            &["1", "2", "2"],
            true,
            target(&config, "after_sales"),
            &["Initial"],
            Some("transferring:after_sales"),
        ),
        (
            "store",
            &["2", "1"],
            true,
            target(&config, "oom"),
            &["OOM"],
            Some("transferring:oom"),
        ),
        (
            "store",
            &["2", "2"],
            true,
            target(&config, "after_sales"),
            &["Initial"],
            Some("transferring:after_sales"),
        ),
        (
            "store",
            &["2", "3", "1"],
            true,
            target(&config, "oom"),
            &[],
            Some("transferring:oom"),
        ),
        (
            "store",
            &["2", "3", "3", "1"],
            true,
            target(&config, "escalation"),
            &["Initial"],
            Some("transferring:escalation"),
        ),
        (
            "store",
            &["2", "4", "1"],
            true,
            target(&config, "oom"),
            &["Follow-Up"],
            Some("transferring:oom"),
        ),
        (
            "store",
            &["2", "4", "2"],
            true,
            target(&config, "oom"),
            &["OOM"],
            Some("transferring:oom"),
        ),
        (
            "store",
            &["7", "2"],
            true,
            target(&config, "escalation"),
            &["Follow-Up"],
            Some("transferring:escalation"),
        ),
        (
            "store",
            &["7", "1"],
            true,
            End::Voicemail,
            &["Follow-Up"],
            None,
        ),
        (
            "guest_care",
            &["2"],
            true,
            target(&config, "after_sales"),
            &[],
            Some("transferring:after_sales"),
        ),
        (
            "guest_care",
            &["5"],
            true,
            escalation_queue,
            &[],
            Some("transferring:escalation_queue"),
        ),
        (
            "guest_care",
            &["1", "1"],
            true,
            target(&config, "oom"),
            &["OOM"],
            Some("transferring:oom"),
        ),
        // Closed: the transfer becomes a voicemail, and a ticket is opened for the call
        // back unless the path opened one already.
        (
            "store",
            &["1", "2", "1"],
            false,
            End::Voicemail,
            &["Initial"],
            None,
        ),
        (
            "guest_care",
            &["2"],
            false,
            End::Voicemail,
            &["Follow-Up"],
            None,
        ),
        (
            "store",
            &["7", "2"],
            false,
            End::Voicemail,
            &["Follow-Up"],
            None,
        ),
    ];
    let mut failures = Vec::new();
    for (flow, keys, is_open, end, tickets, outcome) in table {
        let now = if is_open { open } else { closed };
        let w = walk(&flows, &config, flow, keys, now);
        let got_outcome = w
            .outcome
            .as_deref()
            .filter(|o| o.starts_with("transferring"));
        if w.end != end || w.tickets != tickets || got_outcome != outcome {
            failures.push(format!(
                "{flow} {keys:?} ({}): ended {:?}, tickets {:?}, outcome {:?}; expected {end:?}, {tickets:?}, {outcome:?}\n{}",
                if is_open { "open" } else { "closed" },
                w.end,
                w.tickets,
                w.outcome,
                w.said
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_wrong_key_is_explained_and_three_end_in_the_menu_s_fallback() {
    let config = config();
    let flows = flows(&config);
    let open = a_time(&config, true);
    let once = walk(&flows, &config, "store", &["9"], open);
    assert_eq!(once.end, End::Waiting, "asked again");
    let thrice = walk(&flows, &config, "store", &["9", "9", "9"], open);
    assert_ne!(
        thrice.end,
        End::Waiting,
        "the fallback after the third: {thrice:?}"
    );
    assert!(thrice.said.matches('\n').count() >= 3, "{}", thrice.said);
}

#[test]
fn a_ticket_number_said_to_the_caller_is_a_typed_part_until_the_commit() {
    let config = config();
    let flows = flows(&config);
    let closed = a_time(&config, false);
    // The summons path speaks the ticket number after the voicemail.
    let w = walk(&flows, &config, "store", &["7", "1"], closed);
    assert_eq!(w.end, End::Voicemail);
    let env = env(&config, closed, None);
    let node = ivr::flow::NodeRef::parse_qualified("legal.summons_voicemail").expect("a node");
    let step = engine::step(
        &flows,
        &env,
        CallState {
            has_ticket: Some(true),
            seq: 3,
            vars: Default::default(),
        },
        Input::Recorded {
            node,
            url: Some("https://api.twilio.com/rec/RE1".into()),
            duration: Some(12),
        },
    )
    .expect("a step");
    let spoken: Vec<_> = step
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Say(s) => Some(s),
            _ => None,
        })
        .collect();
    let goodbye = spoken
        .iter()
        .find(|s| s.has_ticket())
        .expect("the goodbye speaks the ticket number");
    let t = ivr::domain::TicketNumber(42);
    assert!(goodbye
        .spoken(Some(&t))
        .contains(&format!("ticket {}", t.spoken())));
    assert!(goodbye.spoken(None).contains("your ticket"));
    assert!(!goodbye.spoken(None).contains('{'), "no placeholder left");
}

#[test]
fn each_menu_choice_records_its_label_the_concern_in_words() {
    let config = config();
    let flows = flows(&config);
    let open = a_time(&config, true);
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "store",
            &["1", "2", "1"],
            &[
                "the purchase was delivered",
                "a new concern",
                "the order or delivery",
            ],
        ),
        (
            "guest_care",
            &["1", "3", "1"],
            &[
                "an order or a delivery",
                "cancelling the order",
                "the promised delivery date was missed or changed",
            ],
        ),
        (
            "store",
            &["9", "7", "1"],
            &["a legal, insurance or agency matter", "a court summons"],
        ),
    ];
    for (flow, keys, concerns) in cases {
        let w = walk(&flows, &config, flow, keys, open);
        assert_eq!(&w.concerns, concerns, "{flow} {keys:?}");
    }
}
