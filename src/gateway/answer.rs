//! What Sesame answers itself instead of the app: its endpoints (the body
//! read within bounds, the response written), and the login, step-up,
//! no-access, store-unavailable and app-error answers, each a page for a
//! browser and JSON for a program.

use bytes::Bytes;
use http::{header, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;
use serde_json::json;

use super::{forwarded_for, peer_ip, Gateway, PREFIX};
use crate::config::SiteId;
use crate::endpoints::{self, Req, Resp, MAX_BODY, MAX_HEADERS};
use crate::session::LiveSession;

/// One of Sesame's pages on `site`, with `rd` = the request's own URL (built
/// from the configured public URL, never from the Host header).
pub(super) fn sesame_url(site: &crate::config::Site, page: &str, req: &RequestHeader) -> String {
    let target = req.uri.path_and_query().map_or("", |pq| pq.as_str());
    site.sesame_url_back_to(page, target)
}

/// The client takes HTML (a person, not a program).
pub(super) fn accepts_html(req: &RequestHeader) -> bool {
    req.headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// A browser navigation: GET that accepts HTML.
pub(super) fn is_navigation(req: &RequestHeader) -> bool {
    req.method == Method::GET && accepts_html(req)
}

pub(super) fn headers_size(req: &RequestHeader) -> usize {
    req.headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + req.uri.to_string().len()
}

/// Send `resp`. The header is built as plain `http` parts: pingora's own
/// `append_header` parses each name again and keeps a second map with its
/// spelling (about 300 instructions a header; header names are lower case
/// either way).
pub(super) async fn write(session: &mut Session, resp: Resp) -> Result<()> {
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = http::StatusCode::from_u16(resp.status)
        .or_err(ErrorType::InternalError, "not an HTTP status")?;
    parts.headers.reserve(resp.headers.len() + 1);
    for (k, v) in resp.headers {
        parts
            .headers
            .try_append(k, v)
            .or_err(ErrorType::InternalError, "too many headers")?;
    }
    parts
        .headers
        .insert(header::CONTENT_LENGTH, resp.body.len().into());
    let has_body = !resp.body.is_empty();
    session
        .write_response_header(Box::new(ResponseHeader::from(parts)), !has_body)
        .await?;
    if has_body {
        session.write_response_body(Some(resp.body), true).await?;
    }
    Ok(())
}

/// How long a body for Sesame's own endpoints (a form, a passkey's JSON)
/// may take to arrive, all of it: a client trickling bytes would otherwise
/// hold its request for as long as it likes (HTTP/2 bodies have no read
/// timeout at all).
pub const BODY_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// A request body, as read for an endpoint.
pub(super) enum Body {
    Read(Bytes),
    /// Over `MAX_BODY` bytes.
    TooLarge,
    /// Not all there within [`BODY_TIME`].
    TooSlow,
}

/// Read a request body of at most `MAX_BODY` bytes, within [`BODY_TIME`].
pub(super) async fn read_body(session: &mut Session) -> Result<Body> {
    let declared = session
        .req_header()
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Ok(Body::TooLarge);
    }
    let read = async {
        let mut body = Vec::new();
        while let Some(chunk) = session.read_request_body().await? {
            if body.len() + chunk.len() > MAX_BODY {
                return Ok(Body::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Body::Read(Bytes::from(body)))
    };
    tokio::time::timeout(BODY_TIME, read)
        .await
        .unwrap_or(Ok(Body::TooSlow))
}

impl Gateway {
    pub(super) async fn endpoint(&self, session: &mut Session, site_id: SiteId) -> Result<()> {
        let app = &self.app;
        let site = app.site(site_id);
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
            Body::Read(b) => b,
            Body::TooLarge => {
                return write(
                    session,
                    Resp::new(413, "text/plain; charset=utf-8", "request body too large"),
                )
                .await
            }
            Body::TooSlow => {
                // The rest of the body may still come: not on this
                // connection.
                session.set_keepalive(None);
                return write(
                    session,
                    Resp::new(
                        408,
                        "text/plain; charset=utf-8",
                        "request body too slow: send it within 10 seconds",
                    ),
                )
                .await;
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
            // Below `/.sesame`; the portal's `/.well-known/` as it is.
            path: path.strip_prefix(PREFIX).unwrap_or(path),
            query: req_header.uri.query().unwrap_or(""),
            headers: &req_header.headers,
            body,
            client_ip,
            site_id,
            site,
        };
        let resp = endpoints::handle(app, req).await;
        write(session, resp).await
    }

    /// 302 to the login page for a browser navigation, 401 JSON otherwise.
    pub(super) fn login_response(&self, session: &Session, site_id: SiteId) -> Resp {
        let req = session.req_header();
        let login = sesame_url(&self.app.site(site_id).site, "/login", req);
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
    pub(super) fn step_up_response(&self, session: &Session, site_id: SiteId) -> Resp {
        let req = session.req_header();
        let url = sesame_url(&self.app.site(site_id).site, "/stepup", req);
        if is_navigation(req) {
            Resp::redirect(302, &url)
        } else {
            Resp::json(
                403,
                &json!({"error": "passkey_required", "stepup_url": url}),
            )
        }
    }

    pub(super) fn upstream_error(
        &self,
        session: &Session,
        site: Option<SiteId>,
        code: u16,
    ) -> Resp {
        let app = &self.app;
        let (title, message) = match code {
            504 => ("The app is not answering", "The app behind this site took too long to answer. Please try again in a moment."),
            502 => ("The app is unavailable", "The app behind this site cannot be reached right now. Please try again in a moment."),
            _ => ("Something went wrong", "The request could not be completed."),
        };
        match site {
            Some(i) if accepts_html(session.req_header()) => {
                endpoints::ErrorPage::new(&app.site(i).site.name, title, message).respond(app, code)
            }
            _ => Resp::json(
                code,
                &json!({"error": if code == 504 { "upstream_timeout" } else { "upstream_unavailable" }}),
            ),
        }
    }

    /// The store is down and this session was not verified recently enough.
    pub(super) fn unavailable_response(&self, session: &Session, site_id: SiteId) -> Resp {
        let app = &self.app;
        let resp = if accepts_html(session.req_header()) {
            endpoints::ErrorPage {
                retry_after: Some(5),
                ..endpoints::ErrorPage::new(
                    &app.site(site_id).site.name,
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

    pub(super) fn denied_response(&self, site_id: SiteId, live: &LiveSession) -> Resp {
        let app = &self.app;
        let site = &app.site(site_id).site;
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
