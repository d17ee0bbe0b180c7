//! The database a test's server runs on. A suite compiled as its own test binary runs on
//! SQLite (a fresh file in the test's directory); `tests/on_postgres.rs` includes the same
//! suites again, and there each test gets a PostgreSQL database of its own, made for it
//! and dropped after it, on the server named by `IVR_TEST_POSTGRES_URL` (which `.ci/run`
//! sets; `postgres://postgres@127.0.0.1:5432/postgres` when unset).

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether this copy of the harness belongs to `tests/on_postgres.rs`: its module path
/// starts with that crate's name (`on_postgres::api::common::database`).
pub fn on_postgres() -> bool {
    module_path!().starts_with("on_postgres::")
}

/// The PostgreSQL server the tests make their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("IVR_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A test's database: a SQLite file, or a PostgreSQL database dropped with this value.
#[derive(Debug)]
pub struct TestDb {
    /// What `IVR_DATABASE_URL` is set to.
    pub url: String,
    /// The PostgreSQL server (its admin URL) and the database's name, to drop.
    postgres: Option<(String, String)>,
}

impl TestDb {
    /// A new, empty database: `dir/ivr.db` on SQLite (or `file` when given), a new
    /// database on PostgreSQL.
    pub async fn new(dir: &Path, file: Option<&Path>) -> TestDb {
        if !on_postgres() {
            let path = file
                .map(Path::to_path_buf)
                .unwrap_or_else(|| dir.join("ivr.db"));
            return TestDb {
                url: format!("sqlite://{}", path.display()),
                postgres: None,
            };
        }
        assert!(
            file.is_none(),
            "a test that brings its own SQLite file runs on SQLite only"
        );
        Self::new_postgres().await
    }

    /// A new, empty PostgreSQL database, whichever suite asks.
    pub async fn new_postgres() -> TestDb {
        Self::on_server(&postgres_admin_url()).await
    }

    /// A new, empty database on the PostgreSQL server of `admin` (a URL naming a
    /// database that exists there), dropped with this value.
    pub async fn on_server(admin: &str) -> TestDb {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ivr_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..)
        );
        let admin = admin.to_string();
        let mut conn = connect(&admin).await;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE on {admin}: {e}"));
        let url = match admin.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("IVR_TEST_POSTGRES_URL {admin:?} names no database"),
        };
        TestDb {
            url,
            postgres: Some((admin, name)),
        }
    }

    /// A database that exists already (and stays): a test's own cluster's.
    pub fn existing(url: &str) -> TestDb {
        TestDb {
            url: url.to_string(),
            postgres: None,
        }
    }

    /// The first column of the first row of `sql` (a count), read on this database.
    pub async fn count(&self, sql: &str) -> i64 {
        use sqlx::Connection;
        if self.is_postgres() {
            let mut conn = connect(&self.url).await;
            let n = sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let _ = conn.close().await;
            n
        } else {
            use std::str::FromStr;
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(&self.url)
                .expect("sqlite url")
                .read_only(true);
            let mut conn = sqlx::sqlite::SqliteConnection::connect_with(&options)
                .await
                .expect("open the SQLite file");
            let n = sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let _ = conn.close().await;
            n
        }
    }

    /// Whether this is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        !self.url.starts_with("sqlite:")
    }
}

async fn connect(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is needed at {url} (IVR_TEST_POSTGRES_URL; .ci/run starts it): {e}")
    })
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else {
            return;
        };
        // On a thread of its own: the test's runtime may be the one dropping this.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                use sqlx::Connection;
                // A server a test stopped for good is not waited for.
                let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await else {
                    return Ok(Default::default());
                };
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop a test database: {e}");
        }
    }
}
