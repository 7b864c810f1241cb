//! "New sign-in to SITE from BROWSER": an account signed in from a browser
//! it has not used before hears of it by email (`[auth] notify_new_device`).

use crate::cross_device::{browser_as, CHROME_ANDROID, FIREFOX_LINUX};
use crate::helpers::*;

fn notices(metrics: &str) -> f64 {
    TestApp::metric(metrics, "sesame_new_browser_notices_total")
}

store_tests! {
async fn a_sign_in_from_a_browser_the_account_has_not_used_is_announced() {
    let app = spawn().await;
    let laptop = browser_as(FIREFOX_LINUX);
    // The account's first browser: nothing to compare with, no notice.
    let r = app.sign_in(&laptop, "gus@example.com").await;
    assert!(cookies_set(&r).contains_key("sesame_browser"));
    assert_eq!(notices(&app.metrics().await), 0.0);
    // The same browser again: known.
    let r = app.sign_in(&laptop, "gus@example.com").await;
    assert!(!cookies_set(&r).contains_key("sesame_browser"), "kept, not replaced");
    assert_eq!(notices(&app.metrics().await), 0.0);

    // Another browser: announced, with where to look.
    let phone = browser_as(CHROME_ANDROID);
    let seen = app.mail.count_to("gus@example.com");
    app.sign_in(&phone, "gus@example.com").await;
    assert_eq!(notices(&app.metrics().await), 1.0);
    let notice = app
        .mail
        .wait_for_subject("gus@example.com", seen, "New sign-in to Test app")
        .await;
    assert_eq!(notice.subject, "New sign-in to Test app from Chrome on Android");
    assert!(notice.text.contains("Chrome on Android"), "{}", notice.text);
    assert!(notice.text.contains("127.0.0.1"), "{}", notice.text);
    assert!(notice.text.contains(&app.url("/.sesame/account")), "{}", notice.text);
    assert!(notice.html.contains("your account page"));
    // Known from now on; and another account in the same browser is that
    // account's first.
    app.sign_in(&phone, "gus@example.com").await;
    app.sign_in(&phone, "hal@example.com").await;
    assert_eq!(notices(&app.metrics().await), 1.0);

    // The browser cookie is Sesame's: the app never sees it.
    assert_eq!(laptop.get(app.url("/x")).send().await.unwrap().status(), 200);
    let cookie = app.upstream.last().header("cookie").unwrap_or_default();
    assert!(!cookie.contains("sesame_browser"), "{cookie}");
}

async fn a_browser_without_cookies_is_new_each_time_and_notices_can_be_off() {
    let app = spawn().await;
    app.sign_in(&browser(), "ivy@example.com").await;
    // A client that keeps no cookies (a script, a private window) is a new
    // browser every time.
    app.sign_in(&browser(), "ivy@example.com").await;
    app.sign_in(&browser(), "ivy@example.com").await;
    assert_eq!(notices(&app.metrics().await), 2.0);

    let quiet = spawn_with(Options { notify_new_device: false, ..Default::default() }).await;
    quiet.sign_in(&browser(), "ivy@example.com").await;
    let r = quiet.sign_in(&browser(), "ivy@example.com").await;
    assert!(!cookies_set(&r).contains_key("sesame_browser"));
    assert_eq!(notices(&quiet.metrics().await), 0.0);
}
}
