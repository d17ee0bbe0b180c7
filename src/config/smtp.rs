//! `[smtp]`: where and how e-mails leave.

use crate::domain::Secret;
use anyhow::{anyhow, bail};
use lettre::message::Mailbox;
use serde::Deserialize;
use std::time::Duration;

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain SMTP, upgraded with STARTTLS, which is required (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: a relay on the same host or network only.
    None,
}

/// `[smtp]`: where and how e-mails leave. The password comes from `IVR_SMTP_PASSWORD` only.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// Server host name; `None`: nothing is sent and e-mails stay queued.
    pub host: Option<String>,
    /// Server port.
    pub port: u16,
    /// Connection security.
    pub tls: TlsMode,
    /// User name for authentication, if the server asks for one.
    pub user: Option<String>,
    /// Password (environment only).
    pub password: Option<Secret>,
    /// The From address, e.g. `Guest Care IVR <ivr@example.com>`.
    pub from: String,
    /// Wait before the second attempt; doubled after each failure up to `retry_max`.
    pub retry_first: Duration,
    /// Longest wait between attempts.
    pub retry_max: Duration,
    /// Attempts before a notification is marked `failed`.
    pub max_attempts: u32,
    /// How often the worker looks for notifications to send when it has none.
    pub poll: Duration,
    /// How long an e-mail that carries the call's voicemail waits for it at most.
    pub hold_for_recording: Duration,
    /// How long one exchange with the SMTP server may take.
    pub timeout: Duration,
}

/// `[smtp]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSmtp {
    host: Option<String>,
    port: Option<u16>,
    tls: Option<String>,
    user: Option<String>,
    from: Option<String>,
    retry_first_ms: Option<u64>,
    retry_max_ms: Option<u64>,
    max_attempts: Option<u32>,
    poll_ms: Option<u64>,
    hold_for_recording_seconds: Option<u64>,
    timeout_ms: Option<u64>,
}

impl TlsMode {
    fn parse(raw: &str) -> anyhow::Result<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "starttls" => Ok(Self::StartTls),
            "tls" => Ok(Self::Tls),
            "none" => Ok(Self::None),
            other => bail!("smtp.tls must be \"starttls\", \"tls\" or \"none\", not {other:?}"),
        }
    }
}

impl SmtpSettings {
    /// The settings over their defaults.
    pub fn from_file(file: FileSmtp) -> anyhow::Result<Self> {
        let tls = file
            .tls
            .as_deref()
            .map(TlsMode::parse)
            .transpose()?
            .unwrap_or(TlsMode::StartTls);
        let port = file.port.unwrap_or(match tls {
            TlsMode::Tls => 465,
            TlsMode::StartTls => 587,
            TlsMode::None => 25,
        });
        let settings = Self {
            host: file.host.filter(|h| !h.trim().is_empty()),
            port,
            tls,
            user: file.user,
            password: None,
            from: file
                .from
                .unwrap_or_else(|| "Guest Care IVR <ivr@example.com>".into()),
            retry_first: Duration::from_millis(file.retry_first_ms.unwrap_or(5_000)),
            retry_max: Duration::from_millis(file.retry_max_ms.unwrap_or(300_000)),
            max_attempts: file.max_attempts.unwrap_or(40),
            poll: Duration::from_millis(file.poll_ms.unwrap_or(1_000)),
            hold_for_recording: Duration::from_secs(file.hold_for_recording_seconds.unwrap_or(900)),
            timeout: Duration::from_millis(file.timeout_ms.unwrap_or(20_000)),
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the settings that the environment may have changed too.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.from
            .parse::<Mailbox>()
            .map_err(|e| anyhow!("smtp.from {:?} is not an address: {e}", self.from))?;
        if self.retry_first.is_zero() || self.retry_max < self.retry_first {
            bail!("smtp.retry_first_ms must be above 0 and at most smtp.retry_max_ms");
        }
        if self.max_attempts == 0 {
            bail!("smtp.max_attempts must be at least 1");
        }
        if self.poll.is_zero() {
            bail!("smtp.poll_ms must be above 0");
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(300)).contains(&self.timeout) {
            bail!("smtp.timeout_ms must be 100 to 300000");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_tls_modes_and_addresses_are_refused() {
        let bad_tls = FileSmtp {
            tls: Some("ssl".into()),
            ..FileSmtp::default()
        };
        assert!(SmtpSettings::from_file(bad_tls).is_err());
        let bad_from = FileSmtp {
            from: Some("not an address".into()),
            ..FileSmtp::default()
        };
        assert!(SmtpSettings::from_file(bad_from).is_err());
    }
}
