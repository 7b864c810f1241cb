//! The validated configuration: typed values built from the TOML file.
//!
//! `Config::load` reads a file, `Config::from_toml` parses text; both collect
//! every problem as a [`ConfigError`] naming its key path (`site[0].upstream`)
//! instead of stopping at the first. Nothing here touches the network, the
//! store or the clock. The serde mirror of the file lives in `file.rs`.

mod file;

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use file::{FileConfig, HeaderNamesFile, MailTransportFile, SignupFile, SiteFile};
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
    /// HTTPS listeners (`[[server.tls]]`, grouped by address).
    pub tls: Vec<TlsListener>,
    /// How often certificate files are checked for changes.
    pub tls_reload_interval: Duration,
    pub rp_id: String,
    pub rp_name: String,
    /// Offer to add a passkey right after a sign-in by email.
    pub passkey_prompt: bool,
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

    /// Parse and validate config text.
    /// Whether `text`, a part of a config file, has only known keys with
    /// values of the right types (nothing is validated beyond that, and
    /// missing keys are fine): for the examples in the docs.
    pub fn check_fragment(text: &str) -> Result<(), String> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize::<_, FileConfig>(de)
            .map(drop)
            .map_err(|e| format!("{}: {}", e.path(), e.inner().message().trim()))
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigErrors> {
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
        let mut v = Validator::default();
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

#[derive(Default)]
struct Validator {
    errors: Vec<ConfigError>,
}

impl Validator {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, path: &str, value: Option<String>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(s) => match humantime::parse_duration(&s) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    self.err(path, "must be longer than zero");
                    default
                }
                Err(e) => {
                    self.err(
                        path,
                        format!("invalid duration {s:?} ({e}); use e.g. \"15m\" or \"12h\""),
                    );
                    default
                }
            },
        }
    }

    fn socket_addr(&mut self, path: &str, s: &str) -> Option<SocketAddr> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Some(a);
        }
        let host_port = s
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        match s.to_socket_addrs().map(|mut it| it.next()) {
            Ok(Some(a)) => Some(a),
            Ok(None) => {
                self.err(path, format!("{s:?}: the host name has no address"));
                None
            }
            Err(e) if host_port => {
                self.err(
                    path,
                    format!("{s:?}: the host name cannot be looked up ({e})"),
                );
                None
            }
            Err(_) => {
                self.err(
                    path,
                    format!("{s:?} is not an address of the form host:port"),
                );
                None
            }
        }
    }

    fn upstream_addr(&mut self, path: &str, s: &str) -> Option<UpstreamAddr> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Some(UpstreamAddr { name: None, addr });
        }
        let addr = self.socket_addr(path, s)?;
        // It resolved, so it is `host:port` (or an IPv6 address without
        // brackets, which never changes); were it not, it stays as found.
        let name = s
            .rsplit_once(':')
            .filter(|(host, _)| host.parse::<std::net::IpAddr>().is_err())
            .and_then(|(host, port)| Some((host.to_string(), port.parse().ok()?)));
        Some(UpstreamAddr { name, addr })
    }

    fn config(&mut self, f: FileConfig) -> Option<Config> {
        let listen_raw = f
            .server
            .listen
            .unwrap_or_else(|| vec!["0.0.0.0:8080".into()]);
        if listen_raw.is_empty() {
            self.err("server.listen", "needs at least one address");
        }
        let listen: Vec<SocketAddr> = listen_raw
            .iter()
            .enumerate()
            .filter_map(|(i, a)| self.socket_addr(&format!("server.listen[{i}]"), a))
            .collect();
        let admin_listen = self.socket_addr(
            "server.admin_listen",
            f.server.admin_listen.as_deref().unwrap_or("127.0.0.1:9090"),
        );
        let mut trusted = Vec::new();
        for (i, raw) in f.server.trusted_proxies.iter().enumerate() {
            match crate::client_addr::Cidr::parse(raw) {
                Some(c) => trusted.push(c),
                None => self.err(
                    format!("server.trusted_proxies[{i}]"),
                    format!("{raw:?} is not an address or range such as 10.0.0.0/8"),
                ),
            }
        }
        let tls = self.tls_listeners(&f.server.tls, &listen, admin_listen);
        let tls_reload_interval = self.duration(
            "server.tls_reload_interval",
            f.server.tls_reload_interval,
            Duration::from_secs(10),
        );
        let threads = match f.server.threads {
            Some(0) => {
                self.err("server.threads", "must be at least 1");
                1
            }
            Some(n) => n,
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        };

        let session = self.session(f.session);
        let magic_link = MagicLinkConfig {
            ttl: self.duration(
                "magic_link.ttl",
                f.magic_link.ttl,
                Duration::from_secs(15 * 60),
            ),
            code_attempts: match f.magic_link.code_attempts {
                Some(0) => {
                    self.err("magic_link.code_attempts", "must be at least 1");
                    5
                }
                Some(n) => n,
                None => 5,
            },
        };
        let store = self.store(f.store.url.as_deref());
        let key_grace = self.duration("keys.grace", f.keys.grace, session.lifetime);
        // What a replaced key made must verify for as long as it lives.
        let needed = magic_link
            .ttl
            .max(Duration::from_secs(crate::identity::LIFETIME_SECS as u64));
        if key_grace < needed {
            self.err(
                "keys.grace",
                format!(
                    "must be at least {} (the magic-link ttl, and an assertion's 5 minutes): links and assertions signed just before a rotation must still verify",
                    humantime::format_duration(needed)
                ),
            );
        }
        let mut session = session;
        session.outage_grace = self.duration(
            "store.outage_grace",
            f.store.outage_grace,
            Duration::from_secs(5 * 60),
        );
        let mail = self.mail(f.mail);
        let signup = self.signup(f.users);
        let rate_limit = RateLimitConfig {
            window: self.duration(
                "rate_limit.window",
                f.rate_limit.window,
                Duration::from_secs(15 * 60),
            ),
            per_email: f.rate_limit.per_email.unwrap_or(5),
            per_client: f.rate_limit.per_client.unwrap_or(30),
            codes_per_email_per_day: f.rate_limit.codes_per_email_per_day.unwrap_or(20),
            anonymous_per_client_per_minute: f
                .rate_limit
                .anonymous_per_client_per_minute
                .unwrap_or(120),
            passkey_starts_per_minute: f.rate_limit.passkey_starts_per_minute.unwrap_or(6000),
        };

        if f.site.is_empty() {
            self.err("site", "at least one [[site]] is needed");
        }
        let mut sites = Vec::new();
        for (i, s) in f.site.into_iter().enumerate() {
            if let Some(site) = self.site(i, s, session.cookie_domain.as_deref()) {
                if let Some(other) = sites.iter().position(|o: &Site| o.host == site.host) {
                    self.err(
                        format!("site[{i}].public_url"),
                        format!("host {} is already used by site[{other}]", site.host),
                    );
                }
                sites.push(site);
            }
        }
        let rp_id = f
            .auth
            .rp_id
            .or_else(|| sites.first().map(|s| s.host.clone()))
            .unwrap_or_default();
        let passkey_prompt = f.auth.passkey_prompt.unwrap_or(true);
        let rp_name = f.auth.rp_name.unwrap_or_else(|| "Sesame".into());

        Some(Config {
            listen,
            admin_listen: admin_listen?,
            trusted_proxies: crate::client_addr::TrustedProxies(trusted),
            forward_auth_headers: f.server.forward_auth_headers.unwrap_or_default(),
            threads,
            tls,
            tls_reload_interval,
            rp_id,
            rp_name,
            passkey_prompt,
            session,
            magic_link,
            store: store?,
            key_grace,
            mail: mail?,
            signup,
            rate_limit,
            sites,
        })
    }

    fn session(&mut self, s: file::SessionFile) -> SessionConfig {
        let cookie_name = s.cookie_name.unwrap_or_else(|| "sesame".into());
        if cookie_name.is_empty()
            || !cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            self.err(
                "session.cookie_name",
                "use only letters, digits, '_' and '-'",
            );
        }
        let lower = cookie_name.to_ascii_lowercase();
        if [
            crate::session::cookies::PENDING_COOKIE,
            crate::session::cookies::OFFERED_COOKIE,
            crate::session::cookies::PROOF_COOKIE,
        ]
        .contains(&lower.as_str())
            || lower.starts_with("__host-")
            || lower.starts_with("__secure-")
        {
            self.err(
                "session.cookie_name",
                format!("{cookie_name:?} is reserved: Sesame uses it (or adds the prefix) itself"),
            );
        }
        let cookie_domain = s
            .cookie_domain
            .map(|d| d.trim_start_matches('.').to_ascii_lowercase());
        if let Some(d) = &cookie_domain {
            if d.is_empty() || !d.contains('.') || d.contains('/') {
                self.err(
                    "session.cookie_domain",
                    "must be a domain name such as example.com",
                );
            }
        }
        SessionConfig {
            cookie_name,
            cookie_domain,
            lifetime: self.duration(
                "session.lifetime",
                s.lifetime,
                Duration::from_secs(12 * 3600),
            ),
            idle_timeout: self.duration(
                "session.idle_timeout",
                s.idle_timeout,
                Duration::from_secs(2 * 3600),
            ),
            outage_grace: Duration::from_secs(5 * 60),
        }
    }

    fn store(&mut self, url: Option<&str>) -> Option<StoreConfig> {
        let url = url.unwrap_or("sqlite:///var/lib/sesame/sesame.db");
        if let Some(rest) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let path = rest.split('?').next().unwrap_or("");
            if path.is_empty() {
                self.err(
                    "store.url",
                    "sqlite URL needs a file path, e.g. sqlite:///var/lib/sesame/sesame.db",
                );
                return None;
            }
            return Some(StoreConfig::Sqlite {
                path: PathBuf::from(path),
            });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return match url.parse::<sqlx::postgres::PgConnectOptions>() {
                Ok(_) => Some(StoreConfig::Postgres {
                    url: url.to_string(),
                }),
                Err(e) => {
                    self.err("store.url", format!("not a PostgreSQL URL: {e}"));
                    None
                }
            };
        }
        self.err("store.url", "must start with sqlite:// or postgres://");
        None
    }

    fn mail(&mut self, m: file::MailFile) -> Option<MailConfig> {
        let transport = match m.transport.unwrap_or(MailTransportFile::Smtp) {
            MailTransportFile::Console => {
                if m.ca_file.is_some() {
                    self.err("mail.ca_file", "is set, but mail.transport is \"console\"");
                }
                MailTransport::Console
            }
            MailTransportFile::Smtp => {
                let url = m.smtp_url.unwrap_or_else(|| "smtp://127.0.0.1:25".into());
                match Url::parse(&url) {
                    Ok(u) if matches!(u.scheme(), "smtp" | "smtps") && u.host_str().is_some() => {
                        // lettre's own reading of the URL (TLS mode, credentials); no I/O.
                        if let Err(e) = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(&url) {
                            self.err("mail.smtp_url", format!("{e}"));
                        }
                    }
                    Ok(_) => self.err(
                        "mail.smtp_url",
                        "must be smtp://host[:port] (STARTTLS with ?tls=required) or smtps://host[:port]",
                    ),
                    Err(e) => self.err("mail.smtp_url", format!("not a URL: {e}")),
                }
                if let Some(ca) = &m.ca_file {
                    // Opportunistic STARTTLS falls back to plain text for
                    // whoever strips the offer: not what a pinned CA is for.
                    let tls = url.starts_with("smtps://")
                        || Url::parse(&url).is_ok_and(|u| {
                            u.query_pairs().any(|(k, v)| k == "tls" && v == "required")
                        });
                    if !tls {
                        self.err(
                            "mail.ca_file",
                            "is set, but mail.smtp_url does not require TLS (use smtps:// or ?tls=required)",
                        );
                    } else if let Err(e) = crate::tls::read_certificates(ca) {
                        self.err("mail.ca_file", e);
                    }
                }
                MailTransport::Smtp {
                    url,
                    ca_file: m.ca_file,
                }
            }
        };
        let from_raw = m.from.unwrap_or_else(|| "Sesame <login@localhost>".into());
        let from = match from_raw.parse::<lettre::message::Mailbox>() {
            Ok(f) => Some(f),
            Err(e) => {
                self.err(
                    "mail.from",
                    format!("not a mailbox ({e}); use e.g. \"Example login <login@example.com>\""),
                );
                None
            }
        };
        let timeout = self.duration("mail.timeout", m.timeout, Duration::from_secs(10));
        Some(MailConfig {
            transport,
            from: from?,
            timeout,
        })
    }

    fn signup(&mut self, u: file::UsersFile) -> Signup {
        let domains: Vec<String> = u
            .signup_domains
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.trim_start_matches('@').to_ascii_lowercase())
            .collect();
        match u.signup.unwrap_or(SignupFile::Closed) {
            SignupFile::Closed => Signup::Closed,
            SignupFile::Open => Signup::Open,
            SignupFile::Domains => {
                if domains.is_empty() {
                    self.err(
                        "users.signup_domains",
                        "signup = \"domains\" needs at least one domain",
                    );
                }
                Signup::Domains(domains)
            }
        }
    }

    fn site(&mut self, i: usize, s: SiteFile, cookie_domain: Option<&str>) -> Option<Site> {
        let p = |k: &str| format!("site[{i}].{k}");
        let name = s.name.unwrap_or_else(|| format!("site{i}"));
        let Some(raw_url) = s.public_url else {
            self.err(
                p("public_url"),
                "is required, e.g. \"https://wiki.example.com\"",
            );
            return None;
        };
        let public_url = match Url::parse(&raw_url) {
            Ok(u) => u,
            Err(e) => {
                self.err(p("public_url"), format!("not a URL: {e}"));
                return None;
            }
        };
        let host = public_url.host_str().unwrap_or("").to_ascii_lowercase();
        // RFC 6761: `localhost` and every name under it are this machine
        // (browsers treat them as secure contexts), as are the loopback
        // addresses.
        let is_local = host == "localhost"
            || host.ends_with(".localhost")
            || host == "127.0.0.1"
            || host == "[::1]";
        match public_url.scheme() {
            "https" => {}
            "http" if is_local => {}
            "http" => self.err(
                p("public_url"),
                "must be https unless the host is localhost",
            ),
            _ => self.err(p("public_url"), "must be an http(s) URL"),
        }
        if host.is_empty() {
            self.err(p("public_url"), "has no host");
        }
        if public_url.path() != "/" || public_url.query().is_some() {
            self.err(
                p("public_url"),
                "must be an origin without a path, e.g. https://wiki.example.com",
            );
        }
        // A site outside the shared cookie domain gets a cookie of its own.
        let cookie_domain = cookie_domain
            .filter(|d| host == *d || host.ends_with(&format!(".{d}")))
            .map(str::to_string);
        let origin = public_url.origin().ascii_serialization();

        let upstreams: Vec<UpstreamAddr> = match s.upstream {
            None => {
                self.err(p("upstream"), "is required, e.g. [\"127.0.0.1:3000\"]");
                vec![]
            }
            Some(list) if list.is_empty() => {
                self.err(p("upstream"), "needs at least one address");
                vec![]
            }
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(j, a)| self.upstream_addr(&format!("site[{i}].upstream[{j}]"), a))
                .collect(),
        };

        let mut public_paths = Vec::new();
        for (j, raw) in s.public_paths.iter().enumerate() {
            match crate::path::normalize(raw) {
                Ok(n) if raw.starts_with('/') => public_paths.push(n),
                _ => self.err(
                    format!("site[{i}].public_paths[{j}]"),
                    "must be an absolute path such as /health",
                ),
            }
        }
        let allow_domains = s
            .allow_domains
            .iter()
            .map(|d| d.trim_start_matches('@').to_ascii_lowercase())
            .collect();
        let mut allow_emails = Vec::new();
        for (j, e) in s.allow_emails.iter().enumerate() {
            match Email::parse(e) {
                Ok(e) => allow_emails.push(e),
                Err(err) => self.err(format!("site[{i}].allow_emails[{j}]"), err.to_string()),
            }
        }
        let mut rules = Vec::new();
        for (j, r) in s.rule.into_iter().enumerate() {
            let key = |k: &str| format!("site[{i}].rule[{j}].{k}");
            let prefix = match r.path.as_deref().map(|p| (p, crate::path::normalize(p))) {
                Some((raw, Ok(n))) if raw.starts_with('/') => n,
                Some(_) => {
                    self.err(key("path"), "must be an absolute path such as /admin");
                    continue;
                }
                None => {
                    self.err(key("path"), "is required, e.g. \"/admin\"");
                    continue;
                }
            };
            let has_lists = !(r.allow_domains.is_empty()
                && r.allow_emails.is_empty()
                && r.allow_groups.is_empty());
            let action = match r.action.unwrap_or(file::RuleActionFile::Allow) {
                file::RuleActionFile::Deny | file::RuleActionFile::Public if has_lists => {
                    self.err(
                        key("action"),
                        "allow_* lists only go with action = \"allow\"",
                    );
                    continue;
                }
                file::RuleActionFile::Deny => RuleAction::Deny,
                file::RuleActionFile::Public => RuleAction::Public,
                file::RuleActionFile::Allow => {
                    let mut emails = Vec::new();
                    for (k, e) in r.allow_emails.iter().enumerate() {
                        match Email::parse(e) {
                            Ok(e) => emails.push(e),
                            Err(err) => self.err(
                                format!("site[{i}].rule[{j}].allow_emails[{k}]"),
                                err.to_string(),
                            ),
                        }
                    }
                    RuleAction::Allow(Admission {
                        domains: r
                            .allow_domains
                            .iter()
                            .map(|d| d.trim_start_matches('@').to_ascii_lowercase())
                            .collect(),
                        emails,
                        groups: r.allow_groups,
                    })
                }
            };
            rules.push(Rule { prefix, action });
        }
        let headers = self.header_names(i, s.headers);
        let upstream_tls = match (s.upstream_tls, s.upstream_sni, s.upstream_ca) {
            (false, None, None) => None,
            (false, sni, _) => {
                let key = if sni.is_some() {
                    "upstream_sni"
                } else {
                    "upstream_ca"
                };
                self.err(p(key), "only goes with upstream_tls = true");
                None
            }
            (true, None, _) => {
                self.err(
                    p("upstream_sni"),
                    "is required with upstream_tls: the name in the app's certificate",
                );
                None
            }
            (true, Some(sni), ca) => {
                if sni.is_empty() || sni.contains(['/', ':', ' ']) {
                    self.err(
                        p("upstream_sni"),
                        "must be a host name such as app.internal",
                    );
                }
                let ca = ca.map(PathBuf::from);
                if let Some(path) = &ca {
                    if let Err(e) = crate::tls::read_certificates(path) {
                        self.err(p("upstream_ca"), e);
                    }
                }
                Some(UpstreamTls { sni, ca })
            }
        };
        let health_check = match s.health_check {
            Some(h) if !h.starts_with('/') || h.parse::<http::Uri>().is_err() => {
                self.err(p("health_check"), "must be a path such as /healthz");
                None
            }
            h => h,
        };
        let health_interval = self.duration(
            &p("health_interval"),
            s.health_interval,
            Duration::from_secs(5),
        );
        let mut websocket_origins = Vec::new();
        for (j, raw) in s.websocket_origins.iter().enumerate() {
            match Url::parse(raw) {
                Ok(u)
                    if matches!(u.scheme(), "http" | "https")
                        && u.host_str().is_some()
                        && u.path() == "/"
                        && u.query().is_none()
                        && !raw.ends_with('/') =>
                {
                    websocket_origins.push(u.origin().ascii_serialization())
                }
                _ => self.err(
                    format!("site[{i}].websocket_origins[{j}]"),
                    "must be an origin such as https://admin.example.com (no path)",
                ),
            }
        }
        Some(Site {
            name,
            secure: public_url.scheme() == "https" || !is_local,
            public_url,
            origin,
            host,
            upstreams,
            public_paths,
            allow_domains,
            allow_emails,
            allow_groups: s.allow_groups,
            rules,
            require_passkey: s.require_passkey,
            sign_assertion: s.sign_assertion.unwrap_or(true),
            connect_timeout: self.duration(
                &p("connect_timeout"),
                s.connect_timeout,
                Duration::from_secs(5),
            ),
            read_timeout: self.duration(
                &p("read_timeout"),
                s.read_timeout,
                Duration::from_secs(60),
            ),
            upstream_tls,
            health_check,
            health_interval,
            cookie_domain,
            headers,
            websocket_origins,
        })
    }

    fn tls_listeners(
        &mut self,
        entries: &[file::TlsFile],
        plain: &[SocketAddr],
        admin: Option<SocketAddr>,
    ) -> Vec<TlsListener> {
        let mut listeners: Vec<TlsListener> = Vec::new();
        for (i, t) in entries.iter().enumerate() {
            let p = |k: &str| format!("server.tls[{i}].{k}");
            let Some(listen) = t.listen.as_deref() else {
                self.err(p("listen"), "is required, e.g. \"0.0.0.0:443\"");
                continue;
            };
            let Some(addr) = self.socket_addr(&p("listen"), listen) else {
                continue;
            };
            if plain.contains(&addr) || admin == Some(addr) {
                self.err(p("listen"), format!("{addr} is already a plain listener"));
                continue;
            }
            let (Some(cert), Some(key)) = (&t.cert, &t.key) else {
                let missing = if t.cert.is_none() { "cert" } else { "key" };
                self.err(p(missing), "is required: a PEM file");
                continue;
            };
            let files = crate::tls::CertFiles {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
            };
            if let Err(e) = crate::tls::load(&files) {
                let which = if e.contains(key.as_str()) && !e.contains(cert.as_str()) {
                    "key"
                } else {
                    "cert"
                };
                self.err(p(which), e);
                continue;
            }
            let http2 = t.http2.unwrap_or(true);
            match listeners.iter_mut().find(|l| l.listen == addr) {
                Some(l) => {
                    if l.http2 != http2 {
                        self.err(
                            p("http2"),
                            format!("differs from another [[server.tls]] on {addr}"),
                        );
                    }
                    l.certs.push(files);
                }
                None => listeners.push(TlsListener {
                    listen: addr,
                    certs: vec![files],
                    http2,
                }),
            }
        }
        listeners
    }

    fn header_names(&mut self, i: usize, h: HeaderNamesFile) -> HeaderNames {
        let mut one = |key: &str, v: Option<String>, default: &'static str| -> http::HeaderName {
            match v {
                None => http::HeaderName::from_static(default),
                Some(s) => match http::HeaderName::from_bytes(s.as_bytes()) {
                    Ok(n) => n,
                    Err(_) => {
                        self.err(
                            format!("site[{i}].headers.{key}"),
                            format!("{s:?} is not a header name"),
                        );
                        http::HeaderName::from_static(default)
                    }
                },
            }
        };
        HeaderNames {
            user: one("user", h.user, "remote-user"),
            email: one("email", h.email, "remote-email"),
            name: one("name", h.name, "remote-name"),
            groups: one("groups", h.groups, "remote-groups"),
            auth_method: one("auth_method", h.auth_method, "sesame-auth-method"),
            assertion: one("assertion", h.assertion, "sesame-assertion"),
        }
    }
}
