//! `[postgres]`: how each instance's pool reaches PostgreSQL.

use anyhow::bail;
use serde::Deserialize;
use std::time::Duration;

/// How the pool reaches PostgreSQL (`[postgres]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgSettings {
    /// Connections per instance.
    pub pool_size: u32,
    /// How long a request waits for a connection, or for a new one to open.
    pub connect_timeout: Duration,
    /// The longest a statement may run before PostgreSQL cancels it.
    pub statement_timeout: Duration,
}

impl Default for PgSettings {
    fn default() -> Self {
        Self {
            pool_size: 10,
            connect_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

/// `[postgres]` as written in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePostgres {
    pool_size: Option<u32>,
    connect_timeout_ms: Option<u64>,
    statement_timeout_ms: Option<u64>,
}

impl FilePostgres {
    /// The settings, checked: 1 to 200 connections, timeouts of 100 ms to 60 s.
    pub fn resolve(self) -> anyhow::Result<PgSettings> {
        let d = PgSettings::default();
        let ms = |v: Option<u64>, name: &str, default: Duration| -> anyhow::Result<Duration> {
            match v {
                None => Ok(default),
                Some(ms @ 100..=60_000) => Ok(Duration::from_millis(ms)),
                Some(ms) => bail!("postgres.{name} must be 100 to 60000 (ms), not {ms}"),
            }
        };
        let pool_size = match self.pool_size {
            None => d.pool_size,
            Some(n @ 1..=200) => n,
            Some(n) => bail!("postgres.pool_size must be 1 to 200, not {n}"),
        };
        Ok(PgSettings {
            pool_size,
            connect_timeout: ms(
                self.connect_timeout_ms,
                "connect_timeout_ms",
                d.connect_timeout,
            )?,
            statement_timeout: ms(
                self.statement_timeout_ms,
                "statement_timeout_ms",
                d.statement_timeout,
            )?,
        })
    }
}
