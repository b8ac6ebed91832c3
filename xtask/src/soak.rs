//! `cargo xtask soak kill [--trials N] [--contacts N] [--seed S]`: the SIGKILL soak.
//!
//! Against the in-process Attentive simulator with faults on (5xx, dropped connections,
//! latency spikes, periodic 429 bursts), each trial may edit some cells of the model, starts
//! the release `attentive-sync run`, SIGKILLs it at a random moment (seeded) and reaps it.
//! After every trial the simulator's request log and the state store are checked:
//!
//! - no contact is created (count and origins unchanged), no write goes to a contact that is
//!   not in Attentive, no subscription is touched (`violations()` empty);
//! - every applied write the killed run did not commit was answered at most one commit window
//!   before the kill, or after it; at most `max-in-flight` requests were in flight at the kill;
//! - a write is re-sent (an applied write repeats a value Attentive already holds from an
//!   earlier applied write) only when that earlier write was not committed, so the re-sends
//!   of one kill are at most `max-in-flight` + the writes answered within one commit window
//!   before it.
//!
//! Then faults go off, one clean run must end 0 or 3 as the model says, the simulator must
//! equal the model (after normalization), and a second run must send nothing.
//! docs/RELIABILITY.md ("SIGKILL soak") explains the bound and records the figures.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use attentive_sim::{
    Burst429, ContactOrigin, Faults, RequestRecord, RunningSim, SeedContact, SimConfig,
};
use runner::sample::{Rng, FIRST, LAST, PLACES, TIERS};
use serde_json::{json, Value};
use state_store::StateStore;

const WRITE: &str = "POST /v2/user/attributes";
const CHECK: &str = "GET /v1/subscriptions";
/// The batched existence check (one request, several contacts in its variables).
const LOOKUP: &str = "POST /v1/graphql";
const ACTIVATION: &str = "soak";
/// How long after its answer an acknowledged write may wait before it is committed: the
/// committer commits whatever is queued as soon as an answer arrives, so one commit in
/// progress plus its own (milliseconds), and scheduling on a busy 2-core machine.
const COMMIT_WINDOW_MS: i64 = 250;
/// The simulator's injected latency at most (latency + jitter + spike), plus a margin: after
/// a kill, the soak waits this long for the requests in flight to be answered and logged.
const DRAIN_MS: u64 = 600;

/// The faults of every trial: 8 % 5xx, 2 % dropped connections, 20-60 ms of latency with
/// 2 % spikes of 400 ms more, a 300 ms 429 burst every 4 s.
fn faults(seed: u64) -> Faults {
    Faults {
        error_rates: [(500, 0.05), (503, 0.03)].into_iter().collect(),
        latency_ms: 20,
        jitter_ms: 40,
        spike_probability: 0.02,
        spike_ms: 400,
        drop_rate: 0.02,
        burst_429: Some(Burst429 {
            period_ms: 4000,
            duration_ms: 300,
        }),
        seed,
        ..Faults::default()
    }
}

struct Options {
    trials: u64,
    contacts: u64,
    seed: u64,
    rate: u32,
    max_in_flight: usize,
    reverts: bool,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let num = |name: &str, default: u64| super::number_flag(args, name, default);
    let o = Options {
        trials: num("--trials", 100)?,
        contacts: num("--contacts", 3000)?.max(20),
        seed: num("--seed", 1)?,
        rate: u32::try_from(num("--rate", 300)?).map_err(|e| format!("--rate: {e}"))?,
        max_in_flight: usize::try_from(num("--max-in-flight", 8)?.max(1))
            .map_err(|e| format!("--max-in-flight: {e}"))?,
        reverts: args.iter().any(|a| a == "--reverts"),
    };
    Ok(o)
}

pub(crate) fn main(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("kill") => {
            let opts = parse_options(&args[1..])?;
            let bin = super::build_release_cli()?;
            let dir = super::target_dir().join(format!("soak/kill-{}", opts.seed));
            Soak::new(opts, bin, dir)?.run()
        }
        Some("bulk") => super::soak_bulk::main(&args[1..]),
        _ => Err(super::USAGE.to_owned()),
    }
}

// ---- the model ------------------------------------------------------------------------------

/// A mapped column: its name in the model, where the simulator keeps it (`firstName`,
/// `location.city`, `custom.VIP`) and whether trials edit it (only columns whose edits can
/// always take a value the cell never had: see [`Soak::edit`]).
struct Column {
    name: &'static str,
    path: &'static str,
    editable: bool,
}

const COLUMNS: [Column; 9] = [
    Column {
        name: "first_name",
        path: "firstName",
        editable: true,
    },
    Column {
        name: "last_name",
        path: "lastName",
        editable: true,
    },
    Column {
        name: "city",
        path: "location.city",
        editable: true,
    },
    Column {
        name: "zip",
        path: "location.zip",
        editable: true,
    },
    Column {
        name: "country",
        path: "location.country",
        editable: false,
    },
    Column {
        name: "birthday",
        path: "demographic.dateOfBirth",
        editable: true,
    },
    Column {
        name: "tier",
        path: "custom.Loyalty Tier",
        editable: true,
    },
    Column {
        name: "ltv",
        path: "custom.Lifetime Value",
        editable: true,
    },
    Column {
        name: "vip",
        path: "custom.VIP",
        editable: false,
    },
];

fn config(base_url: &str, rate: u32) -> String {
    format!(
        r#"[state]
path = "attentive-sync.db"

[destinations.attentive]
api_key = "${{ATTENTIVE_API_KEY}}"
base_url = "{base_url}"
requests_per_second = {rate}

[models.people]
source = "csv"
path = "people.csv"

[activations.{ACTIVATION}]
model = "people"
destination = "attentive"
identifier = {{ column = "email", kind = "email" }}
date_order = "mdy"

[activations.{ACTIVATION}.standard]
first_name = "first_name"
last_name = "last_name"
city = "city"
zip_code = "zip"
country = "country"
date_of_birth = "birthday"

[activations.{ACTIVATION}.custom]
"Loyalty Tier" = "tier"
"Lifetime Value" = {{ column = "ltv", type = "number" }}
"VIP" = {{ column = "vip", type = "bool" }}
"#
    )
}

/// A model cell: the text in the file and what Attentive must hold after normalization.
#[derive(Clone)]
struct Cell {
    raw: String,
    want: Value,
}

/// A model row.
struct Person {
    /// The normalized email (the contact key).
    key: String,
    email_cell: String,
    /// Seeded in the simulator.
    exists: bool,
    /// Rejected by validation (never sent, never edited).
    invalid: bool,
    cells: Vec<Cell>,
    /// Each cell's value before its last edit (for `--reverts`).
    previous: Vec<Option<Cell>>,
    /// The trial that last edited each cell.
    edited_in: Vec<Option<u64>>,
}

fn text(raw: impl Into<String>, want: &str) -> Cell {
    Cell {
        raw: raw.into(),
        want: json!(want),
    }
}

/// A date as `YYYY-MM-DD` or, half of the time, `MM/DD/YYYY` (the config reads mdy).
fn date_cell(rng: &mut Rng, d: chrono::NaiveDate) -> Cell {
    let iso = d.format("%Y-%m-%d").to_string();
    let raw = if rng.below(2) == 0 {
        iso.clone()
    } else {
        d.format("%m/%d/%Y").to_string()
    };
    text(raw, &iso)
}

/// The first values of a valid row.
fn initial_cells(rng: &mut Rng) -> Vec<Cell> {
    let first = rng.pick(FIRST);
    let last = rng.pick(LAST);
    let (city, _, zip, country) = PLACES[rng.below(PLACES.len() as u64) as usize];
    let birthday = chrono::NaiveDate::from_ymd_opt(1950, 1, 1).unwrap_or_default()
        + chrono::Duration::days(rng.below(20_000) as i64);
    let tier = rng.pick(TIERS);
    let ltv_cents = rng.below(500_000);
    let vip = rng.below(6);
    vec![
        // Messy spellings the tool normalizes.
        if rng.below(4) == 0 {
            text(format!("  {first} "), first)
        } else {
            text(first, first)
        },
        text(last, last),
        text(city, city),
        text(zip, zip),
        if rng.below(3) == 0 {
            text(country.to_lowercase(), country)
        } else {
            text(country, country)
        },
        date_cell(rng, birthday),
        text(format!("{tier} "), tier),
        Cell {
            raw: format!("{}.{:02}", ltv_cents / 100, ltv_cents % 100),
            want: json!(ltv_cents as f64 / 100.0),
        },
        Cell {
            raw: ["yes", "no", "TRUE", "false", "1", "n"][vip as usize].to_owned(),
            want: json!(vip.is_multiple_of(2)),
        },
    ]
}

fn person(key: String, email_cell: String, exists: bool, cells: Vec<Cell>) -> Person {
    let n = cells.len();
    Person {
        key,
        email_cell,
        exists,
        invalid: false,
        cells,
        previous: vec![None; n],
        edited_in: vec![None; n],
    }
}

/// The model rows: mostly contacts seeded in the simulator (some with messy emails), some
/// that Attentive does not have, and about 2 % invalid (a bad email, or a birthday that is no
/// date).
fn initial_model(rng: &mut Rng, contacts: u64) -> Vec<Person> {
    (0..contacts)
        .map(|i| {
            let key = format!("p{i}@example.com");
            let cells = initial_cells(rng);
            match i % 100 {
                7 => {
                    let mut p = person(
                        format!("p{i}example.com"),
                        format!("p{i}example.com"),
                        false,
                        cells,
                    );
                    p.invalid = true;
                    p
                }
                57 => {
                    let mut p = person(key.clone(), key, true, cells);
                    p.cells[5] = text("31/31/1990", "");
                    p.invalid = true;
                    p
                }
                _ if i % 13 == 5 => {
                    let key = format!("ghost{i}@example.com");
                    person(key.clone(), key, false, cells)
                }
                _ if i % 7 == 3 => person(key, format!("  P{i}@Example.COM "), true, cells),
                _ => person(key.clone(), key, true, cells),
            }
        })
        .collect()
}

fn model_csv(people: &[Person]) -> String {
    let mut s = String::from("email");
    for c in &COLUMNS {
        s.push(',');
        s.push_str(c.name);
    }
    s.push('\n');
    for p in people {
        s.push_str(&p.email_cell);
        for c in &p.cells {
            s.push(',');
            s.push_str(&c.raw);
        }
        s.push('\n');
    }
    s
}

// ---- what the simulator saw ------------------------------------------------------------------

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Unix milliseconds of the simulator's RFC 3339 timestamps.
fn ms(at: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(at).map_or(i64::MAX, |t| t.timestamp_millis())
}

/// The attributes of a write body, flattened to the simulator's paths (`location.city`,
/// `custom.VIP`).
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    if let Value::Object(m) = v {
        for (k, x) in m {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if x.is_object() {
                flatten(&path, x, out);
            } else {
                out.insert(path, x.clone());
            }
        }
    }
}

/// JSON values equal, numbers by value (`100` = `100.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// An applied write of the soak: its trial, and whether the run that sent it committed it.
struct AppliedWrite {
    trial: u64,
    key: String,
    answered_ms: i64,
    /// `None` until the trial is analysed.
    committed: Option<bool>,
    /// Later applied writes that repeated one of its values.
    resent_by: u64,
}

/// Where a kill landed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Phase {
    /// Before the run sent its first request (starting, planning).
    BeforeRequests,
    /// Only existence checks were in flight.
    Checks,
    /// Writes (and maybe checks) were in flight.
    Writes,
    /// Between requests: nothing in flight (commits, planning, backoff, pacing).
    Between,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::BeforeRequests => "before the first request",
            Phase::Checks => "with existence checks in flight",
            Phase::Writes => "with writes in flight",
            Phase::Between => "with nothing in flight (commits, planning, backoff)",
        }
    }
}

#[derive(Default)]
struct Totals {
    killed: u64,
    finished: u64,
    finished_codes: BTreeMap<i32, u64>,
    phases: BTreeMap<Phase, u64>,
    requests: u64,
    checks: u64,
    writes_sent: u64,
    writes_applied: u64,
    faulted: u64,
    resent: u64,
    uncommitted: u64,
    /// (uncommitted writes of the kill, its bound, trial) of the kill with the most.
    worst: (u64, u64, u64),
    /// The oldest acknowledgement (ms before the kill) a killed run had not committed.
    oldest_uncommitted_ms: i64,
    max_in_flight_seen: u64,
    edits: u64,
    added_rows: u64,
    reverts: u64,
}

struct Soak {
    opts: Options,
    bin: PathBuf,
    dir: PathBuf,
    rng: Rng,
    sim: RunningSim,
    people: Vec<Person>,
    /// Seeded contacts not yet in the model (trials add them).
    pool: Vec<String>,
    seeded: usize,
    /// Contacts Attentive has.
    existing: BTreeSet<String>,
    cursor: u64,
    /// Per contact and path: the value Attentive holds from the last applied write, and that
    /// write (an index into `applied`).
    mirror: HashMap<String, BTreeMap<String, (Value, usize)>>,
    applied: Vec<AppliedWrite>,
    edit_counter: u64,
    /// Contacts an existence check was answered for.
    checked: BTreeSet<String>,
    totals: Totals,
    failures: Vec<String>,
    last_run_id: Option<i64>,
    clean: Option<CleanRun>,
    /// Per killed trial: its applied writes it had not committed, and their bound.
    kills: BTreeMap<u64, (u64, u64)>,
    /// Whether the simulator equalled the model after the clean run.
    state_checked: Option<bool>,
}

impl Soak {
    fn new(opts: Options, bin: PathBuf, dir: PathBuf) -> Result<Soak, String> {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut rng = Rng::new(opts.seed);
        let people = initial_model(&mut rng, opts.contacts);
        let pool: Vec<String> = (0..opts.contacts / 20)
            .map(|j| format!("new{j}@example.com"))
            .collect();
        let mut existing: BTreeSet<String> = people
            .iter()
            .filter(|p| p.exists)
            .map(|p| p.key.clone())
            .collect();
        existing.extend(pool.iter().cloned());
        let sim = RunningSim::spawn_on_thread(SimConfig {
            contacts: existing.iter().map(SeedContact::email).collect(),
            rate_limit_per_second: opts.rate,
            faults: faults(opts.seed),
            max_logged_requests: 10_000_000,
            // A killed run's writes in flight are applied, as Attentive would.
            apply_after_disconnect: true,
            ..SimConfig::default()
        })
        .map_err(|e| format!("starting the simulator: {e}"))?;
        std::fs::write(
            dir.join("attentive-sync.toml"),
            config(&sim.base_url(), opts.rate),
        )
        .map_err(|e| e.to_string())?;
        let seeded = existing.len();
        Ok(Soak {
            opts,
            bin,
            dir,
            rng,
            sim,
            people,
            pool,
            seeded,
            existing,
            cursor: 0,
            mirror: HashMap::new(),
            applied: Vec::new(),
            edit_counter: 0,
            checked: BTreeSet::new(),
            totals: Totals::default(),
            failures: Vec::new(),
            last_run_id: None,
            clean: None,
            kills: BTreeMap::new(),
            state_checked: None,
        })
    }

    fn fail(&mut self, what: String) {
        eprintln!("  FAILED: {what}");
        self.failures.push(what);
    }

    fn write_model(&self) -> Result<(), String> {
        std::fs::write(self.dir.join("people.csv"), model_csv(&self.people))
            .map_err(|e| e.to_string())
    }

    /// A value the cell never had: every edit takes the next number of one counter, and
    /// first values have another form.
    fn edit(&mut self, trial: u64, row: usize, col: usize) {
        self.edit_counter += 1;
        let n = self.edit_counter;
        let rng = &mut self.rng;
        let cell = match COLUMNS[col].name {
            "first_name" => {
                let first = rng.pick(FIRST);
                text(format!(" {first}   Q{n} "), &format!("{first} Q{n}"))
            }
            "last_name" => {
                let last = rng.pick(LAST);
                text(format!("{last}-{n}"), &format!("{last}-{n}"))
            }
            "city" => {
                let city = PLACES[rng.below(PLACES.len() as u64) as usize].0;
                text(format!("{city} {n}"), &format!("{city} {n}"))
            }
            "zip" => text(format!("Z{n:05}"), &format!("Z{n:05}")),
            "birthday" => {
                // Initial birthdays are 1950 or later; edits count days from 1870.
                let d = chrono::NaiveDate::from_ymd_opt(1870, 1, 1).unwrap_or_default()
                    + chrono::Duration::days((n % 29_000) as i64);
                date_cell(rng, d)
            }
            "tier" => {
                let tier = rng.pick(TIERS);
                text(format!("{tier}-{n}"), &format!("{tier}-{n}"))
            }
            _ => Cell {
                raw: format!("{}.50", 10_000_000 + n),
                want: json!((10_000_000 + n) as f64 + 0.5),
            },
        };
        let p = &mut self.people[row];
        p.previous[col] = Some(std::mem::replace(&mut p.cells[col], cell));
        p.edited_in[col] = Some(trial);
        self.totals.edits += 1;
    }

    /// Three trials in four edit up to a tenth of the rows' cells; one in four adds rows
    /// (contacts Attentive has that the model did not list, and people it does not have),
    /// whose existence must be checked.
    fn edit_model(&mut self, trial: u64) {
        if trial == 0 {
            return;
        }
        if self.rng.below(4) != 0 {
            let edits = 1 + self.rng.below(self.opts.contacts / 10);
            let editable: Vec<usize> = (0..COLUMNS.len())
                .filter(|&c| COLUMNS[c].editable)
                .collect();
            for _ in 0..edits {
                let row = self.rng.below(self.people.len() as u64) as usize;
                if self.people[row].invalid {
                    continue;
                }
                let col = editable[self.rng.below(editable.len() as u64) as usize];
                self.edit(trial, row, col);
            }
        }
        if self.rng.below(4) == 0 {
            let adds = 1 + self.rng.below(20);
            for _ in 0..adds {
                let cells = initial_cells(&mut self.rng);
                let known = self.rng.below(4) != 0;
                let p = match self.pool.pop() {
                    Some(key) if known => person(key.clone(), key, true, cells),
                    other => {
                        self.pool.extend(other);
                        let key = format!("newghost{}@example.com", self.people.len());
                        person(key.clone(), key, false, cells)
                    }
                };
                self.people.push(p);
                self.totals.added_rows += 1;
            }
        }
    }

    fn spawn(&self, args: &[&str], stdout: Stdio) -> Result<Child, String> {
        let stderr =
            std::fs::File::create(self.dir.join("last-run.stderr")).map_err(|e| e.to_string())?;
        Command::new(&self.bin)
            .arg("run")
            .arg(ACTIVATION)
            .args(["--max-in-flight", &self.opts.max_in_flight.to_string()])
            .args(args)
            .current_dir(&self.dir)
            .env_remove("ATTENTIVE_SYNC_CONFIG")
            .env_remove("RUST_LOG")
            .env("ATTENTIVE_API_KEY", attentive_sim::DEFAULT_KEY)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.bin.display()))
    }

    fn run(mut self) -> Result<(), String> {
        let started = Instant::now();
        eprintln!(
            "soak kill: {} trials, {} model rows ({} contacts seeded), seed {}, {} req/s, \
             --max-in-flight {}, faults: {:?}",
            self.opts.trials,
            self.people.len(),
            self.seeded,
            self.opts.seed,
            self.opts.rate,
            self.opts.max_in_flight,
            faults(self.opts.seed)
        );
        for trial in 0..self.opts.trials {
            self.trial(trial)?;
        }
        let trials_secs = started.elapsed().as_secs_f64();
        self.finish()?;
        self.summary(trials_secs, started.elapsed().as_secs_f64());
        if self.failures.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} invariant(s) failed:\n  {}",
                self.failures.len(),
                self.failures.join("\n  ")
            ))
        }
    }

    fn trial(&mut self, trial: u64) -> Result<(), String> {
        self.edit_model(trial);
        self.write_model()?;
        let before = self.sim.counters().total;
        // One kill in five at a random time in the first 1.5 s (starting, planning, the first
        // requests); the others once the run has made a random share (0-130 %) of the
        // requests it needs (plus up to 40 ms), so kills spread over the whole run and some
        // runs finish first (faults add retries: a run needs some 15 % more).
        let by_time = self.rng.below(5) == 0;
        let wait_ms = self.rng.below(1500);
        let pending = self.pending_requests();
        let target = 1 + self.rng.below(pending * 13 / 10 + 1);
        let extra = Duration::from_millis(self.rng.below(40));
        let spawned = Instant::now();
        let mut child = self.spawn(&[], Stdio::null())?;
        let deadline = spawned + Duration::from_secs(120);
        loop {
            if child.try_wait().map_err(|e| e.to_string())?.is_some() {
                break;
            }
            let due = if by_time {
                spawned.elapsed() >= Duration::from_millis(wait_ms)
            } else {
                self.sim.counters().total - before >= target
            };
            if due || Instant::now() >= deadline {
                if !by_time {
                    std::thread::sleep(extra);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let kill_ms = now_ms();
        let _ = child.kill(); // SIGKILL; an error if it had exited
        let status = child.wait().map_err(|e| format!("reaping the run: {e}"))?;
        let ran_ms = spawned.elapsed().as_millis();
        let killed = status.code().is_none();
        std::thread::sleep(Duration::from_millis(DRAIN_MS));
        let (records, cursor) = self.sim.requests_since(self.cursor);
        self.cursor = cursor;

        let line = self.analyse(trial, &records, Some(kill_ms), killed)?;
        if killed {
            self.totals.killed += 1;
        } else {
            self.totals.finished += 1;
            let code = status.code().unwrap_or(-1);
            *self.totals.finished_codes.entry(code).or_default() += 1;
            if code != 0 && code != 3 {
                let stderr =
                    std::fs::read_to_string(self.dir.join("last-run.stderr")).unwrap_or_default();
                self.fail(format!(
                    "trial {trial}: the run exited {code}: {}",
                    stderr.trim()
                ));
            }
        }
        eprintln!(
            "trial {:>3}/{}: {} after {:>5} ms; {line}",
            trial + 1,
            self.opts.trials,
            if killed { "killed  " } else { "finished" },
            ran_ms
        );
        if self.opts.reverts && killed {
            self.revert_uncommitted(trial);
        }
        Ok(())
    }

    /// About how many requests a run needs now: an existence check for every listed contact
    /// never checked nor written, a write for every contact Attentive has whose values differ
    /// from the model's (faults add their retries).
    fn pending_requests(&self) -> u64 {
        let mut n = 0;
        for p in self.people.iter().filter(|p| !p.invalid) {
            let held = self.mirror.get(&p.key);
            if held.is_none() && !self.checked.contains(&p.key) {
                n += 1;
            }
            if p.exists {
                let differs = COLUMNS.iter().zip(&p.cells).any(|(col, cell)| {
                    !held
                        .and_then(|h| h.get(col.path))
                        .is_some_and(|(v, _)| same(v, &cell.want))
                });
                n += u64::from(differs);
            }
        }
        n
    }

    /// With `--reverts`: cells this trial edited whose write reached Attentive but was not
    /// committed go back to their previous value, the one the snapshot still holds.
    fn revert_uncommitted(&mut self, trial: u64) {
        let keys: BTreeSet<String> = self
            .applied
            .iter()
            .filter(|w| w.trial == trial && w.committed == Some(false))
            .map(|w| w.key.clone())
            .collect();
        for p in self.people.iter_mut().filter(|p| keys.contains(&p.key)) {
            for col in 0..COLUMNS.len() {
                if p.edited_in[col] == Some(trial) {
                    if let Some(prev) = p.previous[col].take() {
                        p.cells[col] = prev;
                        p.edited_in[col] = None;
                        self.totals.reverts += 1;
                    }
                }
            }
        }
    }

    /// Checks one run's requests and what it committed; `kill_ms` is when it was killed (if
    /// it was). Returns a line for the log.
    fn analyse(
        &mut self,
        trial: u64,
        records: &[RequestRecord],
        kill_ms: Option<i64>,
        killed: bool,
    ) -> Result<String, String> {
        let mut writes_sent = 0;
        let mut checks = 0;
        let mut faulted = 0;
        let mut first_applied = self.applied.len();
        let mut resent = 0;
        for r in records {
            self.totals.requests += 1;
            if r.fault.is_some() {
                faulted += 1;
            }
            match r.endpoint.as_str() {
                CHECK => {
                    checks += 1;
                    if matches!(r.status, Some(200 | 404)) {
                        if let Some(q) = r.query.as_deref().and_then(|q| q.strip_prefix("email=")) {
                            self.checked.insert(q.replace("%40", "@"));
                        }
                    }
                }
                LOOKUP => {
                    checks += 1;
                    if r.status == Some(200) {
                        let variables = r.body["variables"].as_object();
                        for v in variables.into_iter().flat_map(|m| m.values()) {
                            if let Some(email) = v.as_str() {
                                self.checked.insert(email.to_owned());
                            }
                        }
                    }
                    if r.body.to_string().contains("mutation") {
                        self.fail(format!("trial {trial}: a GraphQL mutation (seq {})", r.seq));
                    }
                }
                WRITE => writes_sent += 1,
                "GET /v1/me" | "GET /v2/me" => {}
                other => self.fail(format!(
                    "trial {trial}: unexpected request {other} (seq {})",
                    r.seq
                )),
            }
            if r.endpoint != WRITE {
                continue;
            }
            let Some(email) = r.body["identifiers"]["email"].as_str().map(str::to_owned) else {
                self.fail(format!(
                    "trial {trial}: a write without an email: {}",
                    r.body
                ));
                continue;
            };
            if !self.existing.contains(&email) {
                self.fail(format!(
                    "trial {trial}: a write to {email}, which Attentive does not have (seq {}, \
                     status {:?})",
                    r.seq, r.status
                ));
            }
            if r.status != Some(202) {
                continue;
            }
            let mut attrs = BTreeMap::new();
            flatten("", &r.body["attributes"], &mut attrs);
            let index = self.applied.len();
            self.applied.push(AppliedWrite {
                trial,
                key: email.clone(),
                answered_ms: ms(&r.answered_at),
                committed: None,
                resent_by: 0,
            });
            let mirror = self.mirror.entry(email.clone()).or_default();
            let mut origins = BTreeSet::new();
            for (path, value) in attrs {
                if let Some((held, origin)) = mirror.get(&path) {
                    if same(held, &value) {
                        origins.insert(*origin);
                    }
                }
                mirror.insert(path, (value, index));
            }
            if !origins.is_empty() {
                resent += 1;
            }
            for o in origins {
                let w = &mut self.applied[o];
                w.resent_by += 1;
                if w.committed != Some(false) {
                    let (t, c) = (w.trial, w.committed);
                    self.fail(format!(
                        "trial {trial}: {email} was sent a value again that Attentive \
                         acknowledged in trial {t} and that run committed ({c:?}): seq {}",
                        r.seq
                    ));
                }
            }
        }
        let applied_now = self.applied.len() - first_applied;
        self.totals.checks += checks;
        self.totals.writes_sent += writes_sent;
        self.totals.writes_applied += applied_now as u64;
        self.totals.faulted += faulted;
        self.totals.resent += resent;

        // What did the run commit? Its id is the latest run of the activation (unless it was
        // killed before it recorded one).
        // Read-only: the soak must not change what the next run finds.
        let store = StateStore::open_existing_read_only(&self.dir.join("attentive-sync.db"))
            .map_err(|e| format!("opening the state store: {e}"))?;
        let run_id = match &store {
            Some(store) => store
                .runs(Some(ACTIVATION), 1)
                .map_err(|e| e.to_string())?
                .first()
                .map(|r| r.id),
            None => None,
        };
        let new_run = run_id.is_some() && run_id != self.last_run_id;
        self.last_run_id = run_id;
        let mut uncommitted = 0u64;
        let mut oldest_uncommitted: Option<i64> = None;
        while first_applied < self.applied.len() {
            let key = self.applied[first_applied].key.clone();
            let snap = match &store {
                Some(store) => store
                    .contact(&key)
                    .map_err(|e| format!("reading {key} from the state store: {e}"))?,
                None => Vec::new(),
            };
            let committed = new_run
                && snap
                    .iter()
                    .any(|s| s.activation == ACTIVATION && s.updated_run == run_id);
            let w = &mut self.applied[first_applied];
            w.committed = Some(committed);
            if !committed {
                uncommitted += 1;
                if let Some(k) = kill_ms {
                    let age = k - w.answered_ms;
                    oldest_uncommitted = Some(oldest_uncommitted.map_or(age, |o| o.max(age)));
                }
            }
            first_applied += 1;
        }
        drop(store);

        // The contacts are the seeded ones, untouched by the soak's writes' identifiers.
        let contacts = self.sim.contacts();
        if contacts.len() != self.seeded {
            self.fail(format!(
                "trial {trial}: the simulator has {} contacts, {} were seeded",
                contacts.len(),
                self.seeded
            ));
        }
        if let Some(c) = contacts.iter().find(|c| c.origin != ContactOrigin::Seed) {
            self.fail(format!("trial {trial}: a contact was created: {c:?}"));
        }
        let violations = self.sim.violations();
        if !violations.is_empty() {
            self.fail(format!("trial {trial}: violations: {violations:?}"));
        }

        let Some(kill_ms) = kill_ms else {
            if uncommitted > 0 {
                self.fail(format!(
                    "trial {trial}: {uncommitted} acknowledged writes of a run that finished \
                     were not committed"
                ));
            }
            return Ok(format!(
                "{} requests, {checks} checks, {writes_sent} writes ({applied_now} applied, \
                 {resent} re-sent)",
                records.len()
            ));
        };
        if !killed && uncommitted > 0 {
            self.fail(format!(
                "trial {trial}: the run finished but {uncommitted} of its acknowledged writes \
                 are not committed"
            ));
        }
        // In flight at the kill: answered after it (nothing is sent after a kill).
        let in_flight: Vec<&RequestRecord> = records
            .iter()
            .filter(|r| ms(&r.answered_at) > kill_ms)
            .collect();
        let in_flight_writes = in_flight.iter().filter(|r| r.endpoint == WRITE).count() as u64;
        let in_flight_checks = in_flight
            .iter()
            .filter(|r| r.endpoint == CHECK || r.endpoint == LOOKUP)
            .count() as u64;
        let in_flight_applied = in_flight
            .iter()
            .filter(|r| r.endpoint == WRITE && r.status == Some(202))
            .count() as u64;
        let answered_in_window = self.applied[self.applied.len() - applied_now..]
            .iter()
            .filter(|w| w.answered_ms <= kill_ms && w.answered_ms >= kill_ms - COMMIT_WINDOW_MS)
            .count() as u64;
        let bound = self.opts.max_in_flight as u64 + answered_in_window;
        if killed {
            let phase = if records.is_empty() {
                Phase::BeforeRequests
            } else if in_flight_writes > 0 {
                Phase::Writes
            } else if in_flight_checks > 0 {
                Phase::Checks
            } else {
                Phase::Between
            };
            *self.totals.phases.entry(phase).or_default() += 1;
            self.totals.max_in_flight_seen =
                self.totals.max_in_flight_seen.max(in_flight.len() as u64);
            self.totals.uncommitted += uncommitted;
            self.kills.insert(trial, (uncommitted, bound));
            if uncommitted > self.totals.worst.0 {
                self.totals.worst = (uncommitted, bound, trial);
            }
            if let Some(age) = oldest_uncommitted {
                self.totals.oldest_uncommitted_ms = self.totals.oldest_uncommitted_ms.max(age);
            }
        }
        if in_flight.len() > self.opts.max_in_flight {
            self.fail(format!(
                "trial {trial}: {} requests were in flight at the kill, more than \
                 --max-in-flight {}",
                in_flight.len(),
                self.opts.max_in_flight
            ));
        }
        if let Some(age) = oldest_uncommitted.filter(|&a| a > COMMIT_WINDOW_MS) {
            self.fail(format!(
                "trial {trial}: an acknowledgement answered {age} ms before the kill was not \
                 committed (window {COMMIT_WINDOW_MS} ms)"
            ));
        }
        if uncommitted > bound {
            self.fail(format!(
                "trial {trial}: {uncommitted} acknowledged writes not committed, more than the \
                 bound {bound}"
            ));
        }
        Ok(format!(
            "{} requests, {checks} checks, {writes_sent} writes ({applied_now} applied, {resent} \
             re-sent); at the kill {in_flight_checks} checks + {in_flight_writes} writes in \
             flight ({in_flight_applied} applied); {uncommitted} applied but not committed \
             (bound {} + {answered_in_window} = {bound})",
            records.len(),
            self.opts.max_in_flight
        ))
    }

    /// Runs to the end without faults; returns the exit code and the JSON report.
    fn clean_run(&mut self, label: &str) -> Result<(i32, Value, Vec<RequestRecord>), String> {
        let child = self.spawn(&["--format", "json"], Stdio::piped())?;
        let out = child
            .wait_with_output()
            .map_err(|e| format!("{label}: {e}"))?;
        let code = out.status.code().unwrap_or(-1);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(
            |_| json!({ "stdout": String::from_utf8_lossy(&out.stdout).to_string() }),
        );
        std::thread::sleep(Duration::from_millis(50));
        let (records, cursor) = self.sim.requests_since(self.cursor);
        self.cursor = cursor;
        Ok((code, report, records))
    }

    fn finish(&mut self) -> Result<(), String> {
        self.write_model()?;
        self.sim
            .set_faults(Faults::none())
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let (code, report, records) = self.clean_run("the clean run")?;
        let secs = started.elapsed().as_secs_f64();
        let line = self.analyse(self.opts.trials, &records, None, false)?;
        eprintln!("clean run (faults off): exit {code} in {secs:.1} s; {line}");
        let rejected = self.people.iter().filter(|p| p.invalid).count() as u64;
        let not_found = self
            .people
            .iter()
            .filter(|p| !p.invalid && !p.exists)
            .count() as u64;
        let want_code = if rejected + not_found > 0 { 3 } else { 0 };
        if code != want_code {
            let stderr =
                std::fs::read_to_string(self.dir.join("last-run.stderr")).unwrap_or_default();
            self.fail(format!(
                "the clean run exited {code}, expected {want_code}: {report} {}",
                stderr.trim()
            ));
        }
        let counts = &report["counts"];
        for (outcome, want) in [
            ("failed", 0),
            ("rejected", rejected),
            ("not_found", not_found),
        ] {
            if counts[outcome].as_u64() != Some(want) {
                self.fail(format!(
                    "the clean run: counts.{outcome} = {}, expected {want}",
                    counts[outcome]
                ));
            }
        }
        self.check_state();

        let (code2, report2, records2) = self.clean_run("the second run")?;
        // Every run asks GET /v1/me once (the account check); nothing else is expected.
        let records2: Vec<RequestRecord> = records2
            .into_iter()
            .filter(|r| r.endpoint != "GET /v1/me")
            .collect();
        eprintln!(
            "second run: exit {code2}; {} requests; counts {}",
            records2.len(),
            report2["counts"]
        );
        if code2 != want_code {
            self.fail(format!(
                "the second run exited {code2}, expected {want_code}: {report2}"
            ));
        }
        if !records2.is_empty() {
            self.fail(format!(
                "the second run sent {} requests ({} writes), expected none",
                records2.len(),
                records2.iter().filter(|r| r.endpoint == WRITE).count()
            ));
        }
        if report2["counts"]["updated"].as_u64() != Some(0) {
            self.fail(format!(
                "the second run updated {} contacts",
                report2["counts"]["updated"]
            ));
        }
        self.clean = Some(CleanRun {
            code,
            secs,
            updated: counts["updated"].as_u64().unwrap_or(0),
            writes: records.iter().filter(|r| r.endpoint == WRITE).count() as u64,
            requests: records.len() as u64,
            second_requests: records2.len() as u64,
        });
        Ok(())
    }

    /// The simulator holds the model: every attribute of every contact the model lists and
    /// Attentive has, as normalized; the others have nothing from the soak.
    fn check_state(&mut self) {
        let mut bad = Vec::new();
        let mut listed = BTreeSet::new();
        for p in &self.people {
            listed.insert(p.key.clone());
            let contact = self.sim.find_contact(&p.key);
            match (&contact, p.exists) {
                (None, true) => bad.push(format!("{} is not in the simulator", p.key)),
                (Some(c), false) => bad.push(format!("{} was created: {c:?}", p.key)),
                _ => {}
            }
            let Some(c) = contact else { continue };
            let mut want: BTreeMap<&str, &Value> = BTreeMap::new();
            if !p.invalid {
                for (col, cell) in COLUMNS.iter().zip(&p.cells) {
                    want.insert(col.path, &cell.want);
                }
            }
            let mut held: BTreeMap<String, &Value> =
                c.standard.iter().map(|(k, v)| (k.clone(), v)).collect();
            held.extend(
                c.custom
                    .iter()
                    .map(|(k, a)| (format!("custom.{k}"), &a.value)),
            );
            for (path, w) in &want {
                match held.get(*path) {
                    Some(h) if same(h, w) => {}
                    other => bad.push(format!(
                        "{}: {path} is {other:?} in Attentive, the model says {w}",
                        p.key
                    )),
                }
            }
            for path in held.keys() {
                if !want.contains_key(path.as_str()) {
                    bad.push(format!(
                        "{}: Attentive holds {path}, which the model does not set",
                        p.key
                    ));
                }
            }
        }
        for c in self.sim.contacts() {
            let key = c.email.clone().unwrap_or_default().to_lowercase();
            if !listed.contains(&key) && (c.writes > 0 || !c.standard.is_empty()) {
                bad.push(format!("{key} is not in the model but was written: {c:?}"));
            }
        }
        if self.sim.contact_count() != self.seeded {
            bad.push(format!(
                "the simulator has {} contacts, {} were seeded",
                self.sim.contact_count(),
                self.seeded
            ));
        }
        let n = bad.len();
        for b in bad.into_iter().take(20) {
            self.fail(format!("after the clean run: {b}"));
        }
        if n > 20 {
            self.fail(format!(
                "after the clean run: ... {} more differences",
                n - 20
            ));
        }
        self.state_checked = Some(n == 0);
    }

    fn summary(&self, trials_secs: f64, total_secs: f64) {
        let t = &self.totals;
        let o = &self.opts;
        println!(
            "soak kill: {} trials (seed {}, {} model rows at the end, {} contacts seeded), \
             {:.0} s for the trials, {:.0} s in all",
            o.trials,
            o.seed,
            self.people.len(),
            self.seeded,
            trials_secs,
            total_secs
        );
        println!(
            "  faults: 5% 500, 3% 503, 2% dropped connections, 2% spikes of 400 ms (latency \
             20-60 ms), 429 for 300 ms every 4 s; {} req/s; --max-in-flight {}",
            o.rate, o.max_in_flight
        );
        println!(
            "  kills mid-run: {}; runs that finished before the kill: {} (exit codes {:?})",
            t.killed, t.finished, t.finished_codes
        );
        for (phase, n) in &t.phases {
            println!("    killed {}: {n}", phase.name());
        }
        println!(
            "  model edits: {} cells edited, {} rows added, {} cells reverted",
            t.edits, t.added_rows, t.reverts
        );
        println!(
            "  requests: {} ({} existence checks, {} writes sent, {} answered by a fault); \
             writes applied: {}",
            t.requests, t.checks, t.writes_sent, t.faulted, t.writes_applied
        );
        println!(
            "  re-sent writes: {} (every one an acknowledgement its run had not committed); \
             applied but not committed at a kill: {} in all",
            t.resent, t.uncommitted
        );
        println!(
            "  worst kill: {} applied writes not committed (trial {}), its bound {} \
             (max-in-flight {} + answered within {} ms before the kill); requests in flight at \
             a kill at most {}; oldest uncommitted acknowledgement {} ms before its kill",
            t.worst.0,
            t.worst.2,
            t.worst.1,
            o.max_in_flight,
            COMMIT_WINDOW_MS,
            t.max_in_flight_seen,
            t.oldest_uncommitted_ms
        );
        // Re-sends per kill: the writes of a killed run that a later run sent again.
        let mut resent_of: BTreeMap<u64, u64> = BTreeMap::new();
        for w in self.applied.iter().filter(|w| w.resent_by > 0) {
            *resent_of.entry(w.trial).or_default() += 1;
        }
        let worst = resent_of
            .iter()
            .map(|(trial, n)| (*n, *trial))
            .max()
            .unwrap_or((0, 0));
        let (worst_uncommitted, worst_bound) = self.kills.get(&worst.1).copied().unwrap_or((0, 0));
        println!(
            "  worst re-sends of one kill: {} writes of trial {} sent again; its bound {}              ({} applied but not committed)",
            worst.0, worst.1, worst_bound, worst_uncommitted
        );
        if let Some(c) = &self.clean {
            println!(
                "  clean run (faults off): exit {} in {:.1} s, {} requests, {} writes, {} \
                 contacts updated; state equals the model: {}; second run: {} requests",
                c.code,
                c.secs,
                c.requests,
                c.writes,
                c.updated,
                if self.state_checked == Some(true) {
                    "yes"
                } else {
                    "NO"
                },
                c.second_requests
            );
        }
        println!(
            "  contacts created: {}; violations: {}",
            self.sim.contact_count().saturating_sub(self.seeded),
            self.sim.violations().len()
        );
        if self.failures.is_empty() {
            println!("  every invariant held");
        } else {
            println!("  {} invariant failures (see above)", self.failures.len());
        }
    }
}

struct CleanRun {
    code: i32,
    secs: f64,
    updated: u64,
    writes: u64,
    requests: u64,
    second_requests: u64,
}
