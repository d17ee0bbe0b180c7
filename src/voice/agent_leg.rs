//! The agent's leg of a soft transfer: the whisper the agent hears when answering, and the
//! agent's key. Twilio fetches these for the dialled party (the noun's `url`), with the
//! guest's call as `ParentCallSid`; their records go to the guest's call. Whatever fails
//! here, the agent's leg is hung up: the guest is never connected to an agent who was not
//! told of the call, and gets the transfer's failed route (voicemail and a ticket).

use super::{step_and_commit, CallCtx, InFlight, TwiML, STEP_DEADLINE};
use crate::domain::{CallSid, Digits, PhoneNumber, TicketNumber};
use crate::flow::engine::{self, AgentBrief, Input, TicketBrief, Vars};
use crate::flow::NodeRef;
use crate::state::AppState;
use crate::storage::{CallDetail, CallInfo, CallerMatch, TicketQuery, TicketView};
use crate::twiml;
use crate::voice::safe_route::{Before, ERROR_RECORD_DEADLINE};
use crate::voice::Webhook;
use axum::extract::State;

/// `POST /voice/whisper`: the agent answered a soft transfer; the announcement.
pub async fn whisper(State(state): State<AppState>, hook: Webhook) -> TwiML {
    agent_guarded(state, hook, "whisper").await
}

/// `POST /voice/screen`: the agent's key after the announcement, or the redirect after none.
pub async fn screen(State(state): State<AppState>, hook: Webhook) -> TwiML {
    let event = if hook.url.silence {
        "screen_silence"
    } else {
        "screen"
    };
    agent_guarded(state, hook, event).await
}

/// Runs an agent's-leg webhook on its own task under the step deadline; any failure hangs
/// up the agent's leg.
async fn agent_guarded(state: AppState, hook: Webhook, event: &'static str) -> TwiML {
    let started = std::time::Instant::now();
    let _in_flight = InFlight::enter(&state.metrics.in_flight);
    let task = {
        let state = state.clone();
        tokio::spawn(async move { agent_step(&state, &hook, event).await })
    };
    let abort = task.abort_handle();
    let failure = match tokio::time::timeout(STEP_DEADLINE, task).await {
        Ok(Ok(Ok(answer))) => Ok(answer),
        Ok(Ok(Err(why))) => Err(why),
        Ok(Err(e)) => Err(format!("the agent's leg webhook failed: {e}")),
        Err(_) => {
            abort.abort();
            Err(format!("no answer within {} s", STEP_DEADLINE.as_secs()))
        }
    };
    let answer = failure.unwrap_or_else(|why| {
        state.metrics.webhook(event, "error");
        state.metrics.errors.with_label_values(&["agent_leg"]).inc();
        tracing::error!(
            event,
            error = %crate::domain::redact_numbers(&why),
            "agent's leg hung up: the guest gets the transfer's failed route"
        );
        hang_up(&state)
    });
    state
        .metrics
        .latency
        .with_label_values(&[event])
        .observe(started.elapsed().as_secs_f64());
    answer
}

fn hang_up(state: &AppState) -> TwiML {
    TwiML(twiml::render(&[engine::Action::Hangup], &state.style, None))
}

async fn agent_step(
    state: &AppState,
    hook: &Webhook,
    event: &'static str,
) -> Result<TwiML, String> {
    let parent = hook
        .param("ParentCallSid")
        .and_then(|s| CallSid::parse(s).ok())
        .ok_or("no valid ParentCallSid: not the agent's leg of a call of ours")?;
    let node = hook.url.node().map_err(|e| e.to_string())?;
    // The guest's call as committed; unreadable (the database down), the agent still hears
    // the line and the screening question, and the records go to the journal.
    let detail = match read(state.store.get_call(parent.as_str())).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(call_sid = %parent, error = %e, "whisper: the guest's call unreadable");
            None
        }
    };
    let info = call_info(state, hook, &parent, &node, detail.as_ref());
    let input = match event {
        "whisper" => Input::Whisper {
            brief: brief(state, &info, detail.as_ref()).await,
            node,
            machine: engine::is_machine(hook.param("AnsweredBy")),
        },
        "screen" => Input::Screen {
            node,
            // Keys other than 0-9, * and # cannot come from a keypad: a wrong key.
            digits: Some(
                hook.param("Digits")
                    .and_then(|d| Digits::parse(d).ok())
                    .map(|d| d.as_str().to_string())
                    .unwrap_or_else(|| "?".into()),
            ),
        },
        _ => Input::Screen { node, digits: None },
    };
    let seq = hook.url.seq;
    let ctx = CallCtx {
        sid: Some(parent),
        from: PhoneNumber::parse(&info.from),
        info,
        event,
        seq,
        key: format!("{seq}:{event}"),
        before: Before::Nothing,
        vars: Vars::default(),
    };
    step_and_commit(state, &ctx, Ok(input))
        .await
        .map_err(|f| f.message)
}

/// A read on the agent's leg, bounded: the agent is waiting, and the guest hears ringing.
async fn read<T>(
    lookup: impl std::future::Future<Output = crate::storage::StoreResult<T>>,
) -> crate::storage::StoreResult<T> {
    tokio::time::timeout(ERROR_RECORD_DEADLINE, lookup)
        .await
        .unwrap_or(Err(crate::storage::StoreError::timed_out("a whisper read")))
}

/// The guest's call: as committed, or, unreadable, what the agent's leg tells of it.
fn call_info(
    state: &AppState,
    hook: &Webhook,
    parent: &CallSid,
    node: &NodeRef,
    detail: Option<&CallDetail>,
) -> CallInfo {
    match detail {
        Some(d) => CallInfo {
            call_sid: d.call.call_sid.clone(),
            line: d.call.line.clone(),
            store_name: d.call.store_name.clone(),
            from: d.call.from.clone(),
            to: d.call.to.clone(),
            flow: d.call.flow.clone(),
            flow_version: d.call.flow_version.clone(),
        },
        None => CallInfo {
            call_sid: parent.to_string(),
            line: if node.flow == state.config.guest_care_flow {
                "guest_care".into()
            } else {
                "store".into()
            },
            store_name: None,
            // The agent's leg shows the guest's number as its caller ID.
            from: PhoneNumber::parse(hook.param("From").unwrap_or(""))
                .as_str()
                .into(),
            to: String::new(),
            flow: node.flow.clone(),
            flow_version: state.flows.version.clone(),
        },
    }
}

/// What the agent is told: the line, the concern from the menu choices' labels, the
/// call's ticket, and the caller's open ticket from an earlier call.
async fn brief(state: &AppState, info: &CallInfo, detail: Option<&CallDetail>) -> AgentBrief {
    let mut brief = AgentBrief {
        line: info.line.clone(),
        store_name: info.store_name.clone(),
        ..AgentBrief::default()
    };
    let Some(d) = detail else {
        return brief;
    };
    brief.concerns = d
        .steps
        .iter()
        .filter_map(|s| s.data.get(engine::CHOSEN_LABEL).cloned())
        .collect();
    brief.ticket = d
        .tickets
        .last()
        .and_then(|t| ticket_brief(t, t.relation.as_deref().is_some_and(|r| r != "opened")));
    let Ok(caller) = CallerMatch::parse(&d.call.from) else {
        return brief;
    };
    let query = TicketQuery {
        caller: Some(caller),
        limit: 20,
        ..TicketQuery::default()
    };
    match read(state.store.list_tickets(&query)).await {
        Ok(tickets) => {
            brief.earlier = tickets
                .iter()
                .filter(|t| matches!(t.status.as_str(), "open" | "escalated"))
                .filter(|t| t.call_sid != d.call.call_sid)
                .find(|t| !d.tickets.iter().any(|mine| mine.number == t.number))
                .and_then(|t| ticket_brief(t, true));
        }
        Err(e) => {
            tracing::warn!(call_sid = %d.call.call_sid, error = %e, "whisper: the caller's tickets unreadable");
        }
    }
    brief
}

fn ticket_brief(t: &TicketView, earlier_call: bool) -> Option<TicketBrief> {
    Some(TicketBrief {
        number: TicketNumber::parse(&t.number).ok()?,
        category: t.category.clone(),
        opened_at: t.created_at,
        earlier_call,
    })
}
