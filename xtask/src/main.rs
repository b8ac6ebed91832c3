//! `cargo xtask <task>`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! - `cargo xtask ci`: what CI checks (fmt, clippy, cargo-deny, tests).
//! - `cargo xtask bench plan [--rows N] [--attrs A]`: planner throughput and peak memory.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench(&args[1..]),
        _ => Err("usage: cargo xtask ci | cargo xtask bench plan [--rows N] [--attrs A] [--ack full|fingerprints]".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo(args: &[&str]) -> Result<(), String> {
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(root())
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} failed ({status})", args.join(" ")))
    }
}

fn ci() -> Result<(), String> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo(&["deny", "check"])?;
    cargo(&["test", "--workspace"])
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn bench(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("plan") => {
            let rows = flag(args, "--rows").unwrap_or_else(|| "1000000".into());
            let attrs = flag(args, "--attrs").unwrap_or_else(|| "20".into());
            let ack = flag(args, "--ack").unwrap_or_else(|| "full".into());
            cargo(&[
                "build",
                "--release",
                "-q",
                "-p",
                "xtask",
                "--bin",
                "bench-worker",
            ])?;
            let worker = root().join("target/release/bench-worker");
            let dir = root().join(format!("target/bench/plan-{rows}x{attrs}"));
            let phase = |phase: &str, extra: &[&str]| -> Result<serde_json::Value, String> {
                let out = Command::new(&worker)
                    .arg(phase)
                    .arg(&dir)
                    .args(extra)
                    .output()
                    .map_err(|e| format!("running {}: {e}", worker.display()))?;
                if !out.status.success() {
                    return Err(format!(
                        "bench-worker {phase} failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                serde_json::from_slice(&out.stdout)
                    .map_err(|e| format!("bench-worker {phase} output: {e}"))
            };
            let gen = phase("gen", &[&rows, &attrs])?;
            eprintln!("model: {gen}");
            let first = phase("first", &[&ack])?;
            let again = phase("replan", &[])?;
            let rate = |v: &serde_json::Value| v["rows_per_sec"].as_f64().unwrap_or(0.0);
            println!(
                "bench plan: {rows} rows x {attrs} attributes (model {:.0} MB, ack = {ack})",
                gen["model_bytes"].as_f64().unwrap_or(0.0) / 1e6
            );
            for (name, v) in [("first plan", &first), ("no-change re-plan", &again)] {
                println!(
                    "  {name:<18} {:>12.0} rows/s  {:>7.2} s  peak RSS {:>6.0} MB  changed {:>9}  unchanged {:>9}{}",
                    rate(v),
                    v["seconds"].as_f64().unwrap_or(0.0),
                    v["peak_rss_mb"].as_f64().unwrap_or(0.0),
                    v["changed"],
                    v["unchanged"],
                    v.get("ack_seconds").map(|a| format!("  (+ {a:.1} s acknowledging into the store)")).unwrap_or_default(),
                );
            }
            println!(
                "  ratio re-plan / first plan rows/s: {:.2}",
                rate(&again) / rate(&first).max(1e-9)
            );
            Ok(())
        }
        _ => Err(
            "usage: cargo xtask bench plan [--rows N] [--attrs A] [--ack full|fingerprints]"
                .to_owned(),
        ),
    }
}
