//! Validation: the file's serde mirror (`file.rs`) turned into a
//! [`Config`], every problem collected as a [`ConfigError`] with its key
//! path. The sections are here; a site's keys and the TLS listeners are in
//! `site.rs`. Looking up host names and reading certificate files go
//! through [`Outside`], so the rules are unit-tested without either.

mod site;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::file::{self, FileConfig, MailTransportFile, SignupFile};
use super::outside::Outside;
use super::*;

/// Builds a [`Config`] from the file's serde mirror, collecting every
/// problem with its key path. Host names and files are looked at only
/// through `outside`.
pub(super) struct Validator<'a> {
    pub(super) errors: Vec<ConfigError>,
    outside: &'a dyn Outside,
}

impl<'a> Validator<'a> {
    pub(super) fn new(outside: &'a dyn Outside) -> Validator<'a> {
        Validator {
            errors: Vec::new(),
            outside,
        }
    }

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

    /// `server.upgrade_socket`: an absolute path short enough for a Unix
    /// socket address (108 bytes on Linux, with its terminating zero).
    fn upgrade_socket(&mut self, value: Option<String>) -> PathBuf {
        const KEY: &str = "server.upgrade_socket";
        let Some(raw) = value else {
            return PathBuf::from(DEFAULT_UPGRADE_SOCKET);
        };
        if !raw.starts_with('/') {
            self.err(KEY, format!("{raw:?} must be an absolute path"));
        } else if raw.len() > 107 {
            self.err(
                KEY,
                format!(
                    "is {} bytes long; a Unix socket path has at most 107",
                    raw.len()
                ),
            );
        } else if raw.ends_with('/') {
            self.err(KEY, format!("{raw:?} names a directory, not a socket file"));
        }
        PathBuf::from(raw)
    }

    /// `server.access_log`: `"-"` (standard output) or an absolute file
    /// path in a directory that exists.
    fn access_log(&mut self, value: Option<String>) -> Option<super::AccessLogTarget> {
        const KEY: &str = "server.access_log";
        let raw = value?;
        if raw == "-" {
            return Some(super::AccessLogTarget::Stdout);
        }
        let path = PathBuf::from(&raw);
        if !path.is_absolute() {
            self.err(
                KEY,
                format!("{raw:?} must be an absolute path, or \"-\" for standard output"),
            );
            return None;
        }
        match path.parent() {
            Some(dir) if dir.is_dir() => {}
            Some(dir) => {
                self.err(KEY, format!("directory {} does not exist", dir.display()));
                return None;
            }
            None => {
                self.err(KEY, format!("{raw:?} names no file"));
                return None;
            }
        }
        if path.is_dir() {
            self.err(KEY, format!("{raw:?} is a directory, not a file"));
            return None;
        }
        Some(super::AccessLogTarget::File(path))
    }

    fn socket_addr(&mut self, path: &str, s: &str) -> Option<SocketAddr> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Some(a);
        }
        let host_port = s
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        match self.outside.resolve(s) {
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

    pub(super) fn config(&mut self, f: FileConfig) -> Option<Config> {
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
        let upgrade_socket = self.upgrade_socket(f.server.upgrade_socket);
        let access_log = self.access_log(f.server.access_log);
        let drain_timeout = self.duration(
            "server.drain_timeout",
            f.server.drain_timeout,
            Duration::from_secs(60 * 60),
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
            waits_per_client_per_minute: f.rate_limit.waits_per_client_per_minute.unwrap_or(60),
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
        let rp_name = f.auth.rp_name.unwrap_or_else(|| "Sesame".into());
        let portal = self.portal_of(f.portal, &rp_name, &sites, &session);
        let rp_explicit = f.auth.rp_id.is_some();
        let rp_id = f
            .auth
            .rp_id
            .or_else(|| portal.as_ref().map(|p| p.host.clone()))
            .or_else(|| sites.first().map(|s| s.host.clone()))
            .unwrap_or_default();
        if let Some(p) = portal.as_ref().filter(|_| rp_explicit) {
            if p.host != rp_id && !p.host.ends_with(&format!(".{rp_id}")) {
                self.err(
                    "auth.rp_id",
                    format!(
                        "the portal's host {} is not {rp_id} or under it: passkeys are made on the portal",
                        p.host
                    ),
                );
            }
        }
        let passkey_prompt = f.auth.passkey_prompt.unwrap_or(true);

        Some(Config {
            listen,
            admin_listen: admin_listen?,
            trusted_proxies: crate::client_addr::TrustedProxies(trusted),
            forward_auth_headers: f.server.forward_auth_headers.unwrap_or_default(),
            threads,
            work_stealing: f.server.work_stealing.unwrap_or(false),
            tls,
            tls_reload_interval,
            upgrade_socket,
            drain_timeout,
            access_log,
            rp_id,
            rp_name,
            passkey_prompt,
            notify_new_device: f.auth.notify_new_device.unwrap_or(true),
            session,
            magic_link,
            store: store?,
            key_grace,
            mail: mail?,
            signup,
            rate_limit,
            sites,
            oidc_clients: self.oidc_clients(f.oidc, portal.is_some()),
            portal,
        })
    }

    /// `[[oidc.client]]`: each checked, the ids unique.
    fn oidc_clients(&mut self, file: file::OidcFile, portal: bool) -> Vec<OidcClient> {
        let mut clients: Vec<OidcClient> = Vec::new();
        if !file.client.is_empty() && !portal {
            self.err(
                "oidc.client",
                "needs [portal]: the OpenID Connect provider is served on the portal (its public_url is the issuer)",
            );
        }
        for (i, c) in file.client.into_iter().enumerate() {
            let p = |k: &str| format!("oidc.client[{i}].{k}");
            let id = c.id.unwrap_or_default();
            if id.is_empty()
                || id.len() > 128
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                self.err(
                    p("id"),
                    "is required: letters, digits, '-', '_' and '.', e.g. \"grafana\"",
                );
            } else if let Some(j) = clients.iter().position(|o| o.id == id) {
                self.err(p("id"), format!("{id:?} is already oidc.client[{j}]'s"));
            }
            let secret_hash = match (c.public, c.secret) {
                (true, Some(_)) => {
                    self.err(
                        p("secret"),
                        "a public client has no secret (it proves itself with PKCE)",
                    );
                    None
                }
                (true, None) => None,
                (false, None) => {
                    self.err(
                        p("secret"),
                        "is required (or public = true): a hash made by `sesame oidc hash-secret`",
                    );
                    None
                }
                (false, Some(s)) => {
                    if let Err(e) = crate::oidc::secret::check_hash(&s) {
                        self.err(p("secret"), e);
                    }
                    Some(s)
                }
            };
            // A client of the device grant alone has no browser to send back.
            if c.redirect_uris.is_empty() && !c.device_grant {
                self.err(
                    p("redirect_uris"),
                    "needs at least one, e.g. [\"https://grafana.example.com/login/generic_oauth\"]",
                );
            }
            for (j, u) in c.redirect_uris.iter().enumerate() {
                if let Err(e) = crate::oidc::check_redirect_uri(u) {
                    self.err(format!("oidc.client[{i}].redirect_uris[{j}]"), e);
                }
            }
            let id_token_alg = match c.id_token_signed_response_alg.as_deref() {
                None => crate::oidc::SigningAlg::Rs256,
                Some(a) => crate::oidc::SigningAlg::parse(a).unwrap_or_else(|| {
                    self.err(
                        p("id_token_signed_response_alg"),
                        format!("{a:?}: use \"RS256\" (the default), \"ES256\" or \"EdDSA\""),
                    );
                    crate::oidc::SigningAlg::Rs256
                }),
            };
            if let Some(u) = &c.backchannel_logout_uri {
                if let Err(e) = crate::oidc::check_redirect_uri(u) {
                    self.err(p("backchannel_logout_uri"), e);
                }
            }
            for (j, u) in c.post_logout_redirect_uris.iter().enumerate() {
                if let Err(e) = crate::oidc::check_redirect_uri(u) {
                    self.err(
                        format!("oidc.client[{i}].post_logout_redirect_uris[{j}]"),
                        e,
                    );
                }
            }
            let mut emails = Vec::new();
            for (j, e) in c.allow_emails.iter().enumerate() {
                match Email::parse(e) {
                    Ok(e) => emails.push(e),
                    Err(err) => self.err(
                        format!("oidc.client[{i}].allow_emails[{j}]"),
                        err.to_string(),
                    ),
                }
            }
            clients.push(OidcClient {
                name: c.name.unwrap_or_else(|| id.clone()),
                id,
                secret_hash,
                redirect_uris: c.redirect_uris,
                post_logout_redirect_uris: c.post_logout_redirect_uris,
                backchannel_logout_uri: c.backchannel_logout_uri,
                id_token_alg,
                admission: Admission {
                    domains: c
                        .allow_domains
                        .iter()
                        .map(|d| d.trim_start_matches('@').to_ascii_lowercase())
                        .collect(),
                    emails,
                    groups: c.allow_groups,
                },
                require_passkey: c.require_passkey,
                device_grant: c.device_grant,
            });
        }
        clients
    }

    /// `[portal]`, checked against the sites and the session settings.
    fn portal_of(
        &mut self,
        file: Option<file::PortalFile>,
        rp_name: &str,
        sites: &[Site],
        session: &SessionConfig,
    ) -> Option<Site> {
        let file = file?;
        let Some(raw) = file.public_url else {
            self.err(
                "portal.public_url",
                "is required, e.g. \"https://auth.example.com\"",
            );
            return None;
        };
        let portal = self.portal(&raw, rp_name)?;
        if let Some(i) = sites.iter().position(|s| s.host == portal.host) {
            self.err(
                "portal.public_url",
                format!(
                    "host {} is also site[{i}]'s: the portal needs a host of its own",
                    portal.host
                ),
            );
        }
        if session.cookie_domain.is_some() {
            self.err(
                "session.cookie_domain",
                "is not used with [portal]: each site gets a session of its own from the portal; remove one of the two",
            );
        }
        Some(portal)
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
            crate::session::cookies::HANDOFF_COOKIE,
            crate::session::cookies::BROWSER_COOKIE,
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
                    } else if let Err(e) = self.outside.certificates(ca) {
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
}

#[cfg(test)]
mod tests;
