//! SQLite implementation of [`Store`] through sqlx: the embedded default.
//!
//! WAL mode with a busy timeout, migrations applied at open. Single-use steps
//! are single `UPDATE ... RETURNING` statements, atomic in SQLite itself.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, SqlitePool};

use super::{AuthMethod, PendingLogin, SessionRecord, Store, StoreError, StoreResult, User};
use crate::email::Email;

const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("migrations/sqlite/0001_init.sql"))];

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn open(path: &Path) -> StoreResult<SqliteStore> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Unavailable(format!("cannot create folder {}: {e}", dir.display()))
                })?;
            }
        }
        let opts = SqliteConnectOptions::from_str("sqlite:")
            .map_err(StoreError::from)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> StoreResult<()> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
            .execute(&self.pool)
            .await?;
        for (version, sql) in MIGRATIONS {
            let mut tx = self.pool.begin().await?;
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if done.is_none() {
                sqlx::raw_sql(sql).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, strftime('%s','now'))")
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }
}

fn email_col(row: &SqliteRow, col: &str) -> StoreResult<Email> {
    let raw: String = row.try_get(col)?;
    Email::parse(&raw).map_err(|e| StoreError::Other(format!("bad email in store: {e}")))
}

fn groups_col(row: &SqliteRow) -> StoreResult<Vec<String>> {
    let raw: String = row.try_get("groups_json")?;
    serde_json::from_str(&raw).map_err(|e| StoreError::Other(format!("bad groups in store: {e}")))
}

fn user_row(row: &SqliteRow) -> StoreResult<User> {
    Ok(User {
        id: row.try_get("id")?,
        email: email_col(row, "email")?,
        name: row.try_get("name")?,
        groups: groups_col(row)?,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

fn pending_row(row: &SqliteRow) -> StoreResult<PendingLogin> {
    Ok(PendingLogin {
        id: row.try_get("id")?,
        email: email_col(row, "email")?,
        site: row.try_get("site")?,
        return_to: row.try_get("return_to")?,
        code_mac: row.try_get("code_mac")?,
        expires_at: row.try_get("expires_at")?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        consumed: row.try_get::<Option<i64>, _>("consumed_at")?.is_some(),
    })
}

fn session_row(row: &SqliteRow) -> StoreResult<SessionRecord> {
    let method: String = row.try_get("auth_method")?;
    Ok(SessionRecord {
        id_hash: row.try_get("id_hash")?,
        user_id: row.try_get("user_id")?,
        email: email_col(row, "email")?,
        name: row.try_get("name")?,
        groups: groups_col(row)?,
        auth_method: AuthMethod::parse(&method)
            .ok_or_else(|| StoreError::Other(format!("bad auth method in store: {method}")))?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_seen: row.try_get("last_seen")?,
        revoked: row.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
    })
}

fn groups_json(groups: &[String]) -> String {
    serde_json::to_string(groups).unwrap_or_else(|_| "[]".into())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ensure_secret(&self, name: &str, fresh: &[u8]) -> StoreResult<Vec<u8>> {
        sqlx::query("INSERT OR IGNORE INTO secrets (name, value, created_at) VALUES (?, ?, strftime('%s','now'))")
            .bind(name)
            .bind(fresh)
            .execute(&self.pool)
            .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM secrets WHERE name = ?")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn add_user(&self, u: &User) -> StoreResult<()> {
        sqlx::query("INSERT INTO users (id, email, name, groups_json, disabled, created_at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(&u.id)
            .bind(u.email.as_str())
            .bind(&u.name)
            .bind(groups_json(&u.groups))
            .bind(u.disabled as i64)
            .bind(u.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn user_by_email(&self, email: &Email) -> StoreResult<Option<User>> {
        sqlx::query("SELECT * FROM users WHERE email = ?")
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_row)
            .transpose()
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        sqlx::query("SELECT * FROM users ORDER BY email")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(user_row)
            .collect()
    }

    async fn remove_user(&self, email: &Email) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let id: Option<String> =
            sqlx::query_scalar("DELETE FROM users WHERE email = ? RETURNING id")
                .bind(email.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(id) = &id {
            sqlx::query("UPDATE sessions SET revoked_at = strftime('%s','now') WHERE user_id = ? AND revoked_at IS NULL")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(id.is_some())
    }

    async fn create_pending(&self, p: &PendingLogin) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO pending_logins (id, email, site, return_to, code_mac, expires_at, attempts) VALUES (?, ?, ?, ?, ?, ?, 0)",
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
        sqlx::query("UPDATE pending_logins SET views = views + 1 WHERE id = ? RETURNING *")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(pending_row)
            .transpose()
    }

    async fn consume_pending(&self, id: &str, now: i64) -> StoreResult<Option<PendingLogin>> {
        sqlx::query(
            "UPDATE pending_logins SET consumed_at = ? WHERE id = ? AND consumed_at IS NULL AND expires_at > ? RETURNING *",
        )
        .bind(now)
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(pending_row)
        .transpose()
    }

    async fn attempt_code(
        &self,
        id: &str,
        now: i64,
        max_attempts: u32,
    ) -> StoreResult<Option<PendingLogin>> {
        sqlx::query(
            "UPDATE pending_logins SET attempts = attempts + 1 \
             WHERE id = ? AND consumed_at IS NULL AND expires_at > ? AND attempts < ? RETURNING *",
        )
        .bind(id)
        .bind(now)
        .bind(max_attempts as i64)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(pending_row)
        .transpose()
    }

    async fn sweep_pending(&self, now: i64) -> StoreResult<u64> {
        let unconfirmed: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM pending_logins WHERE expires_at <= ? RETURNING (views > 0 AND consumed_at IS NULL)",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(unconfirmed.iter().filter(|&&v| v != 0).count() as u64)
    }

    async fn create_session(&self, s: &SessionRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, email, name, groups_json, auth_method, created_at, expires_at, last_seen) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.id_hash)
        .bind(&s.user_id)
        .bind(s.email.as_str())
        .bind(&s.name)
        .bind(groups_json(&s.groups))
        .bind(s.auth_method.as_str())
        .bind(s.created_at)
        .bind(s.expires_at)
        .bind(s.last_seen)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session(&self, id_hash: &str) -> StoreResult<Option<SessionRecord>> {
        sqlx::query("SELECT * FROM sessions WHERE id_hash = ?")
            .bind(id_hash)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(session_row)
            .transpose()
    }

    async fn touch_session(&self, id_hash: &str, last_seen: i64) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET last_seen = MAX(last_seen, ?) WHERE id_hash = ?")
            .bind(last_seen)
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn revoke_session(&self, id_hash: &str) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE sessions SET revoked_at = strftime('%s','now') WHERE id_hash = ? AND revoked_at IS NULL")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }
}
