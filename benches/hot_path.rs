//! The per-request hot path, on each store: session check (cookie open +
//! verify + cache hit) and the whole protected-request decision (site by
//! host, cookie out of the header, session, policy, header strip + inject).
//! Both must not touch the store; the cold bench (a cache miss, which reads
//! the session from the store) shows what a store round trip would cost.
//!
//! `cargo bench --bench hot_path` (PostgreSQL from SESAME_TEST_POSTGRES_URL,
//! default postgres://postgres@127.0.0.1:5432/test). Budgets: < 2 us and < 5 us.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use futures::executor::block_on;
use pingora::http::RequestHeader;
use sesame::app::App;
use sesame::clock::Clock;
use sesame::config::Config;
use sesame::gateway::headers::{self, Identity};
use sesame::policy::{self, Decision};
use sesame::store::{AuthMethod, Invalidation, User};

struct Rig {
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    app: std::sync::Arc<App>,
    cookie_header: String,
    sealed: String,
    plain: String,
}

fn store_url(name: &str, dir: &std::path::Path, rt: &tokio::runtime::Runtime) -> String {
    if name == "sqlite" {
        return format!("sqlite://{}/bench.db", dir.display());
    }
    let base = std::env::var("SESAME_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = bench_schema();
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(&base)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {base}: {e}"));
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&pool)
            .await
            .unwrap();
    });
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options[search_path]={schema}")
}

fn bench_schema() -> String {
    format!("bench_{}", std::process::id())
}

fn drop_bench_schema(rt: &tokio::runtime::Runtime) {
    let base = std::env::var("SESAME_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    rt.block_on(async {
        if let Ok(pool) = sqlx::PgPool::connect(&base).await {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", bench_schema()))
                .execute(&pool)
                .await;
        }
    });
}

fn rig(store: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let config = Config::from_toml(&format!(
        r#"
[store]
url = "{}"
[mail]
transport = "console"
[[site]]
public_url = "https://wiki.example.com"
upstream = ["127.0.0.1:3000"]
public_paths = ["/health"]
allow_domains = ["example.com"]
[[site]]
public_url = "https://docs.example.com"
upstream = ["127.0.0.1:3000"]
[[site.rule]]
path = "/admin"
allow_groups = ["ops"]
[[site.rule]]
path = "/internal"
action = "deny"
[[site.rule]]
path = "/status"
action = "public"
[[site.rule]]
path = "/api/v1"
allow_domains = ["example.com"]
[[site.rule]]
path = "/docs"
allow_groups = ["staff"]
"#,
        store_url(store, dir.path(), &rt)
    ))
    .unwrap();
    let app = rt.block_on(App::build(config, Clock::system())).unwrap();
    let user = User {
        id: "u_bench".into(),
        email: sesame::email::Email::parse("ada@example.com").unwrap(),
        name: Some("Ada".into()),
        groups: vec!["staff".into()],
        disabled: false,
        created_at: 0,
    };
    rt.block_on(app.store.add_user(&user)).unwrap();
    let session = rt
        .block_on(app.sessions.create(&user, AuthMethod::MagicLink))
        .unwrap()
        .expect("the user exists and is enabled");
    let site = &app.sites[0];
    let sealed = app
        .keys
        .seal_cookie(&site.session_seal, &session.cookie_plain);
    let cookie_header = format!(
        "_ga=GA1.2.3; theme=dark; {}={sealed}; lang=en",
        site.session_cookie
    );
    // Warm the cache, as any live session is after its first request.
    let plain = app.keys.open_cookie(&site.session_seal, &sealed).unwrap();
    rt.block_on(app.sessions.check(&plain)).unwrap();
    Rig {
        rt,
        _dir: dir,
        app,
        cookie_header,
        sealed,
        plain,
    }
}

fn benches(c: &mut Criterion) {
    for store in ["sqlite", "postgres"] {
        let r = rig(store);
        let app = &r.app;
        let site = &app.sites[0];

        c.bench_function(
            &format!("{store}: session check (cookie open + verify + cache hit)"),
            |b| {
                b.iter(|| {
                    let plain = app
                        .keys
                        .open_cookie(&site.session_seal, black_box(&r.sealed))
                        .unwrap();
                    let live = block_on(app.sessions.check(&plain)).unwrap();
                    black_box(live);
                })
            },
        );

        let mut template =
            RequestHeader::build("GET", b"/wiki/Main_Page?action=view", None).unwrap();
        template.insert_header("host", "wiki.example.com").unwrap();
        template
            .insert_header("cookie", r.cookie_header.as_str())
            .unwrap();
        template.insert_header("remote-user", "spoofed").unwrap();
        template.insert_header("accept", "text/html").unwrap();
        let xff = http::HeaderValue::from_static("192.0.2.7");

        c.bench_function(
            &format!(
                "{store}: protected-request decision (host, cookie, session, policy, headers)"
            ),
            |b| {
                b.iter(|| {
                    let mut req = template.clone();
                    let host = req.headers.get("host").unwrap().to_str().unwrap();
                    let (_, site) = app.site_for_host(black_box(host)).unwrap();
                    let cookie = policy::session_cookie(
                        site,
                        req.headers.get_all("cookie").iter().map(|v| v.as_bytes()),
                    );
                    let decision = block_on(policy::decide(app, site, req.uri.path(), cookie));
                    let Decision::Allow(live) = decision else {
                        panic!("bench session must be allowed")
                    };
                    let assertion = app.assertion(sesame::config::SiteId::new(0), &live);
                    let identity = Identity {
                        live: &live,
                        assertion: assertion.as_ref().map(|a| &a.header),
                    };
                    headers::for_upstream(&mut req, site, Some(identity), xff.clone());
                    black_box(req);
                })
            },
        );

        c.bench_function(
            &format!("{store}: cold session check (cache miss, store read)"),
            |b| {
                b.iter(|| {
                    app.sessions.invalidate(&Invalidation::All);
                    let live =
                        r.rt.block_on(app.sessions.check(black_box(&r.plain)))
                            .unwrap();
                    black_box(live);
                })
            },
        );

        if store == "sqlite" {
            c.bench_function("baseline: clone the request header only", |b| {
                b.iter(|| black_box(template.clone()))
            });
            parts(c, &r, &template);
        } else {
            drop_bench_schema(&r.rt);
        }
    }
}

/// The pieces of the hot path one by one, and the cold paths (SQLite rig;
/// none of these touch the store).
fn parts(c: &mut Criterion, r: &Rig, template: &RequestHeader) {
    let app = &r.app;
    let site = &app.sites[0];
    let ruled = &app.sites[1];
    let plain = app.keys.open_cookie(&site.session_seal, &r.sealed).unwrap();
    let live = block_on(app.sessions.check(&plain)).unwrap();
    let ruled_cookie = app.keys.seal_cookie(&ruled.session_seal, &plain);

    c.bench_function(
        "policy: decision on a site with 5 path rules (normalise + match)",
        |b| {
            b.iter(|| {
                let (d, _) = block_on(policy::decide_checked(
                    app,
                    ruled,
                    black_box("/docs/./guide/%69ntro//page"),
                    Some(&ruled_cookie),
                ));
                black_box(d)
            })
        },
    );

    let assertion = app.assertion(sesame::config::SiteId::new(0), &live);
    let xff = http::HeaderValue::from_static("192.0.2.7");
    c.bench_function("assertion: from the session", |b| {
        b.iter(|| black_box(app.assertion(sesame::config::SiteId::new(0), black_box(&live))))
    });
    c.bench_function(
        "headers: strip + inject + X-Forwarded-* (clone included)",
        |b| {
            b.iter(|| {
                let mut req = template.clone();
                let identity = Identity {
                    live: &live,
                    assertion: assertion.as_ref().map(|a| &a.header),
                };
                headers::for_upstream(&mut req, site, Some(identity), xff.clone());
                black_box(req)
            })
        },
    );

    let now = app.clock.now();
    let claims = sesame::magic_link::token::Claims {
        jti: "p_bench".into(),
        sub: "ada@example.com".into(),
        aud: site.site.origin.clone(),
        iat: now,
        exp: now + 900,
    };
    c.bench_function("cold: magic link mint (HS256 JWT)", |b| {
        b.iter(|| {
            black_box(sesame::magic_link::token::mint(
                &app.keys,
                black_box(&claims),
            ))
        })
    });
    let token = sesame::magic_link::token::mint(&app.keys, &claims);
    c.bench_function("cold: magic link verify", |b| {
        b.iter(|| {
            black_box(
                sesame::magic_link::token::verify(
                    &app.keys,
                    black_box(&token.0),
                    &site.site.origin,
                    now,
                )
                .unwrap(),
            )
        })
    });

    // A passkey (SoftPasskey, ES256) and one assertion, verified as Sesame
    // does it (webauthn-rs), without the store round trips around it.
    use webauthn_authenticator_rs::prelude::WebauthnAuthenticator;
    use webauthn_authenticator_rs::softpasskey::SoftPasskey;
    let origin = url::Url::parse("https://wiki.example.com").unwrap();
    let rp = webauthn_rs::WebauthnBuilder::new("wiki.example.com", &origin)
        .unwrap()
        .build()
        .unwrap();
    let mut auth = SoftPasskey::new(true);
    let (ccr, reg) = rp
        .start_passkey_registration(sesame::random::uuid(), "ada", "Ada", None)
        .unwrap();
    let cred = auth.do_registration(origin.clone(), ccr).unwrap();
    let passkey = rp.finish_passkey_registration(&cred, &reg).unwrap();
    let (rcr, state) = rp.start_passkey_authentication(&[passkey]).unwrap();
    let assertion = auth.do_authentication(origin, rcr).unwrap();
    c.bench_function("cold: passkey assertion verify (ES256, webauthn-rs)", |b| {
        b.iter(|| {
            black_box(
                rp.finish_passkey_authentication(black_box(&assertion), &state)
                    .unwrap(),
            )
        })
    });
}

criterion_group!(hot, benches);
criterion_main!(hot);
