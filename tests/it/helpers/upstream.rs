//! The recording upstream: a real HTTP app that answers and remembers
//! what each request carried.

use super::*;

#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    pub fn headers_named(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        Self::start_with(None).await
    }

    /// The same app behind TLS with `cert`/`key`.
    pub async fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Upstream {
        Self::start_with(Some(tls_acceptor(cert, key))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rec = seen.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let rec = rec.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => Self::serve(sock, rec).await,
                        Some(acceptor) => {
                            if let Ok(sock) = acceptor.accept(sock).await {
                                Self::serve(sock, rec).await
                            }
                        }
                    }
                });
            }
        });
        Upstream { addr, seen }
    }

    /// Record one request and answer it.
    async fn serve<S>(mut sock: S, rec: Arc<Mutex<Vec<Seen>>>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let Ok(n) = sock.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let mut lines = head.split("\r\n");
            let mut first = lines.next().unwrap_or("").split(' ');
            let method = first.next().unwrap_or("").to_string();
            let path = first.next().unwrap_or("").to_string();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| {
                    l.split_once(':')
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                })
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut have = buf.len() - head_end - 4;
            while have < len {
                let Ok(n) = sock.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    break;
                }
                have += n;
            }
            rec.lock().unwrap().push(Seen {
                method,
                path: path.clone(),
                headers,
            });
            let body = format!("upstream saw {path}");
            let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream saw a request")
    }
}

/// A WebSocket echo app that greets first and records who the handshake
/// said was signed in.
pub async fn websocket_echo(emails: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let emails = emails.clone();
            tokio::spawn(async move {
                // The callback's signature is tungstenite's, large error and all.
                #[allow(clippy::result_large_err)]
                let record =
                    |req: &tungstenite::handshake::server::Request,
                     resp: tungstenite::handshake::server::Response| {
                        let email = req
                            .headers()
                            .get("remote-email")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        emails.lock().unwrap().push(email);
                        Ok(resp)
                    };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(sock, record).await else {
                    return;
                };
                if ws.send(tungstenite::Message::text("hello")).await.is_err() {
                    return;
                }
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_close() || ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}
