//! Manager API at scale (issue 5, item 3): `cargo bench --bench apiload`.
//!
//! Seeds a fresh SQLite database with `ivr seed --calls N` (default 1,000,000 calls with their
//! steps, webhooks and tickets), starts the real binary on it, and times each manager query
//! over HTTP, one request at a time: the first page of `GET /api/calls`, a page half-way down
//! the keyset, filters by line, date range, ticket category and all three, the ticket lists,
//! and a call's detail; then the console's pages (call log with filters, a call, the ticket
//! tabs, a ticket, insights over 7 and 92 days, the flow pictures) signed in as a manager. Prints p50/p95/max per query and SQLite's query
//! plan for each list query. With `--postgres URL` (default `$IVR_TEST_POSTGRES_URL`) the
//! seeded database is then copied into a new PostgreSQL database (`ivr migrate-data`) and
//! the same queries and pages are timed there, with PostgreSQL's plans (`EXPLAIN`).
//! `--smoke` seeds 20,000 calls (CI).

#![forbid(unsafe_code)]

use chrono::{Duration as Days, Utc};
use clap::Parser;
use ivr::storage::{CallQuery, PgStore, SqliteStore, StoreResult, TicketQuery};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const API_TOKEN: &str = "bench-api-token";

#[derive(Parser, Debug)]
#[command(about = "Manager API benchmark on a seeded database")]
struct Args {
    /// Calls to seed.
    #[arg(long, default_value_t = 1_000_000)]
    calls: u64,
    /// Requests per query.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// 20,000 calls and 20 requests per query, targets not judged (CI).
    #[arg(long)]
    smoke: bool,
    /// A PostgreSQL server (a URL naming a database on it) on which to repeat the run on a
    /// copy of the seeded database; unset: SQLite only.
    #[arg(long, env = "IVR_TEST_POSTGRES_URL")]
    postgres: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn ivr(dir: &Path, port: u16, database: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ivr"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("IVR_CONFIG", dir.join("ivr.toml"))
        .env("IVR_LISTEN", format!("127.0.0.1:{port}"))
        .env("IVR_DATABASE_URL", database)
        .env("IVR_JOURNAL_PATH", dir.join("ivr.journal"))
        .env(
            "IVR_FLOWS_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/ivr_flows"),
        )
        .env("TWILIO_AUTH_TOKEN", "bench-auth-token-0123456789")
        .env("IVR_API_TOKEN", API_TOKEN)
        .env("RUST_LOG", "warn");
    cmd
}

struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `requests` answers to `req` (after 5 to warm up), each timed, sorted; and the last body.
/// Any answer but 200 stops the benchmark.
async fn timed(
    req: &reqwest::RequestBuilder,
    requests: usize,
) -> anyhow::Result<(Vec<Duration>, String)> {
    let mut times = Vec::with_capacity(requests);
    let mut body = String::new();
    for i in 0..requests + 5 {
        let req = req
            .try_clone()
            .ok_or_else(|| anyhow::anyhow!("request not cloneable"))?;
        let t = Instant::now();
        let res = req.send().await?;
        let status = res.status();
        body = res.text().await?;
        let took = t.elapsed();
        anyhow::ensure!(status == 200, "HTTP {status}: {body}");
        if i >= 5 {
            times.push(took);
        }
    }
    times.sort();
    Ok((times, body))
}

/// The `q` quantile of sorted times, in ms.
fn percentile(times: &[Duration], q: f64) -> f64 {
    ms(times[((q * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1])
}

/// A console session: adds a manager with `ivr users add` and signs in through the form;
/// the client sends the session cookie with every request.
async fn console_session(
    dir: &Path,
    port: u16,
    database: &str,
    base: &str,
) -> anyhow::Result<reqwest::Client> {
    use std::io::Write;
    let password = "bench console password";
    let mut add = ivr(dir, port, database)
        .args(["users", "add", "bench", "--role", "manager"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    add.stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("stdin"))?
        .write_all(format!("{password}\n").as_bytes())?;
    // On the PostgreSQL copy the account is there already (copied with the users).
    let _ = add.wait()?;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let cookie_of = |res: &reqwest::Response, name: &str| {
        res.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .and_then(|v| v.split(';').next())
            .map(str::to_owned)
    };
    let form = plain.get(format!("{base}/console/login")).send().await?;
    let login_cookie =
        cookie_of(&form, "ivr_login").ok_or_else(|| anyhow::anyhow!("no sign-in cookie"))?;
    let csrf = login_cookie
        .split_once('=')
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    let signed = plain
        .post(format!("{base}/console/login"))
        .header("cookie", login_cookie)
        .form(&[("name", "bench"), ("password", password), ("csrf", &csrf)])
        .send()
        .await?;
    let session =
        cookie_of(&signed, "ivr_session").ok_or_else(|| anyhow::anyhow!("not signed in"))?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("cookie", session.parse()?);
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// The report: printed as it goes, kept for the file.
#[derive(Default)]
struct Report(String);

impl Report {
    fn say(&mut self, line: String) {
        println!("{line}");
        self.0.push_str(&line);
        self.0.push('\n');
    }
}

/// The plans of the list queries, from the backend being measured.
enum Plans {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Plans {
    async fn calls(&self, q: &CallQuery) -> StoreResult<Vec<String>> {
        match self {
            Plans::Sqlite(s) => s.explain_calls(q).await,
            Plans::Postgres(s) => s.explain_calls(q).await,
        }
    }

    async fn tickets(&self, q: &TicketQuery) -> StoreResult<Vec<String>> {
        match self {
            Plans::Sqlite(s) => s.explain_tickets(q).await,
            Plans::Postgres(s) => s.explain_tickets(q).await,
        }
    }

    /// Whether a plan line reads a whole big table: SQLite's `SCAN` without an index,
    /// PostgreSQL's `Seq Scan` on a table that grows with the calls.
    fn is_scan(&self, line: &str) -> bool {
        match self {
            Plans::Sqlite(_) => line.starts_with("SCAN") && !line.contains("INDEX"),
            Plans::Postgres(_) => ["calls", "steps", "tickets", "webhooks", "notifications"]
                .iter()
                .any(|t| line.contains(&format!("Seq Scan on {t} "))),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let args = Args::parse();
    let (calls, requests) = if args.smoke {
        (args.calls.min(20_000), args.requests.min(20))
    } else {
        (args.calls, args.requests)
    };
    let dir = tempfile::Builder::new().prefix("ivr-apiload-").tempdir()?;
    std::fs::write(dir.path().join("ivr.toml"), "")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut report = Report::default();
    let db = dir.path().join("ivr.db");
    let sqlite = format!("sqlite://{}", db.display());

    let started = Instant::now();
    let seeded = ivr(dir.path(), port, &sqlite)
        .args(["seed", "--calls", &calls.to_string()])
        .stderr(Stdio::inherit())
        .output()?;
    anyhow::ensure!(seeded.status.success(), "ivr seed failed");
    let size = std::fs::metadata(&db)?.len() as f64 / 1e6;
    report.say(format!(
        "{} ({:.0} s; database {size:.0} MB)",
        String::from_utf8_lossy(&seeded.stdout).trim(),
        started.elapsed().as_secs_f64()
    ));

    // A cursor half-way down the keyset.
    let deep: (i64, String) = {
        let mut conn = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
            .await?
            .acquire()
            .await?
            .detach();
        sqlx::query_as(
            "SELECT started_at, call_sid FROM calls ORDER BY started_at DESC, call_sid DESC \
             LIMIT 1 OFFSET ?",
        )
        .bind((calls / 2) as i64)
        .fetch_one(&mut conn)
        .await?
    };
    let plans =
        Plans::Sqlite(SqliteStore::connect(&sqlite, ivr::config::SqliteSync::Normal).await?);
    let run = Run {
        dir: dir.path(),
        port,
        calls,
        requests,
        smoke: args.smoke,
        deep: &deep,
    };
    let mut met = run.pass("SQLite", &sqlite, &plans, &mut report).await?;
    drop(plans);

    match &args.postgres {
        Some(admin) => {
            use sqlx::Connection;
            let name = format!("ivr_apiload_{}", std::process::id());
            let mut admin_conn = sqlx::PgConnection::connect(admin).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin_conn)
                .await?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin_conn)
                .await?;
            let url = match admin.rsplit_once('/') {
                Some((server, _)) => format!("{server}/{name}"),
                None => anyhow::bail!("--postgres {admin:?} names no database"),
            };
            let started = Instant::now();
            let copied = ivr(dir.path(), port, &sqlite)
                .args(["migrate-data", "--from", &sqlite, "--to", &url])
                .output()?;
            anyhow::ensure!(
                copied.status.success(),
                "ivr migrate-data failed: {}",
                String::from_utf8_lossy(&copied.stderr)
            );
            let mut pg = sqlx::PgConnection::connect(&url).await?;
            let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
                .fetch_one(&mut pg)
                .await?;
            pg.close().await?;
            report.say(format!(
                "PostgreSQL: copied by ivr migrate-data in {:.0} s, VACUUM (ANALYZE) included (database {:.0} MB)",
                started.elapsed().as_secs_f64(),
                size as f64 / 1e6
            ));
            let plans = Plans::Postgres(PgStore::connect(&url, Default::default()).await?);
            let measured = run.pass("PostgreSQL", &url, &plans, &mut report).await;
            drop(plans);
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin_conn)
                .await?;
            met &= measured?;
        }
        None => report.say(
            "PostgreSQL: not run (give --postgres postgres://USER@HOST/DATABASE or set IVR_TEST_POSTGRES_URL)"
                .into(),
        ),
    }
    if let Some(out) = &args.out {
        std::fs::write(out, &report.0)?;
    }
    Ok(if met || args.smoke {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

/// What every pass shares.
struct Run<'a> {
    dir: &'a Path,
    port: u16,
    calls: u64,
    requests: usize,
    smoke: bool,
    deep: &'a (i64, String),
}

impl Run<'_> {
    /// The API queries and console pages on a server of `database`; whether the targets
    /// were met.
    async fn pass(
        &self,
        backend: &str,
        database: &str,
        plans: &Plans,
        report: &mut Report,
    ) -> anyhow::Result<bool> {
        let (port, calls, requests, deep) = (self.port, self.calls, self.requests, self.deep);
        report.say(format!("--- {backend} ---"));
        let server = Stop(ivr(self.dir, port, database).arg("serve").spawn()?);
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let until = Instant::now() + Duration::from_secs(30);
        while http.get(format!("{base}/healthz")).send().await.is_err() {
            anyhow::ensure!(Instant::now() < until, "the server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let week_end = Utc::now() - Days::days(180);
        let week_start = week_end - Days::days(7);
        let fmt = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let page = |q: CallQuery| CallQuery { limit: 50, ..q };
        let calls_queries: Vec<(&str, String, CallQuery)> = vec![
            ("first page", "".into(), page(CallQuery::default())),
            (
                "page half-way down",
                format!("cursor={}:{}", deep.0, deep.1),
                page(CallQuery {
                    after: Some((*deep).clone()),
                    ..CallQuery::default()
                }),
            ),
            (
                "line=store",
                "line=store".into(),
                page(CallQuery {
                    line: Some("store".into()),
                    ..CallQuery::default()
                }),
            ),
            (
                "one week, 6 months ago",
                format!("since={}&until={}", fmt(week_start), fmt(week_end)),
                page(CallQuery {
                    since: Some(week_start),
                    until: Some(week_end),
                    ..CallQuery::default()
                }),
            ),
            (
                "category=OOM",
                "category=OOM".into(),
                page(CallQuery {
                    category: Some("OOM".into()),
                    ..CallQuery::default()
                }),
            ),
            (
                "line+week+category",
                format!(
                    "line=store&since={}&until={}&category=Shopping%20Dollars",
                    fmt(week_start),
                    fmt(week_end)
                ),
                page(CallQuery {
                    line: Some("store".into()),
                    since: Some(week_start),
                    until: Some(week_end),
                    category: Some("Shopping Dollars".into()),
                    ..CallQuery::default()
                }),
            ),
        ];
        let mut rows: Vec<(String, String, Vec<String>)> = Vec::new();
        for (name, query, q) in &calls_queries {
            let plan = plans.calls(q).await?;
            rows.push((
                name.to_string(),
                format!("/api/calls?limit=50&{query}"),
                plan,
            ));
        }
        for (name, query, q) in [
            (
                "tickets open, Initial",
                "status=open&category=Initial",
                TicketQuery {
                    status: Some("open".into()),
                    category: Some("Initial".into()),
                    limit: 50,
                    ..TicketQuery::default()
                },
            ),
            (
                "tickets overdue",
                "overdue=true",
                TicketQuery {
                    overdue_at: Some(Utc::now()),
                    limit: 50,
                    ..TicketQuery::default()
                },
            ),
        ] {
            let plan = plans.tickets(&q).await?;
            rows.push((
                name.to_string(),
                format!("/api/tickets?limit=50&{query}"),
                plan,
            ));
        }
        rows.push((
            "one call's detail".into(),
            format!("/api/calls/{}", deep.1),
            Vec::new(),
        ));

        let mut worst = 0.0f64;
        for (name, path, plan) in &rows {
            let api = http.get(format!("{base}{path}")).bearer_auth(API_TOKEN);
            let (times, body) = timed(&api, requests).await?;
            let body: serde_json::Value = serde_json::from_str(&body)?;
            let items = ["calls", "tickets", "steps"]
                .iter()
                .find_map(|k| body.get(k).and_then(|v| v.as_array()).map(Vec::len))
                .unwrap_or(0);
            let p = |q| percentile(&times, q);
            worst = worst.max(p(0.95));
            report.say(format!(
                "{name:<24} {items:>3} rows  p50 {:>6.2} ms  p95 {:>6.2} ms  max {:>6.2} ms   GET {path}",
                p(0.5),
                p(0.95),
                p(1.0)
            ));
            for line in plan {
                report.say(format!("{:<30}plan: {line}", ""));
            }
        }
        // The console's pages, signed in as a manager, as a browser asks for them.
        let console = console_session(self.dir, port, database, &base).await?;
        let day = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%d").to_string();
        let console_pages: Vec<(&str, String)> = vec![
            ("console: calls", "/console/calls".into()),
            (
                "console: calls, page half-way",
                format!("/console/calls?cursor={}%3A{}", deep.0, deep.1),
            ),
            (
                "console: calls, a store",
                "/console/calls?line=store&store=Store+1".into(),
            ),
            (
                "console: calls, a week",
                format!(
                    "/console/calls?from={}&to={}&category=OOM",
                    day(week_start),
                    day(week_end)
                ),
            ),
            (
                "console: calls, caller",
                "/console/calls?caller=1234".into(),
            ),
            ("console: a call", format!("/console/calls/{}", deep.1)),
            ("console: tickets open", "/console/tickets".into()),
            (
                "console: tickets overdue",
                "/console/tickets?tab=overdue".into(),
            ),
            (
                "console: tickets resolved",
                "/console/tickets?tab=resolved".into(),
            ),
            ("console: tickets mine", "/console/tickets?tab=mine".into()),
            ("console: a ticket", "/console/tickets/GC-000100".into()),
            ("console: insights, 7 days", "/console/insights".into()),
            ("console: flow pictures", "/console/flows".into()),
            (
                "console: insights, 92 days",
                format!(
                    "/console/insights?from={}&to={}",
                    day(Utc::now() - Days::days(91)),
                    day(Utc::now())
                ),
            ),
        ];
        let mut worst_page = 0.0f64;
        for (name, path) in &console_pages {
            let (times, _) = timed(&console.get(format!("{base}{path}")), requests).await?;
            let p = |q| percentile(&times, q);
            worst_page = worst_page.max(p(0.95));
            report.say(format!(
                "{name:<30} p50 {:>6.2} ms  p95 {:>6.2} ms  max {:>6.2} ms   GET {path}",
                p(0.5),
                p(0.95),
                p(1.0)
            ));
        }
        let pages_met = worst_page <= 50.0;
        report.say(format!(
            "console pages: worst p95 {worst_page:.2} ms over {calls} calls{}",
            if self.smoke {
                String::new()
            } else {
                format!(
                    "; target (p95 <= 50 ms) {}",
                    if pages_met { "met" } else { "MISSED" }
                )
            }
        ));

        let scans = rows
            .iter()
            .flat_map(|r| r.2.iter())
            .filter(|l| plans.is_scan(l))
            .count();
        let met = worst < 20.0 && scans == 0 && pages_met;
        report.say(format!(
            "worst p95 {worst:.2} ms over {calls} calls; table scans without an index: {scans}{}",
            if self.smoke {
                String::new()
            } else {
                format!(
                    "; target (p95 < 20 ms, indexes only) {}",
                    if met { "met" } else { "MISSED" }
                )
            }
        ));
        drop(server);
        Ok(met)
    }
}
