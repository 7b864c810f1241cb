//! Ordered path rules per site: allow by group, deny, public; matched on
//! the normalised path, and the app receives exactly the path checked.

use crate::helpers::*;

const RULES: &str = r#"
[[site.rule]]
path = "/admin"
allow_groups = ["ops"]
[[site.rule]]
path = "/blocked"
action = "deny"
[[site.rule]]
path = "/open"
action = "public"
"#;

async fn get(port: u16, path: &str, cookie: Option<&str>) -> u16 {
    let cookie = cookie
        .map(|c| format!("Cookie: sesame={c}\r\n"))
        .unwrap_or_default();
    raw_request(
        port,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\n{cookie}Connection: close\r\n\r\n"
        ),
    )
    .await
    .0
}

store_tests! {
async fn first_matching_rule_decides_on_the_normalised_path() {
    let app = spawn_with(Options { site0: RULES.into(), ..Default::default() }).await;
    let store = app.store.open().await;
    store
        .add_user(&sesame::store::User {
            id: "u_ops".into(),
            email: sesame::email::Email::parse("ops@example.com").unwrap(),
            name: None,
            groups: vec!["ops".into()],
            disabled: false,
            created_at: 0,
        })
        .await
        .unwrap();
    let ada = cookies_set(&app.sign_in(&browser(), "ada@example.com").await)["sesame"].clone();
    let ops = cookies_set(&app.sign_in(&browser(), "ops@example.com").await)["sesame"].clone();

    // Anonymous.
    assert_eq!(get(app.port, "/open/page", None).await, 200);
    assert_eq!(get(app.port, "/admin", None).await, 401);
    assert_eq!(get(app.port, "/blocked", None).await, 401);
    assert_eq!(get(app.port, "/docs", None).await, 401);
    // Also as Java servers read `;params` (cut before `..` is resolved) and
    // as case-blind servers read `/ADMIN`.
    for sneaky in ["/open/../admin", "/open/%2e%2e/admin", "/open/..%2fadmin", "//open/../admin/x", "/open/./../admin",
                   "/open/..;/admin", "/open/..;x/admin/users", "/open/..%3b/admin", "/open/.;/../admin", "/OPEN/page"] {
        assert_eq!(get(app.port, sneaky, None).await, 401, "{sneaky}");
    }
    assert_eq!(get(app.port, "/open/%252e%252e/admin", None).await, 400, "double encoding");

    // Signed in without the group: the admin rule says no; others pass.
    assert_eq!(get(app.port, "/docs", Some(&ada)).await, 200);
    assert_eq!(get(app.port, "/admin/users", Some(&ada)).await, 403);
    assert_eq!(get(app.port, "/blocked/x", Some(&ada)).await, 403);
    for sneaky in ["/admin;x", "/admin;jsessionid=1/users", "/Admin", "/ADMIN/users", "/BLOCKED", "/docs/..;/admin"] {
        assert_eq!(get(app.port, sneaky, Some(&ada)).await, 403, "{sneaky}");
    }
    // Parameters and case that change no rule pass as they are.
    assert_eq!(get(app.port, "/docs/page;jsessionid=1", Some(&ada)).await, 200);
    assert_eq!(app.upstream.last().path, "/docs/page;jsessionid=1");
    assert_eq!(get(app.port, "/Docs/Page", Some(&ada)).await, 200);
    let r = browser()
        .get(app.url("/admin"))
        .header("Cookie", format!("sesame={ada}"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let page = r.text().await.unwrap();
    assert!(page.contains("ada@example.com") && page.contains("action=\"/.sesame/logout\""), "{page}");

    // With the group: in, and the app gets exactly the path checked.
    assert_eq!(get(app.port, "/admin/users", Some(&ops)).await, 200);
    assert_eq!(app.upstream.last().path, "/admin/users");
    assert_eq!(get(app.port, "/open/..%2fadmin/./x//y?q=1", Some(&ops)).await, 200);
    assert_eq!(app.upstream.last().path, "/admin/x/y?q=1");
    assert_eq!(get(app.port, "/blocked", Some(&ops)).await, 403, "deny is for everybody");
    assert_eq!(get(app.port, "/docs/a%20b", Some(&ops)).await, 200);
    assert_eq!(app.upstream.last().path, "/docs/a%20b");
    assert!(app.upstream.seen().iter().all(|s| !s.path.contains("..")));
}

async fn bad_rules_are_refused_with_their_key() {
    let bad = r#"
[[site]]
public_url = "https://a.example.com"
upstream = ["127.0.0.1:1"]
[[site.rule]]
action = "deny"
[[site.rule]]
path = "relative"
[[site.rule]]
path = "/x"
action = "public"
allow_groups = ["ops"]
[[site.rule]]
path = "/y"
allow_emails = ["not-an-email"]
"#;
    let err = sesame::config::Config::from_toml(bad).unwrap_err().to_string();
    for key in ["site[0].rule[0].path", "site[0].rule[1].path", "site[0].rule[2].action", "site[0].rule[3].allow_emails[0]"] {
        assert!(err.contains(key), "{key} in {err}");
    }
}
}
