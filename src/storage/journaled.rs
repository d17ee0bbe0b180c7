//! The store that webhooks write through: the database, with the journal in front of it
//! while the database cannot take writes, and the task that replays the journal.

use super::journal::Journal;
use super::*;
use crate::hours::OverrideState;
use std::sync::Mutex;
use std::time::Duration;

/// Replays the journal in the background whenever it holds anything.
pub fn spawn_replayer(journal: Arc<Journal>, store: Arc<dyn Store>, timeout: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            tick.tick().await;
            ticks += 1;
            if journal.depth() > 0 {
                // After a full disk the reserve's space is the journal's: replaying into
                // the database would let SQLite's log eat it, and the next webhook would
                // find no room anywhere. Replay once the reserve fits again.
                let j = Arc::clone(&journal);
                let room = tokio::task::spawn_blocking(move || j.keep_reserve())
                    .await
                    .unwrap_or(false);
                if room {
                    journal.drain(store.as_ref(), timeout).await;
                }
            } else if journal.is_degraded() {
                // The last write was lost (neither the database nor the journal took it)
                // and nothing waits: ready again once the database answers and the disk
                // has room for the reserve. A write that still fails says so again.
                let j = Arc::clone(&journal);
                let room = tokio::task::spawn_blocking(move || j.keep_reserve())
                    .await
                    .unwrap_or(false);
                if room && store.ping().await.is_ok() {
                    journal.set_degraded(false);
                }
            } else if ticks.is_multiple_of(40) && !journal.is_degraded() {
                // Every 10 s: the reserve made again once the disk has room.
                let j = Arc::clone(&journal);
                let _ = tokio::task::spawn_blocking(move || j.keep_reserve()).await;
            }
        }
    });
}

/// The store the webhooks use: the database, with the journal in front of it for writes
/// and a last-known hours override for reads, so that a database that stops answering
/// delays a caller by at most the write timeout.
pub struct Journaled {
    db: Arc<dyn Store>,
    journal: Arc<Journal>,
    write_timeout: Duration,
    /// The last override read or set, and when it was read: within [`OVERRIDE_FRESH`] it
    /// is not read again.
    last_override: Mutex<(Option<OverrideState>, Option<std::time::Instant>)>,
}

/// How long an hours override read stays fresh. A manager's change on this instance applies
/// at once; one made on another instance within this time.
pub const OVERRIDE_FRESH: Duration = Duration::from_secs(1);

impl Journaled {
    /// Puts `journal` in front of `db`.
    pub fn new(db: Arc<dyn Store>, journal: Arc<Journal>, write_timeout: Duration) -> Self {
        Self {
            db,
            journal,
            write_timeout,
            last_override: Mutex::new((None, None)),
        }
    }

    /// Reads get a third of the write timeout each, so that two reads and a write fit.
    fn read_timeout(&self) -> Duration {
        self.write_timeout / 3
    }

    async fn read<T>(
        &self,
        what: &'static str,
        f: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        match tokio::time::timeout(self.read_timeout(), f).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::timed_out(what)),
        }
    }

    /// Tries the database unless the journal already holds records (which must go first);
    /// on an unavailable database the entry goes to the journal instead.
    async fn write<T>(
        &self,
        what: &'static str,
        call_sid: &str,
        f: impl std::future::Future<Output = StoreResult<T>>,
        entry: impl FnOnce() -> Entry,
        journalled: T,
    ) -> StoreResult<T> {
        // Built only when the database is not written: nothing is allocated on the way
        // of a write that succeeds.
        let mut why = std::borrow::Cow::Borrowed("journal not empty");
        if self.journal.depth() == 0 {
            match tokio::time::timeout(self.write_timeout, f).await {
                Ok(Ok(v)) => {
                    // The database takes writes again and nothing waits in the journal.
                    if self.journal.is_degraded() {
                        self.journal.set_degraded(false);
                    }
                    return Ok(v);
                }
                Ok(Err(e)) if !e.is_unavailable() => return Err(e),
                Ok(Err(e)) => why = format!("database unavailable: {e}").into(),
                Err(_) => {
                    why = format!(
                        "database did not answer in {} ms",
                        self.write_timeout.as_millis()
                    )
                    .into()
                }
            }
            self.journal.set_degraded(true);
        }
        match self.journal.append(entry()).await {
            Ok(()) => {
                tracing::warn!(call_sid, reason = %why, "{what}: journalled");
                Ok(journalled)
            }
            Err(e) => {
                // Neither took the records: the caller gets the safe route, and the loss
                // is said and counted, never silent.
                self.journal.metrics.records_lost.inc();
                tracing::error!(
                    call_sid,
                    reason = %why,
                    journal_error = %e,
                    "{what}: RECORDS LOST: neither the database nor the journal took them"
                );
                Err(e)
            }
        }
    }
}

#[async_trait]
impl Store for Journaled {
    async fn migrate(&self) -> StoreResult<()> {
        self.db.migrate().await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read("ping", self.db.ping()).await
    }

    async fn close(&self) -> StoreResult<()> {
        self.db.close().await
    }

    async fn hours_override(&self) -> StoreResult<Option<OverrideState>> {
        let (cached, read_at) = *self.last_override.lock().unwrap_or_else(|e| e.into_inner());
        if read_at.is_some_and(|t| t.elapsed() < OVERRIDE_FRESH) {
            return Ok(cached);
        }
        match self.read("hours override", self.db.hours_override()).await {
            Ok(v) => {
                *self.last_override.lock().unwrap_or_else(|e| e.into_inner()) =
                    (v, Some(std::time::Instant::now()));
                Ok(v)
            }
            Err(e) => {
                tracing::warn!(error = %e, "hours override unreadable: using the last one read");
                Ok(self
                    .last_override
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .0)
            }
        }
    }

    async fn set_hours_override(
        &self,
        state: Option<OverrideState>,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.db.set_hours_override(state, at).await?;
        self.last_override
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0 = state;
        Ok(())
    }

    fn records_pending(&self) -> bool {
        self.journal.depth() > 0
    }

    async fn call_has_ticket(&self, call_sid: &str) -> StoreResult<bool> {
        if self.journal.has_ticket(call_sid) {
            return Ok(true);
        }
        match self
            .read("call ticket", self.db.call_has_ticket(call_sid))
            .await
        {
            Ok(v) => Ok(v),
            Err(e) => {
                tracing::warn!(call_sid, error = %e, "call ticket unreadable: taken as none");
                Ok(false)
            }
        }
    }

    async fn find_external_ticket(
        &self,
        category: &str,
        external_ref: &str,
    ) -> StoreResult<Option<ExistingTicket>> {
        self.read(
            "ticket lookup",
            self.db.find_external_ticket(category, external_ref),
        )
        .await
    }

    async fn commit_step(&self, batch: &StepBatch<'_>) -> StoreResult<Committed> {
        self.write(
            "call step",
            &batch.call.call_sid,
            self.db.commit_step(batch),
            || Entry::of_step(batch),
            Committed {
                ticket: None,
                replay: None,
            },
        )
        .await
    }

    async fn record_status(&self, update: &StatusUpdate<'_>) -> StoreResult<()> {
        self.write(
            "status callback",
            &update.call.call_sid,
            self.db.record_status(update),
            || Entry::of_status(update),
            (),
        )
        .await
    }

    async fn list_calls(&self, q: &CallQuery) -> StoreResult<Vec<CallView>> {
        self.db.list_calls(q).await
    }

    async fn get_call(&self, call_sid: &str) -> StoreResult<Option<CallDetail>> {
        self.db.get_call(call_sid).await
    }

    async fn list_tickets(&self, q: &TicketQuery) -> StoreResult<Vec<TicketView>> {
        self.db.list_tickets(q).await
    }

    async fn find_caller_ticket(
        &self,
        caller: &str,
        node: &str,
    ) -> StoreResult<Option<ExistingTicket>> {
        match self
            .read("caller ticket", self.db.find_caller_ticket(caller, node))
            .await
        {
            Ok(v) => Ok(v),
            Err(e) => {
                // A second ticket is better than a guest nobody calls back.
                tracing::warn!(error = %e, "caller's open ticket unreadable: a new one is opened");
                Ok(None)
            }
        }
    }

    async fn forget_callers_before(
        &self,
        cutoff: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<Forgotten> {
        self.db.forget_callers_before(cutoff, at).await
    }
}
