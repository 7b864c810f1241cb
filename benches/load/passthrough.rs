//! The reference of the load harness: a plain Pingora passthrough proxy, same
//! Pingora version and build profile as Sesame, no auth, nothing added. What
//! Sesame costs is measured against this.
//!
//! `passthrough LISTEN UPSTREAM [THREADS [nosteal]]`, e.g.
//! `passthrough 127.0.0.1:7001 127.0.0.1:7000 1`; `nosteal` turns off
//! Pingora's work stealing (one single-threaded runtime per thread).

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;

/// The same allocator as Sesame's binary, set up the same way (transparent
/// huge pages off, `sesame::disable_huge_pages`), so that the comparison is
/// of the proxying work only.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Passthrough {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    sesame::disable_huge_pages();
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: passthrough LISTEN UPSTREAM [THREADS [nosteal]]";
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let Ok(upstream) = upstream.parse::<SocketAddr>() else {
        eprintln!("{usage}: UPSTREAM must be host:port");
        std::process::exit(2);
    };
    let threads = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(1);
    let conf = ServerConf {
        threads,
        work_stealing: args.get(4).map(String::as_str) != Some("nosteal"),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Passthrough { upstream },
        "passthrough",
    );
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever();
}
