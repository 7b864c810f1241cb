//! The integration suite: one binary, real parts (a real gateway on free
//! ports, a real upstream, a real SMTP server, real SQLite files).

/// Each test, twice: once on SQLite, once on PostgreSQL (its own schema).
macro_rules! store_tests {
    ($(async fn $name:ident() $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn test() $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::helpers::with_store($crate::helpers::Backend::Sqlite, test()).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $crate::helpers::with_store($crate::helpers::Backend::Postgres, test()).await
                }
            }
        )*
    };
}

mod helpers;

mod access_log;
mod assertion;
mod attacks;
mod browser;
mod caddy;
mod cluster;
mod code;
mod config;
mod cross_device;
mod device_grant;
mod docs;
mod doctor;
mod ext_authz;
mod forward_auth;
mod intercept;
mod keys;
mod lifecycle;
mod limits;
mod link;
mod mail;
mod monitoring;
mod nginx;
mod notices;
mod oidc;
mod outage;
mod passkeys;
mod phone;
mod portal;
mod rules;
mod session;
mod stream;
mod tls;
mod upgrade;
mod upstream;
mod websocket;
