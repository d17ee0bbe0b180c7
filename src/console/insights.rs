//! Insights: calls per day and per hour of the day, outcomes, transfers by target, tickets
//! by category, abandonment in menus and in the queue, and a drop-off funnel per menu node,
//! as server-rendered SVG charts with their figures; and the job that rolls hours up.

use super::svg::{bars, columns, Bar};
use super::{render, Layout, PageError, Signed};
use crate::state::AppState;
use crate::storage::insights::Counts;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use chrono::{Duration, NaiveDate, Timelike};
use serde::Deserialize;
use std::collections::BTreeMap;

/// How long after an hour ends it is rolled up (its calls have ended by then).
const ROLL_UP_AFTER: Duration = Duration::hours(3);
/// How often the roll-up job runs.
const ROLL_UP_EVERY: std::time::Duration = std::time::Duration::from_secs(300);
/// The longest range a page shows.
const MAX_DAYS: i64 = 92;

/// Rolls up the hours for insights every 5 minutes while serving (all past hours at the
/// first run on a database that has none).
pub fn spawn_rollups(state: &AppState) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(ROLL_UP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match state.insights.roll_up(state.now() - ROLL_UP_AFTER).await {
                Ok(0) => {}
                Ok(hours) => tracing::info!(hours, "insights rolled up"),
                Err(e) => tracing::warn!(error = %e, "insights roll-up failed; tried again later"),
            }
        }
    });
}

/// The date range, as the form sends it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Range {
    from: String,
    to: String,
}

/// A chart and its figures.
struct Chart {
    id: &'static str,
    title: String,
    svg: String,
    figures: Vec<Bar>,
}

/// A menu node's funnel row.
struct Funnel {
    node: String,
    reached: u64,
    chose: u64,
    left: u64,
    kept: String,
}

#[derive(Template)]
#[template(path = "console/insights.html")]
struct InsightsPage {
    layout: Layout,
    from: String,
    to: String,
    tz: String,
    total: u64,
    error: Option<String>,
    charts: Vec<Chart>,
    abandoned_menus: u64,
    abandoned_queue: u64,
    funnel: Vec<Funnel>,
}

fn chart(id: &'static str, title: &str, figures: Vec<Bar>, columns_every: Option<usize>) -> Chart {
    let svg = match columns_every {
        Some(every) => columns(title, &figures, every),
        None => bars(title, &figures),
    };
    Chart {
        id,
        title: title.to_string(),
        svg,
        figures,
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "—".into()
    } else {
        format!("{:.0}%", part as f64 * 100.0 / whole as f64)
    }
}

/// The charts of the counts, days `from..=to` in Guest Care time.
fn charts(state: &AppState, counts: &Counts, from: NaiveDate, to: NaiveDate) -> Vec<Chart> {
    let tz = state.config.schedule.tz;
    let mut per_day: BTreeMap<NaiveDate, u64> = from
        .iter_days()
        .take_while(|d| *d <= to)
        .map(|d| (d, 0))
        .collect();
    let mut per_hour = [0u64; 24];
    for (hour, calls) in &counts.hours {
        let local = hour.with_timezone(&tz);
        *per_day.entry(local.date_naive()).or_default() += calls;
        per_hour[local.hour() as usize] += calls;
    }
    let outcomes: Vec<Bar> = counts
        .outcomes
        .iter()
        .map(|(o, n)| {
            let o = if o.is_empty() {
                "(none yet)"
            } else {
                o.as_str()
            };
            (o.to_string(), *n)
        })
        .collect();
    let transfers: Vec<Bar> = counts
        .outcomes
        .iter()
        .filter_map(|(o, n)| Some((o.strip_prefix("transferred:")?.to_string(), *n)))
        .collect();
    let days = per_day.len();
    vec![
        chart(
            "per-day",
            "Calls per day",
            per_day
                .into_iter()
                .map(|(d, n)| (d.format("%-d %b").to_string(), n))
                .collect(),
            Some(days.div_ceil(10).max(1)),
        ),
        chart(
            "per-hour",
            "Calls per hour of the day",
            per_hour
                .iter()
                .enumerate()
                .map(|(h, n)| (format!("{h:02}"), *n))
                .collect(),
            Some(3),
        ),
        chart("outcomes", "Outcomes", outcomes, None),
        chart("transfers", "Transfers by target", transfers, None),
        chart(
            "tickets",
            "Tickets opened by category",
            counts.tickets.clone(),
            None,
        ),
    ]
}

/// `GET /console/insights`: the last 7 days by default.
pub async fn page(
    State(state): State<AppState>,
    Extension(signed): Extension<Signed>,
    Query(r): Query<Range>,
) -> Result<Response, PageError> {
    let schedule = &state.config.schedule;
    let today = schedule.local_date(state.now());
    let day = |raw: &str, default: NaiveDate| -> Result<NaiveDate, String> {
        match raw.trim() {
            "" => Ok(default),
            s => super::parse_day(s).ok_or_else(|| "Dates must be like 2026-12-07.".to_string()),
        }
    };
    let range = day(&r.to, today).and_then(|to| {
        let from = day(&r.from, to - Duration::days(6))?;
        if from > to {
            Err("The first day is after the last.".into())
        } else if (to - from).num_days() >= MAX_DAYS {
            Err(format!("Show at most {MAX_DAYS} days at a time."))
        } else {
            Ok((from, to))
        }
    });
    let (status, error, (from, to)) = match range {
        Ok(r) => (StatusCode::OK, None, r),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Some(e),
            (today - Duration::days(6), today),
        ),
    };
    let until = to.succ_opt().unwrap_or(to);
    let counts = state
        .insights
        .counts(schedule.start_of_day(from), schedule.start_of_day(until))
        .await?;
    let total = counts.hours.iter().map(|(_, n)| n).sum();
    let count_of = |outcome: &str| {
        counts
            .outcomes
            .iter()
            .find(|(o, _)| o == outcome)
            .map_or(0, |(_, n)| *n)
    };
    let menus: std::collections::BTreeSet<String> = crate::flow::picture::picture(&state.flows)
        .nodes
        .into_iter()
        .filter(|n| n.kind == "menu")
        .map(|n| n.id)
        .collect();
    let mut funnel: Vec<Funnel> = counts
        .nodes
        .iter()
        .filter(|n| menus.contains(&n.node))
        .map(|n| Funnel {
            node: n.node.clone(),
            reached: n.reached,
            chose: n.chose,
            left: n.reached.saturating_sub(n.chose),
            kept: percent(n.chose, n.reached),
        })
        .collect();
    funnel.sort_by_key(|f| std::cmp::Reverse(f.reached));
    let mut res = render(&InsightsPage {
        layout: Layout::new(&signed, "insights"),
        from: from.to_string(),
        to: to.to_string(),
        tz: schedule.tz.name().to_string(),
        total,
        error,
        charts: charts(&state, &counts, from, to),
        abandoned_menus: count_of("abandoned"),
        abandoned_queue: count_of("abandoned_in_queue"),
        funnel,
    });
    *res.status_mut() = status;
    Ok(res)
}
