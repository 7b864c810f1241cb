//! A process on its way out, replaced by a reload or an upgrade or told to
//! stop, finishes what it has in hand and then exits, at once.
//!
//! After handing the listening sockets over, Pingora accepts for 5 s more
//! (both processes do), then stops accepting and sleeps its grace period
//! (`server.drain_timeout`) before it ends its runtimes and whatever they
//! still run. Left alone, that is an hour of an idle process, or, with a
//! short grace period, WebSocket tunnels and long requests cut in the
//! middle. A [`Drain`] cuts the sleep short instead: once the listeners
//! are closed and nothing it waits for is left, the process exits.
//!
//! After a handover it waits for requests, WebSocket tunnels and the mail
//! outbox; on a stop, for requests and mail only (tunnels would have to
//! end anyway: no new process takes them over).

use std::time::{Duration, Instant};

use prometheus::IntGauge;

use crate::access_log::AccessLog;

/// How long Pingora accepts after a handover (its `CLOSE_TIMEOUT`).
const STILL_ACCEPTING: Duration = Duration::from_secs(5);

/// After the listeners close, how long a request already on its way (its
/// connection accepted, its headers not yet read) has to be counted.
const ARRIVING: Duration = Duration::from_secs(1);

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
            Why::Handover => "upgrade",
            Why::Stop => "stop",
        }
    }
}

/// What a going process waits for: the gauges that count it.
pub struct Drain {
    /// `sesame_requests_in_flight` (tunnels included).
    pub requests: IntGauge,
    /// `sesame_websockets_open`.
    pub websockets: IntGauge,
    /// `sesame_mail_outbox_depth`: emails queued or being sent, which
    /// live in this process only.
    pub mail: IntGauge,
    /// Written out before the exit.
    pub access_log: Option<AccessLog>,
}

impl Drain {
    /// Watch in a thread of its own, which exits the process once nothing
    /// it waits for is left. (Pingora ends it at its grace period, if that
    /// comes first.)
    pub fn start(self, why: Why) {
        let spawned = std::thread::Builder::new()
            .name("sesame-drain".into())
            .spawn(move || self.watch(why));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot watch what is in hand; exiting at the grace period");
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
        if let Some(log) = &self.access_log {
            log.flush(Duration::from_secs(1));
        }
        std::process::exit(0);
    }

    /// Until nothing `why` waits for is left, or SIGINT.
    async fn wait(&self, mut why: Why) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        let closed = match why {
            Why::Handover => STILL_ACCEPTING,
            Why::Stop => Duration::ZERO,
        };
        let checks_from = tokio::time::Instant::now() + closed + ARRIVING;
        let since = Instant::now();
        let mut said = false;
        loop {
            tokio::select! {
                _ = next(&mut term) => {
                    if why == Why::Handover {
                        tracing::info!("stop: SIGTERM; WebSocket tunnels are closed rather than waited for");
                        why = Why::Stop;
                    }
                }
                _ = next(&mut int) => {
                    tracing::info!("{}: SIGINT; exiting now", why.label());
                    return;
                }
                _ = tokio::time::sleep_until(checks_from.max(tokio::time::Instant::now() + POLL)) => {}
            }
            if tokio::time::Instant::now() < checks_from {
                continue;
            }
            let websockets = self.websockets.get().max(0);
            let requests = (self.requests.get() - websockets).max(0);
            let mail = self.mail.get().max(0);
            let waiting = requests + mail + if why == Why::Handover { websockets } else { 0 };
            if waiting == 0 {
                break;
            }
            if !said {
                tracing::info!(
                    requests,
                    websockets,
                    mail,
                    "{}: stopped accepting; waiting for what is in hand",
                    why.label()
                );
                said = true;
            }
        }
        tracing::info!(
            after = ?since.elapsed(),
            "{}: nothing left in hand; exiting",
            why.label()
        );
    }
}
