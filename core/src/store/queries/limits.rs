//! The SQL of [`RateLimitStore`](crate::store::RateLimitStore), shared by SQLite and PostgreSQL
//! (`impl_store!` in `mod.rs` expands it for each): Rate-limit windows: one upsert per hit, counted atomically.

macro_rules! impl_rate_limit_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::RateLimitStore for $store {
            async fn count_hit(&self, key: &str, window_start: i64) -> StoreResult<i64> {
                Ok(sqlx::query_scalar(
                    "INSERT INTO rate_limits (key, window_start, hits) VALUES ($1, $2, 1) \
                     ON CONFLICT (key, window_start) DO UPDATE SET hits = rate_limits.hits + 1 RETURNING hits",
                )
                .bind(key)
                .bind(window_start)
                .fetch_one(&self.pool)
                .await?)
            }

            async fn hits(&self, key: &str, window_start: i64) -> StoreResult<i64> {
                Ok(sqlx::query_scalar("SELECT hits FROM rate_limits WHERE key = $1 AND window_start = $2")
                    .bind(key)
                    .bind(window_start)
                    .fetch_optional(&self.pool)
                    .await?
                    .unwrap_or(0))
            }

            async fn sweep_rate_limits(&self, before: i64) -> StoreResult<()> {
                sqlx::query("DELETE FROM rate_limits WHERE window_start < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        }
    };
}
pub(in crate::store) use impl_rate_limit_store;
