//! Handlers of "Sign in with your phone": the asking browser's QR page, and
//! the page where a signed-in device opens (or types) its code, sees who
//! asked and approves with the asking browser's number. The asking browser
//! waits and collects through `/login/wait` and `/login/continue` (in
//! `signin.rs`), as for an approval from the email.

use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};
use serde::Serialize;

use super::account::to_login;
use super::error::{Failure, Result};
use super::signin::{current_session, decided_page, Decisions};
use super::{Req, Resp};
use crate::app::App;
use crate::session::cookies::{self, CookieScope};
use crate::signin::cross_device::{self, Asker, Status};
use crate::signin::device::{Requested, REQUEST_SECS};
use crate::signin::SignInError;

/// The pending cookie's text for a phone request: `qr:ID:CODE`. An email
/// sign-in's is its bare id (base64url: never a colon).
pub(super) fn sealed_text(r: &Requested) -> String {
    format!("qr:{}:{}", r.id, r.user_code)
}

/// A phone request out of the pending cookie's text.
pub(super) fn from_text(plain: &str) -> Option<Requested> {
    let (id, user_code) = plain.strip_prefix("qr:")?.split_once(':')?;
    Some(Requested {
        id: id.to_string(),
        user_code: user_code.to_string(),
    })
}

#[derive(Serialize)]
struct PhonePage<'a> {
    site_name: &'a str,
    qr: &'a str,
    device_url: &'a str,
    user_code: &'a str,
    number: u8,
    ttl_secs: i64,
    minutes: i64,
    rd: &'a str,
    refresh: u64,
}

#[derive(Serialize)]
struct DevicePage<'a> {
    site_name: &'a str,
    email: &'a str,
    /// The code as typed (enter mode: none yet, or not found).
    code: &'a str,
    error: Option<&'a str>,
    /// Decide mode: who asked.
    asking: Option<Asking<'a>>,
}

#[derive(Serialize)]
struct Asking<'a> {
    agent: &'a str,
    net: &'a str,
    ago: &'a str,
    /// For the device grant: the program's name (it shows no number: its
    /// code, typed or scanned here, is the match).
    program: Option<&'a str>,
    /// A passkey sign-in is needed first (`here`: to come back to).
    needs_passkey: bool,
    here: &'a str,
}

/// The QR code of `url`, as an SVG element that scales with the page.
fn qr_svg(url: &str) -> String {
    match QrCode::with_error_correction_level(url.as_bytes(), EcLevel::M) {
        Ok(code) => code
            .render::<svg::Color>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .dark_color(svg::Color("#000000"))
            .light_color(svg::Color("#ffffff"))
            .build()
            // The XML declaration is not allowed inside HTML.
            .split_once("?>")
            .map(|(_, svg)| svg.trim().to_string())
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// POST /login/phone: ask to be signed in by a signed-in phone; the QR page
/// (by a redirect, so that reloading it asks nothing new).
pub async fn ask(app: &App, req: &Req<'_>) -> Result {
    if !req.same_origin() {
        return Err(Failure::CrossSite);
    }
    let rd = crate::return_to::ReturnTo::parse(
        &req.form_param("rd").unwrap_or_default(),
        &req.site.site,
        &app.return_sites,
    );
    let asker = Asker::of(
        req.headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
        req.client_ip,
    );
    let requested = app
        .sign_in()
        .ask_by_phone(&req.site.site, rd.as_str(), asker)
        .await?;
    let sealed = app
        .keys
        .seal_cookie(&req.site.pending_seal, &sealed_text(&requested));
    let cookie = cookies::set(
        &req.site.site,
        &req.site.pending_cookie,
        &sealed,
        // An approval near the end is still collected.
        REQUEST_SECS + cross_device::COLLECT_SECS,
        CookieScope::HostOnly,
    );
    Ok(Resp::redirect(303, "/.sesame/login/phone").cookie(cookie))
}

/// The QR page of the request `r`, while it waits.
pub(super) fn phone_page(app: &App, req: &Req, r: &Requested, return_to: &str) -> Resp {
    let site = &req.site.site;
    let device_url = site.sesame_url("/device", &[("code", &r.user_code)]);
    let html = app.pages.render(
        "phone.html",
        &PhonePage {
            site_name: &site.name,
            qr: &qr_svg(&device_url),
            device_url: &site.sesame_url("/device", &[]),
            user_code: &r.user_code,
            number: cross_device::number(&app.keys, &r.id),
            ttl_secs: REQUEST_SECS,
            minutes: REQUEST_SECS / 60,
            rd: return_to,
            refresh: super::signin::REFRESH_SECS,
        },
    );
    Resp::page(app, 200, html)
}

/// GET /login/phone: the QR page of this browser's request.
pub async fn phone(app: &App, req: &Req<'_>) -> Result {
    let requested = match super::signin::asked(app, req).await {
        Some(super::signin::Asked::Phone(r)) => r,
        _ => return Err(SignInError::RequestUnknown.into()),
    };
    match app
        .sign_in()
        .request_status(&req.site.site, &requested.id)
        .await?
    {
        (Status::Waiting, Some(r)) => Ok(phone_page(app, req, &requested, &r.return_to)),
        (Status::Approved, _) => Ok(Resp::redirect(303, "/.sesame/login/continue")),
        (Status::Cancelled(d), _) => Err(SignInError::Cancelled(d).into()),
        (Status::Used, _) => Err(SignInError::LinkUsed.into()),
        _ => Err(SignInError::RequestUnknown.into()),
    }
}

/// GET /device[?code=]: a signed-in device opens a QR code (or types its
/// code): who asked, and the numbers to pick from.
pub async fn device_page(app: &App, req: &Req<'_>) -> Result {
    let Some((_, live)) = current_session(app, req).await else {
        return Ok(to_login(req));
    };
    let site = &req.site.site;
    let email = live.record.email.as_str();
    let code = req.query_param("code").unwrap_or_default();
    let render = |error: Option<&str>, asking: Option<Asking>, status: u16| {
        let html = app.pages.render(
            "device.html",
            &DevicePage {
                site_name: &site.name,
                email,
                code: &code,
                error,
                asking,
            },
        );
        Resp::page(app, status, html).no_referrer()
    };
    let enter = |error: Option<&str>, status: u16| render(error, None, status);
    if code.is_empty() {
        return Ok(enter(None, 200));
    }
    let sign_in = app.sign_in();
    let d = match sign_in.request_for_code(site, &code).await {
        Ok(d) => d,
        Err(SignInError::RequestUnknown) => {
            return Ok(enter(
                Some("That code does not work: it may be mistyped, or older than 5 minutes. Check the code on the other screen."),
                404,
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let here = site.sesame_url("/device", &[("code", &code)]);
    let needs_passkey = !sign_in.may_approve(&live.record).await?;
    let program = match (d.request.kind, &d.request.client_id, &app.oidc) {
        (crate::store::RequestKind::Device, Some(id), Some(oidc)) => {
            oidc.client(id).map(|c| c.name.as_str())
        }
        _ => None,
    };
    let asking = Asking {
        program,
        agent: &d.asker.agent,
        net: &d.asker.net,
        ago: &d.asked_ago,
        needs_passkey,
        here: &here,
    };
    Ok(render(None, Some(asking), 200))
}

/// POST /device/approve (code, number) and /device/deny (code): decide a
/// request as the signed-in person of this session.
pub async fn decide(app: &App, req: &Req<'_>, approve: bool) -> Result {
    if !req.same_origin() {
        return Err(Failure::CrossSite);
    }
    let Some((_, live)) = current_session(app, req).await else {
        return Ok(to_login(req));
    };
    let code = req.form_param("code").unwrap_or_default();
    let sign_in = app.sign_in();
    let decided = if approve {
        let number = req.form_param("number").unwrap_or_default();
        sign_in
            .approve_request(&req.site.site, &code, &number, &live.record)
            .await?
    } else {
        sign_in
            .deny_request(&req.site.site, &code, &live.record)
            .await?
    };
    Ok(decided_page(app, req, decided, &DECISIONS))
}

/// What the approving device is told.
const DECISIONS: Decisions = [
    (
        "Sign-in approved",
        "The other device continues by itself in a moment, signed in as you.",
    ),
    (
        "Sign-in cancelled",
        "That was not the number the other device shows, so the sign-in was cancelled. If it was you, start again there.",
    ),
    ("Sign-in cancelled", "Nobody was signed in with your account."),
];
