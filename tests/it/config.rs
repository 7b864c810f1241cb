//! The CLI against real files: check-config names every problem by key
//! path; user add/list/remove work against the configured store.

use std::process::Command;

use crate::helpers::*;

fn sesame(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sesame"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_lists_every_problem_by_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[session]
idle_timeout = "soon"
[magic_link]
ttl = "0s"
[mail]
transport = "smtp"
smtp_url = "http://mail.example.com"
[users]
signup = "domains"
[[site]]
public_url = "http://wiki.example.com"
[[site]]
public_url = "https://git.example.com/sub"
upstream = ["not an address"]
public_paths = ["relative"]
[[site]]
public_url = "https://app.example.com"
upstream = ["app.invalid:3000"]
"#,
    )
    .unwrap();
    let (ok, _, err) = sesame(&["check-config", "-c", path.to_str().unwrap()]);
    assert!(!ok);
    for key in [
        "session.idle_timeout",
        "magic_link.ttl",
        "mail.smtp_url",
        "users.signup_domains",
        "site[0].public_url: must be https unless the host is localhost",
        "site[0].upstream",
        "site[1].public_url",
        "site[1].upstream[0]",
        "site[1].public_paths[0]",
        "site[1].upstream[0]: \"not an address\" is not an address of the form host:port",
        "site[2].upstream[0]: \"app.invalid:3000\": the host name cannot be looked up",
    ] {
        assert!(err.contains(key), "{key} not named in:\n{err}");
    }
    assert!(!err.contains("panicked"));
}

#[test]
fn hardening_keys_are_checked_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[server]
forward_auth_headers = "x-real"
[session]
cookie_name = "sesame_pending"
[[site]]
public_url = "https://a.example.com"
upstream = ["127.0.0.1:1"]
websocket_origins = ["https://ok.example.com", "https://b.example.com/path", "ftp://c.example.com"]
"#,
    )
    .unwrap();
    let (ok, _, err) = sesame(&["check-config", "-c", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("server.forward_auth_headers"), "{err}");
    std::fs::write(
        &path,
        "[session]\ncookie_name = \"__Host-x\"\n[[site]]\npublic_url = \"https://a.example.com\"\nupstream = [\"127.0.0.1:1\"]\nwebsocket_origins = [\"https://ok.example.com\", \"https://b.example.com/path\", \"ftp://c.example.com\"]\n",
    )
    .unwrap();
    let (ok, _, err) = sesame(&["check-config", "-c", path.to_str().unwrap()]);
    assert!(!ok);
    for key in [
        "session.cookie_name: \"__Host-x\" is reserved",
        "site[0].websocket_origins[1]",
        "site[0].websocket_origins[2]",
    ] {
        assert!(err.contains(key), "{key} not named in:\n{err}");
    }
    assert!(!err.contains("websocket_origins[0]"), "{err}");
    let short = "[keys]\ngrace = \"1m\"\n[[site]]\npublic_url = \"https://a.example.com\"\nupstream = [\"127.0.0.1:1\"]\n";
    let e = sesame::config::Config::from_toml(short)
        .unwrap_err()
        .to_string();
    assert!(e.contains("keys.grace: must be at least 15m"), "{e}");
    for reserved in ["sesame_pending", "Sesame_Passkey_Offered"] {
        let text = format!("[session]\ncookie_name = \"{reserved}\"\n[[site]]\npublic_url = \"https://a.example.com\"\nupstream = [\"127.0.0.1:1\"]\n");
        let e = sesame::config::Config::from_toml(&text)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("session.cookie_name") && e.contains("reserved"),
            "{e}"
        );
    }
}

/// RFC 6761: names under `localhost` are this machine, so plain http is
/// allowed there as on `localhost` itself, and cookies are not `Secure`.
#[test]
fn a_mail_ca_file_must_be_certificates_for_a_tls_url() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let check = |mail: &str| {
        let path = dir.path().join("sesame.toml");
        std::fs::write(
            &path,
            format!("[mail]\n{mail}\n[[site]]\npublic_url = \"http://localhost\"\nupstream = [\"127.0.0.1:3000\"]\n"),
        )
        .unwrap();
        sesame(&["check-config", "-c", path.to_str().unwrap()])
    };
    let (ok, _, err) = check(&format!(
        "smtp_url = \"smtp://mail.example.com\"\nca_file = {:?}",
        not_pem.display().to_string()
    ));
    assert!(
        !ok && err.contains("mail.ca_file: is set, but mail.smtp_url does not require TLS"),
        "{err}"
    );
    let (ok, _, err) = check(&format!(
        "smtp_url = \"smtp://mail.example.com?tls=opportunistic\"\nca_file = {:?}",
        not_pem.display().to_string()
    ));
    assert!(
        !ok && err.contains("mail.ca_file: is set, but mail.smtp_url does not require TLS"),
        "{err}"
    );
    let (ok, _, err) = check(&format!(
        "smtp_url = \"smtps://mail.example.com\"\nca_file = {:?}",
        not_pem.display().to_string()
    ));
    assert!(
        !ok && err.contains("mail.ca_file:") && err.contains("no PEM certificate"),
        "{err}"
    );
    let (ok, _, err) =
        check("smtp_url = \"smtps://mail.example.com\"\nca_file = \"/nonexistent/ca.pem\"");
    assert!(
        !ok && err.contains("mail.ca_file: cannot read /nonexistent/ca.pem"),
        "{err}"
    );
    let ca = TestCa::new("Mail CA");
    let (ok, out, err) = check(&format!(
        "smtp_url = \"smtp://mail.example.com?tls=required\"\nca_file = {:?}",
        ca.cert.display().to_string()
    ));
    assert!(ok, "{out}{err}");
}

#[test]
fn names_under_localhost_are_local() {
    let config = sesame::config::Config::from_toml(
        "[[site]]\npublic_url = \"http://app.localhost:8080\"\nupstream = [\"127.0.0.1:1\"]\n\
         [[site]]\npublic_url = \"http://wiki.localhost:8080\"\nupstream = [\"127.0.0.1:1\"]\n",
    )
    .unwrap();
    assert_eq!(config.sites[0].host, "app.localhost");
    assert!(!config.sites[0].secure);
    let e = sesame::config::Config::from_toml(
        "[[site]]\npublic_url = \"http://localhost.example.com\"\nupstream = [\"127.0.0.1:1\"]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("must be https unless the host is localhost"),
        "{e}"
    );
}

#[test]
fn check_config_names_type_errors_and_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[site]]\npublic_url = \"https://a.example.com\"\nupstream = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let (ok, _, err) = sesame(&["check-config", "-c", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("site[0].upstream"), "{err}");
    std::fs::write(&path, "[server]\nlisten_on = []\n").unwrap();
    let (ok, _, err) = sesame(&["check-config", "-c", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("listen_on"), "{err}");
    std::fs::write(
        &path,
        "[mail]\nsmtp_url = \"smtp://mail.example.com?tls=bogus\"\n[[site]]\npublic_url = \"https://a.example.com\"\nupstream = [\"127.0.0.1:1\"]\n",
    )
    .unwrap();
    let (ok, _, err) = sesame(&["check-config", "-c", path.to_str().unwrap()]);
    assert!(!ok && err.contains("mail.smtp_url"), "{err}");
    for (url, ok_expected) in [
        ("postgres://sesame:pw@db.internal:5432/sesame", true),
        ("postgres://db.internal:notaport/sesame", false),
        ("mysql://db.internal/sesame", false),
    ] {
        std::fs::write(
            &path,
            format!("[store]\nurl = \"{url}\"\n[[site]]\npublic_url = \"https://a.example.com\"\nupstream = [\"127.0.0.1:1\"]\n"),
        )
        .unwrap();
        let (ok, _, err) = sesame(&["check-config", "-c", path.to_str().unwrap()]);
        assert_eq!(ok, ok_expected, "{url}: {err}");
        assert!(ok || err.contains("store.url"), "{err}");
        assert!(
            !err.contains(":pw@"),
            "a password never reaches an error: {err}"
        );
    }
    let (ok, _, err) = sesame(&["check-config", "-c", "/nonexistent/sesame.toml"]);
    assert!(!ok);
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn shipped_configs_are_valid() {
    let root = env!("CARGO_MANIFEST_DIR");
    for file in ["conf/sesame.toml", "conf/demo.toml"] {
        let (ok, out, err) = sesame(&["check-config", "-c", &format!("{root}/{file}")]);
        assert!(ok, "{file}: {out}{err}");
    }
}

store_tests! {
async fn admin_commands_against_the_configured_store() {
    let store = TestStore::new(backend()).await;
    let path = store.dir().join("sesame.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\nurl = \"{}\"\n[[site]]\npublic_url = \"https://a.example.com\"\nupstream = [\"127.0.0.1:1\"]\n",
            store.url
        ),
    )
    .unwrap();
    let c = path.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["-c", c]);
        sesame(&all)
    };
    assert!(run(&["migrate"]).0);
    let (ok, out, err) = run(&["user", "add", "Ada@Example.com", "--name", "Ada L", "--group", "ops", "--group", "dev"]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = run(&["user", "add", "ada@example.com"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = run(&["user", "add", "bad\r\n@x.com"]);
    assert!(!ok && !err.is_empty());
    let (ok, _, err) = run(&["user", "add", "bob@example.com", "--group", "a,b"]);
    assert!(!ok && err.contains("comma"), "{err}");
    let (ok, out, _) = run(&["user", "list"]);
    assert!(ok);
    assert!(out.contains("ada@example.com") && out.contains("Ada L") && out.contains("ops,dev") && out.contains("enabled"), "{out}");

    assert!(run(&["user", "disable", "ada@example.com"]).0);
    assert!(run(&["user", "list"]).1.contains("disabled"));
    assert!(run(&["user", "enable", "ADA@example.com"]).0);
    assert!(run(&["user", "set-groups", "ada@example.com", "--group", "oncall"]).0);
    let out = run(&["user", "list"]).1;
    assert!(out.contains("oncall") && !out.contains("ops,dev") && out.contains("enabled"), "{out}");
    let (ok, _, err) = run(&["user", "disable", "nobody@example.com"]);
    assert!(!ok && err.contains("no user"), "{err}");

    // Sessions, made through the store as a sign-in would.
    let db = store.open().await;
    let ada = db.user_by_email(&sesame::email::Email::parse("ada@example.com").unwrap()).await.unwrap().unwrap();
    let sessions = sesame::session::Sessions::new(
        sesame::config::Config::load(&path).unwrap().session,
        db.clone(),
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        sesame::clock::Clock::system(),
    );
    let one = sessions.create(&ada, sesame::store::AuthMethod::MagicLink).await.unwrap().unwrap();
    sessions.create(&ada, sesame::store::AuthMethod::Code).await.unwrap().unwrap();
    let (ok, out, _) = run(&["session", "list", "--user", "ada@example.com"]);
    assert!(ok && out.lines().count() == 2, "{out}");
    let (ok, _, err) = run(&["session", "revoke", "--id", "abc"]);
    assert!(!ok && err.contains("8 hex digits"), "{err}");
    let (ok, _, err) = run(&["session", "revoke"]);
    assert!(!ok && !err.is_empty());
    let (ok, out, err) = run(&["session", "revoke", "--id", &one.record.id_hash[..12]]);
    assert!(ok, "{out}{err}");
    let (_, out, _) = run(&["session", "list"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(!out.contains(&one.record.id_hash[..16]));
    let (ok, out, _) = run(&["session", "revoke", "--user", "ada@example.com"]);
    assert!(ok && out.contains("revoked 1 session"), "{out}");
    assert!(run(&["session", "list"]).1.is_empty());

    let (ok, _, _) = run(&["user", "remove", "ADA@example.com"]);
    assert!(ok);
    let (ok, out, _) = run(&["user", "list"]);
    assert!(ok && !out.contains("ada@"));
    let (ok, _, err) = run(&["user", "remove", "ada@example.com"]);
    assert!(!ok && err.contains("no user"));
}
}

#[test]
fn version_names_the_commit_and_every_help_has_an_example() {
    let (ok, out, _) = sesame(&["--version"]);
    assert!(ok);
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match commit {
        // Built from a clone: the commit it was built from (the test binary
        // and sesame are built together).
        Some(c) => assert!(out.contains(&format!("commit {c}")), "{out}"),
        None => assert!(out.contains("commit"), "{out}"),
    }
    let subcommands = [
        vec!["run"],
        vec!["demo"],
        vec!["check-config"],
        vec!["migrate"],
        vec!["user"],
        vec!["passkey"],
        vec!["keys"],
        vec!["session"],
    ];
    for sub in subcommands {
        let args: Vec<&str> = sub.iter().copied().chain(["--help"]).collect();
        let (ok, out, err) = sesame(&args);
        assert!(ok, "{sub:?}: {err}");
        assert!(
            out.contains("Example"),
            "{sub:?} --help has no example:\n{out}"
        );
        assert!(
            out.contains("Reads"),
            "{sub:?} --help does not say what it reads:\n{out}"
        );
    }
}

#[test]
fn oidc_hash_secret_makes_a_secret_and_a_hash_the_config_accepts() {
    use std::io::Write;
    // Nothing on standard input: a new secret, and its hash.
    let out = Command::new(env!("CARGO_BIN_EXE_sesame"))
        .args(["oidc", "hash-secret"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let value = |label: &str| {
        text.lines()
            .find(|l| l.starts_with(label))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or_else(|| panic!("no {label:?} line in {text}"))
            .to_string()
    };
    let (secret, hash) = (value("secret"), value("hash"));
    assert!(secret.len() >= 43, "{secret}");
    assert!(sesame::oidc::secret::verify(&hash, &secret));
    // A secret of one's own, piped in (with echo's newline).
    let mut child = Command::new(env!("CARGO_BIN_EXE_sesame"))
        .args(["oidc", "hash-secret"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"my-own-secret-0123456789\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        sesame::oidc::secret::verify(&hash, "my-own-secret-0123456789"),
        "{hash}"
    );
    // The config takes it.
    let config = format!(
        "[portal]\npublic_url = \"https://auth.example.com\"\n[[oidc.client]]\nid = \"app\"\nsecret = \"{hash}\"\nredirect_uris = [\"https://app.example.com/cb\"]\n[[site]]\npublic_url = \"https://a.example.com\"\nupstream = [\"127.0.0.1:1\"]\n"
    );
    assert!(sesame::config::Config::from_toml(&config).is_ok());
    // Too short a secret is refused.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sesame"))
        .args(["oidc", "hash-secret"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"short").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("shorter than 16"));
}
