//! The databases' errors, classified once (SQLite's codes here, PostgreSQL's SQLSTATEs in
//! `postgres::error`): what means the database cannot take writes now
//! (the webhook's records go to the journal) and what refuses this request alone.

use crate::storage::StoreError;
use sqlx::postgres::PgDatabaseError;

/// SQLite primary result codes that mean "not now": BUSY, LOCKED, READONLY, IOERR, FULL,
/// CANTOPEN.
fn unavailable_code(extended: i32) -> bool {
    matches!(extended & 0xff, 5 | 6 | 8 | 10 | 13 | 14)
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if unavailable_code(f.extended_code) => {
                StoreError::Unavailable(e.to_string())
            }
            rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound(e.to_string()),
            _ => StoreError::Rejected(e.to_string()),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let unavailable = match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(d) => match d.try_downcast_ref::<PgDatabaseError>() {
                Some(pg) => crate::storage::postgres::unavailable_state(pg.code()),
                None => d
                    .code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .is_some_and(unavailable_code),
            },
            sqlx::Error::RowNotFound => return StoreError::NotFound(e.to_string()),
            _ => false,
        };
        if unavailable {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Rejected(e.to_string())
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Rejected(format!("migration failed: {e}"))
    }
}

/// The database files were damaged, deleted or replaced while in use (see `guard`):
/// nothing touches them until the server restarts.
pub(super) fn fenced(reason: &str) -> StoreError {
    StoreError::Unavailable(format!("database fenced: {reason}"))
}

/// The database file could not be opened apart from SQLite (to sync it, or to watch it).
pub(super) fn db_file(e: std::io::Error) -> StoreError {
    StoreError::Rejected(format!("the database file: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_full_and_read_only_are_unavailable_and_a_constraint_is_refused() {
        let failure = |code: rusqlite::ffi::ErrorCode, extended: i32| {
            StoreError::from(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error {
                    code,
                    extended_code: extended,
                },
                None,
            ))
        };
        assert!(failure(rusqlite::ffi::ErrorCode::DatabaseBusy, 5).is_unavailable());
        assert!(failure(rusqlite::ffi::ErrorCode::DiskFull, 13).is_unavailable());
        assert!(failure(rusqlite::ffi::ErrorCode::ReadOnly, 8 | (1 << 8)).is_unavailable());
        assert!(!failure(rusqlite::ffi::ErrorCode::ConstraintViolation, 19).is_unavailable());
        assert!(matches!(
            StoreError::from(rusqlite::Error::QueryReturnedNoRows),
            StoreError::NotFound(_)
        ));
        assert!(StoreError::from(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(matches!(
            StoreError::from(sqlx::Error::RowNotFound),
            StoreError::NotFound(_)
        ));
    }
}
