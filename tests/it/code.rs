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
