//! Gateways as processes (`sesame run`), for tests that need several
//! instances or a restart.

use super::*;

/// A real `sesame run` process.
pub struct Instance {
    pub port: u16,
    /// Its admin listener (health, metrics).
    pub admin: u16,
    pub child: std::process::Child,
    /// Where the process writes its log (stderr).
    pub log: std::path::PathBuf,
}

impl Instance {
    pub fn start(dir: &std::path::Path, name: &str, config: &str) -> Instance {
        Self::start_under(dir, name, config, &[])
    }

    /// Started by way of `wrapper` (a command that runs its arguments).
    pub fn start_under(
        dir: &std::path::Path,
        name: &str,
        config: &str,
        wrapper: &[&str],
    ) -> Instance {
        Self::start_at(dir, name, config, wrapper, "127.0.0.1", free_port())
    }

    /// Listening on `ip:port` (another loopback address, such as
    /// 127.0.0.2, lets two instances share a port, as behind a load
    /// balancer that keeps the public URL's port).
    pub fn start_at(
        dir: &std::path::Path,
        name: &str,
        config: &str,
        wrapper: &[&str],
        ip: &str,
        port: u16,
    ) -> Instance {
        Self::spawn(dir, name, config, wrapper, ip, port, &[])
    }

    /// With these environment variables set (and passed on to what it starts).
    pub fn start_with_env(
        dir: &std::path::Path,
        name: &str,
        config: &str,
        env: &[(&str, &str)],
    ) -> Instance {
        Self::spawn(dir, name, config, &[], "127.0.0.1", free_port(), env)
    }

    fn spawn(
        dir: &std::path::Path,
        name: &str,
        config: &str,
        wrapper: &[&str],
        ip: &str,
        port: u16,
        env: &[(&str, &str)],
    ) -> Instance {
        let admin = free_port();
        let text = config
            .replacen(
                "listen = [\"127.0.0.1:0\"]",
                &format!("listen = [\"{ip}:{port}\"]"),
                1,
            )
            .replacen(
                "admin_listen = \"127.0.0.1:0\"",
                &format!("admin_listen = \"127.0.0.1:{admin}\""),
                1,
            );
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        let log_path = dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let sesame = env!("CARGO_BIN_EXE_sesame");
        let mut command = match wrapper {
            [] => std::process::Command::new(sesame),
            [program, args @ ..] => {
                let mut c = std::process::Command::new(program);
                c.args(args).arg(sesame);
                c
            }
        };
        let mut child = command
            .args(["run", "-c", path.to_str().unwrap()])
            .env(
                "RUST_LOG",
                std::env::var("SESAME_TEST_LOG").unwrap_or("info,sesame=debug,pingora=warn".into()),
            )
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("instance {name} exited ({status}) while starting:\n{log}");
            }
            if std::net::TcpStream::connect((ip, port)).is_ok() {
                return Instance {
                    port,
                    admin,
                    child,
                    log: log_path,
                };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        panic!("instance {name} did not start:\n{log}");
    }

    /// What the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log holds `text` (panics with the log after 30 s).
    pub async fn until_logged(&self, text: &str) {
        self.until_logged_times(text, 1).await
    }

    /// Wait until the log holds `text` `times` times (panics with the log
    /// after 30 s).
    pub async fn until_logged_times(&self, text: &str, times: usize) {
        let t = Instant::now();
        while self.log().matches(text).count() < times {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{text:?} not logged within 30 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.port)
    }

    /// Peak resident memory (VmHWM) of the process, in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmHWM in /proc/<pid>/status")
            * 1024
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}
