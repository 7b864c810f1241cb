//! Sign-in approved on another device: the laptop asks, the phone opens the
//! link from the email and approves with the laptop's number, the laptop
//! continues by itself. Every outcome, on both stores.

use crate::helpers::*;
use std::time::{Duration, Instant};

pub(crate) const FIREFOX_LINUX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
pub(crate) const CHROME_ANDROID: &str =
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 \
     (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36";

/// A browser with this User-Agent, patient enough for a held wait.
pub(crate) fn browser_as(user_agent: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent)
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap()
}

struct Asked {
    mail: Mail,
    /// The number "check your email" shows.
    number: String,
}

/// Ask for a link in `laptop`; the mail and the number its page shows.
async fn ask(app: &TestApp, laptop: &reqwest::Client, email: &str, rd: &str) -> Asked {
    let seen = app.mail.count_to(email);
    let r = app
        .post_form(laptop, "/.sesame/login", &[("email", email), ("rd", rd)])
        .await;
    assert_eq!(r.status(), 200);
    // The link's 15 minutes, and 2 more to collect an approval made late.
    assert!(set_cookie_has(&r, "sesame_pending", "Max-Age=1020"));
    let page = r.text().await.unwrap();
    let number = number_on(&page).expect("check your email shows a number");
    let mail = app.mail.wait_for_subject(email, seen, "Sign in to").await;
    Asked { mail, number }
}

/// A page that asks for the number to be typed, without showing it (the
/// approving device must read it off the asking one).
pub(crate) fn asks_for_the_number(page: &str, number: &str) -> bool {
    page.contains("name=\"number\"")
        && page.contains("inputmode=\"numeric\"")
        && !page.contains(&format!(">{number}<"))
        && !page.contains(&format!("value=\"{number}\""))
}

/// A two-digit number that is not `n`.
pub(crate) fn another(n: &str) -> String {
    if n == "10" {
        "11".into()
    } else {
        "10".into()
    }
}

/// What an HTML mail shows: without its style sheet and tags, entities
/// read.
fn shown_text(html: &str) -> String {
    let mut rest = html;
    let mut out = String::new();
    if let (Some(a), Some(b)) = (rest.find("<style"), rest.find("</style>")) {
        out.push_str(&rest[..a]);
        rest = &rest[b + "</style>".len()..];
    }
    out.push_str(rest);
    let mut text = String::new();
    let mut in_tag = false;
    for c in out.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.replace("&#x2f;", "/")
        .replace("&#x3d;", "=")
        .replace("&#x3D;", "=")
        .replace("&amp;", "&")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
}

pub(crate) async fn wait(app: &TestApp, b: &reqwest::Client) -> serde_json::Value {
    let r = b.get(app.url("/.sesame/login/wait")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    r.json().await.unwrap()
}

/// Open the link in `phone`: the confirm page.
async fn open(phone: &reqwest::Client, asked: &Asked) -> String {
    let r = phone.get(asked.mail.link()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

async fn pick(app: &TestApp, phone: &reqwest::Client, asked: &Asked, n: &str) -> reqwest::Response {
    app.post_form(
        phone,
        "/.sesame/magic/approve",
        &[("token", &asked.mail.token()), ("number", n)],
    )
    .await
}

fn cross_device(metrics: &str, result: &str) -> f64 {
    cross_device_of(metrics, "email", result)
}

pub(crate) fn cross_device_of(metrics: &str, kind: &str, result: &str) -> f64 {
    TestApp::metric(
        metrics,
        &format!("sesame_cross_device_total{{kind=\"{kind}\",result=\"{result}\"}}"),
    )
}

store_tests! {
async fn approving_on_another_device_signs_the_asking_browser_in() {
    let app = spawn().await;
    let laptop = browser_as(FIREFOX_LINUX);
    let phone = browser_as(CHROME_ANDROID);
    let asked = ask(&app, &laptop, "ada@example.com", "/dashboard").await;
    let n: u8 = asked.number.parse().unwrap();
    assert!((10..=99).contains(&n), "{n}");

    // The number is only on the asking page: the email never has it. Its
    // text, without the link and the code, has one two-digit number, the
    // link's lifetime; so has what the HTML part shows (its styles, tags
    // and the link's address left out).
    let (link, code) = (asked.mail.link(), asked.mail.code());
    let two_digits = |text: &str| -> Vec<String> {
        text.replace(&link, "")
            .replace(&code, "")
            .split(|c: char| !c.is_ascii_digit())
            .filter(|w| w.len() == 2)
            .map(String::from)
            .collect()
    };
    assert_eq!(two_digits(&asked.mail.text), ["15"], "{}", asked.mail.text);
    let shown = shown_text(&asked.mail.html);
    assert_eq!(two_digits(&shown), ["15"], "{shown}");

    // The phone sees who asked, and is asked to type the laptop's number.
    let page = open(&phone, &asked).await;
    assert!(page.contains("Firefox on Linux"), "{page}");
    assert!(page.contains("127.0.0.x"), "{page}");
    assert!(page.contains("just now"), "{page}");
    assert!(page.contains("Sign in on this device"));
    assert!(page.contains("This wasn&#x27;t me") || page.contains("This wasn't me"));
    assert!(asks_for_the_number(&page, &asked.number), "{page}");

    // The laptop waits; the phone approves; the laptop hears at once.
    let waiting = held_wait(&laptop, app.url("/.sesame/login/wait"));
    let sent = Instant::now();
    let r = pick(&app, &phone, &asked, &asked.number).await;
    assert_eq!(r.status(), 200);
    assert!(cookies_set(&r).keys().all(|k| !k.starts_with("sesame")), "the phone gets no session");
    assert!(r.text().await.unwrap().contains("Sign-in approved"));
    let (state, heard_at) = waiting.await.unwrap();
    assert_eq!(state["state"], "approved", "{state}");
    assert_eq!(state["continue"], "/.sesame/login/continue");
    println!(
        "from the phone's approval sent to the waiting browser's answer: {:?}",
        heard_at.saturating_duration_since(sent)
    );

    // The laptop continues into the app with a fresh session; the phone
    // stays signed out.
    let r = laptop.get(app.url("/.sesame/login/continue")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], app.url("/dashboard").as_str());
    assert!(cookies_set(&r).contains_key("sesame"));
    let r = laptop.get(app.url("/dashboard")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.upstream.last().header("remote-email").as_deref(), Some("ada@example.com"));
    assert_eq!(phone.get(app.url("/dashboard")).send().await.unwrap().status(), 401);

    // Once: no second session from the approval, and the link is spent.
    let r = laptop.get(app.url("/.sesame/login/continue")).send().await.unwrap();
    assert_eq!(r.status(), 400, "the pending cookie went with the sign-in");
    let r = app
        .post_form(&phone, "/.sesame/magic", &[("token", &asked.mail.token())])
        .await;
    assert_eq!(r.status(), 410);
    let r = pick(&app, &phone, &asked, &asked.number).await;
    assert_eq!(r.status(), 410);

    let m = app.metrics().await;
    assert_eq!(cross_device(&m, "approved"), 1.0);
    assert_eq!(cross_device(&m, "wrong_number"), 0.0);
    assert_eq!(TestApp::metric(&m, "sesame_sessions_created_total"), 1.0);
}

async fn a_wrong_number_cancels_the_sign_in_for_good() {
    let app = spawn().await;
    let laptop = browser_as(FIREFOX_LINUX);
    let phone = browser_as(CHROME_ANDROID);
    let asked = ask(&app, &laptop, "bob@example.com", "/").await;
    assert!(asks_for_the_number(&open(&phone, &asked).await, &asked.number));
    let r = pick(&app, &phone, &asked, &another(&asked.number)).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("Sign-in cancelled"));

    let state = wait(&app, &laptop).await;
    assert_eq!(state["state"], "cancelled", "{state}");
    assert_eq!(state["reason"], "wrong_number");
    let r = laptop.get(app.url("/.sesame/login/continue")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("This sign-in was cancelled"));
    // Nothing else can use it: not the right number now, not the link,
    // not the code in the asking browser.
    assert_eq!(pick(&app, &phone, &asked, &asked.number).await.status(), 403);
    let r = app
        .post_form(&phone, "/.sesame/magic", &[("token", &asked.mail.token())])
        .await;
    assert_eq!(r.status(), 410);
    let r = app
        .post_form(&laptop, "/.sesame/code", &[("code", &asked.mail.code())])
        .await;
    assert_eq!(r.status(), 410);
    assert_eq!(laptop.get(app.url("/x")).send().await.unwrap().status(), 401);

    // Anything that is not the number cancels too.
    let again = ask(&app, &laptop, "bob@example.com", "/").await;
    assert_eq!(pick(&app, &phone, &again, "not a number").await.status(), 403);
    assert_eq!(wait(&app, &laptop).await["reason"], "wrong_number");

    let m = app.metrics().await;
    assert_eq!(cross_device(&m, "wrong_number"), 2.0);
    assert_eq!(cross_device(&m, "approved"), 0.0);
    assert_eq!(TestApp::metric(&m, "sesame_sessions_created_total"), 0.0);
}

async fn this_wasnt_me_cancels_it_and_says_so_on_the_asking_page() {
    let app = spawn().await;
    let laptop = browser_as(FIREFOX_LINUX);
    let phone = browser_as(CHROME_ANDROID);
    let asked = ask(&app, &laptop, "cy@example.com", "/").await;
    let r = app
        .post_form(&phone, "/.sesame/magic/deny", &[("token", &asked.mail.token())])
        .await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("Nobody was signed in"));
    let state = wait(&app, &laptop).await;
    assert_eq!((state["state"].as_str(), state["reason"].as_str()), (Some("cancelled"), Some("denied")));
    // Opening the link again says it was cancelled.
    let r = phone.get(asked.mail.link()).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(pick(&app, &phone, &asked, &asked.number).await.status(), 403);
    let m = app.metrics().await;
    assert_eq!(cross_device(&m, "cancelled"), 1.0);
    assert_eq!(TestApp::metric(&m, "sesame_sessions_created_total"), 0.0);
}

async fn approvals_and_the_link_race_to_one_outcome() {
    let app = spawn().await;
    let laptop = browser_as(FIREFOX_LINUX);
    let asked = ask(&app, &laptop, "dee@example.com", "/").await;
    // Four phones approve at once, and two click "Sign in on this device".
    let phones: Vec<reqwest::Client> = (0..6).map(|_| browser_as(CHROME_ANDROID)).collect();
    let token = asked.mail.token();
    let racers: Vec<_> = phones
        .iter()
        .enumerate()
        .map(|(i, phone)| {
            let (phone, token, number) = (phone.clone(), token.clone(), asked.number.clone());
            let (base, url) = (app.base.clone(), app.url(if i < 4 { "/.sesame/magic/approve" } else { "/.sesame/magic" }));
            tokio::spawn(async move {
                let form: Vec<(&str, &str)> = if i < 4 {
                    vec![("token", &token), ("number", &number)]
                } else {
                    vec![("token", &token)]
                };
                let r = phone.post(url).header("Origin", base).form(&form).send().await.unwrap();
                (i, r.status().as_u16())
            })
        })
        .collect();
    let mut won = vec![];
    for r in racers {
        let (i, status) = r.await.unwrap();
        if status == 200 || status == 303 {
            won.push(i);
        } else {
            assert_eq!(status, 410, "racer {i}");
        }
    }
    assert_eq!(won.len(), 1, "one decision wins: {won:?}");
    let state = wait(&app, &laptop).await;
    let r = laptop.get(app.url("/.sesame/login/continue")).send().await.unwrap();
    let signed_in_elsewhere = phones[won[0]].get(app.url("/x")).send().await.unwrap().status() == 200;
    if won[0] < 4 {
        assert_eq!(state["state"], "approved");
        assert_eq!(r.status(), 303);
        assert!(!signed_in_elsewhere);
    } else {
        assert_eq!(state["state"], "used");
        assert_eq!(r.status(), 410);
        assert!(signed_in_elsewhere);
    }
    let m = app.metrics().await;
    assert_eq!(TestApp::metric(&m, "sesame_sessions_created_total"), 1.0);
}

async fn an_address_that_may_not_sign_in_gets_the_same_page_with_a_number() {
    let app = spawn_with(Options { signup: "closed", ..Default::default() }).await;
    let laptop = browser_as(FIREFOX_LINUX);
    let r = app
        .post_form(&laptop, "/.sesame/login", &[("email", "nobody@example.com"), ("rd", "/")])
        .await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let n: u8 = number_on(&page).unwrap().parse().unwrap();
    assert!((10..=99).contains(&n));
    assert!(page.contains("/.sesame/login/wait"));
}

async fn waiting_is_limited_per_client_and_needs_the_asking_browser() {
    let app = spawn_with(Options { waits_per_minute: 2, ..Default::default() }).await;
    app.window_left_at_least(Duration::from_secs(60), Duration::from_secs(20));
    let stranger = browser_as(FIREFOX_LINUX);
    // No sign-in asked in this browser: nothing to wait for.
    assert_eq!(wait(&app, &stranger).await["state"], "none");
    let r = stranger.get(app.url("/.sesame/login/continue")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(wait(&app, &stranger).await["state"], "none");
    let r = stranger.get(app.url("/.sesame/login/wait")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
}

async fn an_approval_after_the_link_expired_is_refused_and_counted() {
    let app = spawn().await;
    let laptop = browser_as(FIREFOX_LINUX);
    let phone = browser_as(CHROME_ANDROID);
    let asked = ask(&app, &laptop, "eve@example.com", "/").await;
    app.clock.advance(Duration::from_secs(16 * 60));
    assert_eq!(pick(&app, &phone, &asked, &asked.number).await.status(), 410);
    assert_eq!(wait(&app, &laptop).await["state"], "expired");
    let m = app.metrics().await;
    assert_eq!(cross_device(&m, "expired"), 1.0);
    assert_eq!(cross_device(&m, "approved"), 0.0);
}

async fn without_javascript_the_asking_page_refreshes_into_the_app() {
    let app = spawn().await;
    let laptop = browser_as(FIREFOX_LINUX);
    let phone = browser_as(CHROME_ANDROID);
    let r = app
        .post_form(&laptop, "/.sesame/login", &[("email", "fay@example.com"), ("rd", "/inbox")])
        .await;
    let page = r.text().await.unwrap();
    assert!(
        page.contains("<noscript><meta http-equiv=\"refresh\" content=\"30;url=/.sesame/login/continue\"></noscript>"),
        "{page}"
    );
    let number = number_on(&page).unwrap();
    let mail = app.mail.wait_for_subject("fay@example.com", 0, "Sign in to").await;
    // Before the approval, the refresh shows the same page and number.
    let r = laptop.get(app.url("/.sesame/login/continue")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let again = r.text().await.unwrap();
    assert_eq!(number_on(&again), Some(number.clone()));
    assert!(again.contains("fay@example.com"));
    let asked = Asked { mail, number };
    assert_eq!(pick(&app, &phone, &asked, &asked.number).await.status(), 200);
    let r = laptop.get(app.url("/.sesame/login/continue")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], app.url("/inbox").as_str());
}
}
