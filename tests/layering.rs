//! The `weir` crate is a stack of layers, each using only the layers below it
//! (ARCHITECTURE.md opens with the diagram). This test reads the sources and
//! fails on an import from a layer above or beside, naming the file and the
//! line, and on a source file grown past the size where it should be split.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// The layers from the bottom up. A module may use the modules of lower
/// layers only; modules on one layer do not use each other.
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["clock", "config", "failpoint", "fxhash", "logging", "stats"],
    &["checkpoint"],
    &["connectors"],
    &["task"],
    &["state"],
    &["runtime"],
    &["graph"],
    &["distributed"],
    &["ui"],
];

/// Files above this many lines are split along a real seam (STYLE.md rule 7).
const MAX_LINES: usize = 850;

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for lib.rs).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib").then_some(name)
}

/// The lines of `text` that are code: comments and `#[cfg(test)]` modules
/// removed (tests may reach anywhere), with their line numbers.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let (mut skipping, mut depth, mut cfg_test) = (false, 0i64, false);
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if skipping {
            depth += line.matches('{').count() as i64 - line.matches('}').count() as i64;
            skipping = depth > 0;
            continue;
        }
        if trimmed.starts_with("#[cfg(test)]") {
            cfg_test = true;
            continue;
        }
        if cfg_test {
            cfg_test = false;
            if trimmed.contains("mod ") && trimmed.ends_with('{') {
                depth = line.matches('{').count() as i64 - line.matches('}').count() as i64;
                skipping = depth > 0;
                continue;
            }
        }
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        out.push((i + 1, code.to_string()));
    }
    out
}

/// The top-level modules named by `crate::x` paths and `use crate::{x, y}` groups on one line.
fn crate_modules(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or("");
            for item in inner.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.push(name);
            }
        } else {
            found.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    found
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else { continue };
        let Some(own) = layer_of(&module) else {
            violations.push(format!(
                "{}: module `{module}` is in no layer: add it to LAYERS (and to ARCHITECTURE.md's diagram)",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (number, line) in code_lines(&text) {
            for used in crate_modules(&line) {
                if used == module || used.is_empty() || used.chars().next().is_some_and(char::is_uppercase) {
                    continue; // itself, or an item re-exported at the root (`crate::WeirError`)
                }
                match layer_of(&used) {
                    Some(other) if other < own => {}
                    Some(other) => violations.push(format!(
                        "{}:{number}: `{module}` (layer {own}) uses `{used}` (layer {other}): layers only look down",
                        file.display()
                    )),
                    None => {}
                }
            }
        }
    }
    assert!(violations.is_empty(), "layering violations:\n{}", violations.join("\n"));
}

#[test]
fn the_layering_check_catches_an_upward_import() {
    let lines = code_lines(
        "use crate::graph::Job; // up\n// use crate::runtime::x;\n#[cfg(test)]\nmod tests {\n    use crate::runtime::y;\n}\nuse crate::{error, stats::Backlog};\n",
    );
    let used: Vec<String> = lines.iter().flat_map(|(_, l)| crate_modules(l)).collect();
    assert_eq!(used, ["graph", "error", "stats"]);
    assert!(layer_of("graph") > layer_of("connectors"));
}

#[test]
fn no_source_file_outgrows_a_reader() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "operators/src", "workloads/src", "cli/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    let big: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > MAX_LINES).then(|| format!("{} has {lines} lines", f.display()))
        })
        .collect();
    assert!(
        big.is_empty(),
        "split these along a real seam (at most {MAX_LINES} lines):\n{}",
        big.join("\n")
    );
}
