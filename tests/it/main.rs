//! The integration suite: one binary, real parts (a real gateway on free
//! ports, a real upstream, a real SMTP server, real SQLite files).

mod helpers;

mod code;
mod config;
mod intercept;
mod limits;
mod link;
mod mail;
mod session;
