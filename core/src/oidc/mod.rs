//! The OpenID Connect provider's parts that know nothing of HTTP: the
//! signing key of ID tokens (RS256), the discovery document, PKCE, scopes
//! and the claims a scope releases, and the rules for redirect URIs. The
//! endpoints are in the gateway crate (`endpoints/oidc.rs`); what is kept
//! (codes, grants, tokens) is in the store.

pub mod secret;
mod signing;

pub use signing::{Signer, SigningAlg};

use std::collections::HashMap;
use std::sync::Mutex;

use base64::prelude::{Engine, BASE64_URL_SAFE_NO_PAD};
use jsonwebtoken::Header;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::OidcClient;
use crate::store::{AuthMethod, DynStore, StoreResult, User};

/// How long an authorization code can be redeemed.
pub const CODE_TTL_SECS: i64 = 60;
/// How long an access token (and an ID token) is good for.
pub const TOKEN_TTL_SECS: i64 = 3600;

/// How long a refresh token can be used (each use gives a new one).
pub const REFRESH_TTL_SECS: i64 = 30 * 24 * 3600;

/// The scopes Sesame knows; others asked for are ignored (OIDC Core 3.1.2.1).
pub const SCOPES: [&str; 5] = ["openid", "email", "profile", "groups", "offline_access"];

/// The scopes of `raw` (space separated) that Sesame knows, in its order;
/// `None` without `openid`.
pub fn scopes(raw: &str) -> Option<String> {
    let asked: Vec<&str> = raw.split(' ').filter(|s| !s.is_empty()).collect();
    if !asked.contains(&"openid") {
        return None;
    }
    let known: Vec<&str> = SCOPES.into_iter().filter(|s| asked.contains(s)).collect();
    Some(known.join(" "))
}

/// A redirect URI as a client may register it: an absolute https URL (or
/// http on this machine), no fragment. They are compared exactly, so a
/// registered URI is never a pattern (no wildcards: a wildcard lets any
/// page under it, an open redirect or an uploaded file, receive codes).
pub fn check_redirect_uri(raw: &str) -> Result<(), String> {
    let u = url::Url::parse(raw).map_err(|e| format!("not an absolute URL: {e}"))?;
    let host = u.host_str().unwrap_or("");
    let local = host == "localhost"
        || host.ends_with(".localhost")
        || host == "127.0.0.1"
        || host == "[::1]";
    match u.scheme() {
        "https" => {}
        "http" if local => {}
        _ => return Err("must be https (http only on localhost)".into()),
    }
    if u.fragment().is_some() {
        return Err("must not have a fragment".into());
    }
    if raw.contains('*') {
        return Err("is matched exactly: no wildcards".into());
    }
    Ok(())
}

/// RFC 7636 S256: is `verifier` the one `challenge` was made from?
pub fn pkce_matches(challenge: &str, verifier: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed {
        return false;
    }
    let made = BASE64_URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    subtle::ConstantTimeEq::ct_eq(made.as_bytes(), challenge.as_bytes()).into()
}

/// A challenge as RFC 7636 allows it (43 to 128 unreserved characters).
pub fn challenge_well_formed(c: &str) -> bool {
    (43..=128).contains(&c.len())
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// What RPs see of a sign-in (the portal session) as `sid`: the first half
/// of the session id's hash.
pub fn sid(session_hash: &str) -> &str {
    session_hash.get(..32).unwrap_or(session_hash)
}

/// RFC 8176 `amr` values for a sign-in method.
pub fn amr(method: AuthMethod) -> &'static [&'static str] {
    match method {
        // A link sent to the address: proof of the mailbox, no RFC 8176
        // value exists for it.
        AuthMethod::MagicLink => &["email"],
        AuthMethod::Code => &["otp"],
        AuthMethod::Passkey => &["hwk", "user"],
    }
}

/// The claims `scope` releases about `user`, for the ID token and userinfo.
pub fn user_claims(user: &User, scope: &str) -> serde_json::Map<String, Value> {
    let has = |s: &str| scope.split(' ').any(|x| x == s);
    let mut c = serde_json::Map::new();
    c.insert("sub".into(), json!(user.id.as_str()));
    if has("email") {
        c.insert("email".into(), json!(user.email.as_str()));
        // Every sign-in proves the address (a link or code sent to it, or
        // a passkey added after one).
        c.insert("email_verified".into(), json!(true));
    }
    if has("profile") {
        if let Some(n) = &user.name {
            c.insert("name".into(), json!(n));
        }
        c.insert("preferred_username".into(), json!(user.email.as_str()));
    }
    if has("groups") {
        c.insert("groups".into(), json!(user.groups));
    }
    c
}

/// The provider: its issuer, clients, and ID-token key.
pub struct Provider {
    pub issuer: String,
    pub clients: Vec<OidcClient>,
    /// RS256, ES256, EdDSA (in that order; RS256 first).
    signers: Vec<Signer>,
    /// Secrets that verified, by client id, as SHA-256: argon2 runs once
    /// per client and secret, not per token request.
    verified: Mutex<HashMap<String, [u8; 32]>>,
    /// argon2 verifications running now (at most two).
    hashing: tokio::sync::Semaphore,
}

impl Provider {
    /// Load the ID-token key from the store (the first instance to start
    /// makes it; every other gets the same).
    pub async fn load(
        issuer: String,
        clients: Vec<OidcClient>,
        store: &DynStore,
        now: i64,
    ) -> StoreResult<Provider> {
        Ok(Provider {
            issuer,
            clients,
            signers: signing::load(store, now).await?,
            verified: Mutex::new(HashMap::new()),
            hashing: tokio::sync::Semaphore::new(2),
        })
    }

    /// The key tokens for `client` are signed with.
    fn signer_for(&self, client_id: &str) -> &Signer {
        let alg = self
            .client(client_id)
            .map_or(SigningAlg::Rs256, |c| c.id_token_alg);
        self.signers
            .iter()
            .find(|s| s.alg == alg)
            .unwrap_or(&self.signers[0])
    }

    pub fn client(&self, id: &str) -> Option<&OidcClient> {
        self.clients.iter().find(|c| c.id == id)
    }

    /// Has `secret` verified for `client` before (no argon2 needed)?
    pub fn secret_known(&self, client: &OidcClient, secret: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let known = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        known
            .get(&client.id)
            .is_some_and(|d| bool::from(subtle::ConstantTimeEq::ct_eq(&d[..], &digest[..])))
    }

    /// Does `secret` authenticate `client`?
    /// argon2 (tens of milliseconds, 19 MiB) runs on a blocking thread,
    /// two at most at a time; `None` when both are busy (the caller
    /// answers "try again").
    pub async fn secret_matches(&self, client: &OidcClient, secret: &str) -> Option<bool> {
        let Some(phc) = &client.secret_hash else {
            return Some(false);
        };
        if self.secret_known(client, secret) {
            return Some(true);
        }
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let _permit = self.hashing.try_acquire().ok()?;
        let (phc, given) = (phc.clone(), secret.to_string());
        let ok = tokio::task::spawn_blocking(move || secret::verify(&phc, &given))
            .await
            .unwrap_or(false);
        if ok {
            self.verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(client.id.clone(), digest);
        }
        Some(ok)
    }

    /// `{issuer}/.sesame/oidc/...`
    pub fn endpoint(&self, name: &str) -> String {
        format!("{}/.sesame/oidc/{name}", self.issuer)
    }

    /// `/.well-known/openid-configuration` (OIDC Discovery 1.0).
    pub fn discovery(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "authorization_endpoint": self.endpoint("authorize"),
            "token_endpoint": self.endpoint("token"),
            "userinfo_endpoint": self.endpoint("userinfo"),
            "jwks_uri": self.endpoint("jwks.json"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query", "form_post"],
            "grant_types_supported": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"],
            "device_authorization_endpoint": self.endpoint("device_authorization"),
            "revocation_endpoint": self.endpoint("revoke"),
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "end_session_endpoint": self.endpoint("end_session"),
            "backchannel_logout_supported": true,
            "backchannel_logout_session_supported": true,
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": SCOPES,
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "amr", "sid", "email", "email_verified", "name", "preferred_username", "groups"],
            "prompt_values_supported": ["none", "login"],
            "authorization_response_iss_parameter_supported": true,
            "claims_parameter_supported": false,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
        })
    }

    /// The claims of an ID token this provider signed (`id_token_hint`):
    /// signature and issuer checked, expiry not (a hint may be old).
    pub fn read_id_token(&self, token: &str) -> Option<Value> {
        let kid = jsonwebtoken::decode_header(token).ok()?.kid?;
        let signer = self.signers.iter().find(|s| s.kid == kid)?;
        let mut v = jsonwebtoken::Validation::new(signer.algorithm());
        v.validate_exp = false;
        v.validate_aud = false;
        v.set_issuer(&[&self.issuer]);
        v.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(token, &signer.decoding, &v)
            .ok()
            .map(|d| d.claims)
    }

    pub fn jwks(&self) -> Value {
        json!({"keys": self.signers.iter().map(|s| &s.jwk).collect::<Vec<_>>()})
    }

    /// An ID token for `client`, signed RS256.
    pub fn id_token(&self, t: &IdToken<'_>) -> Option<String> {
        let mut claims = user_claims(t.user, t.scope);
        claims.insert("iss".into(), json!(self.issuer));
        claims.insert("aud".into(), json!(t.client_id));
        claims.insert("azp".into(), json!(t.client_id));
        claims.insert("iat".into(), json!(t.now));
        claims.insert("exp".into(), json!(t.now + TOKEN_TTL_SECS));
        claims.insert("auth_time".into(), json!(t.auth_time));
        claims.insert("amr".into(), json!(amr(t.method)));
        claims.insert("sid".into(), json!(t.sid));
        if let Some(n) = t.nonce {
            claims.insert("nonce".into(), json!(n));
        }
        let signer = self.signer_for(t.client_id);
        let mut header = Header::new(signer.algorithm());
        header.kid = Some(signer.kid.clone());
        jsonwebtoken::encode(&header, &claims, &signer.key)
            .inspect_err(|e| tracing::error!(error = %e, "could not sign an ID token"))
            .ok()
    }
}

impl Provider {
    /// A logout token (OIDC Back-Channel Logout 1.0, 2.4) for `client_id`:
    /// the sign-in `sid` of `sub` ended.
    pub fn logout_token(&self, client_id: &str, sub: &str, sid: &str, now: i64) -> Option<String> {
        let claims = json!({
            "iss": self.issuer,
            "aud": client_id,
            "iat": now,
            "exp": now + 120,
            "jti": crate::keys::random_id(16),
            "sub": sub,
            "sid": sid,
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        });
        let signer = self.signer_for(client_id);
        let mut header = Header::new(signer.algorithm());
        header.kid = Some(signer.kid.clone());
        header.typ = Some("logout+jwt".into());
        jsonwebtoken::encode(&header, &claims, &signer.key)
            .inspect_err(|e| tracing::error!(error = %e, "could not sign a logout token"))
            .ok()
    }
}

/// What an ID token says.
pub struct IdToken<'a> {
    pub client_id: &'a str,
    pub user: &'a User,
    pub scope: &'a str,
    pub nonce: Option<&'a str>,
    pub auth_time: i64,
    pub method: AuthMethod,
    /// The sign-in (portal session) it comes from, as RPs see it.
    pub sid: &'a str,
    pub now: i64,
}

/// The body of a token endpoint error (RFC 6749 5.2).
#[derive(Serialize)]
pub struct TokenError {
    pub error: &'static str,
    pub error_description: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_only_its_verifier() {
        // RFC 7636 appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(challenge, verifier));
        assert!(!pkce_matches(challenge, &verifier.replace('d', "e")));
        assert!(!pkce_matches(challenge, "short"));
        assert!(challenge_well_formed(challenge));
        assert!(!challenge_well_formed("abc"));
    }

    #[test]
    fn scopes_need_openid_and_keep_only_known_ones() {
        assert_eq!(scopes("email openid x"), Some("openid email".into()));
        assert_eq!(scopes("email profile"), None);
        assert_eq!(scopes(""), None);
    }

    #[test]
    fn redirect_uris_are_absolute_https_without_patterns() {
        assert!(check_redirect_uri("https://grafana.example.com/login/generic_oauth").is_ok());
        assert!(check_redirect_uri("http://localhost:3000/cb").is_ok());
        assert!(check_redirect_uri("http://grafana.example.com/cb").is_err());
        assert!(check_redirect_uri("https://*.example.com/cb").is_err());
        assert!(check_redirect_uri("https://a.example.com/cb#x").is_err());
        assert!(check_redirect_uri("/cb").is_err());
    }
}
