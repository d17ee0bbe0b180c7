//! What every request handler shares: settings, flows, stores, metrics and the clock.

use crate::config::Config;
use crate::flow::FlowSet;
use crate::storage::{self, Store};
use crate::twiml::Style;
use chrono::{DateTime, Utc};
use std::ops::Deref;
use std::sync::{Arc, Mutex};

/// The time source: the system clock, or a clock a test sets (stopped, or running on
/// from the time it was set).
#[derive(Debug, Clone, Default)]
pub struct Clock(Option<Arc<Mutex<SetClock>>>);

#[derive(Debug, Clone, Copy)]
struct SetClock {
    at: DateTime<Utc>,
    running_since: Option<std::time::Instant>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(None)
    }

    /// A clock stopped at `at` until `set` moves it.
    pub fn fixed(at: DateTime<Utc>) -> Self {
        Self(Some(Arc::new(Mutex::new(SetClock {
            at,
            running_since: None,
        }))))
    }

    /// A clock that reads `at` now and runs on from there, as the system clock does.
    pub fn running_from(at: DateTime<Utc>) -> Self {
        Self(Some(Arc::new(Mutex::new(SetClock {
            at,
            running_since: Some(std::time::Instant::now()),
        }))))
    }

    /// Moves a set clock (a running one runs on from `at`); no effect on the system clock.
    pub fn set(&self, at: DateTime<Utc>) {
        if let Some(m) = &self.0 {
            if let Ok(mut t) = m.lock() {
                t.at = at;
                if t.running_since.is_some() {
                    t.running_since = Some(std::time::Instant::now());
                }
            }
        }
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        let Some(m) = &self.0 else {
            return Utc::now();
        };
        match m.lock().map(|t| *t) {
            Ok(SetClock {
                at,
                running_since: Some(since),
            }) => at + chrono::Duration::from_std(since.elapsed()).unwrap_or_default(),
            Ok(SetClock { at, .. }) => at,
            Err(_) => Utc::now(),
        }
    }
}

/// Everything a request needs.
pub struct App {
    /// Settings.
    pub config: Config,
    /// Validated flows.
    pub flows: FlowSet,
    /// Records, as webhooks write them: the database with the journal in front.
    pub store: Arc<dyn Store>,
    /// The database itself.
    pub db: Arc<dyn Store>,
    /// Tickets being worked, the outbox and the overdue sweep, in the same database.
    pub work: Arc<dyn storage::WorkStore>,
    /// The console's accounts, sessions and audit log, in the same database.
    pub console: Arc<dyn storage::console::ConsoleStore>,
    /// The console's insights (hourly roll-ups), in the same database.
    pub insights: Arc<dyn storage::insights::InsightsStore>,
    /// Records waiting for the database.
    pub journal: Arc<storage::Journal>,
    /// Operational metrics.
    pub metrics: crate::metrics::Metrics,
    /// Time source.
    pub clock: Clock,
    /// TwiML settings.
    pub style: Style,
    /// TwiML answered when a panic escapes every other guard (the open-hours last resort).
    pub last_resort: String,
}

/// Shared application state, cheap to clone.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

impl AppState {
    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}
