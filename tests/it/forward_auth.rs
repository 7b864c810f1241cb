//! `GET /.sesame/auth` answered directly, as Traefik ForwardAuth and Caddy
//! `forward_auth` ask it: X-Forwarded-* believed only from trusted proxies.

use serde_json::Value;

use crate::helpers::*;

/// A client whose requests come from 127.0.0.2: not a trusted proxy.
fn untrusted() -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

store_tests! {
async fn forward_auth_answers_for_the_original_request() {
    let app = spawn_with(Options {
        server: "trusted_proxies = [\"127.0.0.1\"]".into(),
        extra: "allow_emails = [\"boss@example.com\"]".into(),
        ..Default::default()
    })
    .await;
    let proxy = browser(); // from 127.0.0.1: trusted
    let auth = app.url("/.sesame/auth");
    let ask = |cookie: Option<String>, host: String, uri: &'static str, query: &'static str| {
        let mut r = proxy
            .get(format!("{auth}{query}"))
            .header("X-Forwarded-Method", "GET")
            .header("X-Forwarded-Proto", "http")
            .header("X-Forwarded-Host", host)
            .header("X-Forwarded-Uri", uri);
        if let Some(c) = cookie {
            r = r.header("Cookie", format!("sesame={c}"));
        }
        r.send()
    };
    let here = format!("localhost:{}", app.port);

    let r = ask(None, here.clone(), "/docs?x=1", "").await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    let login_url = body["login_url"].as_str().unwrap();
    assert!(
        login_url.ends_with(&format!("/.sesame/login?rd=http%3A%2F%2Flocalhost%3A{}%2Fdocs%3Fx%3D1", app.port)),
        "{login_url}"
    );
    let r = ask(None, here.clone(), "/docs", "?redirect=1").await.unwrap();
    assert_eq!(r.status(), 302, "Traefik and Caddy pass a redirect on to the browser");
    assert!(r.headers()["location"].to_str().unwrap().contains("/.sesame/login?rd="));

    let session = cookies_set(&app.sign_in(&browser(), "ada@example.com").await)["sesame"].clone();
    let r = ask(Some(session.clone()), here.clone(), "/docs", "").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["remote-email"], "ada@example.com");
    assert_eq!(r.headers()["sesame-auth-method"], "magic_link");
    assert!(r.headers()["remote-user"].to_str().unwrap().starts_with("u_"));
    assert_eq!(r.headers()["cache-control"], "no-store");

    // Never a 200 without an identity.
    for bad in ["garbage".to_string(), format!("{session}x"), "cookie-1.".to_string(), "A".repeat(5000)] {
        let r = ask(Some(bad), here.clone(), "/docs", "").await.unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = ask(None, here.clone(), "/public/x", "").await.unwrap();
    assert_eq!(r.status(), 401, "no identity, no 200, even on a public path");

    // A forwarded path or host that is not text (nginx passes raw bytes on)
    // is refused, not judged as "/" or as Sesame's own host.
    let raw = |v: &[u8]| reqwest::header::HeaderValue::from_bytes(v).unwrap();
    for (host, uri, bad) in [
        (raw(here.as_bytes()), raw(b"/admin/\xc3\xbc"), "x-original-uri"),
        (raw(b"h\xc3\xb6st.example"), raw(b"/docs"), "x-forwarded-host"),
    ] {
        let r = proxy
            .get(&auth)
            .header("Cookie", format!("sesame={session}"))
            .header("X-Forwarded-Host", host)
            .header("X-Original-URI", uri)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "bad_request");
        assert_eq!(body["header"], bad);
    }

    // The other site (which admits only boss@example.com) has sessions of
    // its own: this one is not signed in there.
    let other = format!("127.0.0.1:{}", app.port);
    let r = ask(Some(session.clone()), other.clone(), "/", "").await.unwrap();
    assert_eq!(r.status(), 401);

    // From an untrusted peer the forwarded headers are ignored: its own Host
    // and "/" are what it asks about.
    let r = untrusted()
        .get(&auth)
        .header("Cookie", format!("sesame={session}"))
        .header("X-Forwarded-Host", other.clone())
        .header("X-Forwarded-Uri", "/secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "judged for its own host, not the forwarded one");
    let r = untrusted()
        .get(&auth)
        .header("X-Forwarded-Host", other)
        .header("X-Forwarded-Uri", "/secret")
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert!(body["login_url"].as_str().unwrap().contains(&format!("rd=http%3A%2F%2Flocalhost%3A{}%2F", app.port)), "{body}");
    assert!(!body["login_url"].as_str().unwrap().contains("secret"));
}

async fn the_client_address_comes_from_trusted_proxies_only() {
    let app = spawn_with(Options {
        server: "trusted_proxies = [\"127.0.0.1\"]".into(),
        ..Default::default()
    })
    .await;
    let session = cookies_set(&app.sign_in(&browser(), "xff@example.com").await)["sesame"].clone();
    // Through a trusted proxy: the chain goes on, the proxy appended.
    let r = browser()
        .get(app.url("/x"))
        .header("Cookie", format!("sesame={session}"))
        .header("X-Forwarded-For", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.upstream.last().header("x-forwarded-for").as_deref(), Some("203.0.113.7, 127.0.0.1"));
    // From anyone else: replaced by the peer.
    let r = untrusted()
        .get(app.url("/x"))
        .header("Cookie", format!("sesame={session}"))
        .header("X-Forwarded-For", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.upstream.last().header("x-forwarded-for").as_deref(), Some("127.0.0.2"));
}
}
