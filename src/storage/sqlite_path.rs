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

use super::sqlite_guard::FileGuard;
use super::*;
use crate::config::SqliteSync as SyncMode;
use crate::records::StepRecord;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};
use std::path::{Path, PathBuf};
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
}

/// What the write path tells an operator (`/metrics`): how many webhooks each commit
/// carried, and how often and for how long a restart of the WAL held commits back.
#[derive(Clone)]
pub struct WriteMetrics {
    /// Webhooks per committed transaction.
    pub group_size: Histogram,
    /// Restarts of the WAL, by result: `done`, or `gave_up` when a reader held on.
    pub wal_restarts: IntCounterVec,
    /// How long each restart of the WAL held commits back.
    pub wal_restart_seconds: Histogram,
    /// Checkpoint passes that failed.
    pub checkpoint_errors: IntCounter,
}

impl std::fmt::Debug for WriteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteMetrics")
    }
}

impl WriteMetrics {
    fn new() -> prometheus::Result<Self> {
        let sizes = (0..10).map(|i| f64::from(1u32 << i)).collect();
        Ok(Self {
            group_size: Histogram::with_opts(
                HistogramOpts::new(
                    "db_commit_group_size",
                    "Webhooks committed together in one transaction",
                )
                .buckets(sizes),
            )?,
            wal_restarts: IntCounterVec::new(
                Opts::new(
                    "db_wal_restarts_total",
                    "Restarts of the SQLite WAL, by result",
                ),
                &["result"],
            )?,
            wal_restart_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "db_wal_restart_seconds",
                    "Time a restart of the SQLite WAL held commits back",
                )
                .buckets(vec![0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25]),
            )?,
            checkpoint_errors: IntCounter::new(
                "db_checkpoint_errors_total",
                "SQLite checkpoint passes that failed",
            )?,
        })
    }

    /// The collectors, for the server's registry.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.group_size.clone()),
            Box::new(self.wal_restarts.clone()),
            Box::new(self.wal_restart_seconds.clone()),
            Box::new(self.checkpoint_errors.clone()),
        ]
    }
}

/// How often the checkpointer looks at the WAL and copies it into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);
/// WAL frames (about 4 KiB each) above which the checkpointer, once a passive pass has
/// copied nearly everything, briefly holds new commits back to start the WAL over. Each
/// restart costs callers about two fsyncs (20 to 40 ms each on the development machine's
/// disk). Four times this threshold made restarts four times rarer but twice as long in a
/// 60 s run (158 ms instead of 71 ms on average, p99 at 5,000 steps/s 12.4 ms instead of
/// 11.4 ms), and the WAL read back after a crash longer.
const WAL_RESTART_FRAMES: i64 = 32_768;
/// The WAL file size kept after a restart: a quarter over the restart point, in frames of
/// a 24-byte header and a 4 KiB page (SQLite's default page size, which this schema keeps).
const WAL_KEEP_BYTES: i64 = (WAL_RESTART_FRAMES + WAL_RESTART_FRAMES / 4) * (24 + 4096);
/// Rounds of a sync of the database file and a passive pass before a restart of the WAL:
/// each leaves the next only what was committed during the one before, so that the
/// restart, which holds commits back, has only a few pages to copy and sync.
const PRE_RESTART_ROUNDS: usize = 2;
/// The writer's own checkpoint: only a backstop, should the checkpointer thread stop.
const WRITER_AUTOCHECKPOINT: i64 = 262_144;

/// Busy waits in 100 µs steps: SQLite's default handler sleeps up to 100 ms at a time, far
/// longer than the other side of a hot-path lock is ever held. The writer waits up to 2 s
/// (a restart of the WAL in progress) before its webhooks are journalled instead.
fn writer_busy(attempt: i32) -> bool {
    std::thread::sleep(Duration::from_micros(100));
    attempt < 20_000
}

/// The checkpointer waits up to 20 ms (the commit in progress, a manager's query): while a
/// restart of the WAL waits, commits are held back, so it gives up early and tries again.
fn checkpointer_busy(attempt: i32) -> bool {
    std::thread::sleep(Duration::from_micros(100));
    attempt < 200
}

/// One checkpoint pass: a passive copy of the WAL into the database, which never holds a
/// commit back, then, only when the WAL has grown past `restart_frames`, a restart of the
/// WAL, which waits for the commit in progress and holds new ones back while it copies the
/// last frames and syncs the database file.
///
/// A passive copy syncs the database file only when it has copied the whole WAL, which
/// under steady load never happens, so the pages it writes wait in the page cache; the
/// restart's sync then had all of them since the previous restart to write out, with
/// commits held back (20 to 50 ms each on the machine of 1 December, at 5,000 steps/s).
/// `db_file`, the database file opened apart from SQLite, is synced first, while commits go
/// on, so that the restart's own sync has only the last few pages to write.
///
/// After a restart the WAL keeps its length until the next commit starts it over from its
/// first frame, so until then it is not restarted again: `restarted` holds this connection's
/// `data_version` just after the last restart, and it changes only when another connection
/// commits (an idle server restarted the WAL at every pass, 20 times a second, and counted
/// each).
fn checkpoint(
    conn: &Connection,
    db_file: &std::fs::File,
    metrics: &WriteMetrics,
    restart_frames: i64,
    restarted: &mut Option<i64>,
) -> rusqlite::Result<()> {
    let log: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))?;
    if log > restart_frames && *restarted != Some(data_version(conn)?) {
        for _ in 0..PRE_RESTART_ROUNDS {
            // What the passive passes copied goes to disk now, commits going on meanwhile.
            // Should this fail, the restart's own sync may fail too, and report it;
            // SQLite's syncs are what the records' durability rests on, this one only
            // moves the wait.
            if let Err(e) = db_file.sync_data() {
                metrics.checkpoint_errors.inc();
                tracing::warn!(error = %e, "syncing the database file before a WAL restart");
            }
            // Then a passive pass copies what was committed during the sync, so that the
            // restart, which holds commits back, has little left to copy and sync.
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        }
        let started = std::time::Instant::now();
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get(0))?;
        metrics
            .wal_restart_seconds
            .observe(started.elapsed().as_secs_f64());
        let result = if busy == 0 { "done" } else { "gave_up" };
        metrics.wal_restarts.with_label_values(&[result]).inc();
        // No commit can land while the restart holds them back: read just after it, the
        // version tells whether any came since.
        *restarted = if busy == 0 {
            Some(data_version(conn)?)
        } else {
            None
        };
    }
    Ok(())
}

fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
}

/// Copies the whole WAL into the database and truncates it, waiting a little for the last
/// commits and reads to finish.
fn truncate(conn: &Connection) -> StoreResult<()> {
    for _ in 0..50 {
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy == 0 {
            return Ok(());
        }
    }
    Err(StoreError::TimedOut("the final checkpoint"))
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
        let db_file = std::fs::File::open(&path).map_err(StoreError::DbFile)?;
        checkpointer.busy_handler(Some(checkpointer_busy))?;
        let reader = open(&path, OpenFlags::SQLITE_OPEN_READ_ONLY, synchronous)?;
        let metrics = WriteMetrics::new()?;
        let checkpoint_metrics = metrics.clone();
        let checkpoint_guard = guard.clone();
        let (checkpoints, requests) = mpsc::channel::<oneshot::Sender<StoreResult<()>>>();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                // See [`checkpoint`].
                let mut restarted = None;
                loop {
                    let request = requests.recv_timeout(CHECKPOINT_EVERY);
                    if let (Err(e), Err(mpsc::RecvTimeoutError::Timeout)) =
                        (checkpoint_guard.check_shm(), &request)
                    {
                        tracing::debug!(error = %e, "no checkpoint");
                        continue;
                    }
                    match request {
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            if let Err(e) = checkpoint(
                                &checkpointer,
                                &db_file,
                                &checkpoint_metrics,
                                WAL_RESTART_FRAMES,
                                &mut restarted,
                            ) {
                                checkpoint_metrics.checkpoint_errors.inc();
                                tracing::debug!(error = %e, "checkpoint");
                            }
                        }
                        Ok(reply) => {
                            let _ = reply.send(truncate(&checkpointer));
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            })
            .map_err(StoreError::Journal)?;
        let (writes, write_queue) = mpsc::channel::<WriteJob>();
        let (reads, read_queue) = mpsc::channel::<ReadJob>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn({
                let metrics = metrics.clone();
                let guard = guard.clone();
                move || write_loop(writer, write_queue, &metrics, &guard)
            })
            .map_err(StoreError::Journal)?;
        std::thread::Builder::new()
            .name("sqlite-reader".into())
            .spawn(move || {
                while let Ok(job) = read_queue.recv() {
                    job(guard.check_shm().map(|()| &reader));
                }
            })
            .map_err(StoreError::Journal)?;
        Ok(HotPath {
            writes,
            reads,
            checkpoints,
            metrics,
        })
    }

    /// The write path's metrics.
    pub fn metrics(&self) -> &WriteMetrics {
        &self.metrics
    }

    async fn write(&self, apply: Apply) -> StoreResult<Done> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(WriteJob { apply, reply })
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let _ = reply.send(conn.and_then(|c| f(c).map_err(StoreError::from)));
        });
        self.reads.send(job).map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
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
        };
        match self
            .write(Box::new(move |tx| owned.apply(tx).map(Done::Step)))
            .await?
        {
            Done::Step(c) => Ok(c),
            Done::Status => Err(StoreError::WriterGone),
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
            .map_err(|_| StoreError::WriterGone)?;
        done.await.map_err(|_| StoreError::WriterGone)?
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

/// The writer thread: group commit until every handle is gone.
fn write_loop(
    mut conn: Connection,
    queue: mpsc::Receiver<WriteJob>,
    metrics: &WriteMetrics,
    guard: &FileGuard,
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
                metrics.group_size.observe(group.len() as f64);
                for (job, done) in group.drain(..).zip(results) {
                    let _ = job.reply.send(Ok(done));
                }
            }
            Err(e) if group.len() == 1 => {
                if let Some(job) = group.pop() {
                    let _ = job.reply.send(Err(e.into()));
                }
            }
            Err(_) => {
                // One job spoiled the group: each on its own, so only it fails.
                for job in group.drain(..) {
                    let result = commit_group(&mut conn, std::slice::from_ref(&job))
                        .map_err(StoreError::from)
                        .and_then(|mut r| r.pop().ok_or(StoreError::WriterGone));
                    if result.is_ok() {
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

struct OwnedStep {
    call: CallInfo,
    request_key: String,
    at: i64,
    records: Vec<Record>,
    error: Option<String>,
    answer: String,
}

/// The call's row number (see migration 0006), its row first written if this is its first
/// webhook or callback.
fn call_id(tx: &Transaction<'_>, call: &CallInfo, at: i64, status: &str) -> rusqlite::Result<i64> {
    let known = tx
        .prepare_cached("SELECT id FROM calls WHERE call_sid = ?1")?
        .query_row([&call.call_sid], |r| r.get(0))
        .optional()?;
    if let Some(id) = known {
        return Ok(id);
    }
    tx.prepare_cached(
        "INSERT INTO calls (call_sid, line, store_name, from_number, to_number, flow, flow_version, started_at, status) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        call.call_sid,
        call.line,
        call.store_name,
        call.from,
        call.to,
        call.flow,
        call.flow_version,
        at,
        status
    ])?;
    Ok(tx.last_insert_rowid())
}

fn fill_ticket(text: &str, ticket: Option<TicketNumber>) -> std::borrow::Cow<'_, str> {
    match ticket {
        Some(t) if text.contains(TICKET_NUMBER) => {
            text.replace(TICKET_NUMBER, &t.to_string()).into()
        }
        _ => text.into(),
    }
}

impl OwnedStep {
    fn apply(&self, tx: &Transaction<'_>) -> rusqlite::Result<Committed> {
        let (sid, key, at) = (
            self.call.call_sid.as_str(),
            self.request_key.as_str(),
            self.at,
        );
        let call = call_id(tx, &self.call, at, "in-progress")?;
        let fresh = tx
            .prepare_cached(
                "INSERT INTO webhooks (call_id, request_key, at, answer) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![call, key, at, self.answer])?
            == 1;
        if !fresh {
            return tx
                .prepare_cached(
                    "SELECT ticket_id, answer FROM webhooks WHERE call_id = ?1 AND request_key = ?2",
                )?
                .query_row(params![call, key], |r| {
                    Ok(Committed {
                        ticket: r.get::<_, Option<i64>>(0)?.map(TicketNumber),
                        replay: Some(r.get(1)?),
                    })
                });
        }
        // The call's ticket so far is looked up only when this webhook uses it: most steps
        // neither speak its number nor attach anything to it.
        let speaks_ticket = self.answer.contains(TICKET_NUMBER);
        let mut ticket: Option<TicketNumber> = if speaks_ticket || self.records_use_call_ticket() {
            tx.prepare_cached(CALL_LATEST_TICKET)?
                .query_row([sid], |r| r.get::<_, Option<i64>>(0))?
                .map(TicketNumber)
        } else {
            None
        };
        for (idx, record) in self.records.iter().enumerate() {
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
                    tx.prepare_cached(
                        "INSERT INTO steps (call_id, request_key, idx, at, node, kind, said, digits, result, data) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING",
                    )?
                    .execute(params![
                        call,
                        key,
                        idx,
                        at,
                        node,
                        kind,
                        fill_ticket(said, ticket),
                        digits,
                        result,
                        data
                    ])?;
                }
                Record::Ticket {
                    category,
                    reason,
                    external_ref,
                    due_at,
                    recording_url,
                    node,
                } => {
                    let inserted = tx
                        .prepare_cached(
                            "INSERT INTO tickets (call_sid, request_key, idx, category, reason, caller_number, created_at, \
                             external_ref, due_at, recording_url, node) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT DO NOTHING",
                        )?
                        .execute(params![
                            sid,
                            key,
                            idx,
                            category,
                            fill_ticket(reason, ticket),
                            self.call.from,
                            at,
                            external_ref,
                            due_at.map(to_millis),
                            recording_url,
                            node
                        ])?;
                    let id = if inserted == 1 {
                        tx.last_insert_rowid()
                    } else {
                        tx.prepare_cached(
                            "SELECT id FROM tickets WHERE call_sid = ?1 AND request_key = ?2 AND idx = ?3",
                        )?
                        .query_row(params![sid, key, idx], |r| r.get(0))?
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
                    // Due at once, or held for the call's voicemail (released by it).
                    tx.prepare_cached(
                        "INSERT INTO notifications (call_sid, ticket_id, request_key, idx, contact, address, subject, body, created_at, \
                         next_attempt_at, attach_recording) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT DO NOTHING",
                    )?
                    .execute(params![
                        sid,
                        ticket.map(|t| t.0),
                        key,
                        idx,
                        contact,
                        address,
                        fill_ticket(subject, ticket),
                        fill_ticket(body, ticket),
                        at,
                        recording_wait_until.map_or(at, to_millis),
                        recording_wait_until.is_some()
                    ])?;
                }
                Record::LinkTicket {
                    ticket_id,
                    relation,
                } => {
                    tx.prepare_cached(
                        "INSERT INTO call_tickets (call_sid, ticket_id, relation, at) VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT DO NOTHING",
                    )?
                    .execute(params![sid, ticket_id, relation, at])?;
                    ticket = Some(TicketNumber(*ticket_id));
                }
                Record::Escalate { ticket_id } => {
                    tx.prepare_cached(
                        "UPDATE tickets SET status = 'escalated', escalated_at = ?1 \
                         WHERE id = ?2 AND status = 'open'",
                    )?
                    .execute(params![at, ticket_id])?;
                }
                Record::Recording { url, .. } => {
                    tx.prepare_cached("UPDATE calls SET recording_url = ?1 WHERE id = ?2")?
                        .execute(params![url, call])?;
                    // A ticket keeps the first voicemail left for it; a later call's own
                    // voicemail stays on that call, which the ticket lists.
                    if let Some(t) = ticket {
                        tx.prepare_cached(
                            "UPDATE tickets SET recording_url = COALESCE(recording_url, ?1) WHERE id = ?2",
                        )?
                        .execute(params![url, t.0])?;
                    }
                    release_held_notifications(tx, sid, at)?;
                }
                Record::Outcome { value, replace } => {
                    let sql = if *replace {
                        "UPDATE calls SET outcome = ?1 WHERE id = ?2"
                    } else {
                        "UPDATE calls SET outcome = COALESCE(outcome, ?1) WHERE id = ?2"
                    };
                    tx.prepare_cached(sql)?.execute(params![value, call])?;
                }
            }
        }
        if let Some(error) = &self.error {
            tx.prepare_cached(
                "UPDATE calls SET error_count = error_count + 1, last_error = ?1 WHERE id = ?2",
            )?
            .execute(params![error, call])?;
        }
        // The stored answer's ticket, for a retry's replay to fill in the same number.
        if let Some(t) = ticket.filter(|_| speaks_ticket) {
            tx.prepare_cached(
                "UPDATE webhooks SET ticket_id = ?1 WHERE call_id = ?2 AND request_key = ?3",
            )?
            .execute(params![t.0, call, key])?;
        }
        Ok(Committed {
            ticket,
            replay: None,
        })
    }

    /// Whether a record of this webhook needs the call's ticket from earlier webhooks: to
    /// write its number, or to attach a notification or a recording.
    fn records_use_call_ticket(&self) -> bool {
        self.records.iter().any(|r| match r {
            Record::Step(s) => s.said.contains(TICKET_NUMBER),
            Record::Ticket { reason, .. } => reason.contains(TICKET_NUMBER),
            Record::LinkTicket { .. } | Record::Escalate { .. } | Record::Outcome { .. } => false,
            Record::Notification { .. } | Record::Recording { .. } => true,
        })
    }
}

/// The newest open or escalated ticket of a category for a partner's ticket number: on the
/// partial index `tickets_by_external_ref` (`tests/query_plans.rs`).
pub const EXTERNAL_TICKET: &str = "SELECT id, status, created_at, due_at FROM tickets \
     WHERE external_ref = ?1 AND category = ?2 AND status IN ('open', 'escalated') \
     ORDER BY id DESC LIMIT 1";

/// A call's newest ticket, opened by it or linked to it: on the tickets' key and the call
/// links' key, which both lead with the CallSid.
pub const CALL_LATEST_TICKET: &str =
    "SELECT max(id) FROM (SELECT id FROM tickets WHERE call_sid = ?1 \
     UNION ALL SELECT ticket_id AS id FROM call_tickets WHERE call_sid = ?1)";

/// The caller's newest open ticket opened by a flow node: on `tickets_open_by_caller`.
pub const CALLER_OPEN_TICKET: &str = "SELECT id, status, created_at, due_at FROM tickets \
     WHERE caller_number = ?1 AND node = ?2 AND status IN ('open', 'escalated') \
     ORDER BY id DESC LIMIT 1";

/// E-mails of the call held for its voicemail are due at `due` (or sooner).
fn release_held_notifications(tx: &Transaction<'_>, sid: &str, due: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE notifications SET next_attempt_at = ?2 WHERE call_sid = ?1 AND status = 'queued' \
         AND attach_recording = 1 AND next_attempt_at > ?2",
    )?
    .execute(params![sid, due])?;
    Ok(())
}

/// After the call ends, how long its e-mails wait for a voicemail callback that may still
/// arrive (the platform sends the two in either order).
const RELEASE_AFTER_END_MS: i64 = 30_000;

/// The placeholder filled with the call's ticket number once it is known.
const TICKET_NUMBER: &str = "{ticket_number}";

struct OwnedStatus {
    call: CallInfo,
    status: String,
    sequence: Option<i64>,
    duration_seconds: Option<i64>,
    at: i64,
}

impl OwnedStatus {
    fn apply(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        let call = call_id(tx, &self.call, self.at, &self.status)?;
        let (old_status, old_seq): (String, Option<i64>) = tx
            .prepare_cached("SELECT status, status_seq FROM calls WHERE id = ?1")?
            .query_row([call], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let newer = match (self.sequence, old_seq) {
            (Some(new), Some(old)) => new >= old,
            _ => status_rank(&self.status) >= status_rank(&old_status),
        };
        let regresses = is_final_status(&old_status) && !is_final_status(&self.status);
        if newer && !regresses {
            let is_final = is_final_status(&self.status);
            tx.prepare_cached(
                "UPDATE calls SET status = ?1, status_seq = COALESCE(?2, status_seq), \
                 duration_seconds = COALESCE(?3, duration_seconds), \
                 ended_at = CASE WHEN ?4 THEN COALESCE(ended_at, ?5) ELSE ended_at END, \
                 outcome = CASE WHEN ?4 THEN COALESCE(outcome, 'abandoned') ELSE outcome END \
                 WHERE id = ?6",
            )?
            .execute(params![
                self.status,
                self.sequence,
                self.duration_seconds,
                is_final,
                self.at,
                call
            ])?;
            if is_final {
                release_held_notifications(
                    tx,
                    &self.call.call_sid,
                    self.at + RELEASE_AFTER_END_MS,
                )?;
            }
        } else if self.duration_seconds.is_some() {
            // A late callback may still carry the duration the final one lacked.
            tx.prepare_cached(
                "UPDATE calls SET duration_seconds = COALESCE(duration_seconds, ?1) WHERE id = ?2",
            )?
            .execute(params![self.duration_seconds, call])?;
        }
        Ok(())
    }
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
