//! TLS files, both ways: the certificates Sesame presents on its own
//! listeners (chosen by SNI, reloaded from disk when the files change) and
//! the CA files it trusts for TLS to an upstream app (read and checked
//! here; handed to Pingora by the gateway's `upstream.rs`).
//!
//! Nothing here panics on a bad file: every problem is a message naming the
//! file, so that `sesame check-config` and the start-up can report it with
//! the config key.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// One certificate chain and its private key, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate loaded from its files and ready to present.
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    /// DNS names of the leaf (subjectAltName), lower case; `*.` wildcards kept.
    pub names: Vec<String>,
    /// Expiry of the leaf, Unix seconds.
    pub not_after: i64,
    modified: (Option<SystemTime>, Option<SystemTime>),
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key stays out of Debug output.
        f.debug_struct("Loaded")
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The PEM certificates in `path`, each checked to parse (a CA file, or a
/// certificate chain).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    read_chain(path)
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    for c in &certs {
        X509Certificate::from_der(c.as_ref())
            .map_err(|e| format!("{} holds an unreadable certificate: {e}", path.display()))?;
    }
    Ok(certs)
}

/// Load and check a certificate chain and its key (the key must match the
/// leaf).
pub fn load(files: &CertFiles) -> Result<Loaded, String> {
    let before = (modified(&files.cert), modified(&files.key));
    let chain = read_chain(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("{} is not a PEM private key file: {e}", files.key.display()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        format!(
            "{} holds a key of an unsupported type: {e}",
            files.key.display()
        )
    })?;
    let (_, leaf) = X509Certificate::from_der(chain[0].as_ref())
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    let not_after = leaf.validity().not_after.timestamp();
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|_| {
        format!(
            "the key in {} does not belong to the certificate in {}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    Ok(Loaded {
        key: Arc::new(certified),
        names,
        not_after,
        modified: before,
    })
}

/// Does certificate name `pattern` (maybe `*.example.com`) cover `host`?
fn name_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

struct Entry {
    files: CertFiles,
    current: RwLock<Arc<Loaded>>,
    /// File times of the last failed reload: not retried until they change.
    failed: std::sync::Mutex<Option<(Option<SystemTime>, Option<SystemTime>)>>,
}

/// The certificates of one listener: the one whose names cover the client's
/// SNI, else the first. Cheap to consult on every handshake (a read lock and
/// an `Arc` clone).
pub struct Certs {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| &e.files))
            .finish()
    }
}

/// What one reload did to one certificate.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    Reloaded {
        cert: PathBuf,
        not_after: i64,
    },
    /// The new files are unusable; the previous certificate stays in use.
    Failed {
        cert: PathBuf,
        error: String,
    },
}

impl Certs {
    pub fn load(files: &[CertFiles]) -> Result<Certs, String> {
        let mut entries = Vec::with_capacity(files.len());
        for f in files {
            entries.push(Entry {
                files: f.clone(),
                current: RwLock::new(Arc::new(load(f)?)),
                failed: std::sync::Mutex::new(None),
            });
        }
        Ok(Certs { entries })
    }

    fn current(e: &Entry) -> Arc<Loaded> {
        match e.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// (cert path, expiry) of every certificate in use.
    pub fn expiries(&self) -> Vec<(PathBuf, i64)> {
        self.entries
            .iter()
            .map(|e| (e.files.cert.clone(), Self::current(e).not_after))
            .collect()
    }

    /// Reload every certificate whose files changed on disk since it was
    /// loaded. A file caught half-written fails to load and is retried on
    /// the next call, the old certificate serving meanwhile.
    pub fn reload_changed(&self) -> Vec<Reload> {
        self.entries
            .iter()
            .map(|e| {
                let now = (modified(&e.files.cert), modified(&e.files.key));
                let mut failed = match e.failed.lock() {
                    Ok(g) => g,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if now == Self::current(e).modified || *failed == Some(now) {
                    return Reload::Unchanged;
                }
                match load(&e.files) {
                    Ok(l) => {
                        let not_after = l.not_after;
                        match e.current.write() {
                            Ok(mut g) => *g = Arc::new(l),
                            Err(poisoned) => *poisoned.into_inner() = Arc::new(l),
                        }
                        Reload::Reloaded {
                            cert: e.files.cert.clone(),
                            not_after,
                        }
                    }
                    Err(error) => {
                        *failed = Some(now);
                        Reload::Failed {
                            cert: e.files.cert.clone(),
                            error,
                        }
                    }
                }
            })
            .collect()
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(|s| s.to_ascii_lowercase());
        let chosen = sni
            .as_deref()
            .and_then(|host| {
                self.entries
                    .iter()
                    .find(|e| Self::current(e).names.iter().any(|n| name_matches(n, host)))
            })
            .or_else(|| self.entries.first())?;
        Some(Self::current(chosen).key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label_only() {
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(name_matches("example.com", "example.com"));
        assert!(!name_matches("example.com", "a.example.com"));
    }

    #[test]
    fn missing_and_garbage_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let missing = dir.path().join("missing.pem");
        for cert in [&garbage, &missing] {
            let err = load(&CertFiles {
                cert: cert.clone(),
                key: missing.clone(),
            })
            .unwrap_err();
            assert!(err.contains(&cert.display().to_string()), "{err}");
        }
        assert!(read_certificates(&garbage).is_err());
    }
}
