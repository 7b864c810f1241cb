//! Time as an input: the system clock with an offset that tests can move
//! forward, so expiry is tested without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Default, Debug)]
pub struct Clock {
    offset_secs: Arc<AtomicI64>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock::default()
    }

    /// Seconds since the Unix epoch.
    #[allow(clippy::disallowed_methods)] // the one reader of the wall clock
    pub fn now(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        real + self.offset_secs.load(Ordering::Relaxed)
    }

    /// Milliseconds since the Unix epoch (for log lines).
    #[allow(clippy::disallowed_methods)] // the one reader of the wall clock
    pub fn now_millis(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        real + self.offset_secs.load(Ordering::Relaxed) * 1000
    }

    /// Move this clock (and every clone of it) forward.
    pub fn advance(&self, by: Duration) {
        self.offset_secs
            .fetch_add(by.as_secs() as i64, Ordering::Relaxed);
    }

    /// Move this clock back, as a wall clock stepped back by NTP goes.
    pub fn set_back(&self, by: Duration) {
        self.offset_secs
            .fetch_sub(by.as_secs() as i64, Ordering::Relaxed);
    }
}
