//! The keys ID tokens (and logout tokens) are signed with: RS256 (the one
//! every client supports, the default), ES256 and EdDSA, for the clients
//! that ask (`id_token_signed_response_alg`). Each is made once, by the
//! first instance to start, and kept in the store's secrets.

use base64::prelude::{Engine, BASE64_URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePrivateKey as _;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::store::{DynStore, StoreError, StoreResult};

/// The algorithms a client may have its ID tokens signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlg {
    Rs256,
    Es256,
    EdDsa,
}

impl SigningAlg {
    pub const ALL: [SigningAlg; 3] = [SigningAlg::Rs256, SigningAlg::Es256, SigningAlg::EdDsa];

    pub fn name(self) -> &'static str {
        match self {
            SigningAlg::Rs256 => "RS256",
            SigningAlg::Es256 => "ES256",
            SigningAlg::EdDsa => "EdDSA",
        }
    }

    pub fn parse(s: &str) -> Option<SigningAlg> {
        SigningAlg::ALL.into_iter().find(|a| a.name() == s)
    }

    fn jwt(self) -> Algorithm {
        match self {
            SigningAlg::Rs256 => Algorithm::RS256,
            SigningAlg::Es256 => Algorithm::ES256,
            SigningAlg::EdDsa => Algorithm::EdDSA,
        }
    }
}

/// One signing key, with what verifies it and its JWK.
pub struct Signer {
    pub alg: SigningAlg,
    pub kid: String,
    pub key: EncodingKey,
    pub decoding: DecodingKey,
    pub jwk: Value,
}

impl Signer {
    pub fn algorithm(&self) -> Algorithm {
        self.alg.jwt()
    }
}

fn kid(prefix: &str, public: &[u8]) -> String {
    format!(
        "{prefix}-{}",
        &BASE64_URL_SAFE_NO_PAD.encode(Sha256::digest(public))[..12]
    )
}

fn bad(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!("OIDC {what} key: {e}"))
}

/// The three keys, made on first use (a fresh candidate at every start,
/// kept only if the store has none yet: the first instance wins).
pub async fn load(store: &DynStore, now: i64) -> StoreResult<Vec<Signer>> {
    let rsa_fresh = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
        .map_err(|e| bad("RSA", e))?
        .to_pkcs1_der()
        .map_err(|e| bad("RSA", e))?;
    let rsa_der = store
        .ensure_secret("oidc_rs256.v1", rsa_fresh.as_bytes(), now)
        .await?;
    let ec_fresh = p256::SecretKey::random(&mut rand::rngs::OsRng).to_bytes();
    let ec = store.ensure_secret("oidc_es256.v1", &ec_fresh, now).await?;
    let ed_fresh = crate::random::bytes(32);
    let ed = store.ensure_secret("oidc_eddsa.v1", &ed_fresh, now).await?;
    Ok(vec![rs256(&rsa_der)?, es256(&ec)?, eddsa(&ed)?])
}

fn rs256(der: &[u8]) -> StoreResult<Signer> {
    let private = rsa::RsaPrivateKey::from_pkcs1_der(der).map_err(|e| bad("RSA", e))?;
    let public = private.to_public_key();
    let n = BASE64_URL_SAFE_NO_PAD.encode(public.n().to_bytes_be());
    let e = BASE64_URL_SAFE_NO_PAD.encode(public.e().to_bytes_be());
    let kid = kid("rs256", n.as_bytes());
    Ok(Signer {
        alg: SigningAlg::Rs256,
        decoding: DecodingKey::from_rsa_components(&n, &e).map_err(|e| bad("RSA", e))?,
        jwk: json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e}),
        key: EncodingKey::from_rsa_der(der),
        kid,
    })
}

fn es256(secret: &[u8]) -> StoreResult<Signer> {
    let key = p256::SecretKey::from_slice(secret).map_err(|e| bad("P-256", e))?;
    let der = key.to_pkcs8_der().map_err(|e| bad("P-256", e))?;
    let point = key.public_key().to_encoded_point(false);
    let (Some(x), Some(y)) = (point.x(), point.y()) else {
        return Err(bad("P-256", "no affine point"));
    };
    let (x, y) = (
        BASE64_URL_SAFE_NO_PAD.encode(x),
        BASE64_URL_SAFE_NO_PAD.encode(y),
    );
    let kid = kid("es256", point.as_bytes());
    Ok(Signer {
        alg: SigningAlg::Es256,
        decoding: DecodingKey::from_ec_components(&x, &y).map_err(|e| bad("P-256", e))?,
        jwk: json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid, "x": x, "y": y}),
        key: EncodingKey::from_ec_der(der.as_bytes()),
        kid,
    })
}

fn eddsa(seed: &[u8]) -> StoreResult<Signer> {
    let seed: [u8; 32] = seed
        .try_into()
        .map_err(|_| bad("Ed25519", "not 32 bytes"))?;
    let public = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes();
    let x = BASE64_URL_SAFE_NO_PAD.encode(public);
    let kid = kid("eddsa", &public);
    Ok(Signer {
        alg: SigningAlg::EdDsa,
        decoding: DecodingKey::from_ed_components(&x).map_err(|e| bad("Ed25519", e))?,
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid, "x": x}),
        key: EncodingKey::from_ed_der(&crate::keys::ed25519_pkcs8(&seed)),
        kid,
    })
}
