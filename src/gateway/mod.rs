//! The Pingora `ProxyHttp` implementation. Each phase only dispatches: to
//! `endpoints` for `/.sesame/*`, to `policy` for everything else, and to
//! `headers` for what the upstream receives.

pub mod headers;
pub mod upgrade;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use serde_json::json;

use crate::app::App;
use crate::endpoints::{self, Req, Resp, MAX_BODY, MAX_HEADERS};
use crate::forward_auth;
use crate::metrics::Outcome;
use crate::policy::{self, Decision};
use crate::session::LiveSession;

pub struct Gateway {
    pub app: Arc<App>,
    /// Connections for the upgrades Sesame relays itself (see `upgrade`).
    upgrades: pingora::connectors::http::v1::Connector,
}

#[derive(Default)]
pub struct Ctx {
    site: Option<usize>,
    identity: Option<Arc<LiveSession>>,
    /// The path the decision was made for, when it differs from the wire's.
    checked_path: Option<String>,
    /// What became of the request (counted when it is logged; none set:
    /// an error before any decision).
    outcome: Option<Outcome>,
}

const PREFIX: &str = "/.sesame";

/// The TCP peer.
fn peer_ip(session: &Session) -> IpAddr {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn forwarded_for(session: &Session) -> Vec<&str> {
    session
        .req_header()
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

fn request_host(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
}

/// One of Sesame's pages on `site`, with `rd` = the request's own URL (built
/// from the configured public URL, never from the Host header).
fn sesame_url(site: &crate::config::Site, page: &str, req: &RequestHeader) -> String {
    let target = req.uri.path_and_query().map_or("", |pq| pq.as_str());
    site.sesame_url_back_to(page, target)
}

/// The client takes HTML (a person, not a program).
fn accepts_html(req: &RequestHeader) -> bool {
    req.headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// A browser navigation: GET that accepts HTML.
fn is_navigation(req: &RequestHeader) -> bool {
    req.method == Method::GET && accepts_html(req)
}

fn headers_size(req: &RequestHeader) -> usize {
    req.headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + req.uri.to_string().len()
}

async fn write(session: &mut Session, resp: Resp) -> Result<()> {
    let mut h = ResponseHeader::build(resp.status, Some(resp.headers.len() + 1))?;
    for (k, v) in resp.headers {
        h.append_header(k, v)?;
    }
    h.insert_header(header::CONTENT_LENGTH, resp.body.len())?;
    let has_body = !resp.body.is_empty();
    session
        .write_response_header(Box::new(h), !has_body)
        .await?;
    if has_body {
        session.write_response_body(Some(resp.body), true).await?;
    }
    Ok(())
}

/// Read a request body of at most `MAX_BODY` bytes; `None` if it is larger.
async fn read_body(session: &mut Session) -> Result<Option<Bytes>> {
    let declared = session
        .req_header()
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        if body.len() + chunk.len() > MAX_BODY {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(Bytes::from(body)))
}

impl Gateway {
    pub fn new(app: Arc<App>) -> Gateway {
        Gateway {
            app,
            upgrades: pingora::connectors::http::v1::Connector::new(None),
        }
    }

    /// What the upstream receives: the checked path, no identity-like
    /// headers from the client, the real identity, `X-Forwarded-*`.
    fn upstream_request(
        &self,
        session: &Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(i) = ctx.site else { return Ok(()) };
        let site = &self.app.sites[i];
        if let Some(path) = ctx.checked_path.take() {
            let uri = match up.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            match uri.parse::<http::Uri>() {
                Ok(u) => up.set_uri(u),
                Err(_) => {
                    return Error::e_explain(
                        ErrorType::InternalError,
                        "normalised path is not a URI",
                    )
                }
            }
        }
        let xff = self
            .app
            .config
            .trusted_proxies
            .forward(peer_ip(session), &forwarded_for(session));
        // Addresses and the client's own header values: a valid header value.
        let xff = HeaderValue::try_from(xff).or_err(
            ErrorType::InternalError,
            "X-Forwarded-For is not a header value",
        )?;
        let assertion = ctx
            .identity
            .as_ref()
            .and_then(|live| self.app.assertion(i, live));
        let identity = ctx.identity.as_deref().map(|live| headers::Identity {
            live,
            assertion: assertion.as_ref().map(|a| &a.header),
        });
        headers::for_upstream(up, site, identity, xff);
        Ok(())
    }

    /// Relay an allowed WebSocket handshake to the site's app: the client's
    /// hop-by-hop headers (and those it named in `Connection`) go, then the
    /// identity is set as on any request, then the handshake's own
    /// `Connection` and `Upgrade`.
    async fn relay_upgrade(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let Some(i) = ctx.site else {
            return Error::e_explain(ErrorType::InternalError, "no site chosen");
        };
        let key = upgrade::key_of(session.req_header());
        let mut up_req = session.req_header().clone();
        upgrade::strip_hop_by_hop(&mut up_req);
        self.upstream_request(session, &mut up_req, ctx)?;
        upgrade::set_websocket_handshake(&mut up_req)?;
        let Some(peer) = self.app.sites[i].upstreams.peer() else {
            return Error::e_explain(ErrorType::ConnectNoRoute, "no upstream");
        };
        let count = |result: &str| self.app.metrics.upgrades.with_label_values(&[result]).inc();
        match upgrade::relay(&self.upgrades, session, &peer, up_req, &key).await {
            Ok(upgrade::Relayed::Tunnel) => count("websocket"),
            Ok(upgrade::Relayed::Declined) => count("declined"),
            Ok(upgrade::Relayed::BadAnswer) => {
                count("bad_answer");
                tracing::warn!(
                    site = %self.app.sites[i].site.name,
                    "the app answered a WebSocket handshake with a 101 that does not complete it; closed"
                );
                ctx.outcome = Some(Outcome::UpstreamDown);
                let resp = self.upstream_error(session, ctx.site, 502);
                write(session, resp).await?;
            }
            Err(e) => {
                let code = error_status(&e);
                if code > 0 && session.response_written().is_none() {
                    tracing::warn!(error = %e, code, "upgrade to the app failed");
                    ctx.outcome = Some(Outcome::of_failure(code));
                    let resp = self.upstream_error(session, ctx.site, code);
                    write(session, resp).await?;
                } else {
                    tracing::debug!(error = %e, "upgraded connection ended");
                }
            }
        }
        Ok(())
    }

    async fn endpoint(&self, session: &mut Session, site_index: usize) -> Result<()> {
        let app = &self.app;
        let site = &app.sites[site_index];
        if headers_size(session.req_header()) > MAX_HEADERS {
            return write(
                session,
                Resp::new(
                    431,
                    "text/plain; charset=utf-8",
                    "request headers too large",
                ),
            )
            .await;
        }
        let body = match read_body(session).await? {
            Some(b) => b,
            None => {
                return write(
                    session,
                    Resp::new(413, "text/plain; charset=utf-8", "request body too large"),
                )
                .await
            }
        };
        let client_ip = app
            .config
            .trusted_proxies
            .client(peer_ip(session), &forwarded_for(session));
        let req_header = session.req_header();
        let path = req_header.uri.path();
        let req = Req {
            method: &req_header.method,
            path: &path[PREFIX.len()..],
            query: req_header.uri.query().unwrap_or(""),
            headers: &req_header.headers,
            body,
            client_ip,
            site_index,
            site,
        };
        let resp = endpoints::handle(app, req).await;
        write(session, resp).await
    }

    /// 302 to the login page for a browser navigation, 401 JSON otherwise.
    fn login_response(&self, session: &Session, site_index: usize) -> Resp {
        let req = session.req_header();
        let login = sesame_url(&self.app.sites[site_index].site, "/login", req);
        if is_navigation(req) {
            Resp::redirect(302, &login)
        } else {
            Resp::json(
                401,
                &json!({"error": "unauthenticated", "login_url": login}),
            )
            .header(header::WWW_AUTHENTICATE, "Sesame")
        }
    }

    /// The site wants a passkey sign-in: a browser goes to the step-up page,
    /// anything else gets 403 JSON naming it.
    fn step_up_response(&self, session: &Session, site_index: usize) -> Resp {
        let req = session.req_header();
        let url = sesame_url(&self.app.sites[site_index].site, "/stepup", req);
        if is_navigation(req) {
            Resp::redirect(302, &url)
        } else {
            Resp::json(
                403,
                &json!({"error": "passkey_required", "stepup_url": url}),
            )
        }
    }

    fn upstream_error(&self, session: &Session, site: Option<usize>, code: u16) -> Resp {
        let app = &self.app;
        let (title, message) = match code {
            504 => ("The app is not answering", "The app behind this site took too long to answer. Please try again in a moment."),
            502 => ("The app is unavailable", "The app behind this site cannot be reached right now. Please try again in a moment."),
            _ => ("Something went wrong", "The request could not be completed."),
        };
        match site {
            Some(i) if accepts_html(session.req_header()) => {
                endpoints::ErrorPage::new(&app.sites[i].site.name, title, message)
                    .respond(app, code)
            }
            _ => Resp::json(
                code,
                &json!({"error": if code == 504 { "upstream_timeout" } else { "upstream_unavailable" }}),
            ),
        }
    }

    /// The store is down and this session was not verified recently enough.
    fn unavailable_response(&self, session: &Session, site_index: usize) -> Resp {
        let app = &self.app;
        let resp = if accepts_html(session.req_header()) {
            endpoints::ErrorPage {
                retry_after: Some(5),
                ..endpoints::ErrorPage::new(
                    &app.sites[site_index].site.name,
                    "Please try again shortly",
                    "Sign-in is unavailable for a moment. Nothing was lost.",
                )
            }
            .respond(app, 503)
        } else {
            Resp::json(503, &json!({"error": "unavailable", "retry_after": 5}))
        };
        resp.header(header::RETRY_AFTER, "5")
    }

    fn denied_response(&self, site_index: usize, live: &LiveSession) -> Resp {
        let app = &self.app;
        let site = &app.sites[site_index].site;
        let message = format!(
            "You are signed in as {}, who may not use {}. Sign out to use another account.",
            live.record.email, site.name
        );
        endpoints::ErrorPage {
            signout: true,
            ..endpoints::ErrorPage::new(&site.name, "No access", &message)
        }
        .respond(app, 403)
    }
}

/// The status a failed proxying answers with: 504 for timeouts, 502 for the
/// app's failures, 0 when the client is gone (nothing to answer).
fn error_status(e: &pingora::Error) -> u16 {
    use pingora::ErrorType::*;
    match e.etype() {
        HTTPStatus(code) => *code,
        ConnectTimedout | ReadTimedout | WriteTimedout => 504,
        _ => match e.esource() {
            pingora::ErrorSource::Upstream => 502,
            pingora::ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed => 0,
                _ => 400,
            },
            // Errors from Sesame's own upgrade relay carry no source: a
            // failure to connect or read the app's answer is the app's.
            _ => match e.etype() {
                ConnectRefused | ConnectNoRoute | ConnectError | TLSHandshakeFailure
                | InvalidHTTPHeader | ConnectionClosed | ReadError => 502,
                _ => 500,
            },
        },
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    /// Classify and decide. `Ok(true)`: Sesame answered (endpoint, login,
    /// refusal) and nothing is proxied. `Ok(false)`: proxy, with `ctx`
    /// holding the identity (if any). `Err`: the connection failed.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let started = Instant::now();
        if session.req_header().uri.path() == forward_auth::PATH {
            let peer = peer_ip(session);
            let req = session.req_header();
            let query = req.uri.query().unwrap_or("");
            let (site, outcome, resp) =
                forward_auth::check(&self.app, peer, &req.headers, query).await;
            ctx.site = site;
            ctx.outcome = Some(outcome);
            self.app
                .metrics
                .auth_check_seconds
                .observe(started.elapsed().as_secs_f64());
            write(session, resp).await?;
            return Ok(true);
        }
        let Some((site_index, site)) =
            request_host(session.req_header()).and_then(|h| self.app.site_for_host(h))
        else {
            ctx.outcome = Some(Outcome::UnknownSite);
            write(
                session,
                Resp::new(
                    404,
                    "text/plain; charset=utf-8",
                    "no site is configured for this host",
                ),
            )
            .await?;
            return Ok(true);
        };
        ctx.site = Some(site_index);
        let path = session.req_header().uri.path();
        if path == PREFIX || path.starts_with("/.sesame/") {
            ctx.outcome = Some(Outcome::Endpoint);
            self.endpoint(session, site_index).await?;
            return Ok(true);
        }
        let upgrade = upgrade::classify(session.req_header());
        match upgrade {
            upgrade::Upgrade::None => {}
            // h2c and the like: the request goes on as a plain one.
            upgrade::Upgrade::Other => {
                upgrade::drop_upgrade(session.req_header_mut());
                self.app
                    .metrics
                    .upgrades
                    .with_label_values(&["dropped"])
                    .inc();
            }
            upgrade::Upgrade::WebSocket => {
                if !upgrade::origin_allowed(
                    &session.req_header().headers,
                    &site.site.origin,
                    &site.site.websocket_origins,
                ) {
                    self.app
                        .metrics
                        .upgrades
                        .with_label_values(&["cross_origin"])
                        .inc();
                    ctx.outcome = Some(Outcome::Denied);
                    let resp = Resp::json(403, &json!({"error": "cross_origin_websocket"}));
                    write(session, resp).await?;
                    return Ok(true);
                }
            }
        }
        let req = session.req_header();
        let cookie = policy::session_cookie(
            site,
            req.headers
                .get_all(header::COOKIE)
                .iter()
                .map(|v| v.as_bytes()),
        );
        let (decision, checked) =
            policy::decide_checked(&self.app, site, req.uri.path(), cookie).await;
        // The upstream gets exactly the path that was checked.
        if let Some(checked) = checked {
            let wire = crate::path::encode(&checked);
            if wire != req.uri.path() {
                ctx.checked_path = Some(wire);
            }
        }
        self.app
            .metrics
            .auth_check_seconds
            .observe(started.elapsed().as_secs_f64());
        ctx.outcome = Some(decision.outcome());
        let resp = match decision {
            Decision::Allow(live) => {
                ctx.identity = Some(live);
                if upgrade == upgrade::Upgrade::WebSocket {
                    self.relay_upgrade(session, ctx).await?;
                    return Ok(true);
                }
                return Ok(false);
            }
            Decision::Public => {
                if upgrade == upgrade::Upgrade::WebSocket {
                    self.relay_upgrade(session, ctx).await?;
                    return Ok(true);
                }
                return Ok(false);
            }
            Decision::Login => {
                let r = self.login_response(session, site_index);
                if r.status == 302 {
                    ctx.outcome = Some(Outcome::LoginRedirect);
                }
                r
            }
            Decision::Deny(live) => self.denied_response(site_index, &live),
            Decision::BadPath => {
                Resp::new(400, "text/plain; charset=utf-8", "ambiguous path encoding")
            }
            Decision::Unavailable => self.unavailable_response(session, site_index),
            Decision::StepUp(_) => self.step_up_response(session, site_index),
        };
        write(session, resp).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(i) = ctx.site else {
            return Error::e_explain(ErrorType::InternalError, "no site chosen");
        };
        match self.app.sites[i].upstreams.peer() {
            Some(peer) => Ok(Box::new(peer)),
            None => Error::e_explain(ErrorType::ConnectNoRoute, "no upstream"),
        }
    }

    /// Strip anything identity-like the client sent, add the real identity.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        self.upstream_request(session, up, ctx)
    }

    /// A `101` here answers a request that was not a WebSocket handshake
    /// (those are relayed by `upgrade`, and every other `Upgrade` was taken
    /// off the request): never let it become a tunnel. `Err` = 502.
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        if resp.status == 101 {
            self.app
                .metrics
                .upgrades
                .with_label_values(&["bad_answer"])
                .inc();
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                "the app answered 101 to a request that is not a WebSocket handshake",
            );
        }
        Ok(())
    }

    /// The upstream failed: 502 (down, refused, broken) or 504 (timed out),
    /// as a page for a person or JSON for a program; never a login loop.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &pingora::Error,
        ctx: &mut Ctx,
    ) -> FailToProxy {
        let code = error_status(e);
        ctx.outcome = Some(Outcome::of_failure(code));
        if code > 0 && session.response_written().is_none() {
            tracing::warn!(error = %e, code, "proxying failed");
            let resp = self.upstream_error(session, ctx.site, code);
            if let Err(err) = write(session, resp).await {
                tracing::debug!(error = %err, "could not send the error page");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, _session: &mut Session, _e: Option<&pingora::Error>, ctx: &mut Ctx) {
        let outcome = ctx.outcome.unwrap_or(Outcome::Error);
        match ctx.site {
            Some(i) => self.app.sites[i].requests.count(outcome),
            None => self
                .app
                .metrics
                .requests
                .with_label_values(&["-", outcome.label()])
                .inc(),
        }
    }
}
