//! Sign-in by email, as a service apart from HTTP: asking for a link and
//! code, issuing them, opening the confirm page, consuming the link or the
//! code, and starting the session (the one place a session is started, for
//! passkey sign-ins too).
//!
//! Each step returns `Result<_, SignInError>`; what a refusal looks like to
//! a person (page, status) is decided in `endpoints/`, not here. The steps
//! count the `sesame_magic_link_verifications_total` results and write the
//! audit lines. Time comes from the clock, randomness from `keys`.

pub mod cross_device;
pub mod device;
pub mod pending;

use std::net::IpAddr;

use crate::clock::Clock;
use crate::config::{MagicLinkConfig, Signup, Site};
use crate::email::Email;
use crate::keys::{random_id, Keys};
use crate::magic_link::{code_mac, code_matches, compose, token, Code};
use crate::mail::Outbox;
use crate::metrics::{LimitKind, Metrics};
use crate::pages::Pages;
use crate::ratelimit::{client_key, RateLimiter};
use crate::return_to::ReturnTo;
use crate::session::{NewSession, Sessions};
use crate::store::{AuthMethod, Decision, DynStore, PendingId, PendingLogin, StoreError, User};
use cross_device::{Asker, Waiters};
use pending::PendingState;

/// Why a step of sign-in did not go through.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The link is damaged, forged, or for another site.
    #[error("the link is not valid")]
    LinkInvalid,
    #[error("the link has expired")]
    LinkExpired,
    /// The link was used already (or its sign-in is gone).
    #[error("the link was already used")]
    LinkUsed,
    /// No sign-in was asked for in this browser, or it was asked on another site.
    #[error("no sign-in was asked for here")]
    CodeElsewhere,
    #[error("not a six-digit code")]
    CodeMalformed,
    /// Not the code; the sign-in still takes `attempts_left` more.
    #[error("wrong code")]
    CodeWrong {
        attempts_left: u32,
        email: Email,
        return_to: String,
        /// The number the page shows for another device to approve with.
        number: u8,
    },
    /// Expired, used, or out of attempts.
    #[error("the code no longer works")]
    CodeGone,
    /// The user was removed or disabled, or signup no longer admits them.
    #[error("this address may not sign in")]
    NotAllowed,
    /// Cancelled on another device (a wrong number, or "this wasn't me").
    #[error("the sign-in was cancelled on another device")]
    Cancelled(Decision),
    /// No live request has this QR or device code here.
    #[error("the code is not valid or has expired")]
    RequestUnknown,
    /// This account approves other devices only from a session that signed
    /// in with its passkey lately.
    #[error("a fresh passkey sign-in is needed to approve")]
    PasskeyProofRequired,
    /// Over a rate limit; try again after `retry_after` seconds.
    #[error("rate limited ({}): retry after {retry_after} s", kind.label())]
    Limited { kind: LimitKind, retry_after: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SignInError {
    /// The `result` label this refusal counts under, if it counts.
    fn result(&self) -> Option<&'static str> {
        Some(match self {
            SignInError::LinkInvalid | SignInError::CodeMalformed => "invalid",
            SignInError::LinkExpired => "expired",
            SignInError::LinkUsed | SignInError::CodeGone => "gone",
            SignInError::CodeElsewhere => "no_pending",
            SignInError::CodeWrong { .. } => "wrong",
            SignInError::NotAllowed => "not_allowed",
            SignInError::Cancelled(_) => "gone",
            SignInError::RequestUnknown | SignInError::PasskeyProofRequired => return None,
            SignInError::Limited { .. } | SignInError::Store(_) => return None,
        })
    }
}

/// A person just signed in.
#[derive(Debug)]
pub struct SignedIn {
    pub session: NewSession,
    pub user: User,
    /// Where to send the browser (a URL of a configured site).
    pub return_to: String,
}

/// A link that may be confirmed: what its confirm page shows.
#[derive(Debug)]
pub struct Confirmable {
    /// The pending sign-in (also the token's `jti`).
    pub pending_id: PendingId,
    /// The address, masked (`a…@example.com`).
    pub masked_email: String,
    /// Who asked, for a device that did not: browser and OS, network.
    pub asker: Asker,
    /// When it was asked for ("3 minutes ago").
    pub asked_ago: String,
}

/// What a session was started by, for the audit line.
#[derive(Debug, Clone, Copy)]
pub enum StartedBy<'a> {
    /// A link or code of this pending sign-in.
    Login(&'a str),
    /// This passkey (its credential id).
    Passkey(&'a str),
    /// A request approved by a signed-in device (the start of its id).
    Request(&'a str),
}

/// The rate limits sign-in by email counts against.
pub struct Limits<'a> {
    /// Links asked for by one network address.
    pub client: &'a RateLimiter,
    /// Links asked for one address.
    pub email: &'a RateLimiter,
    /// Codes typed for one address in 24 hours.
    pub code: &'a RateLimiter,
}

/// What sign-in needs, borrowed (built per request by `App::sign_in`, or
/// from parts in tests).
pub struct SignIn<'a> {
    pub store: &'a DynStore,
    pub keys: &'a Keys,
    pub clock: &'a Clock,
    pub sessions: &'a Sessions,
    pub metrics: &'a Metrics,
    pub pages: &'a Pages,
    pub outbox: &'a Outbox,
    pub link: &'a MagicLinkConfig,
    pub signup: &'a Signup,
    pub limits: Limits<'a>,
    /// The asking browsers waiting here for another device's decision.
    pub waiters: &'a Waiters,
    /// The browser or program a session started here is signed in with
    /// (see [`SignIn::with_device`]); `None`: not known.
    pub device: Option<crate::store::Device>,
}

/// A fresh id for a pending sign-in (also the token's `jti`).
pub fn new_pending_id() -> PendingId {
    random_id(18).into()
}

impl SignIn<'_> {
    /// Sessions started here are signed in with `device`.
    pub fn with_device(self, device: crate::store::Device) -> Self {
        SignIn {
            device: Some(device),
            ..self
        }
    }

    /// The link's lifetime in whole minutes, as the pages and the email say it.
    pub fn ttl_minutes(&self) -> u64 {
        self.link.ttl.as_secs().div_ceil(60)
    }

    /// Ask for a link and code for `email` from `client`: counted against
    /// both rate limits; returns the id the sign-in will have. Nothing says
    /// whether the address may sign in: [`SignIn::issue`] decides that after
    /// the answer has gone out.
    pub async fn request(&self, email: &Email, client: IpAddr) -> Result<PendingId, SignInError> {
        if let Err(retry_after) = self.limits.client.hit(&client_key(client)).await? {
            return Err(self.limited(LimitKind::Client, retry_after));
        }
        if let Err(retry_after) = self.limits.email.hit(email.as_str()).await? {
            return Err(self.limited(LimitKind::Email, retry_after));
        }
        self.metrics.login_requests.inc();
        Ok(new_pending_id())
    }

    fn limited(&self, kind: LimitKind, retry_after: u64) -> SignInError {
        self.metrics.limited(kind);
        SignInError::Limited { kind, retry_after }
    }

    /// May this address sign in (an enabled user, or admitted by signup)?
    pub async fn may_sign_in(&self, email: &Email) -> Result<bool, StoreError> {
        Ok(match self.store.user_by_email(email).await? {
            Some(u) => !u.disabled,
            None => signup_admits(self.signup, email),
        })
    }

    /// Store the pending sign-in `pending_id` for `email` on `site` and mail
    /// its link and code, if the address may sign in; otherwise store a
    /// decoy no code matches, so the code form answers alike. Runs after the
    /// answer went out: nothing here reaches the asker.
    pub async fn issue(
        &self,
        site: &Site,
        email: Email,
        return_to: ReturnTo,
        pending_id: PendingId,
        asker: Asker,
    ) {
        let allowed = match self.may_sign_in(&email).await {
            Ok(allowed) => allowed,
            Err(e) => {
                tracing::error!(error = %e, "could not decide who may sign in; no link sent");
                return;
            }
        };
        let now = self.clock.now();
        let ttl = self.link.ttl.as_secs() as i64;
        let code = Code::generate();
        let requested_from = format!("{} (network {})", asker.agent, asker.net);
        let mut pending = PendingLogin {
            id: pending_id.clone(),
            email: email.clone(),
            site: site.name.clone(),
            return_to: return_to.as_str().to_string(),
            code_mac: code_mac(self.keys, &pending_id, &code),
            expires_at: now + ttl,
            attempts: 0,
            views: 0,
            consumed: false,
            created_at: now,
            asked_agent: asker.agent,
            asked_net: asker.net,
            decision: None,
            collected: false,
        };
        if !allowed {
            // A decoy, never mailed, that no code matches (a random MAC): the
            // code form then answers as it does for an address that may sign
            // in ("not right, N attempts left", then "no longer works").
            pending.code_mac = decoy_mac();
            if let Err(e) = self.store.create_pending(&pending).await {
                tracing::warn!(error = %e, "could not store a decoy sign-in");
            }
            tracing::info!(target: "sesame::audit", event = "link_refused", site = %site.name, email = %email);
            return;
        }
        if let Err(e) = self.store.create_pending(&pending).await {
            tracing::error!(error = %e, "could not store a sign-in; no link sent");
            self.metrics.mail_failed.inc();
            return;
        }
        let claims = token::Claims {
            jti: pending_id.to_string(),
            sub: email.as_str().to_string(),
            aud: site.origin.clone(),
            iat: now,
            exp: now + ttl,
        };
        let token = token::mint(self.keys, &claims);
        let link = site.sesame_url("/magic", &[("token", &token.0)]);
        let mail = compose(
            self.pages,
            &email,
            &site.name,
            &link,
            &code,
            self.ttl_minutes(),
            &requested_from,
        );
        if self.outbox.enqueue(mail, self.metrics) {
            tracing::info!(target: "sesame::audit", event = "link_issued", site = %site.name, email = %email, login = %pending_id);
        }
    }

    /// Verify a link for `site`, loading its key first if this instance has
    /// not seen it (rotated on another).
    async fn verify_link(&self, site: &Site, raw: &str) -> Result<token::Claims, SignInError> {
        if !self.keys.knows_link_kid(raw) {
            self.keys
                .reload_for_unknown(self.store, self.clock.now())
                .await;
        }
        token::verify(self.keys, raw, &site.origin, self.clock.now()).map_err(|e| match e {
            token::TokenError::Invalid => SignInError::LinkInvalid,
            token::TokenError::Expired(_) => SignInError::LinkExpired,
        })
    }

    /// The confirm page of a link was opened: counted (`viewed`), never
    /// consumed, so a mail scanner that follows links signs nobody in.
    pub async fn confirm(&self, site: &Site, raw: &str) -> Result<Confirmable, SignInError> {
        let result = async {
            let claims = self.verify_link(site, raw).await?;
            let now = self.clock.now();
            let p = match self.store.view_pending(&claims.jti).await? {
                Some(p) if PendingState::of(&p, now, u32::MAX).link_works() => p,
                Some(PendingLogin {
                    decision: Some(d @ (Decision::WrongNumber | Decision::Denied)),
                    ..
                }) => return Err(SignInError::Cancelled(d)),
                _ => return Err(SignInError::LinkUsed),
            };
            self.metrics.confirm_views.inc();
            Ok(Confirmable {
                masked_email: Email::parse(&claims.sub)
                    .map(|e| e.masked())
                    .unwrap_or_default(),
                asker: Asker {
                    agent: p.asked_agent,
                    net: p.asked_net,
                },
                asked_ago: cross_device::ago(now - p.created_at),
                pending_id: claims.jti.into(),
            })
        }
        .await;
        if let Err(e) = &result {
            self.count(AuthMethod::MagicLink, e.result());
        }
        result
    }

    /// Use a link: its sign-in is consumed (exactly once, across
    /// instances) and a session started.
    pub async fn consume_link(&self, site: &Site, raw: &str) -> Result<SignedIn, SignInError> {
        let result = async {
            let claims = self.verify_link(site, raw).await?;
            let Some(pending) = self
                .store
                .consume_pending(&claims.jti, self.clock.now())
                .await?
            else {
                return Err(SignInError::LinkUsed);
            };
            if pending.email.as_str() != claims.sub || pending.site != site.name {
                return Err(SignInError::LinkInvalid);
            }
            self.finish(site, &pending, AuthMethod::MagicLink).await
        }
        .await;
        self.counted(AuthMethod::MagicLink, result)
    }

    /// Use the code typed in the browser that asked for the sign-in
    /// `pending_id` (from its sealed cookie; `None` when it has none).
    pub async fn consume_code(
        &self,
        site: &Site,
        pending_id: Option<&str>,
        raw_code: &str,
    ) -> Result<SignedIn, SignInError> {
        let result = async {
            let id = pending_id.ok_or(SignInError::CodeElsewhere)?;
            let code = Code::parse(raw_code).ok_or(SignInError::CodeMalformed)?;
            let max = self.link.code_attempts;
            // A code is for the site it was asked on, as a link is (sites on
            // one host but different ports share the pending cookie); asked
            // before an attempt is counted, so a try on the wrong site costs
            // nothing.
            match self.store.pending(id).await? {
                Some(p) if p.site != site.name => return Err(SignInError::CodeElsewhere),
                Some(p) if !PendingState::of(&p, self.clock.now(), max).code_works() => {
                    return Err(SignInError::CodeGone)
                }
                _ => {}
            }
            let Some(pending) = self.store.attempt_code(id, self.clock.now(), max).await? else {
                return Err(SignInError::CodeGone);
            };
            // Counted before the code is compared: past the budget, no guess
            // is even looked at.
            if let Err(retry_after) = self.limits.code.hit(pending.email.as_str()).await? {
                return Err(self.limited(LimitKind::Code, retry_after));
            }
            if !code_matches(self.keys, id, &code, &pending.code_mac) {
                tracing::info!(target: "sesame::audit", event = "code_wrong", login = %id, attempts = pending.attempts);
                return Err(SignInError::CodeWrong {
                    attempts_left: max.saturating_sub(pending.attempts),
                    email: pending.email,
                    return_to: pending.return_to,
                    number: cross_device::number(self.keys, id),
                });
            }
            let Some(pending) = self.store.consume_pending(id, self.clock.now()).await? else {
                return Err(SignInError::CodeGone);
            };
            self.finish(site, &pending, AuthMethod::Code).await
        }
        .await;
        self.counted(AuthMethod::Code, result)
    }

    fn count(&self, method: AuthMethod, result: Option<&str>) {
        if let Some(result) = result {
            self.metrics
                .verifications
                .with_label_values(&[method.as_str(), result])
                .inc();
        }
    }

    fn counted(
        &self,
        method: AuthMethod,
        result: Result<SignedIn, SignInError>,
    ) -> Result<SignedIn, SignInError> {
        match &result {
            Ok(_) => self.count(method, Some("ok")),
            Err(e) => self.count(method, e.result()),
        }
        result
    }

    /// Turn a consumed pending sign-in into a session for its user,
    /// creating the user on first sign-in where signup allows.
    async fn finish(
        &self,
        site: &Site,
        pending: &PendingLogin,
        method: AuthMethod,
    ) -> Result<SignedIn, SignInError> {
        let user = match self.store.user_by_email(&pending.email).await? {
            Some(u) if u.disabled => return Err(SignInError::NotAllowed),
            Some(u) => u,
            None if signup_admits(self.signup, &pending.email) => {
                let user = User {
                    id: format!("u_{}", random_id(12)).into(),
                    email: pending.email.clone(),
                    name: None,
                    groups: vec![],
                    disabled: false,
                    created_at: self.clock.now(),
                };
                match self.store.add_user(&user).await {
                    Ok(()) => user,
                    // Created by a parallel sign-in: use that one.
                    Err(StoreError::Exists) => self
                        .store
                        .user_by_email(&pending.email)
                        .await?
                        .ok_or(SignInError::NotAllowed)?,
                    Err(e) => return Err(e.into()),
                }
            }
            None => return Err(SignInError::NotAllowed),
        };
        let session = self
            .start_session(site, &user, method, StartedBy::Login(&pending.id))
            .await?;
        Ok(SignedIn {
            session,
            user,
            return_to: pending.return_to.clone(),
        })
    }

    /// Start a session for `user`, signed in by `method` on `site`: stored,
    /// counted and written to the audit log. `NotAllowed` if the user was
    /// disabled or removed since it was read.
    pub async fn start_session(
        &self,
        site: &Site,
        user: &User,
        method: AuthMethod,
        by: StartedBy<'_>,
    ) -> Result<NewSession, SignInError> {
        let Some(session) = self
            .sessions
            .create_from(user, method, self.device.as_ref())
            .await?
        else {
            return Err(SignInError::NotAllowed);
        };
        self.metrics.sessions_created.inc();
        let short = &session.record.id_hash[..16];
        match by {
            StartedBy::Login(id) => {
                tracing::info!(target: "sesame::audit", event = "session_created", site = %site.name, email = %user.email,
                    method = method.as_str(), login = %id, session = short);
            }
            StartedBy::Passkey(id) => {
                tracing::info!(target: "sesame::audit", event = "session_created", site = %site.name, email = %user.email,
                    method = method.as_str(), passkey = %id, session = short);
            }
            StartedBy::Request(id) => {
                tracing::info!(target: "sesame::audit", event = "session_created", site = %site.name, email = %user.email,
                    method = method.as_str(), request = %id, session = short);
            }
        }
        Ok(session)
    }
}

fn signup_admits(signup: &Signup, email: &Email) -> bool {
    match signup {
        Signup::Closed => false,
        Signup::Open => true,
        Signup::Domains(d) => d.iter().any(|d| d == email.domain()),
    }
}

/// A code MAC that no code has: 32 random bytes, the length of a real one.
fn decoy_mac() -> Vec<u8> {
    crate::random::bytes(32)
}

#[cfg(test)]
mod tests;
