//! Real nginx in front of Sesame with `auth_request`, configured by the
//! shipped example `conf/examples/nginx.conf`.

use std::process::{Command, Stdio};

use crate::helpers::*;

const NGINX: &str = "/usr/sbin/nginx";

fn start_nginx(
    dir: &std::path::Path,
    listen: u16,
    sesame: u16,
    app: std::net::SocketAddr,
) -> KillOnDrop {
    assert!(
        std::path::Path::new(NGINX).exists(),
        "the nginx test needs nginx at {NGINX}: apt-get install -y nginx-light"
    );
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/examples/nginx.conf"
    ))
    .unwrap();
    let site = example
        .replace("@HOST@", "localhost")
        .replace("@LISTEN@", &format!("127.0.0.1:{listen}"))
        .replace("@SESAME@", &format!("127.0.0.1:{sesame}"))
        .replace("@APP@", &app.to_string());
    let d = dir.display();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    std::fs::write(dir.join("site.conf"), site).unwrap();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "user root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n\
             fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n  include {d}/site.conf;\n}}\n"
        ),
    )
    .unwrap();
    let mut nginx = KillOnDrop(
        Command::new(NGINX)
            .args([
                "-p",
                &d.to_string(),
                "-c",
                &format!("{d}/nginx.conf"),
                // One process: killing it leaves no orphaned worker behind.
                "-g",
                "daemon off; master_process off;",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    if nginx.listens(listen) {
        return nginx;
    }
    panic!(
        "nginx did not start:\n{}",
        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
    );
}

store_tests! {
async fn nginx_auth_request_in_front_of_sesame() {
    let port = free_port();
    let app = spawn_with(Options {
        public_port: Some(port),
        server: "trusted_proxies = [\"127.0.0.1\"]".into(),
        site0: "allow_emails = [\"ngx@example.com\"]".into(),
        ..Default::default()
    })
    .await;
    let _nginx = start_nginx(app.store.dir(), port, app.port, app.upstream.addr);
    let base = format!("http://localhost:{port}");
    let b = browser();

    // Not signed in: nginx sends the browser to Sesame's login page.
    let r = b.get(format!("{base}/docs?x=1")).header("Accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], format!("{base}/.sesame/login?rd=/docs?x=1").as_str());
    assert!(app.upstream.seen().is_empty());
    // The check itself is internal to nginx.
    assert_eq!(b.get(format!("{base}/.sesame/auth")).send().await.unwrap().status(), 404);

    // Sign in through nginx, as a person would.
    let login = b.get(format!("{base}/.sesame/login?rd=/docs")).send().await.unwrap();
    assert_eq!(login.status(), 200);
    let (mail, r) = app.sign_in_at(&b, &base, "ngx@example.com", "/docs").await;
    assert!(mail.link().starts_with(&format!("{base}/.sesame/magic?token=")), "{}", mail.link());
    assert_eq!(r.headers()["location"], format!("{base}/docs").as_str());
    let session = cookies_set(&r)["sesame"].clone();

    // Signed in: nginx forwards with Sesame's identity, never the client's.
    let r = b
        .get(format!("{base}/docs"))
        .header("Remote-User", "admin")
        .header("Remote-Email", "boss@example.com")
        .header("Remote_Groups", "admins")
        .header("X-Original-URL", "/admin")
        .header("X-Forwarded-Host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "upstream saw /docs");
    let seen = app.upstream.last();
    assert_eq!(seen.headers_named("remote-email"), vec!["ngx@example.com".to_string()]);
    assert_eq!(seen.header("sesame-auth-method").as_deref(), Some("magic_link"));
    assert!(seen.header("remote-user").unwrap().starts_with("u_"));
    assert!(seen.header("x-forwarded-for").unwrap().contains("127.0.0.1"));
    assert!(seen.header("x-original-url").is_none() && seen.header("remote_groups").is_none(), "{seen:?}");
    assert_eq!(seen.header("x-forwarded-host").as_deref(), Some("localhost"));

    // Someone signed in on the other site (which admits anyone) names that
    // site to this server block: nginx says which site is asked about.
    let other = format!("http://127.0.0.1:{}", app.port);
    let (_, r) = app.sign_in_at(&browser(), &other, "b@example.com", "/").await;
    let b_session = cookies_set(&r)["sesame"].clone();
    let before = app.upstream.seen().len();
    let r = browser()
        .get(format!("{base}/docs"))
        .header("Cookie", format!("sesame={b_session}"))
        .header("X-Forwarded-Host", format!("127.0.0.1:{}", app.port))
        .header("X-Original-URI", "/")
        .header("X-Forwarded-Uri", "/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "judged for this server block's site, where b is not signed in");
    assert_eq!(app.upstream.seen().len(), before);

    // Sesame's cookie stays with Sesame; the app's own cookies go through.
    let r = browser()
        .get(format!("{base}/docs"))
        .header("Cookie", format!("theme=dark; sesame={session}; lang=en"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = app.upstream.last().header("cookie").unwrap_or_default();
    assert!(cookie.contains("theme=dark") && cookie.contains("lang=en") && !cookie.contains("sesame"), "{cookie}");
    assert!(app.upstream.last().header("sesame-assertion").unwrap().len() > 100);

    // A broken cookie is not a session.
    let r = browser()
        .get(format!("{base}/docs"))
        .header("Cookie", "sesame=cookie-1.garbage")
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
}
}
