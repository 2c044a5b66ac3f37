//! The docs are checked like code:
//! - every relative link in the repository's Markdown resolves, to a file
//!   and, with `#anchor`, to a heading of it;
//! - no file cites a design outside the repository: `docs/design.md` is the
//!   design;
//! - the README's commands are the ones CI and the tests run: its two
//!   set-up commands are `cargo run --release -- demo` (which
//!   `tests/cluster.rs` runs) and `scripts/test.sh` (which `.ci/run` runs),
//!   and every `rfx` command line in it names a subcommand that exists with
//!   flags that its `--help` lists.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::RFX;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The repository's files whose names end with one of `exts` (not under
/// `target/`, hidden folders or symbolic links such as a `shared` beside a
/// clone).
fn repo_files(exts: &[&str]) -> Vec<PathBuf> {
    fn walk(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_symlink() || name.starts_with('.') || name == "target" {
                continue;
            }
            if kind.is_dir() {
                walk(&path, exts, out);
            } else if exts.iter().any(|e| name.ends_with(e)) {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(root(), exts, &mut files);
    files.sort();
    files
}

/// The targets of the inline links `[text](target)` of `text`, outside code
/// blocks and code spans.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop code spans: a link inside one is not a link.
        let mut plain = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                plain.push_str(part);
            }
        }
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].trim().to_owned());
            rest = &after[end..];
        }
    }
    out
}

/// GitHub's anchors of the headings of `text`.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        out.insert(slug);
    }
    out
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let files = repo_files(&[".md"]);
    assert!(
        files.iter().any(|f| f.ends_with("docs/design.md")),
        "docs/design.md is the design: {files:?}"
    );
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            checked += 1;
            if !target.exists() {
                broken.push(format!("{}: {link} (no such file)", file.display()));
                continue;
            }
            if !anchor.is_empty() && target.extension().is_some_and(|e| e == "md") {
                let heads = anchors(&std::fs::read_to_string(&target).unwrap());
                if !heads.contains(anchor) {
                    broken.push(format!("{}: {link} (no such heading)", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(
        checked > 20,
        "only {checked} links found: is the parser right?"
    );
}

#[test]
fn the_design_is_the_one_in_the_repository() {
    let text_like = [".rs", ".md", ".sh", ".toml", ".c", ".h", ".py"];
    let cited: Vec<String> = repo_files(&text_like)
        .into_iter()
        // This file names the old document to forbid it.
        .filter(|path| !path.ends_with("tests/docs.rs"))
        .filter(|path| {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .contains("DESIGN.md")
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        cited.is_empty(),
        "these cite DESIGN.md; the design is docs/design.md: {cited:?}"
    );
}

/// The command lines of the README's `sh` blocks (continuations joined,
/// comments dropped).
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut commands = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in readme.lines() {
        let trimmed = line.trim();
        if let Some(lang) = trimmed.strip_prefix("```") {
            in_sh = !in_sh && lang == "sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let code = match trimmed.find(" #") {
            Some(i) => &trimmed[..i],
            None if trimmed.starts_with('#') => "",
            None => trimmed,
        };
        match code.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(code);
                let command = pending.trim().to_owned();
                if !command.is_empty() {
                    commands.push(command);
                }
                pending.clear();
            }
        }
    }
    commands
}

/// `rfx args... --help`, or `None` if it fails.
fn help(args: &[&str]) -> Option<String> {
    let out = Command::new(RFX).args(args).arg("--help").output().unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The names in the `Commands:` section of a help text.
fn subcommands(help: &str) -> BTreeSet<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn the_readmes_commands_are_the_ones_ci_and_the_tests_run() {
    let commands = readme_commands();
    // The two set-up commands, and who runs them.
    for setup in ["cargo run --release -- demo", "scripts/test.sh"] {
        assert!(
            commands.iter().any(|c| c == setup),
            "README lacks `{setup}`: {commands:?}"
        );
    }
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(ci.contains("scripts/test.sh"), ".ci/run: {ci}");
    let cluster = std::fs::read_to_string(root().join("tests/cluster.rs")).unwrap();
    assert!(
        cluster.contains("\"demo\""),
        "tests/cluster.rs runs `rfx demo`"
    );

    // Every `rfx` line: its subcommands exist, its flags are in its help.
    let mut problems = Vec::new();
    let mut checked = 0;
    for command in &commands {
        let line = command
            .strip_prefix("cargo run --release -- ")
            .map(|rest| format!("rfx {rest}"))
            .unwrap_or_else(|| command.clone());
        let Some(rest) = line.strip_prefix("rfx ") else {
            continue;
        };
        // The rfx command itself: up to a shell operator.
        let rest = rest
            .split(['|', '&', '<', '>', ';'])
            .next()
            .unwrap_or_default();
        let words: Vec<&str> = rest.split_whitespace().collect();
        let mut path: Vec<&str> = Vec::new();
        let mut text = help(&[]).unwrap();
        for w in &words {
            let known = subcommands(&text);
            if w.starts_with('-') || known.is_empty() {
                break;
            }
            if !known.contains(*w) {
                problems.push(format!(
                    "`{line}`: `rfx {}` has no subcommand {w}",
                    path.join(" ")
                ));
                break;
            }
            path.push(w);
            match help(&path) {
                Some(t) => text = t,
                None => {
                    problems.push(format!("`{line}`: `rfx {}` has no help", path.join(" ")));
                    break;
                }
            }
        }
        if path.is_empty() {
            problems.push(format!("`{line}`: no such subcommand"));
            continue;
        }
        checked += 1;
        for flag in words.iter().filter(|w| w.starts_with("--")) {
            let flag = flag.split('=').next().unwrap_or(flag);
            let listed = text.lines().any(|l| {
                l.split([' ', ',', '=', '<', '[', ']'])
                    .any(|token| token == flag)
            });
            if !listed {
                problems.push(format!("`{line}`: `rfx {}` has no {flag}", path.join(" ")));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        checked >= 8,
        "only {checked} rfx commands checked: {commands:?}"
    );
}
