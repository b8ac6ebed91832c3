//! One benchmark phase per process, reporting JSON on stdout. Run by `cargo xtask bench`.

mod bench_server;
mod bench_source;

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

/// The state file's size once its write-ahead log is checkpointed into it.
fn state_bytes(path: &Path) -> Result<u64, String> {
    let conn = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(|e| e.to_string())?;
    drop(conn);
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| e.to_string())
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (phase, dir) = match (args.first(), args.get(1)) {
        (Some(p), Some(d)) => (p.as_str(), Path::new(d)),
        _ => {
            return Err(
                "usage: bench-worker gen|first|replan|deliver|source-gen|source-read DIR [...]"
                    .into(),
            )
        }
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
            let ack_mode = args.get(2).map(String::as_str).unwrap_or("full");
            let full_ack = ack_mode == "full";
            // Changes acknowledged per transaction.
            let ack_batch: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(20_000);
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
                           mapping: &sync_core::mapping::BoundMapping,
                           changes: &mut Vec<ContactChange>,
                           refreshes: &mut Vec<Refresh>|
             -> Result<(), state_store::Error> {
                let t = Instant::now();
                if full_ack {
                    store.apply_changes("bench", 1, mapping, changes)?;
                } else {
                    let r: Vec<Refresh> = changes
                        .iter()
                        .map(|c| Refresh {
                            contact: c.contact.clone(),
                            key_hash: c.key_hash,
                            row_fingerprint: c.row_fingerprint,
                        })
                        .collect();
                    store.apply_refreshes("bench", 1, &r)?;
                }
                store.apply_refreshes("bench", 1, refreshes)?;
                changes.clear();
                refreshes.clear();
                ack_seconds += t.elapsed().as_secs_f64();
                Ok(())
            };
            let started = Instant::now();
            // `none`: plan only, as `attentive-sync plan` does (nothing is written).
            let acknowledge = phase == "first" && ack_mode != "none";
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
                        if changes.len() >= ack_batch {
                            ack(&mut store, mapping, &mut changes, &mut refreshes)
                                .map_err(runner::plan::Error::Store)?;
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
                ack(&mut store, m, &mut changes, &mut refreshes).map_err(|e| e.to_string())?;
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
                out["acked_per_sec"] =
                    serde_json::json!(counts.changed as f64 / ack_seconds.max(1e-9));
                drop(store);
                drop(reader);
                out["state_bytes"] = serde_json::json!(state_bytes(&project.state_path)?);
            }
            println!("{out}");
        }
        "deliver" => {
            let contacts: u64 = args.get(2).and_then(|s| s.parse().ok()).ok_or("contacts")?;
            let latency_ms: u64 = args.get(3).and_then(|s| s.parse().ok()).ok_or("latency")?;
            let rate: u32 = args.get(4).and_then(|s| s.parse().ok()).ok_or("rate")?;
            let existence = match args.get(5).map(String::as_str) {
                None | Some("graphql") => attentive_client::ExistenceStrategy::Graphql,
                Some("subscriptions") => attentive_client::ExistenceStrategy::Subscriptions,
                Some(other) => return Err(format!("unknown existence check {other}")),
            };
            let absent = args.get(6).is_some_and(|a| a == "absent");
            let scope = match args.get(7).map(String::as_str) {
                None | Some("endpoint") => attentive_client::RateLimitScope::Endpoint,
                Some("key") => attentive_client::RateLimitScope::Key,
                Some(other) => return Err(format!("unknown scope {other}")),
            };
            let sim_per_key = args.get(8).is_some_and(|a| a == "sim-key");
            let mode = args.get(9).cloned().unwrap_or_else(|| "realtime".into());
            if !matches!(mode.as_str(), "realtime" | "bulk" | "auto") {
                return Err(format!("unknown delivery mode {mode}"));
            }
            let known = args.get(10).is_some_and(|a| a == "known");
            let setup = Deliver {
                existence,
                absent,
                scope,
                sim_per_key,
                mode,
                known,
            };
            println!("{}", deliver(dir, contacts, latency_ms, rate, &setup)?);
        }
        "server" => {
            let num = |i: usize, what: &str| -> Result<u64, String> {
                args.get(i)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| what.to_owned())
            };
            let (contacts, readers) = (num(2, "contacts")?, num(3, "readers")?);
            let (rate, latency) = (num(4, "rate")?, num(5, "latency")?);
            let rate = u32::try_from(rate).map_err(|e| e.to_string())?;
            let readers = usize::try_from(readers).map_err(|e| e.to_string())?;
            println!(
                "{}",
                bench_server::run(dir, contacts, readers, rate, latency)?
            );
        }
        "source-gen" => {
            let rows: u64 = args.get(2).and_then(|s| s.parse().ok()).ok_or("rows")?;
            let pg_url = args.get(3).ok_or("PostgreSQL URL")?;
            println!("{}", bench_source::generate(dir, rows, pg_url)?);
        }
        "source-read" => {
            // source-read DIR SOURCE ours|raw ROWS PG_URL
            let source = args.get(2).ok_or("source")?;
            let kind = args.get(3).ok_or("ours|raw")?;
            let rows: u64 = args.get(4).and_then(|s| s.parse().ok()).ok_or("rows")?;
            let pg_url = args.get(5).ok_or("PostgreSQL URL")?;
            let files = bench_source::Files::in_dir(dir);
            let measured = match kind.as_str() {
                "ours" => bench_source::ours(source, &files, pg_url)?,
                "raw" => bench_source::raw(source, &files, pg_url, rows)?,
                other => return Err(format!("unknown kind {other}")),
            };
            if measured.rows != rows {
                return Err(format!(
                    "{source} {kind}: read {} rows, expected {rows}",
                    measured.rows
                ));
            }
            println!("{}", measured.json(source, kind));
        }
        other => return Err(format!("unknown phase {other}")),
    }
    Ok(())
}

/// A fresh `dir` holding `model.csv` (`email,first_name,tier` for `user0..user{contacts-1}`
/// at example.com), and the Attentive simulator started with those contacts, a rate limit of
/// `rate` per second and `latency_ms` on every request.
pub(crate) fn seeded_sim(
    dir: &Path,
    contacts: u64,
    rate: u32,
    latency_ms: u64,
) -> Result<attentive_sim::RunningSim, String> {
    sim_with(
        dir,
        contacts,
        rate,
        latency_ms,
        true,
        attentive_sim::RateLimitScope::Endpoint,
    )
}

/// [`seeded_sim`]; with `seed` false the simulator holds none of the model's contacts.
fn sim_with(
    dir: &Path,
    contacts: u64,
    rate: u32,
    latency_ms: u64,
    seed: bool,
    scope: attentive_sim::RateLimitScope,
) -> Result<attentive_sim::RunningSim, String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut model = String::from("email,first_name,tier\n");
    let mut sim_config = attentive_sim::SimConfig {
        rate_limit_per_second: rate,
        rate_limit_scope: scope,
        ..attentive_sim::SimConfig::default()
    };
    sim_config.faults.latency_ms = latency_ms;
    for i in 0..contacts {
        let email = format!("user{i}@example.com");
        model.push_str(&format!("{email},Name{i},gold\n"));
        if seed {
            sim_config
                .contacts
                .push(attentive_sim::SeedContact::email(email));
        }
    }
    std::fs::write(dir.join("model.csv"), model).map_err(|e| e.to_string())?;
    let sim = attentive_sim::RunningSim::spawn_on_thread(sim_config).map_err(|e| e.to_string())?;
    Ok(sim)
}

/// Runs one activation of `contacts` changed contacts against the simulator (its rate limit
/// `rate` per second, `latency_ms` per request) and reports the share of the budget used.
/// How `deliver` runs.
struct Deliver {
    existence: attentive_client::ExistenceStrategy,
    /// Attentive has none of the contacts (lookups only).
    absent: bool,
    /// The client's budgets.
    scope: attentive_client::RateLimitScope,
    /// The simulator limits each key as a whole (not each endpoint).
    sim_per_key: bool,
    /// `delivery` of the activation.
    mode: String,
    /// The state's existence cache knows every contact exists (no lookups).
    known: bool,
}

fn deliver(
    dir: &Path,
    contacts: u64,
    latency_ms: u64,
    rate: u32,
    setup: &Deliver,
) -> Result<serde_json::Value, String> {
    use std::sync::Arc;
    let scope = if setup.sim_per_key {
        attentive_sim::RateLimitScope::Key
    } else {
        attentive_sim::RateLimitScope::Endpoint
    };
    let sim = sim_with(dir, contacts, rate, latency_ms, !setup.absent, scope)?;
    let config = format!(
        "[destinations.attentive]\napi_key = \"${{ATTENTIVE_API_KEY}}\"\nbase_url = \"{}\"\nrequests_per_second = {rate}\n\n[models.m]\nsource = \"csv\"\npath = \"model.csv\"\n\n[activations.a]\nmodel = \"m\"\ndestination = \"attentive\"\nidentifier = {{ column = \"email\", kind = \"email\" }}\ndelivery = \"{}\"\n[activations.a.standard]\nfirst_name = \"first_name\"\n[activations.a.custom]\n\"Tier\" = \"tier\"\n",
        sim.base_url(),
        setup.mode
    );
    let path = dir.join("attentive-sync.toml");
    std::fs::write(&path, &config).map_err(|e| e.to_string())?;
    let key = |n: &str| (n == "ATTENTIVE_API_KEY").then(|| attentive_sim::DEFAULT_KEY.to_owned());
    let project = Project::parse(&path, &config, &key).map_err(|e| e.to_string())?;
    let client_config = attentive_client::ClientConfig {
        base_url: sim.base_url(),
        requests_per_second: f64::from(rate),
        existence_check: setup.existence,
        rate_limit_scope: setup.scope,
        ..attentive_client::ClientConfig::new(attentive_client::ApiKey::new(
            attentive_sim::DEFAULT_KEY.into(),
        ))
    };
    if setup.known {
        let known: Vec<_> = (0..contacts)
            .map(|i| {
                (
                    sync_core::ports::ContactRef {
                        kind: sync_core::mapping::IdentifierKind::Email,
                        key: format!("user{i}@example.com"),
                    },
                    sync_core::ports::Existence::Exists,
                )
            })
            .collect();
        let mut store =
            state_store::StateStore::open(&project.state_path).map_err(|e| e.to_string())?;
        store
            .record_existence("attentive", &known)
            .map_err(|e| e.to_string())?;
    }
    let client = Arc::new(attentive_client::Client::new(client_config).map_err(|e| e.to_string())?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    // When delivery ends and the run starts waiting for its bulk jobs.
    let submitted = Arc::new(std::sync::Mutex::new(None::<f64>));
    let on_progress = {
        let submitted = submitted.clone();
        Arc::new(move |p: runner::run::Progress| {
            if p.waiting {
                let mut s = submitted
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                s.get_or_insert(started.elapsed().as_secs_f64());
            }
        })
    };
    let opts = runner::run::RunOptions {
        poll_every: std::time::Duration::from_millis(200),
        ..runner::run::RunOptions::default()
    };
    let report = runtime
        .block_on(runner::run::run(&project, "a", client, opts, on_progress))
        .map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    let submitted_s = *submitted
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let bulk_requests = sim
        .counters()
        .by_endpoint
        .get("POST /v2/bulk/user/attributes")
        .map_or(0, |m| m.values().sum::<u64>());
    let write_requests = bulk_requests
        + sim
            .counters()
            .by_endpoint
            .get("POST /v2/user/attributes")
            .map_or(0, |m| m.values().sum::<u64>());
    let counters = sim.counters();
    let served = counters.total;
    let lookups = counters
        .by_endpoint
        .iter()
        .filter(|(e, _)| e.as_str() == "POST /v1/graphql" || e.as_str() == "GET /v1/subscriptions")
        .flat_map(|(_, by_status)| by_status.values())
        .sum::<u64>();
    Ok(serde_json::json!({
        "contacts": contacts,
        "contacts_per_sec": (report.counts.updated + report.counts.not_found) as f64 / seconds,
        "existence_requests": lookups,
        "not_found": report.counts.not_found,
        "updated": report.counts.updated,
        "status": report.status,
        "requests": report.delivery.requests,
        "served_by_sim": served,
        "answered_429": counters.too_many_requests,
        "seconds": seconds,
        "requests_per_sec": report.delivery.requests as f64 / seconds,
        "budget_share": report.delivery.requests as f64 / seconds / f64::from(rate),
        "share_429": counters.too_many_requests as f64 / (served.max(1) as f64),
        "delivery_mode": report.delivery_mode,
        "bulk_jobs": report.bulk_jobs,
        "bulk_requests": bulk_requests,
        "write_requests": write_requests,
        "submitted_s": submitted_s,
        "pending": report.counts.pending,
    }))
}
