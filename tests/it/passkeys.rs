//! Passkeys at the protocol level: a real software authenticator
//! (webauthn-authenticator-rs SoftPasskey) against the running gateway.

use serde_json::{json, Value};
use webauthn_authenticator_rs::prelude::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{
    CreationChallengeResponse, PublicKeyCredential, RequestChallengeResponse, Url,
};

use crate::helpers::*;

pub(crate) struct Person {
    pub(crate) b: reqwest::Client,
    pub(crate) key: SoftPasskey,
}

impl TestApp {
    fn origin(&self) -> Url {
        Url::parse(&self.base).unwrap()
    }

    async fn post_json(&self, b: &reqwest::Client, path: &str, body: &Value) -> reqwest::Response {
        b.post(self.url(path))
            .header("Origin", &self.base)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Sign in by link, then add a passkey; returns the person and the passkey's JSON.
    pub(crate) async fn with_passkey(&self, email: &str) -> (Person, Value) {
        let b = browser();
        self.sign_in(&b, email).await;
        let mut key = SoftPasskey::new(true);
        let passkey = self.register(&b, &mut key).await;
        (Person { b, key }, passkey)
    }

    async fn register(&self, b: &reqwest::Client, key: &mut SoftPasskey) -> Value {
        let r = self
            .post_json(b, "/.sesame/passkey/register/start", &json!({}))
            .await;
        assert_eq!(r.status(), 200);
        let ccr: CreationChallengeResponse = r.json().await.unwrap();
        let cred = key
            .do_registration(self.origin(), ccr)
            .expect("the authenticator registers");
        let r = self
            .post_json(
                b,
                "/.sesame/passkey/register/finish",
                &serde_json::to_value(&cred).unwrap(),
            )
            .await;
        assert_eq!(r.status(), 201);
        r.json().await.unwrap()
    }

    /// Sign `p` in again with its passkey (a fresh passkey session).
    pub(crate) async fn passkey_sign_in(&self, p: &mut Person, email: &str) {
        let rcr = self.login_options(&p.b, json!({"email": email})).await;
        let assertion = p.key.do_authentication(self.origin(), rcr).unwrap();
        assert_eq!(self.finish_login(&p.b, &assertion).await.status(), 200);
    }

    /// Prove this session by a code emailed to `email` for passkey changes.
    async fn prove_by_code(&self, b: &reqwest::Client, email: &str) {
        let seen = self.mail.count_to(email);
        let r = self
            .post_json(b, "/.sesame/passkey/proof/start", &json!({}))
            .await;
        assert_eq!(r.status(), 200);
        let mail = self
            .mail
            .wait_for_subject(email, seen, "Your code to change passkeys")
            .await;
        let r = self
            .post_json(
                b,
                "/.sesame/passkey/proof/finish",
                &json!({"code": mail.code()}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }

    async fn login_options(&self, b: &reqwest::Client, body: Value) -> RequestChallengeResponse {
        let r = self
            .post_json(b, "/.sesame/passkey/login/start", &body)
            .await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    async fn finish_login(
        &self,
        b: &reqwest::Client,
        assertion: &PublicKeyCredential,
    ) -> reqwest::Response {
        self.post_json(
            b,
            "/.sesame/passkey/login/finish",
            &serde_json::to_value(assertion).unwrap(),
        )
        .await
    }
}

store_tests! {
async fn register_sign_out_and_sign_in_with_the_passkey_email_first() {
    let app = spawn().await;
    let (mut p, passkey) = app.with_passkey("pia@example.com").await;
    assert_eq!(passkey["name"], "Passkey");
    assert_eq!(passkey["kind"], "device-bound");
    assert_eq!(app.post_form(&p.b, "/.sesame/logout", &[]).await.status(), 303);
    assert_eq!(p.b.get(app.url("/x")).send().await.unwrap().status(), 401);

    let rcr = app.login_options(&p.b, json!({"email": "Pia@example.com", "rd": "/after"})).await;
    let assertion = p.key.do_authentication(app.origin(), rcr).unwrap();
    let r = app.finish_login(&p.b, &assertion).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["redirect"], app.url("/after").as_str());
    assert_eq!(p.b.get(app.url("/after")).send().await.unwrap().status(), 200);
    assert_eq!(app.upstream.last().header("sesame-auth-method").as_deref(), Some("passkey"));
    assert_eq!(app.upstream.last().header("remote-email").as_deref(), Some("pia@example.com"));

    // The same assertion again: its ceremony is spent.
    assert_eq!(app.finish_login(&browser(), &assertion).await.status(), 401);
    let list: Value = p.b.get(app.url("/.sesame/api/passkeys")).send().await.unwrap().json().await.unwrap();
    assert!(list[0]["last_used_at"].is_number(), "{list}");
    let m = app.metrics().await;
    assert_eq!(TestApp::metric(&m, "sesame_passkey_registrations_total{result=\"ok\"}"), 1.0);
    assert_eq!(TestApp::metric(&m, "sesame_passkey_authentications_total{result=\"ok\"}"), 1.0);
}

async fn wrong_origin_and_other_rp_id_are_refused() {
    let app = spawn().await;
    let (mut p, _) = app.with_passkey("origin@example.com").await;
    let rcr = app.login_options(&p.b, json!({"email": "origin@example.com"})).await;
    let evil = Url::parse(&format!("https://evil.localhost:{}", app.port)).unwrap();
    let assertion = p.key.do_authentication(evil, rcr).unwrap();
    assert_eq!(app.finish_login(&p.b, &assertion).await.status(), 401, "other origin");

    let mut rcr = app.login_options(&p.b, json!({"email": "origin@example.com"})).await;
    rcr.public_key.rp_id = "other.localhost".into();
    let other = Url::parse(&format!("https://other.localhost:{}", app.port)).unwrap();
    let assertion = p.key.do_authentication(other, rcr).unwrap();
    assert_eq!(app.finish_login(&p.b, &assertion).await.status(), 401, "other RP id");
    let m = app.metrics().await;
    assert_eq!(TestApp::metric(&m, "sesame_passkey_authentications_total{result=\"refused\"}"), 2.0);
}

async fn a_deleted_passkey_and_a_disabled_user_cannot_sign_in() {
    let app = spawn().await;
    let (mut p, passkey) = app.with_passkey("del@example.com").await;
    app.passkey_sign_in(&mut p, "del@example.com").await;
    let rcr = app.login_options(&p.b, json!({"email": "del@example.com"})).await;
    let id = passkey["id"].as_str().unwrap();
    let r = p.b.delete(app.url(&format!("/.sesame/api/passkeys/{id}"))).header("Origin", &app.base).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let assertion = p.key.do_authentication(app.origin(), rcr).unwrap();
    assert_eq!(app.finish_login(&browser(), &assertion).await.status(), 401);

    let (mut q, _) = app.with_passkey("off@example.com").await;
    let rcr = app.login_options(&q.b, json!({"email": "off@example.com"})).await;
    let store = app.store.open().await;
    store.set_user_disabled(&sesame::email::Email::parse("off@example.com").unwrap(), true, app.clock.now()).await.unwrap();
    let assertion = q.key.do_authentication(app.origin(), rcr).unwrap();
    assert_eq!(app.finish_login(&browser(), &assertion).await.status(), 401);
}

async fn rename_and_delete_through_the_api() {
    let app = spawn().await;
    let (p, passkey) = app.with_passkey("api@example.com").await;
    app.prove_by_code(&p.b, "api@example.com").await;
    let id = passkey["id"].as_str().unwrap().to_string();
    let url = app.url(&format!("/.sesame/api/passkeys/{id}"));
    let r = p.b.patch(&url).header("Origin", &app.base).json(&json!({"name": "My laptop"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["name"], "My laptop");
    let list: Value = p.b.get(app.url("/.sesame/api/passkeys")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "My laptop");
    for bad in [json!({"name": ""}), json!({"name": "x".repeat(65)}), json!({"name": "a\nb"}), json!({"nom": "x"})] {
        let r = p.b.patch(&url).header("Origin", &app.base).json(&bad).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let r = p.b.patch(&url).header("Origin", "https://evil.example.net").json(&json!({"name": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 403, "cross-site");
    // Somebody else cannot touch it, nor can nobody.
    let other = browser();
    app.sign_in(&other, "other@example.com").await;
    let r = other.delete(&url).header("Origin", &app.base).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(browser().get(app.url("/.sesame/api/passkeys")).send().await.unwrap().status(), 401);
    let r = p.b.delete(&url).header("Origin", &app.base).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let list: Value = p.b.get(app.url("/.sesame/api/passkeys")).send().await.unwrap().json().await.unwrap();
    assert!(list.as_array().unwrap().is_empty());
}

async fn only_a_recent_sign_in_may_add_a_passkey_and_duplicates_are_excluded() {
    let app = spawn().await;
    let (mut p, _) = app.with_passkey("recent@example.com").await;
    // A second passkey, once signed in with the first.
    app.passkey_sign_in(&mut p, "recent@example.com").await;
    let r = app.post_json(&p.b, "/.sesame/passkey/register/start", &json!({})).await;
    let ccr: Value = r.json().await.unwrap();
    assert_eq!(ccr["publicKey"]["excludeCredentials"].as_array().unwrap().len(), 1, "existing passkey excluded");
    assert_eq!(ccr["publicKey"]["authenticatorSelection"]["userVerification"], "required");
    assert_eq!(ccr["publicKey"]["authenticatorSelection"]["residentKey"], "preferred");
    let mut second = SoftPasskey::new(true);
    app.register(&p.b, &mut second).await;
    let list: Value = p.b.get(app.url("/.sesame/api/passkeys")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);

    app.clock.advance(std::time::Duration::from_secs(16 * 60));
    assert_eq!(p.b.get(app.url("/x")).send().await.unwrap().status(), 200, "still signed in");
    let r = app.post_json(&p.b, "/.sesame/passkey/register/start", &json!({})).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "passkey_proof_required", "the passkey sign-in is no longer fresh");
    // Without a passkey, an old email session may not add the first one.
    let b = browser();
    app.sign_in(&b, "late@example.com").await;
    app.clock.advance(std::time::Duration::from_secs(16 * 60));
    let r = app.post_json(&b, "/.sesame/passkey/register/start", &json!({})).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "reauthenticate");
    // A registration ceremony cannot be finished by another session.
    let r = app.post_json(&browser(), "/.sesame/passkey/register/start", &json!({})).await;
    assert_eq!(r.status(), 401);
}

async fn options_do_not_tell_who_has_a_passkey() {
    let app = spawn().await;
    app.with_passkey("has@example.com").await;
    let b = browser();
    let options = |email: String| {
        let (app, b) = (&app, &b);
        async move { serde_json::to_value(app.login_options(b, json!({ "email": email })).await).unwrap() }
    };
    let known = options("has@example.com".into()).await;
    fn shape(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
            Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
            Value::String(s) => json!(s.len()),
            other => json!(other.to_string().len()),
        }
    }
    // Everything but the credential list has the shape of a person's options.
    let without_list = |v: &Value| {
        let mut v = v.clone();
        v["publicKey"]["allowCredentials"] = json!(null);
        shape(&v)
    };
    let real_id_len = known["publicKey"]["allowCredentials"][0]["id"].as_str().unwrap().len();
    let mut counts = std::collections::BTreeSet::new();
    let mut transports = std::collections::BTreeSet::new();
    for i in 0..40 {
        let unknown = options(format!("nobody{i}@example.com")).await;
        assert_eq!(without_list(&known), without_list(&unknown), "{known}\n{unknown}");
        let list = unknown["publicKey"]["allowCredentials"].as_array().unwrap().clone();
        assert!((1..=3).contains(&list.len()), "{unknown}");
        counts.insert(list.len());
        for c in &list {
            assert_eq!(c["type"], "public-key");
            assert_eq!(c["id"].as_str().unwrap().len(), real_id_len, "{c}");
            let t = c.get("transports").cloned().unwrap_or(json!(null));
            assert!(
                [json!(null), json!(["hybrid", "internal"]), json!(["internal"]), json!(["usb"]), json!(["nfc", "usb"])]
                    .contains(&t),
                "{c}"
            );
            transports.insert(t.to_string());
        }
        if i == 0 {
            let again = options(format!("nobody{i}@example.com")).await;
            assert_eq!(unknown["publicKey"]["allowCredentials"], again["publicKey"]["allowCredentials"], "the decoy is stable");
            assert_ne!(known["publicKey"]["allowCredentials"], unknown["publicKey"]["allowCredentials"]);
        }
    }
    // Like people's: some have more than one passkey, registered by different browsers.
    assert!(counts.len() > 1, "{counts:?}");
    assert!(transports.len() > 1, "{transports:?}");
}

async fn discoverable_sign_in_checks_the_user_handle() {
    let app = spawn().await;
    let (mut p, passkey) = app.with_passkey("disc@example.com").await;
    let (_, _) = app.with_passkey("someone@example.com").await;
    let store = app.store.open().await;
    let owner = store.user_by_email(&sesame::email::Email::parse("disc@example.com").unwrap()).await.unwrap().unwrap();
    let other = store.user_by_email(&sesame::email::Email::parse("someone@example.com").unwrap()).await.unwrap().unwrap();
    let owner_handle = store_handle(&app, &owner.id).await;
    let other_handle = store_handle(&app, &other.id).await;

    // SoftPasskey keeps no resident keys: name the credential for it, and add
    // the user handle a resident key would return (not covered by the signature).
    let attempt = |user_handle: String| {
        let app = &app;
        let id = passkey["id"].as_str().unwrap().to_string();
        async move {
            let mut rcr = app.login_options(&browser(), json!({})).await;
            assert!(rcr.public_key.allow_credentials.is_empty(), "discoverable: no credentials named");
            rcr.public_key.allow_credentials.push(webauthn_rs_proto::AllowCredentials {
                type_: "public-key".into(),
                id: base64_url(&id),
                transports: None,
            });
            (rcr, user_handle)
        }
    };
    let (rcr, h) = attempt(other_handle).await;
    let mut assertion = p.key.do_authentication(app.origin(), rcr).unwrap();
    assertion.response.user_handle = Some(uuid::Uuid::parse_str(&h).unwrap().as_bytes().to_vec());
    assert_eq!(app.finish_login(&browser(), &assertion).await.status(), 401, "handle of another user");

    let (rcr, h) = attempt(owner_handle).await;
    let mut assertion = p.key.do_authentication(app.origin(), rcr).unwrap();
    assertion.response.user_handle = Some(uuid::Uuid::parse_str(&h).unwrap().as_bytes().to_vec());
    let b = browser();
    assert_eq!(app.finish_login(&b, &assertion).await.status(), 200);
    b.get(app.url("/x")).send().await.unwrap();
    assert_eq!(app.upstream.last().header("remote-email").as_deref(), Some("disc@example.com"));
}

async fn a_counter_that_goes_backwards_is_refused_and_counted() {
    let app = spawn().await;
    let (mut p, passkey) = app.with_passkey("clone@example.com").await;
    let store = app.store.open().await;
    let id = passkey["id"].as_str().unwrap();
    let record = store.passkey(id).await.unwrap().unwrap();
    // As if another copy of the authenticator had already signed 1000 times.
    let ahead = sesame::store::PasskeyRecord { counter: 1000, ..record.clone() };
    assert!(store.passkey_used(&ahead, record.counter, 0).await.unwrap());
    let rcr = app.login_options(&p.b, json!({"email": "clone@example.com"})).await;
    let assertion = p.key.do_authentication(app.origin(), rcr).unwrap();
    assert_eq!(app.finish_login(&browser(), &assertion).await.status(), 401);
    let m = app.metrics().await;
    assert_eq!(TestApp::metric(&m, "sesame_passkey_sign_count_regressions_total"), 1.0);
}

async fn sessions_api_signs_out_everywhere_else() {
    let app = spawn().await;
    let here = browser();
    let there = browser();
    app.sign_in(&here, "two@example.com").await;
    app.sign_in(&there, "two@example.com").await;
    let list: Value = here.get(app.url("/.sesame/api/sessions")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list.as_array().unwrap().iter().filter(|s| s["current"] == true).count(), 1);
    let r = here.delete(app.url("/.sesame/api/sessions")).header("Origin", &app.base).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["revoked"], 1);
    assert_eq!(there.get(app.url("/x")).send().await.unwrap().status(), 401);
    assert_eq!(here.get(app.url("/x")).send().await.unwrap().status(), 200);
}

async fn sessions_name_their_browser_and_one_can_be_signed_out_but_not_anothers() {
    let app = spawn().await;
    let with_agent = |ua: &str| {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(ua)
            .build()
            .unwrap()
    };
    let laptop = with_agent("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0");
    let phone = with_agent(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    );
    app.sign_in(&laptop, "owner@example.com").await;
    app.sign_in(&phone, "owner@example.com").await;
    let stranger = browser();
    app.sign_in(&stranger, "stranger@example.com").await;

    // The account page and the API name each session's browser and address.
    let page = laptop.get(app.url("/.sesame/account")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Firefox on Linux"), "{page}");
    assert!(page.contains("Safari on iPhone"), "{page}");
    assert!(page.contains("127.0.0.1"), "{page}");
    assert!(page.contains("last seen"), "{page}");
    let list: Value = laptop.get(app.url("/.sesame/api/sessions")).send().await.unwrap().json().await.unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let on_phone = list.iter().find(|s| s["browser"] == "Safari on iPhone").expect("the phone's session");
    assert_eq!(on_phone["client"], "127.0.0.1");
    assert_eq!(on_phone["current"], false);
    let mine = list.iter().find(|s| s["current"] == true).unwrap();
    assert_eq!(mine["browser"], "Firefox on Linux");
    let theirs: Value = stranger.get(app.url("/.sesame/api/sessions")).send().await.unwrap().json().await.unwrap();
    let theirs = theirs[0]["id"].as_str().unwrap().to_string();

    let delete = |b: &reqwest::Client, id: &str, origin: &str| {
        b.delete(app.url(&format!("/.sesame/api/sessions/{id}")))
            .header("Origin", origin)
            .send()
    };
    let phone_id = on_phone["id"].as_str().unwrap();
    // Another person's session is not found; a page elsewhere cannot ask.
    let r = delete(&laptop, &theirs, &app.base).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(stranger.get(app.url("/x")).send().await.unwrap().status(), 200);
    let r = delete(&laptop, phone_id, "https://evil.example").await.unwrap();
    assert_eq!(r.status(), 403);
    let r = laptop
        .delete(app.url(&format!("/.sesame/api/sessions/{phone_id}")))
        .header("Sec-Fetch-Site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(phone.get(app.url("/x")).send().await.unwrap().status(), 200);
    // Its own session is signed out with /logout.
    let r = delete(&laptop, mine["id"].as_str().unwrap(), &app.base).await.unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "current_session");

    let r = delete(&laptop, phone_id, &app.base).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(phone.get(app.url("/x")).send().await.unwrap().status(), 401);
    assert_eq!(laptop.get(app.url("/x")).send().await.unwrap().status(), 200);
    let r = delete(&laptop, phone_id, &app.base).await.unwrap();
    assert_eq!(r.status(), 404, "gone already");
}

async fn admin_can_list_and_revoke_passkeys() {
    let app = spawn().await;
    let (mut p, passkey) = app.with_passkey("lost@example.com").await;
    app.with_passkey("kept@example.com").await;
    let id = passkey["id"].as_str().unwrap();
    let (ok, out, _) = app.cli(&["passkey", "list"]);
    assert!(ok && out.lines().count() == 2, "{out}");
    let (ok, out, _) = app.cli(&["passkey", "list", "--user", "lost@example.com"]);
    assert!(ok && out.lines().count() == 1 && out.contains(id) && out.contains("device-bound"), "{out}");
    let rcr = app.login_options(&p.b, json!({"email": "lost@example.com"})).await;
    let (ok, out, err) = app.cli(&["passkey", "revoke", "--id", id]);
    assert!(ok, "{out}{err}");
    let assertion = p.key.do_authentication(app.origin(), rcr).unwrap();
    assert_eq!(app.finish_login(&browser(), &assertion).await.status(), 401, "revoked passkey");
    let (ok, _, err) = app.cli(&["passkey", "revoke", "--id", id]);
    assert!(!ok && err.contains("no passkey"), "{err}");
    // Ids are base64url, so one in 64 starts with `-`: still an id, not a flag.
    let (ok, _, err) = app.cli(&["passkey", "revoke", "--id", "-mX2"]);
    assert!(!ok && err.contains("no passkey"), "{err}");
    let (ok, _, err) = app.cli(&["passkey", "list", "--user", "nobody@example.com"]);
    assert!(!ok && err.contains("no user"), "{err}");
}

async fn email_sign_in_offers_a_passkey_once() {
    let app = spawn_with(Options { passkey_prompt: true, ..Default::default() }).await;
    let b = browser();
    let mail = app.ask_link(&b, "offer@example.com", "/wiki").await;
    let r = app.post_form(&b, "/.sesame/magic", &[("token", &mail.token())]).await;
    assert_eq!(r.status(), 303);
    let offer = r.headers()["location"].to_str().unwrap().to_string();
    assert!(offer.starts_with(&app.url("/.sesame/passkey/offer?rd=")), "{offer}");
    let page = b.get(&offer).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Sign in faster next time") && page.contains("id=\"passkey-add\""));
    assert!(page.contains(&format!("href=\"{}\"", app.url("/wiki").replace('/', "&#x2f;"))), "Not now leads on: {page}");
    // Shown once per browser.
    let mail = app.ask_link(&b, "offer@example.com", "/wiki").await;
    let r = app.post_form(&b, "/.sesame/magic", &[("token", &mail.token())]).await;
    assert_eq!(r.headers()["location"], app.url("/wiki").as_str());
    let session = cookies_set(&r)["sesame"].clone();
    // Not to someone who has a passkey already (in a fresh browser).
    let (_, _) = app.with_passkey("haskey@example.com").await;
    let fresh = browser();
    let mail = app.ask_link(&fresh, "haskey@example.com", "/wiki").await;
    let r = app.post_form(&fresh, "/.sesame/magic", &[("token", &mail.token())]).await;
    assert_eq!(r.headers()["location"], app.url("/wiki").as_str());
    // The marker cookie never reaches the app.
    let r = browser()
        .get(app.url("/wiki"))
        .header("Cookie", format!("sesame={session}; sesame_passkey_offered=1; theme=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.upstream.last().headers_named("cookie"), vec!["theme=x".to_string()]);
}

async fn a_site_that_requires_a_passkey_steps_up_an_email_session() {
    let app = spawn_with(Options { site0: "require_passkey = true".into(), ..Default::default() }).await;
    let b = browser();
    app.sign_in(&b, "step@example.com").await;
    let r = b.get(app.url("/vault?x=1")).header("Accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 302);
    let stepup = r.headers()["location"].to_str().unwrap().to_string();
    assert!(stepup.starts_with(&app.url("/.sesame/stepup?rd=")), "{stepup}");
    let r = b.get(app.url("/api")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "passkey_required");
    assert!(app.upstream.seen().is_empty(), "nothing reached the app");
    let page = b.get(&stepup).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"passkey-add\""), "no passkey yet: offers to add one");

    let mut key = SoftPasskey::new(true);
    app.register(&b, &mut key).await;
    let page = b.get(&stepup).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"passkey-stepup\""));
    let rcr = app.login_options(&b, json!({"email": "step@example.com", "rd": app.url("/vault?x=1")})).await;
    let assertion = key.do_authentication(app.origin(), rcr).unwrap();
    let r = app.finish_login(&b, &assertion).await;
    assert_eq!(r.json::<Value>().await.unwrap()["redirect"], app.url("/vault?x=1").as_str());
    assert_eq!(b.get(app.url("/vault?x=1")).send().await.unwrap().status(), 200);
    assert_eq!(app.upstream.last().header("sesame-auth-method").as_deref(), Some("passkey"));
}

async fn account_page_shows_passkeys_and_sessions() {
    let app = spawn().await;
    let r = browser().get(app.url("/.sesame/account")).send().await.unwrap();
    assert_eq!(r.status(), 302, "not signed in: to the login page");
    let (p, _) = app.with_passkey("acct@example.com").await;
    let r = p.b.get(app.url("/.sesame/account")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    let page = r.text().await.unwrap();
    assert!(page.contains("acct@example.com") && page.contains("Passkey") && page.contains("device-bound"), "{page}");
    assert!(page.contains("this browser") && page.contains("/.sesame/static/passkey.js"));
    let js = browser().get(app.url("/.sesame/static/passkey.js")).send().await.unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.text().await.unwrap().contains("parseRequestOptionsFromJSON"));
    let login = browser().get(app.url("/.sesame/login")).send().await.unwrap().text().await.unwrap();
    assert!(login.contains("id=\"passkey-signin\""), "passkey button on the login page");
}
}

store_tests! {
async fn the_forget_this_passkey_hint_tells_no_real_passkey_from_a_decoy() {
    let app = spawn().await;
    let (mut p, passkey) = app.with_passkey("real@example.com").await;
    let real_id = passkey["id"].as_str().unwrap().to_string();
    let hint = |body: &Value| body["unknown_credential"]["credentialId"].as_str().map(str::to_string);
    // A forged assertion with the real credential's id (from the email-first
    // options anyone can ask for): not verified, so the hint, as for...
    let rcr = app.login_options(&browser(), json!({"email": "real@example.com"})).await;
    let mut forged = serde_json::to_value(p.key.do_authentication(app.origin(), rcr).unwrap()).unwrap();
    let sig = forged["response"]["signature"].as_str().unwrap().to_string();
    let flipped = if sig.starts_with('A') { sig.replacen('A', "B", 1) } else { format!("A{}", &sig[1..]) };
    forged["response"]["signature"] = Value::from(flipped);
    let r = app.post_json(&browser(), "/.sesame/passkey/login/finish", &forged).await;
    assert_eq!(r.status(), 401);
    assert_eq!(hint(&r.json().await.unwrap()), Some(real_id.clone()));
    // ...a decoy's id, given for an address without passkeys.
    let decoy_rcr: Value = app.post_json(&browser(), "/.sesame/passkey/login/start", &json!({"email": "nobody@example.com"})).await.json().await.unwrap();
    let decoy_id = decoy_rcr["publicKey"]["allowCredentials"][0]["id"].as_str().unwrap().to_string();
    let rcr = app.login_options(&browser(), json!({"email": "real@example.com"})).await;
    let mut decoyed = serde_json::to_value(p.key.do_authentication(app.origin(), rcr).unwrap()).unwrap();
    decoyed["id"] = Value::from(decoy_id.clone());
    decoyed["rawId"] = Value::from(decoy_id.clone());
    let r = app.post_json(&browser(), "/.sesame/passkey/login/finish", &decoyed).await;
    assert_eq!(r.status(), 401);
    assert_eq!(hint(&r.json().await.unwrap()), Some(decoy_id));
    // A genuine assertion of a disabled account: refused, and the browser
    // keeps its passkey.
    let rcr = app.login_options(&browser(), json!({"email": "real@example.com"})).await;
    let store = app.store.open().await;
    store.set_user_disabled(&sesame::email::Email::parse("real@example.com").unwrap(), true, app.clock.now()).await.unwrap();
    let genuine = p.key.do_authentication(app.origin(), rcr).unwrap();
    let r = app.finish_login(&browser(), &genuine).await;
    assert_eq!(r.status(), 401);
    assert_eq!(hint(&r.json().await.unwrap()), None);
}

async fn passkey_changes_need_a_fresh_proof_and_are_announced() {
    let app = spawn().await;
    let email = "guard@example.com";
    let (mut p, first) = app.with_passkey(email).await;
    // The first passkey, right after the email sign-in, is announced.
    let notice = app.mail.wait_for_subject(email, 1, "A passkey").await;
    assert_eq!(notice.subject, "A passkey was added to your account on Test app");
    assert!(notice.text.contains("Passkey: Passkey") && notice.text.contains("Network address: 127.0.0.1"), "{}", notice.text);
    assert!(notice.text.contains(&app.url("/.sesame/account")), "{}", notice.text);
    assert!(notice.text.contains("When: 20") && notice.text.contains(" UTC"), "{}", notice.text);

    // The same email session, or anyone holding a link of the address,
    // may not add a second one nor delete the first.
    let holder = browser();
    app.sign_in(&holder, email).await;
    for b in [&p.b, &holder] {
        let r = app.post_json(b, "/.sesame/passkey/register/start", &json!({})).await;
        assert_eq!(r.status(), 403);
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "passkey_proof_required");
        let url = app.url(&format!("/.sesame/api/passkeys/{}", first["id"].as_str().unwrap()));
        let r = b.delete(&url).header("Origin", &app.base).send().await.unwrap();
        assert_eq!(r.status(), 403);
    }
    // A wrong code, then a code of another session, prove nothing.
    let r = app.post_json(&holder, "/.sesame/passkey/proof/finish", &json!({"code": "123456"})).await;
    assert_eq!(r.status(), 409, "no code asked for in this session");
    let seen = app.mail.count_to(email);
    assert_eq!(app.post_json(&holder, "/.sesame/passkey/proof/start", &json!({})).await.status(), 200);
    let code = app.mail.wait_for_subject(email, seen, "Your code").await.code();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let r = app.post_json(&holder, "/.sesame/passkey/proof/finish", &json!({"code": wrong})).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["attempts_left"], 4);
    let r = app.post_json(&p.b, "/.sesame/passkey/proof/finish", &json!({"code": code})).await;
    assert_eq!(r.status(), 409, "the code is for the session that asked");

    // With a fresh passkey sign-in: a second passkey, announced.
    app.passkey_sign_in(&mut p, email).await;
    let seen = app.mail.count_to(email);
    let mut second = SoftPasskey::new(true);
    let added = app.register(&p.b, &mut second).await;
    app.mail.wait_for_subject(email, seen, "A passkey was added").await;

    // With the emailed code: the holder's session may delete, announced.
    let r = app.post_json(&holder, "/.sesame/passkey/proof/finish", &json!({"code": code})).await;
    assert_eq!(r.status(), 200);
    let seen = app.mail.count_to(email);
    let url = app.url(&format!("/.sesame/api/passkeys/{}", added["id"].as_str().unwrap()));
    let r = holder.delete(&url).header("Origin", &app.base).header("User-Agent", "Firefox/140 on Linux").send().await.unwrap();
    assert_eq!(r.status(), 204);
    let notice = app.mail.wait_for_subject(email, seen, "A passkey was deleted").await;
    assert_eq!(notice.subject, "A passkey was deleted from your account on Test app");
    assert!(notice.text.contains("Browser: Firefox/140 on Linux"), "{}", notice.text);
    // The proof lasts 15 minutes.
    app.clock.advance(std::time::Duration::from_secs(16 * 60));
    let r = app.post_json(&holder, "/.sesame/passkey/register/start", &json!({})).await;
    assert_eq!(r.status(), 403);
}
}

async fn store_handle(app: &TestApp, user_id: &str) -> String {
    let store = app.store.open().await;
    store.ensure_user_handle(user_id, "unused").await.unwrap()
}

fn base64_url(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}
