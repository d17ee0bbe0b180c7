//! What the manager console keeps: accounts, signed-in sessions, failed sign-ins and the
//! audit log of every change.

use super::StoreResult;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// What a console account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, user admin included.
    Manager,
    /// Reads calls and works tickets; no user admin.
    Agent,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Agent => "agent",
        }
    }

    /// Parses a stored or typed role.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "manager" => Ok(Role::Manager),
            "agent" => Ok(Role::Agent),
            other => Err(format!("role must be manager or agent, not {other:?}")),
        }
    }
}

/// A console account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Row id.
    pub id: i64,
    /// Sign-in name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// argon2id PHC string.
    pub password_hash: String,
    /// A disabled account cannot sign in.
    pub disabled: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// A signed-in session, found by its token's hash.
#[derive(Debug, Clone)]
pub struct Session {
    /// Whose.
    pub user: User,
    /// The session's form token.
    pub csrf: String,
    /// Signed in at.
    pub created_at: DateTime<Utc>,
    /// Last request at (updated at most once a minute).
    pub last_seen_at: DateTime<Utc>,
}

/// One change, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// Who (`cli` for `ivr users`).
    pub actor: String,
    /// What kind of change (`user.add`, `ticket.resolve`, `sign_in`, …).
    pub action: String,
    /// What changed.
    pub detail: String,
}

/// A change to an account (`ivr users passwd|disable`).
#[derive(Debug, Clone)]
pub enum UserChange {
    /// A new password hash.
    Password(String),
    /// Disabled (closes its sessions) or enabled again.
    Disabled(bool),
}

/// The console's accounts, sessions and audit log. Every change here writes its audit
/// entry in the same transaction.
#[async_trait]
pub trait ConsoleStore: Send + Sync + 'static {
    /// Adds an account; `false` when the name is taken.
    async fn add_user(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
        audit: &AuditEntry,
    ) -> StoreResult<bool>;
    /// Changes an account (and closes its sessions); `false` when there is none.
    async fn change_user(
        &self,
        name: &str,
        change: &UserChange,
        audit: &AuditEntry,
    ) -> StoreResult<bool>;
    /// The account of this name.
    async fn find_user(&self, name: &str) -> StoreResult<Option<User>>;
    /// Every account, by name.
    async fn list_users(&self) -> StoreResult<Vec<User>>;
    /// Opens a session for `user_id` and clears its failed sign-ins.
    async fn open_session(
        &self,
        token_hash: &str,
        user: &User,
        csrf: &str,
        audit: &AuditEntry,
    ) -> StoreResult<()>;
    /// The session of this token hash, with its account.
    async fn session(&self, token_hash: &str) -> StoreResult<Option<Session>>;
    /// Notes a request on the session.
    async fn touch_session(&self, token_hash: &str, at: DateTime<Utc>) -> StoreResult<()>;
    /// Ends a session (sign-out or expiry); the audit entry only when given.
    async fn close_session(&self, token_hash: &str, audit: Option<&AuditEntry>) -> StoreResult<()>;
    /// Notes a failed sign-in and returns how many this name has had since `since`.
    async fn login_failed(
        &self,
        name: &str,
        since: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> StoreResult<u32>;
    /// Failed sign-ins of this name since `since`.
    async fn login_failures(&self, name: &str, since: DateTime<Utc>) -> StoreResult<u32>;
    /// Writes an audit entry on its own (for changes whose own trail is elsewhere).
    async fn audit(&self, entry: &AuditEntry) -> StoreResult<()>;
    /// The newest audit entries, newest first.
    async fn list_audit(&self, limit: u32) -> StoreResult<Vec<AuditEntry>>;
}
