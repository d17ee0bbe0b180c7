//! Guest Care hours in the console: open or closed now, the override, the weekly schedule
//! and the holidays; managers set or clear the override.

use super::{render, Layout, PageError, Signed};
use crate::hours::OverrideState;
use crate::state::AppState;
use askama::Template;
use axum::extract::{Form, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "console/hours.html")]
struct HoursPage {
    layout: Layout,
    open_now: bool,
    over: &'static str,
    week: Vec<(&'static str, String)>,
    holidays: Vec<String>,
    tz: String,
}

/// `GET /console/hours`.
pub async fn page(
    State(state): State<AppState>,
    Extension(signed): Extension<Signed>,
) -> Result<Response, PageError> {
    let over = state.store.hours_override().await?;
    let schedule = &state.config.schedule;
    let today = schedule.local_date(state.now());
    Ok(render(&HoursPage {
        layout: Layout::new(&signed, "hours"),
        open_now: schedule.is_open(state.now(), over),
        over: over.map_or("schedule", OverrideState::as_str),
        week: schedule.timetable(),
        holidays: schedule
            .holidays
            .iter()
            .filter(|d| **d >= today)
            .map(|d| d.format("%A %-d %B %Y").to_string())
            .collect(),
        tz: schedule.tz.name().to_string(),
    }))
}

/// The override form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct OverrideForm {
    state: String,
}

/// `POST /console/hours` (managers): sets the override (`open`, `closed`) or clears it
/// (`schedule`); the change goes into the audit log.
pub async fn set(
    State(state): State<AppState>,
    Extension(signed): Extension<Signed>,
    Form(f): Form<OverrideForm>,
) -> Result<Response, PageError> {
    let over =
        match f.state.as_str() {
            "schedule" => None,
            raw => Some(OverrideState::parse(raw).ok_or_else(|| {
                PageError::BadRequest("Choose the schedule, open or closed.".into())
            })?),
        };
    let now = state.now();
    state.store.set_hours_override(over, now).await?;
    let what = over.map_or("schedule", OverrideState::as_str);
    state
        .console
        .audit(&signed.audit("hours.override", what.to_string(), now))
        .await?;
    tracing::info!(state = what, by = %signed.user.name, "hours override set in the console");
    Ok(Redirect::to("/console/hours").into_response())
}
