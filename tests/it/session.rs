//! Sessions: new id at login, logout revokes, restart keeps them, bad
//! cookies are anonymous, idle timeout.

use crate::helpers::*;
use std::time::Duration;

fn session_cookie(r: &reqwest::Response) -> String {
    cookies_set(r)
        .get("sesame")
        .cloned()
        .expect("session cookie set")
}

store_tests! {
async fn planted_cookie_does_not_survive_login() {
    let app = spawn().await;
    // An attacker's own valid session, planted in the victim's browser.
    let attacker = browser();
    let planted = session_cookie(&app.sign_in(&attacker, "attacker@example.com").await);
    let victim = browser();
    let mail = app.ask_link(&victim, "victim@example.com", "/").await;
    let r = victim
        .post(app.url("/.sesame/magic"))
        .header("Origin", &app.base)
        .header("Cookie", format!("sesame={planted}"))
        .form(&[("token", &mail.token())])
        .send()
        .await
        .unwrap();
    let fresh = session_cookie(&r);
    assert_ne!(fresh, planted);
    victim.get(app.url("/me")).send().await.unwrap();
    assert_eq!(
        app.upstream.last().header("remote-email").as_deref(),
        Some("victim@example.com")
    );
}

async fn logout_revokes_and_a_replayed_cookie_is_refused() {
    let app = spawn().await;
    let b = browser();
    let cookie = session_cookie(&app.sign_in(&b, "leaver@example.com").await);
    let replay = || {
        browser()
            .get(app.url("/private"))
            .header("Cookie", format!("sesame={cookie}"))
            .send()
    };
    assert_eq!(replay().await.unwrap().status(), 200);
    let who: serde_json::Value = b
        .get(app.url("/.sesame/whoami"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["email"], "leaver@example.com");

    let r = app.post_form(&b, "/.sesame/logout", &[]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/.sesame/login");
    assert_eq!(replay().await.unwrap().status(), 401, "revoked server-side");
    assert_eq!(
        b.get(app.url("/.sesame/whoami"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let m = app.metrics().await;
    assert_eq!(TestApp::metric(&m, "sesame_sessions_revoked_total"), 1.0);
}

async fn restart_keeps_sessions() {
    let mut app = spawn().await;
    let b = browser();
    let cookie = session_cookie(&app.sign_in(&b, "stay@example.com").await);
    app.stop().await;
    let config = sesame::config::Config::from_toml(&config_text(
        app.port,
        free_port(),
        &app.store.url,
        app.mail.addr,
        app.upstream.addr,
        &Options::default(),
    ))
    .unwrap();
    let _again = start(config, app.clock.clone()).await;
    let r = app.get_as("/still", &cookie).await;
    assert_eq!(r.status(), 200, "the same cookie works after a restart");
    assert_eq!(
        app.upstream.last().header("remote-email").as_deref(),
        Some("stay@example.com")
    );
}

async fn malformed_foreign_or_oversized_cookies_are_anonymous() {
    let app = spawn().await;
    let b = browser();
    let good = session_cookie(&app.sign_in(&b, "real@example.com").await);
    let mut flipped = good.clone().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    for bad in [
        "garbage".to_string(),
        String::from_utf8(flipped).unwrap(),
        "A".repeat(8000),
        "%%%".to_string(),
        String::new(),
    ] {
        let r = app.get_as("/x", &bad).await;
        assert_eq!(r.status(), 401, "cookie {:.20}", bad);
    }
    let r = app.get_as("/x", &good).await;
    assert_eq!(r.status(), 200, "the genuine cookie still works");
}

async fn many_sessions_seen_at_once_are_all_served() {
    // A restart with many people active: every session is read from the
    // store at once, and each one's activity is due to be recorded.
    let app = spawn().await;
    let a = app.running.as_ref().unwrap().app.clone();
    let now = app.clock.now();
    let mut cookies = Vec::new();
    for i in 0..300 {
        let user = sesame::store::User {
            id: format!("u_burst{i}").into(),
            email: sesame::email::Email::parse(&format!("burst{i}@example.com")).unwrap(),
            name: None,
            groups: vec![],
            disabled: false,
            created_at: now,
        };
        a.store.add_user(&user).await.unwrap();
        let s = a
            .sessions
            .create(&user, sesame::store::AuthMethod::MagicLink)
            .await
            .unwrap()
            .unwrap();
        let sealed = a.keys.seal_cookie(&a.sites[0].session_seal, &s.cookie_plain);
        cookies.push((format!("sesame={sealed}"), s.record.id_hash));
    }
    // Last recorded two minutes ago: each first request records activity.
    app.clock.advance(Duration::from_secs(120));
    let client = reqwest::Client::new();
    let tasks: Vec<_> = cookies
        .iter()
        .map(|(cookie, _)| {
            let request = client.get(app.url("/x")).header("Cookie", cookie).send();
            tokio::spawn(async move { request.await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for t in tasks {
        let status = t.await.unwrap().map_err(|e| e.to_string());
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert_eq!(statuses.len(), 1, "every one served: {statuses:?}");
    assert_eq!(statuses.get(&Ok(200)), Some(&300), "{statuses:?}");
    // The activity reaches the store (within a second or two).
    let (_, id_hash) = &cookies[299];
    let t = std::time::Instant::now();
    loop {
        let seen = a.store.session(id_hash).await.unwrap().unwrap().last_seen;
        if seen >= now + 120 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "activity not written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn idle_and_expired_sessions_end() {
    let app = spawn().await;
    let b = browser();
    app.sign_in(&b, "idle@example.com").await;
    assert_eq!(b.get(app.url("/x")).send().await.unwrap().status(), 200);
    app.clock.advance(Duration::from_secs(2 * 3600 + 5));
    assert_eq!(
        b.get(app.url("/x")).send().await.unwrap().status(),
        401,
        "idle timeout"
    );

    let b = browser();
    app.sign_in(&b, "long@example.com").await;
    for _ in 0..9 {
        app.clock.advance(Duration::from_secs(3600 + 1800));
        // Active every 90 minutes: never idle, but the 12 h lifetime ends it.
        let _ = b.get(app.url("/x")).send().await.unwrap();
    }
    assert_eq!(
        b.get(app.url("/x")).send().await.unwrap().status(),
        401,
        "lifetime"
    );
}
}

/// SQLite: no change notices between instances, so this instance keeps its
/// keys until a cookie names one it has not loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_a_cookie_sealed_under_a_key_rotated_elsewhere() {
    with_store(Backend::Sqlite, async {
        let app = spawn().await;
        let old = session_cookie(&app.sign_in(&browser(), "rot@example.com").await);
        assert!(old.starts_with("cookie-1."));
        // Another instance rotates and seals this session under the new key.
        let (ok, _, err) = app.cli(&["keys", "rotate"]);
        assert!(ok, "{err}");
        let other = sesame::keys::Keys::load(
            &app.store.open().await,
            Duration::from_secs(3600),
            &app.clock,
        )
        .await
        .unwrap();
        // What the test site's session cookies are sealed for.
        let scope = "sesame/session/host/localhost";
        let plain = other.open_cookie(scope, &old).unwrap();
        let rotated = other.seal_cookie(scope, &plain);
        assert!(
            !rotated.starts_with("cookie-1."),
            "sealed under the new key"
        );

        let r = browser()
            .post(app.url("/.sesame/logout"))
            .header("Origin", &app.base)
            .header("Cookie", format!("sesame={rotated}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        for cookie in [&old, &rotated] {
            assert_eq!(app.get_as("/x", cookie).await.status(), 401, "revoked");
        }
    })
    .await
}
