//! The SQL of [`PasskeyStore`](crate::store::PasskeyStore), shared by SQLite and PostgreSQL
//! (`impl_store!` in `mod.rs` expands it for each): Passkeys (the counter moved by compare and swap) and WebAuthn ceremonies (taken once).

macro_rules! impl_passkey_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::PasskeyStore for $store {
            async fn add_passkey(&self, p: &PasskeyRecord) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO passkeys (id, user_id, name, credential, counter, backup_eligible, backup_state, created_at, last_used_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(p.id.as_str())
                .bind(p.user_id.as_str())
                .bind(&p.name)
                .bind(&p.credential)
                .bind(p.counter)
                .bind(p.backup_eligible as i64)
                .bind(p.backup_state as i64)
                .bind(p.created_at)
                .bind(p.last_used_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn passkeys_of(&self, user_id: &str) -> StoreResult<Vec<PasskeyRecord>> {
                sqlx::query(concat!("SELECT ", $crate::store::shared::passkey_cols!(), " FROM passkeys WHERE user_id = $1 ORDER BY created_at, id"))
                    .bind(user_id)
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(shared::passkey)
                    .collect()
            }

            async fn passkey(&self, id: &str) -> StoreResult<Option<PasskeyRecord>> {
                sqlx::query(concat!("SELECT ", $crate::store::shared::passkey_cols!(), " FROM passkeys WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(shared::passkey)
                    .transpose()
            }

            async fn rename_passkey(&self, user_id: &str, id: &str, name: &str) -> StoreResult<bool> {
                let r = sqlx::query("UPDATE passkeys SET name = $1 WHERE id = $2 AND user_id = $3")
                    .bind(name)
                    .bind(id)
                    .bind(user_id)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn delete_passkey(&self, user_id: &str, id: &str) -> StoreResult<bool> {
                let r = sqlx::query("DELETE FROM passkeys WHERE id = $1 AND user_id = $2")
                    .bind(id)
                    .bind(user_id)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn list_passkeys(&self) -> StoreResult<Vec<PasskeyRecord>> {
                sqlx::query(concat!("SELECT ", $crate::store::shared::passkey_cols!(), " FROM passkeys ORDER BY user_id, created_at, id"))
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(shared::passkey)
                    .collect()
            }

            async fn revoke_passkey(&self, id: &str) -> StoreResult<bool> {
                let r = sqlx::query("DELETE FROM passkeys WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn passkey_used(&self, p: &PasskeyRecord, seen_counter: i64, now: i64) -> StoreResult<bool> {
                let r = sqlx::query(
                    "UPDATE passkeys SET credential = $1, counter = $2, backup_eligible = $3, backup_state = $4, last_used_at = $5 \
                     WHERE id = $6 AND counter = $7",
                )
                .bind(&p.credential)
                .bind(p.counter)
                .bind(p.backup_eligible as i64)
                .bind(p.backup_state as i64)
                .bind(now)
                .bind(p.id.as_str())
                .bind(seen_counter)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn put_ceremony(&self, c: &Ceremony) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO ceremonies (id, kind, user_id, state, return_to, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&c.id)
                .bind(c.kind.as_str())
                .bind(c.user_id.as_deref())
                .bind(&c.state)
                .bind(&c.return_to)
                .bind(c.expires_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn take_ceremony(&self, id: &str, now: i64) -> StoreResult<Option<Ceremony>> {
                let row = sqlx::query(concat!("DELETE FROM ceremonies WHERE id = $1 RETURNING ", $crate::store::shared::ceremony_cols!()))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.as_ref().map(shared::ceremony).transpose()?.filter(|c| c.expires_at > now))
            }
        }
    };
}
pub(in crate::store) use impl_passkey_store;
