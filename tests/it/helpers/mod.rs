//! Test rig: a real gateway on free ports, a real upstream that records what
//! it receives, and a real SMTP server that captures the mail. Tests read the
//! link and code out of the captured mail and follow them as a person would.
//!
//! By part: `mail.rs` (SMTP sink), `upstream.rs`, `store.rs`, `rig.rs` (the
//! gateway in this process), `processes.rs` (gateways as processes), `ca.rs`
//! (certificates); here, ports and processes shared by all.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailin_embedded::{response, Handler, Server, SslConfig};
use reqwest::redirect::Policy;
use sesame::clock::Clock;
use sesame::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A port for a server a test starts later, or for an address where nothing
/// listens. Taken from 20000..32000, below the kernel's ephemeral range
/// (32768 and up here and on CI), where every `bind(":0")` and every outgoing
/// connection of this process lands, and never twice in one run: the port
/// cannot be handed to another test's sink or app in the time between this
/// check and the gateway's bind. (Binding ":0" and letting go raced that
/// way: a gateway once lost its port to an SMTP sink and the test's request
/// got the sink's greeting.) The bind skips ports another process holds.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Start where another run of this binary (another checkout) is unlikely to be.
    let offset = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (offset + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN)
}

/// A TLS server side with `cert`/`key` (PEM files).
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls;
    let chain = rustls::pki_types::pem::PemObject::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::pem::PemObject::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A process a test runs beside the gateway (nginx, Caddy), killed and
/// reaped when dropped.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl KillOnDrop {
    /// Wait up to 20 s until something listens on 127.0.0.1:`port`; false
    /// if the process exited or the time ran out.
    pub fn listens(&mut self, port: u16) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return true;
            }
            if let Ok(Some(_)) = self.0.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

mod ca;
mod mail;
mod processes;
mod rig;
mod store;
mod upstream;

pub use ca::*;
pub use mail::*;
pub use processes::*;
pub use rig::*;
pub use store::*;
pub use upstream::*;
