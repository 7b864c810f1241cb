//! `[server] access_log`: one JSON line per request, written by a real
//! gateway to a real file.

use serde_json::Value;

use crate::helpers::*;

/// The file's lines, once one of them matches `wanted` (the writer
/// flushes as soon as its queue is empty, after each answer is sent).
async fn line_where(path: &std::path::Path, wanted: impl Fn(&Value) -> bool) -> Value {
    let start = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if let Some(l) = lines.into_iter().find(&wanted) {
            return l;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "no such line after 10 s:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn at(path: &'static str) -> impl Fn(&Value) -> bool {
    move |l: &Value| l["path"] == path
}

async fn logging_app(dir: &tempfile::TempDir, site0: &str) -> (TestApp, std::path::PathBuf) {
    let path = dir.path().join("access.log");
    let app = spawn_with(Options {
        server: format!("access_log = {:?}", path.display().to_string()),
        site0: site0.into(),
        ..Default::default()
    })
    .await;
    (app, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_one_json_line_without_queries_or_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let (app, path) = logging_app(&dir, "").await;
    let b = browser();
    // Signed in by the emailed link: the confirm page is opened with the
    // token in its query.
    let mail = app.ask_link(&b, "ada@example.com", "/").await;
    let token = mail.token();
    let r = b.get(mail.link()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    app.post_form(&b, "/.sesame/magic", &[("token", &token)])
        .await;

    let r = b
        .get(app.url("/docs/a?secret=hunter2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = browser()
        .get(app.url("/private"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let r = browser().get(app.url("/public/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = browser()
        .get(format!("http://127.0.0.1:{}/nowhere", app.port))
        .header("host", "nowhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let allowed = line_where(&path, at("/docs/a")).await;
    assert_eq!(allowed["site"], "Test app");
    assert_eq!(allowed["method"], "GET");
    assert_eq!(allowed["status"], 200);
    assert_eq!(allowed["outcome"], "allowed");
    assert!(
        allowed["user"].as_str().unwrap().starts_with("u_"),
        "{allowed}"
    );
    assert_eq!(allowed["client"], "127.0.0.1");
    assert_eq!(allowed["upstream"], app.upstream.addr.to_string());
    assert!(allowed["duration_ms"].as_f64().unwrap() > 0.0, "{allowed}");
    assert!(
        allowed["time"].as_str().unwrap().ends_with('Z'),
        "{allowed}"
    );
    assert!(
        allowed.get("app_path").is_none(),
        "the same path: {allowed}"
    );

    let login = line_where(&path, at("/private")).await;
    assert_eq!(login["outcome"], "login_redirect");
    assert_eq!(login["status"], 302);
    assert_eq!(login["user"], Value::Null);
    assert_eq!(login["upstream"], Value::Null);
    let public = line_where(&path, at("/public/x")).await;
    assert_eq!(public["outcome"], "public");
    assert_eq!(public["user"], Value::Null);
    let unknown = line_where(&path, at("/nowhere")).await;
    assert_eq!(unknown["site"], Value::Null);
    assert_eq!(unknown["outcome"], "unknown_site");
    assert_eq!(unknown["status"], 404);
    // Sesame's own pages: the confirm page opened from the email.
    let confirm = line_where(&path, |l| {
        l["path"] == "/.sesame/magic" && l["method"] == "GET"
    })
    .await;
    assert_eq!(confirm["outcome"], "endpoint");
    assert_eq!(confirm["status"], 200);

    // Neither the token (in the link's query and the form), the query
    // above, nor the address.
    let text = std::fs::read_to_string(&path).unwrap();
    for secret in [token.as_str(), "hunter2", "ada@example.com"] {
        assert!(
            !text.contains(secret),
            "{secret} in the access log:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_path_sent_the_path_the_app_got_and_who_was_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (app, path) = logging_app(&dir, "allow_emails = [\"boss@example.com\"]").await;
    // The site has public paths, so paths are made normal for the app.
    let r = browser()
        .get(app.url("/public//x//y"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.upstream.last().path, "/public/x/y");
    let line = line_where(&path, at("/public//x//y")).await;
    assert_eq!(line["app_path"], "/public/x/y");

    // Someone the site does not admit: refused, and named.
    let b = browser();
    app.sign_in(&b, "ada@example.com").await;
    let r = b.get(app.url("/secret")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let refused = line_where(&path, at("/secret")).await;
    assert_eq!(refused["outcome"], "denied");
    assert!(
        refused["user"].as_str().unwrap().starts_with("u_"),
        "{refused}"
    );
    assert_eq!(refused["upstream"], Value::Null);
    assert!(
        refused.get("app_path").is_none(),
        "not sent to the app: {refused}"
    );

    // A path of a megabyte is cut, the line still whole.
    let long = format!("/public/{}", "a".repeat(20_000));
    let r = browser().get(app.url(&long)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cut = line_where(&path, |l| {
        l["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/public/aaaa"))
    })
    .await;
    let p = cut["path"].as_str().unwrap();
    assert!(p.len() < 1100 && p.ends_with('…'), "{}", p.len());
}
