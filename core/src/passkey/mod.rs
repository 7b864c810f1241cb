//! Passkeys (WebAuthn through webauthn-rs): registering one for a signed-in
//! person, signing in with one (email-first or discoverable), and the
//! integrity checks around each ceremony that webauthn-rs leaves to the
//! relying party (single-use server-side state, counter compare-and-swap,
//! backup flags, the credential's owner).
//!
//! Each step takes the [`Ceremonies`] it needs (store, keys, clock, ...),
//! never the gateway; HTTP lives in the gateway's `endpoints/passkeys.rs`,
//! and a sign-in's session is started by `signin`.

pub mod guard;
pub mod names;
mod relying_party;

pub use relying_party::RelyingParty;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use webauthn_rs::prelude::*;

use crate::clock::Clock;
use crate::config::{Config, Site, SiteId};
use crate::email::Email;
use crate::keys::Keys;
use crate::mail::Outbox;
use crate::metrics::Metrics;
use crate::pages::Pages;
use crate::return_to::ReturnTo;
use crate::session::{LiveSession, NewSession};
use crate::signin::{SignIn, SignInError, StartedBy};
use crate::store::DynStore;
use crate::store::{AuthMethod, Ceremony, CeremonyKind, PasskeyRecord, StoreError, User, UserId};

/// Ceremonies expire after this long.
const CEREMONY_SECS: i64 = 5 * 60;
/// A passkey may only be added by a session this young (a stolen old
/// session must not enrol its own key).
pub const RECENT_SIGN_IN_SECS: i64 = 15 * 60;

#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    #[error("passkeys are not available on this site")]
    NotAvailable,
    #[error("not signed in")]
    NotSignedIn,
    #[error("sign in again first: adding a passkey needs a recent sign-in")]
    NotRecent,
    #[error(
        "confirm it is you first: sign in with one of your passkeys, or type a code sent by email"
    )]
    ProofRequired,
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The ceremony failed: every reason looks the same from outside.
    #[error("passkey refused: {0}")]
    Refused(String),
    #[error("no such passkey")]
    NotFound,
    /// A sign-in whose assertion was not verified: its credential is one no
    /// user has (deleted here, still on the person's device), or it does
    /// not verify against the one stored (which a genuine authenticator
    /// never produces). The page asks the browser to forget `id`
    /// (base64url; Signal API). The same answer in both cases, so that the
    /// credential ids in email-first options do not tell a real passkey from
    /// a decoy.
    #[error("passkey refused: {why}")]
    UnknownCredential { id: String, why: String },
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// What the ceremonies need, borrowed (built per request by
/// `App::ceremonies`, or from parts in tests).
pub struct Ceremonies<'a> {
    /// The relying party.
    pub passkeys: &'a RelyingParty,
    pub config: &'a Config,
    pub store: &'a DynStore,
    pub keys: &'a Keys,
    pub clock: &'a Clock,
    pub metrics: &'a Metrics,
    pub pages: &'a Pages,
    pub outbox: &'a Outbox,
    /// Where a passkey sign-in starts its session.
    pub sign_in: SignIn<'a>,
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, PasskeyError> {
    serde_json::to_string(v).map_err(|e| PasskeyError::Refused(format!("serialise: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, PasskeyError> {
    serde_json::from_str(s).map_err(|e| PasskeyError::Refused(format!("stored state: {e}")))
}

/// The challenge a client answered, out of its clientDataJSON: the key of
/// the ceremony's server-side state.
fn answered_challenge(client_data_json: &[u8]) -> Result<String, PasskeyError> {
    #[derive(serde::Deserialize)]
    struct ClientData {
        challenge: String,
    }
    serde_json::from_slice::<ClientData>(client_data_json)
        .map(|c| c.challenge)
        .map_err(|_| PasskeyError::BadRequest("clientDataJSON has no challenge".into()))
}

async fn take(
    cx: &Ceremonies<'_>,
    challenge: &str,
    kind: CeremonyKind,
) -> Result<Ceremony, PasskeyError> {
    match cx.store.take_ceremony(challenge, cx.clock.now()).await? {
        Some(c) if c.kind == kind => Ok(c),
        _ => Err(PasskeyError::Refused(
            "no such ceremony (used, expired or unknown)".into(),
        )),
    }
}

async fn put(
    cx: &Ceremonies<'_>,
    challenge: &[u8],
    kind: CeremonyKind,
    user_id: Option<UserId>,
    state: String,
    return_to: String,
) -> Result<(), PasskeyError> {
    cx.store
        .put_ceremony(&Ceremony {
            id: B64.encode(challenge),
            kind,
            user_id,
            state,
            return_to,
            expires_at: cx.clock.now() + CEREMONY_SECS,
        })
        .await?;
    Ok(())
}

fn passkey_of(record: &PasskeyRecord) -> Result<Passkey, PasskeyError> {
    from_json(&record.credential)
}

/// Start adding a passkey for the person signed in as `live` (see
/// [`guard::may_change`]; `code_proved`: this session typed an emailed code).
pub async fn register_start(
    cx: &Ceremonies<'_>,
    site_id: SiteId,
    live: &LiveSession,
    code_proved: bool,
) -> Result<CreationChallengeResponse, PasskeyError> {
    let webauthn = cx.passkeys.for_site(site_id)?;
    let records = cx.store.passkeys_of(&live.record.user_id).await?;
    guard::may_change(cx, live, !records.is_empty(), code_proved)?;
    let user = cx
        .store
        .user_by_id(&live.record.user_id)
        .await?
        .ok_or(PasskeyError::NotSignedIn)?;
    let handle = cx
        .store
        .ensure_user_handle(&user.id, &crate::random::uuid().to_string())
        .await?;
    let handle =
        Uuid::parse_str(&handle).map_err(|e| PasskeyError::Refused(format!("user handle: {e}")))?;
    let existing: Vec<CredentialID> = records
        .iter()
        .filter_map(|r| passkey_of(r).ok())
        .map(|p| p.cred_id().clone())
        .collect();
    let display = user.name.clone().unwrap_or_else(|| user.email.to_string());
    let (mut ccr, state) = webauthn
        .start_passkey_registration(handle, user.email.as_str(), &display, Some(existing))
        .map_err(|e| PasskeyError::Refused(e.to_string()))?;
    // Ask for a discoverable credential, so the "no typing" sign-in works.
    if let Some(sel) = ccr.public_key.authenticator_selection.as_mut() {
        sel.resident_key = Some(webauthn_rs_proto::ResidentKeyRequirement::Preferred);
    }
    put(
        cx,
        &ccr.public_key.challenge,
        CeremonyKind::Register,
        Some(user.id),
        json(&state)?,
        String::new(),
    )
    .await?;
    Ok(ccr)
}

/// Finish adding a passkey: verified against the server-side state (origin,
/// RP id, user verification, algorithms, excluded credentials).
pub async fn register_finish(
    cx: &Ceremonies<'_>,
    site_id: SiteId,
    live: &LiveSession,
    body: &[u8],
) -> Result<PasskeyRecord, PasskeyError> {
    let webauthn = cx.passkeys.for_site(site_id)?;
    let cred: RegisterPublicKeyCredential = serde_json::from_slice(body)
        .map_err(|e| PasskeyError::BadRequest(format!("not a WebAuthn credential: {e}")))?;
    let ceremony = take(
        cx,
        &answered_challenge(&cred.response.client_data_json)?,
        CeremonyKind::Register,
    )
    .await?;
    if ceremony.user_id.as_deref() != Some(live.record.user_id.as_str()) {
        return Err(PasskeyError::Refused("ceremony of another user".into()));
    }
    let state: PasskeyRegistration = from_json(&ceremony.state)?;
    let passkey = webauthn
        .finish_passkey_registration(&cred, &state)
        .map_err(|e| PasskeyError::Refused(e.to_string()))?;
    let cred_json: serde_json::Value = serde_json::to_value(&passkey).unwrap_or_default();
    let flag = |k: &str| cred_json["cred"][k].as_bool().unwrap_or(false);
    let record = PasskeyRecord {
        id: B64.encode(passkey.cred_id()).into(),
        user_id: live.record.user_id.clone(),
        name: names::default_name(&cred.response.attestation_object),
        credential: json(&passkey)?,
        counter: cred_json["cred"]["counter"].as_i64().unwrap_or(0),
        backup_eligible: flag("backup_eligible"),
        backup_state: flag("backup_state"),
        created_at: cx.clock.now(),
        last_used_at: None,
    };
    cx.store.add_passkey(&record).await?;
    Ok(record)
}

/// Credential descriptors for an address that has no passkeys: the same on
/// every request for it, and plausible as a person's (WebAuthn's advice
/// against username enumeration: answer with an imaginary list). One to
/// three of them, as people have (1 in 10 addresses gets three, 2 in 10
/// two), each with the transports browsers report for a synced passkey, a
/// device-bound one or a security key, or none, as some browsers register.
fn decoy_credentials(
    cx: &Ceremonies<'_>,
    email: &Email,
) -> Vec<webauthn_rs_proto::AllowCredentials> {
    use webauthn_rs_proto::AuthenticatorTransport::{Hybrid, Internal, Nfc, Usb};
    let mac = |label: &[u8]| -> Vec<u8> {
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&cx.keys.code_mac) else {
            return vec![0; 32];
        };
        mac.update(label);
        mac.update(email.as_str().as_bytes());
        mac.finalize().into_bytes().to_vec()
    };
    let dice = mac(b"decoy-shape:");
    let count = match dice[0] % 10 {
        0..=6 => 1,
        7 | 8 => 2,
        _ => 3,
    };
    (0..count)
        .map(|i| webauthn_rs_proto::AllowCredentials {
            type_: "public-key".to_string(),
            // The first id is the one earlier versions gave: stable across
            // an upgrade.
            id: match i {
                0 => mac(b"decoy-credential:"),
                _ => mac(format!("decoy-credential-{i}:").as_bytes()),
            },
            transports: match dice[1 + i] % 20 {
                0..=9 => Some(vec![Hybrid, Internal]),
                10..=12 => Some(vec![Internal]),
                13 | 14 => Some(vec![Usb]),
                15 | 16 => Some(vec![Nfc, Usb]),
                _ => None,
            },
        })
        .collect()
}

/// Start a passkey sign-in: email-first (`email` given: that person's
/// passkeys, or a decoy) or discoverable (no email).
pub async fn login_start(
    cx: &Ceremonies<'_>,
    site_id: SiteId,
    email: Option<Email>,
    return_to: ReturnTo,
) -> Result<RequestChallengeResponse, PasskeyError> {
    let webauthn = cx.passkeys.for_site(site_id)?;
    let user = match &email {
        Some(e) => cx.store.user_by_email(e).await?.filter(|u| !u.disabled),
        None => None,
    };
    let passkeys: Vec<Passkey> = match &user {
        Some(u) => cx
            .store
            .passkeys_of(&u.id)
            .await?
            .iter()
            .filter_map(|r| passkey_of(r).ok())
            .collect(),
        None => vec![],
    };
    let (rcr, kind, state) = if !passkeys.is_empty() {
        let (rcr, state) = webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|e| PasskeyError::Refused(e.to_string()))?;
        (rcr, CeremonyKind::Login, json(&state)?)
    } else {
        let (mut rcr, state) = webauthn
            .start_discoverable_authentication()
            .map_err(|e| PasskeyError::Refused(e.to_string()))?;
        if let Some(e) = &email {
            // The shape of a person's options, with imaginary credentials.
            rcr.public_key.allow_credentials = decoy_credentials(cx, e);
            rcr.public_key.extensions = None;
            rcr.mediation = None;
        }
        (rcr, CeremonyKind::Discoverable, json(&state)?)
    };
    put(
        cx,
        &rcr.public_key.challenge,
        kind,
        user.map(|u| u.id),
        state,
        return_to.as_str().to_string(),
    )
    .await?;
    Ok(rcr)
}

/// What the page tells the browser's passkey provider about `user`
/// (WebAuthn Signal API, `signalAllAcceptedCredentials` and
/// `signalCurrentUserDetails`): the credentials the account still accepts,
/// and the names it registers them under. `None` without passkeys.
pub async fn signal(
    cx: &Ceremonies<'_>,
    user_id: &str,
    email: &Email,
    name: Option<&str>,
) -> Result<Option<serde_json::Value>, PasskeyError> {
    let records = cx.store.passkeys_of(user_id).await?;
    if records.is_empty() {
        return Ok(None);
    }
    let handle = cx
        .store
        .ensure_user_handle(user_id, &crate::random::uuid().to_string())
        .await?;
    let handle =
        Uuid::parse_str(&handle).map_err(|e| PasskeyError::Refused(format!("user handle: {e}")))?;
    let display = name.map_or_else(|| email.to_string(), str::to_string);
    Ok(Some(serde_json::json!({
        "rpId": cx.config.rp_id,
        "userId": B64.encode(handle.as_bytes()),
        "allAcceptedCredentialIds": records.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        "name": email.as_str(),
        "displayName": display,
    })))
}

/// What a successful passkey sign-in gives.
#[derive(Debug)]
pub struct SignedIn {
    pub session: NewSession,
    pub user: User,
    pub return_to: String,
}

/// Finish a passkey sign-in and start a session.
pub async fn login_finish(
    cx: &Ceremonies<'_>,
    site: &Site,
    site_id: SiteId,
    body: &[u8],
) -> Result<SignedIn, PasskeyError> {
    let webauthn = cx.passkeys.for_site(site_id)?;
    let cred: PublicKeyCredential = serde_json::from_slice(body)
        .map_err(|e| PasskeyError::BadRequest(format!("not a WebAuthn assertion: {e}")))?;
    let challenge = answered_challenge(&cred.response.client_data_json)?;
    let ceremony = match cx.store.take_ceremony(&challenge, cx.clock.now()).await? {
        Some(c) if matches!(c.kind, CeremonyKind::Login | CeremonyKind::Discoverable) => c,
        _ => {
            return Err(PasskeyError::Refused(
                "no such ceremony (used, expired or unknown)".into(),
            ))
        }
    };
    let cred_id = B64.encode(cred.get_credential_id());
    let unverified = |why: String| PasskeyError::UnknownCredential {
        id: cred_id.clone(),
        why,
    };
    let record = cx
        .store
        .passkey(&cred_id)
        .await?
        .ok_or_else(|| unverified("unknown or deleted passkey".into()))?;
    let user = cx
        .store
        .user_by_id(&record.user_id)
        .await?
        .ok_or_else(|| unverified("the passkey's user was removed".into()))?;
    let mut passkey = passkey_of(&record)?;
    let result = if ceremony.kind == CeremonyKind::Login {
        if ceremony.user_id.as_deref() != Some(user.id.as_str()) {
            return Err(unverified("passkey of another user".into()));
        }
        let state: PasskeyAuthentication = from_json(&ceremony.state)?;
        webauthn.finish_passkey_authentication(&cred, &state)
    } else {
        let (handle, _) = webauthn
            .identify_discoverable_authentication(&cred)
            .map_err(|e| unverified(e.to_string()))?;
        let owner = cx.store.user_by_handle(&handle.to_string()).await?;
        if owner.map(|o| o.id) != Some(user.id.clone()) {
            return Err(unverified(
                "user handle does not belong to the passkey".into(),
            ));
        }
        let state: DiscoverableAuthentication = from_json(&ceremony.state)?;
        webauthn.finish_discoverable_authentication_v2(&cred, state, &passkey)
    }
    .map_err(|e| unverified(e.to_string()))?;
    // Verified: from here on refusals are about the account, not the
    // credential, and the browser keeps it.
    if user.disabled {
        return Err(PasskeyError::Refused("user disabled".into()));
    }

    // Counter and backup flags, against what the store holds now.
    let counter = i64::from(result.counter());
    if (counter != 0 || record.counter != 0) && counter <= record.counter {
        cx.metrics.passkey_counter_regressions.inc();
        tracing::warn!(target: "sesame::audit", event = "passkey_counter_regression", passkey = %record.id, email = %user.email,
            stored = record.counter, presented = counter, "possible cloned authenticator");
        return Err(PasskeyError::Refused(
            "signature counter went backwards".into(),
        ));
    }
    if record.backup_eligible && !result.backup_eligible() {
        return Err(PasskeyError::Refused("backup eligibility changed".into()));
    }
    passkey.update_credential(&result);
    let updated = PasskeyRecord {
        credential: json(&passkey)?,
        counter,
        backup_eligible: result.backup_eligible(),
        backup_state: result.backup_state(),
        ..record.clone()
    };
    if !cx
        .store
        .passkey_used(&updated, record.counter, cx.clock.now())
        .await?
    {
        return Err(PasskeyError::Refused("passkey used concurrently".into()));
    }
    let session = cx
        .sign_in
        .start_session(
            site,
            &user,
            AuthMethod::Passkey,
            StartedBy::Passkey(&record.id),
        )
        .await
        .map_err(|e| match e {
            SignInError::Store(e) => PasskeyError::Store(e),
            _ => PasskeyError::Refused("the account is disabled".into()),
        })?;
    Ok(SignedIn {
        session,
        user,
        return_to: if ceremony.return_to.is_empty() {
            ReturnTo::root(site).as_str().to_string()
        } else {
            ceremony.return_to
        },
    })
}

#[cfg(test)]
mod tests;
