//! The admin listener: `/metrics` (Prometheus), `/healthz` (process up),
//! `/readyz` (store and mail transport reachable). Never on a public port.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::app::App;

pub struct Admin {
    pub app: Arc<App>,
}

fn reply(status: u16, content_type: &str, body: String) -> Response<Vec<u8>> {
    let body = body.into_bytes();
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/metrics" => reply(200, "text/plain; version=0.0.4", self.app.metrics.render()),
            "/healthz" => reply(200, "text/plain", "ok\n".into()),
            "/readyz" => {
                let store =
                    tokio::time::timeout(Duration::from_secs(2), self.app.store.ping()).await;
                let mail =
                    tokio::time::timeout(Duration::from_secs(3), self.app.mailer.check()).await;
                let store_ok = matches!(store, Ok(Ok(())));
                let mail_ok = matches!(mail, Ok(Ok(())));
                let body = format!(
                    "store: {}\nmail: {}\n",
                    if store_ok { "ok" } else { "unavailable" },
                    if mail_ok { "ok" } else { "unavailable" }
                );
                reply(
                    if store_ok && mail_ok { 200 } else { 503 },
                    "text/plain",
                    body,
                )
            }
            _ => reply(404, "text/plain", "not found\n".into()),
        }
    }
}
