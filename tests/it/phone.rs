//! "Sign in with your phone": the laptop shows a QR code, a short code and a
//! number; a phone signed in already opens the code, sees who asked, picks
//! the number, and the laptop continues signed in as the phone's account.
//! No email. Every outcome, on both stores.

use std::time::{Duration, Instant};

use crate::cross_device::{
    another, asks_for_the_number, browser_as, cross_device_of, wait, CHROME_ANDROID, FIREFOX_LINUX,
};
use crate::helpers::*;

struct Shown {
    /// The short code, as the page shows it (`WDJB-MJHT`).
    code: String,
    number: String,
    page: String,
}

fn user_code_on(page: &str) -> Option<String> {
    let at = page.find("class=\"user-code\"")?;
    let rest = &page[at..];
    let text = &rest[rest.find('>')? + 1..];
    Some(text[..text.find('<')?].trim().to_string())
}

/// The laptop asks to be signed in by a phone, going on to `rd`.
async fn ask_by_phone(app: &TestApp, laptop: &reqwest::Client, rd: &str) -> Shown {
    let r = app
        .post_form(laptop, "/.sesame/login/phone", &[("rd", rd)])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/.sesame/login/phone");
    // The cookie outlives the 5-minute request by the 2 minutes an
    // approval made at its end may still be collected in.
    assert!(set_cookie_has(&r, "sesame_pending", "Max-Age=420"));
    let r = laptop
        .get(app.url("/.sesame/login/phone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    Shown {
        code: user_code_on(&page).expect("the page shows a code"),
        number: number_on(&page).expect("the page shows a number"),
        page,
    }
}

async fn open(app: &TestApp, phone: &reqwest::Client, code: &str) -> reqwest::Response {
    phone
        .get(app.url(&format!("/.sesame/device?code={code}")))
        .send()
        .await
        .unwrap()
}

async fn pick(app: &TestApp, phone: &reqwest::Client, code: &str, n: &str) -> reqwest::Response {
    app.post_form(
        phone,
        "/.sesame/device/approve",
        &[("code", code), ("number", n)],
    )
    .await
}

/// A phone signed in by email as `email`.
async fn signed_in_phone(app: &TestApp, email: &str) -> reqwest::Client {
    let phone = browser_as(CHROME_ANDROID);
    app.sign_in(&phone, email).await;
    phone
}

store_tests! {
async fn a_signed_in_phone_approves_the_browser_showing_the_code() {
    let app = spawn().await;
    let laptop = browser_as(FIREFOX_LINUX);
    let phone = signed_in_phone(&app, "ada@example.com").await;
    let seen_mail = app.mail.all().len();
    let shown = ask_by_phone(&app, &laptop, "/dashboard").await;

    // The QR code holds the approval page's address with the code.
    assert!(shown.page.contains("<svg"), "{}", shown.page);
    assert!(!shown.page.contains("<?xml"));
    assert_eq!(shown.code.len(), 9, "{}", shown.code);
    let n: u8 = shown.number.parse().unwrap();
    assert!((10..=99).contains(&n));
    // Reloading shows the same request.
    let again = laptop.get(app.url("/.sesame/login/phone")).send().await.unwrap();
    let again = again.text().await.unwrap();
    assert_eq!((user_code_on(&again), number_on(&again)), (Some(shown.code.clone()), Some(shown.number.clone())));

    // The phone opens it (typed in lower case, without the dash: the same).
    let typed = shown.code.to_lowercase().replace('-', "");
    let r = open(&app, &phone, &typed).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let page = r.text().await.unwrap();
    assert!(page.contains("Firefox on Linux"), "{page}");
    assert!(page.contains("127.0.0.x"));
    assert!(page.contains("ada@example.com"));
    assert!(asks_for_the_number(&page, &shown.number), "{page}");

    let waiting = held_wait(&laptop, app.url("/.sesame/login/wait"));
    let sent = Instant::now();
    let r = pick(&app, &phone, &shown.code, &shown.number).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Sign-in approved"));
    let (state, heard_at) = waiting.await.unwrap();
    assert_eq!(state["state"], "approved", "{state}");
    println!("approved by the phone, heard by the laptop after {:?}", heard_at.saturating_duration_since(sent));

    let r = laptop.get(app.url("/.sesame/login/continue")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert!(cookies_set(&r).contains_key("sesame"));
    let to = r.headers()["location"].to_str().unwrap().to_string();
    assert!(to.ends_with("/dashboard") || to.ends_with("%2Fdashboard"), "{to}");
    assert_eq!(laptop.get(app.url("/dashboard")).send().await.unwrap().status(), 200);
    let seen = app.upstream.last();
    assert_eq!(seen.header("remote-email").as_deref(), Some("ada@example.com"));
    // Signed in as the phone's session was: by email.
    assert_eq!(seen.header("sesame-auth-method").as_deref(), Some("magic_link"));

    // Once: not collected twice, not approved twice, no mail sent.
    assert_eq!(laptop.get(app.url("/.sesame/login/continue")).send().await.unwrap().status(), 400);
    assert_eq!(pick(&app, &phone, &shown.code, &shown.number).await.status(), 410);
    assert_eq!(open(&app, &phone, &shown.code).await.status(), 410);
    assert_eq!(app.mail.all().len(), seen_mail, "no email involved");
    let m = app.metrics().await;
    assert_eq!(cross_device_of(&m, "qr", "approved"), 1.0);
    assert_eq!(TestApp::metric(&m, "sesame_sessions_created_total"), 2.0);
}

async fn a_wrong_number_or_this_wasnt_me_cancels_it_for_good() {
    let app = spawn().await;
    let laptop = browser_as(FIREFOX_LINUX);
    let phone = signed_in_phone(&app, "bob@example.com").await;
    let shown = ask_by_phone(&app, &laptop, "/").await;
    let page = open(&app, &phone, &shown.code).await.text().await.unwrap();
    assert!(asks_for_the_number(&page, &shown.number), "{page}");
    let wrong = another(&shown.number);
    let r = pick(&app, &phone, &shown.code, &wrong).await;
    assert_eq!(r.status(), 403);
    let state = wait(&app, &laptop).await;
    assert_eq!((state["state"].as_str(), state["reason"].as_str()), (Some("cancelled"), Some("wrong_number")));
    assert_eq!(pick(&app, &phone, &shown.code, &shown.number).await.status(), 403);
    assert_eq!(laptop.get(app.url("/.sesame/login/continue")).send().await.unwrap().status(), 403);
    assert_eq!(laptop.get(app.url("/x")).send().await.unwrap().status(), 401);

    let shown = ask_by_phone(&app, &laptop, "/").await;
    let r = app.post_form(&phone, "/.sesame/device/deny", &[("code", &shown.code)]).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("Nobody was signed in"));
    assert_eq!(wait(&app, &laptop).await["reason"], "denied");
    let m = app.metrics().await;
    assert_eq!(cross_device_of(&m, "qr", "wrong_number"), 1.0);
    assert_eq!(cross_device_of(&m, "qr", "cancelled"), 1.0);
    assert_eq!(cross_device_of(&m, "qr", "approved"), 0.0);
}

async fn only_a_signed_in_device_can_open_or_decide_a_code() {
    let app = spawn().await;
    let laptop = browser_as(FIREFOX_LINUX);
    let shown = ask_by_phone(&app, &laptop, "/").await;
    let stranger = browser_as(CHROME_ANDROID);
    // Opening it signed out: to the login page, and back here afterwards.
    let r = open(&app, &stranger, &shown.code).await;
    assert_eq!(r.status(), 302);
    let to = r.headers()["location"].to_str().unwrap().to_string();
    assert!(to.contains("/.sesame/login?rd="), "{to}");
    assert!(to.contains("device"), "{to}");
    // Deciding it signed out decides nothing.
    let r = pick(&app, &stranger, &shown.code, &shown.number).await;
    assert_eq!(r.status(), 302);
    still_waiting(&app, &laptop, &shown).await;
    // From another site's page: refused.
    let phone = signed_in_phone(&app, "cy@example.com").await;
    let r = phone
        .post(app.url("/.sesame/device/approve"))
        .header("Origin", "https://evil.example")
        .form(&[("code", shown.code.as_str()), ("number", shown.number.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    still_waiting(&app, &laptop, &shown).await;
    // A code nobody was shown.
    let r = open(&app, &phone, "BCDF-GHJK").await;
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("That code does not work"));
    let r = open(&app, &phone, "not a code").await;
    assert_eq!(r.status(), 404);
}

async fn a_code_works_for_five_minutes() {
    let app = spawn().await;
    let laptop = browser_as(FIREFOX_LINUX);
    let phone = signed_in_phone(&app, "dee@example.com").await;
    let shown = ask_by_phone(&app, &laptop, "/").await;
    app.clock.advance(Duration::from_secs(5 * 60 + 1));
    assert_eq!(open(&app, &phone, &shown.code).await.status(), 404);
    assert_eq!(pick(&app, &phone, &shown.code, &shown.number).await.status(), 410);
    assert_eq!(wait(&app, &laptop).await["state"], "expired");
    assert_eq!(laptop.get(app.url("/.sesame/login/phone")).send().await.unwrap().status(), 410);
    let m = app.metrics().await;
    assert!(cross_device_of(&m, "qr", "expired") >= 1.0);
}

async fn approvals_from_two_phones_at_once_give_one_session() {
    let app = spawn().await;
    let laptop = browser_as(FIREFOX_LINUX);
    let mut phones = Vec::new();
    for i in 0..4 {
        phones.push(signed_in_phone(&app, &format!("p{i}@example.com")).await);
    }
    let shown = ask_by_phone(&app, &laptop, "/").await;
    let racers: Vec<_> = phones
        .iter()
        .map(|phone| {
            let (phone, base) = (phone.clone(), app.base.clone());
            let url = app.url("/.sesame/device/approve");
            let form = [("code", shown.code.clone()), ("number", shown.number.clone())];
            tokio::spawn(async move {
                phone.post(url).header("Origin", base).form(&form).send().await.unwrap().status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for r in racers {
        statuses.push(r.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 410, 410, 410]);
    let r = laptop.get(app.url("/.sesame/login/continue")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let m = app.metrics().await;
    assert_eq!(TestApp::metric(&m, "sesame_sessions_created_total"), 5.0);
    assert_eq!(cross_device_of(&m, "qr", "approved"), 1.0);
}

async fn an_account_with_a_passkey_approves_only_after_using_it() {
    let app = spawn().await;
    let laptop = browser_as(FIREFOX_LINUX);
    // Signed in on the phone by email, and a passkey added there.
    let (mut phone, _) = app.with_passkey("fay@example.com").await;
    let shown = ask_by_phone(&app, &laptop, "/").await;
    let page = open(&app, &phone.b, &shown.code).await.text().await.unwrap();
    assert!(page.contains("id=\"passkey-stepup\""), "{page}");
    assert!(!page.contains("name=\"number\""), "no number asked before the passkey: {page}");
    // An email session (a stolen one, say) cannot approve by posting.
    let r = pick(&app, &phone.b, &shown.code, &shown.number).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("Use your passkey first"));
    still_waiting(&app, &laptop, &shown).await;

    // With the passkey: the numbers, and the laptop signed in as by passkey.
    app.passkey_sign_in(&mut phone, "fay@example.com").await;
    let page = open(&app, &phone.b, &shown.code).await.text().await.unwrap();
    assert!(asks_for_the_number(&page, &shown.number), "{page}");
    assert_eq!(pick(&app, &phone.b, &shown.code, &shown.number).await.status(), 200);
    assert_eq!(laptop.get(app.url("/.sesame/login/continue")).send().await.unwrap().status(), 303);
    assert_eq!(laptop.get(app.url("/x")).send().await.unwrap().status(), 200);
    let seen = app.upstream.last();
    assert_eq!(seen.header("remote-email").as_deref(), Some("fay@example.com"));
    // The browser let in never used the passkey: its session is not a
    // fresh passkey sign-in, so it can neither approve another browser nor
    // change passkeys without a proof.
    assert_eq!(seen.header("sesame-auth-method").as_deref(), Some("magic_link"));
    let other = browser_as(FIREFOX_LINUX);
    let next = ask_by_phone(&app, &other, "/").await;
    let page = open(&app, &laptop, &next.code).await.text().await.unwrap();
    assert!(page.contains("id=\"passkey-stepup\""), "{page}");
    let r = pick(&app, &laptop, &next.code, &next.number).await;
    assert_eq!(r.status(), 403);
    still_waiting(&app, &other, &next).await;
    let r = app
        .post_form(&laptop, "/.sesame/passkey/register/start", &[])
        .await;
    assert_eq!(r.status(), 403, "no passkey change without a proof");
}

async fn codes_cannot_be_tried_at_speed() {
    let app = spawn_with(Options { anonymous_per_minute: 8, ..Default::default() }).await;
    app.window_left_at_least(Duration::from_secs(60), Duration::from_secs(20));
    // Signing in by email takes two of this client's 8 a minute; every
    // lookup of a code takes one.
    let phone = signed_in_phone(&app, "eve@example.com").await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(open(&app, &phone, "BCDF-GHJK").await.status().as_u16());
    }
    assert_eq!(statuses, [404, 404, 404, 404, 404, 404, 429, 429]);
}
}

/// The laptop's request is still undecided: its refresh shows the same code.
async fn still_waiting(app: &TestApp, laptop: &reqwest::Client, shown: &Shown) {
    let r = laptop
        .get(app.url("/.sesame/login/continue"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        user_code_on(&r.text().await.unwrap()),
        Some(shown.code.clone())
    );
}
