//! Handlers of the magic-link and code sign-in pages, sign-out and whoami.

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use super::error::{Failure, Result};
use super::ErrorPage;
use super::{Req, Resp};
use crate::app::App;
use crate::email::Email;
use crate::metrics::LimitKind;
use crate::return_to::ReturnTo;
use crate::session::cookies::CookieScope;
use crate::session::{cookies, LiveSession, NewSession};
use crate::signin::cross_device::{self, Asker, Decided, Status};
use crate::signin::device::Requested;
use crate::signin::{SignInError, SignedIn};
use crate::store::{BrowserSeen, StoreError};

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
    /// The number another device approves this browser's sign-in with.
    number: u8,
    /// Seconds between the page's refreshes without JavaScript.
    refresh: u64,
}

#[derive(Serialize)]
struct ConfirmPage<'a> {
    site_name: &'a str,
    token: &'a str,
    masked_email: &'a str,
    auto: bool,
    asked_agent: &'a str,
    asked_net: &'a str,
    asked_ago: &'a str,
}

/// Seconds a wait for another device's decision is held open.
const WAIT_SECS: u64 = 20;
/// Seconds between refreshes of "check your email" without JavaScript.
pub(super) const REFRESH_SECS: u64 = 30;

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
    number: u8,
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
            number,
            refresh: REFRESH_SECS,
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
    // An approval from another device near the link's end is still
    // collected.
    let max_age = app.config.magic_link.ttl.as_secs() as i64 + cross_device::COLLECT_SECS;
    let pending_cookie = cookies::set(
        &req.site.site,
        &req.site.pending_cookie,
        &sealed,
        max_age,
        CookieScope::HostOnly,
    );
    let number = cross_device::number(&app.keys, &pending_id);
    let asker = Asker::of(
        req.headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
        req.client_ip,
    );
    let issuing = app.clone();
    let (site_id, to, back_to) = (req.site_id, email.clone(), rd.clone());
    tokio::spawn(async move {
        let site = &issuing.site(site_id).site;
        issuing
            .sign_in()
            .issue(site, to, back_to, pending_id, asker)
            .await;
    });
    Ok(check_email_page(app, req, &email, rd.as_str(), number, None, 200).cookie(pending_cookie))
}

/// What this browser asked for: a sign-in by email (its pending id), or
/// one by a signed-in phone.
pub(super) enum Asked {
    Email(String),
    Phone(Requested),
}

pub(super) async fn asked(app: &App, req: &Req<'_>) -> Option<Asked> {
    let value = req.cookie(&req.site.pending_cookie)?;
    let plain = app.open_cookie(&req.site.pending_seal, value).await?;
    Some(match super::device::from_text(&plain) {
        Some(r) => Asked::Phone(r),
        None => Asked::Email(plain),
    })
}

/// The email sign-in this browser asked for, if any.
async fn pending_id(app: &App, req: &Req<'_>) -> Option<String> {
    match asked(app, req).await? {
        Asked::Email(id) => Some(id),
        Asked::Phone(_) => None,
    }
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
            asked_agent: &link.asker.agent,
            asked_net: &link.asker.net,
            asked_ago: &link.asked_ago,
        },
    );
    Ok(Resp::page(app, 200, html).no_referrer())
}

/// POST /magic/approve: another device picked a number for the sign-in of
/// a link. It gets no session either way.
pub async fn approve(app: &App, req: &Req<'_>) -> Result {
    if !req.same_origin() {
        return Err(Failure::CrossSite);
    }
    let raw = req.form_param("token").unwrap_or_default();
    let number = req.form_param("number").unwrap_or_default();
    let decided = app.sign_in().approve(&req.site.site, &raw, &number).await?;
    Ok(decided_page(app, req, decided, &FROM_EMAIL))
}

/// POST /magic/deny: "This wasn't me".
pub async fn deny(app: &App, req: &Req<'_>) -> Result {
    if !req.same_origin() {
        return Err(Failure::CrossSite);
    }
    let raw = req.form_param("token").unwrap_or_default();
    let decided = app.sign_in().deny(&req.site.site, &raw).await?;
    Ok(decided_page(app, req, decided, &FROM_EMAIL))
}

/// Title and message of the page the deciding device sees, for an
/// approval, a wrong number and "this wasn't me".
pub(super) type Decisions = [(&'static str, &'static str); 3];

const FROM_EMAIL: Decisions = [
    (
        "Sign-in approved",
        "The other device continues by itself in a moment. This device was not signed in.",
    ),
    (
        "Sign-in cancelled",
        "That was not the number the other device shows, so the sign-in was cancelled and nobody was signed in. If it was you, ask for a new link there.",
    ),
    (
        "Sign-in cancelled",
        "Nobody was signed in. Someone typed your address on the sign-in page; as long as nobody else reads your email, they cannot get in.",
    ),
];

pub(super) fn decided_page(app: &App, req: &Req, decided: Decided, pages: &Decisions) -> Resp {
    let (title, message) = pages[match decided {
        Decided::Approved => 0,
        Decided::WrongNumber => 1,
        Decided::Denied => 2,
    }];
    let status = if decided == Decided::Approved {
        200
    } else {
        403
    };
    ErrorPage::new(&req.site.site.name, title, message)
        .respond(app, status)
        .no_referrer()
}

/// GET /login/wait: the "check your email" page waits here (up to
/// [`WAIT_SECS`]) for another device to decide its sign-in. Reads the store
/// when called and when woken; writes nothing.
pub async fn wait(app: &App, req: &Req<'_>) -> Result {
    let key = crate::ratelimit::client_key(req.client_ip);
    if let Err(retry_after) = app.wait_limit.hit(&key) {
        app.metrics.limited(LimitKind::Anonymous);
        return Err(Failure::Limited {
            kind: LimitKind::Anonymous,
            retry_after,
        });
    }
    let Some(asked) = asked(app, req).await else {
        return Ok(Resp::json(200, &json!({"state": "none"})));
    };
    let id = match &asked {
        Asked::Email(id) => id.clone(),
        Asked::Phone(r) => r.id.clone(),
    };
    let Some(waiting) = app.waiters.enter(&id) else {
        // As many sign-ins are waited on here as allowed: ask again soon.
        return Ok(Resp::json(
            200,
            &json!({"state": "waiting", "retry_after": 5}),
        ));
    };
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(WAIT_SECS);
    let status = loop {
        let woken = waiting.notify.notified();
        tokio::pin!(woken);
        // Registered before the read: a decision made just after it wakes us.
        woken.as_mut().enable();
        let status = match &asked {
            Asked::Email(id) => app.sign_in().status(&req.site.site, id).await?.0,
            Asked::Phone(r) => app.sign_in().request_status(&req.site.site, &r.id).await?.0,
        };
        if status != Status::Waiting || tokio::time::timeout_at(until, woken).await.is_err() {
            break status;
        }
    };
    let mut body = json!({"state": status.label()});
    match status {
        Status::Approved => body["continue"] = json!("/.sesame/login/continue"),
        Status::Cancelled(d) => body["reason"] = json!(d.as_str()),
        _ => {}
    }
    Ok(Resp::json(200, &body))
}

/// GET /login/continue: the asking browser takes its approved sign-in (a
/// session, once); while undecided, "check your email" again (what a page
/// without JavaScript refreshes to).
pub async fn continue_signin(app: &App, req: &Req<'_>) -> Result {
    let id = match asked(app, req).await.ok_or(SignInError::CodeElsewhere)? {
        Asked::Email(id) => id,
        Asked::Phone(r) => return continue_phone(app, req, &r).await,
    };
    let sign_in = app.sign_in().with_device(req.device());
    match sign_in.status(&req.site.site, &id).await? {
        (Status::Approved, _) => {
            let done = sign_in.collect(&req.site.site, &id).await?;
            Ok(signed_in(app, req, &done).await)
        }
        (Status::Waiting, Some(p)) => {
            let number = cross_device::number(&app.keys, &id);
            Ok(check_email_page(
                app,
                req,
                &p.email,
                &p.return_to,
                number,
                None,
                200,
            ))
        }
        // Not stored (yet, or any more): nothing to continue.
        (Status::Waiting, None) | (Status::Expired, _) => Err(SignInError::LinkExpired.into()),
        (Status::Cancelled(d), _) => Err(SignInError::Cancelled(d).into()),
        (Status::Used, _) => Err(SignInError::LinkUsed.into()),
    }
}

/// `continue_signin` for a sign-in asked of a signed-in phone.
async fn continue_phone(app: &App, req: &Req<'_>, r: &Requested) -> Result {
    let sign_in = app.sign_in().with_device(req.device());
    match sign_in.request_status(&req.site.site, &r.id).await? {
        (Status::Approved, _) => {
            let done = sign_in.collect_request(&req.site.site, &r.id).await?;
            Ok(signed_in(app, req, &done).await)
        }
        (Status::Waiting, Some(stored)) => {
            Ok(super::device::phone_page(app, req, r, &stored.return_to))
        }
        (Status::Waiting, None) | (Status::Expired, _) => Err(SignInError::RequestUnknown.into()),
        (Status::Cancelled(d), _) => Err(SignInError::Cancelled(d).into()),
        (Status::Used, _) => Err(SignInError::LinkUsed.into()),
    }
}

/// POST /magic: consume the link and start a session.
pub async fn consume_link(app: &App, req: &Req<'_>) -> Result {
    if !req.same_origin() {
        return Err(Failure::CrossSite);
    }
    let raw = req.form_param("token").unwrap_or_default();
    let done = app
        .sign_in()
        .with_device(req.device())
        .consume_link(&req.site.site, &raw)
        .await?;
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
        .with_device(req.device())
        .consume_code(&req.site.site, id.as_deref(), &code)
        .await?;
    Ok(signed_in(app, req, &done).await)
}

#[derive(Serialize)]
struct NewBrowserMail<'a> {
    site_name: &'a str,
    browser: &'a str,
    network: String,
    when: String,
    account_url: String,
}

/// Remember this browser for `user`, just signed in; a browser the account
/// has not used before (and is not its first) is announced by email. The
/// browser cookie to set, when this browser had none.
pub(super) async fn note_browser(
    app: &App,
    req: &Req<'_>,
    user: &crate::store::User,
) -> Option<String> {
    if !app.config.notify_new_device {
        return None;
    }
    let ours = |v: &&str| {
        v.len() == 32
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let (id, set) = match req.cookie(cookies::BROWSER_COOKIE).filter(ours) {
        Some(v) => (v.to_string(), None),
        None => {
            let id = crate::random::id(24);
            let cookie = cookies::set(
                &req.site.site,
                cookies::BROWSER_COOKIE,
                &id,
                400 * 24 * 3600,
                CookieScope::HostOnly,
            );
            (id, Some(cookie))
        }
    };
    let now = app.clock.now();
    let seen = app
        .store
        .remember_browser(user.id.as_str(), &crate::session::hash_id(&id), now)
        .await;
    match seen {
        Ok(BrowserSeen::New) => {
            let site = &req.site.site;
            let asker = Asker::of(
                req.headers
                    .get(http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok()),
                req.client_ip,
            );
            let vars = NewBrowserMail {
                site_name: &site.name,
                browser: &asker.agent,
                network: req.client_ip.to_string(),
                when: super::account::when(now),
                account_url: site.sesame_url("/account", &[]),
            };
            let mail = crate::mail::OutgoingMail {
                to: user.email.clone(),
                subject: format!("New sign-in to {} from {}", site.name, asker.agent),
                text: app.pages.render("new_browser.txt", &vars),
                html: app.pages.render("new_browser.html", &vars),
            };
            if app.outbox.enqueue(mail, &app.metrics) {
                app.metrics.new_browser_notices.inc();
                tracing::info!(target: "sesame::audit", event = "new_browser_noticed", email = %user.email,
                    site = %site.name, browser = %asker.agent, client = %req.client_ip);
            }
        }
        Ok(BrowserSeen::Known | BrowserSeen::First) => {}
        Err(e) => tracing::warn!(error = %e, "could not remember the browser of a sign-in"),
    }
    set
}

/// The session cookie and the way on: to the passkey offer first, once per
/// browser, for people who have no passkey yet.
async fn signed_in(app: &App, req: &Req<'_>, done: &SignedIn) -> Resp {
    let browser = note_browser(app, req, &done.user).await;
    let r = to_app(app, req, done).await;
    match browser {
        Some(cookie) => r.cookie(cookie),
        None => r,
    }
}

async fn to_app(app: &App, req: &Req<'_>, done: &SignedIn) -> Resp {
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
