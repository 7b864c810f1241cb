//! The magic-link journey, as a person takes it, and its attacks.

use crate::helpers::*;
use std::time::Duration;

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

store_tests! {
async fn full_link_journey_reaches_the_app_with_identity() {
    let app = spawn().await;
    let b = browser();
    let login = b
        .get(app.url("/.sesame/login?rd=/dashboard%3Fx%3D1"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    assert!(login.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let page = login.text().await.unwrap();
    assert!(page.contains("autocomplete=\"username webauthn\""));

    let mail = app.ask_link(&b, "Ada@Example.com", "/dashboard?x=1").await;
    assert_eq!(mail.to, vec!["ada@example.com".to_string()]);
    assert_eq!(mail.subject, "Sign in to Test app");
    assert!(
        mail.text.contains("15 minutes"),
        "states the expiry: {}",
        mail.text
    );
    let html = mail.html.replace("&#x2f;", "/").replace("&amp;", "&");
    assert!(
        html.contains(&format!("href=\"{}\"", mail.link())),
        "html part links to the same link"
    );
    assert!(html.contains(&mail.code()), "html part has the code");
    assert!(mail.link().starts_with(&app.url("/.sesame/magic?token=")));

    // Opening the link shows a confirm page and consumes nothing, however often.
    for _ in 0..3 {
        let r = b.get(mail.link()).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert_eq!(r.headers()["referrer-policy"], "no-referrer");
        let html = r.text().await.unwrap();
        assert!(
            html.contains("data-auto=\"1\""),
            "the asking browser may continue by itself"
        );
        assert!(html.contains("a…@example.com"));
    }
    assert!(app.upstream.seen().is_empty());

    let r = app
        .post_form(&b, "/.sesame/magic", &[("token", &mail.token())])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], app.url("/dashboard?x=1").as_str());
    let set = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect::<Vec<_>>();
    let session = set
        .iter()
        .find(|c| c.starts_with("sesame="))
        .expect("session cookie");
    assert!(
        session.contains("HttpOnly")
            && session.contains("SameSite=Lax")
            && session.contains("Path=/"),
        "{session}"
    );
    assert!(!session.contains("Secure"), "plain http on localhost");

    let value = cookies_set(&r)["sesame"].clone();
    let r = browser()
        .get(app.url("/dashboard?x=1"))
        .header("Cookie", format!("theme=dark; sesame={value}; lang=en"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = app.upstream.last();
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("GET", "/dashboard?x=1")
    );
    assert_eq!(
        seen.header("remote-email").as_deref(),
        Some("ada@example.com")
    );
    assert_eq!(
        seen.header("sesame-auth-method").as_deref(),
        Some("magic_link")
    );
    let cookies = seen.headers_named("cookie").join("; ");
    assert!(
        !cookies.contains("sesame"),
        "Sesame's cookies are not forwarded: {cookies}"
    );
    assert_eq!(cookies, "theme=dark; lang=en", "other cookies are");

    // Used: the same link again is gone.
    let r = app
        .post_form(&browser(), "/.sesame/magic", &[("token", &mail.token())])
        .await;
    assert_eq!(r.status(), 410);
    assert!(r.text().await.unwrap().contains("Send me a new link"));
    let r = b.get(mail.link()).send().await.unwrap();
    assert_eq!(r.status(), 410);

    let m = app.metrics().await;
    assert_eq!(
        TestApp::metric(
            &m,
            "sesame_verifications_total{method=\"magic_link\",result=\"ok\"}"
        ),
        1.0
    );
    assert_eq!(TestApp::metric(&m, "sesame_sessions_created_total"), 1.0);
    assert!(TestApp::metric(&m, "sesame_magic_link_confirm_views_total") >= 3.0);
}

async fn another_browser_needs_a_deliberate_click() {
    let app = spawn().await;
    let asking = browser();
    let mail = app.ask_link(&asking, "bob@example.com", "/").await;
    let other = browser();
    let html = other
        .get(mail.link())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!html.contains("data-auto"), "no auto-continue elsewhere");
    assert!(html.contains("Someone asked to sign in as b…@example.com"));
    assert!(html.contains("Sign in on this device"));
    // Opening the page signed nobody in.
    assert_eq!(other.get(app.url("/x")).send().await.unwrap().status(), 401);
    assert_eq!(
        asking.get(app.url("/x")).send().await.unwrap().status(),
        401
    );
    // The click does.
    let r = app
        .post_form(&other, "/.sesame/magic", &[("token", &mail.token())])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(other.get(app.url("/x")).send().await.unwrap().status(), 200);
}

async fn expired_link_is_gone_without_waiting() {
    let app = spawn().await;
    let b = browser();
    let mail = app.ask_link(&b, "eve@example.com", "/").await;
    app.clock.advance(Duration::from_secs(15 * 60 + 1));
    let r = b.get(mail.link()).send().await.unwrap();
    assert_eq!(r.status(), 410);
    let r = app
        .post_form(&b, "/.sesame/magic", &[("token", &mail.token())])
        .await;
    assert_eq!(r.status(), 410);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("expired") && html.contains("action=\"/.sesame/login\""),
        "offers a new link"
    );
    let m = app.metrics().await;
    let expired = "sesame_verifications_total{method=\"magic_link\",result=\"expired\"}";
    let gone = "sesame_verifications_total{method=\"magic_link\",result=\"gone\"}";
    assert_eq!(
        TestApp::metric(&m, expired),
        2.0,
        "GET and POST, each counted once"
    );
    assert_eq!(
        TestApp::metric(&m, gone),
        0.0,
        "an expiry is not also counted as gone"
    );
}

async fn tampered_and_other_site_tokens_are_refused() {
    let app = spawn().await;
    let b = browser();
    let mail = app.ask_link(&b, "mallory@example.com", "/").await;
    let token = mail.token();
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let r = app
        .post_form(&b, "/.sesame/magic", &[("token", &tampered)])
        .await;
    assert_eq!(r.status(), 400);
    let r = b
        .get(app.url(&format!("/.sesame/magic?token={tampered}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .post_form(&b, "/.sesame/magic", &[("token", "not-a-token")])
        .await;
    assert_eq!(r.status(), 400);

    // The second site (same gateway, other host) refuses the first site's token.
    let other = format!("http://127.0.0.1:{}", app.port);
    let r = b
        .post(format!("{other}/.sesame/magic"))
        .header("Origin", &other)
        .form(&[("token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "token of another site");
    // ... and the genuine one still works where it belongs.
    let r = app
        .post_form(&b, "/.sesame/magic", &[("token", &token)])
        .await;
    assert_eq!(r.status(), 303);
}

async fn many_simultaneous_uses_give_exactly_one_session() {
    let app = std::sync::Arc::new(spawn().await);
    let mail = app.ask_link(&browser(), "race@example.com", "/").await;
    let token = mail.token();
    let tasks: Vec<_> = (0..24)
        .map(|_| {
            let app = app.clone();
            let token = token.clone();
            tokio::spawn(async move {
                app.post_form(&browser(), "/.sesame/magic", &[("token", &token)])
                    .await
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 303).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 410).count(),
        23,
        "{statuses:?}"
    );
    let m = app.metrics().await;
    assert_eq!(TestApp::metric(&m, "sesame_sessions_created_total"), 1.0);
}

async fn cross_site_posts_are_refused() {
    let app = spawn().await;
    let b = browser();
    let mail = app.ask_link(&b, "csrf@example.com", "/").await;
    let r = b
        .post(app.url("/.sesame/magic"))
        .header("Origin", "https://evil.example.net")
        .form(&[("token", &mail.token())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = b
        .post(app.url("/.sesame/login"))
        .header("Sec-Fetch-Site", "cross-site")
        .form(&[("email", "csrf@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // `Origin: null` (a form on a no-referrer page) counts only with the
    // browser's unforgeable Sec-Fetch-Site.
    let r = b
        .post(app.url("/.sesame/magic"))
        .header("Origin", "null")
        .form(&[("token", &mail.token())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = b
        .post(app.url("/.sesame/magic"))
        .header("Origin", "null")
        .header("Sec-Fetch-Site", "cross-site")
        .form(&[("token", &mail.token())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The link was not spent by the refused requests; the browser's own
    // same-origin post from the confirm page is accepted.
    let r = b
        .post(app.url("/.sesame/magic"))
        .header("Origin", "null")
        .header("Sec-Fetch-Site", "same-origin")
        .form(&[("token", &mail.token())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
}

async fn return_to_stays_on_the_site_for_the_whole_corpus() {
    let app = spawn().await;
    let b = browser();
    let corpus = include_str!("../data/openredirects.txt");
    let mut n = 0;
    for line in corpus.lines() {
        let url = format!("{}?rd={}", app.url("/.sesame/login"), urlencode(line));
        let html = b.get(url).send().await.unwrap().text().await.unwrap();
        let rd = hidden_value(&html, "rd").expect("login page carries rd");
        let parsed = url::Url::parse(&rd).unwrap_or_else(|_| panic!("{line:?} -> {rd:?}"));
        let origin = parsed.origin().ascii_serialization();
        assert!(
            origin == app.base || origin == format!("http://127.0.0.1:{}", app.port),
            "{line:?} -> {rd}"
        );
        n += 1;
    }
    assert_eq!(n, 559);

    // And through the whole journey, for the classic forms.
    for evil in [
        "//evil.com",
        "/\\evil.com",
        "https:evil.com",
        "https://evil.com/",
        "/%2f%2fevil.com",
        " //evil.com",
    ] {
        let mail = app
            .ask_link(&browser(), &format!("rd{n}@example.com"), evil)
            .await;
        n += 1;
        let r = app
            .post_form(&b, "/.sesame/magic", &[("token", &mail.token())])
            .await;
        assert_eq!(r.headers()["location"], app.url("/").as_str(), "{evil}");
    }
}

async fn links_use_the_configured_url_even_with_a_forged_host() {
    let app = spawn().await;
    let b = browser();
    let r = b
        .post(app.url("/.sesame/login"))
        .header("Host", "localhost:1")
        .header("Origin", "http://localhost:1")
        .form(&[("email", "host@example.com")])
        .send()
        .await
        .unwrap();
    // Origin must match the configured site, not the forged host.
    assert_eq!(r.status(), 403);
    let r = b
        .post(app.url("/.sesame/login"))
        .header("Host", "localhost:1")
        .form(&[("email", "host@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mail = app.mail.wait_for("host@example.com", 0).await;
    assert!(
        mail.link().starts_with(&app.url("/.sesame/magic?token=")),
        "{}",
        mail.link()
    );
}

async fn opened_but_unconfirmed_links_are_counted_as_suspected_scanners() {
    let app = spawn().await;
    let scanned = app.ask_link(&browser(), "scanned@example.com", "/").await;
    assert_eq!(
        browser().get(scanned.link()).send().await.unwrap().status(),
        200
    );

    let b = browser();
    let used = app.ask_link(&b, "used@example.com", "/").await;
    assert_eq!(b.get(used.link()).send().await.unwrap().status(), 200);
    let r = app
        .post_form(&b, "/.sesame/magic", &[("token", &used.token())])
        .await;
    assert_eq!(r.status(), 303);
    app.ask_link(&browser(), "ignored@example.com", "/").await;

    app.clock.advance(Duration::from_secs(16 * 60));
    app.running.as_ref().unwrap().app.sweep().await;
    let m = app.metrics().await;
    assert_eq!(
        TestApp::metric(&m, "sesame_magic_links_opened_unconfirmed_total"),
        1.0
    );
}
}
