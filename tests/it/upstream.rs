//! What happens between Sesame and the app: round robin, a down or slow app
//! (502 / 504, never a login loop), several Set-Cookie headers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// An app that answers every request with `response` (or never, if empty),
/// after reading the request head; with `echo`, it then echoes bytes.
async fn scripted(response: &'static str, echo: bool) -> SocketAddr {
    scripted_on("127.0.0.1:0".parse().unwrap(), response, echo).await
}

async fn scripted_on(addr: SocketAddr, response: &'static str, echo: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                if response.is_empty() {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
                let _ = sock.write_all(response.as_bytes()).await;
                if echo {
                    loop {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if sock.write_all(&chunk[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

fn answer(body: &'static str) -> &'static str {
    match body {
        "G" => "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nG",
        "R" => "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nR",
        _ => "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 1\r\nConnection: close\r\n\r\nS",
    }
}

/// Wait until `sesame_upstream_up` for `addr` reads `want`.
async fn until_up_is(app: &TestApp, addr: SocketAddr, want: f64) {
    let line = format!("sesame_upstream_up{{site=\"Test app\",upstream=\"{addr}\"}}");
    let t = Instant::now();
    loop {
        let m = app.metrics().await;
        if m.contains(&line) && TestApp::metric(&m, &line) == want {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{line} never became {want}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn bodies_of(app: &TestApp, n: usize) -> String {
    let mut bodies = String::new();
    for _ in 0..n {
        let r = browser().get(app.url("/public/x")).send().await.unwrap();
        bodies.push_str(&r.text().await.unwrap());
    }
    bodies
}

async fn session_of(app: &TestApp, email: &str) -> String {
    cookies_set(&app.sign_in(&browser(), email).await)["sesame"].clone()
}

store_tests! {
async fn a_down_or_slow_app_gets_502_or_504_never_a_login_loop() {
    let closed: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let app = spawn_with(Options { upstreams: Some(vec![closed]), ..Default::default() }).await;
    let session = session_of(&app, "down@example.com").await;
    let r = browser()
        .get(app.url("/x"))
        .header("Cookie", format!("sesame={session}"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("The app is unavailable"));
    let r = browser().get(app.url("/api")).header("Cookie", format!("sesame={session}")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "upstream_unavailable");

    let silent = scripted("", false).await;
    let app = spawn_with(Options {
        upstreams: Some(vec![silent]),
        site0: "read_timeout = \"1s\"".into(),
        ..Default::default()
    })
    .await;
    let session = session_of(&app, "slow@example.com").await;
    let t = Instant::now();
    let r = browser()
        .get(app.url("/x"))
        .header("Cookie", format!("sesame={session}"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(t.elapsed() < Duration::from_secs(5), "the configured timeout holds");
    assert!(r.text().await.unwrap().contains("not answering"));
}

async fn round_robin_and_every_set_cookie_kept() {
    let a = scripted(
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nSet-Cookie: a=1; Path=/\r\nSet-Cookie: b=2; Path=/\r\nConnection: close\r\n\r\nA",
        false,
    )
    .await;
    let b = scripted("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nB", false).await;
    let app = spawn_with(Options { upstreams: Some(vec![a, b]), ..Default::default() }).await;
    let session = session_of(&app, "rr@example.com").await;
    let mut bodies = String::new();
    for _ in 0..4 {
        let r = browser().get(app.url("/x")).header("Cookie", format!("sesame={session}")).send().await.unwrap();
        let set = cookies_set(&r);
        let body = r.text().await.unwrap();
        if body == "A" {
            assert_eq!((set.get("a").map(String::as_str), set.get("b").map(String::as_str)), (Some("1"), Some("2")), "both Set-Cookie headers kept");
        }
        bodies.push_str(&body);
    }
    assert_eq!(bodies.matches('A').count(), 2, "{bodies}");
    assert_eq!(bodies.matches('B').count(), 2, "{bodies}");
}

async fn a_failing_upstream_is_skipped_until_it_passes_its_health_check_again() {
    let good = scripted(answer("G"), false).await;
    let down: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let app = spawn_with(Options {
        upstreams: Some(vec![good, down]),
        site0: "health_interval = \"500ms\"".into(),
        ..Default::default()
    })
    .await;
    until_up_is(&app, down, 0.0).await;
    assert_eq!(bodies_of(&app, 10).await, "G".repeat(10), "no request sent to the down app");

    // It comes back: requests reach it again, without a restart.
    scripted_on(down, answer("R"), false).await;
    until_up_is(&app, down, 1.0).await;
    let bodies = bodies_of(&app, 4).await;
    assert_eq!(bodies.matches('R').count(), 2, "{bodies}");
}

async fn an_http_health_check_takes_an_app_that_answers_errors_out_of_rotation() {
    let good = scripted(answer("G"), false).await;
    let sick = scripted(answer("S"), false).await;
    let app = spawn_with(Options {
        upstreams: Some(vec![good, sick]),
        site0: "health_check = \"/healthz\"\nhealth_interval = \"500ms\"".into(),
        ..Default::default()
    })
    .await;
    until_up_is(&app, sick, 0.0).await;
    until_up_is(&app, good, 1.0).await;
    assert_eq!(bodies_of(&app, 10).await, "G".repeat(10));
}
}

/// `sesame run` with an `/etc/hosts` of its own (a user and mount namespace
/// by `unshare`), so a host name can move without touching the machine's.
fn start_with_own_hosts(dir: &std::path::Path, hosts: &std::path::Path, config: &str) -> Instance {
    let works = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .status();
    assert!(
        matches!(works, Ok(s) if s.success()),
        "this test runs Sesame with its own /etc/hosts by `unshare --user --map-root-user --mount` \
         (util-linux): install util-linux, and run as root or where user namespaces are allowed"
    );
    let script = r#"mount --bind "$0" /etc/hosts && exec "$@""#;
    let wrapper = [
        "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "sh",
        "-c",
        script,
    ];
    let mut wrapper = wrapper.to_vec();
    wrapper.push(hosts.to_str().unwrap());
    Instance::start_under(dir, "named", config, &wrapper)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_given_by_name_is_followed_to_its_new_address() {
    let port = free_port();
    let first = scripted_on(([127, 0, 0, 2], port).into(), answer("G"), false).await;
    let moved = scripted_on(([127, 0, 0, 3], port).into(), answer("R"), false).await;
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    // Written in place: the bind mount follows the file, not its name.
    let point_name_at = |to: Option<SocketAddr>| {
        let line = to.map_or(String::new(), |a| format!("{} app.sesame.test\n", a.ip()));
        std::fs::write(&hosts, format!("127.0.0.1 localhost\n{line}")).unwrap();
    };
    point_name_at(Some(first));
    let config = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
admin_listen = "127.0.0.1:0"
threads = 1
[store]
url = "sqlite://{}/sesame.db"
[mail]
transport = "console"
[[site]]
name = "Named"
public_url = "http://localhost"
upstream = ["app.sesame.test:{port}"]
public_paths = ["/public"]
health_interval = "300ms"
"#,
        dir.path().display()
    );
    let sesame = start_with_own_hosts(dir.path(), &hosts, &config);
    let body = || async {
        let r = reqwest::get(sesame.url("/public/x")).await.unwrap();
        r.text().await.unwrap()
    };
    let metrics = || async {
        let url = format!("http://127.0.0.1:{}/metrics", sesame.admin);
        reqwest::get(url).await.unwrap().text().await.unwrap()
    };
    let up_line = |a: SocketAddr| format!("sesame_upstream_up{{site=\"Named\",upstream=\"{a}\"}}");
    assert_eq!(body().await, "G");

    // The app moves (a recreated container): followed without a restart.
    point_name_at(Some(moved));
    let t = Instant::now();
    while body().await != "R" {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the new address was not used within 15 s:\n{}",
            sesame.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..5 {
        assert_eq!(body().await, "R", "nothing goes to the old address");
    }
    let m = metrics().await;
    assert_eq!(TestApp::metric(&m, &up_line(moved)), 1.0, "{m}");
    assert!(
        !m.contains(&up_line(first)),
        "the old address is no longer shown:\n{m}"
    );
    assert!(sesame.log().contains("upstream moved to another address"));

    // The name cannot be looked up for a while: the last address stays,
    // and the log says so once.
    point_name_at(None);
    sesame.until_logged("keeping the last address").await;
    for _ in 0..3 {
        assert_eq!(body().await, "R");
    }
    // Three more failed look-ups, each of which could have warned again.
    let failed = format!(
        "sesame_upstream_lookups_total{{result=\"failed\",site=\"Named\",upstream=\"app.sesame.test:{port}\"}}"
    );
    let seen = TestApp::metric(&metrics().await, &failed);
    let t = Instant::now();
    while TestApp::metric(&metrics().await, &failed) < seen + 3.0 {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "no further look-ups within 15 s:\n{}",
            sesame.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sesame.log().matches("keeping the last address").count(),
        1,
        "warned once, not every round"
    );
    // It comes back at the same address: nothing moves.
    point_name_at(Some(moved));
    sesame.until_logged("can be looked up again").await;
    assert_eq!(body().await, "R");
    assert_eq!(sesame.log().matches("upstream moved").count(), 1);
}
