//! Every cookie attribute Sesame sets, in one place: the session cookie and
//! the short-lived pending-login cookie.
//!
//! Values are sealed with AES-256-GCM, the cookie name bound as associated
//! data, in the `cookie` crate's private-jar format (standard base64 of
//! nonce, ciphertext, tag; the second half of a `cookie::Key`), so values
//! sealed by either open with the other. This module does not know what a
//! session is; it only seals, opens and formats.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use base64::prelude::{Engine, BASE64_STANDARD};
use cookie::{Cookie, SameSite};

use crate::config::{Config, Site};

pub const PENDING_COOKIE: &str = "sesame_pending";
/// Proves, for a short while, that this session typed a code emailed to
/// change passkeys (see `passkey::guard`).
pub const PROOF_COOKIE: &str = "sesame_proof";
/// Holds, on a site behind a portal, the state of the handoff under way: the
/// portal's code is taken only by the browser that has it.
pub const HANDOFF_COOKIE: &str = "sesame_handoff";
/// A random id of this browser, so that a sign-in from a browser the
/// account has not used can be announced (`[auth] notify_new_device`).
pub const BROWSER_COOKIE: &str = "sesame_browser";
/// Marks a browser that was already offered to add a passkey.
pub const OFFERED_COOKIE: &str = "sesame_passkey_offered";
/// Cookies longer than this are not ours, whatever their name.
const MAX_COOKIE_VALUE: usize = 1024;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The session cookie's name on `site`: `__Host-` prefixed when the cookie is
/// host-only on an https site.
pub fn session_name(config: &Config, site: &Site) -> String {
    if site.cookie_domain.is_none() && site.public_url.scheme() == "https" {
        format!("__Host-{}", config.session.cookie_name)
    } else {
        config.session.cookie_name.clone()
    }
}

pub fn pending_name(site: &Site) -> String {
    host_only_name(site, PENDING_COOKIE)
}

pub fn proof_name(site: &Site) -> String {
    host_only_name(site, PROOF_COOKIE)
}

pub fn handoff_name(site: &Site) -> String {
    host_only_name(site, HANDOFF_COOKIE)
}

fn host_only_name(site: &Site, name: &str) -> String {
    if site.public_url.scheme() == "https" {
        format!("__Host-{name}")
    } else {
        name.to_string()
    }
}

/// Which of Sesame's sealed cookies a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Session,
    Pending,
    Proof,
    Handoff,
}

/// What a cookie of `kind` on `site` is sealed for, bound as the AEAD's
/// associated data: its kind, and where it is valid (the site's host for a
/// host-only cookie, the cookie domain for a shared one). A session cookie
/// replayed on another site, or a pending cookie presented as a session
/// cookie, does not open.
pub fn seal_scope(kind: Kind, site: &Site) -> String {
    let label = match kind {
        Kind::Session => "session",
        Kind::Pending => "pending",
        Kind::Proof => "proof",
        Kind::Handoff => "handoff",
    };
    match (kind, &site.cookie_domain) {
        (Kind::Session, Some(d)) => format!("sesame/{label}/domain/{d}"),
        _ => format!("sesame/{label}/host/{}", site.host),
    }
}

/// A cookie key ready to seal and open: the AES key schedule is done once,
/// not per request, and opening allocates only the plain text.
pub struct Sealer {
    aead: Aes256Gcm,
}

impl Sealer {
    pub fn new(key: &cookie::Key) -> Sealer {
        Sealer {
            aead: Aes256Gcm::new(key.encryption().into()),
        }
    }

    /// Seal `plain` into a cookie value for `name`.
    pub fn seal(&self, name: &str, plain: &str) -> String {
        let mut data = vec![0; NONCE_LEN + plain.len() + TAG_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        crate::random::nonce(&mut nonce);
        let (head, rest) = data.split_at_mut(NONCE_LEN);
        head.copy_from_slice(&nonce);
        let (text, tag) = rest.split_at_mut(plain.len());
        text.copy_from_slice(plain.as_bytes());
        match self
            .aead
            .encrypt_in_place_detached(&Nonce::from(nonce), name.as_bytes(), text)
        {
            Ok(t) => tag.copy_from_slice(&t),
            // Only for a plain text of more than 64 GiB.
            Err(_) => return String::new(),
        }
        BASE64_STANDARD.encode(&data)
    }

    /// Open a sealed value; `None` for anything tampered, foreign or
    /// oversized.
    pub fn open(&self, name: &str, value: &str) -> Option<String> {
        if value.len() > MAX_COOKIE_VALUE {
            return None;
        }
        let mut buf = [0u8; MAX_COOKIE_VALUE / 4 * 3];
        let n = BASE64_STANDARD.decode_slice(value, &mut buf).ok()?;
        if n < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, rest) = buf[..n].split_at_mut(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = (&*nonce).try_into().ok()?;
        let (text, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        let tag: [u8; TAG_LEN] = (&*tag).try_into().ok()?;
        self.aead
            .decrypt_in_place_detached(&Nonce::from(nonce), name.as_bytes(), text, &Tag::from(tag))
            .ok()?;
        std::str::from_utf8(text).ok().map(str::to_owned)
    }
}

/// The value of cookie `name` in a `Cookie` header value.
pub fn find<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Where the browser sends a cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieScope {
    /// To this site's host only.
    HostOnly,
    /// To the site's cookie domain when it has one (the session cookie,
    /// shared by the sites under `session.cookie_domain`), else host only.
    CookieDomain,
}

/// A `Set-Cookie` value with the attributes Sesame always uses.
pub fn set(site: &Site, name: &str, value: &str, max_age_secs: i64, scope: CookieScope) -> String {
    let mut c = Cookie::new(name.to_string(), value.to_string());
    c.set_path("/");
    c.set_http_only(true);
    c.set_same_site(SameSite::Lax);
    c.set_secure(site.secure);
    c.set_max_age(cookie::time::Duration::seconds(max_age_secs.max(0)));
    if let (CookieScope::CookieDomain, Some(d)) = (scope, &site.cookie_domain) {
        c.set_domain(d.clone());
    }
    c.to_string()
}

/// A `Set-Cookie` value that deletes cookie `name`.
pub fn clear(site: &Site, name: &str, scope: CookieScope) -> String {
    set(site, name, "", 0, scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_tamper() {
        let key = cookie::Key::generate();
        let sealer = Sealer::new(&key);
        let v = sealer.seal("sesame", "hello");
        assert_eq!(sealer.open("sesame", &v).as_deref(), Some("hello"));
        assert_eq!(sealer.open("other", &v), None, "name is bound");
        let mut t = v.clone().into_bytes();
        t[5] ^= 1;
        assert_eq!(sealer.open("sesame", &String::from_utf8_lossy(&t)), None);
        let other = Sealer::new(&cookie::Key::generate());
        assert_eq!(other.open("sesame", &v), None);
        assert_eq!(sealer.open("sesame", &"A".repeat(5000)), None);
        assert_eq!(sealer.open("sesame", ""), None);
        assert_eq!(
            sealer.open("sesame", "AAAA"),
            None,
            "shorter than nonce + tag"
        );
        assert_eq!(sealer.open("sesame", "not base64!"), None);
        assert_eq!(
            sealer.open("sesame", &sealer.seal("sesame", "")).as_deref(),
            Some("")
        );
    }

    /// Values sealed by the `cookie` crate's private jar (sessions issued
    /// before Sesame sealed them itself) still open, and the other way round.
    #[test]
    fn same_format_as_the_cookie_crate() {
        use cookie::CookieJar;
        let key = cookie::Key::generate();
        let sealer = Sealer::new(&key);
        let mut jar = CookieJar::new();
        jar.private_mut(&key)
            .add(Cookie::new("sesame", "s_1234.99"));
        let by_crate = jar.get("sesame").unwrap().value().to_string();
        assert_eq!(
            sealer.open("sesame", &by_crate).as_deref(),
            Some("s_1234.99")
        );
        let ours = sealer.seal("sesame", "s_5678.42");
        let opened = CookieJar::new()
            .private(&key)
            .decrypt(Cookie::new("sesame", ours))
            .unwrap();
        assert_eq!(opened.value(), "s_5678.42");
    }

    #[test]
    fn finds_cookie() {
        assert_eq!(find("a=1; sesame=xyz; b=2", "sesame"), Some("xyz"));
        assert_eq!(find("a=1;sesame2=xyz", "sesame"), None);
    }
}
