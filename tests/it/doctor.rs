//! `sesame doctor` against real deployments: a real SQLite file and
//! PostgreSQL server, a real SMTP server, real apps listening (or not), a
//! real certificate.

use std::process::Command;

use crate::helpers::*;

/// `sesame doctor -c FILE ARGS`, with `config` written to FILE: the exit
/// code and what it printed.
fn doctor(dir: &std::path::Path, config: &str, args: &[&str]) -> (i32, String) {
    let path = dir.join("doctor.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sesame"))
        .args(["doctor", "-c", path.to_str().unwrap()])
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.stderr.is_empty(),
        "doctor wrote to stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The line of `out` at `level` ("pass", "WARN", "FAIL") about `topic`
/// that says `what`; panics with the whole checklist otherwise.
fn line<'a>(out: &'a str, level: &str, topic: &str, what: &str) -> &'a str {
    out.lines()
        .find(|l| {
            l.starts_with(level)
                && l[level.len()..].trim_start().starts_with(topic)
                && l.contains(what)
        })
        .unwrap_or_else(|| panic!("no {level} line on {topic} saying {what:?} in:\n{out}"))
}

fn sesame(args: &[&str], config: &std::path::Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_sesame"))
        .args(args)
        .args(["-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn config(store: &str, mail: &str, upstreams: &[String], extra: &str) -> String {
    let public = format!("http://localhost:{}", free_port());
    config_for(&public, store, mail, upstreams, extra)
}

fn config_for(public: &str, store: &str, mail: &str, upstreams: &[String], extra: &str) -> String {
    let upstreams: Vec<String> = upstreams.iter().map(|u| format!("{u:?}")).collect();
    format!(
        r#"
[server]
listen = ["127.0.0.1:{}"]
{extra}
[store]
url = "{store}"
[mail]
smtp_url = "smtp://{mail}"
from = "Sesame <login@example.com>"
[[site]]
name = "wiki"
public_url = "{public}"
upstream = [{}]
"#,
        free_port(),
        upstreams.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sound_deployment_passes_every_line_and_sends_a_test_mail() {
    let store = TestStore::new(Backend::Sqlite).await;
    let mail = MailBox::start();
    let app = Upstream::start().await;
    let text = config(
        &store.url,
        &mail.addr.to_string(),
        &[app.addr.to_string()],
        "",
    );
    let path = store.dir().join("doctor.toml");
    std::fs::write(&path, &text).unwrap();
    sesame(&["migrate"], &path);

    let seen = mail.count_to("ops@example.com");
    let (code, out) = doctor(store.dir(), &text, &["--send-test-mail", "ops@example.com"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("WARN") && !out.contains("FAIL"),
        "every line passes:\n{out}"
    );
    line(&out, "pass", "store", "migrations are current");
    line(&out, "pass", "mail", "answers (no TLS)");
    line(
        &out,
        "pass",
        "site \"wiki\" upstream",
        "accepts connections",
    );
    line(&out, "pass", "site \"wiki\" bypass", "nothing on port");
    line(&out, "pass", "test mail", "accepted by the server");
    let got = mail.wait_for("ops@example.com", seen).await;
    assert_eq!(got.subject, "Sesame doctor: test mail");

    // The same server, with STARTTLS required that it does not offer.
    let text = config(
        &store.url,
        &format!("{}?tls=required", mail.addr),
        &[app.addr.to_string()],
        "",
    );
    let (code, out) = doctor(store.dir(), &text, &[]);
    assert_eq!(code, 1, "{out}");
    line(&out, "FAIL", "mail", "(STARTTLS required)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_reachable_without_sesame_and_risky_settings_fail_their_lines() {
    let store = TestStore::new(Backend::Sqlite).await;
    // An app listening on every address, configured by its loopback one:
    // anyone reaching the host's port skips Sesame.
    let open_app = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let open_port = open_app.local_addr().unwrap().port();
    // An app that is not running, and a mail server that is not there.
    let (down, no_mail) = (free_port(), free_port());
    let text = config_for(
        "https://wiki.example.com",
        &store.url,
        &format!("127.0.0.1:{no_mail}"),
        &[
            format!("127.0.0.1:{open_port}"),
            format!("127.0.0.1:{down}"),
            "203.0.113.10:80".into(),
        ],
        &format!(
            "trusted_proxies = [\"10.0.0.0/8\", \"0.0.0.0/0\"]\nadmin_listen = \"0.0.0.0:{}\"\n\
             [session]\ncookie_domain = \"example.com\"\n[users]\nsignup = \"open\"",
            free_port()
        ),
    );
    let (code, out) = doctor(store.dir(), &text, &[]);
    assert_eq!(code, 1, "{out}");
    line(
        &out,
        "FAIL",
        "site \"wiki\" bypass",
        &format!("also listens on 0.0.0.0:{open_port}"),
    );
    line(
        &out,
        "FAIL",
        "site \"wiki\" upstream",
        &format!("127.0.0.1:{down}: Connection refused"),
    );
    line(&out, "FAIL", "mail", "Connection refused");
    line(
        &out,
        "FAIL",
        "site \"wiki\" bypass",
        "203.0.113.10:80 is a public address",
    );
    line(
        &out,
        "FAIL",
        "trusted_proxies",
        "0.0.0.0/0 include(s) public",
    );
    assert!(!out.contains("10.0.0.0/8 include"), "{out}");
    line(&out, "FAIL", "signup", "open with no allow list on wiki");
    line(
        &out,
        "FAIL",
        "admin_listen",
        "/metrics has no authentication",
    );
    line(
        &out,
        "WARN",
        "cookie_domain",
        "every host under example.com",
    );
    line(&out, "WARN", "store", "does not exist yet");
    assert!(
        !store.dir().join("sesame.db").exists(),
        "the doctor made no store"
    );
    assert!(out.contains("-> bind the app to 127.0.0.1 only"), "{out}");
    drop(open_app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_one_failed_line_naming_each_key() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = doctor(
        dir.path(),
        "[server]\nthreads = 0\n[[site]]\npublic_url = \"ftp://x\"\nupstream = [\"127.0.0.1:1\"]\n",
        &[],
    );
    assert_eq!(code, 1, "{out}");
    line(&out, "FAIL", "config", "is not valid");
    assert!(out.contains("server.threads"), "{out}");
    assert!(out.contains("site[0].public_url"), "{out}");
    assert!(out.contains("1 failed, 0 warning(s), 0 passed"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_lines_say_what_the_store_lacks_or_has_too_much() {
    let mail = MailBox::start();
    let app = Upstream::start().await;
    let ups = [app.addr.to_string()];

    // PostgreSQL: a fresh schema has none of the migrations (a warning,
    // and --strict exits 2), then all of them; its clock is compared.
    let pg = TestStore::new(Backend::Postgres).await;
    let text = config(&pg.url, &mail.addr.to_string(), &ups, "");
    let (code, out) = doctor(pg.dir(), &text, &["--strict"]);
    assert_eq!(code, 2, "{out}");
    line(&out, "WARN", "store", "10 migration(s) not applied yet");
    sesame(&["migrate"], &pg.dir().join("doctor.toml"));
    let (code, out) = doctor(pg.dir(), &text, &["--strict"]);
    assert_eq!(code, 0, "{out}");
    line(&out, "pass", "store", "PostgreSQL");
    line(&out, "pass", "clock", "the database's clock is");

    // SQLite migrated by a newer Sesame: refused; keys due for rotation.
    let lite = TestStore::new(Backend::Sqlite).await;
    let text = config(&lite.url, &mail.addr.to_string(), &ups, "");
    std::fs::write(lite.dir().join("doctor.toml"), &text).unwrap();
    sesame(&["keys", "rotate"], &lite.dir().join("doctor.toml"));
    let db = sqlx::SqlitePool::connect(&lite.url).await.unwrap();
    sqlx::query("UPDATE keys SET created_at = created_at - 200 * 86400")
        .execute(&db)
        .await
        .unwrap();
    let (code, out) = doctor(lite.dir(), &text, &[]);
    assert_eq!(code, 0, "{out}");
    line(&out, "WARN", "keys", "200 days old");
    line(&out, "WARN", "keys", "");
    assert!(out.contains("sesame keys rotate"), "{out}");
    sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)")
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let (code, out) = doctor(lite.dir(), &text, &[]);
    assert_eq!(code, 1, "{out}");
    line(&out, "FAIL", "store", "does not know ([999])");

    // A PostgreSQL server that is not there.
    let down = format!("postgres://postgres@127.0.0.1:{}/test", free_port());
    let text = config(&down, &mail.addr.to_string(), &ups, "");
    let (code, out) = doctor(lite.dir(), &text, &[]);
    assert_eq!(code, 1, "{out}");
    line(&out, "FAIL", "store", "cannot connect to PostgreSQL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_expiring_within_two_weeks_is_a_warning() {
    let ca = TestCa::new("doctor");
    let (cert, key) = ca.leaf("site", &["localhost"]);
    let store = TestStore::new(Backend::Sqlite).await;
    let mail = MailBox::start();
    let app = Upstream::start().await;
    let text = config(
        &store.url,
        &mail.addr.to_string(),
        &[app.addr.to_string()],
        &format!(
            "[[server.tls]]\nlisten = \"127.0.0.1:{}\"\ncert = {:?}\nkey = {:?}",
            free_port(),
            cert.display().to_string(),
            key.display().to_string()
        ),
    );
    let (code, out) = doctor(store.dir(), &text, &["--strict"]);
    assert_eq!(code, 2, "{out}");
    let l = line(&out, "WARN", "tls 127.0.0.1:", "site.pem expires");
    assert!(
        l.contains("in 1 day(s)") || l.contains("in 2 day(s)"),
        "{l}"
    );
}
