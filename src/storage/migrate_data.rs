//! `ivr migrate-data`: copies a SQLite database into PostgreSQL, table by table in the
//! order of their references, a batch per transaction. Each batch moves the copy's mark
//! (`migrate_data_progress`) in the same transaction, so an interrupted copy resumes at
//! the first batch not committed, and nothing is copied twice. The copied tables are then
//! vacuumed and analysed, so that the first queries find statistics and index-only scans.

use super::{postgres::PgStore, PgSettings, Store, StoreError, StoreResult};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteRow};
use sqlx::{Postgres, QueryBuilder, Row, SqlitePool};
use std::str::FromStr;

/// How a column is kept: SQLite keeps booleans as integers, PostgreSQL as booleans.
#[derive(Clone, Copy)]
enum Kind {
    Int,
    Text,
    Bool,
}
use Kind::{Bool, Int, Text};

/// A table copied, its columns, and whether PostgreSQL numbers its rows by an identity
/// column `id` (set to follow the copied ids afterwards).
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    identity: bool,
    /// How its rows are paged: `None` by SQLite's row id (the mark is the last one
    /// copied); a key for the roll-up tables, which have no row id (the mark is the count
    /// of rows copied).
    key: Option<&'static str>,
}

/// The tables, parents first. Console sessions and failed sign-ins are not copied: people
/// sign in again on the new database.
const TABLES: &[Table] = &[
    Table {
        name: "calls",
        columns: &[
            ("id", Int),
            ("call_sid", Text),
            ("line", Text),
            ("store_name", Text),
            ("from_number", Text),
            ("to_number", Text),
            ("flow", Text),
            ("flow_version", Text),
            ("started_at", Int),
            ("ended_at", Int),
            ("status", Text),
            ("status_seq", Int),
            ("duration_seconds", Int),
            ("outcome", Text),
            ("recording_url", Text),
            ("error_count", Int),
            ("last_error", Text),
            ("anonymised_at", Int),
        ],
        identity: true,
        key: None,
    },
    Table {
        name: "tickets",
        columns: &[
            ("id", Int),
            ("call_sid", Text),
            ("request_key", Text),
            ("idx", Int),
            ("category", Text),
            ("reason", Text),
            ("caller_number", Text),
            ("status", Text),
            ("created_at", Int),
            ("recording_url", Text),
            ("external_ref", Text),
            ("due_at", Int),
            ("escalated_at", Int),
            ("node", Text),
            ("assignee", Text),
            ("resolution", Text),
            ("resolved_at", Int),
            ("updated_at", Int),
            ("overdue_notified_at", Int),
        ],
        identity: true,
        key: None,
    },
    Table {
        name: "call_tickets",
        columns: &[
            ("call_sid", Text),
            ("ticket_id", Int),
            ("relation", Text),
            ("at", Int),
        ],
        identity: false,
        key: None,
    },
    Table {
        name: "webhooks",
        columns: &[
            ("call_id", Int),
            ("request_key", Text),
            ("at", Int),
            ("ticket_id", Int),
            ("answer", Text),
        ],
        identity: false,
        key: None,
    },
    Table {
        name: "steps",
        columns: &[
            ("id", Int),
            ("call_id", Int),
            ("request_key", Text),
            ("idx", Int),
            ("at", Int),
            ("node", Text),
            ("kind", Text),
            ("said", Text),
            ("digits", Text),
            ("result", Text),
            ("data", Text),
        ],
        identity: true,
        key: None,
    },
    Table {
        name: "notifications",
        columns: &[
            ("id", Int),
            ("call_sid", Text),
            ("ticket_id", Int),
            ("request_key", Text),
            ("idx", Int),
            ("contact", Text),
            ("address", Text),
            ("subject", Text),
            ("body", Text),
            ("status", Text),
            ("created_at", Int),
            ("attempts", Int),
            ("last_error", Text),
            ("next_attempt_at", Int),
            ("claimed_until", Int),
            ("sent_at", Int),
            ("attach_recording", Bool),
        ],
        identity: true,
        key: None,
    },
    Table {
        name: "ticket_events",
        columns: &[
            ("id", Int),
            ("ticket_id", Int),
            ("at", Int),
            ("actor", Text),
            ("action", Text),
            ("detail", Text),
        ],
        identity: true,
        key: None,
    },
    Table {
        name: "settings",
        columns: &[("key", Text), ("value", Text), ("updated_at", Int)],
        identity: false,
        key: None,
    },
    Table {
        name: "users",
        columns: &[
            ("id", Int),
            ("name", Text),
            ("role", Text),
            ("password_hash", Text),
            ("disabled", Bool),
            ("created_at", Int),
            ("updated_at", Int),
        ],
        identity: true,
        key: None,
    },
    Table {
        name: "audit_log",
        columns: &[
            ("id", Int),
            ("at", Int),
            ("actor", Text),
            ("action", Text),
            ("detail", Text),
        ],
        identity: true,
        key: None,
    },
    Table {
        name: "call_hours",
        columns: &[
            ("hour", Int),
            ("line", Text),
            ("outcome", Text),
            ("calls", Int),
        ],
        identity: false,
        key: Some("hour, line, outcome"),
    },
    Table {
        name: "node_hours",
        columns: &[
            ("hour", Int),
            ("node", Text),
            ("reached", Int),
            ("chose", Int),
        ],
        identity: false,
        key: Some("hour, node"),
    },
    Table {
        name: "rollups",
        columns: &[("name", Text), ("through", Int)],
        identity: false,
        key: None,
    },
];

/// Rows per transaction.
const BATCH: i64 = 2_000;

/// What a copy did, or would do: rows per table in the source and in the target.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Copied {
    /// `(table, rows in the source, rows in the target afterwards)`.
    pub tables: Vec<(String, i64, i64)>,
    /// Whether an earlier, interrupted copy was resumed.
    pub resumed: bool,
}

impl Copied {
    /// Whether every table holds as many rows in the target as in the source.
    pub fn complete(&self) -> bool {
        self.tables.iter().all(|(_, from, to)| from == to)
    }
}

/// Copies the SQLite database at `from` into the PostgreSQL database at `to` (migrated
/// first). Refuses a target that holds calls unless they came from an interrupted copy
/// of the same source; `dry_run` checks and counts without writing.
pub async fn migrate_data(from: &str, to: &str, dry_run: bool) -> StoreResult<Copied> {
    if !from.starts_with("sqlite:") || !super::is_postgres(to) {
        return Err(StoreError::unsupported(
            "migrate-data copies from sqlite://PATH to postgres://HOST/DATABASE",
        ));
    }
    let options = SqliteConnectOptions::from_str(from)?.read_only(true);
    if !options.get_filename().exists() {
        return Err(StoreError::NotFound(format!(
            "no SQLite database at {}",
            options.get_filename().display()
        )));
    }
    let source = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    let target = PgStore::connect(to, PgSettings::default()).await?;
    let source_id = format!("{}", source.connect_options().get_filename().display());
    let mut copied = Copied::default();
    if dry_run {
        let calls = if target_has_tables(&target).await? {
            count_pg(&target, "calls").await?
        } else {
            0
        };
        let resumed = progress_of(&target, &source_id).await?;
        refuse_foreign(calls, resumed.is_some())?;
        copied.resumed = resumed.is_some();
        for t in TABLES {
            let n = count_sqlite(&source, t.name).await?;
            copied.tables.push((t.name.to_string(), n, 0));
        }
        return Ok(copied);
    }
    target.migrate().await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS migrate_data_progress (source TEXT NOT NULL, \
         tbl TEXT NOT NULL, last_rowid BIGINT NOT NULL, PRIMARY KEY (source, tbl))",
    )
    .execute(target.pool())
    .await?;
    let resumed = progress_of(&target, &source_id).await?;
    refuse_foreign(count_pg(&target, "calls").await?, resumed.is_some())?;
    copied.resumed = resumed.is_some();
    for t in TABLES {
        copy_table(&source, &target, &source_id, t).await?;
        if t.identity {
            sqlx::query(&format!(
                "SELECT setval(pg_get_serial_sequence('{0}', 'id'), \
                 GREATEST((SELECT max(id) FROM {0}), 1))",
                t.name
            ))
            .execute(target.pool())
            .await?;
        }
        let (n_from, n_to) = (
            count_sqlite(&source, t.name).await?,
            count_pg(&target, t.name).await?,
        );
        copied.tables.push((t.name.to_string(), n_from, n_to));
    }
    // A bulk load leaves PostgreSQL without statistics and without the visibility map its
    // index-only scans need (the console's counts read whole ranges of an index): done now,
    // not whenever autovacuum comes round.
    for t in TABLES {
        sqlx::query(&format!("VACUUM (ANALYZE) {}", t.name))
            .execute(target.pool())
            .await?;
    }
    source.close().await;
    target.close().await?;
    Ok(copied)
}

fn refuse_foreign(target_calls: i64, resuming: bool) -> StoreResult<()> {
    if target_calls > 0 && !resuming {
        return Err(StoreError::Rejected(format!(
            "the target already holds {target_calls} calls that no copy from this source wrote; \
             migrate-data copies into an empty database only"
        )));
    }
    Ok(())
}

async fn target_has_tables(target: &PgStore) -> StoreResult<bool> {
    Ok(
        sqlx::query_scalar::<_, bool>("SELECT to_regclass('calls') IS NOT NULL")
            .fetch_one(target.pool())
            .await?,
    )
}

/// The marks of an earlier copy from this source, if there was one.
async fn progress_of(target: &PgStore, source: &str) -> StoreResult<Option<i64>> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('migrate_data_progress') IS NOT NULL")
            .fetch_one(target.pool())
            .await?;
    if !exists {
        return Ok(None);
    }
    Ok(sqlx::query_scalar(
        "SELECT CAST(count(*) AS BIGINT) FROM migrate_data_progress WHERE source = $1 HAVING count(*) > 0",
    )
    .bind(source)
    .fetch_optional(target.pool())
    .await?)
}

async fn count_sqlite(source: &SqlitePool, table: &str) -> StoreResult<i64> {
    Ok(sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(source)
        .await?)
}

async fn count_pg(target: &PgStore, table: &str) -> StoreResult<i64> {
    Ok(sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(target.pool())
        .await?)
}

/// Copies one table in batches of SQLite row ids after the mark.
async fn copy_table(
    source: &SqlitePool,
    target: &PgStore,
    source_id: &str,
    t: &Table,
) -> StoreResult<()> {
    let names: Vec<&str> = t.columns.iter().map(|(n, _)| *n).collect();
    let list = names.join(", ");
    loop {
        let mark: i64 = sqlx::query_scalar(
            "SELECT last_rowid FROM migrate_data_progress WHERE source = $1 AND tbl = $2",
        )
        .bind(source_id)
        .bind(t.name)
        .fetch_optional(target.pool())
        .await?
        .unwrap_or(0);
        let page = match t.key {
            None => format!(
                "SELECT rowid AS copy_rowid, {list} FROM {} WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
                t.name
            ),
            Some(key) => format!(
                "SELECT 0 AS copy_rowid, {list} FROM {} ORDER BY {key} LIMIT ?2 OFFSET ?1",
                t.name
            ),
        };
        let rows: Vec<SqliteRow> = sqlx::query(&page)
            .bind(mark)
            .bind(BATCH)
            .fetch_all(source)
            .await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        let last: i64 = match t.key {
            None => last.try_get("copy_rowid")?,
            Some(_) => mark + rows.len() as i64,
        };
        let mut b: QueryBuilder<'_, Postgres> =
            QueryBuilder::new(format!("INSERT INTO {} ({list}) ", t.name));
        let mut failed: Option<sqlx::Error> = None;
        b.push_values(&rows, |mut v, row| {
            for (name, kind) in t.columns {
                let bound = match kind {
                    Int => row.try_get::<Option<i64>, _>(*name).map(|x| {
                        v.push_bind(x);
                    }),
                    Text => row.try_get::<Option<String>, _>(*name).map(|x| {
                        v.push_bind(x);
                    }),
                    Bool => row.try_get::<Option<i64>, _>(*name).map(|x| {
                        v.push_bind(x.map(|x| x != 0));
                    }),
                };
                if let Err(e) = bound {
                    failed.get_or_insert(e);
                }
            }
        });
        if let Some(e) = failed {
            return Err(e.into());
        }
        let mut tx = target.pool().begin().await?;
        b.build().execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO migrate_data_progress (source, tbl, last_rowid) VALUES ($1, $2, $3) \
             ON CONFLICT (source, tbl) DO UPDATE SET last_rowid = EXCLUDED.last_rowid",
        )
        .bind(source_id)
        .bind(t.name)
        .bind(last)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
}
