//! Real Caddy (Debian's caddy package) in front of Sesame with
//! `forward_auth`, configured by the shipped `conf/examples/Caddyfile`, tried
//! as an attacker would: a path the client names, identity headers in other
//! spellings, Sesame's cookie.

use std::process::{Command, Stdio};

use crate::helpers::*;

const CADDY: &str = "/usr/bin/caddy";

fn start_caddy(
    dir: &std::path::Path,
    listen: u16,
    sesame: u16,
    app: std::net::SocketAddr,
) -> KillOnDrop {
    assert!(
        std::path::Path::new(CADDY).exists(),
        "the Caddy test needs Caddy at {CADDY}: apt-get install -y caddy"
    );
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/examples/Caddyfile"
    ))
    .unwrap();
    // No admin endpoint (two tests run at once) and plain http on localhost.
    let file = format!(
        "{{\n\tadmin off\n\tauto_https off\n}}\n{}",
        example
            .replace("@SITE@", &format!("http://localhost:{listen}"))
            .replace("@SESAME@", &format!("127.0.0.1:{sesame}"))
            .replace("@APP@", &app.to_string())
    );
    let home = dir.join("caddy-home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(dir.join("Caddyfile"), file).unwrap();
    let log = std::fs::File::create(dir.join("caddy.log")).unwrap();
    let mut caddy = KillOnDrop(
        Command::new(CADDY)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(dir.join("Caddyfile"))
            .env("HOME", &home)
            .env("XDG_DATA_HOME", &home)
            .env("XDG_CONFIG_HOME", &home)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    if caddy.listens(listen) {
        return caddy;
    }
    panic!(
        "caddy did not start:\n{}",
        std::fs::read_to_string(dir.join("caddy.log")).unwrap_or_default()
    );
}

store_tests! {
async fn caddy_forward_auth_with_the_shipped_caddyfile_leaks_nothing() {
    let port = free_port();
    let app = spawn_with(Options {
        public_port: Some(port),
        server: "trusted_proxies = [\"127.0.0.1\"]".into(),
        site0: "[[site.rule]]\npath = \"/admin\"\naction = \"deny\"".into(),
        ..Default::default()
    })
    .await;
    let _caddy = start_caddy(app.store.dir(), port, app.port, app.upstream.addr);
    let base = format!("http://localhost:{port}");
    let b = browser();

    // Not signed in: Caddy passes Sesame's redirect to the login page on.
    let r = b.get(format!("{base}/docs")).header("Accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert!(r.headers()["location"].to_str().unwrap().contains("/.sesame/login?rd="));
    assert!(app.upstream.seen().is_empty());

    // Sign in through Caddy.
    let (_, r) = app.sign_in_at(&b, &base, "caddy@example.com", "/docs").await;
    let session = cookies_set(&r)["sesame"].clone();

    // The client names another path: no decision for it, the app sees nothing.
    let r = browser()
        .get(format!("{base}/admin/users"))
        .header("Cookie", format!("sesame={session}"))
        .header("X-Original-URI", "/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = browser().get(format!("{base}/admin/users")).header("Cookie", format!("sesame={session}")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(app.upstream.seen().is_empty(), "{:?}", app.upstream.seen());

    // Allowed: the app gets Sesame's identity only, and not Sesame's cookie.
    let r = browser()
        .get(format!("{base}/docs"))
        .header("Cookie", format!("theme=dark; sesame={session}; lang=en"))
        .header("Remote-User", "admin")
        .header("remote-email", "boss@example.com")
        .header("Remote_Groups", "admins2")
        .header("REMOTE_USER", "admin")
        .header("Sesame-Assertion", "forged")
        .header("X-Original-URL", "/admin")
        .header("X-Rewrite-URL", "/admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = app.upstream.last();
    assert_eq!(seen.path, "/docs");
    assert_eq!(seen.headers_named("remote-email"), vec!["caddy@example.com".to_string()]);
    assert!(seen.header("remote-user").unwrap().starts_with("u_"));
    for (k, v) in &seen.headers {
        assert!(!k.contains('_'), "{k}: {v} reached the app");
        assert!(!v.contains("{http."), "a Caddy placeholder reached the app: {k}: {v}");
    }
    assert!(seen.header("remote-name").unwrap_or_default().is_empty());
    assert!(seen.header("x-original-url").is_none() && seen.header("x-rewrite-url").is_none(), "{seen:?}");
    assert!(seen.header("sesame-assertion").unwrap().len() > 100);
    let cookie = seen.header("cookie").unwrap_or_default();
    assert!(!cookie.contains("sesame"), "{cookie}");
    assert!(cookie.contains("theme=dark") && cookie.contains("lang=en"), "{cookie}");
}
}
