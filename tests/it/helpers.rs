//! Test rig: a real gateway on free ports, a real upstream that records what
//! it receives, and a real SMTP server that captures the mail. Tests read the
//! link and code out of the captured mail and follow them as a person would.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailin_embedded::{response, Handler, Server, SslConfig};
use reqwest::redirect::Policy;
use sesame::clock::Clock;
use sesame::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A port for a server a test starts later, or for an address where nothing
/// listens. Taken from 20000..32000, below the kernel's ephemeral range
/// (32768 and up here and on CI), where every `bind(":0")` and every outgoing
/// connection of this process lands, and never twice in one run: the port
/// cannot be handed to another test's sink or app in the time between this
/// check and the gateway's bind. (Binding ":0" and letting go raced that
/// way: a gateway once lost its port to an SMTP sink and the test's request
/// got the sink's greeting.) The bind skips ports another process holds.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Start where another run of this binary (another checkout) is unlikely to be.
    let offset = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (offset + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN)
}

/// A TLS server side with `cert`/`key` (PEM files).
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls;
    let chain = rustls::pki_types::pem::PemObject::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::pem::PemObject::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A process a test runs beside the gateway (nginx, Caddy), killed and
/// reaped when dropped.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl KillOnDrop {
    /// Wait up to 20 s until something listens on 127.0.0.1:`port`; false
    /// if the process exited or the time ran out.
    pub fn listens(&mut self, port: u16) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return true;
            }
            if let Ok(Some(_)) = self.0.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

// ---------- SMTP sink ----------

#[derive(Clone, Default)]
struct Sink {
    /// `(user, password)` that AUTH PLAIN accepts, if AUTH is offered.
    login: Option<(String, String)>,
    buf: Vec<u8>,
    to: Vec<String>,
    out: Arc<Mutex<Vec<Mail>>>,
}

#[derive(Clone, Debug)]
pub struct Mail {
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Mail {
    pub fn link(&self) -> String {
        let start = self.text.find("http").expect("a link in the mail");
        self.text[start..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }

    pub fn code(&self) -> String {
        let i = self.text.find("code").expect("a code in the mail");
        self.text[i..]
            .split(|c: char| !c.is_ascii_digit())
            .find(|w| w.len() == 6)
            .expect("six digits")
            .to_string()
    }

    pub fn token(&self) -> String {
        let link = self.link();
        let url = url::Url::parse(&link).unwrap();
        url.query_pairs()
            .find(|(k, _)| k == "token")
            .unwrap()
            .1
            .into_owned()
    }
}

impl Handler for Sink {
    fn auth_plain(&mut self, _authz: &str, user: &str, password: &str) -> response::Response {
        match &self.login {
            Some((u, p)) if u == user && p == password => response::AUTH_OK,
            _ => response::INVALID_CREDENTIALS,
        }
    }

    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        to: &[String],
    ) -> response::Response {
        self.buf.clear();
        self.to = to.to_vec();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> response::Response {
        let msg = mail_parser::MessageParser::default()
            .parse(&self.buf)
            .expect("parsable mail");
        let mail = Mail {
            to: self.to.clone(),
            subject: msg.subject().unwrap_or("").to_string(),
            text: msg.body_text(0).map(|s| s.into_owned()).unwrap_or_default(),
            html: msg.body_html(0).map(|s| s.into_owned()).unwrap_or_default(),
        };
        self.out.lock().unwrap().push(mail);
        response::OK
    }
}

#[derive(Clone)]
pub struct MailBox {
    pub addr: SocketAddr,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl MailBox {
    pub fn start() -> MailBox {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink {
            out: mails.clone(),
            ..Default::default()
        };
        let mut server = Server::new(sink);
        server
            .with_name("sink.test")
            .with_ssl(SslConfig::None)
            .unwrap()
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        MailBox { addr, mails }
    }

    /// A sink that offers STARTTLS with `cert`/`key` and requires AUTH PLAIN
    /// (which mailin only allows after STARTTLS).
    pub fn start_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        user: &str,
        password: &str,
    ) -> MailBox {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink {
            out: mails.clone(),
            login: Some((user.into(), password.into())),
            ..Default::default()
        };
        let mut server = Server::new(sink);
        server
            .with_name("sink.test")
            .with_ssl(SslConfig::SelfSigned {
                cert_path: cert.display().to_string(),
                key_path: key.display().to_string(),
            })
            .unwrap()
            .with_auth(mailin_embedded::AuthMechanism::Plain)
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        MailBox { addr, mails }
    }

    /// The plain sink behind implicit TLS (`smtps://`, the port 465 way):
    /// a TLS listener that hands each connection's bytes on to the sink.
    pub async fn start_implicit_tls(cert: &std::path::Path, key: &std::path::Path) -> MailBox {
        let plain = MailBox::start();
        let sink = plain.addr;
        let acceptor = tls_acceptor(cert, key);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut outer) = acceptor.accept(sock).await else {
                        return;
                    };
                    let Ok(mut inner) = tokio::net::TcpStream::connect(sink).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut outer, &mut inner).await;
                });
            }
        });
        MailBox {
            addr,
            mails: plain.mails,
        }
    }

    pub fn all(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    /// Wait for the next mail to `to` (beyond the `seen` ones already taken).
    pub async fn wait_for(&self, to: &str, seen: usize) -> Mail {
        self.wait_for_subject(to, seen, "").await
    }

    /// Wait for the first mail to `to` beyond the `seen` ones whose subject
    /// starts with `subject` (notices about passkeys go to the same address).
    pub async fn wait_for_subject(&self, to: &str, seen: usize, subject: &str) -> Mail {
        // Generous: a failed delivery is retried after 0.5 s and 2 s, and
        // a loaded machine is slow to start with.
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            let got = self
                .all()
                .into_iter()
                .filter(|m| m.to.iter().any(|t| t == to))
                .skip(seen)
                .find(|m| m.subject.starts_with(subject));
            if let Some(m) = got {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no mail to {to} (subject {subject:?}) arrived within 20 s");
    }

    pub fn count_to(&self, to: &str) -> usize {
        self.all()
            .iter()
            .filter(|m| m.to.iter().any(|t| t == to))
            .count()
    }
}

// ---------- recording upstream ----------

#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    pub fn headers_named(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        Self::start_with(None).await
    }

    /// The same app behind TLS with `cert`/`key`.
    pub async fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Upstream {
        Self::start_with(Some(tls_acceptor(cert, key))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rec = seen.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let rec = rec.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => Self::serve(sock, rec).await,
                        Some(acceptor) => {
                            if let Ok(sock) = acceptor.accept(sock).await {
                                Self::serve(sock, rec).await
                            }
                        }
                    }
                });
            }
        });
        Upstream { addr, seen }
    }

    /// Record one request and answer it.
    async fn serve<S>(mut sock: S, rec: Arc<Mutex<Vec<Seen>>>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let Ok(n) = sock.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let mut lines = head.split("\r\n");
            let mut first = lines.next().unwrap_or("").split(' ');
            let method = first.next().unwrap_or("").to_string();
            let path = first.next().unwrap_or("").to_string();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| {
                    l.split_once(':')
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                })
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut have = buf.len() - head_end - 4;
            while have < len {
                let Ok(n) = sock.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    break;
                }
                have += n;
            }
            rec.lock().unwrap().push(Seen {
                method,
                path: path.clone(),
                headers,
            });
            let body = format!("upstream saw {path}");
            let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream saw a request")
    }
}

// ---------- the store ----------

/// Which store a test runs against; set per test by `store_tests!`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

tokio::task_local! {
    static BACKEND: Backend;
}

pub async fn with_store<F: std::future::Future<Output = ()>>(backend: Backend, test: F) {
    BACKEND.scope(backend, test).await
}

pub fn backend() -> Backend {
    BACKEND.try_with(|b| *b).unwrap_or(Backend::Sqlite)
}

pub fn postgres_base_url() -> String {
    std::env::var("SESAME_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A store for one test: a SQLite file in its own folder, or a schema of
/// its own in the test PostgreSQL database (dropped when the test ends).
pub struct TestStore {
    pub url: String,
    _dir: tempfile::TempDir,
    schema: Option<String>,
}

impl TestStore {
    pub async fn new(backend: Backend) -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => TestStore {
                url: format!("sqlite://{}", dir.path().join("sesame.db").display()),
                _dir: dir,
                schema: None,
            },
            Backend::Postgres => {
                let base = postgres_base_url();
                let schema = format!(
                    "t_{}",
                    sesame::keys::random_id(9)
                        .to_lowercase()
                        .replace(['-', '_'], "x")
                );
                let pool = sqlx::PgPool::connect(&base).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is not reachable at {base} ({e}). Start it (e.g. `pg_ctlcluster 15 main start`) \
                         or set SESAME_TEST_POSTGRES_URL."
                    )
                });
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
                let sep = if base.contains('?') { '&' } else { '?' };
                TestStore {
                    url: format!("{base}{sep}options[search_path]={schema}"),
                    _dir: dir,
                    schema: Some(schema),
                }
            }
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn config(&self) -> sesame::config::StoreConfig {
        let text = format!("[store]\nurl = \"{}\"\n[[site]]\npublic_url = \"http://localhost\"\nupstream = [\"127.0.0.1:1\"]\n", self.url);
        sesame::config::Config::from_toml(&text).unwrap().store
    }

    pub async fn open(&self) -> sesame::store::DynStore {
        sesame::store::open(&self.config()).await.unwrap()
    }

    /// How many rows `table` has, read with SQL of the test's own.
    pub async fn rows(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        if self.schema.is_some() {
            let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
            let n = sqlx::query_scalar(&sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        } else {
            let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
            let n = sqlx::query_scalar(&sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
    }

    /// Wait (up to 20 s) until `table` has at least `n` rows.
    pub async fn wait_for_rows(&self, table: &str, n: i64) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if self.rows(table).await >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{table} did not reach {n} rows within 20 s");
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            let base = postgres_base_url();
            // Off the test's runtime: a thread with its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(pool) = sqlx::PgPool::connect(&base).await {
                        let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                            .execute(&pool)
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

// ---------- the gateway ----------

pub struct Options {
    pub signup: &'static str,
    pub smtp: Option<SocketAddr>,
    pub extra: String,
    /// Use this store instead of a fresh one for the test's backend.
    pub store: Option<TestStore>,
    /// Lines added to the first site's table.
    pub site0: String,
    /// Offer a passkey after an email sign-in (off: most tests follow `rd`).
    pub passkey_prompt: bool,
    /// Lines added to `[server]`.
    pub server: String,
    /// The first site's upstreams, instead of the recording upstream.
    pub upstreams: Option<Vec<SocketAddr>>,
    /// The port of the first site's public URL, if not the gateway's own
    /// (a proxy in front).
    pub public_port: Option<u16>,
    /// `[rate_limit] anonymous_per_client_per_minute`: high by default, as
    /// every test's requests come from one address.
    pub anonymous_per_minute: u32,
    /// `[rate_limit] passkey_starts_per_minute`: high by default.
    pub passkey_starts_per_minute: u32,
    /// `[rate_limit] per_client` (sign-in links per client address per hour).
    pub per_client: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            signup: "open",
            smtp: None,
            extra: String::new(),
            store: None,
            site0: String::new(),
            passkey_prompt: false,
            server: String::new(),
            upstreams: None,
            public_port: None,
            anonymous_per_minute: 100_000,
            passkey_starts_per_minute: 100_000,
            per_client: 1000,
        }
    }
}

pub struct TestApp {
    pub port: u16,
    pub base: String,
    pub admin: String,
    pub mail: MailBox,
    pub upstream: Upstream,
    pub clock: Clock,
    pub running: Option<sesame::Running>,
    /// Dropped after `running` (fields drop in order).
    pub store: TestStore,
}

pub fn config_text(
    port: u16,
    admin: u16,
    store_url: &str,
    smtp: SocketAddr,
    upstream: SocketAddr,
    o: &Options,
) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
admin_listen = "127.0.0.1:{admin}"
threads = 2
{server}

[store]
url = "{store_url}"

[mail]
transport = "smtp"
smtp_url = "smtp://{smtp}"
from = "Sesame test <login@example.com>"
timeout = "2s"

[auth]
passkey_prompt = {prompt}

[users]
signup = "{signup}"

[rate_limit]
per_email = 5
per_client = {per_client}
anonymous_per_client_per_minute = {anonymous}
passkey_starts_per_minute = {passkey_starts}

[[site]]
name = "Test app"
public_url = "http://localhost:{public_port}"
upstream = [{site0_upstreams}]
public_paths = ["/public", "/health"]
{site0}

[[site]]
name = "Other app"
public_url = "http://127.0.0.1:{port}"
upstream = ["{upstream}"]
{extra}
"#,
        signup = o.signup,
        server = o.server,
        site0_upstreams = o
            .upstreams
            .as_ref()
            .map(|u| u
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_else(|| format!("\"{upstream}\"")),
        public_port = o.public_port.unwrap_or(port),
        prompt = o.passkey_prompt,
        anonymous = o.anonymous_per_minute,
        per_client = o.per_client,
        passkey_starts = o.passkey_starts_per_minute,
        site0 = o.site0,
        extra = o.extra,
    )
}

pub async fn spawn_with(mut o: Options) -> TestApp {
    let mail = MailBox::start();
    let upstream = Upstream::start().await;
    let store = match o.store.take() {
        Some(s) => s,
        None => TestStore::new(backend()).await,
    };
    let port = free_port();
    let admin = free_port();
    let text = config_text(
        port,
        admin,
        &store.url,
        o.smtp.unwrap_or(mail.addr),
        upstream.addr,
        &o,
    );
    let config = Config::from_toml(&text).expect("test config is valid");
    let clock = Clock::system();
    let running = start(config, clock.clone()).await;
    TestApp {
        port,
        base: format!("http://localhost:{port}"),
        admin: format!("http://127.0.0.1:{admin}"),
        mail,
        upstream,
        clock,
        running: Some(running),
        store,
    }
}

pub async fn start(config: Config, clock: Clock) -> sesame::Running {
    tokio::task::spawn_blocking(move || {
        sesame::start(
            config,
            sesame::Options {
                clock,
                demo_app: None,
            },
        )
    })
    .await
    .unwrap()
    .expect("gateway starts")
}

pub async fn spawn() -> TestApp {
    spawn_with(Options::default()).await
}

/// A browser: its own cookie jar, no automatic redirects.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The rate limits' windows: logins per address and client, codes per address.
pub const FIFTEEN_MINUTES: Duration = Duration::from_secs(15 * 60);
pub const ONE_DAY: Duration = Duration::from_secs(24 * 3600);

/// Seconds left of the rate-limit window of `window` that `now` is in
/// (windows follow the clock: 15 minutes from :00, a day from midnight UTC).
pub fn window_left(now: i64, window: Duration) -> i64 {
    let w = window.as_secs() as i64;
    w - now.rem_euclid(w)
}

impl TestApp {
    /// Make sure at least `needed` is left of the current rate-limit
    /// `window`, moving the clock into the next one if not, so that a
    /// test's counts are not split by a window's end.
    pub fn window_left_at_least(&self, window: Duration, needed: Duration) {
        let left = window_left(self.clock.now(), window);
        if left < needed.as_secs() as i64 {
            self.clock.advance(Duration::from_secs(left as u64 + 1));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Ask for a link in `b` and return the mail that arrives.
    pub async fn ask_link(&self, b: &reqwest::Client, email: &str, rd: &str) -> Mail {
        let to = email.to_lowercase();
        let seen = self.mail.count_to(&to);
        let r = self
            .post_form(b, "/.sesame/login", &[("email", email), ("rd", rd)])
            .await;
        assert_eq!(r.status(), 200, "login POST");
        self.mail.wait_for_subject(&to, seen, "Sign in to").await
    }

    pub async fn post_form(
        &self,
        b: &reqwest::Client,
        path: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        b.post(self.url(path))
            .header("Origin", &self.base)
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Sign in with a link in `b`; returns the 303 response.
    pub async fn sign_in(&self, b: &reqwest::Client, email: &str) -> reqwest::Response {
        let mail = self.ask_link(b, email, "/").await;
        let r = self
            .post_form(b, "/.sesame/magic", &[("token", &mail.token())])
            .await;
        assert_eq!(r.status(), 303, "link accepted");
        r
    }

    /// Sign in by link in `b` at `base` (a proxy in front, or another site
    /// of this gateway), as a person would: the mail, and the link's `303`.
    pub async fn sign_in_at(
        &self,
        b: &reqwest::Client,
        base: &str,
        email: &str,
        rd: &str,
    ) -> (Mail, reqwest::Response) {
        let seen = self.mail.count_to(email);
        let r = b
            .post(format!("{base}/.sesame/login"))
            .header("Origin", base)
            .form(&[("email", email), ("rd", rd)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login POST at {base}");
        let mail = self.mail.wait_for_subject(email, seen, "Sign in to").await;
        let r = b
            .post(format!("{base}/.sesame/magic"))
            .header("Origin", base)
            .form(&[("token", &mail.token())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "link accepted at {base}");
        (mail, r)
    }

    /// GET `path` from a fresh client carrying `session` as its cookie.
    pub async fn get_as(&self, path: &str, session: &str) -> reqwest::Response {
        browser()
            .get(self.url(path))
            .header("Cookie", format!("sesame={session}"))
            .send()
            .await
            .unwrap()
    }

    /// Ask `/.sesame/auth` about `uri` on this site, as a proxy in front
    /// would, for a browser carrying `session`.
    pub async fn forward_auth(&self, session: &str, uri: &str) -> reqwest::Response {
        browser()
            .get(self.url("/.sesame/auth"))
            .header("Cookie", format!("sesame={session}"))
            .header("X-Forwarded-Host", format!("localhost:{}", self.port))
            .header("X-Forwarded-Uri", uri)
            .send()
            .await
            .unwrap()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one series, named in full as `/metrics` shows it
    /// (`name{label="value",...}`, labels sorted by name as the prometheus crate writes them). A series
    /// that is not there fails the test, with the family's series that are:
    /// a renamed metric or label must not read as 0.
    pub fn metric(text: &str, series: &str) -> f64 {
        Self::metric_if_present(text, series).unwrap_or_else(|| {
            let family = series.split('{').next().unwrap_or(series);
            let shown: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(family) && !l.starts_with('#'))
                .collect();
            panic!("no series {series} in /metrics; of {family} there are: {shown:#?}")
        })
    }

    /// The value of one series, or `None` while it has not been counted yet
    /// (labelled series appear at their first count).
    pub fn metric_if_present(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| match l.rsplit_once(' ') {
                Some((name, v)) if name == series => v.parse().ok(),
                _ => None,
            })
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            tokio::task::spawn_blocking(move || r.stop()).await.unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            // Stop off the async worker (shutdown joins a thread), before the
            // store goes away.
            let _ = std::thread::spawn(move || r.stop()).join();
        }
    }
}

/// `name="rd" value="..."` out of a page, unescaped.
pub fn hidden_value(html: &str, name: &str) -> Option<String> {
    let needle = format!("name=\"{name}\" value=\"");
    let start = html.find(&needle)? + needle.len();
    let raw = &html[start..start + html[start..].find('"')?];
    Some(
        raw.replace("&#x2f;", "/")
            .replace("&#x27;", "'")
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

pub fn cookies_set(r: &reqwest::Response) -> HashMap<String, String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            v.split(';')
                .next()?
                .split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// Send one raw HTTP/1.1 request (the path exactly as given, no client-side
/// normalisation) and return the status code and the whole response.
pub async fn raw_request(port: u16, request_head: &str) -> (u16, String) {
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    sock.write_all(request_head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

pub async fn raw_get(port: u16, path: &str) -> u16 {
    raw_request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"),
    )
    .await
    .0
}

/// A TCP forwarder the test can cut (every connection dropped, new ones
/// refused) and restore: a store or network outage on demand.
pub struct CutProxy {
    pub addr: SocketAddr,
    open: tokio::sync::watch::Sender<bool>,
}

impl CutProxy {
    pub async fn start(target: SocketAddr) -> CutProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, watch) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                if !*watch.borrow() {
                    continue; // dropped: connection closed at once
                }
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = watch.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        CutProxy { addr, open }
    }

    pub fn cut(&self) {
        let _ = self.open.send(false);
    }

    pub fn restore(&self) {
        let _ = self.open.send(true);
    }
}

impl TestApp {
    /// Run `sesame ARGS -c <config naming this test's store>`: (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let path = self.store.dir().join("cli-admin.toml");
        std::fs::write(
            &path,
            format!(
                "[store]\nurl = \"{}\"\n[[site]]\npublic_url = \"http://localhost\"\nupstream = [\"127.0.0.1:1\"]\n",
                self.store.url
            ),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sesame"))
            .args(args)
            .args(["-c", path.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

// ---------- gateway processes ----------

/// A real `sesame run` process.
pub struct Instance {
    pub port: u16,
    /// Its admin listener (health, metrics).
    pub admin: u16,
    pub child: std::process::Child,
    /// Where the process writes its log (stderr).
    pub log: std::path::PathBuf,
}

impl Instance {
    pub fn start(dir: &std::path::Path, name: &str, config: &str) -> Instance {
        Self::start_under(dir, name, config, &[])
    }

    /// Started by way of `wrapper` (a command that runs its arguments).
    pub fn start_under(
        dir: &std::path::Path,
        name: &str,
        config: &str,
        wrapper: &[&str],
    ) -> Instance {
        let port = free_port();
        let admin = free_port();
        let text = config
            .replacen(
                "listen = [\"127.0.0.1:0\"]",
                &format!("listen = [\"127.0.0.1:{port}\"]"),
                1,
            )
            .replacen(
                "admin_listen = \"127.0.0.1:0\"",
                &format!("admin_listen = \"127.0.0.1:{admin}\""),
                1,
            );
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        let log_path = dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let sesame = env!("CARGO_BIN_EXE_sesame");
        let mut command = match wrapper {
            [] => std::process::Command::new(sesame),
            [program, args @ ..] => {
                let mut c = std::process::Command::new(program);
                c.args(args).arg(sesame);
                c
            }
        };
        let mut child = command
            .args(["run", "-c", path.to_str().unwrap()])
            .env(
                "RUST_LOG",
                std::env::var("SESAME_TEST_LOG").unwrap_or("info,sesame=debug,pingora=warn".into()),
            )
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("instance {name} exited ({status}) while starting:\n{log}");
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Instance {
                    port,
                    admin,
                    child,
                    log: log_path,
                };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        panic!("instance {name} did not start:\n{log}");
    }

    /// What the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log holds `text` (panics with the log after 30 s).
    pub async fn until_logged(&self, text: &str) {
        let t = Instant::now();
        while !self.log().contains(text) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{text:?} not logged within 30 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.port)
    }

    /// Peak resident memory (VmHWM) of the process, in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmHWM in /proc/<pid>/status")
            * 1024
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------- certificates ----------

/// A test certificate authority made with openssl, in its own directory.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    /// The CA certificate (PEM), to trust.
    pub cert: std::path::PathBuf,
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is needed for the TLS tests (apt-get install -y openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC_KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let subj = format!("/CN={name}");
        let mut args = vec!["req", "-x509"];
        args.extend(EC_KEY);
        args.extend([
            "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", &subj,
        ]);
        openssl(dir.path(), &args);
        let cert = dir.path().join("ca.pem");
        TestCa { dir, cert }
    }

    /// A server certificate for `names` signed by this CA: (cert, key) files
    /// named after `file`, in the CA's directory.
    pub fn leaf(&self, file: &str, names: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = self.dir.path();
        let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
        std::fs::write(
            dir.join(format!("{file}.ext")),
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
                san.join(",")
            ),
        )
        .unwrap();
        let (key, csr, cert, ext) = (
            format!("{file}.key"),
            format!("{file}.csr"),
            format!("{file}.pem"),
            format!("{file}.ext"),
        );
        let subj = format!("/CN={}", names[0]);
        let mut args = vec!["req"];
        args.extend(EC_KEY);
        args.extend(["-nodes", "-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &args);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
        (dir.join(cert), dir.join(key))
    }

    pub fn reqwest_cert(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(&std::fs::read(&self.cert).unwrap()).unwrap()
    }
}

/// A client that trusts only `ca`, keeps cookies and follows no redirects.
pub fn tls_browser(ca: &TestCa, resolve: &[(&str, SocketAddr)]) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca.reqwest_cert())
        .cookie_store(true)
        .redirect(Policy::none())
        .timeout(Duration::from_secs(10));
    for (name, addr) in resolve {
        b = b.resolve(name, *addr);
    }
    b.build().unwrap()
}
