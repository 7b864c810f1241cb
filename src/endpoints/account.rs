//! Pages for a signed-in person: the account page (passkeys, sessions), the
//! one-time offer to add a passkey after an email sign-in, and the step-up
//! page of sites that require a passkey. The JSON behind them is in
//! `passkeys.rs`; the ceremonies run in `core/assets/static/passkey.js`.

use serde::Serialize;

use super::error::Result;
use super::signin::current_session;
use super::{Req, Resp};
use crate::app::App;
use crate::passkey::RECENT_SIGN_IN_SECS;
use crate::return_to::ReturnTo;
use crate::store::AuthMethod;

/// `2026-11-27 14:05 UTC`
pub(super) fn when(t: i64) -> String {
    match cookie::time::OffsetDateTime::from_unix_timestamp(t) {
        Ok(d) => format!(
            "{}-{:02}-{:02} {:02}:{:02} UTC",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute()
        ),
        Err(_) => "-".to_string(),
    }
}

fn method_name(m: AuthMethod) -> &'static str {
    match m {
        AuthMethod::MagicLink => "email link",
        AuthMethod::Code => "email code",
        AuthMethod::Passkey => "passkey",
    }
}

/// Not signed in: to the login page, coming back here afterwards.
pub(super) fn to_login(req: &Req) -> Resp {
    let site = &req.site.site;
    let here = match req.query {
        "" => site.sesame_url(req.path, &[]),
        q => format!("{}?{q}", site.sesame_url(req.path, &[])),
    };
    Resp::redirect(302, &site.sesame_url("/login", &[("rd", &here)]))
}

#[derive(Serialize)]
struct PasskeyRow {
    id: String,
    name: String,
    kind: &'static str,
    created: String,
    last_used: Option<String>,
}

#[derive(Serialize)]
struct SessionRow {
    /// What `/api/sessions/ID` names it by (the start of its hash).
    id: String,
    /// "Firefox on Linux"; `None` for a session from before Sesame kept it.
    agent: Option<String>,
    client: Option<String>,
    method: &'static str,
    created: String,
    last_seen: String,
    current: bool,
}

#[derive(Serialize)]
struct AccountPage<'a> {
    site_name: &'a str,
    email: &'a str,
    method: &'static str,
    passkeys_available: bool,
    passkeys: Vec<PasskeyRow>,
    sessions: Vec<SessionRow>,
    /// JSON for the WebAuthn Signal API calls of the page, if any.
    signal: Option<String>,
}

/// GET /account
pub async fn account_page(app: &App, req: &Req<'_>) -> Result {
    let Some((_, live)) = current_session(app, req).await else {
        return Ok(to_login(req));
    };
    let me = &live.record;
    let passkeys = app.store.passkeys_of(&me.user_id).await?;
    let sessions = app
        .store
        .list_sessions(Some(&me.email), app.clock.now())
        .await?;
    let signal = match passkeys.is_empty() {
        true => None,
        false => crate::passkey::signal(
            &app.ceremonies(),
            &me.user_id,
            &me.email,
            me.name.as_deref(),
        )
        .await
        .ok()
        .flatten()
        .map(|v| v.to_string()),
    };
    let html = app.pages.render(
        "account.html",
        &AccountPage {
            signal,
            site_name: &req.site.site.name,
            email: me.email.as_str(),
            method: method_name(me.auth_method),
            passkeys_available: app.passkeys.available(req.site_id),
            passkeys: passkeys
                .iter()
                .map(|p| PasskeyRow {
                    id: p.id.to_string(),
                    name: p.name.clone(),
                    kind: if p.backup_eligible {
                        "synced"
                    } else {
                        "device-bound"
                    },
                    created: when(p.created_at),
                    last_used: p.last_used_at.map(when),
                })
                .collect(),
            // Sessions a site made from a portal session end with it:
            // the list shows the sign-ins.
            sessions: sessions
                .iter()
                .filter(|s| s.parent.is_none())
                .map(|s| SessionRow {
                    id: s.id_hash[..16].to_string(),
                    agent: s.device.as_ref().map(|d| d.agent.clone()),
                    client: s.device.as_ref().map(|d| d.client.clone()),
                    method: method_name(s.auth_method),
                    created: when(s.created_at),
                    last_seen: when(s.last_seen),
                    current: s.id_hash == me.id_hash,
                })
                .collect(),
        },
    );
    Ok(Resp::page(app, 200, html))
}

#[derive(Serialize)]
struct OfferPage<'a> {
    site_name: &'a str,
    email: &'a str,
    rd: &'a str,
}

/// GET /passkey/offer?rd=: "Sign in faster next time".
pub async fn offer_page(app: &App, req: &Req<'_>) -> Resp {
    let Some((_, live)) = current_session(app, req).await else {
        return to_login(req);
    };
    let rd = ReturnTo::parse(
        &req.query_param("rd").unwrap_or_default(),
        &req.site.site,
        &app.return_sites,
    );
    let html = app.pages.render(
        "passkey_offer.html",
        &OfferPage {
            site_name: &req.site.site.name,
            email: live.record.email.as_str(),
            rd: rd.as_str(),
        },
    );
    Resp::page(app, 200, html)
}

#[derive(Serialize)]
struct StepUpPage<'a> {
    site_name: &'a str,
    email: &'a str,
    rd: &'a str,
    has_passkey: bool,
    recent: bool,
}

/// GET /stepup?rd=: a site that requires a passkey, reached by another kind
/// of session.
pub async fn stepup_page(app: &App, req: &Req<'_>) -> Result {
    let Some((_, live)) = current_session(app, req).await else {
        return Ok(to_login(req));
    };
    let rd = ReturnTo::parse(
        &req.query_param("rd").unwrap_or_default(),
        &req.site.site,
        &app.return_sites,
    );
    let has_passkey = !app
        .store
        .passkeys_of(&live.record.user_id)
        .await?
        .is_empty();
    let html = app.pages.render(
        "stepup.html",
        &StepUpPage {
            site_name: &req.site.site.name,
            email: live.record.email.as_str(),
            rd: rd.as_str(),
            has_passkey,
            recent: app.clock.now() - live.record.created_at <= RECENT_SIGN_IN_SECS,
        },
    );
    Ok(Resp::page(app, 200, html))
}
