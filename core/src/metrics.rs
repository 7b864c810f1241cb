//! Every Prometheus metric Sesame exports, in one place. Served on the admin
//! listener as `/metrics`; all names start with `sesame_`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// What became of one request, the `outcome` label of
/// `sesame_requests_total{site, outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Public,
    Unauthenticated,
    LoginRedirect,
    Denied,
    StepUp,
    BadPath,
    StoreUnavailable,
    Endpoint,
    UpstreamDown,
    UpstreamTimeout,
    Error,
    /// No site for the host (counted under site `-`).
    UnknownSite,
}

impl Outcome {
    pub const ALL: [Outcome; 13] = [
        Outcome::Allowed,
        Outcome::Public,
        Outcome::Unauthenticated,
        Outcome::LoginRedirect,
        Outcome::Denied,
        Outcome::StepUp,
        Outcome::BadPath,
        Outcome::StoreUnavailable,
        Outcome::Endpoint,
        Outcome::UpstreamDown,
        Outcome::UpstreamTimeout,
        Outcome::Error,
        Outcome::UnknownSite,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Public => "public",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::LoginRedirect => "login_redirect",
            Outcome::Denied => "denied",
            Outcome::StepUp => "step_up",
            Outcome::BadPath => "bad_path",
            Outcome::StoreUnavailable => "store_unavailable",
            Outcome::Endpoint => "endpoint",
            Outcome::UpstreamDown => "upstream_down",
            Outcome::UpstreamTimeout => "upstream_timeout",
            Outcome::Error => "error",
            Outcome::UnknownSite => "unknown_site",
        }
    }

    /// The outcome of a proxy failure answered with `code`.
    pub fn of_failure(code: u16) -> Outcome {
        match code {
            502 => Outcome::UpstreamDown,
            504 => Outcome::UpstreamTimeout,
            _ => Outcome::Error,
        }
    }
}

/// What a rate limit counted: the `key` label of
/// `sesame_rate_limited_total` and of the `rate_limited` audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Sign-in links asked for one address.
    Email,
    /// Sign-in links asked for from one client address.
    Client,
    /// Codes tried for one address in a day.
    Code,
    /// Anonymous writing requests from one client address, in memory.
    Anonymous,
}

impl LimitKind {
    pub const ALL: [LimitKind; 4] = [
        LimitKind::Email,
        LimitKind::Client,
        LimitKind::Code,
        LimitKind::Anonymous,
    ];

    pub fn label(self) -> &'static str {
        match self {
            LimitKind::Email => "email",
            LimitKind::Client => "client",
            LimitKind::Code => "code",
            LimitKind::Anonymous => "anonymous",
        }
    }
}

/// `sesame_requests_total` of one site, a counter per [`Outcome`] resolved
/// once: counting a request is an index, not a label lookup.
pub struct RequestCounters([IntCounter; Outcome::ALL.len()]);

impl RequestCounters {
    pub fn new(metrics: &Metrics, site: &str) -> RequestCounters {
        RequestCounters(
            Outcome::ALL.map(|o| metrics.requests.with_label_values(&[site, o.label()])),
        )
    }

    pub fn count(&self, outcome: Outcome) {
        self.0[outcome as usize].inc();
    }
}

pub struct Metrics {
    registry: Registry,
    /// Proxied and intercepted requests by site and outcome
    /// (`allowed`, `public`, `login_redirect`, `unauthenticated`, `denied`, `endpoint`).
    pub requests: IntCounterVec,
    pub auth_check_seconds: Histogram,
    pub mail_sent: IntCounter,
    pub mail_failed: IntCounter,
    /// Link and code verifications by method and result.
    pub verifications: IntCounterVec,
    pub sessions_created: IntCounter,
    pub sessions_revoked: IntCounter,
    /// Requests refused by a rate limit, by what was limited (`email`, `client`).
    pub rate_limited: IntCounterVec,
    pub confirm_views: IntCounter,
    /// Confirm pages opened whose link expired unused: suspected mail-scanner hits.
    pub links_opened_unconfirmed: IntCounter,
    pub login_requests: IntCounter,
    /// Passkey registrations by result (`ok`, `refused`, ...).
    pub passkey_registrations: IntCounterVec,
    /// Passkey sign-ins by result.
    pub passkey_authentications: IntCounterVec,
    /// Sign-ins refused because a signature counter went backwards.
    pub passkey_counter_regressions: IntCounter,
    /// 1 while an upstream passes its health check, by site and address.
    pub upstream_up: IntGaugeVec,
    /// Look-ups of upstreams given by host name, by site, `host:port` and
    /// result (`ok`, `failed`), one per entry every `health_interval`.
    pub upstream_lookups: IntCounterVec,
    /// Expiry (Unix seconds) of each certificate Sesame presents, by file.
    pub tls_cert_expiry: IntGaugeVec,
    /// Certificate reloads by result (`ok`, `failed`).
    pub tls_reloads: IntCounterVec,
    /// Requests that asked for an upgrade, by what became of them:
    /// `websocket` (tunnel), `declined` (the app said no), `dropped` (not a
    /// WebSocket handshake: sent on as a plain request), `cross_origin`
    /// (403), `bad_answer` (the app's 101 does not complete the handshake).
    pub upgrades: IntCounterVec,
    /// Session cookies of another site (or cookie domain) presented to a
    /// site, by the site they were presented to: treated as anonymous.
    pub sessions_elsewhere: IntCounterVec,
    /// Portal handoffs by result: `issued` (the portal sent a code to a
    /// site), `ok` (a site took one and made a session), `gone` (unknown,
    /// used or expired), `wrong_site`, `wrong_browser` (no or another state
    /// cookie), `ended` (the portal session ended first).
    pub handoffs: IntCounterVec,
    /// OpenID Connect authorization codes issued, by client.
    pub oidc_authorizations: IntCounterVec,
    /// Tokens issued by the token endpoint, by grant type.
    pub oidc_tokens: IntCounterVec,
    /// OAuth/OIDC errors answered, by their `error` code.
    pub oidc_errors: IntCounterVec,
    /// Back-channel logout tokens posted, by result (`ok`, `refused`, `failed`).
    pub oidc_backchannel: IntCounterVec,
    /// Sign-ins decided on another device, by `kind` (`email`: the link
    /// opened elsewhere) and `result` (`approved`, `wrong_number`,
    /// `cancelled`: "this wasn't me", `expired`: too late, or approved and
    /// never collected by the asking browser).
    pub cross_device: IntCounterVec,
    /// Emails queued about a sign-in from a browser the account had not used.
    pub new_browser_notices: IntCounter,
    /// Access log lines dropped because the queue to the writing thread
    /// was full (the disk could not keep up).
    pub access_log_dropped: IntCounter,
    /// `sesame_build_info{version, commit}`, 1 (set by the binary).
    pub build_info: IntGaugeVec,
    /// `sesame_config_info{hash}`, 1: which config file text is running.
    pub config_info: IntGaugeVec,
    /// Reloads (`SIGHUP`) by result: `ok` (this process took over with the
    /// file), `failed` (the new process refused the file and exited).
    /// Carried from process to process across reloads and upgrades.
    pub config_reloads: IntCounterVec,
    /// Sessions neither expired nor revoked, in the whole store.
    pub sessions_live: IntGauge,
    /// Sign-ins asked for (a link or code sent) and not yet used or expired.
    pub pending_sign_ins: IntGauge,
    /// Emails queued or being sent.
    pub mail_outbox: IntGauge,
    /// Requests being answered by this process, tunnels included.
    pub requests_in_flight: IntGauge,
    /// WebSocket tunnels open through this process.
    pub websockets_open: IntGauge,
    /// From taking an email off the queue to its delivery or last failure.
    pub mail_delivery_seconds: Histogram,
    /// From sending a request to the app to its response header, per site.
    pub upstream_response_seconds: HistogramVec,
    /// Store round trips by operation (`session_lookup`, `ping`, `counts`).
    pub store_seconds: HistogramVec,
}

/// The `result` values of `sesame_cross_device_total`.
pub const CROSS_DEVICE_RESULTS: [&str; 4] = ["approved", "wrong_number", "cancelled", "expired"];

/// The `result` values of `sesame_handoffs_total`.
pub const HANDOFF_RESULTS: [&str; 6] = [
    "issued",
    "ok",
    "gone",
    "wrong_site",
    "wrong_browser",
    "ended",
];

/// One of what a gauge counts, held: added when made, taken off when
/// dropped, however its holder ends.
#[derive(Debug)]
pub struct Held(IntGauge);

impl Held {
    pub fn new(gauge: &IntGauge) -> Held {
        gauge.inc();
        Held(gauge.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("static metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("static metric definition");
    registry
        .register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("static metric definition");
    registry
        .register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

/// Buckets for round trips to the store and the apps: 0.5 ms to 10 s.
const ROUND_TRIP_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("static metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

impl Metrics {
    /// Build the metric set. The definitions are static, so the `expect`s
    /// here can only fire on a programming error, never on input.
    /// Count one request refused by a rate limit.
    pub fn limited(&self, kind: LimitKind) {
        self.rate_limited.with_label_values(&[kind.label()]).inc();
    }

    pub fn new() -> Metrics {
        let registry = Registry::new();
        let auth_check_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "sesame_auth_check_seconds",
                "Time to decide a protected request",
            )
            .buckets(vec![
                1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 1e-3, 1e-2, 0.1,
            ]),
        )
        .expect("static metric definition");
        registry
            .register(Box::new(auth_check_seconds.clone()))
            .expect("metric registered once");
        let metrics = Metrics {
            requests: counter_vec(
                &registry,
                "sesame_requests_total",
                "Requests by site and outcome",
                &["site", "outcome"],
            ),
            auth_check_seconds,
            mail_sent: counter(
                &registry,
                "sesame_magic_links_sent_total",
                "Sign-in emails handed to the mail server",
            ),
            mail_failed: counter(
                &registry,
                "sesame_magic_links_failed_total",
                "Sign-in emails that could not be sent",
            ),
            verifications: counter_vec(
                &registry,
                "sesame_verifications_total",
                "Link and code verifications by method and result",
                &["method", "result"],
            ),
            sessions_created: counter(
                &registry,
                "sesame_sessions_created_total",
                "Sessions created",
            ),
            sessions_revoked: counter(
                &registry,
                "sesame_sessions_revoked_total",
                "Sessions revoked",
            ),
            rate_limited: counter_vec(
                &registry,
                "sesame_rate_limited_total",
                "Requests refused by a rate limit",
                &["key"],
            ),
            confirm_views: counter(
                &registry,
                "sesame_magic_link_confirm_views_total",
                "Confirm pages shown",
            ),
            links_opened_unconfirmed: counter(
                &registry,
                "sesame_magic_links_opened_unconfirmed_total",
                "Links whose confirm page was opened but that expired unused (suspected scanners)",
            ),
            login_requests: counter(
                &registry,
                "sesame_login_requests_total",
                "Sign-in links asked for",
            ),
            passkey_registrations: counter_vec(&registry, "sesame_passkey_registrations_total", "Passkey registrations by result", &["result"]),
            passkey_authentications: counter_vec(&registry, "sesame_passkey_authentications_total", "Passkey sign-ins by result", &["result"]),
            passkey_counter_regressions: counter(
                &registry,
                "sesame_passkey_sign_count_regressions_total",
                "Passkey sign-ins refused because the signature counter went backwards (possible cloned authenticator)",
            ),
            upstream_up: gauge_vec(
                &registry,
                "sesame_upstream_up",
                "1 while an upstream passes its health check",
                &["site", "upstream"],
            ),
            upstream_lookups: counter_vec(
                &registry,
                "sesame_upstream_lookups_total",
                "Look-ups of upstreams given by host name, by result",
                &["site", "upstream", "result"],
            ),
            tls_cert_expiry: gauge_vec(
                &registry,
                "sesame_tls_cert_expiry_seconds",
                "Expiry (Unix time) of each certificate Sesame presents",
                &["cert"],
            ),
            tls_reloads: counter_vec(
                &registry,
                "sesame_tls_cert_reloads_total",
                "Certificate reloads after the files changed, by result",
                &["result"],
            ),
            upgrades: counter_vec(
                &registry,
                "sesame_upgrades_total",
                "Requests that asked for a protocol upgrade, by what became of them",
                &["result"],
            ),
            sessions_elsewhere: counter_vec(
                &registry,
                "sesame_sessions_elsewhere_total",
                "Session cookies made for another site presented here (treated as signed out)",
                &["site"],
            ),
            handoffs: counter_vec(
                &registry,
                "sesame_handoffs_total",
                "Portal handoffs: codes issued to sites, and what became of each taken",
                &["result"],
            ),
            oidc_authorizations: counter_vec(
                &registry,
                "sesame_oidc_authorizations_total",
                "OpenID Connect authorization codes issued, by client",
                &["client"],
            ),
            oidc_tokens: counter_vec(
                &registry,
                "sesame_oidc_tokens_total",
                "Tokens issued by the OpenID Connect token endpoint, by grant type",
                &["grant_type"],
            ),
            oidc_errors: counter_vec(
                &registry,
                "sesame_oidc_errors_total",
                "OAuth and OpenID Connect errors answered, by error code",
                &["error"],
            ),
            oidc_backchannel: counter_vec(
                &registry,
                "sesame_oidc_backchannel_logouts_total",
                "Back-channel logout tokens posted to OIDC clients, by result",
                &["result"],
            ),
            cross_device: counter_vec(
                &registry,
                "sesame_cross_device_total",
                "Sign-ins decided on another device, by kind and result",
                &["kind", "result"],
            ),
            new_browser_notices: counter(
                &registry,
                "sesame_new_browser_notices_total",
                "Emails about a sign-in from a browser the account had not used",
            ),
            access_log_dropped: counter(
                &registry,
                "sesame_access_log_dropped_total",
                "Access log lines dropped: the queue to the writing thread was full (or the thread had stopped)",
            ),
            build_info: gauge_vec(
                &registry,
                "sesame_build_info",
                "The running version (1, labelled with version and commit)",
                &["version", "commit"],
            ),
            config_info: gauge_vec(
                &registry,
                "sesame_config_info",
                "The config running (1, labelled with the SHA-256 of the file, first 16 hex digits)",
                &["hash"],
            ),
            config_reloads: counter_vec(
                &registry,
                "sesame_config_reloads_total",
                "Config reloads (SIGHUP) by result: ok (the new file runs), failed (refused; the old one runs on)",
                &["result"],
            ),
            sessions_live: gauge(
                &registry,
                "sesame_sessions_live",
                "Sessions neither expired nor revoked, in the store (every instance's)",
            ),
            pending_sign_ins: gauge(
                &registry,
                "sesame_pending_sign_ins",
                "Sign-in links and codes sent and not yet used or expired",
            ),
            mail_outbox: gauge(
                &registry,
                "sesame_mail_outbox_depth",
                "Emails queued or being sent",
            ),
            requests_in_flight: gauge(
                &registry,
                "sesame_requests_in_flight",
                "Requests being answered by this process, WebSocket tunnels included",
            ),
            websockets_open: gauge(
                &registry,
                "sesame_websockets_open",
                "WebSocket tunnels open through this process",
            ),
            mail_delivery_seconds: histogram(
                &registry,
                "sesame_mail_delivery_seconds",
                "Time to hand an email to the mail server, retries included",
                &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
            ),
            upstream_response_seconds: histogram_vec(
                &registry,
                "sesame_upstream_response_seconds",
                "Time from sending a request to the app to its response header",
                &["site"],
                &ROUND_TRIP_BUCKETS,
            ),
            store_seconds: histogram_vec(
                &registry,
                "sesame_store_query_seconds",
                "Store round trips by operation",
                &["op"],
                &ROUND_TRIP_BUCKETS,
            ),
            registry,
        };
        // CPU, memory, open files, start time: the standard process_* set.
        #[cfg(target_os = "linux")]
        let _ = metrics.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        metrics.start_at_zero();
        metrics
    }

    /// Every series of a fixed label set exists from the start, at 0: a
    /// dashboard's `rate()` sees the first event, and an absent series means
    /// a renamed one rather than "none yet".
    fn start_at_zero(&self) {
        let zero = |v: &IntCounterVec, labels: &[&str]| {
            v.with_label_values(labels);
        };
        for result in ["ok", "invalid", "expired", "gone", "not_allowed"] {
            zero(&self.verifications, &["magic_link", result]);
        }
        for result in HANDOFF_RESULTS {
            zero(&self.handoffs, &[result]);
        }
        for result in CROSS_DEVICE_RESULTS {
            for kind in ["email", "qr", "device"] {
                zero(&self.cross_device, &[kind, result]);
            }
        }
        zero(&self.oidc_tokens, &["authorization_code"]);
        for result in [
            "ok",
            "invalid",
            "wrong",
            "gone",
            "no_pending",
            "not_allowed",
        ] {
            zero(&self.verifications, &["code", result]);
        }
        for key in LimitKind::ALL {
            zero(&self.rate_limited, &[key.label()]);
        }
        for result in [
            "websocket",
            "declined",
            "dropped",
            "cross_origin",
            "bad_answer",
        ] {
            zero(&self.upgrades, &[result]);
        }
        for result in ["ok", "failed"] {
            zero(&self.tls_reloads, &[result]);
        }
        for result in ["ok", "refused"] {
            zero(&self.passkey_registrations, &[result]);
        }
        for result in ["ok", "refused", "bad_request", "error"] {
            zero(&self.passkey_authentications, &[result]);
        }
        for op in ["session_lookup", "ping", "counts"] {
            self.store_seconds.with_label_values(&[op]);
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_its_own_counter_and_label() {
        let metrics = Metrics::new();
        let counters = RequestCounters::new(&metrics, "wiki");
        for (i, o) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(o as usize, i, "{o:?} is at its own index");
            counters.count(o);
        }
        counters.count(Outcome::Denied);
        let text = metrics.render();
        for o in Outcome::ALL {
            let want = if o == Outcome::Denied { 2 } else { 1 };
            let series = format!(
                "sesame_requests_total{{outcome=\"{}\",site=\"wiki\"}} {want}",
                o.label()
            );
            assert!(text.contains(&series), "{series} in:\n{text}");
        }
    }
}
