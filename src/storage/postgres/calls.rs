//! PostgreSQL: what webhooks and status callbacks write, and the manager's reads of calls.
//!
//! Each webhook is one transaction. Two instances answering the same webhook at once (the
//! platform's retry, or the load balancer trying the next instance) race on the primary
//! key of `webhooks`: the second `INSERT … ON CONFLICT DO NOTHING` waits for the first
//! transaction, finds its row once it commits and replays its answer, so the records are
//! written once and both callers hear the same. Ticket numbers come from an identity
//! column, unique across instances.

use super::reads::{calls_query, tickets_query};
use super::rows::{call_view, ticket_view};
use super::PgStore;
use crate::domain::{is_final_status, status_rank};
use crate::records::StepRecord;
use crate::storage::*;
use sqlx::{PgConnection, Row};

/// The newest open or escalated ticket of a category for a partner's ticket number.
pub const EXTERNAL_TICKET: &str = "SELECT id, status, created_at, due_at FROM tickets \
     WHERE external_ref = $1 AND category = $2 AND status IN ('open', 'escalated') \
     ORDER BY id DESC LIMIT 1";

/// The caller's newest open ticket opened by a flow node.
pub const CALLER_OPEN_TICKET: &str = "SELECT id, status, created_at, due_at FROM tickets \
     WHERE caller_number = $1 AND node = $2 AND status IN ('open', 'escalated') \
     ORDER BY id DESC LIMIT 1";

/// A call's newest ticket, opened by it or linked to it.
const CALL_LATEST_TICKET: &str = "SELECT max(id) FROM (SELECT id FROM tickets WHERE call_sid = $1 \
     UNION ALL SELECT ticket_id AS id FROM call_tickets WHERE call_sid = $1) t";

fn existing_ticket(r: &sqlx::postgres::PgRow) -> Result<ExistingTicket, sqlx::Error> {
    Ok(ExistingTicket {
        id: r.try_get(0)?,
        status: r.try_get(1)?,
        created_at: from_millis(r.try_get(2)?),
        due_at: r.try_get::<Option<i64>, _>(3)?.map(from_millis),
    })
}

/// The call's row id, its row first written if this is its first webhook or callback, and
/// locked until the transaction ends: the webhooks of one call are written one after the
/// other whichever instances take them, so that each sees what the one before wrote (a
/// ticket replayed from one instance's journal and the voicemail another instance commits
/// at the same moment would otherwise each miss the other). Two instances writing a new
/// call at once: the second insert waits for the first and then finds its row.
async fn call_id(
    tx: &mut PgConnection,
    call: &CallInfo,
    at: i64,
    status: &str,
) -> Result<i64, sqlx::Error> {
    const LOCKED: &str = "SELECT id FROM calls WHERE call_sid = $1 FOR UPDATE";
    let known: Option<i64> = sqlx::query_scalar(LOCKED)
        .bind(&call.call_sid)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(id) = known {
        return Ok(id);
    }
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO calls (call_sid, line, store_name, from_number, to_number, flow, flow_version, started_at, status) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (call_sid) DO NOTHING RETURNING id",
    )
    .bind(&call.call_sid)
    .bind(&call.line)
    .bind(&call.store_name)
    .bind(&call.from)
    .bind(&call.to)
    .bind(&call.flow)
    .bind(&call.flow_version)
    .bind(at)
    .bind(status)
    .fetch_optional(&mut *tx)
    .await?;
    match inserted {
        Some(id) => Ok(id),
        None => {
            sqlx::query_scalar(LOCKED)
                .bind(&call.call_sid)
                .fetch_one(&mut *tx)
                .await
        }
    }
}

/// E-mails of the call held for its voicemail are due at `due` (or sooner).
async fn release_held_notifications(
    tx: &mut PgConnection,
    sid: &str,
    due: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifications SET next_attempt_at = $2 WHERE call_sid = $1 AND status = 'queued' \
         AND attach_recording AND next_attempt_at > $2",
    )
    .bind(sid)
    .bind(due)
    .execute(tx)
    .await?;
    Ok(())
}

/// Writes one webhook's records in the transaction (see the module's note on races).
async fn apply_step(tx: &mut PgConnection, b: &StepBatch<'_>) -> Result<Committed, sqlx::Error> {
    let (sid, key, at) = (b.call.call_sid.as_str(), b.request_key, to_millis(b.at));
    let call = call_id(tx, b.call, at, "in-progress").await?;
    let fresh = sqlx::query(
        "INSERT INTO webhooks (call_id, request_key, at, answer) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(call)
    .bind(key)
    .bind(at)
    .bind(b.answer)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !fresh {
        let row = sqlx::query(
            "SELECT ticket_id, answer FROM webhooks WHERE call_id = $1 AND request_key = $2",
        )
        .bind(call)
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
        return Ok(Committed {
            ticket: row.try_get::<Option<i64>, _>(0)?.map(TicketNumber),
            replay: Some(row.try_get(1)?),
        });
    }
    let speaks_ticket = b.answer_speaks_ticket;
    let mut ticket: Option<TicketNumber> = if speaks_ticket || records_use_call_ticket(b.records) {
        sqlx::query_scalar::<_, Option<i64>>(CALL_LATEST_TICKET)
            .bind(sid)
            .fetch_one(&mut *tx)
            .await?
            .map(TicketNumber)
    } else {
        None
    };
    for (idx, record) in b.records.iter().enumerate() {
        let idx = idx as i64;
        match record {
            Record::Step(StepRecord {
                node,
                kind,
                said,
                digits,
                result,
                data,
            }) => {
                let data = (!data.is_empty())
                    .then(|| serde_json::to_string(data).ok())
                    .flatten();
                sqlx::query(
                    "INSERT INTO steps (call_id, request_key, idx, at, node, kind, said, digits, result, data) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
                )
                .bind(call)
                .bind(key)
                .bind(idx)
                .bind(at)
                .bind(node)
                .bind(kind)
                .bind(said.written(ticket.as_ref()))
                .bind(digits)
                .bind(result)
                .bind(data)
                .execute(&mut *tx)
                .await?;
            }
            // A ticket written after the call's voicemail (replayed late from a journal, or
            // opened after it) keeps that voicemail; an e-mail held for the voicemail is due
            // at once when it is in already.
            Record::Ticket {
                category,
                reason,
                external_ref,
                due_at,
                recording_url,
                node,
            } => {
                let inserted: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO tickets (call_sid, request_key, idx, category, reason, caller_number, created_at, \
                     external_ref, due_at, recording_url, node) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                     COALESCE($10, (SELECT recording_url FROM calls WHERE call_sid = $1)), $11) \
                     ON CONFLICT DO NOTHING RETURNING id",
                )
                .bind(sid)
                .bind(key)
                .bind(idx)
                .bind(category)
                .bind(reason.written(ticket.as_ref()))
                .bind(&b.call.from)
                .bind(at)
                .bind(external_ref)
                .bind(due_at.map(to_millis))
                .bind(recording_url)
                .bind(node)
                .fetch_optional(&mut *tx)
                .await?;
                let id = match inserted {
                    Some(id) => id,
                    None => {
                        sqlx::query_scalar(
                            "SELECT id FROM tickets WHERE call_sid = $1 AND request_key = $2 AND idx = $3",
                        )
                        .bind(sid)
                        .bind(key)
                        .bind(idx)
                        .fetch_one(&mut *tx)
                        .await?
                    }
                };
                ticket = Some(TicketNumber(id));
            }
            Record::Notification {
                contact,
                address,
                subject,
                body,
                recording_wait_until,
            } => {
                sqlx::query(
                    "INSERT INTO notifications (call_sid, ticket_id, request_key, idx, contact, address, subject, body, \
                     created_at, next_attempt_at, attach_recording) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                     CASE WHEN (SELECT recording_url FROM calls WHERE call_sid = $1) IS NULL THEN $10 ELSE $9 END, $11) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(sid)
                .bind(ticket.map(|t| t.0))
                .bind(key)
                .bind(idx)
                .bind(contact)
                .bind(address)
                .bind(subject.written(ticket.as_ref()))
                .bind(body.written(ticket.as_ref()))
                .bind(at)
                .bind(recording_wait_until.map_or(at, to_millis))
                .bind(recording_wait_until.is_some())
                .execute(&mut *tx)
                .await?;
            }
            Record::LinkTicket {
                ticket_id,
                relation,
            } => {
                sqlx::query(
                    "INSERT INTO call_tickets (call_sid, ticket_id, relation, at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(sid)
                .bind(ticket_id)
                .bind(relation)
                .bind(at)
                .execute(&mut *tx)
                .await?;
                ticket = Some(TicketNumber(*ticket_id));
            }
            Record::Escalate { ticket_id } => {
                sqlx::query(
                    "UPDATE tickets SET status = 'escalated', escalated_at = $1 \
                     WHERE id = $2 AND status = 'open'",
                )
                .bind(at)
                .bind(ticket_id)
                .execute(&mut *tx)
                .await?;
            }
            Record::Recording { url, .. } => {
                sqlx::query("UPDATE calls SET recording_url = $1 WHERE id = $2")
                    .bind(url)
                    .bind(call)
                    .execute(&mut *tx)
                    .await?;
                // A ticket keeps the first voicemail left for it.
                if let Some(t) = ticket {
                    sqlx::query(
                        "UPDATE tickets SET recording_url = COALESCE(recording_url, $1) WHERE id = $2",
                    )
                    .bind(url)
                    .bind(t.0)
                    .execute(&mut *tx)
                    .await?;
                }
                release_held_notifications(tx, sid, at).await?;
            }
            Record::Outcome { value, replace } => {
                // A later webhook's outcome is not replaced by one replayed late from an
                // instance's journal (migration 0002).
                let sql = if *replace {
                    "UPDATE calls SET outcome = $1, outcome_at = $3 \
                     WHERE id = $2 AND (outcome_at IS NULL OR outcome_at <= $3)"
                } else {
                    "UPDATE calls SET outcome = $1, outcome_at = $3 WHERE id = $2 AND outcome IS NULL"
                };
                sqlx::query(sql)
                    .bind(value)
                    .bind(call)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    if let Some(error) = b.error {
        sqlx::query(
            "UPDATE calls SET error_count = error_count + 1, last_error = $1 WHERE id = $2",
        )
        .bind(error)
        .bind(call)
        .execute(&mut *tx)
        .await?;
    }
    if let Some(t) = ticket.filter(|_| speaks_ticket) {
        sqlx::query("UPDATE webhooks SET ticket_id = $1 WHERE call_id = $2 AND request_key = $3")
            .bind(t.0)
            .bind(call)
            .bind(key)
            .execute(&mut *tx)
            .await?;
    }
    Ok(Committed {
        ticket,
        replay: None,
    })
}

/// Applies a status callback (the call's row locked by `call_id`, so that callbacks of one
/// call arriving at two instances are applied one after the other).
async fn apply_status(tx: &mut PgConnection, u: &StatusUpdate<'_>) -> Result<(), sqlx::Error> {
    let at = to_millis(u.at);
    let call = call_id(tx, u.call, at, u.status).await?;
    let row = sqlx::query("SELECT status, status_seq FROM calls WHERE id = $1")
        .bind(call)
        .fetch_one(&mut *tx)
        .await?;
    let (old_status, old_seq): (String, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
    let newer = match (u.sequence, old_seq) {
        (Some(new), Some(old)) => new >= old,
        _ => status_rank(u.status) >= status_rank(&old_status),
    };
    let regresses = is_final_status(&old_status) && !is_final_status(u.status);
    if newer && !regresses {
        let is_final = is_final_status(u.status);
        sqlx::query(
            "UPDATE calls SET status = $1, status_seq = COALESCE($2, status_seq), \
             duration_seconds = COALESCE($3, duration_seconds), \
             ended_at = CASE WHEN $4 THEN COALESCE(ended_at, $5) ELSE ended_at END, \
             outcome = CASE WHEN $4 THEN COALESCE(outcome, 'abandoned') ELSE outcome END \
             WHERE id = $6",
        )
        .bind(u.status)
        .bind(u.sequence)
        .bind(u.duration_seconds)
        .bind(is_final)
        .bind(at)
        .bind(call)
        .execute(&mut *tx)
        .await?;
        if is_final {
            release_held_notifications(tx, &u.call.call_sid, at + RELEASE_AFTER_END_MS).await?;
        }
    } else if u.duration_seconds.is_some() {
        sqlx::query(
            "UPDATE calls SET duration_seconds = COALESCE(duration_seconds, $1) WHERE id = $2",
        )
        .bind(u.duration_seconds)
        .bind(call)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> StoreResult<()> {
        // Instances starting together: the migrator takes PostgreSQL's advisory lock, so
        // one applies the migrations and the others wait and find them applied.
        sqlx::migrate!("./migrations/postgres")
            .run(self.pool())
            .await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(self.pool()).await?;
        Ok(())
    }

    async fn close(&self) -> StoreResult<()> {
        self.pool().close().await;
        Ok(())
    }

    async fn hours_override(&self) -> StoreResult<Option<OverrideState>> {
        let value: Option<Option<String>> =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = 'hours_override'")
                .fetch_optional(self.pool())
                .await?;
        Ok(value.flatten().as_deref().and_then(OverrideState::parse))
    }

    async fn set_hours_override(
        &self,
        state: Option<OverrideState>,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ('hours_override', $1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
        )
        .bind(state.map(OverrideState::as_str))
        .bind(to_millis(at))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn call_has_ticket(&self, call_sid: &str) -> StoreResult<bool> {
        Ok(sqlx::query_scalar::<_, i32>(
            "SELECT 1 FROM tickets WHERE call_sid = $1 \
             UNION ALL SELECT 1 FROM call_tickets WHERE call_sid = $1 LIMIT 1",
        )
        .bind(call_sid)
        .fetch_optional(self.pool())
        .await?
        .is_some())
    }

    async fn find_external_ticket(
        &self,
        category: &str,
        external_ref: &str,
    ) -> StoreResult<Option<ExistingTicket>> {
        let row = sqlx::query(EXTERNAL_TICKET)
            .bind(external_ref)
            .bind(category)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(existing_ticket).transpose()?)
    }

    async fn commit_step(&self, batch: &StepBatch<'_>) -> StoreResult<Committed> {
        let mut tx = self.pool().begin().await?;
        let committed = apply_step(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(committed)
    }

    async fn record_status(&self, update: &StatusUpdate<'_>) -> StoreResult<()> {
        let mut tx = self.pool().begin().await?;
        apply_status(&mut tx, update).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_calls(&self, q: &CallQuery) -> StoreResult<Vec<CallView>> {
        let mut b = calls_query("", q);
        let rows = b.build().fetch_all(self.pool()).await?;
        Ok(rows.iter().map(call_view).collect::<Result<_, _>>()?)
    }

    async fn get_call(&self, call_sid: &str) -> StoreResult<Option<CallDetail>> {
        self.call_detail(call_sid).await
    }

    async fn list_tickets(&self, q: &TicketQuery) -> StoreResult<Vec<TicketView>> {
        let mut b = tickets_query("", q);
        let rows = b.build().fetch_all(self.pool()).await?;
        Ok(rows.iter().map(ticket_view).collect::<Result<_, _>>()?)
    }

    async fn find_caller_ticket(
        &self,
        caller: &str,
        node: &str,
    ) -> StoreResult<Option<ExistingTicket>> {
        let row = sqlx::query(CALLER_OPEN_TICKET)
            .bind(caller)
            .bind(node)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(existing_ticket).transpose()?)
    }

    async fn forget_callers_before(
        &self,
        cutoff: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<Forgotten> {
        self.forget_before(cutoff, at).await
    }
}
