//! Gateways started and stopped: in one process one after another (the
//! library's `start`, which every in-process test relies on), and as
//! `sesame run` with the default runtime (no work stealing).

use std::time::Duration;

use crate::helpers::*;

/// A fresh connection each time: Pingora hands each accepted connection to
/// one of its worker threads, and each thread must be this gateway's own.
async fn status_on_new_connection(url: &str) -> Result<u16, reqwest::Error> {
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    Ok(c.get(url).send().await?.status().as_u16())
}

/// Regression: with Pingora's no-steal runtime, the worker threads of a
/// gateway started after another had stopped found the stopped one's
/// runtimes in a recycled thread-local slot, and the connections handed to
/// them were dropped unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_started_one_after_another_in_one_process_all_answer() {
    for round in 0..6 {
        let mut app = spawn().await;
        for i in 0..10 {
            match status_on_new_connection(&app.url("/public/x")).await {
                Ok(200) => {}
                other => panic!("gateway {round}, connection {i}: {other:?}"),
            }
        }
        app.stop().await;
    }
}

/// `sesame run` on the default config: each worker thread its own event
/// loop (said at start), transparent huge pages off (they doubled the
/// resident memory at 1,000 connections), and every connection answered,
/// several at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sesame_run_defaults_to_no_work_stealing_and_answers_every_connection() {
    let store = TestStore::new(Backend::Sqlite).await;
    let mail = MailBox::start();
    let upstream = Upstream::start().await;
    let config = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
admin_listen = "127.0.0.1:0"
threads = 2

[store]
url = "{}"
[mail]
smtp_url = "smtp://{}"
from = "Sesame test <login@example.com>"
[[site]]
name = "App"
public_url = "http://localhost:1"
upstream = ["{}"]
public_paths = ["/public"]
"#,
        store.url, mail.addr, upstream.addr
    );
    let mut sesame = Instance::start(store.dir(), "nosteal", &config);
    sesame.until_logged("sesame is running").await;
    let log = sesame.log();
    let started = log
        .lines()
        .find(|l| l.contains("sesame is running"))
        .unwrap();
    assert!(
        started.contains("threads=2") && started.contains("work_stealing=false"),
        "{started}"
    );
    // Linux 5.0 and later say so in the process status.
    let status = std::fs::read_to_string(format!("/proc/{}/status", sesame.child.id())).unwrap();
    let thp = status
        .lines()
        .find(|l| l.starts_with("THP_enabled:"))
        .expect("no THP_enabled line in /proc/PID/status (Linux 5.0 or later needed)");
    assert_eq!(thp.split_whitespace().nth(1), Some("0"), "{thp}");
    let url = sesame.url("/public/x");
    let answers = futures::future::join_all((0..40).map(|_| status_on_new_connection(&url))).await;
    for (i, a) in answers.into_iter().enumerate() {
        match a {
            Ok(200) => {}
            other => panic!("connection {i}: {other:?}\nlog:\n{}", sesame.log()),
        }
    }
    sesame.kill();
}
