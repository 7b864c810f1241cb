//! `App`: the state every request handler shares (config, store, keys,
//! sessions, mail, metrics), built once at start from a `Config`.
//!
//! Building it opens the store and loads (or creates) the keys; it does not
//! listen on anything. The servers that use it are assembled in `lib.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::clock::Clock;
use crate::config::{Config, Site, SiteId};
use crate::keys::Keys;
use crate::mail::{mailer_for, Mailer, Outbox};
use crate::metrics::{Metrics, RequestCounters};
use crate::pages::Pages;
use crate::ratelimit::RateLimiter;
use crate::session::{cookies, Sessions};

/// Sign-ins that may be waited on at once on one instance (each wait holds
/// a request open for up to 20 s); past it, a wait answers at once.
const MAX_WAITING: usize = 10_000;
use crate::store::{self, DynStore};

/// A configured site with what the hot path needs precomputed.
pub struct SiteRt {
    pub site: Site,
    pub session_cookie: String,
    pub pending_cookie: String,
    /// What the session and pending cookies are sealed for (their AEAD
    /// associated data, see [`cookies::seal_scope`]): a cookie of one site
    /// (or cookie domain) does not open on another.
    pub session_seal: String,
    pub pending_seal: String,
    pub proof_cookie: String,
    pub proof_seal: String,
    /// Behind a portal: the state of a handoff under way.
    pub handoff_cookie: String,
    pub handoff_seal: String,
    pub upstreams: crate::upstream::Upstreams,
    /// What the hot path inserts into every upstream request, built once.
    pub wire: Wire,
    /// `sesame_requests_total{site, outcome}` of this site.
    pub requests: RequestCounters,
    /// `sesame_upstream_response_seconds{site}` of this site.
    pub upstream_seconds: prometheus::Histogram,
}

/// This site's `X-Forwarded-Proto` and `X-Forwarded-Host` values, built once.
pub struct Wire {
    pub forwarded_proto: http::HeaderValue,
    pub forwarded_host: http::HeaderValue,
}

impl Wire {
    fn of(site: &Site) -> Wire {
        Wire {
            forwarded_proto: http::HeaderValue::from_static(
                if site.public_url.scheme() == "https" {
                    "https"
                } else {
                    "http"
                },
            ),
            // A validated host name is always a valid header value.
            forwarded_host: http::HeaderValue::from_str(&site.host)
                .unwrap_or(http::HeaderValue::from_static("")),
        }
    }
}

pub struct App {
    pub config: Config,
    pub sites: Vec<SiteRt>,
    pub store: DynStore,
    pub keys: Keys,
    pub sessions: Sessions,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    pub pages: Pages,
    pub mailer: Arc<dyn Mailer>,
    pub outbox: Outbox,
    pub email_limit: RateLimiter,
    pub client_limit: RateLimiter,
    /// Codes tried per address per day: each pending login allows a few
    /// tries, and a new one is one `POST /login` away.
    pub code_limit: RateLimiter,
    /// In memory, before any of the above: requests a client makes to
    /// endpoints that write to the store without a session.
    pub anonymous_limit: crate::ratelimit::LocalLimiter,
    /// In memory: passkey sign-in starts from everyone together (each
    /// stores a ceremony).
    pub passkey_start_limit: crate::ratelimit::LocalLimiter,
    /// In memory: waits for another device's decision, per client.
    pub wait_limit: crate::ratelimit::LocalLimiter,
    /// The asking browsers waiting here for another device's decision.
    pub waiters: crate::signin::cross_device::Waiters,
    /// When each device code was last polled (`slow_down`).
    pub device_polls: crate::signin::device::Polls,
    /// Content-Security-Policy of Sesame's own pages.
    pub csp: String,
    /// The WebAuthn relying party for passkeys.
    pub passkeys: crate::passkey::RelyingParty,
    /// False while the store is unreachable; kept by `probe_store`.
    pub store_up: Arc<AtomicBool>,
    /// True once this process is on its way out (it handed its sockets to a
    /// new one, or was told to stop): every response closes its connection,
    /// so clients reconnect, to the new process, between requests rather
    /// than lose one sent on a connection closed under it.
    pub draining: Arc<AtomicBool>,
    /// Turns true when this process closes its WebSocket tunnels (a stop,
    /// or the end of `server.drain_timeout`): each tunnel ends, is logged
    /// and counted off, before the process exits.
    pub close_tunnels: tokio::sync::watch::Sender<bool>,
    /// The portal's place in `sites` (the last), if there is one.
    pub portal: Option<SiteId>,
    /// Where `rd` may send a person: every site, and the portal.
    pub return_sites: Vec<Site>,
    /// The OpenID Connect provider, with a portal and clients configured.
    pub oidc: Option<crate::oidc::Provider>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Store(#[from] store::StoreError),
    #[error("{0}")]
    Mail(#[from] crate::mail::MailError),
    #[error("{0}")]
    Upstream(String),
}

impl App {
    /// Build the shared state. Must run inside a tokio runtime that outlives
    /// the app: the mail outbox worker is spawned on it.
    pub async fn build(config: Config, clock: Clock) -> Result<Arc<App>, BuildError> {
        let store = store::open(&config.store).await?;
        let keys = Keys::load(&store, config.key_grace, &clock).await?;
        let metrics = Arc::new(Metrics::new());
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("SESAME_COMMIT")])
            .set(1);
        let mailer = mailer_for(&config.mail)?;
        let outbox = Outbox::start(mailer.clone(), metrics.clone(), config.mail.timeout);
        // The portal, if any, goes last: `SiteId`s of the configured sites
        // stay their places in the file.
        let all: Vec<Site> = config
            .sites
            .iter()
            .chain(config.portal.as_ref())
            .cloned()
            .collect();
        let portal = config
            .portal
            .as_ref()
            .map(|_| SiteId::new(config.sites.len()));
        let mut sites: Vec<SiteRt> = Vec::with_capacity(all.len());
        for s in &all {
            sites.push(SiteRt {
                session_cookie: cookies::session_name(&config, s),
                pending_cookie: cookies::pending_name(s),
                session_seal: cookies::seal_scope(cookies::Kind::Session, s),
                pending_seal: cookies::seal_scope(cookies::Kind::Pending, s),
                proof_cookie: cookies::proof_name(s),
                proof_seal: cookies::seal_scope(cookies::Kind::Proof, s),
                handoff_cookie: cookies::handoff_name(s),
                handoff_seal: cookies::seal_scope(cookies::Kind::Handoff, s),
                upstreams: crate::upstream::Upstreams::new(
                    s,
                    &metrics.upstream_up,
                    &metrics.upstream_lookups,
                )
                .map_err(BuildError::Upstream)?,
                wire: Wire::of(s),
                requests: RequestCounters::new(
                    &metrics,
                    if sites.len() == config.sites.len() {
                        "portal"
                    } else {
                        &s.name
                    },
                ),
                upstream_seconds: metrics
                    .upstream_response_seconds
                    .with_label_values(&[&s.name]),
                site: s.clone(),
            });
        }
        let origins: Vec<&str> = all.iter().map(|s| s.origin.as_str()).collect();
        let csp = format!(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self' {}; frame-ancestors 'none'; base-uri 'none'",
            origins.join(" ")
        );
        // With a portal, passkeys are made and used there only.
        let passkeys =
            crate::passkey::RelyingParty::new(&config.rp_id, &config.rp_name, &all, |i| {
                portal.is_none_or(|p| p.index() == i)
            });
        let store_up = Arc::new(AtomicBool::new(true));
        let oidc = match (&config.portal, config.oidc_clients.is_empty()) {
            (Some(p), false) => Some(
                crate::oidc::Provider::load(
                    p.origin.clone(),
                    config.oidc_clients.clone(),
                    &store,
                    clock.now(),
                )
                .await?,
            ),
            _ => None,
        };
        Ok(Arc::new(App {
            sessions: Sessions::new(
                config.session.clone(),
                store.clone(),
                store_up.clone(),
                clock.clone(),
            )
            .timed(metrics.store_seconds.with_label_values(&["session_lookup"])),
            email_limit: RateLimiter::new(
                "email",
                config.rate_limit.window,
                config.rate_limit.per_email,
                store.clone(),
                clock.clone(),
            ),
            client_limit: RateLimiter::new(
                "client",
                config.rate_limit.window,
                config.rate_limit.per_client,
                store.clone(),
                clock.clone(),
            ),
            code_limit: RateLimiter::new(
                "code",
                std::time::Duration::from_secs(24 * 60 * 60),
                config.rate_limit.codes_per_email_per_day,
                store.clone(),
                clock.clone(),
            )
            .sliding(),
            anonymous_limit: crate::ratelimit::LocalLimiter::new(
                std::time::Duration::from_secs(60),
                config.rate_limit.anonymous_per_client_per_minute,
                clock.clone(),
            ),
            passkey_start_limit: crate::ratelimit::LocalLimiter::new(
                std::time::Duration::from_secs(60),
                config.rate_limit.passkey_starts_per_minute,
                clock.clone(),
            ),
            wait_limit: crate::ratelimit::LocalLimiter::new(
                std::time::Duration::from_secs(60),
                config.rate_limit.waits_per_client_per_minute,
                clock.clone(),
            ),
            waiters: crate::signin::cross_device::Waiters::new(MAX_WAITING),
            device_polls: Default::default(),
            config,
            sites,
            store,
            keys,
            clock,
            metrics,
            pages: Pages::new(),
            mailer,
            outbox,
            csp,
            passkeys,
            store_up,
            draining: Arc::new(AtomicBool::new(false)),
            close_tunnels: tokio::sync::watch::Sender::new(false),
            portal,
            return_sites: all,
            oidc,
        }))
    }

    /// The site that answers `host` (a `Host` header value, port ignored).
    pub fn site_for_host(&self, host: &str) -> Option<(SiteId, &SiteRt)> {
        let name = strip_port(host);
        self.sites
            .iter()
            .enumerate()
            .find(|(_, s)| s.site.host.eq_ignore_ascii_case(name))
            .map(|(i, s)| (SiteId::new(i), s))
    }

    /// The portal, if there is one.
    pub fn portal(&self) -> Option<&SiteRt> {
        self.portal.map(|p| self.site(p))
    }

    /// Is `id` the portal?
    pub fn is_portal(&self, id: SiteId) -> bool {
        self.portal == Some(id)
    }

    /// The configured site called `name` (not the portal).
    pub fn site_named(&self, name: &str) -> Option<(SiteId, &SiteRt)> {
        self.sites[..self.config.sites.len()]
            .iter()
            .enumerate()
            .find(|(_, s)| s.site.name == name)
            .map(|(i, s)| (SiteId::new(i), s))
    }

    /// The site `id` names (ids come from `site_for_host`, so it exists).
    pub fn site(&self, id: SiteId) -> &SiteRt {
        &self.sites[id.index()]
    }

    /// Open one of Sesame's cookies, reloading the keys first if it names
    /// one not loaded yet.
    pub async fn open_cookie(&self, name: &str, value: &str) -> Option<String> {
        match self.keys.try_open_cookie(name, value) {
            Ok(plain) => plain,
            Err(crate::keys::UnknownKid) => {
                // Boxed, as a rare store read (see `Sessions::check`).
                Box::pin(self.keys.reload_for_unknown(&self.store, self.clock.now())).await;
                self.keys.open_cookie(name, value)
            }
        }
    }

    /// Is `value` (a session cookie that did not open on `site`) a session
    /// cookie of another site or cookie domain? Asked only for cookies that
    /// failed, to count replays.
    pub fn sealed_elsewhere(&self, site: &SiteRt, value: &str) -> bool {
        // Sesame's session cookies are about 120 characters: longer values
        // are not worth an AES-GCM open per other site.
        if value.len() > 256 {
            return false;
        }
        self.sites
            .iter()
            .filter(|s| s.session_seal != site.session_seal)
            .any(|s| self.keys.open_cookie(&s.session_seal, value).is_some())
    }

    /// The signed assertion for `live` on site `site_id`, unless that
    /// site has `sign_assertion = false`.
    pub fn assertion(
        &self,
        site_id: SiteId,
        live: &crate::session::LiveSession,
    ) -> Option<Arc<crate::identity::Signed>> {
        let site = self.site(site_id);
        if !site.site.sign_assertion {
            return None;
        }
        crate::identity::assertion(&self.keys, &self.clock, site_id, &site.site, live)
    }

    /// Sign-in by email, with this app's store, keys, limits and config.
    pub fn sign_in(&self) -> crate::signin::SignIn<'_> {
        crate::signin::SignIn {
            store: &self.store,
            keys: &self.keys,
            clock: &self.clock,
            sessions: &self.sessions,
            metrics: &self.metrics,
            pages: &self.pages,
            outbox: &self.outbox,
            link: &self.config.magic_link,
            signup: &self.config.signup,
            limits: crate::signin::Limits {
                client: &self.client_limit,
                email: &self.email_limit,
                code: &self.code_limit,
            },
            waiters: &self.waiters,
            device: None,
        }
    }

    /// The passkey ceremonies, with this app's relying party and parts.
    pub fn ceremonies(&self) -> crate::passkey::Ceremonies<'_> {
        crate::passkey::Ceremonies {
            passkeys: &self.passkeys,
            config: &self.config,
            store: &self.store,
            keys: &self.keys,
            clock: &self.clock,
            metrics: &self.metrics,
            pages: &self.pages,
            outbox: &self.outbox,
            sign_in: self.sign_in(),
        }
    }

    /// Is this process on its way out (see `draining`)?
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Is the store reachable, as of the last probe?
    pub fn store_is_up(&self) -> bool {
        self.store_up.load(Ordering::Relaxed)
    }

    /// Probe the store once a second, forever, keeping `store_up` current.
    /// The store counts as down after two failed probes in a row (one slow
    /// answer under load must not turn sign-ins away), as up after one
    /// that succeeds.
    pub async fn probe_store(&self) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failed_before = false;
        loop {
            tick.tick().await;
            let timer = self
                .metrics
                .store_seconds
                .with_label_values(&["ping"])
                .start_timer();
            let ok = matches!(
                tokio::time::timeout(std::time::Duration::from_secs(1), self.store.ping()).await,
                Ok(Ok(()))
            );
            drop(timer);
            let up = ok || !failed_before;
            failed_before = !ok;
            if self.store_up.swap(up, Ordering::Relaxed) != up {
                if up {
                    tracing::warn!("store is reachable again");
                } else {
                    tracing::error!(
                        "store is unreachable; serving sessions verified before, for a while"
                    );
                }
            }
        }
    }

    /// Apply what the store says changed elsewhere.
    pub fn invalidate(&self, what: &crate::store::Invalidation) {
        use crate::store::Invalidation;
        if matches!(what, Invalidation::Keys | Invalidation::All) {
            self.keys.reload_wanted.notify_one();
        }
        self.sessions.invalidate(what);
    }

    /// Reload the keys when asked (a rotation, an unknown key id) and every
    /// minute (retiring old keys).
    pub async fn keep_keys_fresh(&self) {
        loop {
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(60),
                self.keys.reload_wanted.notified(),
            )
            .await;
            match self.keys.reload(&self.store, self.clock.now()).await {
                Ok(()) => tracing::debug!("keys reloaded"),
                Err(e) => tracing::warn!(error = %e, "could not reload keys"),
            }
            // A flood of unknown key ids costs at most four reloads a second.
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    /// Wake the browsers waiting here whose sign-in another instance
    /// decided: one read of all of them (called every second).
    pub async fn wake_decided(&self) {
        let ids = self.waiters.ids();
        if ids.is_empty() {
            return;
        }
        // Sign-ins asked by email, and of a signed-in phone: ids of both
        // kinds are random, so each wakes only its own.
        for decided in [
            self.store.decided_pending(&ids).await,
            self.store.decided_device_requests(&ids).await,
        ] {
            match decided {
                Ok(decided) => decided.iter().for_each(|id| self.waiters.wake(id)),
                Err(e) => {
                    tracing::debug!(error = %e, "could not read which waited-on sign-ins were decided")
                }
            }
        }
    }

    /// Set the gauges of live sessions and pending sign-ins from the store.
    pub async fn count_live(&self) {
        let timer = self
            .metrics
            .store_seconds
            .with_label_values(&["counts"])
            .start_timer();
        let counts = self.store.counts(self.clock.now()).await;
        drop(timer);
        match counts {
            Ok(c) => {
                self.metrics.sessions_live.set(c.sessions);
                self.metrics.pending_sign_ins.set(c.pending_sign_ins);
            }
            Err(e) => tracing::debug!(error = %e, "could not count live sessions"),
        }
    }

    /// Delete expired pending logins and count the unconfirmed ones.
    pub async fn sweep(&self) {
        self.sessions.sweep_cache();
        if let Err(e) = self
            .store
            .sweep_rate_limits(
                self.email_limit
                    .expired_before()
                    .min(self.client_limit.expired_before())
                    .min(self.code_limit.expired_before()),
            )
            .await
        {
            tracing::warn!(error = %e, "sweeping rate-limit windows failed");
        }
        // Used codes are kept a while after they expire: a second use is
        // still recognised (and revokes what the first made) that long.
        if let Err(e) = self.store.sweep_oidc(self.clock.now() - 3600).await {
            tracing::warn!(error = %e, "sweeping expired OIDC codes and tokens failed");
        }
        if let Err(e) = self.store.sweep_handoffs(self.clock.now()).await {
            tracing::warn!(error = %e, "sweeping expired handoff codes failed");
        }
        match self.store.sweep_pending(self.clock.now()).await {
            Ok(swept) => {
                self.metrics
                    .links_opened_unconfirmed
                    .inc_by(swept.unconfirmed);
                self.metrics
                    .cross_device
                    .with_label_values(&[crate::signin::cross_device::EMAIL, "expired"])
                    .inc_by(swept.uncollected);
            }
            Err(e) => tracing::warn!(error = %e, "sweeping expired sign-ins failed"),
        }
        match self.store.sweep_device_requests(self.clock.now()).await {
            Ok(uncollected) => {
                for kind in uncollected {
                    self.metrics
                        .cross_device
                        .with_label_values(&[kind.as_str(), "expired"])
                        .inc();
                }
            }
            Err(e) => tracing::warn!(error = %e, "sweeping expired device requests failed"),
        }
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}
