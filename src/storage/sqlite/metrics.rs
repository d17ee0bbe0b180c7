//! What the write path tells an operator (`/metrics`).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts};

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
    pub(super) fn new() -> prometheus::Result<Self> {
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
