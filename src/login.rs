//! Signing in, apart from HTTP: who may ask for a link, issuing a link and
//! code (in the background, so a response never depends on who asked), and
//! turning a consumed link or code into a session.

use std::sync::Arc;

use crate::app::{App, SiteRt};
use crate::config::Signup;
use crate::email::Email;
use crate::keys::random_id;
use crate::magic_link::{code_mac, compose, token, Code};
use crate::return_to::ReturnTo;
use crate::session::NewSession;
use crate::store::{AuthMethod, PendingLogin, StoreError, StoreResult, User};

/// May this address sign in (an enabled user, or admitted by the signup policy)?
pub async fn may_sign_in(app: &App, email: &Email) -> StoreResult<bool> {
    Ok(match app.store.user_by_email(email).await? {
        Some(u) => !u.disabled,
        None => signup_admits(&app.config.signup, email),
    })
}

fn signup_admits(signup: &Signup, email: &Email) -> bool {
    match signup {
        Signup::Closed => false,
        Signup::Open => true,
        Signup::Domains(d) => d.iter().any(|d| d == email.domain()),
    }
}

/// Issue a link and code for `email` if it may sign in, and queue the email.
/// Runs after the response has gone out; nothing here reaches the asker.
pub async fn issue_link(
    app: Arc<App>,
    site_index: usize,
    email: Email,
    return_to: ReturnTo,
    pending_id: String,
) {
    let site = &app.sites[site_index];
    let allowed = match may_sign_in(&app, &email).await {
        Ok(allowed) => allowed,
        Err(e) => {
            tracing::error!(error = %e, "could not decide who may sign in; no link sent");
            return;
        }
    };
    let now = app.clock.now();
    let ttl = app.config.magic_link.ttl.as_secs() as i64;
    let code = Code::generate();
    let mut pending = PendingLogin {
        id: pending_id.clone(),
        email: email.clone(),
        site: site.site.name.clone(),
        return_to: return_to.as_str().to_string(),
        code_mac: code_mac(&app.keys, &pending_id, &code),
        expires_at: now + ttl,
        attempts: 0,
        consumed: false,
    };
    if !allowed {
        // A decoy, never mailed, that no code matches (a random MAC): the
        // code form then answers as it does for an address that may sign
        // in ("not right, N attempts left", then "no longer works").
        pending.code_mac = decoy_mac();
        if let Err(e) = app.store.create_pending(&pending).await {
            tracing::warn!(error = %e, "could not store a decoy sign-in");
        }
        tracing::info!(target: "sesame::audit", event = "link_refused", site = %site.site.name, email = %email);
        return;
    }
    if let Err(e) = app.store.create_pending(&pending).await {
        tracing::error!(error = %e, "could not store a sign-in; no link sent");
        app.metrics.mail_failed.inc();
        return;
    }
    let claims = token::Claims {
        jti: pending_id.clone(),
        sub: email.as_str().to_string(),
        aud: site.site.origin.clone(),
        iat: now,
        exp: now + ttl,
    };
    let token = token::mint(&app.keys, &claims);
    let link = link_for(&site.site.public_url, &token.0);
    let mail = compose(
        &app.pages,
        &email,
        &site.site.name,
        &link,
        &code,
        (ttl as u64).div_ceil(60),
    );
    if app.outbox.enqueue(mail, &app.metrics) {
        tracing::info!(target: "sesame::audit", event = "link_issued", site = %site.site.name, email = %email, login = %pending_id);
    }
}

/// A code MAC that no code has: 32 random bytes, the length of a real one.
fn decoy_mac() -> Vec<u8> {
    use rand::RngCore;
    let mut mac = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut mac);
    mac
}

/// The confirm-page URL, always built from the site's configured public URL.
fn link_for(public_url: &url::Url, token: &str) -> String {
    let mut url = public_url.clone();
    url.set_path("/.sesame/magic");
    url.query_pairs_mut().clear().append_pair("token", token);
    url.to_string()
}

#[derive(Debug)]
pub enum FinishError {
    /// The user was removed or disabled, or the signup policy no longer admits them.
    NotAllowed,
    Store(StoreError),
}

impl From<StoreError> for FinishError {
    fn from(e: StoreError) -> Self {
        FinishError::Store(e)
    }
}

/// Turn a consumed pending login into a new session for its user, creating
/// the user on first sign-in where the signup policy allows.
pub async fn finish(
    app: &App,
    site: &SiteRt,
    pending: &PendingLogin,
    method: AuthMethod,
) -> Result<(NewSession, User), FinishError> {
    let user = match app.store.user_by_email(&pending.email).await? {
        Some(u) if u.disabled => return Err(FinishError::NotAllowed),
        Some(u) => u,
        None if signup_admits(&app.config.signup, &pending.email) => {
            let user = User {
                id: format!("u_{}", random_id(12)),
                email: pending.email.clone(),
                name: None,
                groups: vec![],
                disabled: false,
                created_at: app.clock.now(),
            };
            match app.store.add_user(&user).await {
                Ok(()) => user,
                // Created by a parallel sign-in: use that one.
                Err(StoreError::Exists) => app
                    .store
                    .user_by_email(&pending.email)
                    .await?
                    .ok_or(FinishError::NotAllowed)?,
                Err(e) => return Err(e.into()),
            }
        }
        None => return Err(FinishError::NotAllowed),
    };
    let Some(session) = app.sessions.create(&user, method).await? else {
        return Err(FinishError::NotAllowed);
    };
    app.metrics.sessions_created.inc();
    tracing::info!(
        target: "sesame::audit",
        event = "session_created",
        site = %site.site.name,
        email = %user.email,
        method = method.as_str(),
        login = %pending.id,
        session = &session.record.id_hash[..16],
    );
    Ok((session, user))
}

/// A fresh id for a pending login (also the token's `jti`).
pub fn new_pending_id() -> String {
    random_id(18)
}
