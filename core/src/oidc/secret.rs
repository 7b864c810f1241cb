//! Client secrets: kept in the config as argon2 PHC hashes, never as
//! themselves; `sesame oidc hash-secret` makes them.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Whether `phc` is an argon2 hash Sesame can check secrets against.
pub fn check_hash(phc: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(phc)
        .map_err(|e| format!("not a PHC hash ({e}); make one with `sesame oidc hash-secret`"))?;
    match parsed.algorithm.as_str() {
        "argon2id" | "argon2i" | "argon2d" => Ok(()),
        other => Err(format!(
            "{other} is not argon2; make a hash with `sesame oidc hash-secret`"
        )),
    }
}

/// The argon2id hash of `secret`, with a fresh salt (RFC 9106's second
/// recommended parameters, the argon2 crate's defaults).
pub fn hash(secret: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Does `secret` match `phc`? False for a hash that does not parse.
pub fn verify(phc: &str, secret: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok()
    })
}

/// A new client secret: 256 random bits, base64url.
pub fn generate() -> String {
    crate::keys::random_id(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_secret_only() {
        let h = hash("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        check_hash(&h).unwrap();
        assert!(verify(&h, "s3cret"));
        assert!(!verify(&h, "s3cret "));
        assert!(!verify("not a hash", "s3cret"));
        assert!(check_hash("s3cret").is_err());
        assert!(check_hash("$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA").is_err());
    }
}
