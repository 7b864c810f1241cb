//! The emailed code: only in the asking browser, few attempts.

use crate::helpers::*;

store_tests! {
async fn code_signs_in_the_asking_browser() {
    let app = spawn().await;
    let b = browser();
    let mail = app.ask_link(&b, "cody@example.com", "/after-code").await;
    let r = app
        .post_form(&b, "/.sesame/code", &[("code", &mail.code())])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], app.url("/after-code").as_str());
    assert_eq!(
        b.get(app.url("/after-code")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        app.upstream.last().header("sesame-auth-method").as_deref(),
        Some("code")
    );
    // The link of the same email is spent too: one email, one sign-in.
    let r = app
        .post_form(&browser(), "/.sesame/magic", &[("token", &mail.token())])
        .await;
    assert_eq!(r.status(), 410);
}

async fn code_is_refused_in_another_browser() {
    let app = spawn().await;
    let mail = app.ask_link(&browser(), "cody2@example.com", "/").await;
    let other = browser();
    let r = app
        .post_form(&other, "/.sesame/code", &[("code", &mail.code())])
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("only in the browser"));
    assert_eq!(other.get(app.url("/x")).send().await.unwrap().status(), 401);
}

async fn a_code_works_only_on_the_site_that_sent_it() {
    let app = spawn().await;
    // No cookie jar: the pending cookie is carried by hand, as a sibling
    // host under a shared domain could plant it for another site.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let seen = app.mail.count_to("sited@example.com");
    let r = app
        .post_form(&plain, "/.sesame/login", &[("email", "sited@example.com")])
        .await;
    assert_eq!(r.status(), 200);
    let pending = format!("sesame_pending={}", cookies_set(&r)["sesame_pending"]);
    let code = app.mail.wait_for("sited@example.com", seen).await.code();
    let post_code = |base: String| {
        plain
            .post(format!("{base}/.sesame/code"))
            .header("Origin", &base)
            .header("Cookie", &pending)
            .form(&[("code", &code)])
            .send()
    };
    // "Other app" is served by the same gateway at 127.0.0.1. As many
    // tries as a code has attempts (5):
    for _ in 0..5 {
        let r = post_code(format!("http://127.0.0.1:{}", app.port))
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert!(!cookies_set(&r).contains_key("sesame"));
        assert!(r.text().await.unwrap().contains("only in the browser"));
    }
    // Nothing lost, no attempt used up: the code still signs in on its own
    // site.
    let r = post_code(app.base.clone()).await.unwrap();
    assert_eq!(r.status(), 303);
    assert!(cookies_set(&r).contains_key("sesame"));
}

async fn wrong_codes_lock_the_code_out() {
    let app = spawn().await;
    let b = browser();
    let mail = app.ask_link(&b, "guess@example.com", "/").await;
    let right = mail.code();
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    for left in (0..5).rev() {
        let r = app.post_form(&b, "/.sesame/code", &[("code", wrong)]).await;
        assert_eq!(r.status(), 400);
        assert!(r
            .text()
            .await
            .unwrap()
            .contains(&format!("{left} attempt(s) left")));
    }
    let r = app
        .post_form(&b, "/.sesame/code", &[("code", &right)])
        .await;
    assert_eq!(r.status(), 410, "locked out even with the right code");
    assert_eq!(b.get(app.url("/x")).send().await.unwrap().status(), 401);
    let r = app
        .post_form(&b, "/.sesame/code", &[("code", "12ab")])
        .await;
    assert_eq!(r.status(), 400);
}

async fn an_address_gets_twenty_code_tries_a_day_over_all_its_logins() {
    // Each pending login allows 5 tries, and a new one is a POST away:
    // without a budget per address that is 2,400 guesses a day.
    let app = spawn().await;
    let two_minutes = std::time::Duration::from_secs(120);
    app.window_left_at_least(ONE_DAY, two_minutes);
    app.window_left_at_least(FIFTEEN_MINUTES, two_minutes);
    let b = browser();
    let wrong_for = |right: &str| if right == "000000" { "111111" } else { "000000" }.to_string();
    for _ in 0..4 {
        let mail = app.ask_link(&b, "target@example.com", "/").await;
        let wrong = wrong_for(&mail.code());
        for _ in 0..5 {
            let r = app.post_form(&b, "/.sesame/code", &[("code", &wrong)]).await;
            assert_eq!(r.status(), 400);
        }
    }
    let mail = app.ask_link(&b, "target@example.com", "/").await;
    let r = app
        .post_form(&b, "/.sesame/code", &[("code", &mail.code())])
        .await;
    assert_eq!(r.status(), 429, "the 21st code of the day is not even compared");
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.text().await.unwrap().contains("The link in the email still works"));
    assert_eq!(b.get(app.url("/x")).send().await.unwrap().status(), 401);
    let r = app
        .post_form(&b, "/.sesame/magic", &[("token", &mail.token())])
        .await;
    assert_eq!(r.status(), 303, "the link still works");
    assert_eq!(b.get(app.url("/x")).send().await.unwrap().status(), 200);
    // Another address has its own budget.
    let other = browser();
    let mail = app.ask_link(&other, "bystander@example.com", "/").await;
    let r = app
        .post_form(&other, "/.sesame/code", &[("code", &mail.code())])
        .await;
    assert_eq!(r.status(), 303);
    let m = app.metrics().await;
    assert_eq!(TestApp::metric(&m, "sesame_rate_limited_total{key=\"code\"}"), 1.0);
}

async fn code_expires_with_the_link() {
    let app = spawn().await;
    let b = browser();
    let mail = app.ask_link(&b, "late@example.com", "/").await;
    app.clock.advance(std::time::Duration::from_secs(16 * 60));
    let r = app
        .post_form(&b, "/.sesame/code", &[("code", &mail.code())])
        .await;
    assert_eq!(r.status(), 410);
}
}
