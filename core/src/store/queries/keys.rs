//! The SQL of [`KeyStore`](crate::store::KeyStore), shared by SQLite and PostgreSQL
//! (`impl_store!` in `mod.rs` expands it for each): Key records: inserted once, rotated and retired, announced to the other instances.

macro_rules! impl_key_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::KeyStore for $store {
            async fn keys(&self) -> StoreResult<Vec<KeyRecord>> {
                sqlx::query(concat!("SELECT ", $crate::store::shared::key_cols!(), " FROM keys"))
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(shared::key)
                    .collect()
            }

            async fn ensure_key(&self, k: &KeyRecord) -> StoreResult<()> {
                sqlx::query("INSERT INTO keys (kid, purpose, secret, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (kid) DO NOTHING")
                    .bind(&k.kid)
                    .bind(k.purpose.as_str())
                    .bind(&k.secret)
                    .bind(k.created_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn add_key(&self, k: &KeyRecord) -> StoreResult<()> {
                sqlx::query("INSERT INTO keys (kid, purpose, secret, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(&k.kid)
                    .bind(k.purpose.as_str())
                    .bind(&k.secret)
                    .bind(k.created_at)
                    .execute(&self.pool)
                    .await?;
                self.announce(&Invalidation::Keys).await;
                Ok(())
            }

            async fn remove_key(&self, kid: &str) -> StoreResult<bool> {
                let gone = sqlx::query("DELETE FROM keys WHERE kid = $1")
                    .bind(kid)
                    .execute(&self.pool)
                    .await?
                    .rows_affected()
                    > 0;
                if gone {
                    self.announce(&Invalidation::Keys).await;
                }
                Ok(gone)
            }
        }
    };
}
pub(in crate::store) use impl_key_store;
