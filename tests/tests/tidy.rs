//! Tidy checks of the source tree, after rust-analyzer's: every Rust file opens with a `//!` line
//! saying what it is for (a crate root: or with its README as its documentation), none is over 800 lines, every one is named in ARCHITECTURE.md's code
//! map, and every file the map names exists. The map stays true because a change that breaks it
//! fails here.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, ensure};

const LONGEST_MODULE: usize = 800;

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the workspace").to_path_buf()
}

/// The Rust files under `crates/`, `xtask/` and `tests/`, relative to the root.
fn rust_files(root: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    let mut dirs: Vec<PathBuf> = ["crates", "xtask", "tests"].iter().map(|d| root.join(d)).collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
            let path = entry?.path();
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(root)?.to_string_lossy().into_owned();
                files.push(relative);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The backquoted words of ARCHITECTURE.md.
fn quoted(map: &str) -> Vec<&str> {
    map.split('`').skip(1).step_by(2).collect()
}

/// Whether `file` is named in the map: by a backquoted path that ends its path (`report/html.rs`,
/// `html.rs`), or by its directory (`peers/`).
fn is_named(file: &str, names: &[&str]) -> bool {
    let parts: Vec<&str> = file.split('/').collect();
    (0..parts.len()).any(|start| {
        let suffix = parts[start..].join("/");
        let dir = parts[start..parts.len() - 1].join("/");
        names.iter().any(|name| *name == suffix || (!dir.is_empty() && name.trim_end_matches('/') == dir))
    })
}

#[test]
fn every_rust_file_says_what_it_is_for_and_is_not_too_long() -> Result<()> {
    let root = project_root();
    let mut problems = Vec::new();
    for file in rust_files(&root)? {
        let text = std::fs::read_to_string(root.join(&file))?;
        // A crate root may take its documentation from the crate's README instead.
        let readme_root = file.ends_with("/lib.rs") && text.starts_with("#![doc = include_str!(\"../README.md\")]");
        if !text.starts_with("//!") && !readme_root {
            problems.push(format!("{file}: does not open with a `//!` line"));
        }
        let lines = text.lines().count();
        if lines > LONGEST_MODULE {
            problems.push(format!("{file}: {lines} lines (split it: at most {LONGEST_MODULE})"));
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

#[test]
fn the_code_map_names_every_file_and_only_files_that_exist() -> Result<()> {
    let root = project_root();
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md"))?;
    let names = quoted(&map);
    let files = rust_files(&root)?;
    let unnamed: Vec<&String> = files.iter().filter(|file| !is_named(file, &names)).collect();
    ensure!(unnamed.is_empty(), "ARCHITECTURE.md's code map does not name: {unnamed:?}");
    let missing: Vec<&&str> = names
        .iter()
        .filter(|name| name.ends_with(".rs") && !name.contains(' '))
        .filter(|name| !files.iter().any(|file| file == *name || file.ends_with(&format!("/{name}"))))
        .collect();
    ensure!(missing.is_empty(), "ARCHITECTURE.md names files that do not exist: {missing:?}");
    Ok(())
}

#[test]
fn the_checks_see_what_they_must() {
    let names = ["report/html.rs", "peers/", "lib.rs"];
    assert!(is_named("crates/prefork-scoreboard/src/report/html.rs", &names));
    assert!(is_named("xtask/src/peers/chart.rs", &names));
    assert!(is_named("tests/src/lib.rs", &names));
    assert!(!is_named("crates/x/src/other.rs", &names));
    assert_eq!(quoted("a `b.rs` c `d/` e"), ["b.rs", "d/"]);
}
