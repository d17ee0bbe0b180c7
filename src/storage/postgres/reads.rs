//! PostgreSQL: the manager's reads of calls and tickets, and their plans (`EXPLAIN`).

use super::rows::{
    call_view, notification_view, ticket_view, CALL_COLUMNS, NOTIFICATION_COLUMNS, TICKET_COLUMNS,
};
use super::PgStore;
use crate::storage::*;
use sqlx::{Postgres, QueryBuilder, Row};

/// The query of a page of calls; `prefix` is empty, or `EXPLAIN `.
pub(super) fn calls_query(prefix: &str, q: &CallQuery) -> QueryBuilder<'static, Postgres> {
    let mut b: QueryBuilder<'static, Postgres> = QueryBuilder::new(format!(
        "{prefix}SELECT {CALL_COLUMNS} FROM calls WHERE TRUE"
    ));
    if let Some(since) = q.since {
        b.push(" AND started_at >= ").push_bind(to_millis(since));
    }
    if let Some(until) = q.until {
        b.push(" AND started_at < ").push_bind(to_millis(until));
    }
    if let Some(line) = &q.line {
        b.push(" AND line = ").push_bind(line.clone());
    }
    if let Some(store) = &q.store {
        b.push(" AND store_name = ").push_bind(store.clone());
    }
    if let Some(caller) = &q.caller {
        // On `calls_by_caller_last4`, the whole number checked on the rows it finds.
        b.push(" AND right(from_number, 4) = ")
            .push_bind(caller.last4.clone());
        if let Some(full) = &caller.full {
            b.push(" AND from_number = ").push_bind(full.clone());
        }
    }
    if let Some(outcome) = &q.outcome {
        match outcome.strip_suffix('*') {
            Some(prefix) => {
                b.push(" AND starts_with(outcome, ")
                    .push_bind(prefix.to_string())
                    .push(")");
            }
            None => {
                b.push(" AND outcome = ").push_bind(outcome.clone());
            }
        }
    }
    match (&q.category, q.since, q.until) {
        // A bounded range: the tickets of the category opened in it name the calls.
        (Some(category), Some(since), Some(until)) => {
            let (early, late) = TICKET_AFTER_START;
            b.push(" AND call_sid IN (SELECT t.call_sid FROM tickets t WHERE t.category = ")
                .push_bind(category.clone())
                .push(" AND t.created_at >= ")
                .push_bind(to_millis(since) - early.num_milliseconds())
                .push(" AND t.created_at < ")
                .push_bind(to_millis(until) + late.num_milliseconds())
                .push(")");
        }
        (Some(category), _, _) => {
            b.push(" AND EXISTS (SELECT 1 FROM tickets t WHERE t.call_sid = calls.call_sid AND t.category = ")
                .push_bind(category.clone())
                .push(")");
        }
        (None, _, _) => {}
    }
    if let Some((started, sid)) = &q.after {
        b.push(" AND (started_at, call_sid) < (")
            .push_bind(*started)
            .push(", ")
            .push_bind(sid.clone())
            .push(")");
    }
    b.push(" ORDER BY started_at DESC, call_sid DESC LIMIT ")
        .push_bind(i64::from(q.limit));
    b
}

/// The query of a page of tickets; `prefix` is empty, or `EXPLAIN `.
pub(super) fn tickets_query(prefix: &str, q: &TicketQuery) -> QueryBuilder<'static, Postgres> {
    let mut b: QueryBuilder<'static, Postgres> = QueryBuilder::new(format!(
        "{prefix}SELECT {TICKET_COLUMNS} FROM tickets WHERE TRUE"
    ));
    if let Some(status) = &q.status {
        b.push(" AND status = ").push_bind(status.clone());
    }
    if let Some(category) = &q.category {
        b.push(" AND category = ").push_bind(category.clone());
    }
    if let Some(before) = q.before_id {
        b.push(" AND id < ").push_bind(before);
    }
    if let Some(external_ref) = &q.external_ref {
        b.push(" AND external_ref = ")
            .push_bind(external_ref.clone());
    }
    if let Some(caller) = &q.caller {
        b.push(" AND right(caller_number, 4) = ")
            .push_bind(caller.last4.clone());
        if let Some(full) = &caller.full {
            b.push(" AND caller_number = ").push_bind(full.clone());
        }
    }
    if let Some(assignee) = &q.assignee {
        b.push(" AND assignee = ").push_bind(assignee.clone());
    }
    if q.unresolved {
        b.push(" AND status IN ('open', 'escalated')");
    }
    if let Some(at) = q.overdue_at {
        b.push(" AND status IN ('open', 'escalated') AND due_at <= ")
            .push_bind(to_millis(at));
    }
    b.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(q.limit));
    b
}

impl PgStore {
    /// PostgreSQL's plan for a page of calls (`EXPLAIN`), one line per row.
    pub async fn explain_calls(&self, q: &CallQuery) -> StoreResult<Vec<String>> {
        self.explain_built(calls_query("EXPLAIN ", q)).await
    }

    /// PostgreSQL's plan for a page of tickets.
    pub async fn explain_tickets(&self, q: &TicketQuery) -> StoreResult<Vec<String>> {
        self.explain_built(tickets_query("EXPLAIN ", q)).await
    }

    async fn explain_built(
        &self,
        mut b: QueryBuilder<'static, Postgres>,
    ) -> StoreResult<Vec<String>> {
        let rows = b.build().fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
            .collect()
    }

    /// A call with its steps, tickets and e-mails (`Store::get_call`).
    pub(super) async fn call_detail(&self, call_sid: &str) -> StoreResult<Option<CallDetail>> {
        let Some(row) = sqlx::query(&format!(
            "SELECT id, {CALL_COLUMNS} FROM calls WHERE call_sid = $1"
        ))
        .bind(call_sid)
        .fetch_optional(self.pool())
        .await?
        else {
            return Ok(None);
        };
        let call = call_view(&row)?;
        let id: i64 = row.try_get("id")?;
        let steps = sqlx::query(
            "SELECT at, node, kind, said, digits, result, data FROM steps WHERE call_id = $1 ORDER BY at, id",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(StepView {
                at: from_millis(r.try_get("at")?),
                node: r.try_get("node")?,
                kind: r.try_get("kind")?,
                said: r.try_get("said")?,
                digits: r.try_get("digits")?,
                result: r.try_get("result")?,
                data: r
                    .try_get::<Option<String>, _>("data")?
                    .and_then(|d| serde_json::from_str(&d).ok())
                    .unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        // Tickets the call opened, then tickets of earlier calls it was linked to.
        let tickets = sqlx::query(&format!(
            "SELECT {TICKET_COLUMNS}, 'opened' AS relation, id AS sort FROM tickets WHERE call_sid = $1 \
             UNION ALL \
             SELECT {TICKET_COLUMNS}, ct.relation, id AS sort FROM tickets \
             JOIN (SELECT ticket_id, relation FROM call_tickets WHERE call_sid = $1) ct \
             ON ct.ticket_id = tickets.id \
             ORDER BY sort"
        ))
        .bind(call_sid)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| {
            let mut t = ticket_view(r)?;
            t.relation = Some(r.try_get("relation")?);
            Ok(t)
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let notifications = sqlx::query(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE call_sid = $1 ORDER BY id"
        ))
        .bind(call_sid)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(notification_view)
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some(CallDetail {
            call,
            steps,
            tickets,
            notifications,
        }))
    }
}
