//! Fixed-window rate limits per key (an email address, a client address).
//!
//! [`RateLimiter`] counts in the store: exact under parallel requests (one
//! atomic upsert per hit) and shared by every instance on the same store, so
//! N instances do not allow N times the limit; a key found over its limit is
//! remembered in memory until its window ends, so a flood past the limit
//! writes nothing more. [`LocalLimiter`] counts in this process's memory
//! only: the first gate of every endpoint an anonymous client can make write
//! to the store, so a flood from one address is turned away before it costs
//! a write. What is limited and how much is the caller's call.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::store::{DynStore, StoreResult};

pub struct RateLimiter {
    /// Prefix that keeps this limiter's keys apart from others'.
    kind: &'static str,
    window_secs: i64,
    limit: u32,
    store: DynStore,
    clock: Clock,
    /// Keys over their limit, with the start of the window they are over in.
    over: moka::sync::Cache<String, i64>,
    /// Count the previous window too, weighted by how much of it is still
    /// within one window of now: no fresh budget at a window's start.
    sliding: bool,
}

impl RateLimiter {
    pub fn new(
        kind: &'static str,
        window: Duration,
        limit: u32,
        store: DynStore,
        clock: Clock,
    ) -> RateLimiter {
        RateLimiter {
            kind,
            window_secs: window.as_secs().max(1) as i64,
            limit,
            store,
            clock,
            over: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(window.max(Duration::from_secs(1)))
                .build(),
            sliding: false,
        }
    }

    /// The same limit over a sliding window (estimated from the current and
    /// the previous fixed window): 20 a day means 20 in any 24 hours, not 20
    /// before midnight and 20 after. One more store read per hit.
    pub fn sliding(mut self) -> RateLimiter {
        self.sliding = true;
        self
    }

    /// Count one hit for `key`: `Ok(Err(seconds))` to wait if over the limit.
    pub async fn hit(&self, key: &str) -> StoreResult<Result<(), u64>> {
        let now = self.clock.now();
        let start = now - now.rem_euclid(self.window_secs);
        let wait = (start + self.window_secs - now).max(1) as u64;
        // (A sliding estimate falls as time passes: not remembered.)
        if !self.sliding && self.over.get(key) == Some(start) {
            return Ok(Err(wait));
        }
        let full_key = format!("{}:{key}", self.kind);
        let mut n = self.store.count_hit(&full_key, start).await?;
        if self.sliding {
            let before = self.store.hits(&full_key, start - self.window_secs).await?;
            // The part of the previous window that is less than a window ago.
            let left = self.window_secs - (now - start);
            n += before * left / self.window_secs;
        }
        Ok(if n > i64::from(self.limit) {
            if !self.sliding {
                self.over.insert(key.to_string(), start);
            }
            Err(wait)
        } else {
            Ok(())
        })
    }

    /// Windows that ended before this are of no more use.
    pub fn expired_before(&self) -> i64 {
        let now = self.clock.now();
        now - now.rem_euclid(self.window_secs)
    }
}

/// Fixed-window counts per key in this process's memory (bounded: the
/// oldest keys go first past 100,000). No store, no await.
pub struct LocalLimiter {
    window_secs: i64,
    limit: u32,
    clock: Clock,
    /// `(window start, key)` -> hits in that window.
    counts: moka::sync::Cache<(i64, String), Arc<AtomicU32>, foldhash::fast::RandomState>,
}

impl LocalLimiter {
    pub fn new(window: Duration, limit: u32, clock: Clock) -> LocalLimiter {
        let window = window.max(Duration::from_secs(1));
        LocalLimiter {
            window_secs: window.as_secs() as i64,
            limit,
            clock,
            counts: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(window * 2)
                .build_with_hasher(foldhash::fast::RandomState::default()),
        }
    }

    /// Count one hit for `key`: `Err(seconds)` to wait if over the limit.
    pub fn hit(&self, key: &str) -> Result<(), u64> {
        let now = self.clock.now();
        let start = now - now.rem_euclid(self.window_secs);
        let n = self
            .counts
            .get_with((start, key.to_string()), || Arc::new(AtomicU32::new(0)))
            .fetch_add(1, Ordering::Relaxed);
        if n >= self.limit {
            Err((start + self.window_secs - now).max(1) as u64)
        } else {
            Ok(())
        }
    }
}

/// The key a client is rate-limited by: its address, or for IPv6 its /64
/// (one host is usually given a whole /64 to pick addresses from).
pub fn client_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        v4 => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;

    #[test]
    fn an_ipv6_client_is_its_64() {
        let key = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff:1:2:3"));
        assert_eq!(key("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }

    async fn store(dir: &tempfile::TempDir) -> DynStore {
        crate::store::open(&StoreConfig::Sqlite {
            path: dir.path().join("rl.db"),
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn limits_and_resets() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::system();
        let rl = RateLimiter::new(
            "t",
            Duration::from_secs(60),
            3,
            store(&dir).await,
            clock.clone(),
        );
        for _ in 0..3 {
            assert!(rl.hit("a").await.unwrap().is_ok());
        }
        let wait = rl.hit("a").await.unwrap().unwrap_err();
        assert!((1..=60).contains(&wait));
        assert!(rl.hit("b").await.unwrap().is_ok());
        clock.advance(Duration::from_secs(61));
        assert!(rl.hit("a").await.unwrap().is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_over_its_limit_writes_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let clock = Clock::system();
        let rl = RateLimiter::new(
            "t",
            Duration::from_secs(3600),
            2,
            store.clone(),
            clock.clone(),
        );
        for _ in 0..10 {
            let _ = rl.hit("a").await.unwrap();
        }
        let start = clock.now() - clock.now().rem_euclid(3600);
        // The store saw the two allowed hits and the one that went over.
        assert_eq!(store.count_hit("t:a", start).await.unwrap(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sliding_limit_gives_no_fresh_budget_at_the_window_start() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::system();
        // Just before a window ends.
        let now = clock.now();
        clock.advance(Duration::from_secs((100 - now.rem_euclid(100) - 3) as u64));
        let rl = RateLimiter::new(
            "t",
            Duration::from_secs(100),
            4,
            store(&dir).await,
            clock.clone(),
        )
        .sliding();
        for _ in 0..4 {
            assert!(rl.hit("a").await.unwrap().is_ok());
        }
        assert!(rl.hit("a").await.unwrap().is_err());
        // A fixed window would allow four more right after it turns.
        clock.advance(Duration::from_secs(4));
        assert!(
            rl.hit("a").await.unwrap().is_err(),
            "the last window's hits still count"
        );
        // Half a window later, half of them do.
        clock.advance(Duration::from_secs(50));
        assert!(rl.hit("a").await.unwrap().is_ok());
        assert!(rl.hit("a").await.unwrap().is_err());
    }

    #[test]
    fn local_limits_per_key_and_window() {
        let clock = Clock::system();
        let rl = LocalLimiter::new(Duration::from_secs(60), 3, clock.clone());
        for _ in 0..3 {
            assert!(rl.hit("a").is_ok());
        }
        let wait = rl.hit("a").unwrap_err();
        assert!((1..=60).contains(&wait));
        assert!(rl.hit("b").is_ok());
        clock.advance(Duration::from_secs(61));
        assert!(rl.hit("a").is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exact_under_parallel_hits() {
        let dir = tempfile::tempdir().unwrap();
        let rl = std::sync::Arc::new(RateLimiter::new(
            "t",
            Duration::from_secs(3600),
            50,
            store(&dir).await,
            Clock::system(),
        ));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let rl = rl.clone();
                tokio::spawn(async move { rl.hit("k").await.unwrap().is_ok() })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += t.await.unwrap() as usize;
        }
        assert_eq!(ok, 50);
    }
}
