//! Signing in and out, sessions (cookie, idle and absolute expiry), the form token (CSRF)
//! on every form, the sign-in limit and the manager role.

use super::accounts::{check_name, decoy_hash, random_token, verify_password};
use super::{render, PageError};
use crate::state::AppState;
use crate::storage::console::{AuditEntry, Role, User};
use askama::Template;
use axum::body::Body;
use axum::extract::{Form, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The session cookie.
const SESSION_COOKIE: &str = "ivr_session";
/// The sign-in form's own token (double-submit: cookie and form field must match).
const LOGIN_COOKIE: &str = "ivr_login";
/// A session's last-seen time is written at most this often.
const TOUCH_EVERY: chrono::Duration = chrono::Duration::seconds(60);
/// The largest form the console reads.
const MAX_FORM: usize = 64 * 1024;

/// The signed-in account of a request, put there by [`require_session`].
#[derive(Debug, Clone)]
pub struct Signed {
    /// The account.
    pub user: User,
    /// The session's form token.
    pub csrf: String,
}

impl Signed {
    /// Whether the account may administer users.
    pub fn is_manager(&self) -> bool {
        self.user.role == Role::Manager
    }

    /// An audit entry of this account.
    pub fn audit(&self, action: &str, detail: String, at: DateTime<Utc>) -> AuditEntry {
        AuditEntry {
            at,
            actor: self.user.name.clone(),
            action: action.to_string(),
            detail,
        }
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn same(a: &str, b: &str) -> bool {
    !a.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// `Set-Cookie` for a console cookie: HttpOnly, SameSite=Strict, the console's path, and
/// Secure unless the server runs in development mode (no Twilio auth token).
fn set_cookie(state: &AppState, name: &str, value: &str, max_age: Option<i64>) -> HeaderValue {
    let secure = if state.config.twilio_auth_token.is_some() {
        "; Secure"
    } else {
        ""
    };
    let age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict{secure}{age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("ivr_invalid=1"))
}

/// Where to go after signing in: a console page, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/console/")
                && !n.starts_with("/console/login")
                && !n.contains("//")
                && !n.contains('\\') =>
        {
            n.to_string()
        }
        _ => "/console/calls".into(),
    }
}

/// The answer to a request without a valid session: the sign-in page (htmx is told to load
/// it as a whole page).
fn to_sign_in(req: &Request, reason: Option<&str>) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/console/calls");
    let next = if req.method() == Method::GET {
        form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>()
    } else {
        "%2Fconsole%2Fcalls".into()
    };
    let mut to = format!("/console/login?next={next}");
    if let Some(r) = reason {
        to.push_str("&reason=");
        to.push_str(r);
    }
    if req.headers().contains_key("hx-request") {
        let mut res = StatusCode::NO_CONTENT.into_response();
        if let Ok(v) = HeaderValue::from_str(&to) {
            res.headers_mut().insert("hx-redirect", v);
        }
        return res;
    }
    Redirect::to(&to).into_response()
}

/// Lets a request through only with a live session: puts [`Signed`] in its extensions, ends
/// sessions past their idle or absolute limit, and refuses a form (any POST) whose form
/// token (`csrf` field or `X-CSRF-Token` header) is not the session's.
pub async fn require_session(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = cookie(req.headers(), SESSION_COOKIE).map(str::to_owned) else {
        return to_sign_in(&req, None);
    };
    let hash = token_hash(&token);
    let session = match state.console.session(&hash).await {
        Ok(Some(s)) => s,
        Ok(None) => return to_sign_in(&req, Some("expired")),
        Err(e) => return PageError::from(e).into_response(),
    };
    let now = state.now();
    let limits = &state.config.console;
    let idle = chrono::Duration::from_std(limits.idle).unwrap_or(chrono::Duration::MAX);
    let absolute = chrono::Duration::from_std(limits.absolute).unwrap_or(chrono::Duration::MAX);
    if now - session.last_seen_at > idle
        || now - session.created_at > absolute
        || session.user.disabled
    {
        if let Err(e) = state.console.close_session(&hash, None).await {
            return PageError::from(e).into_response();
        }
        return to_sign_in(&req, Some("expired"));
    }
    if now - session.last_seen_at > TOUCH_EVERY {
        if let Err(e) = state.console.touch_session(&hash, now).await {
            return PageError::from(e).into_response();
        }
    }
    let signed = Signed {
        user: session.user,
        csrf: session.csrf,
    };
    let req = if req.method() == Method::GET || req.method() == Method::HEAD {
        req
    } else {
        match checked_form(req, &signed.csrf).await {
            Ok(req) => req,
            Err(refused) => return refused,
        }
    };
    let mut req = req;
    req.extensions_mut().insert(signed);
    next.run(req).await
}

/// The request again, once its form token is the session's; else the refusal.
async fn checked_form(req: Request, csrf: &str) -> Result<Request, Response> {
    let refused = || {
        PageError::Forbidden(
            "This form was not sent from this console session (its form token is missing or \
             out of date), so nothing was changed. Reload the page and try again."
                .into(),
        )
        .into_response()
    };
    if let Some(h) = req.headers().get("x-csrf-token") {
        return if same(h.to_str().unwrap_or(""), csrf) {
            Ok(req)
        } else {
            Err(refused())
        };
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM)
        .await
        .map_err(|_| PageError::BadRequest("The form is too large.".into()).into_response())?;
    let given = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if same(&given, csrf) {
        Ok(Request::from_parts(parts, Body::from(bytes)))
    } else {
        Err(refused())
    }
}

/// Lets only managers through.
pub async fn require_manager(req: Request, next: Next) -> Response {
    match req.extensions().get::<Signed>() {
        Some(s) if s.is_manager() => next.run(req).await,
        _ => PageError::Forbidden("Only managers may see and change console accounts.".into())
            .into_response(),
    }
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    csrf: String,
    next: String,
    name: String,
    message: Option<String>,
}

/// Query of the sign-in page.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    reason: Option<String>,
}

fn login_response(
    state: &AppState,
    status: StatusCode,
    next: &str,
    name: &str,
    message: Option<String>,
) -> Response {
    let csrf = match random_token(24) {
        Ok(t) => t,
        Err(_) => return PageError::Unavailable.into_response(),
    };
    let cookie = set_cookie(state, LOGIN_COOKIE, &csrf, Some(3600));
    let page = LoginPage {
        csrf,
        next: safe_next(Some(next)),
        name: name.to_string(),
        message,
    };
    let mut res = render(&page);
    *res.status_mut() = status;
    res.headers_mut().append(header::SET_COOKIE, cookie);
    res
}

/// `GET /console/login`.
pub async fn login_page(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    let message = (q.reason.as_deref() == Some("expired"))
        .then(|| "Your session has ended. Sign in again.".to_string());
    login_response(
        &state,
        StatusCode::OK,
        q.next.as_deref().unwrap_or(""),
        "",
        message,
    )
}

/// The sign-in form (a field left out reads as empty: the page says what is wrong).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LoginForm {
    name: String,
    password: String,
    csrf: String,
    next: Option<String>,
}

/// Password checks at once: each argon2id check takes 19 MiB and a core for a while, so a
/// flood of sign-ins waits here instead of taking the memory and the cores the calls need
/// (and a burst cannot outrun the failure count by much).
static CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Whether `password` matches `hash` (the decoy hash when there is no account), checked off
/// the async workers; `None` when the checks were busy for 5 s.
async fn checked_password(hash: Option<String>, password: String) -> Option<bool> {
    let permit = tokio::time::timeout(std::time::Duration::from_secs(5), CHECKS.acquire())
        .await
        .ok()?
        .ok()?;
    let matches = tokio::task::spawn_blocking(move || {
        let hash = hash.unwrap_or_else(|| decoy_hash().to_string());
        verify_password(&hash, &password)
    })
    .await
    .unwrap_or(false);
    drop(permit);
    Some(matches)
}

/// `POST /console/login`: checks the form token, the sign-in limit, then the password.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let next = f.next.as_deref().unwrap_or("");
    let name = f.name.trim().to_lowercase();
    if !same(&f.csrf, cookie(&headers, LOGIN_COOKIE).unwrap_or("")) {
        return login_response(
            &state,
            StatusCode::FORBIDDEN,
            next,
            &name,
            Some("The sign-in form was out of date. Try again.".into()),
        );
    }
    // A name no account can have is refused as a wrong password is, after as long, and is
    // not written down (nor is what was typed: it may be a password in the wrong field).
    if check_name(&name).is_err() {
        let _ = checked_password(None, String::new()).await;
        return login_response(
            &state,
            StatusCode::UNAUTHORIZED,
            next,
            "",
            Some("Wrong account name or password.".into()),
        );
    }
    let now = state.now();
    let limits = &state.config.console;
    let window = chrono::Duration::from_std(limits.lockout).unwrap_or(chrono::Duration::MAX);
    let locked = || {
        Some(format!(
            "Too many failed sign-ins for this account. Try again in {} minutes.",
            limits.lockout.as_secs() / 60
        ))
    };
    match state.console.login_failures(&name, now - window).await {
        Ok(n) if n >= limits.max_failures => {
            return login_response(&state, StatusCode::TOO_MANY_REQUESTS, next, &name, locked())
        }
        Ok(_) => {}
        Err(e) => return PageError::from(e).into_response(),
    }
    let user = match state.console.find_user(&name).await {
        Ok(u) => u,
        Err(e) => return PageError::from(e).into_response(),
    };
    let matches =
        match checked_password(user.as_ref().map(|u| u.password_hash.clone()), f.password).await {
            Some(m) => m,
            None => {
                return login_response(
                    &state,
                    StatusCode::TOO_MANY_REQUESTS,
                    next,
                    &name,
                    Some("Too many sign-ins at once. Try again in a moment.".into()),
                )
            }
        };
    let user = match user {
        Some(u) if matches && !u.disabled => u,
        _ => {
            let audit = AuditEntry {
                at: now,
                actor: name.clone(),
                action: "sign_in.failed".into(),
                detail: String::new(),
            };
            return match state
                .console
                .login_failed(&name, now - window, &audit)
                .await
            {
                Ok(n) if n >= limits.max_failures => {
                    login_response(&state, StatusCode::TOO_MANY_REQUESTS, next, &name, locked())
                }
                Ok(_) => login_response(
                    &state,
                    StatusCode::UNAUTHORIZED,
                    next,
                    &name,
                    Some("Wrong account name or password.".into()),
                ),
                Err(e) => PageError::from(e).into_response(),
            };
        }
    };
    let (Ok(token), Ok(csrf)) = (random_token(32), random_token(24)) else {
        return PageError::Unavailable.into_response();
    };
    let audit = AuditEntry {
        at: now,
        actor: user.name.clone(),
        action: "sign_in".into(),
        detail: String::new(),
    };
    if let Err(e) = state
        .console
        .open_session(&token_hash(&token), &user, &csrf, &audit)
        .await
    {
        return PageError::from(e).into_response();
    }
    let mut res = Redirect::to(&safe_next(Some(next))).into_response();
    let absolute = i64::try_from(limits.absolute.as_secs()).unwrap_or(i64::MAX);
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, &token, Some(absolute)),
    );
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, LOGIN_COOKIE, "", Some(0)),
    );
    res
}

/// `POST /console/logout`.
pub async fn logout(
    State(state): State<AppState>,
    axum::Extension(signed): axum::Extension<Signed>,
    headers: HeaderMap,
) -> Response {
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        let audit = signed.audit("sign_out", String::new(), state.now());
        if let Err(e) = state
            .console
            .close_session(&token_hash(token), Some(&audit))
            .await
        {
            return PageError::from(e).into_response();
        }
    }
    let mut res = Redirect::to("/console/login").into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, "", Some(0)),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_in_the_console() {
        assert_eq!(
            safe_next(Some("/console/calls?line=store")),
            "/console/calls?line=store"
        );
        assert_eq!(safe_next(Some("https://evil.example")), "/console/calls");
        assert_eq!(safe_next(Some("/console//evil.example")), "/console/calls");
        assert_eq!(safe_next(Some("//evil.example")), "/console/calls");
        assert_eq!(safe_next(None), "/console/calls");
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; ivr_session=abc; b=2"),
        );
        assert_eq!(cookie(&h, "ivr_session"), Some("abc"));
        assert_eq!(cookie(&h, "ivr_login"), None);
    }
}
