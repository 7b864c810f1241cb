//! The CLI against real files: check-config names every problem by key
//! path; user add/list/remove work against the configured store.

use std::process::Command;

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
    ] {
        assert!(err.contains(key), "{key} not named in:\n{err}");
    }
    assert!(!err.contains("panicked"));
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

#[test]
fn user_commands_against_the_configured_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sesame.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\nurl = \"sqlite://{}/s.db\"\n[[site]]\npublic_url = \"https://a.example.com\"\nupstream = [\"127.0.0.1:1\"]\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let c = path.to_str().unwrap();
    let (ok, out, err) = sesame(&[
        "user",
        "add",
        "Ada@Example.com",
        "--name",
        "Ada L",
        "--group",
        "ops",
        "--group",
        "dev",
        "-c",
        c,
    ]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = sesame(&["user", "add", "ada@example.com", "-c", c]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = sesame(&["user", "add", "bad\r\n@x.com", "-c", c]);
    assert!(!ok && !err.is_empty());
    let (ok, out, _) = sesame(&["user", "list", "-c", c]);
    assert!(ok);
    assert!(
        out.contains("ada@example.com") && out.contains("Ada L") && out.contains("ops,dev"),
        "{out}"
    );
    let (ok, _, _) = sesame(&["user", "remove", "ADA@example.com", "-c", c]);
    assert!(ok);
    let (ok, out, _) = sesame(&["user", "list", "-c", c]);
    assert!(ok && !out.contains("ada@"));
    let (ok, _, err) = sesame(&["user", "remove", "ada@example.com", "-c", c]);
    assert!(!ok && err.contains("no user"));
}
