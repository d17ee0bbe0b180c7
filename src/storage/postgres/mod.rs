//! PostgreSQL: the backend for several instances on one database. Every write is one
//! transaction whose constraints decide what two instances racing on the same webhook
//! write (see `calls`); the background jobs take turns through advisory locks and
//! `FOR UPDATE SKIP LOCKED`.

mod calls;
mod console;
mod error;
mod insights;
mod reads;
mod retention;
mod rows;
mod work;

pub(in crate::storage) use error::unavailable_state;

use super::*;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;

pub use crate::config::PgSettings;

/// PostgreSQL storage: one pool for everything (PostgreSQL takes concurrent writers).
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
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
    pub async fn connect(url: &str, settings: PgSettings) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?
            .application_name("ivr")
            .options([(
                "statement_timeout",
                format!("{}ms", settings.statement_timeout.as_millis()),
            )]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.pool_size.max(1))
            .acquire_timeout(settings.connect_timeout)
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    /// The pool.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// PostgreSQL's plan (`EXPLAIN`) of a statement, one line per row.
    pub async fn explain(&self, sql: &str) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(&format!("EXPLAIN {sql}"))
            .fetch_all(&self.pool)
            .await?)
    }
}
