//! The run pipeline: plan → existence checks → delivery → snapshot commits.
//!
//! A run reads the model twice. The first pass only plans, to find duplicated identifiers;
//! the second plans again with them known and streams each change to the destination, so that
//! no row is sent and then voided by a later duplicate, and memory stays bounded (delivery, at
//! ~150 requests/s, is far slower than reading). Acknowledgements are committed to the state
//! store in small transactions as they arrive: killing the process loses nothing, and the next
//! run re-sends at most the writes that were in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use state_store::{CommitBatch, Outcome, RunKind, RunRow, RunStatus, StateStore};
use sync_core::plan::{ContactChange, PlanCounts, Refresh, RowOutcome};
use sync_core::ports::{
    ContactRef, ContactWrite, DeliveryStats, Destination, Existence, WriteOutcome,
};
use sync_core::BoundMapping;

use crate::config::Project;
use crate::plan::{self, Error as PlanFailure};

/// What stops a run before it can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Plan(#[from] PlanFailure),
    #[error(transparent)]
    Store(#[from] state_store::Error),
    #[error("the run's worker thread failed: {0}")]
    Worker(String),
    #[error("setting up the Attentive client failed: {0}")]
    Client(String),
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Check contacts cached as not found again, whatever their age.
    pub recheck_missing: bool,
    /// Contacts cached as not found are checked again after this long.
    pub recheck_after: Duration,
    /// Contacts being delivered at most (the destination's own budget paces them further).
    /// Also what a stop waits for: contacts already handed to the destination finish.
    pub max_in_flight: usize,
    /// Set to stop the run cleanly (Ctrl-C): no new contact is started; those in flight
    /// finish and are committed.
    pub stop: Arc<AtomicBool>,
    /// Called once with the run's id as soon as the run is recorded (its lock taken), so that
    /// a frontend can point at a run while it goes on. Not called when the run cannot start.
    pub on_start: Option<OnStart>,
}

/// A callback given the id of a run that has just started (see [`RunOptions::on_start`]).
#[derive(Clone)]
pub struct OnStart(pub Arc<dyn Fn(i64) + Send + Sync>);

impl std::fmt::Debug for OnStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnStart(..)")
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            recheck_missing: false,
            recheck_after: Duration::from_secs(24 * 3600),
            max_in_flight: 16,
            stop: Arc::new(AtomicBool::new(false)),
            on_start: None,
        }
    }
}

/// Counts per outcome of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunCounts {
    pub updated: u64,
    pub unchanged: u64,
    pub not_found: u64,
    pub rejected: u64,
    pub failed: u64,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: i64,
    pub activation: String,
    /// `succeeded`, `partial` (some rows rejected, failed or not found), `failed`, `interrupted`.
    pub status: String,
    pub counts: RunCounts,
    /// The plan of the delivering pass.
    pub plan: PlanCounts,
    pub delivery: DeliveryStats,
    /// Read-only existence checks sent.
    pub existence_checks: u64,
    pub duration_ms: u64,
    /// Why the run failed or stopped.
    pub error: Option<String>,
}

/// Progress of a run, for progress bars.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Rows read by the delivering pass.
    pub rows: u64,
    /// Changed contacts found so far.
    pub changed: u64,
    /// Contacts whose delivery has finished (any outcome).
    pub delivered: u64,
}

/// A message to the committer thread.
#[derive(Debug)]
enum Commit {
    /// A write about to be sent: its attributes are marked in doubt, and `marked` is told
    /// once that is committed (only then is the write sent).
    Sending {
        change: ContactChange,
        marked: tokio::sync::oneshot::Sender<()>,
    },
    Updated {
        row: u64,
        change: ContactChange,
    },
    Refresh(Refresh),
    /// A 400: the row fingerprint moves (not re-sent until its values change), values do not.
    Rejected {
        row: u64,
        change: ContactChange,
        message: String,
    },
    NotFound {
        row: u64,
        contact: ContactRef,
    },
    Failed {
        row: u64,
        contact: ContactRef,
        reason: String,
    },
    Existence(ContactRef, Existence),
    Row(RunRow),
}

/// A change to deliver, with what the cache knows of its contact.
#[derive(Debug)]
struct Work {
    row: u64,
    change: ContactChange,
    write: ContactWrite,
    known: Option<Existence>,
}

fn attributes_json(w: &ContactWrite) -> String {
    let map: serde_json::Map<String, serde_json::Value> = w
        .attributes
        .iter()
        .map(|(id, v)| {
            let value = match v {
                Some(v) => serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
                None => serde_json::Value::String(String::new()),
            };
            (id.key(), value)
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// Whether the cache answers for a contact, or it must be checked.
fn cached_existence(
    store: &StateStore,
    destination: &str,
    contact: &ContactRef,
    opts: &RunOptions,
) -> Result<Option<Existence>, state_store::Error> {
    Ok(match store.existence(destination, contact)? {
        Some((Existence::Exists, _)) => Some(Existence::Exists),
        Some((Existence::NotFound, checked_at)) if !opts.recheck_missing => {
            let fresh = chrono::DateTime::parse_from_rfc3339(&checked_at)
                .map(|t| {
                    let age = chrono::Utc::now().signed_duration_since(t);
                    age.to_std().map_or(true, |a| a < opts.recheck_after)
                })
                .unwrap_or(false);
            fresh.then_some(Existence::NotFound)
        }
        _ => None,
    })
}

/// The Attentive client for an activation's destination, as its config describes it.
pub fn client_for(project: &Project, activation: &str) -> Result<attentive_client::Client, Error> {
    let a = project
        .activation(activation)
        .map_err(PlanFailure::Config)?;
    let d = project
        .destinations
        .get(&a.destination)
        .ok_or_else(|| PlanFailure::Config(format!("no destination named {:?}", a.destination)))?;
    let key = d
        .api_key
        .as_ref()
        .map_err(|e| PlanFailure::Config(format!("{e}: sending needs it")))?;
    let config = attentive_client::ClientConfig {
        base_url: d.base_url.clone(),
        requests_per_second: d.requests_per_second,
        destination: d.name.clone(),
        custom_only_v1: d.custom_only_via_v1,
        ..attentive_client::ClientConfig::new(key.clone())
    };
    attentive_client::Client::new(config).map_err(|e| Error::Client(e.to_string()))
}

/// Runs one activation against a destination. Returns a report for every run that started,
/// including failed and interrupted ones; `Err` only when it could not start or the state
/// store failed.
pub async fn run<D: Destination + 'static>(
    project: &Project,
    activation_name: &str,
    destination: Arc<D>,
    opts: RunOptions,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
) -> Result<RunReport, Error> {
    let started = Instant::now();
    let activation = project
        .activation(activation_name)
        .map_err(PlanFailure::Config)?
        .clone();
    let dest_name = activation.destination.clone();
    let mut store = StateStore::open(&project.state_path)?;
    let holder = format!("attentive-sync pid {}", std::process::id());
    let halt = Arc::new(Halt::default());
    let lock = LockKeeper::start(
        store.try_lock(&activation.name, &holder)?,
        halt.clone(),
        HEARTBEAT_EVERY,
    )?;
    store.mark_interrupted_runs(&activation.name)?;
    let run_id = store.begin_run(&activation.name, RunKind::Run)?;
    if let Some(on_start) = &opts.on_start {
        (on_start.0)(run_id);
    }

    // Pass 1: find duplicated identifiers.
    let known = {
        let project = project.clone();
        let name = activation.name.clone();
        let stop = opts.stop.clone();
        let halt = halt.clone();
        // Off the async threads: SQL models' drivers block.
        tokio::task::spawn_blocking(
            move || -> Result<(BoundMapping, HashMap<u64, Option<u64>>), Error> {
                let activation = project.activation(&name).map_err(PlanFailure::Config)?;
                let mapping = plan::bind(&project, activation)?.mapping;
                let reader = StateStore::open(&project.state_path)?;
                let last_wins = project.activations.get(&name).is_some_and(|a| {
                    a.mapping.duplicates == sync_core::mapping::DuplicatePolicy::Last
                });
                let mut known = HashMap::new();
                plan::plan_rows(
                    &project,
                    &name,
                    &reader,
                    HashMap::new(),
                    &|_| {},
                    &mut |_, p, _| {
                        if stop.load(Ordering::Relaxed) {
                            return Err(PlanFailure::Stopped("interrupted"));
                        }
                        if halt.is_set() {
                            return Err(PlanFailure::Stopped("halted"));
                        }
                        if let Some(h) = p.voids_earlier {
                            known.insert(h, last_wins.then_some(p.row));
                        }
                        Ok(())
                    },
                )?;
                Ok((mapping, known))
            },
        )
        .await
        .map_err(|e| Error::Worker(e.to_string()))?
    };
    let (mapping, known) = match known {
        Ok(k) => k,
        Err(e) => {
            let (status, msg) = if let Some(reason) = halt.reason() {
                (RunStatus::Failed, reason)
            } else if opts.stop.load(Ordering::Relaxed) {
                (
                    RunStatus::Interrupted,
                    "interrupted before delivery".to_owned(),
                )
            } else {
                (RunStatus::Failed, crate::error_chain(&e))
            };
            store.finish_run(run_id, status, "{}", Some(&msg))?;
            lock.release();
            return Ok(RunReport {
                run_id,
                activation: activation.name.clone(),
                status: status.as_str().to_owned(),
                counts: RunCounts::default(),
                plan: PlanCounts::default(),
                delivery: destination.stats(),
                existence_checks: 0,
                duration_ms: started.elapsed().as_millis() as u64,
                error: Some(msg),
            });
        }
    };

    let keys: Vec<&str> = mapping.attribute_keys().collect();
    store.retain_attributes(&activation.name, &keys)?;
    let mapping_json = serde_json::json!({
        "identifier": { "column": mapping.identifier.column, "kind": mapping.identifier.kind },
        "attributes": keys,
    });
    store.set_activation_mapping(&activation.name, &mapping_json.to_string())?;

    // The committer owns the writable store for the rest of the run.
    let (commit_tx, commit_rx) = std_mpsc::channel::<Commit>();
    let committer = {
        let name = activation.name.clone();
        let dest_name = dest_name.clone();
        let mapping = mapping.clone();
        let halt = halt.clone();
        std::thread::Builder::new()
            .name("state-committer".into())
            .spawn(move || {
                let target = CommitTarget {
                    activation: &name,
                    destination: &dest_name,
                    run_id,
                    mapping: &mapping,
                };
                commit_loop(store, &target, &commit_rx, &halt)
            })
            .map_err(|e| Error::Worker(e.to_string()))?
    };

    // Pass 2: plan again with duplicates known, streaming work to the delivery loop.
    let (work_tx, mut work_rx) = tokio::sync::mpsc::channel::<Work>(opts.max_in_flight.max(1) * 2);
    let counters = Arc::new(Counters::default());
    let planner = {
        let project = project.clone();
        let name = activation.name.clone();
        let dest_name = dest_name.clone();
        let commit_tx = commit_tx.clone();
        let opts = opts.clone();
        let counters = counters.clone();
        let progress = progress.clone();
        let halt = halt.clone();
        tokio::task::spawn_blocking(move || -> Result<PlanCounts, Error> {
            let reader = StateStore::open(&project.state_path)?;
            let cache = StateStore::open(&project.state_path)?;
            let mut cache_error = None;
            let (counts, _, _) = plan::plan_rows(
                &project,
                &name,
                &reader,
                known,
                &|n| {
                    counters.rows.store(n, Ordering::Relaxed);
                    progress(counters.progress());
                },
                &mut |mapping, p, _| {
                    if opts.stop.load(Ordering::Relaxed) {
                        return Err(PlanFailure::Stopped("interrupted"));
                    }
                    if halt.is_set() {
                        return Err(PlanFailure::Stopped("halted"));
                    }
                    match &p.outcome {
                        RowOutcome::Changed(c) => {
                            let known =
                                match cached_existence(&cache, &dest_name, &c.contact, &opts) {
                                    Ok(k) => k,
                                    Err(e) => {
                                        cache_error = Some(e);
                                        return Err(PlanFailure::Config(
                                            "state store failed".into(),
                                        ));
                                    }
                                };
                            counters.changed.fetch_add(1, Ordering::Relaxed);
                            let work = Work {
                                row: p.row,
                                write: c.to_write(mapping),
                                change: c.clone(),
                                known,
                            };
                            if work_tx.blocking_send(work).is_err() {
                                // Delivery stopped (fatal error or interrupt).
                                return Err(PlanFailure::Stopped("delivery stopped"));
                            }
                        }
                        RowOutcome::Unchanged {
                            refresh: Some(r), ..
                        } => {
                            record(&commit_tx, &halt, Commit::Refresh(r.clone()));
                        }
                        RowOutcome::Unchanged { .. } | RowOutcome::OutsideSegment => {}
                        RowOutcome::Rejected(r) => {
                            let row = Commit::Row(RunRow {
                                row_number: p.row,
                                contact_key: r.identifier.clone(),
                                outcome: Outcome::Rejected,
                                code: Some(r.code.as_str().to_owned()),
                                message: Some(r.to_string()),
                                attributes_json: None,
                            });
                            record(&commit_tx, &halt, row);
                        }
                    }
                    Ok(())
                },
            )
            .map_err(|e| match cache_error.take() {
                Some(s) => Error::Store(s),
                None => Error::Plan(e),
            })?;
            Ok(counts)
        })
    };

    // Delivery: up to `max_in_flight` writes at once; the destination paces requests.
    let limit = Arc::new(tokio::sync::Semaphore::new(opts.max_in_flight.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(work) = work_rx.recv().await {
        if opts.stop.load(Ordering::Relaxed) || halt.is_set() {
            break;
        }
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        if halt.is_set() {
            break; // the state store failed while this contact waited for its turn
        }
        let destination = destination.clone();
        let commit_tx = commit_tx.clone();
        let halt = halt.clone();
        let counters = counters.clone();
        let progress = progress.clone();
        let stop = opts.stop.clone();
        tasks.spawn(async move {
            let _permit = permit;
            if stop.load(Ordering::Relaxed) {
                return; // planned again by the next run
            }
            deliver(&*destination, work, &commit_tx, &halt, &counters, &stop).await;
            counters.delivered.fetch_add(1, Ordering::Relaxed);
            progress(counters.progress());
        });
        while tasks.try_join_next().is_some() {}
    }
    drop(work_rx);
    while tasks.join_next().await.is_some() {}
    let plan_result = planner.await.map_err(|e| Error::Worker(e.to_string()))?;
    drop(commit_tx);
    let (mut store, outcome_counts, committed) = committer
        .join()
        .map_err(|_| Error::Worker("the state committer panicked".into()))?;

    let fatal = halt.reason();
    let interrupted = opts.stop.load(Ordering::Relaxed);
    let (plan_counts, plan_error) = match plan_result {
        Ok(c) => (c, None),
        Err(e) => (PlanCounts::default(), Some(e)),
    };
    let counts = RunCounts {
        updated: outcome_counts.updated,
        unchanged: plan_counts.unchanged,
        not_found: outcome_counts.not_found,
        rejected: plan_counts.rejected + outcome_counts.rejected,
        failed: outcome_counts.failed,
    };
    let (status, error) = if let Some(f) = fatal {
        (RunStatus::Failed, Some(f))
    } else if interrupted {
        (
            RunStatus::Interrupted,
            Some(
                "interrupted: in-flight writes were committed; the next run sends the rest"
                    .to_owned(),
            ),
        )
    } else if let Some(e) = plan_error {
        match e {
            Error::Store(s) => return Err(Error::Store(s)),
            other => (RunStatus::Failed, Some(crate::error_chain(&other))),
        }
    } else if counts.rejected + counts.failed + counts.not_found > 0 {
        (RunStatus::Partial, None)
    } else {
        (RunStatus::Succeeded, None)
    };
    let report = RunReport {
        run_id,
        activation: activation.name.clone(),
        status: status.as_str().to_owned(),
        counts,
        plan: plan_counts,
        delivery: destination.stats(),
        existence_checks: counters.existence_checks.load(Ordering::Relaxed),
        duration_ms: started.elapsed().as_millis() as u64,
        error,
    };
    let json = serde_json::to_string(&report).unwrap_or_else(|_| "{}".into());
    let finished = store.finish_run(run_id, status, &json, report.error.as_deref());
    lock.release();
    match (committed, finished) {
        // What could not be recorded is the failure to report; the run row stays `running`
        // and the next run marks it interrupted.
        (Err(e), Err(_)) | (Ok(()), Err(e)) => Err(Error::Store(e)),
        (_, Ok(())) => Ok(report),
    }
}

/// How often the activation's lock is heart-beaten (and the state file's identity checked).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// Why a run must stop delivering at once, set by whichever part finds out first: the
/// destination (401/403, unreachable), the committer (the state store cannot record), the
/// lock keeper (lock lost, state file replaced). Once set, no new contact is started and no
/// write is sent: nothing goes out whose answer cannot be recorded.
#[derive(Debug, Default)]
struct Halt {
    set: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Halt {
    /// Halts the run; the first reason wins.
    fn halt(&self, reason: String) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert(reason);
        }
        self.set.store(true, Ordering::SeqCst);
    }

    fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    fn reason(&self) -> Option<String> {
        if !self.is_set() {
            return None;
        }
        Some(
            self.reason
                .lock()
                .ok()
                .and_then(|r| r.clone())
                .unwrap_or_else(|| "the run was halted".to_owned()),
        )
    }
}

/// Holds the activation's lock for the whole run on a thread of its own and heart-beats it
/// every `every` (which also checks that the state file is still the one the run opened), so
/// a long first pass is never mistaken for an abandoned run. A lost lock, a replaced file or
/// a failed heartbeat halts the run.
#[derive(Debug)]
struct LockKeeper {
    stop: std_mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl LockKeeper {
    fn start(
        lock: state_store::ActivationLock,
        halt: Arc<Halt>,
        every: Duration,
    ) -> Result<LockKeeper, Error> {
        let (stop, stopped) = std_mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("lock-keeper".into())
            .spawn(move || {
                while let Err(std_mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    if let Err(e) = lock.heartbeat() {
                        halt.halt(crate::error_chain(&e));
                        break;
                    }
                }
                drop(lock);
            })
            .map_err(|e| Error::Worker(e.to_string()))?;
        Ok(LockKeeper { stop, thread })
    }

    /// Stops heart-beating and releases the lock.
    fn release(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// Hands a result to the committer; if the committer has stopped (the store failed), halts
/// the run, since nothing more can be recorded.
fn record(commit: &std_mpsc::Sender<Commit>, halt: &Halt, msg: Commit) {
    if commit.send(msg).is_err() {
        halt.halt("the state committer stopped; nothing more can be recorded".to_owned());
    }
}

#[derive(Debug, Default)]
struct Counters {
    rows: AtomicU64,
    changed: AtomicU64,
    delivered: AtomicU64,
    existence_checks: AtomicU64,
}

impl Counters {
    fn progress(&self) -> Progress {
        Progress {
            rows: self.rows.load(Ordering::Relaxed),
            changed: self.changed.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
        }
    }
}

/// Checks existence if needed, then writes; every result goes to the committer.
async fn deliver<D: Destination>(
    destination: &D,
    work: Work,
    commit: &std_mpsc::Sender<Commit>,
    halt: &Halt,
    counters: &Counters,
    stop: &AtomicBool,
) {
    let send = |msg| record(commit, halt, msg);
    let contact = work.change.contact.clone();
    let exists = match work.known {
        Some(e) => e,
        None => {
            counters.existence_checks.fetch_add(1, Ordering::Relaxed);
            match destination.check_exists(&contact).await {
                Ok(e) => {
                    send(Commit::Existence(contact.clone(), e));
                    e
                }
                Err(e) if !destination.stops_run(&e) => {
                    send(Commit::Failed {
                        row: work.row,
                        contact,
                        reason: crate::error_chain(&e),
                    });
                    return;
                }
                Err(e) => {
                    halt.halt(crate::error_chain(&e));
                    return;
                }
            }
        }
    };
    if stop.load(Ordering::Relaxed) || halt.is_set() {
        return; // stopping: the write is left to the next run
    }
    if exists == Existence::NotFound {
        send(Commit::NotFound {
            row: work.row,
            contact,
        });
        return;
    }
    // The write's attributes are in doubt from before it leaves until its answer is recorded:
    // if the process dies in between, the next run sends them again, whatever the model says
    // by then (Attentive may have applied the write).
    let (marked, committed) = tokio::sync::oneshot::channel();
    send(Commit::Sending {
        change: work.change.clone(),
        marked,
    });
    if committed.await.is_err() || halt.is_set() {
        return; // the committer stopped (it halted the run): nothing could be recorded
    }
    match destination.write(&work.write).await {
        Ok(WriteOutcome::Acknowledged) => send(Commit::Updated {
            row: work.row,
            change: work.change,
        }),
        Ok(WriteOutcome::Rejected { message }) => send(Commit::Rejected {
            row: work.row,
            change: work.change,
            message,
        }),
        Ok(WriteOutcome::NotFound) => {
            send(Commit::Existence(contact.clone(), Existence::NotFound));
            send(Commit::NotFound {
                row: work.row,
                contact,
            });
        }
        Ok(WriteOutcome::Failed { reason }) => send(Commit::Failed {
            row: work.row,
            contact,
            reason,
        }),
        Err(e) if !destination.stops_run(&e) => send(Commit::Failed {
            row: work.row,
            contact,
            reason: crate::error_chain(&e),
        }),
        Err(e) => halt.halt(crate::error_chain(&e)),
    }
}

/// What the committer saw.
#[derive(Debug, Default)]
struct OutcomeCounts {
    updated: u64,
    not_found: u64,
    rejected: u64,
    failed: u64,
}

/// Most results committed in one transaction.
const MAX_COMMIT_BATCH: usize = 512;

/// Where the committer records: the run and what it maps.
struct CommitTarget<'a> {
    activation: &'a str,
    destination: &'a str,
    run_id: i64,
    mapping: &'a BoundMapping,
}

/// Commits results in small transactions, as soon as they arrive (see the loop). On the
/// first failure it halts the run at once (so nothing more is sent) and stops, returning the
/// store and the error so the run can still try to record how it ended.
fn commit_loop(
    mut store: StateStore,
    target: &CommitTarget<'_>,
    rx: &std_mpsc::Receiver<Commit>,
    halt: &Halt,
) -> (StateStore, OutcomeCounts, Result<(), state_store::Error>) {
    let mut counts = OutcomeCounts::default();
    let result = commit_all(&mut store, target, rx, &mut counts);
    if let Err(e) = &result {
        halt.halt(format!(
            "recording results in the state store failed, so nothing more is sent: {}",
            crate::error_chain(e)
        ));
    }
    (store, counts, result)
}

fn commit_all(
    store: &mut StateStore,
    target: &CommitTarget<'_>,
    rx: &std_mpsc::Receiver<Commit>,
    counts: &mut OutcomeCounts,
) -> Result<(), state_store::Error> {
    let CommitTarget {
        activation,
        destination,
        run_id,
        mapping,
    } = *target;
    let mut batch = CommitBatch::default();
    // Told once the batch that marked their writes in doubt is committed.
    let mut marked: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
    loop {
        // Wait for a result, then take whatever else is queued, and commit: a transaction
        // closes as soon as the queue is empty, so an acknowledged write (or a write waiting
        // to be sent) waits for at most one commit, however busy the run.
        let first = rx.recv();
        let mut done = first.is_err();
        let mut messages: Vec<Commit> = first.ok().into_iter().collect();
        while !done && messages.len() < MAX_COMMIT_BATCH {
            match rx.try_recv() {
                Ok(m) => messages.push(m),
                Err(std_mpsc::TryRecvError::Empty) => break,
                Err(std_mpsc::TryRecvError::Disconnected) => done = true,
            }
        }
        for msg in messages {
            match msg {
                Commit::Sending { change, marked: m } => {
                    batch.sending.push(change);
                    marked.push(m);
                }
                Commit::Updated { row, change } => {
                    counts.updated += 1;
                    batch.rows.push(RunRow {
                        row_number: row,
                        contact_key: Some(change.contact.key.clone()),
                        outcome: Outcome::Updated,
                        code: None,
                        message: None,
                        attributes_json: Some(attributes_json(&change.to_write(mapping))),
                    });
                    batch.acknowledged.push(change);
                }
                Commit::Refresh(r) => batch.refreshes.push(r),
                Commit::Rejected {
                    row,
                    change,
                    message,
                } => {
                    counts.rejected += 1;
                    batch.rows.push(RunRow {
                        row_number: row,
                        contact_key: Some(change.contact.key.clone()),
                        outcome: Outcome::Rejected,
                        code: Some("attentive_rejected".into()),
                        message: Some(message),
                        attributes_json: Some(attributes_json(&change.to_write(mapping))),
                    });
                    batch.refreshes.push(Refresh {
                        contact: change.contact.clone(),
                        key_hash: change.key_hash,
                        row_fingerprint: change.row_fingerprint,
                    });
                    batch.unapplied.push(change);
                }
                Commit::NotFound { row, contact } => {
                    counts.not_found += 1;
                    batch.rows.push(RunRow {
                        row_number: row,
                        contact_key: Some(contact.key.clone()),
                        outcome: Outcome::NotFound,
                        code: Some("not_found".into()),
                        message: Some(
                            "no Attentive contact has this identifier; nothing was written".into(),
                        ),
                        attributes_json: None,
                    });
                    batch.missing.push(contact.key);
                }
                Commit::Failed {
                    row,
                    contact,
                    reason,
                } => {
                    // Its attributes stay in doubt: a timed-out write may have been applied.
                    counts.failed += 1;
                    batch.rows.push(RunRow {
                        row_number: row,
                        contact_key: Some(contact.key),
                        outcome: Outcome::Failed,
                        code: Some("failed".into()),
                        message: Some(reason),
                        attributes_json: None,
                    });
                }
                Commit::Existence(c, e) => batch.existence.push((c, e)),
                Commit::Row(r) => batch.rows.push(r),
            }
        }
        if !batch.is_empty() {
            // Never record into a file that was deleted or replaced under the run.
            store.verify_file()?;
            store.commit(activation, destination, run_id, mapping, &batch)?;
            batch.clear();
            for m in marked.drain(..) {
                // The write's task may be gone (the run is stopping): nothing to tell then.
                let _ = m.send(());
            }
        }
        if done {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests;
