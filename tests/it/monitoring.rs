//! `/metrics` of a running gateway, checked by Prometheus's own `promtool`,
//! and the shipped dashboard and alert rules (conf/monitoring/) checked
//! against it: every metric they use exists.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::helpers::*;

/// Prometheus's promtool: `SESAME_PROMTOOL` (set by `cargo xtask test`,
/// which fetches it) or `promtool` on `PATH`.
fn promtool() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("SESAME_PROMTOOL") {
        return p.into();
    }
    let on_path = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        on_path,
        "promtool is not here: run the suite with `cargo xtask test` (it fetches promtool), \
         or put Debian's prometheus package's promtool on PATH"
    );
    "promtool".into()
}

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// Every `sesame_*` and `process_*` metric name in `text`.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    for prefix in ["sesame_", "process_"] {
        let mut from = 0;
        while let Some(at) = text[from..].find(prefix) {
            let start = from + at;
            let starts_word = start == 0
                || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            let end = text[start..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .map_or(text.len(), |n| start + n);
            if starts_word {
                names.insert(text[start..end].to_string());
            }
            from = end;
        }
    }
    names
}

/// The metric families a scrape declares (`# TYPE name kind`).
fn families(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_the_dashboard_and_alerts_use_only_metrics_that_exist() {
    // A TLS listener, so the certificate metrics have a series.
    let ca = TestCa::new("monitoring");
    let (cert, key) = ca.leaf("site", &["localhost"]);
    let t = spawn_with(Options {
        server: format!(
            "[[server.tls]]\nlisten = \"127.0.0.1:{}\"\ncert = {:?}\nkey = {:?}\n",
            free_port(),
            cert.display().to_string(),
            key.display().to_string()
        ),
        ..Default::default()
    })
    .await;
    let b = browser();
    t.sign_in(&b, "watch@example.com").await;
    let r = b.get(t.url("/reports")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The gauges are refreshed from the store every 15 s; once, now.
    let app = &t.running.as_ref().unwrap().app;
    app.count_live().await;
    let scrape = t.metrics().await;

    // Prometheus's own checks of the exposition format and its conventions.
    let mut check = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // What an operator expects besides Sesame's own counters.
    let value = |series: &str| TestApp::metric(&scrape, series);
    assert_eq!(value("sesame_sessions_live"), 1.0);
    assert_eq!(value("sesame_pending_sign_ins"), 0.0, "the link was used");
    assert_eq!(value("sesame_mail_outbox_depth"), 0.0);
    assert_eq!(value("sesame_mail_delivery_seconds_count"), 1.0);
    assert!(value("sesame_upstream_response_seconds_count{site=\"Test app\"}") >= 1.0);
    assert!(value("sesame_store_query_seconds_count{op=\"counts\"}") >= 1.0);
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_open_fds") > 0.0);
    assert!(value("process_start_time_seconds") > 1.7e9);
    assert!(scrape.contains("sesame_tls_cert_expiry_seconds{cert="));
    let build = format!(
        "sesame_build_info{{commit=\"{}\",version=\"{}\"}}",
        env!("SESAME_COMMIT"),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&build), 1.0, "{build}");

    // The shipped rules are valid, and use what a scrape has.
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/monitoring/alerts.yml");
    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dashboard = repo_file("conf/monitoring/sesame-dashboard.json");
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    assert!(parsed["panels"].as_array().is_some_and(|p| p.len() >= 12));
    let have = families(&scrape);
    for (file, text) in [
        ("alerts.yml", repo_file("conf/monitoring/alerts.yml")),
        ("sesame-dashboard.json", dashboard),
    ] {
        let used = names_in(&text);
        assert!(used.len() >= 10, "{file} uses {used:?}");
        for name in used {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| have.contains(*f)))
                .unwrap_or(&name);
            assert!(
                have.contains(family),
                "{file} uses {name}, which a running Sesame does not export"
            );
        }
    }
}
