//! SQLite: tickets that managers work, and the outbox of e-mails. Off the call path: these
//! run on the sqlx pools, the writer pool for changes and the read-only pool for reads.

use super::{notification_view, ticket_view, NOTIFICATION_COLUMNS, TICKET_COLUMNS};
use crate::storage::work::Overdue;
use crate::storage::*;
use sqlx::{Row, SqlitePool};

impl SqliteStore {
    /// A ticket with its trail, calls and e-mails.
    pub(super) async fn ticket_detail(
        &self,
        pool: &SqlitePool,
        number: TicketNumber,
    ) -> StoreResult<Option<TicketDetail>> {
        let Some(row) = sqlx::query(&format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE id = ?"
        ))
        .bind(number.0)
        .fetch_optional(pool)
        .await?
        else {
            return Ok(None);
        };
        let ticket = ticket_view(&row)?;
        let events = sqlx::query(
            "SELECT at, actor, action, detail FROM ticket_events WHERE ticket_id = ? ORDER BY id",
        )
        .bind(number.0)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            Ok(TicketEvent {
                at: from_millis(r.try_get("at")?),
                by: r.try_get("actor")?,
                action: r.try_get("action")?,
                detail: r.try_get("detail")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let calls = sqlx::query(
            "SELECT c.call_sid, x.relation, c.started_at, c.outcome, c.recording_url FROM \
             (SELECT call_sid, 'opened' AS relation, 0 AS at FROM tickets WHERE id = ?1 \
              UNION ALL SELECT call_sid, relation, at FROM call_tickets WHERE ticket_id = ?1) x \
             JOIN calls c ON c.call_sid = x.call_sid ORDER BY x.at, c.started_at",
        )
        .bind(number.0)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            Ok(TicketCall {
                call_sid: r.try_get("call_sid")?,
                relation: r.try_get("relation")?,
                started_at: from_millis(r.try_get("started_at")?),
                outcome: r.try_get("outcome")?,
                recording_url: r.try_get("recording_url")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let notifications = sqlx::query(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE ticket_id = ? ORDER BY id"
        ))
        .bind(number.0)
        .fetch_all(pool)
        .await?
        .iter()
        .map(notification_view)
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some(TicketDetail {
            ticket,
            events,
            calls,
            notifications,
        }))
    }

    /// Applies a change and writes each part of it to the trail, in one transaction.
    pub(super) async fn change_ticket(
        &self,
        number: TicketNumber,
        change: &TicketChange,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<TicketDetail>> {
        let at_ms = to_millis(at);
        let mut tx = self.writer()?.begin().await?;
        // The write first, so that the transaction holds the write lock from its start.
        let Some(before) = sqlx::query(
            "UPDATE tickets SET updated_at = ? WHERE id = ? RETURNING status, assignee",
        )
        .bind(at_ms)
        .bind(number.0)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let old_status: String = before.try_get("status")?;
        let old_assignee: Option<String> = before.try_get("assignee")?;
        let plan = change.plan(&old_status, &old_assignee);
        match plan.status.as_deref() {
            Some("resolved") => {
                sqlx::query(
                    "UPDATE tickets SET status = 'resolved', resolution = ?, resolved_at = ? WHERE id = ?",
                )
                .bind(&plan.resolution)
                .bind(at_ms)
                .bind(number.0)
                .execute(&mut *tx)
                .await?;
            }
            Some(status) => {
                sqlx::query("UPDATE tickets SET status = ?, resolved_at = NULL WHERE id = ?")
                    .bind(status)
                    .bind(number.0)
                    .execute(&mut *tx)
                    .await?;
            }
            None => {}
        }
        if let Some(assignee) = &plan.assignee {
            sqlx::query("UPDATE tickets SET assignee = ? WHERE id = ?")
                .bind(assignee)
                .bind(number.0)
                .execute(&mut *tx)
                .await?;
        }
        for (action, detail) in plan.events {
            sqlx::query(
                "INSERT INTO ticket_events (ticket_id, at, actor, action, detail) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(number.0)
            .bind(at_ms)
            .bind(&change.by)
            .bind(action)
            .bind(detail)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.ticket_detail(self.writer()?, number).await
    }

    /// One page of notifications, newest first.
    pub(super) async fn notifications(
        &self,
        q: &NotificationQuery,
    ) -> StoreResult<Vec<NotificationView>> {
        let mut b: sqlx::QueryBuilder<'_, sqlx::Sqlite> = sqlx::QueryBuilder::new(format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE 1 = 1"
        ));
        if let Some(status) = &q.status {
            b.push(" AND status = ").push_bind(status.clone());
        }
        if let Some(before) = q.before_id {
            b.push(" AND id < ").push_bind(before);
        }
        b.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(q.limit));
        let rows = b.build().fetch_all(self.reader()?).await?;
        Ok(rows
            .iter()
            .map(notification_view)
            .collect::<Result<_, _>>()?)
    }

    /// Queues a notification again, now.
    pub(super) async fn requeue(
        &self,
        id: i64,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<NotificationView>> {
        let row = sqlx::query(&format!(
            "UPDATE notifications SET status = 'queued', attempts = 0, next_attempt_at = ?, \
             claimed_until = NULL, last_error = NULL, sent_at = NULL WHERE id = ? RETURNING {NOTIFICATION_COLUMNS}"
        ))
        .bind(to_millis(at))
        .bind(id)
        .fetch_optional(self.writer()?)
        .await?;
        Ok(row.as_ref().map(notification_view).transpose()?)
    }

    /// Claims the notifications due at `now` that no live lease holds.
    pub(super) async fn claim(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxMessage>> {
        let now_ms = to_millis(now);
        let rows = sqlx::query(
            "UPDATE notifications SET claimed_until = ?1, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM notifications WHERE status = 'queued' \
               AND next_attempt_at <= ?2 AND (claimed_until IS NULL OR claimed_until <= ?2) \
               ORDER BY next_attempt_at LIMIT ?3) \
             RETURNING id, call_sid, contact, address, subject, body, attempts, attach_recording",
        )
        .bind(to_millis(lease_until))
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(self.writer()?)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for r in &rows {
            let attach: bool = r.try_get("attach_recording")?;
            let call_sid: String = r.try_get("call_sid")?;
            let recording_url = if attach {
                sqlx::query_scalar::<_, Option<String>>(
                    "SELECT recording_url FROM calls WHERE call_sid = ?",
                )
                .bind(&call_sid)
                .fetch_optional(self.reader()?)
                .await?
                .flatten()
            } else {
                None
            };
            claimed.push(OutboxMessage {
                id: r.try_get("id")?,
                contact: r.try_get("contact")?,
                address: r.try_get("address")?,
                subject: r.try_get("subject")?,
                body: r.try_get("body")?,
                attempts: r
                    .try_get::<i64, _>("attempts")?
                    .try_into()
                    .unwrap_or(u32::MAX),
                attach_recording: attach,
                recording_url,
            });
        }
        claimed.sort_by_key(|m| m.id);
        Ok(claimed)
    }

    /// Marks a claimed notification sent.
    pub(super) async fn mark_sent(&self, id: i64, at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query(
            "UPDATE notifications SET status = 'sent', sent_at = ?, claimed_until = NULL, \
             last_error = NULL WHERE id = ?",
        )
        .bind(to_millis(at))
        .bind(id)
        .execute(self.writer()?)
        .await?;
        Ok(())
    }

    /// Keeps the failure; queued again for `retry_at`, or `failed`.
    pub(super) async fn mark_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> StoreResult<()> {
        let error: String = error.chars().take(1000).collect();
        sqlx::query(
            "UPDATE notifications SET last_error = ?, claimed_until = NULL, \
             status = CASE WHEN ? IS NULL THEN 'failed' ELSE 'queued' END, \
             next_attempt_at = COALESCE(?, next_attempt_at) WHERE id = ?",
        )
        .bind(crate::domain::redact_numbers(&error))
        .bind(retry_at.map(to_millis))
        .bind(retry_at.map(to_millis))
        .bind(id)
        .execute(self.writer()?)
        .await?;
        Ok(())
    }

    /// The overdue sweep: marks each overdue ticket and queues its e-mail in one
    /// transaction, starting with the write so that two instances take turns.
    pub(super) async fn queue_overdue(
        &self,
        now: DateTime<Utc>,
        categories: &[String],
        contact: &str,
        address: &str,
    ) -> StoreResult<u64> {
        if categories.is_empty() {
            return Ok(0);
        }
        let now_ms = to_millis(now);
        let mut b: sqlx::QueryBuilder<'_, sqlx::Sqlite> =
            sqlx::QueryBuilder::new("UPDATE tickets SET overdue_notified_at = ");
        b.push_bind(now_ms)
            .push(
                " WHERE id IN (SELECT id FROM tickets WHERE overdue_notified_at IS NULL \
                 AND status IN ('open', 'escalated') AND due_at IS NOT NULL AND due_at <= ",
            )
            .push_bind(now_ms)
            .push(" AND category IN (");
        let mut list = b.separated(", ");
        for c in categories {
            list.push_bind(c.clone());
        }
        b.push(
            ") LIMIT 500) AND overdue_notified_at IS NULL RETURNING id, call_sid, category, reason, \
             caller_number, created_at, due_at, status, assignee",
        );
        let mut tx = self.writer()?.begin().await?;
        let rows = b.build().fetch_all(&mut *tx).await?;
        for r in &rows {
            let id: i64 = r.try_get("id")?;
            let number = TicketNumber(id);
            let overdue = Overdue {
                number,
                category: r.try_get("category")?,
                reason: r.try_get("reason")?,
                status: r.try_get("status")?,
                assignee: r.try_get("assignee")?,
                caller: r.try_get("caller_number")?,
                opened: from_millis(r.try_get("created_at")?),
                due: from_millis(r.try_get::<Option<i64>, _>("due_at")?.unwrap_or(now_ms)),
                call_sid: r.try_get("call_sid")?,
            };
            let (subject, body) = overdue.email();
            sqlx::query(
                "INSERT INTO notifications (call_sid, ticket_id, request_key, idx, contact, address, \
                 subject, body, created_at, next_attempt_at) \
                 VALUES (?, ?, 'overdue', ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(r.try_get::<String, _>("call_sid")?)
            .bind(id)
            .bind(id)
            .bind(contact)
            .bind(address)
            .bind(subject)
            .bind(body)
            .bind(now_ms)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }
}
