//! A process on its way out, replaced by a reload or an upgrade or told to
//! stop, finishes what it has in hand and then exits, at once.
//!
//! After handing the listening sockets over, Pingora accepts for 5 s more
//! (both processes do), then stops accepting and sleeps its grace period
//! before it ends its runtimes and whatever they still run. A [`Drain`]
//! decides instead, and exits the process as soon as it may:
//!
//! - after a handover it waits for WebSocket tunnels until
//!   `server.drain_timeout`, then closes them; on a stop it closes them at
//!   once (no new process takes them over). A closed tunnel ends its
//!   request, so it is logged and counted like any other.
//! - requests and the mail outbox (held in this process only) are waited
//!   for up to 20 s: a client that sends or reads a byte a minute does not
//!   hold the process.
//!
//! Pingora's grace period (`drain_timeout` and 10 s) is only a backstop.

use std::time::Duration;

use prometheus::IntGauge;

/// How long Pingora accepts after a handover (its `CLOSE_TIMEOUT`).
const STILL_ACCEPTING: Duration = Duration::from_secs(5);

/// After the listeners close, how long a request already on its way (its
/// connection accepted, its headers not yet read) has to be counted.
const ARRIVING: Duration = Duration::from_secs(1);

/// The longest requests and mail are waited for: anything real is done
/// well within it, and a client that sends or reads a byte a minute does
/// not hold the process (a stop stays well within systemd's 30 s).
const REQUESTS_LIMIT: Duration = Duration::from_secs(20);

/// How long closed tunnels have to be logged and counted off.
const CLOSING: Duration = Duration::from_secs(2);

/// How often the wait is told of in the log.
const PROGRESS: Duration = Duration::from_secs(60);

const POLL: Duration = Duration::from_millis(50);

/// The next delivery of `signal` (never, without a handler).
async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Why this process goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// A new process has the listening sockets (a reload or an upgrade).
    Handover,
    /// `SIGTERM`.
    Stop,
}

impl Why {
    fn label(self) -> &'static str {
        match self {
            Why::Handover => "handed over",
            Why::Stop => "stop",
        }
    }
}

/// What a going process waits for, and what it does last.
pub struct Drain {
    /// `sesame_requests_in_flight` (tunnels included).
    pub requests: IntGauge,
    /// `sesame_websockets_open`.
    pub websockets: IntGauge,
    /// `sesame_mail_outbox_depth`: emails queued or being sent, which
    /// live in this process only.
    pub mail: IntGauge,
    /// `server.drain_timeout`: the longest tunnels are waited for.
    pub timeout: Duration,
    /// Ends every WebSocket tunnel (`App::close_tunnels`).
    pub close_tunnels: Box<dyn Fn() + Send>,
    /// Last things before the exit (session activity, the access log).
    pub before_exit: Box<dyn FnOnce() + Send>,
}

/// What is in hand: requests (tunnels not counted), tunnels, mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InHand {
    requests: i64,
    websockets: i64,
    mail: i64,
}

impl Drain {
    /// Watch in a thread of its own, which exits the process once nothing
    /// it waits for is left. (Pingora ends it a little after
    /// `drain_timeout`, if the watch cannot.)
    pub fn start(self, why: Why) {
        let spawned = std::thread::Builder::new()
            .name("sesame-drain".into())
            .spawn(move || self.watch(why));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot watch what is in hand; exiting at the grace period");
        }
    }

    fn in_hand(&self) -> InHand {
        // Requests first: a tunnel that ends between the two reads can
        // then only make requests look more, never fewer.
        let all = self.requests.get();
        let websockets = self.websockets.get().max(0);
        InHand {
            requests: (all - websockets).max(0),
            websockets,
            mail: self.mail.get().max(0),
        }
    }

    fn watch(self, why: Why) {
        // Its own small runtime, for the signals: a SIGTERM to a process
        // draining after a handover (`systemctl stop` signals every process
        // of the unit) makes it stop waiting for tunnels; SIGINT, for
        // nothing. Pingora's handlers no longer listen by now.
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(self.wait(why)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch what is in hand; exiting at the grace period");
                return;
            }
        }
        (self.before_exit)();
        std::process::exit(0);
    }

    /// Until nothing `why` waits for is left, or SIGINT.
    async fn wait(&self, mut why: Why) {
        use tokio::signal::unix::{signal, SignalKind};
        use tokio::time::Instant;
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        let closed = match why {
            Why::Handover => STILL_ACCEPTING,
            Why::Stop => Duration::ZERO,
        };
        let began = Instant::now();
        let checks_from = began + closed + ARRIVING;
        let requests_until = began + closed + REQUESTS_LIMIT;
        let tunnels_until = began + closed + self.timeout;
        // When the tunnels were told to close.
        let mut closing: Option<Instant> = None;
        let mut told = None;
        if why == Why::Stop {
            (self.close_tunnels)();
            closing = Some(began);
        }
        loop {
            tokio::select! {
                _ = next(&mut term) => {
                    if why == Why::Handover {
                        tracing::info!("stop: SIGTERM; WebSocket tunnels are closed rather than waited for");
                        why = Why::Stop;
                        (self.close_tunnels)();
                        closing.get_or_insert(Instant::now());
                    }
                }
                _ = next(&mut int) => {
                    tracing::info!("{}: SIGINT; exiting now", why.label());
                    return;
                }
                _ = tokio::time::sleep_until(checks_from.max(Instant::now() + POLL)) => {}
            }
            let now = Instant::now();
            if now < checks_from {
                continue;
            }
            if closing.is_none() && now >= tunnels_until {
                tracing::info!(
                    websockets = self.in_hand().websockets,
                    "{}: server.drain_timeout is over; closing the WebSocket tunnels",
                    why.label()
                );
                (self.close_tunnels)();
                closing = Some(now);
            }
            let h = self.in_hand();
            // Closed tunnels are waited for only until they are logged.
            let tunnels_wait = match closing {
                None => h.websockets > 0,
                Some(at) => h.websockets > 0 && now < at + CLOSING,
            };
            let requests_wait = (h.requests > 0 || h.mail > 0) && now < requests_until;
            if !tunnels_wait && !requests_wait {
                if h == (InHand {
                    requests: 0,
                    websockets: 0,
                    mail: 0,
                }) {
                    tracing::info!(
                        after = ?began.elapsed(),
                        "{}: nothing left in hand; exiting",
                        why.label()
                    );
                } else {
                    tracing::warn!(
                        requests = h.requests,
                        websockets = h.websockets,
                        mail = h.mail,
                        "{}: exiting with these still in hand (past their time)",
                        why.label()
                    );
                }
                return;
            }
            if told.is_none_or(|t: Instant| now >= t + PROGRESS) {
                tracing::info!(
                    requests = h.requests,
                    websockets = h.websockets,
                    mail = h.mail,
                    "{}: stopped accepting; waiting for what is in hand",
                    why.label()
                );
                told = Some(now);
            }
        }
    }
}
