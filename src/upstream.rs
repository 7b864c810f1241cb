//! The apps behind one site: round robin over the upstreams that pass their
//! health check, TLS to them when configured, and the peer handed to Pingora.
//!
//! Health checks run in Sesame's background runtime (see `lib.rs`): a TCP
//! connect by default, or `GET <health_check>` expecting 200. An upstream
//! that fails is skipped until it passes again; if every upstream fails,
//! requests still go round robin (the app may be back before the next check,
//! and the person gets the 502 page otherwise).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::lb::health_check::{HealthObserve, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, LoadBalancer};
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::WrappedX509;
use prometheus::IntGaugeVec;

use crate::config::Site;

/// TLS settings of the connections to one site's upstreams.
struct Tls {
    sni: String,
    ca: Option<Arc<[WrappedX509]>>,
}

pub struct Upstreams {
    lb: LoadBalancer<RoundRobin>,
    /// The address when there is only one: no selection to make (it gets
    /// the requests whether it passes its check or not).
    only: Option<std::net::SocketAddr>,
    tls: Option<Tls>,
    connect_timeout: Duration,
    read_timeout: Duration,
    pub health_interval: Duration,
}

/// Keeps `sesame_upstream_up{site, upstream}` and the log in step with the
/// health checks.
struct Observer {
    site: String,
    gauge: IntGaugeVec,
}

#[async_trait]
impl HealthObserve for Observer {
    async fn observe(&self, target: &Backend, healthy: bool) {
        let addr = target.addr.to_string();
        self.gauge
            .with_label_values(&[&self.site, &addr])
            .set(i64::from(healthy));
        if healthy {
            tracing::info!(site = %self.site, upstream = %addr, "upstream passes its health check again");
        } else {
            tracing::warn!(site = %self.site, upstream = %addr, "upstream fails its health check; skipped until it passes");
        }
    }
}

impl Upstreams {
    /// Build from a validated site; `Err` only if the CA file changed into
    /// something unreadable since the config was checked.
    pub fn new(site: &Site, up_gauge: &IntGaugeVec) -> Result<Upstreams, String> {
        let mut lb = LoadBalancer::<RoundRobin>::try_from_iter(site.upstreams.iter().copied())
            .map_err(|e| format!("site {}: upstreams: {e}", site.name))?;
        let tls = match &site.upstream_tls {
            None => None,
            Some(t) => Some(Tls {
                sni: t.sni.clone(),
                ca: match &t.ca {
                    Some(path) => Some(crate::tls::load_ca(path)?),
                    None => None,
                },
            }),
        };
        for a in &site.upstreams {
            up_gauge
                .with_label_values(&[&site.name, &a.to_string()])
                .set(1);
        }
        let observer = Box::new(Observer {
            site: site.name.clone(),
            gauge: up_gauge.clone(),
        });
        // A check must not take longer than the interval between checks.
        let check_timeout = site.connect_timeout.min(site.health_interval);
        match &site.health_check {
            Some(path) => {
                let host = tls.as_ref().map_or(site.host.as_str(), |t| t.sni.as_str());
                let mut hc = HttpHealthCheck::new(host, tls.is_some());
                let uri = path
                    .parse::<http::Uri>()
                    .map_err(|e| format!("site {}: health_check: {e}", site.name))?;
                hc.req.set_uri(uri);
                hc.req
                    .insert_header("user-agent", "sesame-health-check")
                    .map_err(|e| e.to_string())?;
                hc.peer_template.options.connection_timeout = Some(check_timeout);
                hc.peer_template.options.read_timeout =
                    Some(site.read_timeout.min(site.health_interval));
                if let Some(t) = &tls {
                    hc.peer_template.options.ca = t.ca.clone();
                }
                hc.health_changed_callback = Some(observer);
                lb.set_health_check(Box::new(hc));
            }
            None => {
                let mut hc = match &tls {
                    Some(t) => {
                        let mut hc = TcpHealthCheck::new_tls(&t.sni);
                        hc.peer_template.options.ca = t.ca.clone();
                        hc
                    }
                    None => TcpHealthCheck::new(),
                };
                hc.peer_template.options.connection_timeout = Some(check_timeout);
                hc.health_changed_callback = Some(observer);
                lb.set_health_check(hc);
            }
        }
        Ok(Upstreams {
            lb,
            only: match site.upstreams.as_slice() {
                [one] => Some(*one),
                _ => None,
            },
            tls,
            connect_timeout: site.connect_timeout,
            read_timeout: site.read_timeout,
            health_interval: site.health_interval,
        })
    }

    /// The next healthy upstream (any upstream if none is healthy).
    pub fn peer(&self) -> Option<HttpPeer> {
        let addr = match self.only {
            Some(addr) => addr,
            None => {
                let backend = self
                    .lb
                    .select(b"", 256)
                    .or_else(|| self.lb.select_with(b"", 256, |_, _| true))?;
                *backend.addr.as_inet()?
            }
        };
        let mut peer = match &self.tls {
            Some(t) => {
                let mut p = HttpPeer::new(addr, true, t.sni.clone());
                p.options.ca = t.ca.clone();
                p
            }
            None => HttpPeer::new(addr, false, String::new()),
        };
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.total_connection_timeout = Some(self.connect_timeout);
        peer.options.read_timeout = Some(self.read_timeout);
        Some(peer)
    }

    /// One round of health checks over this site's upstreams.
    pub async fn check(&self) {
        self.lb.backends().run_health_check(false).await;
    }
}
