//! Several gateway processes on one PostgreSQL: they behave as one.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::*;

/// Two instances of one cluster behind an imagined load balancer at
/// `public` (the site's public URL), sharing one PostgreSQL schema.
struct Cluster {
    a: Instance,
    b: Instance,
    public: String,
    config: String,
    mail: MailBox,
    upstream: Upstream,
    store: TestStore,
}

impl Cluster {
    async fn start() -> Cluster {
        let store = TestStore::new(Backend::Postgres).await;
        let mail = MailBox::start();
        let upstream = Upstream::start().await;
        let public = format!("http://localhost:{}", free_port());
        let config = format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
admin_listen = "127.0.0.1:0"
threads = 1

[store]
url = "{}"
[mail]
smtp_url = "smtp://{}"
from = "Sesame test <login@example.com>"
[users]
signup = "open"
[rate_limit]
per_client = 1000
[[site]]
name = "Clustered app"
public_url = "{public}"
upstream = ["{}"]
"#,
            store.url, mail.addr, upstream.addr
        );
        let dir = store.dir();
        let a = Instance::start(dir, "a", &config);
        let b = Instance::start(dir, "b", &config);
        Cluster {
            a,
            b,
            public,
            config,
            mail,
            upstream,
            store,
        }
    }

    async fn post(
        &self,
        on: &Instance,
        b: &reqwest::Client,
        path: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let r = b
            .post(on.url(path))
            .header("Origin", &self.public)
            .form(form)
            .send()
            .await;
        r.unwrap_or_else(|e| panic!("POST {path}: {e:?}\n{}", self.logs()))
    }

    /// Both instances' logs, for a failure message.
    fn logs(&self) -> String {
        format!("log of A:\n{}\nlog of B:\n{}", self.a.log(), self.b.log())
    }

    async fn ask_link(&self, on: &Instance, b: &reqwest::Client, email: &str) -> Mail {
        let seen = self.mail.count_to(email);
        let r = self
            .post(on, b, "/.sesame/login", &[("email", email)])
            .await;
        assert_eq!(r.status(), 200, "POST /.sesame/login\n{}", self.logs());
        self.mail.wait_for(email, seen).await
    }

    async fn status(on: &Instance, b: &reqwest::Client, path: &str) -> u16 {
        match b.get(on.url(path)).send().await {
            Ok(r) => r.status().as_u16(),
            Err(e) => panic!("GET {path}: {e:?}\nlog:\n{}", on.log()),
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        let path = self.store.dir().join("cli.toml");
        std::fs::write(&path, &self.config).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_sesame"))
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
}

/// Poll until `on` refuses the browser's session; returns how long it took.
async fn time_until_refused(on: &Instance, b: &reqwest::Client, since: Instant) -> Duration {
    loop {
        if Cluster::status(on, b, "/private").await == 401 {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "still accepted after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_and_code_from_one_instance_work_on_the_other() {
    let c = Cluster::start().await;
    let b = browser();
    let mail = c.ask_link(&c.a, &b, "cross@example.com").await;
    assert!(mail
        .link()
        .starts_with(&format!("{}/.sesame/magic", c.public)));
    let r = c
        .post(&c.b, &b, "/.sesame/magic", &[("token", &mail.token())])
        .await;
    assert_eq!(r.status(), 303, "A's link works on B");
    assert_eq!(
        Cluster::status(&c.a, &b, "/x").await,
        200,
        "B's session works on A"
    );
    assert_eq!(Cluster::status(&c.b, &b, "/x").await, 200);

    // The code, asked on B, typed on A (the pending cookie travels with the browser).
    let b2 = browser();
    let mail = c.ask_link(&c.b, &b2, "code@example.com").await;
    let r = c
        .post(&c.a, &b2, "/.sesame/code", &[("code", &mail.code())])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(Cluster::status(&c.b, &b2, "/x").await, 200);
    assert_eq!(
        c.upstream.last().header("sesame-auth-method").as_deref(),
        Some("code")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_link_used_on_both_instances_at_once_gives_one_session() {
    let c = std::sync::Arc::new(Cluster::start().await);
    let mail = c.ask_link(&c.a, &browser(), "race@example.com").await;
    let token = mail.token();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let c = c.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let on = if i % 2 == 0 { &c.a } else { &c.b };
                c.post(on, &browser(), "/.sesame/magic", &[("token", &token)])
                    .await
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 303).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 410).count(),
        19,
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_on_one_instance_is_seen_by_the_other_within_a_second() {
    let c = Cluster::start().await;
    let b = browser();
    let mail = c.ask_link(&c.a, &b, "leave@example.com").await;
    let r = c
        .post(&c.a, &b, "/.sesame/magic", &[("token", &mail.token())])
        .await;
    assert_eq!(r.status(), 303);
    // A copy of the cookie, as a thief would keep it, replayed on B (which caches it).
    let stolen = cookies_set(&r)["sesame"].clone();
    let thief = browser();
    let replay = || {
        thief
            .get(c.b.url("/private"))
            .header("Cookie", format!("sesame={stolen}"))
            .send()
    };
    assert_eq!(replay().await.unwrap().status(), 200);
    assert_eq!(replay().await.unwrap().status(), 200);

    assert_eq!(c.post(&c.a, &b, "/.sesame/logout", &[]).await.status(), 303);
    // From A's answer (A revokes before it answers).
    let t = Instant::now();
    loop {
        if replay().await.unwrap().status() == 401 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "B still accepts the revoked cookie"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = t.elapsed();
    println!("revocation propagation A -> B: {} ms", took.as_millis());
    assert!(took < Duration::from_millis(1000), "took {took:?}");
    assert_eq!(Cluster::status(&c.a, &thief, "/private").await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_changes_reach_every_instance() {
    let c = Cluster::start().await;
    let b = browser();
    let mail = c.ask_link(&c.a, &b, "ops@example.com").await;
    assert_eq!(
        c.post(&c.a, &b, "/.sesame/magic", &[("token", &mail.token())])
            .await
            .status(),
        303
    );
    assert_eq!(Cluster::status(&c.a, &b, "/x").await, 200);
    assert_eq!(Cluster::status(&c.b, &b, "/x").await, 200);

    // New groups reach the app through both instances.
    c.cli(&["user", "set-groups", "ops@example.com", "--group", "oncall"]);
    let t = Instant::now();
    for on in [&c.a, &c.b] {
        loop {
            assert_eq!(Cluster::status(on, &b, "/groups").await, 200);
            if c.upstream.last().header("remote-groups").as_deref() == Some("oncall") {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "groups not updated");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    let listed = c.cli(&["session", "list", "--user", "ops@example.com"]);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    let pending = c.ask_link(&c.b, &browser(), "ops@example.com").await;
    c.cli(&["session", "revoke", "--user", "ops@example.com"]);
    // From the CLI's exit (it revokes before it exits).
    let t = Instant::now();
    let on_a = time_until_refused(&c.a, &b, t).await;
    let on_b = time_until_refused(&c.b, &b, t).await;
    println!(
        "CLI revocation seen: A {} ms, B {} ms",
        on_a.as_millis(),
        on_b.as_millis()
    );
    assert!(on_b < Duration::from_millis(1000), "took {on_b:?}");
    assert!(c
        .cli(&["session", "list", "--user", "ops@example.com"])
        .is_empty());

    // Disabled: a link already in the mailbox no longer signs in, and no new one is sent.
    c.cli(&["user", "disable", "ops@example.com"]);
    let r = c
        .post(
            &c.a,
            &browser(),
            "/.sesame/magic",
            &[("token", &pending.token())],
        )
        .await;
    assert_eq!(r.status(), 403);
    let before = c.mail.count_to("ops@example.com");
    assert_eq!(
        c.post(
            &c.b,
            &browser(),
            "/.sesame/login",
            &[("email", "ops@example.com")]
        )
        .await
        .status(),
        200
    );
    // B handles it to its end (the refusal is its last step, in the audit
    // log), and a later sign-in's mail goes out after it.
    let refused = "\"link_refused\"";
    let t = std::time::Instant::now();
    while !c.b.log().contains(refused) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "B never refused the link:\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.ask_link(&c.b, &browser(), "marker@example.com").await;
    assert_eq!(
        c.mail.count_to("ops@example.com"),
        before,
        "no mail to a disabled user"
    );
    c.cli(&["user", "enable", "ops@example.com"]);
    c.ask_link(&c.b, &browser(), "ops@example.com").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_mid_flow_loses_nothing() {
    let mut c = Cluster::start().await;
    let b = browser();
    let mail = c.ask_link(&c.a, &b, "survivor@example.com").await;
    c.a.kill();
    let r = c
        .post(&c.b, &b, "/.sesame/magic", &[("token", &mail.token())])
        .await;
    assert_eq!(r.status(), 303, "{}", c.logs());
    assert_eq!(
        Cluster::status(&c.b, &b, "/after").await,
        200,
        "{}",
        c.logs()
    );
    assert_eq!(
        c.upstream.last().header("remote-email").as_deref(),
        Some("survivor@example.com"),
        "{}",
        c.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_reaches_every_instance_and_signs_nobody_out() {
    let c = Cluster::start().await;
    let b = browser();
    let mail = c.ask_link(&c.a, &b, "rotate@example.com").await;
    let r = c
        .post(&c.a, &b, "/.sesame/magic", &[("token", &mail.token())])
        .await;
    assert!(cookies_set(&r)["sesame"].starts_with("cookie-1."));
    c.cli(&["keys", "rotate"]);
    let t = Instant::now();
    let mut n = 0;
    for on in [&c.a, &c.b] {
        loop {
            n += 1;
            let fresh = browser();
            let mail = c
                .ask_link(on, &fresh, &format!("rotate{n}@example.com"))
                .await;
            let r = c
                .post(on, &fresh, "/.sesame/magic", &[("token", &mail.token())])
                .await;
            assert_eq!(r.status(), 303);
            if !cookies_set(&r)["sesame"].starts_with("cookie-1.") {
                assert_eq!(Cluster::status(&c.a, &fresh, "/x").await, 200);
                assert_eq!(Cluster::status(&c.b, &fresh, "/x").await, 200);
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "new key not used within 10 s; {}",
                c.logs()
            );
        }
    }
    println!(
        "rotation in use on both instances after {} ms",
        t.elapsed().as_millis()
    );
    assert_eq!(
        Cluster::status(&c.a, &b, "/x").await,
        200,
        "old cookie still works"
    );
    assert_eq!(Cluster::status(&c.b, &b, "/x").await, 200);
}

/// The laptop asks on A and waits there; the phone approves on B. A learns
/// of it from the store (its once-a-second read of every waiter), the
/// waiting browser hears, and continues on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_on_one_instance_reaches_the_browser_waiting_on_the_other() {
    let c = Cluster::start().await;
    let laptop = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap();
    let phone = browser();
    let seen = c.mail.count_to("far@example.com");
    let r = c
        .post(
            &c.a,
            &laptop,
            "/.sesame/login",
            &[("email", "far@example.com"), ("rd", "/inbox")],
        )
        .await;
    assert_eq!(r.status(), 200, "{}", c.logs());
    let number = number_on(&r.text().await.unwrap()).expect("a number to match");
    let mail = c.mail.wait_for("far@example.com", seen).await;

    let waiting = held_wait(&laptop, c.a.url("/.sesame/login/wait"));
    // The wait is held on A before the approval is sent to B.
    tokio::task::yield_now().await;
    let sent = Instant::now();
    let r = c
        .post(
            &c.b,
            &phone,
            "/.sesame/magic/approve",
            &[("token", &mail.token()), ("number", &number)],
        )
        .await;
    assert_eq!(r.status(), 200, "{}", c.logs());
    let (state, heard_at) = waiting.await.unwrap();
    // Unwoken, the held wait would have answered "waiting" after 20 s.
    assert_eq!(state["state"], "approved", "{state}\n{}", c.logs());
    let took = heard_at.saturating_duration_since(sent);
    println!("approved on B, heard by the browser waiting on A after {took:?}");

    let r = laptop
        .get(c.b.url("/.sesame/login/continue"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", c.logs());
    // Into the app (by way of the passkey offer: this browser has none).
    let to = r.headers()["location"].to_str().unwrap().to_string();
    assert!(to.ends_with("%2Finbox") || to.ends_with("/inbox"), "{to}");
    assert_eq!(Cluster::status(&c.a, &laptop, "/inbox").await, 200);
    assert_eq!(
        c.upstream.last().header("remote-email").as_deref(),
        Some("far@example.com")
    );
    assert_eq!(
        Cluster::status(&c.a, &phone, "/inbox").await,
        401,
        "the phone has no session"
    );
    // Collected once, across the instances too.
    let r = laptop
        .get(c.a.url("/.sesame/login/continue"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_limit_is_shared_by_the_instances() {
    let c = Cluster::start().await;
    // The processes use the real clock: not across a window's end.
    let left = window_left(sesame::clock::Clock::system().now(), FIFTEEN_MINUTES);
    if left < 30 {
        tokio::time::sleep(Duration::from_secs(left as u64 + 1)).await;
    }
    let mut statuses = Vec::new();
    for i in 0..8 {
        let on = if i % 2 == 0 { &c.a } else { &c.b };
        let r = c
            .post(
                on,
                &browser(),
                "/.sesame/login",
                &[("email", "busy@example.com")],
            )
            .await;
        statuses.push(r.status().as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 429, 429, 429],
        "5 per address, across both"
    );
}

/// Two instances serving one portal (`auth.localhost`) and one site
/// (`wiki.localhost`) on one port, A on 127.0.0.1 and B on 127.0.0.2, and
/// one browser whose requests land on either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_made_on_one_instance_is_taken_on_the_other_and_a_portal_sign_out_reaches_both() {
    use std::net::SocketAddr;
    use std::sync::Arc;
    let secret = "cluster-client-secret-0123456789";
    let hash = sesame::oidc::secret::hash(secret).unwrap();
    let store = TestStore::new(Backend::Postgres).await;
    let mail = MailBox::start();
    let upstream = Upstream::start().await;
    let port = free_port();
    let config = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
admin_listen = "127.0.0.1:0"
threads = 1
[store]
url = "{}"
[mail]
smtp_url = "smtp://{}"
from = "Sesame test <login@example.com>"
[users]
signup = "open"
[auth]
passkey_prompt = false
[portal]
public_url = "http://auth.localhost:{port}"
[[oidc.client]]
id = "app"
secret = "{hash}"
redirect_uris = ["http://localhost:9/cb"]
[[site]]
name = "Wiki"
public_url = "http://wiki.localhost:{port}"
upstream = ["{}"]
"#,
        store.url, mail.addr, upstream.addr
    );
    let dir = store.dir();
    let a = Instance::start_at(dir, "a", &config, &[], "127.0.0.1", port);
    let b = Instance::start_at(dir, "b", &config, &[], "127.0.0.2", port);
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let on = |ip: [u8; 4]| {
        let at = SocketAddr::from((ip, port));
        reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .resolve("auth.localhost", at)
            .resolve("wiki.localhost", at)
            .build()
            .unwrap()
    };
    let (to_a, to_b) = (on([127, 0, 0, 1]), on([127, 0, 0, 2]));
    let portal = format!("http://auth.localhost:{port}");
    let wiki = format!("http://wiki.localhost:{port}");
    let logs = || format!("log of A:\n{}\nlog of B:\n{}", a.log(), b.log());
    let location = |r: &reqwest::Response| {
        r.url()
            .join(r.headers()["location"].to_str().unwrap())
            .unwrap()
            .to_string()
    };

    // The site on A sends the browser to the portal; the portal on B to its
    // sign-in page.
    let r = to_a
        .get(format!("{wiki}/.sesame/login?rd=/page"))
        .send()
        .await
        .unwrap();
    let authorize = location(&r);
    assert!(
        authorize.starts_with(&format!("{portal}/.sesame/authorize?")),
        "{authorize}\n{}",
        logs()
    );
    let r = to_b.get(&authorize).send().await.unwrap();
    assert_eq!(r.status(), 302, "{}", logs());
    // The link asked for on A, used on B.
    let r = to_a
        .post(format!("{portal}/.sesame/login"))
        .header("Origin", &portal)
        .form(&[("email", "ada@example.com"), ("rd", authorize.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", logs());
    let m = mail.wait_for("ada@example.com", 0).await;
    let r = to_b
        .post(format!("{portal}/.sesame/magic"))
        .header("Origin", &portal)
        .form(&[("token", &m.token())])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&r), authorize, "{}", logs());
    // The code made on A, taken on B.
    let r = to_a.get(&authorize).send().await.unwrap();
    let handoff = location(&r);
    assert!(
        handoff.starts_with(&format!("{wiki}/.sesame/handoff?code=")),
        "{handoff}\n{}",
        logs()
    );
    let r = to_b.get(&handoff).send().await.unwrap();
    assert_eq!(r.status(), 303, "{}", logs());
    assert_eq!(location(&r), format!("{wiki}/page"));
    // Taken once, on either.
    assert_eq!(to_a.get(&handoff).send().await.unwrap().status(), 410);
    for client in [&to_a, &to_b] {
        let r = client.get(format!("{wiki}/page")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", logs());
    }

    // OpenID Connect across the instances: the code made on A, redeemed on
    // B, the token used on A.
    let r = to_a
        .get(format!(
            "{portal}/.sesame/oidc/authorize?response_type=code&client_id=app&redirect_uri=http%3A%2F%2Flocalhost%3A9%2Fcb&scope=openid+email"
        ))
        .send()
        .await
        .unwrap();
    let back = location(&r);
    let code = url::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no code: {back}\n{}", logs()));
    let r = to_b
        .post(format!("{portal}/.sesame/oidc/token"))
        .basic_auth("app", Some(secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", "http://localhost:9/cb"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", logs());
    let tokens: serde_json::Value = r.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let userinfo = |client: &reqwest::Client| {
        client
            .get(format!("{portal}/.sesame/oidc/userinfo"))
            .bearer_auth(&access)
            .send()
    };
    assert_eq!(userinfo(&to_a).await.unwrap().status(), 200);

    // Signed out at the portal on B: the site's session ends on A too (A
    // cached it as live a moment ago).
    let r = to_b
        .post(format!("{portal}/.sesame/logout"))
        .header("Origin", &portal)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let t = Instant::now();
    loop {
        let r = to_a.get(format!("{wiki}/page")).send().await.unwrap();
        if r.status() == 401 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "A still accepts the site session\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "portal sign-out on B -> site session refused on A: {} ms",
        t.elapsed().as_millis()
    );
    // And the client's token, on A.
    assert_eq!(userinfo(&to_a).await.unwrap().status(), 401);
}
