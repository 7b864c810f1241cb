//! What the upstream sees: client-sent identity headers removed (every
//! configured name, any case, `_` spellings) with the proxy-only headers
//! apps trust from a proxy ([`PROXY_ONLY`]), Sesame's cookies removed from
//! `Cookie`, then the identity of the session and `X-Forwarded-*` added.
//!
//! The edit is made on a plain `http::HeaderMap` (see [`with_plain_headers`]):
//! pingora's own `insert_header` re-parses each name and keeps a second map
//! with the client's spelling of every name, about 120 ns per header, and
//! Sesame adds up to nine.

use http::header::{HeaderMap, HeaderName, HeaderValue, COOKIE};
use pingora::http::RequestHeader;

use crate::app::SiteRt;
use crate::session::cookies::{BROWSER_COOKIE, OFFERED_COOKIE};
use crate::session::LiveSession;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers apps take from a trusted proxy in front of them, which Sesame is,
/// and which it does not set itself: a client must not set them through it.
/// `X-Original-URL` / `X-Rewrite-URL` make IIS, Symfony and Laminas route by
/// another path than the one the rules checked; `Forwarded`, `X-Real-IP`,
/// `X-Forwarded-Port` and `X-Forwarded-Prefix` would give the app a made-up
/// client address or base URL (`X-Forwarded-For`, `-Proto` and `-Host` are
/// set by Sesame).
pub(crate) const PROXY_ONLY: [HeaderName; 6] = [
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
];

/// The identity an allowed request carries to the app.
#[derive(Clone, Copy)]
pub struct Identity<'a> {
    pub live: &'a LiveSession,
    /// The signed assertion, unless the site turned it off.
    pub assertion: Option<&'a HeaderValue>,
}

impl Identity<'_> {
    /// The identity headers under `site`'s names: user, email, name (if
    /// any), groups, auth method, and the assertion (if signed). The one
    /// list for both the proxied request and the forward-auth answer.
    pub fn headers<'a>(
        &'a self,
        site: &'a SiteRt,
    ) -> impl Iterator<Item = (HeaderName, HeaderValue)> + 'a {
        let n = &site.site.headers;
        let v = &self.live.values;
        [
            Some((n.user.clone(), v.user())),
            Some((n.email.clone(), v.email())),
            v.name().map(|name| (n.name.clone(), name)),
            Some((n.groups.clone(), v.groups())),
            Some((n.auth_method.clone(), v.auth_method())),
            self.assertion.map(|a| (n.assertion.clone(), a.clone())),
        ]
        .into_iter()
        .flatten()
    }

    /// Every identity header of `site`, empty where there is no value (no
    /// name, no assertion): what forward auth answers, so that a proxy
    /// copying them always overwrites a value the client sent.
    pub fn all_headers<'a>(
        &'a self,
        site: &'a SiteRt,
    ) -> impl Iterator<Item = (HeaderName, HeaderValue)> + 'a {
        let n = &site.site.headers;
        let empty = || HeaderValue::from_static("");
        let missing = [
            (!self.live.values.has_name()).then(|| (n.name.clone(), empty())),
            self.assertion
                .is_none()
                .then(|| (n.assertion.clone(), empty())),
        ];
        self.headers(site).chain(missing.into_iter().flatten())
    }
}

/// Rewrite `req`'s headers for the app: strip, inject `identity` (none on a
/// public path), and set `X-Forwarded-For` to `forwarded_for`.
pub fn for_upstream(
    req: &mut RequestHeader,
    site: &SiteRt,
    identity: Option<Identity>,
    forwarded_for: HeaderValue,
) {
    with_plain_headers(req, |h| {
        // Room for what is added, so the map grows (and rehashes) once.
        h.reserve(9);
        strip(h, site);
        if let Some(identity) = identity {
            inject(h, site, identity);
        }
        h.insert(X_FORWARDED_FOR, forwarded_for);
        h.insert(X_FORWARDED_PROTO, site.wire.forwarded_proto.clone());
        h.insert(X_FORWARDED_HOST, site.wire.forwarded_host.clone());
    });
}

/// Edit `req`'s headers as a plain `http::HeaderMap`, then hand the request
/// back to pingora. The request line, the request target as the client sent
/// it and the HTTP/2 end-of-stream flag are kept. What is not kept is the
/// client's spelling of header names: they reach the app lower-cased (header
/// names are case-insensitive, and requests from HTTP/2 clients already
/// arrive that way).
pub fn with_plain_headers(req: &mut RequestHeader, edit: impl FnOnce(&mut HeaderMap)) {
    // Only a target the URI does not reproduce (absolute-form, not UTF-8)
    // needs its bytes kept aside.
    let raw_target = (req.raw_path() != target_of_uri(&req.uri)).then(|| req.raw_path().to_vec());
    let end_stream = req.send_end_stream();
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts = http::request::Parts::from(std::mem::replace(req, placeholder));
    edit(&mut parts.headers);
    *req = RequestHeader::from(parts);
    if let Some(raw) = raw_target {
        // The same bytes pingora accepted from the client a moment ago.
        if req.set_raw_path(&raw).is_err() {
            tracing::warn!("request target could not be kept; sent as the URI gives it");
        }
    }
    if let Some(end_stream) = end_stream {
        req.set_send_end_stream(end_stream);
    }
}

/// The target pingora writes for a request whose URI is its only source.
fn target_of_uri(uri: &http::Uri) -> &[u8] {
    uri.path_and_query()
        .map(|p| p.as_str().as_bytes())
        .or_else(|| uri.authority().map(|a| a.as_str().as_bytes()))
        .unwrap_or_default()
}

/// Remove anything a client could use to pose as someone.
///
/// One pass over the names the client sent (a handful) rather than a lookup
/// per name Sesame strips (twelve, nearly always absent): this runs on
/// every proxied request.
pub fn strip(h: &mut HeaderMap, site: &SiteRt) {
    let names = site.site.headers.all();
    let poses = |k: &HeaderName| {
        names.iter().copied().chain(PROXY_ONLY.iter()).any(|n| n == k)
            // `Remote_User` and friends: proxies and CGI-style apps treat
            // `_` as `-`.
            || (k.as_str().contains('_') && names.iter().any(|n| dashed_eq(k, n)))
    };
    // Empty (no allocation) unless the client sent one.
    let found: Vec<HeaderName> = h.keys().filter(|k| poses(k)).cloned().collect();
    for n in found {
        h.remove(&n);
    }
    strip_cookies(h, site);
}

/// Is `sent` the name `ours` with some of its `-` written as `_`?
fn dashed_eq(sent: &HeaderName, ours: &HeaderName) -> bool {
    let (a, b) = (sent.as_str().as_bytes(), ours.as_str().as_bytes());
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x == y || (*x == b'_' && *y == b'-'))
}

fn strip_cookies(h: &mut HeaderMap, site: &SiteRt) {
    if !h.contains_key(COOKIE) {
        return;
    }
    let ours = |name: &str| {
        name == site.session_cookie
            || name == site.pending_cookie
            || name == site.proof_cookie
            || name == OFFERED_COOKIE
            || name == BROWSER_COOKIE
    };
    let mut kept: Vec<&str> = Vec::new();
    let mut changed = false;
    for v in h.get_all(COOKIE) {
        let Ok(v) = v.to_str() else {
            changed = true;
            continue;
        };
        for pair in v.split(';') {
            let pair = pair.trim();
            let name = pair.split('=').next().unwrap_or("");
            if ours(name) {
                changed = true;
            } else if !pair.is_empty() {
                kept.push(pair);
            }
        }
    }
    if !changed {
        return;
    }
    // Pieces of header values joined with "; " are a valid header value.
    let joined = HeaderValue::from_str(&kept.join("; ")).ok();
    h.remove(COOKIE);
    if let Some(joined) = joined.filter(|v| !v.is_empty()) {
        h.insert(COOKIE, joined);
    }
}

/// Add the identity headers and the signed assertion.
pub fn inject(h: &mut HeaderMap, site: &SiteRt, identity: Identity) {
    for (name, value) in identity.headers(site) {
        h.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn target_kept(method: &str, target: &[u8]) {
        let mut req =
            RequestHeader::build(Method::from_bytes(method.as_bytes()).unwrap(), target, None)
                .unwrap();
        req.insert_header("X-Client-Header", "kept").unwrap();
        req.set_version(http::Version::HTTP_2);
        req.set_send_end_stream(false);
        with_plain_headers(&mut req, |h| {
            h.insert(X_FORWARDED_HOST, HeaderValue::from_static("h"));
        });
        assert_eq!(req.raw_path(), target, "{method} {target:?}");
        assert_eq!(req.method.as_str(), method);
        assert_eq!(req.send_end_stream(), Some(false));
        assert_eq!(req.headers["x-client-header"], "kept");
        assert_eq!(req.headers["x-forwarded-host"], "h");
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap();
        assert!(wire.contains("x-client-header: kept\r\n"), "{wire}");
    }

    #[test]
    fn the_request_target_survives_the_header_edit() {
        target_kept("GET", b"/a/b?c=d&e");
        target_kept("POST", b"/");
        target_kept("GET", b"http://example.com/abs?q");
        target_kept("GET", b"/not-utf8/\xff\xfe");
        target_kept("OPTIONS", b"*");
    }
}
