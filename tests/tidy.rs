//! House rules checked on every `cargo test` (STYLE.md, issue 9): every Rust file opens with a
//! `//!` line saying what lives there, and no test is switched off or expected to panic, and no
//! `dbg!` is left behind.

use std::path::{Path, PathBuf};

/// Every `.rs` file of the workspace, outside `target/` and hidden directories.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|error| panic!("read {dir:?}: {error}"));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        if name.starts_with('.') || name == "target" || name == "node_modules" {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, found);
        } else if name.ends_with(".rs") {
            found.push(path);
        }
    }
}

fn workspace_files() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(Path::new(env!("CARGO_MANIFEST_DIR")), &mut files);
    assert!(files.len() > 50, "found only {} Rust files", files.len());
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("read {path:?}: {error}"));
            (path, text)
        })
        .collect()
}

/// The first line that is not blank and not an inner attribute (`#![...]`).
fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with("#!["))
        .unwrap_or("")
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let missing: Vec<String> = workspace_files()
        .into_iter()
        .filter(|(_, text)| !first_line(text).starts_with("//!"))
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(missing.is_empty(), "no `//!` module doc: {missing:#?}");
}

#[test]
fn no_test_is_ignored_or_expects_a_panic_and_no_dbg_is_left() {
    // Spelled in pieces, so this file does not find itself.
    let forbidden = [
        concat!("#[", "ignore"),
        concat!("#[", "should_panic"),
        concat!("dbg", "!("),
    ];
    let mut found = Vec::new();
    for (path, text) in workspace_files() {
        for (number, line) in text.lines().enumerate() {
            for pattern in forbidden {
                if line.contains(pattern) {
                    found.push(format!(
                        "{}:{}: {}",
                        path.display(),
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(found.is_empty(), "forbidden in the house: {found:#?}");
}

#[test]
fn the_checks_catch_what_they_look_for() {
    assert_eq!(first_line("#![allow(dead_code)]\n\n//! Doc.\n"), "//! Doc.");
    assert_eq!(first_line("// plain comment\n"), "// plain comment");
}
