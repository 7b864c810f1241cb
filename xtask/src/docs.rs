//! The book in `docs/`: built with mdBook (installed with cargo if missing),
//! and every relative link in it and in README.md checked on disk, anchors
//! included.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::machine;
use crate::Result;

const MDBOOK_VERSION: &str = "0.5.4";

pub fn check() -> Result {
    let root = machine::repo_root();
    let mdbook = mdbook()?;
    crate::run(Command::new(mdbook).arg("build").arg(root.join("docs")))?;
    // mdBook leaves an include it cannot read as it is, and says so only in
    // its log.
    let mut html = Vec::new();
    files_under(&root.join("docs/book"), "html", &mut html)?;
    for page in &html {
        if read(page)?.contains("{{#include") {
            return Err(format!("{}: an include was not resolved", page.display()));
        }
    }
    let mut files = vec![root.join("README.md")];
    files_under(&root.join("docs/src"), "md", &mut files)?;
    let mut problems = Vec::new();
    for file in &files {
        problems.extend(broken_links(file)?);
    }
    if problems.is_empty() {
        println!("==> {} pages, every link resolves", files.len());
        Ok(())
    } else {
        Err(format!("broken links:\n{}", problems.join("\n")))
    }
}

/// The mdbook to build with: one of this version on PATH or in cargo's bin
/// directory, or installed there now.
fn mdbook() -> Result<PathBuf> {
    let wanted = format!("mdbook v{MDBOOK_VERSION}");
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    let installed = home.join("bin/mdbook");
    for candidate in [PathBuf::from("mdbook"), installed.clone()] {
        let version = Command::new(&candidate)
            .arg("--version")
            .stderr(Stdio::null())
            .output();
        if version.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == wanted) {
            return Ok(candidate);
        }
    }
    println!("==> installing mdbook {MDBOOK_VERSION} (cargo install)");
    let mut install = crate::cargo();
    install.args([
        "install",
        "mdbook",
        "--version",
        MDBOOK_VERSION,
        "--locked",
        "--no-default-features",
        "--features",
        "search",
    ]);
    crate::run(&mut install)?;
    Ok(installed)
}

fn files_under(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) -> Result {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            files_under(&p, ext, out)?;
        } else if p.extension().is_some_and(|e| e == ext) {
            out.push(p);
        }
    }
    Ok(())
}

/// `file:line: target (why)` for each relative link of `file` that does not
/// resolve.
fn broken_links(file: &Path) -> Result<Vec<String>> {
    let text = read(file)?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut problems = Vec::new();
    for (line_no, target) in links(&text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (target.as_str(), None),
        };
        let resolved = if path.is_empty() {
            file.to_path_buf()
        } else {
            dir.join(path)
        };
        let at = format!("{}:{line_no}: {target}", file.display());
        if !resolved.exists() {
            problems.push(format!("{at} (no such file)"));
            continue;
        }
        if let Some(anchor) = anchor {
            if resolved.extension().is_some_and(|e| e == "md")
                && !anchors(&read(&resolved)?).contains(anchor)
            {
                problems.push(format!("{at} (no heading with this anchor)"));
            }
        }
    }
    Ok(problems)
}

fn read(file: &Path) -> Result<String> {
    std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))
}

/// The lines of Markdown text outside fenced code blocks, numbered from 1.
fn prose(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut fenced = false;
    text.lines().enumerate().filter_map(move |(i, line)| {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            return None;
        }
        (!fenced).then_some((i + 1, line))
    })
}

/// Link targets: inline `[text](target)` and images, and reference
/// definitions `[label]: target`; not inside code.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in prose(text) {
        let line = without_code_spans(line);
        if let Some(rest) = line.trim_start().strip_prefix('[') {
            if let Some((_, def)) = rest.split_once("]:") {
                out.push((n, def.split_whitespace().next().unwrap_or("").to_string()));
                continue;
            }
        }
        let mut rest = line.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            let target = rest[..end].split_whitespace().next().unwrap_or("");
            let target = target.trim_start_matches('<').trim_end_matches('>');
            out.push((n, target.to_string()));
            rest = &rest[end..];
        }
    }
    out
}

fn without_code_spans(line: &str) -> String {
    line.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, s)| s)
        .collect::<Vec<_>>()
        .join("")
}

/// The ids mdBook (and GitHub) give the headings of a page.
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for (_, line) in prose(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#').trim();
        let base = slug(heading);
        let mut id = base.clone();
        let mut k = 1;
        while !seen.insert(id.clone()) {
            id = format!("{base}-{k}");
            k += 1;
        }
    }
    seen
}

/// Lower case; letters, digits, `-` and `_` kept, spaces to `-`, the rest
/// dropped; link syntax reduced to its text.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    // `[text](url)` -> `text`
    while let Some(open) = rest.find('[') {
        text.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.split_once("](") {
            Some((label, tail)) if !label.contains('[') => {
                text.push_str(label);
                rest = tail.split_once(')').map_or("", |(_, t)| t);
            }
            _ => {
                text.push('[');
                rest = after;
            }
        }
    }
    text.push_str(rest);
    text.chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                Some(c.to_lowercase().next().unwrap_or(c))
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_become_mdbook_ids() {
        assert_eq!(
            slug("Behind nginx, Traefik or Caddy (forward-auth)"),
            "behind-nginx-traefik-or-caddy-forward-auth"
        );
        assert_eq!(
            slug("`Sesame-Assertion` in [Go](https://go.dev)"),
            "sesame-assertion-in-go"
        );
        let ids = anchors("# A\n```\n# not a heading\n```\n## A\n");
        assert!(ids.contains("a") && ids.contains("a-1") && !ids.contains("not-a-heading"));
    }

    #[test]
    fn finds_links_outside_code() {
        let text = "see [the config](operating/configuration.md#keys) and `[x](no.md)`\n\
                    ```\n[y](fenced.md)\n```\n![shot](images/login.png)\n[ref]: other.md\n";
        let got: Vec<String> = links(text).into_iter().map(|(_, t)| t).collect();
        assert_eq!(
            got,
            [
                "operating/configuration.md#keys",
                "images/login.png",
                "other.md"
            ]
        );
    }
}
