//! WebSocket upgrades pass through after the auth check, both ways, with the
//! identity headers on the handshake the app sees.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_passes_through_after_the_auth_check() {
    let emails = Arc::new(Mutex::new(Vec::new()));
    let echo = websocket_echo(emails.clone()).await;
    let app = spawn_with(Options {
        upstreams: Some(vec![echo]),
        ..Default::default()
    })
    .await;
    let session = cookies_set(&app.sign_in(&browser(), "ws@example.com").await)["sesame"].clone();
    let url = format!("ws://localhost:{}/socket", app.port);

    // Not signed in: the handshake is refused before it reaches the app.
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected a 401, got {:?}", other.map(|(_, r)| r.status())),
    }
    assert!(emails.lock().unwrap().is_empty());

    // Signed in: many sockets, each greeted by the app and echoing both ways.
    for round in 0..20 {
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("cookie", format!("sesame={session}").parse().unwrap());
        let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.status(), 101);
        let first = ws.next().await.expect("greeting").expect("greeting frame");
        assert_eq!(first, Message::text("hello"), "round {round}");
        for i in 0..20 {
            let m = format!("message {i} of round {round}");
            ws.send(Message::text(m.clone())).await.unwrap();
            let back = ws.next().await.expect("echo").expect("echo frame");
            assert_eq!(back, Message::text(m));
        }
        let big = vec![7u8; 256 * 1024];
        ws.send(Message::binary(big.clone())).await.unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_data().as_ref(), &big[..]);
        ws.close(None).await.unwrap();
    }
    let seen = emails.lock().unwrap().clone();
    assert_eq!(seen.len(), 20);
    assert!(seen.iter().all(|e| e == "ws@example.com"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_to_a_down_app_gets_502_not_a_hang() {
    let closed: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let app = spawn_with(Options {
        upstreams: Some(vec![closed]),
        ..Default::default()
    })
    .await;
    let url = format!("ws://localhost:{}/public/socket", app.port);
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 502),
        other => panic!("expected a 502, got {:?}", other.map(|(_, r)| r.status())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_declines_the_upgrade_is_answered_as_is() {
    // Answers every request, upgrade or not, with a plain 403 and a body.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 7\r\nConnection: close\r\n\r\nno sock")
                    .await;
            });
        }
    });
    let app = spawn_with(Options {
        upstreams: Some(vec![addr]),
        ..Default::default()
    })
    .await;
    let url = format!("ws://localhost:{}/public/socket", app.port);
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 403);
            assert_eq!(r.body().as_deref(), Some(&b"no sock"[..]));
        }
        other => panic!(
            "expected the app's 403, got {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
}
