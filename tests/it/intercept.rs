//! Requests without a session: who gets a redirect, who gets 401, what passes
//! as public, and what the upstream receives.

use crate::helpers::*;

store_tests! {
async fn browser_navigation_redirects_and_api_gets_401() {
    let app = spawn().await;
    let b = browser();
    let r = b
        .get(app.url("/docs/page?x=1"))
        .header("Accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let loc = url::Url::parse(&loc).unwrap();
    assert_eq!(loc.path(), "/.sesame/login");
    let rd = loc
        .query_pairs()
        .find(|(k, _)| k == "rd")
        .unwrap()
        .1
        .into_owned();
    assert_eq!(rd, app.url("/docs/page?x=1"));

    let r = b
        .get(app.url("/api/items"))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unauthenticated");
    assert!(body["login_url"]
        .as_str()
        .unwrap()
        .starts_with(&app.url("/.sesame/login?rd=")));

    let r = b
        .post(app.url("/form"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a POST is not a navigation");
    assert!(
        app.upstream.seen().is_empty(),
        "nothing reached the upstream"
    );
}

async fn public_paths_pass_and_traversal_does_not() {
    let app = spawn().await;
    let b = browser();
    for ok in ["/public", "/public/style.css", "/health", "/public/a/../b"] {
        let r = b.get(app.url(ok)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{ok} is public");
    }
    for bad in [
        "/public/../secret",
        "/public/%2e%2e/secret",
        "/public/%2E%2E/secret",
        "/public/.%2e/secret",
        "//public/../secret",
        "/public%2f..%2fsecret",
        "/publicity",
        "/PUBLIC/x",
        "/healthz",
        // `;params` as Java servers read them: `/public/..;/secret` is their `/secret`.
        "/public/..;/secret",
        "/public/..;x/secret",
        "/public/..%3B/secret",
        "/public;x/../..;/secret",
    ] {
        assert_eq!(
            raw_get(app.port, bad).await,
            401,
            "{bad} must need a session"
        );
    }
    assert_eq!(
        raw_get(app.port, "/public/%252e%252e/secret").await,
        400,
        "double encoding is ambiguous"
    );
    assert_eq!(
        raw_get(app.port, "/public/..%5csecret").await,
        400,
        "backslash is ambiguous"
    );
    assert!(
        app.upstream
            .seen()
            .iter()
            .all(|s| !s.path.contains("secret")),
        "{:?}",
        app.upstream.seen()
    );
}

async fn spoofed_identity_headers_never_reach_the_upstream() {
    let app = spawn().await;
    let b = browser();
    let spoof = [
        ("Remote-User", "admin"),
        ("remote-email", "boss@example.com"),
        ("REMOTE-GROUPS", "admins"),
        ("Remote_Name", "Boss"),
        ("sesame_auth-method", "passkey"),
        ("Sesame-Auth_Method", "passkey"),
        // Headers apps trust from the proxy in front: another path to
        // route by (IIS, Symfony), a made-up client address or base URL.
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("Forwarded", "for=10.0.0.1;proto=https"),
        ("X-Real-IP", "10.0.0.1"),
        ("X-Forwarded-Port", "443"),
        ("X-Forwarded-Prefix", "/evil"),
    ];
    let mut req = b.get(app.url("/public/x"));
    for (k, v) in spoof {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), 200);
    let seen = app.upstream.last();
    for (k, _) in spoof {
        assert_eq!(
            seen.header(k),
            None,
            "{k} reached the upstream anonymously: {seen:?}"
        );
    }

    app.sign_in(&b, "ada@example.com").await;
    let mut req = b
        .get(app.url("/app?q=1&r=two%20x"))
        .header("X-Trace-Id", "Abc-123");
    for (k, v) in spoof {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), 200);
    let seen = app.upstream.last();
    // Everything else arrives as sent: the target with its query, and the
    // client's own headers (names in lower case, as the README says).
    assert_eq!(seen.path, "/app?q=1&r=two%20x");
    assert!(
        seen.headers
            .contains(&("x-trace-id".to_string(), "Abc-123".to_string())),
        "{seen:?}"
    );
    assert_eq!(
        seen.headers_named("remote-email"),
        vec!["ada@example.com".to_string()]
    );
    assert_eq!(seen.headers_named("remote-groups"), vec![String::new()]);
    assert_eq!(
        seen.headers_named("sesame-auth-method"),
        vec!["magic_link".to_string()]
    );
    assert!(seen.header("remote-user").unwrap().starts_with("u_"));
    assert!(
        seen.headers.iter().all(|(k, _)| !k.contains('_')),
        "underscore spellings removed: {seen:?}"
    );
}

async fn unknown_host_is_refused() {
    let app = spawn().await;
    let r = browser()
        .get(app.url("/"))
        .header("Host", "evil.example.net")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(app.upstream.seen().is_empty());
}
}
