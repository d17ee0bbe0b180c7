//! Keeping the WAL short: the checkpointer's passes and restarts, and the final truncate at
//! shutdown.

use super::metrics::WriteMetrics;
use crate::storage::{StoreError, StoreResult};
use rusqlite::Connection;
use std::time::Duration;

/// How often the checkpointer looks at the WAL and copies it into the database.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);
/// WAL frames (about 4 KiB each) above which the checkpointer, once a passive pass has
/// copied nearly everything, briefly holds new commits back to start the WAL over. Each
/// restart costs callers about two fsyncs (20 to 40 ms each on the development machine's
/// disk). Four times this threshold made restarts four times rarer but twice as long in a
/// 60 s run (158 ms instead of 71 ms on average, p99 at 5,000 steps/s 12.4 ms instead of
/// 11.4 ms), and the WAL read back after a crash longer.
pub(super) const WAL_RESTART_FRAMES: i64 = 32_768;
/// The WAL file size kept after a restart: a quarter over the restart point, in frames of
/// a 24-byte header and a 4 KiB page (SQLite's default page size, which this schema keeps).
pub(super) const WAL_KEEP_BYTES: i64 = (WAL_RESTART_FRAMES + WAL_RESTART_FRAMES / 4) * (24 + 4096);
/// Rounds of a sync of the database file and a passive pass before a restart of the WAL:
/// each leaves the next only what was committed during the one before, so that the
/// restart, which holds commits back, has only a few pages to copy and sync.
pub(super) const PRE_RESTART_ROUNDS: usize = 2;
/// The writer's own checkpoint: only a backstop, should the checkpointer thread stop.
pub(super) const WRITER_AUTOCHECKPOINT: i64 = 262_144;

/// Busy waits in 100 µs steps: SQLite's default handler sleeps up to 100 ms at a time, far
/// longer than the other side of a hot-path lock is ever held. The writer waits up to 2 s
/// (a restart of the WAL in progress) before its webhooks are journalled instead.
pub(super) fn writer_busy(attempt: i32) -> bool {
    std::thread::sleep(Duration::from_micros(100));
    attempt < 20_000
}

/// The checkpointer waits up to 20 ms (the commit in progress, a manager's query): while a
/// restart of the WAL waits, commits are held back, so it gives up early and tries again.
pub(super) fn checkpointer_busy(attempt: i32) -> bool {
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
///
/// Returns whether the WAL is all in the database now: while it is and nothing has been
/// committed since, the checkpointer does not look again (see `HotPath::start`).
pub(super) fn checkpoint(
    conn: &Connection,
    db_file: &std::fs::File,
    metrics: &WriteMetrics,
    restart_frames: i64,
    restarted: &mut Option<i64>,
) -> rusqlite::Result<bool> {
    let (log, copied): (i64, i64) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })?;
    let mut caught_up = log == copied;
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
        caught_up = busy == 0;
    }
    Ok(caught_up)
}

pub(super) fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
}

/// Copies the whole WAL into the database and truncates it, waiting a little for the last
/// commits and reads to finish.
pub(super) fn truncate(conn: &Connection) -> StoreResult<()> {
    for _ in 0..50 {
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy == 0 {
            return Ok(());
        }
    }
    Err(StoreError::timed_out("the final checkpoint"))
}
