//! `[console]`: the manager console's sessions, sign-in limit and recording playback.

use crate::domain::Secret;
use anyhow::bail;
use serde::Deserialize;
use std::time::Duration;

/// The console's settings. The Twilio account SID comes from `TWILIO_ACCOUNT_SID` only; with
/// `TWILIO_AUTH_TOKEN` it lets the console fetch recordings for playback.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// A session unused this long ends.
    pub idle: Duration,
    /// A session ends this long after sign-in, used or not.
    pub absolute: Duration,
    /// Failed sign-ins of one account name within `lockout` before it is refused.
    pub max_failures: u32,
    /// The window of the sign-in limit.
    pub lockout: Duration,
    /// Where recordings are fetched from: the Twilio REST API. Recording URLs elsewhere are
    /// never fetched with the account's credentials.
    pub recordings_base: String,
    /// `TWILIO_ACCOUNT_SID`.
    pub account_sid: Option<Secret>,
}

/// `[console]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConsole {
    idle_minutes: Option<u64>,
    absolute_hours: Option<u64>,
    max_failures: Option<u32>,
    lockout_minutes: Option<u64>,
    recordings_base: Option<String>,
}

impl ConsoleSettings {
    /// Checks and completes `[console]`.
    pub fn from_file(f: FileConsole) -> anyhow::Result<Self> {
        let idle = f.idle_minutes.unwrap_or(30);
        if !(1..=24 * 60).contains(&idle) {
            bail!("console.idle_minutes must be 1 to 1440");
        }
        let absolute = f.absolute_hours.unwrap_or(12);
        if !(1..=24 * 30).contains(&absolute) {
            bail!("console.absolute_hours must be 1 to 720");
        }
        let max_failures = f.max_failures.unwrap_or(5);
        if !(1..=100).contains(&max_failures) {
            bail!("console.max_failures must be 1 to 100");
        }
        let lockout = f.lockout_minutes.unwrap_or(15);
        if !(1..=24 * 60).contains(&lockout) {
            bail!("console.lockout_minutes must be 1 to 1440");
        }
        let recordings_base = f
            .recordings_base
            .unwrap_or_else(|| "https://api.twilio.com".into())
            .trim_end_matches('/')
            .to_string();
        if !(recordings_base.starts_with("https://") || recordings_base.starts_with("http://")) {
            bail!("console.recordings_base must be an http(s) URL");
        }
        Ok(Self {
            idle: Duration::from_secs(idle * 60),
            absolute: Duration::from_secs(absolute * 3600),
            max_failures,
            lockout: Duration::from_secs(lockout * 60),
            recordings_base,
            account_sid: None,
        })
    }
}
