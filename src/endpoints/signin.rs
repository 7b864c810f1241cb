//! Handlers of the magic-link and code sign-in pages, sign-out and whoami.

use std::sync::Arc;

use http::header;
use serde::Serialize;
use serde_json::json;

use super::{error_page, ErrorPage, Req, Resp};
use crate::app::App;
use crate::email::Email;
use crate::login::{self, FinishError};
use crate::magic_link::token::{self, TokenError};
use crate::magic_link::{code_matches, Code};
use crate::metrics::LimitKind;
use crate::return_to::ReturnTo;
use crate::session::{cookies, LiveSession, NewSession};
use crate::store::{AuthMethod, PendingLogin};

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
        &app.config.sites,
    )
}

fn ttl_minutes(app: &App) -> u64 {
    app.config.magic_link.ttl.as_secs().div_ceil(60)
}

pub fn login_page(app: &App, req: &Req) -> Resp {
    let rd = return_to(app, req, req.query_param("rd"));
    let html = app.pages.render(
        "login.html",
        &LoginPage {
            site_name: &req.site.site.name,
            passkeys: app.passkeys.available(req.site_index),
            rd: rd.as_str(),
            error: None,
            email: None,
        },
    );
    Resp::page(app, 200, html)
}

fn cross_site(app: &App, req: &Req) -> Resp {
    error_page(
        app,
        req,
        403,
        "Request refused",
        "This form was sent from another site. Please go back and try again.",
        false,
    )
}

fn rate_limited(app: &App, req: &Req, kind: LimitKind, wait: u64) -> Resp {
    app.metrics.limited(kind);
    tracing::info!(target: "sesame::audit", event = "rate_limited", key = kind.label(), client = %req.client_ip);
    let why = match kind {
        LimitKind::Code => {
            "Too many codes were tried for this address today. The link in the email still works."
        }
        LimitKind::Email | LimitKind::Client | LimitKind::Anonymous => {
            "Too many sign-in links were asked for."
        }
    };
    ErrorPage {
        retry_after: Some(wait),
        ..ErrorPage::new(&req.site.site.name, "Too many attempts", why)
    }
    .respond(app, 429)
    .header(header::RETRY_AFTER, &wait.to_string())
}

/// POST /login: the same answer whether or not the address may sign in;
/// the link (if any) is issued and mailed after the response.
pub async fn request_link(app: &Arc<App>, req: &Req<'_>) -> Resp {
    if !req.same_origin() {
        return cross_site(app, req);
    }
    if !app.store_is_up() {
        return store_down(app, req, &"the store is unreachable");
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
                    passkeys: app.passkeys.available(req.site_index),
                    rd: rd.as_str(),
                    error: Some(&msg),
                    email: Some(&shown),
                },
            );
            return Resp::page(app, 400, html);
        }
    };
    match app
        .client_limit
        .hit(&crate::ratelimit::client_key(req.client_ip))
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(wait)) => return rate_limited(app, req, LimitKind::Client, wait),
        Err(e) => return store_down(app, req, &e),
    }
    match app.email_limit.hit(email.as_str()).await {
        Ok(Ok(())) => {}
        Ok(Err(wait)) => return rate_limited(app, req, LimitKind::Email, wait),
        Err(e) => return store_down(app, req, &e),
    }
    app.metrics.login_requests.inc();
    let pending_id = login::new_pending_id();
    let sealed = app.keys.seal_cookie(&req.site.pending_seal, &pending_id);
    let max_age = app.config.magic_link.ttl.as_secs() as i64;
    let pending_cookie = cookies::set(
        &req.site.site,
        &req.site.pending_cookie,
        &sealed,
        max_age,
        false,
    );
    tokio::spawn(login::issue_link(
        app.clone(),
        req.site_index,
        email.clone(),
        rd.clone(),
        pending_id,
    ));
    let html = app.pages.render(
        "check_email.html",
        &CheckEmailPage {
            site_name: &req.site.site.name,
            email: email.as_str(),
            ttl_minutes: ttl_minutes(app),
            rd: rd.as_str(),
            error: None,
        },
    );
    Resp::page(app, 200, html).cookie(pending_cookie)
}

/// A refused link or code: the result counted and the page shown.
struct Refusal {
    status: u16,
    result: &'static str,
    title: &'static str,
    message: &'static str,
    offer_new_link: bool,
}

const LINK_INVALID: Refusal = Refusal {
    status: 400,
    result: "invalid",
    title: "This link is not valid",
    message: "The sign-in link is damaged or not meant for this site. Ask for a new one.",
    offer_new_link: true,
};
const LINK_EXPIRED: Refusal = Refusal {
    status: 410,
    result: "expired",
    title: "This link has expired",
    message: "Sign-in links work for a short time only. Ask for a new one.",
    offer_new_link: true,
};
const LINK_USED: Refusal = Refusal {
    status: 410,
    result: "gone",
    title: "This link was already used",
    message: "Each sign-in link works once. Ask for a new one.",
    offer_new_link: true,
};
const CODE_ELSEWHERE: Refusal = Refusal {
    status: 400,
    result: "no_pending",
    title: "Use the link instead",
    message: "A code works only in the browser where you asked for it. Open the link from the email, or ask for a new one here.",
    offer_new_link: true,
};
const CODE_MALFORMED: Refusal = Refusal {
    status: 400,
    result: "invalid",
    title: "That is not a code",
    message: "The code is the six digits in the email.",
    offer_new_link: false,
};
const CODE_GONE: Refusal = Refusal {
    status: 410,
    result: "gone",
    title: "This code no longer works",
    message: "It expired, was already used, or too many wrong codes were tried. Ask for a new one.",
    offer_new_link: true,
};
const NOT_ALLOWED: Refusal = Refusal {
    status: 403,
    result: "not_allowed",
    title: "Sign-in not allowed",
    message: "This address may not sign in here.",
    offer_new_link: false,
};

fn refuse(app: &App, req: &Req, method: &str, r: &Refusal) -> Resp {
    app.metrics
        .verifications
        .with_label_values(&[method, r.result])
        .inc();
    error_page(app, req, r.status, r.title, r.message, r.offer_new_link)
}

fn link_refused(app: &App, req: &Req, e: &TokenError) -> Resp {
    match e {
        TokenError::Invalid => refuse(app, req, "magic_link", &LINK_INVALID),
        TokenError::Expired(_) => refuse(app, req, "magic_link", &LINK_EXPIRED),
    }
}

async fn pending_id(app: &App, req: &Req<'_>) -> Option<String> {
    let value = req.cookie(&req.site.pending_cookie)?;
    app.open_cookie(&req.site.pending_seal, value).await
}

/// GET /magic: show the confirm page. Never consumes the token.
pub async fn confirm_page(app: &App, req: &Req<'_>) -> Resp {
    let raw = req.query_param("token").unwrap_or_default();
    app.prepare_link(&raw).await;
    let claims = match token::verify(&app.keys, &raw, &req.site.site.origin, app.clock.now()) {
        Ok(c) => c,
        Err(e) => return link_refused(app, req, &e),
    };
    match app.store.view_pending(&claims.jti).await {
        Ok(Some(p)) if !p.consumed => {}
        Ok(_) => return refuse(app, req, "magic_link", &LINK_USED),
        Err(e) => return store_down(app, req, &e),
    }
    app.metrics.confirm_views.inc();
    let auto = pending_id(app, req)
        .await
        .is_some_and(|id| id == claims.jti);
    let masked = Email::parse(&claims.sub)
        .map(|e| e.masked())
        .unwrap_or_default();
    let html = app.pages.render(
        "confirm.html",
        &ConfirmPage {
            site_name: &req.site.site.name,
            token: &raw,
            masked_email: &masked,
            auto,
        },
    );
    Resp::page(app, 200, html).no_referrer()
}

fn store_down(app: &App, req: &Req, e: &dyn std::fmt::Display) -> Resp {
    tracing::error!(error = %e, "store error during sign-in");
    error_page(
        app,
        req,
        503,
        "Please try again shortly",
        "Sign-in is unavailable for a moment. Nothing was lost; try again in a minute.",
        false,
    )
}

/// POST /magic: consume the link and start a session.
pub async fn consume_link(app: &App, req: &Req<'_>) -> Resp {
    if !req.same_origin() {
        return cross_site(app, req);
    }
    let raw = req.form_param("token").unwrap_or_default();
    app.prepare_link(&raw).await;
    let claims = match token::verify(&app.keys, &raw, &req.site.site.origin, app.clock.now()) {
        Ok(c) => c,
        Err(e) => return link_refused(app, req, &e),
    };
    let pending = match app
        .store
        .consume_pending(&claims.jti, app.clock.now())
        .await
    {
        Ok(Some(p)) => p,
        Ok(None) => return refuse(app, req, "magic_link", &LINK_USED),
        Err(e) => return store_down(app, req, &e),
    };
    if pending.email.as_str() != claims.sub || pending.site != req.site.site.name {
        return refuse(app, req, "magic_link", &LINK_INVALID);
    }
    signed_in(app, req, &pending, AuthMethod::MagicLink).await
}

/// POST /code: the emailed code, only in the browser that asked for it.
pub async fn consume_code(app: &App, req: &Req<'_>) -> Resp {
    if !req.same_origin() {
        return cross_site(app, req);
    }
    let Some(id) = pending_id(app, req).await else {
        return refuse(app, req, "code", &CODE_ELSEWHERE);
    };
    let Some(code) = Code::parse(&req.form_param("code").unwrap_or_default()) else {
        return refuse(app, req, "code", &CODE_MALFORMED);
    };
    // A code is for the site it was asked on, as a link is (sites on one
    // host but different ports share the pending cookie); asked before an
    // attempt is counted, so a try on the wrong site costs nothing.
    match app.store.pending(&id).await {
        Ok(Some(p)) if p.site != req.site.site.name => {
            return refuse(app, req, "code", &CODE_ELSEWHERE)
        }
        Ok(_) => {}
        Err(e) => return store_down(app, req, &e),
    }
    let max = app.config.magic_link.code_attempts;
    let pending = match app.store.attempt_code(&id, app.clock.now(), max).await {
        Ok(Some(p)) => p,
        Ok(None) => return refuse(app, req, "code", &CODE_GONE),
        Err(e) => return store_down(app, req, &e),
    };
    // Counted before the code is compared: past the budget, no guess is
    // even looked at.
    match app.code_limit.hit(pending.email.as_str()).await {
        Ok(Ok(())) => {}
        Ok(Err(wait)) => return rate_limited(app, req, LimitKind::Code, wait),
        Err(e) => return store_down(app, req, &e),
    }
    if !code_matches(&app.keys, &id, &code, &pending.code_mac) {
        app.metrics
            .verifications
            .with_label_values(&["code", "wrong"])
            .inc();
        tracing::info!(target: "sesame::audit", event = "code_wrong", login = %id, attempts = pending.attempts);
        let left = max.saturating_sub(pending.attempts);
        let msg = format!("That code is not right. {left} attempt(s) left.");
        let html = app.pages.render(
            "check_email.html",
            &CheckEmailPage {
                site_name: &req.site.site.name,
                email: pending.email.as_str(),
                ttl_minutes: ttl_minutes(app),
                rd: &pending.return_to,
                error: Some(&msg),
            },
        );
        return Resp::page(app, 400, html);
    }
    match app.store.consume_pending(&id, app.clock.now()).await {
        Ok(Some(p)) => signed_in(app, req, &p, AuthMethod::Code).await,
        Ok(None) => refuse(app, req, "code", &CODE_GONE),
        Err(e) => store_down(app, req, &e),
    }
}

async fn signed_in(app: &App, req: &Req<'_>, pending: &PendingLogin, method: AuthMethod) -> Resp {
    let (session, user) = match login::finish(app, req.site, pending, method).await {
        Ok(s) => s,
        Err(FinishError::NotAllowed) => return refuse(app, req, method.as_str(), &NOT_ALLOWED),
        Err(FinishError::Store(e)) => return store_down(app, req, &e),
    };
    app.metrics
        .verifications
        .with_label_values(&[method.as_str(), "ok"])
        .inc();
    if offer_passkey(app, req, &user).await {
        let mut offer = req.site.site.public_url.clone();
        offer.set_path("/.sesame/passkey/offer");
        offer
            .query_pairs_mut()
            .append_pair("rd", &pending.return_to);
        let seen = cookies::set(
            &req.site.site,
            cookies::OFFERED_COOKIE,
            "1",
            365 * 24 * 3600,
            false,
        );
        return session_response(app, req, &session, offer.as_str()).cookie(seen);
    }
    session_response(app, req, &session, &pending.return_to)
}

/// Offer a passkey right after an email sign-in: once per browser, to
/// people who have none, where passkeys work.
async fn offer_passkey(app: &App, req: &Req<'_>, user: &crate::store::User) -> bool {
    app.config.passkey_prompt
        && app.passkeys.available(req.site_index)
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
            true,
        ))
        .cookie(cookies::clear(site, &req.site.pending_cookie, false))
}

/// The live session of this request, if any.
pub async fn current_session(app: &App, req: &Req<'_>) -> Option<(String, Arc<LiveSession>)> {
    let value = req.cookie(&req.site.session_cookie)?;
    let plain = app.open_cookie(&req.site.session_seal, value).await?;
    let live = app.sessions.check(&plain).await.ok()?;
    Some((plain, live))
}

/// POST /logout: revoke the session in the store, so a replayed cookie is refused.
pub async fn logout(app: &App, req: &Req<'_>) -> Resp {
    if !req.same_origin() {
        return cross_site(app, req);
    }
    let plain = match req.cookie(&req.site.session_cookie) {
        // Reloads the keys if the cookie names one this instance has not
        // seen yet (rotated on another): the revocation must not be skipped.
        Some(v) => app.open_cookie(&req.site.session_seal, v).await,
        None => None,
    };
    if let Some(plain) = plain {
        match app.sessions.revoke(&plain).await {
            Ok(Some(record)) => {
                app.metrics.sessions_revoked.inc();
                tracing::info!(target: "sesame::audit", event = "session_revoked", email = %record.email, session = &record.id_hash[..16], reason = "logout");
            }
            Ok(None) => {}
            Err(e) => return store_down(app, req, &e),
        }
    }
    Resp::redirect(303, "/.sesame/login").cookie(cookies::clear(
        &req.site.site,
        &req.site.session_cookie,
        true,
    ))
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
            &json!({"error": "unauthenticated", "login_url": format!("{}.sesame/login", req.site.site.public_url)}),
        ),
    }
}
