//! The SQL of [`PendingStore`](crate::store::PendingStore), shared by SQLite and PostgreSQL
//! (`impl_store!` in `mod.rs` expands it for each): Pending sign-ins: every step one statement, atomic in the database (a view counted, an attempt counted under the limit, consumed once).

macro_rules! impl_pending_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::PendingStore for $store {
            async fn create_pending(&self, p: &PendingLogin) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO pending_logins (id, email, site, return_to, code_mac, expires_at, attempts, views, created_at, asked_agent, asked_net) \
                     VALUES ($1, $2, $3, $4, $5, $6, 0, 0, $7, $8, $9)",
                )
                .bind(p.id.as_str())
                .bind(p.email.as_str())
                .bind(&p.site)
                .bind(&p.return_to)
                .bind(&p.code_mac)
                .bind(p.expires_at)
                .bind(p.created_at)
                .bind(&p.asked_agent)
                .bind(&p.asked_net)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn view_pending(&self, id: &str) -> StoreResult<Option<PendingLogin>> {
                sqlx::query(concat!("UPDATE pending_logins SET views = views + 1 WHERE id = $1 RETURNING ", $crate::store::shared::pending_cols!()))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(shared::pending)
                    .transpose()
            }

            async fn pending(&self, id: &str) -> StoreResult<Option<PendingLogin>> {
                sqlx::query(concat!("SELECT ", $crate::store::shared::pending_cols!(), " FROM pending_logins WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(shared::pending)
                    .transpose()
            }

            async fn consume_pending(&self, id: &str, now: i64) -> StoreResult<Option<PendingLogin>> {
                sqlx::query(
                    concat!("UPDATE pending_logins SET consumed_at = $1, outcome = 'used' \
                     WHERE id = $2 AND consumed_at IS NULL AND expires_at > $1 RETURNING ", $crate::store::shared::pending_cols!()),
                )
                .bind(now)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(shared::pending)
                .transpose()
            }

            async fn attempt_code(&self, id: &str, now: i64, max_attempts: u32) -> StoreResult<Option<PendingLogin>> {
                sqlx::query(
                    concat!("UPDATE pending_logins SET attempts = attempts + 1 \
                     WHERE id = $1 AND consumed_at IS NULL AND expires_at > $2 AND attempts < $3 RETURNING ", $crate::store::shared::pending_cols!()),
                )
                .bind(id)
                .bind(now)
                .bind(max_attempts as i64)
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(shared::pending)
                .transpose()
            }

            async fn decide_pending(&self, id: &str, now: i64, decision: $crate::store::Decision, collect_by: i64) -> StoreResult<Option<PendingLogin>> {
                // An approval lives on only as long as the asking browser
                // has to collect it; a cancellation keeps the link's expiry.
                let expires = if decision == $crate::store::Decision::Approved { Some(collect_by) } else { None };
                sqlx::query(
                    concat!("UPDATE pending_logins SET consumed_at = $1, outcome = $2, expires_at = COALESCE($3, expires_at) \
                     WHERE id = $4 AND consumed_at IS NULL AND expires_at > $1 RETURNING ", $crate::store::shared::pending_cols!()),
                )
                .bind(now)
                .bind(decision.as_str())
                .bind(expires)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(shared::pending)
                .transpose()
            }

            async fn collect_pending(&self, id: &str, now: i64) -> StoreResult<Option<PendingLogin>> {
                sqlx::query(
                    concat!("UPDATE pending_logins SET collected_at = $1 \
                     WHERE id = $2 AND outcome = 'approved' AND collected_at IS NULL AND expires_at > $1 RETURNING ", $crate::store::shared::pending_cols!()),
                )
                .bind(now)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(shared::pending)
                .transpose()
            }

            async fn decided_pending(&self, ids: &[String]) -> StoreResult<Vec<String>> {
                Ok($crate::store::queries::ids_among!(
                    &self.pool,
                    "SELECT id FROM pending_logins WHERE consumed_at IS NOT NULL AND id IN",
                    ids
                ))
            }

            async fn sweep_pending(&self, now: i64) -> StoreResult<$crate::store::SweptPending> {
                sqlx::query("DELETE FROM ceremonies WHERE expires_at <= $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                let kinds: Vec<i64> = sqlx::query_scalar(
                    "DELETE FROM pending_logins WHERE expires_at <= $1 \
                     RETURNING CAST(CASE WHEN views > 0 AND consumed_at IS NULL THEN 1 \
                     WHEN outcome = 'approved' AND collected_at IS NULL THEN 2 ELSE 0 END AS BIGINT)",
                )
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
                Ok($crate::store::SweptPending {
                    unconfirmed: kinds.iter().filter(|&&v| v == 1).count() as u64,
                    uncollected: kinds.iter().filter(|&&v| v == 2).count() as u64,
                })
            }
        }
    };
}
pub(in crate::store) use impl_pending_store;
