//! TLS both ways: the HTTPS listener (HTTP/2, certificates chosen by SNI and
//! reloaded when the files change), one sign-in shared by the sites under
//! `cookie_domain` while a site on another domain keeps its own cookie, and
//! TLS from Sesame to an app with its own CA.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::helpers::*;

fn tls_server_lines(port: u16, certs: &[(&Path, &Path)], reload: &str) -> String {
    let mut s = format!("tls_reload_interval = \"{reload}\"\n");
    for (cert, key) in certs {
        s.push_str(&format!(
            "[[server.tls]]\nlisten = \"127.0.0.1:{port}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ));
    }
    s
}

/// Replace a file the way a certificate renewal does (write, then rename).
fn replace(path: &Path, content: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn get_ok(client: &reqwest::Client, url: &str) -> Result<reqwest::Response, String> {
    match client.get(url).send().await {
        Ok(r) if r.status() == 200 => Ok(r),
        Ok(r) => Err(format!("status {}", r.status())),
        Err(e) => Err(format!("{e:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_https_listener_speaks_http2_and_takes_a_renewed_certificate_without_restart() {
    let ca1 = TestCa::new("CA one");
    let (cert1, key1) = ca1.leaf("one", &["localhost"]);
    let ca2 = TestCa::new("CA two");
    let (cert2, key2) = ca2.leaf("two", &["localhost"]);
    let live = tempfile::tempdir().unwrap();
    let (cert, key) = (live.path().join("cert.pem"), live.path().join("key.pem"));
    std::fs::copy(&cert1, &cert).unwrap();
    std::fs::copy(&key1, &key).unwrap();
    let tls_port = free_port();
    let app = spawn_with(Options {
        server: tls_server_lines(tls_port, &[(&cert, &key)], "100ms"),
        ..Default::default()
    })
    .await;
    let https = |path: &str| format!("https://localhost:{tls_port}{path}");

    // HTTP/2 by ALPN, through the whole gateway (session cookie included).
    let b = browser();
    let session = cookies_set(&app.sign_in(&b, "h2@example.com").await)["sesame"].clone();
    let h2 = tls_browser(&ca1, &[]);
    let r = h2
        .get(https("/x"))
        .header("Cookie", format!("sesame={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "upstream saw /x");
    assert_eq!(
        app.upstream.last().header("remote-email").as_deref(),
        Some("h2@example.com")
    );
    let r = h2
        .get(https("/x"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "no cookie over HTTP/2: the login");

    // HTTP/1.1 clients are served too.
    let h1 = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca1.reqwest_cert())
        .http1_only()
        .build()
        .unwrap();
    let r = h1.get(https("/public/a")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);

    // A renewal: new files from another CA are picked up, no restart.
    replace(&key, &std::fs::read(&key2).unwrap());
    replace(&cert, &std::fs::read(&cert2).unwrap());
    let t = Instant::now();
    let mut last = Err(String::new());
    while t.elapsed() < Duration::from_secs(5) {
        last = get_ok(&tls_browser(&ca2, &[]), &https("/public/b"))
            .await
            .map(drop);
        if last.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(last.is_ok(), "renewed certificate not served: {last:?}");
    assert!(
        get_ok(&tls_browser(&ca1, &[]), &https("/public/c"))
            .await
            .is_err(),
        "the old certificate is gone"
    );
    let m = app.metrics().await;
    assert!(TestApp::metric(&m, "sesame_tls_cert_reloads_total{result=\"ok\"}") >= 1.0);
    assert!(m.contains("sesame_tls_cert_expiry_seconds{cert="), "{m}");

    // A broken renewal is refused and the working certificate stays.
    let failed_before = TestApp::metric(&m, "sesame_tls_cert_reloads_total{result=\"failed\"}");
    replace(
        &cert,
        b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    );
    let t = Instant::now();
    let mut failed = failed_before;
    while failed == failed_before && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        failed = TestApp::metric(
            &app.metrics().await,
            "sesame_tls_cert_reloads_total{result=\"failed\"}",
        );
    }
    assert!(
        failed > failed_before,
        "the broken file was seen and refused"
    );
    get_ok(&tls_browser(&ca2, &[]), &https("/public/d"))
        .await
        .expect("the previous certificate keeps serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_can_be_switched_off() {
    let ca = TestCa::new("H1 CA");
    let (cert, key) = ca.leaf("h1", &["localhost"]);
    let tls_port = free_port();
    let mut server = tls_server_lines(tls_port, &[(&cert, &key)], "10s");
    server.push_str("http2 = false\n");
    let _app = spawn_with(Options {
        server,
        ..Default::default()
    })
    .await;
    let r = tls_browser(&ca, &[])
        .get(format!("https://localhost:{tls_port}/public/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11, "h2 not offered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sign_in_serves_the_sites_under_cookie_domain_and_not_a_site_elsewhere() {
    let ca = TestCa::new("Sites CA");
    let (shared_cert, shared_key) = ca.leaf("shared", &["*.example.test"]);
    let (other_cert, other_key) = ca.leaf("other", &["c.other.test"]);
    let tls_port = free_port();
    let (port, admin) = (free_port(), free_port());
    let mail = MailBox::start();
    let upstream = Upstream::start().await;
    let store = TestStore::new(backend()).await;
    let site = |name: &str, host: &str| {
        format!(
            "[[site]]\nname = \"{name}\"\npublic_url = \"https://{host}:{tls_port}\"\nupstream = [\"{}\"]\n",
            upstream.addr
        )
    };
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nadmin_listen = \"127.0.0.1:{admin}\"\nthreads = 2\n{tls}\n\
         [session]\ncookie_domain = \"example.test\"\n\
         [store]\nurl = \"{store_url}\"\n\
         [mail]\ntransport = \"smtp\"\nsmtp_url = \"smtp://{smtp}\"\nfrom = \"Sesame test <login@example.com>\"\n\
         [auth]\npasskey_prompt = false\n[users]\nsignup = \"open\"\n{a}{b}{c}",
        tls = tls_server_lines(
            tls_port,
            &[(&shared_cert, &shared_key), (&other_cert, &other_key)],
            "10s"
        ),
        store_url = store.url,
        smtp = mail.addr,
        a = site("A", "a.example.test"),
        b = site("B", "b.example.test"),
        c = site("C", "c.other.test"),
    );
    let config = sesame::config::Config::from_toml(&text).expect("valid config");
    let clock = sesame::clock::Clock::system();
    let running = start(config, clock.clone()).await;
    let tls_addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let names = [
        ("a.example.test", tls_addr),
        ("b.example.test", tls_addr),
        ("c.other.test", tls_addr),
    ];
    let app = TestApp {
        port,
        base: format!("https://a.example.test:{tls_port}"),
        admin: format!("http://127.0.0.1:{admin}"),
        mail,
        upstream,
        clock,
        running: Some(running),
        portal: None,
        store,
    };
    let b = tls_browser(&ca, &names);
    let r = app.sign_in(&b, "shared@example.com").await;
    let set_cookie: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let session = set_cookie
        .iter()
        .find(|c| c.starts_with("sesame="))
        .unwrap_or_else(|| panic!("session cookie in {set_cookie:?}"));
    assert!(session.contains("Domain=example.test"), "{session}");
    assert!(
        session.contains("Secure") && session.contains("HttpOnly"),
        "{session}"
    );

    for host in ["a.example.test", "b.example.test"] {
        let r = b
            .get(format!("https://{host}:{tls_port}/page"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "signed in on {host}");
        let seen = app.upstream.last();
        assert_eq!(
            seen.header("remote-email").as_deref(),
            Some("shared@example.com")
        );
        assert_eq!(seen.header("x-forwarded-host").as_deref(), Some(host));
    }

    // Another domain: not signed in, and its own host-only cookie.
    let other = format!("https://c.other.test:{tls_port}");
    let r = b
        .get(format!("{other}/page"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let login = r.headers()["location"].to_str().unwrap();
    assert!(
        login.starts_with(&format!("{other}/.sesame/login")),
        "{login}"
    );
    let mut c = app;
    c.base = other.clone();
    let r = c.sign_in(&b, "shared@example.com").await;
    let own = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("__Host-sesame="))
        .expect("a __Host- cookie of its own");
    assert!(!own.contains("Domain="), "{own}");
    let r = b.get(format!("{other}/page")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sesame_speaks_tls_to_an_app_and_checks_its_certificate() {
    let ca = TestCa::new("App CA");
    let (cert, key) = ca.leaf("app", &["app.internal"]);
    let up = Upstream::start_tls(&cert, &key).await;
    let site0 = |sni: &str, ca_line: &str| {
        format!("upstream_tls = true\nupstream_sni = \"{sni}\"\n{ca_line}\n")
    };
    let ca_line = format!("upstream_ca = \"{}\"", ca.cert.display());

    let app = spawn_with(Options {
        upstreams: Some(vec![up.addr]),
        site0: site0("app.internal", &ca_line),
        ..Default::default()
    })
    .await;
    let b = browser();
    app.sign_in(&b, "tls@example.com").await;
    let r = b.get(app.url("/over-tls")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "upstream saw /over-tls");
    assert_eq!(
        up.last().header("remote-email").as_deref(),
        Some("tls@example.com")
    );

    // A certificate for another name, or from a CA not trusted: 502.
    for (sni, ca_line) in [("other.internal", ca_line.as_str()), ("app.internal", "")] {
        let app = spawn_with(Options {
            upstreams: Some(vec![up.addr]),
            site0: site0(sni, ca_line),
            ..Default::default()
        })
        .await;
        let r = browser().get(app.url("/public/x")).send().await.unwrap();
        assert_eq!(r.status(), 502, "sni {sni}, {ca_line:?}");
    }
    assert_eq!(
        up.seen().len(),
        1,
        "nothing reached the app over an unverified connection"
    );
}

#[test]
fn tls_settings_errors_name_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let text = format!(
        r#"
[server]
[[server.tls]]
listen = "127.0.0.1:8443"
cert = "{missing}"
key = "{missing}"
[[server.tls]]
cert = "{missing}"
[[site]]
public_url = "https://a.example.com"
upstream = ["127.0.0.1:3000"]
upstream_tls = true
health_check = "healthz"
[[site]]
public_url = "https://b.example.com"
upstream = ["127.0.0.1:3000"]
upstream_sni = "b.internal"
[[site]]
public_url = "https://c.example.com"
upstream = ["127.0.0.1:3000"]
upstream_tls = true
upstream_sni = "c.internal"
upstream_ca = "{missing}"
"#,
        missing = missing.display()
    );
    let err = sesame::config::Config::from_toml(&text)
        .unwrap_err()
        .to_string();
    for key in [
        "server.tls[0].cert",
        "server.tls[1].listen",
        "site[0].upstream_sni",
        "site[0].health_check",
        "site[1].upstream_sni: only goes with upstream_tls",
        "site[2].upstream_ca",
    ] {
        assert!(err.contains(key), "{key} not named in:\n{err}");
    }
}
