//! The validated configuration: the typed values Sesame runs with.
//!
//! `Config::load` reads a file, `Config::from_toml` parses text; both collect
//! every problem as a [`ConfigError`] naming its key path (`site[0].upstream`)
//! instead of stopping at the first. The serde mirror of the file is in
//! `file.rs`, the rules that turn one into the other in `validate/`; host
//! names are looked up and certificate files read only through
//! [`Outside`] (the system's, or a test's), never the store or the clock.

pub mod diff;
mod file;
mod outside;
mod validate;

pub use outside::{Outside, System};

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use file::FileConfig;
use url::Url;

use crate::email::Email;

/// Which headers carry the original request to `/.sesame/auth`.
#[derive(Debug, serde::Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardAuthHeaders {
    /// `X-Forwarded-Host`, `-Uri`, `-Method`: what Traefik and Caddy set
    /// (and the shipped nginx example).
    #[default]
    XForwarded,
    /// `X-Original-Host`, `-URI`, `-Method`: nginx `auth_request` setups
    /// written for other gateways.
    XOriginal,
}

/// Where a new process takes the sockets over unless
/// `server.upgrade_socket` says otherwise: systemd's
/// `RuntimeDirectory=sesame`, a directory only Sesame's user writes to.
pub const DEFAULT_UPGRADE_SOCKET: &str = "/run/sesame/upgrade.sock";

/// Where `server.access_log` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// `"-"`: standard output, between the log lines (each line is JSON on
    /// its own; the service manager's journal keeps both).
    Stdout,
    /// A file, opened for appending (created if missing) at start and at
    /// every reload (`SIGHUP`), which is how logrotate's `postrotate` has
    /// Sesame write to a new one.
    File(PathBuf),
}

/// One problem in a config file, named by its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a config file, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub admin_listen: SocketAddr,
    /// Peers whose X-Forwarded-* headers are believed (none by default).
    pub trusted_proxies: crate::client_addr::TrustedProxies,
    /// The header family a trusted proxy names the original request with,
    /// at `/.sesame/auth`.
    pub forward_auth_headers: ForwardAuthHeaders,
    pub threads: usize,
    /// Whether the proxy's worker threads take requests from each other
    /// (one tokio runtime for all of them) or each runs its own event loop
    /// (the default, cheaper per request).
    pub work_stealing: bool,
    /// HTTPS listeners (`[[server.tls]]`, grouped by address).
    pub tls: Vec<TlsListener>,
    /// How often certificate files are checked for changes.
    pub tls_reload_interval: Duration,
    /// Where a new process takes the listening sockets over from this one
    /// (a zero-downtime upgrade): a Unix socket in a directory only
    /// Sesame's user may write to.
    pub upgrade_socket: PathBuf,
    /// How long a process replaced by a reload or an upgrade, or told to
    /// stop, may go on with the requests and WebSocket tunnels in hand.
    pub drain_timeout: Duration,
    /// One JSON line per request the gateway answers (`server.access_log`),
    /// if set.
    pub access_log: Option<AccessLogTarget>,
    pub rp_id: String,
    pub rp_name: String,
    /// Offer to add a passkey right after a sign-in by email.
    pub passkey_prompt: bool,
    /// Email the account when it signs in from a browser it has not used.
    pub notify_new_device: bool,
    pub session: SessionConfig,
    pub magic_link: MagicLinkConfig,
    pub store: StoreConfig,
    /// How long a replaced key still verifies (default: the session lifetime,
    /// so a rotation signs nobody out).
    pub key_grace: Duration,
    pub mail: MailConfig,
    pub signup: Signup,
    pub rate_limit: RateLimitConfig,
    pub sites: Vec<Site>,
    /// `[portal]`: the one origin of every sign-in page and passkey
    /// ceremony; sites get their sessions from it by a handoff. `None`:
    /// each site serves its own pages under `/.sesame/`.
    pub portal: Option<Site>,
    /// `[[oidc.client]]`: apps that sign people in through the portal by
    /// OpenID Connect.
    pub oidc_clients: Vec<OidcClient>,
}

/// An OpenID Connect client (relying party) of the portal.
#[derive(Clone)]
pub struct OidcClient {
    pub id: String,
    pub name: String,
    /// PHC string of the client secret's hash (argon2); `None` for a
    /// public client, which must use PKCE.
    pub secret_hash: Option<String>,
    /// Matched exactly, character for character.
    pub redirect_uris: Vec<String>,
    /// Where RP-initiated logout may send the browser (exact).
    pub post_logout_redirect_uris: Vec<String>,
    /// Where a logout token is posted when a sign-in the client holds a
    /// grant of ends (OIDC Back-Channel Logout 1.0).
    pub backchannel_logout_uri: Option<String>,
    /// What its ID tokens are signed with (RS256 by default).
    pub id_token_alg: crate::oidc::SigningAlg,
    /// Who may use this app (empty lists: everyone signed in).
    pub admission: Admission,
    pub require_passkey: bool,
    /// May use the device grant (RFC 8628): a program shows a code, the
    /// person approves it on a signed-in device.
    pub device_grant: bool,
}

impl OidcClient {
    pub fn is_public(&self) -> bool {
        self.secret_hash.is_none()
    }
}

impl fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcClient")
            .field("id", &self.id)
            .field("redirect_uris", &self.redirect_uris)
            .field("public", &self.is_public())
            .finish_non_exhaustive()
    }
}

/// One HTTPS listener and the certificates it presents (chosen by SNI).
#[derive(Debug, Clone)]
pub struct TlsListener {
    pub listen: SocketAddr,
    pub certs: Vec<crate::tls::CertFiles>,
    /// Offer HTTP/2 by ALPN (default on).
    pub http2: bool,
}

/// One entry of a site's `upstream` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAddr {
    /// The host name and port to look up again while running (before each
    /// health check round); `None` for an `ip:port`, which never changes.
    pub name: Option<(String, u16)>,
    /// The address when the config was read: the first the name gave.
    pub addr: SocketAddr,
}

/// TLS from Sesame to a site's upstream app.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// The name sent as SNI and checked against the app's certificate.
    pub sni: String,
    /// CA file to trust instead of the system roots.
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub cookie_name: String,
    pub cookie_domain: Option<String>,
    pub lifetime: Duration,
    pub idle_timeout: Duration,
    /// While the store is unreachable, sessions verified before keep working
    /// this long (from `[store] outage_grace`).
    pub outage_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct MagicLinkConfig {
    pub ttl: Duration,
    pub code_attempts: u32,
}

#[derive(Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// SQLite database file; created with its folder if missing.
    Sqlite { path: PathBuf },
    /// PostgreSQL database shared by several instances; the URL may carry a
    /// password, so `Debug` shows only its host.
    Postgres { url: String },
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreConfig::Sqlite { path } => write!(f, "Sqlite({})", path.display()),
            StoreConfig::Postgres { url } => match Url::parse(url) {
                Ok(u) => write!(f, "Postgres({}{})", u.host_str().unwrap_or(""), u.path()),
                Err(_) => f.write_str("Postgres(<invalid>)"),
            },
        }
    }
}

#[derive(Clone)]
pub enum MailTransport {
    /// Print the message on standard output (for trying Sesame out).
    Console,
    /// Send by SMTP; the URL carries TLS mode and credentials. `ca_file`:
    /// PEM certificates trusted for the server's certificate besides the
    /// system's (a mail server with a private CA).
    Smtp {
        url: String,
        ca_file: Option<PathBuf>,
    },
}

impl fmt::Debug for MailTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailTransport::Console => f.write_str("Console"),
            // The URL may carry a password.
            MailTransport::Smtp { url, .. } => match Url::parse(url) {
                Ok(u) => write!(
                    f,
                    "Smtp({}://{}:{})",
                    u.scheme(),
                    u.host_str().unwrap_or(""),
                    u.port().map(|p| p.to_string()).unwrap_or_default()
                ),
                Err(_) => f.write_str("Smtp(<invalid>)"),
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct MailConfig {
    pub transport: MailTransport,
    pub from: lettre::message::Mailbox,
    pub timeout: Duration,
}

/// Who may ask for a sign-in link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signup {
    /// Only users added with `sesame user add`.
    Closed,
    /// Known users, and anyone whose address is in one of these domains.
    Domains(Vec<String>),
    /// Anyone with a valid address.
    Open,
}

#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub window: Duration,
    pub per_email: u32,
    pub per_client: u32,
    /// Codes tried per address per day, over all of its pending logins.
    pub codes_per_email_per_day: u32,
    /// Requests a minute one client (address, IPv6 /64) may make to the
    /// endpoints that write to the store without a session (sign-in,
    /// links, codes, passkey sign-in), counted in memory before the store.
    pub anonymous_per_client_per_minute: u32,
    /// Anonymous passkey sign-in starts a minute from everyone together:
    /// each stores a ceremony for 5 minutes, so this bounds their number
    /// whatever the number of client addresses.
    pub passkey_starts_per_minute: u32,
    /// Requests a minute one client may make to the waiting endpoint of
    /// "check your email" (each is held up to 20 s until another device
    /// decides), counted in memory.
    pub waits_per_client_per_minute: u32,
}

/// Names of the identity headers sent to one site's upstream.
#[derive(Debug, Clone)]
pub struct HeaderNames {
    pub user: http::HeaderName,
    pub email: http::HeaderName,
    pub name: http::HeaderName,
    pub groups: http::HeaderName,
    pub auth_method: http::HeaderName,
    pub assertion: http::HeaderName,
}

impl HeaderNames {
    pub fn all(&self) -> [&http::HeaderName; 6] {
        [
            &self.user,
            &self.email,
            &self.name,
            &self.groups,
            &self.auth_method,
            &self.assertion,
        ]
    }
}

#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    pub public_url: Url,
    /// `scheme://host[:port]`, as browsers send it in `Origin`.
    pub origin: String,
    /// Lower-case host name the site answers (port ignored).
    pub host: String,
    /// Cookies get `Secure` (everything but plain http on localhost).
    pub secure: bool,
    pub upstreams: Vec<UpstreamAddr>,
    /// Normalised path prefixes that pass without a session.
    pub public_paths: Vec<String>,
    pub allow_domains: Vec<String>,
    pub allow_emails: Vec<Email>,
    pub allow_groups: Vec<String>,
    /// Ordered path rules; the first whose prefix matches decides.
    pub rules: Vec<Rule>,
    /// Only sessions that signed in with a passkey may use this site.
    pub require_passkey: bool,
    /// Send the signed identity assertion (default). Off for apps that only
    /// read the plain headers: saves the signing and ~600 bytes a request.
    pub sign_assertion: bool,
    /// Time to connect to an upstream (then 504).
    pub connect_timeout: Duration,
    /// Time to wait for an upstream's answer, between reads (then 504).
    pub read_timeout: Duration,
    pub upstream_tls: Option<UpstreamTls>,
    /// HTTP path that must answer 200 for an upstream to get requests;
    /// `None`: a TCP connect is the check.
    pub health_check: Option<String>,
    pub health_interval: Duration,
    /// The session cookie's Domain: `session.cookie_domain` when this site is
    /// under it, else `None` (a cookie of its own).
    pub cookie_domain: Option<String>,
    pub headers: HeaderNames,
    /// Origins besides the site's own that may open a WebSocket to it
    /// (`scheme://host[:port]`, lower-case).
    pub websocket_origins: Vec<String>,
}

/// Who a list admits: any email, domain or group listed (all empty: anyone
/// signed in).
#[derive(Debug, Clone, Default)]
pub struct Admission {
    pub domains: Vec<String>,
    pub emails: Vec<Email>,
    pub groups: Vec<String>,
}

impl Admission {
    pub fn admits(&self, email: &Email, groups: &[String]) -> bool {
        if self.domains.is_empty() && self.emails.is_empty() && self.groups.is_empty() {
            return true;
        }
        self.emails.iter().any(|e| e == email)
            || self.domains.iter().any(|d| d == email.domain())
            || groups.iter().any(|g| self.groups.contains(g))
    }
}

/// One path rule of a site.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Normalised path prefix (segment boundary).
    pub prefix: String,
    pub action: RuleAction,
}

#[derive(Debug, Clone)]
pub enum RuleAction {
    /// Signed-in people the admission lets in.
    Allow(Admission),
    /// Nobody.
    Deny,
    /// Everybody, signed in or not.
    Public,
}

/// A configured site, by its place in the file: `site[0]` is
/// `SiteId::new(0)`. What the gateway's per-site tables are indexed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SiteId(usize);

impl SiteId {
    pub const fn new(index: usize) -> SiteId {
        SiteId(index)
    }

    /// Its place among the configured sites.
    pub fn index(self) -> usize {
        self.0
    }
}

impl Site {
    /// True if the person may use this site (empty allow lists admit everyone signed in).
    pub fn admits(&self, email: &Email, groups: &[String]) -> bool {
        if self.allow_domains.is_empty()
            && self.allow_emails.is_empty()
            && self.allow_groups.is_empty()
        {
            return true;
        }
        self.allow_emails.iter().any(|e| e == email)
            || self.allow_domains.iter().any(|d| d == email.domain())
            || groups.iter().any(|g| self.allow_groups.contains(g))
    }

    /// The URL of Sesame's page `page` (below `/.sesame`, e.g. `/login`) on
    /// this site, with `query`: always built from the configured public URL,
    /// never from a request's Host header.
    pub fn sesame_url(&self, page: &str, query: &[(&str, &str)]) -> String {
        let mut url = self.public_url.clone();
        url.set_path(&format!("/.sesame{page}"));
        url.set_query(None);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url.into()
    }

    /// `sesame_url(page)` with `rd` = `target` (a path and query of this
    /// site, as the request had it): where to come back to afterwards.
    pub fn sesame_url_back_to(&self, page: &str, target: &str) -> String {
        self.sesame_url(page, &[("rd", &format!("{}{target}", self.origin))])
    }
}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: path.display().to_string(),
                message: format!("cannot read config file: {e}"),
            }])
        })?;
        Config::from_toml(&text)
    }

    /// Whether `text`, a part of a config file, has only known keys with
    /// values of the right types (nothing is validated beyond that, and
    /// missing keys are fine): for the examples in the docs.
    pub fn check_fragment(text: &str) -> Result<(), String> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize::<_, FileConfig>(de)
            .map(drop)
            .map_err(|e| format!("{}: {}", e.path(), e.inner().message().trim()))
    }

    /// Parse and validate config text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigErrors> {
        Config::from_toml_with(text, &System)
    }

    /// As [`Config::from_toml`], asking `outside` about host names and files.
    pub fn from_toml_with(text: &str, outside: &dyn Outside) -> Result<Config, ConfigErrors> {
        let de = toml::Deserializer::new(text);
        let file: FileConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = match e.path().to_string() {
                p if p == "." || p.is_empty() => "config".to_string(),
                p => p,
            };
            ConfigErrors(vec![ConfigError {
                path,
                message: e.inner().message().trim().to_string(),
            }])
        })?;
        let mut v = validate::Validator::new(outside);
        let config = v.config(file);
        match config {
            Some(c) if v.errors.is_empty() => Ok(c),
            _ => Err(ConfigErrors(v.errors)),
        }
    }

    pub fn site_by_host(&self, host: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.host == host)
    }
}
