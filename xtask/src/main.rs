//! `cargo xtask`: the README's two commands, on a bare machine or a prepared
//! one.
//!
//! - `cargo xtask demo`: install cmake if it is missing, then build and run
//!   `sesame demo`.
//! - `cargo xtask test`: install what the suite needs, find PostgreSQL or start
//!   a throwaway one, then run everything CI runs: formatting, lints, the whole
//!   `cargo test`, the book and its links, and every fuzz target.
//!
//! Standard library only, so it builds before anything is installed.

mod docs;
mod machine;
mod postgres;

use std::process::{Command, ExitCode};

use machine::Need;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  demo [ARGS]       install cmake if missing, then `cargo run --release -- demo`
  test              the whole suite, as CI runs it: installs what is missing,
                    uses PostgreSQL at SESAME_TEST_POSTGRES_URL or starts a
                    throwaway one, then fmt, clippy, cargo test, docs, fuzz
  test -- ARGS      prepare the machine the same way, then only `cargo test ARGS`
                    (e.g. `cargo xtask test -- --test it passkeys`)
  docs              build the book in docs/ (mdBook) and check every link
  help              this text

environment:
  SESAME_TEST_POSTGRES_URL  PostgreSQL for the tests
                            (default postgres://postgres@127.0.0.1:5432/test)
  FUZZ_SECONDS              seconds per fuzz target in `test` (default 30)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("docs") => docs::check(),
        Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            if let Some(other) = other {
                eprintln!("xtask: unknown command `{other}`\n");
            }
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What went wrong, said to the person at the terminal.
type Result<T = ()> = std::result::Result<T, String>;

fn demo(args: &[String]) -> Result {
    machine::ensure(&[Need::CMAKE])?;
    let mut cmd = cargo();
    cmd.args(["run", "--release", "--", "demo"]).args(args);
    run(&mut cmd)
}

fn test(args: &[String]) -> Result {
    let only = match args {
        [] => None,
        [sep, rest @ ..] if sep == "--" => Some(rest),
        _ => {
            return Err(format!(
            "`test` takes no options (got {args:?}); use `test -- ARGS` to pass ARGS to cargo test"
        ))
        }
    };
    machine::ensure(machine::SUITE)?;
    if only.is_none() {
        machine::ensure_rust_components()?;
    }
    let pg = postgres::find_or_start()?;
    let url = pg.url().to_string();
    let promtool = machine::promtool()?;
    let cargo_test = |extra: &[String]| {
        let mut cmd = cargo();
        cmd.arg("test")
            .args(extra)
            .env("SESAME_TEST_POSTGRES_URL", &url)
            .env("SESAME_PROMTOOL", &promtool);
        cmd
    };
    if let Some(extra) = only {
        return run(&mut cargo_test(extra));
    }
    step(
        "formatting",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    step(
        "lints",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    step(
        "the test suite (the core's unit tests; SQLite and PostgreSQL) and xtask's own",
        &mut cargo_test(&["--workspace".to_string()]),
    )?;
    println!("==> the book (docs/)");
    docs::check()?;
    let secs = std::env::var("FUZZ_SECONDS").unwrap_or_else(|_| "30".into());
    step(
        &format!("every fuzz target for {secs} s"),
        Command::new(machine::repo_root().join("fuzz/run")).arg(&secs),
    )?;
    drop(pg);
    println!("==> all green");
    Ok(())
}

/// The cargo that runs this xtask (so the same toolchain builds Sesame).
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(machine::repo_root());
    cmd
}

fn step(what: &str, cmd: &mut Command) -> Result {
    println!("==> {what}");
    run(cmd)
}

/// Runs `cmd` with the terminal's stdin, stdout and stderr.
fn run(cmd: &mut Command) -> Result {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {}: {e}", shown(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} failed ({status})", shown(cmd)))
    }
}

fn shown(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
