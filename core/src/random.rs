//! Every random value Sesame makes comes from here: ids, secrets, nonces,
//! codes. Other modules call these functions (clippy's `disallowed-methods`
//! and `disallowed-types` hold the line), so what is random, and from
//! which generator, is read in one place.
//!
//! Secrets and ids come from the operating system's generator; per-request
//! nonces from the thread's ChaCha generator (seeded from the OS, cheaper
//! per call).

#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use rand::{Rng, RngCore};

/// `len` bytes from the operating system's generator.
pub fn bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::OsRng.fill_bytes(&mut v);
    v
}

/// `bytes(len)` as URL-safe base64 without padding, for ids.
pub fn id(len: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes(len))
}

/// A number in `0..below`, uniformly, from the operating system's generator.
pub fn below(below: u32) -> u32 {
    rand::rngs::OsRng.gen_range(0..below)
}

/// A random (version 4) UUID.
pub fn uuid() -> uuid::Uuid {
    uuid::Uuid::new_v4()
}

/// Fill `buf` with a nonce: unique, unpredictable, not secret.
pub fn nonce(buf: &mut [u8]) {
    rand::thread_rng().fill_bytes(buf);
}
