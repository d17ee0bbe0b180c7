//! The real `ivr` binary as a child process, for what only a process can show: `kill -9`,
//! SIGTERM, start-up on an existing database and journal. Its logs go to a file.

use super::*;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// A running `ivr serve`.
pub struct Server {
    child: Child,
    /// The HTTP client and helpers, pointed at the server.
    pub app: std::sync::Arc<TestApp>,
    /// Where its stderr goes.
    pub log: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The database of the servers started in `dir`: a server started again in the same
/// directory finds the database of the one before (on PostgreSQL, the database made for
/// the first, while some server of the directory still holds it).
async fn database_of(dir: &Path, db_path: &Path) -> std::sync::Arc<database::TestDb> {
    use std::collections::HashMap;
    use std::sync::{Arc, Weak};
    static MADE: Mutex<Option<HashMap<PathBuf, Weak<database::TestDb>>>> = Mutex::new(None);
    if !database::on_postgres() {
        return Arc::new(database::TestDb::new(dir, Some(db_path)).await);
    }
    let known = MADE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .get(dir)
        .and_then(Weak::upgrade);
    if let Some(db) = known {
        return db;
    }
    let db = Arc::new(database::TestDb::new(dir, None).await);
    MADE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(dir.to_path_buf(), Arc::downgrade(&db));
    db
}

impl Server {
    /// Starts the server on `dir/ivr.db` (created or reused) and waits for `/healthz`.
    /// `toml` is the rest of its configuration (top-level keys only); the hours are open all week.
    pub async fn start(dir: &Path, toml: &str, name: &str) -> Server {
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
        Self::start_with_stdout(dir, toml, name, log.into()).await
    }

    /// As [`Server::start`], with stdout (where the server logs) sent to `stdout` instead
    /// of the log file; stderr still goes to the file.
    pub async fn start_with_stdout(dir: &Path, toml: &str, name: &str, stdout: Stdio) -> Server {
        Self::start_full(dir, &dir.join("ivr.db"), toml, name, stdout, None, None).await
    }

    /// As [`Server::start`], started as systemd starts a service by default: with a soft
    /// limit of `open_files` open files (the hard limit unchanged).
    pub async fn start_with_open_files(
        dir: &Path,
        toml: &str,
        name: &str,
        open_files: u32,
    ) -> Server {
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
        let db = dir.join("ivr.db");
        Self::start_full(dir, &db, toml, name, log.into(), Some(open_files), None).await
    }

    /// As [`Server::start`], with the database (and so the journal) at `db_path`, which
    /// may be on another file system than the configuration and the log.
    pub async fn start_with_db(dir: &Path, db_path: &Path, toml: &str, name: &str) -> Server {
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
        Self::start_full(dir, db_path, toml, name, log.into(), None, None).await
    }

    /// One of several instances on the database `db`, all reached by the platform at
    /// `public` (a load balancer's URL): its journal and log are `dir/name.*`.
    pub async fn start_instance(
        dir: &Path,
        db: std::sync::Arc<database::TestDb>,
        public: &str,
        toml: &str,
        name: &str,
    ) -> Server {
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
        let shared = Some((db, public.to_string()));
        Self::start_full(dir, Path::new(""), toml, name, log.into(), None, shared).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_full(
        dir: &Path,
        db_path: &Path,
        toml: &str,
        name: &str,
        stdout: Stdio,
        open_files: Option<u32>,
        shared: Option<(std::sync::Arc<database::TestDb>, String)>,
    ) -> Server {
        let port = free_port();
        let addr = format!("http://127.0.0.1:{port}");
        let db_path = db_path.to_path_buf();
        // An instance among several keeps a journal of its own; a server started again in
        // the same directory finds the journal of the one before.
        let (db, public, journal) = match shared {
            Some((db, public)) => (db, public, dir.join(format!("{name}.journal"))),
            None => {
                let db = database_of(dir, &db_path).await;
                let journal = match db.url.strip_prefix("sqlite://") {
                    Some(_) => ivr::config::default_journal_path(&db.url),
                    None => dir.join("ivr.journal"),
                };
                (db, addr.clone(), journal)
            }
        };
        let config = dir.join("ivr.toml");
        std::fs::write(
            &config,
            // Open all week: the real binary runs on the wall clock, and a load test that
            // transfers callers must not meet the closed-hours voicemail at night.
            format!(
                "{toml}\n[hours.weekly]\n{}[lines.stores]\n\"{STORE}\" = \"Polo Park\"\n",
                [
                    "monday",
                    "tuesday",
                    "wednesday",
                    "thursday",
                    "friday",
                    "saturday",
                    "sunday"
                ]
                .iter()
                .map(|d| format!("{d} = \"00:00-24:00\"\n"))
                .collect::<String>()
            ),
        )
        .expect("write the configuration");
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let bin = env!("CARGO_BIN_EXE_ivr");
        let mut command = match open_files {
            // `exec`: the child is the server itself, so signals and /proc reach it.
            Some(n) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -Sn {n} && exec \"$0\" serve"), bin]);
                c
            }
            None => {
                let mut c = Command::new(bin);
                c.arg("serve");
                c
            }
        };
        let child = command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("IVR_CONFIG", &config)
            .env("IVR_LISTEN", format!("127.0.0.1:{port}"))
            .env("IVR_DATABASE_URL", &db.url)
            .env("IVR_JOURNAL_PATH", &journal)
            .env(
                "IVR_FLOWS_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/ivr_flows"),
            )
            .env("IVR_PUBLIC_URL", &public)
            .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
            .env("IVR_API_TOKEN", API_TOKEN)
            .env("RUST_LOG", "debug,sqlx=warn,hyper=info,h2=info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log_file)
            .spawn()
            .expect("start the ivr binary");
        let app = std::sync::Arc::new(TestApp {
            addr: addr.clone(),
            public,
            // Twilio's own limit: a request to a server killed under it ends in an error
            // like Twilio's, never in a test that waits for ever (seen once in
            // crash_safety, all tasks parked, no socket open).
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("HTTP client"),
            clock: Clock::system(),
            db_path,
            db,
            state: None,
            _dir: None,
        });
        let mut server = Server { child, app, log };
        server.wait_healthy().await;
        server
    }

    async fn wait_healthy(&mut self) {
        let started = Instant::now();
        loop {
            if let Ok(res) = self
                .app
                .http
                .get(format!("{}/healthz", self.app.addr))
                .send()
                .await
            {
                if res.status() == 200 {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the server exited at start-up ({status}):\n{}", self.logs());
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the server did not start:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `/readyz` says the journal is empty.
    pub async fn wait_ready(&self) -> Duration {
        let started = Instant::now();
        loop {
            let (status, body) = readyz(&self.app.http, &self.app.addr).await;
            if status == 200 && body.contains("journal empty") {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "not ready: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The server's resident memory now, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name}");
    }

    /// Waits for the process to exit, up to `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// The server's stdout, when it was started with a pipe there.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Everything the server logged.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Everything the server logged, once it holds `wanted` or 2 s have passed: the
    /// server writes its log out every 20 ms, so a line can trail what it reports.
    pub async fn logs_with(&self, wanted: &str) -> String {
        let started = Instant::now();
        loop {
            let logs = self.logs();
            if logs.contains(wanted) || started.elapsed() > Duration::from_secs(2) {
                return logs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        super::privacy::scan(&self.logs());
        super::privacy::assert_logs_private();
    }
}
