//! Who may change the passkeys of an account, and who hears of it.
//!
//! An account without a passkey may add its first right after an email
//! sign-in (the enrolment moment NIST 800-63B expects). An account that has
//! one may add or delete passkeys only with a fresh proof beyond the email
//! session: a passkey sign-in of this session within the last 15 minutes,
//! or a code emailed for that purpose and typed on Sesame's page (proved in
//! a sealed, host-only cookie bound to this session). Script on a page of a
//! protected app, or someone holding one sign-in link, has neither. Every
//! passkey added or deleted is announced to the account's address.
//!
//! The ceremonies are in `passkey/`; HTTP in `endpoints/passkeys.rs`.

use http::HeaderMap;
use serde::Serialize;

use super::{Ceremonies, PasskeyError, RECENT_SIGN_IN_SECS};
use crate::config::Site;
use crate::magic_link::{code_mac, code_matches, Code};
use crate::session::LiveSession;
use crate::store::{AuthMethod, PendingLogin};

/// How long a confirmed code allows passkey changes in its session.
pub const PROOF_SECS: i64 = 15 * 60;
/// How long an emailed code can be typed.
const CODE_SECS: i64 = 10 * 60;

/// Did this session sign in with a passkey in the last 15 minutes?
pub fn fresh_passkey(cx: &Ceremonies<'_>, live: &LiveSession) -> bool {
    live.record.auth_method == AuthMethod::Passkey
        && cx.clock.now() - live.record.created_at <= RECENT_SIGN_IN_SECS
}

/// The proof cookie's plain text while a code is awaited, and once typed.
fn waiting(pending_id: &str, session: &str) -> String {
    format!("code:{pending_id}:{session}")
}

fn proved(session: &str, until: i64) -> String {
    format!("ok:{session}:{until}")
}

/// Is the opened proof cookie `plain` a confirmed code for `live`, still
/// in force?
pub fn code_proved(cx: &Ceremonies<'_>, plain: Option<&str>, live: &LiveSession) -> bool {
    let Some(rest) = plain.and_then(|p| p.strip_prefix("ok:")) else {
        return false;
    };
    match rest.rsplit_once(':') {
        Some((session, until)) => {
            live.record.id_hash == session && until.parse::<i64>().is_ok_and(|u| cx.clock.now() < u)
        }
        None => false,
    }
}

/// May `live` change passkeys now? `has_passkeys`: the account has one.
pub fn may_change(
    cx: &Ceremonies<'_>,
    live: &LiveSession,
    has_passkeys: bool,
    code_proved: bool,
) -> Result<(), PasskeyError> {
    if has_passkeys {
        if fresh_passkey(cx, live) || code_proved {
            return Ok(());
        }
        return Err(PasskeyError::ProofRequired);
    }
    if cx.clock.now() - live.record.created_at > RECENT_SIGN_IN_SECS {
        return Err(PasskeyError::NotRecent);
    }
    Ok(())
}

#[derive(Serialize)]
struct CodeMail<'a> {
    site_name: &'a str,
    code: &'a str,
    ttl_minutes: i64,
}

/// Email a code that proves the account holder for passkey changes;
/// returns the proof cookie's plain text that awaits it.
pub async fn send_code(
    cx: &Ceremonies<'_>,
    site: &Site,
    live: &LiveSession,
) -> Result<String, PasskeyError> {
    let now = cx.clock.now();
    let id = crate::signin::new_pending_id();
    let code = Code::generate();
    // A pending login no link names and no pending-login cookie carries:
    // only the proof cookie of this session reaches it.
    let pending = PendingLogin {
        id: id.clone(),
        email: live.record.email.clone(),
        site: site.name.clone(),
        return_to: String::new(),
        code_mac: code_mac(cx.keys, &id, &code),
        expires_at: now + CODE_SECS,
        attempts: 0,
        views: 0,
        consumed: false,
        created_at: now,
        asked_agent: String::new(),
        asked_net: String::new(),
        decision: None,
        collected: false,
    };
    cx.store.create_pending(&pending).await?;
    let vars = CodeMail {
        site_name: &site.name,
        code: code.as_str(),
        ttl_minutes: CODE_SECS / 60,
    };
    send(
        cx,
        live,
        format!("Your code to change passkeys on {}", site.name),
        "passkey_code",
        &vars,
    );
    tracing::info!(target: "sesame::audit", event = "passkey_code_sent", email = %live.record.email, login = %id);
    Ok(waiting(&id, &live.record.id_hash))
}

/// Why a typed code did not prove anything.
#[derive(Debug)]
pub enum CodeRefused {
    /// No code was asked for in this session (or it was for another).
    NotAsked,
    /// Not the code; `left` attempts remain.
    Wrong { left: u32 },
    /// Expired, used, or out of attempts.
    Gone,
}

/// Check `code` against the one `plain` (the opened proof cookie) awaits;
/// returns the proof cookie's plain text once it matches.
pub async fn confirm_code(
    cx: &Ceremonies<'_>,
    plain: Option<&str>,
    live: &LiveSession,
    code: &Code,
) -> Result<Result<String, CodeRefused>, PasskeyError> {
    let Some((id, session)) = plain
        .and_then(|p| p.strip_prefix("code:"))
        .and_then(|p| p.split_once(':'))
    else {
        return Ok(Err(CodeRefused::NotAsked));
    };
    if live.record.id_hash != session {
        return Ok(Err(CodeRefused::NotAsked));
    }
    let now = cx.clock.now();
    let max = cx.config.magic_link.code_attempts;
    let Some(pending) = cx.store.attempt_code(id, now, max).await? else {
        return Ok(Err(CodeRefused::Gone));
    };
    if !code_matches(cx.keys, id, code, &pending.code_mac) {
        return Ok(Err(CodeRefused::Wrong {
            left: max.saturating_sub(pending.attempts),
        }));
    }
    if cx.store.consume_pending(id, now).await?.is_none() {
        return Ok(Err(CodeRefused::Gone));
    }
    tracing::info!(target: "sesame::audit", event = "passkey_code_confirmed", email = %live.record.email, login = %id);
    Ok(Ok(proved(&live.record.id_hash, now + PROOF_SECS)))
}

/// What happened to a passkey, for the notice.
#[derive(Debug, Clone, Copy)]
pub enum Change {
    Added,
    Deleted,
}

#[derive(Serialize)]
struct NoticeMail<'a> {
    site_name: &'a str,
    what: &'a str,
    passkey: &'a str,
    when: String,
    browser: String,
    address: String,
    account_url: String,
}

/// Tell the account's address that passkey `name` was added or deleted:
/// when, from which browser and network address, and where to look.
pub fn notify(
    cx: &Ceremonies<'_>,
    site: &Site,
    live: &LiveSession,
    change: Change,
    name: &str,
    headers: &HeaderMap,
    client: std::net::IpAddr,
) {
    let (what, subject) = match change {
        Change::Added => ("added to", "A passkey was added to your account"),
        Change::Deleted => ("deleted from", "A passkey was deleted from your account"),
    };
    let browser: String = headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("an unknown browser")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    let vars = NoticeMail {
        site_name: &site.name,
        what,
        passkey: name,
        when: humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(cx.clock.now().max(0) as u64),
        )
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC"),
        browser,
        address: client.to_string(),
        account_url: site.sesame_url("/account", &[]),
    };
    send(
        cx,
        live,
        format!("{subject} on {}", site.name),
        "passkey_notice",
        &vars,
    );
}

/// Queue the mail made from `template` (`.txt` and `.html`) to the account.
fn send(
    cx: &Ceremonies<'_>,
    live: &LiveSession,
    subject: String,
    template: &str,
    vars: &impl Serialize,
) {
    let mail = crate::mail::OutgoingMail {
        to: live.record.email.clone(),
        subject,
        text: cx.pages.render(&format!("{template}.txt"), vars),
        html: cx.pages.render(&format!("{template}.html"), vars),
    };
    cx.outbox.enqueue(mail, cx.metrics);
}
