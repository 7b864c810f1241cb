//! What the upstream sees: client-sent identity headers removed (every
//! configured name, any case, `_` spellings), Sesame's cookies removed from
//! `Cookie`, then the identity of the session added.

use http::header::{HeaderName, HeaderValue, COOKIE};
use pingora::http::RequestHeader;

use crate::app::SiteRt;
use crate::session::cookies::OFFERED_COOKIE;
use crate::session::LiveSession;

/// Remove anything a client could use to pose as someone.
pub fn strip(req: &mut RequestHeader, site: &SiteRt) {
    let names = site.site.headers.all();
    for n in names {
        req.remove_header(n);
    }
    // `Remote_User` and friends: proxies and CGI-style apps treat `_` as `-`.
    let spoofed: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .filter(|k| {
            let dashed = k.as_str().replace('_', "-");
            names.iter().any(|n| n.as_str() == dashed)
        })
        .cloned()
        .collect();
    for n in spoofed {
        req.remove_header(&n);
    }
    strip_cookies(req, site);
}

fn strip_cookies(req: &mut RequestHeader, site: &SiteRt) {
    if !req.headers.contains_key(COOKIE) {
        return;
    }
    let ours = |name: &str| {
        name == site.session_cookie || name == site.pending_cookie || name == OFFERED_COOKIE
    };
    let mut kept: Vec<&str> = Vec::new();
    let mut changed = false;
    for v in req.headers.get_all(COOKIE) {
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
    let joined = kept.join("; ");
    req.remove_header(&COOKIE);
    if !joined.is_empty() {
        let _ = req.insert_header(COOKIE, joined);
    }
}

/// Add the identity headers for `live`, and the signed assertion.
pub fn inject(
    req: &mut RequestHeader,
    site: &SiteRt,
    live: &LiveSession,
    assertion: Option<&HeaderValue>,
) {
    let w = &site.wire;
    let v = &live.values;
    let _ = req.insert_header(w.user.clone(), v.user.clone());
    let _ = req.insert_header(w.email.clone(), v.email.clone());
    if let Some(name) = &v.name {
        let _ = req.insert_header(w.name.clone(), name.clone());
    }
    let _ = req.insert_header(w.groups.clone(), v.groups.clone());
    let _ = req.insert_header(w.auth_method.clone(), v.auth_method.clone());
    if let Some(a) = assertion {
        let _ = req.insert_header(w.assertion.clone(), a.clone());
    }
}
