//! The manager console: server-rendered pages under `/console` (askama templates, vendored
//! htmx, no inline script, a strict Content-Security-Policy), signed in with accounts and
//! sessions kept in the database.

pub mod accounts;
mod auth;
mod calls;
mod flows;
mod hours;
mod insights;
mod svg;
mod tickets;
mod users;

use crate::state::AppState;
use crate::storage::StoreError;
use askama::Template;
use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};

pub use auth::Signed;
pub use insights::spawn_rollups;

/// The Content-Security-Policy of every console page: scripts and styles from the console
/// itself only (no inline script or style), no frames, forms post back here only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; media-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

const HTMX: &str = include_str!("../../assets/console/htmx.min.js");
const CSS: &str = include_str!("../../assets/console/console.css");

/// The console's routes.
pub fn router(state: AppState) -> Router<AppState> {
    let managers = Router::new()
        .route("/console/users", get(users::page).post(users::add))
        .route("/console/users/{name}/disable", post(users::disable))
        .route("/console/users/{name}/enable", post(users::enable))
        .route("/console/audit", get(users::audit))
        .route("/console/hours", post(hours::set))
        .route_layer(middleware::from_fn(auth::require_manager));
    let signed = Router::new()
        .route("/console", get(|| async { Redirect::to("/console/calls") }))
        .route(
            "/console/",
            get(|| async { Redirect::to("/console/calls") }),
        )
        .route("/console/calls", get(calls::list))
        .route("/console/calls.csv", get(calls::export))
        .route("/console/calls/{sid}", get(calls::detail))
        .route("/console/calls/{sid}/recording", get(calls::recording))
        .route("/console/hours", get(hours::page))
        .route("/console/insights", get(insights::page))
        .route("/console/flows", get(flows::page))
        .route("/console/tickets", get(tickets::queue))
        .route("/console/tickets/bulk", post(tickets::bulk))
        .route(
            "/console/tickets/{number}",
            get(tickets::ticket).post(tickets::act),
        )
        .route("/console/logout", post(auth::logout))
        .merge(managers)
        .route("/console/{*rest}", get(not_found).post(not_found))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_session,
        ));
    Router::new()
        .route("/console/login", get(auth::login_page).post(auth::login))
        .route("/console/static/{file}", get(asset))
        .merge(signed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(middleware::map_response(security_headers))
}

/// A page that panicked: logged, and an error page instead of a dropped connection.
fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a console page panicked");
    let mut res = PageError::BadRequest("This page could not be drawn.".into()).into_response();
    *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    res
}

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "htmx.min.js" => (HTMX, "text/javascript; charset=utf-8"),
        "console.css" => (CSS, "text/css; charset=utf-8"),
        _ => return PageError::NotFound("no such file".into()).into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn not_found() -> PageError {
    PageError::NotFound("There is no such page in the console.".into())
}

/// What every signed-in page shows around its content: who is signed in, the navigation
/// and the session's form token.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Account name.
    pub user: String,
    /// `manager` or `agent`.
    pub role: &'static str,
    /// Whether the user admin pages are shown.
    pub manager: bool,
    /// The session's form token, in every form and in htmx's request headers.
    pub csrf: String,
    /// The navigation entry of this page.
    pub active: &'static str,
}

impl Layout {
    /// The layout of a page in section `active`.
    pub fn new(signed: &Signed, active: &'static str) -> Self {
        Self {
            user: signed.user.name.clone(),
            role: signed.user.role.as_str(),
            manager: signed.is_manager(),
            csrf: signed.csrf.clone(),
            active,
        }
    }

    /// `aria-current` of a navigation entry.
    pub fn current(&self, section: &str) -> &'static str {
        if self.active == section {
            "page"
        } else {
            "false"
        }
    }
}

/// A page that could not be shown: an HTML page with the reason, never a bare status.
#[derive(Debug)]
pub enum PageError {
    /// 400: the request cannot be answered as asked.
    BadRequest(String),
    /// 403: not allowed (role, or a form without its token).
    Forbidden(String),
    /// 404.
    NotFound(String),
    /// 503: the database did not answer.
    Unavailable,
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => PageError::NotFound(what),
            e => {
                tracing::error!(error = %e, "console storage error");
                PageError::Unavailable
            }
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Cannot do that", m.as_str()),
            PageError::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m.as_str()),
            PageError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m.as_str()),
            PageError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Database unavailable",
                "The database did not answer. Calls are still answered; try this page again \
                 in a moment.",
            ),
        };
        let body = ErrorPage { title, message }
            .render()
            .unwrap_or_else(|_| message.to_string());
        (status, Html(body)).into_response()
    }
}

/// Renders a page, or the error page if the template fails.
pub fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console template failed");
            PageError::BadRequest("This page could not be drawn.".into()).into_response()
        }
    }
}

/// A day typed in a form (`2026-12-07`), in the years the console deals with (2000 to
/// 2100: a far year would overflow the date arithmetic after it).
pub fn parse_day(raw: &str) -> Option<chrono::NaiveDate> {
    use chrono::Datelike;
    chrono::NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d")
        .ok()
        .filter(|d| (2000..=2100).contains(&d.year()))
}

/// A path segment or query value, percent-encoded.
pub fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The ticket category filter of a form: empty is any, else one of the categories.
pub fn category_filter(raw: &str) -> Result<Option<String>, PageError> {
    match raw.trim() {
        "" => Ok(None),
        c if crate::domain::CATEGORIES.contains(&c) => Ok(Some(c.to_string())),
        _ => Err(PageError::BadRequest(
            "That is not a ticket category.".into(),
        )),
    }
}

/// The caller filter of a form: empty is any, else a whole number or its last 4 digits.
pub fn caller_filter(raw: &str) -> Result<Option<crate::storage::CallerMatch>, PageError> {
    let raw = Some(raw.trim()).filter(|c| !c.is_empty());
    crate::api::parse_caller(raw).map_err(|e| PageError::BadRequest(e.message().to_string()))
}

/// A time as Guest Care reads it: `2026-12-07 09:14` in the schedule's time zone.
pub fn local_time(state: &AppState, t: DateTime<Utc>) -> String {
    t.with_timezone(&state.config.schedule.tz)
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

/// An option of a `<select>`.
#[derive(Debug, Clone)]
pub struct Choice {
    /// Submitted value.
    pub value: String,
    /// Shown text.
    pub label: String,
    /// Whether it is the current one.
    pub selected: bool,
}

impl Choice {
    /// The choices of `(value, label)` pairs, `current` selected, after an "Any" choice.
    pub fn list<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        current: &str,
    ) -> Vec<Choice> {
        std::iter::once(("", "Any"))
            .chain(pairs)
            .map(|(v, l)| Choice {
                value: v.to_string(),
                label: l.to_string(),
                selected: v == current,
            })
            .collect()
    }
}
