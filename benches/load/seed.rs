//! Load-harness helper: fill a Sesame store with N users, each with a live
//! session, and write one `Cookie` header value per session (`name=sealed`),
//! sealed with the store's own cookie key, so a load generator can send
//! requests as N different signed-in people.
//!
//! `seed CONFIG N OUT [SITE]` (run before `sesame run -c CONFIG` on a SQLite
//! store): the cookies are for the config's first site, or the SITEth
//! (counted from 0).

use std::io::Write;
use std::path::Path;

use sesame::app::App;
use sesame::clock::Clock;
use sesame::config::Config;
use sesame::store::{AuthMethod, User};

fn fail(msg: String) -> ! {
    eprintln!("seed: {msg}");
    std::process::exit(1);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(config), Some(n), Some(out)) = (args.get(1), args.get(2), args.get(3)) else {
        fail("usage: seed CONFIG N OUT [SITE]".into());
    };
    let site: usize = match args.get(4) {
        None => 0,
        Some(s) => s
            .parse()
            .unwrap_or_else(|_| fail(format!("SITE must be a number, not {s:?}"))),
    };
    let n: usize = n
        .parse()
        .unwrap_or_else(|_| fail(format!("N must be a number, not {n:?}")));
    let config = Config::load(Path::new(config)).unwrap_or_else(|e| fail(e.to_string()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(e.to_string()));
    let cookies = rt.block_on(async {
        let app = App::build(config, Clock::system())
            .await
            .unwrap_or_else(|e| fail(e.to_string()));
        let Some(site) = app.sites.get(site) else {
            fail(format!("the config has no site {site}"));
        };
        let now = app.clock.now();
        let mut cookies = Vec::with_capacity(n);
        for i in 0..n {
            let user = User {
                id: format!("u_load{i}").into(),
                email: sesame::email::Email::parse(&format!("user{i}@example.com"))
                    .unwrap_or_else(|e| fail(e.to_string())),
                name: Some(format!("User {i}")),
                groups: vec!["staff".into()],
                disabled: false,
                created_at: now,
            };
            app.store
                .add_user(&user)
                .await
                .unwrap_or_else(|e| fail(e.to_string()));
            let session = app
                .sessions
                .create(&user, AuthMethod::MagicLink)
                .await
                .unwrap_or_else(|e| fail(e.to_string()))
                .unwrap_or_else(|| fail("the user just added is missing".into()));
            let sealed = app
                .keys
                .seal_cookie(&site.session_seal, &session.cookie_plain);
            cookies.push(format!("{}={sealed}", site.session_cookie));
        }
        cookies
    });
    let mut f = std::fs::File::create(out).unwrap_or_else(|e| fail(format!("{out}: {e}")));
    for c in cookies {
        writeln!(f, "{c}").unwrap_or_else(|e| fail(format!("{out}: {e}")));
    }
}
