//! PostgreSQL: the views read from rows of calls, tickets and notifications, and the
//! columns each reads.

use crate::storage::*;
use sqlx::postgres::PgRow;
use sqlx::Row;

/// The columns [`call_view`] reads.
pub(super) const CALL_COLUMNS: &str = "call_sid, line, store_name, from_number, to_number, flow, flow_version, \
     started_at, ended_at, status, duration_seconds, outcome, recording_url, error_count, last_error";

/// The columns [`ticket_view`] reads.
pub(super) const TICKET_COLUMNS: &str = "id, category, reason, status, call_sid, caller_number, created_at, \
     recording_url, external_ref, due_at, escalated_at, node, assignee, resolution, resolved_at, updated_at";

/// The columns [`notification_view`] reads.
pub(super) const NOTIFICATION_COLUMNS: &str =
    "id, call_sid, contact, address, subject, body, status, \
     ticket_id, attempts, last_error, created_at, sent_at, next_attempt_at";

/// A call, from a row of [`CALL_COLUMNS`].
pub(super) fn call_view(row: &PgRow) -> Result<CallView, sqlx::Error> {
    Ok(CallView {
        call_sid: row.try_get("call_sid")?,
        line: row.try_get("line")?,
        store_name: row.try_get("store_name")?,
        from: row.try_get("from_number")?,
        to: row.try_get("to_number")?,
        flow: row.try_get("flow")?,
        flow_version: row.try_get("flow_version")?,
        started_at: from_millis(row.try_get("started_at")?),
        ended_at: row.try_get::<Option<i64>, _>("ended_at")?.map(from_millis),
        status: row.try_get("status")?,
        duration_seconds: row.try_get("duration_seconds")?,
        outcome: row.try_get("outcome")?,
        recording_url: row.try_get("recording_url")?,
        error_count: row.try_get("error_count")?,
        last_error: row.try_get("last_error")?,
    })
}

/// A ticket, from a row of [`TICKET_COLUMNS`] (not marked overdue, no relation).
pub(super) fn ticket_view(row: &PgRow) -> Result<TicketView, sqlx::Error> {
    Ok(TicketView {
        number: TicketNumber(row.try_get("id")?).to_string(),
        category: row.try_get("category")?,
        reason: row.try_get("reason")?,
        status: row.try_get("status")?,
        call_sid: row.try_get("call_sid")?,
        caller_number: row.try_get("caller_number")?,
        created_at: from_millis(row.try_get("created_at")?),
        recording_url: row.try_get("recording_url")?,
        external_ref: row.try_get("external_ref")?,
        due_at: row.try_get::<Option<i64>, _>("due_at")?.map(from_millis),
        escalated_at: row
            .try_get::<Option<i64>, _>("escalated_at")?
            .map(from_millis),
        node: row.try_get("node")?,
        assignee: row.try_get("assignee")?,
        resolution: row.try_get("resolution")?,
        resolved_at: row
            .try_get::<Option<i64>, _>("resolved_at")?
            .map(from_millis),
        updated_at: row
            .try_get::<Option<i64>, _>("updated_at")?
            .map(from_millis),
        overdue: false,
        relation: None,
    })
}

/// A notification, from a row of [`NOTIFICATION_COLUMNS`]; its next attempt only while
/// it is queued.
pub(super) fn notification_view(r: &PgRow) -> Result<NotificationView, sqlx::Error> {
    let status: String = r.try_get("status")?;
    Ok(NotificationView {
        id: r.try_get("id")?,
        call_sid: r.try_get("call_sid")?,
        contact: r.try_get("contact")?,
        address: r.try_get("address")?,
        subject: r.try_get("subject")?,
        body: r.try_get("body")?,
        ticket: r
            .try_get::<Option<i64>, _>("ticket_id")?
            .map(|id| TicketNumber(id).to_string()),
        attempts: r.try_get("attempts")?,
        last_error: r.try_get("last_error")?,
        created_at: from_millis(r.try_get("created_at")?),
        sent_at: r.try_get::<Option<i64>, _>("sent_at")?.map(from_millis),
        next_attempt_at: r
            .try_get::<Option<i64>, _>("next_attempt_at")?
            .filter(|_| status == "queued")
            .map(from_millis),
        status,
    })
}
