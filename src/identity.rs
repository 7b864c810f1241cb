//! The signed identity assertion (`Sesame-Assertion`): a short-lived EdDSA
//! JWT for apps that must not trust a bare header, and the JWKS that
//! publishes its public keys. Assertions are cached per session and site,
//! so signing is paid about once a minute per person, not per request.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, Header};
use moka::sync::Cache;
use serde::Serialize;
use serde_json::json;

use crate::app::SiteRt;
use crate::clock::Clock;
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

pub struct Assertions {
    cache: Cache<(String, usize), Arc<(String, i64)>>,
}

impl Default for Assertions {
    fn default() -> Self {
        Assertions {
            cache: Cache::builder()
                .max_capacity(200_000)
                .time_to_live(Duration::from_secs(LIFETIME_SECS as u64))
                .build(),
        }
    }
}

impl Assertions {
    /// The assertion for `live` on `site` (cached; signed when needed).
    pub fn get(
        &self,
        keys: &Keys,
        clock: &Clock,
        site_index: usize,
        site: &SiteRt,
        live: &LiveSession,
    ) -> Option<Arc<(String, i64)>> {
        let now = clock.now();
        let key = (live.record.id_hash.clone(), site_index);
        if let Some(hit) = self.cache.get(&key) {
            if hit.1 - now > LIFETIME_SECS - RENEW_BEFORE_SECS {
                return Some(hit);
            }
        }
        let r = &live.record;
        let claims = Claims {
            iss: &site.site.origin,
            aud: &site.site.origin,
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
        match token {
            Ok(t) => {
                let fresh = Arc::new((t, now + LIFETIME_SECS));
                self.cache.insert(key, fresh.clone());
                Some(fresh)
            }
            Err(e) => {
                tracing::error!(error = %e, "could not sign an identity assertion");
                None
            }
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
