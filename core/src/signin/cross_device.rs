//! Sign-in approved on another device: the person asks on a laptop, opens
//! the email on a phone, and approves there instead of signing the phone in.
//!
//! The asking browser's "check your email" page shows a two-digit number
//! (never stored, never mailed: a MAC of the sign-in's id under a server
//! key). The link opened in any other browser shows who asked (browser, OS,
//! network, when) and offers three numbers; the right one approves, any
//! other cancels the sign-in for good, and so does "this wasn't me". Every
//! decision, the link and the code race on one atomic store step
//! ([`PendingStore::decide_pending`](crate::store::PendingStore::decide_pending)),
//! and the asking browser collects an approval once
//! ([`PendingStore::collect_pending`](crate::store::PendingStore::collect_pending)).
//! The approving device gets no session.
//!
//! The asking browser waits without writing to the store: [`Waiters`]
//! wakes it at once when the approval is made on this instance, and one
//! read a second of every waiting sign-in wakes it when another instance
//! decided.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;

use super::pending::PendingState;
use super::{SignIn, SignInError, SignedIn};
use crate::config::Site;
use crate::keys::Keys;
use crate::store::{AuthMethod, Decision, DeviceRequest, PendingLogin, StoreError};

/// How long the asking browser has to collect an approval.
pub const COLLECT_SECS: i64 = 120;

/// The `kind` label of `sesame_cross_device_total` for approvals from the
/// sign-in email.
pub const EMAIL: &str = "email";

fn mac(keys: &Keys, label: &str, pending_id: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Ok(mut m) = <Hmac<Sha256> as Mac>::new_from_slice(&keys.code_mac) {
        m.update(label.as_bytes());
        m.update(&[0]);
        m.update(pending_id.as_bytes());
        out.copy_from_slice(&m.finalize().into_bytes());
    }
    out
}

/// The number the asking browser shows for `pending_id`: 10 to 99.
pub fn number(keys: &Keys, pending_id: &str) -> u8 {
    let m = mac(keys, "sesame cross-device number", pending_id);
    10 + (u16::from_be_bytes([m[0], m[1]]) % 90) as u8
}

/// The asking browser as the other device is shown it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asker {
    /// Browser family and OS: "Firefox on Linux".
    pub agent: String,
    /// The network, coarsely: "203.0.113.x", "2001:db8:1::/48".
    pub net: String,
}

impl Asker {
    pub fn of(user_agent: Option<&str>, ip: IpAddr) -> Asker {
        Asker {
            agent: browser(user_agent.unwrap_or("")),
            net: coarse(ip),
        }
    }
}

/// "Firefox on Linux" (or as much of it as is known) from a User-Agent.
pub fn browser(user_agent: &str) -> String {
    // Names from woothee's dataset; anything else (or a name of unusual
    // shape) is not shown: this text reaches another person's screen.
    let shown = |s: &str| {
        (s != "UNKNOWN"
            && !s.is_empty()
            && s.len() <= 40
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || " .-_/".contains(c)))
        .then(|| s.to_string())
    };
    let parsed = woothee::parser::Parser::new().parse(user_agent);
    let (name, os) = match &parsed {
        Some(r) => (shown(r.name), shown(r.os)),
        None => (None, None),
    };
    match (name, os) {
        (Some(n), Some(o)) => format!("{n} on {o}"),
        (Some(n), None) => n,
        (None, Some(o)) => format!("a browser on {o}"),
        (None, None) => "an unknown browser".into(),
    }
}

/// An address as a network: the last octet of IPv4 hidden, IPv6 to /48.
pub fn coarse(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.x")
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => coarse(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
            }
        },
    }
}

/// "just now", "1 minute ago", "12 minutes ago".
pub fn ago(secs: i64) -> String {
    match secs.max(0) / 60 {
        0 => "just now".into(),
        1 => "1 minute ago".into(),
        n => format!("{n} minutes ago"),
    }
}

/// Where a sign-in stands, for the browser that asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not decided yet (or not stored yet: it is stored just after the
    /// "check your email" page went out).
    Waiting,
    /// Approved on another device: collect it.
    Approved,
    /// Cancelled on another device: a wrong number, or "this wasn't me".
    Cancelled(Decision),
    /// Its link or code was used (perhaps on the other device), or its
    /// approval collected already.
    Used,
    /// Its time ran out.
    Expired,
}

impl Status {
    pub fn of(p: &PendingLogin, now: i64) -> Status {
        Status::from(p.decision, p.collected, p.expires_at, now)
    }

    pub fn of_request(r: &DeviceRequest, now: i64) -> Status {
        Status::from(r.decision, r.collected, r.expires_at, now)
    }

    fn from(decision: Option<Decision>, collected: bool, expires_at: i64, now: i64) -> Status {
        match decision {
            Some(Decision::Approved) if collected => Status::Used,
            Some(Decision::Approved) if now >= expires_at => Status::Expired,
            Some(Decision::Approved) => Status::Approved,
            Some(d @ (Decision::WrongNumber | Decision::Denied)) => Status::Cancelled(d),
            Some(Decision::Used) => Status::Used,
            None if now >= expires_at => Status::Expired,
            None => Status::Waiting,
        }
    }

    /// The `state` the waiting page is told.
    pub fn label(self) -> &'static str {
        match self {
            Status::Waiting => "waiting",
            Status::Approved => "approved",
            Status::Cancelled(_) => "cancelled",
            Status::Used => "used",
            Status::Expired => "expired",
        }
    }
}

/// The browsers waiting on this instance for their sign-in to be decided,
/// by sign-in id.
pub struct Waiters {
    waiting: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
    max: usize,
}

/// One browser waiting; leaves when dropped.
pub struct Waiting<'a> {
    waiters: &'a Waiters,
    id: String,
    pub notify: Arc<Notify>,
}

impl Waiters {
    /// At most `max` sign-ins waited on at once (each holds a request).
    pub fn new(max: usize) -> Waiters {
        Waiters {
            waiting: Mutex::new(HashMap::new()),
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<Notify>, usize)>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait for `id`; `None` when as many sign-ins are waited on as allowed.
    pub fn enter(&self, id: &str) -> Option<Waiting<'_>> {
        let mut map = self.lock();
        if !map.contains_key(id) && map.len() >= self.max {
            return None;
        }
        let entry = map
            .entry(id.to_string())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Some(Waiting {
            waiters: self,
            id: id.to_string(),
            notify: entry.0.clone(),
        })
    }

    /// `id` was decided: wake whoever waits for it here.
    pub fn wake(&self, id: &str) {
        if let Some((notify, _)) = self.lock().get(id) {
            notify.notify_waiters();
        }
    }

    /// The sign-ins waited on.
    pub fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut map = self.waiters.lock();
        if let Some(entry) = map.get_mut(&self.id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                map.remove(&self.id);
            }
        }
    }
}

/// What the other device decided, as its page tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    Approved,
    WrongNumber,
    Denied,
}

impl SignIn<'_> {
    /// The live pending sign-in a link names, for a decision on it.
    async fn decidable(&self, site: &Site, raw: &str) -> Result<PendingLogin, SignInError> {
        let claims = match self.verify_link(site, raw).await {
            Err(SignInError::LinkExpired) => {
                self.count_cross_device(EMAIL, "expired");
                return Err(SignInError::LinkExpired);
            }
            other => other?,
        };
        match self.store.pending(&claims.jti).await? {
            Some(p) if p.email.as_str() != claims.sub || p.site != site.name => {
                Err(SignInError::LinkInvalid)
            }
            Some(p) if PendingState::of(&p, self.clock.now(), u32::MAX).link_works() => Ok(p),
            Some(PendingLogin {
                decision: Some(d @ (Decision::WrongNumber | Decision::Denied)),
                ..
            }) => Err(SignInError::Cancelled(d)),
            _ => Err(SignInError::LinkUsed),
        }
    }

    /// The other device picked `number` for the sign-in of link `raw`: the
    /// asking browser's number approves it for that browser, anything else
    /// cancels it for good. Either way this device gets no session.
    pub async fn approve(
        &self,
        site: &Site,
        raw: &str,
        number: &str,
    ) -> Result<Decided, SignInError> {
        let p = self.decidable(site, raw).await?;
        let right = number.trim().parse::<u8>().ok() == Some(self::number(self.keys, &p.id));
        let (decision, decided) = if right {
            (Decision::Approved, Decided::Approved)
        } else {
            (Decision::WrongNumber, Decided::WrongNumber)
        };
        self.decide(&p, decision).await?;
        Ok(decided)
    }

    /// "This wasn't me": the sign-in of link `raw` is cancelled for good.
    pub async fn deny(&self, site: &Site, raw: &str) -> Result<Decided, SignInError> {
        let p = self.decidable(site, raw).await?;
        self.decide(&p, Decision::Denied).await?;
        Ok(Decided::Denied)
    }

    async fn decide(&self, p: &PendingLogin, decision: Decision) -> Result<(), SignInError> {
        let now = self.clock.now();
        let Some(p) = self
            .store
            .decide_pending(&p.id, now, decision, now + COLLECT_SECS)
            .await?
        else {
            return Err(SignInError::LinkUsed);
        };
        self.waiters.wake(&p.id);
        let (result, event) = match decision {
            Decision::Approved => ("approved", "cross_device_approved"),
            Decision::WrongNumber => ("wrong_number", "cross_device_wrong_number"),
            _ => ("cancelled", "cross_device_denied"),
        };
        self.count_cross_device(EMAIL, result);
        tracing::info!(target: "sesame::audit", event, kind = EMAIL, site = %p.site, email = %p.email,
            login = %p.id, asked_from = %p.asked_net);
        Ok(())
    }

    pub(super) fn count_cross_device(&self, kind: &str, result: &str) {
        self.metrics
            .cross_device
            .with_label_values(&[kind, result])
            .inc();
    }

    /// Where the sign-in `pending_id` stands, for the browser that asked
    /// for it on `site` (one read; nothing written).
    pub async fn status(
        &self,
        site: &Site,
        pending_id: &str,
    ) -> Result<(Status, Option<PendingLogin>), StoreError> {
        Ok(match self.store.pending(pending_id).await? {
            Some(p) if p.site != site.name => (Status::Expired, None),
            Some(p) => (Status::of(&p, self.clock.now()), Some(p)),
            None => (Status::Waiting, None),
        })
    }

    /// The asking browser takes its approval: a session, once.
    pub async fn collect(&self, site: &Site, pending_id: &str) -> Result<SignedIn, SignInError> {
        let Some(p) = self
            .store
            .collect_pending(pending_id, self.clock.now())
            .await?
        else {
            return Err(SignInError::LinkUsed);
        };
        if p.site != site.name {
            return Err(SignInError::CodeElsewhere);
        }
        tracing::info!(target: "sesame::audit", event = "cross_device_collected", kind = EMAIL, site = %p.site,
            email = %p.email, login = %p.id);
        self.finish(site, &p, AuthMethod::MagicLink).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::fixed(&[1; 64], &[2; 32], vec![3; 32]).unwrap()
    }

    #[test]
    fn the_number_is_two_digits_and_depends_on_the_key() {
        let keys = keys();
        let mut seen = std::collections::HashSet::new();
        for i in 0..2_000 {
            let id = format!("login{i}");
            let n = number(&keys, &id);
            assert!((10..=99).contains(&n), "{n}");
            assert_eq!(n, number(&keys, &id), "the same every time");
            seen.insert(n);
        }
        assert_eq!(seen.len(), 90, "every number occurs");
        // Another key, other numbers: nobody can work it out from the id.
        let other = Keys::fixed(&[1; 64], &[2; 32], vec![4; 32]).unwrap();
        let differ = (0..100)
            .filter(|i| number(&keys, &i.to_string()) != number(&other, &i.to_string()))
            .count();
        assert!(differ > 80, "{differ}");
    }

    #[test]
    fn the_asker_is_shown_by_family_os_and_network() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        assert_eq!(browser(firefox), "Firefox on Linux");
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 \
                      (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
        assert_eq!(browser(iphone), "Safari on iPhone");
        assert_eq!(browser(""), "an unknown browser");
        assert_eq!(browser("<script>alert(1)</script>"), "an unknown browser");
        assert_eq!(coarse("203.0.113.77".parse().unwrap()), "203.0.113.x");
        assert_eq!(
            coarse("2001:db8:1:2::5".parse().unwrap()),
            "2001:db8:1::/48"
        );
        assert_eq!(
            coarse("::ffff:198.51.100.9".parse().unwrap()),
            "198.51.100.x"
        );
        assert_eq!(ago(30), "just now");
        assert_eq!(ago(90), "1 minute ago");
        assert_eq!(ago(600), "10 minutes ago");
    }

    #[test]
    fn waiters_are_counted_per_sign_in_and_leave_when_done() {
        let w = Waiters::new(2);
        let a1 = w.enter("a").unwrap();
        let a2 = w.enter("a").unwrap();
        let b = w.enter("b").unwrap();
        assert!(w.enter("c").is_none(), "full");
        assert!(
            w.enter("a").is_some(),
            "a sign-in already waited on may be waited on again"
        );
        drop(a1);
        assert_eq!(w.len(), 2);
        drop(a2);
        drop(b);
        assert!(w.is_empty());
        assert!(w.enter("c").is_some());
    }
}
