//! Key rotation: new keys sign at once, old ones verify for the grace time
//! (nobody is signed out), then retire.

use std::time::Duration;

use crate::helpers::*;

fn cli(app: &TestApp, args: &[&str]) -> String {
    let path = app.store.dir().join("cli.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\nurl = \"{}\"\n[keys]\ngrace = \"1h\"\n[[site]]\npublic_url = \"http://localhost\"\nupstream = [\"127.0.0.1:1\"]\n",
            app.store.url
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sesame"))
        .args(args)
        .args(["-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn reload(app: &TestApp) {
    let a = &app.running.as_ref().unwrap().app;
    a.keys.reload(&a.store, a.clock.now()).await.unwrap();
}

store_tests! {
async fn a_retired_key_stops_verifying_at_once() {
    let app = spawn().await;
    let r = app.sign_in(&browser(), "leak@example.com").await;
    let old = cookies_set(&r)["sesame"].clone();
    assert!(cli(&app, &["keys", "retire"]).contains("no key to retire"));
    cli(&app, &["keys", "rotate"]);
    reload(&app).await;
    assert_eq!(app.get_as("/x", &old).await.status(), 200, "a rotation signs nobody out");
    let out = cli(&app, &["keys", "retire"]);
    assert_eq!(out.lines().filter(|l| l.starts_with("retired ")).count(), 3, "{out}");
    reload(&app).await;
    assert_eq!(app.get_as("/x", &old).await.status(), 401, "sealed under a retired key");
    let r = app.sign_in(&browser(), "leak@example.com").await;
    assert_eq!(app.get_as("/x", &cookies_set(&r)["sesame"]).await.status(), 200);
    assert!(cli(&app, &["keys", "list"]).lines().all(|l| l.contains("signing")));
}

async fn rotation_signs_nobody_out_and_old_keys_retire_after_the_grace() {
    let app = spawn_with(Options { extra: "[keys]\ngrace = \"1h\"\n".into(), ..Default::default() }).await;
    let old = browser();
    let r = app.sign_in(&old, "before@example.com").await;
    let old_cookie = cookies_set(&r)["sesame"].clone();
    assert!(old_cookie.starts_with("cookie-1."), "{old_cookie}");
    let unused_link = app.ask_link(&browser(), "linked@example.com", "/").await;

    let out = cli(&app, &["keys", "rotate"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    reload(&app).await;
    let listed = cli(&app, &["keys", "list"]);
    assert_eq!(listed.matches("signing").count(), 3, "{listed}");
    assert_eq!(listed.matches("verifying until").count(), 3, "{listed}");

    // Nobody is signed out; a link mailed before the rotation still works.
    assert_eq!(old.get(app.url("/x")).send().await.unwrap().status(), 200);
    let r = app.post_form(&browser(), "/.sesame/magic", &[("token", &unused_link.token())]).await;
    assert_eq!(r.status(), 303);
    assert!(!cookies_set(&r)["sesame"].starts_with("cookie-1."), "new sessions use the new key");

    let new = browser();
    let r = app.sign_in(&new, "after@example.com").await;
    let new_cookie = cookies_set(&r)["sesame"].clone();
    assert!(!new_cookie.starts_with("cookie-1."));
    assert_eq!(new.get(app.url("/x")).send().await.unwrap().status(), 200);

    // Past the grace the old key retires: its cookies no longer open.
    app.clock.advance(Duration::from_secs(3600 + 5));
    reload(&app).await;
    assert_eq!(old.get(app.url("/x")).send().await.unwrap().status(), 401);
    assert_eq!(new.get(app.url("/x")).send().await.unwrap().status(), 200);
}
}
