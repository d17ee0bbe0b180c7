//! The same full calls on PostgreSQL, beside SQLite in the same run: one instance, then two
//! instances on one database with the callers spread over them. For each: full steps at
//! full speed, then at the paced rate (steps/s, p99), and after a graceful stop the records
//! checked against what was acknowledged (lost records).

use super::*;

/// What one PostgreSQL set-up measured.
pub struct Measured {
    /// The report's lines.
    pub lines: Vec<String>,
    /// Errors over its phases.
    pub errors: u64,
    /// Whether the records matched what was acknowledged.
    pub records_ok: bool,
}

/// Runs the PostgreSQL phases on new databases of the server at `admin` (dropped after).
pub async fn phases(
    bin: &Path,
    dir: &Path,
    args: &Args,
    admin: &str,
    (warmup, measure, rate): (u64, u64, u64),
) -> anyhow::Result<Measured> {
    let mut out = Measured {
        lines: Vec::new(),
        errors: 0,
        records_ok: true,
    };
    for instances in [1usize, 2] {
        let name = format!("ivr_bench_{}_{instances}", std::process::id());
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
        let measured = one_setup(bin, dir, args, &url, instances, (warmup, measure, rate)).await;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin_conn)
            .await?;
        admin_conn.close().await?;
        let (lines, errors, records_ok) = measured?;
        out.lines.extend(lines);
        out.errors += errors;
        out.records_ok &= records_ok;
    }
    Ok(out)
}

async fn one_setup(
    bin: &Path,
    dir: &Path,
    args: &Args,
    url: &str,
    instances: usize,
    (warmup, measure, rate): (u64, u64, u64),
) -> anyhow::Result<(Vec<String>, u64, bool)> {
    let mut servers = Vec::new();
    for i in 0..instances {
        let dir = dir.join(format!("postgres-{instances}-{i}"));
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let child = Server::command(bin, &dir, &args.synchronous, addr)?
            .env("IVR_DATABASE_URL", url)
            .env("IVR_JOURNAL_PATH", dir.join("ivr.journal"))
            .arg("serve")
            .spawn()?;
        servers.push(Server {
            child,
            addr,
            public: format!("http://{addr}"),
        });
    }
    for s in &servers {
        until_ready(s.addr).await?;
    }
    let label = match instances {
        1 => "PostgreSQL, 1 instance".to_string(),
        n => format!("PostgreSQL, {n} instances"),
    };
    let mut runner = Runner::new(&servers[0], &servers[0], args);
    runner.spread = servers.iter().collect();
    runner.measure(warmup, None, false).await;
    let (full, cpu) = runner.measure(measure, None, false).await;
    let (paced, _) = runner.measure(measure, Some(rate), false).await;
    let mut lines = vec![
        describe(&format!("{label}, max"), &full, true),
        format!(
            "{} (the first instance's)",
            cpu.describe(full.requests, "step")
        ),
        describe(&format!("{label}, {rate}/s"), &paced, true),
    ];
    for f in [&full, &paced] {
        if let Some(e) = &f.first_error {
            lines.push(format!("first error: {e}"));
        }
    }
    let acked = std::mem::take(&mut runner.acked);
    drop(runner);
    let mut stopped_ok = true;
    for s in servers {
        stopped_ok &= s.stop()?.success();
    }
    let check = check_postgres(url, &acked).await?;
    let records_ok = stopped_ok && check.ends_with("exactly as acknowledged");
    lines.push(format!("{label}, database after a graceful stop: {check}"));
    Ok((lines, full.errors + paced.errors, records_ok))
}

/// What the PostgreSQL database holds of the run's calls, compared with what was
/// acknowledged (as [`check_database`] does for SQLite).
async fn check_postgres(url: &str, acked: &HashMap<String, Acks>) -> anyhow::Result<String> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let mut found: BTreeMap<String, Acks> = BTreeMap::new();
    for row in sqlx::query(
        "SELECT c.call_sid, count(*) FROM webhooks w JOIN calls c ON c.id = w.call_id GROUP BY c.call_sid",
    )
    .fetch_all(&mut conn)
    .await?
    {
        found.entry(row.try_get(0)?).or_default().hooks = row.try_get::<i64, _>(1)? as u32;
    }
    for row in sqlx::query("SELECT call_sid, status FROM calls")
        .fetch_all(&mut conn)
        .await?
    {
        let status: String = row.try_get(1)?;
        found.entry(row.try_get(0)?).or_default().completed = status == "completed";
    }
    for row in sqlx::query("SELECT call_sid, count(*) FROM tickets GROUP BY call_sid")
        .fetch_all(&mut conn)
        .await?
    {
        let n: i64 = row.try_get(1)?;
        if n != 1 {
            anyhow::bail!("a call has {n} tickets");
        }
        found.entry(row.try_get(0)?).or_default().ticket = true;
    }
    let steps: i64 = sqlx::query_scalar("SELECT count(*) FROM steps")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(compare(acked, &found, steps, "not applicable"))
}
