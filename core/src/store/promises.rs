//! The store's promises, on a real SQLite file (the integration suite runs
//! the same through the gateway on PostgreSQL too): every single-use step
//! happens once, limits hold, and what a session carries is the user's
//! identity as the store has it.

use std::sync::Arc;

use super::*;
use crate::config::StoreConfig;

async fn store() -> (tempfile::TempDir, DynStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&StoreConfig::Sqlite {
        path: dir.path().join("sesame.db"),
    })
    .await
    .unwrap();
    (dir, store)
}

fn email(s: &str) -> Email {
    Email::parse(s).unwrap()
}

fn pending(id: &str, expires_at: i64) -> PendingLogin {
    PendingLogin {
        id: id.into(),
        email: email("ada@example.com"),
        site: "wiki".into(),
        return_to: "https://wiki.example.com/".into(),
        code_mac: vec![7; 32],
        expires_at,
        attempts: 0,
        views: 0,
        consumed: false,
        created_at: 0,
        asked_agent: String::new(),
        asked_net: String::new(),
        decision: None,
        collected: false,
    }
}

fn user(id: &str, address: &str, groups: &[&str]) -> User {
    User {
        id: id.into(),
        email: email(address),
        name: Some("Ada".into()),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        disabled: false,
        created_at: 0,
    }
}

fn session(id_hash: &str, user: &User, expires_at: i64) -> SessionRecord {
    SessionRecord {
        id_hash: id_hash.into(),
        user_id: user.id.clone(),
        email: user.email.clone(),
        name: None,
        groups: vec!["from-the-record".into()],
        auth_method: AuthMethod::Code,
        created_at: 10,
        expires_at,
        last_seen: 10,
        revoked: false,
        parent: None,
        device: None,
    }
}

#[tokio::test]
async fn a_pending_sign_in_is_consumed_exactly_once_when_raced() {
    let (_dir, store) = store().await;
    store.create_pending(&pending("p1", 1_000)).await.unwrap();
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.consume_pending("p1", 10).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for r in racers {
        if r.await.unwrap().is_some() {
            won += 1;
        }
    }
    assert_eq!(won, 1);
    assert!(store.pending("p1").await.unwrap().unwrap().consumed);
    // Expired or unknown: nothing to consume.
    store.create_pending(&pending("p2", 100)).await.unwrap();
    assert!(store.consume_pending("p2", 100).await.unwrap().is_none());
    assert!(store.consume_pending("nope", 10).await.unwrap().is_none());
}

#[tokio::test]
async fn code_attempts_stop_at_the_limit_and_after_use_or_expiry() {
    let (_dir, store) = store().await;
    store.create_pending(&pending("p1", 1_000)).await.unwrap();
    for n in 1..=3 {
        let p = store.attempt_code("p1", 10, 3).await.unwrap().unwrap();
        assert_eq!(p.attempts, n);
    }
    assert!(store.attempt_code("p1", 10, 3).await.unwrap().is_none());
    assert_eq!(store.pending("p1").await.unwrap().unwrap().attempts, 3);

    store.create_pending(&pending("p2", 1_000)).await.unwrap();
    store.consume_pending("p2", 10).await.unwrap().unwrap();
    assert!(store.attempt_code("p2", 10, 3).await.unwrap().is_none());
    store.create_pending(&pending("p3", 100)).await.unwrap();
    assert!(store.attempt_code("p3", 100, 3).await.unwrap().is_none());
}

#[tokio::test]
async fn views_are_counted_and_the_sweep_reports_links_opened_but_never_used() {
    let (_dir, store) = store().await;
    for id in ["viewed", "used", "untouched"] {
        store.create_pending(&pending(id, 100)).await.unwrap();
    }
    store.view_pending("viewed").await.unwrap();
    let p = store.view_pending("viewed").await.unwrap().unwrap();
    assert_eq!(p.views, 2);
    store.view_pending("used").await.unwrap();
    store.consume_pending("used", 10).await.unwrap().unwrap();
    assert_eq!(
        store.sweep_pending(50).await.unwrap(),
        SweptPending::default(),
        "none expired yet"
    );
    assert!(store.pending("viewed").await.unwrap().is_some());
    assert_eq!(store.sweep_pending(100).await.unwrap().unconfirmed, 1);
    for id in ["viewed", "used", "untouched"] {
        assert!(store.pending(id).await.unwrap().is_none(), "{id} swept");
    }
}

#[tokio::test]
async fn a_sign_in_is_decided_once_and_an_approval_collected_once() {
    let (_dir, store) = store().await;
    // Approvals, cancellations and the link race: one decision wins.
    store.create_pending(&pending("p1", 1_000)).await.unwrap();
    let racers: Vec<_> = (0..9)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                match i % 3 {
                    0 => store.consume_pending("p1", 10).await.unwrap(),
                    1 => store
                        .decide_pending("p1", 10, Decision::Approved, 130)
                        .await
                        .unwrap(),
                    _ => store
                        .decide_pending("p1", 10, Decision::Denied, 130)
                        .await
                        .unwrap(),
                }
            })
        })
        .collect();
    let mut won = vec![];
    for r in racers {
        won.extend(r.await.unwrap().and_then(|p| p.decision));
    }
    assert_eq!(won.len(), 1, "{won:?}");
    let decided = store.pending("p1").await.unwrap().unwrap();
    assert_eq!(decided.decision, Some(won[0]));

    // An approval: collected once, only until its time to collect.
    store.create_pending(&pending("p2", 1_000)).await.unwrap();
    assert!(store.collect_pending("p2", 10).await.unwrap().is_none());
    let p = store
        .decide_pending("p2", 10, Decision::Approved, 130)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((p.decision, p.expires_at), (Some(Decision::Approved), 130));
    assert!(store.consume_pending("p2", 11).await.unwrap().is_none());
    let racers: Vec<_> = (0..6)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.collect_pending("p2", 20).await.unwrap() })
        })
        .collect();
    let mut collected = 0;
    for r in racers {
        collected += r.await.unwrap().is_some() as usize;
    }
    assert_eq!(collected, 1);
    store.create_pending(&pending("p3", 1_000)).await.unwrap();
    store
        .decide_pending("p3", 10, Decision::Approved, 130)
        .await
        .unwrap()
        .unwrap();
    assert!(store.collect_pending("p3", 130).await.unwrap().is_none());

    // A cancellation is never collected; an expired sign-in never decided.
    store.create_pending(&pending("p4", 100)).await.unwrap();
    let p = store
        .decide_pending("p4", 10, Decision::WrongNumber, 130)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (p.decision, p.expires_at),
        (Some(Decision::WrongNumber), 100)
    );
    assert!(store.collect_pending("p4", 20).await.unwrap().is_none());
    store.create_pending(&pending("p5", 100)).await.unwrap();
    assert!(store
        .decide_pending("p5", 100, Decision::Approved, 300)
        .await
        .unwrap()
        .is_none());

    let ids: Vec<String> = ["p1", "p2", "p4", "p5", "nope"].map(String::from).into();
    let mut decided = store.decided_pending(&ids).await.unwrap();
    decided.sort();
    assert_eq!(decided, ["p1", "p2", "p4"]);
    // p3's approval (and p1's, if it was approved) was never collected:
    // counted when swept.
    let swept = store.sweep_pending(1_000).await.unwrap();
    let p1 = u64::from(won[0] == Decision::Approved);
    assert_eq!(swept.uncollected, 1 + p1, "{swept:?}");
}

fn request(id: &str, code: &str, expires_at: i64) -> DeviceRequest {
    DeviceRequest {
        id: id.into(),
        kind: RequestKind::Qr,
        user_code: code.into(),
        site: "wiki".into(),
        client_id: None,
        scope: String::new(),
        return_to: "https://wiki.example.com/".into(),
        asked_agent: "Firefox on Linux".into(),
        asked_net: "203.0.113.x".into(),
        created_at: 0,
        expires_at,
        decision: None,
        user_id: None,
        auth_method: None,
        collected: false,
    }
}

#[tokio::test]
async fn a_device_request_is_decided_once_by_one_account_and_collected_once() {
    let (_dir, store) = store().await;
    store
        .create_device_request(&request("r1", "c1", 300))
        .await
        .unwrap();
    // A user code names one live request.
    assert!(matches!(
        store.create_device_request(&request("r2", "c1", 300)).await,
        Err(StoreError::Exists)
    ));
    assert_eq!(
        store
            .device_request_by_code("c1")
            .await
            .unwrap()
            .unwrap()
            .id,
        "r1"
    );
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let user = UserId::from(format!("u{i}"));
                let decision = if i % 2 == 0 {
                    Decision::Approved
                } else {
                    Decision::Denied
                };
                store
                    .decide_device_request(
                        "r1",
                        10,
                        decision,
                        Some((&user, AuthMethod::Passkey)),
                        130,
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut won = vec![];
    for r in racers {
        won.extend(r.await.unwrap());
    }
    assert_eq!(won.len(), 1, "{won:?}");
    let r = store.device_request("r1").await.unwrap().unwrap();
    assert_eq!(r.decision, won[0].decision);
    if r.decision == Some(Decision::Approved) {
        assert_eq!(
            (r.expires_at, r.auth_method),
            (130, Some(AuthMethod::Passkey))
        );
        assert!(r.user_id.is_some());
    } else {
        assert_eq!(
            (r.expires_at, r.user_id),
            (300, None),
            "a cancellation names nobody"
        );
    }

    store
        .create_device_request(&request("r3", "c3", 300))
        .await
        .unwrap();
    assert!(
        store
            .collect_device_request("r3", 10)
            .await
            .unwrap()
            .is_none(),
        "not approved yet"
    );
    let user = UserId::from("u_ada".to_string());
    store
        .decide_device_request(
            "r3",
            10,
            Decision::Approved,
            Some((&user, AuthMethod::MagicLink)),
            130,
        )
        .await
        .unwrap()
        .unwrap();
    let racers: Vec<_> = (0..6)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.collect_device_request("r3", 20).await.unwrap() })
        })
        .collect();
    let mut collected = 0;
    for r in racers {
        collected += r.await.unwrap().is_some() as usize;
    }
    assert_eq!(collected, 1);
    // Expired: neither decided nor collected.
    store
        .create_device_request(&request("r4", "c4", 100))
        .await
        .unwrap();
    assert!(store
        .decide_device_request(
            "r4",
            100,
            Decision::Approved,
            Some((&user, AuthMethod::MagicLink)),
            200
        )
        .await
        .unwrap()
        .is_none());
    store
        .create_device_request(&request("r5", "c5", 300))
        .await
        .unwrap();
    store
        .decide_device_request(
            "r5",
            10,
            Decision::Approved,
            Some((&user, AuthMethod::MagicLink)),
            130,
        )
        .await
        .unwrap()
        .unwrap();
    assert!(store
        .collect_device_request("r5", 130)
        .await
        .unwrap()
        .is_none());

    let ids: Vec<String> = ["r1", "r3", "r4", "r5", "nope"].map(String::from).into();
    let mut decided = store.decided_device_requests(&ids).await.unwrap();
    decided.sort();
    assert_eq!(decided, ["r1", "r3", "r5"]);
    // r5's approval (and r1's, if approved) was never collected.
    let swept = store.sweep_device_requests(1_000).await.unwrap();
    let r1 = usize::from(won[0].decision == Some(Decision::Approved));
    assert_eq!(swept.len(), 1 + r1, "{swept:?}");
    assert!(swept.iter().all(|k| *k == RequestKind::Qr));
    assert!(store.device_request("r3").await.unwrap().is_none(), "swept");
}

#[tokio::test]
async fn browsers_are_remembered_per_account_the_newest_fifty() {
    let (_dir, store) = store().await;
    assert_eq!(
        store.remember_browser("u1", "b0", 0).await.unwrap(),
        BrowserSeen::First
    );
    assert_eq!(
        store.remember_browser("u1", "b0", 1).await.unwrap(),
        BrowserSeen::Known
    );
    assert_eq!(
        store.remember_browser("u2", "b0", 1).await.unwrap(),
        BrowserSeen::First,
        "per account"
    );
    for i in 1..=60 {
        let b = format!("b{i}");
        assert_eq!(
            store.remember_browser("u1", &b, i).await.unwrap(),
            BrowserSeen::New
        );
    }
    // The newest 50 are kept: b0 (the oldest) is forgotten, b60 is known.
    assert_eq!(
        store.remember_browser("u1", "b60", 99).await.unwrap(),
        BrowserSeen::Known
    );
    assert_eq!(
        store.remember_browser("u1", "b11", 99).await.unwrap(),
        BrowserSeen::Known
    );
    assert_eq!(
        store.remember_browser("u1", "b0", 100).await.unwrap(),
        BrowserSeen::New
    );
}

#[tokio::test]
async fn a_session_carries_the_users_identity_as_stored_and_ends_once() {
    let (_dir, store) = store().await;
    let ada = user("u_1", "ada@example.com", &["staff"]);
    store.add_user(&ada).await.unwrap();
    assert!(matches!(
        store.add_user(&ada).await,
        Err(StoreError::Exists)
    ));
    let s = store
        .create_session(&session("h1", &ada, 1_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        s.groups,
        vec!["staff".to_string()],
        "the user's, not the record's"
    );
    assert_eq!(s.name.as_deref(), Some("Ada"));
    assert_eq!(store.session("h1").await.unwrap().unwrap(), s);

    assert_eq!(
        store
            .list_sessions(Some(&ada.email), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .list_sessions(Some(&ada.email), 1_000)
            .await
            .unwrap()
            .is_empty(),
        "expired"
    );
    assert!(store.revoke_session("h1", 20).await.unwrap());
    assert!(!store.revoke_session("h1", 20).await.unwrap(), "once");
    assert!(store.session("h1").await.unwrap().unwrap().revoked);
    assert!(store.list_sessions(None, 10).await.unwrap().is_empty());

    // A disabled user gets no session, and loses the ones it had.
    store
        .create_session(&session("h2", &ada, 1_000))
        .await
        .unwrap()
        .unwrap();
    assert!(store.set_user_disabled(&ada.email, true, 30).await.unwrap());
    assert!(store.session("h2").await.unwrap().unwrap().revoked);
    assert!(store
        .create_session(&session("h3", &ada, 1_000))
        .await
        .unwrap()
        .is_none());
    assert!(!store
        .set_user_disabled(&email("nobody@example.com"), true, 30)
        .await
        .unwrap());
}

#[tokio::test]
async fn a_sessions_device_is_listed_and_not_carried_per_request() {
    let (_dir, store) = store().await;
    let ada = user("u_1", "ada@example.com", &[]);
    store.add_user(&ada).await.unwrap();
    let device = Device {
        agent: "Firefox on Linux".into(),
        client: "203.0.113.7".into(),
    };
    let with = SessionRecord {
        device: Some(Box::new(device.clone())),
        ..session("h1", &ada, 1_000)
    };
    store.create_session(&with).await.unwrap().unwrap();
    store
        .create_session(&session("h2", &ada, 1_000))
        .await
        .unwrap()
        .unwrap();
    let listed = store.list_sessions(Some(&ada.email), 10).await.unwrap();
    let of = |h: &str| listed.iter().find(|s| s.id_hash.as_str() == h).unwrap();
    assert_eq!(of("h1").device.as_deref(), Some(&device));
    assert_eq!(of("h2").device, None, "a session made without one");
    // A session looked up for a request does not carry it.
    assert_eq!(store.session("h1").await.unwrap().unwrap().device, None);
}

#[tokio::test]
async fn a_passkeys_counter_moves_by_compare_and_swap() {
    let (_dir, store) = store().await;
    let ada = user("u_1", "ada@example.com", &[]);
    store.add_user(&ada).await.unwrap();
    let record = PasskeyRecord {
        id: "cred".into(),
        user_id: ada.id.clone(),
        name: "Passkey".into(),
        credential: "{}".into(),
        counter: 1,
        backup_eligible: true,
        backup_state: true,
        created_at: 0,
        last_used_at: None,
    };
    store.add_passkey(&record).await.unwrap();
    let next = PasskeyRecord {
        counter: 2,
        ..record.clone()
    };
    assert!(store.passkey_used(&next, 1, 50).await.unwrap());
    // A second sign-in that read counter 1 too loses.
    assert!(!store.passkey_used(&next, 1, 51).await.unwrap());
    let now = store.passkey("cred").await.unwrap().unwrap();
    assert_eq!((now.counter, now.last_used_at), (2, Some(50)));
    // Only its owner renames or deletes it.
    assert!(!store
        .rename_passkey("u_other", "cred", "Mine")
        .await
        .unwrap());
    assert!(store
        .rename_passkey(&ada.id, "cred", "Laptop")
        .await
        .unwrap());
    assert!(!store.delete_passkey("u_other", "cred").await.unwrap());
    assert!(store.delete_passkey(&ada.id, "cred").await.unwrap());
    assert!(store.passkeys_of(&ada.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_ceremony_is_taken_once_and_not_after_it_expires() {
    let (_dir, store) = store().await;
    let ceremony = |id: &str| Ceremony {
        id: id.into(),
        kind: CeremonyKind::Discoverable,
        user_id: None,
        state: "{}".into(),
        return_to: String::new(),
        expires_at: 100,
    };
    store.put_ceremony(&ceremony("c1")).await.unwrap();
    store.put_ceremony(&ceremony("c2")).await.unwrap();
    let taken = store.take_ceremony("c1", 10).await.unwrap().unwrap();
    assert_eq!(taken.kind, CeremonyKind::Discoverable);
    assert!(store.take_ceremony("c1", 10).await.unwrap().is_none());
    assert!(store.take_ceremony("c2", 100).await.unwrap().is_none());
}

#[tokio::test]
async fn rate_limit_hits_count_per_key_and_window() {
    let (_dir, store) = store().await;
    for n in 1..=3 {
        assert_eq!(store.count_hit("email:a", 0).await.unwrap(), n);
    }
    assert_eq!(store.count_hit("email:b", 0).await.unwrap(), 1);
    assert_eq!(store.count_hit("email:a", 60).await.unwrap(), 1);
    assert_eq!(
        store.hits("email:a", 0).await.unwrap(),
        3,
        "reading counts nothing"
    );
    assert_eq!(store.hits("email:c", 0).await.unwrap(), 0);
    store.sweep_rate_limits(60).await.unwrap();
    assert_eq!(store.hits("email:a", 0).await.unwrap(), 0);
    assert_eq!(store.hits("email:a", 60).await.unwrap(), 1);
}

#[tokio::test]
async fn the_first_secret_written_is_everyones() {
    let (_dir, store) = store().await;
    let first = store.ensure_secret("s", &[1; 32], 0).await.unwrap();
    let second = store.ensure_secret("s", &[2; 32], 1).await.unwrap();
    assert_eq!(first, vec![1; 32]);
    assert_eq!(second, first);
}
