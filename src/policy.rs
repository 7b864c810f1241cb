//! The decision for one request to a protected site: let it through with an
//! identity, let it through as public, ask to sign in, or refuse.
//!
//! Two steps: [`identify`] reads the session cookie (keys, cache, store);
//! [`decide_for`] is a pure function of who asks, the site and the path,
//! tested alone below. No Pingora types here. Writing the answer is the
//! gateway's job.

use std::sync::Arc;

use crate::app::{App, SiteRt};
use crate::config::{RuleAction, Site};
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

/// Who sent a request, as far as its session cookie says.
#[derive(Debug, Clone)]
pub enum Who {
    /// A live session of this site.
    Signed(Arc<LiveSession>),
    /// No cookie, or one that opens to no live session.
    Anonymous,
    /// A cookie that could not be checked: the store is unreachable.
    Unknown,
}

/// Read `cookie` (the session cookie's sealed value on `site`, if any):
/// opened with the keys (reloading them for a key id not seen yet), then
/// looked up in the session cache or the store.
pub async fn identify(app: &App, site: &SiteRt, cookie: Option<&str>) -> Who {
    let Some(v) = cookie else {
        return Who::Anonymous;
    };
    let Some(plain) = app.open_cookie(&site.session_seal, v).await else {
        if app.sealed_elsewhere(site, v) {
            app.metrics
                .sessions_elsewhere
                .with_label_values(&[site.site.name.as_str()])
                .inc();
        }
        return Who::Anonymous;
    };
    match app.sessions.check(&plain).await {
        Ok(live) => Who::Signed(live),
        Err(Rejected::StoreUnavailable) => Who::Unknown,
        Err(_) => Who::Anonymous,
    }
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
    let who = identify(app, site, cookie).await;
    decide_for(&site.site, raw_path, who)
}

/// The decision for `who` asking for `raw_path` on `site`, and the
/// normalised path it was checked against (when the site has path rules or
/// public paths): a pure function, no store, no clock.
pub fn decide_for(s: &Site, raw_path: &str, who: Who) -> (Decision, Option<String>) {
    let (live, unavailable) = match who {
        Who::Signed(live) => (Some(live), false),
        Who::Anonymous => (None, false),
        Who::Unknown => (None, true),
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::email::Email;
    use crate::store::SessionRecord;

    /// Site 0: allow lists, public paths and rules; site 1: anyone signed
    /// in, passkeys only; site 2: anyone signed in, nothing else.
    fn sites() -> Vec<Site> {
        Config::from_toml(
            r#"
            [[site]]
            public_url = "https://wiki.example.com"
            upstream = ["127.0.0.1:3000"]
            allow_domains = ["example.com"]
            allow_groups = ["guests"]
            public_paths = ["/health", "/static/"]
            [[site.rule]]
            path = "/admin"
            allow_groups = ["ops"]
            [[site.rule]]
            path = "/status"
            action = "public"
            [[site.rule]]
            path = "/private"
            action = "deny"
            [[site]]
            public_url = "https://vault.example.com"
            upstream = ["127.0.0.1:3001"]
            require_passkey = true
            [[site]]
            public_url = "https://plain.example.com"
            upstream = ["127.0.0.1:3002"]
            "#,
        )
        .unwrap()
        .sites
    }

    fn person(email: &str, groups: &[&str], method: AuthMethod) -> Who {
        let record = SessionRecord {
            id_hash: "h".repeat(64).into(),
            user_id: "u_1".into(),
            email: Email::parse(email).unwrap(),
            name: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            auth_method: method,
            created_at: 0,
            expires_at: 100,
            last_seen: 0,
            revoked: false,
            parent: None,
            device: None,
        };
        Who::Signed(Arc::new(LiveSession::new(record, 0)))
    }

    fn staff() -> Who {
        person("ada@example.com", &[], AuthMethod::MagicLink)
    }

    fn ops() -> Who {
        person("op@example.org", &["ops"], AuthMethod::Code)
    }

    fn stranger() -> Who {
        person("eve@example.org", &[], AuthMethod::Passkey)
    }

    fn outcome(site: &Site, path: &str, who: Who) -> Outcome {
        decide_for(site, path, who).0.outcome()
    }

    #[test]
    fn the_allow_lists_admit_and_deny() {
        let s = &sites()[0];
        assert_eq!(outcome(s, "/page", staff()), Outcome::Allowed);
        assert_eq!(
            outcome(
                s,
                "/page",
                person("g@example.org", &["guests"], AuthMethod::Code)
            ),
            Outcome::Allowed
        );
        assert_eq!(outcome(s, "/page", stranger()), Outcome::Denied);
        assert_eq!(
            outcome(s, "/page", Who::Anonymous),
            Outcome::Unauthenticated
        );
        assert_eq!(outcome(s, "/page", Who::Unknown), Outcome::StoreUnavailable);
    }

    #[test]
    fn rules_decide_first_then_public_paths_then_the_lists() {
        let s = &sites()[0];
        // A rule's own list replaces the site's.
        assert_eq!(outcome(s, "/admin/users", ops()), Outcome::Allowed);
        assert_eq!(outcome(s, "/admin/users", staff()), Outcome::Denied);
        assert_eq!(
            outcome(s, "/admin", Who::Anonymous),
            Outcome::Unauthenticated
        );
        // A prefix is a whole segment: /administrator is not /admin.
        assert_eq!(outcome(s, "/administrator", ops()), Outcome::Denied);
        assert_eq!(outcome(s, "/administrator", staff()), Outcome::Allowed);
        // Deny refuses everyone, signed in or not.
        assert_eq!(outcome(s, "/private/x", staff()), Outcome::Denied);
        assert_eq!(
            outcome(s, "/private", Who::Anonymous),
            Outcome::Unauthenticated
        );
        // Public rules and public paths pass without identity...
        assert_eq!(outcome(s, "/status", Who::Anonymous), Outcome::Public);
        assert_eq!(outcome(s, "/health", Who::Unknown), Outcome::Public);
        assert_eq!(outcome(s, "/static/app.css", stranger()), Outcome::Public);
        // ... and carry the identity of someone the site admits.
        assert_eq!(outcome(s, "/status", staff()), Outcome::Allowed);
    }

    #[test]
    fn the_checked_path_is_what_the_app_gets() {
        let s = &sites()[0];
        // Out of the public path and the rule: the site's lists decide.
        let (d, checked) = decide_for(s, "/static/../admin/%2e%2e/x", ops());
        assert_eq!(d.outcome(), Outcome::Denied);
        assert_eq!(checked.as_deref(), Some("/x"));
        let (d, checked) = decide_for(s, "//static/./app.css", Who::Anonymous);
        assert_eq!(d.outcome(), Outcome::Public);
        assert_eq!(checked.as_deref(), Some("/static/app.css"));
        let (d, checked) = decide_for(&sites()[2], "/a/../b", Who::Anonymous);
        assert_eq!(d.outcome(), Outcome::Unauthenticated);
        assert_eq!(checked, None, "a site without path rules checks no path");
    }

    #[test]
    fn another_servers_reading_of_the_path_cannot_slip_past_a_rule() {
        let s = &sites()[0];
        // A Java server reads `/status/..;/admin` as `/admin`.
        assert_eq!(
            outcome(s, "/status/..;/admin", Who::Anonymous),
            Outcome::Unauthenticated
        );
        assert_eq!(outcome(s, "/health;x/../private", staff()), Outcome::Denied);
        // A case-blind one reads `/ADMIN` as `/admin`.
        assert_eq!(outcome(s, "/ADMIN/users", staff()), Outcome::Denied);
        assert_eq!(outcome(s, "/Private", staff()), Outcome::Denied);
        // The stricter reading wins: for the rule's `ops` alone, `/ADMIN`
        // is not `/admin` to Sesame, and the site's lists do not admit them.
        assert_eq!(outcome(s, "/ADMIN", ops()), Outcome::Denied);
        // Allowed when both readings allow.
        let both = || person("op@example.com", &["ops"], AuthMethod::Code);
        assert_eq!(outcome(s, "/ADMIN", both()), Outcome::Allowed);
        assert_eq!(outcome(s, "/status/..;/admin", both()), Outcome::Allowed);
    }

    #[test]
    fn an_ambiguous_path_is_refused() {
        let s = &sites()[0];
        for path in [
            "/static/%252e%252e/admin",
            "/a%5c..%5cadmin",
            "/a%00",
            "/a%ff",
        ] {
            assert_eq!(outcome(s, path, ops()), Outcome::BadPath, "{path}");
        }
        // Only where paths matter: a site without rules passes them on.
        assert_eq!(outcome(&sites()[2], "/a%ff", stranger()), Outcome::Allowed);
    }

    #[test]
    fn a_passkey_site_steps_up_other_sign_ins() {
        let s = &sites()[1];
        assert_eq!(outcome(s, "/", staff()), Outcome::StepUp);
        assert_eq!(outcome(s, "/", stranger()), Outcome::Allowed);
        assert_eq!(outcome(s, "/", Who::Anonymous), Outcome::Unauthenticated);
    }
}
