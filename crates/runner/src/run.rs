//! The run pipeline: plan → existence checks → delivery → snapshot commits.
//!
//! A run reads the model twice. The first pass only plans, to find duplicated identifiers;
//! the second plans again with them known and streams each change to the destination, so that
//! no row is sent and then voided by a later duplicate, and memory stays bounded (delivery, at
//! ~150 requests/s, is far slower than reading). Acknowledgements are committed to the state
//! store in small transactions as they arrive: killing the process loses nothing, and the next
//! run re-sends at most the writes that were in flight, which are marked in doubt before they
//! leave so that the next run sends them again whatever the model says by then.
//!
//! [`run`] wires a project's model and state file to a destination; [`execute`] is the
//! pipeline itself, over its ports ([`RunPorts`]), in named stages that tests drive in-process
//! (see `run/tests.rs`, with `sync_core::memory::MemoryDestination`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use state_store::{CommitBatch, Outcome, RunKind, RunRow, RunStatus, StateStore};
use sync_core::mapping::DuplicatePolicy;
use sync_core::plan::{ContactChange, PlanCounts, Refresh, RowOutcome};
use sync_core::ports::{
    ContactRef, ContactWrite, DeliveryStats, Destination, Existence, SnapshotStore, WriteOutcome,
};
use sync_core::{
    mapping::AttributeId, mapping::BoundMapping, mapping::IdentifierKind, mapping::StandardField,
    value::Canonical,
};

use crate::config::{AttachSecondary, Project};
use crate::plan::{self, Error as PlanFailure};

/// What stops a run before it can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Plan(#[from] PlanFailure),
    #[error(transparent)]
    Store(#[from] state_store::Error),
    /// A stage's task stopped without an answer (it panicked, or was cancelled).
    #[error("the run's {stage} stopped unexpectedly")]
    Task {
        stage: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// A stage's thread could not be started.
    #[error("starting the run's {stage} thread failed")]
    Thread {
        stage: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The committer thread panicked: what it had not committed is sent again next time.
    #[error("the state committer panicked")]
    CommitterPanicked,
    #[error("setting up the Attentive client failed")]
    Client(#[source] attentive_client::Error),
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
    /// When the destination's key belongs to another account than the one the state file is
    /// bound to: bind it to the new account, forgetting the destination's existence cache and
    /// the snapshots of its activations (the run then checks every contact and backfills).
    /// Without it such a run stops before sending anything.
    pub rebind_destination: bool,
    /// After submitting bulk jobs, wait until Attentive has processed them and their results
    /// are read (default true); without it the run ends `pending` and a later run (or
    /// `serve`) settles them.
    pub wait_for_jobs: bool,
    /// How often a waiting run asks about its jobs at first (then less and less often, up to
    /// 30 s).
    pub poll_every: Duration,
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
            rebind_destination: false,
            wait_for_jobs: true,
            poll_every: Duration::from_secs(1),
        }
    }
}

/// Counts per outcome of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RunCounts {
    pub updated: u64,
    pub unchanged: u64,
    pub not_found: u64,
    pub rejected: u64,
    pub failed: u64,
    /// Rows written without their secondary identifier, which belongs to another contact or
    /// could not be checked (code `identifier_conflict` or `identifier_unchecked`; counted in
    /// `updated` too).
    #[serde(default)]
    pub identifier_conflicts: u64,
    /// Rows submitted in bulk jobs whose result is not known yet.
    #[serde(default)]
    pub pending: u64,
}

/// What a run did, as `run --format json` prints it and the state file keeps it
/// (`runs.counts_json`; read it back with [`RunReport::from_json`]).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RunReport {
    pub run_id: i64,
    pub activation: String,
    /// `succeeded`, `partial` (some rows rejected, failed or not found), `failed`,
    /// `interrupted`, `pending` (bulk jobs not settled yet).
    pub status: RunStatus,
    // Fields default when absent, so that reports written by older versions still read.
    #[serde(default)]
    pub counts: RunCounts,
    /// The plan of the delivering pass.
    #[serde(default)]
    pub plan: PlanCounts,
    #[serde(default)]
    pub delivery: DeliveryStats,
    /// Contacts looked up (read-only; several per request with GraphQL lookups).
    #[serde(default)]
    pub existence_checks: u64,
    /// `realtime` or `bulk`: how this run sent its changes.
    #[serde(default)]
    pub delivery_mode: String,
    /// Bulk jobs this run submitted.
    #[serde(default)]
    pub bulk_jobs: u64,
    /// Bulk jobs of earlier runs this run settled before planning.
    #[serde(default)]
    pub jobs_settled: u64,
    #[serde(default)]
    pub duration_ms: u64,
    /// Why the run failed or stopped.
    #[serde(default)]
    pub error: Option<String>,
    /// Attribute keys the mapping did not have at the activation's previous run (a mapping
    /// change, which backfills them); empty on the first run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mapping_added: Vec<String>,
}

impl RunReport {
    /// A report as the state file keeps it (`runs.counts_json`); `None` for a run that ended
    /// before it had one (`{}`), or text that is not a report.
    pub fn from_json(json: &str) -> Option<RunReport> {
        serde_json::from_str(json).ok()
    }
}

impl RunCounts {
    /// The status of a run that went through its model: `pending` while records (or, with
    /// `jobs_open`, bulk jobs) are not settled, `partial` when a row was not applied (rejected,
    /// failed, not found, written without its secondary identifier), else `succeeded`.
    pub fn status(&self, jobs_open: bool) -> RunStatus {
        if self.pending > 0 || jobs_open {
            RunStatus::Pending
        } else if self.rejected + self.failed + self.not_found + self.identifier_conflicts > 0 {
            RunStatus::Partial
        } else {
            RunStatus::Succeeded
        }
    }

    /// The count of one row outcome (`unchanged` included).
    pub fn get(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::Updated => self.updated,
            Outcome::Unchanged => self.unchanged,
            Outcome::NotFound => self.not_found,
            Outcome::Rejected => self.rejected,
            Outcome::Failed => self.failed,
            Outcome::Pending => self.pending,
        }
    }
}

/// Progress of a run, for progress bars.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Rows read by the delivering pass.
    pub rows: u64,
    /// Changed contacts found so far.
    pub changed: u64,
    /// Contacts whose delivery has finished (any outcome; submitted in a bulk job counts).
    pub delivered: u64,
    /// Records of this run's bulk jobs whose result is not known yet.
    pub pending: u64,
    /// Delivery is done and the run waits for its bulk jobs.
    pub waiting: bool,
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
        note: Option<(&'static str, String)>,
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
    /// A bulk job about to be submitted: recorded with its records (pending), and `created`
    /// is told its id once that is committed (only then is it submitted).
    Job {
        records: Vec<(u64, ContactChange)>,
        created: tokio::sync::oneshot::Sender<i64>,
    },
    /// Attentive accepted the job: its id.
    Submitted(i64, String),
    /// The job's submission got no answer that says whether it exists: every record failed.
    Lost(i64, String),
    /// Records of a job refused before submission.
    Refused(i64, Vec<(u32, String)>),
}

/// A change to deliver, with what the cache knows of its contact.
#[derive(Debug)]
struct Work {
    row: u64,
    change: ContactChange,
    write: ContactWrite,
    known: Option<Existence>,
    /// A new value of the identifier the activation does not match on (`attach_secondary =
    /// "checked"`): looked up with the contact before it may be sent.
    secondary: Option<(usize, ContactRef)>,
    /// Why the row's outcome needs a person's eye though it was written (a secondary
    /// identifier left out): `(code, message)`.
    note: Option<(&'static str, String)>,
}

impl Work {
    /// Leaves the secondary identifier out of the write (and so out of the snapshot: it is
    /// not re-sent until the row changes).
    fn remove_secondary(&mut self) {
        if let Some((index, _)) = self.secondary.take() {
            if index < self.change.changes.len() {
                self.change.changes.remove(index);
            }
            // The write lists the change's attributes in the same order.
            if index < self.write.attributes.len() {
                self.write.attributes.remove(index);
            }
        }
    }

    /// [`Work::remove_secondary`], recording why on the row.
    fn drop_secondary(&mut self, code: &'static str, message: String) {
        self.remove_secondary();
        self.note = Some((code, message));
    }
}

/// The standard field that holds an identifier of this kind.
fn secondary_field(kind: IdentifierKind) -> StandardField {
    match kind {
        IdentifierKind::Email => StandardField::Email,
        IdentifierKind::Phone => StandardField::Phone,
    }
}

/// The new value of the identifier an activation does not match on, in a change, as a contact
/// reference (`phone` for an email identifier, `email` for a phone identifier).
/// Returns its index in the change's attributes too.
fn secondary_of(mapping: &BoundMapping, change: &ContactChange) -> Option<(usize, ContactRef)> {
    let kind = match mapping.identifier().kind {
        IdentifierKind::Email => IdentifierKind::Phone,
        IdentifierKind::Phone => IdentifierKind::Email,
    };
    let field = AttributeId::Standard(secondary_field(kind));
    change.changes.iter().enumerate().find_map(|(i, c)| {
        let attribute = &mapping.attributes().get(c.attribute)?.attribute;
        match (&c.value, *attribute == field) {
            (Some(Canonical::Text(v)), true) => Some((
                i,
                ContactRef {
                    kind,
                    key: v.clone(),
                },
            )),
            _ => None,
        }
    })
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

/// Whether the cache answers for a contact, or it must be checked: `not_found` entries are
/// checked again after `opts.recheck_after` (or always with `opts.recheck_missing`), `exists`
/// entries after `recheck_exists_after` (profiles are deleted by privacy requests).
fn cached_existence(
    store: &StateStore,
    destination: &str,
    contact: &ContactRef,
    opts: &RunOptions,
    recheck_exists_after: Duration,
) -> Result<Option<Existence>, state_store::Error> {
    let younger_than = |checked_at: &str, limit: Duration| {
        chrono::DateTime::parse_from_rfc3339(checked_at)
            .map(|t| {
                let age = chrono::Utc::now().signed_duration_since(t);
                age.to_std().map_or(true, |a| a < limit)
            })
            .unwrap_or(false)
    };
    Ok(match store.existence(destination, contact)? {
        Some((Existence::Exists, checked_at)) => {
            younger_than(&checked_at, recheck_exists_after).then_some(Existence::Exists)
        }
        Some((Existence::NotFound, checked_at)) if !opts.recheck_missing => {
            younger_than(&checked_at, opts.recheck_after).then_some(Existence::NotFound)
        }
        _ => None,
    })
}

/// The Attentive client for an activation's destination, as its config describes it.
pub fn client_for(project: &Project, activation: &str) -> Result<attentive_client::Client, Error> {
    let a = project.activation(activation).map_err(PlanFailure::from)?;
    let d = project.destinations.get(&a.destination).ok_or_else(|| {
        PlanFailure::UnknownDestination {
            activation: a.name.clone(),
            destination: a.destination.clone(),
        }
    })?;
    let key = d.api_key.as_ref().map_err(|why| PlanFailure::MissingKey {
        destination: d.name.clone(),
        why: why.clone(),
    })?;
    let config = attentive_client::ClientConfig {
        base_url: d.base_url.clone(),
        requests_per_second: d.requests_per_second,
        destination: d.name.clone(),
        custom_only_v1: d.custom_only_via_v1,
        existence_check: d.existence_check,
        lookup_batch: d.lookup_batch,
        rate_limit_scope: d.rate_limit_scope,
        bulk_requests_per_second: d.bulk_requests_per_second,
        bulk_batch_size: a.delivery.batch_size,
        ..attentive_client::ClientConfig::new(key.clone())
    };
    attentive_client::Client::new(config).map_err(Error::Client)
}

/// Runs one activation against a destination. Returns a report for every run that started,
/// including failed and interrupted ones; `Err` only when it could not start or the state
/// store failed.
///
/// Opens the activation's model through [`ProjectModel`] and the state store once, then
/// [`execute`]s the run.
pub async fn run<D: Destination + 'static>(
    project: &Project,
    activation_name: &str,
    destination: Arc<D>,
    opts: RunOptions,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
) -> Result<RunReport, Error> {
    let activation = project
        .activation(activation_name)
        .map_err(PlanFailure::from)?;
    let spec = RunSpec {
        activation: activation.name.clone(),
        destination: activation.destination.clone(),
        duplicates: activation.mapping.duplicates,
        recheck_exists_after: project
            .destinations
            .get(&activation.destination)
            .map_or(DEFAULT_RECHECK_EXISTS_AFTER, |d| d.recheck_exists_after),
        attach_secondary: activation.attach_secondary,
        base_url: project
            .destinations
            .get(&activation.destination)
            .map_or_else(String::new, |d| d.base_url.clone()),
        destination_activations: project
            .activations
            .values()
            .filter(|a| a.destination == activation.destination)
            .map(|a| a.name.clone())
            .collect(),
        delivery: activation.delivery,
        history: project.history,
    };
    let model = Arc::new(ProjectModel {
        project: project.clone(),
        activation: activation.name.clone(),
    });
    let store = StateStore::open(&project.state_path)?;
    // `run.started` is queued as soon as the run is recorded (the outbox is the state file,
    // through a connection of its own); a failure to queue it is logged, never the run's.
    let mut opts = opts;
    let frontend_on_start = opts.on_start.take();
    let queue_project = project.clone();
    let queue_activation = activation.name.clone();
    opts.on_start = Some(OnStart(Arc::new(move |run_id| {
        let queued = StateStore::open(&queue_project.state_path).and_then(|mut s| {
            crate::notify::run_started(&queue_project, &mut s, &queue_activation, run_id)
        });
        if let Err(e) = queued {
            tracing::warn!(activation = %queue_activation, run_id, "queueing run.started failed: {}", crate::error_chain(&e));
        }
        if let Some(f) = &frontend_on_start {
            (f.0)(run_id);
        }
    })));
    let report = execute(
        RunPorts {
            model,
            store,
            destination,
        },
        &spec,
        opts,
        progress,
    )
    .await?;
    evaluate_alerts(project, activation);
    Ok(report)
}

/// After a run: the alerts of its finished runs (this one, and earlier bulk runs that have
/// settled since), and the notifications they queue. A failure is logged, not the run's: the
/// next evaluation picks the runs up again.
pub fn evaluate_alerts(project: &Project, activation: &crate::config::Activation) {
    let evaluated = StateStore::open(&project.state_path).and_then(|mut s| {
        let e = crate::notify::evaluate_activation(project, &mut s, activation)?;
        s.prune_notifications(crate::notify::KEEP_NOTIFICATIONS)?;
        Ok(e)
    });
    match evaluated {
        Ok(e) if e.transitions > 0 => {
            tracing::info!(activation = %activation.name, runs = e.runs, transitions = e.transitions, "alerts changed state");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(activation = %activation.name, "evaluating alerts failed: {}", crate::error_chain(&e))
        }
    }
}

/// What a run works through: the model (opened once per pass), the state store (opened once,
/// shared by the stages), the destination.
pub struct RunPorts<D> {
    pub model: Arc<dyn ModelOpener>,
    pub store: StateStore,
    pub destination: Arc<D>,
}

impl<D> std::fmt::Debug for RunPorts<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunPorts")
            .field("model", &self.model.model())
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// What a run runs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The activation: its snapshot, lock and run history.
    pub activation: String,
    /// The account the existence cache is kept for.
    pub destination: String,
    /// Which row of a duplicated identifier wins.
    pub duplicates: DuplicatePolicy,
    /// A contact cached as existing is checked again after this long.
    pub recheck_exists_after: Duration,
    /// What to do with a new value of the identifier the activation does not match on.
    pub attach_secondary: AttachSecondary,
    /// The destination's base URL, recorded with its account.
    pub base_url: String,
    /// Every activation that sends to the destination (whose snapshots a rebinding forgets).
    pub destination_activations: Vec<String>,
    /// Realtime, bulk or auto.
    pub delivery: crate::config::Delivery,
    /// How many older runs keep their per-row outcomes (pruned after the run).
    pub history: crate::config::History,
}

/// Opens the model of a run, bound to its mapping (and file segment filter). Called once per
/// planning pass; each call reads the model from its first row.
pub trait ModelOpener: Send + Sync {
    /// The model's name, for errors.
    fn model(&self) -> &str;
    fn open(&self) -> Result<plan::Bound, PlanFailure>;
}

/// The model an activation of a project names.
#[derive(Debug, Clone)]
pub struct ProjectModel {
    pub project: Project,
    pub activation: String,
}

impl ModelOpener for ProjectModel {
    fn model(&self) -> &str {
        self.project
            .activations
            .get(&self.activation)
            .map_or("", |a| a.model.as_str())
    }

    fn open(&self) -> Result<plan::Bound, PlanFailure> {
        let activation = self
            .project
            .activation(&self.activation)
            .map_err(PlanFailure::from)?;
        plan::bind(&self.project, activation)
    }
}

/// The run's state store, shared by its stages: the planners read through it, the committer
/// writes through it, each call taking it for a moment.
#[derive(Debug, Clone)]
struct SharedStore(Arc<Mutex<StateStore>>);

impl SharedStore {
    fn with<T>(&self, f: impl FnOnce(&mut StateStore) -> T) -> T {
        // A stage that panicked holding the store did not commit half a transaction
        // (rusqlite rolls back on drop): the store is still consistent.
        let mut store = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut store)
    }
}

impl SnapshotStore for SharedStore {
    type Error = state_store::Error;

    fn load_index(
        &self,
        activation: &str,
        index: &mut sync_core::plan::SnapshotIndex,
    ) -> Result<(), state_store::Error> {
        self.with(|s| s.load_index(activation, index))
    }

    fn contact_attributes(
        &self,
        activation: &str,
        key_hash: u64,
        contact_key: &str,
        out: &mut Vec<sync_core::ports::StoredAttribute>,
    ) -> Result<(), state_store::Error> {
        self.with(|s| s.contact_attributes(activation, key_hash, contact_key, out))
    }
}

/// Runs an activation through its ports, in stages:
///
/// 1. [`begin`]: take the activation's lock (kept by a [`LockKeeper`]), record the run;
/// 2. [`find_duplicates`] (pass 1): plan the whole model only to find duplicated identifiers;
/// 3. [`record_mapping`]: forget attributes no longer mapped, record the mapping;
/// 4. [`Committer`]: a thread that records every result, one transaction per drain;
/// 5. [`plan_changes`] (pass 2): plan again, streaming changed contacts to delivery;
/// 6. [`deliver_all`]: existence checks and writes, `max_in_flight` at a time;
/// 7. [`conclude`]: the run's status and report, recorded.
pub async fn execute<D: Destination + 'static>(
    ports: RunPorts<D>,
    spec: &RunSpec,
    opts: RunOptions,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
) -> Result<RunReport, Error> {
    let started = Instant::now();
    let RunPorts {
        model,
        mut store,
        destination,
    } = ports;
    let halt = Arc::new(Halt::default());
    let (lock, run_id) = begin(&mut store, &spec.activation, &halt)?;
    if let Some(on_start) = &opts.on_start {
        (on_start.0)(run_id);
    }
    let store = SharedStore(Arc::new(Mutex::new(store)));
    // The report of a run that ends before delivery.
    let ended = |status: RunStatus, message: String| RunReport {
        run_id,
        activation: spec.activation.clone(),
        status,
        counts: RunCounts::default(),
        plan: PlanCounts::default(),
        delivery: destination.stats(),
        existence_checks: 0,
        delivery_mode: String::new(),
        bulk_jobs: 0,
        jobs_settled: 0,
        duration_ms: started.elapsed().as_millis() as u64,
        error: Some(message),
        mapping_added: Vec::new(),
    };
    // Before planning: rebinding forgets the cache and snapshots that planning reads.
    if let Err(msg) = bind_account(&store, spec, &*destination, opts.rebind_destination).await {
        store.with(|s| s.finish_run(run_id, RunStatus::Failed, "{}", Some(&msg)))?;
        lock.release();
        return Ok(ended(RunStatus::Failed, msg));
    }
    // Earlier runs' bulk jobs first: their results decide what is still to send.
    let settled_before =
        match bulk::settle_open(&store, &spec.activation, None, &*destination).await {
            Ok(s) => s,
            Err(SettleError::Store(e)) => return Err(Error::Store(e)),
            Err(SettleError::Destination(why)) => {
                let msg = format!(
                "{why} (asking about earlier runs' bulk jobs, before planning: nothing was sent)"
            );
                store.with(|s| s.finish_run(run_id, RunStatus::Failed, "{}", Some(&msg)))?;
                lock.release();
                return Ok(ended(RunStatus::Failed, msg));
            }
        };

    let pass1 = {
        let (model, store, spec) = (model.clone(), store.clone(), spec.clone());
        let (stop, halt) = (opts.stop.clone(), halt.clone());
        // Off the async threads: SQL models' drivers block.
        tokio::task::spawn_blocking(move || find_duplicates(&*model, &spec, &store, &stop, &halt))
            .await
            .map_err(|source| Error::Task {
                stage: "first planning pass",
                source,
            })?
    };
    let Pass1 {
        mapping,
        known,
        changed,
    } = match pass1 {
        Ok(found) => found,
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
            store.with(|s| s.finish_run(run_id, status, "{}", Some(&msg)))?;
            lock.release();
            return Ok(ended(status, msg));
        }
    };
    let mapping_added = store.with(|s| added_attributes(s, &spec.activation, &mapping))?;
    store.with(|s| record_mapping(s, &spec.activation, &mapping))?;
    let bulk_size = destination.bulk_limit().min(spec.delivery.batch_size);
    let use_bulk = spec.delivery.uses_bulk(changed) && bulk_size > 0;
    if spec.delivery.uses_bulk(changed) && bulk_size == 0 {
        tracing::warn!(
            activation = %spec.activation,
            "the destination takes no bulk jobs: this run sends in realtime"
        );
    }

    let target = CommitTarget {
        activation: spec.activation.clone(),
        destination: spec.destination.clone(),
        run_id,
        mapping: mapping.clone(),
    };
    let committer = Committer::start(store.clone(), target, halt.clone())?;
    let counters = Arc::new(Counters::default());
    let (work_tx, work_rx) = tokio::sync::mpsc::channel::<Work>(opts.max_in_flight.max(1) * 2);
    let planner = {
        let (model, store, spec) = (model.clone(), store.clone(), spec.clone());
        let commit_tx = committer.sender();
        let (opts, counters, progress, halt) = (
            opts.clone(),
            counters.clone(),
            progress.clone(),
            halt.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let stage = Pass2 {
                spec: &spec,
                store: &store,
                work: work_tx,
                commit: &commit_tx,
                counters: &counters,
                progress: &*progress,
                opts: &opts,
                halt: &halt,
            };
            plan_changes(&*model, stage, known)
        })
    };
    deliver_all(
        destination.clone(),
        work_rx,
        committer.sender(),
        &halt,
        &counters,
        &progress,
        &opts,
        use_bulk.then_some(bulk_size),
    )
    .await;
    let plan_result = planner.await.map_err(|source| Error::Task {
        stage: "planning pass",
        source,
    })?;
    let (outcome_counts, committed) = committer.finish()?;
    let jobs = counters.jobs.load(Ordering::Relaxed);
    let mut wait_error = None;
    if jobs > 0 && opts.wait_for_jobs && committed.is_ok() && !halt.is_set() {
        let report_progress = |open: u64| {
            counters.pending.store(open, Ordering::Relaxed);
            progress(Progress {
                waiting: true,
                ..counters.progress()
            });
        };
        match bulk::wait_for_run(
            &store,
            &spec.activation,
            run_id,
            &*destination,
            &opts,
            &report_progress,
        )
        .await
        {
            Ok(_) => {}
            Err(SettleError::Store(e)) => return Err(Error::Store(e)),
            Err(SettleError::Destination(why)) => wait_error = Some(why),
        }
    }
    let mut report = conclude(
        &spec.activation,
        run_id,
        started,
        plan_result,
        outcome_counts,
        &halt,
        &opts,
        destination.stats(),
        &counters,
    )?;
    report.delivery_mode = if use_bulk { "bulk" } else { "realtime" }.to_owned();
    report.mapping_added = mapping_added;
    report.bulk_jobs = jobs;
    report.jobs_settled = settled_before.jobs;
    if jobs > 0 {
        // Bulk records settle in the store (now, or after the run): its rows are the truth.
        store.with(|s| bulk::counts_from_rows(s, run_id, &mut report.counts))?;
        if matches!(report.status, RunStatus::Succeeded | RunStatus::Partial) {
            report.status = report.counts.status(false);
        }
        if let Some(why) = wait_error {
            report.error = Some(format!(
                "{why} (asking about this run's bulk jobs: they stay pending, and a later run settles them)"
            ));
        }
    }
    let json = serde_json::to_string(&report).unwrap_or_else(|_| "{}".into());
    let finished =
        store.with(|s| s.finish_run(run_id, report.status, &json, report.error.as_deref()));
    if finished.is_ok() {
        prune_history(&store, spec);
    }
    lock.release();
    match (committed, finished) {
        // What could not be recorded is the failure to report; the run row stays `running`
        // and the next run marks it interrupted.
        (Err(e), Err(_)) | (Ok(()), Err(e)) => Err(Error::Store(e)),
        (_, Ok(())) => Ok(report),
    }
}

/// After a run: prunes the per-row outcomes of runs beyond the history the config keeps
/// (their counts stay). A failure is logged, not the run's: it is tried again next time.
fn prune_history(store: &SharedStore, spec: &RunSpec) {
    let cutoff = spec
        .history
        .keep_days
        .and_then(|days| chrono::Duration::try_days(i64::try_from(days).ok()?))
        .and_then(|age| chrono::Utc::now().checked_sub_signed(age))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    match store
        .with(|s| s.prune_run_rows(&spec.activation, spec.history.keep_runs, cutoff.as_deref()))
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            activation = %spec.activation,
            rows = n,
            keep_runs = spec.history.keep_runs,
            "older runs' rows pruned"
        ),
        Err(e) => tracing::warn!(
            activation = %spec.activation,
            error = %crate::error_chain(&e),
            "pruning older runs' rows failed; tried again after the next run"
        ),
    }
}

/// Stage 1: takes the activation's lock (heart-beaten by a [`LockKeeper`] from now on), marks
/// runs a crashed process left `running` as `interrupted`, and records the run.
fn begin(
    store: &mut StateStore,
    activation: &str,
    halt: &Arc<Halt>,
) -> Result<(LockKeeper, i64), Error> {
    let holder = format!("attentive-sync pid {}", std::process::id());
    let lock = LockKeeper::start(
        store.try_lock(activation, &holder)?,
        halt.clone(),
        HEARTBEAT_EVERY,
    )?;
    store.mark_interrupted_runs(activation)?;
    let run_id = store.begin_run(activation, RunKind::Run)?;
    Ok((lock, run_id))
}

/// Stage 1b: asks the destination which account its key belongs to (once per run, before
/// planning) and checks it is the one the state file's existence cache and snapshots
/// belong to (see [`check_account`]). `Err(why)` stops the run before anything is sent.
async fn bind_account<D: Destination>(
    store: &SharedStore,
    spec: &RunSpec,
    destination: &D,
    rebind: bool,
) -> Result<(), String> {
    let account = destination.account().await.map_err(|e| {
        format!(
            "{} (asking which account the key of destination `{}` belongs to, before anything else: nothing was sent)",
            crate::error_chain(&e),
            spec.destination,
        )
    })?;
    store
        .with(|s| check_account(s, spec, account.as_ref(), rebind))
        .map_err(|e| crate::error_chain(&e))?
}

/// The first run binds the destination to its account; a run on another account is refused
/// (`Ok(Err(why))`), unless `rebind` says to forget what belonged to the old account.
fn check_account(
    store: &mut StateStore,
    spec: &RunSpec,
    account: Option<&sync_core::ports::Account>,
    rebind: bool,
) -> Result<Result<(), String>, state_store::Error> {
    let Some(account) = account else {
        tracing::warn!(
            destination = %spec.destination,
            "the destination does not say which account it is; the state file is not bound to one"
        );
        return Ok(Ok(()));
    };
    let name = account.name.as_deref();
    let describe = |id: &str, name: Option<&str>| match name {
        Some(n) => format!("{n:?} (company id {id})"),
        None => format!("company id {id}"),
    };
    match store.account_binding(&spec.destination)? {
        Some(b) if b.company_id != account.id && !rebind => Ok(Err(format!(
            "destination `{}` now reaches {} at {}, but this state file belongs to {} (bound at {} through {}): its existence cache and snapshots describe that account's contacts, so nothing was sent. If the key or base_url is wrong, fix it; to start over on the new account, run again with --rebind-destination (it forgets this destination's existence cache and the snapshots of {}, then checks every contact again and backfills), or point [state] path at another file",
            spec.destination,
            describe(&account.id, name),
            spec.base_url,
            describe(&b.company_id, b.company_name.as_deref()),
            b.bound_at,
            b.base_url,
            spec.destination_activations.join(", "),
        ))),
        Some(b) if b.company_id != account.id => {
            let activations: Vec<&str> =
                spec.destination_activations.iter().map(String::as_str).collect();
            let forgotten = store.rebind_account(
                &spec.destination,
                &activations,
                &account.id,
                name,
                &spec.base_url,
            )?;
            tracing::warn!(
                destination = %spec.destination,
                from = %b.company_id,
                to = %account.id,
                forgotten,
                "destination bound to another account: its existence cache and its activations' snapshots were forgotten"
            );
            Ok(Ok(()))
        }
        _ => {
            store.bind_account(&spec.destination, &account.id, name, &spec.base_url)?;
            Ok(Ok(()))
        }
    }
}

/// Stage 2 (pass 1): plans the whole model only to find duplicated identifiers (key hash →
/// the winning row, if one wins), so that pass 2 never sends a row a later duplicate voids.
/// Returns the bound mapping with them, and how many contacts have changes (which picks the
/// delivery mode).
fn find_duplicates(
    model: &dyn ModelOpener,
    spec: &RunSpec,
    store: &SharedStore,
    stop: &AtomicBool,
    halt: &Halt,
) -> Result<Pass1, Error> {
    let bound = model.open()?;
    let mapping = bound.mapping.clone();
    let last_wins = spec.duplicates == DuplicatePolicy::Last;
    let mut known = HashMap::new();
    let mut changed = 0u64;
    plan::plan_bound(
        bound,
        &spec.activation,
        model.model(),
        store,
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
            changed += u64::from(matches!(p.outcome, RowOutcome::Changed(_)));
            Ok(())
        },
    )?;
    Ok(Pass1 {
        mapping,
        known,
        changed,
    })
}

/// What pass 1 found.
struct Pass1 {
    mapping: BoundMapping,
    /// Duplicated identifiers: key hash → the winning row, if one wins.
    known: HashMap<u64, Option<u64>>,
    /// Contacts with changes.
    changed: u64,
}

/// Stage 3: forgets the snapshot's attributes that are no longer mapped and records the
/// mapping the run uses.
/// The attribute keys of `mapping` that the mapping the activation last ran with did not
/// have; none when it never ran (a first run is not a mapping change).
fn added_attributes(
    store: &StateStore,
    activation: &str,
    mapping: &BoundMapping,
) -> Result<Vec<String>, state_store::Error> {
    let Some(previous) = previous_attribute_keys(store, activation)? else {
        return Ok(Vec::new());
    };
    Ok(mapping
        .attribute_keys()
        .filter(|k| !previous.iter().any(|p| p == k))
        .map(str::to_owned)
        .collect())
}

/// The attribute keys of the mapping the activation last ran with (`None`: it never ran).
pub fn previous_attribute_keys(
    store: &StateStore,
    activation: &str,
) -> Result<Option<Vec<String>>, state_store::Error> {
    let Some(json) = store.activation_mapping(activation)? else {
        return Ok(None);
    };
    let value: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    Ok(value.get("attributes").and_then(|a| a.as_array()).map(|a| {
        a.iter()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect()
    }))
}

fn record_mapping(
    store: &mut StateStore,
    activation: &str,
    mapping: &BoundMapping,
) -> Result<(), state_store::Error> {
    let keys: Vec<&str> = mapping.attribute_keys().collect();
    store.retain_attributes(activation, &keys)?;
    let mapping_json = serde_json::json!({
        "identifier": { "column": mapping.identifier().column, "kind": mapping.identifier().kind },
        "attributes": keys,
    });
    store.set_activation_mapping(activation, &mapping_json.to_string())
}

/// What pass 2 works with.
struct Pass2<'a> {
    spec: &'a RunSpec,
    store: &'a SharedStore,
    work: tokio::sync::mpsc::Sender<Work>,
    commit: &'a std_mpsc::Sender<Commit>,
    counters: &'a Counters,
    progress: &'a (dyn Fn(Progress) + Send + Sync),
    opts: &'a RunOptions,
    halt: &'a Halt,
}

/// Stage 5 (pass 2): plans the model again with its duplicates known and streams each changed
/// contact, with what the existence cache knows of it, to delivery (bounded: planning waits
/// for delivery). Unchanged rows with a new fingerprint and rejected rows go straight to the
/// committer.
fn plan_changes(
    model: &dyn ModelOpener,
    stage: Pass2<'_>,
    known: HashMap<u64, Option<u64>>,
) -> Result<PlanCounts, Error> {
    let Pass2 {
        spec,
        store,
        work,
        commit,
        counters,
        progress,
        opts,
        halt,
    } = stage;
    let bound = model.open()?;
    let (counts, _, _) = plan::plan_bound(
        bound,
        &spec.activation,
        model.model(),
        store,
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
                    let known = store
                        .with(|s| {
                            cached_existence(
                                s,
                                &spec.destination,
                                &c.contact,
                                opts,
                                spec.recheck_exists_after,
                            )
                        })
                        .map_err(PlanFailure::Store)?;
                    counters.changed.fetch_add(1, Ordering::Relaxed);
                    let mut next = Work {
                        row: p.row,
                        write: c.to_write(mapping),
                        change: c.clone(),
                        known,
                        secondary: secondary_of(mapping, c),
                        note: None,
                    };
                    match spec.attach_secondary {
                        AttachSecondary::Always => next.secondary = None,
                        AttachSecondary::Never => {
                            if next.secondary.is_some() {
                                next.remove_secondary();
                            }
                        }
                        // Looked up with the contact, which then needs a lookup too (for its
                        // id), unless it is known not to exist.
                        AttachSecondary::Checked if next.secondary.is_some() => {
                            if next.known == Some(Existence::Exists) {
                                next.known = None;
                            }
                        }
                        AttachSecondary::Checked => {}
                    }
                    if work.blocking_send(next).is_err() {
                        // Delivery stopped (fatal error or interrupt).
                        return Err(PlanFailure::Stopped("delivery stopped"));
                    }
                }
                RowOutcome::Unchanged {
                    refresh: Some(r), ..
                } => record(commit, halt, Commit::Refresh(r.clone())),
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
                    record(commit, halt, row);
                }
            }
            Ok(())
        },
    )
    .map_err(|e| match e {
        PlanFailure::Store(s) => Error::Store(s),
        other => Error::Plan(other),
    })?;
    Ok(counts)
}

/// Stage 6: delivers the changed contacts pass 2 streams. Contacts the existence cache
/// cannot answer for are looked up in batches ([`Destination::check_many`], up to
/// [`Destination::lookup_batch`] a request; a batch leaves when full, at the end of the model,
/// or after [`LOOKUP_LINGER`] without a new contact); then each contact that exists is
/// written through [`deliver`]. Up to `max_in_flight` requests at once (the destination paces
/// them further), and a bounded backlog, so that planning waits for delivery. Stops taking
/// new contacts on a stop or a halt; returns once those in flight are done.
#[allow(clippy::too_many_arguments)]
async fn deliver_all<D: Destination + 'static>(
    destination: Arc<D>,
    mut work_rx: tokio::sync::mpsc::Receiver<Work>,
    commit_tx: std_mpsc::Sender<Commit>,
    halt: &Arc<Halt>,
    counters: &Arc<Counters>,
    progress: &Arc<dyn Fn(Progress) + Send + Sync>,
    opts: &RunOptions,
    bulk: Option<usize>,
) {
    let in_flight = opts.max_in_flight.max(1);
    let limit = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    let (checked_tx, mut checked_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Work>>();
    let mut pending: Vec<Work> = Vec::new();
    let mut linger: Option<tokio::time::Instant> = None;
    let mut ready: std::collections::VecDeque<Work> = Default::default();
    // Contacts in lookups that have not answered yet.
    let mut checking = 0usize;
    let mut open = true;
    // Bulk mode: contacts known to exist wait here for a job; jobs being submitted.
    let mut job: Vec<Work> = Vec::new();
    let (job_done_tx, mut job_done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut jobs_out = 0usize;
    let stopping = || opts.stop.load(Ordering::Relaxed) || halt.is_set();
    let submit = |works: Vec<Work>, tasks: &mut tokio::task::JoinSet<usize>| {
        let (destination, commit_tx, halt, counters, progress, stop, limit, done) = (
            destination.clone(),
            commit_tx.clone(),
            halt.clone(),
            counters.clone(),
            progress.clone(),
            opts.stop.clone(),
            limit.clone(),
            job_done_tx.clone(),
        );
        tasks.spawn(async move {
            if let Ok(_permit) = limit.acquire_owned().await {
                bulk::submit_job(&*destination, works, &commit_tx, &halt, &stop, &counters).await;
                progress(counters.progress());
            }
            let _ = done.send(());
            0
        });
    };
    loop {
        if stopping() {
            break;
        }
        if let Some(size) = bulk {
            // Contacts known to exist go into the next job; the others (not found) are
            // recorded through `deliver` as in realtime.
            let mut rest = std::collections::VecDeque::new();
            for w in ready.drain(..) {
                if w.known == Some(Existence::Exists) {
                    job.push(w);
                } else {
                    rest.push_back(w);
                }
            }
            ready = rest;
            let last = !open && pending.is_empty() && checking == 0 && !job.is_empty();
            if job.len() >= size || last {
                let works: Vec<Work> = job.drain(..job.len().min(size)).collect();
                jobs_out += 1;
                submit(works, &mut tasks);
                continue;
            }
        }
        let batch = destination.lookup_batch().max(1);
        // Enough contacts in the backlog to keep `in_flight` lookups of full batches going;
        // planning waits beyond it.
        let backlog = pending.len() + ready.len() + checking;
        let take = open && backlog < (in_flight + 1) * batch && jobs_out <= in_flight;
        // A batch leaves full, at the end of the model, or when the model has had nothing
        // more for it for a moment while no other lookup is out (a partial batch costs a
        // request; waiting while lookups are answered, or while writes are the bottleneck and
        // planned contacts wait in the channel, costs nothing).
        let idle = take && checking == 0 && work_rx.is_empty();
        let flush = !pending.is_empty()
            && (pending.len() >= batch
                || !open
                || (idle && linger.is_some_and(|t| t <= tokio::time::Instant::now())));
        if flush {
            let contacts = std::mem::take(&mut pending);
            linger = None;
            checking += contacts.len();
            let (destination, commit_tx, halt, counters) = (
                destination.clone(),
                commit_tx.clone(),
                halt.clone(),
                counters.clone(),
            );
            let (limit, checked_tx) = (limit.clone(), checked_tx.clone());
            tasks.spawn(async move {
                let n = contacts.len();
                let found = match limit.acquire_owned().await {
                    Ok(_permit) => {
                        look_up(&*destination, contacts, &commit_tx, &halt, &counters).await
                    }
                    Err(_) => Vec::new(),
                };
                // The loop counts what it gets back against what it sent.
                let _ = checked_tx.send(found);
                n
            });
            continue;
        }
        let wake = linger.unwrap_or_else(|| tokio::time::Instant::now() + LOOKUP_LINGER);
        tokio::select! {
            biased;
            Some(found) = checked_rx.recv(), if checking > 0 => {
                ready.extend(found);
            }
            Some(()) = job_done_rx.recv(), if jobs_out > 0 => {
                jobs_out -= 1;
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(n) = done {
                    checking = checking.saturating_sub(n);
                }
            }
            permit = limit.clone().acquire_owned(), if !ready.is_empty() => {
                let (Ok(permit), Some(work)) = (permit, ready.pop_front()) else { break };
                if stopping() {
                    break; // planned again by the next run
                }
                let (destination, commit_tx, halt, counters, progress, stop) = (
                    destination.clone(),
                    commit_tx.clone(),
                    halt.clone(),
                    counters.clone(),
                    progress.clone(),
                    opts.stop.clone(),
                );
                tasks.spawn(async move {
                    let _permit = permit;
                    deliver(&*destination, work, &commit_tx, &halt, &stop).await;
                    counters.delivered.fetch_add(1, Ordering::Relaxed);
                    progress(counters.progress());
                    0
                });
            }
            work = work_rx.recv(), if take => match work {
                Some(work) if work.known.is_some() => ready.push_back(work),
                Some(work) => {
                    pending.push(work);
                    linger.get_or_insert_with(|| tokio::time::Instant::now() + LOOKUP_LINGER);
                }
                None => open = false,
            },
            () = tokio::time::sleep_until(wake), if idle && !pending.is_empty() => {}
            else => break,
        }
    }
    drop(work_rx);
    while tasks.join_next().await.is_some() {}
}

/// How long a lookup batch that is not full waits for more contacts before it leaves.
const LOOKUP_LINGER: Duration = Duration::from_millis(5);

/// Looks up a batch of contacts and records what was found; returns those that exist, ready
/// to write (those that do not are recorded `not_found`; a failed lookup is a `failed` row, or
/// halts the run when it is fatal).
async fn look_up<D: Destination>(
    destination: &D,
    mut contacts: Vec<Work>,
    commit: &std_mpsc::Sender<Commit>,
    halt: &Halt,
    counters: &Counters,
) -> Vec<Work> {
    let send = |msg| record(commit, halt, msg);
    let n = contacts.len();
    counters
        .existence_checks
        .fetch_add(n as u64, Ordering::Relaxed);
    let mut refs: Vec<ContactRef> = Vec::with_capacity(contacts.len());
    for w in &contacts {
        refs.push(w.change.contact.clone());
        refs.extend(w.secondary.as_ref().map(|(_, c)| c.clone()));
    }
    let answers = destination.check_many(&refs).await;
    let mut exists = Vec::with_capacity(contacts.len());
    let mut answers = answers.into_iter();
    for mut work in contacts.drain(..) {
        let contact = work.change.contact.clone();
        let answer = answers.next();
        let secondary = work.secondary.is_some().then(|| answers.next()).flatten();
        match answer {
            Some(Ok(lookup)) => {
                send(Commit::Existence(contact.clone(), lookup.existence));
                work.known = Some(lookup.existence);
                if let Some((_, held)) = &work.secondary {
                    let (what, value) = (held.kind.as_str(), held.key.clone());
                    match secondary {
                        Some(Ok(s)) if s.existence == Existence::NotFound => {}
                        Some(Ok(s)) if s.id.is_some() && s.id == lookup.id => {}
                        Some(Ok(s)) => work.drop_secondary(
                            "identifier_conflict",
                            if s.id.is_some() {
                                format!(
                                    "{what} {value} belongs to another Attentive contact, so it was not attached to {} (sending both would link two people's profiles); the row's other attributes were sent. Correct the {what} in the model, or set attach_secondary = \"always\" if they are one person",
                                    contact.key
                                )
                            } else {
                                format!(
                                    "{what} {value} is already held by an Attentive contact and this existence check cannot tell whether it is {} (existence_check = \"subscriptions\"), so it was not attached; the row's other attributes were sent",
                                    contact.key
                                )
                            },
                        ),
                        Some(Err(e)) => work.drop_secondary(
                            "identifier_unchecked",
                            format!(
                                "who holds {what} {value} could not be checked ({}), so it was not attached this time; the row's other attributes were sent",
                                crate::error_chain(&e)
                            ),
                        ),
                        None => work.drop_secondary(
                            "identifier_unchecked",
                            format!("who holds {what} {value} could not be checked, so it was not attached this time"),
                        ),
                    }
                }
                match lookup.existence {
                    Existence::Exists => exists.push(work),
                    Existence::NotFound => send(Commit::NotFound {
                        row: work.row,
                        contact,
                    }),
                }
            }
            Some(Err(e)) if !destination.stops_run(&e) => send(Commit::Failed {
                row: work.row,
                contact,
                reason: crate::error_chain(&e),
            }),
            Some(Err(e)) => halt.halt(crate::error_chain(&e)),
            None => send(Commit::Failed {
                row: work.row,
                contact,
                reason: "the destination gave no answer to its existence check".into(),
            }),
        }
    }
    // Those not written are done (for progress); the others count when written.
    let done = (n - exists.len()) as u64;
    counters.delivered.fetch_add(done, Ordering::Relaxed);
    exists
}

/// Stage 7: the run's counts, status and report. `Err` only when pass 2 failed on the state
/// store (the run cannot be reported then).
#[allow(clippy::too_many_arguments)]
fn conclude(
    activation: &str,
    run_id: i64,
    started: Instant,
    plan_result: Result<PlanCounts, Error>,
    outcome_counts: OutcomeCounts,
    halt: &Halt,
    opts: &RunOptions,
    delivery: DeliveryStats,
    counters: &Counters,
) -> Result<RunReport, Error> {
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
        identifier_conflicts: outcome_counts.identifier_conflicts,
        pending: 0,
    };
    let (status, error) = if let Some(f) = halt.reason() {
        (RunStatus::Failed, Some(f))
    } else if opts.stop.load(Ordering::Relaxed) {
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
    } else {
        (counts.status(false), None)
    };
    Ok(RunReport {
        run_id,
        activation: activation.to_owned(),
        status,
        counts,
        plan: plan_counts,
        delivery,
        existence_checks: counters.existence_checks.load(Ordering::Relaxed),
        delivery_mode: String::new(),
        bulk_jobs: 0,
        jobs_settled: 0,
        duration_ms: started.elapsed().as_millis() as u64,
        error,
        mapping_added: Vec::new(),
    })
}

/// How long a contact cached as existing is trusted when the config says nothing.
pub const DEFAULT_RECHECK_EXISTS_AFTER: Duration = Duration::from_secs(30 * 86_400);

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
            .map_err(|source| Error::Thread {
                stage: "lock keeper",
                source,
            })?;
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
    /// Bulk jobs submitted (whatever the answer).
    jobs: AtomicU64,
    /// Records of this run's jobs not settled yet.
    pending: AtomicU64,
}

impl Counters {
    fn progress(&self) -> Progress {
        Progress {
            rows: self.rows.load(Ordering::Relaxed),
            changed: self.changed.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
            waiting: false,
        }
    }
}

/// Writes one contact the cache or a lookup found (a contact known not to exist is recorded
/// `not_found` and not written); every result goes to the committer.
async fn deliver<D: Destination>(
    destination: &D,
    work: Work,
    commit: &std_mpsc::Sender<Commit>,
    halt: &Halt,
    stop: &AtomicBool,
) {
    let send = |msg| record(commit, halt, msg);
    let contact = work.change.contact.clone();
    let Some(exists) = work.known else {
        // Never written without a check: a write to an unknown identifier creates a contact.
        send(Commit::Failed {
            row: work.row,
            contact,
            reason: "its existence was never checked".into(),
        });
        return;
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
            note: work.note,
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
        // An answer a newer port knows: not known to be applied, so sent again.
        Ok(other) => send(Commit::Failed {
            row: work.row,
            contact,
            reason: format!("an answer this version does not know: {other:?}"),
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
    identifier_conflicts: u64,
}

/// Most results committed in one transaction.
const MAX_COMMIT_BATCH: usize = 512;

/// Where the committer records: the run and what it maps.
struct CommitTarget {
    activation: String,
    destination: String,
    run_id: i64,
    mapping: BoundMapping,
}

/// Stage 4: the committer, a thread that records every result of the run as it arrives (see
/// [`commit_all`]). On its first failure it halts the run at once (so nothing more is sent)
/// and stops; [`Committer::finish`] then returns the error so the run can still try to record
/// how it ended.
struct Committer {
    tx: std_mpsc::Sender<Commit>,
    thread: std::thread::JoinHandle<(OutcomeCounts, Result<(), state_store::Error>)>,
}

impl Committer {
    fn start(store: SharedStore, target: CommitTarget, halt: Arc<Halt>) -> Result<Self, Error> {
        let (tx, rx) = std_mpsc::channel::<Commit>();
        let thread = std::thread::Builder::new()
            .name("state-committer".into())
            .spawn(move || {
                let mut counts = OutcomeCounts::default();
                let result = commit_all(&store, &target, &rx, &mut counts);
                if let Err(e) = &result {
                    halt.halt(format!(
                        "recording results in the state store failed, so nothing more is sent: {}",
                        crate::error_chain(e)
                    ));
                }
                (counts, result)
            })
            .map_err(|source| Error::Thread {
                stage: "committer",
                source,
            })?;
        Ok(Committer { tx, thread })
    }

    /// Where the stages send their results.
    fn sender(&self) -> std_mpsc::Sender<Commit> {
        self.tx.clone()
    }

    /// Waits until everything sent is committed (every other sender must be gone).
    fn finish(self) -> Result<(OutcomeCounts, Result<(), state_store::Error>), Error> {
        drop(self.tx);
        self.thread.join().map_err(|_| Error::CommitterPanicked)
    }
}

/// Commits results in small transactions, as soon as they arrive: each drain of the queue is
/// one [`StateStore::commit`]; the writes waiting to be sent are told once it is committed.
fn commit_all(
    store: &SharedStore,
    target: &CommitTarget,
    rx: &std_mpsc::Receiver<Commit>,
    counts: &mut OutcomeCounts,
) -> Result<(), state_store::Error> {
    let CommitTarget {
        activation,
        destination,
        run_id,
        mapping,
    } = target;
    let run_id = *run_id;
    let mut batch = CommitBatch::default();
    // Told once the batch that marked their writes in doubt is committed.
    let mut marked: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
    // Told their job's id once the batch that recorded it is committed.
    let mut created: Vec<tokio::sync::oneshot::Sender<i64>> = Vec::new();
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
                Commit::Updated { row, change, note } => {
                    counts.updated += 1;
                    counts.identifier_conflicts += u64::from(note.is_some());
                    let (code, message) =
                        note.map_or((None, None), |(c, m)| (Some(c.to_owned()), Some(m)));
                    batch.rows.push(RunRow {
                        row_number: row,
                        contact_key: Some(change.contact.key.clone()),
                        outcome: Outcome::Updated,
                        code,
                        message,
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
                Commit::Job {
                    records,
                    created: c,
                } => {
                    batch.jobs.push(
                        records
                            .into_iter()
                            .map(|(row_number, change)| state_store::JobRecordIn {
                                row_number,
                                change,
                            })
                            .collect(),
                    );
                    created.push(c);
                }
                Commit::Submitted(job, remote) => batch.submitted.push((job, remote)),
                Commit::Lost(job, why) => batch.lost.push((job, why)),
                Commit::Refused(job, refused) => batch.record_results.push((
                    job,
                    refused
                        .into_iter()
                        .map(|(seq, m)| (seq, state_store::RecordResult::Rejected(m)))
                        .collect(),
                )),
            }
        }
        if !batch.is_empty() {
            let jobs = store.with(|s| {
                // Never record into a file that was deleted or replaced under the run.
                s.verify_file()?;
                s.commit(activation, destination, run_id, mapping, &batch)
            })?;
            batch.clear();
            for m in marked.drain(..) {
                // The write's task may be gone (the run is stopping): nothing to tell then.
                let _ = m.send(());
            }
            for (c, id) in created.drain(..).zip(jobs) {
                let _ = c.send(id);
            }
        }
        if done {
            return Ok(());
        }
    }
}

mod bulk;
pub use bulk::{settle_activation, SettleError, Settled};

#[cfg(test)]
mod tests;
