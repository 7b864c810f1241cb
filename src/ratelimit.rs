//! Fixed-window rate limits per key (an email address, a client address),
//! counted in the store: exact under parallel requests (one atomic upsert
//! per hit) and shared by every instance on the same store, so N instances
//! do not allow N times the limit. What is limited and how much is the
//! caller's call.

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
        }
    }

    /// Count one hit for `key`: `Ok(Err(seconds))` to wait if over the limit.
    pub async fn hit(&self, key: &str) -> StoreResult<Result<(), u64>> {
        let now = self.clock.now();
        let start = now - now.rem_euclid(self.window_secs);
        let n = self
            .store
            .count_hit(&format!("{}:{key}", self.kind), start)
            .await?;
        Ok(if n > i64::from(self.limit) {
            Err((start + self.window_secs - now).max(1) as u64)
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
