//! The SQL of [`DeviceRequestStore`](crate::store::DeviceRequestStore),
//! shared by SQLite and PostgreSQL (`impl_store!` in `mod.rs` expands it
//! for each): a request decided once (`outcome IS NULL` races) and collected
//! once.

macro_rules! impl_device_request_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::DeviceRequestStore for $store {
            async fn create_device_request(&self, r: &$crate::store::DeviceRequest) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO device_requests (id, kind, user_code, site, client_id, scope, return_to, asked_agent, asked_net, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(&r.id)
                .bind(r.kind.as_str())
                .bind(&r.user_code)
                .bind(&r.site)
                .bind(&r.client_id)
                .bind(&r.scope)
                .bind(&r.return_to)
                .bind(&r.asked_agent)
                .bind(&r.asked_net)
                .bind(r.created_at)
                .bind(r.expires_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn device_request(&self, id: &str) -> StoreResult<Option<$crate::store::DeviceRequest>> {
                sqlx::query(concat!("SELECT ", $crate::store::shared::device_cols!(), " FROM device_requests WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(shared::device_request)
                    .transpose()
            }

            async fn device_request_by_code(&self, user_code: &str) -> StoreResult<Option<$crate::store::DeviceRequest>> {
                sqlx::query(concat!("SELECT ", $crate::store::shared::device_cols!(), " FROM device_requests WHERE user_code = $1"))
                    .bind(user_code)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(shared::device_request)
                    .transpose()
            }

            async fn decide_device_request(
                &self,
                id: &str,
                now: i64,
                decision: $crate::store::Decision,
                approver: Option<(&$crate::store::UserId, $crate::store::AuthMethod)>,
                collect_by: i64,
            ) -> StoreResult<Option<$crate::store::DeviceRequest>> {
                // An approval lives on only as long as the asking side has
                // to collect it; a cancellation keeps the request's expiry.
                let approved = decision == $crate::store::Decision::Approved;
                let expires = approved.then_some(collect_by);
                let (user, method) = match approver {
                    Some((u, m)) if approved => (Some(u.as_str()), Some(m.as_str())),
                    _ => (None, None),
                };
                sqlx::query(
                    concat!("UPDATE device_requests SET outcome = $1, user_id = $2, auth_method = $3, expires_at = COALESCE($4, expires_at) \
                     WHERE id = $5 AND outcome IS NULL AND expires_at > $6 RETURNING ", $crate::store::shared::device_cols!()),
                )
                .bind(decision.as_str())
                .bind(user)
                .bind(method)
                .bind(expires)
                .bind(id)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(shared::device_request)
                .transpose()
            }

            async fn collect_device_request(&self, id: &str, now: i64) -> StoreResult<Option<$crate::store::DeviceRequest>> {
                sqlx::query(
                    concat!("UPDATE device_requests SET collected_at = $1 \
                     WHERE id = $2 AND outcome = 'approved' AND collected_at IS NULL AND expires_at > $1 RETURNING ", $crate::store::shared::device_cols!()),
                )
                .bind(now)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(shared::device_request)
                .transpose()
            }

            async fn decided_device_requests(&self, ids: &[String]) -> StoreResult<Vec<String>> {
                Ok($crate::store::queries::ids_among!(
                    &self.pool,
                    "SELECT id FROM device_requests WHERE outcome IS NOT NULL AND id IN",
                    ids
                ))
            }

            async fn sweep_device_requests(&self, now: i64) -> StoreResult<Vec<$crate::store::RequestKind>> {
                let kinds: Vec<String> = sqlx::query_scalar(
                    "DELETE FROM device_requests WHERE expires_at <= $1 \
                     RETURNING CASE WHEN outcome = 'approved' AND collected_at IS NULL THEN kind ELSE '' END",
                )
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
                Ok(kinds.iter().filter_map(|k| $crate::store::RequestKind::parse(k)).collect())
            }
        }
    };
}
pub(in crate::store) use impl_device_request_store;
