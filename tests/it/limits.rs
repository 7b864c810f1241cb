//! Who may ask, rate limits, and what oversized or malformed input gets.

use crate::helpers::*;

store_tests! {
async fn unknown_address_gets_the_same_page_and_no_mail() {
    let app = spawn_with(Options {
        signup: "closed",
        ..Default::default()
    })
    .await;
    let store = app.store.open().await;
    store
        .add_user(&sesame::store::User {
            id: "u_known".into(),
            email: sesame::email::Email::parse("known@example.com").unwrap(),
            name: Some("Known Person".into()),
            groups: vec!["staff".into(), "ops".into()],
            disabled: false,
            created_at: 0,
        })
        .await
        .unwrap();

    let page = |email: &'static str| {
        let app = &app;
        async move {
            let r = app
                .post_form(
                    &browser(),
                    "/.sesame/login",
                    &[("email", email), ("rd", "/")],
                )
                .await;
            let status = r.status();
            let cookies: Vec<String> = cookies_set(&r).into_keys().collect();
            (
                status,
                cookies,
                without_number(&r.text().await.unwrap().replace(email, "EMAIL")),
            )
        }
    };
    let known = page("known@example.com").await;
    let unknown = page("stranger@example.com").await;
    assert_eq!(known, unknown, "same status, cookies and page");
    app.mail.wait_for("known@example.com", 0).await;
    // The stranger's sign-in is handled to its end (its decoy is stored, the
    // last step of that path), and a later mail has gone out since.
    app.store.wait_for_rows("pending_logins", 2).await;
    app.post_form(&browser(), "/.sesame/login", &[("email", "known@example.com")])
        .await;
    app.mail.wait_for("known@example.com", 1).await;
    assert_eq!(
        app.mail.count_to("stranger@example.com"),
        0,
        "no mail to an unknown address"
    );

    // The known user signs in and the app gets their name and groups.
    let b = browser();
    app.sign_in(&b, "KNOWN@example.com").await;
    b.get(app.url("/x")).send().await.unwrap();
    let seen = app.upstream.last();
    assert_eq!(seen.header("remote-user").as_deref(), Some("u_known"));
    assert_eq!(seen.header("remote-name").as_deref(), Some("Known Person"));
    assert_eq!(seen.header("remote-groups").as_deref(), Some("staff,ops"));
}

async fn names_and_groups_beyond_ascii_reach_the_app_as_utf8() {
    let app = spawn().await;
    let (ok, _, err) = app.cli(&[
        "user", "add", "zoe@example.com", "--name", "Zoë Ångström 山田", "--group", "Équipe", "--group", "ops",
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = app.cli(&["user", "set-groups", "zoe@example.com", "--group", "tab\there"]);
    assert!(!ok);
    assert!(err.contains("control character"), "{err}");

    let b = browser();
    let session = cookies_set(&app.sign_in(&b, "zoe@example.com").await)["sesame"].clone();
    assert_eq!(b.get(app.url("/x")).send().await.unwrap().status(), 200);
    let seen = app.upstream.last();
    assert_eq!(seen.header("remote-name").as_deref(), Some("Zoë Ångström 山田"));
    assert_eq!(seen.header("remote-groups").as_deref(), Some("Équipe,ops"));

    // The forward-auth answer carries the same bytes.
    let r = app.forward_auth(&session, "/x").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["remote-name"].as_bytes(), "Zoë Ångström 山田".as_bytes());
    assert_eq!(r.headers()["remote-groups"].as_bytes(), "Équipe,ops".as_bytes());

    // A row edited by hand with a control character: that value is left
    // out, never altered (`adm\x01in` must not arrive as `admin`).
    app.store
        .open()
        .await
        .add_user(&sesame::store::User {
            id: "u_hand".into(),
            email: sesame::email::Email::parse("hand@example.com").unwrap(),
            name: Some("Bad\u{7}Name".into()),
            groups: vec!["adm\u{1}in".into(), "ops".into()],
            disabled: false,
            created_at: 0,
        })
        .await
        .unwrap();
    let b = browser();
    app.sign_in(&b, "hand@example.com").await;
    assert_eq!(b.get(app.url("/x")).send().await.unwrap().status(), 200);
    let seen = app.upstream.last();
    assert_eq!(seen.header("remote-user").as_deref(), Some("u_hand"));
    assert_eq!(seen.header("remote-name"), None);
    assert_eq!(seen.header("remote-groups").as_deref(), Some("ops"));
}

async fn bad_addresses_get_400() {
    let app = spawn().await;
    for bad in [
        "ada",
        "ada@@example.com",
        "a@b@example.com",
        "ada@example.com\r\nBcc: x@y.z",
        "ada\0@example.com",
    ] {
        let r = app
            .post_form(&browser(), "/.sesame/login", &[("email", bad)])
            .await;
        assert_eq!(r.status(), 400, "{bad:?}");
    }
    let long = format!("{}@example.com", "a".repeat(250));
    assert_eq!(
        app.post_form(&browser(), "/.sesame/login", &[("email", &long)])
            .await
            .status(),
        400
    );
    // A later, valid request's mail goes out: none came before it.
    app.post_form(&browser(), "/.sesame/login", &[("email", "ada@example.com")])
        .await;
    app.mail.wait_for("ada@example.com", 0).await;
    let to: Vec<Vec<String>> = app.mail.all().into_iter().map(|m| m.to).collect();
    assert_eq!(to, [["ada@example.com"]], "no mail for a refused address");
}

async fn per_address_limit_is_exact_under_parallel_requests() {
    let app = std::sync::Arc::new(spawn().await);
    app.window_left_at_least(FIFTEEN_MINUTES, std::time::Duration::from_secs(60));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let r = app
                    .post_form(
                        &browser(),
                        "/.sesame/login",
                        &[("email", "flood@example.com")],
                    )
                    .await;
                (
                    r.status().as_u16(),
                    r.headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_string()),
                )
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(
        results.iter().filter(|(s, _)| *s == 200).count(),
        5,
        "{results:?}"
    );
    for (s, retry) in &results {
        if *s == 429 {
            let secs: u64 = retry.as_ref().expect("Retry-After").parse().unwrap();
            assert!((1..=900).contains(&secs));
        }
    }
    let m = app.metrics().await;
    assert_eq!(
        TestApp::metric(&m, "sesame_rate_limited_total{key=\"email\"}"),
        15.0
    );
}

async fn per_client_limit() {
    let app = spawn_with(Options {
        per_client: 10,
        ..Default::default()
    })
    .await;
    app.window_left_at_least(FIFTEEN_MINUTES, std::time::Duration::from_secs(60));
    // Distinct addresses, so only the client's limit applies.
    let mut statuses = Vec::new();
    for i in 0..15 {
        let r = app
            .post_form(
                &browser(),
                "/.sesame/login",
                &[("email", &format!("c{i}@example.com"))],
            )
            .await;
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [vec![200; 10], vec![429; 5]].concat());
    let m = app.metrics().await;
    assert_eq!(TestApp::metric(&m, "sesame_rate_limited_total{key=\"client\"}"), 5.0);
}

async fn oversized_headers_and_bodies() {
    let app = spawn().await;
    let r = browser()
        .get(app.url("/.sesame/login"))
        .header("X-Big", "a".repeat(20 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let big = "a".repeat(20 * 1024);
    let r = app
        .post_form(
            &browser(),
            "/.sesame/login",
            &[("email", "x@example.com"), ("pad", &big)],
        )
        .await;
    assert_eq!(r.status(), 413);
    // Chunked, without a length: cut off at the limit as well.
    let body = reqwest::Body::wrap_stream(futures::stream::iter(
        (0..40).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'a'; 1024]))),
    ));
    let r = browser()
        .post(app.url("/.sesame/login"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_come_gets_408_not_a_held_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn().await;
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    // The headers promise a body of 100 bytes; 10 of them ever come.
    c.write_all(
        format!(
            "POST /.sesame/login HTTP/1.1\r\nHost: localhost:{}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nemail=a%40",
            app.port
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        c.read_to_end(&mut answer),
    )
    .await;
    assert!(
        read.is_ok(),
        "no answer and the connection still open after 30 s"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request body too slow"), "{answer}");
}
