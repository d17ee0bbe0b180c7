//! The SQLite hot path: one writer thread that commits concurrent webhooks together (group
//! commit), and one reader thread for the lookups a call step makes. Both hold their own
//! connection with cached prepared statements, and neither ever blocks the async runtime:
//! a webhook hands its records over a channel and awaits its reply, which is sent only
//! after the transaction holding them has committed.
//!
//! Group commit: the writer takes the first waiting job, then every job queued behind it (up
//! to [`MAX_GROUP`]), applies them in order in one `BEGIN IMMEDIATE` transaction and commits
//! once. If any job fails, the transaction is rolled back and each job of the group is
//! applied again in its own transaction, so that one bad record fails only its webhook.

use super::checkpoint::{
    checkpoint, checkpointer_busy, truncate, writer_busy, CHECKPOINT_EVERY, WAL_KEEP_BYTES,
    WAL_RESTART_FRAMES, WRITER_AUTOCHECKPOINT,
};
use super::commit::{OwnedStatus, OwnedStep};
use super::guard::FileGuard;
pub use super::metrics::WriteMetrics;
use super::queries::{CALLER_OPEN_TICKET, EXTERNAL_TICKET};
use crate::config::SqliteSync as SyncMode;
use crate::storage::*;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use tokio::sync::oneshot;

/// Most webhooks committed in one transaction.
pub const MAX_GROUP: usize = 512;

/// What a write job produced.
enum Done {
    Step(Committed),
    Status,
}

type Apply = Box<dyn Fn(&Transaction<'_>) -> rusqlite::Result<Done> + Send>;

struct WriteJob {
    apply: Apply,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

/// A read, given the reader connection, or the guard's error if the files are damaged.
type ReadJob = Box<dyn FnOnce(StoreResult<&Connection>) + Send>;

/// Handles to the two threads; dropping the last one ends them.
#[derive(Debug, Clone)]
pub struct HotPath {
    writes: mpsc::Sender<WriteJob>,
    reads: mpsc::Sender<ReadJob>,
    /// Asks the checkpointer for a final checkpoint (see [`HotPath::close`]); dropped with
    /// the last handle, which stops it.
    checkpoints: mpsc::Sender<oneshot::Sender<StoreResult<()>>>,
    metrics: WriteMetrics,
    /// Transactions that may have written, counted so that the checkpointer leaves an
    /// idle database alone.
    commits: Arc<AtomicU64>,
}

fn open(path: &Path, flags: OpenFlags, synchronous: SyncMode) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(Duration::from_secs(2))?;
    conn.pragma_update(None, "foreign_keys", true)?;
    if !flags.contains(OpenFlags::SQLITE_OPEN_READ_ONLY) {
        conn.pragma_update(None, "journal_mode", "wal")?;
        conn.pragma_update(
            None,
            "synchronous",
            match synchronous {
                SyncMode::Normal => "normal",
                SyncMode::Full => "full",
            },
        )?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl HotPath {
    /// Opens the writer and reader connections on the file (which must exist, migrated or
    /// not: statements are prepared at first use) and starts their threads.
    pub fn start(
        path: PathBuf,
        synchronous: SyncMode,
        guard: Arc<FileGuard>,
    ) -> StoreResult<HotPath> {
        let writer = open(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            synchronous,
        )?;
        // Checkpoints run on their own thread, so that commits do not wait for the WAL to
        // be synced and copied; see [`checkpoint`].
        writer.pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT)?;
        // The WAL file is kept at its working size (a little over the restart point), not
        // truncated at each restart: truncating and growing it again stalls the writer.
        writer.pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES)?;
        writer.busy_handler(Some(writer_busy))?;
        let checkpointer = open(&path, OpenFlags::SQLITE_OPEN_READ_WRITE, synchronous)?;
        // See [`checkpoint`]: synced before each WAL restart.
        let db_file = std::fs::File::open(&path).map_err(super::error::db_file)?;
        checkpointer.busy_handler(Some(checkpointer_busy))?;
        let reader = open(&path, OpenFlags::SQLITE_OPEN_READ_ONLY, synchronous)?;
        let metrics = WriteMetrics::new()?;
        let checkpoint_metrics = metrics.clone();
        let checkpoint_guard = guard.clone();
        let commits = Arc::new(AtomicU64::new(0));
        let checkpoint_commits = commits.clone();
        let disk_full = Arc::new(AtomicBool::new(false));
        let checkpoint_disk_full = disk_full.clone();
        let (checkpoints, requests) = mpsc::channel::<oneshot::Sender<StoreResult<()>>>();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                // See [`checkpoint`].
                let mut restarted = None;
                // An idle server's files are not touched: a pass is skipped while the WAL
                // is all in the database and nothing was committed since. (Every access to
                // SQLite's shared memory is a chance for a `-shm` truncated under the
                // server to end it with SIGBUS between the guard's look and the access.)
                let mut seen_commits = u64::MAX;
                let mut caught_up = false;
                loop {
                    let request = requests.recv_timeout(CHECKPOINT_EVERY);
                    let commits = checkpoint_commits.load(Ordering::Acquire);
                    // Nor while the disk is full: a pass that grows the database file
                    // would take the space the journal's reserve just gave back.
                    let idle = caught_up && commits == seen_commits;
                    if request.is_err() && (idle || checkpoint_disk_full.load(Ordering::Acquire)) {
                        continue;
                    }
                    if let (Err(e), Err(mpsc::RecvTimeoutError::Timeout)) =
                        (checkpoint_guard.check_shm(), &request)
                    {
                        tracing::debug!(error = %e, "no checkpoint");
                        continue;
                    }
                    match request {
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            seen_commits = commits;
                            caught_up = match checkpoint(
                                &checkpointer,
                                &db_file,
                                &checkpoint_metrics,
                                WAL_RESTART_FRAMES,
                                &mut restarted,
                            ) {
                                Ok(done) => done,
                                Err(e) => {
                                    checkpoint_metrics.checkpoint_errors.inc();
                                    tracing::debug!(error = %e, "checkpoint");
                                    false
                                }
                            };
                        }
                        Ok(reply) => {
                            let _ = reply.send(truncate(&checkpointer));
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            })
            .map_err(StoreError::journal)?;
        let (writes, write_queue) = mpsc::channel::<WriteJob>();
        let (reads, read_queue) = mpsc::channel::<ReadJob>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn({
                let metrics = metrics.clone();
                let guard = guard.clone();
                let commits = commits.clone();
                let disk_full = disk_full.clone();
                move || {
                    write_loop(
                        writer,
                        write_queue,
                        &metrics,
                        &guard,
                        &WriterSignals {
                            commits: &commits,
                            disk_full: &disk_full,
                        },
                    )
                }
            })
            .map_err(StoreError::journal)?;
        std::thread::Builder::new()
            .name("sqlite-reader".into())
            .spawn(move || {
                while let Ok(job) = read_queue.recv() {
                    job(guard.check_shm().map(|()| &reader));
                }
            })
            .map_err(StoreError::journal)?;
        Ok(HotPath {
            writes,
            reads,
            checkpoints,
            metrics,
            commits,
        })
    }

    /// Tells the checkpointer that a connection other than the writer thread's is about
    /// to write (the manager's and the background jobs' pool).
    pub fn note_write(&self) {
        self.commits.fetch_add(1, Ordering::Release);
    }

    /// The write path's metrics.
    pub fn metrics(&self) -> &WriteMetrics {
        &self.metrics
    }

    async fn write(&self, apply: Apply) -> StoreResult<Done> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(WriteJob { apply, reply })
            .map_err(|_| StoreError::writer_gone())?;
        answer.await.map_err(|_| StoreError::writer_gone())?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let _ = reply.send(conn.and_then(|c| f(c).map_err(StoreError::from)));
        });
        self.reads
            .send(job)
            .map_err(|_| StoreError::writer_gone())?;
        answer.await.map_err(|_| StoreError::writer_gone())?
    }

    /// Commits one webhook's records (see [`Store::commit_step`]).
    pub async fn commit_step(&self, batch: &StepBatch<'_>) -> StoreResult<Committed> {
        let owned = OwnedStep {
            call: batch.call.clone(),
            request_key: batch.request_key.to_string(),
            at: to_millis(batch.at),
            records: batch.records.to_vec(),
            error: batch.error.map(str::to_string),
            answer: batch.answer.to_string(),
            answer_speaks_ticket: batch.answer_speaks_ticket,
        };
        match self
            .write(Box::new(move |tx| owned.apply(tx).map(Done::Step)))
            .await?
        {
            Done::Step(c) => Ok(c),
            Done::Status => Err(StoreError::writer_gone()),
        }
    }

    /// Applies a status callback (see [`Store::record_status`]).
    pub async fn record_status(&self, update: &StatusUpdate<'_>) -> StoreResult<()> {
        let owned = OwnedStatus {
            call: update.call.clone(),
            status: update.status.to_string(),
            sequence: update.sequence,
            duration_seconds: update.duration_seconds,
            at: to_millis(update.at),
        };
        self.write(Box::new(move |tx| owned.apply(tx).map(|()| Done::Status)))
            .await
            .map(|_| ())
    }

    /// The stored hours override, raw.
    pub async fn setting(&self, key: &'static str) -> StoreResult<Option<String>> {
        self.read(move |c| {
            c.prepare_cached("SELECT value FROM settings WHERE key = ?1")?
                .query_row([key], |r| r.get::<_, Option<String>>(0))
                .optional()
                .map(Option::flatten)
        })
        .await
    }

    /// Whether the call has a ticket.
    pub async fn call_has_ticket(&self, call_sid: &str) -> StoreResult<bool> {
        let sid = call_sid.to_string();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT 1 FROM tickets WHERE call_sid = ?1 \
                 UNION ALL SELECT 1 FROM call_tickets WHERE call_sid = ?1 LIMIT 1",
            )?
            .exists([sid])
        })
        .await
    }

    /// The newest open or escalated ticket of a category for a partner's ticket number.
    pub async fn find_external_ticket(
        &self,
        category: &str,
        external_ref: &str,
    ) -> StoreResult<Option<ExistingTicket>> {
        let (category, external_ref) = (category.to_string(), external_ref.to_string());
        self.read(move |c| {
            c.prepare_cached(EXTERNAL_TICKET)?
                .query_row([external_ref, category], existing_ticket)
                .optional()
        })
        .await
    }

    /// The caller's newest open ticket opened by `node`.
    pub async fn find_caller_ticket(
        &self,
        caller: &str,
        node: &str,
    ) -> StoreResult<Option<ExistingTicket>> {
        let (caller, node) = (caller.to_string(), node.to_string());
        self.read(move |c| {
            c.prepare_cached(CALLER_OPEN_TICKET)?
                .query_row([caller, node], existing_ticket)
                .optional()
        })
        .await
    }

    /// The final checkpoint of a graceful stop: the whole WAL copied into the database and
    /// the WAL file emptied, so that the next start has no log to read back (after a crash
    /// it reads up to [`WAL_RESTART_FRAMES`] frames).
    pub async fn close(&self) -> StoreResult<()> {
        let (reply, done) = oneshot::channel();
        self.checkpoints
            .send(reply)
            .map_err(|_| StoreError::writer_gone())?;
        done.await.map_err(|_| StoreError::writer_gone())?
    }

    /// Whether the reader answers.
    pub async fn ping(&self) -> StoreResult<()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }
}

/// An open ticket as the flow engine needs it: id, status, created, due.
fn existing_ticket(r: &rusqlite::Row<'_>) -> rusqlite::Result<ExistingTicket> {
    Ok(ExistingTicket {
        id: r.get(0)?,
        status: r.get(1)?,
        created_at: from_millis(r.get(2)?),
        due_at: r.get::<_, Option<i64>>(3)?.map(from_millis),
    })
}

/// What the writer tells the checkpointer.
struct WriterSignals<'a> {
    /// Transactions committed (see `HotPath::commits`).
    commits: &'a AtomicU64,
    /// Set while the last commit failed for want of disk space.
    disk_full: &'a AtomicBool,
}

impl WriterSignals<'_> {
    fn committed(&self) {
        self.commits.fetch_add(1, Ordering::Release);
        self.disk_full.store(false, Ordering::Release);
    }

    fn failed(&self, e: &rusqlite::Error) {
        if let rusqlite::Error::SqliteFailure(f, _) = e {
            if f.code == rusqlite::ErrorCode::DiskFull {
                self.disk_full.store(true, Ordering::Release);
            }
        }
    }
}

/// The writer thread: group commit until every handle is gone.
fn write_loop(
    mut conn: Connection,
    queue: mpsc::Receiver<WriteJob>,
    metrics: &WriteMetrics,
    guard: &FileGuard,
    signals: &WriterSignals<'_>,
) {
    let mut group: Vec<WriteJob> = Vec::with_capacity(MAX_GROUP);
    while let Ok(first) = queue.recv() {
        group.push(first);
        drain_into(&queue, &mut group);
        // Webhooks that gave up waiting (journalled instead) are skipped.
        group.retain(|j| !j.reply.is_closed());
        if group.is_empty() {
            continue;
        }
        if guard.check_before_write().is_err() {
            for job in group.drain(..) {
                let _ = job.reply.send(Err(guard.fence_error()));
            }
            continue;
        }
        match commit_group(&mut conn, &group) {
            Ok(results) => {
                signals.committed();
                metrics.group_size.observe(group.len() as f64);
                for (job, done) in group.drain(..).zip(results) {
                    let _ = job.reply.send(Ok(done));
                }
            }
            Err(e) if group.len() == 1 => {
                signals.failed(&e);
                if let Some(job) = group.pop() {
                    let _ = job.reply.send(Err(e.into()));
                }
            }
            Err(e) => {
                signals.failed(&e);
                // One job spoiled the group: each on its own, so only it fails.
                for job in group.drain(..) {
                    let result = commit_group(&mut conn, std::slice::from_ref(&job))
                        .inspect_err(|e| signals.failed(e))
                        .map_err(StoreError::from)
                        .and_then(|mut r| r.pop().ok_or_else(StoreError::writer_gone));
                    if result.is_ok() {
                        signals.committed();
                        metrics.group_size.observe(1.0);
                    }
                    let _ = job.reply.send(result);
                }
            }
        }
    }
}

fn drain_into(queue: &mpsc::Receiver<WriteJob>, group: &mut Vec<WriteJob>) {
    while group.len() < MAX_GROUP {
        match queue.try_recv() {
            Ok(job) => group.push(job),
            Err(_) => break,
        }
    }
}

fn commit_group(conn: &mut Connection, group: &[WriteJob]) -> rusqlite::Result<Vec<Done>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(group.len());
    for job in group {
        results.push((job.apply)(&tx)?);
    }
    tx.commit()?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restarts(metrics: &WriteMetrics) -> u64 {
        metrics.wal_restarts.with_label_values(&["done"]).get()
    }

    #[test]
    fn the_wal_is_restarted_once_it_is_long_and_not_again_until_a_commit_starts_it_over() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("wal.db");
        let rw = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let writer = open(&path, rw, SyncMode::Normal).expect("writer");
        writer
            .pragma_update(None, "wal_autocheckpoint", 0)
            .expect("no automatic checkpoints");
        writer
            .execute_batch("CREATE TABLE t (b BLOB)")
            .expect("table");
        let write = |commits: usize| {
            for _ in 0..commits {
                writer
                    .execute("INSERT INTO t VALUES (zeroblob(3000))", [])
                    .expect("insert");
            }
        };
        let checkpointer = open(&path, rw, SyncMode::Normal).expect("checkpointer");
        let db_file = std::fs::File::open(&path).expect("the database file");
        let metrics = WriteMetrics::new().expect("metrics");
        let mut restarted = None;
        let pass = |restarted: &mut Option<i64>| {
            checkpoint(&checkpointer, &db_file, &metrics, 50, restarted).expect("checkpoint");
            restarts(&metrics)
        };
        write(5);
        assert_eq!(pass(&mut restarted), 0, "the WAL is short");
        write(60);
        assert_eq!(pass(&mut restarted), 1, "the WAL is long");
        for _ in 0..5 {
            assert_eq!(pass(&mut restarted), 1, "no commit since the restart");
        }
        write(80);
        assert_eq!(pass(&mut restarted), 2, "long again after new commits");
    }
}
