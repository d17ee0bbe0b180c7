//! Managers' pages: console accounts (add, disable, enable) and the audit log.

use super::accounts::{self, AccountError};
use super::{local_time, render, Layout, PageError, Signed};
use crate::state::AppState;
use crate::storage::console::Role;
use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use serde::Deserialize;

struct Account {
    name: String,
    role: &'static str,
    disabled: bool,
    created: String,
    path: String,
}

#[derive(Template)]
#[template(path = "console/users.html")]
struct UsersPage {
    layout: Layout,
    accounts: Vec<Account>,
    message: Option<String>,
    min_password: usize,
}

async fn users_page(
    state: &AppState,
    signed: &Signed,
    status: StatusCode,
    message: Option<String>,
) -> Result<Response, PageError> {
    let accounts = state
        .console
        .list_users()
        .await?
        .into_iter()
        .map(|u| Account {
            path: form_urlencoded::byte_serialize(u.name.as_bytes()).collect(),
            role: u.role.as_str(),
            disabled: u.disabled,
            created: local_time(state, u.created_at),
            name: u.name,
        })
        .collect();
    let mut res = render(&UsersPage {
        layout: Layout::new(signed, "users"),
        accounts,
        message,
        min_password: accounts::MIN_PASSWORD,
    });
    *res.status_mut() = status;
    Ok(res)
}

/// `GET /console/users`.
pub async fn page(
    State(state): State<AppState>,
    Extension(signed): Extension<Signed>,
) -> Result<Response, PageError> {
    users_page(&state, &signed, StatusCode::OK, None).await
}

/// The add-account form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AddForm {
    name: String,
    role: String,
    password: String,
}

async fn after_change(
    state: &AppState,
    signed: &Signed,
    result: Result<(), AccountError>,
) -> Result<Response, PageError> {
    match result {
        Ok(()) => Ok(Redirect::to("/console/users").into_response()),
        Err(AccountError::Invalid(m)) => {
            users_page(state, signed, StatusCode::BAD_REQUEST, Some(m)).await
        }
        Err(AccountError::Store(e)) => Err(e.into()),
    }
}

/// `POST /console/users`.
pub async fn add(
    State(state): State<AppState>,
    Extension(signed): Extension<Signed>,
    Form(f): Form<AddForm>,
) -> Result<Response, PageError> {
    let result = match Role::parse(&f.role) {
        Ok(role) => {
            accounts::add_user(
                state.console.as_ref(),
                f.name.trim(),
                role,
                &f.password,
                &signed.user.name,
                state.now(),
            )
            .await
        }
        Err(m) => Err(AccountError::Invalid(m)),
    };
    after_change(&state, &signed, result).await
}

async fn set_disabled(
    state: AppState,
    signed: Signed,
    name: String,
    disabled: bool,
) -> Result<Response, PageError> {
    if disabled && name == signed.user.name {
        let m = "You cannot disable your own account.".to_string();
        return users_page(&state, &signed, StatusCode::BAD_REQUEST, Some(m)).await;
    }
    let result = accounts::set_disabled(
        state.console.as_ref(),
        &name,
        disabled,
        &signed.user.name,
        state.now(),
    )
    .await;
    after_change(&state, &signed, result).await
}

/// `POST /console/users/{name}/disable`.
pub async fn disable(
    State(state): State<AppState>,
    Extension(signed): Extension<Signed>,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    set_disabled(state, signed, name, true).await
}

/// `POST /console/users/{name}/enable`.
pub async fn enable(
    State(state): State<AppState>,
    Extension(signed): Extension<Signed>,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    set_disabled(state, signed, name, false).await
}

struct Change {
    at: String,
    actor: String,
    action: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    layout: Layout,
    changes: Vec<Change>,
}

/// `GET /console/audit`: the latest 500 changes.
pub async fn audit(
    State(state): State<AppState>,
    Extension(signed): Extension<Signed>,
) -> Result<Response, PageError> {
    let changes = state
        .console
        .list_audit(500)
        .await?
        .into_iter()
        .map(|e| Change {
            at: local_time(&state, e.at),
            actor: e.actor,
            action: e.action,
            detail: e.detail,
        })
        .collect();
    Ok(render(&AuditPage {
        layout: Layout::new(&signed, "audit"),
        changes,
    }))
}
