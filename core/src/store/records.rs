//! What the store keeps, as records: users, sessions, passkeys, ceremonies,
//! pending sign-ins and keys, with the modes stored as text (`AuthMethod`,
//! `CeremonyKind`, `KeyPurpose`). Secrets in them never reach `Debug`.

use std::fmt;

use super::ids::{PasskeyId, PendingId, SessionHash, UserId};
use crate::email::Email;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub name: Option<String>,
    pub groups: Vec<String>,
    pub disabled: bool,
    pub created_at: i64,
}

/// How a session was signed in; sent to apps as `Sesame-Auth-Method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    MagicLink,
    Code,
    Passkey,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::MagicLink => "magic_link",
            AuthMethod::Code => "code",
            AuthMethod::Passkey => "passkey",
        }
    }

    pub fn parse(s: &str) -> Option<AuthMethod> {
        match s {
            "magic_link" => Some(AuthMethod::MagicLink),
            "code" => Some(AuthMethod::Code),
            "passkey" => Some(AuthMethod::Passkey),
            _ => None,
        }
    }
}

/// A server-side session. `id_hash` is SHA-256 of the session id, so a copy of
/// the database does not hold live session ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id_hash: SessionHash,
    pub user_id: UserId,
    pub email: Email,
    pub name: Option<String>,
    pub groups: Vec<String>,
    pub auth_method: AuthMethod,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_seen: i64,
    pub revoked: bool,
    /// The portal session this site session was handed off from: revoked
    /// with it. `None` for a session signed in on its own.
    pub parent: Option<SessionHash>,
    /// Where it was signed in from, for the person's list of their
    /// sessions: only [`SessionStore::list_sessions`] reads it (a session
    /// checked per request has no use for it), and only sessions created
    /// by a browser or program have one.
    ///
    /// [`SessionStore::list_sessions`]: super::SessionStore::list_sessions
    pub device: Option<Box<Device>>,
}

/// The browser or program a session was signed in with, as a person would
/// recognise it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// "Firefox on Linux" (from its User-Agent; see
    /// `signin::cross_device::browser`).
    pub agent: String,
    /// The client's address when it signed in.
    pub client: String,
}

/// A registered passkey. `credential` is webauthn-rs's serialised `Passkey`
/// (public key, counter, flags): nothing secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyRecord {
    /// Base64url of the credential id.
    pub id: PasskeyId,
    pub user_id: UserId,
    pub name: String,
    pub credential: String,
    pub counter: i64,
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// Which WebAuthn ceremony a stored state belongs to (stored as text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyKind {
    /// Adding a passkey to a signed-in account.
    Register,
    /// Signing in with the passkeys of an address given first.
    Login,
    /// Signing in with whatever passkey the browser offers.
    Discoverable,
}

impl CeremonyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CeremonyKind::Register => "register",
            CeremonyKind::Login => "login",
            CeremonyKind::Discoverable => "discoverable",
        }
    }

    pub fn parse(s: &str) -> Option<CeremonyKind> {
        [
            CeremonyKind::Register,
            CeremonyKind::Login,
            CeremonyKind::Discoverable,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// Server-side state of a WebAuthn ceremony, keyed by its challenge.
#[derive(Clone, PartialEq, Eq)]
pub struct Ceremony {
    pub id: String,
    pub kind: CeremonyKind,
    pub user_id: Option<UserId>,
    pub state: String,
    pub return_to: String,
    pub expires_at: i64,
}

impl fmt::Debug for Ceremony {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ceremony")
            .field("kind", &self.kind)
            .field("user_id", &self.user_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A link-and-code sign-in that was asked for and not yet used.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingLogin {
    /// Also the `jti` of the magic-link token.
    pub id: PendingId,
    pub email: Email,
    pub site: String,
    pub return_to: String,
    /// HMAC of the emailed code; never the code itself.
    pub code_mac: Vec<u8>,
    pub expires_at: i64,
    /// Wrong and right codes typed.
    pub attempts: u32,
    /// Times its confirm page was opened.
    pub views: u32,
    /// Decided: used, approved or cancelled (see `decision`).
    pub consumed: bool,
    /// When it was asked for.
    pub created_at: i64,
    /// The asking browser's family and OS ("Firefox on Linux"), as the
    /// confirm page shows it on another device.
    pub asked_agent: String,
    /// The asking browser's network, coarsely ("203.0.113.x").
    pub asked_net: String,
    /// How it was decided, once it was.
    pub decision: Option<Decision>,
    /// An approval the asking browser has turned into its session.
    pub collected: bool,
}

/// How a pending sign-in was decided (at most once, atomically).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Its link or code was used.
    Used,
    /// Approved on another device, for the asking browser.
    Approved,
    /// Another device picked a number the asking browser did not show.
    WrongNumber,
    /// Another device said "this wasn't me".
    Denied,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Used => "used",
            Decision::Approved => "approved",
            Decision::WrongNumber => "wrong_number",
            Decision::Denied => "denied",
        }
    }

    pub fn parse(s: &str) -> Option<Decision> {
        [
            Decision::Used,
            Decision::Approved,
            Decision::WrongNumber,
            Decision::Denied,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// What a [`DeviceRequest`] signs in: a browser that shows a QR code, or
/// a program given a user code (the device grant, RFC 8628).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Qr,
    Device,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Qr => "qr",
            RequestKind::Device => "device",
        }
    }

    pub fn parse(s: &str) -> Option<RequestKind> {
        [RequestKind::Qr, RequestKind::Device]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// A sign-in asked for without an address, approved from a device that is
/// signed in already. `id` is what the asking side holds (a random id in a
/// sealed cookie; for the device grant the hash of its device code);
/// `user_code` is the MAC of the short code the person types or scans.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceRequest {
    pub id: String,
    pub kind: RequestKind,
    pub user_code: String,
    pub site: String,
    pub client_id: Option<String>,
    pub scope: String,
    pub return_to: String,
    pub asked_agent: String,
    pub asked_net: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// `Approved`, `WrongNumber` or `Denied`, once decided.
    pub decision: Option<Decision>,
    /// Who approved it, and how their session signed in.
    pub user_id: Option<UserId>,
    pub auth_method: Option<AuthMethod>,
    pub collected: bool,
}

impl fmt::Debug for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceRequest")
            .field("kind", &self.kind)
            .field("site", &self.site)
            .field("client_id", &self.client_id)
            .field("expires_at", &self.expires_at)
            .field("decision", &self.decision)
            .field("user_id", &self.user_id)
            .field("collected", &self.collected)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingLogin")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("site", &self.site)
            .field("expires_at", &self.expires_at)
            .field("attempts", &self.attempts)
            .field("views", &self.views)
            .field("consumed", &self.consumed)
            .field("decision", &self.decision)
            .finish_non_exhaustive()
    }
}

/// What a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyPurpose {
    /// Seals session and pending-login cookies (AES-256-GCM, 64-byte master).
    Cookie,
    /// Signs magic-link tokens (HS256).
    Link,
    /// Signs the `Sesame-Assertion` sent to apps (EdDSA, Ed25519 seed).
    Assertion,
}

impl KeyPurpose {
    pub const ALL: [KeyPurpose; 3] = [KeyPurpose::Cookie, KeyPurpose::Link, KeyPurpose::Assertion];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Cookie => "cookie",
            KeyPurpose::Link => "link",
            KeyPurpose::Assertion => "assertion",
        }
    }

    pub fn parse(s: &str) -> Option<KeyPurpose> {
        match s {
            "cookie" => Some(KeyPurpose::Cookie),
            "link" => Some(KeyPurpose::Link),
            "assertion" => Some(KeyPurpose::Assertion),
            _ => None,
        }
    }
}

/// One key. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub kid: String,
    pub purpose: KeyPurpose,
    pub secret: Vec<u8>,
    pub created_at: i64,
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("kid", &self.kid)
            .field("purpose", &self.purpose)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// An OpenID Connect authorization code, by the hash of the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcCode {
    pub code_hash: String,
    pub client_id: String,
    pub redirect_uri: String,
    /// The portal session it was issued for.
    pub session: SessionHash,
    pub user_id: UserId,
    pub scope: String,
    pub nonce: Option<String>,
    /// PKCE S256 challenge, if the client sent one.
    pub code_challenge: Option<String>,
    pub auth_time: i64,
    pub auth_method: AuthMethod,
    pub expires_at: i64,
}

/// What taking a code found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeTaken {
    /// Its first use.
    Fresh(OidcCode),
    /// Used before; the grant the first use made, if it got that far.
    Reused { grant: Option<String> },
    /// No such code, or expired.
    Unknown,
}

/// A token to store: the hash, `access` or `refresh`, and its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub hash: String,
    pub kind: &'static str,
    pub expires_at: i64,
    /// Its own scope, narrower than the grant's; `None`: the grant's.
    pub scope: Option<String>,
}

/// What using a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    Fresh(OidcGrant),
    /// Used before: its grant (the family to revoke).
    Reused {
        grant: String,
    },
    /// Unknown, expired, or its grant or sign-in ended.
    Unknown,
}

/// What a client was given for one sign-in: its tokens hang off it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcGrant {
    pub id: String,
    pub client_id: String,
    pub user_id: UserId,
    pub session: SessionHash,
    pub scope: String,
    pub auth_time: i64,
    pub auth_method: AuthMethod,
    pub created_at: i64,
}

/// A single-use code the portal hands a site after a sign-in: the site
/// turns it into a session of its own, bound to the site and to the state
/// cookie it set before sending the browser to the portal. Only hashes of
/// the code and the state are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    pub code_hash: String,
    /// The name of the site it is for.
    pub site: String,
    pub state_hash: String,
    /// The portal session it comes from.
    pub session: SessionHash,
    pub return_to: String,
    pub expires_at: i64,
}
