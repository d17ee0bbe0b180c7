//! Storage: one interface, one implementation per backend, migrations per backend.

mod journal;
mod seed;
mod sqlite;
mod sqlite_guard;
mod sqlite_path;
mod sqlite_work;
mod work;

pub use seed::Seeded;

pub use journal::{spawn_replayer, Entry, Journal, Journaled};
pub use sqlite::{SqliteStore, CALL_STEPS};
pub use sqlite_path::{CALL_LATEST_TICKET, EXTERNAL_TICKET};
pub use work::{
    CallerMatch, NotificationQuery, OutboxMessage, TicketCall, TicketChange, TicketDetail,
    TicketEvent, WorkStore,
};

use crate::domain::TicketNumber;
use crate::hours::OverrideState;
use crate::records::{ExistingTicket, Record};
use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL names a backend this build does not have.
    #[error("{0}")]
    Unsupported(String),
    /// The database did not answer in time.
    #[error("the database did not answer in time ({0})")]
    TimedOut(&'static str),
    /// SQLite refused or failed on the hot path.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database files were damaged, deleted or replaced while in use
    /// ([`sqlite_guard`]): nothing touches them until the server restarts.
    #[error("database fenced: {0}")]
    Fenced(String),
    /// The database thread is gone (the server is stopping).
    #[error("the database thread has stopped")]
    WriterGone,
    /// The journal could not be written or read.
    #[error("journal: {0}")]
    Journal(std::io::Error),
    /// The database file could not be opened apart from SQLite (to sync it).
    #[error("the database file: {0}")]
    DbFile(std::io::Error),
    /// The storage's metrics could not be created.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl StoreError {
    /// Whether the database is unavailable (locked, read-only, full, unreachable, too slow)
    /// rather than refusing this particular write: such writes go to the journal.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::TimedOut(_) | StoreError::WriterGone | StoreError::Fenced(_) => true,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                matches!(e.extended_code & 0xff, 5 | 6 | 8 | 10 | 13 | 14)
            }
            StoreError::Sqlite(_) => false,
            StoreError::Db(e) => match e {
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_) => true,
                sqlx::Error::Database(d) => {
                    let code = d.code().unwrap_or_default();
                    match code.parse::<u32>() {
                        // SQLite primary codes: BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN.
                        Ok(n) => matches!(n & 0xff, 5 | 6 | 8 | 10 | 13 | 14),
                        // PostgreSQL: connection exceptions, insufficient resources, operator
                        // intervention, read-only transaction.
                        Err(_) => {
                            code.starts_with("08")
                                || code.starts_with("53")
                                || code.starts_with("57P")
                                || code == "25006"
                        }
                    }
                }
                _ => false,
            },
            StoreError::Migrate(_)
            | StoreError::Unsupported(_)
            | StoreError::Journal(_)
            | StoreError::DbFile(_)
            | StoreError::Metrics(_) => false,
        }
    }
}

/// Result of a storage call.
pub type StoreResult<T> = Result<T, StoreError>;

/// What identifies a call and where it came in; written with its first record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallInfo {
    /// Call id.
    pub call_sid: String,
    /// `guest_care` or `store`.
    pub line: String,
    /// Store name for store lines.
    pub store_name: Option<String>,
    /// Caller number (full).
    pub from: String,
    /// Called number.
    pub to: String,
    /// Flow answering the line.
    pub flow: String,
    /// Version of the flows.
    pub flow_version: String,
}

/// The records of one webhook, committed together.
#[derive(Debug, Clone)]
pub struct StepBatch<'a> {
    /// The call.
    pub call: &'a CallInfo,
    /// Identifies the webhook; a retry carries the same key and writes nothing new.
    pub request_key: &'a str,
    /// When the webhook arrived.
    pub at: DateTime<Utc>,
    /// Records in order.
    pub records: &'a [Record],
    /// An internal error to record against the call.
    pub error: Option<&'a str>,
    /// The TwiML answer, stored so that a retry hears the same; `{ticket_number}` unfilled.
    pub answer: &'a str,
}

/// What a committed webhook answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The call's latest ticket, to fill `{ticket_number}`: looked up only when the answer
    /// or a record of this webhook uses it, `None` otherwise (and stored with the webhook,
    /// for a retry's replay, only when its answer speaks the number).
    pub ticket: Option<TicketNumber>,
    /// `Some` when this webhook was already answered: the stored answer, nothing written.
    pub replay: Option<String>,
}

/// A status callback.
#[derive(Debug, Clone)]
pub struct StatusUpdate<'a> {
    /// The call.
    pub call: &'a CallInfo,
    /// `CallStatus`.
    pub status: &'a str,
    /// `SequenceNumber`.
    pub sequence: Option<i64>,
    /// `CallDuration` in seconds.
    pub duration_seconds: Option<i64>,
    /// `Timestamp`, or arrival time.
    pub at: DateTime<Utc>,
}

/// Filters of the call list.
#[derive(Debug, Clone, Default)]
pub struct CallQuery {
    /// Calls started at or after.
    pub since: Option<DateTime<Utc>>,
    /// Calls started before.
    pub until: Option<DateTime<Utc>>,
    /// `guest_care` or `store`.
    pub line: Option<String>,
    /// Exact outcome, e.g. `voicemail`; a trailing `*` matches a prefix (`transferred:*`).
    pub outcome: Option<String>,
    /// Calls with a ticket of this category.
    pub category: Option<String>,
    /// Calls from this caller.
    pub caller: Option<CallerMatch>,
    /// Page size.
    pub limit: u32,
    /// Keyset cursor: start time and call id of the last call of the previous page.
    pub after: Option<(i64, String)>,
}

/// Filters of the ticket list.
#[derive(Debug, Clone, Default)]
pub struct TicketQuery {
    /// `open`, …
    pub status: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// Page size.
    pub limit: u32,
    /// Keyset cursor: id of the last ticket of the previous page.
    pub before_id: Option<i64>,
    /// Only tickets still open or escalated and due at or before this time.
    pub overdue_at: Option<DateTime<Utc>>,
    /// A partner's ticket number.
    pub external_ref: Option<String>,
    /// Tickets of this caller.
    pub caller: Option<CallerMatch>,
}

/// A call as managers read it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallView {
    /// Call id.
    pub call_sid: String,
    /// `guest_care` or `store`.
    pub line: String,
    /// Store name.
    pub store_name: Option<String>,
    /// Caller number.
    pub from: String,
    /// Called number.
    pub to: String,
    /// Flow and version.
    pub flow: String,
    /// Content hash of the flows.
    pub flow_version: String,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// End time.
    pub ended_at: Option<DateTime<Utc>>,
    /// Latest call status.
    pub status: String,
    /// Duration from the platform.
    pub duration_seconds: Option<i64>,
    /// Outcome, e.g. `transferred:oom`.
    pub outcome: Option<String>,
    /// Voicemail.
    pub recording_url: Option<String>,
    /// Internal errors during the call.
    pub error_count: i64,
    /// The last one.
    pub last_error: Option<String>,
}

/// A step as managers read it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepView {
    /// Time.
    pub at: DateTime<Utc>,
    /// `flow.node`.
    pub node: String,
    /// Node kind.
    pub kind: String,
    /// What the caller heard.
    pub said: String,
    /// Keys pressed.
    pub digits: Option<String>,
    /// What happened.
    pub result: String,
    /// What the step learned (purchase date, days, payment answer, …).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub data: std::collections::BTreeMap<String, String>,
}

/// A ticket as managers read it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TicketView {
    /// `GC-000123`.
    pub number: String,
    /// Category.
    pub category: String,
    /// Reason.
    pub reason: String,
    /// `open`, …
    pub status: String,
    /// Call that opened it.
    pub call_sid: String,
    /// Number to call back.
    pub caller_number: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Voicemail.
    pub recording_url: Option<String>,
    /// A partner's ticket number (Home Service Perks).
    pub external_ref: Option<String>,
    /// When it must be answered by.
    pub due_at: Option<DateTime<Utc>>,
    /// When it was escalated.
    pub escalated_at: Option<DateTime<Utc>>,
    /// The flow node that opened it, e.g. `store.order_ticket` (none for older tickets).
    pub node: Option<String>,
    /// Who works it.
    pub assignee: Option<String>,
    /// How it was resolved.
    pub resolution: Option<String>,
    /// When it was resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// When a manager last changed it.
    pub updated_at: Option<DateTime<Utc>>,
    /// Open (or escalated) past its due time.
    pub overdue: bool,
    /// In a call's detail: `opened` by this call, or `linked` / `escalated` by it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relation: Option<String>,
}

impl TicketView {
    /// Sets `overdue`: still open or escalated, and past its due time at `now`.
    pub fn mark_overdue(&mut self, now: DateTime<Utc>) {
        self.overdue = matches!(self.status.as_str(), "open" | "escalated")
            && self.due_at.is_some_and(|d| d <= now);
    }
}

/// An e-mail and how its delivery went.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NotificationView {
    /// Notification id; its e-mail's Message-ID is `<notification-ID@the sender's domain>`.
    pub id: i64,
    /// The call that queued it.
    pub call_sid: String,
    /// Contact name.
    pub contact: String,
    /// Address.
    pub address: String,
    /// Subject.
    pub subject: String,
    /// Body.
    pub body: String,
    /// `queued`, `sent` or `failed`.
    pub status: String,
    /// Ticket it is about.
    pub ticket: Option<String>,
    /// Times the outbox has tried to send it.
    pub attempts: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When the SMTP server accepted it.
    pub sent_at: Option<DateTime<Utc>>,
    /// While queued: when it is tried next (it may wait for the call's voicemail).
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// A call with everything it wrote.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallDetail {
    /// The call.
    #[serde(flatten)]
    pub call: CallView,
    /// Its steps, in order.
    pub steps: Vec<StepView>,
    /// Its tickets.
    pub tickets: Vec<TicketView>,
    /// Its queued notifications.
    pub notifications: Vec<NotificationView>,
}

/// Where calls, steps, tickets and settings are kept.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies pending migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// The storage's own metrics, for the server's registry (none by default).
    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        Vec::new()
    }
    /// Whether the database answers.
    async fn ping(&self) -> StoreResult<()>;
    /// What is wrong with the database's files, if the backend can tell (`/readyz`).
    fn fault(&self) -> Option<String> {
        None
    }
    /// At a graceful stop, once nothing more will be written: leaves the database whole in
    /// its own file (for SQLite, the WAL copied in and emptied, so that the next start has
    /// no log to read). Nothing to do by default.
    async fn close(&self) -> StoreResult<()> {
        Ok(())
    }
    /// The manager's hours override.
    async fn hours_override(&self) -> StoreResult<Option<OverrideState>>;
    /// Sets or clears the hours override.
    async fn set_hours_override(
        &self,
        state: Option<OverrideState>,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Whether the call has a ticket.
    async fn call_has_ticket(&self, call_sid: &str) -> StoreResult<bool>;
    /// The newest open or escalated ticket of a category for a partner's ticket number.
    async fn find_external_ticket(
        &self,
        category: &str,
        external_ref: &str,
    ) -> StoreResult<Option<ExistingTicket>>;
    /// Commits one webhook's records; returns the call's current ticket afterwards.
    async fn commit_step(&self, batch: &StepBatch<'_>) -> StoreResult<Committed>;
    /// Applies a status callback; the latest by sequence wins, a final status never regresses.
    async fn record_status(&self, update: &StatusUpdate<'_>) -> StoreResult<()>;
    /// One page of calls, newest first.
    async fn list_calls(&self, q: &CallQuery) -> StoreResult<Vec<CallView>>;
    /// A call with its steps, tickets and notifications.
    async fn get_call(&self, call_sid: &str) -> StoreResult<Option<CallDetail>>;
    /// One page of tickets, newest first.
    async fn list_tickets(&self, q: &TicketQuery) -> StoreResult<Vec<TicketView>>;
    /// The caller's open or escalated ticket opened by flow node `node`, newest first.
    async fn find_caller_ticket(
        &self,
        caller: &str,
        node: &str,
    ) -> StoreResult<Option<ExistingTicket>>;
    /// Retention: calls started before `cutoff` forget their caller — numbers masked in the
    /// call, its tickets, steps and e-mails, recordings removed, stored answers deleted.
    async fn forget_callers_before(
        &self,
        cutoff: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<Forgotten>;
}

/// What a retention sweep changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Forgotten {
    /// Calls whose caller number was masked.
    pub calls: u64,
    /// Recordings removed (from calls and tickets).
    pub recordings: u64,
}

/// A database: the call records, and what managers and background jobs work on.
#[derive(Clone)]
pub struct Backend {
    /// Call records (webhooks, the manager's reads of calls).
    pub calls: Arc<dyn Store>,
    /// Tickets being worked, the outbox, the overdue sweep.
    pub work: Arc<dyn WorkStore>,
}

/// Opens the backend named by the URL's scheme; `sync` is SQLite's durability setting.
pub async fn open(url: &str, sync: crate::config::SqliteSync) -> StoreResult<Backend> {
    if url.starts_with("sqlite:") {
        let store = Arc::new(SqliteStore::connect(url, sync).await?);
        Ok(Backend {
            calls: store.clone(),
            work: store,
        })
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Err(StoreError::Unsupported(
            "the PostgreSQL backend is not available yet; use sqlite://PATH".into(),
        ))
    } else {
        Err(StoreError::Unsupported(format!(
            "unsupported database URL scheme in {:?}; use sqlite://PATH",
            url.split(':').next().unwrap_or_default()
        )))
    }
}

/// `ivr seed`: adds `calls` synthetic calls over the `days` before `now` (SQLite only).
pub async fn seed(url: &str, calls: u64, days: u32, now: DateTime<Utc>) -> StoreResult<Seeded> {
    use std::str::FromStr;
    if !url.starts_with("sqlite:") {
        return Err(StoreError::Unsupported(
            "ivr seed writes to SQLite databases only".into(),
        ));
    }
    let path = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
        .get_filename()
        .to_path_buf();
    tokio::task::spawn_blocking(move || seed::seed_sqlite(&path, calls, days, now, "seed"))
        .await
        .map_err(|e| StoreError::Unsupported(format!("seeding stopped: {e}")))?
}

/// Milliseconds since the epoch, the stored form of times.
pub fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Reads a stored time.
pub fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Whether a call status is final.
pub fn is_final_status(status: &str) -> bool {
    matches!(
        status,
        "completed" | "busy" | "failed" | "no-answer" | "canceled"
    )
}

/// Order of call statuses, for callbacks without a sequence number.
pub fn status_rank(status: &str) -> i64 {
    match status {
        "queued" | "initiated" => 0,
        "ringing" => 1,
        "in-progress" | "answered" => 2,
        s if is_final_status(s) => 3,
        _ => 0,
    }
}
