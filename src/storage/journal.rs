//! The journal: what the database could not take in time is appended to a local file (one
//! JSON line per webhook, fsync'd before the webhook is answered) and replayed in order when
//! the database takes writes again. Replay is idempotent (each webhook's request key is
//! unique in the database), so an entry replayed twice, or a write that landed just after
//! its deadline, is never recorded twice.
//!
//! While the journal holds anything, new records queue behind it, so a call's steps reach
//! the database in the order they happened.

use super::*;
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
        /// The answer, as the edge stores it for a retry.
        answer: String,
        /// Whether the answer speaks the call's ticket number (false in entries of
        /// earlier versions, whose answers are replayed as they were).
        #[serde(default)]
        answer_speaks_ticket: bool,
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
    pub(super) fn of_step(batch: &StepBatch<'_>) -> Self {
        Entry::Step {
            call: batch.call.clone(),
            request_key: batch.request_key.to_string(),
            at: batch.at,
            records: batch.records.to_vec(),
            error: batch.error.map(str::to_owned),
            answer: batch.answer.to_string(),
            answer_speaks_ticket: batch.answer_speaks_ticket,
        }
    }

    pub(super) fn of_status(update: &StatusUpdate<'_>) -> Self {
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
                answer_speaks_ticket,
            } => store
                .commit_step(&StepBatch {
                    call,
                    request_key,
                    at: *at,
                    records,
                    error: error.as_deref(),
                    answer,
                    answer_speaks_ticket: *answer_speaks_ticket,
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
    pub(super) metrics: Metrics,
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
    StoreError::journal(e)
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

    pub(super) fn set_degraded(&self, on: bool) {
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

    pub(super) fn has_ticket(&self, call_sid: &str) -> bool {
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
