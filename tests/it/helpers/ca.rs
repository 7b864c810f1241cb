//! A throwaway certificate authority (openssl) and a client that trusts it.

use super::*;

/// A test certificate authority made with openssl, in its own directory.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    /// The CA certificate (PEM), to trust.
    pub cert: std::path::PathBuf,
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is needed for the TLS tests (apt-get install -y openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC_KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let subj = format!("/CN={name}");
        let mut args = vec!["req", "-x509"];
        args.extend(EC_KEY);
        args.extend([
            "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", &subj,
        ]);
        openssl(dir.path(), &args);
        let cert = dir.path().join("ca.pem");
        TestCa { dir, cert }
    }

    /// A server certificate for `names` signed by this CA: (cert, key) files
    /// named after `file`, in the CA's directory.
    pub fn leaf(&self, file: &str, names: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = self.dir.path();
        let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
        std::fs::write(
            dir.join(format!("{file}.ext")),
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
                san.join(",")
            ),
        )
        .unwrap();
        let (key, csr, cert, ext) = (
            format!("{file}.key"),
            format!("{file}.csr"),
            format!("{file}.pem"),
            format!("{file}.ext"),
        );
        let subj = format!("/CN={}", names[0]);
        let mut args = vec!["req"];
        args.extend(EC_KEY);
        args.extend(["-nodes", "-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &args);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
        (dir.join(cert), dir.join(key))
    }

    pub fn reqwest_cert(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(&std::fs::read(&self.cert).unwrap()).unwrap()
    }
}

/// A client that trusts only `ca`, keeps cookies and follows no redirects.
pub fn tls_browser(ca: &TestCa, resolve: &[(&str, SocketAddr)]) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca.reqwest_cert())
        .cookie_store(true)
        .redirect(Policy::none())
        .timeout(Duration::from_secs(10));
    for (name, addr) in resolve {
        b = b.resolve(name, *addr);
    }
    b.build().unwrap()
}
