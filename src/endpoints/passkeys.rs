//! JSON endpoints of passkeys (`/passkey/*`, `/api/passkeys`) and of the
//! person's sessions (`/api/sessions`). The ceremonies themselves are in
//! `passkey/`.

use http::Method;
use serde::Deserialize;
use serde_json::json;

use super::error::{Failure, Result};
use super::signin::{current_session, session_response};
use super::{Req, Resp};
use crate::app::App;
use crate::email::Email;
use crate::magic_link::Code;
use crate::metrics::LimitKind;
use crate::passkey::guard::{self, Change, CodeRefused};
use crate::passkey::{self, PasskeyError};
use crate::return_to::ReturnTo;
use crate::session::cookies::CookieScope;
use crate::session::{cookies, LiveSession};
use crate::store::PasskeyRecord;

fn view(p: &PasskeyRecord) -> serde_json::Value {
    json!({
        "id": p.id,
        "name": p.name,
        "created_at": p.created_at,
        "last_used_at": p.last_used_at,
        "backup_eligible": p.backup_eligible,
        "backed_up": p.backup_state,
        "kind": if p.backup_eligible { "synced" } else { "device-bound" },
    })
}

/// The proof cookie of this request, opened.
async fn proof(app: &App, req: &Req<'_>) -> Option<String> {
    let value = req.cookie(&req.site.proof_cookie)?;
    app.open_cookie(&req.site.proof_seal, value).await
}

/// Has this session typed a code emailed to change passkeys, lately?
async fn code_proved(app: &App, req: &Req<'_>, live: &LiveSession) -> bool {
    guard::code_proved(&app.ceremonies(), proof(app, req).await.as_deref(), live)
}

fn proof_cookie(app: &App, req: &Req, plain: &str) -> String {
    let sealed = app.keys.seal_cookie(&req.site.proof_seal, plain);
    cookies::set(
        &req.site.site,
        &req.site.proof_cookie,
        &sealed,
        guard::PROOF_SECS,
        CookieScope::HostOnly,
    )
}

/// POST /passkey/register/start
pub async fn register_start(app: &App, req: &Req<'_>) -> Result {
    if !req.same_origin() {
        return Err(Failure::CrossSite);
    }
    let Some((_, live)) = current_session(app, req).await else {
        return Err(PasskeyError::NotSignedIn.into());
    };
    let proved = code_proved(app, req, &live).await;
    match passkey::register_start(&app.ceremonies(), req.site_id, &live, proved).await {
        Ok(ccr) => Ok(Resp::json(200, &ccr)),
        Err(e) => {
            app.metrics
                .passkey_registrations
                .with_label_values(&["refused_start"])
                .inc();
            tracing::info!(target: "sesame::audit", event = "passkey_register_refused", email = %live.record.email, reason = %e);
            Err(e.into())
        }
    }
}

/// POST /passkey/register/finish
pub async fn register_finish(app: &App, req: &Req<'_>) -> Result {
    if !req.same_origin() {
        return Err(Failure::CrossSite);
    }
    let Some((_, live)) = current_session(app, req).await else {
        return Err(PasskeyError::NotSignedIn.into());
    };
    match passkey::register_finish(&app.ceremonies(), req.site_id, &live, &req.body).await {
        Ok(record) => {
            app.metrics
                .passkey_registrations
                .with_label_values(&["ok"])
                .inc();
            tracing::info!(target: "sesame::audit", event = "passkey_registered", email = %live.record.email, passkey = %record.id, name = %record.name);
            guard::notify(
                &app.ceremonies(),
                &req.site.site,
                &live,
                Change::Added,
                &record.name,
                req.headers,
                req.client_ip,
            );
            Ok(Resp::json(201, &view(&record)))
        }
        Err(e) => {
            app.metrics
                .passkey_registrations
                .with_label_values(&["refused"])
                .inc();
            tracing::info!(target: "sesame::audit", event = "passkey_register_refused", email = %live.record.email, reason = %e);
            Err(e.into())
        }
    }
}

#[derive(Deserialize, Default)]
struct LoginStart {
    email: Option<String>,
    rd: Option<String>,
}

/// POST /passkey/login/start `{"email"?, "rd"?}`
pub async fn login_start(app: &App, req: &Req<'_>) -> Result {
    if !req.same_origin() {
        return Err(Failure::CrossSite);
    }
    let body: LoginStart = if req.body.is_empty() {
        LoginStart::default()
    } else {
        match serde_json::from_slice(&req.body) {
            Ok(b) => b,
            Err(e) => {
                return Err(PasskeyError::BadRequest(format!(
                    "expected {{\"email\"?, \"rd\"?}}: {e}"
                ))
                .into())
            }
        }
    };
    let email = match body
        .email
        .as_deref()
        .filter(|e| !e.trim().is_empty())
        .map(Email::parse)
        .transpose()
    {
        Ok(e) => e,
        Err(e) => return Err(PasskeyError::BadRequest(e.to_string()).into()),
    };
    let rd = ReturnTo::parse(
        body.rd.as_deref().unwrap_or(""),
        &req.site.site,
        &app.return_sites,
    );
    let rcr = passkey::login_start(&app.ceremonies(), req.site_id, email, rd).await?;
    Ok(Resp::json(200, &rcr))
}

/// POST /passkey/login/finish: 200 `{"redirect": URL}` and the session cookie.
pub async fn login_finish(app: &App, req: &Req<'_>) -> Result {
    if !req.same_origin() {
        return Err(Failure::CrossSite);
    }
    let mut cx = app.ceremonies();
    cx.sign_in = cx.sign_in.with_device(req.device());
    match passkey::login_finish(&cx, &req.site.site, req.site_id, &req.body).await {
        Ok(done) => {
            app.metrics
                .passkey_authentications
                .with_label_values(&["ok"])
                .inc();
            let to = done.return_to.clone();
            let u = &done.user;
            let signal = passkey::signal(&app.ceremonies(), &u.id, &u.email, u.name.as_deref())
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "no passkey signal after a sign-in");
                    None
                });
            let browser = super::signin::note_browser(app, req, &done.user).await;
            let mut r = session_response(app, req, &done.session, &to);
            if let Some(cookie) = browser {
                r = r.cookie(cookie);
            }
            r.status = 200;
            r.body = serde_json::to_vec(&json!({"redirect": to, "signal": signal}))
                .unwrap_or_default()
                .into();
            r.headers
                .retain(|(k, _)| k != http::header::LOCATION && k != http::header::CONTENT_TYPE);
            r.headers.push((
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            ));
            Ok(r)
        }
        Err(e) => {
            let result = match &e {
                PasskeyError::Refused(_) | PasskeyError::UnknownCredential { .. } => "refused",
                PasskeyError::BadRequest(_) => "bad_request",
                _ => "error",
            };
            app.metrics
                .passkey_authentications
                .with_label_values(&[result])
                .inc();
            tracing::info!(target: "sesame::audit", event = "passkey_login_refused", client = %req.client_ip, reason = %e);
            Err(e.into())
        }
    }
}

#[derive(Deserialize)]
struct Rename {
    name: String,
}

/// GET /api/passkeys, PATCH and DELETE /api/passkeys/{id}
pub async fn api_passkeys(app: &App, req: &Req<'_>, id: Option<&str>) -> Result {
    if *req.method != Method::GET && !req.same_origin() {
        return Err(Failure::CrossSite);
    }
    let Some((_, live)) = current_session(app, req).await else {
        return Err(PasskeyError::NotSignedIn.into());
    };
    let user = &live.record.user_id;
    match (req.method.clone(), id) {
        (Method::GET, None) => {
            let list: Vec<_> = app
                .store
                .passkeys_of(user)
                .await?
                .iter()
                .map(view)
                .collect();
            Ok(Resp::json(200, &list))
        }
        (Method::PATCH, Some(id)) => {
            let body: Rename = serde_json::from_slice(&req.body).map_err(|e| {
                PasskeyError::BadRequest(format!("expected {{\"name\": ...}}: {e}"))
            })?;
            let name = body.name.trim();
            if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
                return Err(PasskeyError::BadRequest(
                    "a name has 1 to 64 characters and no control characters".into(),
                )
                .into());
            }
            if !app.store.rename_passkey(user, id, name).await? {
                return Err(PasskeyError::NotFound.into());
            }
            let record = app.store.passkey(id).await?.ok_or(PasskeyError::NotFound)?;
            Ok(Resp::json(200, &view(&record)))
        }
        (Method::DELETE, Some(id)) => {
            let name = match app.store.passkey(id).await? {
                Some(p) if p.user_id == *user => p.name,
                _ => return Err(PasskeyError::NotFound.into()),
            };
            // Deleting needs the same proof as adding: else an email
            // session could delete every passkey and then add its own
            // as the "first".
            guard::may_change(
                &app.ceremonies(),
                &live,
                true,
                code_proved(app, req, &live).await,
            )?;
            if !app.store.delete_passkey(user, id).await? {
                return Err(PasskeyError::NotFound.into());
            }
            tracing::info!(target: "sesame::audit", event = "passkey_deleted", email = %live.record.email, passkey = %id);
            guard::notify(
                &app.ceremonies(),
                &req.site.site,
                &live,
                Change::Deleted,
                &name,
                req.headers,
                req.client_ip,
            );
            Ok(Resp::new(204, "application/json", ""))
        }
        _ => Err(Failure::MethodNotAllowed),
    }
}

/// GET /api/sessions; DELETE /api/sessions signs out everywhere else.
pub async fn api_sessions(app: &App, req: &Req<'_>, one: Option<&str>) -> Result {
    if *req.method != Method::GET && !req.same_origin() {
        return Err(Failure::CrossSite);
    }
    let Some((_, live)) = current_session(app, req).await else {
        return Err(PasskeyError::NotSignedIn.into());
    };
    let me = &live.record;
    let sessions = app
        .store
        .list_sessions(Some(&me.email), app.clock.now())
        .await?;
    if let Some(id) = one {
        return sign_out_one(app, req, &live, &sessions, id).await;
    }
    match *req.method {
        Method::GET => {
            let list: Vec<_> = sessions
                .iter()
                .map(|s| {
                    json!({
                        "id": &s.id_hash[..16],
                        "browser": s.device.as_ref().map(|d| &d.agent),
                        "client": s.device.as_ref().map(|d| &d.client),
                        "auth_method": s.auth_method.as_str(),
                        "created_at": s.created_at,
                        "last_seen": s.last_seen,
                        "expires_at": s.expires_at,
                        "current": s.id_hash == me.id_hash,
                    })
                })
                .collect();
            Ok(Resp::json(200, &list))
        }
        Method::DELETE => {
            let mut ended = 0;
            for s in sessions.iter().filter(|s| s.id_hash != me.id_hash) {
                if app
                    .store
                    .revoke_session(&s.id_hash, app.clock.now())
                    .await?
                {
                    ended += 1;
                }
                app.sessions
                    .invalidate(&crate::store::Invalidation::Session(s.id_hash.to_string()));
            }
            app.metrics.sessions_revoked.inc_by(ended);
            tracing::info!(target: "sesame::audit", event = "sessions_revoked", email = %me.email, count = ended, reason = "sign_out_elsewhere");
            Ok(Resp::json(200, &json!({"revoked": ended})))
        }
        _ => Err(Failure::MethodNotAllowed),
    }
}

/// DELETE /api/sessions/ID: sign out one of the person's other sessions
/// (`id`: the start of its hash, as listed). Their own is signed out with
/// `/logout`, which also clears its cookie.
async fn sign_out_one(
    app: &App,
    req: &Req<'_>,
    live: &crate::session::LiveSession,
    sessions: &[crate::store::SessionRecord],
    id: &str,
) -> Result {
    if *req.method != Method::DELETE {
        return Err(Failure::MethodNotAllowed);
    }
    let me = &live.record;
    // Only the person's own sessions are listed: another's is not found.
    let Some(s) = sessions
        .iter()
        .find(|s| id.len() == 16 && s.id_hash.starts_with(id))
    else {
        return Ok(Resp::json(
            404,
            &json!({"error": "no_such_session", "message": "no session of yours has this id (it may have ended)"}),
        ));
    };
    if s.id_hash == me.id_hash {
        return Ok(Resp::json(
            409,
            &json!({"error": "current_session", "message": "this is the session making the request: sign out with POST /.sesame/logout"}),
        ));
    }
    if app
        .store
        .revoke_session(&s.id_hash, app.clock.now())
        .await?
    {
        app.metrics.sessions_revoked.inc();
    }
    app.sessions
        .invalidate(&crate::store::Invalidation::Session(s.id_hash.to_string()));
    tracing::info!(target: "sesame::audit", event = "sessions_revoked", email = %me.email, count = 1,
        session = id, reason = "signed_out_from_account");
    Ok(Resp::json(200, &json!({"revoked": 1})))
}

/// POST /passkey/proof/start: email a code that proves the account holder
/// for passkey changes in this session.
pub async fn proof_start(app: &App, req: &Req<'_>) -> Result {
    if !req.same_origin() {
        return Err(Failure::CrossSite);
    }
    let Some((_, live)) = current_session(app, req).await else {
        return Err(PasskeyError::NotSignedIn.into());
    };
    if let Err(retry_after) = app.email_limit.hit(live.record.email.as_str()).await? {
        app.metrics.limited(LimitKind::Email);
        return Err(Failure::Limited {
            kind: LimitKind::Email,
            retry_after,
        });
    }
    let plain = guard::send_code(&app.ceremonies(), &req.site.site, &live).await?;
    Ok(Resp::json(200, &json!({"sent": true})).cookie(proof_cookie(app, req, &plain)))
}

#[derive(Deserialize)]
struct ProofCode {
    code: String,
}

/// POST /passkey/proof/finish `{"code"}`: 200 and a proof for 15 minutes,
/// or 400 `wrong_code` (with `attempts_left`), 410 `code_gone`, 409
/// `code_not_asked`.
pub async fn proof_finish(app: &App, req: &Req<'_>) -> Result {
    if !req.same_origin() {
        return Err(Failure::CrossSite);
    }
    let Some((_, live)) = current_session(app, req).await else {
        return Err(PasskeyError::NotSignedIn.into());
    };
    let Some(code) = serde_json::from_slice::<ProofCode>(&req.body)
        .ok()
        .and_then(|c| Code::parse(&c.code))
    else {
        return Err(PasskeyError::BadRequest("expected {\"code\": \"six digits\"}".into()).into());
    };
    let plain = proof(app, req).await;
    match guard::confirm_code(&app.ceremonies(), plain.as_deref(), &live, &code).await {
        Ok(Ok(proved)) => {
            Ok(Resp::json(200, &json!({"proved": true})).cookie(proof_cookie(app, req, &proved)))
        }
        Ok(Err(CodeRefused::Wrong { left })) => Ok(Resp::json(
            400,
            &json!({"error": "wrong_code", "attempts_left": left, "message": format!("That code is not right. {left} attempt(s) left.")}),
        )),
        Ok(Err(CodeRefused::Gone)) => Ok(Resp::json(
            410,
            &json!({"error": "code_gone", "message": "This code no longer works. Ask for a new one."}),
        )),
        Ok(Err(CodeRefused::NotAsked)) => Ok(Resp::json(
            409,
            &json!({"error": "code_not_asked", "message": "Ask for a code first, in this browser."}),
        )),
        Err(e) => Err(e.into()),
    }
}
