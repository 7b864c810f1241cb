//! Names the commit in `sesame --version`: `git` when building from a clone,
//! `SESAME_COMMIT` when building from an export, "unknown commit" otherwise.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=SESAME_COMMIT");
    let commit = std::env::var("SESAME_COMMIT").ok().or_else(|| {
        let dir = git(&["rev-parse", "--git-dir"])?;
        // A new commit moves HEAD or the branch it names.
        // (A path that does not exist would rerun this at every build.)
        // logs/HEAD moves at every commit and checkout, in a linked worktree
        // too, whether the branch ref is loose or packed.
        let mut watch = vec![
            format!("{dir}/HEAD"),
            format!("{dir}/logs/HEAD"),
            format!("{dir}/packed-refs"),
        ];
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch.push(format!("{dir}/{branch}"));
        }
        for path in watch.iter().filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
        let hash = git(&["rev-parse", "--short=12", "HEAD"])?;
        let date = git(&["log", "-1", "--format=%cs", "HEAD"]).unwrap_or_default();
        Some(format!("commit {hash} {date}").trim().to_string())
    });
    println!(
        "cargo:rustc-env=SESAME_COMMIT={}",
        commit.unwrap_or_else(|| "unknown commit".into())
    );
}
