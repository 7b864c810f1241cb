//! The PostgreSQL the tests use: the one at `SESAME_TEST_POSTGRES_URL` (or the
//! default URL) when it answers, otherwise a throwaway cluster in a temporary
//! directory on a free port, stopped and deleted when the run ends. A system
//! cluster is never started, stopped or changed.

use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::machine::{self, Need};
use crate::Result;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub enum Postgres {
    /// Someone else's server; left alone.
    Running(String),
    /// Ours, until dropped.
    Throwaway(Throwaway),
}

impl Postgres {
    pub fn url(&self) -> &str {
        match self {
            Postgres::Running(url) => url,
            Postgres::Throwaway(t) => &t.url,
        }
    }
}

pub fn find_or_start() -> Result<Postgres> {
    let url = std::env::var("SESAME_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.into());
    let (host, port) = host_port(&url).ok_or_else(|| {
        format!("SESAME_TEST_POSTGRES_URL={url} is not a postgres://HOST[:PORT]/DB URL")
    })?;
    if answers(&host, port) {
        println!("==> PostgreSQL answers at {host}:{port}; the tests use {url}");
        return Ok(Postgres::Running(url));
    }
    println!("==> nothing answers at {host}:{port}: starting a throwaway PostgreSQL");
    machine::ensure(&[Need::POSTGRES])?;
    Throwaway::start().map(Postgres::Throwaway)
}

/// `host` and `port` out of `postgres://user@host:port/db?...`.
fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let authority = rest.split(['/', '?']).next()?;
    let hostport = authority.rsplit('@').next()?;
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        match rest.strip_prefix(':') {
            Some(p) => (host, p.parse().ok()?),
            None if rest.is_empty() => (host, 5432),
            None => return None,
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (hostport, 5432),
        }
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

fn answers(host: &str, port: u16) -> bool {
    (host, port).to_socket_addrs().is_ok_and(|mut addrs| {
        addrs.any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
    })
}

pub struct Throwaway {
    dir: PathBuf,
    url: String,
    /// initdb and the server refuse to run as root: as root, they run as this
    /// user.
    user: Option<&'static str>,
}

impl Throwaway {
    fn start() -> Result<Throwaway> {
        let initdb = machine::postgres_bin("initdb").ok_or("no initdb after installing")?;
        let pg_ctl = machine::postgres_bin("pg_ctl").ok_or("no pg_ctl")?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        remove_stale(&pg_ctl);
        let dir = std::env::temp_dir().join(format!("{PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        let user = machine::is_root().then(unprivileged_user).transpose()?;
        let pg = Throwaway {
            dir,
            url: format!("postgres://postgres@127.0.0.1:{port}/test"),
            user,
        };
        if let Some(user) = user {
            pg.run_plain(Command::new("chown").args([user, &pg.dir.to_string_lossy()]))?;
        }
        let data = pg.dir.join("data");
        pg.run_as(Command::new(&initdb).arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]))?;
        // Sockets in our directory, TCP on loopback only, and nothing synced
        // to disk: it is thrown away.
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
            pg.dir.display()
        );
        pg.run_as(
            Command::new(&pg_ctl)
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(pg.dir.join("server.log"))
                .args(["-o", &options, "-w", "-t", "60", "start"]),
        )?;
        let createdb = machine::postgres_bin("createdb").ok_or("no createdb")?;
        pg.run_as(Command::new(createdb).args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "test",
        ]))?;
        println!(
            "==> throwaway PostgreSQL at 127.0.0.1:{port} in {}",
            pg.dir.display()
        );
        Ok(pg)
    }

    fn stop(&self) -> Result {
        let pg_ctl = machine::postgres_bin("pg_ctl").ok_or("no pg_ctl")?;
        self.run_as(
            Command::new(pg_ctl)
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "fast", "-w", "stop"]),
        )
    }

    /// Runs a PostgreSQL program, as the unprivileged user when we are root.
    fn run_as(&self, cmd: &mut Command) -> Result {
        match self.user {
            None => self.run_plain(cmd),
            Some(user) => {
                let mut wrapped = Command::new("runuser");
                wrapped
                    .args(["-u", user, "--"])
                    .arg(cmd.get_program())
                    .args(cmd.get_args());
                self.run_plain(&mut wrapped)
            }
        }
    }

    fn run_plain(&self, cmd: &mut Command) -> Result {
        let out = cmd
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
        if out.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        Err(format!(
            "{:?} failed ({}):\n{}{}\n{log}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        ))
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        match self.stop() {
            Ok(()) => println!("==> throwaway PostgreSQL stopped"),
            Err(e) => eprintln!("xtask: stopping the throwaway PostgreSQL: {e}"),
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const PREFIX: &str = "sesame-test-pg-";

/// Clusters left by runs that were killed (Ctrl-C skips the clean-up): their
/// directory names the xtask process that made them, which is gone.
fn remove_stale(pg_ctl: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        if std::path::Path::new("/proc").join(pid).exists() {
            continue;
        }
        let data = e.path().join("data");
        if data.join("postmaster.pid").exists() {
            let user = machine::is_root()
                .then(unprivileged_user)
                .and_then(|u| u.ok());
            let mut cmd = match user {
                Some(u) => {
                    let mut c = Command::new("runuser");
                    c.args(["-u", u, "--"]).arg(pg_ctl);
                    c
                }
                None => Command::new(pg_ctl),
            };
            let _ = cmd
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        println!(
            "==> removing a throwaway PostgreSQL left by an earlier run: {}",
            e.path().display()
        );
        let _ = std::fs::remove_dir_all(e.path());
    }
}

/// Debian's package makes a `postgres` user; without it, `nobody`.
fn unprivileged_user() -> Result<&'static str> {
    ["postgres", "nobody"]
        .into_iter()
        .find(|u| {
            Command::new("id")
                .arg(u)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .ok_or_else(|| {
            "running as root, and neither a postgres nor a nobody user exists to run PostgreSQL as"
                .into()
        })
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn reads_host_and_port_out_of_urls() {
        let hp = host_port;
        assert_eq!(
            hp("postgres://postgres@127.0.0.1:5432/test"),
            Some(("127.0.0.1".into(), 5432))
        );
        assert_eq!(
            hp("postgresql://u:pw@db.internal/x?sslmode=require"),
            Some(("db.internal".into(), 5432))
        );
        assert_eq!(hp("postgres://[::1]:6000/test"), Some(("::1".into(), 6000)));
        assert_eq!(hp("postgres://[::1]/test"), Some(("::1".into(), 5432)));
        assert_eq!(
            hp("postgres://localhost:5433"),
            Some(("localhost".into(), 5433))
        );
        assert_eq!(hp("mysql://localhost/x"), None);
        assert_eq!(hp("postgres:///test"), None);
    }
}
