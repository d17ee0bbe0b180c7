//! A watch on the SQLite files from outside SQLite. SQLite maps the `-shm` file into memory:
//! if anything truncates it while the server runs, the next access past its new end kills
//! the process with SIGBUS, with nothing logged. And if the database file is deleted or
//! replaced, SQLite goes on writing into the open, deleted file. Neither is an error SQLite
//! reports, so the guard looks at the files itself: a thread every [`WATCH_EVERY`], and
//! the `-shm` size again before each transaction of the hot path and each connection taken
//! from a pool.
//!
//! A fault that SQLite cannot come back from (the `-shm` truncated or replaced, the
//! database deleted or replaced) *fences* the store: every access fails at once as
//! unavailable, so records go to the journal and callers are answered as usual, and
//! `/readyz` says why. The server must be restarted to reopen the files; a deleted
//! database is first copied back to its path from the still-open file (`VACUUM INTO`), so
//! that a restart loses nothing. A fault that goes away by itself (a file made read-only)
//! is reported while it lasts; SQLite's own errors already send records to the journal.

use crate::storage::{StoreError, StoreResult};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How often the watch thread looks at the files.
pub const WATCH_EVERY: Duration = Duration::from_millis(100);

/// The files of one database, watched.
#[derive(Debug)]
pub struct FileGuard {
    db: PathBuf,
    shm: PathBuf,
    /// Set once the files are open: the database's device and inode, and the `-shm` file
    /// as SQLite mapped it.
    armed: OnceLock<Armed>,
    /// The largest `-shm` size seen: SQLite only grows it while it has it open.
    shm_size: AtomicU64,
    fenced: AtomicBool,
    /// The database file was found deleted: the watch thread copies it back.
    restore_pending: AtomicBool,
    /// What is wrong now, for `/readyz` and the log (a fence's reason stays).
    fault: Mutex<Option<String>>,
    /// 1 while a fault lasts (`ivr_database_fault`).
    pub gauge: prometheus::IntGauge,
}

#[derive(Debug)]
struct Armed {
    dev_ino: (u64, u64),
    shm: File,
    shm_ino: u64,
}

impl FileGuard {
    /// A guard for the database at `db` (not yet armed: every check passes).
    pub fn new(db: &Path) -> StoreResult<Arc<FileGuard>> {
        let mut shm = db.as_os_str().to_owned();
        shm.push("-shm");
        let gauge = prometheus::IntGauge::new(
            "database_fault",
            "1 while the database files are damaged, deleted or not writable (see /readyz)",
        )?;
        Ok(Arc::new(FileGuard {
            db: db.to_path_buf(),
            shm: PathBuf::from(shm),
            armed: OnceLock::new(),
            shm_size: AtomicU64::new(0),
            fenced: AtomicBool::new(false),
            restore_pending: AtomicBool::new(false),
            fault: Mutex::new(None),
            gauge,
        }))
    }

    /// Takes note of the files as SQLite opened them, and starts the watch thread, which
    /// holds `keep` (a connection to the open database, for `VACUUM INTO`).
    pub fn arm(self: &Arc<Self>, keep: rusqlite::Connection) -> StoreResult<()> {
        // A read, so that `keep` has the WAL open too: if the files are deleted, the
        // records not yet checkpointed are only there.
        keep.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
        let meta = std::fs::metadata(&self.db).map_err(super::error::db_file)?;
        // Kept open for good: closing it would drop SQLite's locks on the file (see
        // [`FileGuard::unwritable`]).
        let shm = File::open(&self.shm).map_err(super::error::db_file)?;
        let shm_meta = shm.metadata().map_err(super::error::db_file)?;
        self.shm_size.store(shm_meta.len(), Ordering::Relaxed);
        let _ = self.armed.set(Armed {
            dev_ino: (meta.dev(), meta.ino()),
            shm,
            shm_ino: shm_meta.ino(),
        });
        let guard = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("sqlite-guard".into())
            .spawn(move || watch(&guard, keep))
            .map_err(super::error::db_file)?;
        Ok(())
    }

    /// Fails at once, as unavailable, once the store is fenced.
    pub fn check(&self) -> StoreResult<()> {
        if self.fenced.load(Ordering::Acquire) {
            return Err(self.fence_error());
        }
        Ok(())
    }

    /// [`FileGuard::check`], after looking at the `-shm` file's size (one `fstat`): called
    /// before each use of a connection, it keeps SQLite from touching a truncated mapping.
    pub fn check_shm(&self) -> StoreResult<()> {
        self.check()?;
        if let Some(armed) = self.armed.get() {
            if let Some(fault) = self.shm_shrunk(armed) {
                self.fence(fault);
                return Err(self.fence_error());
            }
        }
        Ok(())
    }

    /// What is wrong with the files now, if anything.
    pub fn fault(&self) -> Option<String> {
        self.fault.lock().ok().and_then(|f| f.clone())
    }

    /// The error every access meets once the store is fenced.
    pub fn fence_error(&self) -> StoreError {
        super::error::fenced(&self.fault().unwrap_or_default())
    }

    fn shm_shrunk(&self, armed: &Armed) -> Option<String> {
        let len = armed.shm.metadata().map(|m| m.len()).unwrap_or(0);
        let seen = self.shm_size.fetch_max(len, Ordering::Relaxed);
        (len < seen).then(|| {
            format!(
                "the shared-memory file {} was truncated ({seen} -> {len} bytes) while in use",
                self.shm.display()
            )
        })
    }

    /// A fault SQLite cannot come back from: from now on every access fails.
    fn fence(&self, reason: String) {
        if self.fenced.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::error!(
            reason = %reason,
            "DATABASE FILES DAMAGED: records go to the journal and calls are answered; \
             restart the server to reopen the database"
        );
        self.gauge.set(1);
        if let Ok(mut f) = self.fault.lock() {
            *f = Some(reason);
        }
    }

    /// A fault that may go away: reported while it lasts.
    fn report(&self, now: Option<String>) {
        let Ok(mut f) = self.fault.lock() else {
            return;
        };
        if *f == now {
            return;
        }
        match &now {
            Some(reason) => tracing::error!(reason = %reason, "database files not writable"),
            None => tracing::info!("database files writable again"),
        }
        self.gauge.set(i64::from(now.is_some()));
        *f = now;
    }

    /// [`FileGuard::check_shm`], and whether the database file is still the one open
    /// (one `stat`): the writer calls it before each transaction, so that no commit goes
    /// into a deleted or replaced file once that is visible.
    pub fn check_before_write(&self) -> StoreResult<()> {
        self.check_shm()?;
        if let Some(armed) = self.armed.get() {
            if let Some(fault) = self.db_fault(armed) {
                self.fence(fault);
                return Err(self.fence_error());
            }
        }
        Ok(())
    }

    /// The faults that fence the store.
    fn inspect(&self, armed: &Armed) -> Option<String> {
        if let Some(fault) = self.shm_shrunk(armed) {
            return Some(fault);
        }
        if let Ok(m) = std::fs::metadata(&self.shm) {
            if m.ino() != armed.shm_ino {
                return Some(format!(
                    "the shared-memory file {} was replaced while in use",
                    self.shm.display()
                ));
            }
        }
        self.db_fault(armed)
    }

    fn db_fault(&self, armed: &Armed) -> Option<String> {
        match std::fs::metadata(&self.db) {
            Ok(m) if (m.dev(), m.ino()) == armed.dev_ino => None,
            Ok(_) => Some(format!(
                "the database file {} was replaced while in use; the records since are in the journal",
                self.db.display()
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.restore_pending.store(true, Ordering::Release);
                Some(format!(
                    "the database file {} was deleted while in use; the records since are in the journal",
                    self.db.display()
                ))
            }
            Err(e) => Some(format!(
                "the database file {} cannot be looked at: {e}",
                self.db.display()
            )),
        }
    }

    /// The database file was deleted: its open copy is written back to its path (unless
    /// something is there by now), so that a restart finds every record committed.
    fn restore_deleted(&self, conn: &rusqlite::Connection) {
        // A transaction that passed its check just before the file went is let finish.
        std::thread::sleep(Duration::from_millis(50));
        let db = self.db.display();
        let to = self.db.to_string_lossy().into_owned();
        let outcome = if self.db.exists() {
            format!("the database file {db} was deleted while in use; something new is at its path, left as it is; the records since are in the journal")
        } else {
            match conn.execute("VACUUM INTO ?1", [&to]) {
                Ok(_) => {
                    let _ = crate::storage::private_file(&self.db);
                    format!(
                        "the database file {db} was deleted while in use; it was copied back \
                         from the open file, and the records since are in the journal"
                    )
                }
                Err(e) => format!(
                    "the database file {db} was deleted while in use, and could not be copied \
                     back ({e}); the records since are in the journal"
                ),
            }
        };
        tracing::error!(reason = %outcome, "DATABASE FILE DELETED");
        if let Ok(mut f) = self.fault.lock() {
            *f = Some(outcome);
        }
    }

    /// A fault that lasts only while it lasts: the files cannot be written (a read-only
    /// file system, an immutable file, a mode). Asked with access(2), not by opening them:
    /// closing any descriptor of a file drops every POSIX lock this process holds on it,
    /// SQLite's included.
    fn unwritable(&self) -> Option<String> {
        use rustix::fs::{access, Access};
        for path in [&self.db, &self.shm] {
            if let Err(e) = access(path, Access::WRITE_OK) {
                if e != rustix::io::Errno::NOENT {
                    return Some(format!("{} cannot be written: {e}", path.display()));
                }
            }
        }
        None
    }
}

/// The watch thread: until the store is dropped, or fenced.
fn watch(guard: &std::sync::Weak<FileGuard>, keep: rusqlite::Connection) {
    loop {
        std::thread::sleep(WATCH_EVERY);
        let Some(guard) = guard.upgrade() else {
            return;
        };
        if guard.fenced.load(Ordering::Acquire) {
            if guard.restore_pending.swap(false, Ordering::AcqRel) {
                guard.restore_deleted(&keep);
            }
            return;
        }
        let Some(armed) = guard.armed.get() else {
            continue;
        };
        match guard.inspect(armed) {
            Some(fault) => guard.fence(fault),
            None => guard.report(guard.unwritable()),
        }
    }
}
