//! Storage: one interface, one implementation per backend, migrations per backend.

pub mod console;
pub mod insights;
mod journal;
mod journaled;
mod migrate_data;
pub mod postgres;
pub mod sqlite;
mod views;
mod work;

pub use journal::{private_file, Entry, Journal};
pub use journaled::{spawn_replayer, Journaled, OVERRIDE_FRESH};
pub use migrate_data::{migrate_data, Copied};
pub use postgres::{PgSettings, PgStore};
pub use sqlite::seed::Seeded;
pub use sqlite::SqliteStore;
pub use views::{
    CallDetail, CallQuery, CallView, Forgotten, NotificationView, StepView, TicketQuery, TicketView,
};
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

/// A storage failure, as every backend classifies its own errors (see `sqlite::error`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot take the request now: locked, read-only, full, unreachable, too
    /// slow, its files damaged, or the server stopping. A webhook's records that meet this
    /// go to the journal.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused this request (a constraint, a malformed row, a failed
    /// migration, a URL this build cannot open): trying again will not help.
    #[error("database refused: {0}")]
    Rejected(String),
    /// What the request names is not there.
    #[error("not found: {0}")]
    NotFound(String),
}

impl StoreError {
    /// Whether the database is unavailable rather than refusing this particular request:
    /// such writes go to the journal.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// The database did not answer within its bound.
    pub fn timed_out(what: &str) -> Self {
        StoreError::Unavailable(format!("the database did not answer in time ({what})"))
    }

    /// The database thread is gone (the server is stopping).
    pub fn writer_gone() -> Self {
        StoreError::Unavailable("the database thread has stopped".into())
    }

    /// The journal could not be written or read.
    pub fn journal(e: std::io::Error) -> Self {
        StoreError::Rejected(format!("journal: {e}"))
    }

    /// A backend or URL this build does not have.
    pub fn unsupported(what: impl Into<String>) -> Self {
        StoreError::Rejected(what.into())
    }
}

impl From<prometheus::Error> for StoreError {
    fn from(e: prometheus::Error) -> Self {
        StoreError::Rejected(format!("metrics: {e}"))
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
    /// The answer, stored so that a retry hears the same: opaque to storage (the edge
    /// keeps its typed actions there; the TwiML is rendered after the commit).
    pub answer: &'a str,
    /// Whether the answer speaks the call's ticket number: the commit then looks the
    /// ticket up, returns it and keeps it with the answer for a retry.
    pub answer_speaks_ticket: bool,
}

/// What a committed webhook answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The call's latest ticket, to speak or write its number: looked up only when the answer
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
    /// Whether records wait in the journal, not yet in the database: a read may not show
    /// them yet (none by default).
    fn records_pending(&self) -> bool {
        false
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

/// A database: the call records, and what managers and background jobs work on.
#[derive(Clone)]
pub struct Backend {
    /// Call records (webhooks, the manager's reads of calls).
    pub calls: Arc<dyn Store>,
    /// Tickets being worked, the outbox, the overdue sweep.
    pub work: Arc<dyn WorkStore>,
    /// The console's accounts, sessions and audit log.
    pub console: Arc<dyn console::ConsoleStore>,
    /// The console's insights: hourly roll-ups and counts.
    pub insights: Arc<dyn insights::InsightsStore>,
}

/// Opens the backend named by the URL's scheme with PostgreSQL's default pool settings;
/// `sync` is SQLite's durability setting.
pub async fn open(url: &str, sync: crate::config::SqliteSync) -> StoreResult<Backend> {
    open_with(url, sync, PgSettings::default()).await
}

/// Opens the backend named by the URL's scheme: `sqlite://PATH` or `postgres://…`.
pub async fn open_with(
    url: &str,
    sync: crate::config::SqliteSync,
    postgres: PgSettings,
) -> StoreResult<Backend> {
    if url.starts_with("sqlite:") {
        let store = Arc::new(SqliteStore::connect(url, sync).await?);
        Ok(Backend {
            calls: store.clone(),
            work: store.clone(),
            console: store.clone(),
            insights: store,
        })
    } else if is_postgres(url) {
        let store = Arc::new(PgStore::connect(url, postgres).await?);
        Ok(Backend {
            calls: store.clone(),
            work: store.clone(),
            console: store.clone(),
            insights: store,
        })
    } else {
        Err(StoreError::unsupported(format!(
            "unsupported database URL scheme in {:?}; use sqlite://PATH or postgres://HOST/DATABASE",
            url.split(':').next().unwrap_or_default()
        )))
    }
}

/// A database URL as it may be shown: without its password.
pub fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.split_once('@') {
        Some((auth, host)) if !auth.contains('/') => (auth, host),
        _ => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://{auth}@{host}"),
    }
}

/// Whether a database URL names PostgreSQL.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres:") || url.starts_with("postgresql:")
}

/// `ivr seed`: adds `calls` synthetic calls over the `days` before `now` (SQLite only).
pub async fn seed(url: &str, calls: u64, days: u32, now: DateTime<Utc>) -> StoreResult<Seeded> {
    use std::str::FromStr;
    if !url.starts_with("sqlite:") {
        return Err(StoreError::unsupported(
            "ivr seed writes to SQLite databases only",
        ));
    }
    let path = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
        .get_filename()
        .to_path_buf();
    tokio::task::spawn_blocking(move || sqlite::seed::seed_sqlite(&path, calls, days, now, "seed"))
        .await
        .map_err(|e| StoreError::Rejected(format!("seeding stopped: {e}")))?
}

/// A step's JSON data with every value made to forget its caller.
pub(crate) fn forget_data(json: &str) -> String {
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

/// How a ticket's time relates to its call's start: a ticket is opened by a webhook of the
/// call, so no earlier than the call's first record (less an hour for the clocks of several
/// instances and a journal replayed out of order) and no later than the longest call the
/// platform allows (24 hours) after it, plus the same hour.
pub(crate) const TICKET_AFTER_START: (chrono::Duration, chrono::Duration) =
    (chrono::Duration::hours(1), chrono::Duration::hours(25));

/// Whether a webhook's records need the call's ticket from earlier webhooks: to write its
/// number, or to attach a notification or a recording to it.
pub(crate) fn records_use_call_ticket(records: &[Record]) -> bool {
    records.iter().any(|r| match r {
        Record::Step(s) => s.said.has_ticket(),
        Record::Ticket { reason, .. } => reason.has_ticket(),
        Record::LinkTicket { .. } | Record::Escalate { .. } | Record::Outcome { .. } => false,
        Record::Notification { .. } | Record::Recording { .. } => true,
    })
}

/// After the call ends, how long its e-mails wait for a voicemail callback that may still
/// arrive (the platform sends the two in either order).
pub(crate) const RELEASE_AFTER_END_MS: i64 = 30_000;

/// Milliseconds since the epoch, the stored form of times.
pub fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Reads a stored time.
pub fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}
