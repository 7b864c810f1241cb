//! The session cache: live sessions by session id, in memory.
//!
//! Every proxied request reads it, so a read is one shard's read lock and
//! one hash lookup. Freshness is the reader's business: each entry carries
//! the time it was read from the store (`LiveSession::loaded_at`), and
//! [`Sessions::check`](super::Sessions::check) decides whether to use it,
//! re-read it, or keep using it through a store outage. What the cache
//! itself does is bound memory: [`SessionCache::sweep`] drops entries older
//! than `keep`, and an insert into a full shard first drops the old ones,
//! then arbitrary ones, down to fifteen sixteenths of the shard (a session
//! dropped is read from the store again when next seen).
//!
//! A general cache (moka, which Sesame used before) keeps per entry an
//! access-order node, a write-order node, timestamps and a frequency sketch
//! slot: about 300 bytes. Here an entry is its key, a pointer and the map's
//! slot.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::LiveSession;

type Shard = HashMap<Box<str>, Arc<LiveSession>, foldhash::fast::RandomState>;

/// Shards: the two gateway threads and the background tasks rarely meet on
/// one lock; a power of two, to pick one by the hash's top bits.
const SHARDS: usize = 16;

pub struct SessionCache {
    shards: Box<[RwLock<Shard>]>,
    /// Picks the shard (each shard's map hashes with its own seed).
    hasher: foldhash::fast::RandomState,
    per_shard: usize,
    /// Entries loaded longer ago than this (seconds) are of no use.
    keep: i64,
}

impl SessionCache {
    /// Room for about `capacity` sessions, each kept `keep` seconds.
    pub fn new(capacity: usize, keep: i64) -> SessionCache {
        SessionCache {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            keep,
        }
    }

    fn shard(&self, id: &str) -> &RwLock<Shard> {
        let h = self.hasher.hash_one(id);
        &self.shards[(h >> (64 - SHARDS.trailing_zeros())) as usize]
    }

    fn read(shard: &RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
        shard.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(shard: &RwLock<Shard>) -> RwLockWriteGuard<'_, Shard> {
        shard.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<Arc<LiveSession>> {
        Self::read(self.shard(id)).get(id).cloned()
    }

    /// Cache `live` under `id` (replacing what was there); `now` in clock
    /// seconds, to know what is old when the shard is full.
    pub fn insert(&self, id: &str, live: Arc<LiveSession>, now: i64) {
        let mut shard = Self::write(self.shard(id));
        if shard.len() >= self.per_shard && !shard.contains_key(id) {
            shard.retain(|_, l| usable(now, l, self.keep));
            // Then down to fifteen sixteenths, arbitrarily chosen, so that
            // the next inserts find room without a pass over the shard.
            let room = self.per_shard - self.per_shard / 16 - 1;
            let mut excess = shard.len().saturating_sub(room);
            shard.retain(|_, _| {
                let drop = excess > 0;
                excess = excess.saturating_sub(1);
                !drop
            });
        }
        shard.insert(id.into(), live);
    }

    pub fn remove(&self, id: &str) -> Option<Arc<LiveSession>> {
        Self::write(self.shard(id)).remove(id)
    }

    /// Drop every entry `drop` says yes to.
    pub fn remove_if(&self, drop: impl Fn(&LiveSession) -> bool) {
        for shard in self.shards.iter() {
            Self::write(shard).retain(|_, l| !drop(l));
        }
    }

    pub fn clear(&self) {
        for shard in self.shards.iter() {
            Self::write(shard).clear();
        }
    }

    /// Drop the entries loaded `keep` or longer before `now` (or after it:
    /// the clock went back, and the session check reads those again).
    pub fn sweep(&self, now: i64) {
        self.remove_if(|l| !usable(now, l, self.keep));
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| Self::read(s).len()).sum()
    }
}

/// Loaded less than `keep` seconds before `now`.
fn usable(now: i64, live: &LiveSession, keep: i64) -> bool {
    (0..keep).contains(&now.saturating_sub(live.loaded_at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::email::Email;
    use crate::store::{AuthMethod, SessionRecord};

    fn live(user: &str, loaded_at: i64) -> Arc<LiveSession> {
        let record = SessionRecord {
            id_hash: format!("h_{user}").into(),
            user_id: user.into(),
            email: Email::parse("ada@example.com").unwrap(),
            name: None,
            groups: vec![],
            auth_method: AuthMethod::MagicLink,
            created_at: 0,
            expires_at: 10_000,
            last_seen: loaded_at,
            revoked: false,
            parent: None,
            device: None,
        };
        Arc::new(LiveSession::new(record, loaded_at))
    }

    #[test]
    fn keeps_replaces_and_removes_by_id() {
        let c = SessionCache::new(100, 60);
        c.insert("a", live("u_a", 0), 0);
        c.insert("b", live("u_b", 0), 0);
        assert_eq!(&*c.get("a").unwrap().record.user_id, "u_a");
        c.insert("a", live("u_a2", 5), 5);
        assert_eq!(&*c.get("a").unwrap().record.user_id, "u_a2");
        assert_eq!(c.len(), 2);
        assert!(c.remove("a").is_some());
        assert!(c.get("a").is_none());
        c.remove_if(|l| &*l.record.user_id == "u_b");
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn sweep_drops_what_is_older_than_keep() {
        let c = SessionCache::new(100, 60);
        c.insert("old", live("u_old", 0), 0);
        c.insert("new", live("u_new", 30), 30);
        c.sweep(60);
        assert!(c.get("old").is_none());
        assert!(c.get("new").is_some());
    }

    #[test]
    fn never_holds_more_than_its_capacity() {
        let c = SessionCache::new(SHARDS * 4, 60);
        for i in 0..10_000 {
            c.insert(&format!("s{i}"), live("u", i), i);
            assert!(c.len() <= SHARDS * 4, "after {i} inserts: {}", c.len());
        }
        // The newest entry is always kept.
        assert!(c.get("s9999").is_some());
    }
}
