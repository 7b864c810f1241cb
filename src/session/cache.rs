//! The in-memory session cache: session id to live session, in sharded hash
//! maps under read-write locks. A lookup on the hot path is one shard read
//! lock and one hash probe; there is no per-read bookkeeping (a general cache
//! such as moka records every read for its eviction policy, and that cost
//! showed in the gateway's profile).
//!
//! Entries leave when they are invalidated, revoked, or swept once older
//! than the caller's horizon. Only sessions the store vouched for are
//! inserted, so the map holds at most the sessions in use within that
//! horizon; past `capacity` a session is not cached (served from the store).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use foldhash::fast::RandomState;

use super::LiveSession;

const SHARDS: usize = 16;

type Shard = HashMap<Box<str>, Arc<LiveSession>, RandomState>;

pub struct SessionCache {
    shards: Vec<RwLock<Shard>>,
    /// Picks the shard. Keys are random session ids; the hash is seeded per
    /// process all the same.
    hasher: RandomState,
    len: AtomicUsize,
    capacity: usize,
}

impl SessionCache {
    pub fn new(capacity: usize) -> SessionCache {
        SessionCache {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::with_hasher(RandomState::default())))
                .collect(),
            hasher: RandomState::default(),
            len: AtomicUsize::new(0),
            capacity,
        }
    }

    fn shard(&self, id: &str) -> &RwLock<Shard> {
        let i = self.hasher.hash_one(id) as usize % SHARDS;
        &self.shards[i]
    }

    fn read(shard: &RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
        shard
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(shard: &RwLock<Shard>) -> RwLockWriteGuard<'_, Shard> {
        shard
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<Arc<LiveSession>> {
        Self::read(self.shard(id)).get(id).cloned()
    }

    /// Cache `live` under `id` (replacing what was there); false when the
    /// cache is full and `id` was not in it.
    pub fn insert(&self, id: &str, live: Arc<LiveSession>) -> bool {
        let mut shard = Self::write(self.shard(id));
        if let Some(slot) = shard.get_mut(id) {
            *slot = live;
            return true;
        }
        if self.len.load(Ordering::Relaxed) >= self.capacity {
            return false;
        }
        shard.insert(id.into(), live);
        self.len.fetch_add(1, Ordering::Relaxed);
        true
    }

    pub fn remove(&self, id: &str) -> Option<Arc<LiveSession>> {
        let removed = Self::write(self.shard(id)).remove(id);
        if removed.is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Keep only the sessions for which `keep` is true.
    pub fn retain(&self, keep: impl Fn(&LiveSession) -> bool) {
        for shard in &self.shards {
            let mut shard = Self::write(shard);
            let before = shard.len();
            shard.retain(|_, live| keep(live));
            self.len.fetch_sub(before - shard.len(), Ordering::Relaxed);
        }
    }

    pub fn clear(&self) {
        self.retain(|_| false);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::email::Email;
    use crate::store::{AuthMethod, SessionRecord};

    fn live(user: &str, loaded_at: i64) -> Arc<LiveSession> {
        let record = SessionRecord {
            id_hash: format!("hash-{user}"),
            user_id: user.into(),
            email: Email::parse(&format!("{user}@example.com")).unwrap(),
            name: None,
            groups: vec![],
            auth_method: AuthMethod::MagicLink,
            created_at: 0,
            expires_at: 1_000,
            last_seen: 0,
            revoked: false,
        };
        Arc::new(LiveSession::new(record, loaded_at))
    }

    #[test]
    fn insert_get_replace_remove() {
        let c = SessionCache::new(10);
        assert!(c.get("a").is_none());
        assert!(c.insert("a", live("ada", 1)));
        assert_eq!(c.get("a").unwrap().record.user_id, "ada");
        assert!(c.insert("a", live("bob", 2)), "replacing is always allowed");
        assert_eq!(c.get("a").unwrap().record.user_id, "bob");
        assert_eq!(c.len(), 1);
        assert_eq!(c.remove("a").unwrap().record.user_id, "bob");
        assert!(c.remove("a").is_none());
        assert!(c.get("a").is_none() && c.is_empty());
    }

    #[test]
    fn retain_and_clear_across_shards() {
        let c = SessionCache::new(1_000);
        for i in 0..100 {
            c.insert(&format!("id{i}"), live(&format!("u{}", i % 2), i));
        }
        assert_eq!(c.len(), 100);
        c.retain(|l| l.record.user_id != "u1");
        assert_eq!(c.len(), 50);
        assert!(c.get("id1").is_none() && c.get("id2").is_some());
        c.retain(|l| l.loaded_at >= 50);
        assert_eq!(c.len(), 25);
        c.clear();
        assert!(c.is_empty() && c.get("id60").is_none());
    }

    #[test]
    fn a_full_cache_takes_no_new_sessions() {
        let c = SessionCache::new(3);
        for id in ["a", "b", "c"] {
            assert!(c.insert(id, live(id, 0)));
        }
        assert!(!c.insert("d", live("d", 0)));
        assert!(c.get("d").is_none());
        assert!(
            c.insert("a", live("a2", 0)),
            "a cached session is still refreshed"
        );
        c.remove("b");
        assert!(c.insert("d", live("d", 0)));
        assert_eq!(c.len(), 3);
    }
}
