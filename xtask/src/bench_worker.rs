//! One benchmark phase per process, reporting JSON on stdout. Run by `cargo xtask bench`.

use std::path::Path;
use std::time::Instant;

use runner::config::Project;
use state_store::StateStore;
use sync_core::plan::{ContactChange, Refresh, RowOutcome};

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (phase, dir) = match (args.first(), args.get(1)) {
        (Some(p), Some(d)) => (p.as_str(), Path::new(d)),
        _ => return Err("usage: bench-worker gen|first|replan DIR [...]".into()),
    };
    let config = dir.join("attentive-sync.toml");
    match phase {
        "gen" => {
            let rows: u64 = args.get(2).and_then(|s| s.parse().ok()).ok_or("rows")?;
            let attrs: usize = args.get(3).and_then(|s| s.parse().ok()).ok_or("attrs")?;
            runner::sample::write_bench_project(dir, rows, attrs, 42).map_err(|e| e.to_string())?;
            let _ = std::fs::remove_file(dir.join("attentive-sync.db"));
            let _ = std::fs::remove_file(dir.join("attentive-sync.db-wal"));
            let _ = std::fs::remove_file(dir.join("attentive-sync.db-shm"));
            let bytes = std::fs::metadata(dir.join("model.csv"))
                .map(|m| m.len())
                .unwrap_or(0);
            println!("{}", serde_json::json!({ "model_bytes": bytes }));
        }
        "first" | "replan" => {
            let full_ack = args.get(2).map(String::as_str) != Some("fingerprints");
            let project = Project::parse(
                &config,
                &std::fs::read_to_string(&config).map_err(|e| e.to_string())?,
                &|_| None,
            )
            .map_err(|e| e.to_string())?;
            let mut store = StateStore::open(&project.state_path).map_err(|e| e.to_string())?;
            let reader = StateStore::open(&project.state_path).map_err(|e| e.to_string())?;
            let mut changes: Vec<ContactChange> = Vec::new();
            let mut refreshes: Vec<Refresh> = Vec::new();
            let mut ack_seconds = 0.0;
            let mut ack = |store: &mut StateStore,
                           mapping: &sync_core::BoundMapping,
                           changes: &mut Vec<ContactChange>,
                           refreshes: &mut Vec<Refresh>|
             -> Result<(), String> {
                let t = Instant::now();
                if full_ack {
                    store
                        .apply_changes("bench", 1, mapping, changes)
                        .map_err(|e| e.to_string())?;
                } else {
                    let r: Vec<Refresh> = changes
                        .iter()
                        .map(|c| Refresh {
                            contact: c.contact.clone(),
                            key_hash: c.key_hash,
                            row_fingerprint: c.row_fingerprint,
                        })
                        .collect();
                    store
                        .apply_refreshes("bench", 1, &r)
                        .map_err(|e| e.to_string())?;
                }
                store
                    .apply_refreshes("bench", 1, refreshes)
                    .map_err(|e| e.to_string())?;
                changes.clear();
                refreshes.clear();
                ack_seconds += t.elapsed().as_secs_f64();
                Ok(())
            };
            let started = Instant::now();
            let acknowledge = phase == "first";
            let mut last_mapping = None;
            let (counts, _, _) = runner::plan::plan_rows(
                &project,
                "bench",
                &reader,
                Default::default(),
                &|_| {},
                &mut |mapping, p, _| {
                    if acknowledge {
                        match &p.outcome {
                            RowOutcome::Changed(c) => changes.push(c.clone()),
                            RowOutcome::Unchanged {
                                refresh: Some(r), ..
                            } => refreshes.push(r.clone()),
                            _ => {}
                        }
                        if changes.len() >= 50_000 {
                            ack(&mut store, mapping, &mut changes, &mut refreshes)
                                .map_err(runner::plan::Error::Config)?;
                        }
                        if last_mapping.is_none() {
                            last_mapping = Some(mapping.clone());
                        }
                    }
                    Ok(())
                },
            )
            .map_err(|e| format!("{e:#?}"))?;
            if let Some(m) = &last_mapping {
                ack(&mut store, m, &mut changes, &mut refreshes)?;
            }
            let seconds = started.elapsed().as_secs_f64() - ack_seconds;
            let mut out = serde_json::json!({
                "rows": counts.rows,
                "changed": counts.changed,
                "unchanged": counts.unchanged,
                "rejected": counts.rejected,
                "seconds": seconds,
                "rows_per_sec": counts.rows as f64 / seconds.max(1e-9),
                "peak_rss_mb": peak_rss_mb(),
            });
            if acknowledge {
                out["ack_seconds"] = serde_json::json!(ack_seconds);
            }
            println!("{out}");
        }
        other => return Err(format!("unknown phase {other}")),
    }
    Ok(())
}
