//! The SQL of [`SessionStore`](crate::store::SessionStore), shared by SQLite and PostgreSQL
//! (`impl_store!` in `mod.rs` expands it for each): Sessions: created from the user row as it is at that moment (locked where the store has row locks), touched in batches, revoked once.

macro_rules! impl_session_store {
    ($store:ty, $user_lock:literal) => {
        #[async_trait::async_trait]
        impl $crate::store::SessionStore for $store {
            async fn create_session(&self, s: &SessionRecord) -> StoreResult<Option<SessionRecord>> {
                // The identity is copied from the user's row as it is now, in
                // the same statement, and only while the user is enabled: a
                // sign-in that read the user before a `user disable` or
                // `set-groups` cannot store what that read saw. PostgreSQL
                // also locks the row, so the insert waits for such a change
                // (and the change for the insert) to commit. A session handed
                // off from a portal session is stored only while that one is
                // live, its row locked too: a revocation running at the same
                // time either sees the new child or makes the insert fail.
                sqlx::query(concat!(
                    "INSERT INTO sessions (id_hash, user_id, email, name, groups_json, auth_method, created_at, expires_at, last_seen, parent, agent, client) \
                     SELECT $1, id, email, name, groups_json, $2, $3, $4, $5, $7, $8, $9 FROM users WHERE id = $6 AND disabled = 0 \
                     AND ($7 IS NULL OR EXISTS (SELECT 1 FROM sessions p WHERE p.id_hash = $7 AND p.revoked_at IS NULL AND p.expires_at > $3",
                    $user_lock,
                    "))",
                    $user_lock,
                    " RETURNING ",
                    $crate::store::shared::session_cols!()
                ))
                .bind(s.id_hash.as_str())
                .bind(s.auth_method.as_str())
                .bind(s.created_at)
                .bind(s.expires_at)
                .bind(s.last_seen)
                .bind(s.user_id.as_str())
                .bind(s.parent.as_deref())
                .bind(s.device.as_ref().map(|d| d.agent.as_str()))
                .bind(s.device.as_ref().map(|d| d.client.as_str()))
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(shared::session)
                .transpose()
            }

            async fn session(&self, id_hash: &str) -> StoreResult<Option<SessionRecord>> {
                sqlx::query(concat!("SELECT ", $crate::store::shared::session_cols!(), " FROM sessions WHERE id_hash = $1"))
                    .bind(id_hash)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(shared::session)
                    .transpose()
            }

            async fn touch_sessions(&self, touches: &[(String, i64)]) -> StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                for (id_hash, last_seen) in touches {
                    sqlx::query("UPDATE sessions SET last_seen = $1 WHERE id_hash = $2 AND last_seen < $1")
                        .bind(last_seen)
                        .bind(id_hash)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn revoke_session(&self, id_hash: &str, now: i64) -> StoreResult<bool> {
                // The sessions sites made from it (portal handoffs) go with
                // it, in the same transaction: none outlives its parent.
                let mut tx = self.pool.begin().await?;
                let r = sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id_hash = $2 AND revoked_at IS NULL")
                    .bind(now)
                    .bind(id_hash)
                    .execute(&mut *tx)
                    .await?;
                let children: Vec<String> = sqlx::query_scalar(
                    "UPDATE sessions SET revoked_at = $1 WHERE parent = $2 AND revoked_at IS NULL RETURNING id_hash",
                )
                .bind(now)
                .bind(id_hash)
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                if r.rows_affected() > 0 {
                    self.announce(&Invalidation::Session(id_hash.to_string())).await;
                }
                for child in children {
                    self.announce(&Invalidation::Session(child)).await;
                }
                Ok(r.rows_affected() > 0)
            }

            async fn list_sessions(&self, user: Option<&Email>, now: i64) -> StoreResult<Vec<SessionRecord>> {
                sqlx::query(
                    concat!("SELECT ", $crate::store::shared::session_cols!(), ", agent, client FROM sessions WHERE revoked_at IS NULL AND expires_at > $1 \
                     AND ($2 IS NULL OR email = $2) ORDER BY created_at DESC"),
                )
                .bind(now)
                .bind(user.map(|e| e.as_str().to_string()))
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(shared::session_listed)
                .collect()
            }

            async fn revoke_user_sessions(&self, email: &Email, now: i64) -> StoreResult<u64> {
                let ids: Vec<String> = sqlx::query_scalar(
                    "UPDATE sessions SET revoked_at = $1 WHERE email = $2 AND revoked_at IS NULL RETURNING user_id",
                )
                .bind(now)
                .bind(email.as_str())
                .fetch_all(&self.pool)
                .await?;
                if let Some(id) = ids.first() {
                    self.announce(&Invalidation::User(id.clone())).await;
                }
                Ok(ids.len() as u64)
            }
        }
    };
}
pub(in crate::store) use impl_session_store;

/// The SQL of [`HandoffStore`](crate::store::HandoffStore): a code taken
/// once, in one statement.
macro_rules! impl_handoff_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::HandoffStore for $store {
            async fn put_handoff(&self, h: &Handoff) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO handoffs (code_hash, site, state_hash, session, return_to, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&h.code_hash)
                .bind(&h.site)
                .bind(&h.state_hash)
                .bind(h.session.as_str())
                .bind(&h.return_to)
                .bind(h.expires_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn take_handoff(&self, code_hash: &str, now: i64) -> StoreResult<Option<Handoff>> {
                let row = sqlx::query(concat!(
                    "DELETE FROM handoffs WHERE code_hash = $1 RETURNING ",
                    $crate::store::shared::handoff_cols!()
                ))
                .bind(code_hash)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.as_ref().map(shared::handoff).transpose()?.filter(|h| h.expires_at > now))
            }

            async fn sweep_handoffs(&self, now: i64) -> StoreResult<()> {
                sqlx::query("DELETE FROM handoffs WHERE expires_at <= $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        }
    };
}
pub(in crate::store) use impl_handoff_store;
