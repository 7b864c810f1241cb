//! The signed identity assertion, verified the way an app would: with the
//! public keys from /.sesame/jwks.json and an Ed25519 implementation of its
//! own (not Sesame's JWT library).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde_json::Value;

use crate::helpers::*;

/// Verify `token` against the JWKS; returns its claims.
fn verify(token: &str, jwks: &Value) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWT");
    let header: Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "EdDSA");
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the assertion's kid is in the JWKS");
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    let public: [u8; 32] = B64
        .decode(key["x"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let signature = Signature::from_slice(&B64.decode(parts[2]).unwrap()).unwrap();
    VerifyingKey::from_bytes(&public)
        .unwrap()
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("signature verifies");
    serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap()
}

store_tests! {
async fn apps_can_verify_who_is_calling() {
    let app = spawn_with(Options { server: "trusted_proxies = [\"127.0.0.1\"]".into(), ..Default::default() }).await;
    let b = browser();
    let r = b.get(app.url("/public/x")).header("Sesame-Assertion", "forged").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.upstream.last().header("sesame-assertion"), None, "a client's own assertion is stripped");

    app.sign_in(&b, "jwt@example.com").await;
    b.get(app.url("/one")).send().await.unwrap();
    let seen = app.upstream.last();
    let token = seen.header("sesame-assertion").expect("an assertion reaches the app");
    let r = browser().get(app.url("/.sesame/jwks.json")).send().await.unwrap();
    assert!(r.headers()["cache-control"].to_str().unwrap().contains("max-age"));
    let jwks: Value = r.json().await.unwrap();
    let claims = verify(&token, &jwks);
    assert_eq!(claims["aud"], app.base.as_str());
    assert_eq!(claims["iss"], app.base.as_str());
    assert_eq!(claims["sub"], seen.header("remote-user").unwrap().as_str());
    assert_eq!(claims["email"], "jwt@example.com");
    assert_eq!(claims["amr"], serde_json::json!(["magic_link"]));
    assert_eq!(claims["groups"], serde_json::json!([]));
    let (iat, exp) = (claims["iat"].as_i64().unwrap(), claims["exp"].as_i64().unwrap());
    assert_eq!(exp - iat, 300, "short-lived");
    assert!(exp > app.clock.now());

    // Cached: the next request carries the same assertion.
    b.get(app.url("/two")).send().await.unwrap();
    assert_eq!(app.upstream.last().header("sesame-assertion").as_deref(), Some(token.as_str()));
    // A tampered one does not verify.
    let mut forged: Vec<&str> = token.split('.').collect();
    let payload = B64.encode(serde_json::to_vec(&serde_json::json!({"email": "boss@example.com"})).unwrap());
    forged[1] = &payload;
    let forged = forged.join(".");
    let result = std::panic::catch_unwind(|| verify(&forged, &jwks));
    assert!(result.is_err(), "a forged payload fails verification");

    // The forward-auth answer carries it too.
    let session = cookies_set(&app.sign_in(&browser(), "fa@example.com").await)["sesame"].clone();
    let r = app.forward_auth(&session, "/x").await;
    assert_eq!(r.status(), 200);
    let claims = verify(r.headers()["sesame-assertion"].to_str().unwrap(), &jwks);
    assert_eq!(claims["email"], "fa@example.com");

    // After a rotation the JWKS lists the new key and the previous one.
    let (ok, _, err) = app.cli(&["keys", "rotate"]);
    assert!(ok, "{err}");
    let a = &app.running.as_ref().unwrap().app;
    a.keys.reload(&a.store, a.clock.now()).await.unwrap();
    let jwks: Value = browser().get(app.url("/.sesame/jwks.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    verify(&token, &jwks);
}

async fn new_groups_are_in_the_next_assertion_and_a_site_can_do_without_one() {
    let app = spawn_with(Options { extra: "sign_assertion = false".into(), ..Default::default() }).await;
    let b = browser();
    app.sign_in(&b, "groups@example.com").await;
    b.get(app.url("/before")).send().await.unwrap();
    let jwks: Value = browser().get(app.url("/.sesame/jwks.json")).send().await.unwrap().json().await.unwrap();
    let before = verify(&app.upstream.last().header("sesame-assertion").unwrap(), &jwks);
    assert_eq!(before["groups"], serde_json::json!([]));

    // New groups: once the session is re-read (at once on PostgreSQL, by
    // notification), the assertion says so too, not only the plain header.
    let (ok, _, err) = app.cli(&["user", "set-groups", "groups@example.com", "--group", "ops"]);
    assert!(ok, "{err}");
    let a = &app.running.as_ref().unwrap().app;
    a.sessions.invalidate(&sesame::store::Invalidation::All);
    b.get(app.url("/after")).send().await.unwrap();
    let seen = app.upstream.last();
    assert_eq!(seen.header("remote-groups").as_deref(), Some("ops"));
    let after = verify(&seen.header("sesame-assertion").unwrap(), &jwks);
    assert_eq!(after["groups"], serde_json::json!(["ops"]));

    // The second site has `sign_assertion = false`: plain headers only, and a
    // client's own assertion is still stripped.
    let other = format!("http://127.0.0.1:{}", app.port);
    let b2 = browser();
    let mut on_other = app;
    on_other.base = other.clone();
    on_other.sign_in(&b2, "plain@example.com").await;
    b2.get(format!("{other}/page")).header("Sesame-Assertion", "forged").send().await.unwrap();
    let seen = on_other.upstream.last();
    assert_eq!(seen.header("remote-email").as_deref(), Some("plain@example.com"));
    assert_eq!(seen.header("sesame-assertion"), None);
}
}
