//! PostgreSQL implementation of [`super::Store`] for running several
//! gateways on one database. Same operations as SQLite (`shared.rs`);
//! migrations run under an advisory lock so that instances starting
//! together apply them once.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::PgPool;

use super::queries::impl_store;
use super::shared;
use super::{
    Ceremony, CodeTaken, Handoff, Invalidation, KeyRecord, NewToken, OidcCode, OidcGrant,
    PasskeyRecord, PendingLogin, RefreshUse, SessionRecord, StoreError, StoreResult, User,
};
use crate::email::Email;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/postgres/0001_init.sql")),
    (2, include_str!("migrations/postgres/0002_keys.sql")),
    (3, include_str!("migrations/postgres/0003_rate_limits.sql")),
    (4, include_str!("migrations/postgres/0004_passkeys.sql")),
    (5, include_str!("migrations/postgres/0005_portal.sql")),
    (6, include_str!("migrations/postgres/0006_oidc.sql")),
    (7, include_str!("migrations/postgres/0007_cross_device.sql")),
    (
        8,
        include_str!("migrations/postgres/0008_device_requests.sql"),
    ),
    (
        9,
        include_str!("migrations/postgres/0009_known_browsers.sql"),
    ),
    (
        10,
        include_str!("migrations/postgres/0010_session_devices.sql"),
    ),
];
/// Arbitrary key for `pg_advisory_xact_lock` while migrating.
const MIGRATION_LOCK: i64 = 0x5e5a_3e00;

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn open(url: &str) -> StoreResult<PgStore> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad PostgreSQL URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            // Short: a request must never hang on a store that is down.
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        let store = PgStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        for (version, sql) in MIGRATIONS {
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
        }
        tx.commit().await?;
        Ok(())
    }
}

/// What migrations the database at `url` has, and how far its clock is
/// from `now` (this host's); reads only.
pub(super) async fn inspect(url: &str, now: i64) -> StoreResult<super::Inspection> {
    let opts = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Unavailable(format!("bad PostgreSQL URL: {e}")))?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(opts)
        .await
        .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
    let has_table: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('schema_migrations')::text")
            .fetch_one(&pool)
            .await?;
    let applied: Vec<i64> = match has_table {
        Some(_) => {
            sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
                .fetch_all(&pool)
                .await?
        }
        None => vec![],
    };
    let theirs: f64 = sqlx::query_scalar("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8")
        .fetch_one(&pool)
        .await?;
    let mut inspection = super::Inspection::of(MIGRATIONS, applied, Some(theirs - now as f64));
    if inspection.current() {
        inspection.keys_created = sqlx::query_scalar("SELECT created_at FROM keys")
            .fetch_all(&pool)
            .await?;
    }
    pool.close().await;
    Ok(inspection)
}

impl_store!(PgStore, " FOR SHARE");

/// The PostgreSQL channel on which instances tell each other what to drop.
const CHANNEL: &str = "sesame_invalidate";

impl PgStore {
    /// Tell every instance (this one included) to drop something cached.
    /// Best effort: the cache lifetime bounds what a lost notice costs.
    async fn announce(&self, what: &Invalidation) {
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(what.payload())
            .execute(&self.pool)
            .await
        {
            tracing::warn!(error = %e, "could not notify other instances");
        }
    }

    async fn listen(&self, sink: &(dyn Fn(Invalidation) + Send + Sync)) {
        loop {
            let mut listener = match PgListener::connect_with(&self.pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for invalidations; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::warn!(error = %e, "cannot listen for invalidations; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            // Whatever happened while not listening is unknown.
            sink(Invalidation::All);
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => match Invalidation::parse(n.payload()) {
                        Some(what) => sink(what),
                        None => tracing::warn!(
                            "ignored a notice on {CHANNEL} that Sesame does not send"
                        ),
                    },
                    // Connection lost; the listener reconnects on the next call.
                    Ok(None) => sink(Invalidation::All),
                    Err(e) => {
                        tracing::warn!(error = %e, "invalidation feed failed; reconnecting");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                }
            }
        }
    }
}
