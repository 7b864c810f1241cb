//! HTTP/1.1 upgrades. Only a WebSocket handshake (RFC 6455 §4.1: `GET`,
//! `Upgrade: websocket`, `Connection: upgrade`, a 16-byte
//! `Sec-WebSocket-Key`, `Sec-WebSocket-Version: 13`, no body) from the site's
//! own origin (or one of its `websocket_origins`) becomes a tunnel, and only
//! when the app's `101` completes that handshake (`Upgrade: websocket`, the
//! right `Sec-WebSocket-Accept`). Any other `Upgrade` (h2c, TLS/1.0, made-up
//! tokens, a WebSocket request that is not well formed) is dropped from the
//! request, which is then proxied as a plain request: a tunnel would carry
//! the client's next bytes to the app unchecked, past every rule and header
//! strip.
//!
//! Sesame relays the WebSocket handshake and the tunnel itself: Pingora 0.9's
//! proxy loop can take the end of the upgrade request's own (empty) body,
//! queued before the app answered, for the end of the tunnel, and close the
//! connection right after the `101` whenever the app answers fast
//! (cloudflare/pingora#946).

use base64::prelude::{Engine, BASE64_STANDARD};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use pingora::connectors::http::v1::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;
use sha1::{Digest, Sha1};

const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
const SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");
const SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");
/// RFC 6455 §1.3.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What a request asks for as to upgrades.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    /// No upgrade asked (the common case; costs one header lookup).
    None,
    /// A well-formed WebSocket handshake.
    WebSocket,
    /// Anything else that names an upgrade: never relayed as one.
    Other,
}

fn tokens(h: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &[u8]> {
    h.get_all(name)
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

fn one<'a>(h: &'a HeaderMap, name: &HeaderName) -> Option<&'a [u8]> {
    let mut all = h.get_all(name).into_iter();
    match (all.next(), all.next()) {
        (Some(v), None) => Some(v.as_bytes()),
        _ => None,
    }
}

/// Classify `req` (see [`Upgrade`]).
pub fn classify(req: &RequestHeader) -> Upgrade {
    let h = &req.headers;
    let connection_upgrade = || {
        tokens(h, header::CONNECTION).any(|t| {
            t.eq_ignore_ascii_case(b"upgrade") || t.eq_ignore_ascii_case(b"http2-settings")
        })
    };
    if !h.contains_key(header::UPGRADE) && !h.contains_key(HTTP2_SETTINGS) && !connection_upgrade()
    {
        return Upgrade::None;
    }
    let key_ok = one(h, &SEC_WEBSOCKET_KEY)
        .and_then(|k| BASE64_STANDARD.decode(k).ok())
        .is_some_and(|k| k.len() == 16);
    let websocket = req.version == http::Version::HTTP_11
        && req.method == Method::GET
        && one(h, &header::UPGRADE).is_some_and(|u| u.eq_ignore_ascii_case(b"websocket"))
        && tokens(h, header::CONNECTION).any(|t| t.eq_ignore_ascii_case(b"upgrade"))
        && key_ok
        && one(h, &SEC_WEBSOCKET_VERSION) == Some(b"13")
        && !h.contains_key(HTTP2_SETTINGS)
        && !h.contains_key(header::TRANSFER_ENCODING)
        && h.get_all(header::CONTENT_LENGTH)
            .into_iter()
            .all(|v| v.as_bytes() == b"0");
    if websocket {
        Upgrade::WebSocket
    } else {
        Upgrade::Other
    }
}

/// Make an [`Upgrade::Other`] request a plain one: no `Upgrade`, no
/// `HTTP2-Settings`, no `upgrade` / `http2-settings` in `Connection` (its
/// other tokens, such as `close`, stay). Done on the client's request itself,
/// so that Pingora does not treat the connection as one being upgraded.
pub fn drop_upgrade(req: &mut RequestHeader) {
    req.remove_header(&header::UPGRADE);
    req.remove_header(&HTTP2_SETTINGS);
    let kept: Vec<&[u8]> = tokens(&req.headers, header::CONNECTION)
        .filter(|t| {
            !t.eq_ignore_ascii_case(b"upgrade") && !t.eq_ignore_ascii_case(b"http2-settings")
        })
        .collect();
    let kept = HeaderValue::from_bytes(&kept.join(&b", "[..])).ok();
    req.remove_header(&header::CONNECTION);
    if let Some(v) = kept.filter(|v| !v.is_empty()) {
        let _ = req.insert_header(header::CONNECTION, v);
    }
}

/// Is `origin` (the handshake's `Origin`) allowed to open a WebSocket on a
/// site whose own origin is `own`? No `Origin` at all is not a browser (every
/// browser sends one on a WebSocket handshake), so cross-site WebSocket
/// hijacking does not apply to it.
pub fn origin_allowed(h: &HeaderMap, own: &str, extra: &[String]) -> bool {
    let mut all = h.get_all(header::ORIGIN).into_iter();
    match (all.next(), all.next()) {
        (None, _) => true,
        (Some(o), None) => {
            let o = o.as_bytes();
            o.eq_ignore_ascii_case(own.as_bytes())
                || extra.iter().any(|e| o.eq_ignore_ascii_case(e.as_bytes()))
        }
        (Some(_), Some(_)) => false,
    }
}

/// Remove what must not travel past a proxy (RFC 9110 §7.6.1): the headers
/// the client named in `Connection`, then the hop-by-hop ones. Run on the
/// client's headers before the identity is added, so a `Connection:
/// Remote-User` cannot take away what Sesame sets.
pub fn strip_hop_by_hop(req: &mut RequestHeader) {
    // `Host` is never the client's to take away (the app routes by it); at
    // most 10 names, as Pingora allows on its own path.
    let named: Vec<HeaderName> = tokens(&req.headers, header::CONNECTION)
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .filter(|n| *n != header::HOST)
        .take(10)
        .collect();
    for n in named {
        req.remove_header(&n);
    }
    for n in [
        header::CONNECTION,
        header::UPGRADE,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        HTTP2_SETTINGS,
    ] {
        req.remove_header(&n);
    }
}

/// Turn a cleaned request back into the WebSocket handshake.
pub fn set_websocket_handshake(req: &mut RequestHeader) -> Result<()> {
    req.insert_header(header::CONNECTION, "Upgrade")?;
    req.insert_header(header::UPGRADE, "websocket")?;
    Ok(())
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn accept_for(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(WEBSOCKET_GUID.as_bytes());
    BASE64_STANDARD.encode(sha.finalize())
}

/// Does the app's `101` complete the client's handshake (RFC 6455 §4.1,
/// what a client checks)?
pub fn completes_handshake(key: &[u8], resp: &ResponseHeader) -> bool {
    let h = &resp.headers;
    resp.status == 101
        && one(h, &header::UPGRADE).is_some_and(|u| u.eq_ignore_ascii_case(b"websocket"))
        && tokens(h, header::CONNECTION).any(|t| t.eq_ignore_ascii_case(b"upgrade"))
        && one(h, &SEC_WEBSOCKET_ACCEPT).is_some_and(|a| a == accept_for(key).as_bytes())
}

/// How a relayed handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    /// The app completed the handshake; the tunnel ran until one side closed.
    Tunnel,
    /// The app answered something other than `101`: passed on as it was.
    Declined,
    /// The app's `101` does not complete the handshake: not passed on.
    BadAnswer,
}

/// Send the handshake `up_req` to `peer`; relay the answer, and if it is a
/// `101` that completes the handshake of `key`, the bytes of both directions
/// until either side closes or `tunnel.close` turns true (counted in
/// `tunnel.open` meanwhile). An `Err` before anything was written to the
/// client is the app's failure (502/504); [`Relayed::BadAnswer`] has written
/// nothing either.
pub async fn relay(
    connector: &Connector,
    session: &mut Session,
    peer: &HttpPeer,
    up_req: RequestHeader,
    key: &[u8],
    tunnel: Tunnel<'_>,
) -> Result<Relayed> {
    let (mut up, _) = connector.get_http_session(peer).await?;
    up.read_timeout = peer.options.read_timeout;
    up.write_request_header(Box::new(up_req)).await?;
    up.read_response().await?;
    let resp: ResponseHeader = match up.resp_header() {
        Some(h) => h.clone(),
        None => return Error::e_explain(ErrorType::InvalidHTTPHeader, "no response header"),
    };
    if resp.status == 101 && !(up.was_upgraded() && completes_handshake(key, &resp)) {
        up.shutdown().await;
        return Ok(Relayed::BadAnswer);
    }
    let upgraded = up.was_upgraded();
    session.write_response_header(Box::new(resp), false).await?;
    if !upgraded {
        // The app declined the upgrade: pass its answer on and finish.
        while let Some(b) = up.read_body_bytes().await? {
            session.write_response_body(Some(b), false).await?;
        }
        session.write_response_body(None, true).await?;
        up.shutdown().await;
        return Ok(Relayed::Declined);
    }
    // A tunnel may be idle for long: no read timeout from here on.
    up.read_timeout = None;
    up.maybe_upgrade_body_writer();
    let result = {
        let _open = crate::metrics::Held::new(tunnel.open);
        relay_frames(session, &mut up, tunnel.close).await
    };
    up.shutdown().await;
    let _ = session.write_response_body(None, true).await;
    result.map(|()| Relayed::Tunnel)
}

/// What a tunnel is counted in and told to close by.
pub struct Tunnel<'a> {
    /// `sesame_websockets_open`.
    pub open: &'a prometheus::IntGauge,
    /// `App::close_tunnels`.
    pub close: tokio::sync::watch::Receiver<bool>,
}

/// Once `close` is (or turns) true.
async fn closing(close: &mut tokio::sync::watch::Receiver<bool>) {
    while !*close.borrow_and_update() {
        if close.changed().await.is_err() {
            // The app is gone: nothing will ask again.
            std::future::pending::<()>().await;
        }
    }
}

async fn relay_frames(
    session: &mut Session,
    up: &mut pingora::protocols::http::v1::client::HttpSession,
    mut close: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    loop {
        tokio::select! {
            // The process is going: end the tunnel (both connections close;
            // the client reconnects, to the process that serves now).
            () = closing(&mut close) => return Ok(()),
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

/// The client's `Sec-WebSocket-Key` (present: the request was classified
/// [`Upgrade::WebSocket`]).
pub fn key_of(req: &RequestHeader) -> Vec<u8> {
    one(&req.headers, &SEC_WEBSOCKET_KEY)
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn req(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/ws", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn ws(extra: &[(&str, &str)]) -> RequestHeader {
        let mut h = vec![
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", KEY),
            ("sec-websocket-version", "13"),
        ];
        h.extend_from_slice(extra);
        req("GET", &h)
    }

    #[test]
    fn only_a_well_formed_websocket_handshake_is_one() {
        assert_eq!(classify(&req("GET", &[])), Upgrade::None);
        assert_eq!(classify(&ws(&[])), Upgrade::WebSocket);
        let other = |r: RequestHeader| assert_eq!(classify(&r), Upgrade::Other, "{r:?}");
        other(req(
            "GET",
            &[
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", "h2c"),
                ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ],
        ));
        other(req("GET", &[("upgrade", "websocket")]));
        other(req("GET", &[("connection", "upgrade")]));
        other(req("GET", &[("http2-settings", "AAMAAABk")]));
        other(ws(&[("content-length", "5")]));
        other(ws(&[("transfer-encoding", "chunked")]));
        other(ws(&[("upgrade", "h2c")]));
        other(ws(&[("sec-websocket-version", "8")]));
        other(ws(&[("sec-websocket-key", "AAAA")]));
        let mut post = ws(&[]);
        post.set_method(Method::POST);
        other(post);
        let mut h10 = ws(&[]);
        h10.set_version(http::Version::HTTP_10);
        other(h10);
        let mut bad_key = ws(&[]);
        bad_key
            .insert_header("sec-websocket-key", "not base64!")
            .unwrap();
        other(bad_key);
    }

    #[test]
    fn dropping_an_upgrade_keeps_other_connection_tokens() {
        let mut r = req(
            "GET",
            &[
                ("connection", "close, Upgrade, HTTP2-Settings"),
                ("upgrade", "h2c"),
                ("http2-settings", "AAMAAABk"),
            ],
        );
        drop_upgrade(&mut r);
        assert!(r.headers.get("upgrade").is_none());
        assert!(r.headers.get("http2-settings").is_none());
        assert_eq!(r.headers["connection"], "close");
        assert_eq!(classify(&r), Upgrade::None);
    }

    #[test]
    fn hop_by_hop_and_named_headers_go() {
        let mut r = ws(&[
            ("connection", "x-private, Host"),
            ("x-private", "s"),
            ("keep-alive", "5"),
            ("host", "app.example.com"),
        ]);
        strip_hop_by_hop(&mut r);
        assert_eq!(r.headers["host"], "app.example.com");
        set_websocket_handshake(&mut r).unwrap();
        assert!(r.headers.get("x-private").is_none());
        assert!(r.headers.get("keep-alive").is_none());
        assert_eq!(r.headers["connection"], "Upgrade");
        assert_eq!(r.headers["upgrade"], "websocket");
        assert_eq!(r.headers["sec-websocket-key"], KEY);
    }

    #[test]
    fn the_accept_value_is_rfc_6455s() {
        // The example of RFC 6455 §1.3.
        assert_eq!(accept_for(KEY.as_bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let mut ok = ResponseHeader::build(101, None).unwrap();
        ok.insert_header("upgrade", "websocket").unwrap();
        ok.insert_header("connection", "Upgrade").unwrap();
        ok.insert_header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            .unwrap();
        assert!(completes_handshake(KEY.as_bytes(), &ok));
        let mut wrong = ok.clone();
        wrong.insert_header("sec-websocket-accept", "AAAA").unwrap();
        assert!(!completes_handshake(KEY.as_bytes(), &wrong));
        let mut h2c = ok.clone();
        h2c.insert_header("upgrade", "h2c").unwrap();
        assert!(!completes_handshake(KEY.as_bytes(), &h2c));
    }

    #[test]
    fn origins() {
        let h = |o: &[&str]| {
            let mut m = HeaderMap::new();
            for v in o {
                m.append(header::ORIGIN, HeaderValue::from_str(v).unwrap());
            }
            m
        };
        let own = "https://app.example.com";
        let extra = vec!["https://admin.example.com".to_string()];
        assert!(origin_allowed(&h(&[]), own, &extra));
        assert!(origin_allowed(&h(&[own]), own, &extra));
        assert!(origin_allowed(
            &h(&["https://admin.example.com"]),
            own,
            &extra
        ));
        assert!(!origin_allowed(&h(&["https://evil.example"]), own, &extra));
        assert!(!origin_allowed(&h(&["null"]), own, &extra));
        assert!(!origin_allowed(&h(&[own, own]), own, &extra));
    }
}
