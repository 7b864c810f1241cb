//! What validating a config asks of the world outside the file: the
//! address a host name has, and whether certificate files load. The
//! system's answers in [`System`]; tests give their own.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use crate::tls::CertFiles;

pub trait Outside {
    /// The first address `host:port` resolves to; `Ok(None)` if it has none.
    fn resolve(&self, host_port: &str) -> io::Result<Option<SocketAddr>>;
    /// `Ok` if `path` is a PEM file of certificates that parse.
    fn certificates(&self, path: &Path) -> Result<(), String>;
    /// `Ok` if a certificate chain and its key load and belong together.
    fn key_pair(&self, files: &CertFiles) -> Result<(), String>;
}

/// The system resolver and file system.
pub struct System;

impl Outside for System {
    fn resolve(&self, host_port: &str) -> io::Result<Option<SocketAddr>> {
        host_port.to_socket_addrs().map(|mut it| it.next())
    }

    fn certificates(&self, path: &Path) -> Result<(), String> {
        crate::tls::read_certificates(path).map(drop)
    }

    fn key_pair(&self, files: &CertFiles) -> Result<(), String> {
        crate::tls::load(files).map(drop)
    }
}
