//! Sessions: minting a new one at sign-in, checking one on every request,
//! revoking one at sign-out.
//!
//! The per-request check opens the sealed cookie (symmetric AEAD only) and
//! looks the session up in an in-memory cache; only a cache miss reaches the
//! store. Cookie attributes live in `cookies.rs`; who may sign in is decided
//! elsewhere.

mod cache;
pub mod cookies;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::config::SessionConfig;
use crate::keys::random_id;
use crate::store::{AuthMethod, Device, DynStore, Invalidation, SessionRecord, StoreResult, User};

/// How long a session stays cached: the bound on how late a revocation made
/// elsewhere is seen if its notification is lost.
pub const CACHE_TTL: Duration = Duration::from_secs(60);

/// How often a session's last-seen time is written back to the store.
const TOUCH_EVERY_SECS: i64 = 60;

/// A live session as the hot path sees it.
#[derive(Debug)]
pub struct LiveSession {
    pub record: SessionRecord,
    /// The identity header values, built once per load of the record so
    /// that each request only clones them (a reference count).
    pub values: IdentityValues,
    /// Signed assertions by site index (see `identity`), renewed as they age;
    /// they go with the record, so a changed record is never asserted stale.
    pub assertions: std::sync::Mutex<Vec<Option<Arc<crate::identity::Signed>>>>,
    last_seen: AtomicI64,
    persisted_seen: AtomicI64,
    /// When (clock seconds) the record was read from the store.
    loaded_at: i64,
    /// `Sessions::epoch` when the store read began: a change noted at a
    /// later epoch makes this entry unusable.
    epoch: u64,
}

/// Header values of one identity, built once per load of the record: the
/// values sit one after another in one shared buffer, and each request
/// takes its headers as slices of it (a reference count each, no copy).
#[derive(Debug, Clone)]
pub struct IdentityValues {
    /// User, email, name, groups (comma-joined), one after another.
    text: bytes::Bytes,
    /// Where each of them ends in `text` (each starts where the one before
    /// ends).
    ends: [u32; 4],
    /// `false` when there is no name.
    has_name: bool,
    auth_method: AuthMethod,
}

impl IdentityValues {
    /// Values are the UTF-8 bytes of the text: beyond ASCII (Zoë, Équipe)
    /// they go as they are, the way Authelia and oauth2-proxy send them.
    /// Text a header cannot carry (control characters, which every input
    /// path refuses; only a hand-edited store row holds them) is left out,
    /// never altered: a group `adm\x01in` must not reach the app as `admin`.
    pub fn of(record: &SessionRecord) -> IdentityValues {
        let carries = |s: &str| HeaderValue::from_bytes(s.as_bytes()).is_ok();
        let groups: Vec<&str> = record
            .groups
            .iter()
            .map(String::as_str)
            .filter(|g| !g.chars().any(char::is_control))
            .collect();
        let groups = groups.join(",");
        let name = record.name.as_deref().filter(|n| carries(n));
        let values = [
            Some(record.user_id.as_str()).filter(|u| carries(u)),
            Some(record.email.as_str()).filter(|e| carries(e)),
            name,
            Some(groups.as_str()).filter(|g| carries(g)),
        ];
        let total: usize = values.iter().flatten().map(|v| v.len()).sum();
        // Beyond 4 GiB of identity text (never), every value is left out.
        let Ok(_) = u32::try_from(total) else {
            return IdentityValues {
                text: bytes::Bytes::new(),
                ends: [0; 4],
                has_name: false,
                auth_method: record.auth_method,
            };
        };
        let mut text = Vec::with_capacity(total);
        let mut ends = [0; 4];
        for (end, value) in ends.iter_mut().zip(values) {
            text.extend_from_slice(value.unwrap_or("").as_bytes());
            *end = text.len() as u32;
        }
        IdentityValues {
            text: bytes::Bytes::from(text),
            ends,
            has_name: name.is_some(),
            auth_method: record.auth_method,
        }
    }

    /// The `i`th value of `text`.
    fn value(&self, i: usize) -> HeaderValue {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let bytes = self.text.slice(start..self.ends[i] as usize);
        // Checked when built; an empty value if it somehow is not one.
        HeaderValue::from_maybe_shared(bytes).unwrap_or(HeaderValue::from_static(""))
    }

    pub fn user(&self) -> HeaderValue {
        self.value(0)
    }

    pub fn email(&self) -> HeaderValue {
        self.value(1)
    }

    pub fn name(&self) -> Option<HeaderValue> {
        self.has_name.then(|| self.value(2))
    }

    pub fn has_name(&self) -> bool {
        self.has_name
    }

    pub fn groups(&self) -> HeaderValue {
        self.value(3)
    }

    pub fn auth_method(&self) -> HeaderValue {
        HeaderValue::from_static(self.auth_method.as_str())
    }
}

impl LiveSession {
    /// A session as read from the store at `loaded_at` (clock seconds).
    pub fn new(record: SessionRecord, loaded_at: i64) -> LiveSession {
        LiveSession {
            values: IdentityValues::of(&record),
            assertions: std::sync::Mutex::new(Vec::new()),
            last_seen: AtomicI64::new(record.last_seen),
            persisted_seen: AtomicI64::new(record.last_seen),
            loaded_at,
            epoch: 0,
            record,
        }
    }
}

/// Why a cookie did not yield a session (for metrics; all mean anonymous).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    Malformed,
    Expired,
    Revoked,
    Idle,
    Unknown,
    StoreUnavailable,
}

pub struct Sessions {
    config: SessionConfig,
    store: DynStore,
    /// False while the store is known to be unreachable (set by a probe).
    store_up: Arc<AtomicBool>,
    clock: Clock,
    cache: cache::SessionCache,
    /// Activity to record in the store, `id_hash -> last_seen`, written by
    /// [`Sessions::write_activity`] in one transaction: a burst of sessions
    /// seen for the first time (a restart with many people active) costs one
    /// write, not one per session queued ahead of their reads.
    activity: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    /// `sesame_store_query_seconds{op="session_lookup"}`, when timed.
    lookup_seconds: Option<prometheus::Histogram>,
    /// Store reads under way, by session id: requests for a session that is
    /// being read wait for that read instead of making their own (a page's
    /// parallel requests after a restart, or when the cache entry is due).
    reading: std::sync::Mutex<std::collections::HashMap<String, Arc<Reading>>>,
    /// Sessions and users changed elsewhere (revoked, signed out, edited),
    /// by the epoch the change bumped to: a cached entry read at an earlier
    /// epoch is read again. Kept as long as such an entry could be used
    /// (`CACHE_TTL` + outage grace), then swept. Checking two small maps
    /// on a read, rather than scanning the cache at each change, keeps a
    /// run of sign-outs from costing a pass over every cached session each.
    changed: std::sync::RwLock<Changed>,
    /// Whether `changed` holds anything (the common case, no: no lookup).
    any_changed: AtomicBool,
    /// Bumped by every revocation and invalidation before it takes entries
    /// out of the cache. A store read that saw it change may have read the
    /// record from before that change, so what it read is not kept.
    epoch: AtomicU64,
}

type Reading = tokio::sync::OnceCell<Result<Arc<LiveSession>, Rejected>>;

/// What changed, by the epoch it bumped to and when (clock seconds).
#[derive(Default)]
struct Changed {
    /// By the hash of the session id.
    sessions: std::collections::HashMap<String, (u64, i64)>,
    /// By user id.
    users: std::collections::HashMap<String, (u64, i64)>,
}

/// `a - b` seconds is in `0..limit`: false when the clock went back.
fn within(a: i64, b: i64, limit: i64) -> bool {
    (0..limit).contains(&a.saturating_sub(b))
}

/// How long a cached entry may be of use, in seconds.
fn keep_secs(config: &SessionConfig) -> i64 {
    i64::try_from(CACHE_TTL.saturating_add(config.outage_grace).as_secs()).unwrap_or(i64::MAX)
}

/// A freshly minted session: its cookie plaintext and record.
pub struct NewSession {
    pub cookie_plain: String,
    pub record: SessionRecord,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

pub fn hash_id(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    pub fn new(
        config: SessionConfig,
        store: DynStore,
        store_up: Arc<AtomicBool>,
        clock: Clock,
    ) -> Sessions {
        Sessions {
            // After its TTL and the outage grace, an entry is of no use.
            cache: cache::SessionCache::new(200_000, keep_secs(&config)),
            changed: Default::default(),
            any_changed: AtomicBool::new(false),
            config,
            store,
            store_up,
            clock,
            activity: Default::default(),
            reading: Default::default(),
            epoch: AtomicU64::new(0),
            lookup_seconds: None,
        }
    }

    /// Time each session read from the store into `histogram`.
    pub fn timed(mut self, histogram: prometheus::Histogram) -> Sessions {
        self.lookup_seconds = Some(histogram);
        self
    }

    /// Write the activity noted since the last call, in one transaction; if
    /// the store cannot take it now, it is kept for the next call.
    pub async fn write_activity(&self) {
        let touches: Vec<(String, i64)> = {
            let mut pending = self.activity.lock().unwrap_or_else(|e| e.into_inner());
            if pending.is_empty() {
                return;
            }
            std::mem::take(&mut *pending).into_iter().collect()
        };
        if let Err(e) = self.store.touch_sessions(&touches).await {
            tracing::warn!(error = %e, sessions = touches.len(), "could not record session activity; trying again");
            let mut pending = self.activity.lock().unwrap_or_else(|e| e.into_inner());
            for (id_hash, seen) in touches {
                let at = pending.entry(id_hash).or_insert(seen);
                *at = (*at).max(seen);
            }
        }
    }

    /// Create and store a new session with a new random id, carrying the
    /// user's identity as the store has it now; `None` if the user was
    /// disabled or removed since `user` was read.
    pub async fn create(&self, user: &User, method: AuthMethod) -> StoreResult<Option<NewSession>> {
        self.create_from(user, method, None).await
    }

    /// [`Sessions::create`], signed in with `device` (shown in the
    /// person's list of sessions).
    pub async fn create_from(
        &self,
        user: &User,
        method: AuthMethod,
        device: Option<&Device>,
    ) -> StoreResult<Option<NewSession>> {
        self.mint(user, method, None, device).await
    }

    /// A site's own session made from `parent`, a live portal session (a
    /// handoff): the same person and sign-in method, ending no later than
    /// the parent, and revoked with it. `None` if the user was disabled or
    /// removed.
    pub async fn create_child(&self, parent: &SessionRecord) -> StoreResult<Option<NewSession>> {
        let user = User {
            id: parent.user_id.clone(),
            email: parent.email.clone(),
            name: parent.name.clone(),
            groups: parent.groups.clone(),
            disabled: false,
            created_at: parent.created_at,
        };
        self.mint(&user, parent.auth_method, Some(parent), None)
            .await
    }

    async fn mint(
        &self,
        user: &User,
        method: AuthMethod,
        parent: Option<&SessionRecord>,
        device: Option<&Device>,
    ) -> StoreResult<Option<NewSession>> {
        let id = random_id(32);
        let now = self.clock.now();
        let mut expires_at = now + self.config.lifetime.as_secs() as i64;
        if let Some(p) = parent {
            expires_at = expires_at.min(p.expires_at);
        }
        // The store copies the identity from the user's row; only the id
        // of `user` counts.
        let record = SessionRecord {
            id_hash: hash_id(&id).into(),
            user_id: user.id.clone(),
            email: user.email.clone(),
            name: user.name.clone(),
            groups: user.groups.clone(),
            auth_method: method,
            created_at: now,
            expires_at,
            last_seen: now,
            revoked: false,
            parent: parent.map(|p| p.id_hash.clone()),
            device: device.map(|d| Box::new(d.clone())),
        };
        let Some(record) = self.store.create_session(&record).await? else {
            return Ok(None);
        };
        Ok(Some(NewSession {
            cookie_plain: format!("{id}.{expires_at}"),
            record,
        }))
    }

    pub fn lifetime_secs(&self) -> i64 {
        self.config.lifetime.as_secs() as i64
    }

    /// Check an opened cookie plaintext (`id.expires_at`).
    pub async fn check(&self, plain: &str) -> Result<Arc<LiveSession>, Rejected> {
        let (id, exp) = plain.split_once('.').ok_or(Rejected::Malformed)?;
        let exp: i64 = exp.parse().map_err(|_| Rejected::Malformed)?;
        let now = self.clock.now();
        if exp <= now {
            return Err(Rejected::Expired);
        }
        // An entry changed elsewhere since it was read counts as absent: read
        // again, and never used through an outage.
        let cached = self.cache.get(id).filter(|l| !self.changed_since_read(l));
        let live = match cached {
            Some(live) if within(now, live.loaded_at, CACHE_TTL.as_secs() as i64) => live,
            // Boxed: a store read's state would otherwise be carried (and
            // copied) by every request that finds its session cached.
            Some(stale) => Box::pin(self.refresh(id, stale, now)).await?,
            None => Box::pin(self.load_once(id, now)).await?,
        };
        if live.record.revoked {
            return Err(Rejected::Revoked);
        }
        if live.record.expires_at <= now {
            return Err(Rejected::Expired);
        }
        let last = live.last_seen.load(Ordering::Relaxed);
        if now - last > self.config.idle_timeout.as_secs() as i64 {
            return Err(Rejected::Idle);
        }
        if now > last {
            live.last_seen.fetch_max(now, Ordering::Relaxed);
        }
        if now - live.persisted_seen.load(Ordering::Relaxed) >= TOUCH_EVERY_SECS {
            live.persisted_seen.store(now, Ordering::Relaxed);
            self.activity
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(live.record.id_hash.to_string(), now);
        }
        Ok(live)
    }

    /// Re-read a session cached longer than `CACHE_TTL`; while the store is
    /// down, keep using it for up to `outage_grace` more.
    async fn refresh(
        &self,
        id: &str,
        stale: Arc<LiveSession>,
        now: i64,
    ) -> Result<Arc<LiveSession>, Rejected> {
        match self.load_once(id, now).await {
            Ok(fresh) => {
                fresh
                    .last_seen
                    .fetch_max(stale.last_seen.load(Ordering::Relaxed), Ordering::Relaxed);
                Ok(fresh)
            }
            Err(Rejected::StoreUnavailable)
                if within(now, stale.loaded_at, keep_secs(&self.config)) =>
            {
                Ok(stale)
            }
            Err(e) => {
                if e == Rejected::Unknown {
                    // Gone from the store: not to be used in an outage later.
                    self.cache.remove(id);
                }
                Err(e)
            }
        }
    }

    /// [`Sessions::load`], once for all the requests that ask at the same time.
    async fn load_once(&self, id: &str, now: i64) -> Result<Arc<LiveSession>, Rejected> {
        let reading = self
            .reading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone();
        // Leaves the map when done, or when this request goes away first
        // (a request still waiting then makes the read itself).
        struct Done<'a> {
            sessions: &'a Sessions,
            id: &'a str,
            reading: &'a Arc<Reading>,
        }
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                let mut map = self
                    .sessions
                    .reading
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if map
                    .get(self.id)
                    .is_some_and(|r| Arc::ptr_eq(r, self.reading))
                {
                    map.remove(self.id);
                }
            }
        }
        let _done = Done {
            sessions: self,
            id,
            reading: &reading,
        };
        reading.get_or_init(|| self.load(id, now)).await.clone()
    }

    /// Read a session from the store and cache it. A revocation or change
    /// that ran while the store was read (its epoch bump seen after the
    /// insert) may have removed its cache entry before this insert: the
    /// entry is taken out again and the store read again, so a revoked
    /// session is never cached as live. After a few such rounds (revocations
    /// without pause), the last read answers this request uncached.
    async fn load(&self, id: &str, now: i64) -> Result<Arc<LiveSession>, Rejected> {
        if !self.store_up.load(Ordering::Relaxed) {
            return Err(Rejected::StoreUnavailable);
        }
        let id_hash = hash_id(id);
        let mut rounds = 0;
        loop {
            let epoch = self.epoch.load(Ordering::SeqCst);
            let timer = self.lookup_seconds.as_ref().map(|h| h.start_timer());
            let read = self.store.session(&id_hash).await;
            drop(timer);
            let record = match read {
                Ok(Some(r)) => r,
                Ok(None) => return Err(Rejected::Unknown),
                Err(e) => {
                    tracing::error!(error = %e, "session lookup failed");
                    return Err(Rejected::StoreUnavailable);
                }
            };
            let mut live = LiveSession::new(record, now);
            live.epoch = epoch;
            let live = Arc::new(live);
            self.cache.insert(id, live.clone(), now);
            if self.epoch.load(Ordering::SeqCst) == epoch {
                return Ok(live);
            }
            self.cache.remove(id);
            rounds += 1;
            if rounds == 3 {
                return Ok(live);
            }
        }
    }

    /// How many sessions are held in memory.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Drop cached sessions too old to be used even through an outage, and
    /// the changes noted before any entry still usable was read.
    pub fn sweep_cache(&self) {
        let now = self.clock.now();
        self.cache.sweep(now);
        let keep = keep_secs(&self.config);
        let mut changed = self.changed.write().unwrap_or_else(|e| e.into_inner());
        // A change from the clock's future (it went back) is kept.
        changed
            .sessions
            .retain(|_, &mut (_, at)| now.saturating_sub(at) < keep);
        changed
            .users
            .retain(|_, &mut (_, at)| now.saturating_sub(at) < keep);
        if changed.sessions.is_empty() && changed.users.is_empty() {
            self.any_changed.store(false, Ordering::Release);
        }
    }

    /// Was `live`'s session or user changed after `live` was read?
    fn changed_since_read(&self, live: &LiveSession) -> bool {
        if !self.any_changed.load(Ordering::Acquire) {
            return false;
        }
        let changed = self.changed.read().unwrap_or_else(|e| e.into_inner());
        let after = |at: Option<&(u64, i64)>| at.is_some_and(|&(epoch, _)| live.epoch < epoch);
        after(changed.sessions.get(live.record.id_hash.as_str()))
            || after(changed.users.get(live.record.user_id.as_str()))
    }

    /// Drop cached sessions that the store says changed elsewhere.
    pub fn invalidate(&self, what: &Invalidation) {
        if *what == Invalidation::Keys {
            return;
        }
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        let now = self.clock.now();
        let note = |f: &dyn Fn(&mut Changed)| {
            f(&mut self.changed.write().unwrap_or_else(|e| e.into_inner()));
            self.any_changed.store(true, Ordering::Release);
        };
        match what {
            Invalidation::Keys => {}
            Invalidation::All => self.cache.clear(),
            Invalidation::Session(h) => note(&|c| {
                c.sessions.insert(h.clone(), (epoch, now));
            }),
            Invalidation::User(u) => note(&|c| {
                c.users.insert(u.clone(), (epoch, now));
            }),
        }
    }

    /// Revoke the session whose cookie plaintext this is; true if it was live.
    pub async fn revoke(&self, plain: &str) -> StoreResult<Option<SessionRecord>> {
        let Some((id, _)) = plain.split_once('.') else {
            return Ok(None);
        };
        let id_hash = hash_id(id);
        let revoked = self
            .store
            .revoke_session(&id_hash, self.clock.now())
            .await?;
        // After the store write, before the cache removal (see `load`).
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let record = match self.cache.remove(id) {
            Some(live) => Some(live.record.clone()),
            None => self.store.session(&id_hash).await?,
        };
        // The store revoked the sessions handed off from this one too: their
        // cached entries (this user's) are read again before use.
        if let Some(r) = &record {
            self.invalidate(&Invalidation::User(r.user_id.to_string()));
        }
        Ok(record.filter(|_| revoked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::email::Email;

    fn record(email: &str, name: Option<&str>, groups: &[&str]) -> SessionRecord {
        SessionRecord {
            id_hash: "h".into(),
            user_id: "u_1".into(),
            email: Email::parse(email).unwrap(),
            name: name.map(str::to_string),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            auth_method: AuthMethod::MagicLink,
            created_at: 0,
            expires_at: 1,
            last_seen: 0,
            revoked: false,
            parent: None,
            device: None,
        }
    }

    #[test]
    fn identity_values_beyond_ascii_go_as_utf8_not_blank() {
        let v = IdentityValues::of(&record(
            "josé@exämple.com",
            Some("Zoë Ångström 山田"),
            &["Équipe", "ops"],
        ));
        assert_eq!(v.email().as_bytes(), "josé@exämple.com".as_bytes());
        assert_eq!(v.name().unwrap().as_bytes(), "Zoë Ångström 山田".as_bytes());
        assert_eq!(v.groups().as_bytes(), "Équipe,ops".as_bytes());
        assert_eq!(v.user(), "u_1");
        assert_eq!(v.auth_method(), "magic_link");
    }

    #[test]
    fn a_value_a_header_cannot_carry_is_left_out_not_altered() {
        let v = IdentityValues::of(&record(
            "a@example.com",
            Some("Ada\rLovelace"),
            &["adm\u{1}in", "ops"],
        ));
        assert!(v.name().is_none());
        assert_eq!(v.groups(), "ops");
        assert_eq!(v.email(), "a@example.com");
    }
}
