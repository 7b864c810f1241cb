//! Zero-downtime upgrade of real `sesame run` processes: a new process takes
//! the listening sockets over while requests keep coming.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::*;

/// A gateway process on SQLite in front of a recording upstream, with a
/// private directory for the upgrade socket and a service manager's
/// notification socket (`NOTIFY_SOCKET`) the test reads.
struct Upgradable {
    old: Instance,
    public: String,
    config_path: std::path::PathBuf,
    notify: UnixDatagram,
    mail: MailBox,
    _upstream: Upstream,
    store: TestStore,
}

impl Upgradable {
    async fn start() -> Upgradable {
        Upgradable::in_front_of(None, "").await
    }

    /// In front of `app`, if given, instead of the recording upstream, with
    /// `server` added to `[server]`.
    async fn in_front_of(app: Option<std::net::SocketAddr>, server: &str) -> Upgradable {
        let store = TestStore::new(Backend::Sqlite).await;
        let mail = MailBox::start();
        let upstream = Upstream::start().await;
        let dir = store.dir();
        let run = dir.join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        let notify_path = dir.join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let public = format!("http://localhost:{}", free_port());
        let config = format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
admin_listen = "127.0.0.1:0"
threads = 2
upgrade_socket = "{}"
{server}

[store]
url = "{}"
[mail]
smtp_url = "smtp://{}"
from = "Sesame test <login@example.com>"
[users]
signup = "open"
[rate_limit]
per_client = 1000
[[site]]
name = "Upgraded app"
public_url = "{public}"
upstream = ["{}"]
"#,
            run.join("upgrade.sock").display(),
            store.url,
            mail.addr,
            app.unwrap_or(upstream.addr)
        );
        let old = Instance::start_with_env(
            dir,
            "old",
            &config,
            &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
        );
        let config_path = dir.join("old.toml");
        Upgradable {
            old,
            public,
            config_path,
            notify,
            mail,
            _upstream: upstream,
            store,
        }
    }

    /// The next message to the service manager.
    fn notified(&self) -> String {
        let mut buf = [0u8; 256];
        let n = self
            .notify
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no sd_notify message: {e}\n{}", self.old.log()));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// A browser with a session, signed in by the emailed link.
    async fn signed_in(&self, email: &str) -> reqwest::Client {
        self.signed_in_with_cookie(email).await.0
    }

    /// A browser signed in by the emailed link, and its session cookie.
    async fn signed_in_with_cookie(&self, email: &str) -> (reqwest::Client, String) {
        let b = browser();
        let seen = self.mail.count_to(email);
        let r = b
            .post(self.old.url("/.sesame/login"))
            .header("Origin", &self.public)
            .form(&[("email", email)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", self.old.log());
        let mail = self.mail.wait_for(email, seen).await;
        let r = b
            .post(self.old.url("/.sesame/magic"))
            .header("Origin", &self.public)
            .form(&[("token", &mail.token())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{}", self.old.log());
        let cookie = cookies_set(&r)["sesame"].clone();
        (b, cookie)
    }
}

/// The main process id a `READY=1\nMAINPID=N` message names.
fn main_pid(message: &str) -> u32 {
    message
        .lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no MAINPID in {message:?}"))
}

fn signal(pid: u32, signal: rustix::process::Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), signal)
        .unwrap();
}

/// Stops the process that took over when the test ends.
struct Successor(u32);

impl Drop for Successor {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(self.0 as i32).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
}

/// Requests of signed-in browsers (each on its keep-alive connections) and
/// of a client that opens a new connection every time, until `stop`.
struct Load {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, browsers: Vec<reqwest::Client>) -> Load {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let begun = Instant::now();
        let mut tasks = Vec::new();
        for (i, b) in browsers.into_iter().enumerate() {
            let (ok, failed, failures, stop, url) = (
                ok.clone(),
                failed.clone(),
                failures.clone(),
                stop.clone(),
                url.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    // Browser 0 keeps no connection: each request connects.
                    let r = if i == 0 {
                        b.get(&url).header("Connection", "close").send().await
                    } else {
                        b.get(&url).send().await
                    };
                    match r {
                        Ok(r) if r.status() == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("browser {i}: {}", r.status()));
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            failures.lock().unwrap().push(format!(
                                "browser {i}, {:?} into the load: {e:?}",
                                begun.elapsed()
                            ));
                        }
                    }
                }
            }));
        }
        Load {
            ok,
            failed,
            failures,
            stop,
            tasks,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Requests answered 200 while `during` runs.
    async fn ok_during(&self, during: Duration) -> u64 {
        let before = self.ok();
        tokio::time::sleep(during).await;
        self.ok() - before
    }

    async fn stop(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            failures,
        )
    }
}

/// Wait for `instance` to exit; its status.
async fn exited(instance: &mut Instance) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(status) = instance.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the old process still runs 30 s after the upgrade:\n{}",
            instance.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_under_load_fails_no_request_and_keeps_every_session() {
    let mut u = Upgradable::start().await;
    let old_pid = u.old.child.id();
    assert_eq!(main_pid(&u.notified()), old_pid, "READY=1 at start");
    let mut browsers = Vec::new();
    for i in 0..6 {
        browsers.push(u.signed_in(&format!("load{i}@example.com")).await);
    }
    let app = u.old.url("/app");
    let load = Load::start(app.clone(), browsers.clone());
    assert!(load.ok_during(Duration::from_millis(300)).await > 0);

    let started = Instant::now();
    signal(old_pid, rustix::process::Signal::USR2);
    // The old process names the new one as it hands over; the new one says
    // it is ready once its listeners accept.
    let new_pid = main_pid(&u.notified());
    let _successor = Successor(new_pid);
    assert_ne!(new_pid, old_pid, "the new process is the main one now");
    let message = u.notified();
    assert!(message.contains("READY=1"), "{message:?}");
    assert_eq!(main_pid(&message), new_pid);
    let ready = started.elapsed();
    let status = exited(&mut u.old).await;
    let replaced = started.elapsed();
    assert!(status.success(), "the old process exits cleanly: {status}");
    // Still served, by the new process alone now.
    let after = load.ok_during(Duration::from_millis(500)).await;
    let (ok, failed, failures) = load.stop().await;
    eprintln!(
        "upgrade under load: {ok} requests answered, {failed} failed; new process ready after \
         {ready:?}, old one gone after {replaced:?}"
    );
    assert_eq!(failed, 0, "failed requests: {failures:?}\n{}", u.old.log());
    assert!(after > 0, "nothing answered after the old process exited");
    let log = u.old.log();
    assert!(
        log.contains("upgrade: took the listening sockets over"),
        "{log}"
    );

    // Every session made before still works, and a new sign-in too.
    for b in &browsers {
        let r = b.get(&app).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let newcomer = u.signed_in("after@example.com").await;
    assert_eq!(newcomer.get(&app).send().await.unwrap().status(), 200);
    drop(u.store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_that_cannot_start_leaves_the_running_process_serving() {
    let mut u = Upgradable::start().await;
    let pid = u.old.child.id();
    u.notified();
    let b = u.signed_in("stay@example.com").await;
    let app = u.old.url("/app");

    // A stray SIGQUIT, with no new process waiting: ignored.
    signal(pid, rustix::process::Signal::QUIT);
    u.old.until_logged("SIGQUIT ignored").await;
    assert_eq!(b.get(&app).send().await.unwrap().status(), 200);

    // The config file now has a mistake: the new process refuses it, exits,
    // and the old one goes on.
    let good = std::fs::read_to_string(&u.config_path).unwrap();
    std::fs::write(&u.config_path, good.replace("threads = 2", "threads = 0")).unwrap();
    signal(pid, rustix::process::Signal::USR2);
    u.old.until_logged("upgrade failed").await;
    assert!(
        u.old.log().contains("server.threads"),
        "the new process says which key is wrong:\n{}",
        u.old.log()
    );
    assert_eq!(b.get(&app).send().await.unwrap().status(), 200);

    // A listen address new in the file that another program holds: the
    // new process finds out before the handover, not after.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap();
    let listen = format!("listen = [\"127.0.0.1:{}\"]", u.old.port);
    assert!(good.contains(&listen), "{good}");
    let both = format!("listen = [\"127.0.0.1:{}\", \"{busy_addr}\"]", u.old.port);
    std::fs::write(&u.config_path, good.replace(&listen, &both)).unwrap();
    signal(pid, rustix::process::Signal::HUP);
    u.old.until_logged_times("upgrade failed", 2).await;
    assert!(
        u.old.log().contains(&busy_addr.to_string()),
        "the new process names the address in use:\n{}",
        u.old.log()
    );
    let handed = "handing the listening sockets over";
    assert!(
        !u.old.log().contains(handed),
        "found out too late:\n{}",
        u.old.log()
    );
    assert_eq!(b.get(&app).send().await.unwrap().status(), 200);
    drop(busy);

    // A certificate that does not load, likewise.
    let cert = u.store.dir().join("broken.pem");
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(
        &u.config_path,
        good.replace(
            "[store]",
            &format!(
                "[[server.tls]]\nlisten = \"127.0.0.1:{}\"\ncert = {cert:?}\nkey = {cert:?}\n\n[store]",
                free_port()
            ),
        ),
    )
    .unwrap();
    signal(pid, rustix::process::Signal::HUP);
    u.old.until_logged_times("upgrade failed", 3).await;
    assert!(
        u.old.log().contains("broken.pem"),
        "the new process names the certificate:\n{}",
        u.old.log()
    );
    assert!(
        !u.old.log().contains(handed),
        "found out too late:\n{}",
        u.old.log()
    );
    assert_eq!(b.get(&app).send().await.unwrap().status(), 200);

    // The one key a reload cannot change: where the sockets pass.
    let other = u.store.dir().join("run").join("other.sock");
    let moved = good.replace(
        "upgrade.sock\"",
        &format!("other.sock\"\n# was {}", "upgrade.sock"),
    );
    assert!(moved.contains(other.to_str().unwrap()), "{moved}");
    std::fs::write(&u.config_path, moved).unwrap();
    signal(pid, rustix::process::Signal::HUP);
    u.old.until_logged_times("upgrade failed", 4).await;
    assert!(
        u.old.log().contains("server.upgrade_socket changed"),
        "the new process names the key that takes a restart:\n{}",
        u.old.log()
    );
    assert!(
        !u.old.log().contains(handed),
        "found out too late:\n{}",
        u.old.log()
    );
    assert_eq!(b.get(&app).send().await.unwrap().status(), 200);

    // Three reloads refused (the mistake above came by SIGUSR2: an upgrade).
    let metrics = format!("http://127.0.0.1:{}/metrics", u.old.admin);
    let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    assert!(
        text.contains("sesame_config_reloads_total{result=\"failed\"} 3"),
        "{text}"
    );

    // Fixed, the next upgrade goes through.
    std::fs::write(&u.config_path, &good).unwrap();
    signal(pid, rustix::process::Signal::USR2);
    let new_pid = main_pid(&u.notified());
    let _successor = Successor(new_pid);
    assert_ne!(new_pid, pid);
    assert!(u.notified().contains("READY=1"));
    assert_eq!(b.get(&app).send().await.unwrap().status(), 200);
    // The counts go on in the new process, which no reload started.
    u.old
        .until_logged("handing the listening sockets over")
        .await;
    assert!(exited(&mut u.old).await.success());
    let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    assert!(
        text.contains("sesame_config_reloads_total{result=\"failed\"} 3")
            && text.contains("sesame_config_reloads_total{result=\"ok\"} 0"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_applies_the_changed_file_fails_no_request_and_keeps_sessions() {
    let mut u = Upgradable::start().await;
    let pid = u.old.child.id();
    u.notified();
    let b = u.signed_in("reload@example.com").await;
    let app = u.old.url("/app");
    let mut browsers = vec![b.clone()];
    for i in 0..3 {
        browsers.push(u.signed_in(&format!("reload{i}@example.com")).await);
    }
    let load = Load::start(app.clone(), browsers);
    assert!(load.ok_during(Duration::from_millis(300)).await > 0);
    let anonymous = browser();
    let open = u.old.url("/open/page");
    let metrics = format!("http://127.0.0.1:{}/metrics", u.old.admin);
    let hash_line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("sesame_config_info{"))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no sesame_config_info in\n{text}"))
    };
    let before = hash_line(&reqwest::get(&metrics).await.unwrap().text().await.unwrap());
    assert_eq!(anonymous.get(&open).send().await.unwrap().status(), 401);

    // The site gains a public path; `systemctl reload` sends SIGHUP.
    let text = std::fs::read_to_string(&u.config_path).unwrap();
    let changed = text.replace(
        "name = \"Upgraded app\"",
        "name = \"Upgraded app\"\npublic_paths = [\"/open\"]",
    );
    assert_ne!(changed, text);
    std::fs::write(&u.config_path, &changed).unwrap();
    let started = Instant::now();
    signal(pid, rustix::process::Signal::HUP);
    let new_pid = main_pid(&u.notified());
    let _successor = Successor(new_pid);
    assert!(u.notified().contains("READY=1"));
    let ready = started.elapsed();
    u.old.until_logged("why=\"reload\"").await;
    // Both processes accept for a few seconds; then only the new one.
    assert!(exited(&mut u.old).await.success());
    let after = load.ok_during(Duration::from_millis(300)).await;
    let (ok, failed, failures) = load.stop().await;
    eprintln!(
        "reload under load: {ok} requests answered, {failed} failed; the new file served after {ready:?}"
    );
    assert_eq!(failed, 0, "failed requests: {failures:?}\n{}", u.old.log());
    assert!(after > 0, "nothing answered after the old process exited");

    assert_eq!(anonymous.get(&open).send().await.unwrap().status(), 200);
    assert_eq!(
        b.get(&app).send().await.unwrap().status(),
        200,
        "the session stays"
    );
    let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    assert_ne!(
        before,
        hash_line(&text),
        "sesame_config_info names the new file"
    );
    assert!(
        text.contains("sesame_config_reloads_total{result=\"ok\"} 1"),
        "{text}"
    );
}

/// A WebSocket through `url` with the session `cookie`, past the app's
/// greeting.
async fn tunnel(
    url: &str,
    cookie: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("cookie", format!("sesame={cookie}").parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    let hello = ws.next().await.expect("greeting").unwrap();
    assert_eq!(hello.to_text().unwrap(), "hello");
    ws
}

/// `text` sent through `ws` comes back.
async fn echoes<S>(ws: &mut S, text: &str)
where
    S: futures::Sink<tokio_tungstenite::tungstenite::Message>
        + futures::Stream<
            Item = tokio_tungstenite::tungstenite::Result<tokio_tungstenite::tungstenite::Message>,
        > + Unpin,
    <S as futures::Sink<tokio_tungstenite::tungstenite::Message>>::Error: std::fmt::Debug,
{
    use futures::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::text(text))
        .await
        .unwrap();
    let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("an echo within 10 s")
        .expect("an open tunnel")
        .unwrap();
    assert_eq!(back.to_text().unwrap(), text);
}

type Tunnel =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A process in front of a WebSocket echo app, reloaded while a tunnel was
/// open through it: the old process (stopped accepting, waiting for the
/// tunnel), the tunnel, and the new process.
async fn reloaded_with_a_tunnel(server: &str) -> (Upgradable, Tunnel, Successor, String, String) {
    let echo = websocket_echo(Default::default()).await;
    let mut u = Upgradable::in_front_of(Some(echo), server).await;
    let pid = u.old.child.id();
    u.notified();
    let (_, cookie) = u.signed_in_with_cookie("ws@example.com").await;
    let url = u.old.url("/socket").replacen("http", "ws", 1);
    let mut before = tunnel(&url, &cookie).await;
    echoes(&mut before, "before the reload").await;

    signal(pid, rustix::process::Signal::HUP);
    let successor = Successor(main_pid(&u.notified()));
    assert!(u.notified().contains("READY=1"));
    // The old process has stopped accepting (until now it exited here, 6 s
    // after the handover, and cut the tunnel) and waits for the tunnel.
    u.old
        .until_logged("waiting for what is in hand requests=0 websockets=1")
        .await;
    echoes(&mut before, "after the handover").await;
    assert!(u.old.child.try_wait().unwrap().is_none());
    (u, before, successor, url, cookie)
}

/// Whether `ws` ends (closed, or its connection gone) within 20 s.
async fn ends(ws: &mut Tunnel) -> bool {
    use futures::StreamExt;
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_websockets_open_until_they_close_and_a_stop_does_not_wait_for_them() {
    use futures::SinkExt;
    let (mut u, mut before, successor, url, cookie) = reloaded_with_a_tunnel("").await;
    let new_pid = successor.0;

    // New tunnels open on the new process, which counts them.
    let mut after = tunnel(&url, &cookie).await;
    echoes(&mut after, "on the new process").await;
    let metrics = format!("http://127.0.0.1:{}/metrics", u.old.admin);
    let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    assert!(text.contains("\nsesame_websockets_open 1\n"), "{text}");

    // The last tunnel through the old process closes: it exits.
    before
        .send(tokio_tungstenite::tungstenite::Message::Close(None))
        .await
        .unwrap();
    assert!(exited(&mut u.old).await.success());
    echoes(&mut after, "still open").await;

    // A stop (SIGTERM) closes tunnels rather than wait for them.
    signal(new_pid, rustix::process::Signal::TERM);
    assert!(
        ends(&mut after).await,
        "the tunnel still open 20 s after SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_the_wait_after_a_reload_ends_it() {
    // `systemctl stop` signals every process of the unit, the old one too.
    let (mut u, mut before, _successor, _, _) = reloaded_with_a_tunnel("").await;
    signal(u.old.child.id(), rustix::process::Signal::TERM);
    assert!(exited(&mut u.old).await.success());
    assert!(ends(&mut before).await);
    assert!(u
        .old
        .log()
        .contains("stop: SIGTERM; WebSocket tunnels are closed"));
}

/// An app that answers `GET /slow` only once `release` is notified, and
/// notifies `arrived` when such a request comes in.
async fn held_app() -> (
    std::net::SocketAddr,
    Arc<tokio::sync::Notify>,
    Arc<tokio::sync::Notify>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let arrived = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let (a, r) = (arrived.clone(), release.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (arrived, release) = (a.clone(), r.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if head.starts_with(b"GET /slow ") {
                    arrived.notify_one();
                    release.notified().await;
                }
                let _ = sock
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndone",
                    )
                    .await;
            });
        }
    });
    (addr, arrived, release)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_answers_the_requests_in_hand_before_it_exits() {
    let (app, arrived, release) = held_app().await;
    let mut u = Upgradable::in_front_of(Some(app), "").await;
    u.notified();
    let b = u.signed_in("held@example.com").await;
    let url = u.old.url("/slow");
    let request = tokio::spawn(async move { b.get(url).send().await.map(|r| r.status()) });
    tokio::time::timeout(Duration::from_secs(10), arrived.notified())
        .await
        .expect("the request reaches the app");

    // systemctl stop: the process stops accepting and waits for it.
    signal(u.old.child.id(), rustix::process::Signal::TERM);
    u.old
        .until_logged("stop: stopped accepting; waiting for what is in hand requests=1")
        .await;
    release.notify_one();
    assert_eq!(request.await.unwrap().unwrap(), 200, "{}", u.old.log());
    assert!(exited(&mut u.old).await.success());
    assert!(u.old.log().contains("stop: nothing left in hand; exiting"));
}

/// `sesame check-config -c path`: its exit success and standard output.
fn check_config(path: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sesame"))
        .args(["check-config", "-c"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_names_the_keys_a_reload_would_change() {
    let mut u = Upgradable::start().await;
    let pid = u.old.child.id();
    u.notified();
    let (ok, out) = check_config(&u.config_path);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("the same as the config process {pid} runs")),
        "{out}"
    );

    // The copy it compares with holds secrets: Sesame's user's alone.
    let socket = u.store.dir().join("run").join("upgrade.sock");
    let copy = sesame::running_config::path(&socket);
    let mode = std::fs::metadata(&copy).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", copy.display());

    let text = std::fs::read_to_string(&u.config_path).unwrap();
    let next = u.store.dir().join("next.toml");
    let changed = text
        .replace(
            "name = \"Upgraded app\"",
            "name = \"Upgraded app\"\npublic_paths = [\"/open\"]",
        )
        .replace(
            "Sesame test <login@example.com>",
            "Sesame <secret-sender@example.com>",
        );
    std::fs::write(&next, &changed).unwrap();
    let (ok, out) = check_config(&next);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "against the config process {pid} runs, 2 keys differ; a reload applies them:"
        )),
        "{out}"
    );
    assert!(out.contains("  mail.from (changed)\n"), "{out}");
    assert!(out.contains("  site[0].public_paths (added)\n"), "{out}");
    assert!(!out.contains("secret-sender"), "values stay out: {out}");

    // Once the process has stopped, there is nothing to compare with.
    signal(pid, rustix::process::Signal::TERM);
    assert!(exited(&mut u.old).await.success());
    assert!(!copy.exists(), "the stopped process removes its copy");
    let (ok, out) = check_config(&next);
    assert!(ok, "{out}");
    assert!(out.contains("no config running found at"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_still_open_at_drain_timeout_is_closed_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    // Long enough for the echo after the handover (about 6 s after the
    // signal) to come well before the tunnels are closed (11 s after it).
    let server = format!(
        "drain_timeout = \"5s\"\naccess_log = {:?}",
        log.display().to_string()
    );
    let (mut u, mut before, _successor, _, _) = reloaded_with_a_tunnel(&server).await;
    assert!(
        ends(&mut before).await,
        "the tunnel still open 20 s after drain_timeout"
    );
    assert!(exited(&mut u.old).await.success());
    assert!(
        u.old
            .log()
            .contains("server.drain_timeout is over; closing the WebSocket tunnels websockets=1"),
        "{}",
        u.old.log()
    );
    // Its line, written by the old process as the tunnel ended.
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["path"] == "/socket" && l["status"] == 101)
        .unwrap_or_else(|| panic!("no line for the tunnel:\n{text}"));
    assert!(line["duration_ms"].as_f64().unwrap() > 5000.0, "{line}");
}
