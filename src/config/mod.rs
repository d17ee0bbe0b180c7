//! Typed settings: defaults, then `ivr.toml` (path in `IVR_CONFIG`), then environment overrides.
//!
//! Environment variables (the deployment contract):
//! - `IVR_CONFIG` — path of the TOML file; when unset, `ivr.toml` in the working directory is read if present.
//! - `IVR_LISTEN` — socket address to listen on (default `127.0.0.1:8080`).
//! - `IVR_DATABASE_URL` — `sqlite://path` (default `sqlite://ivr.db`) or
//!   `postgres://user@host/database` (pool settings in `[postgres]`).
//! - `IVR_PUBLIC_URL` — base URL the telephony platform uses to reach us, e.g. `https://ivr.example.com/prefix`.
//! - `TWILIO_AUTH_TOKEN` — webhook signing key; without it the server runs in development mode
//!   (webhooks unsigned, console cookies without `Secure`).
//! - `TWILIO_ACCOUNT_SID` — with the auth token, lets the console play call recordings.
//! - `IVR_API_TOKEN` — bearer token of the manager API; without it the API is closed.
//! - `IVR_FLOWS_DIR` — directory of flow files (default `ivr_flows`).
//! - `IVR_JOURNAL_PATH` — the local journal kept while the database cannot take writes
//!   (default: the SQLite file's path with `.journal` appended, else `ivr.journal`).
//! - `IVR_RETENTION_DAYS` — after how many days caller numbers and recordings are removed
//!   from the records (default: kept).
//! - `IVR_SMTP_HOST`, `IVR_SMTP_PORT`, `IVR_SMTP_USER`, `IVR_SMTP_FROM` — override `[smtp]`.
//! - `IVR_SMTP_PASSWORD` — the SMTP password; read from the environment only.

mod console;
mod postgres;
mod sla;
mod smtp;
mod targets;

pub use console::{ConsoleSettings, FileConsole};
pub use postgres::PgSettings;
pub use sla::{Due, FileSla, Sla};
pub use smtp::{FileSmtp, SmtpSettings, TlsMode};
use targets::{FilePbx, FileTarget, GUEST_CARE_NUMBER};
pub use targets::{Target, Whisper};

use crate::hours::{self, Schedule, Span};
use anyhow::{anyhow, bail, Context};
use chrono::NaiveDate;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use crate::domain::Secret;

/// Everything the server needs, read once at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// Database URL.
    pub database_url: String,
    /// Public base URL without trailing slash, when set.
    pub public_url: Option<String>,
    /// Directory of flow files.
    pub flows_dir: PathBuf,
    /// Twilio auth token; `None` means development mode.
    pub twilio_auth_token: Option<Secret>,
    /// Manager API bearer token; `None` closes the API.
    pub api_token: Option<Secret>,
    /// Brand name, used as the store name when a store number is not configured.
    pub brand: String,
    /// Website guests are sent to (claims, delivery dates).
    pub website: String,
    /// Short code guests text for delivery updates.
    pub texting_number: String,
    /// Called number of the 1-800 Guest Care line.
    pub guest_care_number: String,
    /// Store numbers and their names.
    pub stores: BTreeMap<String, String>,
    /// Flow answering the Guest Care line.
    pub guest_care_flow: String,
    /// Flow answering store lines.
    pub store_flow: String,
    /// Named transfer targets.
    pub targets: BTreeMap<String, Target>,
    /// What the agent of each person-answered target hears first (absent: nothing).
    pub whispers: BTreeMap<String, Whisper>,
    /// Guest Care hours.
    pub schedule: Schedule,
    /// Named contacts (e-mail addresses).
    pub contacts: BTreeMap<String, String>,
    /// Named texts that prompts use as `{name}`: business facts that change without a
    /// flow edit, such as the cancellation policy.
    pub texts: BTreeMap<String, String>,
    /// `voice` attribute of `<Say>`.
    pub say_voice: Option<String>,
    /// `language` attribute of `<Say>`.
    pub say_language: String,
    /// Seconds a transfer rings before it counts as no-answer.
    pub dial_timeout: u32,
    /// The warranty shopping-dollars rule.
    pub shopping_dollars: ShoppingDollarsRule,
    /// Longest voicemail in seconds.
    pub voicemail_max_seconds: u32,
    /// Where records go while the database cannot take them, until they are replayed.
    pub journal_path: PathBuf,
    /// How long a webhook waits for the database before its records go to the journal.
    pub write_timeout: std::time::Duration,
    /// Bytes kept in reserve beside the journal, released when the disk fills up.
    pub journal_reserve_bytes: u64,
    /// How long a client has to send a request's headers, and how long an idle
    /// keep-alive connection is kept.
    pub header_read_timeout: std::time::Duration,
    /// Days after which caller numbers and recordings are removed; `None` keeps them.
    pub retention_days: Option<u32>,
    /// SQLite's `synchronous` setting: `normal` (the default; a commit survives a crash of
    /// the server, and WAL is synced at each checkpoint) or `full` (each commit is synced to
    /// disk, surviving power loss, at the cost of one fsync per group commit).
    pub sqlite_synchronous: SqliteSync,
    /// `[postgres]`: the pool of a `postgres://` database.
    pub postgres: PgSettings,
    /// When tickets are due, and who hears of overdue ones.
    pub sla: Sla,
    /// How e-mails leave.
    pub smtp: SmtpSettings,
    /// `[console]`: sessions, sign-in limit, recording playback.
    pub console: ConsoleSettings,
}

/// SQLite's durability setting for commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqliteSync {
    /// `synchronous=NORMAL` in WAL mode.
    #[default]
    Normal,
    /// `synchronous=FULL`.
    Full,
}

impl SqliteSync {
    fn parse(v: &str) -> anyhow::Result<Self> {
        match v.trim().to_ascii_lowercase().as_str() {
            "normal" => Ok(Self::Normal),
            "full" => Ok(Self::Full),
            other => bail!("sqlite_synchronous must be \"normal\" or \"full\", not {other:?}"),
        }
    }
}

/// The journal beside a SQLite file, or `ivr.journal` for other databases.
pub fn default_journal_path(database_url: &str) -> PathBuf {
    match database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
    {
        Some(path) if !path.is_empty() && !path.starts_with(':') => {
            let path = path.split('?').next().unwrap_or(path);
            PathBuf::from(format!("{path}.journal"))
        }
        _ => PathBuf::from("ivr.journal"),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    database_url: Option<String>,
    public_url: Option<String>,
    flows_dir: Option<PathBuf>,
    brand: Option<String>,
    website: Option<String>,
    texting_number: Option<String>,
    dial_timeout: Option<u32>,
    #[serde(default)]
    shopping_dollars: FileShoppingDollars,
    voicemail_max_seconds: Option<u32>,
    journal_path: Option<PathBuf>,
    write_timeout_ms: Option<u64>,
    journal_reserve_mb: Option<u64>,
    header_read_timeout_ms: Option<u64>,
    retention_days: Option<u32>,
    sqlite_synchronous: Option<String>,
    #[serde(default)]
    postgres: postgres::FilePostgres,
    #[serde(default)]
    say: FileSay,
    #[serde(default)]
    lines: FileLines,
    #[serde(default)]
    pbx: FilePbx,
    #[serde(default)]
    targets: BTreeMap<String, FileTarget>,
    #[serde(default)]
    hours: FileHours,
    #[serde(default)]
    contacts: BTreeMap<String, String>,
    #[serde(default)]
    texts: BTreeMap<String, String>,
    #[serde(default)]
    sla: FileSla,
    #[serde(default)]
    smtp: FileSmtp,
    #[serde(default)]
    console: FileConsole,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSay {
    voice: Option<String>,
    language: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLines {
    guest_care: Option<String>,
    guest_care_flow: Option<String>,
    store_flow: Option<String>,
    #[serde(default)]
    stores: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShoppingDollars {
    review_days: Option<u32>,
    grace_days: Option<u32>,
}

/// When warranty shopping dollars are due: released after `review_days` with the warranty
/// and a first payment; the e-mail normally arrives within `grace_days` after that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShoppingDollarsRule {
    /// Days of the review period.
    pub review_days: u32,
    /// Days after the review period the e-mail normally takes.
    pub grace_days: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHours {
    time_zone: Option<String>,
    holidays: Option<Vec<String>>,
    weekly: Option<BTreeMap<String, String>>,
}

fn default_texts() -> BTreeMap<String, String> {
    [
        (
            "cancellation_policy",
            "Orders can be cancelled at no charge until they are scheduled for delivery. \
             After that, a cancellation is reviewed by Guest Care and a restocking fee may apply.",
        ),
        ("rewards_site", "rewards dot example dot com"),
        (
            "rewards_site_help",
            "The shopping dollars rewards site is run by Home Service Perks, who handle all \
             customer service for shopping dollars. Please go to {rewards_site} and use the \
             online support form. Include your first and last name, the e-mail address your \
             shopping dollars e-mail was sent to, and what is not working, such as an error \
             message or the page you were on. Home Service Perks will answer you by e-mail \
             and give you a ticket number.",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn default_contacts() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("legal".to_string(), "legal@example.com".to_string()),
        (
            "guest_care_manager".to_string(),
            "guest-care-manager@example.com".to_string(),
        ),
        (
            "product_team".to_string(),
            "product-team@example.com".to_string(),
        ),
    ])
}

fn default_weekly() -> BTreeMap<String, String> {
    let mut w: BTreeMap<String, String> = ["monday", "tuesday", "wednesday", "thursday", "friday"]
        .iter()
        .map(|d| (d.to_string(), "08:00-20:00".to_string()))
        .collect();
    w.insert("saturday".into(), "09:00-17:00".into());
    w.insert("sunday".into(), "closed".into());
    w
}

/// Reads the environment variable, treating an empty value as unset.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Config {
    /// Loads `IVR_CONFIG` (or `./ivr.toml` when present), then applies the environment overrides.
    pub fn load() -> anyhow::Result<Self> {
        let path = env("IVR_CONFIG").map(PathBuf::from);
        let file = match &path {
            Some(p) => Some(p.clone()),
            None if Path::new("ivr.toml").exists() => Some(PathBuf::from("ivr.toml")),
            None => None,
        };
        let text = match &file {
            Some(p) => std::fs::read_to_string(p)
                .with_context(|| format!("reading configuration {}", p.display()))?,
            None => String::new(),
        };
        let name = file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<defaults>".into());
        let mut cfg = Self::from_toml(&text).with_context(|| format!("in {name}"))?;
        cfg.apply_env()?;
        Ok(cfg)
    }

    /// Builds a configuration from TOML text over the defaults, without the environment.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let file: FileConfig = toml::from_str(text).map_err(|e| anyhow!("{e}"))?;
        let listen = file
            .listen
            .as_deref()
            .unwrap_or("127.0.0.1:8080")
            .parse()
            .context("listen must be an address like 127.0.0.1:8080")?;

        let guest_care_number = file
            .lines
            .guest_care
            .clone()
            .unwrap_or_else(|| GUEST_CARE_NUMBER.into());
        let (targets, whispers) = targets::resolve(file.pbx, file.targets, &guest_care_number)?;

        let tz_name = file
            .hours
            .time_zone
            .as_deref()
            .unwrap_or("America/Winnipeg");
        let tz = tz_name
            .parse()
            .map_err(|_| anyhow!("hours.time_zone {tz_name:?} is not an IANA time zone"))?;
        let mut weekly: [Vec<Span>; 7] = Default::default();
        for (day, spans) in file.hours.weekly.unwrap_or_else(default_weekly) {
            let i = hours::weekday_index(&day)
                .ok_or_else(|| anyhow!("hours.weekly: {day:?} is not a weekday"))?;
            weekly[i] = hours::parse_day(&spans).map_err(|e| anyhow!("hours.weekly.{day}: {e}"))?;
        }
        let mut holidays = BTreeSet::new();
        for d in file.hours.holidays.unwrap_or_default() {
            holidays.insert(
                NaiveDate::parse_from_str(&d, "%Y-%m-%d")
                    .map_err(|_| anyhow!("hours.holidays: {d:?} is not a date like 2026-12-25"))?,
            );
        }
        let mut contacts = default_contacts();
        contacts.extend(file.contacts);
        let mut texts = default_texts();
        texts.extend(file.texts);
        for name in texts.keys() {
            if !crate::domain::is_ident(name) {
                bail!("texts.{name}: names may use only a-z, 0-9 and _ (up to 64)");
            }
        }

        let database_url = file
            .database_url
            .unwrap_or_else(|| "sqlite://ivr.db".into());
        let write_timeout_ms = file.write_timeout_ms.unwrap_or(1000);
        if !(50..=5000).contains(&write_timeout_ms) {
            bail!(
                "write_timeout_ms must be between 50 and 5000 so that callers are answered in time"
            );
        }
        let journal_reserve_mb = file.journal_reserve_mb.unwrap_or(8);
        if journal_reserve_mb > 1024 {
            bail!("journal_reserve_mb must be 0 to 1024");
        }
        let header_read_timeout_ms = file.header_read_timeout_ms.unwrap_or(10_000);
        if !(500..=120_000).contains(&header_read_timeout_ms) {
            bail!("header_read_timeout_ms must be between 500 and 120000");
        }
        if file.retention_days == Some(0) {
            bail!("retention_days must be at least 1 (leave it out to keep records)");
        }
        let sla = Sla::from_file(file.sla, crate::domain::CATEGORIES, &contacts)?;
        let smtp = SmtpSettings::from_file(file.smtp)?;
        let console = ConsoleSettings::from_file(file.console)?;
        Ok(Self {
            sla,
            smtp,
            console,
            listen,
            journal_path: file
                .journal_path
                .unwrap_or_else(|| default_journal_path(&database_url)),
            database_url,
            write_timeout: std::time::Duration::from_millis(write_timeout_ms),
            journal_reserve_bytes: journal_reserve_mb * 1024 * 1024,
            header_read_timeout: std::time::Duration::from_millis(header_read_timeout_ms),
            retention_days: file.retention_days,
            sqlite_synchronous: file
                .sqlite_synchronous
                .as_deref()
                .map(SqliteSync::parse)
                .transpose()?
                .unwrap_or_default(),
            postgres: file.postgres.resolve()?,
            public_url: file.public_url.map(|u| u.trim_end_matches('/').to_string()),
            flows_dir: file.flows_dir.unwrap_or_else(|| "ivr_flows".into()),
            twilio_auth_token: None,
            api_token: None,
            brand: file.brand.unwrap_or_else(|| "Example Furniture".into()),
            website: file.website.unwrap_or_else(|| "www.example.com".into()),
            texting_number: file.texting_number.unwrap_or_else(|| "274539".into()),
            guest_care_number,
            stores: file.lines.stores,
            guest_care_flow: file
                .lines
                .guest_care_flow
                .unwrap_or_else(|| "guest_care".into()),
            store_flow: file.lines.store_flow.unwrap_or_else(|| "store".into()),
            targets,
            whispers,
            schedule: Schedule {
                tz,
                weekly,
                holidays,
            },
            contacts,
            texts,
            say_voice: file.say.voice,
            say_language: file.say.language.unwrap_or_else(|| "en-US".into()),
            dial_timeout: file.dial_timeout.unwrap_or(30),
            shopping_dollars: ShoppingDollarsRule {
                review_days: file.shopping_dollars.review_days.unwrap_or(30),
                grace_days: file.shopping_dollars.grace_days.unwrap_or(7),
            },
            voicemail_max_seconds: file.voicemail_max_seconds.unwrap_or(120),
        })
    }

    /// Applies the `IVR_*` and `TWILIO_AUTH_TOKEN` environment overrides.
    pub fn apply_env(&mut self) -> anyhow::Result<()> {
        if let Some(v) = env("IVR_LISTEN") {
            self.listen = v
                .parse()
                .with_context(|| format!("IVR_LISTEN={v:?} is not an address like 0.0.0.0:8080"))?;
        }
        if let Some(v) = env("IVR_DATABASE_URL") {
            if env("IVR_JOURNAL_PATH").is_none()
                && self.journal_path == default_journal_path(&self.database_url)
            {
                self.journal_path = default_journal_path(&v);
            }
            self.database_url = v;
        }
        if let Some(v) = env("IVR_JOURNAL_PATH") {
            self.journal_path = v.into();
        }
        if let Some(v) = env("IVR_RETENTION_DAYS") {
            let days: u32 = v.parse().ok().filter(|d| *d > 0).with_context(|| {
                format!("IVR_RETENTION_DAYS={v:?} is not a number of days (1 or more)")
            })?;
            self.retention_days = Some(days);
        }
        if let Some(v) = env("IVR_SQLITE_SYNCHRONOUS") {
            self.sqlite_synchronous = SqliteSync::parse(&v).context("IVR_SQLITE_SYNCHRONOUS")?;
        }
        if let Some(v) = env("IVR_PUBLIC_URL") {
            self.public_url = Some(v.trim_end_matches('/').to_string());
        }
        if let Some(v) = env("IVR_FLOWS_DIR") {
            self.flows_dir = v.into();
        }
        if let Some(v) = env("IVR_SMTP_HOST") {
            self.smtp.host = Some(v);
        }
        if let Some(v) = env("IVR_SMTP_PORT") {
            self.smtp.port = v
                .parse()
                .with_context(|| format!("IVR_SMTP_PORT={v:?} is not a port number"))?;
        }
        if let Some(v) = env("IVR_SMTP_USER") {
            self.smtp.user = Some(v);
        }
        if let Some(v) = env("IVR_SMTP_FROM") {
            self.smtp.from = v;
        }
        self.smtp.password = env("IVR_SMTP_PASSWORD").map(Secret::new);
        self.smtp.validate()?;
        self.twilio_auth_token = env("TWILIO_AUTH_TOKEN").map(Secret::new);
        self.console.account_sid = env("TWILIO_ACCOUNT_SID").map(Secret::new);
        self.api_token = env("IVR_API_TOKEN").map(Secret::new);
        self.validate()
    }

    /// Checks what the parts cannot check alone.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("IVR_PUBLIC_URL must start with http:// or https://");
            }
        }
        Ok(())
    }

    /// The store name for a called number: the configured one, or the brand.
    pub fn store_name(&self, to: &str) -> &str {
        self.stores
            .get(to)
            .map(String::as_str)
            .unwrap_or(&self.brand)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_reach_extensions_as_sip_uris_on_a_placeholder_pbx() -> anyhow::Result<()> {
        let cfg = Config::from_toml("")?;
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            cfg.targets.get("oom"),
            Some(&Target::Sip {
                uri: "sip:350152@pbx.example.com".into()
            })
        );
        assert_eq!(
            cfg.targets.get("escalation"),
            Some(&Target::Number {
                number: "+18007373233".into(),
                send_digits: Some("ww5".into())
            })
        );
        assert_eq!(
            cfg.targets.get("escalation_queue"),
            Some(&Target::Queue {
                name: "escalation".into()
            })
        );
        assert!(cfg.contacts.values().all(|c| c.ends_with("@example.com")));
        Ok(())
    }

    #[test]
    fn dial_mode_sends_the_extension_after_the_pbx_answers() -> anyhow::Result<()> {
        let cfg = Config::from_toml("[pbx]\nmode = \"dial\"\nmain_number = \"+12045550199\"\n")?;
        assert_eq!(
            cfg.targets.get("after_sales"),
            Some(&Target::Number {
                number: "+12045550199".into(),
                send_digits: Some("ww2005".into())
            })
        );
        Ok(())
    }

    #[test]
    fn extensions_screen_numbers_announce_and_ivrs_and_queues_have_no_whisper() -> anyhow::Result<()>
    {
        let cfg = Config::from_toml(
            "[targets.duty_manager]\nnumber = \"+12045550150\"\n\
             [targets.desk]\nsip = \"sip:desk@pbx.example.com\"\nscreen = true\n\
             [targets.quiet]\nextension = \"2010\"\nscreen = false\n",
        )?;
        let w = |name: &str| cfg.whispers.get(name).copied().unwrap_or_default();
        assert_eq!(w("oom"), Whisper::Screen);
        assert_eq!(w("after_sales"), Whisper::Screen);
        assert_eq!(
            w("escalation"),
            Whisper::Off,
            "an IVR answers: dial, press 5"
        );
        assert_eq!(w("escalation_queue"), Whisper::Off);
        assert_eq!(w("duty_manager"), Whisper::Announce);
        assert_eq!(w("desk"), Whisper::Screen);
        assert_eq!(w("quiet"), Whisper::Announce);
        // In dial mode an extension is reached through the PBX's attendant: no whisper.
        let dial = Config::from_toml("[pbx]\nmode = \"dial\"\nmain_number = \"+12045550199\"\n")?;
        assert_eq!(dial.whispers.get("oom"), None);
        Ok(())
    }

    #[test]
    fn a_whisper_on_an_ivr_or_a_queue_or_screening_without_one_is_refused() {
        for (toml, expected) in [
            (
                "[targets.escalation]\nnumber = \"+18007373233\"\nsend_digits = \"ww5\"\nwhisper = true\n",
                "reached through an IVR (send_digits)",
            ),
            (
                "[targets.escalation]\nnumber = \"+18007373233\"\nsend_digits = \"ww5\"\nscreen = true\n",
                "reached through an IVR (send_digits)",
            ),
            (
                "[targets.escalation_queue]\nqueue = \"escalation\"\nscreen = true\n",
                "is a queue",
            ),
            (
                "[targets.oom]\nextension = \"350152\"\nwhisper = false\nscreen = true\n",
                "screen = true needs the whisper",
            ),
        ] {
            let err = Config::from_toml(toml)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(expected), "{toml}: {err}");
        }
    }

    #[test]
    fn dial_mode_refuses_to_dial_back_into_the_guest_care_line() {
        let err = Config::from_toml("[pbx]\nmode = \"dial\"\nmain_number = \"+18007373233\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("dial back into the IVR"), "{err}");
        assert!(Config::from_toml("[pbx]\nmode = \"dial\"\n").is_err());
    }

    #[test]
    fn unknown_keys_and_bad_hours_are_refused() {
        assert!(Config::from_toml("lisen = \"x\"").is_err());
        assert!(Config::from_toml("[hours.weekly]\nmonday = \"9-5\"").is_err());
        assert!(Config::from_toml("[hours]\ntime_zone = \"Mars/Base\"").is_err());
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        assert_eq!(format!("{:?}", Secret::new("abc")), "Secret(<redacted>)");
    }
}
