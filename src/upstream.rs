//! The apps behind one site: round robin over the upstreams that pass their
//! health check, TLS to them when configured, and the peer handed to Pingora.
//!
//! An upstream given by host name is looked up again before each round of
//! health checks, so an app that moves (a recreated container) is followed
//! without a restart; while a name cannot be looked up, its last address
//! stays in use.
//!
//! Health checks run in Sesame's background runtime (see `lib.rs`): a TCP
//! connect by default, or `GET <health_check>` expecting 200. An upstream
//! that fails is skipped until it passes again; if every upstream fails,
//! requests still go round robin (the app may be back before the next check,
//! and the person gets the 502 page otherwise).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::health_check::{HealthObserve, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::WrappedX509;
use prometheus::{IntCounterVec, IntGaugeVec};

use crate::config::{Site, UpstreamAddr};

/// TLS settings of the connections to one site's upstreams.
struct Tls {
    sni: String,
    ca: Option<Arc<[WrappedX509]>>,
}

pub struct Upstreams {
    lb: LoadBalancer<RoundRobin>,
    /// The address when there is only one, given as `ip:port`: no selection
    /// to make (it gets the requests whether it passes its check or not).
    only: Option<SocketAddr>,
    /// The entries as configured, each with its address in use now.
    entries: Mutex<Vec<Entry>>,
    /// What the load balancer takes at its next `update`.
    current: Current,
    site: String,
    up_gauge: IntGaugeVec,
    /// `sesame_upstream_lookups_total{site, upstream, result}`.
    lookups: IntCounterVec,
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

/// One `upstream` entry while running.
struct Entry {
    /// As configured, with the address in use now.
    conf: UpstreamAddr,
    /// Its name could not be looked up last time (warned once).
    failing: bool,
}

/// The addresses the load balancer is to use, as Pingora's discovery.
#[derive(Clone, Default)]
struct Current(Arc<Mutex<BTreeSet<Backend>>>);

impl Current {
    fn set(&self, addrs: impl Iterator<Item = SocketAddr>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = addrs
            .map(|a| Backend {
                addr: pingora::protocols::l4::socket::SocketAddr::Inet(a),
                weight: 1,
                ext: Default::default(),
            })
            .collect();
    }
}

#[async_trait]
impl ServiceDiscovery for Current {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let set = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Ok((set, HashMap::new()))
    }
}

impl Upstreams {
    /// Build from a validated site; `Err` only if the CA file changed into
    /// something unreadable since the config was checked.
    pub fn new(
        site: &Site,
        up_gauge: &IntGaugeVec,
        lookups: &IntCounterVec,
    ) -> Result<Upstreams, String> {
        let current = Current::default();
        current.set(site.upstreams.iter().map(|u| u.addr));
        let mut lb =
            LoadBalancer::<RoundRobin>::from_backends(Backends::new(Box::new(current.clone())));
        // The discovery above answers at once, from memory.
        match lb.update().now_or_never() {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(format!("site {}: upstreams: {e}", site.name)),
            None => return Err(format!("site {}: upstreams not set up", site.name)),
        }
        let tls = match &site.upstream_tls {
            None => None,
            Some(t) => Some(Tls {
                sni: t.sni.clone(),
                ca: match &t.ca {
                    Some(path) => Some(load_ca(path)?),
                    None => None,
                },
            }),
        };
        for a in &site.upstreams {
            up_gauge
                .with_label_values(&[&site.name, &a.addr.to_string()])
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
                [UpstreamAddr { name: None, addr }] => Some(*addr),
                _ => None,
            },
            entries: Mutex::new(
                site.upstreams
                    .iter()
                    .map(|conf| Entry {
                        conf: conf.clone(),
                        failing: false,
                    })
                    .collect(),
            ),
            current,
            site: site.name.clone(),
            up_gauge: up_gauge.clone(),
            lookups: lookups.clone(),
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

    /// Whether any upstream is given by host name (and so has to be looked
    /// up again from time to time).
    pub fn has_names(&self) -> bool {
        self.lock_entries().iter().any(|e| e.conf.name.is_some())
    }

    fn lock_entries(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Look up the host names among the upstreams again. An entry stays at
    /// its address while the name still gives it (names that rotate their
    /// answers do not move it every time), and moves to the first address
    /// given when it does not; a name that cannot be looked up keeps its
    /// address. Only a change touches the load balancer (health of unchanged
    /// addresses is kept). Look-ups are made one at a time and wait for the
    /// system resolver's own timeout, so a dead resolver holds up this and
    /// nothing else.
    pub async fn refresh(&self) {
        let names: Vec<(usize, (String, u16))> = self
            .lock_entries()
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.conf.name.clone().map(|n| (i, n)))
            .collect();
        let mut found = Vec::with_capacity(names.len());
        for (i, (host, port)) in names {
            let answer = match tokio::net::lookup_host((host.as_str(), port)).await {
                Ok(addrs) => {
                    let addrs: Vec<SocketAddr> = addrs.collect();
                    if addrs.is_empty() {
                        Err("no address".to_string())
                    } else {
                        Ok(addrs)
                    }
                }
                Err(e) => Err(e.to_string()),
            };
            found.push((i, host, answer));
        }
        let (before, after) = {
            let mut entries = self.lock_entries();
            let before: BTreeSet<SocketAddr> = entries.iter().map(|e| e.conf.addr).collect();
            for (i, host, answer) in found {
                let e = &mut entries[i];
                let name = format!("{host}:{}", e.conf.addr.port());
                let result = if answer.is_ok() { "ok" } else { "failed" };
                self.lookups
                    .with_label_values(&[&self.site, &name, result])
                    .inc();
                match answer {
                    Ok(addrs) => {
                        if e.failing {
                            e.failing = false;
                            tracing::info!(site = %self.site, upstream = %host, "upstream host name can be looked up again");
                        }
                        if !addrs.contains(&e.conf.addr) {
                            tracing::info!(site = %self.site, upstream = %host, from = %e.conf.addr, to = %addrs[0], "upstream moved to another address");
                            e.conf.addr = addrs[0];
                        }
                    }
                    Err(error) if !e.failing => {
                        e.failing = true;
                        tracing::warn!(site = %self.site, upstream = %host, %error, "upstream host name cannot be looked up; keeping the last address until it can");
                    }
                    Err(error) => {
                        tracing::debug!(site = %self.site, upstream = %host, %error, "upstream host name still cannot be looked up")
                    }
                }
            }
            let after: BTreeSet<SocketAddr> = entries.iter().map(|e| e.conf.addr).collect();
            (before, after)
        };
        if before == after {
            return;
        }
        for gone in before.difference(&after) {
            let _ = self
                .up_gauge
                .remove_label_values(&[&self.site, &gone.to_string()]);
        }
        for new in after.difference(&before) {
            self.up_gauge
                .with_label_values(&[&self.site, &new.to_string()])
                .set(1);
        }
        self.current.set(after.into_iter());
        if let Err(e) = self.lb.update().await {
            tracing::error!(site = %self.site, error = %e, "upstream addresses not updated");
        }
    }
}

/// The CA certificates in a PEM file, as Pingora verifies an upstream with.
fn load_ca(path: &std::path::Path) -> Result<Arc<[WrappedX509]>, String> {
    let cas: Vec<WrappedX509> = crate::tls::read_certificates(path)?
        .into_iter()
        .map(|c| {
            // Each one parsed already in read_certificates: this cannot fail.
            WrappedX509::new(c.as_ref().to_vec(), |raw| {
                pingora::utils::tls::parse_x509(raw)
            })
        })
        .collect();
    Ok(Arc::from(cas))
}
