//! What the SQLite and PostgreSQL stores share: the SQL of every operation
//! (written once, with `$n` parameters that both databases accept), the
//! mapping of rows to types, and a macro that implements [`super::Store`]
//! for a store type with a `pool` field. Schemas and migrations are not
//! shared: each database has its own.

use sqlx::Row;

use super::{
    AuthMethod, Ceremony, CeremonyKind, KeyPurpose, KeyRecord, PasskeyRecord, PendingLogin,
    SessionRecord, StoreError, StoreResult, User,
};
use crate::email::Email;

/// Column access that reads the same on both databases (all integers are
/// 64-bit in both schemas).
pub(super) trait Cols {
    fn text(&self, col: &str) -> StoreResult<String>;
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>>;
    fn int(&self, col: &str) -> StoreResult<i64>;
    fn opt_int(&self, col: &str) -> StoreResult<Option<i64>>;
    fn bytes(&self, col: &str) -> StoreResult<Vec<u8>>;
}

macro_rules! impl_cols {
    ($row:ty) => {
        impl Cols for $row {
            fn text(&self, col: &str) -> StoreResult<String> {
                Ok(self.try_get(col)?)
            }
            fn opt_text(&self, col: &str) -> StoreResult<Option<String>> {
                Ok(self.try_get(col)?)
            }
            fn int(&self, col: &str) -> StoreResult<i64> {
                Ok(self.try_get(col)?)
            }
            fn opt_int(&self, col: &str) -> StoreResult<Option<i64>> {
                Ok(self.try_get(col)?)
            }
            fn bytes(&self, col: &str) -> StoreResult<Vec<u8>> {
                Ok(self.try_get(col)?)
            }
        }
    };
}
impl_cols!(sqlx::sqlite::SqliteRow);
impl_cols!(sqlx::postgres::PgRow);

fn email(row: &impl Cols, col: &str) -> StoreResult<Email> {
    Email::parse(&row.text(col)?).map_err(|e| StoreError::Other(format!("bad email in store: {e}")))
}

fn groups(row: &impl Cols) -> StoreResult<Vec<String>> {
    serde_json::from_str(&row.text("groups_json")?)
        .map_err(|e| StoreError::Other(format!("bad groups in store: {e}")))
}

// The columns each row reader needs, named: never `*`, so a statement
// SQLite re-prepares after a migration widened a table keeps its width.
macro_rules! pending_cols {
    () => {
        "id, email, site, return_to, code_mac, expires_at, attempts, views, consumed_at"
    };
}
pub(super) use pending_cols;

macro_rules! session_cols {
    () => {
        "id_hash, user_id, email, name, groups_json, auth_method, created_at, expires_at, last_seen, revoked_at"
    };
}
pub(super) use session_cols;

macro_rules! passkey_cols {
    () => {
        "id, user_id, name, credential, counter, backup_eligible, backup_state, created_at, last_used_at"
    };
}
pub(super) use passkey_cols;

macro_rules! key_cols {
    () => {
        "kid, purpose, secret, created_at"
    };
}
pub(super) use key_cols;

macro_rules! ceremony_cols {
    () => {
        "id, kind, user_id, state, return_to, expires_at"
    };
}
pub(super) use ceremony_cols;

pub(super) fn groups_json(groups: &[String]) -> String {
    serde_json::to_string(groups).unwrap_or_else(|_| "[]".into())
}

/// A user row, from its columns named in the query: never `SELECT *` on
/// `users`, whose width a migration changed (a statement SQLite prepared
/// before that re-prepares wider than the column list sqlx kept for it).
pub(super) fn user(row: &impl Cols) -> StoreResult<User> {
    Ok(User {
        id: row.text("id")?,
        email: email(row, "email")?,
        name: row.opt_text("name")?,
        groups: groups(row)?,
        disabled: row.int("disabled")? != 0,
        created_at: row.int("created_at")?,
    })
}

pub(super) fn pending(row: &impl Cols) -> StoreResult<PendingLogin> {
    Ok(PendingLogin {
        id: row.text("id")?,
        email: email(row, "email")?,
        site: row.text("site")?,
        return_to: row.text("return_to")?,
        code_mac: row.bytes("code_mac")?,
        expires_at: row.int("expires_at")?,
        attempts: row.int("attempts")?.clamp(0, u32::MAX as i64) as u32,
        views: row.int("views")?.clamp(0, u32::MAX as i64) as u32,
        consumed: row.opt_int("consumed_at")?.is_some(),
    })
}

pub(super) fn key(row: &impl Cols) -> StoreResult<KeyRecord> {
    let purpose = row.text("purpose")?;
    Ok(KeyRecord {
        kid: row.text("kid")?,
        purpose: KeyPurpose::parse(&purpose)
            .ok_or_else(|| StoreError::Other(format!("bad key purpose in store: {purpose}")))?,
        secret: row.bytes("secret")?,
        created_at: row.int("created_at")?,
    })
}

pub(super) fn passkey(row: &impl Cols) -> StoreResult<PasskeyRecord> {
    Ok(PasskeyRecord {
        id: row.text("id")?,
        user_id: row.text("user_id")?,
        name: row.text("name")?,
        credential: row.text("credential")?,
        counter: row.int("counter")?,
        backup_eligible: row.int("backup_eligible")? != 0,
        backup_state: row.int("backup_state")? != 0,
        created_at: row.int("created_at")?,
        last_used_at: row.opt_int("last_used_at")?,
    })
}

pub(super) fn ceremony(row: &impl Cols) -> StoreResult<Ceremony> {
    Ok(Ceremony {
        id: row.text("id")?,
        kind: {
            let kind = row.text("kind")?;
            CeremonyKind::parse(&kind)
                .ok_or_else(|| StoreError::Other(format!("bad ceremony kind in store: {kind}")))?
        },
        user_id: row.opt_text("user_id")?,
        state: row.text("state")?,
        return_to: row.text("return_to")?,
        expires_at: row.int("expires_at")?,
    })
}

pub(super) fn session(row: &impl Cols) -> StoreResult<SessionRecord> {
    let method = row.text("auth_method")?;
    Ok(SessionRecord {
        id_hash: row.text("id_hash")?,
        user_id: row.text("user_id")?,
        email: email(row, "email")?,
        name: row.opt_text("name")?,
        groups: groups(row)?,
        auth_method: AuthMethod::parse(&method)
            .ok_or_else(|| StoreError::Other(format!("bad auth method in store: {method}")))?,
        created_at: row.int("created_at")?,
        expires_at: row.int("expires_at")?,
        last_seen: row.int("last_seen")?,
        revoked: row.opt_int("revoked_at")?.is_some(),
    })
}

/// Implements `Store` for `$store`, whose `pool` field is a sqlx pool.
macro_rules! impl_store {
    // `$user_lock`: what locks a user row read by a statement that depends
    // on it (`" FOR SHARE"` where the store has row locks).
    ($store:ty, $user_lock:literal) => {
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

            async fn add_user(&self, u: &User) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO users (id, email, name, groups_json, disabled, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&u.id)
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

            async fn create_pending(&self, p: &PendingLogin) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO pending_logins (id, email, site, return_to, code_mac, expires_at, attempts, views) \
                     VALUES ($1, $2, $3, $4, $5, $6, 0, 0)",
                )
                .bind(&p.id)
                .bind(p.email.as_str())
                .bind(&p.site)
                .bind(&p.return_to)
                .bind(&p.code_mac)
                .bind(p.expires_at)
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
                    concat!("UPDATE pending_logins SET consumed_at = $1 \
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

            async fn sweep_pending(&self, now: i64) -> StoreResult<u64> {
                sqlx::query("DELETE FROM ceremonies WHERE expires_at <= $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                let unconfirmed: Vec<i64> = sqlx::query_scalar(
                    "DELETE FROM pending_logins WHERE expires_at <= $1 \
                     RETURNING CAST(CASE WHEN views > 0 AND consumed_at IS NULL THEN 1 ELSE 0 END AS BIGINT)",
                )
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
                Ok(unconfirmed.iter().filter(|&&v| v != 0).count() as u64)
            }

            async fn create_session(&self, s: &SessionRecord) -> StoreResult<Option<SessionRecord>> {
                // The identity is copied from the user's row as it is now, in
                // the same statement, and only while the user is enabled: a
                // sign-in that read the user before a `user disable` or
                // `set-groups` cannot store what that read saw. PostgreSQL
                // also locks the row, so the insert waits for such a change
                // (and the change for the insert) to commit.
                sqlx::query(concat!(
                    "INSERT INTO sessions (id_hash, user_id, email, name, groups_json, auth_method, created_at, expires_at, last_seen) \
                     SELECT $1, id, email, name, groups_json, $2, $3, $4, $5 FROM users WHERE id = $6 AND disabled = 0",
                    $user_lock,
                    " RETURNING ",
                    $crate::store::shared::session_cols!()
                ))
                .bind(&s.id_hash)
                .bind(s.auth_method.as_str())
                .bind(s.created_at)
                .bind(s.expires_at)
                .bind(s.last_seen)
                .bind(&s.user_id)
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
                let r = sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id_hash = $2 AND revoked_at IS NULL")
                    .bind(now)
                    .bind(id_hash)
                    .execute(&self.pool)
                    .await?;
                if r.rows_affected() > 0 {
                    self.announce(&Invalidation::Session(id_hash.to_string())).await;
                }
                Ok(r.rows_affected() > 0)
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

            async fn list_sessions(&self, user: Option<&Email>, now: i64) -> StoreResult<Vec<SessionRecord>> {
                sqlx::query(
                    concat!("SELECT ", $crate::store::shared::session_cols!(), " FROM sessions WHERE revoked_at IS NULL AND expires_at > $1 \
                     AND ($2 IS NULL OR email = $2) ORDER BY created_at DESC"),
                )
                .bind(now)
                .bind(user.map(|e| e.as_str().to_string()))
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(shared::session)
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

            async fn add_passkey(&self, p: &PasskeyRecord) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO passkeys (id, user_id, name, credential, counter, backup_eligible, backup_state, created_at, last_used_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&p.id)
                .bind(&p.user_id)
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
                .bind(&p.id)
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
                .bind(&c.user_id)
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

            async fn feed_invalidations(&self, sink: &(dyn Fn(Invalidation) + Send + Sync)) {
                self.listen(sink).await
            }
        }
    };
}
pub(super) use impl_store;

/// Wall-clock seconds for `schema_migrations.applied_at`, written while the
/// store opens (before any clock is handed in). Every other write is given
/// its `now` by the caller.
#[allow(clippy::disallowed_methods)] // bookkeeping of the migrations only
pub(super) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
