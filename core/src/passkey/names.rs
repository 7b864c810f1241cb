//! A default name for a new passkey, from the authenticator's AAGUID (read
//! out of the attestation object): the passkey provider's name in
//! passkeydeveloper's public list of AAGUIDs ("iCloud Keychain",
//! "1Password"), bundled in `core/assets/aaguids.json` with the date of the
//! list (`scripts/refresh-aaguids` updates it). Anything not listed, or a
//! list that is empty or unreadable, gives "Passkey".

use std::collections::HashMap;
use std::sync::OnceLock;

/// The bundled list.
const LIST: &str = include_str!("../../assets/aaguids.json");

/// What a passkey is called when its provider is not known.
const FALLBACK: &str = "Passkey";

#[derive(serde::Deserialize)]
struct Listed {
    /// The list's last change (`YYYY-MM-DD`).
    date: String,
    names: HashMap<String, String>,
}

fn listed() -> Option<&'static Listed> {
    static LISTED: OnceLock<Option<Listed>> = OnceLock::new();
    LISTED.get_or_init(|| parse(LIST)).as_ref()
}

/// A list as the refresh script writes it; `None` (logged) if it is not
/// one (the retired list is an empty object).
fn parse(text: &str) -> Option<Listed> {
    match serde_json::from_str::<Listed>(text) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(error = %e, "the bundled AAGUID list does not parse; new passkeys are named \"Passkey\"");
            None
        }
    }
}

/// `aaguid`'s provider in `list`, or [`FALLBACK`].
fn name_in<'a>(list: Option<&'a Listed>, aaguid: &str) -> &'a str {
    list.and_then(|l| l.names.get(aaguid))
        .map(String::as_str)
        .filter(|n| !n.trim().is_empty())
        .unwrap_or(FALLBACK)
}

/// How many providers the bundled list names, and its date.
pub fn list_info() -> (usize, &'static str) {
    listed().map_or((0, "none"), |l| (l.names.len(), l.date.as_str()))
}

/// The AAGUID in a CBOR attestation object, as a lower-case UUID string.
/// Reads only the `authData` byte string: rpIdHash (32) | flags (1) |
/// signCount (4) | AAGUID (16) | ...
pub fn aaguid(attestation_object: &[u8]) -> Option<String> {
    let key = b"\x68authData";
    let at = attestation_object
        .windows(key.len())
        .position(|w| w == key)?
        + key.len();
    let (len, start) = match *attestation_object.get(at)? {
        b @ 0x40..=0x57 => (usize::from(b - 0x40), at + 1),
        0x58 => (usize::from(*attestation_object.get(at + 1)?), at + 2),
        0x59 => (
            usize::from(u16::from_be_bytes([
                *attestation_object.get(at + 1)?,
                *attestation_object.get(at + 2)?,
            ])),
            at + 3,
        ),
        _ => return None,
    };
    let auth_data = attestation_object.get(start..start + len)?;
    let flags = *auth_data.get(32)?;
    if flags & 0x40 == 0 {
        return None; // no attested credential data
    }
    let g = auth_data.get(37..53)?;
    let hex: String = g.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// The default name for a passkey whose attestation object this is.
pub fn default_name(attestation_object: &[u8]) -> String {
    match aaguid(attestation_object) {
        Some(g) => name_in(listed(), &g).to_string(),
        None => FALLBACK.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(aaguid: [u8; 16], flags: u8) -> Vec<u8> {
        let mut auth = vec![0u8; 32];
        auth.push(flags);
        auth.extend([0, 0, 0, 1]);
        auth.extend(aaguid);
        auth.extend([0, 2, 9, 9]);
        let mut o = vec![0xa3, 0x63];
        o.extend(b"fmt");
        o.extend([0x64]);
        o.extend(b"none");
        o.extend([0x67]);
        o.extend(b"attStmt");
        o.push(0xa0);
        o.extend(b"\x68authData");
        o.push(0x58);
        o.push(auth.len() as u8);
        o.extend(auth);
        o
    }

    #[test]
    fn names_known_providers_and_falls_back() {
        let icloud = [
            0xfb, 0xfc, 0x30, 0x07, 0x15, 0x4e, 0x4e, 0xcc, 0x8c, 0x0b, 0x6e, 0x02, 0x05, 0x57,
            0xd7, 0xbd,
        ];
        assert_eq!(
            aaguid(&object(icloud, 0x45)).as_deref(),
            Some("fbfc3007-154e-4ecc-8c0b-6e020557d7bd")
        );
        // Named as the bundled list names it.
        assert_eq!(default_name(&object(icloud, 0x45)), "Apple Passwords");
        let one_password = [
            0xba, 0xda, 0x55, 0x66, 0xa7, 0xaa, 0x40, 0x1f, 0xbd, 0x96, 0x45, 0x61, 0x9a, 0x55,
            0x12, 0x0d,
        ];
        assert_eq!(default_name(&object(one_password, 0x45)), "1Password");
        assert_eq!(default_name(&object([0; 16], 0x45)), "Passkey");
        assert_eq!(
            default_name(&object(icloud, 0x05)),
            "Passkey",
            "no attested data"
        );
        assert_eq!(default_name(b"garbage"), "Passkey");
        assert_eq!(
            default_name(&object(icloud, 0x45)[..40]),
            "Passkey",
            "truncated"
        );
    }

    #[test]
    fn the_bundled_list_is_whole_and_dated() {
        let (count, date) = list_info();
        assert!(count >= 50, "{count} names");
        assert_eq!(date.len(), 10, "{date}");
        let listed = listed().unwrap();
        for (aaguid, name) in &listed.names {
            assert_eq!(aaguid.len(), 36, "{aaguid}");
            assert_eq!(*aaguid, aaguid.to_lowercase());
            assert!(!name.trim().is_empty(), "{aaguid}");
        }
    }

    #[test]
    fn an_empty_or_retired_list_names_every_passkey_passkey() {
        let g = "bada5566-a7aa-401f-bd96-45619a55120d";
        let whole = parse(LIST);
        assert_eq!(name_in(whole.as_ref(), g), "1Password");
        let empty = parse(r#"{"source": "", "date": "2027-01-01", "names": {}}"#);
        assert!(empty.is_some());
        assert_eq!(name_in(empty.as_ref(), g), "Passkey");
        // What the list becomes once retired: an empty object.
        assert!(parse("{}").is_none());
        assert_eq!(name_in(None, g), "Passkey");
        let blank = parse(&format!(r#"{{"date": "x", "names": {{"{g}": "  "}}}}"#));
        assert_eq!(name_in(blank.as_ref(), g), "Passkey");
    }
}
