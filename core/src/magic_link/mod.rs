//! The parts of a magic link and its code: the signed token (`token.rs`),
//! the six-digit code and the MAC the store keeps of it, and the email that
//! carries both.
//!
//! Issuing, checking and consuming a sign-in is the service in `signin/`;
//! sending mail happens in `mail/`.

pub mod token;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::email::Email;
use crate::keys::Keys;
use crate::mail::OutgoingMail;
use crate::pages::Pages;

/// A six-digit code as typed by a person. `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct Code(String);

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Code(<redacted>)")
    }
}

impl Code {
    pub fn generate() -> Code {
        Code(format!("{:06}", crate::random::below(1_000_000)))
    }

    /// Accept six digits, ignoring spaces and dashes people type in.
    pub fn parse(raw: &str) -> Option<Code> {
        let digits: String = raw.chars().filter(|c| *c != ' ' && *c != '-').collect();
        (digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(Code(digits))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The MAC of a code as kept in the store, bound to its pending login.
pub fn code_mac(keys: &Keys, pending_id: &str, code: &Code) -> Vec<u8> {
    // HMAC takes keys of any length; an empty MAC would never match anyway.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&keys.code_mac) else {
        return Vec::new();
    };
    mac.update(pending_id.as_bytes());
    mac.update(b":");
    mac.update(code.0.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

pub fn code_matches(keys: &Keys, pending_id: &str, code: &Code, stored: &[u8]) -> bool {
    code_mac(keys, pending_id, code).ct_eq(stored).into()
}

#[derive(Serialize)]
struct EmailVars<'a> {
    site_name: &'a str,
    link: &'a str,
    code: &'a str,
    ttl_minutes: u64,
    /// "Firefox on Linux (network 203.0.113.x)".
    requested_from: &'a str,
}

/// Compose the sign-in email from `assets/email/`.
pub fn compose(
    pages: &Pages,
    to: &Email,
    site_name: &str,
    link: &str,
    code: &Code,
    ttl_minutes: u64,
    requested_from: &str,
) -> OutgoingMail {
    let vars = EmailVars {
        site_name,
        link,
        code: code.as_str(),
        ttl_minutes,
        requested_from,
    };
    OutgoingMail {
        to: to.clone(),
        subject: format!("Sign in to {site_name}"),
        text: pages.render("magic_link.txt", &vars),
        html: pages.render("magic_link.html", &vars),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let c = Code::generate();
        assert_eq!(c.as_str().len(), 6);
        assert_eq!(Code::parse("123 456").unwrap().as_str(), "123456");
        assert!(Code::parse("12345").is_none());
        assert!(Code::parse("12345a").is_none());
        assert_eq!(format!("{c:?}"), "Code(<redacted>)");
    }

    #[test]
    fn mac_binds_code_to_login() {
        let keys = Keys::fixed(&[1u8; 64], &[2u8; 32], vec![3u8; 32]).unwrap();
        let c = Code::parse("123456").unwrap();
        let m = code_mac(&keys, "p1", &c);
        assert!(code_matches(&keys, "p1", &c, &m));
        assert!(!code_matches(&keys, "p2", &c, &m));
        assert!(!code_matches(
            &keys,
            "p1",
            &Code::parse("123457").unwrap(),
            &m
        ));
    }
}
