//! PostgreSQL: retention, callers forgotten in batches.

use super::PgStore;
use crate::storage::*;
use sqlx::{PgConnection, Row};

impl PgStore {
    /// Retention (`Store::forget_callers_before`).
    pub(super) async fn forget_before(
        &self,
        cutoff: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<Forgotten> {
        let mut done = Forgotten::default();
        loop {
            // In batches, each its own transaction. Instances running retention at once
            // take disjoint batches: rows another holds are skipped, not waited for.
            let mut tx = self.pool().begin().await?;
            let calls = sqlx::query(
                "SELECT id, call_sid, from_number, recording_url, last_error FROM calls \
                 WHERE started_at < $1 AND anonymised_at IS NULL LIMIT 200 FOR UPDATE SKIP LOCKED",
            )
            .bind(to_millis(cutoff))
            .fetch_all(&mut *tx)
            .await?;
            if calls.is_empty() {
                return Ok(done);
            }
            for call in &calls {
                Self::forget_call(&mut tx, call, to_millis(at), &mut done).await?;
            }
            tx.commit().await?;
        }
    }

    /// Retention of one call, in the batch's transaction.
    async fn forget_call(
        tx: &mut PgConnection,
        call: &sqlx::postgres::PgRow,
        at: i64,
        done: &mut Forgotten,
    ) -> Result<(), sqlx::Error> {
        use crate::domain::{forget_text, mask_phone};
        let id: i64 = call.try_get("id")?;
        let sid: String = call.try_get("call_sid")?;
        let masked = mask_phone(&call.try_get::<String, _>("from_number")?);
        if call
            .try_get::<Option<String>, _>("recording_url")?
            .is_some()
        {
            done.recordings += 1;
        }
        let last_error = call
            .try_get::<Option<String>, _>("last_error")?
            .map(|e| forget_text(&e));
        sqlx::query(
            "UPDATE calls SET from_number = $1, recording_url = NULL, last_error = $2, \
             anonymised_at = $3 WHERE id = $4",
        )
        .bind(&masked)
        .bind(last_error)
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        done.recordings += sqlx::query(
            "UPDATE tickets SET recording_url = NULL WHERE call_sid = $1 AND recording_url IS NOT NULL",
        )
        .bind(&sid)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("UPDATE tickets SET caller_number = $1 WHERE call_sid = $2")
            .bind(&masked)
            .bind(&sid)
            .execute(&mut *tx)
            .await?;
        let steps = sqlx::query("SELECT id, said, digits, data FROM steps WHERE call_id = $1")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
        for step in &steps {
            let digits: Option<String> = step.try_get("digits")?;
            sqlx::query("UPDATE steps SET said = $1, digits = $2, data = $3 WHERE id = $4")
                .bind(forget_text(&step.try_get::<String, _>("said")?))
                .bind(digits.filter(|d| d.len() < 7))
                .bind(
                    step.try_get::<Option<String>, _>("data")?
                        .map(|d| forget_data(&d)),
                )
                .bind(step.try_get::<i64, _>("id")?)
                .execute(&mut *tx)
                .await?;
        }
        let notes = sqlx::query("SELECT id, subject, body FROM notifications WHERE call_sid = $1")
            .bind(&sid)
            .fetch_all(&mut *tx)
            .await?;
        for note in &notes {
            sqlx::query("UPDATE notifications SET subject = $1, body = $2 WHERE id = $3")
                .bind(forget_text(&note.try_get::<String, _>("subject")?))
                .bind(forget_text(&note.try_get::<String, _>("body")?))
                .bind(note.try_get::<i64, _>("id")?)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM webhooks WHERE call_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        done.calls += 1;
        Ok(())
    }
}
