//! The manager API: call logs, tickets and the hours override, behind a bearer token.

mod tickets;

use crate::domain::TicketNumber;
use crate::hours::OverrideState;
use crate::state::AppState;
use crate::storage::{CallQuery, StoreError, TicketQuery};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;

/// An API error: a status and a message, answered as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// 404.
    pub fn not_found(what: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: if what.contains(' ') {
                what.to_string()
            } else {
                format!("{what} not found")
            },
        }
    }
}

impl ApiError {
    /// What the caller of the API is told.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "API storage error");
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the database is unavailable; try again".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

fn page_cursor(cursor: Option<&str>, what: &str) -> Result<Option<i64>, ApiError> {
    cursor
        .map(|c| {
            c.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("cursor is not a {what} cursor this API gave out"))
            })
        })
        .transpose()
}

/// A query string whose rejection is a JSON error like every other API error.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Self(q))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// The API routes, behind bearer authentication.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/api/calls", get(list_calls))
        .route("/api/calls/{call_sid}", get(get_call))
        .route("/api/tickets", get(list_tickets))
        .route("/api/hours", get(get_hours))
        .route("/api/flows", get(get_flows))
        .route("/api/hours/override", put(put_override))
        .route(
            "/api/tickets/{number}",
            get(tickets::get_ticket).patch(tickets::patch_ticket),
        )
        .route("/api/notifications", get(tickets::list_notifications))
        .route(
            "/api/notifications/{id}/resend",
            post(tickets::resend_notification),
        )
        .route("/api", any(no_such_path))
        .route("/api/", any(no_such_path))
        .route("/api/{*rest}", any(no_such_path))
        .route_layer(middleware::from_fn_with_state(state, require_token))
}

/// Any other path under `/api`: the JSON 404 of every API error.
async fn no_such_path() -> ApiError {
    ApiError::not_found("no such API path; see the README's Manager API for the paths")
}

async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let unauthorized = |message: &str| {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({ "error": message })),
        )
            .into_response()
    };
    let Some(token) = &state.config.api_token else {
        return unauthorized("the API is closed: set IVR_API_TOKEN to open it");
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
        next.run(req).await
    } else {
        unauthorized("missing or wrong bearer token")
    }
}

/// An RFC 3339 time, or a date, which means midnight at its start in Guest Care's time
/// zone (the schedule's, `hours.time_zone`), not in UTC.
pub(crate) fn parse_time(
    raw: &str,
    field: &str,
    schedule: &crate::hours::Schedule,
) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .map(|d| schedule.start_of_day(d))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{field} must be RFC 3339 (2026-11-22T08:00:00Z) or a date (2026-11-22, \
                 from midnight Guest Care time, {})",
                schedule.tz.name()
            ))
        })
}

/// The `caller` filter: a whole number or its last four digits.
pub(crate) fn parse_caller(
    raw: Option<&str>,
) -> Result<Option<crate::storage::CallerMatch>, ApiError> {
    raw.map(|c| crate::storage::CallerMatch::parse(c).map_err(ApiError::bad_request))
        .transpose()
}

fn page_size(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(50) {
        n @ 1..=200 => Ok(n),
        _ => Err(ApiError::bad_request("limit must be 1 to 200")),
    }
}

/// Query of `GET /api/calls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallsParams {
    since: Option<String>,
    until: Option<String>,
    line: Option<String>,
    outcome: Option<String>,
    category: Option<String>,
    caller: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// A page of calls.
#[derive(Debug, Serialize)]
pub struct CallsPage {
    calls: Vec<crate::storage::CallView>,
    next_cursor: Option<String>,
}

async fn list_calls(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<CallsParams>,
) -> ApiResult<CallsPage> {
    let limit = page_size(p.limit)?;
    if let Some(line) = &p.line {
        if line != "guest_care" && line != "store" {
            return Err(ApiError::bad_request("line must be guest_care or store"));
        }
    }
    let after = p.cursor.as_deref().map(call_cursor).transpose()?;
    let q = CallQuery {
        since: p
            .since
            .as_deref()
            .map(|s| parse_time(s, "since", &state.config.schedule))
            .transpose()?,
        until: p
            .until
            .as_deref()
            .map(|s| parse_time(s, "until", &state.config.schedule))
            .transpose()?,
        caller: parse_caller(p.caller.as_deref())?,
        line: p.line,
        store: None,
        outcome: p.outcome,
        category: p.category,
        limit,
        after,
    };
    let calls = state.store.list_calls(&q).await?;
    let next_cursor = next_call_cursor(&calls, limit);
    Ok(Json(CallsPage { calls, next_cursor }))
}

/// The keyset cursor of a call page (`started_ms:CallSid`), as the API and the console
/// give it out.
pub(crate) fn call_cursor(c: &str) -> Result<(i64, String), ApiError> {
    c.split_once(':')
        .and_then(|(ms, sid)| Some((ms.parse::<i64>().ok()?, sid.to_string())))
        .ok_or_else(|| ApiError::bad_request("cursor is not one this API gave out"))
}

/// The cursor of the page after `calls`, when the page was full.
pub(crate) fn next_call_cursor(calls: &[crate::storage::CallView], limit: u32) -> Option<String> {
    (calls.len() == limit as usize)
        .then(|| {
            calls
                .last()
                .map(|c| format!("{}:{}", c.started_at.timestamp_millis(), c.call_sid))
        })
        .flatten()
}

async fn get_call(
    State(state): State<AppState>,
    Path(call_sid): Path<String>,
) -> ApiResult<crate::storage::CallDetail> {
    let mut call = state
        .store
        .get_call(&call_sid)
        .await?
        .ok_or_else(|| ApiError::not_found("call"))?;
    let now = state.now();
    for t in &mut call.tickets {
        t.mark_overdue(now);
    }
    Ok(Json(call))
}

/// Query of `GET /api/tickets`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketsParams {
    status: Option<String>,
    category: Option<String>,
    overdue: Option<bool>,
    external_ref: Option<String>,
    caller: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// A page of tickets.
#[derive(Debug, Serialize)]
pub struct TicketsPage {
    tickets: Vec<crate::storage::TicketView>,
    next_cursor: Option<String>,
}

async fn list_tickets(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<TicketsParams>,
) -> ApiResult<TicketsPage> {
    let limit = page_size(p.limit)?;
    let before_id = p
        .cursor
        .as_deref()
        .map(|c| {
            TicketNumber::parse(c)
                .map(|t| t.0)
                .map_err(ApiError::bad_request)
        })
        .transpose()?;
    if let Some(status) = &p.status {
        if !["open", "escalated", "resolved"].contains(&status.as_str()) {
            return Err(ApiError::bad_request(
                "status must be open, escalated or resolved",
            ));
        }
    }
    let now = state.now();
    let q = TicketQuery {
        status: p.status,
        category: p.category,
        limit,
        before_id,
        overdue_at: p.overdue.unwrap_or(false).then_some(now),
        external_ref: p.external_ref,
        caller: parse_caller(p.caller.as_deref())?,
        assignee: None,
        unresolved: false,
    };
    let mut tickets = state.store.list_tickets(&q).await?;
    for t in &mut tickets {
        t.mark_overdue(now);
    }
    let next_cursor = (tickets.len() == limit as usize)
        .then(|| tickets.last().map(|t| t.number.clone()))
        .flatten();
    Ok(Json(TicketsPage {
        tickets,
        next_cursor,
    }))
}

/// Body of `PUT /api/hours/override`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideBody {
    /// Required: `null` clears the override, a missing field is an error.
    #[serde(default, deserialize_with = "present")]
    state: Option<Option<OverrideState>>,
}

fn present<'de, D>(d: D) -> Result<Option<Option<OverrideState>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<OverrideState>::deserialize(d).map(Some)
}

/// Guest Care hours as the API shows them.
#[derive(Debug, Serialize)]
pub struct HoursView {
    state: Option<OverrideState>,
    open_now: bool,
    schedule: String,
    time_zone: String,
}

async fn hours_view(state: &AppState) -> ApiResult<HoursView> {
    let over = state.store.hours_override().await?;
    Ok(Json(HoursView {
        state: over,
        open_now: state.config.schedule.is_open(state.now(), over),
        schedule: state.config.schedule.describe(),
        time_zone: state.config.schedule.tz.name().into(),
    }))
}

/// `GET /api/flows`: the flows as a picture: nodes, and ways out with menu options' labels.
async fn get_flows(State(state): State<AppState>) -> ApiResult<crate::flow::picture::Picture> {
    Ok(Json(crate::flow::picture::picture(&state.flows)))
}

async fn get_hours(State(state): State<AppState>) -> ApiResult<HoursView> {
    hours_view(&state).await
}

async fn put_override(
    State(state): State<AppState>,
    body: Result<Json<OverrideBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<HoursView> {
    let Json(body) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"state\": \"open\" | \"closed\" | null}}: {}",
            e.body_text()
        ))
    })?;
    let Some(over) = body.state else {
        return Err(ApiError::bad_request(
            "expected {\"state\": \"open\" | \"closed\" | null}: `state` is required",
        ));
    };
    state.store.set_hours_override(over, state.now()).await?;
    tracing::info!(state = ?over, "hours override set");
    hours_view(&state).await
}
