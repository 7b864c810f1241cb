//! The one error type of Sesame's endpoints, [`Failure`], and its one
//! mapping to what the client gets: a page for a person, JSON for the
//! endpoints script calls (`/passkey/*` ceremonies, `/api/*`).
//!
//! Handlers return [`Result`] and use `?`; internal detail (a store error,
//! why a passkey was refused) goes to the log, never to the client. Metrics
//! are counted where the thing happened, not here.

use http::header;
use serde_json::json;

use super::signin::check_email_page;
use super::{ErrorPage, Req, Resp};
use crate::app::App;
use crate::metrics::LimitKind;
use crate::passkey::PasskeyError;
use crate::signin::SignInError;
use crate::store::{Decision, StoreError};

/// Why an endpoint did not do what was asked.
#[derive(Debug)]
pub enum Failure {
    /// A state-changing request a browser sent from another site.
    CrossSite,
    /// The store could not answer: try again shortly, nothing was lost.
    Store(StoreError),
    /// Over a rate limit (already counted).
    Limited {
        kind: LimitKind,
        retry_after: u64,
    },
    /// A link or code refused.
    SignIn(SignInError),
    /// A passkey request refused (JSON, whatever the path).
    Passkey(PasskeyError),
    /// A portal handoff refused (a page, counted where it happened).
    Handoff(super::portal::Refused),
    NotFound,
    MethodNotAllowed,
}

impl From<super::portal::Refused> for Failure {
    fn from(r: super::portal::Refused) -> Self {
        Failure::Handoff(r)
    }
}

/// What a handler returns.
pub type Result<T = Resp> = std::result::Result<T, Failure>;

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl From<SignInError> for Failure {
    fn from(e: SignInError) -> Self {
        match e {
            SignInError::Store(e) => Failure::Store(e),
            SignInError::Limited { kind, retry_after } => Failure::Limited { kind, retry_after },
            e => Failure::SignIn(e),
        }
    }
}

impl From<PasskeyError> for Failure {
    fn from(e: PasskeyError) -> Self {
        match e {
            PasskeyError::Store(e) => Failure::Store(e),
            e => Failure::Passkey(e),
        }
    }
}

/// Endpoints called by script, which answer JSON: everything under
/// `/api/`, and the passkey ceremonies (any other path under `/passkey/`,
/// such as the offer page, is a page).
pub fn answers_json(path: &str) -> bool {
    path.starts_with("/api/")
        || matches!(
            path,
            "/login/wait"
                | "/passkey/register/start"
                | "/passkey/register/finish"
                | "/passkey/proof/start"
                | "/passkey/proof/finish"
                | "/passkey/login/start"
                | "/passkey/login/finish"
        )
}

/// How a refused link or code looks: status, title, message, and whether
/// the page offers to send a new link.
fn refusal(e: &SignInError) -> (u16, &'static str, &'static str, bool) {
    match e {
        SignInError::LinkInvalid => (
            400,
            "This link is not valid",
            "The sign-in link is damaged or not meant for this site. Ask for a new one.",
            true,
        ),
        SignInError::LinkExpired => (
            410,
            "This link has expired",
            "Sign-in links work for a short time only. Ask for a new one.",
            true,
        ),
        SignInError::LinkUsed => (
            410,
            "This link was already used",
            "Each sign-in link works once. Ask for a new one.",
            true,
        ),
        SignInError::CodeElsewhere => (
            400,
            "Use the link instead",
            "A code works only in the browser where you asked for it. Open the link from the email, or ask for a new one here.",
            true,
        ),
        SignInError::CodeMalformed => (
            400,
            "That is not a code",
            "The code is the six digits in the email.",
            false,
        ),
        SignInError::NotAllowed => (
            403,
            "Sign-in not allowed",
            "This address may not sign in here.",
            false,
        ),
        SignInError::Cancelled(Decision::WrongNumber) => (
            403,
            "This sign-in was cancelled",
            "On the other device, a number was picked that this browser did not show, so nobody was signed in. If it was you, ask for a new link; if not, someone else asked to sign in with your address.",
            true,
        ),
        SignInError::Cancelled(_) => (
            403,
            "This sign-in was cancelled",
            "Someone opened the link and said they had not asked for it, so nobody was signed in. If it was you, ask for a new link.",
            true,
        ),
        SignInError::RequestUnknown => (
            410,
            "This sign-in has expired",
            "Signing in with your phone works for 5 minutes. Start again from the sign-in page.",
            true,
        ),
        SignInError::PasskeyProofRequired => (
            403,
            "Use your passkey first",
            "Your account has a passkey: sign in with it on this device, then approve.",
            false,
        ),
        // Gone, and the two that never get here (see `From<SignInError>`).
        SignInError::CodeGone
        | SignInError::CodeWrong { .. }
        | SignInError::Limited { .. }
        | SignInError::Store(_) => (
            410,
            "This code no longer works",
            "It expired, was already used, or too many wrong codes were tried. Ask for a new one.",
            true,
        ),
    }
}

impl Failure {
    /// The answer to `req`.
    pub fn respond(self, app: &App, req: &Req) -> Resp {
        let json = answers_json(req.path);
        let page = |status: u16, title: &str, message: &str, offer_new_link: bool| {
            ErrorPage {
                offer_new_link,
                ..ErrorPage::new(&req.site.site.name, title, message)
            }
            .respond(app, status)
        };
        match self {
            Failure::CrossSite if json => Resp::json(
                403,
                &json!({"error": "cross_site", "message": "request from another site"}),
            ),
            Failure::CrossSite => page(
                403,
                "Request refused",
                "This form was sent from another site. Please go back and try again.",
                false,
            ),
            Failure::Store(e) => {
                tracing::error!(error = %e, path = req.path, "store error in a request to Sesame");
                if json {
                    Resp::json(
                        503,
                        &json!({"error": "unavailable", "message": "Please try again shortly."}),
                    )
                } else {
                    page(
                        503,
                        "Please try again shortly",
                        "Sesame is unavailable for a moment. Nothing was lost; try again in a minute.",
                        false,
                    )
                }
            }
            Failure::Limited { kind, retry_after } => {
                if kind != LimitKind::Anonymous {
                    tracing::info!(target: "sesame::audit", event = "rate_limited", key = kind.label(), client = %req.client_ip);
                }
                let resp = if json {
                    Resp::json(
                        429,
                        &json!({"error": "rate_limited", "retry_after": retry_after}),
                    )
                } else {
                    let why = match kind {
                        LimitKind::Code => "Too many codes were tried for this address today. The link in the email still works.",
                        LimitKind::Email | LimitKind::Client => "Too many sign-in links were asked for.",
                        LimitKind::Anonymous => "Too many requests came from your network. Please wait a moment.",
                    };
                    ErrorPage {
                        retry_after: Some(retry_after),
                        ..ErrorPage::new(&req.site.site.name, "Too many attempts", why)
                    }
                    .respond(app, 429)
                };
                resp.header(header::RETRY_AFTER, &retry_after.to_string())
            }
            Failure::SignIn(SignInError::CodeWrong {
                attempts_left,
                email,
                return_to,
                number,
            }) => {
                let msg = format!("That code is not right. {attempts_left} attempt(s) left.");
                check_email_page(app, req, &email, &return_to, number, Some(&msg), 400)
            }
            Failure::SignIn(e) => {
                let (status, title, message, offer_new_link) = refusal(&e);
                page(status, title, message, offer_new_link)
            }
            Failure::Passkey(e) => passkey_json(app, &e),
            Failure::Handoff(r) => r.respond(app, req),
            Failure::NotFound if json => Resp::json(404, &json!({"error": "not_found"})),
            Failure::NotFound => page(404, "Not found", "There is no such page.", false),
            Failure::MethodNotAllowed if json => {
                Resp::json(405, &json!({"error": "method_not_allowed"}))
            }
            Failure::MethodNotAllowed => page(
                405,
                "Method not allowed",
                "This address does not accept that kind of request.",
                false,
            ),
        }
    }
}

/// A refused passkey request as JSON: `{"error", "message"}`, and the
/// credential the browser should forget, if any.
fn passkey_json(app: &App, e: &PasskeyError) -> Resp {
    let (status, code) = match e {
        PasskeyError::NotAvailable => (404, "passkeys_unavailable"),
        PasskeyError::NotSignedIn => (401, "unauthenticated"),
        PasskeyError::NotRecent => (403, "reauthenticate"),
        PasskeyError::ProofRequired => (403, "passkey_proof_required"),
        PasskeyError::BadRequest(_) => (400, "bad_request"),
        PasskeyError::Refused(_) | PasskeyError::UnknownCredential { .. } => {
            (401, "passkey_refused")
        }
        PasskeyError::NotFound => (404, "not_found"),
        PasskeyError::Store(_) => (503, "unavailable"),
    };
    if matches!(e, PasskeyError::Store(_)) {
        tracing::error!(error = %e, "store error in a passkey request");
    }
    // Refusals say no more than that: the reason is in the log and audit line.
    let message = match e {
        PasskeyError::Refused(_) | PasskeyError::UnknownCredential { .. } => {
            "The passkey was not accepted.".to_string()
        }
        PasskeyError::Store(_) => "Please try again shortly.".to_string(),
        other => other.to_string(),
    };
    let mut body = json!({"error": code, "message": message});
    if let PasskeyError::UnknownCredential { id, .. } = e {
        // No user has it (or it did not verify): the page asks the browser
        // to forget it (`signalUnknownCredential`).
        body["unknown_credential"] = json!({"rpId": app.config.rp_id, "credentialId": id});
    }
    Resp::json(status, &body)
}
