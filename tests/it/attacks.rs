//! An attacker's tries, one test each, against the real gateway: upgrade
//! tunnels past the checks, forward-auth questions about a path or site the
//! client chose, sessions replayed on another site, a code form that tells
//! who may sign in, floods that write to the store, revocations and
//! sign-ins racing the cache and the admin, and request framing tricks.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::prelude::{Engine, BASE64_STANDARD};
use serde_json::Value;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

// ---------- an app that accepts any upgrade ----------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Switches to whatever `Upgrade` asks for (as Go's h2c handler, Tomcat,
    /// Jetty or Apache do for h2c), with a correct `Sec-WebSocket-Accept`.
    HonoursUpgrades,
    /// Answers every request with `101` (a broken or hostile app).
    Always101,
    /// Switches to WebSocket with a wrong `Sec-WebSocket-Accept`.
    WrongAccept,
}

/// Records every request head it reads; after a `101`, the heads that come
/// through the tunnel are recorded with a `TUNNEL ` prefix.
struct RawApp {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn read_head(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_string();
            buf.drain(..i + 4);
            return Some(head);
        }
        let mut chunk = [0u8; 4096];
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn header_of<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

fn accept_for(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    BASE64_STANDARD.encode(sha.finalize())
}

impl RawApp {
    async fn start(mode: Mode) -> RawApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rec = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let rec = rec.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut tunnel = false;
                    while let Some(head) = read_head(&mut sock, &mut buf).await {
                        let prefix = if tunnel { "TUNNEL " } else { "" };
                        rec.lock().unwrap().push(format!("{prefix}{head}"));
                        let upgrade = header_of(&head, "upgrade").map(str::to_string);
                        let answer = if tunnel {
                            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\ntunnelled".to_string()
                        } else if mode == Mode::Always101 {
                            tunnel = true;
                            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_string()
                        } else if let Some(token) = upgrade {
                            tunnel = true;
                            let accept = match (mode, header_of(&head, "sec-websocket-key")) {
                                (Mode::WrongAccept, _) => {
                                    "Sec-WebSocket-Accept: AAAA\r\n".to_string()
                                }
                                (_, Some(key)) => {
                                    format!("Sec-WebSocket-Accept: {}\r\n", accept_for(key))
                                }
                                (_, None) => String::new(),
                            };
                            format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {token}\r\n{accept}\r\n")
                        } else {
                            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain".to_string()
                        };
                        if sock.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        RawApp { addr, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Nothing reached the app through a tunnel, and no request it got
    /// named an upgrade or carried the client's made-up identity.
    fn assert_nothing_tunnelled(&self) {
        for head in self.seen() {
            let lower = head.to_ascii_lowercase();
            assert!(
                !head.starts_with("TUNNEL"),
                "reached the app through a tunnel:\n{head}"
            );
            assert!(
                !lower.contains("\r\nupgrade:"),
                "the app was asked to upgrade:\n{head}"
            );
            assert!(!lower.contains("http2-settings"), "{head}");
            assert!(!lower.contains("remote-user: admin"), "{head}");
        }
    }
}

/// Read one response (head and `Content-Length` body) off `sock`; status 0
/// if the connection closed first.
async fn read_response(sock: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, String, String) {
    let read = async {
        let Some(head) = read_head(sock, buf).await else {
            return (0, String::new(), String::new());
        };
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let len: usize = header_of(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..len.min(buf.len())).collect();
        (status, head, String::from_utf8_lossy(&body).to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer within 10 s")
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// What a client sends next on a connection it hopes is a tunnel: a request
/// for a protected path with a made-up identity.
fn smuggled_admin_request(port: u16) -> String {
    format!("GET /admin HTTP/1.1\r\nHost: localhost:{port}\r\nRemote-User: admin\r\n\r\n")
}

fn websocket_handshake(port: u16, cookie: &str, extra: &str) -> String {
    format!(
        "GET /socket HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nCookie: sesame={cookie}\r\n{extra}\r\n"
    )
}

async fn gateway_in_front_of(app: &RawApp) -> TestApp {
    spawn_with(Options {
        upstreams: Some(vec![app.addr]),
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_on_a_public_path_opens_no_tunnel() {
    let h2c = RawApp::start(Mode::HonoursUpgrades).await;
    let app = gateway_in_front_of(&h2c).await;
    let mut sock = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let mut buf = Vec::new();
    sock.write_all(
        format!(
            "GET /public/x HTTP/1.1\r\nHost: localhost:{}\r\nConnection: Upgrade, HTTP2-Settings\r\n\
             Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
            app.port
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (status, head, body) = read_response(&mut sock, &mut buf).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "plain"),
        "proxied as a plain request:\n{head}"
    );
    // The next request on the connection is Sesame's to check, not a tunnel's.
    sock.write_all(smuggled_admin_request(app.port).as_bytes())
        .await
        .unwrap();
    let (status, _, _) = read_response(&mut sock, &mut buf).await;
    assert_eq!(status, 401, "not signed in");
    h2c.assert_nothing_tunnelled();
    assert_eq!(h2c.seen().len(), 1);
    let m = app.metrics().await;
    assert_eq!(
        TestApp::metric(&m, "sesame_upgrades_total{result=\"dropped\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_answers_101_unasked_gets_no_tunnel() {
    let bad = RawApp::start(Mode::Always101).await;
    let app = gateway_in_front_of(&bad).await;
    for upgrade in [
        "",
        "Connection: Upgrade\r\nUpgrade: h2c\r\n",
        "Connection: Upgrade\r\nUpgrade: websocket\r\n",
    ] {
        let mut sock = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
        let mut buf = Vec::new();
        sock.write_all(
            format!(
                "GET /public/y HTTP/1.1\r\nHost: localhost:{}\r\n{upgrade}\r\n",
                app.port
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let (status, head, _) = read_response(&mut sock, &mut buf).await;
        assert_eq!(status, 502, "{upgrade:?}:\n{head}");
        let _ = sock
            .write_all(smuggled_admin_request(app.port).as_bytes())
            .await;
        let (status, _, _) = read_response(&mut sock, &mut buf).await;
        assert!(status == 0 || status == 401, "{status}");
    }
    bad.assert_nothing_tunnelled();
    let m = app.metrics().await;
    assert_eq!(
        TestApp::metric(&m, "sesame_upgrades_total{result=\"bad_answer\"}"),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_from_another_site_is_refused() {
    let ws = RawApp::start(Mode::HonoursUpgrades).await;
    let app = gateway_in_front_of(&ws).await;
    let session = cookies_set(&app.sign_in(&browser(), "ws@example.com").await)["sesame"].clone();
    for origin in ["http://evil.example", "null", "http://localhost:1"] {
        let (status, _) = raw_request(
            app.port,
            &websocket_handshake(app.port, &session, &format!("Origin: {origin}\r\n")),
        )
        .await;
        assert_eq!(status, 403, "{origin}");
    }
    assert!(ws.seen().is_empty(), "{:?}", ws.seen());
    // Its own origin (and a program that sends none) gets through.
    for origin in [format!("Origin: {}\r\n", app.base), String::new()] {
        let mut sock = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
        sock.write_all(websocket_handshake(app.port, &session, &origin).as_bytes())
            .await
            .unwrap();
        let (status, head, _) = read_response(&mut sock, &mut Vec::new()).await;
        assert_eq!(status, 101, "{origin:?}\n{head}");
        assert_eq!(
            header_of(&head, "sec-websocket-accept"),
            Some(accept_for(KEY).as_str())
        );
    }
    let m = app.metrics().await;
    assert_eq!(
        TestApp::metric(&m, "sesame_upgrades_total{result=\"cross_origin\"}"),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_that_does_not_complete_the_websocket_handshake_is_closed() {
    let ws = RawApp::start(Mode::WrongAccept).await;
    let app = gateway_in_front_of(&ws).await;
    let session = cookies_set(&app.sign_in(&browser(), "ws@example.com").await)["sesame"].clone();
    let mut sock = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let mut buf = Vec::new();
    sock.write_all(websocket_handshake(app.port, &session, "").as_bytes())
        .await
        .unwrap();
    let (status, head, _) = read_response(&mut sock, &mut buf).await;
    assert_eq!(status, 502, "{head}");
    let _ = sock
        .write_all(smuggled_admin_request(app.port).as_bytes())
        .await;
    let _ = read_response(&mut sock, &mut buf).await;
    assert_eq!(ws.seen().len(), 1, "only the handshake: {:?}", ws.seen());
    ws.assert_nothing_tunnelled_after_handshake();
    let m = app.metrics().await;
    assert_eq!(
        TestApp::metric(&m, "sesame_upgrades_total{result=\"bad_answer\"}"),
        1.0
    );
}

impl RawApp {
    fn assert_nothing_tunnelled_after_handshake(&self) {
        assert!(
            self.seen().iter().all(|h| !h.starts_with("TUNNEL")),
            "{:?}",
            self.seen()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_handshake_the_app_gets_carries_no_hop_by_hop_header() {
    let ws = RawApp::start(Mode::HonoursUpgrades).await;
    let app = gateway_in_front_of(&ws).await;
    let session = cookies_set(&app.sign_in(&browser(), "ws@example.com").await)["sesame"].clone();
    let mut sock = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let handshake = format!(
        "GET /socket HTTP/1.1\r\nHost: localhost:{}\r\nConnection: Upgrade, X-Private, Remote-User\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\
         Cookie: sesame={session}\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
         Remote-User: admin\r\n\r\n",
        app.port
    );
    sock.write_all(handshake.as_bytes()).await.unwrap();
    let (status, _, _) = read_response(&mut sock, &mut Vec::new()).await;
    assert_eq!(status, 101);
    let seen = ws.seen();
    let head = seen[0].to_ascii_lowercase();
    for gone in [
        "x-private",
        "keep-alive",
        "\r\nte:",
        "remote-user: admin",
        "sesame=",
    ] {
        assert!(!head.contains(gone), "{gone} reached the app:\n{head}");
    }
    assert_eq!(header_of(&seen[0], "connection"), Some("Upgrade"));
    assert_eq!(header_of(&seen[0], "upgrade"), Some("websocket"));
    assert_eq!(header_of(&seen[0], "remote-email"), Some("ws@example.com"));
    assert!(header_of(&seen[0], "remote-user")
        .unwrap()
        .starts_with("u_"));
}

// ---------- request framing ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_framing_tricks_smuggle_nothing_to_the_app() {
    let app = spawn().await;
    let smuggled = smuggled_admin_request(app.port);
    let host = format!("localhost:{}", app.port);
    let chunked_smuggle = format!("0\r\n\r\n{smuggled}");
    let cases = [
        format!("POST /public/a HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_smuggle}", chunked_smuggle.len()),
        format!("POST /public/a HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nContent-Length: {}\r\n\r\nabcd{smuggled}", 4 + smuggled.len()),
        format!("POST /public/a HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: xchunked\r\nContent-Length: {}\r\n\r\n{chunked_smuggle}", chunked_smuggle.len()),
        format!("POST /public/a HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding : chunked\r\n\r\n{chunked_smuggle}"),
        format!("POST /public/a HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n{chunked_smuggle}"),
        format!("POST /public/a HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding:\tchunked\r\n\r\n{chunked_smuggle}"),
    ];
    for case in &cases {
        let (status, _) = raw_request(app.port, case).await;
        assert!(
            status == 400 || status == 200 || status == 401 || status == 0,
            "{status} for {case:?}"
        );
    }
    for seen in app.upstream.seen() {
        assert_ne!(seen.path, "/admin", "smuggled past the check: {seen:?}");
        assert!(seen.header("remote-user").is_none(), "{seen:?}");
    }
}

// ---------- forward auth ----------

async fn forward_auth_app(server: &str) -> TestApp {
    spawn_with(Options {
        server: format!("trusted_proxies = [\"127.0.0.1\"]\n{server}"),
        site0: "[[site.rule]]\npath = \"/admin\"\naction = \"deny\"".into(),
        ..Default::default()
    })
    .await
}

/// Ask `/.sesame/auth` as a proxy at 127.0.0.1 (trusted) would, for a
/// browser carrying `session`, with `headers`: status, JSON body, headers.
async fn ask(
    app: &TestApp,
    session: &str,
    headers: &[(&str, String)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut r = browser()
        .get(app.url("/.sesame/auth"))
        .header("Cookie", format!("sesame={session}"));
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, body, headers)
}

/// What Traefik and Caddy send about `uri` on `app`'s first site, plus `extra`.
fn traefik(
    app: &TestApp,
    uri: &str,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("X-Forwarded-Host", format!("localhost:{}", app.port)),
        ("X-Forwarded-Uri", uri.to_string()),
        ("X-Forwarded-Method", "GET".to_string()),
    ];
    h.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_decides_on_the_proxys_headers_not_the_clients() {
    let app = forward_auth_app("").await;
    let session = cookies_set(&app.sign_in(&browser(), "fa@example.com").await)["sesame"].clone();
    let header = |v: &Value| v["header"].as_str().map(str::to_string);
    let (status, _, _) = ask(&app, &session, &traefik(&app, "/admin/users", &[])).await;
    assert_eq!(status, 403, "the deny rule holds");
    // A client behind Traefik or Caddy adds the other family's header.
    for (name, value) in [
        ("X-Original-URI", "/"),
        ("X-Original-Method", "POST"),
        ("X-Original-Host", "127.0.0.1"),
    ] {
        let (status, body, _) = ask(
            &app,
            &session,
            &traefik(&app, "/admin/users", &[(name, value)]),
        )
        .await;
        assert_eq!(status, 400, "{name}");
        assert_eq!(body["error"], "bad_request");
        assert_eq!(header(&body), Some(name.to_ascii_lowercase()));
    }
    // The same value in both is one question; a header twice is none.
    let (status, _, _) = ask(
        &app,
        &session,
        &traefik(&app, "/admin/users", &[("X-Original-URI", "/admin/users")]),
    )
    .await;
    assert_eq!(status, 403);
    let (status, body, _) = ask(
        &app,
        &session,
        &traefik(&app, "/admin/users", &[("X-Forwarded-Uri", "/")]),
    )
    .await;
    assert_eq!(
        (status, header(&body).as_deref()),
        (400, Some("x-forwarded-uri"))
    );
    // A trusted proxy that names no URI, or no host, asks about nothing
    // (the Host header is the client's behind nginx).
    let (status, body, _) = ask(
        &app,
        &session,
        &[("X-Forwarded-Host", format!("localhost:{}", app.port))],
    )
    .await;
    assert_eq!(
        (status, header(&body).as_deref()),
        (400, Some("x-forwarded-uri"))
    );
    let (status, body, _) = ask(&app, &session, &[("X-Forwarded-Uri", "/docs".to_string())]).await;
    assert_eq!(
        (status, header(&body).as_deref()),
        (400, Some("x-forwarded-host"))
    );
    // A WebSocket the proxy relays: from the site's own origin only.
    let ws = [("Sec-WebSocket-Key", KEY), ("Upgrade", "websocket")];
    let mut evil = traefik(&app, "/socket", &ws);
    evil.push(("Origin", "http://evil.example".into()));
    let (status, body, _) = ask(&app, &session, &evil).await;
    assert_eq!(
        (status, &body["error"]),
        (403, &Value::from("cross_origin_websocket"))
    );
    let mut own = traefik(&app, "/socket", &ws);
    own.push(("Origin", app.base.clone()));
    assert_eq!(ask(&app, &session, &own).await.0, 200);
    // A 200 carries every identity header, empty where there is no value,
    // so that a proxy copying them overwrites what the client sent.
    let (status, _, headers) = ask(&app, &session, &traefik(&app, "/docs", &[])).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("remote-name").map(|v| v.as_bytes()),
        Some(&b""[..]),
        "{headers:?}"
    );
    assert_eq!(headers["remote-groups"], "");
    assert!(headers["sesame-assertion"].len() > 100);

    // The operator may choose the X-Original family instead.
    let app = forward_auth_app("forward_auth_headers = \"x-original\"").await;
    let session = cookies_set(&app.sign_in(&browser(), "fa@example.com").await)["sesame"].clone();
    let nginx = |uri: &str| {
        vec![
            ("X-Original-Host", format!("localhost:{}", app.port)),
            ("X-Original-URI", uri.to_string()),
        ]
    };
    assert_eq!(ask(&app, &session, &nginx("/docs")).await.0, 200);
    assert_eq!(ask(&app, &session, &nginx("/admin")).await.0, 403);
    let mut spoofed = nginx("/admin");
    spoofed.push(("X-Forwarded-Uri", "/".into()));
    let (status, body, _) = ask(&app, &session, &spoofed).await;
    assert_eq!(
        (status, header(&body).as_deref()),
        (400, Some("x-forwarded-uri"))
    );
}

// ---------- sessions where they were made ----------

store_tests! {
async fn a_session_of_one_site_is_anonymous_on_another() {
    let app = spawn().await;
    let session = cookies_set(&app.sign_in(&browser(), "here@example.com").await)["sesame"].clone();
    assert_eq!(app.get_as("/x", &session).await.status(), 200, "on its own site");
    // The other site of the same gateway, same cookie name.
    let r = browser()
        .get(format!("http://127.0.0.1:{}/x", app.port))
        .header("Cookie", format!("sesame={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "replayed on another site");
    assert!(app.upstream.seen().iter().all(|s| s.path == "/x" && s.header("remote-email").as_deref() == Some("here@example.com")));
    assert_eq!(app.upstream.seen().len(), 1);
    let m = app.metrics().await;
    assert_eq!(TestApp::metric(&m, "sesame_sessions_elsewhere_total{site=\"Other app\"}"), 1.0);
    // The pending-login cookie is not a session cookie either.
    let b = browser();
    app.ask_link(&b, "pending@example.com", "/").await;
    let r = b.get(app.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}
}

#[test]
fn sessions_are_sealed_for_their_site_or_cookie_domain() {
    use sesame::session::cookies::{seal_scope, Kind};
    let config = sesame::config::Config::from_toml(
        r#"
[session]
cookie_domain = "example.test"
[[site]]
public_url = "https://a.example.test"
upstream = ["127.0.0.1:1"]
[[site]]
public_url = "https://b.example.test"
upstream = ["127.0.0.1:1"]
[[site]]
public_url = "https://c.other.test"
upstream = ["127.0.0.1:1"]
"#,
    )
    .unwrap();
    let [a, b, c] = [0, 1, 2].map(|i| &config.sites[i]);
    assert_eq!(
        seal_scope(Kind::Session, a),
        seal_scope(Kind::Session, b),
        "one sign-in for the domain"
    );
    assert_ne!(seal_scope(Kind::Session, a), seal_scope(Kind::Session, c));
    assert_ne!(
        seal_scope(Kind::Pending, a),
        seal_scope(Kind::Pending, b),
        "pending logins are host-only"
    );
    assert_ne!(seal_scope(Kind::Pending, a), seal_scope(Kind::Session, a));
}

// ---------- no enumeration ----------

store_tests! {
async fn a_wrong_code_answers_the_same_for_every_address() {
    let app = spawn_with(Options { signup: "closed", ..Default::default() }).await;
    let (ok, _, err) = app.cli(&["user", "add", "member@example.com"]);
    assert!(ok, "{err}");
    let member = browser();
    let mail = app.ask_link(&member, "member@example.com", "/").await;
    let wrong = if mail.code() == "000000" { "111111" } else { "000000" };
    let stranger = browser();
    let r = app.post_form(&stranger, "/.sesame/login", &[("email", "stranger@example.com"), ("rd", "/")]).await;
    assert_eq!(r.status(), 200);
    // The decoy is stored in the background, as a real sign-in is.
    app.store.wait_for_rows("pending_logins", 2).await;
    let page = |html: String, email: &str| without_number(&html.replace(email, "EMAIL"));
    for attempt in 0..7 {
        let a = app.post_form(&member, "/.sesame/code", &[("code", wrong)]).await;
        let b = app.post_form(&stranger, "/.sesame/code", &[("code", wrong)]).await;
        assert_eq!(a.status(), b.status(), "attempt {attempt}");
        let (a, b) = (a.text().await.unwrap(), b.text().await.unwrap());
        assert_eq!(page(a, "member@example.com"), page(b, "stranger@example.com"), "attempt {attempt}");
    }
    assert_eq!(app.mail.count_to("stranger@example.com"), 0, "the decoy is never mailed");
}
}

// ---------- floods ----------

store_tests! {
async fn a_flood_from_one_address_is_turned_away_before_the_store() {
    let app = spawn_with(Options { anonymous_per_minute: 30, ..Default::default() }).await;
    app.window_left_at_least(Duration::from_secs(60), Duration::from_secs(30));
    let flood = browser();
    let start = |c: reqwest::Client| {
        let url = app.url("/.sesame/passkey/login/start");
        let origin = app.base.clone();
        async move {
            c.post(url).header("Origin", origin).json(&serde_json::json!({})).send().await.unwrap().status().as_u16()
        }
    };
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let batch: Vec<_> = (0..30).map(|_| tokio::spawn(start(flood.clone()))).collect();
        for t in batch {
            statuses.push(t.await.unwrap());
        }
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((ok, limited), (30, 270), "{statuses:?}");
    assert_eq!(app.store.rows("ceremonies").await, 30, "an over-limit request writes nothing");
    // Someone else, from another address, signs in meanwhile.
    let other = reqwest::Client::builder()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = app.sign_in(&other, "someone@example.com").await;
    assert_eq!(r.status(), 303);
    let m = app.metrics().await;
    assert_eq!(TestApp::metric(&m, "sesame_rate_limited_total{key=\"anonymous\"}"), 270.0);
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_passkey_ceremonies_are_bounded_whatever_the_addresses() {
    let app = spawn_with(Options {
        passkey_starts_per_minute: 20,
        ..Default::default()
    })
    .await;
    app.window_left_at_least(Duration::from_secs(60), Duration::from_secs(30));
    let mut statuses = Vec::new();
    // From four addresses, each well within its own limit.
    for i in 0..40 {
        let c = reqwest::Client::builder()
            .local_address(Some(format!("127.0.0.{}", 2 + i % 4).parse().unwrap()))
            .build()
            .unwrap();
        let r = c
            .post(app.url("/.sesame/passkey/login/start"))
            .header("Origin", &app.base)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        20,
        "{statuses:?}"
    );
    assert_eq!(app.store.rows("ceremonies").await, 20);
    // Email sign-in goes on.
    assert_eq!(
        app.sign_in(&browser(), "email@example.com").await.status(),
        303
    );
}

// ---------- races ----------

use sesame::email::Email;
use sesame::store::{AuthMethod, DynStore, User, UserStore};

/// A real store whose next session read, once armed, waits after reading
/// (its answer is from before whatever happens meanwhile) until released.
struct PausedStore {
    inner: DynStore,
    armed: Mutex<
        Option<(
            tokio::sync::oneshot::Sender<()>,
            tokio::sync::oneshot::Receiver<()>,
        )>,
    >,
}

mod paused_store;

store_tests! {
async fn a_revocation_racing_a_cache_fill_is_final() {
    let store = TestStore::new(backend()).await;
    let paused = Arc::new(PausedStore { inner: store.open().await, armed: Mutex::new(None) });
    let clock = sesame::clock::Clock::system();
    let session_config = sesame::config::Config::from_toml("[[site]]\npublic_url = \"http://localhost\"\nupstream = [\"127.0.0.1:1\"]\n").unwrap().session;
    let sessions = Arc::new(sesame::session::Sessions::new(
        session_config,
        paused.clone(),
        Arc::new(std::sync::atomic::AtomicBool::new(true)),
        clock.clone(),
    ));
    let user = User {
        id: "u_race".into(),
        email: Email::parse("race@example.com").unwrap(),
        name: None,
        groups: vec![],
        disabled: false,
        created_at: clock.now(),
    };
    paused.add_user(&user).await.unwrap();
    let plain = sessions.create(&user, AuthMethod::MagicLink).await.unwrap().unwrap().cookie_plain;
    // A request reads the session from the store...
    let (reached_tx, reached) = tokio::sync::oneshot::channel();
    let (release, release_rx) = tokio::sync::oneshot::channel();
    *paused.armed.lock().unwrap() = Some((reached_tx, release_rx));
    let in_flight = tokio::spawn({
        let (sessions, plain) = (sessions.clone(), plain.clone());
        async move { sessions.check(&plain).await.is_ok() }
    });
    reached.await.unwrap();
    // ...the person signs out meanwhile...
    assert!(sessions.revoke(&plain).await.unwrap().is_some());
    // ...and then the read's answer, from before the sign-out, arrives.
    release.send(()).unwrap();
    let _ = in_flight.await.unwrap();
    assert_eq!(sessions.check(&plain).await.err(), Some(sesame::session::Rejected::Revoked));
}

async fn a_wall_clock_stepped_back_does_not_keep_a_session_cached() {
    let store = TestStore::new(backend()).await;
    let db = store.open().await;
    let clock = sesame::clock::Clock::system();
    let session_config = sesame::config::Config::from_toml("[[site]]\npublic_url = \"http://localhost\"\nupstream = [\"127.0.0.1:1\"]\n").unwrap().session;
    let sessions = sesame::session::Sessions::new(session_config, db.clone(), Arc::new(std::sync::atomic::AtomicBool::new(true)), clock.clone());
    let user = User { id: "u_clock".into(), email: Email::parse("clock@example.com").unwrap(), name: None, groups: vec![], disabled: false, created_at: clock.now() };
    db.add_user(&user).await.unwrap();
    let s = sessions.create(&user, AuthMethod::MagicLink).await.unwrap().unwrap();
    assert!(sessions.check(&s.cookie_plain).await.is_ok(), "cached");
    // Revoked where this instance is not told (a lost notification)...
    assert!(db.revoke_session(&s.record.id_hash, clock.now()).await.unwrap());
    // ...and the wall clock steps back an hour: the cached copy is not
    // younger than a minute now, it is of unknown age, and read again.
    clock.set_back(std::time::Duration::from_secs(3600));
    assert_eq!(sessions.check(&s.cookie_plain).await.err(), Some(sesame::session::Rejected::Revoked));
}

async fn a_session_gone_from_the_store_is_not_served_through_an_outage() {
    let store = TestStore::new(backend()).await;
    let db = store.open().await;
    let clock = sesame::clock::Clock::system();
    let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let session_config = sesame::config::Config::from_toml("[[site]]\npublic_url = \"http://localhost\"\nupstream = [\"127.0.0.1:1\"]\n").unwrap().session;
    let sessions = sesame::session::Sessions::new(session_config, db.clone(), up.clone(), clock.clone());
    let user = User { id: "u_gone".into(), email: Email::parse("gone@example.com").unwrap(), name: None, groups: vec![], disabled: false, created_at: clock.now() };
    db.add_user(&user).await.unwrap();
    let s = sessions.create(&user, AuthMethod::MagicLink).await.unwrap().unwrap();
    assert!(sessions.check(&s.cookie_plain).await.is_ok(), "cached");
    // The row goes (a database restored from a backup older than the
    // session); the next re-read finds nothing...
    store.execute(&format!("DELETE FROM sessions WHERE id_hash = '{}'", &*s.record.id_hash)).await;
    clock.advance(sesame::session::CACHE_TTL + std::time::Duration::from_secs(1));
    assert_eq!(sessions.check(&s.cookie_plain).await.err(), Some(sesame::session::Rejected::Unknown));
    // ...and when the store then goes down, within the outage grace, the
    // copy cached before is not served.
    up.store(false, std::sync::atomic::Ordering::Relaxed);
    assert!(sessions.check(&s.cookie_plain).await.is_err());
}

async fn a_sign_in_racing_disable_or_set_groups_keeps_no_old_state() {
    let store = TestStore::new(backend()).await;
    let db = store.open().await;
    let clock = sesame::clock::Clock::system();
    let session_config = sesame::config::Config::from_toml("[[site]]\npublic_url = \"http://localhost\"\nupstream = [\"127.0.0.1:1\"]\n").unwrap().session;
    let sessions = sesame::session::Sessions::new(session_config, db.clone(), Arc::new(std::sync::atomic::AtomicBool::new(true)), clock.clone());
    let email = Email::parse("demoted@example.com").unwrap();
    db.add_user(&User { id: "u_demoted".into(), email: email.clone(), name: None, groups: vec!["admins".into()], disabled: false, created_at: clock.now() })
        .await
        .unwrap();
    // A sign-in reads the user...
    let read = db.user_by_email(&email).await.unwrap().unwrap();
    // ...the admin takes the group away before the session is stored...
    assert!(db.set_user_groups(&email, &["guests".to_string()]).await.unwrap());
    let s = sessions.create(&read, AuthMethod::Passkey).await.unwrap().expect("still enabled");
    assert_eq!(s.record.groups, vec!["guests".to_string()]);
    assert_eq!(db.session(&s.record.id_hash).await.unwrap().unwrap().groups, vec!["guests".to_string()]);
    // ...or disables the account.
    assert!(db.set_user_disabled(&email, true, clock.now()).await.unwrap());
    assert!(sessions.create(&read, AuthMethod::Passkey).await.unwrap().is_none());
    assert!(db.list_sessions(Some(&email), clock.now()).await.unwrap().is_empty());
    // ...or removes it.
    assert!(db.set_user_disabled(&email, false, clock.now()).await.unwrap());
    let read = db.user_by_email(&email).await.unwrap().unwrap();
    assert!(db.remove_user(&email, clock.now()).await.unwrap());
    assert!(sessions.create(&read, AuthMethod::Passkey).await.unwrap().is_none());
}
}
