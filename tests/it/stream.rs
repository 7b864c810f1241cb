//! Bodies stream through the gateway: the first bytes of an upload reach the
//! app, and the first bytes of a download reach the client, before the rest
//! exists; 100 MB each way through a real `sesame run` process leave its
//! peak memory where it was.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::helpers::*;

const CHUNK: usize = 64 * 1024;
static ZEROS: [u8; CHUNK] = [0; CHUNK];
const BIG: usize = 100 * 1024 * 1024;

/// Rendezvous between the test's client and its app.
#[derive(Default)]
struct Gates {
    /// The app has seen the first bytes of an upload.
    upload_started: Notify,
    /// The client has seen the first bytes of a download.
    download_started: Notify,
}

/// An app that counts what is POSTed ("received N") and answers
/// `GET /public/download` with `BIG` bytes, the first chunk alone until the
/// client has it.
async fn bulk_app(gates: Arc<Gates>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let gates = gates.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; CHUNK];
                let mut head = Vec::new();
                let end = loop {
                    let n = match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    head.extend_from_slice(&buf[..n]);
                    if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
                if text.starts_with("post") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    let mut got = head.len() - end;
                    let mut told = false;
                    while got < len {
                        if got > 0 && !told {
                            gates.upload_started.notify_one();
                            told = true;
                        }
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got += n,
                        }
                    }
                    let body = format!("received {got}");
                    let _ = sock
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                } else {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {BIG}\r\nConnection: close\r\n\r\n"
                    );
                    if sock.write_all(head.as_bytes()).await.is_err()
                        || sock.write_all(&ZEROS).await.is_err()
                    {
                        return;
                    }
                    gates.download_started.notified().await;
                    for _ in 1..BIG / CHUNK {
                        if sock.write_all(&ZEROS).await.is_err() {
                            return;
                        }
                    }
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_upload_and_download_stream_through_with_flat_memory() {
    let gates = Arc::new(Gates::default());
    let app = bulk_app(gates.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
admin_listen = "127.0.0.1:0"
threads = 1
[store]
url = "sqlite://{}/sesame.db"
[mail]
transport = "console"
[[site]]
name = "Bulk"
public_url = "http://localhost"
upstream = ["{app}"]
public_paths = ["/public"]
read_timeout = "10s"
"#,
        dir.path().display()
    );
    let sesame = Instance::start(dir.path(), "bulk", &config);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let warm = client
        .post(sesame.url("/public/warm-up"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(warm.text().await.unwrap(), "received 1");
    let before = sesame.peak_rss();

    // Upload: the second chunk is only produced once the app has the first.
    let first =
        futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(&ZEROS)) });
    let gate = gates.clone();
    let rest = futures::stream::once(async move {
        tokio::time::timeout(Duration::from_secs(10), gate.upload_started.notified())
            .await
            .expect("the app saw the first chunk before the upload ended: it streams");
    })
    .flat_map(|_| {
        futures::stream::iter(
            (1..BIG / CHUNK).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(&ZEROS))),
        )
    });
    let r = client
        .post(sesame.url("/public/upload"))
        .header("Content-Length", BIG.to_string())
        .body(reqwest::Body::wrap_stream(first.chain(rest)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), format!("received {BIG}"));

    // Download: the app sends one chunk and waits for the client to have it.
    let r = client
        .get(sesame.url("/public/download"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut got = 0usize;
    let mut told = false;
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .expect("the first chunk arrives while the app waits: it streams")
    {
        got += chunk.unwrap().len();
        if !told {
            gates.download_started.notify_one();
            told = true;
        }
    }
    assert_eq!(got, BIG);

    let after = sesame.peak_rss();
    let grown = after.saturating_sub(before);
    eprintln!(
        "sesame peak RSS: {} MiB before, {} MiB after 2 x 100 MiB",
        before >> 20,
        after >> 20
    );
    assert!(
        grown < 20 << 20,
        "peak memory grew by {} MiB moving 2 x 100 MiB: bodies are buffered",
        grown >> 20
    );
}
