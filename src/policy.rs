//! The decision for one request to a protected site: let it through with an
//! identity, let it through as public, ask to sign in, or refuse.
//!
//! No Pingora types here, so the whole decision can be benchmarked and
//! tested alone. Writing the answer is the gateway's job.

use std::sync::Arc;

use crate::app::{App, SiteRt};
use crate::path;
use crate::session::{cookies, LiveSession, Rejected};
use crate::store::AuthMethod;

#[derive(Debug)]
pub enum Decision {
    /// Signed in and admitted by the site.
    Allow(Arc<LiveSession>),
    /// A public path: passes without identity.
    Public,
    /// Not signed in: a browser is sent to the login page, others get 401.
    Login,
    /// Signed in and admitted, but the site wants a passkey sign-in.
    StepUp(Arc<LiveSession>),
    /// Signed in, but the site does not admit this person.
    Deny(Arc<LiveSession>),
    /// A path whose encoding is ambiguous (400).
    BadPath,
    /// The cookie could not be checked: the store is unreachable (503).
    Unavailable,
}

impl Decision {
    pub fn outcome(&self) -> &'static str {
        match self {
            Decision::Allow(_) => "allowed",
            Decision::Public => "public",
            Decision::Login => "unauthenticated",
            Decision::Deny(_) => "denied",
            Decision::StepUp(_) => "step_up",
            Decision::BadPath => "bad_path",
            Decision::Unavailable => "store_unavailable",
        }
    }
}

/// The session cookie's value among the request's `Cookie` header values.
pub fn session_cookie<'a, I>(site: &SiteRt, cookie_headers: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    cookie_headers
        .into_iter()
        .filter_map(|h| std::str::from_utf8(h).ok())
        .find_map(|h| cookies::find(h, &site.session_cookie))
}

/// Decide a request for `raw_path` on `site` carrying `cookie` (the session
/// cookie's sealed value, if any).
pub async fn decide(app: &App, site: &SiteRt, raw_path: &str, cookie: Option<&str>) -> Decision {
    let mut unavailable = false;
    let plain = match cookie {
        Some(v) => app.open_cookie(&site.session_cookie, v).await,
        None => None,
    };
    let live = match plain {
        Some(plain) => match app.sessions.check(&plain).await {
            Ok(live) => Some(live),
            Err(Rejected::StoreUnavailable) => {
                unavailable = true;
                None
            }
            Err(_) => None,
        },
        None => None,
    };
    if let Some(live) = &live {
        if site.site.admits(&live.record.email, &live.record.groups) {
            if site.site.require_passkey && live.record.auth_method != AuthMethod::Passkey {
                return Decision::StepUp(live.clone());
            }
            return Decision::Allow(live.clone());
        }
    }
    if !site.site.public_paths.is_empty() {
        match path::normalize(raw_path) {
            Ok(p)
                if site
                    .site
                    .public_paths
                    .iter()
                    .any(|pp| path::is_under(&p, pp)) =>
            {
                return Decision::Public
            }
            Ok(_) => {}
            Err(_) => return Decision::BadPath,
        }
    }
    match live {
        Some(live) => Decision::Deny(live),
        None if unavailable => Decision::Unavailable,
        None => Decision::Login,
    }
}
