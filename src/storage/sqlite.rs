//! The embedded default backend: one SQLite file in WAL mode.

use super::*;
use crate::records::StepRecord;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};
use std::str::FromStr;
use std::time::Duration;

/// SQLite storage: one writer connection (SQLite takes one writer at a time; queueing in
/// the pool is fairer and faster than connections spinning on the file lock) and a pool of
/// read-only connections, which WAL mode never blocks, so that readers carry on while a
/// write is stuck.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file named by a `sqlite://` URL.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let base = SqliteConnectOptions::from_str(url)?
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(2));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal),
            )
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(base.read_only(true))
            .await?;
        Ok(Self { writer, reader })
    }
}

const CALL_COLUMNS: &str = "call_sid, line, store_name, from_number, to_number, flow, flow_version, \
     started_at, ended_at, status, duration_seconds, outcome, recording_url, error_count, last_error";

fn call_view(row: &SqliteRow) -> Result<CallView, sqlx::Error> {
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

fn ticket_view(row: &SqliteRow) -> Result<TicketView, sqlx::Error> {
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
        overdue: false,
        relation: None,
    })
}

const TICKET_COLUMNS: &str = "id, category, reason, status, call_sid, caller_number, created_at, \
     recording_url, external_ref, due_at, escalated_at";

async fn ensure_call(
    tx: &mut Transaction<'_, Sqlite>,
    call: &CallInfo,
    at: i64,
    status: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO calls (call_sid, line, store_name, from_number, to_number, flow, flow_version, started_at, status) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (call_sid) DO NOTHING",
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
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A step's JSON data with every value made to forget its caller.
fn forget_data(json: &str) -> String {
    match serde_json::from_str::<std::collections::BTreeMap<String, String>>(json) {
        Ok(map) => {
            let map: std::collections::BTreeMap<String, String> = map
                .into_iter()
                .map(|(k, v)| (k, crate::domain::forget_text(&v)))
                .collect();
            serde_json::to_string(&map).unwrap_or_default()
        }
        Err(_) => String::new(),
    }
}

fn fill_ticket(text: &str, ticket: Option<TicketNumber>) -> String {
    match ticket {
        Some(t) if text.contains("{ticket_number}") => {
            text.replace("{ticket_number}", &t.to_string())
        }
        _ => text.to_string(),
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.writer)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn hours_override(&self) -> StoreResult<Option<OverrideState>> {
        let value: Option<Option<String>> =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = 'hours_override'")
                .fetch_optional(&self.reader)
                .await?;
        Ok(value.flatten().as_deref().and_then(OverrideState::parse))
    }

    async fn set_hours_override(
        &self,
        state: Option<OverrideState>,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ('hours_override', ?, ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(state.map(OverrideState::as_str))
        .bind(to_millis(at))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn call_has_ticket(&self, call_sid: &str) -> StoreResult<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM tickets WHERE call_sid = ? LIMIT 1")
                .bind(call_sid)
                .fetch_optional(&self.reader)
                .await?;
        Ok(found.is_some())
    }

    async fn find_external_ticket(
        &self,
        category: &str,
        external_ref: &str,
    ) -> StoreResult<Option<ExistingTicket>> {
        let row = sqlx::query(
            "SELECT id, status, created_at, due_at FROM tickets \
             WHERE external_ref = ? AND category = ? AND status IN ('open', 'escalated') \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(external_ref)
        .bind(category)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|r| {
            Ok(ExistingTicket {
                id: r.try_get("id")?,
                status: r.try_get("status")?,
                created_at: from_millis(r.try_get("created_at")?),
                due_at: r.try_get::<Option<i64>, _>("due_at")?.map(from_millis),
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| e.into())
    }

    #[tracing::instrument(skip_all, fields(call_sid = %batch.call.call_sid, key = batch.request_key))]
    async fn commit_step(&self, batch: &StepBatch<'_>) -> StoreResult<Committed> {
        let at = to_millis(batch.at);
        let sid = batch.call.call_sid.as_str();
        let key = batch.request_key;
        let mut tx = self.writer.begin().await?;
        ensure_call(&mut tx, batch.call, at, "in-progress").await?;
        let fresh = sqlx::query(
            "INSERT INTO webhooks (call_sid, request_key, at, answer) VALUES (?, ?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(sid)
        .bind(key)
        .bind(at)
        .bind(batch.answer)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            let row = sqlx::query(
                "SELECT ticket_id, answer FROM webhooks WHERE call_sid = ? AND request_key = ?",
            )
            .bind(sid)
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Committed {
                ticket: row
                    .try_get::<Option<i64>, _>("ticket_id")?
                    .map(TicketNumber),
                replay: Some(row.try_get("answer")?),
            });
        }
        let mut ticket: Option<TicketNumber> =
            sqlx::query_scalar("SELECT max(id) FROM tickets WHERE call_sid = ?")
                .bind(sid)
                .fetch_one(&mut *tx)
                .await
                .map(|id: Option<i64>| id.map(TicketNumber))?;
        for (idx, record) in batch.records.iter().enumerate() {
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
                    let data = if data.is_empty() {
                        None
                    } else {
                        serde_json::to_string(data).ok()
                    };
                    sqlx::query(
                        "INSERT INTO steps (call_sid, request_key, idx, at, node, kind, said, digits, result, data) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    )
                    .bind(sid)
                    .bind(key)
                    .bind(idx)
                    .bind(at)
                    .bind(node)
                    .bind(kind)
                    .bind(fill_ticket(said, ticket))
                    .bind(digits)
                    .bind(result)
                    .bind(data)
                    .execute(&mut *tx)
                    .await?;
                }
                Record::Ticket {
                    category,
                    reason,
                    external_ref,
                    due_at,
                    recording_url,
                } => {
                    sqlx::query(
                        "INSERT INTO tickets (call_sid, request_key, idx, category, reason, caller_number, created_at, \
                         external_ref, due_at, recording_url) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    )
                    .bind(sid)
                    .bind(key)
                    .bind(idx)
                    .bind(category)
                    .bind(fill_ticket(reason, ticket))
                    .bind(&batch.call.from)
                    .bind(at)
                    .bind(external_ref)
                    .bind(due_at.map(to_millis))
                    .bind(recording_url)
                    .execute(&mut *tx)
                    .await?;
                    let id: i64 = sqlx::query_scalar(
                        "SELECT id FROM tickets WHERE call_sid = ? AND request_key = ? AND idx = ?",
                    )
                    .bind(sid)
                    .bind(key)
                    .bind(idx)
                    .fetch_one(&mut *tx)
                    .await?;
                    ticket = Some(TicketNumber(id));
                }
                Record::Notification {
                    contact,
                    address,
                    subject,
                    body,
                } => {
                    sqlx::query(
                        "INSERT INTO notifications (call_sid, ticket_id, request_key, idx, contact, address, subject, body, created_at) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    )
                    .bind(sid)
                    .bind(ticket.map(|t| t.0))
                    .bind(key)
                    .bind(idx)
                    .bind(contact)
                    .bind(address)
                    .bind(fill_ticket(subject, ticket))
                    .bind(fill_ticket(body, ticket))
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                }
                Record::LinkTicket {
                    ticket_id,
                    relation,
                } => {
                    sqlx::query(
                        "INSERT INTO call_tickets (call_sid, ticket_id, relation, at) VALUES (?, ?, ?, ?) \
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
                        "UPDATE tickets SET status = 'escalated', escalated_at = ? \
                         WHERE id = ? AND status = 'open'",
                    )
                    .bind(at)
                    .bind(ticket_id)
                    .execute(&mut *tx)
                    .await?;
                }
                Record::Recording { url, .. } => {
                    sqlx::query("UPDATE calls SET recording_url = ? WHERE call_sid = ?")
                        .bind(url)
                        .bind(sid)
                        .execute(&mut *tx)
                        .await?;
                    if let Some(t) = ticket {
                        sqlx::query("UPDATE tickets SET recording_url = ? WHERE id = ?")
                            .bind(url)
                            .bind(t.0)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                Record::Outcome { value, replace } => {
                    let sql = if *replace {
                        "UPDATE calls SET outcome = ? WHERE call_sid = ?"
                    } else {
                        "UPDATE calls SET outcome = COALESCE(outcome, ?) WHERE call_sid = ?"
                    };
                    sqlx::query(sql)
                        .bind(value)
                        .bind(sid)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        if let Some(error) = batch.error {
            sqlx::query(
                "UPDATE calls SET error_count = error_count + 1, last_error = ? WHERE call_sid = ?",
            )
            .bind(error)
            .bind(sid)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(t) = ticket {
            sqlx::query("UPDATE webhooks SET ticket_id = ? WHERE call_sid = ? AND request_key = ?")
                .bind(t.0)
                .bind(sid)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Committed {
            ticket,
            replay: None,
        })
    }

    #[tracing::instrument(skip_all, fields(call_sid = %update.call.call_sid, status = update.status))]
    async fn record_status(&self, update: &StatusUpdate<'_>) -> StoreResult<()> {
        let at = to_millis(update.at);
        let mut tx = self.writer.begin().await?;
        ensure_call(&mut tx, update.call, at, update.status).await?;
        let row = sqlx::query("SELECT status, status_seq FROM calls WHERE call_sid = ?")
            .bind(&update.call.call_sid)
            .fetch_one(&mut *tx)
            .await?;
        let old_status: String = row.try_get("status")?;
        let old_seq: Option<i64> = row.try_get("status_seq")?;
        let newer = match (update.sequence, old_seq) {
            (Some(new), Some(old)) => new >= old,
            _ => status_rank(update.status) >= status_rank(&old_status),
        };
        let regresses = is_final_status(&old_status) && !is_final_status(update.status);
        if newer && !regresses {
            let is_final = is_final_status(update.status);
            sqlx::query(
                "UPDATE calls SET status = ?, status_seq = COALESCE(?, status_seq), \
                 duration_seconds = COALESCE(?, duration_seconds), \
                 ended_at = CASE WHEN ? THEN COALESCE(ended_at, ?) ELSE ended_at END, \
                 outcome = CASE WHEN ? THEN COALESCE(outcome, 'abandoned') ELSE outcome END \
                 WHERE call_sid = ?",
            )
            .bind(update.status)
            .bind(update.sequence)
            .bind(update.duration_seconds)
            .bind(is_final)
            .bind(at)
            .bind(is_final)
            .bind(&update.call.call_sid)
            .execute(&mut *tx)
            .await?;
        } else if update.duration_seconds.is_some() {
            // A late callback may still carry the duration the final one lacked.
            sqlx::query("UPDATE calls SET duration_seconds = COALESCE(duration_seconds, ?) WHERE call_sid = ?")
                .bind(update.duration_seconds)
                .bind(&update.call.call_sid)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_calls(&self, q: &CallQuery) -> StoreResult<Vec<CallView>> {
        let mut b: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {CALL_COLUMNS} FROM calls WHERE 1 = 1"));
        if let Some(since) = q.since {
            b.push(" AND started_at >= ").push_bind(to_millis(since));
        }
        if let Some(until) = q.until {
            b.push(" AND started_at < ").push_bind(to_millis(until));
        }
        if let Some(line) = &q.line {
            b.push(" AND line = ").push_bind(line.clone());
        }
        if let Some(outcome) = &q.outcome {
            match outcome.strip_suffix('*') {
                Some(prefix) => {
                    b.push(" AND substr(outcome, 1, ")
                        .push_bind(prefix.chars().count() as i64)
                        .push(") = ")
                        .push_bind(prefix.to_string());
                }
                None => {
                    b.push(" AND outcome = ").push_bind(outcome.clone());
                }
            }
        }
        if let Some(category) = &q.category {
            b.push(" AND EXISTS (SELECT 1 FROM tickets t WHERE t.call_sid = calls.call_sid AND t.category = ")
                .push_bind(category.clone())
                .push(")");
        }
        if let Some((started, sid)) = &q.after {
            b.push(" AND (started_at < ")
                .push_bind(*started)
                .push(" OR (started_at = ")
                .push_bind(*started)
                .push(" AND call_sid < ")
                .push_bind(sid.clone())
                .push("))");
        }
        b.push(" ORDER BY started_at DESC, call_sid DESC LIMIT ")
            .push_bind(i64::from(q.limit));
        let rows = b.build().fetch_all(&self.reader).await?;
        Ok(rows.iter().map(call_view).collect::<Result<_, _>>()?)
    }

    async fn get_call(&self, call_sid: &str) -> StoreResult<Option<CallDetail>> {
        let Some(row) = sqlx::query(&format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE call_sid = ?"
        ))
        .bind(call_sid)
        .fetch_optional(&self.reader)
        .await?
        else {
            return Ok(None);
        };
        let call = call_view(&row)?;
        let steps = sqlx::query(
            "SELECT at, node, kind, said, digits, result, data FROM steps WHERE call_sid = ? ORDER BY id",
        )
        .bind(call_sid)
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(|r| {
            Ok(StepView {
                at: from_millis(r.try_get("at")?),
                node: r.try_get("node")?,
                kind: r.try_get("kind")?,
                said: r.try_get("said")?,
                digits: r.try_get("digits")?,
                result: r.try_get("result")?,
                data: r
                    .try_get::<Option<String>, _>("data")?
                    .and_then(|d| serde_json::from_str(&d).ok())
                    .unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        // Tickets the call opened, then tickets of earlier calls it was linked to.
        let tickets = sqlx::query(&format!(
            "SELECT {TICKET_COLUMNS}, 'opened' AS relation, id AS sort FROM tickets WHERE call_sid = ? \
             UNION ALL \
             SELECT {TICKET_COLUMNS}, relation, id AS sort FROM tickets \
             JOIN (SELECT ticket_id, relation FROM call_tickets WHERE call_sid = ?) ct \
             ON ct.ticket_id = tickets.id \
             ORDER BY sort"
        ))
        .bind(call_sid)
        .bind(call_sid)
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(|r| {
            let mut t = ticket_view(r)?;
            t.relation = Some(r.try_get("relation")?);
            Ok(t)
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let notifications = sqlx::query(
            "SELECT contact, address, subject, body, status, ticket_id FROM notifications WHERE call_sid = ? ORDER BY id",
        )
        .bind(call_sid)
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(|r| {
            Ok(NotificationView {
                contact: r.try_get("contact")?,
                address: r.try_get("address")?,
                subject: r.try_get("subject")?,
                body: r.try_get("body")?,
                status: r.try_get("status")?,
                ticket: r
                    .try_get::<Option<i64>, _>("ticket_id")?
                    .map(|id| TicketNumber(id).to_string()),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some(CallDetail {
            call,
            steps,
            tickets,
            notifications,
        }))
    }

    async fn list_tickets(&self, q: &TicketQuery) -> StoreResult<Vec<TicketView>> {
        let mut b: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE 1 = 1"));
        if let Some(status) = &q.status {
            b.push(" AND status = ").push_bind(status.clone());
        }
        if let Some(category) = &q.category {
            b.push(" AND category = ").push_bind(category.clone());
        }
        if let Some(before) = q.before_id {
            b.push(" AND id < ").push_bind(before);
        }
        if let Some(external_ref) = &q.external_ref {
            b.push(" AND external_ref = ")
                .push_bind(external_ref.clone());
        }
        if let Some(at) = q.overdue_at {
            b.push(" AND status IN ('open', 'escalated') AND due_at <= ")
                .push_bind(to_millis(at));
        }
        b.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(q.limit));
        let rows = b.build().fetch_all(&self.reader).await?;
        Ok(rows.iter().map(ticket_view).collect::<Result<_, _>>()?)
    }

    async fn forget_callers_before(
        &self,
        cutoff: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<Forgotten> {
        use crate::domain::{forget_text, mask_phone};
        let mut done = Forgotten::default();
        loop {
            // In batches, each its own transaction, so that webhooks are not held up.
            let mut tx = self.writer.begin().await?;
            let calls = sqlx::query(
                "SELECT call_sid, from_number, recording_url, last_error FROM calls \
                 WHERE started_at < ? AND anonymised_at IS NULL LIMIT 200",
            )
            .bind(to_millis(cutoff))
            .fetch_all(&mut *tx)
            .await?;
            if calls.is_empty() {
                return Ok(done);
            }
            for call in &calls {
                let sid: String = call.try_get("call_sid")?;
                let masked = mask_phone(&call.try_get::<String, _>("from_number")?);
                if call
                    .try_get::<Option<String>, _>("recording_url")?
                    .is_some()
                {
                    done.recordings += 1;
                }
                let last_error = call
                    .try_get::<Option<String>, _>("last_error")?
                    .map(|e| forget_text(&e));
                sqlx::query(
                    "UPDATE calls SET from_number = ?, recording_url = NULL, last_error = ?, \
                     anonymised_at = ? WHERE call_sid = ?",
                )
                .bind(&masked)
                .bind(last_error)
                .bind(to_millis(at))
                .bind(&sid)
                .execute(&mut *tx)
                .await?;
                done.recordings += sqlx::query(
                    "UPDATE tickets SET recording_url = NULL WHERE call_sid = ? AND recording_url IS NOT NULL",
                )
                .bind(&sid)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                sqlx::query("UPDATE tickets SET caller_number = ? WHERE call_sid = ?")
                    .bind(&masked)
                    .bind(&sid)
                    .execute(&mut *tx)
                    .await?;
                let steps =
                    sqlx::query("SELECT id, said, digits, data FROM steps WHERE call_sid = ?")
                        .bind(&sid)
                        .fetch_all(&mut *tx)
                        .await?;
                for step in &steps {
                    let digits: Option<String> = step.try_get("digits")?;
                    sqlx::query("UPDATE steps SET said = ?, digits = ?, data = ? WHERE id = ?")
                        .bind(forget_text(&step.try_get::<String, _>("said")?))
                        .bind(digits.filter(|d| d.len() < 7))
                        .bind(
                            step.try_get::<Option<String>, _>("data")?
                                .map(|d| forget_data(&d)),
                        )
                        .bind(step.try_get::<i64, _>("id")?)
                        .execute(&mut *tx)
                        .await?;
                }
                let notes =
                    sqlx::query("SELECT id, subject, body FROM notifications WHERE call_sid = ?")
                        .bind(&sid)
                        .fetch_all(&mut *tx)
                        .await?;
                for note in &notes {
                    sqlx::query("UPDATE notifications SET subject = ?, body = ? WHERE id = ?")
                        .bind(forget_text(&note.try_get::<String, _>("subject")?))
                        .bind(forget_text(&note.try_get::<String, _>("body")?))
                        .bind(note.try_get::<i64, _>("id")?)
                        .execute(&mut *tx)
                        .await?;
                }
                // Stored answers replay retries, long over; they hold read-backs and call variables.
                sqlx::query("DELETE FROM webhooks WHERE call_sid = ?")
                    .bind(&sid)
                    .execute(&mut *tx)
                    .await?;
                done.calls += 1;
            }
            tx.commit().await?;
        }
    }
}
