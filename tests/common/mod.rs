//! Test harness: the real server on a random port with a fresh SQLite file, requests signed
//! by the official Twilio Python library, and a caller that follows TwiML as Twilio would.
#![allow(dead_code)]

pub mod cluster;
pub mod console;
pub mod database;
pub mod privacy;
pub mod process;
pub mod smtp;

/// Default targets, as `Call::dialled` reports them.
pub const OOM: (&str, &str) = ("sip:350152@pbx.example.com", "");
pub const AFTER_SALES: (&str, &str) = ("sip:2005@pbx.example.com", "");
pub const ESCALATION: (&str, &str) = ("+18007373233", "ww5");

/// Form parameters from pairs.
pub fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The parameters of an incoming call to the Guest Care line (one of them empty, which
/// the signature still covers).
pub fn incoming(sid: &str) -> Vec<(String, String)> {
    params(&[
        ("CallSid", sid),
        ("From", CALLER),
        ("To", GUEST_CARE),
        ("CallStatus", "ringing"),
        ("Empty", ""),
    ])
}

/// A target constant as owned strings, to compare with `Call::dialled`.
pub fn expect(t: (&str, &str)) -> (String, String) {
    (t.0.to_string(), t.1.to_string())
}

use chrono::{DateTime, TimeZone, Utc};
use ivr::app::{build_router, build_state, Clock};
use ivr::config::{Config, Secret};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};

pub const AUTH_TOKEN: &str = "test-auth-token-0123456789";
pub const API_TOKEN: &str = "test-api-token";
pub const GUEST_CARE: &str = "+18007373233";
pub const STORE: &str = "+12045550100";
pub const CALLER: &str = "+12045551234";

/// Monday 23 November 2026, 10:00 in Winnipeg: Guest Care is open.
pub fn monday_morning() -> DateTime<Utc> {
    winnipeg(2026, 11, 23, 10, 0)
}

/// Sunday 22 November 2026, 10:00 in Winnipeg: Guest Care is closed.
pub fn sunday_morning() -> DateTime<Utc> {
    winnipeg(2026, 11, 22, 10, 0)
}

pub fn winnipeg(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    chrono_tz::America::Winnipeg
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .single()
        .expect("a valid local time")
        .with_timezone(&Utc)
}

struct Signer {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

fn signer() -> &'static Mutex<Signer> {
    static SIGNER: OnceLock<Mutex<Signer>> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/twilio_sign.py");
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with the `twilio` package is needed to sign test requests: pip install twilio");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Mutex::new(Signer {
            _child: child,
            stdin,
            stdout,
        })
    })
}

/// The signature the official Twilio library computes.
pub fn twilio_signature(token: &str, url: &str, params: &[(String, String)]) -> String {
    let map: BTreeMap<&str, &str> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let line = serde_json::json!({ "token": token, "url": url, "params": map }).to_string();
    let mut s = signer().lock().unwrap_or_else(|e| e.into_inner());
    writeln!(s.stdin, "{line}").expect("write to the signer");
    s.stdin.flush().expect("flush the signer");
    let mut out = String::new();
    s.stdout.read_line(&mut out).expect("read from the signer");
    assert!(
        !out.trim().is_empty(),
        "the Twilio signer printed nothing (is `twilio` installed?)"
    );
    let sig = out.trim().to_string();
    privacy::remember_signature(&sig);
    sig
}

pub struct Options {
    pub toml: String,
    pub now: DateTime<Utc>,
    pub api_token: Option<&'static str>,
    /// Public URL Twilio signs; the server's own address when unset.
    pub public_url: Option<String>,
    /// Leave IVR_PUBLIC_URL unset: the server signs-checks against its Host header.
    pub host_header_only: bool,
    /// An existing database file to serve instead of a new one (SQLite).
    pub database: Option<std::path::PathBuf>,
    /// A database the test made and keeps using beside the server (either backend).
    pub shared_db: Option<std::sync::Arc<database::TestDb>>,
    /// The clock runs on from `now` (for tests that wait, such as e-mail retries) instead
    /// of standing still.
    pub running_clock: bool,
    /// Runs the background jobs as `ivr serve` does: the outbox and the overdue sweep.
    pub jobs: bool,
    /// `TWILIO_ACCOUNT_SID`: with the auth token, the console plays recordings.
    pub account_sid: Option<&'static str>,
    /// A clock shared with other instances (instead of one made from `now`).
    pub clock: Option<Clock>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            toml: format!("[lines.stores]\n\"{STORE}\" = \"Polo Park\"\n"),
            now: monday_morning(),
            api_token: Some(API_TOKEN),
            public_url: None,
            host_header_only: false,
            database: None,
            shared_db: None,
            running_clock: false,
            jobs: false,
            account_sid: None,
            clock: None,
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if self._dir.is_some() {
            privacy::assert_logs_private();
        }
    }
}

pub struct TestApp {
    /// Base URL the server is reached at over the socket.
    pub addr: String,
    /// Base URL Twilio signs (the public URL).
    pub public: String,
    pub http: reqwest::Client,
    pub clock: Clock,
    /// The SQLite file (empty on PostgreSQL: see `db`).
    pub db_path: std::path::PathBuf,
    /// The database, SQLite or PostgreSQL (see `database`).
    pub db: std::sync::Arc<database::TestDb>,
    /// The in-process server's state (none for a child process).
    pub state: Option<ivr::app::AppState>,
    _dir: Option<tempfile::TempDir>,
}

impl TestApp {
    /// The same server through a client that opens a new connection for every request,
    /// as Twilio does, instead of reusing one it already holds.
    pub fn with_fresh_connections(&self) -> TestApp {
        TestApp {
            addr: self.addr.clone(),
            public: self.public.clone(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(std::time::Duration::from_secs(15))
                .build()
                .expect("HTTP client"),
            clock: self.clock.clone(),
            db_path: self.db_path.clone(),
            db: self.db.clone(),
            state: self.state.clone(),
            _dir: None,
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_with(Options::default()).await
}

/// The default app with its clock stopped at `now`.
pub async fn spawn_at(now: DateTime<Utc>) -> TestApp {
    spawn_with(Options {
        now,
        ..Options::default()
    })
    .await
}

pub async fn spawn_with(opts: Options) -> TestApp {
    privacy::capture_logs();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = match opts.shared_db.clone() {
        Some(db) => db,
        None => {
            std::sync::Arc::new(database::TestDb::new(dir.path(), opts.database.as_deref()).await)
        }
    };
    let db_path = db
        .url
        .strip_prefix("sqlite://")
        .map(std::path::PathBuf::from)
        .unwrap_or_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    let mut config = Config::from_toml(&opts.toml).expect("test configuration");
    config.database_url = db.url.clone();
    // The journal in the test's directory (PostgreSQL's default is the working directory's,
    // which every test would share).
    config.journal_path = match db.url.strip_prefix("sqlite://") {
        Some(_) => ivr::config::default_journal_path(&config.database_url),
        None => dir.path().join("ivr.journal"),
    };
    config.flows_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/ivr_flows").into();
    config.twilio_auth_token = Some(Secret::new(AUTH_TOKEN));
    config.api_token = opts.api_token.map(Secret::new);
    config.console.account_sid = opts.account_sid.map(Secret::new);
    let public = opts.public_url.unwrap_or_else(|| addr.clone());
    config.public_url = (!opts.host_header_only).then(|| public.clone());
    let clock = if let Some(clock) = opts.clock.clone() {
        clock
    } else if opts.running_clock {
        Clock::running_from(opts.now)
    } else {
        Clock::fixed(opts.now)
    };
    let state = build_state(config, clock.clone()).await.expect("app state");
    if opts.jobs {
        ivr::app::spawn_jobs(&state).expect("background jobs");
    }
    let served = state.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, build_router(served).into_make_service()).await;
    });
    TestApp {
        addr,
        public,
        http: reqwest::Client::new(),
        clock,
        db_path,
        db,
        state: Some(state),
        _dir: Some(dir),
    }
}

impl TestApp {
    /// A count read straight from the server's database (SQL both backends take).
    pub async fn count(&self, sql: &str) -> i64 {
        self.db.count(sql).await
    }
}

/// A server on a database that `ivr seed` first filled with `calls` synthetic calls over the
/// 30 days before Monday morning; the directory holding it goes with it. On PostgreSQL the
/// seeded SQLite file is copied in by `ivr migrate-data`.
pub async fn spawn_seeded(calls: u64) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("ivr.db");
    let sqlite = format!("sqlite://{}", db.display());
    let migrate = ivr::storage::open(&sqlite, ivr::config::SqliteSync::Normal)
        .await
        .expect("open the database")
        .calls;
    migrate.migrate().await.expect("migrate");
    migrate.close().await.expect("close");
    ivr::storage::seed(&sqlite, calls, 30, monday_morning())
        .await
        .expect("seed");
    let opts = if database::on_postgres() {
        let pg = database::TestDb::new(dir.path(), None).await;
        let copied = ivr::storage::migrate_data(&sqlite, &pg.url, false)
            .await
            .expect("migrate-data into PostgreSQL");
        assert!(copied.complete(), "{copied:?}");
        Options {
            shared_db: Some(std::sync::Arc::new(pg)),
            ..Options::default()
        }
    } else {
        Options {
            database: Some(db),
            ..Options::default()
        }
    };
    (spawn_with(opts).await, dir)
}

/// One element of a parsed TwiML document.
#[derive(Debug, Clone, Default)]
pub struct El {
    pub name: String,
    pub attrs: BTreeMap<String, String>,
    pub text: String,
    pub children: Vec<El>,
}

impl El {
    pub fn attr(&self, name: &str) -> &str {
        self.attrs.get(name).map(String::as_str).unwrap_or("")
    }

    /// Every element of this name, depth first.
    pub fn all(&self, name: &str) -> Vec<&El> {
        let mut out = Vec::new();
        for c in &self.children {
            if c.name == name {
                out.push(c);
            }
            out.extend(c.all(name));
        }
        out
    }

    pub fn first(&self, name: &str) -> Option<&El> {
        self.all(name).into_iter().next()
    }

    /// Names of the top-level verbs.
    pub fn verbs(&self) -> Vec<&str> {
        self.children.iter().map(|c| c.name.as_str()).collect()
    }
}

/// Parses TwiML strictly: malformed XML fails the test.
pub fn parse_twiml(xml: &str) -> El {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<El> = vec![El::default()];
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => stack.push(element(&e)),
            Ok(Event::Empty(e)) => {
                let el = element(&e);
                stack.last_mut().expect("parent").children.push(el);
            }
            Ok(Event::End(_)) => {
                let el = stack.pop().expect("open element");
                stack.last_mut().expect("parent").children.push(el);
            }
            Ok(Event::Text(t)) => {
                let text = t
                    .unescape()
                    .unwrap_or_else(|e| panic!("bad text in {xml}: {e}"));
                stack.last_mut().expect("element").text.push_str(&text);
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("malformed TwiML: {e}\n{xml}"),
        }
    }
    assert_eq!(stack.len(), 1, "unclosed elements in {xml}");
    let mut doc = stack.pop().expect("document");
    assert_eq!(doc.children.len(), 1, "one root element: {xml}");
    let root = doc.children.remove(0);
    assert_eq!(root.name, "Response", "root must be <Response>: {xml}");
    root
}

fn element(e: &quick_xml::events::BytesStart<'_>) -> El {
    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
    let attrs = e
        .attributes()
        .map(|a| {
            let a = a.expect("well-formed attribute");
            (
                String::from_utf8_lossy(a.key.as_ref()).into_owned(),
                a.unescape_value().expect("attribute value").into_owned(),
            )
        })
        .collect();
    El {
        name,
        attrs,
        ..El::default()
    }
}

pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub content_length: Option<String>,
    pub body: String,
}

impl TestApp {
    /// Absolute public URL for a path, as Twilio would request it.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.public)
        }
    }

    /// The URL our socket answers for a public URL.
    fn socket_url(&self, public_url: &str) -> String {
        public_url.replacen(&self.public, &self.addr, 1)
    }

    /// POSTs a webhook signed by the Twilio library for `public_url`.
    pub async fn post_signed(&self, public_url: &str, params: &[(String, String)]) -> Answer {
        let sig = twilio_signature(AUTH_TOKEN, public_url, params);
        self.post_raw(&self.socket_url(public_url), params, Some(&sig))
            .await
    }

    /// POSTs a signed webhook; a connection error is returned, not a failed test (for
    /// servers that are killed under load).
    pub async fn try_post_signed(
        &self,
        public_url: &str,
        params: &[(String, String)],
    ) -> Result<Answer, reqwest::Error> {
        let sig = twilio_signature(AUTH_TOKEN, public_url, params);
        let res = self
            .http
            .post(self.socket_url(public_url))
            .form(params)
            .header("X-Twilio-Signature", sig)
            .send()
            .await?;
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = res.text().await?;
        Ok(Answer {
            status,
            content_type,
            content_length: None,
            body,
        })
    }

    /// POSTs a form with an arbitrary signature header (or none).
    pub async fn post_raw(
        &self,
        socket_url: &str,
        params: &[(String, String)],
        sig: Option<&str>,
    ) -> Answer {
        let mut req = self.http.post(socket_url).form(params);
        if let Some(s) = sig {
            req = req.header("X-Twilio-Signature", s);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let header = |n: &str| {
            res.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header("content-type").unwrap_or_default();
        let content_length = header("content-length");
        let body = res.text().await.expect("body");
        Answer {
            status,
            content_type,
            content_length,
            body,
        }
    }

    pub async fn api(&self, path_and_query: &str) -> Value {
        let res = self
            .http
            .get(format!("{}{path_and_query}", self.addr))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("api request");
        assert_eq!(res.status(), 200, "GET {path_and_query}");
        res.json().await.expect("json")
    }

    /// Any API request with the token: the status and the JSON body.
    pub async fn api_call(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path_and_query}", self.addr))
            .bearer_auth(API_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("api request");
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path_and_query}: not JSON ({e}): {text:?}"));
        (status, json)
    }

    /// A GET the API must refuse with `status` and an error that says `expected`.
    pub async fn api_refused(&self, path_and_query: &str, status: u16, expected: &str) {
        let (got, body) = self
            .api_call(reqwest::Method::GET, path_and_query, None)
            .await;
        assert_eq!(got, status, "{path_and_query}: {body}");
        let error = body["error"].as_str().unwrap_or("");
        assert!(error.contains(expected), "{path_and_query}: {body}");
    }

    pub async fn set_override(&self, state: Value) -> Value {
        let res = self
            .http
            .put(format!("{}/api/hours/override", self.addr))
            .bearer_auth(API_TOKEN)
            .json(&serde_json::json!({ "state": state }))
            .send()
            .await
            .expect("override");
        assert_eq!(res.status(), 200);
        res.json().await.expect("json")
    }

    /// A new call to `to` from a caller of its own (`another_caller`), answered by
    /// `/voice/incoming`: tests of many calls use it so that no call is a repeat caller's.
    pub async fn call_from_another(&self, to: &str) -> Call<'_> {
        self.call_from(to, &another_caller()).await
    }

    /// A new call to `to` from `from`, answered by `/voice/incoming`.
    pub async fn call_from(&self, to: &str, from: &str) -> Call<'_> {
        let mut call = self.call_unanswered(to).await;
        call.from = from.into();
        call.post("/voice/incoming", &[]).await;
        call
    }

    /// A new call to `to`, answered by `/voice/incoming`.
    pub async fn call(&self, to: &str) -> Call<'_> {
        let mut call = self.call_unanswered(to).await;
        call.post("/voice/incoming", &[]).await;
        call
    }

    async fn call_unanswered(&self, to: &str) -> Call<'_> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sid = format!("CA{:032x}", n + (std::process::id() as u64) * 1_000_000);
        Call {
            app: self,
            sid,
            from: CALLER.into(),
            to: to.into(),
            twiml: El::default(),
            xml: String::new(),
            leg: Vec::new(),
        }
    }
}

/// A caller following TwiML the way Twilio does.
pub struct Call<'a> {
    pub app: &'a TestApp,
    pub sid: String,
    pub from: String,
    pub to: String,
    pub twiml: El,
    pub xml: String,
    /// Parameters of this leg sent with every webhook (the agent's leg: its parent).
    pub leg: Vec<(String, String)>,
}

impl<'a> Call<'a> {
    pub fn params(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = [
            ("CallSid", self.sid.as_str()),
            ("AccountSid", "AC00000000000000000000000000000000"),
            ("From", self.from.as_str()),
            ("To", self.to.as_str()),
            ("Caller", self.from.as_str()),
            ("Called", self.to.as_str()),
            ("CallStatus", "in-progress"),
            ("Direction", "inbound"),
            ("ApiVersion", "2010-04-01"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in self
            .leg
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(extra.iter().copied())
        {
            p.retain(|(pk, _)| pk != k);
            p.push((k.to_string(), v.to_string()));
        }
        p
    }

    /// A soft transfer: the agent answers, hears the whisper and presses 1.
    pub async fn agent_takes_the_call(&self) {
        let mut agent = self.agent_answers(Some("human")).await;
        agent.press("1").await;
        assert!(agent.twiml.verbs().is_empty(), "{}", agent.xml);
    }

    /// The whisper URL of the current transfer (its `<Number>` or `<Sip>` `url`), if any.
    pub fn whisper_url(&self) -> Option<String> {
        let dial = self.verb("Dial");
        let noun = dial.first("Number").or_else(|| dial.first("Sip"))?;
        Some(noun.attr("url").to_string()).filter(|u| !u.is_empty())
    }

    /// The agent answers the transfer: Twilio starts the agent's leg (a call of its own,
    /// with this call as `ParentCallSid`) and fetches the whisper for it; `answered_by` is
    /// what machine detection found. The agent's leg, with the TwiML the agent hears.
    pub async fn agent_answers(&self, answered_by: Option<&str>) -> Call<'a> {
        let url = self
            .whisper_url()
            .unwrap_or_else(|| panic!("a soft transfer (a noun with url) in {}", self.xml));
        let (to, _) = self.dialled();
        let mut agent = Call {
            app: self.app,
            sid: format!("CAa{}", &self.sid[3..]),
            from: self.from.clone(),
            to,
            twiml: El::default(),
            xml: String::new(),
            leg: vec![
                ("ParentCallSid".to_string(), self.sid.clone()),
                ("Direction".to_string(), "outbound-dial".to_string()),
            ],
        };
        let extra: Vec<(&str, &str)> = answered_by.map(|a| ("AnsweredBy", a)).into_iter().collect();
        agent.post(&url, &extra).await;
        agent
    }

    /// POSTs a signed webhook for this call and parses the TwiML answer.
    pub async fn post(&mut self, path_or_url: &str, extra: &[(&str, &str)]) {
        let url = self.app.url(path_or_url);
        let answer = self.app.post_signed(&url, &self.params(extra)).await;
        assert_eq!(answer.status, 200, "POST {url}: {}", answer.body);
        assert!(
            answer.content_type.starts_with("text/xml"),
            "content type {}",
            answer.content_type
        );
        assert_eq!(
            answer.content_length.as_deref(),
            Some(answer.body.len().to_string().as_str()),
            "Content-Length must be sent"
        );
        self.twiml = parse_twiml(&answer.body);
        self.xml = answer.body;
    }

    fn verb(&self, name: &str) -> &El {
        self.twiml
            .first(name)
            .unwrap_or_else(|| panic!("expected <{name}> in {}", self.xml))
    }

    /// The URL the current menu's answer goes to (its `<Gather action>`).
    pub fn gather_action(&self) -> String {
        self.verb("Gather").attr("action").to_string()
    }

    /// Presses keys at the current menu (Gather action with Digits).
    pub async fn press(&mut self, digits: &str) {
        let action = self.gather_action();
        self.post(&action, &[("Digits", digits)]).await;
    }

    /// Says nothing at the current menu: Twilio follows the Redirect after the Gather.
    pub async fn silence(&mut self) {
        assert!(
            self.twiml.first("Gather").is_some(),
            "expected a menu: {}",
            self.xml
        );
        let url = self.verb("Redirect").text.clone();
        self.post(&url, &[]).await;
    }

    /// The transfer ends with a DialCallStatus (Dial action).
    pub async fn dial_ends(&mut self, status: &str) {
        let action = self.verb("Dial").attr("action").to_string();
        let duration = if status == "completed" { "42" } else { "0" };
        self.post(
            &action,
            &[
                ("DialCallStatus", status),
                ("DialCallSid", "CAdial"),
                ("DialCallDuration", duration),
            ],
        )
        .await;
    }

    /// The caller leaves the queue (Enqueue action).
    pub async fn queue_ends(&mut self, result: &str) {
        let action = self.verb("Enqueue").attr("action").to_string();
        self.post(
            &action,
            &[
                ("QueueResult", result),
                ("QueueSid", "QU1"),
                ("QueueTime", "30"),
            ],
        )
        .await;
    }

    /// The caller leaves a voicemail (Record action).
    pub async fn leave_voicemail(&mut self, recording_url: &str) {
        let action = self.verb("Record").attr("action").to_string();
        self.post(
            &action,
            &[
                ("RecordingUrl", recording_url),
                ("RecordingSid", "RE1"),
                ("RecordingDuration", "17"),
                ("Digits", "#"),
            ],
        )
        .await;
    }

    /// Everything the caller hears in the current answer.
    pub fn says(&self) -> String {
        self.twiml
            .all("Say")
            .iter()
            .map(|s| s.text.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Where the Dial goes: a number and its sendDigits, or a SIP URI and "".
    pub fn dialled(&self) -> (String, String) {
        let dial = self.verb("Dial");
        if let Some(n) = dial.first("Number") {
            return (n.text.clone(), n.attr("sendDigits").to_string());
        }
        let sip = dial
            .first("Sip")
            .unwrap_or_else(|| panic!("a <Number> or <Sip> in {}", self.xml));
        (sip.text.clone(), String::new())
    }

    pub fn hung_up(&self) -> bool {
        self.twiml.verbs().last() == Some(&"Hangup")
    }

    /// The call as a manager reads it: `GET /api/calls/{sid}`.
    pub async fn record(&self) -> Value {
        self.app.api(&format!("/api/calls/{}", self.sid)).await
    }

    /// The nodes of the call's recorded steps, in order.
    pub async fn step_nodes(&self) -> Vec<String> {
        self.record().await["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|s| s["node"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The transfer to `target` is recorded as under way, then connects and ends: the
    /// caller is hung up on and the call's outcome and last step say so. A soft transfer
    /// connects when the agent, having heard the whisper, presses 1.
    pub async fn connects(&mut self, target: &str) {
        let rec = self.record().await;
        assert_eq!(rec["outcome"], format!("transferring:{target}"));
        let steps = rec["steps"].as_array().expect("steps");
        let last = steps.last().expect("a step");
        assert_eq!(last["kind"], "transfer");
        assert_eq!(last["result"], format!("transferring to {target}"));
        let connected = if self.whisper_url().is_some() {
            let mut agent = self.agent_answers(Some("human")).await;
            if agent.twiml.first("Gather").is_some() {
                agent.press("1").await;
                assert!(agent.twiml.verbs().is_empty(), "{}", agent.xml);
            }
            "answered by agent"
        } else {
            "completed"
        };
        self.dial_ends("completed").await;
        assert!(self.hung_up(), "{}", self.xml);
        let rec = self.record().await;
        assert_eq!(rec["outcome"], format!("transferred:{target}"));
        let steps = rec["steps"].as_array().expect("steps");
        assert_eq!(steps.last().expect("a step")["result"], connected);
    }

    /// Categories of the call's tickets.
    pub async fn ticket_categories(&self) -> Vec<String> {
        self.record().await["tickets"]
            .as_array()
            .expect("tickets")
            .iter()
            .map(|t| t["category"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// A caller number no other call of this test binary has used: `+1204556` and four digits.
pub fn another_caller() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("+1204556{:04}", n % 10_000)
}

/// Prints a test's figure where `cargo test` shows it even for a passing test: straight to
/// the process's stderr, which the test harness does not capture.
pub fn report(line: impl std::fmt::Display) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "    figure: {line}");
}

/// The server's `/metrics` text.
pub async fn metrics_text(app: &TestApp) -> String {
    let res = app
        .http
        .get(format!("{}/metrics", app.addr))
        .send()
        .await
        .expect("metrics");
    assert_eq!(res.status(), 200);
    res.text().await.expect("metrics text")
}

/// One sample's value in Prometheus text, by its full series name.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// `GET /readyz`: status and body.
pub async fn readyz(http: &reqwest::Client, base: &str) -> (u16, String) {
    match http.get(format!("{base}/readyz")).send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            (status, res.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// Takes SQLite's write lock on the file, as another process would: the server's writes
/// wait, then fail, until the lock is dropped with [`unlock_database`].
pub async fn lock_database(db_path: &std::path::Path) -> sqlx::SqliteConnection {
    use sqlx::{ConnectOptions, Connection};
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db_path)
        .connect()
        .await
        .expect("open the database to lock it");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .expect("take the write lock");
    let _ = conn.ping().await;
    conn
}

/// Releases the lock taken by [`lock_database`].
pub async fn unlock_database(mut conn: sqlx::SqliteConnection) {
    use sqlx::Connection;
    sqlx::query("ROLLBACK")
        .execute(&mut conn)
        .await
        .expect("release the write lock");
    let _ = conn.close().await;
}

/// Counts rows straight from the SQLite file.
pub async fn count_rows(db_path: &std::path::Path, sql: &str) -> i64 {
    use sqlx::{ConnectOptions, Connection};
    let mut db = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db_path)
        .read_only(true)
        .connect()
        .await
        .expect("open the test database");
    let n: i64 = sqlx::query_scalar(sql)
        .fetch_one(&mut db)
        .await
        .expect("count rows");
    let _ = db.close().await;
    n
}

impl Call<'_> {
    /// The platform's final status callback for this call.
    pub async fn completes(&self, duration: u32) {
        let url = self.app.url("/voice/status");
        let d = duration.to_string();
        let answer = self
            .app
            .post_signed(
                &url,
                &self.params(&[
                    ("CallStatus", "completed"),
                    ("CallDuration", d.as_str()),
                    ("SequenceNumber", "3"),
                ]),
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
}

/// Makes files immutable (`chattr +i`, which even root's open file handles obey) until dropped.
pub struct ReadOnly(Vec<std::path::PathBuf>);

impl ReadOnly {
    pub fn make(paths: &[std::path::PathBuf]) -> Self {
        for p in paths {
            let done = std::process::Command::new("chattr")
                .arg("+i")
                .arg(p)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(
                done,
                "chattr +i {} failed: this test needs root and a file system with the immutable flag (ext4, xfs)",
                p.display()
            );
        }
        Self(paths.to_vec())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(p)
                .status();
        }
    }
}
