//! PostgreSQL: the backend for several instances on one database. Every write is one
//! transaction whose constraints decide what two instances racing on the same webhook
//! write (see `calls`); the background jobs take turns through advisory locks and
//! `FOR UPDATE SKIP LOCKED`.

mod calls;
mod console;
mod error;
mod hosts;
mod insights;
mod reads;
mod retention;
mod rows;
mod work;

pub(in crate::storage) use error::unavailable_state;

use super::*;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

pub use crate::config::PgSettings;

/// PostgreSQL storage: one pool for everything (PostgreSQL takes concurrent writers).
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The host chooser of a URL with several hosts or `target_session_attrs`, held so
    /// that its watcher runs while the store lives.
    _watch: Option<Arc<hosts::Watch>>,
}

/// Background jobs that must run on one instance at a time: the key of the advisory
/// lock each takes for its pass.
#[derive(Debug, Clone, Copy)]
#[repr(i64)]
pub(crate) enum JobLock {
    /// The insights roll-up.
    RollUp = 0x4956_5202,
}

impl PgStore {
    /// Connects to the database of a `postgres://` URL. The pool connects lazily, so that
    /// a server started while PostgreSQL is down still answers calls (from the journal).
    /// With several hosts (or `target_session_attrs=read-write`) the first good host is
    /// chosen now if one answers, and watched from then on (`hosts`).
    pub async fn connect(url: &str, settings: PgSettings) -> StoreResult<Self> {
        let mut hosts = hosts::parse(url)?;
        for o in &mut hosts.options {
            *o = o.clone().application_name("ivr").options([(
                "statement_timeout",
                format!("{}ms", settings.statement_timeout.as_millis()),
            )]);
        }
        let first = hosts
            .options
            .first()
            .cloned()
            .ok_or_else(|| StoreError::Rejected("database URL: no host".into()))?;
        let options = PgPoolOptions::new()
            .max_connections(settings.pool_size.max(1))
            .acquire_timeout(settings.connect_timeout);
        if !hosts.watched() {
            return Ok(Self {
                pool: options.connect_lazy_with(first),
                _watch: None,
            });
        }
        // After a move to another host, connections to the one before are closed as they
        // come out of the pool (a demoted primary would still answer, read-only).
        let switched: hosts::Switched = Arc::default();
        let seen = switched.clone();
        let pool = options
            .before_acquire(move |_, meta| {
                let older = seen
                    .lock()
                    .ok()
                    .and_then(|at| *at)
                    .is_some_and(|at| meta.age > at.elapsed());
                Box::pin(async move { Ok(!older) })
            })
            .connect_lazy_with(first);
        let watch = Arc::new(hosts::Watch {
            hosts,
            pool: pool.clone(),
            chosen: std::sync::atomic::AtomicUsize::new(0),
            switched,
            timeout: settings.connect_timeout,
        });
        watch.choose().await;
        hosts::Watch::spawn(&watch);
        Ok(Self {
            pool,
            _watch: Some(watch),
        })
    }

    /// The pool.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }
}
