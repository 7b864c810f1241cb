//! The store a test runs on: a SQLite file in a folder of its own, or a
//! PostgreSQL schema of its own (dropped at the end), chosen per test by
//! `store_tests!`.

use super::*;

/// Which store a test runs against; set per test by `store_tests!`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

tokio::task_local! {
    static BACKEND: Backend;
}

pub async fn with_store<F: std::future::Future<Output = ()>>(backend: Backend, test: F) {
    BACKEND.scope(backend, test).await
}

pub fn backend() -> Backend {
    BACKEND.try_with(|b| *b).unwrap_or(Backend::Sqlite)
}

pub fn postgres_base_url() -> String {
    std::env::var("SESAME_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A store for one test: a SQLite file in its own folder, or a schema of
/// its own in the test PostgreSQL database (dropped when the test ends).
pub struct TestStore {
    pub url: String,
    _dir: tempfile::TempDir,
    schema: Option<String>,
}

impl TestStore {
    pub async fn new(backend: Backend) -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => TestStore {
                url: format!("sqlite://{}", dir.path().join("sesame.db").display()),
                _dir: dir,
                schema: None,
            },
            Backend::Postgres => {
                let base = postgres_base_url();
                let schema = format!(
                    "t_{}",
                    sesame::keys::random_id(9)
                        .to_lowercase()
                        .replace(['-', '_'], "x")
                );
                let pool = sqlx::PgPool::connect(&base).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is not reachable at {base} ({e}). Start it (e.g. `pg_ctlcluster 15 main start`) \
                         or set SESAME_TEST_POSTGRES_URL."
                    )
                });
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
                let sep = if base.contains('?') { '&' } else { '?' };
                TestStore {
                    url: format!("{base}{sep}options[search_path]={schema}"),
                    _dir: dir,
                    schema: Some(schema),
                }
            }
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn config(&self) -> sesame::config::StoreConfig {
        let text = format!("[store]\nurl = \"{}\"\n[[site]]\npublic_url = \"http://localhost\"\nupstream = [\"127.0.0.1:1\"]\n", self.url);
        sesame::config::Config::from_toml(&text).unwrap().store
    }

    pub async fn open(&self) -> sesame::store::DynStore {
        sesame::store::open(&self.config()).await.unwrap()
    }

    /// How many rows `table` has, read with SQL of the test's own.
    pub async fn rows(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        if self.schema.is_some() {
            let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
            let n = sqlx::query_scalar(&sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        } else {
            let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
            let n = sqlx::query_scalar(&sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
    }

    /// Run `sql` with a connection of the test's own (as an operator's
    /// hand edit, or a restored backup, would change the database).
    pub async fn execute(&self, sql: &str) {
        if self.schema.is_some() {
            let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        } else {
            let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }

    /// Wait (up to 20 s) until `table` has at least `n` rows.
    pub async fn wait_for_rows(&self, table: &str, n: i64) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if self.rows(table).await >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{table} did not reach {n} rows within 20 s");
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            let base = postgres_base_url();
            // Off the test's runtime: a thread with its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(pool) = sqlx::PgPool::connect(&base).await {
                        let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                            .execute(&pool)
                            .await;
                    }
                });
            })
            .join();
        }
    }
}
