//! Retention: after the configured number of days a call forgets its caller (number masked
//! everywhere it was stored, recordings removed). Runs hourly while serving, and on demand.

use crate::state::AppState;
use crate::storage::{Forgotten, StoreResult};
use std::time::Duration;

/// One sweep at the app's current time; nothing when no retention is configured.
pub async fn sweep(state: &AppState) -> StoreResult<Forgotten> {
    let Some(days) = state.config.retention_days else {
        return Ok(Forgotten::default());
    };
    let now = state.now();
    let cutoff = now - chrono::Duration::days(i64::from(days));
    let done = state.db.forget_callers_before(cutoff, now).await?;
    if done.calls > 0 {
        tracing::info!(
            calls = done.calls,
            recordings = done.recordings,
            days,
            "retention: older calls' caller numbers masked and recordings removed"
        );
    }
    Ok(done)
}

/// Sweeps at start-up and then every hour.
pub fn spawn(state: AppState) {
    if state.config.retention_days.is_none() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            if let Err(e) = sweep(&state).await {
                tracing::warn!(error = %e, "retention sweep failed; retried in an hour");
            }
        }
    });
}
