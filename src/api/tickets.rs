//! Working tickets (open one by number, resolve, reopen, assign, note) and the e-mails
//! they send (list, resend).

use super::{page_cursor, page_size, ApiError, ApiQuery, ApiResult};
use crate::domain::TicketNumber;
use crate::state::AppState;
use crate::storage::{NotificationQuery, NotificationView, TicketChange, TicketDetail};
use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};

fn ticket_number(raw: &str) -> Result<TicketNumber, ApiError> {
    TicketNumber::parse(raw).map_err(ApiError::bad_request)
}

fn with_overdue(state: &AppState, mut t: TicketDetail) -> Json<TicketDetail> {
    t.ticket.mark_overdue(state.now());
    Json(t)
}

/// `GET /api/tickets/{number}`: the ticket, its audit trail, its calls and e-mails.
pub async fn get_ticket(
    State(state): State<AppState>,
    Path(number): Path<String>,
) -> ApiResult<TicketDetail> {
    let number = ticket_number(&number)?;
    let ticket = state
        .work
        .get_ticket(number)
        .await?
        .ok_or_else(|| ApiError::not_found("ticket"))?;
    Ok(with_overdue(&state, ticket))
}

/// Body of `PATCH /api/tickets/{number}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketPatch {
    /// Who makes the change.
    by: Option<String>,
    status: Option<String>,
    resolution: Option<String>,
    /// A name, or `null` to unassign.
    #[serde(default, deserialize_with = "present")]
    assignee: Option<Option<String>>,
    note: Option<String>,
}

fn present<'de, D>(d: D) -> Result<Option<Option<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<String>::deserialize(d).map(Some)
}

impl TicketPatch {
    /// The change, checked: who, and at least one thing to change.
    fn change(self) -> Result<TicketChange, ApiError> {
        let by = self.by.as_deref().ok_or_else(|| {
            ApiError::bad_request("`by` is required: who makes the change (for the audit trail)")
        })?;
        TicketChange::checked(
            by,
            self.status.as_deref(),
            self.resolution.as_deref(),
            self.assignee.as_ref().map(|a| a.as_deref()),
            self.note.as_deref(),
        )
        .map_err(ApiError::bad_request)
    }
}

/// `PATCH /api/tickets/{number}`: resolve (with a resolution) or reopen, assign or
/// unassign, add a note; each change is kept in the ticket's audit trail.
pub async fn patch_ticket(
    State(state): State<AppState>,
    Path(number): Path<String>,
    body: Result<Json<TicketPatch>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<TicketDetail> {
    let number = ticket_number(&number)?;
    let Json(patch) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"by\": \"name\", \"status\": \"open\" | \"resolved\", \"resolution\": \"...\", \
             \"assignee\": \"name\" | null, \"note\": \"...\"}}: {}",
            e.body_text()
        ))
    })?;
    let change = patch.change()?;
    let ticket = state
        .work
        .update_ticket(number, &change, state.now())
        .await?
        .ok_or_else(|| ApiError::not_found("ticket"))?;
    tracing::info!(ticket = %number, by = %change.by, status = ?change.status, "ticket changed");
    Ok(with_overdue(&state, ticket))
}

/// Query of `GET /api/notifications`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsParams {
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// A page of notifications.
#[derive(Debug, Serialize)]
pub struct NotificationsPage {
    notifications: Vec<NotificationView>,
    next_cursor: Option<String>,
}

/// `GET /api/notifications`: e-mails, newest first, with their delivery.
pub async fn list_notifications(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<NotificationsParams>,
) -> ApiResult<NotificationsPage> {
    let limit = page_size(p.limit)?;
    if let Some(status) = &p.status {
        if !["queued", "sent", "failed"].contains(&status.as_str()) {
            return Err(ApiError::bad_request(
                "status must be queued, sent or failed",
            ));
        }
    }
    let q = NotificationQuery {
        status: p.status,
        limit,
        before_id: page_cursor(p.cursor.as_deref(), "notification")?,
    };
    let notifications = state.work.list_notifications(&q).await?;
    let next_cursor = (notifications.len() == limit as usize)
        .then(|| notifications.last().map(|n| n.id.to_string()))
        .flatten();
    Ok(Json(NotificationsPage {
        notifications,
        next_cursor,
    }))
}

/// `POST /api/notifications/{id}/resend`: queue the e-mail again, whatever its status. It
/// keeps its Message-ID, so the recipient's mail program can tell it is the same e-mail.
pub async fn resend_notification(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<NotificationView> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request("a notification id is a number"))?;
    let n = state
        .work
        .resend_notification(id, state.now())
        .await?
        .ok_or_else(|| ApiError::not_found("notification"))?;
    tracing::info!(notification = id, "e-mail queued again by a manager");
    Ok(Json(n))
}
