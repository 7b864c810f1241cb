//! The config a running `sesame run` reads, written down beside its
//! upgrade socket, so that `sesame check-config` can say what a reload
//! would change.
//!
//! The copy is `{server.upgrade_socket}.running.toml`: in the socket's
//! directory, which holds it only when that directory is Sesame's user's
//! alone (`handover::check_socket_dir`; systemd's `RuntimeDirectory`), as
//! the copy holds what the config file does, secrets included (mode 0600).
//! Each process writes it once it serves, over its predecessor's, and a
//! process that stops removes its own.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::handover;

/// Its first line, before the process id.
const HEADER: &str = "# The config sesame process ";

/// Where the process with `socket` as its upgrade socket writes it.
pub fn path(socket: &Path) -> PathBuf {
    let mut p = socket.as_os_str().to_owned();
    p.push(".running.toml");
    PathBuf::from(p)
}

/// Write `text` down as the config this process runs. Best effort: without
/// a private directory (a `sesame run` by hand without `/run/sesame`) there
/// is nothing to compare with later, and that is all.
pub fn record(socket: &Path, text: &str) {
    if let Err(why) = handover::check_socket_dir(socket) {
        tracing::debug!(why, "the config running is not written down");
        return;
    }
    let path = path(socket);
    let mut tmp = path.clone().into_os_string();
    tmp.push(format!(".{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            write!(
                f,
                "{HEADER}{} runs (sesame check-config compares with it)\n{text}",
                std::process::id()
            )
        })
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(path = %path.display(), error = %e, "cannot write down the config running; sesame check-config will not compare with it");
    }
}

/// Remove the copy, if it is this process's (a successor's is left).
pub fn forget(socket: &Path) {
    let path = path(socket);
    if let Ok(Some((pid, _))) = read(&path) {
        if pid == std::process::id() {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// What a running process wrote down at `socket`: its process id and
/// config text. `Ok(None)`: none, or its process has gone.
pub fn running(socket: &Path) -> Result<Option<(u32, String)>, String> {
    match read(&path(socket))? {
        Some((pid, text)) if Path::new(&format!("/proc/{pid}")).exists() => Ok(Some((pid, text))),
        _ => Ok(None),
    }
}

fn read(path: &Path) -> Result<Option<(u32, String)>, String> {
    let body = match std::fs::read_to_string(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {} ({e})", path.display())),
    };
    let (first, text) = body.split_once('\n').unwrap_or((&body, ""));
    let pid = first
        .strip_prefix(HEADER)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("{} is not a config Sesame wrote down", path.display()))?;
    Ok(Some((pid, text.to_string())))
}
