//! The keys Sesame seals cookies and signs magic links with: generated at
//! first start and kept in the store (a restart or another instance logs
//! nobody out), rotated with `sesame keys rotate`.
//!
//! The newest key of each purpose signs; older keys still verify until
//! `[keys] grace` after their successor appeared, then retire. Cookie values
//! carry their key id (`kid.sealed`), magic links the JWT `kid` header, so a
//! check tries one key. Every secret here has a redacting `Debug`.

use std::fmt;
use std::sync::{Arc, RwLock};

use jsonwebtoken::{DecodingKey, EncodingKey};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::session::cookies;
use crate::store::{DynStore, KeyPurpose, KeyRecord, StoreError, StoreResult};

struct CookieKey {
    kid: String,
    sealer: cookies::Sealer,
}

struct LinkKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// The PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410), as `jsonwebtoken`
/// takes it.
pub fn ed25519_pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    der
}

/// An Ed25519 key for the assertion header.
pub struct AssertionKey {
    pub kid: String,
    pub encoding: EncodingKey,
    /// The public key, for the JWKS.
    pub public: [u8; 32],
}

impl AssertionKey {
    fn from_seed(kid: &str, seed: &[u8]) -> Option<AssertionKey> {
        let seed: [u8; 32] = seed.try_into().ok()?;
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        Some(AssertionKey {
            kid: kid.to_string(),
            encoding: EncodingKey::from_ed_der(&ed25519_pkcs8(&seed)),
            public: signing.verifying_key().to_bytes(),
        })
    }
}

/// The keys in force at one moment, newest first.
#[derive(Default)]
struct KeySet {
    cookie: Vec<CookieKey>,
    link: Vec<LinkKey>,
    assertion: Vec<AssertionKey>,
}

pub struct Keys {
    set: RwLock<Arc<KeySet>>,
    /// HMAC key for emailed codes as kept in the store (not rotated: codes
    /// live minutes).
    pub code_mac: Vec<u8>,
    grace_secs: i64,
    /// Wakes the reload task (a rotation elsewhere, an unknown key id).
    pub reload_wanted: Notify,
    /// When a request last forced a reload (see `reload_for_unknown`).
    last_forced: tokio::sync::Mutex<Option<std::time::Instant>>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys { <redacted> }")
    }
}

fn fresh(len: usize) -> Vec<u8> {
    crate::random::bytes(len)
}

/// A cookie names a key this instance has not loaded (perhaps rotated on
/// another instance a moment ago).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownKid;

/// A cookie key id as [`new_key`] makes them (`cookie-` and up to 16
/// base64url characters; `cookie-1` for the first key).
fn is_cookie_kid(kid: &str) -> bool {
    kid.strip_prefix("cookie-").is_some_and(|rest| {
        (1..=16).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Random bytes as URL-safe base64, for ids.
pub fn random_id(bytes: usize) -> String {
    crate::random::id(bytes)
}

/// A new key record of `purpose`, created now.
pub fn new_key(purpose: KeyPurpose, now: i64) -> KeyRecord {
    let len = match purpose {
        KeyPurpose::Cookie => 64,
        KeyPurpose::Link | KeyPurpose::Assertion => 32,
    };
    KeyRecord {
        kid: format!("{}-{}", purpose.as_str(), random_id(6)),
        purpose,
        secret: fresh(len),
        created_at: now,
    }
}

/// Whether each record (newest first within its purpose) still signs, still
/// verifies, or has retired, at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Signing,
    /// Verifies until this time.
    Verifying(i64),
    Retired,
}

/// Group by purpose, newest first within each: the order `key_states` wants.
pub fn sort_newest_first(records: &mut [KeyRecord]) {
    records
        .sort_by(|a, b| (a.purpose, b.created_at, &b.kid).cmp(&(b.purpose, a.created_at, &a.kid)));
}

pub fn key_states(records: &[KeyRecord], grace_secs: i64, now: i64) -> Vec<KeyState> {
    let mut newer: Option<i64> = None;
    let mut last_purpose = None;
    records
        .iter()
        .map(|r| {
            if last_purpose != Some(r.purpose) {
                last_purpose = Some(r.purpose);
                newer = None;
            }
            let state = match newer {
                None => KeyState::Signing,
                Some(t) if now < t + grace_secs => KeyState::Verifying(t + grace_secs),
                Some(_) => KeyState::Retired,
            };
            newer = Some(r.created_at);
            state
        })
        .collect()
}

impl Keys {
    /// Load the keys, creating the first ones if the store has none.
    pub async fn load(
        store: &DynStore,
        grace: std::time::Duration,
        clock: &Clock,
    ) -> StoreResult<Keys> {
        let now = clock.now();
        for purpose in KeyPurpose::ALL {
            let mut first = new_key(purpose, now);
            first.kid = format!("{}-1", purpose.as_str());
            store.ensure_key(&first).await?;
        }
        let code_mac = store
            .ensure_secret("code_mac.v1", &fresh(32), clock.now())
            .await?;
        let keys = Keys {
            set: RwLock::new(Arc::new(KeySet::default())),
            code_mac,
            grace_secs: grace.as_secs() as i64,
            reload_wanted: Notify::new(),
            last_forced: tokio::sync::Mutex::new(None),
        };
        keys.reload(store, now).await?;
        Ok(keys)
    }

    /// Re-read the keys from the store: picks up rotations, retires old keys.
    pub async fn reload(&self, store: &DynStore, now: i64) -> StoreResult<()> {
        let mut records = store.keys().await?;
        sort_newest_first(&mut records);
        let states = key_states(&records, self.grace_secs, now);
        let mut set = KeySet::default();
        for (r, state) in records.iter().zip(states) {
            if state == KeyState::Retired {
                continue;
            }
            match r.purpose {
                KeyPurpose::Cookie => set.cookie.push(CookieKey {
                    kid: r.kid.clone(),
                    sealer: cookie::Key::try_from(r.secret.as_slice())
                        .map(|k| cookies::Sealer::new(&k))
                        .map_err(|_| {
                            StoreError::Other(format!("cookie key {} is too short", r.kid))
                        })?,
                }),
                KeyPurpose::Link => set.link.push(LinkKey {
                    kid: r.kid.clone(),
                    encoding: EncodingKey::from_secret(&r.secret),
                    decoding: DecodingKey::from_secret(&r.secret),
                }),
                KeyPurpose::Assertion => {
                    set.assertion
                        .push(AssertionKey::from_seed(&r.kid, &r.secret).ok_or_else(|| {
                            StoreError::Other(format!("assertion key {} is not 32 bytes", r.kid))
                        })?)
                }
            }
        }
        if set.cookie.is_empty() || set.link.is_empty() || set.assertion.is_empty() {
            return Err(StoreError::Other("the store holds no signing keys".into()));
        }
        if let Ok(mut guard) = self.set.write() {
            *guard = Arc::new(set);
        }
        Ok(())
    }

    fn current(&self) -> Arc<KeySet> {
        match self.set.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Seal `plain` for cookie `name` with the signing key: `kid.sealed`.
    pub fn seal_cookie(&self, name: &str, plain: &str) -> String {
        let set = self.current();
        match set.cookie.first() {
            Some(k) => format!("{}.{}", k.kid, k.sealer.seal(name, plain)),
            None => String::new(),
        }
    }

    /// False if a magic-link token names a key this instance has not loaded.
    pub fn knows_link_kid(&self, token: &str) -> bool {
        match jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid) {
            Some(kid) => self.current().link.iter().any(|k| k.kid == kid),
            None => true,
        }
    }

    /// Reload at once because a request named an unknown key, so that a key
    /// rotated elsewhere never signs anybody out here. At most ten times a
    /// second, whatever garbage clients send.
    pub async fn reload_for_unknown(&self, store: &DynStore, now: i64) {
        let mut last = self.last_forced.lock().await;
        if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_millis(100)) {
            return;
        }
        *last = Some(std::time::Instant::now());
        if let Err(e) = self.reload(store, now).await {
            tracing::warn!(error = %e, "could not reload keys");
        }
    }

    /// Open a cookie value sealed by any key still in force.
    pub fn open_cookie(&self, name: &str, value: &str) -> Option<String> {
        self.try_open_cookie(name, value).unwrap_or(None)
    }

    /// As [`Keys::open_cookie`], but `Err(UnknownKid)` when the value names
    /// a key this instance has not loaded (one lock, one lookup).
    pub fn try_open_cookie(&self, name: &str, value: &str) -> Result<Option<String>, UnknownKid> {
        let set = self.current();
        Ok(match value.split_once('.') {
            Some((kid, sealed)) => match set.cookie.iter().find(|k| k.kid == kid) {
                Some(k) => k.sealer.open(name, sealed),
                // Only a kid Sesame could have made is worth a reload.
                None if is_cookie_kid(kid) => return Err(UnknownKid),
                None => None,
            },
            // Sealed before key ids existed: only the first key could have.
            None => set.cookie.iter().find_map(|k| k.sealer.open(name, value)),
        })
    }

    /// The signing key for magic links and its id.
    pub fn with_link_signer<T>(&self, f: impl FnOnce(&str, &EncodingKey) -> T) -> Option<T> {
        let set = self.current();
        set.link.first().map(|k| f(&k.kid, &k.encoding))
    }

    /// Try `f` with the verifying key `kid` names (or, without a kid, each).
    pub fn with_link_verifier<T>(
        &self,
        kid: Option<&str>,
        mut f: impl FnMut(&DecodingKey) -> Option<T>,
    ) -> Option<T> {
        let set = self.current();
        match kid {
            Some(kid) => match set.link.iter().find(|k| k.kid == kid) {
                Some(k) => f(&k.decoding),
                None => {
                    self.reload_wanted.notify_one();
                    None
                }
            },
            None => set.link.iter().find_map(|k| f(&k.decoding)),
        }
    }

    /// Sign with the newest assertion key: `f(kid, key)`.
    pub fn with_assertion_signer<T>(&self, f: impl FnOnce(&str, &EncodingKey) -> T) -> Option<T> {
        let set = self.current();
        set.assertion.first().map(|k| f(&k.kid, &k.encoding))
    }

    /// Every assertion key in force (the signing one and those still
    /// verifying), as (kid, public key).
    pub fn assertion_public_keys(&self) -> Vec<(String, [u8; 32])> {
        self.current()
            .assertion
            .iter()
            .map(|k| (k.kid.clone(), k.public))
            .collect()
    }

    /// Keys from fixed bytes, for unit tests and benches.
    pub fn fixed(cookie: &[u8], link: &[u8], code_mac: Vec<u8>) -> Option<Keys> {
        let set = KeySet {
            cookie: vec![CookieKey {
                kid: "cookie-1".into(),
                sealer: cookies::Sealer::new(&cookie::Key::try_from(cookie).ok()?),
            }],
            link: vec![LinkKey {
                kid: "link-1".into(),
                encoding: EncodingKey::from_secret(link),
                decoding: DecodingKey::from_secret(link),
            }],
            assertion: vec![AssertionKey::from_seed("assertion-1", &[5u8; 32])?],
        };
        Some(Keys {
            set: RwLock::new(Arc::new(set)),
            code_mac,
            grace_secs: 0,
            reload_wanted: Notify::new(),
            last_forced: tokio::sync::Mutex::new(None),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(purpose: KeyPurpose, created_at: i64) -> KeyRecord {
        KeyRecord {
            kid: format!("k{created_at}"),
            purpose,
            secret: vec![],
            created_at,
        }
    }

    #[test]
    fn newest_signs_older_verify_for_the_grace_then_retire() {
        let records = [
            rec(KeyPurpose::Cookie, 300),
            rec(KeyPurpose::Cookie, 200),
            rec(KeyPurpose::Cookie, 100),
            rec(KeyPurpose::Link, 100),
        ];
        let s = key_states(&records, 50, 260);
        assert_eq!(
            s,
            [
                KeyState::Signing,
                KeyState::Verifying(350),
                KeyState::Retired,
                KeyState::Signing
            ]
        );
        let s = key_states(&records, 50, 360);
        assert_eq!(s[1], KeyState::Retired);
    }

    #[test]
    fn only_kids_of_our_shape_ask_for_a_reload() {
        let keys = Keys::fixed(&[1u8; 64], &[2u8; 32], vec![3u8; 32]).unwrap();
        assert!(keys.try_open_cookie("s", "cookie-Ab_9-xYz.AAAA").is_err());
        for foreign in [
            "x.AAAA",
            "cookie-.AAAA",
            "cookie-a/b.AAAA",
            &format!("cookie-{}.AAAA", "a".repeat(17)),
        ] {
            assert!(
                matches!(keys.try_open_cookie("s", foreign), Ok(None)),
                "{foreign}"
            );
        }
    }

    #[test]
    fn cookies_name_their_key() {
        let keys = Keys::fixed(&[7u8; 64], &[1u8; 32], vec![]).unwrap();
        let v = keys.seal_cookie("sesame", "hello");
        assert!(v.starts_with("cookie-1."));
        assert_eq!(keys.open_cookie("sesame", &v).as_deref(), Some("hello"));
        assert_eq!(
            keys.open_cookie("sesame", &v.replacen("cookie-1", "cookie-9", 1)),
            None
        );
        let legacy = cookies::Sealer::new(&cookie::Key::try_from(&[7u8; 64][..]).unwrap())
            .seal("sesame", "old");
        assert_eq!(keys.open_cookie("sesame", &legacy).as_deref(), Some("old"));
    }
}
