//! The small app `sesame demo` puts behind the gateway: it shows the
//! identity headers it received, so a newcomer sees what an app gets.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

pub struct DemoApp;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[async_trait]
impl ServeHttp for DemoApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let get = |n: &str| {
            // Identity values are UTF-8 bytes (names beyond ASCII too).
            req.headers
                .get(n)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default()
        };
        let rows: String = [
            "Remote-User",
            "Remote-Email",
            "Remote-Name",
            "Remote-Groups",
            "Sesame-Auth-Method",
        ]
        .iter()
        .map(|n| {
            format!(
                "<tr><th>{n}</th><td><code>{}</code></td></tr>",
                escape(&get(n))
            )
        })
        .collect();
        let who = get("Remote-Email");
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Demo app</title>\
             <link rel=\"stylesheet\" href=\"/.sesame/static/sesame.css\"></head><body><main class=\"card\">\
             <h1>Hello{}</h1><p>This is the demo app behind Sesame. It has no login of its own; \
             it trusts the headers Sesame sends:</p><table>{rows}</table>\
             <p class=\"muted\">Path: <code>{}</code></p>\
             <form method=\"post\" action=\"/.sesame/logout\"><button type=\"submit\">Sign out</button></form>\
             </main></body></html>",
            if who.is_empty() { String::new() } else { format!(", {}", escape(&who)) },
            escape(req.uri.path()),
        )
        .into_bytes();
        Response::builder()
            .status(200)
            .header("content-type", "text/html; charset=utf-8")
            .header("content-length", body.len())
            .body(body)
            .unwrap_or_default()
    }
}
