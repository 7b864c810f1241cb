//! The life of a pending sign-in (a link and code asked for), as states:
//!
//! ```text
//! issued --confirm page opened--> viewed
//! issued | viewed | attempted(n) --code typed--> attempted(n + 1), locked at the limit
//! issued | viewed | attempted(n) --link or right code--> consumed
//! any state but consumed --ttl passed--> expired
//! ```
//!
//! The store makes each step atomic (`view_pending`, `attempt_code`,
//! `consume_pending`), so it holds across processes; this module names the
//! states and decides what a step may do in each. It knows nothing of HTTP.

use crate::store::PendingLogin;

/// Where a pending sign-in is, at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingState {
    /// Mailed (or a decoy), not yet looked at.
    Issued,
    /// Its confirm page was opened (a person, or a mail scanner).
    Viewed,
    /// Codes were typed this many times, fewer than the limit, none right.
    Attempted(u32),
    /// Used by its link or its code: nothing more can use it.
    Consumed,
    /// Its time ran out before it was used.
    Expired,
    /// As many codes as allowed were typed: the code no longer works
    /// (the link still does, until it expires).
    Locked,
}

impl PendingState {
    /// The state of `pending` at `now`, with `max_attempts` codes allowed.
    pub fn of(pending: &PendingLogin, now: i64, max_attempts: u32) -> PendingState {
        if pending.consumed {
            PendingState::Consumed
        } else if now >= pending.expires_at {
            PendingState::Expired
        } else if pending.attempts >= max_attempts {
            PendingState::Locked
        } else if pending.attempts > 0 {
            PendingState::Attempted(pending.attempts)
        } else if pending.views > 0 {
            PendingState::Viewed
        } else {
            PendingState::Issued
        }
    }

    /// May its link still be used?
    pub fn link_works(self) -> bool {
        !matches!(self, PendingState::Consumed | PendingState::Expired)
    }

    /// May a code still be tried?
    pub fn code_works(self) -> bool {
        self.link_works() && self != PendingState::Locked
    }
}

#[cfg(test)]
mod tests {
    use super::PendingState::{self, *};
    use crate::email::Email;
    use crate::store::PendingLogin;

    fn pending(views: u32, attempts: u32, consumed: bool) -> PendingLogin {
        PendingLogin {
            id: "p".into(),
            email: Email::parse("a@example.com").unwrap(),
            site: "app".into(),
            return_to: String::new(),
            code_mac: vec![0; 32],
            expires_at: 1_000,
            attempts,
            views,
            consumed,
            created_at: 0,
            asked_agent: String::new(),
            asked_net: String::new(),
            decision: None,
            collected: false,
        }
    }

    #[test]
    fn each_state_is_read_from_the_record() {
        let at = |p: &PendingLogin, now| PendingState::of(p, now, 5);
        assert_eq!(at(&pending(0, 0, false), 10), Issued);
        assert_eq!(at(&pending(2, 0, false), 10), Viewed);
        assert_eq!(at(&pending(2, 3, false), 10), Attempted(3));
        assert_eq!(at(&pending(0, 5, false), 10), Locked);
        assert_eq!(at(&pending(1, 1, true), 10), Consumed);
        // Expiry wins over every live state, not over having been used.
        assert_eq!(at(&pending(1, 1, false), 1_000), Expired);
        assert_eq!(at(&pending(0, 5, false), 1_000), Expired);
        assert_eq!(at(&pending(0, 0, true), 1_000), Consumed);
    }

    #[test]
    fn a_locked_code_leaves_the_link_working() {
        assert!(Locked.link_works());
        assert!(!Locked.code_works());
        for s in [Issued, Viewed, Attempted(4)] {
            assert!(s.link_works() && s.code_works(), "{s:?}");
        }
        for s in [Consumed, Expired] {
            assert!(!s.link_works() && !s.code_works(), "{s:?}");
        }
    }
}
