//! Sesame: a passwordless authentication gateway on Pingora.
//!
//! This crate root assembles servers from a validated [`config::Config`]:
//! [`run`] for the `sesame run` / `sesame demo` commands (blocks until a
//! signal), [`start`] for tests and embedding (returns a handle that stops
//! it). Both use the same path, so tests exercise what operators run.

pub use sesame_core::{
    client_addr, clock, config, email, identity, keys, magic_link, mail, metrics, oidc, pages,
    passkey, path, random, ratelimit, return_to, session, signin, store, tls,
};

pub mod access_log;
pub mod admin;
pub mod admin_cli;
pub mod app;
mod backchannel;
pub mod demo_app;
pub mod doctor;
mod drain;
pub mod endpoints;
pub mod forward_auth;
pub mod gateway;
pub mod handover;
mod listening;
pub mod policy;
pub mod running_config;
pub mod upstream;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;
use tokio::sync::watch;

use crate::app::App;
use crate::clock::Clock;
use crate::config::Config;

/// What to run besides the gateway.
#[derive(Clone, Default)]
pub struct Options {
    pub clock: Clock,
    /// Also serve the built-in demo app on this address.
    pub demo_app: Option<SocketAddr>,
    /// What `SIGUSR2` starts to take over from this process (`sesame
    /// run`); none: the signal is ignored.
    pub successor: Option<handover::Successor>,
    /// Take the listening sockets over from this running process
    /// (`--upgrade-from`) instead of binding them.
    pub upgrade_from: Option<u32>,
    /// The config file's text, if read from one: its hash is
    /// `sesame_config_info{hash}`, and it is written down for `sesame
    /// check-config` (see [`running_config`]).
    pub config_text: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot start: {0}")]
    Build(#[from] app::BuildError),
    #[error("cannot start the background runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot load TLS certificates: {0}")]
    Tls(String),
    #[error("cannot upgrade: {0}")]
    Upgrade(String),
    #[error("cannot start the access log: {0}")]
    AccessLog(String),
}

/// A gateway running in this process.
pub struct Running {
    pub app: Arc<App>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    /// Every address the gateway listens on, to be free again after `stop`.
    addrs: Vec<SocketAddr>,
}

impl Running {
    /// Stop listening and wait until the server has shut down and its ports
    /// can be bound again.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        let Some(t) = self.thread.take() else {
            return;
        };
        let _ = t.join();
        // Pingora's quick shutdown returns without waiting for its runtimes'
        // worker threads, which drop the listening sockets as they wind down:
        // wait for that (a restart in the same process binds the same ports).
        for &a in &self.addrs {
            if !within(Duration::from_secs(10), || check_free(a).is_ok()) {
                tracing::warn!(addr = %a, "port still bound 10 s after the stop");
            }
        }
    }
}

/// Ticks every `every`, the first one `every` from now; a late tick delays
/// the next ones rather than bunching them.
fn ticks_after(every: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Poll `ok` every 10 ms for up to `limit`; whether it came true.
fn within(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    ok()
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Prepared {
    server: Server,
    app: Arc<App>,
    background: tokio::runtime::Runtime,
    /// The gateway's access log, if any (written out before an exit).
    access_log: Option<access_log::AccessLog>,
}

fn check_free(addr: SocketAddr) -> Result<(), StartError> {
    TcpListener::bind(addr)
        .map(drop)
        .map_err(|error| StartError::Listen { addr, error })
}

/// Every address a gateway with `config` listens on (port 0, a port the
/// system picks, left out: nothing can be checked there).
fn listen_addrs(config: &Config, opts: &Options) -> Vec<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = config.listen.clone();
    addrs.extend(config.tls.iter().map(|t| t.listen));
    addrs.push(config.admin_listen);
    addrs.extend(opts.demo_app);
    addrs.retain(|a| a.port() != 0);
    addrs
}

/// `work_stealing`: Pingora's runtime flavour for the services (see
/// [`start`] for why it is not always the config's).
fn prepare(config: Config, opts: &Options, work_stealing: bool) -> Result<Prepared, StartError> {
    match opts.upgrade_from {
        // The running process holds them: they come from it.
        // The running process holds them and hands them over; an address
        // new in this config must be free, or the handover would leave
        // nothing serving there.
        Some(from) => {
            handover::same_socket(&config.upgrade_socket).map_err(StartError::Upgrade)?;
            handover::check_socket_dir(&config.upgrade_socket).map_err(StartError::Upgrade)?;
            let listening = listening::Listening::read();
            for a in listen_addrs(&config, opts) {
                if let Err(e) = check_free(a) {
                    if listening.held_by(from, a) == Some(false) {
                        return Err(e);
                    }
                }
            }
        }
        None => {
            for a in listen_addrs(&config, opts) {
                check_free(a)?;
            }
        }
    }
    let background = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sesame-bg")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let app = background.block_on(App::build(config, opts.clock.clone()))?;
    if let Some(text) = &opts.config_text {
        let hash = &crate::session::hash_id(text)[..16];
        app.metrics.config_info.with_label_values(&[hash]).set(1);
    }
    match opts.upgrade_from {
        Some(_) => handover::carry_reloads(&app.metrics.config_reloads),
        None => {
            // Both results shown from the start, at 0.
            for result in ["ok", "failed"] {
                app.metrics.config_reloads.with_label_values(&[result]);
            }
        }
    }
    {
        let app = app.clone();
        background.spawn(async move { app.probe_store().await });
    }
    {
        // Revocations and changes made by other instances (PostgreSQL).
        let app = app.clone();
        background.spawn(async move {
            let app = &app;
            app.store
                .feed_invalidations(&|what| app.invalidate(&what))
                .await;
        });
    }
    // The portal (last, if any) has no app behind it.
    for i in 0..app.config.sites.len() {
        // Health checks of each site's upstreams; the first after one
        // interval: apps started together with Sesame (the demo app) get
        // the time to listen.
        let every = app.sites[i].upstreams.health_interval;
        {
            let app = app.clone();
            background.spawn(async move {
                let mut tick = ticks_after(every);
                loop {
                    tick.tick().await;
                    app.sites[i].upstreams.check().await;
                }
            });
        }
        // Upstreams given by host name are looked up again as often, in a
        // task of their own (a slow resolver must not hold up the checks).
        if app.sites[i].upstreams.has_names() {
            let app = app.clone();
            background.spawn(async move {
                let mut tick = ticks_after(every);
                loop {
                    tick.tick().await;
                    app.sites[i].upstreams.refresh().await;
                }
            });
        }
    }
    {
        // Session activity, written once a second in one transaction.
        let app = app.clone();
        background.spawn(async move {
            let mut tick = ticks_after(Duration::from_secs(1));
            loop {
                tick.tick().await;
                app.sessions.write_activity().await;
            }
        });
    }
    if app.oidc.is_some() {
        // Back-channel logout to OIDC clients, once a second.
        let app = app.clone();
        background.spawn(async move {
            let http = backchannel::client();
            let mut tick = ticks_after(Duration::from_secs(1));
            loop {
                tick.tick().await;
                // A process on its way out leaves the store's shared work
                // to the one that took over (it knows the config now).
                if !app.is_draining() {
                    backchannel::send_due(&app, &http).await;
                }
            }
        });
    }
    {
        // Rotations, retirements, and key ids seen before they were loaded.
        let app = app.clone();
        background.spawn(async move { app.keep_keys_fresh().await });
    }
    {
        let app = app.clone();
        background.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                if !app.is_draining() {
                    app.sweep().await;
                }
            }
        });
    }
    {
        // The gauges of live sessions and pending sign-ins.
        let app = app.clone();
        background.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(15));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                app.count_live().await;
            }
        });
    }
    {
        // A sign-in approved on another instance reaches the browser
        // waiting here within a second.
        let app = app.clone();
        background.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                app.wake_decided().await;
            }
        });
    }

    // Certificates before the handover: a bad one must leave the running
    // process serving.
    let mut tls_listeners = Vec::new();
    for t in &app.config.tls {
        let certs = Arc::new(tls::Certs::load(&t.certs).map_err(StartError::Tls)?);
        let mut settings = pingora::listeners::tls::TlsSettings::intermediate("", "")
            .map_err(|e| StartError::Tls(e.to_string()))?;
        settings.set_cert_resolver(certs.clone());
        if t.http2 {
            settings.enable_h2();
        }
        tls_listeners.push((t.listen, certs, settings));
    }

    let access_log = match &app.config.access_log {
        Some(target) => Some(
            access_log::AccessLog::open(
                target,
                app.sites.iter().map(|s| s.site.name.clone()).collect(),
                app.metrics.access_log_dropped.clone(),
            )
            .map_err(StartError::AccessLog)?,
        ),
        None => None,
    };

    let conf = ServerConf {
        threads: app.config.threads,
        work_stealing,
        // Pingora's grace period, between closing the listeners and ending
        // the runtimes, is a backstop: `drain` ends the process once
        // nothing is left in hand, and closes tunnels at drain_timeout.
        grace_period_seconds: Some(app.config.drain_timeout.as_secs() + 10),
        graceful_shutdown_timeout_seconds: Some(5),
        upgrade_sock: app.config.upgrade_socket.to_string_lossy().into_owned(),
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade: opts.upgrade_from.is_some(),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    if let Some(from) = opts.upgrade_from {
        // Everything that can fail has been built: only now is the running
        // process asked to let go. Bootstrap waits for its sockets.
        handover::ask_for_sockets(&app.config.upgrade_socket, from).map_err(StartError::Upgrade)?;
    }
    server.bootstrap();
    if let Some(from) = opts.upgrade_from {
        tracing::info!(from, "upgrade: took the listening sockets over");
    }
    if let Some(text) = &opts.config_text {
        running_config::record(&app.config.upgrade_socket, text);
    }

    let mut proxy = Service::new(
        "sesame gateway".to_string(),
        handover::Lingering {
            inner: Arc::new(pingora::proxy::http_proxy(
                &server.configuration,
                gateway::Gateway::new(app.clone()).with_access_log(access_log.clone()),
            )),
            linger: Duration::from_millis(500),
        },
    );
    for a in &app.config.listen {
        proxy.add_tcp(&a.to_string());
    }
    for (listen, certs, settings) in tls_listeners {
        for (cert, not_after) in certs.expiries() {
            app.metrics
                .tls_cert_expiry
                .with_label_values(&[&cert.display().to_string()])
                .set(not_after);
        }
        proxy.add_tls_with_settings(&listen.to_string(), None, settings);
        let app = app.clone();
        let every = app.config.tls_reload_interval;
        background.spawn(async move { reload_certs(&app, &certs, every).await });
    }
    server.add_service(proxy);

    let mut admin = Service::new(
        "sesame admin".to_string(),
        admin::Admin { app: app.clone() },
    );
    admin.add_tcp(&app.config.admin_listen.to_string());
    admin.threads = Some(1);
    server.add_service(admin);

    if let Some(addr) = opts.demo_app {
        let mut demo = Service::new("sesame demo app".to_string(), demo_app::DemoApp);
        demo.add_tcp(&addr.to_string());
        demo.threads = Some(1);
        server.add_service(demo);
    }
    Ok(Prepared {
        server,
        app,
        background,
        access_log,
    })
}

/// Swap in certificates whose files changed (a renewal), without a restart.
async fn reload_certs(app: &App, certs: &tls::Certs, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for r in certs.reload_changed() {
            match r {
                tls::Reload::Unchanged => {}
                tls::Reload::Reloaded { cert, not_after } => {
                    let name = cert.display().to_string();
                    tracing::info!(cert = %name, not_after, "certificate reloaded");
                    app.metrics.tls_reloads.with_label_values(&["ok"]).inc();
                    app.metrics
                        .tls_cert_expiry
                        .with_label_values(&[&name])
                        .set(not_after);
                }
                tls::Reload::Failed { cert, error } => {
                    tracing::warn!(cert = %cert.display(), %error, "changed certificate not loaded; the previous one stays in use");
                    app.metrics.tls_reloads.with_label_values(&["failed"]).inc();
                }
            }
        }
    }
}

/// Shuts the server down when the watch turns true, or on SIGTERM (graceful)
/// and SIGINT (fast) when `signals` is set. With `signals`, `SIGUSR2`
/// starts a successor and `SIGQUIT` hands it the sockets (see
/// [`handover`]).
struct Shutdown {
    rx: watch::Receiver<bool>,
    signals: bool,
    successor: Option<handover::Successor>,
    upgrade_socket: std::path::PathBuf,
    /// [`App::draining`], set as this process starts to go.
    draining: Arc<std::sync::atomic::AtomicBool>,
    /// The successor `SIGUSR2` started (0: none), named to the service
    /// manager as the main process when it takes over.
    successor_pid: std::sync::atomic::AtomicU32,
    /// `sesame_config_reloads_total`.
    reloads: prometheus::IntCounterVec,
    /// What to wait for before exiting, once this process goes (taken then).
    drain: std::sync::Mutex<Option<drain::Drain>>,
}

impl Shutdown {
    /// This process goes: answers close their connections, and the process
    /// exits once what it has in hand is done.
    fn drain(&self, why: drain::Why) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let drain = self.drain.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(d) = drain {
            d.start(why);
        }
    }

    /// `SIGUSR2` (`why`: upgrade) or `SIGHUP` (reload): start the binary at
    /// this process's path, to take over once it has read the config.
    fn start_successor(&self, why: &'static str) {
        let Some(s) = &self.successor else {
            tracing::warn!(why, "signal ignored: this process cannot start a successor");
            return;
        };
        match s.start(&self.upgrade_socket, why, &self.reloads, &self.draining) {
            Ok(pid) => {
                self.successor_pid
                    .store(pid, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(why, pid, exe = %s.exe.display(), config = %s.config.display(), "upgrade: started the new process");
            }
            Err(e) => {
                if why == "reload" {
                    self.reloads.with_label_values(&["failed"]).inc();
                }
                tracing::error!(why, error = %e, "upgrade not started; this process goes on serving")
            }
        }
    }
}

#[async_trait]
impl ShutdownSignalWatch for Shutdown {
    async fn recv(&self) -> ShutdownSignal {
        let mut rx = self.rx.clone();
        if !self.signals {
            let _ = rx.wait_for(|stop| *stop).await;
            return ShutdownSignal::FastShutdown;
        }
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut quit), Ok(mut usr2), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
            signal(SignalKind::user_defined2()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = rx.wait_for(|stop| *stop).await;
            return ShutdownSignal::FastShutdown;
        };
        loop {
            tokio::select! {
                _ = term.recv() => {
                    self.drain(drain::Why::Stop);
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = int.recv() => return ShutdownSignal::FastShutdown,
                _ = rx.wait_for(|stop| *stop) => return ShutdownSignal::FastShutdown,
                _ = quit.recv() => {
                    // Without a process waiting for them, handing the
                    // sockets over would only stop this one.
                    let successor = self.successor_pid.load(std::sync::atomic::Ordering::Relaxed);
                    let waiting = handover::successor_waiting(&self.upgrade_socket, successor);
                    if waiting.is_ok() {
                        tracing::info!("upgrade: handing the listening sockets over; finishing open requests");
                        self.drain(drain::Why::Handover);
                        // systemd (NotifyAccess=main) hears it from the
                        // main process: the child is the main one now.
                        if successor != 0 {
                            handover::notify(&format!("MAINPID={successor}"));
                        }
                        return ShutdownSignal::GracefulUpgrade;
                    }
                    if let Err(why) = waiting {
                        tracing::warn!(
                            socket = %self.upgrade_socket.display(),
                            why,
                            "SIGQUIT ignored: no new process waits for the listening sockets"
                        );
                    }
                }
                _ = usr2.recv() => self.start_successor("upgrade"),
                // A reload is an upgrade to the same binary: the new
                // process reads the config file, and takes over only if
                // it is valid.
                _ = hup.recv() => self.start_successor("reload"),
            }
        }
    }
}

/// Run until SIGTERM (graceful) or SIGINT. Call from `main`, outside any
/// tokio runtime: Pingora runs its own.
pub fn run(config: Config, opts: Options) -> Result<(), StartError> {
    let work_stealing = config.work_stealing;
    let Prepared {
        server,
        app,
        background,
        access_log,
    } = prepare(config, &opts, work_stealing)?;
    tracing::info!(
        listen = ?app.config.listen,
        admin = %app.config.admin_listen,
        sites = app.sites.len(),
        threads = app.config.threads,
        work_stealing,
        "sesame is running"
    );
    let (_tx, rx) = watch::channel(false);
    {
        // The service manager hears once the listeners accept (and, after
        // an upgrade, that this is the main process now).
        let addrs = listen_addrs(&app.config, &opts);
        std::thread::spawn(move || {
            for a in addrs {
                within(Duration::from_secs(20), || {
                    std::net::TcpStream::connect(a).is_ok()
                });
            }
            handover::notify(&format!("READY=1\nMAINPID={}", std::process::id()));
        });
    }
    server.run(RunArgs {
        shutdown_signal: Box::new(Shutdown {
            rx,
            signals: true,
            successor: opts.successor.clone(),
            upgrade_socket: app.config.upgrade_socket.clone(),
            draining: app.draining.clone(),
            successor_pid: Default::default(),
            reloads: app.metrics.config_reloads.clone(),
            drain: std::sync::Mutex::new(Some(drain::Drain {
                requests: app.metrics.requests_in_flight.clone(),
                websockets: app.metrics.websockets_open.clone(),
                mail: app.metrics.mail_outbox.clone(),
                timeout: app.config.drain_timeout,
                close_tunnels: {
                    let app = app.clone();
                    Box::new(move || {
                        app.close_tunnels.send_replace(true);
                    })
                },
                before_exit: {
                    let (app, bg, log) =
                        (app.clone(), background.handle().clone(), access_log.clone());
                    Box::new(move || last_things(&app, &bg, log.as_ref()))
                },
            })),
        }),
    });
    // Pingora's own way out (SIGINT, or the grace period over).
    last_things(&app, background.handle(), access_log.as_ref());
    background.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// What a process does last, however it goes: the session activity not yet
/// written, the access log's last lines, and its config's copy removed
/// (if a successor has not written its own).
fn last_things(
    app: &App,
    background: &tokio::runtime::Handle,
    log: Option<&access_log::AccessLog>,
) {
    let written = background.block_on(async {
        tokio::time::timeout(Duration::from_secs(2), app.sessions.write_activity()).await
    });
    if written.is_err() {
        tracing::warn!("the last session activity was not written within 2 s");
    }
    if let Some(log) = log {
        log.flush(Duration::from_secs(1));
    }
    running_config::forget(&app.config.upgrade_socket);
}

/// Turn transparent huge pages off for this process: call first thing in
/// `main`, before other threads start.
///
/// mimalloc asks the kernel for huge pages on its heap, so a thread that
/// touches a few bytes of a fresh region makes 2 MiB of it resident. With
/// 1,000 connections that doubled the resident memory of Sesame (148 MiB
/// against 77 MiB) and of plain Pingora alike, for no throughput the load
/// harness could measure (docs/src/performance.md). Best effort: a kernel
/// without the setting leaves things as they were.
pub fn disable_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!(
            "sesame: could not turn transparent huge pages off ({e}); memory use may be higher"
        );
    }
}

/// Start in a background thread; returns once every listener (the gateway's,
/// the admin one, the demo app's) accepts connections.
///
/// Several gateways may run in one process, one after another or at once,
/// so they run with work stealing on whatever `server.work_stealing` says.
/// Pingora's other flavour (one single-threaded runtime per worker) finds
/// its worker's runtimes through a `thread_local::ThreadLocal` slot, and
/// that crate hands the slot of an exited thread to the next new thread
/// with its value still in it: after one gateway has stopped, the worker
/// threads of the next would spawn their listeners and connections onto
/// the stopped gateway's runtimes, where they are dropped unrun. One
/// `sesame run` per process never meets it (its workers live as long as
/// the process). docs/src/performance.md has the upstream fix.
pub fn start(config: Config, opts: Options) -> Result<Running, StartError> {
    let addrs = listen_addrs(&config, &opts);
    let Prepared {
        server,
        app,
        background,
        ..
    } = prepare(config, &opts, true)?;
    let (tx, rx) = watch::channel(false);
    let reloads = app.metrics.config_reloads.clone();
    let thread = std::thread::spawn(move || {
        server.run(RunArgs {
            shutdown_signal: Box::new(Shutdown {
                rx,
                signals: false,
                successor: None,
                upgrade_socket: Default::default(),
                draining: Default::default(),
                successor_pid: Default::default(),
                reloads,
                // Stopped by `Running::stop`, at once: nothing to wait for.
                drain: Default::default(),
            }),
        });
        background.shutdown_timeout(Duration::from_secs(2));
    });
    for &a in &addrs {
        if !within(Duration::from_secs(20), || {
            std::net::TcpStream::connect(a).is_ok()
        }) {
            tracing::warn!(addr = %a, "listener did not come up within 20 s");
        }
    }
    Ok(Running {
        app,
        stop: tx,
        thread: Some(thread),
        addrs,
    })
}
