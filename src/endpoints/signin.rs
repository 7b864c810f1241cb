//! Handlers of the magic-link and code sign-in pages, sign-out and whoami.

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use super::error::{Failure, Result};
use super::{Req, Resp};
use crate::app::App;
use crate::email::Email;
use crate::return_to::ReturnTo;
use crate::session::cookies::CookieScope;
use crate::session::{cookies, LiveSession, NewSession};
use crate::signin::SignedIn;
use crate::store::StoreError;

#[derive(Serialize)]
struct LoginPage<'a> {
    site_name: &'a str,
    passkeys: bool,
    rd: &'a str,
    error: Option<&'a str>,
    email: Option<&'a str>,
}

#[derive(Serialize)]
struct CheckEmailPage<'a> {
    site_name: &'a str,
    email: &'a str,
    ttl_minutes: u64,
    rd: &'a str,
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct ConfirmPage<'a> {
    site_name: &'a str,
    token: &'a str,
    masked_email: &'a str,
    auto: bool,
}

fn return_to(app: &App, req: &Req, raw: Option<String>) -> ReturnTo {
    ReturnTo::parse(
        raw.as_deref().unwrap_or(""),
        &req.site.site,
        &app.return_sites,
    )
}

pub fn login_page(app: &App, req: &Req) -> Resp {
    let rd = return_to(app, req, req.query_param("rd"));
    // An OpenID Connect client's `login_hint`, when it is an address.
    let hint = req
        .query_param("login_hint")
        .and_then(|h| Email::parse(&h).ok());
    let html = app.pages.render(
        "login.html",
        &LoginPage {
            site_name: &req.site.site.name,
            passkeys: app.passkeys.available(req.site_id),
            rd: rd.as_str(),
            error: None,
            email: hint.as_ref().map(Email::as_str),
        },
    );
    Resp::page(app, 200, html)
}

/// The "check your email" page, with `error` when a code was not right.
pub(super) fn check_email_page(
    app: &App,
    req: &Req,
    email: &Email,
    rd: &str,
    error: Option<&str>,
    status: u16,
) -> Resp {
    let html = app.pages.render(
        "check_email.html",
        &CheckEmailPage {
            site_name: &req.site.site.name,
            email: email.as_str(),
            ttl_minutes: app.sign_in().ttl_minutes(),
            rd,
            error,
        },
    );
    Resp::page(app, status, html)
}

/// POST /login: the same answer whether or not the address may sign in;
/// the link (if any) is issued and mailed after the response.
pub async fn request_link(app: &Arc<App>, req: &Req<'_>) -> Result {
    if !req.same_origin() {
        return Err(Failure::CrossSite);
    }
    if !app.store_is_up() {
        return Err(Failure::Store(StoreError::Unavailable(
            "the store is unreachable".into(),
        )));
    }
    let rd = return_to(app, req, req.form_param("rd"));
    let raw = req.form_param("email").unwrap_or_default();
    let email = match Email::parse(&raw) {
        Ok(e) => e,
        Err(e) => {
            let msg = format!("Please check the address: {e}.");
            let shown: String = raw.chars().filter(|c| !c.is_control()).take(254).collect();
            let html = app.pages.render(
                "login.html",
                &LoginPage {
                    site_name: &req.site.site.name,
                    passkeys: app.passkeys.available(req.site_id),
                    rd: rd.as_str(),
                    error: Some(&msg),
                    email: Some(&shown),
                },
            );
            return Ok(Resp::page(app, 400, html));
        }
    };
    let pending_id = app.sign_in().request(&email, req.client_ip).await?;
    let sealed = app.keys.seal_cookie(&req.site.pending_seal, &pending_id);
    let max_age = app.config.magic_link.ttl.as_secs() as i64;
    let pending_cookie = cookies::set(
        &req.site.site,
        &req.site.pending_cookie,
        &sealed,
        max_age,
        CookieScope::HostOnly,
    );
    let issuing = app.clone();
    let (site_id, to, back_to) = (req.site_id, email.clone(), rd.clone());
    tokio::spawn(async move {
        let site = &issuing.site(site_id).site;
        issuing.sign_in().issue(site, to, back_to, pending_id).await;
    });
    Ok(check_email_page(app, req, &email, rd.as_str(), None, 200).cookie(pending_cookie))
}

async fn pending_id(app: &App, req: &Req<'_>) -> Option<String> {
    let value = req.cookie(&req.site.pending_cookie)?;
    app.open_cookie(&req.site.pending_seal, value).await
}

/// GET /magic: show the confirm page. Never consumes the token.
pub async fn confirm_page(app: &App, req: &Req<'_>) -> Result {
    let raw = req.query_param("token").unwrap_or_default();
    let link = app.sign_in().confirm(&req.site.site, &raw).await?;
    let auto = pending_id(app, req)
        .await
        .is_some_and(|id| link.pending_id == id);
    let html = app.pages.render(
        "confirm.html",
        &ConfirmPage {
            site_name: &req.site.site.name,
            token: &raw,
            masked_email: &link.masked_email,
            auto,
        },
    );
    Ok(Resp::page(app, 200, html).no_referrer())
}

/// POST /magic: consume the link and start a session.
pub async fn consume_link(app: &App, req: &Req<'_>) -> Result {
    if !req.same_origin() {
        return Err(Failure::CrossSite);
    }
    let raw = req.form_param("token").unwrap_or_default();
    let done = app.sign_in().consume_link(&req.site.site, &raw).await?;
    Ok(signed_in(app, req, &done).await)
}

/// POST /code: the emailed code, only in the browser that asked for it.
pub async fn consume_code(app: &App, req: &Req<'_>) -> Result {
    if !req.same_origin() {
        return Err(Failure::CrossSite);
    }
    let id = pending_id(app, req).await;
    let code = req.form_param("code").unwrap_or_default();
    let done = app
        .sign_in()
        .consume_code(&req.site.site, id.as_deref(), &code)
        .await?;
    Ok(signed_in(app, req, &done).await)
}

/// The session cookie and the way on: to the passkey offer first, once per
/// browser, for people who have no passkey yet.
async fn signed_in(app: &App, req: &Req<'_>, done: &SignedIn) -> Resp {
    if offer_passkey(app, req, &done.user).await {
        let offer = req
            .site
            .site
            .sesame_url("/passkey/offer", &[("rd", &done.return_to)]);
        let seen = cookies::set(
            &req.site.site,
            cookies::OFFERED_COOKIE,
            "1",
            365 * 24 * 3600,
            CookieScope::HostOnly,
        );
        return session_response(app, req, &done.session, &offer).cookie(seen);
    }
    session_response(app, req, &done.session, &done.return_to)
}

/// Offer a passkey right after an email sign-in: once per browser, to
/// people who have none, where passkeys work.
async fn offer_passkey(app: &App, req: &Req<'_>, user: &crate::store::User) -> bool {
    app.config.passkey_prompt
        && app.passkeys.available(req.site_id)
        && req.cookie(cookies::OFFERED_COOKIE).is_none()
        && matches!(app.store.passkeys_of(&user.id).await, Ok(p) if p.is_empty())
}

pub(super) fn session_response(app: &App, req: &Req, session: &NewSession, to: &str) -> Resp {
    let site = &req.site.site;
    let sealed = app
        .keys
        .seal_cookie(&req.site.session_seal, &session.cookie_plain);
    let max_age = session.record.expires_at - app.clock.now();
    Resp::redirect(303, to)
        .cookie(cookies::set(
            site,
            &req.site.session_cookie,
            &sealed,
            max_age,
            CookieScope::CookieDomain,
        ))
        .cookie(cookies::clear(
            site,
            &req.site.pending_cookie,
            CookieScope::HostOnly,
        ))
}

/// The live session of this request, if any.
pub async fn current_session(app: &App, req: &Req<'_>) -> Option<(String, Arc<LiveSession>)> {
    let value = req.cookie(&req.site.session_cookie)?;
    let plain = app.open_cookie(&req.site.session_seal, value).await?;
    let live = app.sessions.check(&plain).await.ok()?;
    Some((plain, live))
}

/// POST /logout: revoke the session in the store, so a replayed cookie is refused.
pub async fn logout(app: &App, req: &Req<'_>) -> Result {
    if !req.same_origin() {
        return Err(Failure::CrossSite);
    }
    end_session(app, req).await?;
    Ok(Resp::redirect(303, "/.sesame/login").cookie(cookies::clear(
        &req.site.site,
        &req.site.session_cookie,
        CookieScope::CookieDomain,
    )))
}

/// Revoke the session of this request's cookie, if any (with the sessions
/// handed off from it, on the portal).
pub(super) async fn end_session(app: &App, req: &Req<'_>) -> Result<()> {
    let plain = match req.cookie(&req.site.session_cookie) {
        // Reloads the keys if the cookie names one this instance has not
        // seen yet (rotated on another): the revocation must not be skipped.
        Some(v) => app.open_cookie(&req.site.session_seal, v).await,
        None => None,
    };
    if let Some(plain) = plain {
        if let Some(record) = app.sessions.revoke(&plain).await? {
            app.metrics.sessions_revoked.inc();
            tracing::info!(target: "sesame::audit", event = "session_revoked", email = %record.email, session = &record.id_hash[..16], reason = "logout");
        }
    }
    Ok(())
}

/// GET /whoami: the identity of this session, as JSON.
pub async fn whoami(app: &App, req: &Req<'_>) -> Resp {
    match current_session(app, req).await {
        Some((_, live)) => {
            let r = &live.record;
            Resp::json(
                200,
                &json!({
                    "user": r.user_id,
                    "email": r.email.as_str(),
                    "name": r.name,
                    "groups": r.groups,
                    "auth_method": r.auth_method.as_str(),
                    "expires_at": r.expires_at,
                }),
            )
        }
        None => Resp::json(
            401,
            &json!({"error": "unauthenticated", "login_url": req.site.site.sesame_url("/login", &[])}),
        ),
    }
}
