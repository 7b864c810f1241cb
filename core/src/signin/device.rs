//! Sign-in approved from a device that is signed in already, with no email:
//! the login page's "Sign in with your phone" shows a QR code and a short
//! code; a phone signed in to the same site opens it, sees who asked and
//! picks the asking browser's number out of three, as for an emailed link
//! (see [`cross_device`](super::cross_device)). The asking browser then
//! collects a session of the approving account, once.
//!
//! The request is stored in `device_requests` ([`DeviceRequest`]): its id
//! is what the asking browser holds (in a sealed cookie), and its short
//! code is stored only as a MAC. It lives 5 minutes, is decided once
//! (approve, wrong number, "this wasn't me" race on one store step) and an
//! approval is collected once within 2 minutes. An account with a passkey
//! approves only from a session that signed in with it in the last 15
//! minutes: someone holding only a stolen email session cannot hand out
//! sessions with it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::cross_device::{self, Asker, Decided, Status, COLLECT_SECS};
use super::{SignIn, SignInError, SignedIn, StartedBy};
use crate::config::Site;
use crate::passkey::RECENT_SIGN_IN_SECS;
use crate::store::{
    AuthMethod, Decision, DeviceRequest, RequestKind, SessionRecord, StoreError, StoreResult,
};

/// Seconds a program waits between polls of the token endpoint.
pub const POLL_SECS: u64 = 5;

/// When each device request was last polled, to answer `slow_down` to a
/// program that polls faster than [`POLL_SECS`] (per instance; nothing
/// stored).
pub struct Polls {
    last: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl Default for Polls {
    fn default() -> Self {
        Polls {
            last: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }
}

impl Polls {
    /// Note a poll of `id`: true if it came too soon after the last one
    /// (a fifth of the interval is forgiven: timers and round trips).
    pub fn too_soon(&self, id: &str) -> bool {
        let now = std::time::Instant::now();
        let interval = std::time::Duration::from_secs(POLL_SECS);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.len() >= 10_000 {
            last.retain(|_, t| now.duration_since(*t) < 2 * interval);
        }
        match last.insert(id.to_string(), now) {
            Some(prev) => now.duration_since(prev) < interval * 4 / 5,
            None => false,
        }
    }

    /// `id` is done with: forget it.
    pub fn forget(&self, id: &str) {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// How long a QR or device code works.
pub const REQUEST_SECS: i64 = 5 * 60;

/// Consonants only (RFC 8628 §6.1): no words, no 0/O or 1/I to confuse.
const ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
/// Letters in a code: 20^8, about 2^34.6.
const CODE_LEN: usize = 8;

/// A fresh short code, shown as `WDJB-MJHT`.
pub fn new_user_code() -> String {
    let mut code = String::with_capacity(CODE_LEN + 1);
    for i in 0..CODE_LEN {
        if i == CODE_LEN / 2 {
            code.push('-');
        }
        code.push(ALPHABET[crate::random::below(ALPHABET.len() as u32) as usize] as char);
    }
    code
}

/// A typed or scanned code as stored letters: case, spaces and dashes do
/// not matter; `None` unless it is 8 letters of the alphabet.
pub fn normalize(input: &str) -> Option<String> {
    let letters: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (letters.len() == CODE_LEN && letters.bytes().all(|b| ALPHABET.contains(&b))).then_some(letters)
}

/// The code as the store keeps it: a MAC under the server's code key.
fn stored_code(keys: &crate::keys::Keys, normalized: &str) -> String {
    let mut m =
        <Hmac<Sha256> as Mac>::new_from_slice(&keys.code_mac).expect("HMAC takes any key length");
    m.update(b"sesame user code\0");
    m.update(normalized.as_bytes());
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
}

/// A request just made: the id the asking side keeps and the code it shows.
#[derive(Clone)]
pub struct Requested {
    pub id: String,
    pub user_code: String,
}

impl std::fmt::Debug for Requested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requested").finish_non_exhaustive()
    }
}

/// A request a signed-in device may decide: what its page shows.
#[derive(Debug)]
pub struct Decidable {
    pub request: DeviceRequest,
    pub asker: Asker,
    pub asked_ago: String,
}

impl SignIn<'_> {
    /// A browser asks to be signed in by a signed-in device ("Sign in with
    /// your phone") on `site`, going on to `return_to`.
    pub async fn ask_by_phone(
        &self,
        site: &Site,
        return_to: &str,
        asker: Asker,
    ) -> Result<Requested, SignInError> {
        let id = crate::random::id(24);
        self.new_request(RequestKind::Qr, &site.name, None, "", return_to, asker, &id)
            .await
    }

    /// Store a new request of `kind` as `id`, with a fresh user code.
    #[allow(clippy::too_many_arguments)]
    pub async fn new_request(
        &self,
        kind: RequestKind,
        site: &str,
        client_id: Option<&str>,
        scope: &str,
        return_to: &str,
        asker: Asker,
        id: &str,
    ) -> Result<Requested, SignInError> {
        let now = self.clock.now();
        // A taken code (one in billions while few are live) gets another.
        for _ in 0..3 {
            let user_code = new_user_code();
            let request = DeviceRequest {
                id: id.to_string(),
                kind,
                user_code: stored_code(self.keys, &normalize(&user_code).unwrap_or_default()),
                site: site.to_string(),
                client_id: client_id.map(str::to_string),
                scope: scope.to_string(),
                return_to: return_to.to_string(),
                asked_agent: asker.agent.clone(),
                asked_net: asker.net.clone(),
                created_at: now,
                expires_at: now + REQUEST_SECS,
                decision: None,
                user_id: None,
                auth_method: None,
                collected: false,
            };
            match self.store.create_device_request(&request).await {
                Ok(()) => {
                    return Ok(Requested {
                        id: id.to_string(),
                        user_code,
                    })
                }
                Err(StoreError::Exists) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Other("no free user code after 3 tries".into()).into())
    }

    /// The live, undecided request a typed or scanned `code` names on
    /// `site`, for a signed-in device to decide.
    pub async fn request_for_code(
        &self,
        site: &Site,
        code: &str,
    ) -> Result<Decidable, SignInError> {
        let Some(normalized) = normalize(code) else {
            return Err(SignInError::RequestUnknown);
        };
        let now = self.clock.now();
        let request = match self
            .store
            .device_request_by_code(&stored_code(self.keys, &normalized))
            .await?
        {
            Some(r) if r.site == site.name => r,
            _ => return Err(SignInError::RequestUnknown),
        };
        match Status::of_request(&request, now) {
            Status::Waiting => {}
            Status::Cancelled(d) => return Err(SignInError::Cancelled(d)),
            Status::Expired if request.decision.is_none() => {
                self.count_cross_device(request.kind.as_str(), "expired");
                return Err(SignInError::RequestUnknown);
            }
            _ => return Err(SignInError::LinkUsed),
        }
        Ok(Decidable {
            asker: Asker {
                agent: request.asked_agent.clone(),
                net: request.asked_net.clone(),
            },
            asked_ago: cross_device::ago(now - request.created_at),
            request,
        })
    }

    /// May the session `by` approve requests now? An account with a
    /// passkey needs a passkey sign-in of this session in the last 15
    /// minutes.
    pub async fn may_approve(&self, by: &SessionRecord) -> StoreResult<bool> {
        let fresh = by.auth_method == AuthMethod::Passkey
            && self.clock.now() - by.created_at <= RECENT_SIGN_IN_SECS;
        Ok(fresh || self.store.passkeys_of(&by.user_id).await?.is_empty())
    }

    /// The signed-in session `by` picked `number` for the request of
    /// `code`: the asking side's number approves it for `by`'s account,
    /// anything else cancels it for good.
    pub async fn approve_request(
        &self,
        site: &Site,
        code: &str,
        number: &str,
        by: &SessionRecord,
    ) -> Result<Decided, SignInError> {
        let d = self.request_for_code(site, code).await?;
        if !self.may_approve(by).await? {
            return Err(SignInError::PasskeyProofRequired);
        }
        // A program shows only its code (RFC 8628), which the person typed
        // or scanned from its screen: that is the match. A browser shows a
        // number as well.
        let right = d.request.kind == RequestKind::Device
            || number.trim().parse::<u8>().ok()
                == Some(cross_device::number(self.keys, &d.request.id));
        let decision = if right {
            Decision::Approved
        } else {
            Decision::WrongNumber
        };
        self.decide_request(&d.request, decision, by).await
    }

    /// "This wasn't me" for the request of `code`: cancelled for good.
    pub async fn deny_request(
        &self,
        site: &Site,
        code: &str,
        by: &SessionRecord,
    ) -> Result<Decided, SignInError> {
        let d = self.request_for_code(site, code).await?;
        self.decide_request(&d.request, Decision::Denied, by).await
    }

    async fn decide_request(
        &self,
        r: &DeviceRequest,
        decision: Decision,
        by: &SessionRecord,
    ) -> Result<Decided, SignInError> {
        let now = self.clock.now();
        let Some(r) = self
            .store
            .decide_device_request(
                &r.id,
                now,
                decision,
                Some((&by.user_id, by.auth_method)),
                now + COLLECT_SECS,
            )
            .await?
        else {
            return Err(SignInError::LinkUsed);
        };
        self.waiters.wake(&r.id);
        let (result, event, decided) = match decision {
            Decision::Approved => ("approved", "cross_device_approved", Decided::Approved),
            Decision::WrongNumber => (
                "wrong_number",
                "cross_device_wrong_number",
                Decided::WrongNumber,
            ),
            _ => ("cancelled", "cross_device_denied", Decided::Denied),
        };
        let kind = r.kind.as_str();
        self.count_cross_device(kind, result);
        tracing::info!(target: "sesame::audit", event, kind, site = %r.site, email = %by.email,
            request = r.id.get(..8).unwrap_or_default(), asked_from = %r.asked_net);
        Ok(decided)
    }

    /// Where the request `id` stands, for the side that asked for it on
    /// `site` (one read; nothing written).
    pub async fn request_status(
        &self,
        site: &Site,
        id: &str,
    ) -> StoreResult<(Status, Option<DeviceRequest>)> {
        Ok(match self.store.device_request(id).await? {
            Some(r) if r.site != site.name => (Status::Expired, None),
            Some(r) => (Status::of_request(&r, self.clock.now()), Some(r)),
            None => (Status::Expired, None),
        })
    }

    /// The asking browser takes its approved request: a session of the
    /// approving account, signed in as the approving session was, once.
    pub async fn collect_request(&self, site: &Site, id: &str) -> Result<SignedIn, SignInError> {
        let Some(r) = self
            .store
            .collect_device_request(id, self.clock.now())
            .await?
        else {
            return Err(SignInError::LinkUsed);
        };
        let (Some(user_id), Some(method)) = (&r.user_id, r.auth_method) else {
            return Err(SignInError::LinkUsed);
        };
        if r.site != site.name {
            return Err(SignInError::CodeElsewhere);
        }
        let user = match self.store.user_by_id(user_id.as_str()).await? {
            Some(u) if !u.disabled => u,
            _ => return Err(SignInError::NotAllowed),
        };
        // A browser let in by a QR approval did not use a passkey itself:
        // its session must not pass for a fresh passkey sign-in (which may
        // change passkeys and approve others), so it counts as one by
        // email, whatever the approver used. A program's grant keeps the
        // approver's method: no cookie holds its session.
        let method = match r.kind {
            RequestKind::Qr => AuthMethod::MagicLink,
            RequestKind::Device => method,
        };
        let short = r.id.get(..8).unwrap_or_default();
        tracing::info!(target: "sesame::audit", event = "cross_device_collected", kind = r.kind.as_str(),
            site = %r.site, email = %user.email, request = short);
        let session = self
            .start_session(site, &user, method, StartedBy::Request(short))
            .await?;
        Ok(SignedIn {
            session,
            user,
            return_to: r.return_to,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_eight_consonants_and_read_back_however_typed() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..500 {
            let code = new_user_code();
            assert_eq!(code.len(), 9, "{code}");
            assert_eq!(&code[4..5], "-");
            let n = normalize(&code).unwrap();
            assert_eq!(normalize(&code.to_lowercase()), Some(n.clone()));
            assert_eq!(
                normalize(&format!(" {} {} ", &code[..4], &code[5..])),
                Some(n.clone())
            );
            seen.insert(n);
        }
        assert!(seen.len() > 490, "codes repeat: {}", seen.len());
        for bad in [
            "",
            "BCDF-GHJ",
            "BCDF-GHJKL",
            "BCDF-GHJA",
            "BCDF-GHJ1",
            "BCDF GHJ\u{e9}",
        ] {
            assert_eq!(normalize(bad), None, "{bad:?}");
        }
    }
}
