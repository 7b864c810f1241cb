//! The PostgreSQL the tests use: the one at `SESAME_TEST_POSTGRES_URL` (or the
//! default URL) when it lets the tests in, otherwise a throwaway server in a
//! temporary directory on a free port, run as a child of this process and
//! stopped and deleted when the run ends (Ctrl-C stops it too: it is in the
//! terminal's process group). A system cluster is never started, stopped or
//! changed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    let given = std::env::var("SESAME_TEST_POSTGRES_URL").ok();
    let url = given.clone().unwrap_or_else(|| DEFAULT_URL.into());
    let target = Target::parse(&url).ok_or_else(|| {
        format!("SESAME_TEST_POSTGRES_URL={url} is not a postgres://[USER[:PASSWORD]@]HOST[:PORT]/DB URL")
    })?;
    match target.lets_in() {
        Ok(()) => {
            println!("==> the tests use the PostgreSQL at {}", target.shown());
            return Ok(Postgres::Running(url));
        }
        Err(why) => match given {
            Some(_) => println!(
                "==> SESAME_TEST_POSTGRES_URL: {} does not let the tests in ({why}); \
                 the tests use a throwaway PostgreSQL instead",
                target.shown()
            ),
            None => println!(
                "==> no PostgreSQL for the tests at {} ({why}): starting a throwaway one",
                target.shown()
            ),
        },
    }
    machine::ensure(&[Need::POSTGRES])?;
    Throwaway::start().map(Postgres::Throwaway)
}

/// What the tests connect to, read out of their URL.
#[derive(Debug, PartialEq)]
struct Target {
    user: String,
    has_password: bool,
    host: String,
    port: u16,
    database: String,
}

impl Target {
    /// `postgres://user[:password]@host[:port]/db?...`; the user defaults to
    /// `postgres`, the database to the user.
    fn parse(url: &str) -> Option<Target> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, has_password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((name, _)) => (name, true),
                None => (u, false),
            },
            None => ("", false),
        };
        let user = if user.is_empty() { "postgres" } else { user };
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
        let database = path
            .strip_prefix('/')
            .unwrap_or("")
            .split('?')
            .next()
            .unwrap_or("");
        let database = if database.is_empty() { user } else { database };
        (!host.is_empty()).then(|| Target {
            user: user.to_string(),
            has_password,
            host: host.to_string(),
            port,
            database: database.to_string(),
        })
    }

    /// Without the password.
    fn shown(&self) -> String {
        format!(
            "{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }

    /// Whether the server lets this user into this database: a real startup
    /// handshake, not just an open port (Debian's own cluster answers on 5432
    /// but asks for a password and has no `test` database). A URL with a
    /// password is let in once the server asks for one.
    fn lets_in(&self) -> std::result::Result<(), String> {
        let addrs: Vec<_> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("{} cannot be looked up: {e}", self.host))?
            .collect();
        let mut stream = addrs
            .iter()
            .find_map(|a| TcpStream::connect_timeout(a, Duration::from_secs(2)).ok())
            .ok_or("nothing answers there")?;
        let timeout = Some(Duration::from_secs(5));
        let _ = stream.set_read_timeout(timeout);
        let _ = stream.set_write_timeout(timeout);
        let io = |e: std::io::Error| format!("the server broke off: {e}");
        stream
            .write_all(&startup_message(&self.user, &self.database))
            .map_err(io)?;
        loop {
            let mut head = [0u8; 5];
            stream.read_exact(&mut head).map_err(io)?;
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            if !(4..=1 << 20).contains(&len) {
                return Err("not a PostgreSQL server".into());
            }
            let mut body = vec![0u8; len - 4];
            stream.read_exact(&mut body).map_err(io)?;
            match head[0] {
                b'R' if body.get(..4) == Some(&[0, 0, 0, 0]) => continue,
                b'R' if self.has_password => return Ok(()),
                b'R' => return Err(format!("it asks {} for a password", self.user)),
                b'E' => return Err(error_message(&body)),
                b'Z' => {
                    let _ = stream.write_all(&[b'X', 0, 0, 0, 4]);
                    return Ok(());
                }
                // Parameter status, backend key, notices.
                _ => continue,
            }
        }
    }
}

/// Protocol 3.0 startup: length, version, then `key\0value\0` pairs and a
/// final `\0`.
fn startup_message(user: &str, database: &str) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in [("user", user), ("database", database)] {
        body.extend(k.as_bytes());
        body.push(0);
        body.extend(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend(body);
    msg
}

/// The `M` (message) field of an ErrorResponse.
fn error_message(body: &[u8]) -> String {
    body.split(|b| *b == 0)
        .find_map(|field| field.strip_prefix(b"M"))
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_else(|| "an error".into())
}

pub struct Throwaway {
    dir: PathBuf,
    url: String,
    /// The postmaster, until stopped.
    server: Option<Child>,
    /// The directory goes when this does (not after a failed try: the next
    /// one reuses it).
    owns_dir: bool,
}

const PREFIX: &str = "sesame-test-pg-";

impl Throwaway {
    fn start() -> Result<Throwaway> {
        remove_stale();
        // initdb and the server refuse to run as root: as root, they run as
        // Debian's `postgres` user (or nobody), in /tmp, which it can reach.
        let user = machine::is_root().then(unprivileged_user).transpose()?;
        let parent = if user.is_some() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = parent.join(format!("{PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        if let Some(user) = user {
            run(
                Command::new("chown").args([user, &dir.to_string_lossy()]),
                &dir,
            )?;
        }
        let as_user = |program: PathBuf| match user {
            None => Command::new(program),
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
        };
        let bin = |name: &str| {
            machine::postgres_bin(name).ok_or_else(|| format!("no {name} in /usr/lib/postgresql"))
        };
        let data = dir.join("data");
        run(
            as_user(bin("initdb")?)
                .arg("-D")
                .arg(&data)
                // The caller's locale may not exist here, or not be UTF-8.
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                ]),
            &dir,
        )?;
        // A free port can be taken between looking and binding: try again.
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            let log = std::fs::File::create(dir.join("server.log"))
                .map_err(|e| format!("cannot write the server log: {e}"))?;
            // Sockets in our directory, TCP on loopback only, nothing synced
            // to disk: it is thrown away.
            let server = as_user(bin("postgres")?)
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(&dir)
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
                .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
                .args(["-c", "max_connections=300"])
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start postgres: {e}"))?;
            let mut pg = Throwaway {
                url: format!("postgres://postgres@127.0.0.1:{port}/test"),
                dir: dir.clone(),
                server: Some(server),
                owns_dir: false,
            };
            match pg.wait_until_up(port) {
                Ok(()) => {
                    run(
                        as_user(bin("createdb")?)
                            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                            .args(["-U", "postgres", "test"]),
                        &dir,
                    )?;
                    println!(
                        "==> throwaway PostgreSQL at 127.0.0.1:{port} in {}",
                        dir.display()
                    );
                    pg.owns_dir = true;
                    return Ok(pg);
                }
                Err(e) => last_error = e,
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(format!(
            "the throwaway PostgreSQL did not start: {last_error}"
        ))
    }

    fn wait_until_up(&mut self, port: u16) -> Result {
        let target = Target::parse(&format!("postgres://postgres@127.0.0.1:{port}/postgres"))
            .expect("a well-formed URL");
        let t = Instant::now();
        loop {
            let exited = self
                .server
                .as_mut()
                .and_then(|s| s.try_wait().ok().flatten());
            if let Some(status) = exited {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                return Err(format!("postgres exited ({status}):\n{log}"));
            }
            if target.lets_in().is_ok() {
                return Ok(());
            }
            if t.elapsed() > Duration::from_secs(60) {
                return Err("postgres did not accept connections within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fast shutdown (SIGINT to the postmaster, whose pid it wrote), then
    /// wait for it.
    fn stop_server(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        let pid = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string));
        match pid {
            Some(pid) => {
                let _ = Command::new("kill").args(["-INT", &pid]).status();
            }
            None => {
                let _ = server.kill();
            }
        }
        let _ = server.wait();
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        self.stop_server();
        if self.owns_dir {
            println!("==> throwaway PostgreSQL stopped");
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn run(cmd: &mut Command, dir: &Path) -> Result {
    let out = cmd
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{} failed ({}):\n{}{}",
        crate::shown(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    ))
}

/// Directories of earlier runs that were killed before they could clean up
/// (their servers stopped with the terminal's Ctrl-C; a `kill -9` of xtask
/// leaves the server running, and it is stopped here): the directory names
/// the xtask process that made it, which is gone.
fn remove_stale() {
    for parent in [PathBuf::from("/tmp"), std::env::temp_dir()] {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
                continue;
            };
            if Path::new("/proc").join(pid).exists() {
                continue;
            }
            let server = std::fs::read_to_string(e.path().join("data/postmaster.pid"))
                .ok()
                .and_then(|s| s.lines().next().map(str::to_string));
            // The pid may have been reused since: signal it only if it is
            // still this directory's postgres.
            let server = server.filter(|pid| {
                std::fs::read(Path::new("/proc").join(pid).join("cmdline")).is_ok_and(|cmd| {
                    let cmd = String::from_utf8_lossy(&cmd);
                    cmd.contains("postgres") && cmd.contains(&*e.path().to_string_lossy())
                })
            });
            if let Some(server) = server {
                let _ = Command::new("kill")
                    .args(["-INT", &server])
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
    use super::*;

    fn t(user: &str, pw: bool, host: &str, port: u16, db: &str) -> Option<Target> {
        Some(Target {
            user: user.into(),
            has_password: pw,
            host: host.into(),
            port,
            database: db.into(),
        })
    }

    #[test]
    fn reads_what_to_connect_to_out_of_urls() {
        assert_eq!(
            Target::parse("postgres://postgres@127.0.0.1:5432/test"),
            t("postgres", false, "127.0.0.1", 5432, "test")
        );
        assert_eq!(
            Target::parse("postgresql://u:pw@db.internal/x?sslmode=require"),
            t("u", true, "db.internal", 5432, "x")
        );
        assert_eq!(
            Target::parse("postgres://[::1]:6000/test"),
            t("postgres", false, "::1", 6000, "test")
        );
        assert_eq!(
            Target::parse("postgres://[::1]/test"),
            t("postgres", false, "::1", 5432, "test")
        );
        assert_eq!(
            Target::parse("postgres://ada@localhost:5433"),
            t("ada", false, "localhost", 5433, "ada")
        );
        assert_eq!(Target::parse("mysql://localhost/x"), None);
        assert_eq!(Target::parse("postgres:///test"), None);
    }

    #[test]
    fn the_startup_message_is_protocol_3() {
        let m = startup_message("postgres", "test");
        assert_eq!(
            u32::from_be_bytes(m[..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(&m[4..8], &[0, 3, 0, 0]);
        assert!(m.ends_with(b"database\0test\0\0"));
        assert_eq!(
            error_message(b"SFATAL\0C3D000\0Mdatabase \"test\" does not exist\0\0"),
            "database \"test\" does not exist"
        );
    }
}
