//! The portal: every sign-in page on one origin (`auth.localhost`), and
//! sites (`localhost`, `127.0.0.1`) that get their sessions from it by a
//! single-use handoff code bound to the site and to the browser's state
//! cookie. Followed as a browser would, redirect by redirect.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::redirect::Policy;

use crate::helpers::*;

async fn spawn_portal() -> TestApp {
    spawn_with(Options {
        portal: Some("auth.localhost"),
        ..Options::default()
    })
    .await
}

/// A browser that finds `auth.localhost` on this machine.
fn browser_for(app: &TestApp) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .timeout(Duration::from_secs(10))
        .resolve(
            "auth.localhost",
            SocketAddr::from(([127, 0, 0, 1], app.port)),
        )
        .resolve(
            "wiki.localhost",
            SocketAddr::from(([127, 0, 0, 1], app.port)),
        )
        .build()
        .unwrap()
}

fn portal(app: &TestApp) -> String {
    app.portal.clone().expect("the app has a portal")
}

fn other_site(app: &TestApp) -> String {
    format!("http://127.0.0.1:{}", app.port)
}

fn location(r: &reqwest::Response) -> String {
    let here = r.url().clone();
    let to = r.headers()["location"].to_str().unwrap();
    here.join(to).unwrap().to_string()
}

fn query_param(url: &str, key: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// GET `url` as a page navigation and follow redirects until a page, or
/// until a location starts with `stop_at`; returns the last response and
/// every location on the way.
async fn follow_until(
    b: &reqwest::Client,
    url: &str,
    stop_at: Option<&str>,
) -> (reqwest::Response, Vec<String>) {
    let mut seen = Vec::new();
    let mut url = url.to_string();
    for _ in 0..10 {
        let r = b
            .get(&url)
            .header("Accept", "text/html")
            .send()
            .await
            .unwrap();
        if !r.status().is_redirection() {
            return (r, seen);
        }
        url = location(&r);
        seen.push(url.clone());
        if stop_at.is_some_and(|s| url.starts_with(s)) {
            return (r, seen);
        }
    }
    panic!("more than 10 redirects: {seen:?}");
}

/// Sign in at the portal by email from `start` (a page of a site), and
/// stop at the site's handoff address (returned, not followed).
async fn sign_in_until_handoff(
    app: &TestApp,
    b: &reqwest::Client,
    email: &str,
    start: &str,
) -> String {
    let (page, seen) = follow_until(b, start, None).await;
    assert_eq!(page.status(), 200, "{seen:?}");
    let login = seen.last().unwrap().clone();
    assert!(
        login.starts_with(&format!("{}/.sesame/login?", portal(app))),
        "{seen:?}"
    );
    let rd = hidden_value(&page.text().await.unwrap(), "rd").unwrap();
    assert!(rd.starts_with(&format!("{}/.sesame/authorize?", portal(app))));
    let seen_mail = app.mail.count_to(email);
    let r = b
        .post(format!("{}/.sesame/login", portal(app)))
        .header("Origin", portal(app))
        .form(&[("email", email), ("rd", &rd)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mail = app
        .mail
        .wait_for_subject(email, seen_mail, "Sign in to")
        .await;
    assert!(
        mail.link()
            .starts_with(&format!("{}/.sesame/magic?", portal(app))),
        "the link is the portal's: {}",
        mail.link()
    );
    let r = b
        .post(format!("{}/.sesame/magic", portal(app)))
        .header("Origin", portal(app))
        .form(&[("token", &mail.token())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), rd, "back to the authorize address");
    let (_, seen) = follow_until(b, &rd, Some("http")).await;
    let handoff = seen[0].clone();
    assert!(handoff.contains("/.sesame/handoff?code="), "{seen:?}");
    handoff
}

fn session_cookie(r: &reqwest::Response) -> Option<String> {
    cookies_set(r)
        .get("sesame")
        .filter(|v| !v.is_empty())
        .cloned()
}

store_tests! {
    async fn a_site_gets_its_session_from_the_portal_and_the_next_site_passes_through() {
        let app = spawn_portal().await;
        let b = browser_for(&app);
        let start = app.url("/private/page?x=1");
        let handoff = sign_in_until_handoff(&app, &b, "ada@example.com", &start).await;
        assert!(handoff.starts_with(&app.url("/.sesame/handoff?")), "{handoff}");
        let r = b.get(&handoff).send().await.unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(location(&r), start, "on to where the person was going");
        assert!(session_cookie(&r).is_some(), "the site's own session");
        let r = b.get(&start).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            app.upstream.last().header("remote-email").as_deref(),
            Some("ada@example.com")
        );
        assert_eq!(
            app.upstream.last().header("sesame-auth-method").as_deref(),
            Some("magic_link"),
            "the portal session's method"
        );

        // Another site: through the portal without typing anything.
        let other = format!("{}/dashboard", other_site(&app));
        let (page, seen) = follow_until(&b, &other, None).await;
        assert_eq!(page.status(), 200, "{seen:?}");
        assert!(seen.iter().any(|u| u.contains("/.sesame/authorize?")), "{seen:?}");
        assert_eq!(seen.last().unwrap(), &other);
        assert_eq!(app.mail.count_to("ada@example.com"), 1, "one email for both sites");
        let text = app.metrics().await;
        assert_eq!(TestApp::metric(&text, "sesame_handoffs_total{result=\"issued\"}"), 2.0);
        assert_eq!(TestApp::metric(&text, "sesame_handoffs_total{result=\"ok\"}"), 2.0);
    }

    async fn a_planted_handoff_code_signs_nobody_else_in() {
        let app = spawn_portal().await;
        // The attacker signs in and keeps the code instead of using it.
        let attacker = browser_for(&app);
        let code = sign_in_until_handoff(&app, &attacker, "mallory@example.com", &app.url("/")).await;
        // The victim opens it: no state cookie at all...
        let victim = browser_for(&app);
        let r = victim.get(&code).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(session_cookie(&r).is_none());
        assert!(r.text().await.unwrap().contains("started in another browser"));
        // ...or a state cookie of their own, from a sign-in they started.
        let (_, seen) = follow_until(&attacker, &app.url("/.sesame/login"), Some(&app.url("/.sesame/handoff"))).await;
        let attacker_code = seen.last().unwrap().clone();
        let (_, seen) = follow_until(&victim, &app.url("/"), Some(&portal(&app))).await;
        assert!(seen[1].contains("/.sesame/authorize?"), "{seen:?}");
        let r = victim.get(&attacker_code).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(session_cookie(&r).is_none());
        let r = victim.get(app.url("/private")).header("Accept", "text/html").send().await.unwrap();
        assert_eq!(r.status(), 302, "the victim is still signed out");
        // A code shown to the wrong browser is spent: not even its maker
        // can use it now.
        let r = attacker.get(&attacker_code).send().await.unwrap();
        assert_eq!(r.status(), 410);
        let text = app.metrics().await;
        assert_eq!(TestApp::metric(&text, "sesame_handoffs_total{result=\"wrong_browser\"}"), 2.0);
    }

    async fn a_handoff_code_works_once_for_its_own_site_within_a_minute() {
        let app = spawn_portal().await;
        let b = browser_for(&app);
        let code = sign_in_until_handoff(&app, &b, "ada@example.com", &app.url("/")).await;
        let r = b.get(&code).send().await.unwrap();
        assert_eq!(r.status(), 303);
        // Replayed: gone.
        let r = browser_for(&app).get(&code).send().await.unwrap();
        assert_eq!(r.status(), 410);
        let r = b.get(&code).send().await.unwrap();
        assert_eq!(r.status(), 410);

        // A code for the first site, shown to the other one (by a browser
        // holding that site's state): refused, and spent.
        let (_, seen) = follow_until(&b, &app.url("/.sesame/login"), Some(&app.url("/.sesame/handoff"))).await;
        let for_first = seen.last().unwrap().clone();
        follow_until(&b, &other_site(&app), Some(&portal(&app))).await;
        let moved = for_first.replace(&app.base, &other_site(&app));
        let r = b.get(&moved).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("for another site"));
        let r = b.get(&for_first).send().await.unwrap();
        assert_eq!(r.status(), 410);

        // Taken a minute after it was made: expired.
        let (_, seen) = follow_until(&b, &app.url("/.sesame/login"), Some(&app.url("/.sesame/handoff"))).await;
        app.clock.advance(Duration::from_secs(61));
        let r = b.get(seen.last().unwrap()).send().await.unwrap();
        assert_eq!(r.status(), 410);
        assert!(session_cookie(&r).is_none());
    }

    async fn signing_out_at_the_portal_ends_the_sites_sessions_and_a_sites_own_only_its_own() {
        let app = spawn_portal().await;
        let b = browser_for(&app);
        let code = sign_in_until_handoff(&app, &b, "ada@example.com", &app.url("/")).await;
        b.get(&code).send().await.unwrap();
        let (page, _) = follow_until(&b, &format!("{}/x", other_site(&app)), None).await;
        assert_eq!(page.status(), 200);

        // A site's sign-out ends that site's session only, and shows the
        // portal's account page (still signed in there).
        let r = b
            .post(app.url("/.sesame/logout"))
            .header("Origin", &app.base)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(location(&r), format!("{}/.sesame/account", portal(&app)));
        let r = b.get(format!("{}/.sesame/account", portal(&app))).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = b.get(format!("{}/x", other_site(&app))).send().await.unwrap();
        assert_eq!(r.status(), 200, "the other site's session lives on");
        let r = b.get(app.url("/private")).header("Accept", "text/html").send().await.unwrap();
        assert_eq!(r.status(), 302, "this site's ended");

        // Signing out at the portal ends what was handed off from it.
        let r = b
            .post(format!("{}/.sesame/logout", portal(&app)))
            .header("Origin", portal(&app))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        let r = b.get(format!("{}/x", other_site(&app))).header("Accept", "application/json").send().await.unwrap();
        assert_eq!(r.status(), 401, "the other site's session ended with the portal's");
    }

    async fn sign_out_everywhere_on_the_portal_ends_other_browsers_site_sessions() {
        let app = spawn_portal().await;
        let laptop = browser_for(&app);
        let code = sign_in_until_handoff(&app, &laptop, "ada@example.com", &app.url("/")).await;
        laptop.get(&code).send().await.unwrap();
        let phone = browser_for(&app);
        let code = sign_in_until_handoff(&app, &phone, "ada@example.com", &app.url("/")).await;
        phone.get(&code).send().await.unwrap();
        assert_eq!(phone.get(app.url("/p")).send().await.unwrap().status(), 200);

        let r = laptop
            .delete(format!("{}/.sesame/api/sessions", portal(&app)))
            .header("Origin", portal(&app))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = phone.get(app.url("/p")).header("Accept", "application/json").send().await.unwrap();
        assert_eq!(r.status(), 401, "the phone's site session ended");
        let r = laptop.get(format!("{}/.sesame/account", portal(&app))).send().await.unwrap();
        assert_eq!(r.status(), 200, "the laptop stays signed in at the portal");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_ceremonies_are_served_on_the_portal_only() {
    let app = spawn_portal().await;
    let b = browser_for(&app);
    // A site's sign-in page is a redirect to the portal, with a state cookie.
    let r = b.get(app.url("/.sesame/login?rd=/a")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let to = location(&r);
    assert!(
        to.starts_with(&format!("{}/.sesame/authorize?", portal(&app))),
        "{to}"
    );
    assert_eq!(query_param(&to, "site").as_deref(), Some("Test app"));
    assert_eq!(query_param(&to, "rd").unwrap(), app.url("/a"));
    assert!(cookies_set(&r).contains_key("sesame_handoff"));
    // The pages go to the portal, the ceremonies are not served.
    let r = b.get(app.url("/.sesame/account")).send().await.unwrap();
    assert_eq!(location(&r), format!("{}/.sesame/account", portal(&app)));
    for path in [
        "/.sesame/login",
        "/.sesame/code",
        "/.sesame/passkey/login/start",
    ] {
        let r = b
            .post(app.url(path))
            .header("Origin", &app.base)
            .form(&[("email", "ada@example.com")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    assert_eq!(app.mail.count_to("ada@example.com"), 0);
    // The portal has no app behind it; its root is the account page.
    let r = b.get(portal(&app)).send().await.unwrap();
    assert_eq!(location(&r), format!("{}/.sesame/account", portal(&app)));
    let r = b
        .get(format!("{}/anything", portal(&app)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(app.upstream.seen().is_empty());
    // Forward-auth knows nothing of the portal's host.
    let r = browser()
        .get(app.url("/.sesame/auth"))
        .header("Host", portal(&app).trim_start_matches("http://"))
        .header(
            "X-Forwarded-Host",
            portal(&app).trim_start_matches("http://"),
        )
        .header("X-Forwarded-Uri", "/")
        .header("X-Forwarded-Method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The portal refuses a handoff to a site it does not know, or without
    // a proper state.
    for query in [
        "site=Nope&state=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "site=Test+app&state=short",
        "site=Test+app",
    ] {
        let r = b
            .get(format!("{}/.sesame/authorize?{query}", portal(&app)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rd_stays_on_configured_sites_across_the_handoff_for_the_whole_corpus() {
    let app = spawn_portal().await;
    let b = browser_for(&app);
    let ours = [app.base.clone(), other_site(&app), portal(&app)];
    let corpus = include_str!("../data/openredirects.txt");
    let mut n = 0;
    for line in corpus.lines() {
        let start: String = url::form_urlencoded::Serializer::new(app.url("/.sesame/login?"))
            .append_pair("rd", line)
            .finish();
        let r = b.get(&start).send().await.unwrap();
        let to = location(&r);
        let rd = query_param(&to, "rd").unwrap();
        let origin = url::Url::parse(&rd).unwrap().origin().ascii_serialization();
        assert!(ours.contains(&origin), "{line:?} -> {rd}");
        n += 1;
    }
    assert_eq!(n, 559);
    // And the whole way, for the classic forms given to the portal itself.
    let code = sign_in_until_handoff(&app, &b, "ada@example.com", &app.url("/")).await;
    b.get(&code).send().await.unwrap();
    for evil in [
        "//evil.com",
        "/\\evil.com",
        "https:evil.com",
        "https://evil.com/",
    ] {
        // A state this browser holds: a fresh one from the site.
        let r = b.get(app.url("/.sesame/login")).send().await.unwrap();
        let state = query_param(&location(&r), "state").unwrap();
        let authorize: String =
            url::form_urlencoded::Serializer::new(format!("{}/.sesame/authorize?", portal(&app)))
                .append_pair("site", "Test app")
                .append_pair("state", &state)
                .append_pair("rd", evil)
                .finish();
        let (_, seen) = follow_until(&b, &authorize, Some(&app.url("/.sesame/handoff"))).await;
        let r = b.get(seen.last().unwrap()).send().await.unwrap();
        assert_eq!(r.status(), 303, "{evil}");
        assert_eq!(location(&r), app.url("/"), "{evil}");
    }
}

/// POST JSON to the portal, from the portal's own pages.
async fn portal_json(
    app: &TestApp,
    b: &reqwest::Client,
    path: &str,
    body: &serde_json::Value,
) -> reqwest::Response {
    b.post(format!("{}{path}", portal(app)))
        .header("Origin", portal(app))
        .json(body)
        .send()
        .await
        .unwrap()
}

store_tests! {
    async fn a_site_that_needs_a_passkey_sends_the_browser_to_step_up_on_the_portal() {
        use webauthn_authenticator_rs::prelude::WebauthnAuthenticator;
        use webauthn_authenticator_rs::softpasskey::SoftPasskey;
        let app = spawn_with(Options {
            // Passkeys over plain http work on `localhost` only.
            portal: Some("localhost"),
            site0_host: "wiki.localhost",
            site0: "require_passkey = true".into(),
            ..Options::default()
        })
        .await;
        let b = browser_for(&app);
        let origin = url::Url::parse(&portal(&app)).unwrap();
        // Signed in by email through the site without the requirement.
        let code = sign_in_until_handoff(&app, &b, "pia@example.com", &other_site(&app)).await;
        b.get(&code).send().await.unwrap();
        // A passkey made on the portal (rp_id = its host).
        let mut key = SoftPasskey::new(true);
        let r = portal_json(&app, &b, "/.sesame/passkey/register/start", &serde_json::json!({})).await;
        assert_eq!(r.status(), 200);
        let cred = key.do_registration(origin.clone(), r.json().await.unwrap()).unwrap();
        let r = portal_json(&app, &b, "/.sesame/passkey/register/finish", &serde_json::to_value(&cred).unwrap()).await;
        assert_eq!(r.status(), 201);

        // The site that needs one: to the portal's step-up page.
        let start = app.url("/vault");
        let (page, seen) = follow_until(&b, &start, None).await;
        assert_eq!(page.status(), 200);
        let stepup = seen.last().unwrap();
        assert!(stepup.starts_with(&format!("{}/.sesame/stepup?rd=", portal(&app))), "{seen:?}");
        let back = query_param(stepup, "rd").unwrap();
        assert!(back.contains("passkey=1"), "{back}");
        // The passkey, on the portal; then on by itself to the site.
        let r = portal_json(&app, &b, "/.sesame/passkey/login/start", &serde_json::json!({"email": "pia@example.com", "rd": back})).await;
        assert_eq!(r.status(), 200);
        let assertion = key.do_authentication(origin, r.json().await.unwrap()).unwrap();
        let r = portal_json(&app, &b, "/.sesame/passkey/login/finish", &serde_json::to_value(&assertion).unwrap()).await;
        assert_eq!(r.status(), 200);
        let redirect = r.json::<serde_json::Value>().await.unwrap()["redirect"].as_str().unwrap().to_string();
        assert_eq!(redirect, back);
        let (page, seen) = follow_until(&b, &redirect, None).await;
        assert_eq!(page.status(), 200, "{seen:?}");
        assert_eq!(seen.last().unwrap(), &start);
        assert_eq!(app.upstream.last().header("sesame-auth-method").as_deref(), Some("passkey"));
        // A site's own origin cannot run a ceremony.
        let r = b
            .post(app.url("/.sesame/passkey/login/start"))
            .header("Origin", &app.base)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
}
