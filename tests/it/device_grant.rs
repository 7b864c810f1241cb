//! The device grant (RFC 8628): a program (a CLI, a TV) gets a user code,
//! the person approves it at `/.sesame/device` on a device signed in to the
//! portal, and the program's polls of the token endpoint say what the RFC
//! says until tokens come. Driven by hand for every answer, and by panva's
//! openid-client (a certified relying-party library) end to end.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

const DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The portal (the issuer) on `localhost`, with a public client that may
/// use the device grant (`cli`) and one that may not (`web`).
async fn spawn_device() -> TestApp {
    spawn_with(Options {
        portal: Some("localhost"),
        site0_host: "wiki.localhost",
        extra: r#"
[[oidc.client]]
id = "cli"
name = "Sesame CLI"
public = true
device_grant = true

[[oidc.client]]
id = "strict"
name = "Strict CLI"
public = true
device_grant = true
require_passkey = true

[[oidc.client]]
id = "web"
public = true
redirect_uris = ["http://localhost:9/cb"]
"#
        .into(),
        ..Options::default()
    })
    .await
}

fn portal(app: &TestApp) -> String {
    app.portal.clone().unwrap()
}

async fn ask(app: &TestApp, client_id: &str, scope: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/.sesame/oidc/device_authorization", portal(app)))
        .form(&[("client_id", client_id), ("scope", scope)])
        .send()
        .await
        .unwrap()
}

async fn poll(app: &TestApp, client_id: &str, device_code: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/.sesame/oidc/token", portal(app)))
        .form(&[
            ("grant_type", DEVICE_CODE),
            ("device_code", device_code),
            ("client_id", client_id),
        ])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A phone signed in to the portal as `email`.
async fn phone_at_portal(app: &TestApp, email: &str) -> reqwest::Client {
    let phone = browser();
    app.sign_in_at(&phone, &portal(app), email, "/").await;
    phone
}

async fn decide(app: &TestApp, phone: &reqwest::Client, path: &str, code: &str) -> u16 {
    phone
        .post(format!("{}/.sesame/device/{path}", portal(app)))
        .header("Origin", portal(app))
        .form(&[("code", code)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// GET `url` as JSON, with a bearer token if given.
async fn get_json(b: &reqwest::Client, url: &str, bearer: Option<&str>) -> Value {
    let mut r = b.get(url);
    if let Some(t) = bearer {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap().json().await.unwrap()
}

/// The interval the program was given: a poll sooner is `slow_down`.
async fn wait_an_interval() {
    tokio::time::sleep(Duration::from_secs(sesame::signin::device::POLL_SECS)).await;
}

store_tests! {
async fn a_program_polls_until_the_person_approves_and_then_gets_tokens_once() {
    let app = spawn_device().await;
    let r = ask(&app, "cli", "openid email offline_access").await;
    assert_eq!(r.status(), 200);
    let asked: Value = r.json().await.unwrap();
    let (device_code, user_code) = (asked["device_code"].as_str().unwrap(), asked["user_code"].as_str().unwrap());
    assert_eq!(user_code.len(), 9, "{asked}");
    assert_eq!(asked["verification_uri"], format!("{}/.sesame/device", portal(&app)).as_str());
    assert_eq!(
        asked["verification_uri_complete"],
        format!("{}/.sesame/device?code={user_code}", portal(&app)).as_str()
    );
    assert_eq!((asked["expires_in"].as_i64(), asked["interval"].as_i64()), (Some(300), Some(5)));

    // Before the person acts: pending; polled too fast: slow down.
    let (status, body) = poll(&app, "cli", device_code).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("authorization_pending")), "{body}");
    let (status, body) = poll(&app, "cli", device_code).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("slow_down")), "{body}");
    // Another client cannot use this code.
    let (_, body) = poll(&app, "web", device_code).await;
    assert_eq!(body["error"], "unauthorized_client", "{body}");

    // The person, signed in on their phone, approves it by its code.
    let phone = phone_at_portal(&app, "dev@example.com").await;
    let page = phone
        .get(asked["verification_uri_complete"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("The program <strong>Sesame CLI</strong>"), "{page}");
    assert!(page.contains("id=\"approve\""), "{page}");
    assert_eq!(decide(&app, &phone, "approve", user_code).await, 200);

    wait_an_interval().await;
    let (status, tokens) = poll(&app, "cli", device_code).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(tokens["id_token"].is_string() && tokens["refresh_token"].is_string(), "{tokens}");
    let info = get_json(
        &reqwest::Client::new(),
        &format!("{}/.sesame/oidc/userinfo", portal(&app)),
        tokens["access_token"].as_str(),
    )
    .await;
    assert_eq!(info["email"], "dev@example.com");
    // Once.
    wait_an_interval().await;
    let (_, body) = poll(&app, "cli", device_code).await;
    assert_eq!(body["error"], "invalid_grant", "{body}");

    // The program's sign-in is a session of its own on the account page.
    let sessions = get_json(&phone, &format!("{}/.sesame/api/sessions", portal(&app)), None).await;
    assert_eq!(sessions.as_array().map(Vec::len), Some(2), "{sessions}");
    let m = app.metrics().await;
    assert_eq!(TestApp::metric(&m, "sesame_cross_device_total{kind=\"device\",result=\"approved\"}"), 1.0);
    assert_eq!(TestApp::metric(&m, "sesame_oidc_tokens_total{grant_type=\"device_code\"}"), 1.0);
}

async fn a_refusal_an_expired_code_and_a_client_without_the_grant_are_answered_as_the_rfc_says() {
    let app = spawn_device().await;
    // "This wasn't me": access_denied.
    let asked: Value = ask(&app, "cli", "openid").await.json().await.unwrap();
    let phone = phone_at_portal(&app, "eve@example.com").await;
    assert_eq!(decide(&app, &phone, "deny", asked["user_code"].as_str().unwrap()).await, 403);
    let (status, body) = poll(&app, "cli", asked["device_code"].as_str().unwrap()).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("access_denied")), "{body}");

    // A client that needs a passkey, approved from an email session:
    // access_denied, and nothing made for it.
    let asked: Value = ask(&app, "strict", "openid").await.json().await.unwrap();
    assert_eq!(decide(&app, &phone, "approve", asked["user_code"].as_str().unwrap()).await, 200);
    let (_, body) = poll(&app, "strict", asked["device_code"].as_str().unwrap()).await;
    assert_eq!(body["error"], "access_denied", "{body}");
    let sessions = get_json(&phone, &format!("{}/.sesame/api/sessions", portal(&app)), None).await;
    assert_eq!(sessions.as_array().map(Vec::len), Some(1), "{sessions}");

    // Five minutes: expired_token, and the code no longer opens.
    let asked: Value = ask(&app, "cli", "openid").await.json().await.unwrap();
    app.clock.advance(Duration::from_secs(301));
    let (_, body) = poll(&app, "cli", asked["device_code"].as_str().unwrap()).await;
    assert_eq!(body["error"], "expired_token", "{body}");
    assert_eq!(decide(&app, &phone, "approve", asked["user_code"].as_str().unwrap()).await, 410);

    // A client not allowed the grant, a scope without openid, a made-up code.
    let r = ask(&app, "web", "openid").await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "unauthorized_client");
    let r = ask(&app, "cli", "email").await;
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_scope");
    let (_, body) = poll(&app, "cli", "made-up").await;
    assert_eq!(body["error"], "invalid_grant");
    let d = get_json(
        &reqwest::Client::new(),
        &format!("{}/.well-known/openid-configuration", portal(&app)),
        None,
    )
    .await;
    assert_eq!(d["device_authorization_endpoint"], format!("{}/.sesame/oidc/device_authorization", portal(&app)).as_str());
    assert!(d["grant_types_supported"].as_array().unwrap().contains(&DEVICE_CODE.into()));
}
}

/// panva's openid-client runs the device grant end to end: discovery, the
/// device authorization request, polling; the person approves in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certified_openid_client_library_signs_a_program_in_with_the_device_grant() {
    use tokio::io::AsyncBufReadExt;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    crate::browser::ensure_driver(&dir);
    let app = spawn_device().await;
    let mut program = tokio::process::Command::new("node")
        .arg("device.mjs")
        .current_dir(&dir)
        .env("ISSUER", portal(&app))
        .env("CLIENT_ID", "cli")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node (Node.js) is needed: apt-get install -y nodejs npm");
    let mut out = tokio::io::BufReader::new(program.stdout.take().unwrap()).lines();
    let line = |l: Option<String>| -> Value {
        let l = l.expect("the program printed a line");
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"))
    };
    let asked = line(
        tokio::time::timeout(Duration::from_secs(20), out.next_line())
            .await
            .expect("the program asks for a code")
            .unwrap(),
    );
    let phone = phone_at_portal(&app, "cli-user@example.com").await;
    let r = phone
        .get(asked["verification_uri_complete"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        decide(
            &app,
            &phone,
            "approve",
            asked["user_code"].as_str().unwrap()
        )
        .await,
        200
    );
    let got = line(
        tokio::time::timeout(Duration::from_secs(30), out.next_line())
            .await
            .expect("the program gets its tokens")
            .unwrap(),
    );
    let status = program.wait().await.unwrap();
    assert!(status.success(), "{got}");
    assert_eq!(got["email"], "cli-user@example.com", "{got}");
    assert_eq!(got["userinfo_email"], "cli-user@example.com");
    assert_eq!(got["aud"], "cli");
    assert_eq!(got["iss"], portal(&app).as_str());
}
