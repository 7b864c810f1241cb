//! Magic-link tokens: HS256 JWTs with `jti`, `sub`, `aud`, `iat`, `exp`.
//!
//! Verification checks signature and audience here and expiry against the
//! injected clock; single use is the store's job (`consume_pending`).

use std::fmt;

use jsonwebtoken::{decode, decode_header, encode, Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::keys::Keys;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub jti: String,
    pub sub: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
}

/// A minted token. Its `Debug` never shows the token.
pub struct Token(pub String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token of ours: bad shape, bad signature, other site.
    Invalid,
    /// Genuine but past its `exp`.
    Expired(Claims),
}

pub fn mint(keys: &Keys, claims: &Claims) -> Token {
    // HS256 encoding of a plain struct cannot fail; an empty token would only
    // be refused as invalid, never accepted.
    let token = keys.with_link_signer(|kid, key| {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.to_string());
        encode(&header, claims, key).unwrap_or_default()
    });
    Token(token.unwrap_or_default())
}

pub fn verify(keys: &Keys, token: &str, audience: &str, now: i64) -> Result<Claims, TokenError> {
    if token.len() > 2048 {
        return Err(TokenError::Invalid);
    }
    let mut v = Validation::new(Algorithm::HS256);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "aud", "sub", "jti"]);
    v.validate_exp = false;
    v.leeway = 0;
    let kid = decode_header(token).map_err(|_| TokenError::Invalid)?.kid;
    let claims = keys
        .with_link_verifier(kid.as_deref(), |key| decode::<Claims>(token, key, &v).ok())
        .ok_or(TokenError::Invalid)?
        .claims;
    if claims.exp <= now {
        return Err(TokenError::Expired(claims));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::fixed(&[7u8; 64], &[9u8; 32], vec![1u8; 32]).unwrap()
    }

    fn claims(exp: i64) -> Claims {
        Claims {
            jti: "j1".into(),
            sub: "ada@example.com".into(),
            aud: "https://a.example.com".into(),
            iat: 0,
            exp,
        }
    }

    #[test]
    fn roundtrip_and_expiry() {
        let k = keys();
        let t = mint(&k, &claims(100));
        assert_eq!(
            verify(&k, &t.0, "https://a.example.com", 50).unwrap().jti,
            "j1"
        );
        assert!(matches!(
            verify(&k, &t.0, "https://a.example.com", 100),
            Err(TokenError::Expired(_))
        ));
    }

    #[test]
    fn refuses_other_site_tamper_and_other_key() {
        let k = keys();
        let t = mint(&k, &claims(100));
        assert_eq!(
            verify(&k, &t.0, "https://b.example.com", 50),
            Err(TokenError::Invalid)
        );
        let mut bad = t.0.clone();
        bad.pop();
        assert_eq!(
            verify(&k, &bad, "https://a.example.com", 50),
            Err(TokenError::Invalid)
        );
        let other = Keys::fixed(&[7u8; 64], &[8u8; 32], vec![]).unwrap();
        assert_eq!(
            verify(&other, &t.0, "https://a.example.com", 50),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            verify(&k, "garbage", "https://a.example.com", 50),
            Err(TokenError::Invalid)
        );
    }
}
