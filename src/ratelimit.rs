//! Fixed-window rate limits per key (an email address, a client address),
//! race-free under parallel requests: one atomic counter per key and window.
//!
//! In memory, per instance. What is limited and how much is the caller's call.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use crate::clock::Clock;

struct Window {
    started: i64,
    count: AtomicU32,
}

pub struct RateLimiter {
    window_secs: i64,
    limit: u32,
    windows: Cache<String, Arc<Window>>,
    clock: Clock,
}

impl RateLimiter {
    pub fn new(window: Duration, limit: u32, clock: Clock) -> RateLimiter {
        RateLimiter {
            window_secs: window.as_secs().max(1) as i64,
            limit,
            windows: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(window)
                .build(),
            clock,
        }
    }

    /// Count one hit for `key`; `Err(seconds)` to wait if over the limit.
    pub fn hit(&self, key: &str) -> Result<(), u64> {
        let now = self.clock.now();
        let mut w = self.windows.get_with_by_ref(key, || {
            Arc::new(Window {
                started: now,
                count: AtomicU32::new(0),
            })
        });
        if now - w.started >= self.window_secs {
            // The clock moved past the window before the cache expired it.
            self.windows.invalidate(key);
            w = self.windows.get_with_by_ref(key, || {
                Arc::new(Window {
                    started: now,
                    count: AtomicU32::new(0),
                })
            });
        }
        let n = w.count.fetch_add(1, Ordering::AcqRel) + 1;
        if n > self.limit {
            Err((w.started + self.window_secs - now).max(1) as u64)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_resets() {
        let clock = Clock::system();
        let rl = RateLimiter::new(Duration::from_secs(60), 3, clock.clone());
        assert!(rl.hit("a").is_ok());
        assert!(rl.hit("a").is_ok());
        assert!(rl.hit("a").is_ok());
        let wait = rl.hit("a").unwrap_err();
        assert!((1..=60).contains(&wait));
        assert!(rl.hit("b").is_ok());
        clock.advance(Duration::from_secs(61));
        assert!(rl.hit("a").is_ok());
    }

    #[test]
    fn exact_under_parallel_hits() {
        let rl = Arc::new(RateLimiter::new(
            Duration::from_secs(60),
            50,
            Clock::system(),
        ));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let rl = rl.clone();
                std::thread::spawn(move || (0..100).filter(|_| rl.hit("k").is_ok()).count())
            })
            .collect();
        let ok: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(ok, 50);
    }
}
