//! Verifying a magic-link token: any text is refused or accepted as a token
//! Sesame minted for this audience, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sesame::keys::Keys;
use sesame::magic_link::token;

fuzz_target!(|data: &[u8]| {
    let Some(keys) = Keys::fixed(&[7u8; 64], &[8u8; 32], vec![9u8; 32]) else {
        return;
    };
    let text = String::from_utf8_lossy(data);
    if let Ok(claims) = token::verify(&keys, &text, "https://a.example.com", 1_000) {
        assert_eq!(claims.aud, "https://a.example.com");
        assert!(claims.exp > 1_000);
    }
});
