//! The portal handoff. With `[portal]`, every sign-in page and passkey
//! ceremony lives on the portal's origin, and a site gets its own session
//! from the portal the way an OAuth client gets a code:
//!
//! 1. the site (`GET /.sesame/login?rd=`) sets a host-only cookie holding
//!    a fresh random state and sends the browser to the portal's
//!    `/.sesame/authorize?site=&state=&rd=`;
//! 2. the portal signs the person in if it has to (its own pages, `rd` =
//!    this very authorize address), then stores a single-use code bound to
//!    the site, to the state and to the portal session, for a minute, and
//!    sends the browser to the site's `/.sesame/handoff?code=`;
//! 3. the site takes the code out of the store (once, atomically), checks
//!    that it is for this site and that this browser holds its state, and
//!    makes a host-only session of its own, a child of the portal session:
//!    revoked with it, never outliving it.
//!
//! Nobody can plant their own sign-in in another person's browser: a code
//! is taken only with the state cookie of the browser that started it.

use serde_json::json;

use super::error::{Failure, Result};
use super::signin::{current_session, session_response};
use super::{ErrorPage, Req, Resp};
use crate::app::{App, SiteRt};
use crate::keys::random_id;
use crate::return_to::ReturnTo;
use crate::session::cookies::{self, CookieScope};
use crate::session::hash_id;
use crate::store::{AuthMethod, Handoff};

/// How long a handoff code can be taken.
pub const CODE_TTL_SECS: i64 = 60;

/// Why a handoff was refused: each a page with a way on.
#[derive(Debug)]
pub enum Refused {
    /// The code is unknown, used or expired.
    Gone,
    /// The code was made for another site.
    WrongSite,
    /// This browser did not start the sign-in (no state cookie, or
    /// another's); `rd` is where the code would have led.
    WrongBrowser { rd: String },
    /// The portal session ended before the code was taken.
    Ended,
    /// The portal was asked for a handoff it cannot make.
    BadRequest(&'static str),
}

impl Refused {
    fn result(&self) -> &'static str {
        match self {
            Refused::Gone => "gone",
            Refused::WrongSite => "wrong_site",
            Refused::WrongBrowser { .. } => "wrong_browser",
            Refused::Ended => "ended",
            Refused::BadRequest(_) => "bad_request",
        }
    }

    /// The page for a refused handoff; its link starts a new one.
    pub fn respond(&self, app: &App, req: &Req) -> Resp {
        let (status, title, message) = match self {
            Refused::Gone => (
                410,
                "This sign-in has expired",
                "The sign-in took too long or was already used. Sign in again to continue.",
            ),
            Refused::WrongSite => (
                400,
                "This sign-in is for another site",
                "It cannot be used here. Sign in again to continue.",
            ),
            Refused::WrongBrowser { .. } => (
                400,
                "This sign-in was started in another browser",
                "For your safety it only completes in the browser (or tab) where it started. Continue to sign in here.",
            ),
            Refused::Ended => (
                410,
                "You were signed out",
                "Your sign-in ended before it reached this site. Sign in again to continue.",
            ),
            Refused::BadRequest(why) => (400, "This sign-in request is not valid", *why),
        };
        let again = match self {
            Refused::WrongBrowser { rd } => req.site.site.sesame_url("/login", &[("rd", rd)]),
            _ => req.site.site.sesame_url("/login", &[]),
        };
        ErrorPage {
            continue_url: Some(&again),
            ..ErrorPage::new(&req.site.site.name, title, message)
        }
        .respond(app, status)
    }
}

/// A state value as this module makes them: 43 characters of base64url.
fn well_formed_state(s: &str) -> bool {
    (20..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Site `GET /login?rd=` (and `GET /stepup?rd=`, `passkey`): a new state
/// cookie, and on to the portal.
pub fn start(app: &App, portal: &SiteRt, req: &Req, passkey: bool) -> Resp {
    let site = &req.site.site;
    let rd = ReturnTo::parse(
        &req.query_param("rd").unwrap_or_default(),
        site,
        &app.return_sites,
    );
    let state = random_id(32);
    let sealed = app.keys.seal_cookie(&req.site.handoff_seal, &state);
    // A sign-in by email may take as long as its link lives.
    let max_age = app.config.magic_link.ttl.as_secs() as i64 + 300;
    let mut query = vec![
        ("site", site.name.as_str()),
        ("state", state.as_str()),
        ("rd", rd.as_str()),
    ];
    if passkey {
        query.push(("passkey", "1"));
    }
    let to = portal.site.sesame_url("/authorize", &query);
    Resp::redirect(302, &to).cookie(cookies::set(
        site,
        &req.site.handoff_cookie,
        &sealed,
        max_age,
        CookieScope::HostOnly,
    ))
}

/// Portal `GET /authorize?site=&state=&rd=[&passkey=1]`: sign in if need
/// be, then a code for the site.
pub async fn authorize(app: &App, req: &Req<'_>) -> Result {
    let Some((_, target)) = req
        .query_param("site")
        .and_then(|name| app.site_named(&name))
    else {
        return Err(Refused::BadRequest("It names no site configured here.").into());
    };
    let state = req.query_param("state").unwrap_or_default();
    if !well_formed_state(&state) {
        return Err(Refused::BadRequest("Its state is missing or malformed.").into());
    }
    let rd = ReturnTo::parse(
        &req.query_param("rd").unwrap_or_default(),
        &target.site,
        &app.return_sites,
    );
    let passkey = target.site.require_passkey || req.query_param("passkey").as_deref() == Some("1");
    // Back here after signing in (or stepping up), with the same request.
    let mut again = vec![
        ("site", target.site.name.as_str()),
        ("state", state.as_str()),
        ("rd", rd.as_str()),
    ];
    if passkey {
        again.push(("passkey", "1"));
    }
    let here = req.site.site.sesame_url("/authorize", &again);
    let Some((_, live)) = current_session(app, req).await else {
        return Ok(Resp::redirect(
            302,
            &req.site.site.sesame_url("/login", &[("rd", &here)]),
        ));
    };
    if passkey && live.record.auth_method != AuthMethod::Passkey {
        return Ok(Resp::redirect(
            302,
            &req.site.site.sesame_url("/stepup", &[("rd", &here)]),
        ));
    }
    let code = random_id(32);
    app.store
        .put_handoff(&Handoff {
            code_hash: hash_id(&code),
            site: target.site.name.clone(),
            state_hash: hash_id(&state),
            session: live.record.id_hash.clone(),
            return_to: rd.as_str().to_string(),
            expires_at: app.clock.now() + CODE_TTL_SECS,
        })
        .await?;
    app.metrics.handoffs.with_label_values(&["issued"]).inc();
    let to = target.site.sesame_url("/handoff", &[("code", &code)]);
    Ok(Resp::redirect(302, &to).no_referrer())
}

/// Site `GET /handoff?code=`: take the code, make this site's session.
pub async fn redeem(app: &App, req: &Req<'_>) -> Result {
    let result = take(app, req).await;
    let label = match &result {
        Ok(_) => "ok",
        Err(Failure::Handoff(r)) => r.result(),
        Err(_) => return result,
    };
    app.metrics.handoffs.with_label_values(&[label]).inc();
    result
}

async fn take(app: &App, req: &Req<'_>) -> Result {
    let site = &req.site.site;
    let code = req.query_param("code").unwrap_or_default();
    let now = app.clock.now();
    // Taken whatever follows: a code shown to the wrong browser is spent.
    let Some(handoff) = app.store.take_handoff(&hash_id(&code), now).await? else {
        return Err(Refused::Gone.into());
    };
    if handoff.site != site.name {
        return Err(Refused::WrongSite.into());
    }
    let state = match req.cookie(&req.site.handoff_cookie) {
        Some(v) => app.open_cookie(&req.site.handoff_seal, v).await,
        None => None,
    };
    if state.is_none_or(|s| hash_id(&s) != handoff.state_hash) {
        tracing::info!(target: "sesame::audit", event = "handoff_refused", site = %site.name, reason = "wrong_browser");
        return Err(Refused::WrongBrowser {
            rd: handoff.return_to,
        }
        .into());
    }
    let parent = app
        .store
        .session(&handoff.session)
        .await?
        .filter(|p| !p.revoked && p.expires_at > now);
    let Some(parent) = parent else {
        return Err(Refused::Ended.into());
    };
    let Some(new) = app.sessions.create_child(&parent).await? else {
        return Err(Refused::Ended.into());
    };
    // The session this browser had here before, if any, ends: a new id on
    // every sign-in.
    if let Some(v) = req.cookie(&req.site.session_cookie) {
        if let Some(old) = app.open_cookie(&req.site.session_seal, v).await {
            app.sessions.revoke(&old).await?;
        }
    }
    app.metrics.sessions_created.inc();
    tracing::info!(target: "sesame::audit", event = "session_created", email = %new.record.email, session = &new.record.id_hash[..16], method = new.record.auth_method.as_str(), site = %site.name, via = "portal");
    let rd = ReturnTo::parse(&handoff.return_to, site, &app.return_sites);
    Ok(session_response(app, req, &new, rd.as_str())
        .cookie(cookies::clear(
            site,
            &req.site.handoff_cookie,
            CookieScope::HostOnly,
        ))
        // The code is in this request's URL: no `Referer` from here on.
        .no_referrer())
}

/// Site `POST /logout`: this site's session ends; the portal's account page
/// says who is still signed in there, and offers to sign out everywhere.
pub async fn site_logout(app: &App, portal: &SiteRt, req: &Req<'_>) -> Result {
    if !req.same_origin() {
        return Err(Failure::CrossSite);
    }
    super::signin::end_session(app, req).await?;
    Ok(
        Resp::redirect(303, &portal.site.sesame_url("/account", &[])).cookie(cookies::clear(
            &req.site.site,
            &req.site.session_cookie,
            CookieScope::HostOnly,
        )),
    )
}

/// A site behind a portal asked for a page only the portal serves: a
/// person's browser goes there, a program is told where it is.
pub fn on_portal(portal: &SiteRt, req: &Req) -> Resp {
    let there = match req.query {
        "" => portal.site.sesame_url(req.path, &[]),
        q => format!("{}?{q}", portal.site.sesame_url(req.path, &[])),
    };
    if *req.method == http::Method::GET {
        return Resp::redirect(302, &there);
    }
    Resp::json(
        404,
        &json!({"error": "on_portal", "message": "served on the portal", "portal": portal.site.origin}),
    )
}
