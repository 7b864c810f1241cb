//! The SQL of every store operation, written once for SQLite and
//! PostgreSQL (they share the dialect Sesame uses; `$user_lock` is what
//! differs), one file per kind of data. `impl_store!` implements every
//! store trait for a store type with a `pool` and `announce`.

pub(super) mod device;
pub(super) mod keys;
pub(super) mod limits;
pub(super) mod oidc;
pub(super) mod passkeys;
pub(super) mod pending;
pub(super) mod sessions;
pub(super) mod users;

/// The ids among `$ids` that `$select` (a `SELECT id ... AND id IN` with
/// the list left off) finds, in bounded statements: SQLite allows 32,766
/// parameters, and a short list plans well on both.
macro_rules! ids_among {
    ($pool:expr, $select:literal, $ids:expr) => {{
        let mut found = Vec::new();
        for chunk in $ids.chunks(500) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(concat!($select, " ({})"), marks.join(", "));
            let mut q = sqlx::query_scalar::<_, String>(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            found.extend(q.fetch_all($pool).await?);
        }
        found
    }};
}
pub(in crate::store) use ids_among;

/// Implements `Store` for `$store`, whose `pool` field is a sqlx pool.
macro_rules! impl_store {
    // `$user_lock`: what locks a user row read by a statement that depends
    // on it (`" FOR SHARE"` where the store has row locks).
    ($store:ty, $user_lock:literal) => {
        $crate::store::queries::users::impl_user_store!($store);
        $crate::store::queries::pending::impl_pending_store!($store);
        $crate::store::queries::device::impl_device_request_store!($store);
        $crate::store::queries::sessions::impl_session_store!($store, $user_lock);
        $crate::store::queries::sessions::impl_handoff_store!($store);
        $crate::store::queries::oidc::impl_oidc_store!($store);
        $crate::store::queries::limits::impl_rate_limit_store!($store);
        $crate::store::queries::keys::impl_key_store!($store);
        $crate::store::queries::passkeys::impl_passkey_store!($store);

        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            async fn ensure_secret(&self, name: &str, fresh: &[u8], now: i64) -> StoreResult<Vec<u8>> {
                sqlx::query("INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
                    .bind(name)
                    .bind(fresh)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(sqlx::query_scalar("SELECT value FROM secrets WHERE name = $1")
                    .bind(name)
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn counts(&self, now: i64) -> StoreResult<$crate::store::Counts> {
                let sessions: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL AND expires_at > $1",
                )
                .bind(now)
                .fetch_one(&self.pool)
                .await?;
                let pending_sign_ins: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM pending_logins WHERE consumed_at IS NULL AND expires_at > $1",
                )
                .bind(now)
                .fetch_one(&self.pool)
                .await?;
                Ok($crate::store::Counts { sessions, pending_sign_ins })
            }

            async fn feed_invalidations(&self, sink: &(dyn Fn(Invalidation) + Send + Sync)) {
                self.listen(sink).await
            }
        }
    };
}
pub(in crate::store) use impl_store;
