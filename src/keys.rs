//! The secrets Sesame signs and encrypts with, generated at first start and
//! kept in the store so that a restart (or another instance) logs nobody out.
//!
//! Every secret here has a redacting `Debug`. Rotation is not this module's
//! job yet: one key per purpose.

use std::fmt;

use jsonwebtoken::{DecodingKey, EncodingKey};
use rand::RngCore;

use crate::store::{Store, StoreError, StoreResult};

pub struct Keys {
    /// AES-256-GCM key for the session and pending-login cookies.
    pub cookie: cookie::Key,
    /// HS256 key for magic-link tokens.
    pub link_encoding: EncodingKey,
    pub link_decoding: DecodingKey,
    /// HMAC key for emailed codes as kept in the store.
    pub code_mac: Vec<u8>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys { <redacted> }")
    }
}

fn fresh(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::OsRng.fill_bytes(&mut v);
    v
}

impl Keys {
    pub async fn load(store: &dyn Store) -> StoreResult<Keys> {
        let cookie = store.ensure_secret("cookie.v1", &fresh(64)).await?;
        let link = store.ensure_secret("magic_link.v1", &fresh(32)).await?;
        let code_mac = store.ensure_secret("code_mac.v1", &fresh(32)).await?;
        Keys::from_bytes(&cookie, &link, code_mac)
            .ok_or_else(|| StoreError::Other("stored cookie key is shorter than 64 bytes".into()))
    }

    /// `None` if the cookie key is shorter than 64 bytes.
    pub fn from_bytes(cookie: &[u8], link: &[u8], code_mac: Vec<u8>) -> Option<Keys> {
        Some(Keys {
            cookie: cookie::Key::try_from(cookie).ok()?,
            link_encoding: EncodingKey::from_secret(link),
            link_decoding: DecodingKey::from_secret(link),
            code_mac,
        })
    }
}

/// Random bytes as URL-safe base64, for ids.
pub fn random_id(bytes: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(fresh(bytes))
}
