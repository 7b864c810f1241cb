//! The SQL of [`UserStore`](crate::store::UserStore), shared by SQLite and PostgreSQL
//! (`impl_store!` in `mod.rs` expands it for each): Users: adding, finding, disabling and removing them (revoking their sessions in the same transaction), their groups and WebAuthn handle.

macro_rules! impl_user_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::UserStore for $store {
            async fn add_user(&self, u: &User) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO users (id, email, name, groups_json, disabled, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(u.id.as_str())
                .bind(u.email.as_str())
                .bind(&u.name)
                .bind(shared::groups_json(&u.groups))
                .bind(u.disabled as i64)
                .bind(u.created_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn user_by_email(&self, email: &Email) -> StoreResult<Option<User>> {
                sqlx::query("SELECT id, email, name, groups_json, disabled, created_at FROM users WHERE email = $1")
                    .bind(email.as_str())
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(shared::user)
                    .transpose()
            }

            async fn list_users(&self) -> StoreResult<Vec<User>> {
                sqlx::query("SELECT id, email, name, groups_json, disabled, created_at FROM users ORDER BY email")
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(shared::user)
                    .collect()
            }

            async fn remove_user(&self, email: &Email, now: i64) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let id: Option<String> = sqlx::query_scalar("DELETE FROM users WHERE email = $1 RETURNING id")
                    .bind(email.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(id) = &id {
                    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
                        .bind(now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                if let Some(id) = &id {
                    self.announce(&Invalidation::User(id.clone())).await;
                }
                Ok(id.is_some())
            }

            async fn set_user_disabled(&self, email: &Email, disabled: bool, now: i64) -> StoreResult<bool> {
                // One transaction: no session is created for the user
                // between the flag and the revocation (see create_session).
                let mut tx = self.pool.begin().await?;
                let id: Option<String> = sqlx::query_scalar("UPDATE users SET disabled = $1 WHERE email = $2 RETURNING id")
                    .bind(disabled as i64)
                    .bind(email.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                if let (Some(id), true) = (&id, disabled) {
                    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
                        .bind(now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                if let (Some(id), true) = (&id, disabled) {
                    self.announce(&Invalidation::User(id.clone())).await;
                }
                Ok(id.is_some())
            }

            async fn set_user_groups(&self, email: &Email, groups: &[String]) -> StoreResult<bool> {
                let json = shared::groups_json(groups);
                let mut tx = self.pool.begin().await?;
                let id: Option<String> = sqlx::query_scalar("UPDATE users SET groups_json = $1 WHERE email = $2 RETURNING id")
                    .bind(&json)
                    .bind(email.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(id) = &id {
                    sqlx::query("UPDATE sessions SET groups_json = $1 WHERE user_id = $2")
                        .bind(&json)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                if let Some(id) = &id {
                    self.announce(&Invalidation::User(id.clone())).await;
                }
                Ok(id.is_some())
            }

            async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
                sqlx::query("SELECT id, email, name, groups_json, disabled, created_at FROM users WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(shared::user)
                    .transpose()
            }

            async fn user_by_handle(&self, handle: &str) -> StoreResult<Option<User>> {
                sqlx::query("SELECT id, email, name, groups_json, disabled, created_at FROM users WHERE handle = $1")
                    .bind(handle)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(shared::user)
                    .transpose()
            }

            async fn ensure_user_handle(&self, user_id: &str, fresh: &str) -> StoreResult<String> {
                sqlx::query("UPDATE users SET handle = $1 WHERE id = $2 AND handle IS NULL")
                    .bind(fresh)
                    .bind(user_id)
                    .execute(&self.pool)
                    .await?;
                let handle: Option<Option<String>> = sqlx::query_scalar("SELECT handle FROM users WHERE id = $1")
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await?;
                handle.flatten().ok_or_else(|| StoreError::Other("no such user".into()))
            }

            async fn remember_browser(&self, user_id: &str, browser: &str, now: i64) -> StoreResult<$crate::store::BrowserSeen> {
                let added = sqlx::query(
                    "INSERT INTO known_browsers (user_id, browser, first_seen) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(user_id)
                .bind(browser)
                .bind(now)
                .execute(&self.pool)
                .await?
                .rows_affected();
                if added == 0 {
                    return Ok($crate::store::BrowserSeen::Known);
                }
                let known: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM known_browsers WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_one(&self.pool)
                    .await?;
                if known > 50 {
                    sqlx::query(
                        "DELETE FROM known_browsers WHERE user_id = $1 AND browser NOT IN \
                         (SELECT browser FROM known_browsers WHERE user_id = $1 ORDER BY first_seen DESC, browser LIMIT 50)",
                    )
                    .bind(user_id)
                    .execute(&self.pool)
                    .await?;
                }
                Ok(if known == 1 {
                    $crate::store::BrowserSeen::First
                } else {
                    $crate::store::BrowserSeen::New
                })
            }
        }
    };
}
pub(in crate::store) use impl_user_store;
