//! Each ceremony and its refusals, with a real software authenticator
//! (webauthn-authenticator-rs SoftPasskey) on the core's test rig: a real
//! SQLite file, a clock the tests move, no gateway.

use std::time::Duration;

use url::Url;
use webauthn_authenticator_rs::prelude::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

use super::*;
use crate::config::{Signup, SiteId};
use crate::testing::Rig;

const WIKI: SiteId = SiteId::new(0);
const GIT: SiteId = SiteId::new(1);

fn origin() -> Url {
    Url::parse("https://wiki.example.com").unwrap()
}

fn key() -> SoftPasskey {
    SoftPasskey::new(true)
}

fn email(s: &str) -> Email {
    Email::parse(s).unwrap()
}

/// Add a passkey for `live` with `key` (the session is fresh and has none).
async fn register(rig: &Rig, live: &LiveSession, key: &mut SoftPasskey) -> PasskeyRecord {
    let ccr = register_start(&rig.ceremonies(), WIKI, live, false)
        .await
        .unwrap();
    let cred = key.do_registration(origin(), ccr).unwrap();
    let body = serde_json::to_vec(&cred).unwrap();
    register_finish(&rig.ceremonies(), WIKI, live, &body)
        .await
        .unwrap()
}

/// An assertion of `key` for a passkey sign-in started for `who`.
async fn assert_with(rig: &Rig, key: &mut SoftPasskey, who: Option<&str>) -> Vec<u8> {
    let rcr = login_start(
        &rig.ceremonies(),
        WIKI,
        who.map(email),
        ReturnTo::root(rig.site(0)),
    )
    .await
    .unwrap();
    let assertion = key.do_authentication(origin(), rcr).unwrap();
    serde_json::to_vec(&assertion).unwrap()
}

#[tokio::test]
async fn a_passkey_added_after_an_email_sign_in_signs_in_once_per_ceremony() {
    let rig = Rig::new(Signup::Open).await;
    let live = rig.signed_in("ada@example.com").await;
    let mut key = key();
    let record = register(&rig, &live, &mut key).await;
    assert_eq!(record.user_id, live.record.user_id);
    let listed = rig.store.passkeys_of(&live.record.user_id).await.unwrap();
    assert_eq!(listed, vec![record.clone()]);

    let body = assert_with(&rig, &mut key, Some("ada@example.com")).await;
    let done = login_finish(&rig.ceremonies(), rig.site(0), WIKI, &body)
        .await
        .unwrap();
    assert_eq!(done.user.email.as_str(), "ada@example.com");
    assert_eq!(done.session.record.auth_method, AuthMethod::Passkey);
    assert_eq!(done.return_to, "https://wiki.example.com/");
    // The counter moved on in the store.
    let used = rig.store.passkey(&record.id).await.unwrap().unwrap();
    assert!(used.last_used_at.is_some());

    // The same assertion again: its ceremony is used up.
    let again = login_finish(&rig.ceremonies(), rig.site(0), WIKI, &body).await;
    assert!(matches!(again, Err(PasskeyError::Refused(_))), "{again:?}");
    assert_eq!(
        rig.metrics.sessions_created.get(),
        2,
        "the email sign-in and one passkey sign-in"
    );
}

#[tokio::test]
async fn a_ceremony_expires_after_five_minutes() {
    let rig = Rig::new(Signup::Open).await;
    let live = rig.signed_in("bo@example.com").await;
    let mut key = key();
    register(&rig, &live, &mut key).await;
    let body = assert_with(&rig, &mut key, Some("bo@example.com")).await;
    rig.clock.advance(Duration::from_secs(CEREMONY_SECS as u64));
    let late = login_finish(&rig.ceremonies(), rig.site(0), WIKI, &body).await;
    assert!(matches!(late, Err(PasskeyError::Refused(_))), "{late:?}");
}

#[tokio::test]
async fn adding_a_passkey_needs_a_recent_sign_in_then_a_proof() {
    let rig = Rig::new(Signup::Open).await;
    let live = rig.signed_in("cy@example.com").await;
    // Past 15 minutes, an email session may not add the first passkey.
    rig.clock
        .advance(Duration::from_secs(RECENT_SIGN_IN_SECS as u64 + 1));
    let old = register_start(&rig.ceremonies(), WIKI, &live, false).await;
    assert!(matches!(old, Err(PasskeyError::NotRecent)), "{old:?}");

    let live = rig.signed_in("cy@example.com").await;
    let mut first = key();
    register(&rig, &live, &mut first).await;
    // One passkey on the account: a second needs a passkey sign-in or a
    // code, not just an email session...
    let second = register_start(&rig.ceremonies(), WIKI, &live, false).await;
    assert!(
        matches!(second, Err(PasskeyError::ProofRequired)),
        "{second:?}"
    );
    // ... with a typed code it may ...
    assert!(register_start(&rig.ceremonies(), WIKI, &live, true)
        .await
        .is_ok());
    // ... and a fresh passkey sign-in may, by itself.
    let body = assert_with(&rig, &mut first, Some("cy@example.com")).await;
    let done = login_finish(&rig.ceremonies(), rig.site(0), WIKI, &body)
        .await
        .unwrap();
    let by_passkey = rig
        .sessions
        .check(&done.session.cookie_plain)
        .await
        .unwrap();
    let mut other = key();
    register(&rig, &by_passkey, &mut other).await;
    assert_eq!(
        rig.store
            .passkeys_of(&live.record.user_id)
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn a_ceremony_of_one_person_does_not_register_for_another() {
    let rig = Rig::new(Signup::Open).await;
    let ada = rig.signed_in("ada@example.com").await;
    let eve = rig.signed_in("eve@example.com").await;
    let ccr = register_start(&rig.ceremonies(), WIKI, &ada, false)
        .await
        .unwrap();
    let cred = key().do_registration(origin(), ccr).unwrap();
    let body = serde_json::to_vec(&cred).unwrap();
    let r = register_finish(&rig.ceremonies(), WIKI, &eve, &body).await;
    assert!(matches!(r, Err(PasskeyError::Refused(_))), "{r:?}");
    assert!(rig
        .store
        .passkeys_of(&eve.record.user_id)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_counter_that_goes_backwards_is_refused_and_counted() {
    let rig = Rig::new(Signup::Open).await;
    let live = rig.signed_in("dee@example.com").await;
    let mut key = key();
    let record = register(&rig, &live, &mut key).await;
    // The store remembers a later use than the authenticator's.
    let ahead = PasskeyRecord {
        counter: 1_000,
        ..record.clone()
    };
    assert!(rig
        .store
        .passkey_used(&ahead, record.counter, rig.clock.now())
        .await
        .unwrap());
    let body = assert_with(&rig, &mut key, Some("dee@example.com")).await;
    let r = login_finish(&rig.ceremonies(), rig.site(0), WIKI, &body).await;
    assert!(matches!(r, Err(PasskeyError::Refused(_))), "{r:?}");
    assert_eq!(rig.metrics.passkey_counter_regressions.get(), 1);
}

#[tokio::test]
async fn a_deleted_passkey_is_an_unknown_credential_the_browser_is_told_to_forget() {
    let rig = Rig::new(Signup::Open).await;
    let live = rig.signed_in("fay@example.com").await;
    let mut key = key();
    let record = register(&rig, &live, &mut key).await;
    let body = assert_with(&rig, &mut key, Some("fay@example.com")).await;
    assert!(rig
        .store
        .delete_passkey(&live.record.user_id, &record.id)
        .await
        .unwrap());
    match login_finish(&rig.ceremonies(), rig.site(0), WIKI, &body).await {
        Err(PasskeyError::UnknownCredential { id, .. }) => assert_eq!(record.id, id),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_address_without_passkeys_gets_the_same_decoy_each_time() {
    let rig = Rig::new(Signup::Open).await;
    let ids = |rcr: &RequestChallengeResponse| -> Vec<Vec<u8>> {
        rcr.public_key
            .allow_credentials
            .iter()
            .map(|c| c.id.to_vec())
            .collect()
    };
    let start = |who: &'static str| {
        let rig = &rig;
        async move {
            login_start(
                &rig.ceremonies(),
                WIKI,
                Some(email(who)),
                ReturnTo::root(rig.site(0)),
            )
            .await
            .unwrap()
        }
    };
    let first = ids(&start("nobody@example.com").await);
    assert!((1..=3).contains(&first.len()), "{first:?}");
    assert_eq!(ids(&start("nobody@example.com").await), first);
    assert_ne!(ids(&start("someone@example.com").await), first);
    // Discoverable: no credentials named.
    let open = login_start(&rig.ceremonies(), WIKI, None, ReturnTo::root(rig.site(0)))
        .await
        .unwrap();
    assert!(open.public_key.allow_credentials.is_empty());
}

#[tokio::test]
async fn passkeys_work_only_on_sites_under_the_rp_id() {
    let rig = Rig::new(Signup::Open).await;
    assert!(rig.rp.available(WIKI));
    assert!(
        !rig.rp.available(GIT),
        "git.example.com is not under wiki.example.com"
    );
    let r = login_start(&rig.ceremonies(), GIT, None, ReturnTo::root(rig.site(1))).await;
    assert!(matches!(r, Err(PasskeyError::NotAvailable)), "{r:?}");
}
