//! `cargo xtask soak bulk [--trials N] [--contacts N] [--seed S]`: the SIGKILL soak of bulk
//! delivery.
//!
//! The activation delivers in bulk jobs (`delivery = "bulk"`, 32 records a job) against the
//! in-process simulator, which processes each job after 600 ms, fails 5 % of records (500
//! lines, not applied) and 5 % of jobs as a whole, answers a status it has not documented
//! (`NEEDS_REVIEW`) to the first poll of each job, and cuts one result file in four short
//! (the records of the lost lines *were* applied). Requests see 3 % 5xx, 1 % dropped
//! connections and 10-30 ms of latency. Each trial edits some cells, starts the release
//! `attentive-sync run` and SIGKILLs it at a random moment (during planning, submission or
//! polling; one trial in five is left to finish). After every trial:
//!
//! - no contact is created (count and origins unchanged), no bulk record names a contact
//!   Attentive does not have, no subscription is touched (`violations()` empty);
//! - **no acknowledged value is lost**: every attribute the snapshot holds as acknowledged
//!   (not in doubt) is what the simulator holds;
//! - **re-sends stay within the records in flight**: a record that repeats values the
//!   simulator already held when the trial started is only sent for a contact that was in
//!   flight when the trial started (attributes in doubt, pending or failed, or in a record of
//!   a job not settled yet).
//!
//! Then faults go off, one clean run must finish (exit 0 or 3), the simulator must equal the
//! model, and a second run must send nothing but its `GET /v1/me`. The figures go to
//! docs/RELIABILITY.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use attentive_sim::{ContactOrigin, Faults, RunningSim, SeedContact, SimConfig};
use runner::sample::Rng;
use serde_json::Value;
use state_store::StateStore;

const ACTIVATION: &str = "soak";
const BULK: &str = "POST /v2/bulk/user/attributes";
const JOB: &str = "GET /v2/bulk/job/{id}";

fn faults(seed: u64, truncate: bool) -> Faults {
    Faults {
        error_rates: [(500, 0.02), (503, 0.01)].into_iter().collect(),
        latency_ms: 10,
        jitter_ms: 20,
        drop_rate: 0.01,
        bulk_record_error_rate: 0.05,
        bulk_job_failure_rate: 0.05,
        bulk_unknown_status_polls: 1,
        bulk_truncate_results: truncate,
        seed,
        ..Faults::default()
    }
}

fn config(base_url: &str) -> String {
    format!(
        r#"[state]
path = "attentive-sync.db"

[destinations.attentive]
api_key = "${{ATTENTIVE_API_KEY}}"
base_url = "{base_url}"

[models.people]
source = "csv"
path = "people.csv"

[activations.{ACTIVATION}]
model = "people"
destination = "attentive"
identifier = {{ column = "email", kind = "email" }}
delivery = "bulk"
bulk_batch_size = 32

[activations.{ACTIVATION}.standard]
first_name = "first_name"

[activations.{ACTIVATION}.custom]
"Tier" = "tier"
"#
    )
}

struct Options {
    trials: u64,
    contacts: u64,
    seed: u64,
}

/// One model row: its email, whether Attentive has it, and its two values.
struct Row {
    email: String,
    exists: bool,
    first_name: String,
    tier: String,
}

#[derive(Default)]
struct Totals {
    killed: u64,
    finished: u64,
    bulk_requests: u64,
    records: u64,
    resent: u64,
    polls: u64,
    edits: u64,
    jobs_open_at_kill: u64,
}

pub(crate) fn main(args: &[String]) -> Result<(), String> {
    let num = |name: &str, default: u64| super::number_flag(args, name, default);
    let opts = Options {
        trials: num("--trials", 30)?,
        contacts: num("--contacts", 600)?.max(40),
        seed: num("--seed", 1)?,
    };
    let bin = super::build_release_cli()?;
    let dir = super::target_dir().join(format!("soak/bulk-{}", opts.seed));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Soak::new(opts, bin, dir)?.run()
}

struct Soak {
    opts: Options,
    bin: PathBuf,
    dir: PathBuf,
    rng: Rng,
    sim: RunningSim,
    rows: Vec<Row>,
    existing: BTreeSet<String>,
    cursor: u64,
    edit_counter: u64,
    totals: Totals,
    failures: Vec<String>,
}

impl Soak {
    fn new(opts: Options, bin: PathBuf, dir: PathBuf) -> Result<Soak, String> {
        let mut rng = Rng::new(opts.seed);
        let rows: Vec<Row> = (0..opts.contacts)
            .map(|i| Row {
                email: format!("p{i}@example.com"),
                // One in twenty is not an Attentive contact: checked, never submitted.
                exists: rng.below(20) != 0,
                first_name: format!("F{i}"),
                tier: format!("t{i}"),
            })
            .collect();
        let existing: BTreeSet<String> = rows
            .iter()
            .filter(|r| r.exists)
            .map(|r| r.email.clone())
            .collect();
        let sim = RunningSim::spawn_on_thread(SimConfig {
            contacts: existing.iter().map(SeedContact::email).collect(),
            faults: faults(opts.seed, false),
            bulk_processing_delay_ms: 600,
            max_logged_requests: 10_000_000,
            apply_after_disconnect: true,
            ..SimConfig::default()
        })
        .map_err(|e| format!("starting the simulator: {e}"))?;
        std::fs::write(dir.join("attentive-sync.toml"), config(&sim.base_url()))
            .map_err(|e| e.to_string())?;
        Ok(Soak {
            opts,
            bin,
            dir,
            rng,
            sim,
            rows,
            existing,
            cursor: 0,
            edit_counter: 0,
            totals: Totals::default(),
            failures: Vec::new(),
        })
    }

    fn fail(&mut self, what: String) {
        eprintln!("  FAILED: {what}");
        self.failures.push(what);
    }

    fn write_model(&self) -> Result<(), String> {
        let mut csv = String::from("email,first_name,tier\n");
        for r in &self.rows {
            csv.push_str(&format!("{},{},{}\n", r.email, r.first_name, r.tier));
        }
        std::fs::write(self.dir.join("people.csv"), csv).map_err(|e| e.to_string())
    }

    /// Edits up to a fifth of the rows, each cell to a value it never had.
    fn edit(&mut self, trial: u64) {
        if trial == 0 {
            return;
        }
        let edits = self.rng.below(self.opts.contacts / 5 + 1);
        for _ in 0..edits {
            self.edit_counter += 1;
            let n = self.edit_counter;
            let i = self.rng.below(self.rows.len() as u64) as usize;
            if self.rng.below(2) == 0 {
                self.rows[i].first_name = format!("E{n}");
            } else {
                self.rows[i].tier = format!("e{n}");
            }
            self.totals.edits += 1;
        }
    }

    /// What the simulator holds: email → (firstName, Tier).
    fn held(&self) -> BTreeMap<String, (Option<String>, Option<String>)> {
        self.sim
            .contacts()
            .into_iter()
            .filter_map(|c| {
                let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
                Some((
                    c.email.clone()?,
                    (s(c.standard("firstName")), s(c.custom_value("Tier"))),
                ))
            })
            .collect()
    }

    /// Contacts in flight: with attributes in doubt (pending in a job, or failed), or in a
    /// record of a job not settled yet, from the state file.
    fn in_doubt(&self) -> Result<BTreeSet<String>, String> {
        let Some(store) = StateStore::open_existing_read_only(&self.dir.join("attentive-sync.db"))
            .map_err(|e| format!("opening the state store: {e}"))?
        else {
            return Ok(BTreeSet::new());
        };
        let mut out = BTreeSet::new();
        for r in &self.rows {
            for s in store.contact(&r.email).map_err(|e| e.to_string())? {
                if !s.in_doubt.is_empty() {
                    out.insert(r.email.clone());
                }
            }
        }
        // And contacts in records of jobs not settled yet: an older job that settles after a
        // newer one makes the value be sent once more (the order Attentive applied them in is
        // unknown).
        for job in store.open_jobs(ACTIVATION).map_err(|e| e.to_string())? {
            for r in store.job_records(job.id).map_err(|e| e.to_string())? {
                out.insert(r.contact.key);
            }
        }
        Ok(out)
    }

    /// No acknowledged value lost: every attribute the snapshot holds as acknowledged (not
    /// in doubt) is what the simulator holds.
    fn check_snapshot(&mut self, trial: u64) -> Result<(), String> {
        let Some(store) = StateStore::open_existing_read_only(&self.dir.join("attentive-sync.db"))
            .map_err(|e| format!("opening the state store: {e}"))?
        else {
            return Ok(());
        };
        let held = self.held();
        let mut lost = Vec::new();
        for r in &self.rows {
            for s in store.contact(&r.email).map_err(|e| e.to_string())? {
                for a in &s.attributes {
                    if s.in_doubt.iter().any(|d| d.key == a.key) {
                        continue;
                    }
                    let h = held.get(&r.email);
                    let sim = match a.key.as_str() {
                        "std:first_name" => h.and_then(|h| h.0.clone()),
                        "custom:Tier" => h.and_then(|h| h.1.clone()),
                        _ => continue,
                    };
                    if sim.as_deref() != Some(a.value.to_text().as_str()) {
                        lost.push(format!(
                            "{} {}: snapshot {:?}, Attentive {sim:?}",
                            r.email,
                            a.key,
                            a.value.to_text()
                        ));
                    }
                }
            }
        }
        drop(store);
        if !lost.is_empty() {
            self.fail(format!(
                "trial {trial}: {} acknowledged values are not what Attentive holds: {}",
                lost.len(),
                lost.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
            ));
        }
        Ok(())
    }

    fn spawn(&self, extra: &[&str]) -> Result<std::process::Child, String> {
        let stderr =
            std::fs::File::create(self.dir.join("last-run.stderr")).map_err(|e| e.to_string())?;
        Command::new(&self.bin)
            .args(["run", ACTIVATION, "--poll-every-secs", "0.1"])
            .args(extra)
            .current_dir(&self.dir)
            .env_remove("ATTENTIVE_SYNC_CONFIG")
            .env_remove("RUST_LOG")
            .env("ATTENTIVE_API_KEY", attentive_sim::DEFAULT_KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.bin.display()))
    }

    fn trial(&mut self, trial: u64) -> Result<(), String> {
        self.edit(trial);
        self.write_model()?;
        let truncate = self.rng.below(4) == 0;
        self.sim
            .set_faults(faults(self.opts.seed + trial, truncate))
            .map_err(|e| e.to_string())?;
        let held_before = self.held();
        let doubted = self.in_doubt()?;
        let kill = self.rng.below(5) != 0;
        let kill_after = Duration::from_millis(self.rng.below(1500));
        let spawned = Instant::now();
        let mut child = self.spawn(&[])?;
        loop {
            if child.try_wait().map_err(|e| e.to_string())?.is_some() {
                break;
            }
            if (kill && spawned.elapsed() >= kill_after)
                || spawned.elapsed() > Duration::from_secs(120)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill();
        let status = child.wait().map_err(|e| format!("reaping the run: {e}"))?;
        let killed = status.code().is_none();
        std::thread::sleep(Duration::from_millis(300));
        let (records, cursor) = self.sim.requests_since(self.cursor);
        self.cursor = cursor;

        let mut bulk_requests = 0;
        let mut sent = 0;
        let mut resent = 0;
        let mut polls = 0;
        for r in &records {
            match r.endpoint.as_str() {
                BULK => bulk_requests += 1,
                JOB => {
                    polls += 1;
                    continue;
                }
                _ => continue,
            }
            for u in r.body["users"].as_array().into_iter().flatten() {
                sent += 1;
                let Some(email) = u["identifiers"]["email"].as_str().map(str::to_owned) else {
                    self.fail(format!(
                        "trial {trial}: a bulk record without an email: {u}"
                    ));
                    continue;
                };
                if !self.existing.contains(&email) {
                    self.fail(format!(
                        "trial {trial}: a bulk record for {email}, which Attentive does not have"
                    ));
                }
                let held = held_before.get(&email);
                let first = u["attributes"]["firstName"].as_str();
                let tier = u["attributes"]["custom"]["Tier"].as_str();
                let repeats = first.is_none_or(|v| held.and_then(|h| h.0.as_deref()) == Some(v))
                    && tier.is_none_or(|v| held.and_then(|h| h.1.as_deref()) == Some(v));
                if repeats {
                    resent += 1;
                    if !doubted.contains(&email) {
                        self.fail(format!(
                            "trial {trial}: {email} was sent values Attentive already held, with nothing in doubt for it (seq {})",
                            r.seq
                        ));
                    }
                }
            }
        }
        let contacts = self.sim.contacts();
        if contacts.len() != self.existing.len() {
            self.fail(format!(
                "trial {trial}: the simulator has {} contacts, {} were seeded",
                contacts.len(),
                self.existing.len()
            ));
        }
        if let Some(c) = contacts.iter().find(|c| c.origin != ContactOrigin::Seed) {
            self.fail(format!(
                "trial {trial}: a contact was created: {:?}",
                c.email
            ));
        }
        let violations = self.sim.violations();
        if !violations.is_empty() {
            self.fail(format!("trial {trial}: violations: {violations:?}"));
        }
        self.check_snapshot(trial)?;
        let open = self.open_jobs()?;
        if killed {
            self.totals.killed += 1;
            self.totals.jobs_open_at_kill += open;
        } else {
            self.totals.finished += 1;
            let code = status.code().unwrap_or(-1);
            if code != 0 && code != 3 {
                let stderr =
                    std::fs::read_to_string(self.dir.join("last-run.stderr")).unwrap_or_default();
                self.fail(format!(
                    "trial {trial}: the run exited {code}: {}",
                    stderr.trim()
                ));
            }
        }
        self.totals.bulk_requests += bulk_requests;
        self.totals.records += sent;
        self.totals.resent += resent;
        self.totals.polls += polls;
        eprintln!(
            "trial {:>3}/{}: {} after {:>5} ms; {} requests, {bulk_requests} jobs submitted ({sent} records, {resent} re-sent to contacts in doubt), {polls} polls, {open} jobs open{}",
            trial + 1,
            self.opts.trials,
            if killed { "killed  " } else { "finished" },
            spawned.elapsed().as_millis(),
            records.len(),
            if truncate { ", result files cut short" } else { "" }
        );
        Ok(())
    }

    fn open_jobs(&self) -> Result<u64, String> {
        let Some(store) = StateStore::open_existing_read_only(&self.dir.join("attentive-sync.db"))
            .map_err(|e| format!("opening the state store: {e}"))?
        else {
            return Ok(0);
        };
        Ok(store
            .open_jobs(ACTIVATION)
            .map_err(|e| e.to_string())?
            .len() as u64)
    }

    /// Faults off: a clean run must finish and leave Attentive equal to the model, and the
    /// next run must send nothing.
    fn finish(&mut self) -> Result<(), String> {
        self.sim
            .set_faults(Faults::none())
            .map_err(|e| e.to_string())?;
        for round in 0..2 {
            let before = self.cursor;
            let mut child = self.spawn(&[])?;
            let status = child.wait().map_err(|e| e.to_string())?;
            let code = status.code().unwrap_or(-1);
            let (records, cursor) = self.sim.requests_since(before);
            self.cursor = cursor;
            if code != 0 && code != 3 {
                let stderr =
                    std::fs::read_to_string(self.dir.join("last-run.stderr")).unwrap_or_default();
                self.fail(format!(
                    "clean run {round}: exited {code}: {}",
                    stderr.trim()
                ));
            }
            let sent: Vec<&str> = records
                .iter()
                .map(|r| r.endpoint.as_str())
                .filter(|e| *e != "GET /v1/me")
                .collect();
            eprintln!(
                "clean run {round}: exit {code}, {} requests besides GET /v1/me",
                sent.len()
            );
            if round == 1 && !sent.is_empty() {
                self.fail(format!(
                    "the second clean run sent {} requests: {sent:?}",
                    sent.len()
                ));
            }
        }
        let held = self.held();
        let mut differ = Vec::new();
        for r in self.rows.iter().filter(|r| r.exists) {
            let want = (Some(r.first_name.clone()), Some(r.tier.clone()));
            if held.get(&r.email) != Some(&want) {
                differ.push(format!("{}: {:?} vs {want:?}", r.email, held.get(&r.email)));
            }
        }
        if !differ.is_empty() {
            self.fail(format!(
                "after the clean run {} contacts differ from the model: {}",
                differ.len(),
                differ
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        if self.open_jobs()? > 0 {
            self.fail("jobs are still open after the clean run".to_owned());
        }
        eprintln!(
            "state: Attentive equals the model for {} contacts",
            self.existing.len()
        );
        Ok(())
    }

    fn run(mut self) -> Result<(), String> {
        let started = Instant::now();
        eprintln!(
            "soak bulk: {} trials, {} model rows ({} Attentive contacts), seed {}",
            self.opts.trials,
            self.rows.len(),
            self.existing.len(),
            self.opts.seed
        );
        for trial in 0..self.opts.trials {
            self.trial(trial)?;
        }
        self.finish()?;
        let t = &self.totals;
        eprintln!(
            "soak bulk: {} killed, {} finished; {} bulk requests, {} records ({} re-sent, each to a contact in doubt), {} job polls, {} jobs open after kills; {} edits; {} contacts created; {:.0} s",
            t.killed,
            t.finished,
            t.bulk_requests,
            t.records,
            t.resent,
            t.polls,
            t.jobs_open_at_kill,
            t.edits,
            self.sim.contacts().iter().filter(|c| c.origin != ContactOrigin::Seed).count(),
            started.elapsed().as_secs_f64()
        );
        if self.failures.is_empty() {
            eprintln!("soak bulk: every invariant held");
            Ok(())
        } else {
            Err(format!(
                "{} invariant(s) failed:\n  {}",
                self.failures.len(),
                self.failures.join("\n  ")
            ))
        }
    }
}
