//! E-mail delivery: the outbox worker sends every queued notification over SMTP.
//!
//! A notification is committed with the call step that queued it; the worker then claims
//! it for a short lease (so that two instances never send it at the same time), hands it to
//! the SMTP server, and marks it `sent` once the server has accepted it. A failure is kept
//! with the attempt count and tried again with backoff; a permanent refusal (5xx) or the
//! last attempt marks it `failed`. A crash between the server's acceptance and the mark
//! sends it again once the lease runs out: at least once, a duplicate only after a crash,
//! recognisable by its Message-ID, which comes from the notification's id.

pub use crate::config::{SmtpSettings, TlsMode};
use crate::storage::{OutboxMessage, WorkStore};
use anyhow::bail;
use chrono::{DateTime, Utc};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::sync::Arc;
use std::time::Duration;

impl SmtpSettings {
    /// The wait after the `attempt`-th failure (from 1): `retry_first`, doubled each time,
    /// at most `retry_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doubled = self
            .retry_first
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        doubled.min(self.retry_max)
    }

    /// How long a notification is retried before it is marked `failed`: the sum of the
    /// waits between its attempts.
    pub fn retry_span(&self) -> Duration {
        (1..self.max_attempts).map(|a| self.backoff(a)).sum()
    }
}

/// The domain of the From address, for Message-IDs.
fn from_domain(from: &str) -> String {
    from.parse::<Mailbox>()
        .map(|m| m.email.domain().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// The Message-ID of a notification: the same for every attempt and every resend.
pub fn message_id(id: i64, domain: &str) -> String {
    format!("<notification-{id}@{domain}>")
}

/// Sends e-mails over SMTP.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    domain: String,
}

/// Why a send failed, and whether trying again may help.
#[derive(Debug)]
pub struct SendError {
    /// What went wrong.
    pub message: String,
    /// The server refused for good (a 5xx reply) or the message cannot be built.
    pub permanent: bool,
}

impl Mailer {
    /// A mailer for the settings; `None` when no SMTP host is configured.
    pub fn new(s: &SmtpSettings) -> anyhow::Result<Option<Self>> {
        let Some(host) = &s.host else {
            return Ok(None);
        };
        let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
            .port(s.port)
            .timeout(Some(s.timeout));
        let builder = match s.tls {
            TlsMode::None => builder.tls(Tls::None),
            TlsMode::StartTls => builder.tls(Tls::Required(TlsParameters::new(host.clone())?)),
            TlsMode::Tls => builder.tls(Tls::Wrapper(TlsParameters::new(host.clone())?)),
        };
        let builder = match (&s.user, &s.password) {
            (Some(user), Some(password)) => builder.credentials(Credentials::new(
                user.clone(),
                password.expose().to_string(),
            )),
            (Some(_), None) => bail!("smtp.user is set but IVR_SMTP_PASSWORD is not"),
            _ => builder,
        };
        Ok(Some(Self {
            transport: builder.build(),
            from: s.from.parse()?,
            domain: from_domain(&s.from),
        }))
    }

    /// The e-mail of a notification, its voicemail link added when it carries one.
    pub fn message(&self, n: &OutboxMessage) -> Result<Message, SendError> {
        let permanent = |e: String| SendError {
            message: e,
            permanent: true,
        };
        let to: Mailbox = n.address.parse().map_err(|e| {
            permanent(format!(
                "the address of contact {} is not valid: {e}",
                n.contact
            ))
        })?;
        let mut body = n.body.clone();
        if n.attach_recording {
            body.push_str(&match &n.recording_url {
                Some(url) => format!("\nVoicemail recording: {url}"),
                None => "\nVoicemail recording: the guest left none.".to_string(),
            });
        }
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(n.subject.clone())
            .message_id(Some(message_id(n.id, &self.domain)))
            .body(body)
            .map_err(|e| permanent(format!("the e-mail cannot be built: {e}")))
    }

    /// Hands one notification to the SMTP server.
    pub async fn send(&self, n: &OutboxMessage) -> Result<(), SendError> {
        let message = self.message(n)?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| SendError {
                message: e.to_string(),
                permanent: e.is_permanent(),
            })
    }
}

impl SmtpSettings {
    /// How long a claim on a notification lasts: longer than its send can take (each
    /// exchange with the server is bounded by `timeout`), so that it is sent by one worker
    /// at a time, and short enough that one claimed by an instance that died is taken up
    /// again soon.
    pub fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(5)
    }
}

/// One pass: claims the next notification due at `now` (one at a time, so that a claim
/// never waits behind other sends) and sends it; returns how many were claimed.
pub async fn send_due(
    store: &dyn WorkStore,
    mailer: &Mailer,
    settings: &SmtpSettings,
    now: DateTime<Utc>,
) -> crate::storage::StoreResult<usize> {
    let lease_until = now + chrono::Duration::from_std(settings.lease()).unwrap_or_default();
    let claimed = store.claim_outbox(now, lease_until, 1).await?;
    for n in &claimed {
        match mailer.send(n).await {
            Ok(()) => {
                store.outbox_sent(n.id, now).await?;
                tracing::info!(
                    notification = n.id,
                    contact = %n.contact,
                    attempt = n.attempts,
                    "e-mail sent"
                );
            }
            Err(e) => {
                let give_up = e.permanent || n.attempts >= settings.max_attempts;
                let retry_at = (!give_up).then(|| {
                    now + chrono::Duration::from_std(settings.backoff(n.attempts))
                        .unwrap_or_default()
                });
                store.outbox_failed(n.id, &e.message, retry_at).await?;
                if give_up {
                    tracing::error!(
                        notification = n.id,
                        contact = %n.contact,
                        attempts = n.attempts,
                        error = %e.message,
                        "e-mail failed for good; resend it from the API once the cause is fixed"
                    );
                } else {
                    tracing::warn!(
                        notification = n.id,
                        contact = %n.contact,
                        attempt = n.attempts,
                        error = %e.message,
                        "e-mail not sent; tried again later"
                    );
                }
            }
        }
    }
    Ok(claimed.len())
}

/// Sends queued notifications while serving; logs once and does nothing when SMTP is not
/// configured (the e-mails stay queued and can be read in the API).
pub fn spawn(
    store: Arc<dyn WorkStore>,
    settings: SmtpSettings,
    now: impl Fn() -> DateTime<Utc> + Send + 'static,
) -> anyhow::Result<()> {
    let Some(mailer) = Mailer::new(&settings)? else {
        tracing::warn!("smtp.host is not set: e-mails stay queued and are not sent");
        return Ok(());
    };
    tracing::info!(
        host = settings.host.as_deref().unwrap_or(""),
        port = settings.port,
        tls = ?settings.tls,
        "sending e-mails"
    );
    tokio::spawn(async move {
        loop {
            match send_due(store.as_ref(), &mailer, &settings, now()).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "outbox: the database did not answer"),
            }
            tokio::time::sleep(settings.poll).await;
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_and_outlast_ten_minutes_of_smtp_down() {
        let s = SmtpSettings::from_file(crate::config::FileSmtp::default()).expect("defaults");
        assert_eq!(s.backoff(1), Duration::from_secs(5));
        assert_eq!(s.backoff(2), Duration::from_secs(10));
        assert_eq!(
            s.backoff(7),
            Duration::from_secs(300),
            "capped at 5 minutes"
        );
        assert_eq!(s.backoff(40), Duration::from_secs(300));
        assert!(
            s.retry_span() > Duration::from_secs(2 * 3600),
            "retried for {:?}",
            s.retry_span()
        );
    }

    #[test]
    fn a_message_id_is_the_notification_and_the_sender_domain() {
        assert_eq!(
            message_id(42, &from_domain("Guest Care IVR <ivr@example.com>")),
            "<notification-42@example.com>"
        );
    }
}
