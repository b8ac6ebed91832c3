//! `bench-worker server`: API latency under load while a run delivers.
//!
//! Starts the Attentive simulator in-process (rate limit `rate`/s, `latency_ms` per request)
//! with `contacts` known contacts, writes a project with two activations over the same model
//! (`baseline` and `loaded`, separate snapshots so each sends every contact), and starts the
//! real `attentive-sync serve` on loopback. Then:
//!
//! 1. starts `baseline` through the API and waits for it: its delivery rate alone;
//! 2. starts `loaded` and, until it finishes, keeps `readers` concurrent clients reading
//!    `GET /api/v1/runs` in a loop (each waits for its answer before asking again);
//!
//! and reports the readers' latency percentiles and the ratio of the two delivery rates.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::seeded_sim;

const TOKEN: &str = "bench-server-token-0123456789";

/// Kills the server when the benchmark ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe
        .parent()
        .map(|d| d.join("attentive-sync"))
        .ok_or("no folder for the bench worker")?;
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} is not built (cargo xtask bench server builds it)",
            bin.display()
        ))
    }
}

/// Starts `attentive-sync serve` and returns it with the address it listens on.
fn start_server(dir: &Path) -> Result<(Server, String), String> {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(server_binary()?)
        .args(["serve", "--config"])
        .arg(dir.join("attentive-sync.toml"))
        .args(["--listen", "127.0.0.1:0"])
        .env("ATTENTIVE_API_KEY", attentive_sim::DEFAULT_KEY)
        .env("ATTENTIVE_SYNC_SERVER_TOKEN", TOKEN)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting attentive-sync serve: {e}"))?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                if let Some(at) = line.find("listening on http://") {
                    let addr = line[at + "listening on http://".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    // Keep draining the server's output so it never blocks on a full pipe.
                    std::thread::spawn(move || while rx.recv().is_ok() {});
                    return Ok((server, format!("http://{addr}")));
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    Err(format!("the server did not say where it listens:\n{seen}"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A run as the API reports it: (status, requests sent to Attentive, duration in seconds).
/// Requests, not contacts: the second run finds every contact in the existence cache the
/// first one filled, so it sends one request per contact instead of two.
async fn wait_for_run(
    http: &reqwest::Client,
    base: &str,
    id: i64,
) -> Result<(String, u64, f64), String> {
    loop {
        let run: serde_json::Value = http
            .get(format!("{base}/api/v1/runs/{id}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let status = run["status"].as_str().unwrap_or("?").to_owned();
        if status != "running" {
            let updated = run["report"]["delivery"]["requests"].as_u64().unwrap_or(0);
            let seconds = run["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0;
            return Ok((status, updated, seconds));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_run(http: &reqwest::Client, base: &str, activation: &str) -> Result<i64, String> {
    let resp = http
        .post(format!("{base}/api/v1/activations/{activation}/runs"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("starting {activation}: {status} {body}"));
    }
    body["run_id"]
        .as_i64()
        .or_else(|| body["id"].as_i64())
        .ok_or_else(|| format!("no run id in {body}"))
}

pub(crate) fn run(
    dir: &Path,
    contacts: u64,
    readers: usize,
    rate: u32,
    latency_ms: u64,
) -> Result<serde_json::Value, String> {
    let sim = seeded_sim(dir, contacts, rate, latency_ms)?;
    let activation = |name: &str| {
        format!(
            "[activations.{name}]\nmodel = \"m\"\ndestination = \"attentive\"\n\
             identifier = {{ column = \"email\", kind = \"email\" }}\n\
             [activations.{name}.standard]\nfirst_name = \"first_name\"\n\
             [activations.{name}.custom]\n\"Tier\" = \"tier\"\n\n"
        )
    };
    let config = format!(
        "[destinations.attentive]\napi_key = \"${{ATTENTIVE_API_KEY}}\"\nbase_url = \"{}\"\n\
         requests_per_second = {rate}\n\n[models.m]\nsource = \"csv\"\npath = \"model.csv\"\n\n{}{}",
        sim.base_url(),
        activation("baseline"),
        activation("loaded"),
    );
    std::fs::write(dir.join("attentive-sync.toml"), &config).map_err(|e| e.to_string())?;
    let (_server, base) = start_server(dir)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(readers + 8)
            .build()
            .map_err(|e| e.to_string())?;

        // 1. The delivery rate of a run alone.
        let id = start_run(&http, &base, "baseline").await?;
        let (status, requests, seconds) = wait_for_run(&http, &base, id).await?;
        if status != "succeeded" {
            return Err(format!("the baseline run ended {status}"));
        }
        let alone = requests as f64 / seconds.max(1e-9);

        // 2. The same run with `readers` clients reading the runs list until it ends.
        let done = Arc::new(AtomicBool::new(false));
        let id = start_run(&http, &base, "loaded").await?;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..readers {
            let (http, base, done) = (http.clone(), base.clone(), done.clone());
            tasks.spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                while !done.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let ok = match http
                        .get(format!("{base}/api/v1/runs?limit=20"))
                        .bearer_auth(TOKEN)
                        .send()
                        .await
                    {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if ok {
                        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            });
        }
        let result = wait_for_run(&http, &base, id).await;
        done.store(true, Ordering::Relaxed);
        let mut latencies = Vec::new();
        let mut errors = 0;
        while let Some(joined) = tasks.join_next().await {
            let (l, e) = joined.map_err(|e| e.to_string())?;
            latencies.extend(l);
            errors += e;
        }
        let (status, requests, seconds) = result?;
        if status != "succeeded" {
            return Err(format!("the loaded run ended {status}"));
        }
        let loaded = requests as f64 / seconds.max(1e-9);
        latencies.sort_by(f64::total_cmp);
        Ok(serde_json::json!({
            "contacts": contacts,
            "readers": readers,
            "requests": latencies.len(),
            "errors": errors,
            "requests_per_sec": latencies.len() as f64 / seconds.max(1e-9),
            "p50_ms": percentile(&latencies, 50.0),
            "p90_ms": percentile(&latencies, 90.0),
            "p99_ms": percentile(&latencies, 99.0),
            "max_ms": latencies.last().copied().unwrap_or(0.0),
            "alone_requests_per_sec": alone,
            "loaded_requests_per_sec": loaded,
            "delivery_ratio": loaded / alone.max(1e-9),
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
