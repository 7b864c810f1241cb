//! The OpenID Connect provider on the portal, driven by a relying party
//! library from outside the project (the `openidconnect` crate: discovery,
//! code flow with PKCE and nonce, the ID token verified against the JWKS,
//! userinfo), through a real sign-in by email. The negative cases are named
//! after the OpenID Foundation's Basic OP and Config OP test plans.

use std::net::SocketAddr;
use std::time::Duration;

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreProviderMetadata, CoreUserInfoClaims,
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use reqwest::redirect::Policy;
use serde_json::Value;

use crate::helpers::*;

const SECRET: &str = "grafana-secret-0123456789abcdef";
const REDIRECT: &str = "http://localhost:9/login/generic_oauth";
const SPA_REDIRECT: &str = "http://localhost:9/spa/callback";

async fn spawn_oidc() -> TestApp {
    spawn_oidc_with("").await
}

/// With `grafana_extra` added to the Grafana client's table.
async fn spawn_oidc_with(grafana_extra: &str) -> TestApp {
    spawn_oidc_on("auth.localhost", grafana_extra).await
}

/// The portal (the issuer) on `host`.
async fn spawn_oidc_on(host: &'static str, grafana_extra: &str) -> TestApp {
    let hash = sesame::oidc::secret::hash(SECRET).unwrap();
    spawn_with(Options {
        portal: Some(host),
        site0_host: if host == "localhost" {
            "wiki.localhost"
        } else {
            "localhost"
        },
        extra: format!(
            r#"
[[oidc.client]]
id = "grafana"
name = "Grafana"
secret = "{hash}"
redirect_uris = ["{REDIRECT}"]
post_logout_redirect_uris = ["http://localhost:9/logged-out"]
{grafana_extra}

[[oidc.client]]
id = "spa"
public = true
redirect_uris = ["{SPA_REDIRECT}"]

[[oidc.client]]
id = "es-app"
secret = "{hash}"
redirect_uris = ["{REDIRECT}"]
id_token_signed_response_alg = "ES256"

[[oidc.client]]
id = "ed-app"
secret = "{hash}"
redirect_uris = ["{REDIRECT}"]
id_token_signed_response_alg = "EdDSA"

[[oidc.client]]
id = "staff-only"
secret = "{hash}"
redirect_uris = ["{REDIRECT}"]
allow_groups = ["staff"]
"#
        ),
        ..Options::default()
    })
    .await
}

fn issuer(app: &TestApp) -> String {
    app.portal.clone().unwrap()
}

/// A browser, and the RP's HTTP client: both find `auth.localhost` here.
fn client_for(app: &TestApp, cookies: bool) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(cookies)
        .redirect(Policy::none())
        .timeout(Duration::from_secs(10))
        .resolve(
            "auth.localhost",
            SocketAddr::from(([127, 0, 0, 1], app.port)),
        )
        .build()
        .unwrap()
}

fn location(r: &reqwest::Response) -> String {
    let to = r.headers()["location"].to_str().unwrap();
    r.url().join(to).unwrap().to_string()
}

fn param(url: &str, key: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Sign `b` in at the portal by email, from an authorization URL; returns
/// where the provider sends the browser afterwards (the client's
/// redirect URI, with a code or an error).
async fn sign_in_from(app: &TestApp, b: &reqwest::Client, email: &str, authorize: &str) -> String {
    let r = b.get(authorize).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let login = location(&r);
    assert!(
        login.starts_with(&format!("{}/.sesame/login?", issuer(app))),
        "{login}"
    );
    let rd = param(&login, "rd").unwrap();
    let seen = app.mail.count_to(email);
    let r = b
        .post(format!("{}/.sesame/login", issuer(app)))
        .header("Origin", issuer(app))
        .form(&[("email", email), ("rd", &rd)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mail = app.mail.wait_for_subject(email, seen, "Sign in to").await;
    let r = b
        .post(format!("{}/.sesame/magic", issuer(app)))
        .header("Origin", issuer(app))
        .form(&[("token", &mail.token())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let back = location(&r);
    let r = b.get(&back).send().await.unwrap();
    assert_eq!(r.status(), 302, "{back}");
    location(&r)
}

/// A plain authorization request for `client`, PKCE made of `verifier`.
fn authorize_url(app: &TestApp, client: &str, redirect: &str, extra: &[(&str, &str)]) -> String {
    let mut u = url::Url::parse(&format!("{}/.sesame/oidc/authorize", issuer(app))).unwrap();
    u.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client)
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", "openid email")
        .append_pair("state", "st4te")
        .extend_pairs(extra);
    u.into()
}

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

async fn exchange(app: &TestApp, form: &[(&str, &str)]) -> reqwest::Response {
    client_for(app, false)
        .post(format!("{}/.sesame/oidc/token", issuer(app)))
        .basic_auth("grafana", Some(SECRET))
        .form(form)
        .send()
        .await
        .unwrap()
}

/// A signed-in browser and a fresh code for Grafana (PKCE with `VERIFIER`).
async fn code_for(app: &TestApp, b: &reqwest::Client, signed_in: bool) -> String {
    let url = authorize_url(
        app,
        "grafana",
        REDIRECT,
        &[
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ],
    );
    let back = if signed_in {
        location(&b.get(&url).send().await.unwrap())
    } else {
        sign_in_from(app, b, "ada@example.com", &url).await
    };
    assert!(back.starts_with(REDIRECT), "{back}");
    assert_eq!(param(&back, "state").as_deref(), Some("st4te"));
    assert_eq!(param(&back, "iss"), Some(issuer(app)));
    param(&back, "code").unwrap_or_else(|| panic!("no code: {back}"))
}

async fn redeem(app: &TestApp, code: &str) -> reqwest::Response {
    exchange(
        app,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await
}

async fn userinfo(app: &TestApp, token: &str) -> u16 {
    client_for(app, false)
        .get(format!("{}/.sesame/oidc/userinfo", issuer(app)))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Tokens for Grafana with `offline_access`, for a browser signed in now.
async fn offline_tokens(app: &TestApp, b: &reqwest::Client) -> Value {
    let url = authorize_url(
        app,
        "grafana",
        REDIRECT,
        &[("scope", "openid email offline_access")],
    )
    .replace("scope=openid+email&", "");
    let back = sign_in_from(app, b, "ada@example.com", &url).await;
    let code = param(&back, "code").unwrap();
    let r = exchange(
        app,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    exchange(
        app,
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
    )
    .await
}

store_tests! {
    async fn refresh_tokens_rotate_and_a_reused_one_revokes_its_family() {
        let app = spawn_oidc().await;
        let b = client_for(&app, true);
        let first = offline_tokens(&app, &b).await;
        assert_eq!(first["scope"], "openid email offline_access");
        let r1 = first["refresh_token"].as_str().expect("offline_access gives a refresh token").to_string();
        // Rotated on use: a new access token and a new refresh token.
        let r = refresh(&app, &r1).await;
        assert_eq!(r.status(), 200);
        let second: Value = r.json().await.unwrap();
        let r2 = second["refresh_token"].as_str().unwrap().to_string();
        assert_ne!(r1, r2);
        let access2 = second["access_token"].as_str().unwrap().to_string();
        assert_eq!(userinfo(&app, &access2).await, 200);
        let claims = verify_id_token(&app, second["id_token"].as_str().unwrap()).await;
        assert_eq!(claims["auth_time"], verify_id_token(&app, first["id_token"].as_str().unwrap()).await["auth_time"]);
        // A wider scope than granted: refused, and the token is spent (a
        // refused request never leaves a token usable twice).
        let r = exchange(&app, &[("grant_type", "refresh_token"), ("refresh_token", &r2), ("scope", "openid groups")]).await;
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_scope");
        // The first one again (a thief's copy): the whole family ends.
        let r = refresh(&app, &r1).await;
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
        assert_eq!(userinfo(&app, &access2).await, 401, "the family's access token is revoked");
        let r = refresh(&app, &r2).await;
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant", "and its newest refresh token");
        let m = app.metrics().await;
        // r1, then the spent r2: each a reuse.
        assert_eq!(TestApp::metric(&m, "sesame_oidc_errors_total{error=\"refresh_reused\"}"), 2.0);
        assert_eq!(TestApp::metric(&m, "sesame_oidc_tokens_total{grant_type=\"refresh_token\"}"), 1.0);
        // Without offline_access: no refresh token.
        let code = code_for(&app, &b, true).await;
        let t: Value = redeem(&app, &code).await.json().await.unwrap();
        assert!(t.get("refresh_token").is_none(), "{t}");

        // A narrower scope asked for at a refresh: that access token has
        // only it; the grant keeps the rest.
        let url = authorize_url(&app, "grafana", REDIRECT, &[("scope", "openid email offline_access")])
            .replace("scope=openid+email&", "");
        let back = location(&b.get(&url).send().await.unwrap());
        let code = param(&back, "code").unwrap();
        let t: Value = exchange(&app, &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", REDIRECT)]).await.json().await.unwrap();
        let r = exchange(&app, &[("grant_type", "refresh_token"), ("refresh_token", t["refresh_token"].as_str().unwrap()), ("scope", "openid")]).await;
        assert_eq!(r.status(), 200);
        let narrow: Value = r.json().await.unwrap();
        assert_eq!(narrow["scope"], "openid");
        let info: Value = client_for(&app, false)
            .get(format!("{}/.sesame/oidc/userinfo", issuer(&app)))
            .bearer_auth(narrow["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(info.get("email").is_none() && info["sub"].is_string(), "{info}");
        let r = refresh(&app, narrow["refresh_token"].as_str().unwrap()).await;
        assert_eq!(r.json::<Value>().await.unwrap()["scope"], "openid email offline_access");
    }

    async fn revocation_ends_a_token_and_a_refresh_token_its_grant() {
        let app = spawn_oidc().await;
        let b = client_for(&app, true);
        let t = offline_tokens(&app, &b).await;
        let access = t["access_token"].as_str().unwrap();
        let refresh_token = t["refresh_token"].as_str().unwrap();
        let revoke = |token: String, auth: Option<(&'static str, &'static str)>| {
            let c = client_for(&app, false);
            let url = format!("{}/.sesame/oidc/revoke", issuer(&app));
            async move {
                let mut r = c.post(url).form(&[("token", token.as_str())]);
                if let Some((id, secret)) = auth {
                    r = r.basic_auth(id, Some(secret));
                }
                r.send().await.unwrap()
            }
        };
        // Another client cannot revoke it (200, as RFC 7009 says, and nothing done).
        let r = revoke(access.to_string(), Some(("staff-only", SECRET))).await;
        assert_eq!(r.status(), 200);
        assert_eq!(userinfo(&app, access).await, 200);
        // Unauthenticated: 401.
        assert_eq!(revoke(access.to_string(), None).await.status(), 401);
        // The access token alone.
        assert_eq!(revoke(access.to_string(), Some(("grafana", SECRET))).await.status(), 200);
        assert_eq!(userinfo(&app, access).await, 401);
        let r = refresh(&app, refresh_token).await;
        assert_eq!(r.status(), 200, "the refresh token lives on");
        let t: Value = r.json().await.unwrap();
        // A refresh token: its grant ends.
        let refresh2 = t["refresh_token"].as_str().unwrap().to_string();
        let access2 = t["access_token"].as_str().unwrap().to_string();
        assert_eq!(revoke(refresh2.clone(), Some(("grafana", SECRET))).await.status(), 200);
        assert_eq!(userinfo(&app, &access2).await, 401);
        assert_eq!(refresh(&app, &refresh2).await.status(), 400);
        // An unknown token: 200 all the same.
        assert_eq!(revoke("made-up".into(), Some(("grafana", SECRET))).await.status(), 200);
    }

    async fn rp_initiated_logout_ends_the_sign_in_and_returns_to_a_registered_uri() {
        let app = spawn_oidc().await;
        let b = client_for(&app, true);
        let t = offline_tokens(&app, &b).await;
        let id_token = t["id_token"].as_str().unwrap();
        let end = |extra: &[(&str, &str)]| {
            let mut u = url::Url::parse(&format!("{}/.sesame/oidc/end_session", issuer(&app))).unwrap();
            u.query_pairs_mut().extend_pairs(extra);
            u.to_string()
        };
        // An unregistered place to return to: a page, no redirect.
        let r = b.get(end(&[("id_token_hint", id_token), ("post_logout_redirect_uri", "https://evil.example/")])).send().await.unwrap();
        assert_eq!(r.status(), 400);
        // Without a hint of this sign-in: the person is asked, nothing ends.
        let r = b.get(end(&[])).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("Sign out?"));
        assert_eq!(userinfo(&app, t["access_token"].as_str().unwrap()).await, 200);
        // With it: signed out, tokens ended, back to the client with state.
        let r = b
            .get(end(&[("id_token_hint", id_token), ("post_logout_redirect_uri", "http://localhost:9/logged-out"), ("state", "bye")]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        assert_eq!(location(&r), "http://localhost:9/logged-out?state=bye");
        assert_eq!(userinfo(&app, t["access_token"].as_str().unwrap()).await, 401);
        assert_eq!(refresh(&app, t["refresh_token"].as_str().unwrap()).await.status(), 400);
        let r = b.get(format!("{}/.sesame/account", issuer(&app))).send().await.unwrap();
        assert_eq!(r.status(), 302, "signed out at the portal");
    }

    async fn form_post_hands_the_code_over_in_a_page_that_posts_to_the_client_only() {
        let app = spawn_oidc().await;
        let b = client_for(&app, true);
        code_for(&app, &b, false).await;
        let url = authorize_url(&app, "grafana", REDIRECT, &[("response_mode", "form_post")]);
        let r = b.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
        assert!(csp.contains("form-action http://localhost:9;"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        let html = r.text().await.unwrap();
        assert!(html.contains(&format!("action=\"{}\"", REDIRECT.replace('/', "&#x2f;"))) || html.contains(&format!("action=\"{REDIRECT}\"")), "{html}");
        let code = hidden_value(&html, "code").expect("the code in the form");
        assert_eq!(hidden_value(&html, "state").as_deref(), Some("st4te"));
        let r = exchange(&app, &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", REDIRECT)]).await;
        assert_eq!(r.status(), 200);
        // Errors go the same way.
        let url = authorize_url(&app, "grafana", REDIRECT, &[("response_mode", "form_post"), ("prompt", "none"), ("max_age", "x")]);
        let html = b.get(&url).send().await.unwrap().text().await.unwrap();
        assert_eq!(hidden_value(&html, "error").as_deref(), Some("invalid_request"));
    }

    async fn a_sign_in_that_ends_is_announced_to_the_client_by_back_channel() {
        // The client's real endpoint: it records each POST's body.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut conn, _)) = listener.accept().await else { return };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let n = conn.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len: usize = text[..end]
                                .lines()
                                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                let _ = tx.send(text[end + 4..end + 4 + len].to_string());
                                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        let app = spawn_oidc_with(&format!("backchannel_logout_uri = \"http://127.0.0.1:{}/backchannel\"", at.port())).await;
        let b = client_for(&app, true);
        let t = offline_tokens(&app, &b).await;
        let id_claims = verify_id_token(&app, t["id_token"].as_str().unwrap()).await;
        // Signed out at the portal.
        let r = b
            .post(format!("{}/.sesame/logout", issuer(&app)))
            .header("Origin", issuer(&app))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        let body = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a logout token within 10 s")
            .unwrap();
        let token = url::form_urlencoded::parse(body.as_bytes())
            .find(|(k, _)| k == "logout_token")
            .map(|(_, v)| v.into_owned())
            .expect("logout_token in the form");
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("logout+jwt"));
        let claims = verify_id_token(&app, &token).await;
        assert_eq!(claims["sid"], id_claims["sid"]);
        assert_eq!(claims["sub"], id_claims["sub"]);
        assert!(claims["events"]["http://schemas.openid.net/event/backchannel-logout"].is_object(), "{claims}");
        assert!(claims.get("nonce").is_none());
        // Once: the next round finds nothing to send.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let m = app.metrics().await;
            if TestApp::metric(&m, "sesame_oidc_backchannel_logouts_total{result=\"ok\"}") == 1.0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{m}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = b.get(authorize_url(&app, "grafana", REDIRECT, &[])).send().await.unwrap();
        assert!(location(&r).contains("/.sesame/login?"), "signed out");
        assert!(rx.try_recv().is_err(), "one token for one sign-in");
    }

    async fn no_token_outlives_the_sign_in_or_the_persons_access_to_the_app() {
        let app = spawn_oidc().await;
        let b = client_for(&app, true);
        let t = offline_tokens(&app, &b).await;
        let refresh_token = t["refresh_token"].as_str().unwrap().to_string();
        // Refreshed within the sign-in's lifetime (12 h): fine.
        app.clock.advance(Duration::from_secs(11 * 3600));
        let r = refresh(&app, &refresh_token).await;
        assert_eq!(r.status(), 200);
        let t: Value = r.json().await.unwrap();
        assert!(t["expires_in"].as_i64().unwrap() <= 3600);
        // Past it: the access token and the refresh token are done.
        app.clock.advance(Duration::from_secs(3600 + 1));
        assert_eq!(userinfo(&app, t["access_token"].as_str().unwrap()).await, 401);
        let r = refresh(&app, t["refresh_token"].as_str().unwrap()).await;
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");

        // Taken off the app's list: no more tokens.
        let (ok, _, err) = app.cli(&["user", "add", "grace@example.com", "--group", "staff"]);
        assert!(ok, "{err}");
        let b = client_for(&app, true);
        let url = authorize_url(&app, "staff-only", REDIRECT, &[("scope", "openid offline_access")])
            .replace("scope=openid+email&", "");
        let back = sign_in_from(&app, &b, "grace@example.com", &url).await;
        let code = param(&back, "code").unwrap_or_else(|| panic!("{back}"));
        let r = client_for(&app, false)
            .post(format!("{}/.sesame/oidc/token", issuer(&app)))
            .basic_auth("staff-only", Some(SECRET))
            .form(&[("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", REDIRECT)])
            .send()
            .await
            .unwrap();
        let t: Value = r.json().await.unwrap();
        let (ok, _, err) = app.cli(&["user", "set-groups", "grace@example.com"]);
        assert!(ok, "{err}");
        let r = client_for(&app, false)
            .post(format!("{}/.sesame/oidc/token", issuer(&app)))
            .basic_auth("staff-only", Some(SECRET))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", t["refresh_token"].as_str().unwrap())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    }

    async fn an_older_sign_in_cannot_pass_for_a_fresh_one() {
        let app = spawn_oidc().await;
        let b = client_for(&app, true);
        code_for(&app, &b, false).await;
        app.clock.advance(Duration::from_secs(5));
        // prompt=login with a made-up "signed in after" of the attacker's.
        for forged in ["0", "1", "AAAA"] {
            let url = authorize_url(&app, "grafana", REDIRECT, &[("prompt", "login"), ("sesame_after", forged)]);
            let r = b.get(&url).send().await.unwrap();
            assert!(location(&r).starts_with(&format!("{}/.sesame/login?", issuer(&app))), "{forged}");
            let url = authorize_url(&app, "grafana", REDIRECT, &[("max_age", "0"), ("sesame_after", forged)]);
            let r = b.get(&url).send().await.unwrap();
            assert!(location(&r).starts_with(&format!("{}/.sesame/login?", issuer(&app))), "{forged}");
        }
        // The provider's own value, taken to another client: no good there.
        let url = authorize_url(&app, "grafana", REDIRECT, &[("prompt", "login")]);
        let login = location(&b.get(&url).send().await.unwrap());
        let rd = param(&login, "rd").unwrap();
        let sealed = param(&rd, "sesame_after").expect("the time is carried");
        let url = authorize_url(&app, "staff-only", REDIRECT, &[("max_age", "0"), ("sesame_after", &sealed)]);
        let r = b.get(&url).send().await.unwrap();
        assert!(location(&r).starts_with(&format!("{}/.sesame/login?", issuer(&app))));
    }

    async fn a_client_may_have_its_id_tokens_signed_es256_or_eddsa() {
        let app = spawn_oidc().await;
        let b = client_for(&app, true);
        code_for(&app, &b, false).await;
        let jwks: Value = client_for(&app, false)
            .get(format!("{}/.sesame/oidc/jwks.json", issuer(&app)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for (client, alg) in [("es-app", jsonwebtoken::Algorithm::ES256), ("ed-app", jsonwebtoken::Algorithm::EdDSA)] {
            let url = authorize_url(&app, client, REDIRECT, &[("nonce", "n1")]);
            let code = param(&location(&b.get(&url).send().await.unwrap()), "code").unwrap();
            let r = client_for(&app, false)
                .post(format!("{}/.sesame/oidc/token", issuer(&app)))
                .basic_auth(client, Some(SECRET))
                .form(&[("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", REDIRECT)])
                .send()
                .await
                .unwrap();
            let token = r.json::<Value>().await.unwrap()["id_token"].as_str().unwrap().to_string();
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.alg, alg, "{client}");
            let key = jwks["keys"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["kid"].as_str() == header.kid.as_deref())
                .unwrap_or_else(|| panic!("the JWKS has the key of {client}: {jwks}"));
            let decoding = match alg {
                jsonwebtoken::Algorithm::ES256 => jsonwebtoken::DecodingKey::from_ec_components(key["x"].as_str().unwrap(), key["y"].as_str().unwrap()).unwrap(),
                _ => jsonwebtoken::DecodingKey::from_ed_components(key["x"].as_str().unwrap()).unwrap(),
            };
            let mut v = jsonwebtoken::Validation::new(alg);
            v.set_audience(&[client]);
            v.set_issuer(&[issuer(&app)]);
            let claims = jsonwebtoken::decode::<Value>(&token, &decoding, &v).expect("verifies").claims;
            assert_eq!(claims["nonce"], "n1");
        }
    }

    async fn grants_are_listed_and_revoked_from_the_command_line() {
        let app = spawn_oidc().await;
        let b = client_for(&app, true);
        let t = offline_tokens(&app, &b).await;
        let access = t["access_token"].as_str().unwrap();
        let (ok, out, err) = app.cli(&["oidc", "grants", "list", "--user", "ada@example.com"]);
        assert!(ok, "{err}");
        let line = out.lines().next().unwrap_or_else(|| panic!("no grant listed: {out}"));
        assert!(line.contains("grafana") && line.contains("ada@example.com") && line.contains("offline_access"), "{line}");
        let id = line.split('\t').next().unwrap();
        let (ok, _, err) = app.cli(&["oidc", "grants", "revoke", "--id", "no-such-grant"]);
        assert!(!ok && err.contains("no live grant"), "{err}");
        let (ok, out, err) = app.cli(&["oidc", "grants", "revoke", "--id", id]);
        assert!(ok && out.contains("revoked 1"), "{out}{err}");
        assert_eq!(userinfo(&app, access).await, 401);
        assert_eq!(refresh(&app, t["refresh_token"].as_str().unwrap()).await.status(), 400);
        let (_, out, _) = app.cli(&["oidc", "grants", "list"]);
        assert!(out.trim().is_empty(), "{out}");
    }

    async fn a_relying_party_library_signs_in_with_the_code_flow_and_pkce() {
        let app = spawn_oidc().await;
        let http = client_for(&app, false);
        let metadata = CoreProviderMetadata::discover_async(IssuerUrl::new(issuer(&app)).unwrap(), &http)
            .await
            .expect("discovery and JWKS");
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new("grafana".into()),
            Some(ClientSecret::new(SECRET.into())),
        )
        .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, csrf, nonce) = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .add_scope(Scope::new("groups".into()))
            .set_pkce_challenge(challenge)
            .url();
        let b = client_for(&app, true);
        let back = sign_in_from(&app, &b, "ada@example.com", url.as_str()).await;
        assert!(back.starts_with(REDIRECT), "{back}");
        assert_eq!(param(&back, "state").as_deref(), Some(csrf.secret().as_str()));
        let code = param(&back, "code").unwrap();
        let tokens = client
            .exchange_code(AuthorizationCode::new(code))
            .unwrap()
            .set_pkce_verifier(verifier)
            .request_async(&http)
            .await
            .expect("the token response");
        let id_token = tokens.id_token().expect("an ID token");
        let claims = id_token
            .claims(&client.id_token_verifier(), &nonce)
            .expect("the ID token verifies: signature (JWKS), iss, aud, exp, nonce");
        assert_eq!(claims.email().map(|e| e.as_str()), Some("ada@example.com"));
        assert_eq!(claims.email_verified(), Some(true));
        assert!(claims.auth_time().is_some());
        let sub = claims.subject().clone();
        assert!(sub.as_str().starts_with("u_"), "sub is the user id, as Remote-User: {}", sub.as_str());
        let info: CoreUserInfoClaims = client
            .user_info(tokens.access_token().to_owned(), Some(sub))
            .unwrap()
            .request_async(&http)
            .await
            .expect("userinfo");
        assert_eq!(info.email().map(|e| e.as_str()), Some("ada@example.com"));
        assert_eq!(info.preferred_username().map(|u| u.as_str()), Some("ada@example.com"));
        let m = app.metrics().await;
        assert_eq!(TestApp::metric(&m, "sesame_oidc_authorizations_total{client=\"grafana\"}"), 1.0);
        assert_eq!(TestApp::metric(&m, "sesame_oidc_tokens_total{grant_type=\"authorization_code\"}"), 1.0);
    }

    // OP-OAuth-2nd, OP-OAuth-2nd-Revokes, OP-OAuth-2nd-30s (expired),
    // and the PKCE and client checks of the token endpoint.
    async fn a_code_works_once_within_a_minute_for_its_client_and_verifier() {
        let app = spawn_oidc().await;
        let b = client_for(&app, true);
        let code = code_for(&app, &b, false).await;
        // PKCE mismatch: refused (and the code spent).
        let r = exchange(&app, &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", REDIRECT), ("code_verifier", &"x".repeat(43))]).await;
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");

        let code = code_for(&app, &b, true).await;
        // Wrong secret: 401 invalid_client with a Basic challenge.
        let r = client_for(&app, false)
            .post(format!("{}/.sesame/oidc/token", issuer(&app)))
            .basic_auth("grafana", Some("wrong-secret-0123456789"))
            .form(&[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", REDIRECT), ("code_verifier", VERIFIER)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
        // Another client's credentials (client_secret_post): not its code.
        let r = client_for(&app, false)
            .post(format!("{}/.sesame/oidc/token", issuer(&app)))
            .form(&[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", REDIRECT), ("code_verifier", VERIFIER), ("client_id", "staff-only"), ("client_secret", SECRET)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");

        // The right one; then the same code again: refused, and what the
        // first use gave is revoked.
        let code = code_for(&app, &b, true).await;
        let r = redeem(&app, &code).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["cache-control"], "no-store");
        let tokens: Value = r.json().await.unwrap();
        let access = tokens["access_token"].as_str().unwrap().to_string();
        assert_eq!(userinfo(&app, &access).await, 200);
        let r = redeem(&app, &code).await;
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
        assert_eq!(userinfo(&app, &access).await, 401, "the first use's token is revoked");

        // A minute later: expired.
        let code = code_for(&app, &b, true).await;
        app.clock.advance(Duration::from_secs(61));
        let r = redeem(&app, &code).await;
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    }

    // OP-prompt-none-NotLoggedIn, OP-prompt-login, OP-Req-max_age=1,
    // OP-nonce-code, OP-IDToken-Signature/iss/aud.
    async fn prompt_max_age_and_nonce_behave_as_oidc_core_says() {
        let app = spawn_oidc().await;
        let b = client_for(&app, true);
        // prompt=none, nobody signed in: back to the client with login_required.
        let url = authorize_url(&app, "grafana", REDIRECT, &[("prompt", "none")]);
        let back = location(&b.get(&url).send().await.unwrap());
        assert!(back.starts_with(REDIRECT), "{back}");
        assert_eq!(param(&back, "error").as_deref(), Some("login_required"));
        assert_eq!(param(&back, "state").as_deref(), Some("st4te"));

        // Signed in, with a nonce: echoed in the ID token, iss and aud exact.
        let url = authorize_url(&app, "grafana", REDIRECT, &[("nonce", "n-0S6_WzA2Mj")]);
        let back = sign_in_from(&app, &b, "ada@example.com", &url).await;
        let code = param(&back, "code").unwrap();
        let r = exchange(&app, &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", REDIRECT)]).await;
        assert_eq!(r.status(), 200);
        let id_token = r.json::<Value>().await.unwrap()["id_token"].as_str().unwrap().to_string();
        let claims = verify_id_token(&app, &id_token).await;
        assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
        assert_eq!(claims["iss"], issuer(&app).as_str());
        assert_eq!(claims["aud"], "grafana");
        assert_eq!(claims["amr"], serde_json::json!(["email"]));
        let first_auth = claims["auth_time"].as_i64().unwrap();

        // prompt=none, signed in: a code at once, no page.
        let url = authorize_url(&app, "grafana", REDIRECT, &[("prompt", "none")]);
        let back = location(&b.get(&url).send().await.unwrap());
        assert!(param(&back, "code").is_some(), "{back}");

        // prompt=login: a new sign-in even though one exists.
        app.clock.advance(Duration::from_secs(5));
        let url = authorize_url(&app, "grafana", REDIRECT, &[("prompt", "login")]);
        let back = sign_in_from(&app, &b, "ada@example.com", &url).await;
        let code = param(&back, "code").unwrap();
        let r = exchange(&app, &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", REDIRECT)]).await;
        let claims = verify_id_token(&app, r.json::<Value>().await.unwrap()["id_token"].as_str().unwrap()).await;
        assert!(claims["auth_time"].as_i64().unwrap() > first_auth);

        // max_age=1, two seconds after the sign-in: sign in again.
        app.clock.advance(Duration::from_secs(2));
        let url = authorize_url(&app, "grafana", REDIRECT, &[("max_age", "1")]);
        let r = b.get(&url).send().await.unwrap();
        assert!(location(&r).starts_with(&format!("{}/.sesame/login?", issuer(&app))));
        // max_age large: the sign-in is recent enough.
        let url = authorize_url(&app, "grafana", REDIRECT, &[("max_age", "10000")]);
        let back = location(&b.get(&url).send().await.unwrap());
        assert!(param(&back, "code").is_some(), "{back}");
    }

    // OP-redirect_uri-NotReg and the requests that never go back to a client.
    async fn an_unregistered_redirect_uri_or_client_gets_a_page_never_a_redirect() {
        let app = spawn_oidc().await;
        let b = client_for(&app, true);
        for url in [
            authorize_url(&app, "grafana", "http://localhost:9/login/generic_oauth/evil", &[]),
            authorize_url(&app, "grafana", "https://evil.example/cb", &[]),
            authorize_url(&app, "nobody", REDIRECT, &[]),
            format!("{}/.sesame/oidc/authorize?client_id=grafana&response_type=code&scope=openid", issuer(&app)),
        ] {
            let r = b.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 400, "{url}");
            assert!(r.headers().get("location").is_none(), "{url}");
        }
        // Errors a registered client gets back: no openid scope, a public
        // client without PKCE, a plain PKCE challenge.
        for (url, error) in [
            (authorize_url(&app, "grafana", REDIRECT, &[("scope", "email")]).replace("scope=openid+email&", ""), "invalid_scope"),
            (authorize_url(&app, "spa", SPA_REDIRECT, &[]), "invalid_request"),
            (authorize_url(&app, "grafana", REDIRECT, &[("code_challenge", CHALLENGE), ("code_challenge_method", "plain")]), "invalid_request"),
            (authorize_url(&app, "grafana", REDIRECT, &[]).replace("response_type=code", "response_type=token"), "unsupported_response_type"),
        ] {
            let back = location(&b.get(&url).send().await.unwrap());
            assert_eq!(param(&back, "error").as_deref(), Some(error), "{url} -> {back}");
        }
        // Someone not admitted to the app: access_denied.
        let url = authorize_url(&app, "staff-only", REDIRECT, &[]);
        let back = sign_in_from(&app, &b, "ada@example.com", &url).await;
        assert_eq!(param(&back, "error").as_deref(), Some("access_denied"));
    }

    async fn a_public_client_signs_in_with_pkce_and_no_secret() {
        let app = spawn_oidc().await;
        let b = client_for(&app, true);
        let url = authorize_url(&app, "spa", SPA_REDIRECT, &[("code_challenge", CHALLENGE), ("code_challenge_method", "S256")]);
        let back = sign_in_from(&app, &b, "ada@example.com", &url).await;
        let code = param(&back, "code").unwrap();
        let token = |verifier: &'static str, code: String| {
            let app_url = format!("{}/.sesame/oidc/token", issuer(&app));
            let c = client_for(&app, false);
            async move {
                c.post(app_url)
                    .form(&[("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", SPA_REDIRECT), ("code_verifier", verifier), ("client_id", "spa")])
                    .send()
                    .await
                    .unwrap()
            }
        };
        let r = token(VERIFIER, code).await;
        assert_eq!(r.status(), 200);
        // The SPA's page may read the token endpoint's answers (CORS); a
        // page of another origin may not.
        let preflight = |origin: &'static str| {
            let c = client_for(&app, false);
            let url = format!("{}/.sesame/oidc/token", issuer(&app));
            async move {
                c.request(reqwest::Method::OPTIONS, url)
                    .header("Origin", origin)
                    .header("Access-Control-Request-Method", "POST")
                    .send()
                    .await
                    .unwrap()
            }
        };
        let r = preflight("http://localhost:9").await;
        assert_eq!(r.status(), 204);
        assert_eq!(r.headers()["access-control-allow-origin"], "http://localhost:9");
        assert!(r.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
        let r = preflight("https://evil.example").await;
        assert!(r.headers().get("access-control-allow-origin").is_none());
        // A public client's id with a secret, or no client at all: refused.
        let r = client_for(&app, false)
            .post(format!("{}/.sesame/oidc/token", issuer(&app)))
            .basic_auth("spa", Some("anything-at-all-0123"))
            .form(&[("grant_type", "authorization_code"), ("code", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }

    async fn signing_out_at_the_portal_ends_the_clients_access() {
        let app = spawn_oidc().await;
        let b = client_for(&app, true);
        let code = code_for(&app, &b, false).await;
        let tokens: Value = redeem(&app, &code).await.json().await.unwrap();
        let access = tokens["access_token"].as_str().unwrap().to_string();
        assert_eq!(userinfo(&app, &access).await, 200);
        let r = b
            .post(format!("{}/.sesame/logout", issuer(&app)))
            .header("Origin", issuer(&app))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(userinfo(&app, &access).await, 401);
        assert_eq!(userinfo(&app, "made-up").await, 401);
    }
}

/// Verify an ID token as an RP would, against the provider's JWKS.
async fn verify_id_token(app: &TestApp, token: &str) -> Value {
    let jwks: Value = client_for(app, false)
        .get(format!("{}/.sesame/oidc/jwks.json", issuer(app)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    assert_eq!(header.kid.as_deref(), key["kid"].as_str());
    let decoding = jsonwebtoken::DecodingKey::from_rsa_components(
        key["n"].as_str().unwrap(),
        key["e"].as_str().unwrap(),
    )
    .unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&["grafana"]);
    v.set_issuer(&[issuer(app)]);
    jsonwebtoken::decode::<Value>(token, &decoding, &v)
        .expect("the ID token verifies")
        .claims
}

/// OP-Discovery-Config and friends (Config OP plan).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_names_the_issuer_exactly_and_what_is_supported() {
    let app = spawn_oidc().await;
    let d: Value = client_for(&app, false)
        .get(format!("{}/.well-known/openid-configuration", issuer(&app)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["issuer"], issuer(&app).as_str());
    assert_eq!(d["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(
        d["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert!(d["id_token_signing_alg_values_supported"]
        .as_array()
        .unwrap()
        .contains(&"RS256".into()));
    for k in [
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
    ] {
        assert!(d[k].as_str().unwrap().starts_with(&issuer(&app)), "{k}");
    }
    // Not on a site's host: the provider is the portal's.
    let r = browser()
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 200);
}

/// panva's openid-client (Node; an OpenID-certified relying party) through
/// discovery, the code flow with PKCE, state and nonce, userinfo, refresh,
/// revocation and the end-session URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certified_openid_client_library_signs_in_refreshes_and_revokes() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    crate::browser::ensure_driver(&dir);
    // Node finds `localhost` by itself: the issuer is there.
    let app = spawn_oidc_on("localhost", "").await;
    let mut rp = tokio::process::Command::new("node")
        .arg("oidc_rp.mjs")
        .current_dir(&dir)
        .env("ISSUER", issuer(&app))
        .env("CLIENT_ID", "grafana")
        .env("CLIENT_SECRET", SECRET)
        .env("REDIRECT_URI", REDIRECT)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node (Node.js) is needed: apt-get install -y nodejs npm");
    let mut out = tokio::io::BufReader::new(rp.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), out.next_line())
        .await
        .expect("the RP prints its authorization URL")
        .unwrap();
    let Some(authorize) = first else {
        let o = rp.wait_with_output().await.unwrap();
        panic!("the RP stopped: {}", String::from_utf8_lossy(&o.stderr));
    };
    assert!(
        authorize.starts_with(&format!("{}/.sesame/oidc/authorize?", issuer(&app))),
        "{authorize}"
    );
    let b = client_for(&app, true);
    let back = sign_in_from(&app, &b, "ada@example.com", &authorize).await;
    let mut stdin = rp.stdin.take().unwrap();
    stdin
        .write_all(format!("{back}\n").as_bytes())
        .await
        .unwrap();
    let last = tokio::time::timeout(Duration::from_secs(20), out.next_line())
        .await
        .expect("the RP answers")
        .unwrap();
    let status = rp.wait().await.unwrap();
    let Some(last) = last else {
        panic!("the RP failed ({status})");
    };
    let found: Value = serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {last}"));
    assert!(status.success(), "{found}");
    assert_eq!(found["email"], "ada@example.com");
    assert_eq!(found["userinfo_email"], "ada@example.com");
    assert_eq!(found["iss"], issuer(&app).as_str());
    assert_eq!(found["aud"], "grafana");
    assert_eq!(found["refreshed"], true);
    assert_eq!(found["after_revocation"], "invalid_grant");
    let end = found["end_session"].as_str().unwrap();
    assert!(
        end.starts_with(&format!("{}/.sesame/oidc/end_session?", issuer(&app))),
        "{end}"
    );
    // The end-session URL it built signs the browser out and returns.
    let r = b.get(end).send().await.unwrap();
    assert_eq!(location(&r), "http://localhost:9/logged-out");
}
