//! `cargo xtask fuzz [--seconds N] [--target NAME]`: builds the cargo-fuzz targets of `fuzz/`
//! with nightly and runs each for N seconds (default 60), one after the other, in one process
//! each; prints the executions of each and fails when any finds a crash.
//!
//! The targets are built in release with debug assertions and overflow checks, and without a
//! sanitizer: the workspace forbids `unsafe` and the targets reach no C code, so what the
//! fuzzer can find is a panic (a failed check, an overflow, an out-of-bounds index), a stack
//! overflow, a hang (`-timeout`) or a memory blow-up (`-rss_limit_mb`); AddressSanitizer would
//! halve the executions and find nothing more. Inputs the fuzzer finds interesting go to
//! `fuzz/work/NAME/` (ignored by git), crashes to `fuzz/artifacts/NAME/`, the fuzzer's output
//! to `fuzz/work/NAME.log`; the committed seeds in `fuzz/corpus/NAME/` are only read.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// The build options of every `cargo fuzz` command (they must agree, or `run` rebuilds).
const BUILD: [&str; 4] = ["-O", "-a", "-s", "none"];

/// What one target's run gave.
#[derive(Debug, Default)]
struct Outcome {
    runs: u64,
    seconds: u64,
    exec_per_sec: u64,
    coverage: String,
    corpus: String,
    crash: Option<String>,
}

pub(crate) fn fuzz(args: &[String], root: &Path) -> Result<(), String> {
    let seconds: u64 =
        match super::flag(args, "--seconds") {
            Some(s) => s.parse().ok().filter(|&s| s > 0).ok_or_else(|| {
                format!("--seconds {s}: expected a number of seconds (1 or more)")
            })?,
            None => 60,
        };
    let names: Vec<&str> = fuzz_checks::TARGETS.iter().map(|(n, _)| *n).collect();
    let targets: Vec<&str> = match super::flag(args, "--target") {
        Some(t) => match names.iter().find(|n| **n == t) {
            Some(n) => vec![*n],
            None => {
                return Err(format!(
                    "--target {t}: no such fuzz target (targets: {})",
                    names.join(", ")
                ))
            }
        },
        None => names.clone(),
    };
    if !nightly(root, &["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Err(
            "cargo xtask fuzz needs the nightly toolchain and cargo-fuzz: \
                    `rustup toolchain install nightly` and `cargo install cargo-fuzz --locked`"
                .into(),
        );
    }
    let mut build = vec!["fuzz", "build"];
    build.extend(BUILD);
    if let [one] = targets.as_slice() {
        build.push(one);
    }
    run_status(root, &build)?;

    let work = root.join("fuzz/work");
    let mut outcomes = Vec::new();
    for target in &targets {
        let dir = work.join(target);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let outcome = run_target(root, target, seconds)?;
        outcomes.push((*target, outcome));
    }

    println!("cargo xtask fuzz: {seconds} s per target (release, debug assertions, no sanitizer)");
    println!(
        "  {:<15} {:>12} {:>8} {:>9}  {:<16} {:<22} result",
        "target", "executions", "seconds", "exec/s", "coverage", "corpus (inputs/bytes)"
    );
    let mut crashed = Vec::new();
    for (target, o) in &outcomes {
        let result = match &o.crash {
            None => "ok".to_owned(),
            Some(c) => {
                crashed.push(*target);
                format!("CRASH: {c}")
            }
        };
        println!(
            "  {target:<15} {:>12} {:>8} {:>9}  {:<16} {:<22} {result}",
            o.runs, o.seconds, o.exec_per_sec, o.coverage, o.corpus
        );
    }
    if crashed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} found a crash (reproduce: cargo +nightly fuzz run {} TARGET ARTIFACT)",
            crashed.join(", "),
            BUILD.join(" ")
        ))
    }
}

/// `cargo +nightly ARGS` in the repository, with nothing of the stable cargo that runs xtask
/// in its environment (its `CARGO`, toolchain and target directory: the fuzz build goes to
/// `fuzz/target`).
fn nightly(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo"])
        .args(args)
        .current_dir(root);
    for var in [
        "CARGO",
        "CARGO_TARGET_DIR",
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn run_status(root: &Path, args: &[&str]) -> Result<(), String> {
    eprintln!("$ cargo +nightly {}", args.join(" "));
    let status = nightly(root, args)
        .status()
        .map_err(|e| format!("running rustup: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "cargo +nightly {} failed ({status})",
            args.join(" ")
        ))
    }
}

/// Runs one target for `seconds`, echoing libFuzzer's progress lines and keeping its whole
/// output in `fuzz/work/TARGET.log`.
fn run_target(root: &Path, target: &str, seconds: u64) -> Result<Outcome, String> {
    let work = format!("fuzz/work/{target}");
    let seeds = format!("fuzz/corpus/{target}");
    let max_time = format!("-max_total_time={seconds}");
    let mut args = vec!["fuzz", "run"];
    args.extend(BUILD);
    args.extend([
        target,
        &work,
        &seeds,
        "--",
        &max_time,
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
    ]);
    eprintln!("$ cargo +nightly {}", args.join(" "));
    let log_path = root.join(format!("fuzz/work/{target}.log"));
    let mut log =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut child = nightly(root, &args)
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running rustup: {e}"))?;
    let mut o = Outcome::default();
    let mut panic_line = None;
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line.map_err(|e| format!("reading the fuzzer's output: {e}"))?;
            let _ = writeln!(log, "{line}");
            let progress = line.starts_with('#')
                && (line.contains("pulse ") || line.contains("DONE ") || line.contains("INITED "));
            let trouble = line.contains("panicked")
                || line.contains("ERROR")
                || line.contains("SUMMARY")
                || line.contains("Test unit written")
                || line.contains("deadly signal");
            if progress || trouble {
                eprintln!("  [{target}] {line}");
            }
            parse_line(&line, &mut o);
            if line.contains("panicked at") && panic_line.is_none() {
                panic_line = Some(line.trim().to_owned());
            }
            if let Some(path) = line.split("Test unit written to ").nth(1) {
                o.crash = Some(path.trim().to_owned());
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for the fuzzer: {e}"))?;
    if !status.success() && o.crash.is_none() {
        o.crash = Some(format!("exit {status}; see {}", log_path.display()));
    }
    if let (Some(c), Some(p)) = (&mut o.crash, panic_line) {
        c.push_str(&format!(" ({p})"));
    }
    Ok(o)
}

/// Picks the figures out of libFuzzer's output: `#N DONE cov: C ft: F corp: I/Sb ...`,
/// `Done N runs in S second(s)` and the final `stat::` lines.
fn parse_line(line: &str, o: &mut Outcome) {
    let word_after = |key: &str| {
        line.split_whitespace()
            .skip_while(|w| *w != key)
            .nth(1)
            .map(str::to_owned)
    };
    if line.starts_with('#') && (line.contains("DONE ") || line.contains("pulse ")) {
        if let Some(c) = word_after("cov:") {
            o.coverage = format!("{c} edges");
        }
        if let Some(c) = word_after("corp:") {
            o.corpus = c;
        }
    }
    if let Some(rest) = line.strip_prefix("Done ") {
        let mut words = rest.split_whitespace();
        o.runs = words.next().and_then(|n| n.parse().ok()).unwrap_or(o.runs);
        o.seconds = words
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(o.seconds);
    }
    if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
        o.runs = n.trim().parse().unwrap_or(o.runs);
    }
    if let Some(n) = line.strip_prefix("stat::average_exec_per_sec:") {
        o.exec_per_sec = n.trim().parse().unwrap_or(o.exec_per_sec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libfuzzer_figures_are_read() {
        let mut o = Outcome::default();
        for line in [
            "#1048576\tpulse  cov: 1200 ft: 3000 corp: 300/20Kb lim: 4096 exec/s: 3000 rss: 60Mb",
            "#1800000\tDONE   cov: 1234 ft: 5678 corp: 321/25Kb lim: 4096 exec/s: 3000 rss: 64Mb",
            "Done 1800000 runs in 601 second(s)",
            "stat::number_of_executed_units: 1800001",
            "stat::average_exec_per_sec:     2995",
        ] {
            parse_line(line, &mut o);
        }
        assert_eq!(o.runs, 1_800_001);
        assert_eq!(o.seconds, 601);
        assert_eq!(o.exec_per_sec, 2995);
        assert_eq!(o.coverage, "1234 edges");
        assert_eq!(o.corpus, "321/25Kb");
        assert!(o.crash.is_none());
    }
}
