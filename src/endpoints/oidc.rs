//! The OpenID Connect provider's endpoints, on the portal: discovery, JWKS,
//! authorization (code flow, PKCE S256), token, userinfo. The parts without
//! HTTP are in the core's `oidc`; what is kept is in the store.
//!
//! Errors follow RFC 6749 and OIDC Core: an unknown client or a redirect
//! URI not registered for it gets a page and never a redirect; every other
//! authorization error goes back to the client's redirect URI with `error`,
//! `state` and `iss`; the token endpoint answers JSON `{"error"}` (`401`
//! for `invalid_client`).

use base64::prelude::{Engine, BASE64_STANDARD};
use http::{header, Method};
use serde_json::json;

use super::error::Result;
use super::signin::current_session;
use super::{ErrorPage, Req, Resp};
use crate::app::App;
use crate::config::OidcClient;
use crate::keys::random_id;
use crate::oidc::{self, Provider};
use crate::session::hash_id;
use crate::store::{AuthMethod, CodeTaken, NewToken, OidcCode, OidcGrant};

/// The parameters Sesame reads from an authorization request.
const AUTHORIZE_PARAMS: [&str; 11] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "max_age",
    "login_hint",
    "response_mode",
];

fn count_error(app: &App, error: &str) {
    app.metrics.oidc_errors.with_label_values(&[error]).inc();
}

/// Public JSON (discovery, keys): cacheable, readable from any origin.
fn public_json(value: &serde_json::Value) -> Resp {
    Resp::new(
        200,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
    .header(header::CACHE_CONTROL, "public, max-age=300")
    .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
}

/// The request's `Origin`, if it is a public client's (the origin of one
/// of its redirect URIs): a single-page app calling from the browser.
fn public_client_origin<'r>(oidc: &Provider, req: &'r Req) -> Option<&'r str> {
    let origin = req.headers.get(header::ORIGIN)?.to_str().ok()?;
    oidc.clients
        .iter()
        .filter(|c| c.is_public())
        .flat_map(|c| &c.redirect_uris)
        .filter_map(|u| url::Url::parse(u).ok())
        .any(|u| u.origin().ascii_serialization() == origin)
        .then_some(origin)
}

/// CORS for the token, revocation and userinfo endpoints: readable by the
/// pages of public clients only (confidential clients call from servers).
pub fn cors(oidc: &Provider, req: &Req, resp: Resp) -> Resp {
    let resp = resp.header(header::VARY, "Origin");
    match public_client_origin(oidc, req) {
        Some(origin) => resp.header(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin),
        None => resp,
    }
}

/// `OPTIONS` before a public client's cross-origin call.
pub fn preflight(oidc: &Provider, req: &Req) -> Resp {
    let r = Resp::new(204, "text/plain; charset=utf-8", "");
    match public_client_origin(oidc, req) {
        Some(_) => cors(oidc, req, r)
            .header(header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST")
            .header(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "authorization, content-type",
            )
            .header(header::ACCESS_CONTROL_MAX_AGE, "600"),
        None => r.header(header::VARY, "Origin"),
    }
}

pub fn discovery(oidc: &Provider) -> Resp {
    public_json(&oidc.discovery())
}

pub fn jwks(oidc: &Provider) -> Resp {
    public_json(&oidc.jwks())
}

/// An authorization request's parameters, from the query (GET) or the
/// form (POST); each at most once.
struct Params(Vec<(String, String)>);

impl Params {
    fn of(req: &Req) -> std::result::Result<Params, &'static str> {
        let raw: &[u8] = if *req.method == Method::POST {
            &req.body
        } else {
            req.query.as_bytes()
        };
        let pairs: Vec<(String, String)> = form_urlencoded::parse(raw).into_owned().collect();
        for (i, (k, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(o, _)| o == k) {
                return Err("a parameter is given more than once");
            }
        }
        Ok(Params(pairs))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// A page for an authorization request that cannot go back to its client.
fn refused_page(app: &App, req: &Req, message: &str) -> Resp {
    count_error(app, "invalid_request");
    ErrorPage::new(
        &req.site.site.name,
        "This sign-in request is not valid",
        message,
    )
    .respond(app, 400)
}

/// `redirect_uri` with `pairs` added to its query.
fn back_to(redirect_uri: &str, pairs: &[(&str, &str)]) -> String {
    match url::Url::parse(redirect_uri) {
        Ok(mut u) => {
            u.query_pairs_mut().extend_pairs(pairs);
            u.into()
        }
        Err(_) => redirect_uri.to_string(),
    }
}

/// `GET|POST /.sesame/oidc/authorize`
pub async fn authorize(app: &App, oidc: &Provider, req: &Req<'_>) -> Result {
    let p = match Params::of(req) {
        Ok(p) => p,
        Err(why) => return Ok(refused_page(app, req, why)),
    };
    let Some(client) = p.get("client_id").and_then(|id| oidc.client(id)) else {
        return Ok(refused_page(
            app,
            req,
            "It names no application registered here (client_id).",
        ));
    };
    // Matched exactly: never a redirect to an address the client did not
    // register (OIDC Core 3.1.2.1).
    let Some(redirect_uri) = p
        .get("redirect_uri")
        .filter(|u| client.redirect_uris.iter().any(|r| r == u))
    else {
        return Ok(refused_page(
            app,
            req,
            "Its redirect_uri is missing or not registered for this application.",
        ));
    };
    let state = p.get("state");
    let form_post = p.get("response_mode") == Some("form_post");
    let answer = |pairs: &[(&str, &str)]| -> Resp {
        if form_post {
            form_post_page(app, req, client, redirect_uri, pairs)
        } else {
            Resp::redirect(302, &back_to(redirect_uri, pairs))
        }
    };
    let fail = |error: &'static str, description: &str| -> Resp {
        count_error(app, error);
        let mut pairs = vec![("error", error), ("error_description", description)];
        if let Some(s) = state {
            pairs.push(("state", s));
        }
        pairs.push(("iss", &oidc.issuer));
        answer(&pairs)
    };
    if p.get("request").is_some() {
        return Ok(fail(
            "request_not_supported",
            "request objects are not supported",
        ));
    }
    if p.get("request_uri").is_some() {
        return Ok(fail(
            "request_uri_not_supported",
            "request_uri is not supported",
        ));
    }
    if p.get("response_type") != Some("code") {
        return Ok(fail(
            "unsupported_response_type",
            "only response_type=code is supported",
        ));
    }
    if !matches!(
        p.get("response_mode"),
        None | Some("query") | Some("form_post")
    ) {
        return Ok(fail(
            "invalid_request",
            "response_mode must be query or form_post",
        ));
    }
    let Some(scope) = p.get("scope").and_then(oidc::scopes) else {
        return Ok(fail("invalid_scope", "the scope must include openid"));
    };
    let challenge = p.get("code_challenge");
    match (challenge, p.get("code_challenge_method")) {
        (None, Some(_)) => {
            return Ok(fail(
                "invalid_request",
                "code_challenge_method without code_challenge",
            ))
        }
        (Some(_), m) if m != Some("S256") => {
            return Ok(fail(
                "invalid_request",
                "code_challenge_method must be S256",
            ))
        }
        (Some(c), _) if !oidc::challenge_well_formed(c) => {
            return Ok(fail("invalid_request", "code_challenge is malformed"))
        }
        (None, _) if client.is_public() => {
            return Ok(fail(
                "invalid_request",
                "a public client must use PKCE (S256)",
            ))
        }
        _ => {}
    }
    let nonce = p.get("nonce");
    if nonce.is_some_and(|n| n.len() > 512) || state.is_some_and(|s| s.len() > 1024) {
        return Ok(fail("invalid_request", "nonce or state is too long"));
    }
    let prompts: Vec<&str> = p.get("prompt").unwrap_or("").split(' ').collect();
    let prompt_none = prompts.contains(&"none");
    if prompt_none && prompts.len() > 1 {
        return Ok(fail("invalid_request", "prompt=none goes alone"));
    }
    let max_age = match p.get("max_age").map(str::parse::<i64>) {
        None => None,
        Some(Ok(n)) if n >= 0 => Some(n),
        Some(_) => {
            return Ok(fail(
                "invalid_request",
                "max_age must be a number of seconds",
            ))
        }
    };
    let now = app.clock.now();
    // `prompt=login` and `max_age` ask for a sign-in made after the request:
    // the time is carried across the sign-in as `sesame_after`, sealed and
    // bound to this client and state (nobody can make an older sign-in do).
    let after = match p.get("sesame_after") {
        Some(v) => opened_after(app, v, &client.id, state.unwrap_or(""), now).await,
        None => None,
    };
    let needed_after = after.or_else(|| prompts.contains(&"login").then_some(now));
    let recent_enough = |created: i64| match needed_after {
        Some(a) => created >= a,
        None => max_age.is_none_or(|m| now - created <= m),
    };
    let live = current_session(app, req).await.map(|(_, l)| l);
    let Some(live) = live.filter(|l| recent_enough(l.record.created_at)) else {
        if prompt_none {
            return Ok(fail("login_required", "the person is not signed in"));
        }
        // Here again after the sign-in, with the same parameters.
        let stamp = sealed_after(
            app,
            needed_after.unwrap_or(now),
            &client.id,
            state.unwrap_or(""),
        );
        let mut again: Vec<(&str, &str)> = AUTHORIZE_PARAMS
            .iter()
            .filter_map(|k| p.get(k).map(|v| (*k, v)))
            .collect();
        if needed_after.is_some() || max_age.is_some() {
            again.push(("sesame_after", &stamp));
        }
        let here = req.site.site.sesame_url("/oidc/authorize", &again);
        let mut login = vec![("rd", here.as_str())];
        if let Some(hint) = p.get("login_hint") {
            login.push(("login_hint", hint));
        }
        return Ok(Resp::redirect(
            302,
            &req.site.site.sesame_url("/login", &login),
        ));
    };
    let record = &live.record;
    if !client.admission.admits(&record.email, &record.groups) {
        return Ok(fail(
            "access_denied",
            "this account may not use this application",
        ));
    }
    if client.require_passkey && record.auth_method != AuthMethod::Passkey {
        if prompt_none {
            return Ok(fail(
                "interaction_required",
                "this application needs a passkey sign-in",
            ));
        }
        let all: Vec<(&str, &str)> = p.0.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let here = req.site.site.sesame_url("/oidc/authorize", &all);
        return Ok(Resp::redirect(
            302,
            &req.site.site.sesame_url("/stepup", &[("rd", &here)]),
        ));
    }
    let code = random_id(32);
    app.store
        .put_oidc_code(&OidcCode {
            code_hash: hash_id(&code),
            client_id: client.id.clone(),
            redirect_uri: redirect_uri.to_string(),
            session: record.id_hash.clone(),
            user_id: record.user_id.clone(),
            scope,
            nonce: nonce.map(str::to_string),
            code_challenge: challenge.map(str::to_string),
            auth_time: record.created_at,
            auth_method: record.auth_method,
            expires_at: now + oidc::CODE_TTL_SECS,
        })
        .await?;
    app.metrics
        .oidc_authorizations
        .with_label_values(&[&client.id])
        .inc();
    tracing::info!(target: "sesame::audit", event = "oidc_code_issued", client = %client.id, email = %record.email);
    let mut pairs = vec![("code", code.as_str())];
    if let Some(s) = state {
        pairs.push(("state", s));
    }
    pairs.push(("iss", &oidc.issuer));
    Ok(answer(&pairs).no_referrer())
}

/// OAuth 2.0 Form Post Response Mode: a page whose form posts the answer
/// to the client (by itself, with script; a button without). Its CSP lets
/// the form go to the client's origin, and nowhere else.
fn form_post_page(
    app: &App,
    req: &Req,
    client: &OidcClient,
    redirect_uri: &str,
    pairs: &[(&str, &str)],
) -> Resp {
    #[derive(serde::Serialize)]
    struct Page<'a> {
        site_name: &'a str,
        client_name: &'a str,
        action: &'a str,
        fields: &'a [(&'a str, &'a str)],
    }
    let html = app.pages.render(
        "form_post.html",
        &Page {
            site_name: &req.site.site.name,
            client_name: &client.name,
            action: redirect_uri,
            fields: pairs,
        },
    );
    let origin = url::Url::parse(redirect_uri)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    let mut r = Resp::page(app, 200, html);
    r.headers
        .retain(|(k, _)| k != header::CONTENT_SECURITY_POLICY);
    r.header(
        header::CONTENT_SECURITY_POLICY,
        &format!(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action {origin}; frame-ancestors 'none'; base-uri 'none'"
        ),
    )
}

/// What `sesame_after` is sealed for (the AEAD's associated data).
const AFTER_SEAL: &str = "sesame/oidc-after";

/// `sesame_after`: a time, sealed with the client and state it is for.
fn sealed_after(app: &App, at: i64, client: &str, state: &str) -> String {
    app.keys
        .seal_cookie(AFTER_SEAL, &format!("{at}|{client}|{state}"))
}

/// The time a `sesame_after` value carries, if it opens, is for this
/// client and state, and is not in the future.
async fn opened_after(app: &App, value: &str, client: &str, state: &str, now: i64) -> Option<i64> {
    let plain = app.open_cookie(AFTER_SEAL, value).await?;
    let mut parts = plain.splitn(3, '|');
    let at: i64 = parts.next()?.parse().ok()?;
    (parts.next()? == client && parts.next()? == state && at <= now).then_some(at)
}

/// A token endpoint error; `401` with a challenge for `invalid_client`.
fn token_error(app: &App, error: &'static str, description: &str, basic: bool) -> Resp {
    count_error(app, error);
    let status = if error == "invalid_client" { 401 } else { 400 };
    let mut r = Resp::json(
        status,
        &json!({"error": error, "error_description": description}),
    )
    .header(header::PRAGMA, "no-cache");
    if error == "invalid_client" && basic {
        r = r.header(header::WWW_AUTHENTICATE, "Basic realm=\"sesame\"");
    }
    r
}

/// The client's credentials: `client_secret_basic` (RFC 6749 2.3.1: each
/// part form-urlencoded) or `client_secret_post`, never both.
fn credentials(
    req: &Req,
    form: &Params,
) -> std::result::Result<(Option<String>, Option<String>, bool), &'static str> {
    let basic = req
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        });
    match basic {
        Some(b64) => {
            if form.get("client_secret").is_some() {
                return Err("two ways of client authentication");
            }
            let raw = BASE64_STANDARD
                .decode(b64.trim())
                .map_err(|_| "the Basic credentials are not base64")?;
            let raw = String::from_utf8(raw).map_err(|_| "the Basic credentials are not UTF-8")?;
            let (id, secret) = raw
                .split_once(':')
                .ok_or("the Basic credentials have no ':'")?;
            let decode = |s: &str| {
                form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            let id = decode(id);
            if form.get("client_id").is_some_and(|f| f != id) {
                return Err("client_id differs from the Basic credentials");
            }
            Ok((Some(id), Some(decode(secret)), true))
        }
        None => Ok((
            form.get("client_id").map(str::to_string),
            form.get("client_secret").map(str::to_string),
            false,
        )),
    }
}

/// Authenticate the client of a token request.
async fn client_of<'p>(
    app: &App,
    oidc: &'p Provider,
    req: &Req<'_>,
    form: &Params,
) -> std::result::Result<&'p OidcClient, Resp> {
    let (id, secret, basic) =
        credentials(req, form).map_err(|why| token_error(app, "invalid_request", why, false))?;
    let refused = |basic| token_error(app, "invalid_client", "client authentication failed", basic);
    let client = id
        .as_deref()
        .and_then(|id| oidc.client(id))
        .ok_or_else(|| refused(basic))?;
    match (&client.secret_hash, secret) {
        (None, None) => Ok(client),
        (Some(_), Some(s)) => {
            // argon2 runs for a secret not seen to verify before: bounded
            // per client address like the other anonymous work.
            if !oidc.secret_known(client, &s) {
                let key = crate::ratelimit::client_key(req.client_ip);
                if app.anonymous_limit.hit(&key).is_err() {
                    app.metrics.limited(crate::metrics::LimitKind::Anonymous);
                    return Err(token_error(
                        app,
                        "invalid_client",
                        "too many attempts; try again in a minute",
                        basic,
                    ));
                }
            }
            match oidc.secret_matches(client, &s).await {
                Some(true) => Ok(client),
                Some(false) => Err(refused(basic)),
                None => Err(Resp::json(
                    503,
                    &json!({"error": "temporarily_unavailable", "error_description": "busy; try again"}),
                )
                .header(header::RETRY_AFTER, "1")),
            }
        }
        _ => Err(refused(basic)),
    }
}

/// A POST of a client to the token or device authorization endpoint: its
/// form and the client, authenticated; else the error to answer.
async fn client_post<'p>(
    app: &App,
    oidc: &'p Provider,
    req: &Req<'_>,
) -> std::result::Result<(Params, &'p OidcClient), Resp> {
    if *req.method != Method::POST {
        return Err(token_error(app, "invalid_request", "use POST", false));
    }
    let form = Params::of(req).map_err(|why| token_error(app, "invalid_request", why, false))?;
    let client = client_of(app, oidc, req, &form).await?;
    Ok((form, client))
}

/// `POST /.sesame/oidc/token`
pub async fn token(app: &App, oidc: &Provider, req: &Req<'_>) -> Result {
    let (form, client) = match client_post(app, oidc, req).await {
        Ok(c) => c,
        Err(resp) => return Ok(resp),
    };
    match form.get("grant_type") {
        Some("authorization_code") => code_grant(app, oidc, client, &form).await,
        Some("refresh_token") => refresh_grant(app, oidc, client, &form).await,
        Some(DEVICE_CODE) if client.device_grant => {
            device_grant(app, oidc, client, &form, req).await
        }
        Some(DEVICE_CODE) => Ok(token_error(
            app,
            "unauthorized_client",
            "this client may not use the device grant (device_grant = true)",
            false,
        )),
        Some(_) => Ok(token_error(
            app,
            "unsupported_grant_type",
            "authorization_code, refresh_token and the device code are supported",
            false,
        )),
        None => Ok(token_error(
            app,
            "invalid_request",
            "grant_type is missing",
            false,
        )),
    }
}

/// The device grant's `grant_type` (RFC 8628 3.4).
const DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// `POST /.sesame/oidc/device_authorization` (RFC 8628 3.1): a program asks
/// to sign someone in; it shows them `user_code` and where to approve it.
pub async fn device_authorization(app: &App, oidc: &Provider, req: &Req<'_>) -> Result {
    let (form, client) = match client_post(app, oidc, req).await {
        Ok(c) => c,
        Err(resp) => return Ok(resp),
    };
    if !client.device_grant {
        return Ok(token_error(
            app,
            "unauthorized_client",
            "this client may not use the device grant (device_grant = true)",
            false,
        ));
    }
    let Some(scope) = oidc::scopes(form.get("scope").unwrap_or("openid")) else {
        return Ok(token_error(
            app,
            "invalid_scope",
            "the scope must include openid",
            false,
        ));
    };
    let asker = crate::signin::cross_device::Asker::of(
        req.headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
        req.client_ip,
    );
    let device_code = random_id(32);
    let requested = app
        .sign_in()
        .new_request(
            crate::store::RequestKind::Device,
            &req.site.site.name,
            Some(&client.id),
            &scope,
            "",
            asker,
            &hash_id(&device_code),
        )
        .await?;
    let site = &req.site.site;
    let body = json!({
        "device_code": device_code,
        "user_code": requested.user_code,
        "verification_uri": site.sesame_url("/device", &[]),
        "verification_uri_complete": site.sesame_url("/device", &[("code", &requested.user_code)]),
        "expires_in": crate::signin::device::REQUEST_SECS,
        "interval": crate::signin::device::POLL_SECS,
    });
    Ok(Resp::json(200, &body).header(header::PRAGMA, "no-cache"))
}

/// `grant_type=urn:ietf:params:oauth:grant-type:device_code` (RFC 8628
/// 3.4): the program polls until the person approved or refused. A grant
/// approved hangs from a session of its own (listed on the account page,
/// revocable), signed in as the approving session was.
async fn device_grant(
    app: &App,
    oidc: &Provider,
    client: &OidcClient,
    form: &Params,
    req: &Req<'_>,
) -> Result {
    use crate::signin::cross_device::Status;
    let Some(code) = form.get("device_code") else {
        return Ok(token_error(
            app,
            "invalid_request",
            "device_code is missing",
            false,
        ));
    };
    let id = hash_id(code);
    let now = app.clock.now();
    let pending = |error: &'static str, why: &str| {
        // Polls are the flow's normal course: not counted as errors.
        Resp::json(400, &json!({"error": error, "error_description": why}))
            .header(header::PRAGMA, "no-cache")
    };
    let r = match app.store.device_request(&id).await? {
        Some(r)
            if r.kind == crate::store::RequestKind::Device
                && r.client_id.as_deref() == Some(client.id.as_str()) =>
        {
            r
        }
        _ => {
            return Ok(token_error(
                app,
                "invalid_grant",
                "the device_code is unknown",
                false,
            ))
        }
    };
    if app.device_polls.too_soon(&id) {
        return Ok(pending(
            "slow_down",
            "polled faster than the interval: wait 5 s more between polls",
        ));
    }
    let done = |error: &'static str, why: &str| {
        app.device_polls.forget(&id);
        token_error(app, error, why, false)
    };
    match Status::of_request(&r, now) {
        Status::Waiting => Ok(pending(
            "authorization_pending",
            "the person has not approved it yet",
        )),
        Status::Cancelled(_) => Ok(done("access_denied", "the person refused it")),
        Status::Expired => Ok(done("expired_token", "the code expired: start again")),
        Status::Used => Ok(done("invalid_grant", "the code was already used")),
        Status::Approved => {
            // Who may use the app, and how they must have signed in, before
            // anything is made for them.
            let (Some(user_id), Some(method)) = (&r.user_id, r.auth_method) else {
                return Ok(done("invalid_grant", "the approval names nobody"));
            };
            let admitted = match app.store.user_by_id(user_id.as_str()).await? {
                Some(u) if !u.disabled => client.admission.admits(&u.email, &u.groups),
                _ => false,
            };
            if !admitted {
                return Ok(done(
                    "access_denied",
                    "this account may not use this application",
                ));
            }
            if client.require_passkey && method != crate::store::AuthMethod::Passkey {
                return Ok(done(
                    "access_denied",
                    "this application needs a passkey: approve from a session signed in with one",
                ));
            }
            let sign_in = app.sign_in().with_device(req.device());
            let signed_in = match sign_in.collect_request(&req.site.site, &id).await {
                Ok(s) => s,
                Err(crate::signin::SignInError::Store(e)) => return Err(e.into()),
                Err(_) => {
                    return Ok(done(
                        "invalid_grant",
                        "the code was already used, or the account may not sign in",
                    ))
                }
            };
            app.device_polls.forget(&id);
            let record = &signed_in.session.record;
            let grant = OidcGrant {
                id: random_id(16),
                client_id: client.id.clone(),
                user_id: record.user_id.clone(),
                session: record.id_hash.clone(),
                scope: r.scope.clone(),
                auth_time: now,
                auth_method: record.auth_method,
                created_at: now,
            };
            let how = Issue {
                source: Source::Device,
                nonce: None,
                scope: None,
                grant_type: "device_code",
            };
            issue(app, oidc, client, &grant, how).await
        }
    }
}

/// `grant_type=authorization_code`
async fn code_grant(app: &App, oidc: &Provider, client: &OidcClient, form: &Params) -> Result {
    let Some(code) = form.get("code") else {
        return Ok(token_error(
            app,
            "invalid_request",
            "code is missing",
            false,
        ));
    };
    let now = app.clock.now();
    let invalid = |why: &str| token_error(app, "invalid_grant", why, false);
    let c = match app.store.take_oidc_code(&hash_id(code), now).await? {
        CodeTaken::Fresh(c) => c,
        CodeTaken::Unknown => return Ok(invalid("the code is unknown or expired")),
        CodeTaken::Reused { grant } => {
            // A code used twice was seen by someone else: what its first
            // use gave is revoked too (RFC 6749 4.1.2).
            if let Some(g) = grant {
                app.store.revoke_oidc_grant(&g, now).await?;
            }
            tracing::warn!(target: "sesame::audit", event = "oidc_code_reused", client = %client.id);
            return Ok(invalid("the code was already used"));
        }
    };
    if c.client_id != client.id {
        return Ok(invalid("the code was issued to another client"));
    }
    if form.get("redirect_uri") != Some(c.redirect_uri.as_str()) {
        return Ok(invalid(
            "redirect_uri differs from the authorization request's",
        ));
    }
    match (&c.code_challenge, form.get("code_verifier")) {
        (Some(ch), Some(v)) if oidc::pkce_matches(ch, v) => {}
        (None, None) => {}
        _ => return Ok(invalid("the PKCE code_verifier does not match")),
    }
    let session = app.store.session(&c.session).await?;
    if !session.is_some_and(|s| !s.revoked && s.expires_at > now) {
        return Ok(invalid("the sign-in has ended"));
    }
    let grant = OidcGrant {
        id: random_id(16),
        client_id: client.id.clone(),
        user_id: c.user_id.clone(),
        session: c.session.clone(),
        scope: c.scope.clone(),
        auth_time: c.auth_time,
        auth_method: c.auth_method,
        created_at: now,
    };
    let how = Issue {
        source: Source::Code(&c.code_hash),
        nonce: c.nonce.as_deref(),
        scope: None,
        grant_type: "authorization_code",
    };
    issue(app, oidc, client, &grant, how).await
}

/// `grant_type=refresh_token`: a new access token and a new refresh token;
/// the one used is spent, and using it again revokes the whole grant.
async fn refresh_grant(app: &App, oidc: &Provider, client: &OidcClient, form: &Params) -> Result {
    let Some(token) = form.get("refresh_token") else {
        return Ok(token_error(
            app,
            "invalid_request",
            "refresh_token is missing",
            false,
        ));
    };
    let now = app.clock.now();
    let invalid = |why: &str| token_error(app, "invalid_grant", why, false);
    let grant = match app.store.use_refresh_token(&hash_id(token), now).await? {
        crate::store::RefreshUse::Fresh(g) => g,
        crate::store::RefreshUse::Unknown => {
            return Ok(invalid("the refresh token is unknown, expired or revoked"))
        }
        crate::store::RefreshUse::Reused { grant } => {
            app.store.revoke_oidc_grant(&grant, now).await?;
            app.metrics
                .oidc_errors
                .with_label_values(&["refresh_reused"])
                .inc();
            tracing::warn!(target: "sesame::audit", event = "oidc_refresh_reused", client = %client.id, grant = %grant);
            return Ok(invalid("the refresh token was already used"));
        }
    };
    if grant.client_id != client.id {
        return Ok(invalid("the refresh token was issued to another client"));
    }
    // A narrower scope may be asked for; a wider one may not (RFC 6749 6).
    let mut narrower = None;
    if let Some(asked) = form.get("scope") {
        let has: Vec<&str> = grant.scope.split(' ').collect();
        if !asked
            .split(' ')
            .filter(|s| !s.is_empty())
            .all(|s| has.contains(&s))
        {
            return Ok(token_error(
                app,
                "invalid_scope",
                "wider than the grant's scope",
                false,
            ));
        }
        // The new access token has the narrower scope; the grant (and its
        // refresh token) keeps what was granted (RFC 6749 6).
        let kept: Vec<&str> = has
            .iter()
            .copied()
            .filter(|s| asked.split(' ').any(|a| a == *s))
            .collect();
        narrower = Some(kept.join(" "));
    }
    let how = Issue {
        source: Source::Refresh,
        nonce: None,
        scope: narrower.as_deref(),
        grant_type: "refresh_token",
    };
    issue(app, oidc, client, &grant, how).await
}

/// Where the grant tokens are issued for comes from.
enum Source<'a> {
    /// A new grant, from this authorization code.
    Code(&'a str),
    /// A new grant, from an approved device code.
    Device,
    /// A live grant, refreshed.
    Refresh,
}

/// How tokens are being issued.
struct Issue<'a> {
    source: Source<'a>,
    nonce: Option<&'a str>,
    /// The access token's scope, when narrower than the grant's.
    scope: Option<&'a str>,
    grant_type: &'static str,
}

/// Tokens for `grant` (a new one from a code, or a live one refreshed): an
/// access token, an ID token, and a refresh token with `offline_access`.
async fn issue(
    app: &App,
    oidc: &Provider,
    client: &OidcClient,
    grant: &OidcGrant,
    how: Issue<'_>,
) -> Result {
    let Issue {
        source,
        nonce,
        scope,
        grant_type,
    } = how;
    let now = app.clock.now();
    let invalid = |why: &str| token_error(app, "invalid_grant", why, false);
    let Some(user) = app
        .store
        .user_by_id(&grant.user_id)
        .await?
        .filter(|u| !u.disabled)
    else {
        return Ok(invalid("the account is disabled or gone"));
    };
    // Who may use the app is asked again at every refresh: someone taken
    // off its lists gets nothing more.
    if !client.admission.admits(&user.email, &user.groups) {
        return Ok(invalid("this account may no longer use this application"));
    }
    // No token outlives the sign-in it comes from.
    let Some(session) = app
        .store
        .session(&grant.session)
        .await?
        .filter(|s| !s.revoked && s.expires_at > now)
    else {
        return Ok(invalid("the sign-in has ended"));
    };
    let until = |ttl: i64| (now + ttl).min(session.expires_at);
    let token_scope = scope.unwrap_or(&grant.scope);
    let access = random_id(32);
    let refresh = grant
        .scope
        .split(' ')
        .any(|s| s == "offline_access")
        .then(|| random_id(32));
    let expires_in = until(oidc::TOKEN_TTL_SECS) - now;
    let mut tokens = vec![NewToken {
        hash: hash_id(&access),
        kind: "access",
        expires_at: until(oidc::TOKEN_TTL_SECS),
        scope: scope.map(str::to_string),
    }];
    if let Some(r) = &refresh {
        tokens.push(NewToken {
            hash: hash_id(r),
            kind: "refresh",
            expires_at: until(oidc::REFRESH_TTL_SECS),
            scope: None,
        });
    }
    match source {
        Source::Code(code_hash) => {
            if !app
                .store
                .create_oidc_grant(grant, Some(code_hash), &tokens)
                .await?
            {
                return Ok(invalid("the code was already used"));
            }
        }
        Source::Device => {
            app.store.create_oidc_grant(grant, None, &tokens).await?;
        }
        Source::Refresh => app.store.add_oidc_tokens(&grant.id, &tokens).await?,
    }
    let Some(id_token) = oidc.id_token(&oidc::IdToken {
        client_id: &grant.client_id,
        user: &user,
        scope: token_scope,
        nonce,
        auth_time: grant.auth_time,
        method: grant.auth_method,
        sid: oidc::sid(&grant.session),
        now,
    }) else {
        return Ok(token_error(
            app,
            "server_error",
            "the ID token could not be signed",
            false,
        ));
    };
    app.metrics
        .oidc_tokens
        .with_label_values(&[grant_type])
        .inc();
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "id_token": id_token,
        "scope": token_scope,
    });
    if let Some(r) = refresh {
        body["refresh_token"] = json!(r);
    }
    Ok(Resp::json(200, &body).header(header::PRAGMA, "no-cache"))
}

/// `POST /.sesame/oidc/revoke` (RFC 7009): `200` whether or not the token
/// was known; a refresh token takes its grant with it.
pub async fn revoke(app: &App, oidc: &Provider, req: &Req<'_>) -> Result {
    if *req.method != Method::POST {
        return Ok(token_error(app, "invalid_request", "use POST", false));
    }
    let form = match Params::of(req) {
        Ok(f) => f,
        Err(why) => return Ok(token_error(app, "invalid_request", why, false)),
    };
    let client = match client_of(app, oidc, req, &form).await {
        Ok(c) => c,
        Err(resp) => return Ok(resp),
    };
    let Some(token) = form.get("token") else {
        return Ok(token_error(
            app,
            "invalid_request",
            "token is missing",
            false,
        ));
    };
    if app
        .store
        .revoke_oidc_token(&hash_id(token), &client.id, app.clock.now())
        .await?
    {
        tracing::info!(target: "sesame::audit", event = "oidc_token_revoked", client = %client.id);
    }
    Ok(Resp::new(200, "application/json", "{}").header(header::CACHE_CONTROL, "no-store"))
}

/// `GET|POST /.sesame/oidc/end_session` (RP-initiated logout 1.0). With an
/// `id_token_hint` of this browser's sign-in, it ends at once and goes to
/// the client's registered `post_logout_redirect_uri`; otherwise the person
/// is asked (a sign-out no site can force on them).
pub async fn end_session(app: &App, oidc: &Provider, req: &Req<'_>) -> Result {
    let p = match Params::of(req) {
        Ok(p) => p,
        Err(why) => return Ok(refused_page(app, req, why)),
    };
    let hint = p.get("id_token_hint").and_then(|t| oidc.read_id_token(t));
    let client_id = hint
        .as_ref()
        .and_then(|h| h["aud"].as_str().map(str::to_string))
        .or_else(|| p.get("client_id").map(str::to_string));
    if let (Some(h), Some(given)) = (&hint, p.get("client_id")) {
        if h["aud"].as_str() != Some(given) {
            return Ok(refused_page(
                app,
                req,
                "client_id and id_token_hint disagree.",
            ));
        }
    }
    let client = client_id.as_deref().and_then(|id| oidc.client(id));
    let back = match p.get("post_logout_redirect_uri") {
        None => None,
        Some(u) => match client.filter(|c| c.post_logout_redirect_uris.iter().any(|r| r == u)) {
            Some(_) => Some(u),
            None => {
                return Ok(refused_page(
                    app,
                    req,
                    "Its post_logout_redirect_uri is not registered for this application.",
                ))
            }
        },
    };
    let live = current_session(app, req).await;
    let ours = match (&hint, &live) {
        (Some(h), Some((_, l))) => h["sid"].as_str() == Some(oidc::sid(&l.record.id_hash)),
        _ => false,
    };
    if live.is_some() && !ours {
        // Not this browser's sign-in named: ask.
        let html = app.pages.render(
            "error.html",
            &ErrorPage {
                signout: true,
                ..ErrorPage::new(
                    &req.site.site.name,
                    "Sign out?",
                    "An application asks to sign you out of everything you signed in to here.",
                )
            },
        );
        return Ok(Resp::page(app, 200, html));
    }
    if let Some((plain, _)) = &live {
        if let Some(record) = app.sessions.revoke(plain).await? {
            app.metrics.sessions_revoked.inc();
            tracing::info!(target: "sesame::audit", event = "session_revoked", email = %record.email, session = &record.id_hash[..16], reason = "oidc_end_session");
        }
    }
    let clear = crate::session::cookies::clear(
        &req.site.site,
        &req.site.session_cookie,
        crate::session::cookies::CookieScope::CookieDomain,
    );
    let to = match back {
        Some(u) => match p.get("state") {
            Some(s) => back_to(u, &[("state", s)]),
            None => u.to_string(),
        },
        None => req.site.site.sesame_url("/login", &[]),
    };
    Ok(Resp::redirect(302, &to).cookie(clear))
}

/// `GET|POST /.sesame/oidc/userinfo` with `Authorization: Bearer`.
pub async fn userinfo(app: &App, req: &Req<'_>) -> Result {
    let token = req
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let refuse = |challenge: &str| {
        count_error(app, "invalid_token");
        Resp::json(401, &json!({"error": "invalid_token"}))
            .header(header::WWW_AUTHENTICATE, challenge)
    };
    let Some(token) = token else {
        return Ok(refuse("Bearer realm=\"sesame\""));
    };
    let now = app.clock.now();
    let Some(grant) = app.store.oidc_access(&hash_id(token), now).await? else {
        return Ok(refuse("Bearer realm=\"sesame\", error=\"invalid_token\""));
    };
    let Some(user) = app
        .store
        .user_by_id(&grant.user_id)
        .await?
        .filter(|u| !u.disabled)
    else {
        return Ok(refuse("Bearer realm=\"sesame\", error=\"invalid_token\""));
    };
    Ok(Resp::json(
        200,
        &serde_json::Value::Object(oidc::user_claims(&user, &grant.scope)),
    ))
}
