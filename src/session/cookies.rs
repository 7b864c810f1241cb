//! Every cookie attribute Sesame sets, in one place: the session cookie and
//! the short-lived pending-login cookie.
//!
//! Values are sealed with AES-256-GCM (`cookie` crate private jar, the cookie
//! name bound as associated data). This module does not know what a session
//! is; it only seals, opens and formats.

use cookie::{Cookie, CookieJar, SameSite};

use crate::config::{Config, Site};

pub const PENDING_COOKIE: &str = "sesame_pending";
/// Marks a browser that was already offered to add a passkey.
pub const OFFERED_COOKIE: &str = "sesame_passkey_offered";
/// Cookies longer than this are not ours, whatever their name.
const MAX_COOKIE_VALUE: usize = 1024;

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
    if site.public_url.scheme() == "https" {
        format!("__Host-{PENDING_COOKIE}")
    } else {
        PENDING_COOKIE.to_string()
    }
}

/// Seal `plain` into a cookie value for `name`.
pub fn seal(key: &cookie::Key, name: &str, plain: &str) -> String {
    let mut jar = CookieJar::new();
    jar.private_mut(key)
        .add(Cookie::new(name.to_string(), plain.to_string()));
    jar.get(name)
        .map(|c| c.value().to_string())
        .unwrap_or_default()
}

/// Open a sealed value; `None` for anything tampered, foreign or oversized.
pub fn open(key: &cookie::Key, name: &str, value: &str) -> Option<String> {
    if value.len() > MAX_COOKIE_VALUE {
        return None;
    }
    let jar = CookieJar::new();
    jar.private(key)
        .decrypt(Cookie::new(name.to_string(), value.to_string()))
        .map(|c| c.value().to_string())
}

/// The value of cookie `name` in a `Cookie` header value.
pub fn find<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// A `Set-Cookie` value with the attributes Sesame always uses.
pub fn set(site: &Site, name: &str, value: &str, max_age_secs: i64, domain_wide: bool) -> String {
    let mut c = Cookie::new(name.to_string(), value.to_string());
    c.set_path("/");
    c.set_http_only(true);
    c.set_same_site(SameSite::Lax);
    c.set_secure(site.secure);
    c.set_max_age(cookie::time::Duration::seconds(max_age_secs.max(0)));
    if domain_wide {
        if let Some(d) = &site.cookie_domain {
            c.set_domain(d.clone());
        }
    }
    c.to_string()
}

/// A `Set-Cookie` value that deletes cookie `name`.
pub fn clear(site: &Site, name: &str, domain_wide: bool) -> String {
    set(site, name, "", 0, domain_wide)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_tamper() {
        let key = cookie::Key::generate();
        let v = seal(&key, "sesame", "hello");
        assert_eq!(open(&key, "sesame", &v).as_deref(), Some("hello"));
        assert_eq!(open(&key, "other", &v), None, "name is bound");
        let mut t = v.clone().into_bytes();
        t[5] ^= 1;
        assert_eq!(open(&key, "sesame", &String::from_utf8_lossy(&t)), None);
        assert_eq!(open(&cookie::Key::generate(), "sesame", &v), None);
        assert_eq!(open(&key, "sesame", &"A".repeat(5000)), None);
    }

    #[test]
    fn finds_cookie() {
        assert_eq!(find("a=1; sesame=xyz; b=2", "sesame"), Some("xyz"));
        assert_eq!(find("a=1;sesame2=xyz", "sesame"), None);
    }
}
