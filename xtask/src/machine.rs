//! What the machine must have, and installing it from Debian's packages.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Result;

/// Something the build or the suite needs, how to tell it is there, and the
/// Debian package that brings it.
pub struct Need {
    why: &'static str,
    check: Check,
    package: &'static str,
}

enum Check {
    /// An executable of this name on `PATH`.
    Command(&'static str),
    /// This file (a test starts it by this path).
    File(&'static str),
    /// Debian's own Python can import this module.
    Python(&'static str),
    /// A PostgreSQL server's `initdb` under `/usr/lib/postgresql/*/bin`.
    PostgresServer,
}

impl Need {
    pub const CMAKE: Need = Need {
        why: "cmake (Pingora's zlib and BoringSSL parts build with it)",
        check: Check::Command("cmake"),
        package: "cmake",
    };

    pub const POSTGRES: Need = Need {
        why: "a PostgreSQL server (a throwaway cluster for the tests)",
        check: Check::PostgresServer,
        package: "postgresql",
    };

    fn present(&self) -> bool {
        match self.check {
            Check::Command(name) => on_path(name),
            Check::File(path) => Path::new(path).is_file(),
            Check::Python(module) => Command::new("/usr/bin/python3")
                .args(["-c", &format!("import {module}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            Check::PostgresServer => postgres_bin("initdb").is_some(),
        }
    }
}

/// Everything `cargo test` starts or calls, besides PostgreSQL.
pub const SUITE: &[Need] = &[
    Need::CMAKE,
    Need {
        why: "a C++ compiler (libFuzzer, built by the fuzz targets)",
        check: Check::Command("c++"),
        package: "g++",
    },
    Need {
        why: "make (BoringSSL's and zlib's builds)",
        check: Check::Command("make"),
        package: "make",
    },
    Need {
        why: "openssl (the SMTP STARTTLS test makes its CA with it)",
        check: Check::Command("openssl"),
        package: "openssl",
    },
    Need {
        why: "Chromium (the browser test's virtual authenticator)",
        check: Check::File("/usr/bin/chromium"),
        package: "chromium",
    },
    Need {
        why: "Node.js (drives Chromium with playwright-core)",
        check: Check::Command("node"),
        package: "nodejs",
    },
    Need {
        why: "npm (installs playwright-core for the browser test)",
        check: Check::Command("npm"),
        package: "npm",
    },
    Need {
        why: "nginx (auth_request in front of Sesame)",
        check: Check::File("/usr/sbin/nginx"),
        package: "nginx-light",
    },
    Need {
        why: "Caddy (forward_auth in front of Sesame)",
        check: Check::File("/usr/bin/caddy"),
        package: "caddy",
    },
    Need {
        why: "unshare (a sesame process with an /etc/hosts of its own)",
        check: Check::Command("unshare"),
        package: "util-linux",
    },
    Need {
        why: "Go (runs the book's Go assertion check)",
        check: Check::Command("go"),
        package: "golang-go",
    },
    Need {
        why: "PyJWT (runs the book's Python assertion check)",
        check: Check::Python("jwt"),
        package: "python3-jwt",
    },
    Need {
        why: "cryptography (PyJWT's EdDSA)",
        check: Check::Python("cryptography"),
        package: "python3-cryptography",
    },
];

/// Installs what of `needs` is missing, as root; otherwise says the command.
pub fn ensure(needs: &[Need]) -> Result {
    let missing: Vec<&Need> = needs.iter().filter(|n| !n.present()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: BTreeSet<&str> = missing.iter().map(|n| n.package).collect();
    let packages: Vec<&str> = packages.into_iter().collect();
    let list = missing
        .iter()
        .map(|n| format!("  - {}", n.why))
        .collect::<Vec<_>>()
        .join("\n");
    if !on_path("apt-get") {
        return Err(format!(
            "this machine lacks:\n{list}\nand has no apt-get to install them \
             (Debian packages: {}); install them, then run this again",
            packages.join(" ")
        ));
    }
    if !is_root() {
        // Without this setting, Debian's package makes and starts a cluster
        // of its own on port 5432.
        let no_cluster =
            if packages.contains(&Need::POSTGRES.package) && !Path::new(CREATECLUSTER).exists() {
                format!(
                    "sudo mkdir -p /etc/postgresql-common && \
                 echo 'create_main_cluster = false' | sudo tee {CREATECLUSTER} && "
                )
            } else {
                String::new()
            };
        return Err(format!(
            "this machine lacks:\n{list}\ninstalling them needs root; run\n\n  \
             {no_cluster}sudo apt-get update && sudo apt-get install -y {}\n\nthen run this again",
            packages.join(" ")
        ));
    }
    println!("==> installing {} (for:\n{list})", packages.join(" "));
    if packages.contains(&Need::POSTGRES.package) {
        keep_debian_from_making_a_cluster()?;
    }
    // Installed, not started: nginx and Caddy would otherwise stay up on
    // port 80 (invoke-rc.d asks policy-rc.d; 101 means "not now").
    let _no_services = NoServices::install()?;
    apt(&["update", "-qq"])?;
    let mut install = vec![
        "install",
        "-y",
        "-qq",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
    ];
    install.extend(&packages);
    apt(&install)?;
    let still: Vec<&str> = missing
        .iter()
        .filter(|n| !n.present())
        .map(|n| n.why)
        .collect();
    if still.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "installed, but still missing: {}",
            still.join(", ")
        ))
    }
}

/// Debian's `postgresql` package creates and starts a cluster on port 5432
/// unless told not to; the tests want a throwaway one and nothing left behind.
/// Only when there is no setting yet (ucf, which owns the file, keeps it:
/// `UCF_FORCE_CONFFOLD`).
const CREATECLUSTER: &str = "/etc/postgresql-common/createcluster.conf";

fn keep_debian_from_making_a_cluster() -> Result {
    let conf = Path::new(CREATECLUSTER);
    if conf.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(conf.parent().unwrap())
        .and_then(|()| std::fs::write(conf, "create_main_cluster = false\n"))
        .map_err(|e| format!("cannot write {}: {e}", conf.display()))
}

/// `/usr/sbin/policy-rc.d` answering 101 while installing, when there is
/// none of the machine's own.
struct NoServices(bool);

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

impl NoServices {
    fn install() -> Result<NoServices> {
        if Path::new(POLICY_RC_D).exists() {
            return Ok(NoServices(false));
        }
        std::fs::write(
            POLICY_RC_D,
            "#!/bin/sh\n# cargo xtask: packages installed, services not started\nexit 101\n",
        )
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(POLICY_RC_D, std::fs::Permissions::from_mode(0o755))
        })
        .map_err(|e| format!("cannot write {POLICY_RC_D}: {e}"))?;
        Ok(NoServices(true))
    }
}

impl Drop for NoServices {
    fn drop(&mut self) {
        if self.0 {
            let _ = std::fs::remove_file(POLICY_RC_D);
        }
    }
}

fn apt(args: &[&str]) -> Result {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("UCF_FORCE_CONFFOLD", "1")
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("apt-get {} failed ({status})", args.join(" ")))
    }
}

/// rustfmt and clippy, which a minimal rustup profile leaves out.
pub fn ensure_rust_components() -> Result {
    let has = |sub: &str| {
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([sub, "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has("fmt") && has("clippy") {
        return Ok(());
    }
    if !on_path("rustup") {
        return Err("cargo fmt and cargo clippy are needed (rustfmt and clippy components)".into());
    }
    println!("==> rustup component add rustfmt clippy");
    let status = Command::new("rustup")
        .args(["component", "add", "rustfmt", "clippy"])
        .status()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "rustup component add rustfmt clippy failed ({status})"
        ))
    }
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let p = dir.join(name);
            p.is_file()
                && std::fs::metadata(&p).is_ok_and(|m| {
                    use std::os::unix::fs::PermissionsExt;
                    m.permissions().mode() & 0o111 != 0
                })
        })
    })
}

/// A program of the newest PostgreSQL server installed the Debian way.
pub fn postgres_bin(name: &str) -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin").join(name);
            bin.is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

/// `promtool`, which checks the alert rules and a live `/metrics`: the one
/// on `PATH`, or the one in Debian's `prometheus` package unpacked under
/// `target/tools/` (installing the package would also enable a Prometheus
/// server on port 9090, the port `sesame demo` serves its metrics on).
pub fn promtool() -> Result<PathBuf> {
    if on_path("promtool") {
        return Ok(PathBuf::from("promtool"));
    }
    let tools = repo_root().join("target/tools");
    let unpacked = tools.join("prometheus");
    let bin = unpacked.join("usr/bin/promtool");
    if bin.is_file() {
        return Ok(bin);
    }
    if !on_path("apt-get") || !on_path("dpkg-deb") {
        return Err(
            "the monitoring tests need promtool (Debian package prometheus); \
                    put it on PATH, then run this again"
                .into(),
        );
    }
    std::fs::create_dir_all(&tools)
        .map_err(|e| format!("cannot create {}: {e}", tools.display()))?;
    println!("==> fetching promtool (Debian package prometheus, unpacked into target/tools; no server installed)");
    let download = || {
        Command::new("apt-get")
            .args(["download", "-qq", "prometheus"])
            .current_dir(&tools)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !download() {
        if !is_root() {
            return Err(
                "cannot download Debian's prometheus package (for promtool); run \
                        `sudo apt-get update`, then this again"
                    .into(),
            );
        }
        apt(&["update", "-qq"])?;
        if !download() {
            return Err("apt-get download prometheus failed".into());
        }
    }
    let deb = std::fs::read_dir(&tools)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("prometheus_") && n.ends_with(".deb"))
        })
        .ok_or("apt-get download left no prometheus_*.deb")?;
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&unpacked)
        .status()
        .map_err(|e| format!("cannot run dpkg-deb: {e}"))?;
    let _ = std::fs::remove_file(&deb);
    if status.success() && bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "unpacking {} gave no usr/bin/promtool",
            deb.display()
        ))
    }
}

/// The repository: xtask/ is one level down.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ lives in the repository")
}
