//! Several hosts in one URL, as libpq takes them: `postgres://ivr@db1:5432,db2:5432/ivr?
//! target_session_attrs=read-write`. The hosts are tried in order and the first that
//! answers (and, for `read-write`, takes writes: not in recovery, not read-only by
//! default) serves the pool. sqlx's pool connects to one host, so the store keeps a pool
//! for the chosen host and a watcher that looks again, once a second, whether it still
//! answers and takes writes; when it does not, the next good host gets a new pool.

use crate::storage::{StoreError, StoreResult};
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use std::str::FromStr;
use std::sync::Arc;

/// The hosts of a URL, each as its own options, and whether a host must take writes.
#[derive(Debug, Clone)]
pub(super) struct Hosts {
    /// In the URL's order.
    pub(super) options: Vec<PgConnectOptions>,
    /// `target_session_attrs=read-write`.
    pub(super) read_write: bool,
}

impl Hosts {
    /// Whether the store must watch its host: several hosts, or one that must take writes.
    pub(super) fn watched(&self) -> bool {
        self.options.len() > 1 || self.read_write
    }
}

/// Splits a `postgres://` URL into one URL per host (user, database and the other
/// parameters kept on each).
pub(super) fn parse(url: &str) -> StoreResult<Hosts> {
    let bad = |why: &str| StoreError::Rejected(format!("database URL: {why}"));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected postgres://USER@HOST/DATABASE"))?;
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, q),
        None => (rest, ""),
    };
    // The host list ends at the first '/' after the user part.
    let user_end = main.rfind('@').map_or(0, |at| at + 1);
    let path_at = main[user_end..]
        .find('/')
        .map_or(main.len(), |i| user_end + i);
    let (user, hosts, path) = (
        &main[..user_end],
        &main[user_end..path_at],
        &main[path_at..],
    );
    let mut read_write = false;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.strip_prefix("target_session_attrs=") {
            Some("read-write") => read_write = true,
            Some("any") => read_write = false,
            Some(other) => {
                return Err(bad(&format!(
                    "target_session_attrs={other} is not supported (read-write or any)"
                )))
            }
            None => kept.push(pair),
        }
    }
    let query = if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    };
    let options = hosts
        .split(',')
        .map(|host| {
            if host.is_empty() {
                return Err(bad("an empty host in the host list"));
            }
            PgConnectOptions::from_str(&format!("{scheme}://{user}{host}{path}{query}"))
                .map_err(StoreError::from)
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Hosts {
        options,
        read_write,
    })
}

/// Which of a URL's hosts the pool connects to .
#[derive(Debug)]
pub(super) struct Watch {
    pub(super) hosts: Hosts,
    pub(super) pool: PgPool,
    pub(super) chosen: std::sync::atomic::AtomicUsize,
    /// When the pool last moved to another host: connections older than that are closed
    /// instead of used.
    pub(super) switched: Switched,
    pub(super) timeout: std::time::Duration,
}

/// When the pool last moved to another host.
pub(super) type Switched = Arc<std::sync::Mutex<Option<std::time::Instant>>>;

/// Whether a connection takes writes: not a standby, not read-only by default.
const TAKES_WRITES: &str =
    "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'";

impl Watch {
    /// Whether a connection's host answers (and takes writes, when asked).
    async fn is_good(&self, conn: &mut sqlx::PgConnection) -> Result<bool, sqlx::Error> {
        if self.hosts.read_write {
            sqlx::query_scalar::<_, bool>(TAKES_WRITES)
                .fetch_one(conn)
                .await
        } else {
            sqlx::query("SELECT 1").execute(conn).await.map(|_| true)
        }
    }

    /// Whether the chosen host answers (and takes writes, when asked).
    async fn current_is_good(&self) -> bool {
        let check = async {
            let mut conn = self.pool.acquire().await?;
            self.is_good(&mut conn).await
        };
        matches!(
            tokio::time::timeout(self.timeout, check).await,
            Ok(Ok(true))
        )
    }

    /// Tries the hosts in order and moves the pool to the first good one.
    pub(super) async fn choose(&self) -> bool {
        use sqlx::Connection;
        use std::sync::atomic::Ordering;
        for (i, options) in self.hosts.options.iter().enumerate() {
            let probe = async {
                let mut conn = sqlx::PgConnection::connect_with(options).await?;
                let good = self.is_good(&mut conn).await?;
                let _ = conn.close().await;
                Ok::<bool, sqlx::Error>(good)
            };
            if !matches!(
                tokio::time::timeout(self.timeout, probe).await,
                Ok(Ok(true))
            ) {
                continue;
            }
            if self.chosen.swap(i, Ordering::AcqRel) != i {
                self.pool.set_connect_options(options.clone());
                if let Ok(mut at) = self.switched.lock() {
                    *at = Some(std::time::Instant::now());
                }
                tracing::warn!(
                    host = i + 1,
                    "database: now connecting to host {} of the URL",
                    i + 1
                );
            }
            return true;
        }
        false
    }

    /// Once a second while the store lives: the chosen host checked, another chosen when
    /// it fails.
    pub(super) fn spawn(watch: &Arc<Watch>) {
        let weak = Arc::downgrade(watch);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let Some(w) = weak.upgrade() else { return };
                if w.pool.is_closed() {
                    return;
                }
                if !w.current_is_good().await {
                    w.choose().await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_host_keeps_the_user_database_and_parameters() {
        let h = parse(
            "postgres://ivr:s%2Fcret@db1:5433,db2/ivr?sslmode=disable&target_session_attrs=read-write",
        )
        .expect("a multi-host URL");
        assert!(h.read_write && h.watched());
        let hosts: Vec<(String, u16, Option<String>)> = h
            .options
            .iter()
            .map(|o| {
                (
                    o.get_host().to_string(),
                    o.get_port(),
                    o.get_database().map(str::to_string),
                )
            })
            .collect();
        assert_eq!(
            hosts,
            [
                ("db1".into(), 5433, Some("ivr".into())),
                ("db2".into(), 5432, Some("ivr".into()))
            ]
        );
        assert!(h.options.iter().all(|o| o.get_username() == "ivr"));
        let one = parse("postgres://ivr@db/ivr").expect("one host");
        assert!(!one.watched());
        assert!(parse("postgres://ivr@db/ivr?target_session_attrs=standby").is_err());
        assert!(parse("postgres://ivr@db1,,db2/ivr").is_err());
    }
}
