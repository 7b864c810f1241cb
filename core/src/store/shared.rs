//! What the SQLite and PostgreSQL stores share: the SQL of every operation
//! (written once, with `$n` parameters that both databases accept), the
//! mapping of rows to types, and a macro that implements [`super::Store`]
//! for a store type with a `pool` field. Schemas and migrations are not
//! shared: each database has its own.

use sqlx::Row;

use super::{
    AuthMethod, Ceremony, CeremonyKind, Decision, Device, DeviceRequest, Handoff, KeyPurpose,
    KeyRecord, OidcCode, OidcGrant, PasskeyRecord, PendingLogin, RequestKind, SessionHash,
    SessionRecord, StoreError, StoreResult, User, UserId,
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
        "id, email, site, return_to, code_mac, expires_at, attempts, views, consumed_at, created_at, asked_agent, asked_net, outcome, collected_at"
    };
}
pub(super) use pending_cols;

macro_rules! device_cols {
    () => {
        "id, kind, user_code, site, client_id, scope, return_to, asked_agent, asked_net, created_at, expires_at, outcome, user_id, auth_method, collected_at"
    };
}
pub(super) use device_cols;

macro_rules! session_cols {
    () => {
        "id_hash, user_id, email, name, groups_json, auth_method, created_at, expires_at, last_seen, revoked_at, parent"
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

macro_rules! handoff_cols {
    () => {
        "code_hash, site, state_hash, session, return_to, expires_at"
    };
}
pub(super) use handoff_cols;

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
        id: row.text("id")?.into(),
        email: email(row, "email")?,
        name: row.opt_text("name")?,
        groups: groups(row)?,
        disabled: row.int("disabled")? != 0,
        created_at: row.int("created_at")?,
    })
}

pub(super) fn pending(row: &impl Cols) -> StoreResult<PendingLogin> {
    Ok(PendingLogin {
        id: row.text("id")?.into(),
        email: email(row, "email")?,
        site: row.text("site")?,
        return_to: row.text("return_to")?,
        code_mac: row.bytes("code_mac")?,
        expires_at: row.int("expires_at")?,
        attempts: row.int("attempts")?.clamp(0, u32::MAX as i64) as u32,
        views: row.int("views")?.clamp(0, u32::MAX as i64) as u32,
        consumed: row.opt_int("consumed_at")?.is_some(),
        created_at: row.int("created_at")?,
        asked_agent: row.text("asked_agent")?,
        asked_net: row.text("asked_net")?,
        decision: match row.opt_text("outcome")? {
            // Rows decided before outcomes were kept: by their link or code.
            None if row.opt_int("consumed_at")?.is_some() => Some(Decision::Used),
            None => None,
            Some(d) => Some(
                Decision::parse(&d)
                    .ok_or_else(|| StoreError::Other(format!("unknown sign-in outcome {d:?}")))?,
            ),
        },
        collected: row.opt_int("collected_at")?.is_some(),
    })
}

pub(super) fn device_request(row: &impl Cols) -> StoreResult<DeviceRequest> {
    let bad = |what: &str, v: &str| StoreError::Other(format!("bad {what} in store: {v:?}"));
    let kind = row.text("kind")?;
    Ok(DeviceRequest {
        id: row.text("id")?,
        kind: RequestKind::parse(&kind).ok_or_else(|| bad("request kind", &kind))?,
        user_code: row.text("user_code")?,
        site: row.text("site")?,
        client_id: row.opt_text("client_id")?,
        scope: row.text("scope")?,
        return_to: row.text("return_to")?,
        asked_agent: row.text("asked_agent")?,
        asked_net: row.text("asked_net")?,
        created_at: row.int("created_at")?,
        expires_at: row.int("expires_at")?,
        decision: match row.opt_text("outcome")? {
            Some(d) => Some(Decision::parse(&d).ok_or_else(|| bad("request outcome", &d))?),
            None => None,
        },
        user_id: row.opt_text("user_id")?.map(UserId::from),
        auth_method: match row.opt_text("auth_method")? {
            Some(m) => Some(AuthMethod::parse(&m).ok_or_else(|| bad("auth method", &m))?),
            None => None,
        },
        collected: row.opt_int("collected_at")?.is_some(),
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
        id: row.text("id")?.into(),
        user_id: row.text("user_id")?.into(),
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
        user_id: row.opt_text("user_id")?.map(UserId::from),
        state: row.text("state")?,
        return_to: row.text("return_to")?,
        expires_at: row.int("expires_at")?,
    })
}

pub(super) fn session(row: &impl Cols) -> StoreResult<SessionRecord> {
    let method = row.text("auth_method")?;
    Ok(SessionRecord {
        id_hash: row.text("id_hash")?.into(),
        user_id: row.text("user_id")?.into(),
        email: email(row, "email")?,
        name: row.opt_text("name")?,
        groups: groups(row)?,
        auth_method: AuthMethod::parse(&method)
            .ok_or_else(|| StoreError::Other(format!("bad auth method in store: {method}")))?,
        created_at: row.int("created_at")?,
        expires_at: row.int("expires_at")?,
        last_seen: row.int("last_seen")?,
        revoked: row.opt_int("revoked_at")?.is_some(),
        parent: row.opt_text("parent")?.map(SessionHash::from),
        device: None,
    })
}

/// A session with its device (selected with `session_cols!()` and `agent,
/// client`).
pub(super) fn session_listed(row: &impl Cols) -> StoreResult<SessionRecord> {
    let mut s = session(row)?;
    if let (Some(agent), Some(client)) = (row.opt_text("agent")?, row.opt_text("client")?) {
        s.device = Some(Box::new(Device { agent, client }));
    }
    Ok(s)
}

fn auth_method(row: &impl Cols) -> StoreResult<AuthMethod> {
    let m = row.text("auth_method")?;
    AuthMethod::parse(&m).ok_or_else(|| StoreError::Other(format!("bad auth method in store: {m}")))
}

pub(super) fn oidc_code(row: &impl Cols) -> StoreResult<OidcCode> {
    Ok(OidcCode {
        code_hash: row.text("code_hash")?,
        client_id: row.text("client_id")?,
        redirect_uri: row.text("redirect_uri")?,
        session: row.text("session")?.into(),
        user_id: row.text("user_id")?.into(),
        scope: row.text("scope")?,
        nonce: row.opt_text("nonce")?,
        code_challenge: row.opt_text("code_challenge")?,
        auth_time: row.int("auth_time")?,
        auth_method: auth_method(row)?,
        expires_at: row.int("expires_at")?,
    })
}

pub(super) fn oidc_grant(row: &impl Cols) -> StoreResult<OidcGrant> {
    Ok(OidcGrant {
        id: row.text("id")?,
        client_id: row.text("client_id")?,
        user_id: row.text("user_id")?.into(),
        session: row.text("session")?.into(),
        scope: row.text("scope")?,
        auth_time: row.int("auth_time")?,
        auth_method: auth_method(row)?,
        created_at: row.int("created_at")?,
    })
}

pub(super) fn handoff(row: &impl Cols) -> StoreResult<Handoff> {
    Ok(Handoff {
        code_hash: row.text("code_hash")?,
        site: row.text("site")?,
        state_hash: row.text("state_hash")?,
        session: row.text("session")?.into(),
        return_to: row.text("return_to")?,
        expires_at: row.int("expires_at")?,
    })
}

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
