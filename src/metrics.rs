//! Operational metrics in the Prometheus text format, served at `/metrics`.
//!
//! One registry per server (no globals), so tests that start several servers in one process
//! each read their own figures.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The server's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Webhooks answered, by endpoint and result (`ok`, `replay`, `error_route`,
    /// `forbidden`, `too_large`).
    pub webhooks: IntCounterVec,
    /// Steps recorded, by flow node.
    pub nodes: IntCounterVec,
    /// Internal failures that took the error route, by kind.
    pub errors: IntCounterVec,
    /// Time to answer a call webhook, by endpoint.
    pub latency: HistogramVec,
    /// Tickets opened, by category.
    pub tickets: IntCounterVec,
    /// 1 while the database does not take writes (records go to the journal).
    pub degraded: IntGauge,
    /// Entries in the journal waiting to be replayed.
    pub journal_depth: IntGauge,
    /// Entries written to the journal.
    pub journal_appended: IntCounter,
    /// Entries replayed from the journal into the database.
    pub journal_replayed: IntCounter,
    /// Call webhooks being answered right now.
    pub in_flight: IntGauge,
    /// Requests refused before any handler, by reason (`too_large`, `body_timeout`) and
    /// connections refused (`connection_limit`).
    pub refused: IntCounterVec,
    /// Webhooks whose records neither the database nor the journal took (a full disk):
    /// the caller was answered with the safe route, the records are lost.
    pub records_lost: IntCounter,
    /// Open client connections.
    pub connections: IntGauge,
    /// Log lines dropped because stdout did not keep up ([`crate::logging`]); brought up
    /// to the process-wide count at each scrape, one scrape at a time.
    log_dropped: IntCounter,
    log_dropped_sync: std::sync::Arc<std::sync::Mutex<()>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("ivr".into()), None)?;
        let webhooks = IntCounterVec::new(
            Opts::new(
                "webhooks_total",
                "Webhooks answered, by endpoint and result",
            ),
            &["endpoint", "result"],
        )?;
        let nodes = IntCounterVec::new(
            Opts::new("node_steps_total", "Call steps recorded, by flow node"),
            &["node"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "errors_total",
                "Internal failures answered with the safe route, by kind",
            ),
            &["kind"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "webhook_duration_seconds",
                "Time to answer a call webhook, records committed",
            )
            .buckets(vec![
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
            ]),
            &["endpoint"],
        )?;
        let tickets = IntCounterVec::new(
            Opts::new("tickets_opened_total", "Tickets opened, by category"),
            &["category"],
        )?;
        let degraded = IntGauge::new(
            "database_degraded",
            "1 while the database does not take writes and records go to the journal",
        )?;
        let journal_depth = IntGauge::new(
            "journal_depth",
            "Records in the local journal waiting to be replayed into the database",
        )?;
        let journal_appended = IntCounter::new(
            "journal_appended_total",
            "Records written to the local journal while the database was unavailable",
        )?;
        let journal_replayed = IntCounter::new(
            "journal_replayed_total",
            "Records replayed from the local journal into the database",
        )?;
        let in_flight = IntGauge::new("webhooks_in_flight", "Call webhooks being answered now")?;
        let refused = IntCounterVec::new(
            Opts::new(
                "http_refused_total",
                "Requests or connections refused before any handler, by reason",
            ),
            &["reason"],
        )?;
        let records_lost = IntCounter::new(
            "records_lost_total",
            "Webhooks whose records neither the database nor the journal took",
        )?;
        let connections = IntGauge::new("connections_open", "Open client connections")?;
        let log_dropped = IntCounter::new(
            "log_lines_dropped_total",
            "Log lines dropped because stdout did not keep up",
        )?;
        registry.register(Box::new(webhooks.clone()))?;
        registry.register(Box::new(nodes.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(tickets.clone()))?;
        registry.register(Box::new(degraded.clone()))?;
        registry.register(Box::new(journal_depth.clone()))?;
        registry.register(Box::new(journal_appended.clone()))?;
        registry.register(Box::new(journal_replayed.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(log_dropped.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(records_lost.clone()))?;
        registry.register(Box::new(connections.clone()))?;
        Ok(Self {
            registry,
            webhooks,
            nodes,
            errors,
            latency,
            tickets,
            degraded,
            journal_depth,
            journal_appended,
            journal_replayed,
            in_flight,
            refused,
            records_lost,
            connections,
            log_dropped,
            log_dropped_sync: Default::default(),
        })
    }

    /// Adds metrics kept elsewhere (the storage's) to the registry.
    pub fn register(&self, c: Box<dyn prometheus::core::Collector>) -> prometheus::Result<()> {
        self.registry.register(c)
    }

    /// Counts a webhook answer.
    pub fn webhook(&self, endpoint: &str, result: &str) {
        self.webhooks.with_label_values(&[endpoint, result]).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        {
            let _one_scrape = self
                .log_dropped_sync
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let dropped = crate::logging::dropped_lines();
            self.log_dropped
                .inc_by(dropped.saturating_sub(self.log_dropped.get()));
        }
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics could not be encoded");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
