//! Sesame's own endpoints under `/.sesame/`, as plain functions from a
//! [`Req`] to a [`Resp`], so they can be tested without Pingora.
//!
//! This module routes; `error.rs` maps every failure to a page or JSON in
//! one place. The sign-in logic is in `signin/` (crate root), the handlers
//! in `signin.rs`, `passkeys.rs` and `account.rs`.

mod account;
mod device;
pub mod error;
mod oidc;
mod passkeys;
mod portal;
mod signin;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use serde::Serialize;

use crate::app::{App, SiteRt};
use crate::config::SiteId;
use crate::metrics::LimitKind;
use crate::pages::STATIC;
use crate::session::cookies;
use error::{Failure, Result};

/// Requests to Sesame's endpoints may not carry more than this in their body.
pub const MAX_BODY: usize = 16 * 1024;
/// ... or in their headers.
pub const MAX_HEADERS: usize = 16 * 1024;

pub struct Req<'a> {
    pub method: &'a Method,
    /// Path below `/.sesame`, e.g. `/login`.
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
    pub client_ip: IpAddr,
    pub site_id: SiteId,
    pub site: &'a SiteRt,
}

impl Req<'_> {
    /// The browser or program asking, as its session will name it.
    pub fn device(&self) -> crate::store::Device {
        crate::store::Device {
            agent: crate::signin::cross_device::browser(
                self.headers
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            ),
            client: self.client_ip.to_string(),
        }
    }

    pub fn query_param(&self, key: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    pub fn form_param(&self, key: &str) -> Option<String> {
        form_urlencoded::parse(&self.body)
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    /// The value of cookie `name`, from any `Cookie` header.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| cookies::find(v, name))
    }

    /// False for a state-changing request that a browser sent from another site.
    pub fn same_origin(&self) -> bool {
        let origin = &self.site.site.origin;
        // Browsers send `Origin: null` for a form posted from a page with
        // `Referrer-Policy: no-referrer` (the confirm page): then the
        // unforgeable Sec-Fetch-Site decides.
        match self.headers.get(header::ORIGIN) {
            Some(o) if o.as_bytes() == b"null" => {
                return self
                    .headers
                    .get("sec-fetch-site")
                    .is_some_and(|s| s.as_bytes() == b"same-origin");
            }
            Some(o) => return o.as_bytes() == origin.as_bytes(),
            None => {}
        }
        if let Some(s) = self.headers.get("sec-fetch-site") {
            return matches!(s.as_bytes(), b"same-origin" | b"none");
        }
        if let Some(r) = self
            .headers
            .get(header::REFERER)
            .and_then(|r| r.to_str().ok())
        {
            return url::Url::parse(r)
                .map(|u| u.origin().ascii_serialization() == *origin)
                .unwrap_or(false);
        }
        // No browser sends a cross-site POST without Origin; other clients cannot be forged.
        true
    }
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl Resp {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
        Resp {
            status,
            headers: vec![(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            body: body.into(),
        }
    }

    /// One of Sesame's own pages: never cached, never framed, no inline script.
    pub fn page(app: &App, status: u16, html: String) -> Resp {
        let mut r = Resp::new(status, "text/html; charset=utf-8", html);
        r.no_store();
        if let Ok(v) = HeaderValue::from_str(&app.csp) {
            r.headers.push((header::CONTENT_SECURITY_POLICY, v));
        }
        r.headers
            .push((header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")));
        r.headers.push((
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ));
        r
    }

    pub fn json<T: Serialize>(status: u16, value: &T) -> Resp {
        let mut r = Resp::new(
            status,
            "application/json",
            serde_json::to_vec(value).unwrap_or_default(),
        );
        r.no_store();
        r
    }

    pub fn redirect(status: u16, location: &str) -> Resp {
        let mut r = Resp::new(status, "text/plain; charset=utf-8", "");
        if let Ok(v) = HeaderValue::from_str(location) {
            r.headers.push((header::LOCATION, v));
        }
        r.no_store();
        r
    }

    fn no_store(&mut self) {
        self.headers
            .push((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        self.headers.push((
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ));
    }

    /// Send no `Referer` at all from this page (it has a token in its URL).
    pub fn no_referrer(mut self) -> Resp {
        self.headers.retain(|(k, _)| k != header::REFERRER_POLICY);
        self.headers.push((
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ));
        self
    }

    pub fn header(mut self, name: HeaderName, value: &str) -> Resp {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    pub fn cookie(self, set_cookie: String) -> Resp {
        self.header(header::SET_COOKIE, &set_cookie)
    }
}

#[derive(Serialize)]
pub struct ErrorPage<'a> {
    pub site_name: &'a str,
    pub title: &'a str,
    pub message: &'a str,
    pub offer_new_link: bool,
    pub rd: &'a str,
    pub retry_after: Option<u64>,
    /// Offer to sign out (a signed-in person on a page they may not use).
    pub signout: bool,
    /// Where the page's way on leads, instead of the sign-in page.
    pub continue_url: Option<&'a str>,
}

impl<'a> ErrorPage<'a> {
    /// A plain error page: no new-link form, no retry hint, no sign-out.
    pub fn new(site_name: &'a str, title: &'a str, message: &'a str) -> ErrorPage<'a> {
        ErrorPage {
            site_name,
            title,
            message,
            offer_new_link: false,
            rd: "",
            retry_after: None,
            signout: false,
            continue_url: None,
        }
    }

    /// The page as a response with `status`.
    pub fn respond(&self, app: &App, status: u16) -> Resp {
        Resp::page(app, status, app.pages.render("error.html", self))
    }
}

/// Endpoints a client without a session can make write to the store (a
/// pending login, a view or attempt count, a ceremony, a rate-limit row).
fn writes_anonymously(method: &Method, path: &str) -> bool {
    match path {
        "/magic" => true,
        // Decide a sign-in, or collect one (a session).
        "/magic/approve" | "/magic/deny" => method == Method::POST,
        "/login/continue" => true,
        // Store a phone request; look up (and decide) one by its code:
        // bounded so that codes cannot be guessed at speed.
        "/login/phone" => method == Method::POST,
        "/device" => true,
        "/device/approve" | "/device/deny" => method == Method::POST,
        "/login" | "/code" | "/passkey/login/start" | "/passkey/login/finish" => {
            method == Method::POST
        }
        // Takes (deletes) a handoff code, or stores one: bounded like the
        // others.
        "/handoff" | "/authorize" | "/oidc/authorize" => true,
        // Stores a device request.
        "/oidc/device_authorization" => true,
        _ => false,
    }
}

/// Answer a request to `/.sesame/*`.
pub async fn handle(app: &Arc<App>, req: Req<'_>) -> Resp {
    route(app, &req)
        .await
        .unwrap_or_else(|failure| failure.respond(app, &req))
}

async fn route(app: &Arc<App>, req: &Req<'_>) -> Result {
    let m = req.method;
    if writes_anonymously(m, req.path) {
        let key = crate::ratelimit::client_key(req.client_ip);
        let mut limited = app.anonymous_limit.hit(&key);
        // Ceremonies are stored for 5 minutes: bounded for everyone together
        // too (many addresses), whatever each one is allowed.
        if limited.is_ok() && req.path == "/passkey/login/start" {
            limited = app.passkey_start_limit.hit("");
        }
        if let Err(retry_after) = limited {
            app.metrics.limited(LimitKind::Anonymous);
            return Err(Failure::Limited {
                kind: LimitKind::Anonymous,
                retry_after,
            });
        }
    }
    if let Some(portal) = app.portal() {
        if !app.is_portal(req.site_id) {
            return behind_portal(app, portal, req).await;
        }
        if req.path == "/authorize" && m == Method::GET {
            return portal::authorize(app, req).await;
        }
        if let Some(provider) = &app.oidc {
            match req.path {
                "/.well-known/openid-configuration" if m == Method::GET => {
                    return Ok(oidc::discovery(provider))
                }
                "/oidc/jwks.json" if m == Method::GET => return Ok(oidc::jwks(provider)),
                "/oidc/authorize" if m == Method::GET || m == Method::POST => {
                    return oidc::authorize(app, provider, req).await
                }
                "/oidc/device_authorization" => {
                    return oidc::device_authorization(app, provider, req).await
                }
                // Called by script too, from a public client's page (CORS).
                "/oidc/token" | "/oidc/revoke" | "/oidc/userinfo" if m == Method::OPTIONS => {
                    return Ok(oidc::preflight(provider, req))
                }
                "/oidc/token" => {
                    let r = oidc::token(app, provider, req).await?;
                    return Ok(oidc::cors(provider, req, r));
                }
                "/oidc/revoke" => {
                    let r = oidc::revoke(app, provider, req).await?;
                    return Ok(oidc::cors(provider, req, r));
                }
                "/oidc/end_session" if m == Method::GET || m == Method::POST => {
                    return oidc::end_session(app, provider, req).await
                }
                "/oidc/userinfo" if m == Method::GET || m == Method::POST => {
                    let r = oidc::userinfo(app, req).await?;
                    return Ok(oidc::cors(provider, req, r));
                }
                _ => {}
            }
        }
    }
    Ok(match req.path {
        "/login" if m == Method::GET => signin::login_page(app, req),
        "/login" if m == Method::POST => signin::request_link(app, req).await?,
        "/magic" if m == Method::GET => signin::confirm_page(app, req).await?,
        "/magic" if m == Method::POST => signin::consume_link(app, req).await?,
        "/code" if m == Method::POST => signin::consume_code(app, req).await?,
        "/magic/approve" if m == Method::POST => signin::approve(app, req).await?,
        "/magic/deny" if m == Method::POST => signin::deny(app, req).await?,
        "/login/wait" if m == Method::GET => signin::wait(app, req).await?,
        "/login/continue" if m == Method::GET => signin::continue_signin(app, req).await?,
        "/login/phone" if m == Method::POST => device::ask(app, req).await?,
        "/login/phone" if m == Method::GET => device::phone(app, req).await?,
        "/device" if m == Method::GET => device::device_page(app, req).await?,
        "/device/approve" if m == Method::POST => device::decide(app, req, true).await?,
        "/device/deny" if m == Method::POST => device::decide(app, req, false).await?,
        "/logout" if m == Method::POST => signin::logout(app, req).await?,
        "/whoami" if m == Method::GET => signin::whoami(app, req).await,
        "/jwks.json" if m == Method::GET => jwks(app),
        "/passkey/register/start" if m == Method::POST => {
            passkeys::register_start(app, req).await?
        }
        "/passkey/register/finish" if m == Method::POST => {
            passkeys::register_finish(app, req).await?
        }
        "/passkey/proof/start" if m == Method::POST => passkeys::proof_start(app, req).await?,
        "/passkey/proof/finish" if m == Method::POST => passkeys::proof_finish(app, req).await?,
        "/passkey/login/start" if m == Method::POST => passkeys::login_start(app, req).await?,
        "/passkey/login/finish" if m == Method::POST => passkeys::login_finish(app, req).await?,
        "/api/passkeys" => passkeys::api_passkeys(app, req, None).await?,
        p if p.starts_with("/api/passkeys/") => {
            let id = &p["/api/passkeys/".len()..];
            passkeys::api_passkeys(app, req, Some(id)).await?
        }
        "/api/sessions" => passkeys::api_sessions(app, req, None).await?,
        p if p.starts_with("/api/sessions/") => {
            let id = &p["/api/sessions/".len()..];
            passkeys::api_sessions(app, req, Some(id)).await?
        }
        "/account" if m == Method::GET => account::account_page(app, req).await?,
        "/passkey/offer" if m == Method::GET => account::offer_page(app, req).await,
        "/stepup" if m == Method::GET => account::stepup_page(app, req).await?,
        p if p.starts_with("/static/") && m == Method::GET => static_asset(&p["/static/".len()..]),
        "/login" | "/magic" | "/code" | "/logout" | "/whoami" | "/magic/approve"
        | "/magic/deny" | "/login/wait" | "/login/continue" | "/login/phone" | "/device"
        | "/device/approve" | "/device/deny" => return Err(Failure::MethodNotAllowed),
        _ => return Err(Failure::NotFound),
    })
}

/// What a site behind a portal serves itself: the two ends of a handoff,
/// sign-out, whoami, the JWKS and the static files. Every other page is
/// the portal's.
async fn behind_portal(app: &Arc<App>, portal: &SiteRt, req: &Req<'_>) -> Result {
    let m = req.method;
    Ok(match req.path {
        "/login" if m == Method::GET => portal::start(app, portal, req, false),
        "/stepup" if m == Method::GET => portal::start(app, portal, req, true),
        "/handoff" if m == Method::GET => portal::redeem(app, req).await?,
        "/logout" if m == Method::POST => portal::site_logout(app, portal, req).await?,
        "/whoami" if m == Method::GET => signin::whoami(app, req).await,
        "/jwks.json" if m == Method::GET => jwks(app),
        p if p.starts_with("/static/") && m == Method::GET => static_asset(&p["/static/".len()..]),
        "/handoff" | "/logout" | "/whoami" => return Err(Failure::MethodNotAllowed),
        _ => portal::on_portal(portal, req),
    })
}

fn jwks(app: &App) -> Resp {
    let mut r = Resp::new(
        200,
        "application/json",
        serde_json::to_vec(&crate::identity::jwks(&app.keys)).unwrap_or_default(),
    );
    r.headers.push((
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    ));
    r
}

fn static_asset(name: &str) -> Resp {
    match STATIC.iter().find(|(n, _, _)| *n == name) {
        Some((_, ct, body)) => {
            let mut r = Resp::new(200, ct, Bytes::from_static(body.as_bytes()));
            r.headers.push((
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ));
            r.headers.push((
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ));
            r
        }
        None => Resp::new(404, "text/plain; charset=utf-8", "not found"),
    }
}
