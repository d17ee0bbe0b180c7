//! What the console's insights and flow picture read: calls counted by hour, line and
//! outcome; calls that reached each flow node and chose a menu option there; tickets by
//! category. Hours are rolled up in the background ([`InsightsStore::roll_up`]); the hours
//! not rolled up yet are counted live.

use super::StoreResult;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// How many calls reached a node, and how many of them chose a menu option there.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeCount {
    /// `flow.node`.
    pub node: String,
    /// Calls with a step at the node.
    pub reached: u64,
    /// Calls that chose a menu option at the node.
    pub chose: u64,
}

/// The counts of a time range.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Calls by the hour they started in (start of the hour, UTC), in order.
    pub hours: Vec<(DateTime<Utc>, u64)>,
    /// Calls by outcome (`""` while a call has none), most first.
    pub outcomes: Vec<(String, u64)>,
    /// Calls by node, summed over the range.
    pub nodes: Vec<NodeCount>,
    /// Tickets opened, by category.
    pub tickets: Vec<(String, u64)>,
}

/// Counts for insights, read from hourly roll-ups.
#[async_trait]
pub trait InsightsStore: Send + Sync + 'static {
    /// Rolls up every whole hour before `through` not rolled up yet (all of them on a
    /// database that has none), a few hours per transaction; returns how many hours.
    /// Safe to run again and on several instances: an hour is replaced, not added to.
    async fn roll_up(&self, through: DateTime<Utc>) -> StoreResult<u64>;
    /// The counts of calls that started in `[since, until)` (whole hours) and of tickets
    /// opened then.
    async fn counts(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> StoreResult<Counts>;
}
