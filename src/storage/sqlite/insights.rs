//! SQLite: the hourly roll-ups of the console's insights and the counts read from them.

use crate::storage::insights::{Counts, InsightsStore, NodeCount};
use crate::storage::{from_millis, to_millis, SqliteStore, StoreResult};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use std::collections::BTreeMap;

const HOUR: i64 = 3_600_000;
/// Hours rolled up per transaction: a short hold on the writer at a time.
const HOURS_PER_TX: i64 = 6;

/// Calls of `[?1, ?2)` by hour, line and outcome (also used by `ivr seed`).
pub const CALL_HOURS: &str = "SELECT started_at - started_at % 3600000 AS hour, line, \
     coalesce(outcome, '') AS outcome, count(*) AS calls FROM calls \
     WHERE started_at >= ?1 AND started_at < ?2 GROUP BY 1, 2, 3";
/// Calls of `[?1, ?2)` that reached each node and chose an option there, by hour.
pub const NODE_HOURS: &str = "SELECT c.started_at - c.started_at % 3600000 AS hour, \
     s.node AS node, count(DISTINCT s.call_id) AS reached, \
     count(DISTINCT CASE WHEN s.result LIKE 'chose %' THEN s.call_id END) AS chose \
     FROM calls c JOIN steps s ON s.call_id = c.id \
     WHERE c.started_at >= ?1 AND c.started_at < ?2 GROUP BY 1, 2";
/// Replaces the roll-ups of `[?1, ?2)` and moves the mark (also used by `ivr seed`).
pub fn roll_up_sql() -> String {
    format!(
        "DELETE FROM call_hours WHERE hour >= ?1 AND hour < ?2; \
         INSERT INTO call_hours (hour, line, outcome, calls) {CALL_HOURS}; \
         DELETE FROM node_hours WHERE hour >= ?1 AND hour < ?2; \
         INSERT INTO node_hours (hour, node, reached, chose) {NODE_HOURS}; \
         INSERT INTO rollups (name, through) VALUES ('insights', ?2) \
         ON CONFLICT (name) DO UPDATE SET through = max(through, excluded.through);"
    )
}

fn floor_hour(ms: i64) -> i64 {
    ms - ms.rem_euclid(HOUR)
}

impl SqliteStore {
    async fn rolled_through(&self) -> StoreResult<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT through FROM rollups WHERE name = 'insights'")
                .fetch_optional(self.reader()?)
                .await?,
        )
    }
}

#[async_trait]
impl InsightsStore for SqliteStore {
    async fn roll_up(&self, through: DateTime<Utc>) -> StoreResult<u64> {
        let end = floor_hour(to_millis(through));
        let start = match self.rolled_through().await? {
            Some(t) => t,
            None => {
                let first: Option<i64> = sqlx::query_scalar("SELECT min(started_at) FROM calls")
                    .fetch_one(self.reader()?)
                    .await?;
                match first {
                    Some(f) => floor_hour(f),
                    None => end,
                }
            }
        };
        let sql = roll_up_sql();
        let mut from = start;
        while from < end {
            let to = (from + HOURS_PER_TX * HOUR).min(end);
            let mut tx = self.writer()?.begin().await?;
            for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                sqlx::query(statement)
                    .bind(from)
                    .bind(to)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            from = to;
            tokio::task::yield_now().await;
        }
        Ok(u64::try_from((end - start).max(0) / HOUR).unwrap_or(0))
    }

    async fn counts(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> StoreResult<Counts> {
        let (since, until) = (to_millis(since), to_millis(until));
        let rolled = self
            .rolled_through()
            .await?
            .unwrap_or(since)
            .clamp(since, until);
        let db = self.reader()?;
        let mut hours: BTreeMap<i64, u64> = BTreeMap::new();
        let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
        let mut nodes: BTreeMap<String, NodeCount> = BTreeMap::new();
        let count = |r: &sqlx::sqlite::SqliteRow, col: &str| -> StoreResult<u64> {
            Ok(u64::try_from(r.try_get::<i64, _>(col)?).unwrap_or(0))
        };
        // Summed in SQL, so that a page reads a few rows per hour: rolled-up hours from
        // the roll-ups, the hours since live from the calls and steps.
        let live_hours =
            format!("SELECT hour, sum(calls) AS calls FROM ({CALL_HOURS}) GROUP BY hour");
        let live_outcomes =
            format!("SELECT outcome, sum(calls) AS calls FROM ({CALL_HOURS}) GROUP BY outcome");
        let live_nodes = format!(
            "SELECT node, sum(reached) AS reached, sum(chose) AS chose FROM ({NODE_HOURS}) \
             GROUP BY node"
        );
        let parts = [
            (
                "SELECT hour, sum(calls) AS calls FROM call_hours \
                 WHERE hour >= ?1 AND hour < ?2 GROUP BY hour",
                "SELECT outcome, sum(calls) AS calls FROM call_hours \
                 WHERE hour >= ?1 AND hour < ?2 GROUP BY outcome",
                "SELECT node, sum(reached) AS reached, sum(chose) AS chose FROM node_hours \
                 WHERE hour >= ?1 AND hour < ?2 GROUP BY node",
                since,
                rolled,
            ),
            (
                live_hours.as_str(),
                live_outcomes.as_str(),
                live_nodes.as_str(),
                rolled,
                until,
            ),
        ];
        for (hours_sql, outcomes_sql, nodes_sql, from, to) in parts {
            if from >= to {
                continue;
            }
            for r in sqlx::query(hours_sql)
                .bind(from)
                .bind(to)
                .fetch_all(db)
                .await?
            {
                *hours.entry(r.try_get("hour")?).or_default() += count(&r, "calls")?;
            }
            for r in sqlx::query(outcomes_sql)
                .bind(from)
                .bind(to)
                .fetch_all(db)
                .await?
            {
                *outcomes.entry(r.try_get("outcome")?).or_default() += count(&r, "calls")?;
            }
            for r in sqlx::query(nodes_sql)
                .bind(from)
                .bind(to)
                .fetch_all(db)
                .await?
            {
                let node: String = r.try_get("node")?;
                let n = nodes.entry(node.clone()).or_insert_with(|| NodeCount {
                    node,
                    ..NodeCount::default()
                });
                n.reached += count(&r, "reached")?;
                n.chose += count(&r, "chose")?;
            }
        }
        let mut counts = Counts {
            hours: hours
                .into_iter()
                .map(|(h, n)| (from_millis(h), n))
                .collect(),
            outcomes: outcomes.into_iter().collect(),
            ..Counts::default()
        };
        counts.outcomes.sort_by_key(|o| std::cmp::Reverse(o.1));
        counts.nodes = nodes.into_values().collect();
        for category in crate::domain::CATEGORIES {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM tickets WHERE category = ?1 AND created_at >= ?2 \
                 AND created_at < ?3",
            )
            .bind(category)
            .bind(since)
            .bind(until)
            .fetch_one(db)
            .await?;
            counts
                .tickets
                .push((category.to_string(), u64::try_from(n).unwrap_or(0)));
        }
        Ok(counts)
    }
}
