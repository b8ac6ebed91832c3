//! The committed fuzz corpus (`fuzz/corpus/<target>/*`) through the fuzz targets' checks, as
//! ordinary tests: what `cargo xtask fuzz` found interesting keeps being checked without
//! nightly. A corpus file that fails names itself; reproduce it under the fuzzer with
//! `cargo +nightly fuzz run <target> fuzz/corpus/<target>/<file>`.

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.map(|e| e.path()).unwrap_or_else(|e| panic!("{e}")))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{}: only {} seed inputs",
        dir.display(),
        files.len()
    );
    files
}

fn run(target: &str) {
    let check = fuzz_checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, check)| *check)
        .unwrap_or_else(|| panic!("no target {target}"));
    let mut failed = Vec::new();
    for file in corpus(target) {
        let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: failing inputs: {failed:#?}");
}

#[test]
fn csv_source_corpus() {
    run("csv_source");
}

#[test]
fn jsonl_source_corpus() {
    run("jsonl_source");
}

#[test]
fn segment_filter_corpus() {
    run("segment_filter");
}

#[test]
fn config_corpus() {
    run("config");
}

#[test]
fn normalize_corpus() {
    run("normalize");
}

/// Every target has a fuzz target file and a corpus, and nothing else is in `fuzz/`.
#[test]
fn every_target_is_wired() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).unwrap_or_default();
    for (name, _) in fuzz_checks::TARGETS {
        let source = fuzz.join("fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&source)
            .unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        assert!(
            text.contains(&format!("fuzz_checks::{name}::check")),
            "{}",
            source.display()
        );
        assert!(manifest.contains(&format!("name = \"{name}\"")), "{name}");
        assert!(fuzz.join("corpus").join(name).is_dir(), "{name}");
    }
}
