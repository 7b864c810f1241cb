//! Each step and state of sign-in by email, on the core's test rig
//! (`testing.rs`): a real SQLite file, a clock the tests move, the mail
//! caught by a recording mailer and the link and code read out of it.

use std::time::Duration;

use super::pending::PendingState;
use super::*;
use crate::testing::{wrong, Rig, CLIENT};

#[tokio::test]
async fn a_link_goes_issued_viewed_consumed_and_works_once() {
    let rig = Rig::new(Signup::Open).await;
    let m = rig.ask("ada@example.com").await;
    assert_eq!(rig.state(&m.pending_id).await, PendingState::Issued);

    let shown = rig.sign_in().confirm(rig.site(0), &m.token).await.unwrap();
    assert_eq!(shown.pending_id, m.pending_id);
    assert_eq!(shown.masked_email, "a…@example.com");
    assert_eq!(rig.state(&m.pending_id).await, PendingState::Viewed);

    let done = rig
        .sign_in()
        .consume_link(rig.site(0), &m.token)
        .await
        .unwrap();
    assert_eq!(done.user.email.as_str(), "ada@example.com");
    assert_eq!(done.session.record.auth_method, AuthMethod::MagicLink);
    assert_eq!(done.return_to, "https://wiki.example.com/");
    assert_eq!(rig.state(&m.pending_id).await, PendingState::Consumed);
    assert_eq!(rig.metrics.sessions_created.get(), 1);
    assert_eq!(rig.counted("magic_link", "ok"), 1);

    // Consumed: neither the link, its confirm page nor the code works again.
    let again = rig.sign_in().consume_link(rig.site(0), &m.token).await;
    assert!(matches!(again, Err(SignInError::LinkUsed)), "{again:?}");
    let page = rig.sign_in().confirm(rig.site(0), &m.token).await;
    assert!(matches!(page, Err(SignInError::LinkUsed)), "{page:?}");
    let code = rig
        .sign_in()
        .consume_code(rig.site(0), Some(&m.pending_id), &m.code)
        .await;
    assert!(matches!(code, Err(SignInError::CodeGone)), "{code:?}");
    assert_eq!(rig.counted("magic_link", "gone"), 2);
    assert_eq!(rig.metrics.sessions_created.get(), 1);
}

#[tokio::test]
async fn wrong_codes_count_down_to_locked_and_the_link_still_works() {
    let rig = Rig::new(Signup::Open).await;
    let max = rig.config.magic_link.code_attempts;
    let m = rig.ask("bob@example.com").await;
    let bad = wrong(&m.code);
    for n in 1..=max {
        let r = rig
            .sign_in()
            .consume_code(rig.site(0), Some(&m.pending_id), &bad)
            .await;
        match r {
            Err(SignInError::CodeWrong {
                attempts_left,
                email,
                ..
            }) => {
                assert_eq!(attempts_left, max - n);
                assert_eq!(email.as_str(), "bob@example.com");
            }
            other => panic!("attempt {n}: {other:?}"),
        }
        let expected = if n < max {
            PendingState::Attempted(n)
        } else {
            PendingState::Locked
        };
        assert_eq!(rig.state(&m.pending_id).await, expected);
    }
    // Locked: even the right code is refused, without another attempt.
    let right = rig
        .sign_in()
        .consume_code(rig.site(0), Some(&m.pending_id), &m.code)
        .await;
    assert!(matches!(right, Err(SignInError::CodeGone)), "{right:?}");
    let p = rig.store.pending(&m.pending_id).await.unwrap().unwrap();
    assert_eq!(p.attempts, max);
    assert_eq!(rig.counted("code", "wrong"), u64::from(max));
    // ... while the link signs in.
    let done = rig
        .sign_in()
        .consume_link(rig.site(0), &m.token)
        .await
        .unwrap();
    assert_eq!(done.user.email.as_str(), "bob@example.com");
}

#[tokio::test]
async fn the_right_code_signs_in_after_a_wrong_one() {
    let rig = Rig::new(Signup::Open).await;
    let m = rig.ask("cy@example.com").await;
    let r = rig
        .sign_in()
        .consume_code(rig.site(0), Some(&m.pending_id), &wrong(&m.code))
        .await;
    assert!(matches!(r, Err(SignInError::CodeWrong { .. })), "{r:?}");
    let spaced = format!("{} {}", &m.code[..3], &m.code[3..]);
    let done = rig
        .sign_in()
        .consume_code(rig.site(0), Some(&m.pending_id), &spaced)
        .await
        .unwrap();
    assert_eq!(done.session.record.auth_method, AuthMethod::Code);
    assert_eq!(rig.state(&m.pending_id).await, PendingState::Consumed);
    // The link of a sign-in its code consumed is used up.
    let link = rig.sign_in().consume_link(rig.site(0), &m.token).await;
    assert!(matches!(link, Err(SignInError::LinkUsed)), "{link:?}");
    assert_eq!(rig.counted("code", "ok"), 1);
}

#[tokio::test]
async fn time_expires_the_link_and_the_code() {
    let rig = Rig::new(Signup::Open).await;
    let m = rig.ask("dee@example.com").await;
    rig.clock.advance(rig.config.magic_link.ttl);
    assert_eq!(rig.state(&m.pending_id).await, PendingState::Expired);
    let link = rig.sign_in().consume_link(rig.site(0), &m.token).await;
    assert!(matches!(link, Err(SignInError::LinkExpired)), "{link:?}");
    let page = rig.sign_in().confirm(rig.site(0), &m.token).await;
    assert!(matches!(page, Err(SignInError::LinkExpired)), "{page:?}");
    let code = rig
        .sign_in()
        .consume_code(rig.site(0), Some(&m.pending_id), &m.code)
        .await;
    assert!(matches!(code, Err(SignInError::CodeGone)), "{code:?}");
    let p = rig.store.pending(&m.pending_id).await.unwrap().unwrap();
    assert_eq!(p.attempts, 0, "an expired sign-in counts no attempt");
    assert_eq!(rig.counted("magic_link", "expired"), 2);
    assert_eq!(rig.metrics.sessions_created.get(), 0);
}

#[tokio::test]
async fn a_link_or_code_is_for_the_site_it_was_asked_on() {
    let rig = Rig::new(Signup::Open).await;
    let m = rig.ask("eve@example.com").await;
    let link = rig.sign_in().consume_link(rig.site(1), &m.token).await;
    assert!(matches!(link, Err(SignInError::LinkInvalid)), "{link:?}");
    let code = rig
        .sign_in()
        .consume_code(rig.site(1), Some(&m.pending_id), &m.code)
        .await;
    assert!(matches!(code, Err(SignInError::CodeElsewhere)), "{code:?}");
    // Costs nothing on the site it was asked on.
    assert_eq!(rig.state(&m.pending_id).await, PendingState::Issued);
    let done = rig
        .sign_in()
        .consume_code(rig.site(0), Some(&m.pending_id), &m.code)
        .await
        .unwrap();
    assert_eq!(done.user.email.as_str(), "eve@example.com");
}

#[tokio::test]
async fn a_code_needs_the_browser_that_asked_and_six_digits() {
    let rig = Rig::new(Signup::Open).await;
    let m = rig.ask("fay@example.com").await;
    let none = rig.sign_in().consume_code(rig.site(0), None, &m.code).await;
    assert!(matches!(none, Err(SignInError::CodeElsewhere)), "{none:?}");
    let short = rig
        .sign_in()
        .consume_code(rig.site(0), Some(&m.pending_id), "12345")
        .await;
    assert!(
        matches!(short, Err(SignInError::CodeMalformed)),
        "{short:?}"
    );
    assert_eq!(rig.state(&m.pending_id).await, PendingState::Issued);
    assert_eq!(rig.counted("code", "no_pending"), 1);
    assert_eq!(rig.counted("code", "invalid"), 1);
}

#[tokio::test]
async fn a_forged_link_is_invalid() {
    let rig = Rig::new(Signup::Open).await;
    let m = rig.ask("gus@example.com").await;
    let mut forged = m.token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let r = rig.sign_in().consume_link(rig.site(0), &forged).await;
    assert!(matches!(r, Err(SignInError::LinkInvalid)), "{r:?}");
    assert_eq!(rig.state(&m.pending_id).await, PendingState::Issued);
}

#[tokio::test]
async fn an_address_signup_refuses_gets_a_decoy_no_code_opens() {
    let rig = Rig::new(Signup::Closed).await;
    let id = rig.ask_only("mallory@example.com").await;
    // Stored as any sign-in is, so the code form answers alike; never mailed.
    assert_eq!(rig.state(&id).await, PendingState::Issued);
    assert!(rig.mail.lock().await.try_recv().is_err());
    let mut answers = Vec::new();
    for code in ["000000", "123456", "999999"] {
        answers.push(
            rig.sign_in()
                .consume_code(rig.site(0), Some(&id), code)
                .await,
        );
    }
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, Err(SignInError::CodeWrong { .. }))),
        "{answers:?}"
    );
    assert_eq!(rig.metrics.sessions_created.get(), 0);
}

#[tokio::test]
async fn signup_decides_first_sign_ins_and_a_disabled_user_is_refused() {
    let rig = Rig::new(Signup::Domains(vec!["example.com".into()])).await;
    let m = rig.ask("new@example.com").await;
    let done = rig
        .sign_in()
        .consume_link(rig.site(0), &m.token)
        .await
        .unwrap();
    assert!(done.user.id.starts_with("u_"));
    let stored = rig
        .store
        .user_by_email(&done.user.email)
        .await
        .unwrap()
        .expect("created on first sign-in");
    assert_eq!(stored.id, done.user.id);

    // Disabled between asking and using the link.
    rig.add_user("old@example.com").await;
    let m = rig.ask("old@example.com").await;
    rig.store
        .set_user_disabled(
            &Email::parse("old@example.com").unwrap(),
            true,
            rig.clock.now(),
        )
        .await
        .unwrap();
    let r = rig.sign_in().consume_link(rig.site(0), &m.token).await;
    assert!(matches!(r, Err(SignInError::NotAllowed)), "{r:?}");
    assert_eq!(rig.counted("magic_link", "not_allowed"), 1);
}

#[tokio::test]
async fn asking_is_limited_per_address_and_per_client() {
    let rig = Rig::new(Signup::Open).await;
    let email = Email::parse("hal@example.com").unwrap();
    let per_email = rig.config.rate_limit.per_email;
    for _ in 0..per_email {
        rig.sign_in().request(&email, CLIENT).await.unwrap();
    }
    match rig.sign_in().request(&email, CLIENT).await {
        Err(SignInError::Limited {
            kind: LimitKind::Email,
            retry_after,
        }) => assert!(retry_after > 0),
        other => panic!("{other:?}"),
    }
    // The window passes: asking works again.
    rig.clock.advance(rig.config.rate_limit.window);
    rig.sign_in().request(&email, CLIENT).await.unwrap();

    let per_client = rig.config.rate_limit.per_client;
    let mut limited = None;
    for i in 0..=per_client {
        let other = Email::parse(&format!("p{i}@example.com")).unwrap();
        if let Err(e) = rig.sign_in().request(&other, CLIENT).await {
            limited = Some((i, e));
            break;
        }
    }
    match limited {
        // One request of this client was already counted in this window.
        Some((i, SignInError::Limited { kind, .. })) => {
            assert_eq!(kind, LimitKind::Client);
            assert_eq!(i, per_client - 1);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_daily_code_budget_stops_guesses_across_sign_ins() {
    let rig = Rig::new(Signup::Open).await;
    let budget = rig.config.rate_limit.codes_per_email_per_day;
    let max = rig.config.magic_link.code_attempts;
    // An hour into a UTC day: the test's few windows stay in that day (the
    // budget's estimate counts part of the day before).
    let now = rig.clock.now();
    rig.clock.advance(Duration::from_secs(
        (86_400 - now.rem_euclid(86_400) + 3_600) as u64,
    ));
    let mut typed = 0;
    let limited = 'outer: loop {
        // A new sign-in per `max` guesses, as an attacker would ask.
        rig.clock.advance(rig.config.rate_limit.window);
        let m = rig.ask("ivy@example.com").await;
        for _ in 0..max {
            match rig
                .sign_in()
                .consume_code(rig.site(0), Some(&m.pending_id), &wrong(&m.code))
                .await
            {
                Err(SignInError::CodeWrong { .. }) => typed += 1,
                Err(SignInError::Limited { kind, .. }) => break 'outer (kind, m),
                other => panic!("{other:?}"),
            }
        }
        assert!(typed <= budget, "{typed} codes typed, budget {budget}");
    };
    assert_eq!(limited.0, LimitKind::Code);
    assert_eq!(typed, budget);
    // Past the budget even the right code is not looked at; the link works.
    let m = limited.1;
    let right = rig
        .sign_in()
        .consume_code(rig.site(0), Some(&m.pending_id), &m.code)
        .await;
    assert!(
        matches!(
            right,
            Err(SignInError::Limited {
                kind: LimitKind::Code,
                ..
            })
        ),
        "{right:?}"
    );
    rig.sign_in()
        .consume_link(rig.site(0), &m.token)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_session_for_a_user_disabled_since_it_was_read_is_not_started() {
    let rig = Rig::new(Signup::Closed).await;
    rig.add_user("jo@example.com").await;
    let user = rig
        .store
        .user_by_email(&Email::parse("jo@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    let s = rig
        .sign_in()
        .start_session(
            rig.site(0),
            &user,
            AuthMethod::Passkey,
            StartedBy::Passkey("cred"),
        )
        .await
        .unwrap();
    assert_eq!(s.record.user_id, user.id);
    assert_eq!(rig.metrics.sessions_created.get(), 1);
    rig.store
        .set_user_disabled(&user.email, true, rig.clock.now())
        .await
        .unwrap();
    let r = rig
        .sign_in()
        .start_session(
            rig.site(0),
            &user,
            AuthMethod::Passkey,
            StartedBy::Passkey("cred"),
        )
        .await;
    assert!(matches!(r, Err(SignInError::NotAllowed)), "{r:?}");
    assert_eq!(rig.metrics.sessions_created.get(), 1);
}
