//! The call log (filters, keyset paging, CSV export of the whole filtered set), a call's
//! detail (its steps as a timeline, tickets, e-mails) and recording playback through the
//! server.

use super::{
    caller_filter, category_filter, encode, local_time, render, Choice, Layout, PageError, Signed,
};
use crate::api::{call_cursor, next_call_cursor};
use crate::state::AppState;
use crate::storage::{CallQuery, CallView, NotificationView, StepView, TicketView};
use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::NaiveDate;
use serde::Deserialize;

/// Calls on one page of the log.
const PAGE: u32 = 50;
/// Calls read at a time for the CSV export.
const EXPORT_BATCH: u32 = 500;

/// The filters of the call log, as the form sends them (all optional, empty is "any").
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Filters {
    from: String,
    to: String,
    line: String,
    store: String,
    outcome: String,
    category: String,
    caller: String,
    cursor: String,
}

impl Filters {
    /// The query string of these filters (without the cursor).
    fn query_string(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("from", &self.from),
            ("to", &self.to),
            ("line", &self.line),
            ("store", &self.store),
            ("outcome", &self.outcome),
            ("category", &self.category),
            ("caller", &self.caller),
        ] {
            if !v.trim().is_empty() {
                q.append_pair(k, v.trim());
            }
        }
        q.finish()
    }

    /// The storage query: dates are whole days in Guest Care time, `to` included.
    fn query(&self, state: &AppState, limit: u32) -> Result<CallQuery, PageError> {
        let bad = |m: &str| PageError::BadRequest(m.to_string());
        let day = |raw: &str, field: &str| -> Result<Option<NaiveDate>, PageError> {
            let raw = raw.trim();
            if raw.is_empty() {
                return Ok(None);
            }
            super::parse_day(raw)
                .map(Some)
                .ok_or_else(|| bad(&format!("The {field} date must be like 2026-12-07.")))
        };
        let schedule = &state.config.schedule;
        let since = day(&self.from, "from")?.map(|d| schedule.start_of_day(d));
        let until = day(&self.to, "to")?
            .and_then(|d| d.succ_opt())
            .map(|d| schedule.start_of_day(d));
        let line = match self.line.trim() {
            "" => None,
            l @ ("guest_care" | "store") => Some(l.to_string()),
            _ => return Err(bad("The line must be Guest Care or a store.")),
        };
        let category = category_filter(&self.category)?;
        let caller = caller_filter(&self.caller)?;
        let nonempty = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
        let after = nonempty(&self.cursor)
            .map(|c| call_cursor(&c))
            .transpose()
            .map_err(|_| bad("That page link is not one the console gave out."))?;
        Ok(CallQuery {
            since,
            until,
            line,
            store: nonempty(&self.store),
            outcome: nonempty(&self.outcome),
            category,
            caller,
            limit,
            after,
        })
    }
}

/// A row of the call log.
struct Row {
    href: String,
    started: String,
    line: String,
    caller: String,
    outcome: String,
    status: String,
    duration: String,
}

impl Row {
    fn new(state: &AppState, c: &CallView) -> Self {
        Self {
            href: format!("/console/calls/{}", encode(&c.call_sid)),
            started: local_time(state, c.started_at),
            line: line_name(c),
            caller: c.from.clone(),
            outcome: c.outcome.clone().unwrap_or_else(|| "—".into()),
            status: c.status.clone(),
            duration: c
                .duration_seconds
                .map(|s| format!("{}:{:02}", s / 60, s % 60))
                .unwrap_or_default(),
        }
    }
}

fn line_name(c: &CallView) -> String {
    match (c.line.as_str(), &c.store_name) {
        ("store", Some(name)) => format!("Store: {name}"),
        ("store", None) => "Store".into(),
        _ => "Guest Care".into(),
    }
}

#[derive(Template)]
#[template(path = "console/calls.html")]
struct CallsPage {
    layout: Layout,
    f: Filters,
    lines: Vec<Choice>,
    stores: Vec<Choice>,
    categories: Vec<Choice>,
    rows: Vec<Row>,
    error: Option<String>,
    next_href: Option<String>,
    first_href: Option<String>,
    csv_href: String,
    tz: String,
}

/// `GET /console/calls`.
pub async fn list(
    State(state): State<AppState>,
    Extension(signed): Extension<Signed>,
    Query(f): Query<Filters>,
) -> Response {
    let mut stores: Vec<&str> = state.config.stores.values().map(String::as_str).collect();
    stores.sort_unstable();
    stores.dedup();
    let mut page = CallsPage {
        layout: Layout::new(&signed, "calls"),
        lines: Choice::list([("guest_care", "Guest Care"), ("store", "Stores")], &f.line),
        stores: Choice::list(stores.iter().map(|s| (*s, *s)), &f.store),
        categories: Choice::list(
            crate::domain::CATEGORIES.iter().map(|c| (*c, *c)),
            &f.category,
        ),
        rows: Vec::new(),
        error: None,
        next_href: None,
        first_href: None,
        csv_href: String::new(),
        tz: state.config.schedule.tz.name().to_string(),
        f,
    };
    let qs = page.f.query_string();
    page.csv_href = format!("/console/calls.csv?{qs}");
    let status = match page.f.query(&state, PAGE) {
        Ok(q) => match state.store.list_calls(&q).await {
            Ok(calls) => {
                page.rows = calls.iter().map(|c| Row::new(&state, c)).collect();
                let sep = if qs.is_empty() { "" } else { "&" };
                page.next_href = next_call_cursor(&calls, PAGE)
                    .map(|c| format!("/console/calls?{qs}{sep}cursor={}", encode(&c)));
                page.first_href = q.after.is_some().then(|| format!("/console/calls?{qs}"));
                StatusCode::OK
            }
            Err(e) => return PageError::from(e).into_response(),
        },
        Err(PageError::BadRequest(m)) => {
            page.error = Some(m);
            StatusCode::BAD_REQUEST
        }
        Err(e) => return e.into_response(),
    };
    let mut res = render(&page);
    *res.status_mut() = status;
    res
}

/// A CSV field: quoted when it must be, and a leading `=`, `@`, `+` or `-` that is not
/// part of a number defused, so that a spreadsheet does not run it as a formula.
fn csv_field(out: &mut String, raw: &str) {
    let formula = raw.starts_with(['=', '@', '\t', '\r'])
        || (raw.starts_with(['+', '-'])
            && !raw[1..].chars().all(|c| c.is_ascii_digit() || c == '.'));
    let text = if formula {
        format!("'{raw}")
    } else {
        raw.to_string()
    };
    if text.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(&text);
    }
}

const CSV_HEADER: &str = "call_sid,started_at,line,store,caller,called,flow,status,\
duration_seconds,outcome,errors,recording\r\n";

fn csv_rows(state: &AppState, calls: &[CallView]) -> String {
    let mut out = String::new();
    for c in calls {
        let started = c
            .started_at
            .with_timezone(&state.config.schedule.tz)
            .to_rfc3339();
        let fields = [
            c.call_sid.as_str(),
            &started,
            &c.line,
            c.store_name.as_deref().unwrap_or(""),
            &c.from,
            &c.to,
            &c.flow,
            &c.status,
            &c.duration_seconds
                .map(|d| d.to_string())
                .unwrap_or_default(),
            c.outcome.as_deref().unwrap_or(""),
            &c.error_count.to_string(),
            if c.recording_url.is_some() {
                "yes"
            } else {
                "no"
            },
        ];
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            csv_field(&mut out, f);
        }
        out.push_str("\r\n");
    }
    out
}

/// `GET /console/calls.csv`: every call the filters match (not only one page), newest
/// first, streamed in batches.
pub async fn export(
    State(state): State<AppState>,
    Extension(_signed): Extension<Signed>,
    Query(f): Query<Filters>,
) -> Response {
    let q = match f.query(&state, EXPORT_BATCH) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let first =
        futures_util::stream::once(async { Ok::<Bytes, std::io::Error>(CSV_HEADER.into()) });
    let rest = futures_util::stream::unfold(Some(q), move |q| {
        let state = state.clone();
        async move {
            let mut q = q?;
            match state.store.list_calls(&q).await {
                Ok(calls) if calls.is_empty() => None,
                Ok(calls) => {
                    let chunk = Bytes::from(csv_rows(&state, &calls));
                    let next = next_call_cursor(&calls, q.limit)
                        .and_then(|c| call_cursor(&c).ok())
                        .map(|after| {
                            q.after = Some(after);
                            q
                        });
                    Some((Ok(chunk), next))
                }
                // The download fails visibly rather than ending short.
                Err(e) => {
                    tracing::error!(error = %e, "CSV export stopped");
                    Some((
                        Err(std::io::Error::other("the database did not answer")),
                        None,
                    ))
                }
            }
        }
    });
    use futures_util::StreamExt;
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"calls.csv\"",
            ),
        ],
        Body::from_stream(first.chain(rest)),
    )
        .into_response()
}

/// A step of the timeline.
struct Moment {
    at: String,
    node: String,
    kind: String,
    said: String,
    digits: Option<String>,
    result: String,
}

impl Moment {
    fn new(state: &AppState, s: &StepView) -> Self {
        Self {
            at: s
                .at
                .with_timezone(&state.config.schedule.tz)
                .format("%H:%M:%S")
                .to_string(),
            node: s.node.clone(),
            kind: s.kind.clone(),
            said: s.said.clone(),
            digits: s.digits.clone().filter(|d| !d.is_empty()),
            result: s.result.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/call.html")]
struct CallPage {
    layout: Layout,
    call: CallView,
    started: String,
    line: String,
    steps: Vec<Moment>,
    tickets: Vec<TicketView>,
    emails: Vec<NotificationView>,
    recording: Recording,
}

/// What the page says about the call's recording.
enum Recording {
    None,
    Playable(String),
    NotConfigured,
}

/// `GET /console/calls/{sid}`.
pub async fn detail(
    State(state): State<AppState>,
    Extension(signed): Extension<Signed>,
    Path(sid): Path<String>,
) -> Result<Response, PageError> {
    let detail = state
        .store
        .get_call(&sid)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("There is no call {sid}.")))?;
    let now = state.now();
    let mut tickets = detail.tickets;
    for t in &mut tickets {
        t.mark_overdue(now);
    }
    let recording = match (&detail.call.recording_url, credentials(&state)) {
        (None, _) => Recording::None,
        (Some(_), None) => Recording::NotConfigured,
        (Some(_), Some(_)) => {
            Recording::Playable(format!("/console/calls/{}/recording", encode(&sid)))
        }
    };
    Ok(render(&CallPage {
        layout: Layout::new(&signed, "calls"),
        started: local_time(&state, detail.call.started_at),
        line: line_name(&detail.call),
        steps: detail
            .steps
            .iter()
            .map(|s| Moment::new(&state, s))
            .collect(),
        tickets,
        emails: detail.notifications,
        recording,
        call: detail.call,
    }))
}

/// The Twilio account SID and auth token, when both are configured.
fn credentials(state: &AppState) -> Option<(&str, &str)> {
    Some((
        state.config.console.account_sid.as_ref()?.expose(),
        state.config.twilio_auth_token.as_ref()?.expose(),
    ))
}

fn http_client() -> Option<&'static reqwest::Client> {
    static CLIENT: std::sync::OnceLock<Option<reqwest::Client>> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(5))
                .read_timeout(std::time::Duration::from_secs(20))
                .redirect(reqwest::redirect::Policy::limited(3))
                .build()
                .ok()
        })
        .as_ref()
}

/// `GET /console/calls/{sid}/recording`: the call's voicemail as MP3, fetched from Twilio
/// with the account's credentials (only from the configured API host) and passed through,
/// seeking (`Range`) included.
pub async fn recording(
    State(state): State<AppState>,
    Extension(_signed): Extension<Signed>,
    Path(sid): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let (account, token) = credentials(&state).ok_or_else(|| {
        PageError::NotFound(
            "Recording playback is not configured: set TWILIO_ACCOUNT_SID and \
             TWILIO_AUTH_TOKEN."
                .into(),
        )
    })?;
    let call = state
        .store
        .get_call(&sid)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("There is no call {sid}.")))?;
    let url = call
        .call
        .recording_url
        .ok_or_else(|| PageError::NotFound("This call has no recording.".into()))?;
    let base = &state.config.console.recordings_base;
    if !url.starts_with(&format!("{base}/")) {
        return Err(PageError::NotFound(format!(
            "The recording is not on {base}, so the console does not fetch it."
        )));
    }
    let client = http_client().ok_or(PageError::Unavailable)?;
    let mut req = client
        .get(format!("{url}.mp3"))
        .basic_auth(account, Some(token));
    if let Some(range) = headers.get(header::RANGE) {
        req = req.header(header::RANGE, range.clone());
    }
    let upstream = req.send().await.map_err(|e| {
        tracing::warn!(error = %e, "recording fetch failed");
        PageError::NotFound("Twilio did not answer for this recording; try again.".into())
    })?;
    let status = upstream.status();
    if !status.is_success() {
        tracing::warn!(status = status.as_u16(), "recording fetch refused");
        return Err(PageError::NotFound(format!(
            "Twilio answered {status} for this recording."
        )));
    }
    let mut res = Response::builder().status(status.as_u16());
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::ACCEPT_RANGES,
    ] {
        if let Some(v) = upstream.headers().get(&name) {
            res = res.header(name, v.clone());
        }
    }
    res.header(header::CONTENT_TYPE, "audio/mpeg")
        .header(header::CACHE_CONTROL, "private, no-store")
        .body(Body::from_stream(upstream.bytes_stream()))
        .map_err(|_| PageError::Unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        let mut out = String::new();
        for f in [
            "+12045551234",
            "=HYPERLINK(1)",
            "a,b",
            "say \"hi\"",
            "-3",
            "-x",
        ] {
            csv_field(&mut out, f);
            out.push('|');
        }
        assert_eq!(
            out,
            "+12045551234|'=HYPERLINK(1)|\"a,b\"|\"say \"\"hi\"\"\"|-3|'-x|"
        );
    }
}
