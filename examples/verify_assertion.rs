//! Verify a `Sesame-Assertion` header (an EdDSA JWT) in Rust, with the
//! `jsonwebtoken` crate (feature `rust_crypto`), `reqwest` (features `json`
//! and a TLS backend), `serde_json` and `tokio`:
//!
//! ```text
//! cargo run --example verify_assertion -- \
//!     https://app.example.com/.sesame/jwks.json https://app.example.com "$TOKEN"
//! ```
//!
//! On success prints the claims as one line of JSON and exits 0; otherwise
//! prints why to stderr and exits 1. In a web app, fetch the JWKS once, keep
//! the `DecodingKey`s by kid, and refetch only for a kid you have not seen.
//!
//! With exactly one of jsonwebtoken's `rust_crypto` and `aws_lc_rs` features
//! enabled, as here and in Sesame, jsonwebtoken picks its crypto provider by
//! itself; with both, install one first with
//! `jsonwebtoken::crypto::CryptoProvider::install_default`.

use std::error::Error;
use std::process::ExitCode;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// Clock skew tolerated on `exp`, in seconds.
const LEEWAY_SECONDS: u64 = 30;

pub async fn verify(jwks_url: &str, audience: &str, token: &str) -> Result<Value, Box<dyn Error>> {
    // The algorithm is fixed here, never taken from the token.
    let header = decode_header(token)?;
    if header.alg != Algorithm::EdDSA {
        return Err(format!("alg is {:?}, not EdDSA", header.alg).into());
    }
    let kid = header.kid.ok_or("the token has no kid")?;

    // Fetch the JWKS and pick the key the token names.
    let jwks: JwkSet = reqwest::get(jwks_url)
        .await?
        .error_for_status()?
        .json()
        .await?;
    let jwk = jwks
        .find(&kid)
        .ok_or_else(|| format!("no key {kid} in the JWKS"))?;
    let key = DecodingKey::from_jwk(jwk)?;

    // decode() checks the signature, then the claims: exp (always), and iss
    // and aud as set here. Sesame sets both to the site's URL; aud may be a
    // string or an array. Requiring them refuses a token that lacks them.
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.leeway = LEEWAY_SECONDS;
    Ok(decode::<Value>(token, &key, &validation)?.claims)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, jwks_url, audience, token] = args.as_slice() else {
        eprintln!("usage: verify_assertion JWKS_URL AUDIENCE TOKEN");
        return ExitCode::FAILURE;
    };
    match verify(jwks_url, audience, token).await {
        Ok(claims) => {
            println!("{claims}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("invalid assertion: {e}");
            ExitCode::FAILURE
        }
    }
}
