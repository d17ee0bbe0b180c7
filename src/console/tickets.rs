//! The ticket queue: tabs (open, overdue, escalated, mine, resolved) with due timers, a
//! ticket's page with its trail, calls and e-mails, the actions that work it (assign, note,
//! resolve, reopen), and bulk actions on the whole filtered set.

use super::{
    caller_filter, category_filter, encode, local_time, render, Choice, Layout, PageError, Signed,
};
use crate::domain::TicketNumber;
use crate::state::AppState;
use crate::storage::{TicketChange, TicketDetail, TicketQuery, TicketView};
use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// Tickets on one page of the queue.
const PAGE: u32 = 50;
/// Tickets read at a time by a bulk action.
const BULK_BATCH: u32 = 200;
/// The most tickets one bulk action changes; the page says when more remain.
const BULK_MAX: usize = 1000;

/// The queue's tabs: value, label.
const TABS: &[(&str, &str)] = &[
    ("open", "Open"),
    ("overdue", "Overdue"),
    ("escalated", "Escalated"),
    ("mine", "Mine"),
    ("resolved", "Resolved"),
];

/// The queue's filters, as the page sends them (empty is "any"; the tab defaults to open).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct TicketFilters {
    tab: String,
    category: String,
    caller: String,
    cursor: String,
    /// What the last bulk action did, shown once.
    done: String,
}

impl TicketFilters {
    fn tab(&self) -> &str {
        match self.tab.as_str() {
            "" => "open",
            t => t,
        }
    }

    /// The query string of the tab and filters (no cursor).
    fn query_string(&self, tab: &str) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("tab", tab);
        for (k, v) in [("category", &self.category), ("caller", &self.caller)] {
            if !v.trim().is_empty() {
                q.append_pair(k, v.trim());
            }
        }
        q.finish()
    }

    /// The storage query of this tab and these filters for `me`.
    fn query(&self, me: &str, now: DateTime<Utc>, limit: u32) -> Result<TicketQuery, PageError> {
        let bad = |m: &str| PageError::BadRequest(m.to_string());
        let mut q = TicketQuery {
            limit,
            ..TicketQuery::default()
        };
        match self.tab() {
            "open" => q.status = Some("open".into()),
            "escalated" => q.status = Some("escalated".into()),
            "resolved" => q.status = Some("resolved".into()),
            "overdue" => q.overdue_at = Some(now),
            "mine" => {
                q.assignee = Some(me.to_string());
                q.unresolved = true;
            }
            _ => return Err(bad("There is no such tab.")),
        }
        q.category = category_filter(&self.category)?;
        q.caller = caller_filter(&self.caller)?;
        q.before_id = match self.cursor.trim() {
            "" => None,
            c => Some(
                TicketNumber::parse(c)
                    .map_err(|_| bad("That page link is not one the console gave out."))?
                    .0,
            ),
        };
        Ok(q)
    }
}

/// `3 h 20 min`, `2 d 4 h`, `12 min`.
fn span(d: chrono::Duration) -> String {
    let m = d.num_minutes().max(0);
    match (m / 1440, (m % 1440) / 60, m % 60) {
        (0, 0, min) => format!("{min} min"),
        (0, h, min) => format!("{h} h {min} min"),
        (days, h, _) => format!("{days} d {h} h"),
    }
}

/// The due timer of a ticket at `now`: `due in 3 h 20 min`, `overdue by 2 d 1 h`.
fn due_text(t: &TicketView, now: DateTime<Utc>) -> String {
    match (t.status.as_str(), t.due_at) {
        ("resolved", _) => "resolved".into(),
        (_, None) => "no due time".into(),
        (_, Some(due)) if due > now => format!("due in {}", span(due - now)),
        (_, Some(due)) => format!("overdue by {}", span(now - due)),
    }
}

/// A row of the queue.
struct Row {
    number: String,
    category: String,
    reason: String,
    caller: String,
    status: String,
    assignee: String,
    due: String,
    overdue: bool,
    opened: String,
    call_href: String,
}

impl Row {
    fn new(state: &AppState, t: &TicketView, now: DateTime<Utc>) -> Self {
        Self {
            number: t.number.clone(),
            category: t.category.clone(),
            reason: t.reason.clone(),
            caller: t.caller_number.clone(),
            status: t.status.clone(),
            assignee: t.assignee.clone().unwrap_or_else(|| "—".into()),
            due: due_text(t, now),
            overdue: t.overdue,
            opened: local_time(state, t.created_at),
            call_href: format!("/console/calls/{}", encode(&t.call_sid)),
        }
    }
}

/// A tab of the queue.
struct Tab {
    label: &'static str,
    href: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "console/tickets.html")]
struct QueuePage {
    layout: Layout,
    f: TicketFilters,
    tab: String,
    tabs: Vec<Tab>,
    categories: Vec<Choice>,
    people: Vec<String>,
    rows: Vec<Row>,
    error: Option<String>,
    done: Option<String>,
    next_href: Option<String>,
    first_href: Option<String>,
}

/// The names of the active accounts, to assign tickets to.
async fn people(state: &AppState) -> Result<Vec<String>, PageError> {
    Ok(state
        .console
        .list_users()
        .await?
        .into_iter()
        .filter(|u| !u.disabled)
        .map(|u| u.name)
        .collect())
}

/// `GET /console/tickets`.
pub async fn queue(
    State(state): State<AppState>,
    Extension(signed): Extension<Signed>,
    Query(f): Query<TicketFilters>,
) -> Result<Response, PageError> {
    let now = state.now();
    let tab = f.tab().to_string();
    let mut page = QueuePage {
        layout: Layout::new(&signed, "tickets"),
        tabs: TABS
            .iter()
            .map(|(value, label)| Tab {
                label,
                href: format!("/console/tickets?{}", f.query_string(value)),
                current: *value == tab,
            })
            .collect(),
        categories: Choice::list(
            crate::domain::CATEGORIES.iter().map(|c| (*c, *c)),
            &f.category,
        ),
        people: people(&state).await?,
        rows: Vec::new(),
        error: None,
        done: Some(f.done.clone()).filter(|d| !d.is_empty()),
        next_href: None,
        first_href: None,
        tab,
        f,
    };
    let status = match page.f.query(&signed.user.name, now, PAGE) {
        Ok(q) => {
            let mut tickets = state.store.list_tickets(&q).await?;
            for t in &mut tickets {
                t.mark_overdue(now);
            }
            page.rows = tickets.iter().map(|t| Row::new(&state, t, now)).collect();
            let qs = page.f.query_string(&page.tab);
            page.next_href = (tickets.len() == PAGE as usize)
                .then(|| tickets.last())
                .flatten()
                .map(|t| format!("/console/tickets?{qs}&cursor={}", t.number));
            page.first_href = q
                .before_id
                .is_some()
                .then(|| format!("/console/tickets?{qs}"));
            StatusCode::OK
        }
        Err(PageError::BadRequest(m)) => {
            page.error = Some(m);
            StatusCode::BAD_REQUEST
        }
        Err(e) => return Err(e),
    };
    let mut res = render(&page);
    *res.status_mut() = status;
    Ok(res)
}

/// What a person asks of one ticket or of the filtered set: the action and its fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ActionForm {
    action: String,
    assignee: String,
    note: String,
    resolution: String,
    // The filters, for a bulk action.
    tab: String,
    category: String,
    caller: String,
}

impl ActionForm {
    /// The checked change, made by `by`.
    fn change(&self, by: &str) -> Result<TicketChange, PageError> {
        let checked = match self.action.as_str() {
            "assign" => {
                let to = Some(self.assignee.trim()).filter(|a| !a.is_empty());
                TicketChange::checked(by, None, None, Some(to), None)
            }
            "note" => TicketChange::checked(by, None, None, None, Some(&self.note)),
            "resolve" => {
                TicketChange::checked(by, Some("resolved"), Some(&self.resolution), None, None)
            }
            "reopen" => TicketChange::checked(by, Some("open"), None, None, None),
            _ => Err("Choose assign, note, resolve or reopen.".into()),
        };
        checked.map_err(PageError::BadRequest)
    }
}

#[derive(Template)]
#[template(path = "console/ticket.html")]
struct TicketPage {
    layout: Layout,
    t: TicketDetail,
    due: String,
    opened: String,
    people: Vec<String>,
    events: Vec<(String, String, String, String)>,
    calls: Vec<(String, String, String, String)>,
    error: Option<String>,
}

async fn ticket_page(
    state: &AppState,
    signed: &Signed,
    number: TicketNumber,
    status: StatusCode,
    error: Option<String>,
) -> Result<Response, PageError> {
    let mut t = state
        .work
        .get_ticket(number)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("There is no ticket {number}.")))?;
    let now = state.now();
    t.ticket.mark_overdue(now);
    let events = t
        .events
        .iter()
        .map(|e| {
            (
                local_time(state, e.at),
                e.by.clone(),
                e.action.clone(),
                e.detail.clone(),
            )
        })
        .collect();
    let calls = t
        .calls
        .iter()
        .map(|c| {
            (
                format!("/console/calls/{}", encode(&c.call_sid)),
                local_time(state, c.started_at),
                c.relation.clone(),
                c.outcome.clone().unwrap_or_else(|| "—".into()),
            )
        })
        .collect();
    let mut res = render(&TicketPage {
        layout: Layout::new(signed, "tickets"),
        due: due_text(&t.ticket, now),
        opened: local_time(state, t.ticket.created_at),
        people: people(state).await?,
        events,
        calls,
        error,
        t,
    });
    *res.status_mut() = status;
    Ok(res)
}

fn ticket_number(raw: &str) -> Result<TicketNumber, PageError> {
    TicketNumber::parse(raw).map_err(|_| PageError::NotFound(format!("There is no ticket {raw}.")))
}

/// `GET /console/tickets/{number}`.
pub async fn ticket(
    State(state): State<AppState>,
    Extension(signed): Extension<Signed>,
    Path(number): Path<String>,
) -> Result<Response, PageError> {
    ticket_page(
        &state,
        &signed,
        ticket_number(&number)?,
        StatusCode::OK,
        None,
    )
    .await
}

/// `POST /console/tickets/{number}`: one action on one ticket; back to its page.
pub async fn act(
    State(state): State<AppState>,
    Extension(signed): Extension<Signed>,
    Path(number): Path<String>,
    Form(f): Form<ActionForm>,
) -> Result<Response, PageError> {
    let number = ticket_number(&number)?;
    let change = match f.change(&signed.user.name) {
        Ok(c) => c,
        Err(PageError::BadRequest(m)) => {
            return ticket_page(&state, &signed, number, StatusCode::BAD_REQUEST, Some(m)).await
        }
        Err(e) => return Err(e),
    };
    state
        .work
        .update_ticket(number, &change, state.now())
        .await?
        .ok_or_else(|| PageError::NotFound(format!("There is no ticket {number}.")))?;
    tracing::info!(ticket = %number, by = %change.by, action = %f.action, "ticket changed in the console");
    Ok(Redirect::to(&format!("/console/tickets/{number}")).into_response())
}

/// `POST /console/tickets/bulk`: one action on every ticket of the filtered set (all pages,
/// up to 1,000 at a time), then back to the queue with what was done.
pub async fn bulk(
    State(state): State<AppState>,
    Extension(signed): Extension<Signed>,
    Form(f): Form<ActionForm>,
) -> Result<Response, PageError> {
    let filters = TicketFilters {
        tab: f.tab.clone(),
        category: f.category.clone(),
        caller: f.caller.clone(),
        ..TicketFilters::default()
    };
    let now = state.now();
    let mut q = filters.query(&signed.user.name, now, BULK_BATCH)?;
    let change = f.change(&signed.user.name)?;
    let mut numbers = Vec::new();
    // The set is read first, then changed: a change that moves a ticket out of the set
    // (resolving the open tab) does not shift the pages being read.
    while numbers.len() <= BULK_MAX {
        let page = state.store.list_tickets(&q).await?;
        let Some(last) = page.last() else { break };
        q.before_id = TicketNumber::parse(&last.number).ok().map(|n| n.0);
        // A ticket already where the action would put it is left alone (resolving the
        // resolved tab again would overwrite how each was resolved).
        numbers.extend(
            page.iter()
                .filter(|t| change.status.as_deref() != Some(t.status.as_str()))
                .filter_map(|t| TicketNumber::parse(&t.number).ok()),
        );
        if page.len() < BULK_BATCH as usize || q.before_id.is_none() {
            break;
        }
    }
    let more = numbers.len() > BULK_MAX;
    numbers.truncate(BULK_MAX);
    for n in &numbers {
        state.work.update_ticket(*n, &change, now).await?;
    }
    let what = match f.action.as_str() {
        "assign" if change.assignee == Some(None) => "unassigned".to_string(),
        "assign" => format!("assigned to {}", f.assignee.trim()),
        "note" => "noted".into(),
        "resolve" => "resolved".into(),
        _ => "reopened".into(),
    };
    let done = format!(
        "{} tickets {what}.{}",
        numbers.len(),
        if more {
            " More remain: apply it again for the next 1,000."
        } else {
            ""
        }
    );
    let audit = signed.audit(
        "tickets.bulk",
        format!(
            "{done} (tab {}, {})",
            filters.tab(),
            filters.query_string(filters.tab())
        ),
        now,
    );
    state.console.audit(&audit).await?;
    let mut qs = form_urlencoded::Serializer::new(filters.query_string(filters.tab()));
    qs.append_pair("done", &done);
    Ok(Redirect::to(&format!("/console/tickets?{}", qs.finish())).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_a_person_says_them() {
        assert_eq!(span(chrono::Duration::minutes(12)), "12 min");
        assert_eq!(span(chrono::Duration::minutes(200)), "3 h 20 min");
        assert_eq!(span(chrono::Duration::minutes(3000)), "2 d 2 h");
    }
}
