//! The gateway under test: a real Sesame on free ports in this process
//! (`TestApp`), with the config it runs, the browser-like client, and
//! helpers to read pages and cookies.

use super::*;

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
    /// `[rate_limit] waits_per_client_per_minute`: high by default.
    pub waits_per_minute: u32,
    /// `[auth] notify_new_device`: on, as by default.
    pub notify_new_device: bool,
    /// `[portal] public_url = "http://{host}:{port}"` with this host.
    pub portal: Option<&'static str>,
    /// The first site's host (`localhost` by default).
    pub site0_host: &'static str,
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
            waits_per_minute: 100_000,
            notify_new_device: true,
            portal: None,
            site0_host: "localhost",
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
    /// The portal's URL, if it has one.
    pub portal: Option<String>,
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
notify_new_device = {notify}

[users]
signup = "{signup}"
{portal}

[rate_limit]
per_email = 5
per_client = {per_client}
anonymous_per_client_per_minute = {anonymous}
passkey_starts_per_minute = {passkey_starts}
waits_per_client_per_minute = {waits}

[[site]]
name = "Test app"
public_url = "http://{site0_host}:{public_port}"
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
        notify = o.notify_new_device,
        anonymous = o.anonymous_per_minute,
        per_client = o.per_client,
        passkey_starts = o.passkey_starts_per_minute,
        waits = o.waits_per_minute,
        site0 = o.site0,
        extra = o.extra,
        portal = match o.portal {
            Some(host) => format!("[portal]\npublic_url = \"http://{host}:{port}\"\n"),
            None => String::new(),
        },
        site0_host = o.site0_host,
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
        base: format!("http://{}:{port}", o.site0_host),
        portal: o.portal.map(|host| format!("http://{host}:{port}")),
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
                ..Default::default()
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

/// A "check your email" page with its number (another device approves
/// with it, different for every sign-in) as `NN`, for comparing pages.
pub fn without_number(html: &str) -> String {
    let mut out = html.to_string();
    if let Some(at) = out.find("class=\"number\"") {
        let end = out[at..].find("</p>").map_or(out.len(), |e| at + e);
        out.replace_range(at..end, "class=\"number\">NN");
    }
    out
}

/// A wait of `b` at `url` (`/.sesame/login/wait`), held in a task: its
/// answer and when it came.
pub fn held_wait(
    b: &reqwest::Client,
    url: String,
) -> tokio::task::JoinHandle<(serde_json::Value, std::time::Instant)> {
    let b = b.clone();
    tokio::spawn(async move {
        let r = b.get(url).send().await.unwrap();
        (r.json().await.unwrap(), std::time::Instant::now())
    })
}

/// The number "check your email" shows, for approving on another device.
pub fn number_on(page: &str) -> Option<String> {
    let at = page.find("class=\"number\"")?;
    let rest = &page[at..];
    let digits = &rest[rest.find('>')? + 1..];
    Some(digits[..digits.find('<')?].trim().to_string())
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

/// Does the response set cookie `name` with attribute `attr` (as written)?
pub fn set_cookie_has(r: &reqwest::Response, name: &str, attr: &str) -> bool {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.starts_with(&format!("{name}=")))
        .any(|v| v.split(';').any(|a| a.trim() == attr))
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
