//! `ivr seed`: fills a database with synthetic calls, steps, webhooks and tickets, to measure
//! the manager API at scale. Every number it writes is a 555 number; nothing in it is real.

use crate::storage::*;
use rusqlite::{params, Connection};
use std::path::Path;

/// What a seeding run wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seeded {
    /// Calls.
    pub calls: u64,
    /// Steps.
    pub steps: u64,
    /// Tickets.
    pub tickets: u64,
}

/// A small deterministic generator (SplitMix64): the same seed, the same data.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a>(&mut self, weighted: &[(&'a str, u64)]) -> &'a str {
        let total: u64 = weighted.iter().map(|(_, w)| w).sum();
        let mut r = self.below(total);
        for (v, w) in weighted {
            if r < *w {
                return v;
            }
            r -= w;
        }
        weighted.last().map_or("", |(v, _)| v)
    }
}

const OUTCOMES: &[(&str, u64)] = &[
    ("transferred:oom", 40),
    ("transferred:after_sales", 25),
    ("transferred:escalation", 5),
    ("voicemail", 20),
    ("abandoned", 10),
];

const CATEGORIES: &[(&str, u64)] = &[
    ("Initial", 50),
    ("Follow-Up", 35),
    ("OOM", 10),
    ("Shopping Dollars", 5),
];

/// Adds `calls` synthetic calls spread over the `days` before `now` to the SQLite database
/// at `path` (migrated), in transactions of 10,000 calls. Each call has 4 steps and 4 answered
/// webhooks; 40% have a ticket. Refused on a database that holds any call it did not
/// write: seeded calls mixed with real ones would spoil both.
pub fn seed_sqlite(
    path: &Path,
    calls: u64,
    days: u32,
    now: DateTime<Utc>,
    flow_version: &str,
) -> StoreResult<Seeded> {
    let mut conn = Connection::open(path)?;
    let real: i64 = conn.query_row(
        "SELECT count(*) FROM calls WHERE flow_version <> ?1",
        [flow_version],
        |r| r.get(0),
    )?;
    if real > 0 {
        return Err(StoreError::Rejected(format!(
            "{} holds calls that ivr seed did not write ({real}): it adds synthetic calls to \
             test databases only; point IVR_DATABASE_URL at a new file",
            path.display()
        )));
    }
    conn.pragma_update(None, "journal_mode", "wal")?;
    conn.pragma_update(None, "synchronous", "normal")?;
    let mut mix = Mix(0x1C0F_FEE0
        ^ conn.query_row("SELECT count(*) FROM calls", [], |r| r.get::<_, i64>(0))? as u64);
    let end = to_millis(now);
    let span = i64::from(days.max(1)) * 86_400_000;
    let mut done = Seeded::default();
    while done.calls < calls {
        let tx = conn.transaction()?;
        for _ in 0..(calls - done.calls).min(10_000) {
            let sid = format!("CA{:016x}{:016x}", mix.next(), mix.next());
            let started = end - (mix.below(span as u64) as i64);
            let store = mix.below(10) < 3;
            let (line, to, flow, store_name) = if store {
                ("store", "+12045550100", "store", Some("Store 1"))
            } else {
                ("guest_care", "+18007373233", "guest_care", None)
            };
            let from = format!("+1204555{:04}", mix.below(10_000));
            let outcome = mix.pick(OUTCOMES);
            let status = if outcome == "abandoned" && mix.below(2) == 0 {
                "no-answer"
            } else {
                "completed"
            };
            let duration = 20 + mix.below(600) as i64;
            tx.prepare_cached(
                "INSERT INTO calls (call_sid, line, store_name, from_number, to_number, flow, flow_version, \
                 started_at, ended_at, status, duration_seconds, outcome) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                sid,
                line,
                store_name,
                from,
                to,
                flow,
                flow_version,
                started,
                started + duration * 1000,
                status,
                duration,
                outcome
            ])?;
            let call = tx.last_insert_rowid();
            for (i, (node, kind, digits, result)) in [
                ("menu", "menu", None, "offered"),
                ("menu", "menu", Some("1"), "pressed 1"),
                ("orders", "menu", Some("4"), "pressed 4"),
                ("transfer", "transfer", None, "transferring"),
            ]
            .iter()
            .enumerate()
            {
                let key = format!("{i}:seed");
                let at = started + i as i64 * 5_000;
                tx.prepare_cached(
                    "INSERT INTO webhooks (call_id, request_key, at, answer) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![call, key, at, "<Response/>"])?;
                tx.prepare_cached(
                    "INSERT INTO steps (call_id, request_key, idx, at, node, kind, said, digits, result) \
                     VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    call,
                    key,
                    at,
                    format!("{flow}.{node}"),
                    kind,
                    "For orders, press 1.",
                    digits,
                    result
                ])?;
                done.steps += 1;
            }
            if mix.below(10) < 4 {
                let category = mix.pick(CATEGORIES);
                let open = mix.below(10) < 2;
                tx.prepare_cached(
                    "INSERT INTO tickets (call_sid, request_key, idx, category, reason, caller_number, \
                     created_at, status, due_at) VALUES (?1, '3:seed', 1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    sid,
                    category,
                    "Synthetic ticket for load measurement",
                    from,
                    started + 15_000,
                    if open { "open" } else { "resolved" },
                    started + 2 * 86_400_000
                ])?;
                done.tickets += 1;
            }
            done.calls += 1;
        }
        tx.commit()?;
    }
    // The console's insights read hourly roll-ups: made here for every seeded hour, as the
    // server's job would (the calls are over).
    let hour = 3_600_000;
    let (from, to) = (end - span - hour, end - end.rem_euclid(hour) + hour);
    let tx = conn.transaction()?;
    for statement in super::insights::roll_up_sql()
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        tx.execute(statement, params![from - from.rem_euclid(hour), to])?;
    }
    tx.commit()?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(done)
}
