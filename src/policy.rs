//! The decision for one request to a protected site: let it through with an
//! identity, let it through as public, ask to sign in, or refuse.
//!
//! No Pingora types here, so the whole decision can be benchmarked and
//! tested alone. Writing the answer is the gateway's job.

use std::sync::Arc;

use crate::app::{App, SiteRt};
use crate::config::RuleAction;
use crate::metrics::Outcome;
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
    pub fn outcome(&self) -> Outcome {
        match self {
            Decision::Allow(_) => Outcome::Allowed,
            Decision::Public => Outcome::Public,
            Decision::Login => Outcome::Unauthenticated,
            Decision::Deny(_) => Outcome::Denied,
            Decision::StepUp(_) => Outcome::StepUp,
            Decision::BadPath => Outcome::BadPath,
            Decision::Unavailable => Outcome::StoreUnavailable,
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
    decide_checked(app, site, raw_path, cookie).await.0
}

/// As [`decide`], also returning the normalised path that path rules were
/// checked against (when the site has any), which is what the upstream must
/// then receive.
pub async fn decide_checked(
    app: &App,
    site: &SiteRt,
    raw_path: &str,
    cookie: Option<&str>,
) -> (Decision, Option<String>) {
    let mut unavailable = false;
    let plain = match cookie {
        Some(v) => {
            let plain = app.open_cookie(&site.session_seal, v).await;
            if plain.is_none() && app.sealed_elsewhere(site, v) {
                app.metrics
                    .sessions_elsewhere
                    .with_label_values(&[site.site.name.as_str()])
                    .inc();
            }
            plain
        }
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
    let s = &site.site;
    // Paths matter only where the site has path rules or public paths.
    let checked = if s.rules.is_empty() && s.public_paths.is_empty() {
        None
    } else {
        match path::normalize(raw_path) {
            Ok(p) => Some(p),
            Err(_) => return (Decision::BadPath, None),
        }
    };
    let admitted = |live: &Arc<LiveSession>| {
        if s.require_passkey && live.record.auth_method != AuthMethod::Passkey {
            Decision::StepUp(live.clone())
        } else {
            Decision::Allow(live.clone())
        }
    };
    let not_in = |live: Option<Arc<LiveSession>>| match live {
        Some(live) => Decision::Deny(live),
        None if unavailable => Decision::Unavailable,
        None => Decision::Login,
    };
    // Public: everybody passes; the identity of someone the site admits
    // still goes along (no step-up needed for a public page).
    let public = |live: Option<Arc<LiveSession>>| match live {
        Some(l) if s.admits(&l.record.email, &l.record.groups) => Decision::Allow(l),
        _ => Decision::Public,
    };
    // The decision for one reading of the path (`None`: the site has no
    // path rules), matched with `under`.
    let for_path = |p: Option<&str>,
                    under: fn(&str, &str) -> bool,
                    live: Option<Arc<LiveSession>>| {
        let rule = p.and_then(|p| s.rules.iter().find(|r| under(p, &r.prefix)));
        match rule.map(|r| &r.action) {
            Some(RuleAction::Deny) => not_in(live),
            Some(RuleAction::Allow(who)) => match live {
                Some(l) if who.admits(&l.record.email, &l.record.groups) => admitted(&l),
                other => not_in(other),
            },
            Some(RuleAction::Public) => public(live),
            None if p.is_some_and(|p| s.public_paths.iter().any(|pp| under(p, pp))) => public(live),
            None => match live {
                Some(l) if s.admits(&l.record.email, &l.record.groups) => admitted(&l),
                other => not_in(other),
            },
        }
    };
    // What passes must also pass as a Java server (`;params` cut) or a
    // case-blind one would read the path: `/public/..;/admin` is their
    // `/admin`, and `/Admin` falls under a rule for `/admin`. Without `;`
    // that reading is the checked path itself, matched ignoring case; most
    // paths need neither.
    let other = checked.as_deref().and_then(|c| {
        if path::has_params(raw_path) {
            path::without_params(raw_path).map(std::borrow::Cow::Owned)
        } else if c.bytes().any(|b| b.is_ascii_uppercase()) {
            Some(std::borrow::Cow::Borrowed(c))
        } else {
            None
        }
    });
    let Some(other) = other else {
        return (for_path(checked.as_deref(), path::is_under, live), checked);
    };
    let passes = |d: &Decision| matches!(d, Decision::Allow(_) | Decision::Public);
    let decision = for_path(checked.as_deref(), path::is_under, live.clone());
    let decision = match passes(&decision) {
        true => match for_path(Some(&other), path::is_under_ignoring_case, live) {
            strict if passes(&strict) => decision,
            strict => strict,
        },
        false => decision,
    };
    drop(other); // it may borrow `checked`
    (decision, checked)
}
