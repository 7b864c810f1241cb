//! The README and the book say what is true: the README opens with the two
//! commands CI runs, every command in a `sh` block is run or checked here,
//! every key of the shipped reference config is documented, and every TOML
//! block of the book is accepted by the config parser.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every page of the book.
fn pages() -> Vec<PathBuf> {
    fn under(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                under(&p, out);
            } else if p.extension().is_some_and(|e| e == "md") {
                out.push(p);
            }
        }
    }
    let mut out = vec![repo().join("README.md")];
    under(&repo().join("docs/src"), &mut out);
    out
}

/// A fenced block: its info string, its lines, and where it starts.
struct Block {
    lang: String,
    lines: Vec<String>,
    at: String,
}

fn blocks(page: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(page).unwrap();
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => {
                open = Some(Block {
                    lang: info.trim().to_string(),
                    lines: Vec::new(),
                    at: format!("{}:{}", page.display(), i + 1),
                })
            }
            (Some(_), Some(_)) => out.push(open.take().unwrap()),
            (Some(b), None) => b.lines.push(line.to_string()),
            (None, None) => {}
        }
    }
    assert!(
        open.is_none(),
        "{}: a code block is not closed",
        page.display()
    );
    out
}

#[test]
fn the_readme_opens_with_the_demo_and_the_test_command_ci_runs() {
    let readme = repo().join("README.md");
    let first: Vec<Block> = blocks(&readme).into_iter().take(2).collect();
    let shown: Vec<(&str, Vec<String>)> = first
        .iter()
        .map(|b| (b.lang.as_str(), b.lines.clone()))
        .collect();
    assert_eq!(
        shown,
        [
            ("sh", vec!["cargo xtask demo".to_string()]),
            ("sh", vec!["cargo xtask test".to_string()]),
        ],
        "README.md must open with the two commands, each alone in a sh block"
    );
    // CI runs that command and nothing else.
    let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    let commands: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| !matches!(*l, "set -euo pipefail" | "cd \"$(dirname \"$0\")/..\""))
        .collect();
    assert_eq!(
        commands,
        ["cargo xtask test"],
        ".ci/run runs the README's test command only"
    );
    // The screenshot it shows is there.
    let text = std::fs::read_to_string(&readme).unwrap();
    let shot = text
        .lines()
        .find_map(|l| l.strip_prefix("![").and_then(|l| l.split_once("](")))
        .map(|(_, rest)| rest.trim_end_matches(')').to_string())
        .expect("a screenshot");
    assert!(repo().join(&shot).is_file(), "{shot} is missing");
}

/// A config for the `sesame` commands of the docs: SQLite in `dir`.
fn docs_config(dir: &Path) -> PathBuf {
    let path = dir.join("sesame.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[store]
url = "sqlite://{}/sesame.db"
[mail]
transport = "console"
[[site]]
name = "Wiki"
public_url = "http://localhost:8080"
upstream = ["127.0.0.1:3000"]
"#,
            dir.display()
        ),
    )
    .unwrap();
    path
}

/// Splits a command line as a POSIX shell would for the simple commands the
/// docs hold: words, and "double-quoted" words.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    assert!(!quoted, "unbalanced quotes in {line:?}");
    if any {
        out.push(word);
    }
    out
}

/// The Debian packages `cargo xtask` installs (xtask/src/machine.rs).
fn xtask_packages() -> Vec<String> {
    let src = std::fs::read_to_string(repo().join("xtask/src/machine.rs")).unwrap();
    src.lines()
        .filter_map(|l| l.trim().strip_prefix("package: \""))
        .map(|l| l.trim_end_matches("\",").to_string())
        .collect()
}

/// Checks one command of a `sh` block; `sesame` commands run for real, in
/// page order, against one temporary store.
fn check_command(line: &str, config: &Path, at: &str) -> Result<(), String> {
    let mut w = words(line);
    if w.first().is_some_and(|p| p == "sudo") {
        w.remove(0);
    }
    let program = w.first().cloned().unwrap_or_default();
    let args: Vec<&str> = w.iter().skip(1).map(String::as_str).collect();
    let exists = |p: &str| repo().join(p).exists();
    match (program.as_str(), args.as_slice()) {
        ("sesame", [sub, rest @ ..]) => {
            let mut args: Vec<String> = rest
                .iter()
                .map(|a| a.replace("/etc/sesame/sesame.toml", &config.display().to_string()))
                .collect();
            // `run` and `demo` serve until stopped: their config is what
            // there is to check.
            let sub = match *sub {
                "run" => {
                    // Its own flags exist; the config is checked below.
                    check_shape(line)?;
                    if let Some(i) = args.iter().position(|a| a == "--upgrade-from") {
                        args.drain(i..(i + 2).min(args.len()));
                    }
                    "check-config"
                }
                "demo" => return Ok(()),
                // It judges a deployment (tests/it/doctor.rs runs it on
                // real ones): its flags exist.
                "doctor" => return check_shape(line),
                other => other,
            };
            args.insert(0, sub.to_string());
            let out = Command::new(env!("CARGO_BIN_EXE_sesame"))
                .args(&args)
                .env("RUST_LOG", "error")
                .output()
                .unwrap();
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "exit {}: {}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        }
        ("cargo", ["xtask", sub, ..]) => ["demo", "test", "docs", "help"]
            .contains(sub)
            .then_some(())
            .ok_or(format!("xtask has no `{sub}`")),
        ("cargo", ["test", ..] | ["build", "--release"]) => Ok(()),
        ("cargo", ["bench", "--bench", name, ..]) => exists(&format!("benches/{name}.rs"))
            .then_some(())
            .ok_or(format!("no bench {name}")),
        ("fuzz/run" | "benches/load/run", rest) => {
            // The load harness's options are the Python harness's.
            let mut script = std::fs::read_to_string(repo().join(&program)).unwrap();
            if program == "benches/load/run" {
                script += &std::fs::read_to_string(repo().join("benches/load/harness.py")).unwrap();
            }
            match rest
                .iter()
                .find(|a| a.starts_with("--") && !script.contains(*a))
            {
                Some(flag) => Err(format!("{program} knows no {flag}")),
                None => Ok(()),
            }
        }
        ("apt-get", ["update"]) => Ok(()),
        ("apt-get", ["install", "-y", packages @ ..]) => {
            let known = xtask_packages();
            if let Some(p) = packages.iter().find(|p| !known.iter().any(|k| k == *p)) {
                return Err(format!("{p} is not a package cargo xtask installs"));
            }
            // A list of what the suite needs is the whole list.
            let left_out: Vec<&String> = known
                .iter()
                .filter(|k| !packages.contains(&k.as_str()))
                .collect();
            if packages.len() > 1 && !left_out.is_empty() {
                return Err(format!("cargo xtask also installs {left_out:?}"));
            }
            Ok(())
        }
        // Installing the binary, the config and the unit: the files the
        // docs name are in the repository.
        ("install", ["-d", ..]) => Ok(()),
        ("install", [.., from, _to]) => (from.starts_with("target/") || exists(from))
            .then_some(())
            .ok_or(format!("{from} is not in the repository")),
        // systemd is not on a test machine: the unit they name is checked
        // (systemd.rs-style tests read systemd/sesame.service).
        ("systemctl", ["daemon-reload"] | ["enable", "--now", "sesame"]) => Ok(()),
        // The unit's reload is the SIGHUP that tests/it/upgrade.rs sends.
        ("systemctl", ["reload", "sesame"]) => {
            let unit = std::fs::read_to_string(repo().join("systemd/sesame.service")).unwrap();
            unit.contains("ExecReload=/bin/kill -HUP $MAINPID")
                .then_some(())
                .ok_or("the unit has no ExecReload sending SIGHUP".into())
        }
        // The upgrade signal reaches the main process only, and the unit
        // follows the new one (tests/it/upgrade.rs tests the rest).
        ("systemctl", ["kill", "--signal=SIGUSR2", "--kill-whom=main", "sesame"]) => {
            let unit = std::fs::read_to_string(repo().join("systemd/sesame.service")).unwrap();
            [
                "Type=notify",
                "NotifyAccess=main",
                "RuntimeDirectory=sesame",
            ]
            .iter()
            .find(|k| !unit.contains(*k))
            .map_or(Ok(()), |k| Err(format!("the unit lacks {k}")))
        }
        ("systemd-analyze", ["security", .., unit]) => (unit.ends_with("sesame.service"))
            .then_some(())
            .ok_or(format!("unknown unit {unit}")),
        ("journalctl", ["-u", "sesame", ..]) => Ok(()),
        _ => Err(format!(
            "no check for this command at {at}: run it in a test, or add a check here"
        )),
    }
}

/// The subcommand of a `sesame` line exists and has every `--flag` the line
/// uses.
fn check_shape(line: &str) -> Result<(), String> {
    let w = words(line);
    let path: Vec<&str> = w[1..]
        .iter()
        .map(String::as_str)
        .take_while(|a| {
            a.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !a.starts_with('-')
        })
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_sesame"))
        .args(&path)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("no subcommand `sesame {}`", path.join(" ")));
    }
    match w
        .iter()
        .find(|a| a.starts_with("--") && !help.contains(a.as_str()))
    {
        Some(flag) => Err(format!("`sesame {}` has no {flag}", path.join(" "))),
        None => Ok(()),
    }
}

#[test]
fn every_command_in_the_docs_runs_or_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let config = docs_config(dir.path());
    let mut problems = Vec::new();
    let mut sesame_commands = 0;
    for page in pages() {
        for block in blocks(&page).into_iter().filter(|b| b.lang == "sh") {
            for line in block.lines.iter().filter(|l| !l.trim().is_empty()) {
                assert!(
                    !line.contains('$') && !line.contains('<') && !line.contains('|'),
                    "{}: {line:?}: a sh block holds commands as they are run (variables and placeholders go in a text block)",
                    block.at
                );
                if line.starts_with("sesame ") {
                    sesame_commands += 1;
                }
                if let Err(e) = check_command(line, &config, &block.at) {
                    problems.push(format!("{}: {line}\n  {e}", block.at));
                }
            }
        }
    }
    // A sesame command with a placeholder (in a text block) cannot run: its
    // subcommand and flags must exist.
    for page in pages() {
        for block in blocks(&page).into_iter().filter(|b| b.lang == "text") {
            for line in block.lines.iter().filter(|l| l.starts_with("sesame ")) {
                if let Err(e) = check_shape(line) {
                    problems.push(format!("{}: {line}\n  {e}", block.at));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        sesame_commands >= 10,
        "only {sesame_commands} sesame commands found"
    );
}

/// `(section, key)` pairs of a TOML text, commented-out ones included
/// (`# [[site.rule]]`, `# path = ...`); a section is named without brackets.
fn section_keys(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim_start_matches('#').trim();
        if line.starts_with('[') && line.ends_with(']') && !line.contains(' ') {
            section = line.trim_matches(['[', ']']).to_string();
            continue;
        }
        let Some((key, _)) = line.split_once(" = ") else {
            continue;
        };
        if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            pairs.push((section.clone(), key.to_string()));
        }
    }
    pairs.sort();
    pairs.dedup();
    pairs
}

#[test]
fn every_key_of_the_reference_config_is_documented_in_its_section() {
    let reference = std::fs::read_to_string(repo().join("conf/sesame.toml")).unwrap();
    let page = repo().join("docs/src/operating/configuration.md");
    let docs = std::fs::read_to_string(&page).unwrap();
    // The keys table: a row per section, its keys in backticks...
    let row = |section: &str| {
        docs.lines().find(|l| {
            l.starts_with(&format!("| `[{section}]`"))
                || l.starts_with(&format!("| `[[{section}]]`"))
        })
    };
    // ...and the examples: TOML blocks, under their section.
    let examples: Vec<(String, String)> = blocks(&page)
        .into_iter()
        .filter(|b| b.lang == "toml")
        .flat_map(|b| section_keys(&b.lines.join("\n")))
        .collect();
    let keys = section_keys(&reference);
    assert!(keys.len() > 50, "only {} keys read", keys.len());
    let missing: Vec<String> = keys
        .iter()
        .filter(|(section, key)| {
            let in_row = row(section).is_some_and(|r| r.contains(&format!("`{key}`")));
            !in_row && !examples.iter().any(|(s, k)| s == section && k == key)
        })
        .map(|(s, k)| format!("[{s}] {k}"))
        .collect();
    assert!(
        missing.is_empty(),
        "conf/sesame.toml has keys {} does not describe in their section: {missing:?}",
        page.display()
    );
}

#[test]
fn every_toml_block_in_the_docs_is_accepted_by_the_config_parser() {
    let mut problems = Vec::new();
    for page in pages() {
        for block in blocks(&page).into_iter().filter(|b| b.lang == "toml") {
            let mut text = block.lines.join("\n");
            // A part of a site's table is shown under the site it belongs to.
            let first_table = block.lines.iter().find(|l| l.starts_with('['));
            if first_table.is_some_and(|t| t.starts_with("[[site.") || t.starts_with("[site.")) {
                text = format!("[[site]]\n{text}");
            }
            // Fragments are checked for names and types: the parser stops
            // at the first key it does not know or a value of the wrong type.
            if let Err(e) = sesame::config::Config::check_fragment(&text) {
                problems.push(format!("{}: {e}", block.at));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The book's Rust sample, compiled into this test as the book shows it.
#[allow(dead_code)]
#[path = "../../examples/verify_assertion.rs"]
mod rust_sample;

/// Runs one of the book's samples: `Ok(stdout)` on exit 0, `Err(stderr)`
/// otherwise.
fn run_sample(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): `cargo xtask test` installs it (golang-go, nodejs, python3-jwt)")
        });
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `lead` then `rest`: a sample's command line.
fn with<'a>(lead: &[&'a str], rest: [&'a str; 3]) -> Vec<&'a str> {
    lead.iter().copied().chain(rest).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_books_assertion_checks_accept_a_real_assertion_and_refuse_a_forged_one() {
    use crate::helpers::*;
    with_store(Backend::Sqlite, async {
        let app = spawn().await;
        let b = browser();
        app.sign_in(&b, "reader@example.com").await;
        b.get(app.url("/docs")).send().await.unwrap();
        let token = app
            .upstream
            .last()
            .header("sesame-assertion")
            .expect("an assertion reaches the app");
        // Someone else's claims under the real signature.
        let forged = {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let mut claims: serde_json::Value =
                serde_json::from_slice(&b64.decode(token.split('.').nth(1).unwrap()).unwrap())
                    .unwrap();
            claims["email"] = "boss@example.com".into();
            let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
            parts[1] = b64.encode(serde_json::to_vec(&claims).unwrap());
            parts.join(".")
        };
        let jwks = app.url("/.sesame/jwks.json");
        let audience = app.base.clone();

        let samples: [(&str, Vec<&str>); 3] = [
            ("/usr/bin/python3", vec!["docs/src/verify/verify.py"]),
            ("node", vec!["docs/src/verify/verify.mjs"]),
            ("go", vec!["run", "docs/src/verify/verify.go"]),
        ];
        for (program, lead) in samples {
            let claims = run_sample(program, &with(&lead, [&jwks, &audience, &token]))
                .unwrap_or_else(|e| {
                    panic!(
                        "{program} {lead:?} refused a real assertion: {e}\n(what the samples need, \
                         `cargo xtask test` installs: golang-go, nodejs, python3-jwt, python3-cryptography)"
                    )
                });
            let claims: serde_json::Value = serde_json::from_str(claims.trim())
                .unwrap_or_else(|e| panic!("{program} {lead:?} printed no JSON ({e}): {claims}"));
            assert_eq!(claims["email"], "reader@example.com", "{program} {lead:?}");
            assert_eq!(claims["aud"], audience.as_str(), "{program} {lead:?}");
            let refused = run_sample(program, &with(&lead, [&jwks, &audience, &forged]));
            assert!(
                refused.is_err(),
                "{program} {lead:?} accepted a forged assertion"
            );
            let wrong_site = with(&lead, [&jwks, "https://other.example.com", &token]);
            assert!(
                run_sample(program, &wrong_site).is_err(),
                "{program} {lead:?} accepted another site's assertion"
            );
        }
        let claims = rust_sample::verify(&jwks, &audience, &token)
            .await
            .unwrap_or_else(|e| panic!("the Rust sample refused a real assertion: {e}"));
        assert_eq!(claims["email"], "reader@example.com");
        assert!(rust_sample::verify(&jwks, &audience, &forged)
            .await
            .is_err());
        assert!(
            rust_sample::verify(&jwks, "https://other.example.com", &token)
                .await
                .is_err()
        );
    })
    .await
}
