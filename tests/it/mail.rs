//! Mail trouble is visible, not fatal.

use crate::helpers::*;
use std::time::{Duration, Instant};

store_tests! {
async fn smtp_down_answers_fast_and_counts_the_failure() {
    let closed = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let app = spawn_with(Options {
        smtp: Some(closed),
        ..Default::default()
    })
    .await;
    let r = app
        .post_form(
            &browser(),
            "/.sesame/login",
            &[("email", "down@example.com")],
        )
        .await;
    assert_eq!(r.status(), 200);
    // The delivery is retried after 0.5 s and 2 s before it counts as
    // failed: answered before that, the answer did not wait on SMTP.
    assert_eq!(
        TestApp::metric(&app.metrics().await, "sesame_magic_links_failed_total"),
        0.0,
        "the answer does not wait on SMTP"
    );
    let mut failed = 0.0;
    for _ in 0..100 {
        failed = TestApp::metric(&app.metrics().await, "sesame_magic_links_failed_total");
        if failed >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(failed, 1.0, "the failure is counted once, after retries");
    let ready = reqwest::get(format!("{}/readyz", app.admin)).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("mail: unavailable"));
}

async fn smtp_that_never_answers_does_not_hang_the_login() {
    // Accepts connections and says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let app = spawn_with(Options {
        smtp: Some(addr),
        ..Default::default()
    })
    .await;
    for i in 0..3 {
        let t = Instant::now();
        let r = app
            .post_form(
                &browser(),
                "/.sesame/login",
                &[("email", &format!("slow{i}@example.com"))],
            )
            .await;
        assert_eq!(r.status(), 200);
        assert!(t.elapsed() < Duration::from_secs(5), "waited on SMTP");
    }
}

async fn admin_listener_serves_health_and_metrics() {
    let app = spawn().await;
    assert_eq!(
        reqwest::get(format!("{}/healthz", app.admin))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(format!("{}/readyz", app.admin))
            .await
            .unwrap()
            .status(),
        200
    );
    browser().get(app.url("/x")).send().await.unwrap();
    // The request is counted when it is logged, just after its response
    // (every outcome's series exists from the start, at 0).
    let unauthenticated = "sesame_requests_total{outcome=\"unauthenticated\",site=\"Test app\"}";
    let mut m = app.metrics().await;
    for _ in 0..100 {
        if TestApp::metric(&m, unauthenticated) > 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        m = app.metrics().await;
    }
    for name in [
        "sesame_requests_total",
        "sesame_auth_check_seconds",
        "sesame_magic_links_sent_total",
        "sesame_magic_links_failed_total",
        "sesame_sessions_created_total",
        "sesame_magic_links_opened_unconfirmed_total",
    ] {
        assert!(m.contains(name), "{name} missing");
    }
    assert_eq!(TestApp::metric(&m, unauthenticated), 1.0);
}

async fn smtp_with_starttls_and_credentials_from_the_url() {
    let ca = TestCa::new("Sesame test CA");
    let (cert, key) = ca.leaf("smtp", &["localhost"]);
    let sink = MailBox::start_tls(&cert, &key, "gateway", "s3cret pass");
    let url = format!(
        "smtp://gateway:s3cret%20pass@localhost:{}?tls=required",
        sink.addr.port()
    );
    let g = Mailing::start(&url, Some(&ca.cert)).await;
    g.ask("tls@example.com").await;
    let mail = sink.wait_for("tls@example.com", 0).await;
    assert!(mail
        .link()
        .starts_with(&format!("http://localhost:{}/.sesame/magic?token=", g.port)));

    // Without `[mail] ca_file`, the private CA is not trusted: nothing is
    // sent, and the failure is counted.
    let g = Mailing::start(&url, None).await;
    g.ask("untrusted@example.com").await;
    assert_eq!(g.failed_deliveries(1).await, 1.0);
    assert_eq!(sink.count_to("untrusted@example.com"), 0);
}

async fn smtps_speaks_implicit_tls_and_checks_the_certificate() {
    let ca = TestCa::new("Sesame test CA");
    let (cert, key) = ca.leaf("smtp", &["localhost"]);
    let sink = MailBox::start_implicit_tls(&cert, &key).await;
    let url = |host: &str| format!("smtps://{host}:{}", sink.addr.port());
    let g = Mailing::start(&url("localhost"), Some(&ca.cert)).await;
    g.ask("implicit@example.com").await;
    let mail = sink.wait_for("implicit@example.com", 0).await;
    assert!(mail.link().contains("/.sesame/magic?token="));

    // The certificate names localhost, not 127.0.0.1: no mail goes there,
    // and the failure is counted.
    let g = Mailing::start(&url("127.0.0.1"), Some(&ca.cert)).await;
    g.ask("mismatch@example.com").await;
    assert_eq!(g.failed_deliveries(1).await, 1.0, "the refused delivery is counted");
    assert_eq!(sink.count_to("mismatch@example.com"), 0);
}
}

/// A gateway whose mail goes to `smtp_url`, with its own store and app.
struct Mailing {
    port: u16,
    admin: u16,
    _running: sesame::Running,
    _store: TestStore,
    _upstream: Upstream,
}

impl Mailing {
    /// `ca_file`: `[mail] ca_file`.
    async fn start(smtp_url: &str, ca_file: Option<&std::path::Path>) -> Mailing {
        let store = TestStore::new(backend()).await;
        let (port, admin) = (free_port(), free_port());
        let upstream = Upstream::start().await;
        let placeholder: std::net::SocketAddr = "127.0.0.1:25".parse().unwrap();
        let text = config_text(
            port,
            admin,
            &store.url,
            placeholder,
            upstream.addr,
            &Options::default(),
        )
        .replace(
            &format!("smtp_url = \"smtp://{placeholder}\""),
            &match ca_file {
                None => format!("smtp_url = \"{smtp_url}\""),
                Some(ca) => format!(
                    "smtp_url = \"{smtp_url}\"\nca_file = {:?}",
                    ca.display().to_string()
                ),
            },
        );
        assert!(text.contains(smtp_url));
        let config = sesame::config::Config::from_toml(&text).unwrap();
        let running = start(config, sesame::clock::Clock::system()).await;
        Mailing {
            port,
            admin,
            _running: running,
            _store: store,
            _upstream: upstream,
        }
    }

    /// Waits until `sesame_magic_links_failed_total` reaches `n` (each
    /// delivery is tried three times over 2.5 s before it counts).
    async fn failed_deliveries(&self, n: u32) -> f64 {
        let metrics = format!("http://127.0.0.1:{}/metrics", self.admin);
        let t = Instant::now();
        loop {
            let m = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
            let failed = TestApp::metric(&m, "sesame_magic_links_failed_total");
            if failed >= f64::from(n) || t.elapsed() > Duration::from_secs(20) {
                return failed;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ask for a sign-in link for `email`, as a browser does.
    async fn ask(&self, email: &str) {
        let r = browser()
            .post(format!("http://localhost:{}/.sesame/login", self.port))
            .header("Origin", format!("http://localhost:{}", self.port))
            .form(&[("email", email)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_in_email_says_where_it_was_asked_from_and_is_marked_automatic() {
    let app = spawn().await;
    let b = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0")
        .build()
        .unwrap();
    let mail = app.ask_link(&b, "where@example.com", "/").await;
    // Both parts, read by a real mail parser.
    for part in [&mail.text, &mail.html] {
        assert!(
            part.contains("Requested from Firefox on Linux (network 127.0.0.x)."),
            "{part}"
        );
    }
    assert_eq!(
        mail.header("Auto-Submitted").as_deref(),
        Some("auto-generated")
    );
    let id = mail.header("Message-ID").expect("a Message-ID");
    assert!(
        id.starts_with('<') && id.ends_with("@example.com>"),
        "on the sender's domain: {id}"
    );
    // A new one for each message.
    let again = app.ask_link(&b, "where@example.com", "/").await;
    assert_ne!(again.header("Message-ID").unwrap(), id);
}
