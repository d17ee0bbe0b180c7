//! PostgreSQL: the console's accounts, sessions, failed sign-ins and audit log (off the
//! call path).

use crate::storage::console::{AuditEntry, ConsoleStore, Role, Session, User, UserChange};
use crate::storage::{from_millis, to_millis, PgStore, StoreError, StoreResult};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};

const USER_COLUMNS: &str = "u.id, u.name, u.role, u.password_hash, u.disabled, u.created_at";

fn user(row: &PgRow) -> Result<User, sqlx::Error> {
    let role: String = row.try_get("role")?;
    Ok(User {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: Role::parse(&role).map_err(|e| sqlx::Error::Decode(e.into()))?,
        password_hash: row.try_get("password_hash")?,
        disabled: row.try_get("disabled")?,
        created_at: from_millis(row.try_get("created_at")?),
    })
}

async fn write_audit(tx: &mut Transaction<'_, Postgres>, e: &AuditEntry) -> StoreResult<()> {
    sqlx::query("INSERT INTO audit_log (at, actor, action, detail) VALUES ($1, $2, $3, $4)")
        .bind(to_millis(e.at))
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.detail)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[async_trait]
impl ConsoleStore for PgStore {
    async fn add_user(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
        audit: &AuditEntry,
    ) -> StoreResult<bool> {
        let mut tx = self.pool().begin().await?;
        let at = to_millis(audit.at);
        let added = sqlx::query(
            "INSERT INTO users (name, role, password_hash, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(password_hash)
        .bind(at)
        .bind(at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if added {
            write_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn change_user(
        &self,
        name: &str,
        change: &UserChange,
        audit: &AuditEntry,
    ) -> StoreResult<bool> {
        let mut tx = self.pool().begin().await?;
        let at = to_millis(audit.at);
        let q = match change {
            UserChange::Password(hash) => {
                sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE name = $3")
                    .bind(hash.clone())
            }
            UserChange::Disabled(d) => {
                sqlx::query("UPDATE users SET disabled = $1, updated_at = $2 WHERE name = $3")
                    .bind(*d)
            }
        };
        let changed = q
            .bind(at)
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if changed {
            // A new password or a disabled account ends every session it had.
            sqlx::query(
                "DELETE FROM console_sessions WHERE user_id = (SELECT id FROM users WHERE name = $1)",
            )
            .bind(name)
            .execute(&mut *tx)
            .await?;
            write_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn find_user(&self, name: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(user).transpose()?)
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        let rows = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users u ORDER BY name"))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(user).collect::<Result<_, _>>()?)
    }

    async fn open_session(
        &self,
        token_hash: &str,
        user: &User,
        csrf: &str,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.pool().begin().await?;
        let at = to_millis(audit.at);
        sqlx::query(
            "INSERT INTO console_sessions (token_hash, user_id, csrf, created_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(user.id)
        .bind(csrf)
        .bind(at)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM login_failures WHERE name = $1")
            .bind(&user.name)
            .execute(&mut *tx)
            .await?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn session(&self, token_hash: &str) -> StoreResult<Option<Session>> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, s.csrf, s.created_at AS s_created, s.last_seen_at \
             FROM console_sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Session {
            user: user(&row)?,
            csrf: row.try_get("csrf")?,
            created_at: from_millis(row.try_get("s_created")?),
            last_seen_at: from_millis(row.try_get("last_seen_at")?),
        }))
    }

    async fn touch_session(&self, token_hash: &str, at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("UPDATE console_sessions SET last_seen_at = $1 WHERE token_hash = $2")
            .bind(to_millis(at))
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn close_session(&self, token_hash: &str, audit: Option<&AuditEntry>) -> StoreResult<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&mut *tx)
            .await?;
        if let Some(a) = audit {
            write_audit(&mut tx, a).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn login_failed(
        &self,
        name: &str,
        since: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> StoreResult<u32> {
        let mut tx = self.pool().begin().await?;
        // Old failures are of no use to the limit: each failure clears its name's stale
        // ones, and up to 100 of the oldest of any name, so that names tried once and never
        // again do not pile up.
        sqlx::query("DELETE FROM login_failures WHERE name = $1 AND at < $2")
            .bind(name)
            .bind(to_millis(since))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM login_failures WHERE id IN \
             (SELECT id FROM login_failures ORDER BY id LIMIT 100) AND at < $1",
        )
        .bind(to_millis(since))
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO login_failures (name, at) VALUES ($1, $2)")
            .bind(name)
            .bind(to_millis(audit.at))
            .execute(&mut *tx)
            .await?;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM login_failures WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await?;
        u32::try_from(n).map_err(|e| StoreError::Rejected(e.to_string()))
    }

    async fn login_failures(&self, name: &str, since: DateTime<Utc>) -> StoreResult<u32> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM login_failures WHERE name = $1 AND at >= $2")
                .bind(name)
                .bind(to_millis(since))
                .fetch_one(self.pool())
                .await?;
        u32::try_from(n).map_err(|e| StoreError::Rejected(e.to_string()))
    }

    async fn audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        let mut tx = self.pool().begin().await?;
        write_audit(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_audit(&self, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT at, actor, action, detail FROM audit_log ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: from_millis(r.try_get("at")?),
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}
