//! Console accounts: argon2id password hashes, and adding, changing and disabling accounts
//! (`ivr users`, the users page), each change with its audit entry.

use crate::storage::console::{AuditEntry, ConsoleStore, Role, UserChange};
use crate::storage::StoreError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use chrono::{DateTime, Utc};

/// The shortest password accepted.
pub const MIN_PASSWORD: usize = 12;

/// Why an account change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The request itself is wrong (name, password, role, a name taken or unknown).
    #[error("{0}")]
    Invalid(String),
    /// The database did not take it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `n` random bytes from the operating system, URL-safe base64 without padding.
pub fn random_token(n: usize) -> Result<String, getrandom::Error> {
    let mut bytes = vec![0u8; n];
    getrandom::getrandom(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// An argon2id hash (PHC string) of the password, with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt)
        .map_err(|e| AccountError::Invalid(format!("no random salt: {e}")))?;
    let salt =
        SaltString::encode_b64(&salt).map_err(|e| AccountError::Invalid(format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Invalid(format!("hashing: {e}")))
}

/// Whether the password matches the stored hash.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash no password matches, verified when the account does not exist so that a wrong
/// name takes as long as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        random_token(24)
            .ok()
            .and_then(|p| hash_password(&p).ok())
            .unwrap_or_default()
    })
}

pub(crate) fn check_name(name: &str) -> Result<(), AccountError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AccountError::Invalid(format!(
            "account names are 1 to 64 of a-z, 0-9 and . _ @ -, not {name:?}"
        )))
    }
}

fn check_password(password: &str) -> Result<(), AccountError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(AccountError::Invalid(format!(
            "passwords must have at least {MIN_PASSWORD} characters"
        )));
    }
    if password.len() > 1024 {
        return Err(AccountError::Invalid(
            "passwords may have at most 1024 bytes".into(),
        ));
    }
    Ok(())
}

fn entry(actor: &str, action: &str, detail: String, at: DateTime<Utc>) -> AuditEntry {
    AuditEntry {
        at,
        actor: actor.to_string(),
        action: action.to_string(),
        detail,
    }
}

/// Adds an account.
pub async fn add_user(
    store: &dyn ConsoleStore,
    name: &str,
    role: Role,
    password: &str,
    actor: &str,
    at: DateTime<Utc>,
) -> Result<(), AccountError> {
    check_name(name)?;
    check_password(password)?;
    let hash = hash_password(password)?;
    let audit = entry(actor, "user.add", format!("{name} ({})", role.as_str()), at);
    if store.add_user(name, role, &hash, &audit).await? {
        Ok(())
    } else {
        Err(AccountError::Invalid(format!(
            "there is already an account {name:?}"
        )))
    }
}

/// Sets an account's password; its sessions end.
pub async fn set_password(
    store: &dyn ConsoleStore,
    name: &str,
    password: &str,
    actor: &str,
    at: DateTime<Utc>,
) -> Result<(), AccountError> {
    check_password(password)?;
    let hash = hash_password(password)?;
    let audit = entry(actor, "user.passwd", name.to_string(), at);
    changed(
        store
            .change_user(name, &UserChange::Password(hash), &audit)
            .await?,
        name,
    )
}

/// Disables an account (its sessions end) or enables it again.
pub async fn set_disabled(
    store: &dyn ConsoleStore,
    name: &str,
    disabled: bool,
    actor: &str,
    at: DateTime<Utc>,
) -> Result<(), AccountError> {
    let action = if disabled {
        "user.disable"
    } else {
        "user.enable"
    };
    let audit = entry(actor, action, name.to_string(), at);
    changed(
        store
            .change_user(name, &UserChange::Disabled(disabled), &audit)
            .await?,
        name,
    )
}

fn changed(done: bool, name: &str) -> Result<(), AccountError> {
    if done {
        Ok(())
    } else {
        Err(AccountError::Invalid(format!(
            "there is no account {name:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash_password("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse battery!"));
        assert!(!verify_password("not a hash", "x"));
        assert_ne!(h, hash_password("correct horse battery").expect("hash"));
    }

    #[test]
    fn names_and_passwords_are_checked() {
        assert!(check_name("dana.m@store-7").is_ok());
        assert!(check_name("Dana").is_err());
        assert!(check_name("").is_err());
        assert!(check_password("short").is_err());
        assert!(check_password("twelve chars").is_ok());
    }
}
