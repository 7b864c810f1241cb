//! Envoy's `ext_authz` HTTP service contract, asked the way Envoy asks it.
//!
//! No Envoy can be installed from the registries this project reaches, so
//! the check requests are made as Envoy's HTTP authorization client makes
//! them (`RawHttpClientImpl::check` in Envoy's
//! `source/extensions/filters/common/ext_authz/ext_authz_http_impl.cc`):
//! the original method, the original `Host`, the original path and query
//! appended to `path_prefix`, `Content-Length: 0` and no body, and of the
//! client's other headers only those in `allowed_headers` (here `cookie`,
//! and `accept` where a test says so), plus what Envoy adds itself
//! (`x-forwarded-proto`, `x-request-id`, `x-envoy-expected-rq-timeout-ms`).
//! Envoy then lets a `200` through, copying `allowed_upstream_headers` and
//! removing `x-envoy-auth-headers-to-remove`, and sends anything else to the
//! client as it is.

use serde_json::Value;

use crate::helpers::*;

/// What Sesame answered a check.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn status(&self) -> u16 {
        self.status
    }
    fn headers(&self) -> &reqwest::header::HeaderMap {
        &self.headers
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// The names in `x-envoy-auth-headers-to-remove`, as Envoy splits them.
fn to_remove(r: &Answer) -> Vec<String> {
    r.headers()["x-envoy-auth-headers-to-remove"]
        .to_str()
        .unwrap()
        .split(',')
        .map(|n| n.trim().to_string())
        .collect()
}

/// An Envoy check of `method original` on `host`, with the client's session
/// cookie (`allowed_headers: cookie`) and `accept` if given: written on the
/// wire as Envoy writes it (an HTTP client library would add headers of
/// its own, such as `Accept: */*`).
async fn check(
    app: &TestApp,
    method: &str,
    host: &str,
    original: &str,
    session: Option<&str>,
    accept: Option<&str>,
) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = format!(
        "{method} /.sesame/ext-authz{original} HTTP/1.1\r\nhost: {host}\r\ncontent-length: 0\r\n\
         x-forwarded-proto: http\r\nx-request-id: 5f1c7c1e-2d2a-4c59-9a0e-3c1c1c1c1c1c\r\n\
         x-envoy-expected-rq-timeout-ms: 250\r\nconnection: close\r\n"
    );
    if let Some(s) = session {
        request += &format!("cookie: sesame={s}\r\n");
    }
    if let Some(a) = accept {
        request += &format!("accept: {a}\r\n");
    }
    request += "\r\n";
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let mut headers = reqwest::header::HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers.append(
                reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
                reqwest::header::HeaderValue::from_str(v.trim()).unwrap(),
            );
        }
    }
    // Sesame's JSON and pages are sent with a length, or chunked.
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|t| t == "chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out += &rest[..n];
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

store_tests! {
async fn envoy_lets_a_session_through_sends_a_browser_to_the_login_page_and_a_program_a_401() {
    let app = spawn().await;
    let host = format!("localhost:{}", app.port);

    // Not signed in: a page load gets the 302 Envoy hands the browser, with
    // the original path and query to come back to.
    let r = check(&app, "GET", &host, "/docs/a?x=1", None, None).await;
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.ends_with(&format!(
            "/.sesame/login?rd=http%3A%2F%2Flocalhost%3A{}%2Fdocs%2Fa%3Fx%3D1",
            app.port
        )),
        "{location}"
    );
    // A program (a POST, or a GET that asks for JSON): 401 with the login URL.
    for (method, accept) in [("POST", None), ("GET", Some("application/json"))] {
        let r = check(&app, method, &host, "/api/x", None, accept).await;
        assert_eq!(r.status(), 401, "{method} {accept:?}");
        assert_eq!(r.headers()["www-authenticate"], "Sesame");
        let body = r.json();
        assert!(body["login_url"].as_str().unwrap().contains("/.sesame/login?rd="));
    }

    // Signed in: 200 with every identity header, for Envoy to copy.
    let session = cookies_set(&app.sign_in(&browser(), "ada@example.com").await)["sesame"].clone();
    for method in ["GET", "POST", "DELETE"] {
        let r = check(&app, method, &host, "/docs", Some(&session), None).await;
        assert_eq!(r.status(), 200, "{method}");
        let h = r.headers();
        assert_eq!(h["remote-email"], "ada@example.com");
        assert!(h["remote-user"].to_str().unwrap().starts_with("u_"));
        assert_eq!(h["sesame-auth-method"], "magic_link");
        assert!(h["sesame-assertion"].to_str().unwrap().starts_with("eyJ"));
        assert_eq!(h["cache-control"], "no-store");
        // Ada has no name: a `remote-name` the client sent is removed, as
        // is what it could send with `_` for `-`, or a proxy's headers.
        assert!(!h.contains_key("remote-name"));
        let remove = to_remove(&r);
        for name in ["remote-name", "remote_user", "remote_email", "remote_name", "remote_groups", "sesame_auth_method", "sesame_assertion", "x-original-url", "x-rewrite-url", "x-forwarded-host"] {
            assert!(remove.contains(&name.to_string()), "{name} not in {remove:?}");
        }
        for set in ["remote-user", "remote-email", "sesame-assertion"] {
            assert!(!remove.contains(&set.to_string()), "{set} is set, not removed: {remove:?}");
        }
    }
    // A session cookie that does not open is no session.
    let r = check(&app, "GET", &host, "/docs", Some(&format!("{session}x")), None).await;
    assert_eq!(r.status(), 302);

    // A public path goes through without an identity: every identity
    // header the client sent is removed.
    let r = check(&app, "GET", &host, "/public/logo.png", None, None).await;
    assert_eq!(r.status(), 200);
    assert!(!r.headers().contains_key("remote-user"));
    let remove = to_remove(&r);
    for name in ["remote-user", "remote-email", "remote-name", "remote-groups", "sesame-auth-method", "sesame-assertion", "remote_user"] {
        assert!(remove.contains(&name.to_string()), "{name} not in {remove:?}");
    }

    // Envoy passes the app the path as the client spelled it, so only a
    // normal path is judged: `/public/../docs` would be judged as `/docs`
    // and may be read otherwise by the app; refused, not let through as
    // public.
    for sneaky in ["/public/../docs", "/public/%2e%2e/docs", "/public//../docs", "//public/logo.png", "/public/./logo.png"] {
        let r = check(&app, "GET", &host, sneaky, None, None).await;
        assert_eq!(r.status(), 400, "{sneaky}");
        assert_eq!(r.json()["error"], "bad_path", "{sneaky}");
    }

    // A host no site answers, and a path that only starts like the prefix.
    let r = check(&app, "GET", "nowhere.example", "/docs", Some(&session), None).await;
    assert_eq!(r.status(), 404);
    let r = browser()
        .get(app.url("/.sesame/ext-authzed/docs"))
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 200, "not a check: an unknown Sesame page");
    assert!(!r.headers().contains_key("remote-email"));
}

async fn envoy_shows_a_person_refused_a_page_and_a_program_json() {
    let app = spawn_with(Options {
        site0: "allow_emails = [\"boss@example.com\"]".into(),
        ..Default::default()
    })
    .await;
    let host = format!("localhost:{}", app.port);
    let session = cookies_set(&app.sign_in(&browser(), "ada@example.com").await)["sesame"].clone();
    let r = check(&app, "GET", &host, "/docs", Some(&session), Some("text/html")).await;
    assert_eq!(r.status(), 403);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = r.body.clone();
    assert!(page.contains("ada@example.com"), "{page}");
    let r = check(&app, "PUT", &host, "/docs", Some(&session), None).await;
    assert_eq!(r.status(), 403);
    let body = r.json();
    assert_eq!(body["error"], "forbidden");
    assert_eq!(body["signed_in_as"], "ada@example.com");
}
}

#[test]
fn the_shipped_envoy_configs_ask_at_the_prefix_and_pass_every_identity_header() {
    for file in [
        "conf/examples/envoy.yaml",
        "conf/examples/envoy-gateway.yaml",
    ] {
        let text =
            std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
                .unwrap();
        assert!(text.contains("/.sesame/ext-authz"), "{file}");
        for header in [
            "cookie",
            "accept",
            "remote-user",
            "remote-email",
            "remote-name",
            "remote-groups",
            "sesame-auth-method",
            "sesame-assertion",
        ] {
            assert!(text.contains(header), "{file} lacks {header}");
        }
        assert!(
            text.contains("failure_mode_allow: false") || text.contains("failOpen: false"),
            "{file} must fail closed"
        );
    }
}
