//! Validation of a `[[site]]` (its URL, upstreams and upstream TLS, allow
//! lists, rules, headers) and of the `[[server.tls]]` listeners.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::super::file::{self, HeaderNamesFile, SiteFile};
use super::super::*;
use super::Validator;

impl Validator<'_> {
    pub(super) fn site(
        &mut self,
        i: usize,
        s: SiteFile,
        cookie_domain: Option<&str>,
    ) -> Option<Site> {
        let p = |k: &str| format!("site[{i}].{k}");
        let name = s.name.unwrap_or_else(|| format!("site{i}"));
        let Some(raw_url) = s.public_url else {
            self.err(
                p("public_url"),
                "is required, e.g. \"https://wiki.example.com\"",
            );
            return None;
        };
        let (public_url, host, is_local) = self.origin_url(&p("public_url"), &raw_url)?;
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
                    if let Err(e) = self.outside.certificates(path) {
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

    /// A public URL (`key`): an http(s) origin without a path, https unless
    /// the host is this machine. Its URL, lower-case host, and whether the
    /// host is local.
    pub(super) fn origin_url(&mut self, key: &str, raw: &str) -> Option<(Url, String, bool)> {
        let public_url = match Url::parse(raw) {
            Ok(u) => u,
            Err(e) => {
                self.err(key, format!("not a URL: {e}"));
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
            "http" => self.err(key, "must be https unless the host is localhost"),
            _ => self.err(key, "must be an http(s) URL"),
        }
        if host.is_empty() {
            self.err(key, "has no host");
        }
        if public_url.path() != "/" || public_url.query().is_some() {
            self.err(
                key,
                "must be an origin without a path, e.g. https://wiki.example.com",
            );
        }
        Some((public_url, host, is_local))
    }

    /// `[portal]`: Sesame's own origin, a site with no app behind it.
    pub(super) fn portal(&mut self, raw: &str, rp_name: &str) -> Option<Site> {
        let (public_url, host, is_local) = self.origin_url("portal.public_url", raw)?;
        let headers = self.header_names(0, HeaderNamesFile::default());
        Some(Site {
            name: rp_name.to_string(),
            secure: public_url.scheme() == "https" || !is_local,
            origin: public_url.origin().ascii_serialization(),
            public_url,
            host,
            upstreams: Vec::new(),
            public_paths: Vec::new(),
            allow_domains: Vec::new(),
            allow_emails: Vec::new(),
            allow_groups: Vec::new(),
            rules: Vec::new(),
            require_passkey: false,
            sign_assertion: false,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            upstream_tls: None,
            health_check: None,
            health_interval: Duration::from_secs(5),
            cookie_domain: None,
            headers,
            websocket_origins: Vec::new(),
        })
    }

    pub(super) fn tls_listeners(
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
            if let Err(e) = self.outside.key_pair(&files) {
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
