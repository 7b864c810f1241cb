//! The signed identity assertion (`Sesame-Assertion`): a short-lived EdDSA
//! JWT for apps that must not trust a bare header, and the JWKS that
//! publishes its public keys. Assertions are kept on the session, one per
//! site, so signing is paid about once a minute per person, not per request.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, Header};
use serde::Serialize;
use serde_json::json;

use crate::clock::Clock;
use crate::config::{Site, SiteId};
use crate::keys::Keys;
use crate::session::LiveSession;

/// Lifetime of one assertion.
pub const LIFETIME_SECS: i64 = 300;
/// A cached assertion is replaced when it has less than this left.
const RENEW_BEFORE_SECS: i64 = 240;

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    email: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    groups: &'a [String],
    amr: [&'a str; 1],
    iat: i64,
    exp: i64,
}

/// One signed assertion, ready for the header.
#[derive(Debug)]
pub struct Signed {
    pub header: http::HeaderValue,
    pub expires_at: i64,
}

/// The assertion for `live` on `site`: kept on the session (one per site)
/// and signed when missing or past the first minute of its five.
pub fn assertion(
    keys: &Keys,
    clock: &Clock,
    site_id: SiteId,
    site: &Site,
    live: &LiveSession,
) -> Option<Arc<Signed>> {
    let now = clock.now();
    {
        let slots = match live.assertions.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(Some(hit)) = slots.get(site_id.index()) {
            if hit.expires_at - now > LIFETIME_SECS - RENEW_BEFORE_SECS {
                return Some(hit.clone());
            }
        }
    }
    let fresh = Arc::new(sign(keys, site, live, now)?);
    let mut slots = match live.assertions.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    if slots.len() <= site_id.index() {
        slots.resize(site_id.index() + 1, None);
    }
    slots[site_id.index()] = Some(fresh.clone());
    Some(fresh)
}

fn sign(keys: &Keys, site: &Site, live: &LiveSession, now: i64) -> Option<Signed> {
    let r = &live.record;
    let claims = Claims {
        iss: &site.origin,
        aud: &site.origin,
        sub: &r.user_id,
        email: r.email.as_str(),
        name: r.name.as_deref(),
        groups: &r.groups,
        amr: [r.auth_method.as_str()],
        iat: now,
        exp: now + LIFETIME_SECS,
    };
    let token = keys.with_assertion_signer(|kid, k| {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_string());
        encode(&header, &claims, k)
    })?;
    match token.map(|t| http::HeaderValue::from_str(&t)) {
        Ok(Ok(header)) => Some(Signed {
            header,
            expires_at: now + LIFETIME_SECS,
        }),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "a signed identity assertion is not a header value");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "could not sign an identity assertion");
            None
        }
    }
}

/// `/.sesame/jwks.json`: every assertion key in force, the previous one
/// during a rotation included.
pub fn jwks(keys: &Keys) -> serde_json::Value {
    let list: Vec<_> = keys
        .assertion_public_keys()
        .into_iter()
        .map(|(kid, public)| json!({"kty": "OKP", "crv": "Ed25519", "x": B64.encode(public), "kid": kid, "alg": "EdDSA", "use": "sig"}))
        .collect();
    json!({ "keys": list })
}
