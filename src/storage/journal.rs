//! The journal: what the database could not take in time is appended to a local file (one
//! JSON line per webhook, fsync'd before the webhook is answered) and replayed in order when
//! the database takes writes again. Replay is idempotent (each webhook's request key is
//! unique in the database), so an entry replayed twice, or a write that landed just after
//! its deadline, is never recorded twice.
//!
//! While the journal holds anything, new records queue behind it, so a call's steps reach
//! the database in the order they happened.

use super::*;
use crate::hours::OverrideState;
use crate::metrics::Metrics;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// One journalled write.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A webhook's records ([`StepBatch`]).
    Step {
        /// The call.
        call: CallInfo,
        /// The webhook's key.
        request_key: String,
        /// When it arrived.
        at: DateTime<Utc>,
        /// Its records.
        records: Vec<Record>,
        /// An internal error recorded against the call.
        error: Option<String>,
        /// The TwiML answered.
        answer: String,
    },
    /// A status callback ([`StatusUpdate`]).
    Status {
        /// The call.
        call: CallInfo,
        /// `CallStatus`.
        status: String,
        /// `SequenceNumber`.
        sequence: Option<i64>,
        /// `CallDuration`.
        duration_seconds: Option<i64>,
        /// `Timestamp`.
        at: DateTime<Utc>,
    },
}

impl Entry {
    fn of_step(batch: &StepBatch<'_>) -> Self {
        Entry::Step {
            call: batch.call.clone(),
            request_key: batch.request_key.to_string(),
            at: batch.at,
            records: batch.records.to_vec(),
            error: batch.error.map(str::to_owned),
            answer: batch.answer.to_string(),
        }
    }

    fn of_status(update: &StatusUpdate<'_>) -> Self {
        Entry::Status {
            call: update.call.clone(),
            status: update.status.to_string(),
            sequence: update.sequence,
            duration_seconds: update.duration_seconds,
            at: update.at,
        }
    }

    fn call_sid(&self) -> &str {
        match self {
            Entry::Step { call, .. } | Entry::Status { call, .. } => &call.call_sid,
        }
    }

    fn gives_ticket(&self) -> bool {
        match self {
            Entry::Step { records, .. } => records
                .iter()
                .any(|r| matches!(r, Record::Ticket { .. } | Record::LinkTicket { .. })),
            Entry::Status { .. } => false,
        }
    }

    async fn apply(&self, store: &dyn Store) -> StoreResult<()> {
        match self {
            Entry::Step {
                call,
                request_key,
                at,
                records,
                error,
                answer,
            } => store
                .commit_step(&StepBatch {
                    call,
                    request_key,
                    at: *at,
                    records,
                    error: error.as_deref(),
                    answer,
                })
                .await
                .map(|_| ()),
            Entry::Status {
                call,
                status,
                sequence,
                duration_seconds,
                at,
            } => {
                store
                    .record_status(&StatusUpdate {
                        call,
                        status,
                        sequence: *sequence,
                        duration_seconds: *duration_seconds,
                        at: *at,
                    })
                    .await
            }
        }
    }
}

struct Tail {
    /// Opened for appending.
    file: File,
    /// Bytes in the file, all whole lines.
    len: u64,
    /// Entries in the file.
    entries: u64,
    /// Calls with a ticket in the journal, for `call_has_ticket` while it is not replayed.
    ticket_calls: HashSet<String>,
}

/// The journal file and what is known about it.
pub struct Journal {
    path: PathBuf,
    tail: Mutex<Tail>,
    degraded: AtomicBool,
    metrics: Metrics,
    /// Bytes kept in reserve beside the journal (see [`Journal::reserve_path`]).
    reserve: u64,
}

/// Opens `path` for appending (and reading), created readable by its owner only: it holds
/// callers' numbers. An existing file readable by others is made owner-only too.
pub fn private_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(file = %path.display(), mode = format!("{:o}", mode & 0o777), "made readable by its owner only (0600): it holds callers' numbers");
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("depth", &self.depth())
            .finish()
    }
}

fn io_err(e: std::io::Error) -> StoreError {
    StoreError::Journal(e)
}

fn lock(tail: &Mutex<Tail>) -> std::sync::MutexGuard<'_, Tail> {
    // A panic while holding the lock leaves whole lines only (see `append_blocking`).
    tail.lock().unwrap_or_else(|e| e.into_inner())
}

impl Journal {
    /// Opens (creating if needed) the journal at `path`. A last line without its newline was
    /// being written when the process died, was never acknowledged, and is cut off.
    pub fn open(path: &Path, metrics: Metrics, reserve: u64) -> StoreResult<Self> {
        let mut file = private_file(path).map_err(io_err)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err)?;
        let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() {
            tracing::warn!(
                journal = %path.display(),
                bytes = bytes.len() - whole,
                "journal: cutting off a half-written last entry (never acknowledged)"
            );
            file.set_len(whole as u64).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
        }
        let mut entries = 0;
        let mut ticket_calls = HashSet::new();
        for line in bytes[..whole].split_inclusive(|b| *b == b'\n') {
            entries += 1;
            if let Ok(entry) = serde_json::from_slice::<Entry>(line) {
                if entry.gives_ticket() {
                    ticket_calls.insert(entry.call_sid().to_string());
                }
            }
        }
        if entries > 0 {
            tracing::warn!(journal = %path.display(), entries, "journal: records waiting to be replayed");
        }
        metrics.journal_depth.set(entries as i64);
        Ok(Self {
            path: path.to_path_buf(),
            tail: Mutex::new(Tail {
                file,
                len: whole as u64,
                entries,
                ticket_calls,
            }),
            degraded: AtomicBool::new(false),
            metrics,
            reserve,
        })
        .inspect(|j| {
            j.keep_reserve();
        })
    }

    /// The reserve: a file of zeros the journal's own, deleted when the disk is full so
    /// that the journal (and the database) can go on taking records for a while.
    pub fn reserve_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".reserve");
        PathBuf::from(p)
    }

    /// Makes the reserve if it is missing and the disk has room; false if it could not.
    pub fn keep_reserve(&self) -> bool {
        let path = self.reserve_path();
        if self.reserve == 0 || path.metadata().is_ok_and(|m| m.len() >= self.reserve) {
            return true;
        }
        let made = (|| -> std::io::Result<()> {
            let mut f = private_file(&path)?;
            f.set_len(0)?;
            let chunk = vec![0u8; 64 * 1024];
            let mut left = self.reserve;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            f.sync_all()
        })();
        match made {
            Ok(()) => true,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                tracing::warn!(reserve = %path.display(), error = %e, "journal reserve not made: the disk is short of space");
                false
            }
        }
    }

    /// Deletes the reserve after the disk filled up; true if there was one to delete.
    fn release_reserve(&self) -> bool {
        let path = self.reserve_path();
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::error!(
                    reserve = %path.display(),
                    bytes = self.reserve,
                    "DISK FULL: the journal's reserve is released so records keep being kept; free space now"
                );
                true
            }
            Err(_) => false,
        }
    }

    /// Where the journal is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries waiting to be replayed.
    pub fn depth(&self) -> u64 {
        lock(&self.tail).entries
    }

    /// Whether the last write to the database failed (records are going to the journal).
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    fn set_degraded(&self, on: bool) {
        if self.degraded.swap(on, Ordering::Relaxed) != on {
            self.metrics.degraded.set(i64::from(on));
            if on {
                tracing::error!(
                    journal = %self.path.display(),
                    "database not taking writes: records go to the journal until it does"
                );
            } else {
                tracing::warn!("database taking writes again: replaying the journal");
            }
        }
    }

    fn has_ticket(&self, call_sid: &str) -> bool {
        lock(&self.tail).ticket_calls.contains(call_sid)
    }

    /// Appends an entry and syncs it to disk.
    pub async fn append(self: &Arc<Self>, entry: Entry) -> StoreResult<()> {
        let mut line =
            serde_json::to_vec(&entry).map_err(|e| io_err(std::io::Error::other(e.to_string())))?;
        line.push(b'\n');
        let journal = Arc::clone(self);
        let ticket_call = entry.gives_ticket().then(|| entry.call_sid().to_string());
        tokio::task::spawn_blocking(move || journal.append_blocking(&line, ticket_call))
            .await
            .map_err(|e| io_err(std::io::Error::other(e.to_string())))??;
        self.metrics.journal_appended.inc();
        Ok(())
    }

    fn append_blocking(&self, line: &[u8], ticket_call: Option<String>) -> StoreResult<()> {
        let mut tail = lock(&self.tail);
        let before = tail.len;
        let write = |tail: &mut Tail| {
            let written = tail
                .file
                .write_all(line)
                .and_then(|()| tail.file.sync_data());
            if written.is_err() {
                // Never leave half a line for the next entry to be glued to.
                let _ = tail.file.set_len(before);
            }
            written
        };
        let mut written = write(&mut tail);
        if matches!(&written, Err(e) if e.kind() == std::io::ErrorKind::StorageFull)
            && self.release_reserve()
        {
            written = write(&mut tail);
        }
        if let Err(e) = written {
            return Err(io_err(e));
        }
        tail.len += line.len() as u64;
        tail.entries += 1;
        if let Some(call) = ticket_call {
            tail.ticket_calls.insert(call);
        }
        self.metrics.journal_depth.set(tail.entries as i64);
        Ok(())
    }

    /// Replays what the journal holds into `store`, in order, until it is empty or the
    /// database fails again. Returns the entries replayed.
    pub async fn drain(self: &Arc<Self>, store: &dyn Store, timeout: Duration) -> u64 {
        let mut total = 0;
        loop {
            let (replayed, complete) = self.drain_once(store, timeout).await;
            total += replayed;
            if !complete || replayed == 0 {
                return total;
            }
        }
    }

    /// Replays the entries present now; `(replayed, reached the end)`.
    async fn drain_once(self: &Arc<Self>, store: &dyn Store, timeout: Duration) -> (u64, bool) {
        let len = lock(&self.tail).len;
        if len == 0 {
            return (0, true);
        }
        let path = self.path.clone();
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut f = File::open(path)?;
            let mut bytes = vec![0; len as usize];
            f.read_exact(&mut bytes)?;
            Ok(bytes)
        })
        .await;
        let bytes = match read {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::error!(journal = %self.path.display(), error = %e, "journal: cannot read it back");
                return (0, false);
            }
            Err(_) => return (0, false),
        };
        let mut done = 0usize;
        let mut replayed = 0u64;
        let mut unusable: Vec<u8> = Vec::new();
        let mut complete = true;
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            match serde_json::from_slice::<Entry>(line) {
                Ok(entry) => match tokio::time::timeout(timeout, entry.apply(store)).await {
                    Ok(Ok(())) => self.set_degraded(false),
                    Ok(Err(e)) if e.is_unavailable() => {
                        self.set_degraded(true);
                        complete = false;
                        break;
                    }
                    Ok(Err(e)) => {
                        tracing::error!(call_sid = %entry.call_sid(), error = %e,
                            "journal: the database refuses this entry; set aside in the .rejected file");
                        unusable.extend_from_slice(line);
                    }
                    Err(_) => {
                        self.set_degraded(true);
                        complete = false;
                        break;
                    }
                },
                Err(e) => {
                    tracing::error!(journal = %self.path.display(), error = %e,
                        "journal: unreadable entry set aside in the .rejected file");
                    unusable.extend_from_slice(line);
                }
            }
            done += line.len();
            replayed += 1;
        }
        if done > 0 {
            let journal = Arc::clone(self);
            let cut = tokio::task::spawn_blocking(move || {
                journal.cut_front(done as u64, replayed, &unusable)
            })
            .await;
            match cut {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    // The entries stay and are replayed again later: replay is idempotent.
                    tracing::error!(journal = %self.path.display(), error = %e, "journal: cannot remove replayed entries");
                    return (0, false);
                }
                Err(_) => return (0, false),
            }
            self.metrics.journal_replayed.inc_by(replayed);
            if self.depth() == 0 {
                tracing::info!(
                    replayed,
                    "journal replayed: every record is in the database"
                );
            }
        }
        (replayed, complete)
    }

    /// Removes the first `bytes` (`entries` entries) of the journal, keeping what was
    /// appended since, and sets unusable lines aside.
    fn cut_front(&self, bytes: u64, entries: u64, unusable: &[u8]) -> StoreResult<()> {
        if !unusable.is_empty() {
            let mut rejected = OpenOptions::new()
                .append(true)
                .create(true)
                .open(self.rejected_path())
                .map_err(io_err)?;
            rejected.write_all(unusable).map_err(io_err)?;
            rejected.sync_data().map_err(io_err)?;
        }
        let mut tail = lock(&self.tail);
        if bytes >= tail.len {
            tail.file.set_len(0).map_err(io_err)?;
            tail.file.sync_all().map_err(io_err)?;
            tail.len = 0;
            tail.entries = 0;
            tail.ticket_calls.clear();
        } else {
            let mut rest = Vec::new();
            tail.file.seek(SeekFrom::Start(bytes)).map_err(io_err)?;
            tail.file.read_to_end(&mut rest).map_err(io_err)?;
            let tmp = self.path.with_extension("journal-compacting");
            let mut f = File::create(&tmp).map_err(io_err)?;
            f.write_all(&rest).map_err(io_err)?;
            f.sync_all().map_err(io_err)?;
            std::fs::rename(&tmp, &self.path).map_err(io_err)?;
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
            }
            tail.file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&self.path)
                .map_err(io_err)?;
            tail.len = rest.len() as u64;
            tail.entries = tail.entries.saturating_sub(entries);
        }
        self.metrics.journal_depth.set(tail.entries as i64);
        Ok(())
    }

    fn rejected_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".rejected");
        p.into()
    }
}

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
            Err(_) => Err(StoreError::TimedOut(what)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_half_written_last_entry_is_cut_off_and_whole_ones_are_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("ivr.journal");
        let whole = r#"{"kind":"status","call":{"call_sid":"CA1","line":"store","store_name":null,"from":"+12045551234","to":"+12045550100","flow":"store","flow_version":"v"},"status":"completed","sequence":3,"duration_seconds":9,"at":"2026-11-23T16:00:00Z"}"#;
        std::fs::write(&path, format!("{whole}\n{{\"kind\":\"sta")).expect("write");
        let metrics = Metrics::new().expect("metrics");
        let journal = Journal::open(&path, metrics.clone(), 0).expect("open");
        assert_eq!(journal.depth(), 1);
        assert_eq!(metrics.journal_depth.get(), 1);
        let kept = std::fs::read_to_string(&path).expect("read");
        assert_eq!(kept, format!("{whole}\n"));
    }
}
