//! SQLite implementation of [`super::Store`] through sqlx: the embedded
//! default. WAL mode with a busy timeout; migrations applied at open. The
//! operations themselves are shared with PostgreSQL (`shared.rs`); every
//! single-use step is one `UPDATE ... RETURNING`, atomic in SQLite itself.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::SqlitePool;

use super::queries::impl_store;
use super::shared;
use super::{
    Ceremony, CodeTaken, Handoff, Invalidation, KeyRecord, NewToken, OidcCode, OidcGrant,
    PasskeyRecord, PendingLogin, RefreshUse, SessionRecord, StoreError, StoreResult, User,
};
use crate::email::Email;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/sqlite/0001_init.sql")),
    (2, include_str!("migrations/sqlite/0002_keys.sql")),
    (3, include_str!("migrations/sqlite/0003_rate_limits.sql")),
    (4, include_str!("migrations/sqlite/0004_passkeys.sql")),
    (5, include_str!("migrations/sqlite/0005_portal.sql")),
    (6, include_str!("migrations/sqlite/0006_oidc.sql")),
    (7, include_str!("migrations/sqlite/0007_cross_device.sql")),
    (
        8,
        include_str!("migrations/sqlite/0008_device_requests.sql"),
    ),
    (9, include_str!("migrations/sqlite/0009_known_browsers.sql")),
    (
        10,
        include_str!("migrations/sqlite/0010_session_devices.sql"),
    ),
];

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn open(path: &Path) -> StoreResult<SqliteStore> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Unavailable(format!("cannot create folder {}: {e}", dir.display()))
                })?;
            }
        }
        let opts = SqliteConnectOptions::from_str("sqlite:")
            .map_err(StoreError::from)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            // 512 KiB of page cache per connection instead of 2 MiB: the hot
            // path reads the store about once a minute per session, and the
            // OS page cache serves the rest.
            .pragma("cache_size", "-512");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> StoreResult<()> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
            .execute(&self.pool)
            .await?;
        for (version, sql) in MIGRATIONS {
            // BEGIN IMMEDIATE: a second process migrating at the same time waits.
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if done.is_none() {
                sqlx::raw_sql(sql).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                    .bind(version)
                    .bind(shared::now_secs())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }
}

/// What migrations the file at `path` has, read only; `None` if there is
/// no file (the first start makes it).
pub(super) async fn inspect(path: &Path) -> StoreResult<Option<super::Inspection>> {
    if !path.exists() {
        return Ok(None);
    }
    let opts = SqliteConnectOptions::from_str("sqlite:")
        .map_err(StoreError::from)?
        .filename(path)
        .read_only(true)
        .create_if_missing(false);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(opts)
        .await
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    let has_table: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
    )
    .fetch_optional(&pool)
    .await?;
    let applied: Vec<i64> = match has_table {
        Some(_) => {
            sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
                .fetch_all(&pool)
                .await?
        }
        None => vec![],
    };
    let mut inspection = super::Inspection::of(MIGRATIONS, applied, None);
    if inspection.current() {
        inspection.keys_created = sqlx::query_scalar("SELECT created_at FROM keys")
            .fetch_all(&pool)
            .await?;
    }
    pool.close().await;
    Ok(Some(inspection))
}

impl_store!(SqliteStore, "");

impl SqliteStore {
    /// One process owns a SQLite file: nobody else to tell.
    async fn announce(&self, _what: &Invalidation) {}

    async fn listen(&self, _sink: &(dyn Fn(Invalidation) + Send + Sync)) {}
}
