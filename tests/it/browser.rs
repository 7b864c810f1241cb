//! Browser level: headless Chromium (Debian `chromium`) with the DevTools
//! virtual authenticator, driven by playwright-core (tests/browser/): email
//! link from the SMTP sink, add a passkey, sign out, sign in with the
//! discoverable-passkey button, reach the app.

use std::path::Path;
use std::process::Command;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Serves the latest sign-in link for `?to=EMAIL` out of the SMTP sink.
async fn mail_api(mail: MailBox) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mail = mail.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let target = head.split(' ').nth(1).unwrap_or("");
                let to = url::Url::parse(&format!("http://x{target}"))
                    .ok()
                    .and_then(|u| {
                        u.query_pairs()
                            .find(|(k, _)| k == "to")
                            .map(|(_, v)| v.into_owned())
                    })
                    .unwrap_or_default();
                let link = mail
                    .all()
                    .iter()
                    .rev()
                    .find(|m| m.to.contains(&to) && m.subject.starts_with("Sign in to"))
                    .map(|m| m.link())
                    .unwrap_or_default();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{link}",
                    link.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/mail")
}

/// playwright-core, openid-client, and jsQR with pngjs (to read a QR code
/// off a screenshot) from tests/browser/package-lock.json,
/// installed on first use.
pub(crate) fn ensure_driver(dir: &Path) {
    let wanted = ["playwright-core", "openid-client", "jsqr", "pngjs"];
    if wanted
        .iter()
        .all(|m| dir.join("node_modules").join(m).is_dir())
    {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .output()
        .expect("npm (Node.js) is needed for the browser test: apt-get install -y nodejs npm");
    assert!(
        out.status.success(),
        "npm ci in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `script` (in tests/browser/) with node against Chromium; its stdout
/// once it said "step: done". Screenshots go to SESAME_TEST_SHOTS if set,
/// else next to the test's store.
async fn run_script(app: &TestApp, script: &str, env: &[(&str, &str)]) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "the browser test needs Chromium at {CHROMIUM}: apt-get install -y chromium"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    ensure_driver(&dir);
    let shots = std::env::var_os("SESAME_TEST_SHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| app.store.dir().to_path_buf());
    let out = tokio::process::Command::new("node")
        .arg(script)
        .current_dir(&dir)
        .envs(env.iter().copied())
        .env("SHOTS", &shots)
        .env("CHROMIUM", CHROMIUM)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("step: done"), "{stdout}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_adds_a_passkey_and_signs_in_with_it_in_chromium() {
    let app = spawn_with(Options {
        passkey_prompt: true,
        ..Default::default()
    })
    .await;
    let api = mail_api(app.mail.clone()).await;
    let env = [
        ("SESAME_BASE", app.base.as_str()),
        ("MAIL_API", &api),
        ("EMAIL", "chromium@example.com"),
    ];
    run_script(&app, "passkey.mjs", &env).await;
    for path in ["/", "/back"] {
        let seen = app
            .upstream
            .seen()
            .into_iter()
            .find(|s| s.path == path)
            .expect("the app saw the page");
        assert_eq!(
            seen.header("sesame-auth-method").as_deref(),
            Some("passkey"),
            "{path}"
        );
        assert_eq!(
            seen.header("remote-email").as_deref(),
            Some("chromium@example.com"),
            "{path}"
        );
    }
    let m = app.metrics().await;
    assert_eq!(
        TestApp::metric(&m, "sesame_passkey_registrations_total{result=\"ok\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_on_one_host_signs_in_through_the_portal_on_another_with_a_passkey_in_chromium() {
    // Passkeys over plain http: the portal on `localhost`; the app on a
    // host of its own (Chromium finds every *.localhost on this machine).
    let app = spawn_with(Options {
        passkey_prompt: true,
        portal: Some("localhost"),
        site0_host: "wiki.localhost",
        ..Default::default()
    })
    .await;
    let api = mail_api(app.mail.clone()).await;
    let env = [
        ("SITE", app.base.as_str()),
        ("PORTAL", app.portal.as_deref().unwrap()),
        ("MAIL_API", &api),
        ("EMAIL", "portal@example.com"),
    ];
    run_script(&app, "portal.mjs", &env).await;
    let back = app
        .upstream
        .seen()
        .into_iter()
        .find(|s| s.path == "/back")
        .expect("the app saw /back");
    assert_eq!(
        back.header("sesame-auth-method").as_deref(),
        Some("passkey")
    );
    assert_eq!(
        back.header("remote-email").as_deref(),
        Some("portal@example.com")
    );
    let m = app.metrics().await;
    assert_eq!(
        TestApp::metric(&m, "sesame_handoffs_total{result=\"ok\"}"),
        2.0
    );
}

/// Run a two-device script for `email`: the laptop must land on
/// `/dashboard` as `email`; returns what the app saw there.
async fn laptop_lands_in_the_app(app: &TestApp, script: &str, email: &str) -> Seen {
    let api = mail_api(app.mail.clone()).await;
    let env = [
        ("SITE", app.base.as_str()),
        ("MAIL_API", &api),
        ("EMAIL", email),
    ];
    let out = run_script(app, script, &env).await;
    let took = out
        .lines()
        .find_map(|l| l.strip_prefix("approval-to-arrival-ms: "))
        .expect("the script measured the approval");
    println!("{script}: from the phone's click on the number to the laptop in the app: {took} ms");
    let arrived = app
        .upstream
        .seen()
        .into_iter()
        .find(|s| s.path == "/dashboard")
        .expect("the app saw /dashboard");
    assert_eq!(arrived.header("remote-email").as_deref(), Some(email));
    arrived
}

fn cross_device(m: &str, kind: &str, result: &str) -> f64 {
    TestApp::metric(
        m,
        &format!("sesame_cross_device_total{{kind=\"{kind}\",result=\"{result}\"}}"),
    )
}

/// The laptop asks, the phone (a context of its own) opens the emailed link,
/// picks the laptop's number, and the laptop lands in the app; then "This
/// wasn't me" cancels a second request and the laptop's page says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_asked_on_a_laptop_is_approved_on_a_phone_in_chromium() {
    let app = spawn().await;
    let arrived =
        laptop_lands_in_the_app(&app, "cross_device.mjs", "two-devices@example.com").await;
    assert_eq!(
        arrived.header("sesame-auth-method").as_deref(),
        Some("magic_link")
    );
    let m = app.metrics().await;
    assert_eq!(cross_device(&m, "email", "approved"), 1.0);
    assert_eq!(cross_device(&m, "email", "cancelled"), 1.0);
    assert_eq!(TestApp::metric(&m, "sesame_sessions_created_total"), 1.0);
}

/// "Sign in with your phone": the phone, signed in, reads the laptop's QR
/// code off a screenshot, picks the laptop's number, and the laptop lands in
/// the app as the phone's account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_laptop_is_signed_in_by_a_phone_reading_its_qr_code_in_chromium() {
    let app = spawn().await;
    laptop_lands_in_the_app(&app, "phone.mjs", "qr@example.com").await;
    let m = app.metrics().await;
    assert_eq!(cross_device(&m, "qr", "approved"), 1.0);
    assert_eq!(TestApp::metric(&m, "sesame_sessions_created_total"), 2.0);
}
