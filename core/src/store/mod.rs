//! The store: everything Sesame keeps beyond one request, behind async
//! traits by kind of data ([`UserStore`], [`PendingStore`], [`SessionStore`],
//! [`HandoffStore`], [`OidcStore`], [`RateLimitStore`], [`KeyStore`], [`PasskeyStore`])
//! that [`Store`] joins.
//! The records are in `records.rs`.
//!
//! Callers never see SQL. The implementations (SQLite in `sqlite.rs`,
//! PostgreSQL in `postgres.rs`, their shared SQL in `queries/`) make every
//! single-use step atomic in the database itself, so that it also holds
//! across processes, and are given the time of every write. Caching is the
//! caller's business, not the store's.

mod ids;
pub mod postgres;
mod queries;
mod records;
mod shared;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::StoreConfig;
use crate::email::Email;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    Exists,
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Other(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Exists,
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Other(e.to_string()),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

pub use ids::*;
pub use records::*;

/// Users: who may sign in, their groups, and their WebAuthn handle.
#[async_trait]
pub trait UserStore: Send + Sync {
    async fn add_user(&self, user: &User) -> StoreResult<()>;

    async fn user_by_email(&self, email: &Email) -> StoreResult<Option<User>>;

    async fn list_users(&self) -> StoreResult<Vec<User>>;

    /// Remove a user and revoke their sessions; false if there was none.
    async fn remove_user(&self, email: &Email, now: i64) -> StoreResult<bool>;

    /// Disable (revoking their sessions) or enable a user; false if unknown.
    async fn set_user_disabled(&self, email: &Email, disabled: bool, now: i64)
        -> StoreResult<bool>;

    /// Replace a user's groups, in their live sessions too; false if unknown.
    async fn set_user_groups(&self, email: &Email, groups: &[String]) -> StoreResult<bool>;

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>>;

    async fn user_by_handle(&self, handle: &str) -> StoreResult<Option<User>>;

    /// The user's WebAuthn handle, set to `fresh` if they had none yet.
    async fn ensure_user_handle(&self, user_id: &str, fresh: &str) -> StoreResult<String>;

    /// Note that the user signed in from `browser` (a hash of its browser
    /// cookie): whether it is one they used before, a new one, or the first
    /// the account has (nothing to compare with). The newest 50 are kept.
    async fn remember_browser(
        &self,
        user_id: &str,
        browser: &str,
        now: i64,
    ) -> StoreResult<BrowserSeen>;
}

/// What [`UserStore::remember_browser`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrowserSeen {
    Known,
    New,
    First,
}

/// Pending sign-ins (a link and code asked for), each step atomic.
#[async_trait]
pub trait PendingStore: Send + Sync {
    async fn create_pending(&self, login: &PendingLogin) -> StoreResult<()>;

    /// Count one opening of the confirm page and return the login as it now is.
    async fn view_pending(&self, id: &str) -> StoreResult<Option<PendingLogin>>;

    /// The pending login as it is, counting nothing.
    async fn pending(&self, id: &str) -> StoreResult<Option<PendingLogin>>;

    /// Atomically mark a live pending login as used; `None` if it was already
    /// used, expired or never existed. Exactly one caller wins.
    async fn consume_pending(&self, id: &str, now: i64) -> StoreResult<Option<PendingLogin>>;

    /// Atomically count one code attempt; `None` if the login is used,
    /// expired, unknown, or has no attempts left.
    async fn attempt_code(
        &self,
        id: &str,
        now: i64,
        max_attempts: u32,
    ) -> StoreResult<Option<PendingLogin>>;

    /// Atomically decide a live, undecided pending login from another
    /// device (`Approved`, `WrongNumber` or `Denied`; `Used` is
    /// [`PendingStore::consume_pending`]); `None` if it was decided already,
    /// expired or never existed. Exactly one decision wins. An approval is
    /// kept until `collect_by` for the asking browser to collect.
    async fn decide_pending(
        &self,
        id: &str,
        now: i64,
        decision: Decision,
        collect_by: i64,
    ) -> StoreResult<Option<PendingLogin>>;

    /// Atomically take an approved pending login for the browser that
    /// asked for it; `None` if it is not approved, was taken already or
    /// its time to collect ran out. Exactly one caller wins.
    async fn collect_pending(&self, id: &str, now: i64) -> StoreResult<Option<PendingLogin>>;

    /// Which of `ids` are decided (by any instance): one read however many
    /// browsers wait.
    async fn decided_pending(&self, ids: &[String]) -> StoreResult<Vec<String>>;

    /// Delete expired pending logins; counts those whose confirm page was
    /// opened but that were never used (suspected mail-scanner hits) and
    /// the approvals their asking browser never collected.
    async fn sweep_pending(&self, now: i64) -> StoreResult<SweptPending>;
}

/// Sign-in requests approved from a signed-in device (QR, device grant),
/// each step atomic.
#[async_trait]
pub trait DeviceRequestStore: Send + Sync {
    /// Store a new request; `Exists` if its user code is taken.
    async fn create_device_request(&self, request: &DeviceRequest) -> StoreResult<()>;

    async fn device_request(&self, id: &str) -> StoreResult<Option<DeviceRequest>>;

    /// The request with this user code (its MAC), as it is.
    async fn device_request_by_code(&self, user_code: &str) -> StoreResult<Option<DeviceRequest>>;

    /// Atomically decide a live, undecided request; an approval names the
    /// approving user and their session's method, and is kept until
    /// `collect_by`. `None` if it was decided already, expired or never
    /// existed. Exactly one decision wins.
    async fn decide_device_request(
        &self,
        id: &str,
        now: i64,
        decision: Decision,
        approver: Option<(&UserId, AuthMethod)>,
        collect_by: i64,
    ) -> StoreResult<Option<DeviceRequest>>;

    /// Atomically take an approved request for the side that asked;
    /// `None` if not approved, taken already or out of time.
    async fn collect_device_request(
        &self,
        id: &str,
        now: i64,
    ) -> StoreResult<Option<DeviceRequest>>;

    /// Which of `ids` are decided: one read however many wait.
    async fn decided_device_requests(&self, ids: &[String]) -> StoreResult<Vec<String>>;

    /// Delete expired requests; the kinds of the approvals never collected.
    async fn sweep_device_requests(&self, now: i64) -> StoreResult<Vec<RequestKind>>;
}

/// What is live in the store, for the gauges on `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Sessions neither expired nor revoked.
    pub sessions: i64,
    /// Sign-ins asked for (a link or code sent) and neither used nor expired.
    pub pending_sign_ins: i64,
}

/// What [`PendingStore::sweep_pending`] deleted, of note.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweptPending {
    /// Opened, never used: suspected mail scanners.
    pub unconfirmed: u64,
    /// Approved on another device, never collected by the asking browser.
    pub uncollected: u64,
}

/// Sessions: created with the user's identity as stored, revoked once.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Store a new session for `session.user_id`, with the user's email,
    /// name and groups as the store has them at that moment (the record's
    /// own are not used); `None` if the user is gone or disabled.
    async fn create_session(&self, session: &SessionRecord) -> StoreResult<Option<SessionRecord>>;

    async fn session(&self, id_hash: &str) -> StoreResult<Option<SessionRecord>>;

    /// Record when sessions were last used, `(id_hash, last_seen)` each, in
    /// one transaction (one write to disk for all of them); a time earlier
    /// than the one stored changes nothing.
    async fn touch_sessions(&self, touches: &[(String, i64)]) -> StoreResult<()>;

    /// Revoke a session and the sessions handed off from it (`parent`);
    /// true if the session itself was live.
    async fn revoke_session(&self, id_hash: &str, now: i64) -> StoreResult<bool>;

    /// Sessions not revoked and not past their lifetime, newest first,
    /// optionally of one user.
    async fn list_sessions(
        &self,
        user: Option<&Email>,
        now: i64,
    ) -> StoreResult<Vec<SessionRecord>>;

    /// Revoke every session of a user; returns how many were live.
    async fn revoke_user_sessions(&self, email: &Email, now: i64) -> StoreResult<u64>;
}

/// Handoff codes from the portal to a site, each taken once.
#[async_trait]
pub trait HandoffStore: Send + Sync {
    async fn put_handoff(&self, handoff: &Handoff) -> StoreResult<()>;

    /// Take a code out of the store: single use (exactly one caller gets
    /// it), `None` if it was taken, expired or never existed.
    async fn take_handoff(&self, code_hash: &str, now: i64) -> StoreResult<Option<Handoff>>;

    /// Delete the codes that expired untaken.
    async fn sweep_handoffs(&self, now: i64) -> StoreResult<()>;
}

/// The OpenID Connect provider's codes, grants and tokens, by hash.
#[async_trait]
pub trait OidcStore: Send + Sync {
    async fn put_oidc_code(&self, code: &OidcCode) -> StoreResult<()>;

    /// Mark a code used (atomically: one caller gets `Fresh`); a code used
    /// before answers `Reused` with the grant its first use made.
    async fn take_oidc_code(&self, code_hash: &str, now: i64) -> StoreResult<CodeTaken>;

    /// Store a grant made from a code (or, `None`, an approved device
    /// code), with its first tokens, and note it on the code (so that a
    /// second use of the code can revoke it); false (nothing stored) if a
    /// second use of the code came first.
    async fn create_oidc_grant(
        &self,
        grant: &OidcGrant,
        code_hash: Option<&str>,
        tokens: &[NewToken],
    ) -> StoreResult<bool>;

    /// Use a refresh token (atomically: one caller gets `Fresh`): its grant
    /// if it, the grant and the sign-in are live; a token used before
    /// answers `Reused` with its grant (to be revoked: RFC 9700 4.14.2).
    async fn use_refresh_token(&self, token_hash: &str, now: i64) -> StoreResult<RefreshUse>;

    /// Add tokens to a live grant (a refresh's new ones).
    async fn add_oidc_tokens(&self, grant_id: &str, tokens: &[NewToken]) -> StoreResult<()>;

    /// Revoke a token of `client_id` (RFC 7009): a refresh token takes its
    /// whole grant with it, an access token only itself. False if no such
    /// token of that client.
    async fn revoke_oidc_token(
        &self,
        token_hash: &str,
        client_id: &str,
        now: i64,
    ) -> StoreResult<bool>;

    /// The grant of a live access token, if the token, the grant and the
    /// sign-in it came from (the portal session: not revoked, not past its
    /// lifetime) are all still live; its scope is the token's.
    async fn oidc_access(&self, token_hash: &str, now: i64) -> StoreResult<Option<OidcGrant>>;

    /// Revoke a grant and so every token of it; false if it was not live.
    async fn revoke_oidc_grant(&self, id: &str, now: i64) -> StoreResult<bool>;

    /// Live grants (not revoked, their sign-in not revoked), newest first,
    /// optionally of one user.
    async fn list_oidc_grants(
        &self,
        user_id: Option<&str>,
        now: i64,
    ) -> StoreResult<Vec<OidcGrant>>;

    /// Claim the grants whose sign-in (portal session) was revoked and whose
    /// back-channel logout was not handled yet: each is returned to one
    /// caller only, across instances.
    async fn claim_oidc_logouts(&self, now: i64) -> StoreResult<Vec<OidcGrant>>;

    /// Delete codes and tokens expired before `before`.
    async fn sweep_oidc(&self, before: i64) -> StoreResult<()>;
}

/// Rate-limit windows, counted atomically across instances.
#[async_trait]
pub trait RateLimitStore: Send + Sync {
    /// Count one hit of a rate-limit `key` in the window starting at
    /// `window_start`; returns the count including this hit (atomic).
    async fn count_hit(&self, key: &str, window_start: i64) -> StoreResult<i64>;

    /// The hits counted for `key` in the window starting at `window_start`
    /// (0 if none), counting nothing.
    async fn hits(&self, key: &str, window_start: i64) -> StoreResult<i64>;

    /// Forget rate-limit windows that started before `before`.
    async fn sweep_rate_limits(&self, before: i64) -> StoreResult<()>;
}

/// Key records (cookies, links, assertions), rotated and retired.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Every key, any purpose, in no particular order.
    async fn keys(&self) -> StoreResult<Vec<KeyRecord>>;

    /// Insert a key unless one with its id exists (first start, raced by several instances).
    async fn ensure_key(&self, key: &KeyRecord) -> StoreResult<()>;

    /// Add a key (a rotation) and tell the other instances.
    async fn add_key(&self, key: &KeyRecord) -> StoreResult<()>;

    /// Delete a key at once (`sesame keys retire`) and tell the other
    /// instances; false if there was none.
    async fn remove_key(&self, kid: &str) -> StoreResult<bool>;
}

/// Passkeys and the server-side state of WebAuthn ceremonies.
#[async_trait]
pub trait PasskeyStore: Send + Sync {
    async fn add_passkey(&self, passkey: &PasskeyRecord) -> StoreResult<()>;

    async fn passkeys_of(&self, user_id: &str) -> StoreResult<Vec<PasskeyRecord>>;

    async fn passkey(&self, id: &str) -> StoreResult<Option<PasskeyRecord>>;

    async fn rename_passkey(&self, user_id: &str, id: &str, name: &str) -> StoreResult<bool>;

    async fn delete_passkey(&self, user_id: &str, id: &str) -> StoreResult<bool>;

    /// Every passkey, of every user (for the admin command).
    async fn list_passkeys(&self) -> StoreResult<Vec<PasskeyRecord>>;

    /// Delete a passkey whoever owns it (admin); false if there was none.
    async fn revoke_passkey(&self, id: &str) -> StoreResult<bool>;

    /// Record a sign-in with a passkey, only if its counter is still
    /// `seen_counter` (compare and swap); false if another sign-in won.
    async fn passkey_used(
        &self,
        after: &PasskeyRecord,
        seen_counter: i64,
        now: i64,
    ) -> StoreResult<bool>;

    async fn put_ceremony(&self, ceremony: &Ceremony) -> StoreResult<()>;

    /// Take a ceremony's state out of the store: single use, `None` if it
    /// was used, expired or never existed.
    async fn take_ceremony(&self, id: &str, now: i64) -> StoreResult<Option<Ceremony>>;
}

/// Everything Sesame keeps, by kind of data ([`UserStore`], [`PendingStore`],
/// [`SessionStore`], [`RateLimitStore`], [`KeyStore`], [`PasskeyStore`]),
/// plus the store-wide steps. `DynStore` is one of these.
#[async_trait]
pub trait Store:
    UserStore
    + PendingStore
    + DeviceRequestStore
    + SessionStore
    + HandoffStore
    + OidcStore
    + RateLimitStore
    + KeyStore
    + PasskeyStore
    + Send
    + Sync
    + 'static
{
    /// Return the secret called `name`, creating it from `fresh` if there is
    /// none yet. The first writer wins, so every process gets the same secret.
    async fn ensure_secret(&self, name: &str, fresh: &[u8], now: i64) -> StoreResult<Vec<u8>>;

    /// Cheap round trip for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;

    /// How many sessions and sign-ins are live at `now`, in the whole
    /// store (the gauges on `/metrics`).
    async fn counts(&self, now: i64) -> StoreResult<Counts>;

    /// Deliver what other processes revoked or changed, until the store is
    /// dropped. Stores shared by several processes (PostgreSQL) implement
    /// it; for the others there is nothing to hear and it returns at once.
    async fn feed_invalidations(&self, _sink: &(dyn Fn(Invalidation) + Send + Sync)) {}
}

/// What a cache of sessions must drop because the store changed elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// One session, by the hash of its id.
    Session(String),
    /// Every session of a user, by user id.
    User(String),
    /// The keys changed (a rotation): reload them.
    Keys,
    /// Everything: notifications may have been missed.
    All,
}

impl Invalidation {
    pub fn payload(&self) -> String {
        match self {
            Invalidation::Session(h) => format!("s:{h}"),
            Invalidation::User(u) => format!("u:{u}"),
            Invalidation::Keys => "k".to_string(),
            Invalidation::All => "*".to_string(),
        }
    }

    /// `None` for a payload Sesame does not send: any role that can connect
    /// may NOTIFY, and a made-up payload must not flush every instance's
    /// caches (a lost notice is what [`Invalidation::All`] is for, and the
    /// listener itself knows when it lost some).
    pub fn parse(payload: &str) -> Option<Invalidation> {
        match payload.split_once(':') {
            // A session id hash (SHA-256, hex) and a user id (`u_`, base64url).
            Some(("s", h)) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(Invalidation::Session(h.to_string()))
            }
            Some(("u", u))
                if u.len() <= 64
                    && u.strip_prefix("u_").is_some_and(|r| {
                        !r.is_empty()
                            && r.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    }) =>
            {
                Some(Invalidation::User(u.to_string()))
            }
            _ if payload == "k" => Some(Invalidation::Keys),
            // `*` too: no instance sends it (flushing everything is what a
            // listener does by itself when it may have missed notices).
            _ => None,
        }
    }
}

pub type DynStore = Arc<dyn Store>;

/// What `sesame doctor` reads of a store without changing it.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspection {
    /// Migrations this binary knows that the store has not had.
    pub missing: Vec<i64>,
    /// Migrations the store has that this binary does not know (a newer
    /// Sesame migrated it).
    pub unknown: Vec<i64>,
    /// How many seconds the database's clock is ahead of this host's
    /// (PostgreSQL; SQLite has no clock of its own).
    pub clock_ahead: Option<f64>,
    /// When each signing key was made (seconds since 1970), read only
    /// where the schema is exactly this binary's.
    pub keys_created: Vec<i64>,
}

impl Inspection {
    fn of(known: &[(i64, &str)], applied: Vec<i64>, clock_ahead: Option<f64>) -> Inspection {
        Inspection {
            keys_created: Vec::new(),
            missing: known
                .iter()
                .map(|(v, _)| *v)
                .filter(|v| !applied.contains(v))
                .collect(),
            unknown: applied
                .into_iter()
                .filter(|v| !known.iter().any(|(k, _)| k == v))
                .collect(),
            clock_ahead,
        }
    }

    /// Exactly the migrations this binary knows: the tables are as it
    /// reads them.
    pub fn current(&self) -> bool {
        self.missing.is_empty() && self.unknown.is_empty()
    }
}

/// Read what migrations the store a config names has, changing nothing:
/// `None` for a SQLite file that does not exist yet. `now`: this host's
/// clock, to compare with the database's.
pub async fn inspect(config: &StoreConfig, now: i64) -> StoreResult<Option<Inspection>> {
    match config {
        StoreConfig::Sqlite { path } => sqlite::inspect(path).await,
        StoreConfig::Postgres { url } => postgres::inspect(url, now).await.map(Some),
    }
}

/// Open (and migrate) the store a config names.
pub async fn open(config: &StoreConfig) -> StoreResult<DynStore> {
    match config {
        StoreConfig::Sqlite { path } => Ok(Arc::new(sqlite::SqliteStore::open(path).await?)),
        StoreConfig::Postgres { url } => Ok(Arc::new(postgres::PgStore::open(url).await?)),
    }
}

#[cfg(test)]
mod tests {
    use super::Invalidation;

    #[test]
    fn only_notices_sesame_sends_are_heard() {
        let hash = "ab".repeat(32);
        for what in [
            Invalidation::Session(hash.clone()),
            Invalidation::User("u_AbC-9_x".into()),
            Invalidation::Keys,
        ] {
            assert_eq!(Invalidation::parse(&what.payload()), Some(what));
        }
        for made_up in [
            "*",
            "",
            "s:",
            "s:x",
            "u:",
            "u:admin",
            "u:u_",
            "x:1",
            &format!("s:{hash}0"),
        ] {
            assert_eq!(Invalidation::parse(made_up), None, "{made_up:?}");
        }
    }
}

#[cfg(test)]
mod ceremony_kind_tests {
    use super::CeremonyKind;

    #[test]
    fn ceremony_kinds_read_back_as_stored_and_nothing_else_reads() {
        for kind in [
            CeremonyKind::Register,
            CeremonyKind::Login,
            CeremonyKind::Discoverable,
        ] {
            assert_eq!(CeremonyKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(CeremonyKind::parse("Login"), None);
        assert_eq!(CeremonyKind::parse(""), None);
    }
}

#[cfg(test)]
mod promises;
