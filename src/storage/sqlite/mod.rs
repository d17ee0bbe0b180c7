//! The embedded default backend: one SQLite file in WAL mode.

mod checkpoint;
mod commit;
mod console;
mod error;
mod guard;
mod hot_path;
pub(crate) mod insights;
mod metrics;
pub mod queries;
pub(super) mod seed;
mod work;

use super::*;
use queries::CALL_STEPS;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

/// SQLite storage: one writer connection (SQLite takes one writer at a time; queueing in
/// the pool is fairer and faster than connections spinning on the file lock) and a pool of
/// read-only connections, which WAL mode never blocks, so that readers carry on while a
/// write is stuck.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer_pool: SqlitePool,
    reader_pool: SqlitePool,
    hot: hot_path::HotPath,
    guard: std::sync::Arc<guard::FileGuard>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file named by a `sqlite://` URL.
    pub async fn connect(url: &str, sync: crate::config::SqliteSync) -> StoreResult<Self> {
        let base = SqliteConnectOptions::from_str(url)?
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(2));
        private_files(base.get_filename())?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(match sync {
                        crate::config::SqliteSync::Normal => SqliteSynchronous::Normal,
                        crate::config::SqliteSync::Full => SqliteSynchronous::Full,
                    }),
            )
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(base.clone().read_only(true))
            .await?;
        let path = base.get_filename().to_path_buf();
        let guard = guard::FileGuard::new(&path)?;
        let hot = hot_path::HotPath::start(path.clone(), sync, guard.clone())?;
        if !path.as_os_str().is_empty() && !path.to_string_lossy().starts_with(':') {
            let keep = rusqlite::Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            guard.arm(keep)?;
        }
        Ok(Self {
            writer_pool: writer,
            reader_pool: reader,
            hot,
            guard,
        })
    }

    /// The writer pool, unless the files are damaged ([`guard`]).
    pub(super) fn writer(&self) -> StoreResult<&SqlitePool> {
        self.guard.check_shm()?;
        self.hot.note_write();
        Ok(&self.writer_pool)
    }

    /// The read-only pool, unless the files are damaged.
    pub(super) fn reader(&self) -> StoreResult<&SqlitePool> {
        self.guard.check_shm()?;
        Ok(&self.reader_pool)
    }
}

/// The database file, made (if missing) and kept readable by its owner only: it holds
/// callers' numbers. SQLite gives its `-wal` and `-shm` files the database file's mode;
/// existing ones are tightened too.
fn private_files(db: &std::path::Path) -> StoreResult<()> {
    use std::os::unix::fs::PermissionsExt;
    if db.as_os_str().is_empty() || db.to_string_lossy().starts_with(':') {
        return Ok(());
    }
    crate::storage::private_file(db).map_err(error::db_file)?;
    for suffix in ["-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let p = std::path::PathBuf::from(p);
        if let Ok(m) = p.metadata() {
            if m.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                    .map_err(error::db_file)?;
            }
        }
    }
    Ok(())
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

pub(super) fn ticket_view(row: &SqliteRow) -> Result<TicketView, sqlx::Error> {
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

pub(super) const TICKET_COLUMNS: &str = "id, category, reason, status, call_sid, caller_number, created_at, \
     recording_url, external_ref, due_at, escalated_at, node, assignee, resolution, resolved_at, updated_at";

pub(super) const NOTIFICATION_COLUMNS: &str =
    "id, call_sid, contact, address, subject, body, status, \
     ticket_id, attempts, last_error, created_at, sent_at, next_attempt_at";

pub(super) fn notification_view(r: &SqliteRow) -> Result<NotificationView, sqlx::Error> {
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

/// The query of a page of calls; `prefix` is empty, or `EXPLAIN QUERY PLAN `.
fn calls_query(prefix: &str, q: &CallQuery) -> QueryBuilder<'static, Sqlite> {
    let mut b: QueryBuilder<'static, Sqlite> = QueryBuilder::new(format!(
        "{prefix}SELECT {CALL_COLUMNS} FROM calls WHERE 1 = 1"
    ));
    if let Some(since) = q.since {
        b.push(" AND started_at >= ").push_bind(to_millis(since));
    }
    if let Some(until) = q.until {
        b.push(" AND started_at < ").push_bind(to_millis(until));
    }
    if let Some(line) = &q.line {
        b.push(" AND line = ").push_bind(line.clone());
    }
    if let Some(store) = &q.store {
        b.push(" AND store_name = ").push_bind(store.clone());
    }
    if let Some(caller) = &q.caller {
        // On `calls_by_caller_last4`, the whole number checked on the rows it finds.
        b.push(" AND substr(from_number, -4) = ")
            .push_bind(caller.last4.clone());
        if let Some(full) = &caller.full {
            b.push(" AND from_number = ").push_bind(full.clone());
        }
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
    match (&q.category, q.since, q.until) {
        // A bounded range: the few tickets of the category opened in it (with the slack
        // of `TICKET_AFTER_START`) name the calls, instead of probing every call of the range.
        (Some(category), Some(since), Some(until)) => {
            let (early, late) = TICKET_AFTER_START;
            b.push(" AND call_sid IN (SELECT t.call_sid FROM tickets t WHERE t.category = ")
                .push_bind(category.clone())
                .push(" AND t.created_at >= ")
                .push_bind(to_millis(since) - early.num_milliseconds())
                .push(" AND t.created_at < ")
                .push_bind(to_millis(until) + late.num_milliseconds())
                .push(")");
        }
        // Otherwise each call of the page is probed through the tickets' key, which leads
        // with the CallSid (`sqlite_autoindex_tickets_1`); the `+`
        // keeps SQLite from walking every ticket of the category per call instead.
        (Some(category), _, _) => {
            b.push(" AND EXISTS (SELECT 1 FROM tickets t WHERE t.call_sid = calls.call_sid AND +t.category = ")
                .push_bind(category.clone())
                .push(")");
        }
        (None, _, _) => {}
    }
    if let Some((started, sid)) = &q.after {
        // A row value: SQLite seeks the (started_at, call_sid) index to the cursor
        // instead of scanning the pages before it.
        b.push(" AND (started_at, call_sid) < (")
            .push_bind(*started)
            .push(", ")
            .push_bind(sid.clone())
            .push(")");
    }
    b.push(" ORDER BY started_at DESC, call_sid DESC LIMIT ")
        .push_bind(i64::from(q.limit));
    b
}

/// The query of a page of tickets; `prefix` is empty, or `EXPLAIN QUERY PLAN `. The page's
/// ids are found first, from an index alone, and only their rows are read. The overdue
/// filter still walks every overdue ticket's index entry to sort their ids (15 ms at p95
/// for 80,000 of them on the development machine; 17 ms when their rows were read too).
fn tickets_query(prefix: &str, q: &TicketQuery) -> QueryBuilder<'static, Sqlite> {
    let mut b: QueryBuilder<'static, Sqlite> = QueryBuilder::new(format!(
        "{prefix}SELECT {TICKET_COLUMNS} FROM tickets WHERE id IN (SELECT id FROM tickets WHERE 1 = 1"
    ));
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
    if let Some(caller) = &q.caller {
        b.push(" AND substr(caller_number, -4) = ")
            .push_bind(caller.last4.clone());
        if let Some(full) = &caller.full {
            b.push(" AND caller_number = ").push_bind(full.clone());
        }
    }
    if let Some(assignee) = &q.assignee {
        b.push(" AND assignee = ").push_bind(assignee.clone());
    }
    if q.unresolved {
        b.push(" AND status IN ('open', 'escalated')");
    }
    if let Some(at) = q.overdue_at {
        b.push(" AND status IN ('open', 'escalated') AND due_at <= ")
            .push_bind(to_millis(at));
    }
    b.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(q.limit))
        .push(") ORDER BY id DESC");
    b
}

impl SqliteStore {
    /// SQLite's plan for a page of calls (`EXPLAIN QUERY PLAN`), one line per step.
    pub async fn explain_calls(&self, q: &CallQuery) -> StoreResult<Vec<String>> {
        self.explain(calls_query("EXPLAIN QUERY PLAN ", q)).await
    }

    /// SQLite's plan for a page of tickets.
    pub async fn explain_tickets(&self, q: &TicketQuery) -> StoreResult<Vec<String>> {
        self.explain(tickets_query("EXPLAIN QUERY PLAN ", q)).await
    }

    async fn explain(&self, mut b: QueryBuilder<'static, Sqlite>) -> StoreResult<Vec<String>> {
        let rows = b.build().fetch_all(self.reader()?).await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("detail").map_err(StoreError::from))
            .collect()
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        let mut c = self.hot.metrics().collectors();
        c.push(Box::new(self.guard.gauge.clone()));
        c
    }

    async fn migrate(&self) -> StoreResult<()> {
        use sqlx::ConnectOptions;
        // On a connection of its own that does not log its statements: sqlx would print
        // each long-running migration's whole SQL as a slow-statement warning.
        let options = (*self.writer_pool.connect_options())
            .clone()
            .disable_statement_logging();
        let quiet = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        let migrated = sqlx::migrate!("./migrations/sqlite").run(&quiet).await;
        quiet.close().await;
        migrated?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        self.hot.ping().await
    }

    fn fault(&self) -> Option<String> {
        self.guard.fault()
    }

    async fn close(&self) -> StoreResult<()> {
        self.writer_pool.close().await;
        self.reader_pool.close().await;
        self.hot.close().await
    }

    async fn hours_override(&self) -> StoreResult<Option<OverrideState>> {
        let value = self.hot.setting("hours_override").await?;
        Ok(value.as_deref().and_then(OverrideState::parse))
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
        .execute(self.writer()?)
        .await?;
        Ok(())
    }

    async fn call_has_ticket(&self, call_sid: &str) -> StoreResult<bool> {
        self.hot.call_has_ticket(call_sid).await
    }

    async fn find_external_ticket(
        &self,
        category: &str,
        external_ref: &str,
    ) -> StoreResult<Option<ExistingTicket>> {
        self.hot.find_external_ticket(category, external_ref).await
    }

    async fn commit_step(&self, batch: &StepBatch<'_>) -> StoreResult<Committed> {
        self.hot.commit_step(batch).await
    }

    async fn record_status(&self, update: &StatusUpdate<'_>) -> StoreResult<()> {
        self.hot.record_status(update).await
    }

    async fn list_calls(&self, q: &CallQuery) -> StoreResult<Vec<CallView>> {
        let mut b = calls_query("", q);
        let rows = b.build().fetch_all(self.reader()?).await?;
        Ok(rows.iter().map(call_view).collect::<Result<_, _>>()?)
    }

    async fn get_call(&self, call_sid: &str) -> StoreResult<Option<CallDetail>> {
        let Some(row) = sqlx::query(&format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE call_sid = ?"
        ))
        .bind(call_sid)
        .fetch_optional(self.reader()?)
        .await?
        else {
            return Ok(None);
        };
        let call = call_view(&row)?;
        let steps = sqlx::query(CALL_STEPS)
            .bind(call_sid)
            .fetch_all(self.reader()?)
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
        .fetch_all(self.reader()?)
        .await?
        .iter()
        .map(|r| {
            let mut t = ticket_view(r)?;
            t.relation = Some(r.try_get("relation")?);
            Ok(t)
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let notifications = sqlx::query(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE call_sid = ? ORDER BY id"
        ))
        .bind(call_sid)
        .fetch_all(self.reader()?)
        .await?
        .iter()
        .map(notification_view)
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some(CallDetail {
            call,
            steps,
            tickets,
            notifications,
        }))
    }

    async fn list_tickets(&self, q: &TicketQuery) -> StoreResult<Vec<TicketView>> {
        let mut b = tickets_query("", q);
        let rows = b.build().fetch_all(self.reader()?).await?;
        Ok(rows.iter().map(ticket_view).collect::<Result<_, _>>()?)
    }

    async fn find_caller_ticket(
        &self,
        caller: &str,
        node: &str,
    ) -> StoreResult<Option<ExistingTicket>> {
        self.hot.find_caller_ticket(caller, node).await
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
            let mut tx = self.writer()?.begin().await?;
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
                let steps = sqlx::query(
                    "SELECT id, said, digits, data FROM steps \
                         WHERE call_id = (SELECT id FROM calls WHERE call_sid = ?)",
                )
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
                sqlx::query(
                    "DELETE FROM webhooks WHERE call_id = (SELECT id FROM calls WHERE call_sid = ?)",
                )
                    .bind(&sid)
                    .execute(&mut *tx)
                    .await?;
                done.calls += 1;
            }
            tx.commit().await?;
        }
    }
}

#[async_trait]
impl WorkStore for SqliteStore {
    async fn get_ticket(&self, number: TicketNumber) -> StoreResult<Option<TicketDetail>> {
        self.ticket_detail(self.reader()?, number).await
    }

    async fn update_ticket(
        &self,
        number: TicketNumber,
        change: &TicketChange,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<TicketDetail>> {
        self.change_ticket(number, change, at).await
    }

    async fn list_notifications(
        &self,
        q: &NotificationQuery,
    ) -> StoreResult<Vec<NotificationView>> {
        self.notifications(q).await
    }

    async fn resend_notification(
        &self,
        id: i64,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<NotificationView>> {
        self.requeue(id, at).await
    }

    async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxMessage>> {
        self.claim(now, lease_until, limit).await
    }

    async fn outbox_sent(&self, id: i64, at: DateTime<Utc>) -> StoreResult<()> {
        self.mark_sent(id, at).await
    }

    async fn outbox_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> StoreResult<()> {
        self.mark_failed(id, error, retry_at).await
    }

    async fn sweep_overdue(
        &self,
        now: DateTime<Utc>,
        categories: &[String],
        contact: &str,
        address: &str,
    ) -> StoreResult<u64> {
        self.queue_overdue(now, categories, contact, address).await
    }
}
