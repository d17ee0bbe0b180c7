//! PostgreSQL: the hourly roll-ups of the console's insights and the counts read from them.
//! One instance rolls up at a time: each roll-up transaction takes the advisory lock
//! [`JobLock::RollUp`] first, and an instance that finds it taken leaves the work to the
//! holder.

use super::{JobLock, PgStore};
use crate::storage::insights::{Counts, InsightsStore, NodeCount};
use crate::storage::{from_millis, to_millis, StoreResult};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::Row;
use std::collections::BTreeMap;

const HOUR: i64 = 3_600_000;
/// Hours rolled up per transaction: short transactions, so that the roll-up rows and the
/// advisory lock are not held for long at a time.
const HOURS_PER_TX: i64 = 6;

/// Calls of `[$1, $2)` by hour, line and outcome.
const CALL_HOURS: &str = "SELECT started_at - started_at % 3600000 AS hour, line, \
     coalesce(outcome, '') AS outcome, count(*) AS calls FROM calls \
     WHERE started_at >= $1 AND started_at < $2 GROUP BY 1, 2, 3";
/// Calls of `[$1, $2)` that reached each node and chose an option there, by hour.
const NODE_HOURS: &str = "SELECT c.started_at - c.started_at % 3600000 AS hour, \
     s.node AS node, count(DISTINCT s.call_id) AS reached, \
     count(DISTINCT CASE WHEN s.result LIKE 'chose %' THEN s.call_id END) AS chose \
     FROM calls c JOIN steps s ON s.call_id = c.id \
     WHERE c.started_at >= $1 AND c.started_at < $2 GROUP BY 1, 2";
/// Moves the mark to `$1`, never back.
const MOVE_MARK: &str = "INSERT INTO rollups (name, through) VALUES ('insights', $1) \
     ON CONFLICT (name) DO UPDATE SET through = GREATEST(rollups.through, EXCLUDED.through)";

/// The statements that replace the roll-ups of `[$1, $2)`.
fn roll_up_statements() -> [String; 4] {
    [
        "DELETE FROM call_hours WHERE hour >= $1 AND hour < $2".to_string(),
        format!("INSERT INTO call_hours (hour, line, outcome, calls) {CALL_HOURS}"),
        "DELETE FROM node_hours WHERE hour >= $1 AND hour < $2".to_string(),
        format!("INSERT INTO node_hours (hour, node, reached, chose) {NODE_HOURS}"),
    ]
}

fn floor_hour(ms: i64) -> i64 {
    ms - ms.rem_euclid(HOUR)
}

impl PgStore {
    async fn rolled_through(&self) -> StoreResult<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT through FROM rollups WHERE name = 'insights'")
                .fetch_optional(self.pool())
                .await?,
        )
    }
}

#[async_trait]
impl InsightsStore for PgStore {
    /// Returns the hours this instance rolled up: fewer, or none, when another instance
    /// holds the roll-up's lock (it rolls them up instead).
    async fn roll_up(&self, through: DateTime<Utc>) -> StoreResult<u64> {
        let end = floor_hour(to_millis(through));
        let start = match self.rolled_through().await? {
            Some(t) => t,
            None => {
                let first: Option<i64> = sqlx::query_scalar("SELECT min(started_at) FROM calls")
                    .fetch_one(self.pool())
                    .await?;
                match first {
                    Some(f) => floor_hour(f),
                    None => end,
                }
            }
        };
        let statements = roll_up_statements();
        let mut done = 0;
        let mut from = start;
        while from < end {
            let to = (from + HOURS_PER_TX * HOUR).min(end);
            let mut tx = self.pool().begin().await?;
            let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(JobLock::RollUp as i64)
                .fetch_one(&mut *tx)
                .await?;
            if !ours {
                tx.rollback().await?;
                break;
            }
            for statement in &statements {
                sqlx::query(statement)
                    .bind(from)
                    .bind(to)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(MOVE_MARK).bind(to).execute(&mut *tx).await?;
            tx.commit().await?;
            done += (to - from) / HOUR;
            from = to;
            tokio::task::yield_now().await;
        }
        Ok(u64::try_from(done).unwrap_or(0))
    }

    async fn counts(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> StoreResult<Counts> {
        let (since, until) = (to_millis(since), to_millis(until));
        let rolled = self
            .rolled_through()
            .await?
            .unwrap_or(since)
            .clamp(since, until);
        let db = self.pool();
        let mut hours: BTreeMap<i64, u64> = BTreeMap::new();
        let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
        let mut nodes: BTreeMap<String, NodeCount> = BTreeMap::new();
        let count = |r: &PgRow, col: &str| -> StoreResult<u64> {
            Ok(u64::try_from(r.try_get::<i64, _>(col)?).unwrap_or(0))
        };
        // Summed in SQL, so that a page reads a few rows per hour: rolled-up hours from
        // the roll-ups, the hours since live from the calls and steps. PostgreSQL's sum of
        // BIGINTs is NUMERIC: cast back.
        let live_hours =
            format!("SELECT hour, sum(calls)::BIGINT AS calls FROM ({CALL_HOURS}) h GROUP BY hour");
        let live_outcomes = format!(
            "SELECT outcome, sum(calls)::BIGINT AS calls FROM ({CALL_HOURS}) h GROUP BY outcome"
        );
        let live_nodes = format!(
            "SELECT node, sum(reached)::BIGINT AS reached, sum(chose)::BIGINT AS chose \
             FROM ({NODE_HOURS}) n GROUP BY node"
        );
        let parts = [
            (
                "SELECT hour, sum(calls)::BIGINT AS calls FROM call_hours \
                 WHERE hour >= $1 AND hour < $2 GROUP BY hour",
                "SELECT outcome, sum(calls)::BIGINT AS calls FROM call_hours \
                 WHERE hour >= $1 AND hour < $2 GROUP BY outcome",
                "SELECT node, sum(reached)::BIGINT AS reached, sum(chose)::BIGINT AS chose \
                 FROM node_hours WHERE hour >= $1 AND hour < $2 GROUP BY node",
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
                "SELECT count(*) FROM tickets WHERE category = $1 AND created_at >= $2 \
                 AND created_at < $3",
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
