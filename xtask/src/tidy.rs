//! The architecture invariants of docs/ARCHITECTURE.md, as tests over the source tree (in the
//! manner of rust-analyzer's `tidy`): they run with every `cargo test --workspace`.
//!
//! - `core` does no I/O and reads no clock or environment;
//! - only `state-store` and `sources` use `rusqlite` (others only in their tests);
//! - only `attentive-client` knows Attentive's paths (the simulator, its test double, parses
//!   them on its own);
//! - dependencies between the workspace's crates point down the layers.

#![cfg(test)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

/// The non-test Rust files under `dir`: `tests.rs`, `tests/` folders and `#[cfg(test)]`
/// modules' files are left out (a test may use what the code may not).
fn code_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("a directory entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if name != "tests" {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") && name != "tests.rs" {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The code of a file without its `#[cfg(test)] mod tests { .. }` block (braces counted;
/// good enough for this workspace's test modules).
fn without_test_module(text: &str) -> String {
    let marker = "#[cfg(test)]\nmod tests {";
    let Some(start) = text.find(marker) else {
        return text.to_owned();
    };
    let mut depth = 0usize;
    let mut end = text.len();
    for (i, c) in text[start + marker.len() - 1..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    end = start + marker.len() - 1 + i + 1;
                    break;
                }
            }
            _ => {}
        }
    }
    // Keep the line count, so that hits after the module name their real line.
    let removed = text[start..end].lines().count().saturating_sub(1);
    format!("{}{}{}", &text[..start], "\n".repeat(removed), &text[end..])
}

/// Lines of the code under `dir` that contain one of `needles`, as `file:line: text`.
fn find(dir: &Path, needles: &[&str]) -> Vec<String> {
    let mut hits = Vec::new();
    for file in code_files(dir) {
        let text = std::fs::read_to_string(&file).expect("a source file");
        for (i, line) in without_test_module(&text).lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if needles.iter().any(|n| code.contains(n)) {
                hits.push(format!(
                    "{}:{}: {}",
                    file.strip_prefix(root()).unwrap_or(&file).display(),
                    i + 1,
                    line.trim()
                ));
            }
        }
    }
    hits
}

#[test]
fn core_does_no_io_and_reads_no_clock() {
    let hits = find(
        &root().join("crates/core/src"),
        &[
            "std::fs",
            "std::net",
            "std::env",
            "std::process",
            "Utc::now",
            "Local::now",
            "SystemTime",
            "tokio::",
            "reqwest",
        ],
    );
    assert!(
        hits.is_empty(),
        "core must stay free of I/O and clocks:\n{}",
        hits.join("\n")
    );
}

#[test]
fn only_the_state_store_and_sources_use_sqlite() {
    for krate in [
        "attentive-client",
        "core",
        "runner",
        "server",
        "cli",
        "attentive-sim",
        "notifications",
    ] {
        let hits = find(
            &root().join("crates").join(krate).join("src"),
            &["rusqlite"],
        );
        assert!(
            hits.is_empty(),
            "{krate} uses rusqlite:\n{}",
            hits.join("\n")
        );
        let manifest =
            std::fs::read_to_string(root().join("crates").join(krate).join("Cargo.toml"))
                .expect("a manifest");
        let deps = section(&manifest, "dependencies");
        assert!(
            !deps.contains("rusqlite"),
            "{krate} depends on rusqlite outside [dev-dependencies]"
        );
    }
}

#[test]
fn only_the_client_knows_attentive_paths() {
    for krate in [
        "core",
        "runner",
        "server",
        "cli",
        "state-store",
        "sources",
        "notifications",
    ] {
        let hits = find(
            &root().join("crates").join(krate).join("src"),
            &["\"/v1/", "\"/v2/", "api.attentivemobile.com/v"],
        );
        assert!(
            hits.is_empty(),
            "{krate} spells Attentive paths (they belong to attentive-client):\n{}",
            hits.join("\n")
        );
    }
}

/// The `[name]` section of a manifest (up to the next section).
fn section<'a>(manifest: &'a str, name: &str) -> &'a str {
    let header = format!("[{name}]");
    let Some(start) = manifest.find(&header) else {
        return "";
    };
    let rest = &manifest[start + header.len()..];
    let end = rest.find("\n[").unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn dependencies_point_down_the_layers() {
    // Package name → (folder, layer): core 0, adapters 1, wiring 2, frontends 3 (the CLI
    // embeds the server), tooling apart.
    let crates: &[(&str, &str, u32)] = &[
        ("attentive-sync-core", "core", 0),
        ("attentive-client", "attentive-client", 1),
        ("state-store", "state-store", 1),
        ("sources", "sources", 1),
        ("notifications", "notifications", 1),
        ("runner", "runner", 2),
        ("server", "server", 3),
        ("cli", "cli", 4),
    ];
    for (name, folder, layer) in crates {
        let manifest =
            std::fs::read_to_string(root().join("crates").join(folder).join("Cargo.toml"))
                .expect("a manifest");
        let deps = section(&manifest, "dependencies");
        for (other, _, other_layer) in crates {
            let uses = deps.lines().any(|l| {
                l.trim_start().starts_with(&format!("{other}."))
                    || l.trim_start().starts_with(&format!("{other} "))
            });
            if uses {
                assert!(
                    other_layer < layer,
                    "{name} (layer {layer}) depends on {other} (layer {other_layer}): dependencies point down"
                );
            }
        }
        if *folder != "cli" {
            assert!(
                !deps.contains("attentive-sim"),
                "{name} depends on the simulator outside its tests"
            );
        }
    }
    // The simulator is a test double: it depends on no workspace crate, so a client bug
    // cannot hide in a shared parser.
    let sim = std::fs::read_to_string(root().join("crates/attentive-sim/Cargo.toml"))
        .expect("a manifest");
    for (name, _, _) in crates {
        assert!(
            !section(&sim, "dependencies").contains(&format!("{name}.")),
            "attentive-sim depends on {name}"
        );
    }
}

#[test]
fn the_checks_see_what_they_look_for() {
    // A check that finds nothing because it looks nowhere would pass forever.
    assert!(!code_files(&root().join("crates/core/src")).is_empty());
    assert!(!find(&root().join("crates/state-store/src"), &["rusqlite"]).is_empty());
    assert!(!find(&root().join("crates/attentive-client/src"), &["\"/v2/"]).is_empty());
    assert!(section(
        "[a]\nx = 1\n[dependencies]\nrunner.workspace = true\n[b]\n",
        "dependencies"
    )
    .contains("runner."));
}
