//! The Pingora `ProxyHttp` implementation. Each phase only dispatches: to
//! `endpoints` for `/.sesame/*` (through `answer.rs`, which also writes
//! Sesame's own answers), to `policy` for everything else, and to `headers`
//! for what the upstream receives.

mod answer;
use answer::write;
pub mod headers;
pub mod upgrade;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::{header, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use serde_json::json;

use crate::app::App;
use crate::config::SiteId;
use crate::endpoints::Resp;
use crate::forward_auth;
use crate::metrics::{Held, Outcome};
use crate::policy::{self, Decision};
use crate::session::LiveSession;

pub struct Gateway {
    pub app: Arc<App>,
    /// `[server] access_log`, if set.
    access_log: Option<crate::access_log::AccessLog>,
    /// Connections for the upgrades Sesame relays itself (see `upgrade`).
    upgrades: pingora::connectors::http::v1::Connector,
}

#[derive(Default)]
pub struct Ctx {
    site: Option<SiteId>,
    identity: Option<Arc<LiveSession>>,
    /// The path the decision was made for, when it differs from the wire's.
    checked_path: Option<String>,
    /// What became of the request (counted when it is logged; none set:
    /// an error before any decision).
    outcome: Option<Outcome>,
    /// When the request went to the app (its response time is measured).
    sent_upstream: Option<Instant>,
    /// When its headers had been read (for the access log).
    started: Option<Instant>,
    /// The app's address it went to (for the access log).
    upstream: Option<std::net::SocketAddr>,
    /// A session refused (not admitted, or without the passkey the site
    /// asks for): who it was, for the access log.
    refused: Option<Arc<LiveSession>>,
    /// Counts it in `sesame_requests_in_flight` until it ends (a process
    /// on its way out waits for them: see `drain`).
    _in_flight: Option<Held>,
}

const PREFIX: &str = "/.sesame";

/// The longest a write to the client may wait for it to read.
const WRITE_TIME: std::time::Duration = std::time::Duration::from_secs(60);

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

impl Gateway {
    pub fn new(app: Arc<App>) -> Gateway {
        Gateway {
            app,
            access_log: None,
            upgrades: pingora::connectors::http::v1::Connector::new(None),
        }
    }

    /// Write a line per request to `log`.
    pub fn with_access_log(self, log: Option<crate::access_log::AccessLog>) -> Gateway {
        Gateway {
            access_log: log,
            ..self
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
        let site = &self.app.site(i);
        if let Some(path) = &ctx.checked_path {
            let uri = match up.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
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
        let Some(peer) = self.app.site(i).upstreams.peer() else {
            return Error::e_explain(ErrorType::ConnectNoRoute, "no upstream");
        };
        if self.access_log.is_some() {
            use pingora::upstreams::peer::Peer;
            ctx.upstream = peer.address().as_inet().copied();
        }
        let count = |result: &str| self.app.metrics.upgrades.with_label_values(&[result]).inc();
        let tunnel = upgrade::Tunnel {
            open: &self.app.metrics.websockets_open,
            close: self.app.close_tunnels.subscribe(),
        };
        match upgrade::relay(&self.upgrades, session, &peer, up_req, &key, tunnel).await {
            Ok(upgrade::Relayed::Tunnel) => count("websocket"),
            Ok(upgrade::Relayed::Declined) => count("declined"),
            Ok(upgrade::Relayed::BadAnswer) => {
                count("bad_answer");
                tracing::warn!(
                    site = %self.app.site(i).site.name,
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
        Ctx {
            _in_flight: Some(Held::new(&self.app.metrics.requests_in_flight)),
            ..Ctx::default()
        }
    }

    /// Classify and decide. `Ok(true)`: Sesame answered (endpoint, login,
    /// refusal) and nothing is proxied. `Ok(false)`: proxy, with `ctx`
    /// holding the identity (if any). `Err`: the connection failed.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let started = Instant::now();
        ctx.started = Some(started);
        // A client that stops reading its answer (or a tunnel's) lets go of
        // it after a minute, as nginx's send_timeout: its request would
        // otherwise stay open for good.
        session.set_write_timeout(Some(WRITE_TIME));
        if self.app.is_draining() {
            session.set_keepalive(None);
        }
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
        if let Some(target) = session
            .req_header()
            .uri
            .path_and_query()
            .and_then(|pq| forward_auth::ext_authz_target(pq.as_str()))
        {
            let target = target.to_string();
            let req = session.req_header();
            let (site, outcome, resp) =
                forward_auth::ext_authz(&self.app, req.method.as_str(), &req.headers, &target)
                    .await;
            ctx.site = site;
            ctx.outcome = Some(outcome);
            self.app
                .metrics
                .auth_check_seconds
                .observe(started.elapsed().as_secs_f64());
            write(session, resp).await?;
            return Ok(true);
        }
        let Some((site_id, site)) =
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
        ctx.site = Some(site_id);
        let path = session.req_header().uri.path();
        if self.app.is_portal(site_id) && path == "/.well-known/openid-configuration" {
            ctx.outcome = Some(Outcome::Endpoint);
            Box::pin(self.endpoint(session, site_id)).await?;
            return Ok(true);
        }
        if self.app.is_portal(site_id) && !(path == PREFIX || path.starts_with("/.sesame/")) {
            // The portal has no app behind it: its root is the account page.
            ctx.outcome = Some(Outcome::Endpoint);
            let resp = match path {
                "/" => Resp::redirect(302, &site.site.sesame_url("/account", &[])),
                _ => Resp::new(404, "text/plain; charset=utf-8", "not found"),
            };
            write(session, resp).await?;
            return Ok(true);
        }
        if path == PREFIX || path.starts_with("/.sesame/") {
            ctx.outcome = Some(Outcome::Endpoint);
            // Boxed: the endpoints' state is far larger than a proxied
            // request's, and this future is copied into a box per request.
            Box::pin(self.endpoint(session, site_id)).await?;
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
                    Box::pin(self.relay_upgrade(session, ctx)).await?;
                    return Ok(true);
                }
                return Ok(false);
            }
            Decision::Public => {
                if upgrade == upgrade::Upgrade::WebSocket {
                    Box::pin(self.relay_upgrade(session, ctx)).await?;
                    return Ok(true);
                }
                return Ok(false);
            }
            Decision::Login => {
                let r = self.login_response(session, site_id);
                if r.status == 302 {
                    ctx.outcome = Some(Outcome::LoginRedirect);
                }
                r
            }
            Decision::Deny(live) => {
                let r = self.denied_response(site_id, &live);
                ctx.refused = Some(live);
                r
            }
            Decision::BadPath => {
                Resp::new(400, "text/plain; charset=utf-8", "ambiguous path encoding")
            }
            Decision::Unavailable => self.unavailable_response(session, site_id),
            Decision::StepUp(live) => {
                ctx.refused = Some(live);
                self.step_up_response(session, site_id)
            }
        };
        write(session, resp).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(i) = ctx.site else {
            return Error::e_explain(ErrorType::InternalError, "no site chosen");
        };
        match self.app.site(i).upstreams.peer() {
            Some(peer) => {
                if self.access_log.is_some() {
                    use pingora::upstreams::peer::Peer;
                    ctx.upstream = peer.address().as_inet().copied();
                }
                Ok(Box::new(peer))
            }
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
        ctx.sent_upstream = Some(Instant::now());
        self.upstream_request(session, up, ctx)
    }

    /// A `101` here answers a request that was not a WebSocket handshake
    /// (those are relayed by `upgrade`, and every other `Upgrade` was taken
    /// off the request): never let it become a tunnel. `Err` = 502.
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let (Some(sent), Some(site)) = (ctx.sent_upstream.take(), ctx.site) {
            self.app
                .site(site)
                .upstream_seconds
                .observe(sent.elapsed().as_secs_f64());
        }
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

    async fn logging(&self, session: &mut Session, _e: Option<&pingora::Error>, ctx: &mut Ctx) {
        let outcome = ctx.outcome.unwrap_or(Outcome::Error);
        if let Some(log) = &self.access_log {
            let req = session.req_header();
            let client = self
                .app
                .config
                .trusted_proxies
                .client(peer_ip(session), &forwarded_for(session));
            // What the app got, where it differs and the app got it.
            let app_path = match ctx.upstream {
                Some(_) => ctx.checked_path.as_deref().map(crate::access_log::clipped),
                None => None,
            };
            log.log(crate::access_log::Entry {
                at_ms: self.app.clock.now_millis(),
                site: ctx.site,
                method: crate::access_log::method(&req.method),
                path: crate::access_log::clipped(req.uri.path()),
                app_path,
                status: session.response_written().map(|r| r.status.as_u16()),
                outcome,
                user: ctx.identity.take().or(ctx.refused.take()),
                client,
                upstream: ctx.upstream,
                duration: ctx.started.map(|s| s.elapsed()).unwrap_or_default(),
            });
        }
        match ctx.site {
            Some(i) => self.app.site(i).requests.count(outcome),
            None => self
                .app
                .metrics
                .requests
                .with_label_values(&["-", outcome.label()])
                .inc(),
        }
    }
}
