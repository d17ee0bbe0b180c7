//! The manager queries' plans on a real SQLite file. Without `ANALYZE` statistics SQLite
//! plans a query the same way on an empty database as on a million calls, so a plan that
//! goes wrong here (a table scan, or every ticket of a category walked per call) is the
//! plan the API would run on a full one: a regression measured in seconds, not milliseconds.

use chrono::{TimeZone, Utc};
use ivr::config::SqliteSync;
use ivr::storage::{CallQuery, SqliteStore, Store, TicketQuery};

async fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ivr.db").display());
    let store = SqliteStore::connect(&url, SqliteSync::Normal)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    (dir, store)
}

/// Fails on a step that reads a whole table without an index.
fn assert_indexed(what: &str, plan: &[String]) {
    for step in plan {
        let scan = step.starts_with("SCAN") && !step.contains("INDEX");
        assert!(!scan, "{what}: table scan in the plan {plan:?}");
    }
}

#[tokio::test]
async fn every_manager_query_uses_an_index() {
    let (_dir, store) = store().await;
    let since = Utc.with_ymd_and_hms(2026, 5, 21, 0, 0, 0).unwrap();
    let until = Utc.with_ymd_and_hms(2026, 5, 28, 0, 0, 0).unwrap();
    let page = |q: CallQuery| CallQuery { limit: 50, ..q };
    let calls = [
        ("first page", page(CallQuery::default())),
        (
            "deep in the keyset",
            page(CallQuery {
                after: Some((1_779_750_701_813, "CA2b32".into())),
                ..Default::default()
            }),
        ),
        (
            "by line",
            page(CallQuery {
                line: Some("store".into()),
                ..Default::default()
            }),
        ),
        (
            "one week",
            page(CallQuery {
                since: Some(since),
                until: Some(until),
                ..Default::default()
            }),
        ),
        (
            "by category",
            page(CallQuery {
                category: Some("OOM".into()),
                ..Default::default()
            }),
        ),
        (
            "line, week and category",
            page(CallQuery {
                line: Some("store".into()),
                since: Some(since),
                until: Some(until),
                category: Some("Shopping Dollars".into()),
                ..Default::default()
            }),
        ),
    ];
    for (what, q) in &calls {
        let plan = store.explain_calls(q).await.unwrap();
        assert_indexed(what, &plan);
        // Newest first straight from an index, not every matching call sorted: only the
        // category's tickets of a bounded range (`calls_query`) name a few calls, which are
        // then sorted.
        if !(q.category.is_some() && q.since.is_some() && q.until.is_some()) {
            let plan = plan.join(" | ");
            assert!(!plan.contains("TEMP B-TREE"), "{what}: {plan}");
        }
    }
    let tickets = [
        (
            "open Initial tickets",
            TicketQuery {
                status: Some("open".into()),
                category: Some("Initial".into()),
                limit: 50,
                ..Default::default()
            },
        ),
        (
            "overdue tickets",
            TicketQuery {
                overdue_at: Some(until),
                limit: 50,
                ..Default::default()
            },
        ),
        (
            "a partner's ticket number",
            TicketQuery {
                external_ref: Some("HSP-1234".into()),
                limit: 50,
                ..Default::default()
            },
        ),
        (
            "the console's \"mine\" tab",
            TicketQuery {
                assignee: Some("agent.one".into()),
                unresolved: true,
                limit: 50,
                ..Default::default()
            },
        ),
    ];
    for (what, q) in &tickets {
        assert_indexed(what, &store.explain_tickets(q).await.unwrap());
    }
    // The partial indexes of migration 0007 (only tickets with a due time, or with a
    // partner's number) still serve the queries that compare those columns.
    let overdue = store
        .explain_tickets(&tickets[1].1)
        .await
        .unwrap()
        .join(" | ");
    assert!(
        overdue.contains("tickets_by_due (status=? AND due_at<?)"),
        "{overdue}"
    );
    let partner = store
        .explain_tickets(&tickets[2].1)
        .await
        .unwrap()
        .join(" | ");
    assert!(
        partner.contains("tickets_by_external_ref (external_ref=?)"),
        "{partner}"
    );
    // Migration 0010's partial index (assigned tickets only) serves the "mine" tab.
    let mine = store
        .explain_tickets(&tickets[3].1)
        .await
        .unwrap()
        .join(" | ");
    assert!(mine.contains("tickets_by_assignee (assignee=?)"), "{mine}");
}

/// One column of what a statement returns, on a read-only connection to the file.
async fn strings_of(
    dir: &tempfile::TempDir,
    sql: &str,
    binds: &[&str],
    column: &str,
) -> Vec<String> {
    use sqlx::{ConnectOptions, Row};
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("ivr.db"))
        .read_only(true)
        .connect()
        .await
        .unwrap();
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    q.fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(column))
        .collect()
}

/// SQLite's plan for one statement.
async fn plan_of(dir: &tempfile::TempDir, sql: &str, binds: &[&str]) -> Vec<String> {
    strings_of(dir, &format!("EXPLAIN QUERY PLAN {sql}"), binds, "detail").await
}

/// Fails unless the plan reads through indexes only and has this step.
fn assert_plan_has(what: &str, plan: &[String], step: &str) {
    assert_indexed(what, plan);
    let joined = plan.join(" | ");
    assert!(joined.contains(step), "{what}: {joined}");
}

#[tokio::test]
async fn the_write_paths_ticket_lookups_use_the_tickets_key_and_the_partial_index() {
    let (dir, _store) = store().await;
    assert_plan_has(
        "a call's newest ticket",
        &plan_of(
            &dir,
            ivr::storage::sqlite::queries::CALL_LATEST_TICKET,
            &["CA01"],
        )
        .await,
        "INDEX sqlite_autoindex_tickets_1 (call_sid=?)",
    );
    assert_plan_has(
        "a partner's open ticket",
        &plan_of(
            &dir,
            ivr::storage::sqlite::queries::EXTERNAL_TICKET,
            &["HSP-1234", "OOM"],
        )
        .await,
        "tickets_by_external_ref (external_ref=? AND category=?)",
    );
}

/// `.cargo/config.toml` builds the bundled SQLite without the shared page cache and its
/// global mutex, and without allocation statistics (README, Performance).
#[tokio::test]
async fn the_bundled_sqlite_is_built_with_the_repositorys_options() {
    let (dir, _store) = store().await;
    let options = strings_of(&dir, "PRAGMA compile_options", &[], "compile_options").await;
    assert!(
        options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
        "{options:?}"
    );
    assert!(
        !options
            .iter()
            .any(|o| o.starts_with("ENABLE_MEMORY_MANAGEMENT")),
        "{options:?}"
    );
}

#[tokio::test]
async fn a_category_is_probed_per_call_or_read_from_the_tickets_of_the_range() {
    let (_dir, store) = store().await;
    // No range: each call of the page is probed by its id, never all the category's tickets.
    let plan = store
        .explain_calls(&CallQuery {
            category: Some("OOM".into()),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap()
        .join(" | ");
    assert!(
        plan.contains("SEARCH t USING INDEX sqlite_autoindex_tickets_1 (call_sid=?)"),
        "{plan}"
    );
    assert!(!plan.contains("tickets_by_category_time"), "{plan}");
    // A bounded range: the category's tickets of that range name the calls.
    let plan = store
        .explain_calls(&CallQuery {
            category: Some("Shopping Dollars".into()),
            line: Some("store".into()),
            since: Some(Utc.with_ymd_and_hms(2026, 5, 21, 0, 0, 0).unwrap()),
            until: Some(Utc.with_ymd_and_hms(2026, 5, 28, 0, 0, 0).unwrap()),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap()
        .join(" | ");
    assert!(
        plan.contains("tickets_by_category_time (category=? AND created_at>? AND created_at<?)"),
        "{plan}"
    );
}

#[tokio::test]
async fn a_calls_steps_are_read_by_its_row_number_in_order() {
    let (dir, _store) = store().await;
    let plan = plan_of(
        &dir,
        ivr::storage::sqlite::queries::CALL_STEPS,
        &["CA00000000000000000000000000000001"],
    )
    .await;
    assert_indexed("a call's steps", &plan);
    let plan = plan.join(" | ");
    assert!(
        plan.contains("steps USING INDEX sqlite_autoindex_steps_1 (call_id=?)"),
        "{plan}"
    );
    assert!(
        plan.contains("calls USING COVERING INDEX sqlite_autoindex_calls_1 (call_sid=?)"),
        "{plan}"
    );
    // Then sorted by time and id: a call's few rows, not the table's.
}
