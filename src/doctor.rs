//! `sesame doctor -c FILE`: a checklist of what makes a deployment work and
//! what makes it unsafe, each line pass, warn or fail with what to do.
//!
//! It changes nothing: the store is read (a SQLite file that does not
//! exist is not made), mail is only connected to (unless a test mail is
//! asked for), upstreams are only connected to.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use crate::client_addr::Cidr;
use crate::clock::Clock;
use crate::config::{Config, MailTransport, Signup, StoreConfig};
use crate::listening::Listening;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Pass,
    Warn,
    Fail,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Pass => "pass",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

/// One line of the checklist.
#[derive(Debug, Clone)]
pub struct Finding {
    pub level: Level,
    /// What was checked: `store`, `site "wiki" upstream`.
    pub topic: String,
    pub said: String,
    /// What to do about a warning or failure.
    pub todo: Option<String>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    fn add(&mut self, level: Level, topic: impl Into<String>, said: String, todo: Option<String>) {
        self.findings.push(Finding {
            level,
            topic: topic.into(),
            said,
            todo,
        });
    }

    fn pass(&mut self, topic: impl Into<String>, said: impl Into<String>) {
        self.add(Level::Pass, topic, said.into(), None);
    }

    fn warn(&mut self, topic: impl Into<String>, said: impl Into<String>, todo: impl Into<String>) {
        self.add(Level::Warn, topic, said.into(), Some(todo.into()));
    }

    fn fail(&mut self, topic: impl Into<String>, said: impl Into<String>, todo: impl Into<String>) {
        self.add(Level::Fail, topic, said.into(), Some(todo.into()));
    }

    /// The worst line's level.
    pub fn worst(&self) -> Level {
        self.findings
            .iter()
            .map(|f| f.level)
            .max()
            .unwrap_or(Level::Pass)
    }

    /// The checklist as printed, with a count at the end.
    pub fn render(&self) -> String {
        let width = self
            .findings
            .iter()
            .map(|f| f.topic.len())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for f in &self.findings {
            out += &format!("{}  {:width$}  {}\n", f.level.label(), f.topic, f.said);
            if let Some(todo) = &f.todo {
                out += &format!("      {:width$}  -> {todo}\n", "");
            }
        }
        let count = |l| self.findings.iter().filter(|f| f.level == l).count();
        out += &format!(
            "\n{} failed, {} warning(s), {} passed\n",
            count(Level::Fail),
            count(Level::Warn),
            count(Level::Pass)
        );
        out
    }
}

/// What `sesame doctor` was asked besides the checks.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Send a test mail to this address.
    pub test_mail: Option<String>,
}

/// Days before a certificate's expiry from which it is a warning.
const CERT_WARN_DAYS: i64 = 14;
/// A signing key older than this is due for rotation.
const KEY_ROTATION_DAYS: i64 = 180;
/// 2026-01-01: a clock before it is wrong, whatever else is.
const EARLIEST_SANE: i64 = 1_767_225_600;

/// Run every check on the config file at `path`.
pub async fn examine(path: &Path, opts: &Options, clock: &Clock) -> Report {
    let mut r = Report::default();
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            r.fail(
                "config",
                format!("{} is not valid:\n{errors}", path.display()),
                "fix each key named above (conf/sesame.toml documents them)",
            );
            return r;
        }
    };
    r.pass(
        "config",
        format!(
            "{} is valid ({} site(s){})",
            path.display(),
            config.sites.len(),
            if config.portal.is_some() {
                ", a portal"
            } else {
                ""
            }
        ),
    );
    check_clock(&mut r, clock);
    if let Some(store) = check_store(&mut r, &config, clock).await {
        check_keys(&mut r, &store.keys_created, clock);
    }
    check_mail(&mut r, &config, opts).await;
    for site in &config.sites {
        check_site(&mut r, site).await;
    }
    if let Some(portal) = &config.portal {
        check_resolves(&mut r, "portal", &portal.public_url).await;
    }
    check_certs(&mut r, &config, clock);
    check_exposure(&mut r, &config);
    r
}

fn check_clock(r: &mut Report, clock: &Clock) {
    let now = clock.now();
    if now < EARLIEST_SANE {
        r.fail(
            "clock",
            format!("this host's clock says {now} s since 1970, before this version of Sesame existed"),
            "set the clock and keep it set (NTP: timedatectl set-ntp true); links, sessions and passkey ceremonies expire by it",
        );
    } else {
        r.pass("clock", format!("{} UTC", rfc3339(now)));
    }
}

/// What the store holds, if it has exactly the migrations this binary
/// knows.
async fn check_store(
    r: &mut Report,
    config: &Config,
    clock: &Clock,
) -> Option<crate::store::Inspection> {
    let what = match &config.store {
        StoreConfig::Sqlite { path } => format!("SQLite {}", path.display()),
        StoreConfig::Postgres { url } => format!("PostgreSQL {}", redact_url(url)),
    };
    let inspected = tokio::time::timeout(
        Duration::from_secs(10),
        crate::store::inspect(&config.store, clock.now()),
    )
    .await;
    let inspection = match inspected {
        Err(_) => {
            r.fail(
                "store",
                format!("{what}: no answer within 10 s"),
                "check that the database is up and reachable from this host",
            );
            return None;
        }
        Ok(Err(e)) => {
            r.fail(
                "store",
                format!("{what}: {e}"),
                "start the database, or fix [store] url",
            );
            return None;
        }
        Ok(Ok(None)) => {
            // A SQLite file not made yet: the first start makes it, if it can.
            if let StoreConfig::Sqlite { path } = &config.store {
                let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
                match dir.map(nearest_existing) {
                    Some(Some(d)) if writable(&d) => r.warn(
                        "store",
                        format!("{what} does not exist yet"),
                        "the first `sesame run` (or `sesame migrate`) creates it; run it as the user the service runs as",
                    ),
                    Some(Some(d)) => r.fail(
                        "store",
                        format!("{what} does not exist, and {} cannot be written to", d.display()),
                        "create the directory for Sesame's user (systemd: StateDirectory=sesame)",
                    ),
                    _ => r.warn(
                        "store",
                        format!("{what} does not exist yet"),
                        "the first `sesame run` creates it",
                    ),
                }
            }
            return None;
        }
        Ok(Ok(Some(i))) => i,
    };
    if !inspection.unknown.is_empty() {
        r.fail(
            "store",
            format!(
                "{what} has migrations this version does not know ({:?}): a newer Sesame migrated it",
                inspection.unknown
            ),
            "run the newer version (an older binary may misread the store)",
        );
        return None;
    }
    if !inspection.missing.is_empty() {
        r.warn(
            "store",
            format!(
                "{what} is reachable; {} migration(s) not applied yet ({:?})",
                inspection.missing.len(),
                inspection.missing
            ),
            "`sesame migrate -c FILE` applies them (so does the next start)",
        );
        return None;
    }
    r.pass(
        "store",
        format!("{what} is reachable and its migrations are current"),
    );
    if let Some(ahead) = inspection.clock_ahead {
        let off = ahead.abs();
        let said = format!(
            "the database's clock is {off:.1} s {} this host's",
            if ahead > 0.0 { "ahead of" } else { "behind" }
        );
        let todo = "run NTP on both (timedatectl set-ntp true): instances and the database must agree on when links and sessions expire";
        if off > 60.0 {
            r.fail("clock", said, todo);
        } else if off > 5.0 {
            r.warn("clock", said, todo);
        } else {
            r.pass("clock", said);
        }
    }
    Some(inspection)
}

fn check_keys(r: &mut Report, keys_created: &[i64], clock: &Clock) {
    let Some(newest) = keys_created.iter().copied().max() else {
        r.pass("keys", "none yet: the first start makes them");
        return;
    };
    let days = (clock.now() - newest) / 86_400;
    if days > KEY_ROTATION_DAYS {
        r.warn(
            "keys",
            format!("the newest signing keys are {days} days old"),
            "rotate them: `sesame keys rotate -c FILE` (nobody is signed out; docs: Key rotation)",
        );
    } else {
        r.pass(
            "keys",
            format!(
                "{} key(s), the newest {days} day(s) old",
                keys_created.len()
            ),
        );
    }
}

async fn check_mail(r: &mut Report, config: &Config, opts: &Options) {
    let url = match &config.mail.transport {
        MailTransport::Console => {
            r.warn(
                "mail",
                "sign-in emails are printed on standard output (console transport): nobody receives them",
                "set [mail] smtp_url for real use",
            );
            return;
        }
        MailTransport::Smtp { url, .. } => url,
    };
    let shown = redact_url(url);
    let mode = smtp_mode(url);
    let mailer = match crate::mail::mailer_for(&config.mail) {
        Ok(m) => m,
        Err(e) => {
            r.fail("mail", format!("{shown}: {e}"), "fix [mail] smtp_url");
            return;
        }
    };
    match tokio::time::timeout(Duration::from_secs(15), mailer.check()).await {
        Err(_) => {
            r.fail(
                "mail",
                format!("{shown}: no answer within 15 s"),
                "check the host, the port and the firewall",
            );
            return;
        }
        Ok(Err(e)) => {
            r.fail(
                "mail",
                format!("{shown} ({mode}): {e}"),
                "check the host, port, TLS mode and credentials in [mail] smtp_url",
            );
            return;
        }
        Ok(Ok(())) => r.pass("mail", format!("{shown} answers ({mode})")),
    }
    let Some(to) = &opts.test_mail else {
        return;
    };
    let to = match crate::email::Email::parse(to) {
        Ok(to) => to,
        Err(e) => {
            r.fail("test mail", format!("{to:?}: {e}"), "give an email address");
            return;
        }
    };
    let mail = crate::mail::OutgoingMail {
        to: to.clone(),
        subject: "Sesame doctor: test mail".into(),
        text: "This is a test mail from `sesame doctor`. Sign-in emails are sent the same way.\n"
            .into(),
        html: "<p>This is a test mail from <code>sesame doctor</code>. Sign-in emails are sent the same way.</p>"
            .into(),
    };
    match mailer.send(&mail).await {
        Ok(()) => r.pass(
            "test mail",
            format!("accepted by the server for {to}; check that it arrives (and not as spam)"),
        ),
        Err(e) => r.fail(
            "test mail",
            format!("to {to}: {e}"),
            "the server refused it: check [mail] from and the account's sending rights",
        ),
    }
}

async fn check_resolves(r: &mut Report, topic: &str, url: &url::Url) {
    let Some(host) = url.host_str() else {
        return;
    };
    if host.eq_ignore_ascii_case("localhost")
        || host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok()
    {
        return;
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let found = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((host, port)),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .and_then(|mut addrs| addrs.next());
    match found {
        Some(addr) => {
            r.pass(
                format!("{topic} public_url"),
                format!("{host} resolves ({})", addr.ip()),
            );
        }
        None => r.fail(
            format!("{topic} public_url"),
            format!("{host} does not resolve here"),
            "add its DNS record (browsers, and links in emails, go there)",
        ),
    }
}

async fn check_site(r: &mut Report, site: &crate::config::Site) {
    let topic = format!("site {:?}", site.name);
    check_resolves(r, &topic, &site.public_url).await;
    let listening = Listening::read();
    for up in &site.upstreams {
        let shown = match &up.name {
            Some((host, port)) => format!("{host}:{port}"),
            None => up.addr.to_string(),
        };
        let addrs: Vec<SocketAddr> = match &up.name {
            Some((host, port)) => {
                match tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio::net::lookup_host((host.as_str(), *port)),
                )
                .await
                {
                    Ok(Ok(a)) => a.collect(),
                    _ => {
                        r.fail(
                            format!("{topic} upstream"),
                            format!("{shown} does not resolve"),
                            "fix the name in upstream, or its DNS record",
                        );
                        continue;
                    }
                }
            }
            None => vec![up.addr],
        };
        for addr in addrs {
            let reached =
                tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
                    .await;
            let named = if shown == addr.to_string() {
                shown.clone()
            } else {
                format!("{shown} ({addr})")
            };
            let up = matches!(reached, Ok(Ok(_)));
            match reached {
                Ok(Ok(_)) => {
                    r.pass(
                        format!("{topic} upstream"),
                        format!("{named} accepts connections"),
                    );
                }
                Ok(Err(e)) => r.fail(
                    format!("{topic} upstream"),
                    format!("{named}: {e}"),
                    "start the app, or fix the site's upstream",
                ),
                Err(_) => r.fail(
                    format!("{topic} upstream"),
                    format!("{named}: no answer within 3 s"),
                    "check the app and the firewall between it and Sesame",
                ),
            }
            // What else listens on a loopback port is only worth saying
            // of an app that runs; a public address is wrong either way.
            if up || !addr.ip().is_loopback() {
                check_bypass(r, &topic, addr, &listening);
            }
        }
    }
}

/// Can the app be reached without going through Sesame? It trusts the
/// identity headers of whatever reaches it.
fn check_bypass(r: &mut Report, topic: &str, addr: SocketAddr, listening: &Listening) {
    let topic = format!("{topic} bypass");
    let ip = addr.ip();
    if ip.is_loopback() {
        match listening.open_beyond_loopback(addr.port()) {
            None => r.warn(
                topic,
                format!("cannot tell what else listens on port {} (no /proc/net/tcp)", addr.port()),
                "make sure the app listens on 127.0.0.1 only",
            ),
            Some(others) if others.is_empty() => r.pass(
                topic,
                format!("{addr} is loopback, and nothing on port {} listens beyond it (in this network namespace)", addr.port()),
            ),
            Some(others) => r.fail(
                topic,
                format!(
                    "the app behind {addr} also listens on {}: anyone who reaches this host on port {} skips Sesame and can send forged identity headers",
                    others.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
                    addr.port()
                ),
                "bind the app to 127.0.0.1 only (or firewall the port)",
            ),
        }
    } else if is_private(ip) {
        r.warn(
            topic,
            format!("{addr} is on a private network: every host there reaches the app without Sesame"),
            "let only this host reach the app (firewall), or have the app check the signed assertion",
        );
    } else {
        r.fail(
            topic,
            format!("{addr} is a public address: anyone may reach the app without Sesame and send forged identity headers"),
            "put the app on a private or loopback address, or firewall it to this host",
        );
    }
}

fn check_certs(r: &mut Report, config: &Config, clock: &Clock) {
    for listener in &config.tls {
        let certs = match crate::tls::Certs::load(&listener.certs) {
            Ok(c) => c,
            Err(e) => {
                r.fail(
                    format!("tls {}", listener.listen),
                    e,
                    "fix [[server.tls]] cert and key",
                );
                continue;
            }
        };
        for (cert, not_after) in certs.expiries() {
            let days = (not_after - clock.now()).div_euclid(86_400);
            let topic = format!("tls {}", listener.listen);
            let said = format!("{} expires {} UTC", cert.display(), rfc3339(not_after));
            if not_after <= clock.now() {
                r.fail(
                    topic,
                    format!("{said}: expired"),
                    "renew it; Sesame loads the new files by itself",
                );
            } else if days < CERT_WARN_DAYS {
                r.warn(
                    topic,
                    format!("{said}, in {days} day(s)"),
                    "renew it now; Sesame loads the new files by itself",
                );
            } else {
                r.pass(topic, format!("{said}, in {days} days"));
            }
        }
    }
}

/// Settings that open more than they seem to.
fn check_exposure(r: &mut Report, config: &Config) {
    match &config.session.cookie_domain {
        None => r.pass(
            "cookie_domain",
            "not set: each site's session cookie goes to its own host only",
        ),
        Some(domain) => {
            let sites: Vec<&str> = config.sites.iter().map(|s| s.host.as_str()).collect();
            r.warn(
                "cookie_domain",
                format!(
                    "session cookies go to every host under {domain}, and Sesame runs only {}; an app or page on any other host there receives them",
                    sites.join(", ")
                ),
                "make sure every host under it is a site here, or use a [portal] (host-only sessions) instead",
            );
        }
    }
    let public: Vec<String> = config
        .trusted_proxies
        .0
        .iter()
        .filter(|c| {
            !PRIVATE
                .iter()
                .any(|p| Cidr::parse(p).is_some_and(|p| c.within(&p)))
        })
        .map(|c| c.to_string())
        .collect();
    if public.is_empty() {
        r.pass(
            "trusted_proxies",
            format!(
                "{} range(s), all loopback or private",
                config.trusted_proxies.0.len()
            ),
        );
    } else {
        r.fail(
            "trusted_proxies",
            format!(
                "{} include(s) public addresses: anyone there can choose the client address Sesame sees (rate limits, logs) and the request /.sesame/auth judges",
                public.join(", ")
            ),
            "list only your proxies' own addresses",
        );
    }
    if matches!(config.signup, Signup::Open) {
        let open: Vec<&str> = config
            .sites
            .iter()
            .filter(|s| {
                s.allow_domains.is_empty() && s.allow_emails.is_empty() && s.allow_groups.is_empty()
            })
            .map(|s| s.name.as_str())
            .collect();
        if open.is_empty() {
            r.pass("signup", "open, and every site has an allow list");
        } else {
            r.fail(
                "signup",
                format!(
                    "open with no allow list on {}: anyone with an email address can sign in there",
                    open.join(", ")
                ),
                "set [users] signup = \"closed\" or a domain list, or give those sites allow_domains / allow_emails / allow_groups",
            );
        }
    } else {
        r.pass("signup", "only known users or listed domains sign in");
    }
    let admin = config.admin_listen.ip();
    if admin.is_unspecified() || !(admin.is_loopback() || is_private(admin)) {
        r.fail(
            "admin_listen",
            format!("{} is reachable beyond this host's private networks: /metrics has no authentication", config.admin_listen),
            "listen on 127.0.0.1 or a private address only",
        );
    } else {
        r.pass(
            "admin_listen",
            format!("{} is loopback or private", config.admin_listen),
        );
    }
}

/// Loopback, private, link-local and shared (CGNAT) ranges.
const PRIVATE: [&str; 9] = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

fn is_private(ip: IpAddr) -> bool {
    PRIVATE
        .iter()
        .filter_map(|p| Cidr::parse(p))
        .any(|c| c.contains(ip))
}

/// The nearest directory at or above `dir` that exists.
fn nearest_existing(dir: &Path) -> Option<std::path::PathBuf> {
    dir.ancestors().find(|d| d.is_dir()).map(Path::to_path_buf)
}

fn writable(dir: &Path) -> bool {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
}

/// `url` without its password.
fn redact_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return "(an unparsable URL)".into();
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    // libpq takes secrets as parameters too (`?password=`, `sslpassword=`).
    let secret = |k: &str| {
        let k = k.to_ascii_lowercase();
        ["pass", "secret", "token", "key"]
            .iter()
            .any(|s| k.contains(s))
    };
    if u.query_pairs().any(|(k, _)| secret(&k)) {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret(&k) {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// What TLS an SMTP URL asks for, as lettre reads it.
fn smtp_mode(url: &str) -> String {
    let Ok(u) = url::Url::parse(url) else {
        return "unknown".into();
    };
    let tls = u
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let tls = match (u.scheme(), tls.as_deref()) {
        ("smtps", _) => "implicit TLS",
        (_, Some("required")) => "STARTTLS required",
        (_, Some("opportunistic")) => "STARTTLS if offered",
        _ => "no TLS",
    };
    if u.username().is_empty() {
        tls.to_string()
    } else {
        format!("{tls}, authenticated as {}", u.username())
    }
}

fn rfc3339(secs: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64),
    )
    .to_string()
    .trim_end_matches('Z')
    .replace('T', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_store_and_mail_urls_are_masked() {
        let shown = redact_url(
            "postgres://sesame:hunter2@db/sesame?sslmode=require&password=s3cret&sslpassword=k3y&sslkey=%2Fetc%2Fk",
        );
        for secret in ["hunter2", "s3cret", "k3y", "%2Fetc%2Fk"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("sslmode=require"), "{shown}");
        assert!(shown.contains("sesame:***@db"), "{shown}");
        assert_eq!(
            redact_url("smtp://mail.example.com:587?tls=required"),
            "smtp://mail.example.com:587?tls=required"
        );
    }

    #[test]
    fn only_loopback_and_private_ranges_count_as_private() {
        for private in [
            "10.1.2.3",
            "192.168.1.1",
            "172.31.0.1",
            "fd00::1",
            "::1",
            "100.64.0.9",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "172.32.0.1", "11.0.0.1", "2001:db8::1"] {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
        let within = |inner: &str| {
            let inner = Cidr::parse(inner).unwrap();
            PRIVATE
                .iter()
                .any(|p| inner.within(&Cidr::parse(p).unwrap()))
        };
        assert!(within("10.0.0.0/16") && within("127.0.0.1") && within("fd12::/16"));
        assert!(!within("0.0.0.0/0") && !within("10.0.0.0/7") && !within("::/0"));
    }

    #[test]
    fn a_clock_before_this_version_existed_fails() {
        let mut r = Report::default();
        check_clock(&mut r, &Clock::system());
        assert_eq!(r.worst(), Level::Pass);
        let stepped_back = Clock::system();
        stepped_back.set_back(Duration::from_secs(
            (stepped_back.now() - EARLIEST_SANE + 86_400) as u64,
        ));
        check_clock(&mut r, &stepped_back);
        assert_eq!(r.worst(), Level::Fail);
        assert!(r.render().contains("timedatectl set-ntp true"));
    }

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(
            redact_url("smtp://mailer:s3cret@mail.example.com:587?tls=required"),
            "smtp://mailer:***@mail.example.com:587?tls=required"
        );
        assert_eq!(
            smtp_mode("smtp://mailer:s3cret@mail.example.com:587?tls=required"),
            "STARTTLS required, authenticated as mailer"
        );
        assert_eq!(smtp_mode("smtps://mail.example.com"), "implicit TLS");
    }
}
