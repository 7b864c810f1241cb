//! Zero-downtime upgrade: a new `sesame` process takes the listening
//! sockets over from the running one, which finishes what it has in hand
//! and exits. No connection is refused in between: both processes hold the
//! same sockets for a few seconds.
//!
//! 1. The running process gets `SIGUSR2` (or `SIGHUP`: a reload is an
//!    upgrade to the same binary, reading the config file again) and starts
//!    the binary now at the path it was started from, as `sesame run -c
//!    FILE --upgrade-from PID`. By hand, that command does the same.
//! 2. The new process builds everything (config, store, keys) first; if
//!    that fails it exits and the old one keeps serving. Then it waits at
//!    `server.upgrade_socket` and sends the old one `SIGQUIT`.
//! 3. The old process passes its listening sockets through that Unix socket
//!    (Pingora's graceful upgrade), keeps accepting for 5 s while the new
//!    one starts serving, then stops accepting, answers its open
//!    connections' requests with `Connection: close`, and exits.
//!
//! Under systemd (`Type=notify`, `NotifyAccess=main`) the old process tells
//! the service manager, as it hands over, that the new one is the main
//! process now (`MAINPID=`), so the unit stays up through the swap.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

/// Names, to the successor, the socket this process hands over at: the
/// one the successor must wait at (see [`same_socket`]).
pub const HANDOVER_SOCKET_ENV: &str = "SESAME_HANDOVER_SOCKET";

/// Why the successor was started (`upgrade`, `reload`), and the running
/// process's reload counts (`ok,failed`), for it to carry on.
const HANDOVER_REASON_ENV: &str = "SESAME_HANDOVER_REASON";
const RELOADS_ENV: &str = "SESAME_CONFIG_RELOADS";

/// In a successor: carry the running process's reload counts on, counting
/// this reload (if it is one) as `ok`: it has read the file.
pub fn carry_reloads(reloads: &prometheus::IntCounterVec) {
    let (ok, failed) = (
        reloads.with_label_values(&["ok"]),
        reloads.with_label_values(&["failed"]),
    );
    let carried = std::env::var(RELOADS_ENV).unwrap_or_default();
    if let Some((o, f)) = carried.split_once(',') {
        ok.inc_by(o.parse().unwrap_or(0));
        failed.inc_by(f.parse().unwrap_or(0));
    }
    if std::env::var(HANDOVER_REASON_ENV).as_deref() == Ok("reload") {
        ok.inc();
    }
}

/// In a successor: refuse a config whose `server.upgrade_socket` is not the
/// one the running process hands over at (it would wait at the new path
/// while the old one sends to its own). The one setting a reload cannot
/// change: it takes a restart.
pub fn same_socket(configured: &Path) -> Result<(), String> {
    match std::env::var_os(HANDOVER_SOCKET_ENV) {
        Some(theirs) if Path::new(&theirs) != configured => Err(format!(
            "server.upgrade_socket changed from {} to {}: the running process hands over only at its own; \
             restart Sesame to change it (systemctl restart sesame)",
            Path::new(&theirs).display(),
            configured.display()
        )),
        _ => Ok(()),
    }
}

/// How to start a successor: the binary's path as this process was started
/// (not what it resolves to now: a symlink switched to a new release points
/// at the new binary) and the config file.
#[derive(Clone, Debug)]
pub struct Successor {
    pub exe: PathBuf,
    pub config: PathBuf,
}

impl Successor {
    /// The path this process was started by (`argv[0]` when it names a
    /// file, made absolute; else what the system says) and `config`.
    pub fn of_this_process(config: &Path) -> Successor {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let exe = std::env::args_os()
            .next()
            .map(PathBuf::from)
            .filter(|p| p.components().count() > 1)
            .map(|p| cwd.join(p))
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("sesame"));
        Successor {
            exe,
            config: cwd.join(config),
        }
    }

    /// Start `sesame run -c CONFIG --upgrade-from <this pid>`, with this
    /// process's environment and output. A thread waits for it: if it exits
    /// before this process has handed over (`handed_over`, the app's
    /// `draining`), the upgrade failed and that is logged (this process
    /// goes on serving).
    ///
    /// `why`: `upgrade` or `reload`; a failed reload is counted in
    /// `reloads`, whose counts the successor carries on.
    pub fn start(
        &self,
        socket: &Path,
        why: &'static str,
        reloads: &prometheus::IntCounterVec,
        handed_over: &Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<u32, String> {
        check_socket_dir(socket)?;
        let carried = format!(
            "{},{}",
            reloads.with_label_values(&["ok"]).get(),
            reloads.with_label_values(&["failed"]).get()
        );
        let child = std::process::Command::new(&self.exe)
            .arg("run")
            .arg("-c")
            .arg(&self.config)
            .arg("--upgrade-from")
            .arg(std::process::id().to_string())
            .env(HANDOVER_SOCKET_ENV, socket)
            .env(HANDOVER_REASON_ENV, why)
            .env(RELOADS_ENV, carried)
            .stdin(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        let pid = child.id();
        let mut child = child;
        let failed = reloads.with_label_values(&["failed"]);
        let handed_over = handed_over.clone();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                // It took over, and is the main process now: its exit is
                // its own (a stop, or a later upgrade of its own).
                if handed_over.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                if why == "reload" {
                    failed.inc();
                }
                tracing::error!(
                    pid,
                    %status,
                    "upgrade failed: the new process exited before taking over; this one goes on serving"
                );
            }
        });
        Ok(pid)
    }
}

/// A Pingora app that, once its listeners have stopped, waits `linger`
/// before closing the connections idle between requests.
///
/// Pingora closes them the moment it stops accepting, and that includes a
/// connection accepted an instant before whose first request it has not
/// read yet: the client sees it closed with no answer. The pause lets those
/// requests be read and answered (with `Connection: close`, see
/// `App::draining`); it is well within the grace period, so no request
/// waits for it.
pub struct Lingering<A> {
    pub inner: Arc<A>,
    pub linger: Duration,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Lingering<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.inner.process_new(session, shutdown).await
    }

    async fn cleanup(&self) {
        tokio::time::sleep(self.linger).await;
        self.inner.cleanup().await;
    }
}

/// Refuse an upgrade socket whose directory someone else could use: the
/// socket is created connectable by anyone (Pingora makes it 0666), and
/// whoever connects first hands the new process its sockets; whoever can
/// write the directory can put a socket of their own in its place, and the
/// old process would hand them every listening socket.
pub fn check_socket_dir(socket: &Path) -> Result<(), String> {
    let dir = socket.parent().ok_or_else(|| {
        format!(
            "server.upgrade_socket {} has no directory",
            socket.display()
        )
    })?;
    let meta = std::fs::metadata(dir).map_err(|e| {
        format!(
            "server.upgrade_socket: directory {} ({e}); create it, mode 0700, owned by Sesame's user \
             (systemd: RuntimeDirectory=sesame, RuntimeDirectoryMode=0700)",
            dir.display()
        )
    })?;
    if !meta.is_dir() {
        return Err(format!(
            "server.upgrade_socket: {} is not a directory",
            dir.display()
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!(
            "server.upgrade_socket: directory {} belongs to user {}, not to Sesame's user ({me}) or root",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "server.upgrade_socket: directory {} is open to other users (mode {:o}); chmod 700 it",
            dir.display(),
            meta.mode() & 0o777
        ));
    }
    // Whoever may rename a directory above could swap in one of their own.
    // A sticky one (/tmp) lets no one rename what is not theirs.
    for above in dir
        .ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
    {
        let Ok(m) = std::fs::metadata(above) else {
            continue;
        };
        let others_write = m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0;
        if (m.uid() != me && m.uid() != 0) || others_write {
            return Err(format!(
                "server.upgrade_socket: {} (above {}) can be changed by other users (owner {}, mode {:o}); \
                 keep the socket below directories only root or Sesame's user can change",
                above.display(),
                dir.display(),
                m.uid(),
                m.mode() & 0o7777
            ));
        }
    }
    Ok(())
}

/// Is a new process waiting at `socket` for this one's sockets? Only a
/// socket made by Sesame's user, in a directory still Sesame's user's alone
/// (see [`check_socket_dir`]), and, when this process started the successor
/// (`successor`, else 0: started by hand), only while that one runs.
pub fn successor_waiting(socket: &Path, successor: u32) -> Result<(), String> {
    check_socket_dir(socket)?;
    let meta = std::fs::symlink_metadata(socket)
        .map_err(|e| format!("no socket at {} ({e})", socket.display()))?;
    if !meta.file_type().is_socket() {
        return Err(format!("{} is not a socket", socket.display()));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "{} belongs to user {}, not to Sesame's user ({me})",
            socket.display(),
            meta.uid()
        ));
    }
    if successor != 0 {
        let alive = i32::try_from(successor)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .is_some_and(|p| rustix::process::test_kill_process(p).is_ok());
        if !alive {
            return Err(format!("the new process {successor} is gone"));
        }
    }
    Ok(())
}

/// In the new process, before Pingora's bootstrap waits at `socket`:
/// remove what an earlier upgrade left there (so the old process is not
/// told to hand over before this one listens), then, from a thread, send
/// `SIGQUIT` to `from` once the socket is there.
pub fn ask_for_sockets(socket: &Path, from: u32) -> Result<(), String> {
    check_socket_dir(socket)?;
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot remove {}: {e}", socket.display())),
    }
    let pid = i32::try_from(from)
        .ok()
        .filter(|p| *p > 1)
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| format!("--upgrade-from {from}: not a process id"))?;
    let socket = socket.to_path_buf();
    std::thread::spawn(move || {
        let start = Instant::now();
        while successor_waiting(&socket, 0).is_err() {
            if start.elapsed() > Duration::from_secs(30) {
                tracing::error!(socket = %socket.display(), "upgrade: the socket to receive the listeners on did not appear");
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        match rustix::process::kill_process(pid, rustix::process::Signal::QUIT) {
            Ok(()) => tracing::info!(
                from,
                "upgrade: asked the running process for its listening sockets"
            ),
            Err(e) => {
                tracing::error!(from, error = %e, "upgrade: cannot signal the running process")
            }
        }
    });
    Ok(())
}

/// Tell the service manager something (`sd_notify`), if it listens:
/// `READY=1`, `MAINPID=…`. Nothing happens without `NOTIFY_SOCKET`.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| -> std::io::Result<()> {
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        // An abstract socket name is given with a leading '@'.
        #[cfg(target_os = "linux")]
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
            return Ok(());
        }
        socket.send_to(state.as_bytes(), Path::new(&path))?;
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_upgrade_socket_only_in_a_directory_of_sesames_user_alone() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("up.sock");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(check_socket_dir(&socket), Ok(()));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = check_socket_dir(&socket).unwrap_err();
        assert!(e.contains("open to other users (mode 755)"), "{e}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(check_socket_dir(&socket).is_err());
        let e = check_socket_dir(&dir.path().join("missing/up.sock")).unwrap_err();
        assert!(e.contains("RuntimeDirectory=sesame"), "{e}");
        // A 0700 directory inside one anybody may change is no better.
        let inner = dir.path().join("inner");
        std::fs::create_dir(&inner).unwrap();
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_socket_dir(&inner.join("up.sock")).unwrap_err();
        assert!(e.contains("can be changed by other users"), "{e}");
        // Sticky, as /tmp is: nobody renames what is not theirs.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(check_socket_dir(&inner.join("up.sock")), Ok(()));
    }

    #[test]
    fn only_a_socket_at_the_path_counts_as_a_waiting_successor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("up.sock");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(successor_waiting(&path, 0).is_err());
        std::fs::write(&path, "").unwrap();
        let e = successor_waiting(&path, 0).unwrap_err();
        assert!(e.contains("not a socket"), "{e}");
        std::fs::remove_file(&path).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(successor_waiting(&path, 0), Ok(()));
        assert_eq!(successor_waiting(&path, std::process::id()), Ok(()));
        // A successor that has exited waits for nothing.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id();
        gone.wait().unwrap();
        let e = successor_waiting(&path, gone_pid).unwrap_err();
        assert!(e.contains("is gone"), "{e}");
        // Nor does one in a directory opened to others since.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(successor_waiting(&path, 0).is_err());
    }
}
