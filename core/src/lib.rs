//! Sesame's core: everything about who may sign in and who is signed in,
//! with no Pingora in it (the compiler holds that line: this crate does not
//! depend on it). The config and its validation, the store, keys, sessions
//! and their cookies, sign-in by email as a service (`signin`), the links,
//! codes and mail, passkey ceremonies, the pages, rate limits, metrics, the
//! signed assertion, TLS files, the clock and randomness.
//!
//! The gateway crate (`sesame`, one level up) proxies requests and serves
//! the endpoints with these parts; it re-exports every module, so
//! `sesame::store` is this crate's `store`.

pub mod client_addr;
pub mod clock;
pub mod config;
pub mod email;
pub mod identity;
pub mod keys;
pub mod magic_link;
pub mod mail;
pub mod metrics;
pub mod oidc;
pub mod pages;
pub mod passkey;
pub mod path;
pub mod random;
pub mod ratelimit;
pub mod return_to;
pub mod session;
pub mod signin;
pub mod store;
pub mod tls;

#[cfg(test)]
mod testing;
