//! The SQL of [`OidcStore`](crate::store::OidcStore), shared by SQLite and
//! PostgreSQL (`impl_store!` in `mod.rs` expands it for each): a code used
//! once (a second use is recognised), a grant stored with its first token
//! in one transaction, a token good only while its grant and its sign-in
//! (the portal session) are.

macro_rules! impl_oidc_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::OidcStore for $store {
            async fn put_oidc_code(&self, c: &OidcCode) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO oidc_codes (code_hash, client_id, redirect_uri, session, user_id, scope, nonce, code_challenge, auth_time, auth_method, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(&c.code_hash)
                .bind(&c.client_id)
                .bind(&c.redirect_uri)
                .bind(c.session.as_str())
                .bind(c.user_id.as_str())
                .bind(&c.scope)
                .bind(&c.nonce)
                .bind(&c.code_challenge)
                .bind(c.auth_time)
                .bind(c.auth_method.as_str())
                .bind(c.expires_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn take_oidc_code(&self, code_hash: &str, now: i64) -> StoreResult<CodeTaken> {
                let row = sqlx::query(
                    "UPDATE oidc_codes SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2 \
                     RETURNING code_hash, client_id, redirect_uri, session, user_id, scope, nonce, code_challenge, auth_time, auth_method, expires_at",
                )
                .bind(code_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                if let Some(row) = row {
                    return Ok(CodeTaken::Fresh(shared::oidc_code(&row)?));
                }
                let used: Option<(Option<i64>, Option<String>)> = sqlx::query_as(
                    "SELECT used_at, grant_id FROM oidc_codes WHERE code_hash = $1",
                )
                .bind(code_hash)
                .fetch_optional(&self.pool)
                .await?;
                Ok(match used {
                    Some((Some(_), grant)) => {
                        if grant.is_none() {
                            // The first use is still being answered: it
                            // must store nothing now.
                            sqlx::query("UPDATE oidc_codes SET grant_id = '-' WHERE code_hash = $1 AND grant_id IS NULL")
                                .bind(code_hash)
                                .execute(&self.pool)
                                .await?;
                        }
                        CodeTaken::Reused { grant }
                    }
                    _ => CodeTaken::Unknown,
                })
            }

            async fn create_oidc_grant(
                &self,
                g: &OidcGrant,
                code_hash: Option<&str>,
                tokens: &[NewToken],
            ) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO oidc_grants (id, client_id, user_id, session, scope, auth_time, auth_method, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&g.id)
                .bind(&g.client_id)
                .bind(g.user_id.as_str())
                .bind(g.session.as_str())
                .bind(&g.scope)
                .bind(g.auth_time)
                .bind(g.auth_method.as_str())
                .bind(g.created_at)
                .execute(&mut *tx)
                .await?;
                // The code's first use, unless a second use was seen first
                // (then nothing is stored: the first user gets nothing).
                if let Some(code_hash) = code_hash {
                    let noted = sqlx::query("UPDATE oidc_codes SET grant_id = $1 WHERE code_hash = $2 AND grant_id IS NULL")
                        .bind(&g.id)
                        .bind(code_hash)
                        .execute(&mut *tx)
                        .await?;
                    if noted.rows_affected() == 0 {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                }
                for t in tokens {
                    sqlx::query("INSERT INTO oidc_tokens (token_hash, grant_id, kind, expires_at, scope) VALUES ($1, $2, $3, $4, $5)")
                        .bind(&t.hash)
                        .bind(&g.id)
                        .bind(t.kind)
                        .bind(t.expires_at)
                        .bind(&t.scope)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn use_refresh_token(&self, token_hash: &str, now: i64) -> StoreResult<RefreshUse> {
                let used: Option<String> = sqlx::query_scalar(
                    "UPDATE oidc_tokens SET used_at = $2 WHERE token_hash = $1 AND kind = 'refresh' \
                     AND used_at IS NULL AND expires_at > $2 RETURNING grant_id",
                )
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                let Some(grant_id) = used else {
                    let before: Option<(Option<i64>, String)> = sqlx::query_as(
                        "SELECT used_at, grant_id FROM oidc_tokens WHERE token_hash = $1 AND kind = 'refresh'",
                    )
                    .bind(token_hash)
                    .fetch_optional(&self.pool)
                    .await?;
                    return Ok(match before {
                        Some((Some(_), grant)) => RefreshUse::Reused { grant },
                        _ => RefreshUse::Unknown,
                    });
                };
                let grant = sqlx::query(
                    "SELECT g.id, g.client_id, g.user_id, g.session, g.scope, g.auth_time, g.auth_method, g.created_at \
                     FROM oidc_grants g JOIN sessions s ON s.id_hash = g.session \
                     WHERE g.id = $1 AND g.revoked_at IS NULL AND s.revoked_at IS NULL AND s.expires_at > $2",
                )
                .bind(&grant_id)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                Ok(match grant {
                    Some(row) => RefreshUse::Fresh(shared::oidc_grant(&row)?),
                    None => RefreshUse::Unknown,
                })
            }

            async fn add_oidc_tokens(&self, grant_id: &str, tokens: &[NewToken]) -> StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                for t in tokens {
                    sqlx::query("INSERT INTO oidc_tokens (token_hash, grant_id, kind, expires_at, scope) VALUES ($1, $2, $3, $4, $5)")
                        .bind(&t.hash)
                        .bind(grant_id)
                        .bind(t.kind)
                        .bind(t.expires_at)
                        .bind(&t.scope)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn revoke_oidc_token(&self, token_hash: &str, client_id: &str, now: i64) -> StoreResult<bool> {
                let found: Option<(String, String)> = sqlx::query_as(
                    "SELECT t.kind, t.grant_id FROM oidc_tokens t JOIN oidc_grants g ON g.id = t.grant_id \
                     WHERE t.token_hash = $1 AND g.client_id = $2",
                )
                .bind(token_hash)
                .bind(client_id)
                .fetch_optional(&self.pool)
                .await?;
                let Some((kind, grant)) = found else {
                    return Ok(false);
                };
                if kind == "refresh" {
                    sqlx::query("UPDATE oidc_grants SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                        .bind(now)
                        .bind(&grant)
                        .execute(&self.pool)
                        .await?;
                } else {
                    sqlx::query("UPDATE oidc_tokens SET expires_at = $1 WHERE token_hash = $2 AND expires_at > $1")
                        .bind(now)
                        .bind(token_hash)
                        .execute(&self.pool)
                        .await?;
                }
                Ok(true)
            }

            async fn oidc_access(&self, token_hash: &str, now: i64) -> StoreResult<Option<OidcGrant>> {
                sqlx::query(
                    "SELECT g.id, g.client_id, g.user_id, g.session, g.scope, g.auth_time, g.auth_method, g.created_at \
                     , t.scope AS token_scope \
                     FROM oidc_tokens t JOIN oidc_grants g ON g.id = t.grant_id JOIN sessions s ON s.id_hash = g.session \
                     WHERE t.token_hash = $1 AND t.kind = 'access' AND t.expires_at > $2 \
                     AND g.revoked_at IS NULL AND s.revoked_at IS NULL AND s.expires_at > $2",
                )
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(|row| {
                    // An access token of a narrowed refresh carries its own scope.
                    let mut g = shared::oidc_grant(row)?;
                    if let Some(scope) = shared::Cols::opt_text(row, "token_scope")? {
                        g.scope = scope;
                    }
                    Ok(g)
                })
                .transpose()
            }

            async fn revoke_oidc_grant(&self, id: &str, now: i64) -> StoreResult<bool> {
                let r = sqlx::query("UPDATE oidc_grants SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                    .bind(now)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn list_oidc_grants(&self, user_id: Option<&str>, now: i64) -> StoreResult<Vec<OidcGrant>> {
                sqlx::query(
                    "SELECT g.id, g.client_id, g.user_id, g.session, g.scope, g.auth_time, g.auth_method, g.created_at \
                     FROM oidc_grants g JOIN sessions s ON s.id_hash = g.session \
                     WHERE g.revoked_at IS NULL AND s.revoked_at IS NULL AND s.expires_at > $2 AND ($1 IS NULL OR g.user_id = $1) \
                     ORDER BY g.created_at DESC",
                )
                .bind(user_id)
                .bind(now)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(shared::oidc_grant)
                .collect()
            }

            async fn claim_oidc_logouts(&self, now: i64) -> StoreResult<Vec<OidcGrant>> {
                sqlx::query(
                    "UPDATE oidc_grants SET logout_sent_at = $1 WHERE logout_sent_at IS NULL AND id IN ( \
                       SELECT g.id FROM oidc_grants g JOIN sessions s ON s.id_hash = g.session \
                       WHERE g.logout_sent_at IS NULL AND s.revoked_at IS NOT NULL LIMIT 200) \
                     RETURNING id, client_id, user_id, session, scope, auth_time, auth_method, created_at",
                )
                .bind(now)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(shared::oidc_grant)
                .collect()
            }

            async fn sweep_oidc(&self, before: i64) -> StoreResult<()> {
                sqlx::query("DELETE FROM oidc_codes WHERE expires_at < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await?;
                sqlx::query("DELETE FROM oidc_tokens WHERE expires_at < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await?;
                // Grants with no token left whose sign-in is over (and its
                // end handled): nothing can use or announce them any more.
                sqlx::query(
                    "DELETE FROM oidc_grants WHERE created_at < $1 \
                     AND NOT EXISTS (SELECT 1 FROM oidc_tokens t WHERE t.grant_id = oidc_grants.id) \
                     AND (logout_sent_at IS NOT NULL OR revoked_at IS NOT NULL \
                          OR NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id_hash = oidc_grants.session AND s.expires_at > $1))",
                )
                .bind(before)
                .execute(&self.pool)
                .await?;
                Ok(())
            }
        }
    };
}
pub(in crate::store) use impl_oidc_store;
