//! Service levels: when each ticket category is due, counted in Guest Care's business
//! hours or in clock hours, and the sweep that e-mails the manager once about each ticket
//! of the watched categories still unresolved past its due time.

pub use crate::config::{Due, Sla};
use crate::storage::WorkStore;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One sweep: every ticket of the watched categories still open or escalated past its due
/// time gets one e-mail to the overdue contact. Safe to run on several instances at once:
/// the ticket is marked in the same transaction as its e-mail is queued, and only a ticket
/// not marked yet is taken.
pub async fn sweep(
    store: &dyn WorkStore,
    sla: &Sla,
    contacts: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> crate::storage::StoreResult<u64> {
    let address = contacts
        .get(&sla.overdue_contact)
        .cloned()
        .unwrap_or_default();
    let queued = store
        .sweep_overdue(now, &sla.overdue_categories, &sla.overdue_contact, &address)
        .await?;
    if queued > 0 {
        tracing::info!(
            tickets = queued,
            contact = %sla.overdue_contact,
            "overdue tickets: the manager is e-mailed"
        );
    }
    Ok(queued)
}

/// Sweeps every `sweep_every` while serving.
pub fn spawn(
    store: Arc<dyn WorkStore>,
    sla: Sla,
    contacts: BTreeMap<String, String>,
    now: impl Fn() -> DateTime<Utc> + Send + 'static,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(sla.sweep_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = sweep(store.as_ref(), &sla, &contacts, now()).await {
                tracing::warn!(error = %e, "overdue ticket sweep failed; tried again at the next one");
            }
        }
    });
}
