//! HTTP/1.1 upgrades (WebSocket), after the auth check: Sesame relays the
//! handshake and then the bytes both ways itself.
//!
//! Pingora 0.9's proxy loop can take the end of the upgrade request's own
//! (empty) body, queued before the app answered, for the end of the tunnel,
//! and close the connection right after the `101` whenever the app answers
//! fast (cloudflare/pingora#946). Until a release fixes that, upgrade
//! requests without a body take this path; everything else is proxied by
//! Pingora as usual.

use bytes::Bytes;
use http::header;
use pingora::connectors::http::v1::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;

/// An upgrade request Sesame relays itself: HTTP/1.1, `Connection: upgrade`
/// with an `Upgrade` header, and no request body.
pub fn is_relayed_upgrade(req: &RequestHeader) -> bool {
    let connection_upgrade = req
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let has_body = req.headers.contains_key(header::TRANSFER_ENCODING)
        || req
            .headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    req.version == http::Version::HTTP_11
        && connection_upgrade
        && req.headers.contains_key(header::UPGRADE)
        && !has_body
}

/// Send `up_req` to `peer`; relay the answer, and if it is a `101`, the
/// bytes of both directions until either side closes. An `Err` before
/// anything was written to the client is the app's failure (502/504).
pub async fn relay(
    connector: &Connector,
    session: &mut Session,
    peer: &HttpPeer,
    up_req: RequestHeader,
) -> Result<()> {
    let (mut up, _) = connector.get_http_session(peer).await?;
    up.read_timeout = peer.options.read_timeout;
    up.write_request_header(Box::new(up_req)).await?;
    up.read_response().await?;
    let resp: ResponseHeader = match up.resp_header() {
        Some(h) => h.clone(),
        None => return Error::e_explain(ErrorType::InvalidHTTPHeader, "no response header"),
    };
    let upgraded = up.was_upgraded();
    session.write_response_header(Box::new(resp), false).await?;
    if !upgraded {
        // The app declined the upgrade: pass its answer on and finish.
        while let Some(b) = up.read_body_bytes().await? {
            session.write_response_body(Some(b), false).await?;
        }
        session.write_response_body(None, true).await?;
        up.shutdown().await;
        return Ok(());
    }
    // A tunnel may be idle for long: no read timeout from here on.
    up.read_timeout = None;
    up.maybe_upgrade_body_writer();
    let result = tunnel(session, &mut up).await;
    up.shutdown().await;
    let _ = session.write_response_body(None, true).await;
    result
}

async fn tunnel(
    session: &mut Session,
    up: &mut pingora::protocols::http::v1::client::HttpSession,
) -> Result<()> {
    loop {
        tokio::select! {
            from_client = session.read_request_body() => match from_client? {
                Some(b) => {
                    up.write_body(&b).await?;
                }
                None => return Ok(()),
            },
            from_app = up.read_body_bytes() => match from_app? {
                Some(b) => {
                    let b: Bytes = b;
                    session.write_response_body(Some(b), false).await?;
                }
                None => return Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/ws", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn only_bodiless_http11_upgrades_are_relayed() {
        assert!(is_relayed_upgrade(&req(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket")
        ])));
        assert!(!is_relayed_upgrade(&req(&[("upgrade", "websocket")])));
        assert!(!is_relayed_upgrade(&req(&[("connection", "upgrade")])));
        assert!(!is_relayed_upgrade(&req(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("content-length", "5")
        ])));
    }
}
