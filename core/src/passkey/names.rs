//! A default name for a new passkey, from the authenticator's AAGUID (read
//! out of the attestation object) where it is one of a few well-known
//! passkey providers. Anything else is just "Passkey".

/// Well-known AAGUIDs of passkey providers (public registry, a small subset).
const KNOWN: &[(&str, &str)] = &[
    (
        "ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4",
        "Google Password Manager",
    ),
    ("adce0002-35bc-c60a-648b-0b25f1f05503", "Chrome on Mac"),
    ("fbfc3007-154e-4ecc-8c0b-6e020557d7bd", "iCloud Keychain"),
    ("08987058-cadc-4b81-b6e1-30de50dcbe96", "Windows Hello"),
    ("9ddd1817-af5a-4672-a2b9-3e3dd95000a9", "Windows Hello"),
    ("6028b017-b1d4-4c02-b4b3-afcdafc96bb2", "Windows Hello"),
    ("bada5566-a7aa-401f-bd96-45619a55120d", "1Password"),
    ("d548826e-79b4-db40-a3d8-11116f7e8349", "Bitwarden"),
    ("53414d53-554e-4700-0000-000000000000", "Samsung Pass"),
];

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
    aaguid(attestation_object)
        .and_then(|g| {
            KNOWN
                .iter()
                .find(|(id, _)| *id == g)
                .map(|(_, name)| (*name).to_string())
        })
        .unwrap_or_else(|| "Passkey".to_string())
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
        assert_eq!(default_name(&object(icloud, 0x45)), "iCloud Keychain");
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
}
