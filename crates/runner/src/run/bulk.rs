//! Bulk jobs of a run: submission (records recorded, then submitted), and settlement (polls,
//! result files, each record settled in the state store).
//!
//! Every run first settles the activation's open jobs ([`settle_open`]); a run that submitted
//! jobs waits for them unless told not to ([`wait_for_run`]); `serve` settles in the
//! background through [`settle_activation`].

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use state_store::{JobState, JobSummary, RecordResult, RunStatus, StateStore};
use sync_core::ports::{
    BulkJobState, BulkRecordOutcome, BulkRecordResult, BulkSubmission, ContactRef, ContactWrite,
    Destination,
};

use super::{deliver, record, Commit, Counters, Halt, SharedStore, Work};

/// Jobs still open after this long are settled as failed: Attentive keeps jobs two weeks.
const JOB_EXPIRY: Duration = Duration::from_secs(14 * 86_400);

/// Jobs asked about at once while settling.
const SETTLE_CONCURRENCY: usize = 8;

/// Longest wait between two polls of a waiting run.
const MAX_POLL_EVERY: Duration = Duration::from_secs(30);

/// Why settling stopped.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// The destination refused the key or a permission: nothing can be polled.
    #[error("{0}")]
    Destination(String),
    #[error(transparent)]
    Store(#[from] state_store::Error),
}

/// What settling did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settled {
    /// Jobs settled.
    pub jobs: u64,
    /// Jobs still open.
    pub open: u64,
}

/// Submits changed contacts known to exist as one bulk job. The job and its records are
/// recorded first (pending in doubt), and only then submitted: a crash in between leaves a job
/// the next run settles as lost (its records sent again). A job refused as a whole is sent
/// one contact at a time.
pub(super) async fn submit_job<D: Destination>(
    destination: &D,
    works: Vec<Work>,
    commit: &std_mpsc::Sender<Commit>,
    halt: &Halt,
    stop: &std::sync::atomic::AtomicBool,
    counters: &Counters,
) {
    let n = works.len() as u64;
    let (created, id) = tokio::sync::oneshot::channel();
    record(
        commit,
        halt,
        Commit::Job {
            records: works.iter().map(|w| (w.row, w.change.clone())).collect(),
            created,
        },
    );
    let Ok(job) = id.await else {
        return; // the committer stopped (it halted the run)
    };
    if halt.is_set() {
        // Recorded but never submitted: settled as lost by the next run.
        record(
            commit,
            halt,
            Commit::Lost(job, "the run stopped before submitting it".into()),
        );
        return;
    }
    let writes: Vec<ContactWrite> = works.iter().map(|w| w.write.clone()).collect();
    let answer = destination.submit_bulk(&writes).await;
    counters.jobs.fetch_add(1, Ordering::Relaxed);
    match answer {
        Ok(BulkSubmission::Submitted { job_id, refused }) => {
            record(commit, halt, Commit::Submitted(job, job_id));
            if !refused.is_empty() {
                let refused = refused
                    .into_iter()
                    .map(|(i, m)| (u32::try_from(i).unwrap_or(u32::MAX), m))
                    .collect();
                record(commit, halt, Commit::Refused(job, refused));
            }
            counters.pending.fetch_add(n, Ordering::Relaxed);
            counters.delivered.fetch_add(n, Ordering::Relaxed);
        }
        Ok(BulkSubmission::Rejected { message }) => {
            tracing::warn!(
                job,
                %message,
                "a bulk job was refused as a whole; its {n} contacts are sent one at a time"
            );
            record(
                commit,
                halt,
                Commit::Lost(
                    job,
                    format!("the bulk job was refused as a whole ({message}); each contact was sent on its own"),
                ),
            );
            for w in works {
                deliver(destination, w, commit, halt, stop).await;
                counters.delivered.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(BulkSubmission::Failed { reason }) => {
            record(
                commit,
                halt,
                Commit::Lost(
                    job,
                    format!("no answer says whether the bulk job was created ({reason}); its contacts are sent again"),
                ),
            );
            counters.delivered.fetch_add(n, Ordering::Relaxed);
        }
        Err(e) => {
            let why = crate::error_chain(&e);
            record(
                commit,
                halt,
                Commit::Lost(job, format!("submitting the bulk job failed: {why}")),
            );
            counters.delivered.fetch_add(n, Ordering::Relaxed);
            if destination.stops_run(&e) {
                halt.halt(why);
            }
        }
    }
}

/// Matches a result file's lines to a job's records: a record takes the outcome of the line
/// that names its identifier; no line, or lines that disagree, fail it.
pub(super) fn match_results(
    records: &[state_store::JobRecord],
    lines: &[BulkRecordResult],
) -> Vec<RecordResult> {
    let by_contact: HashMap<&ContactRef, usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (&r.contact, i))
        .collect();
    let mut found: Vec<Option<Result<&BulkRecordOutcome, ()>>> = vec![None; records.len()];
    let mut stray = 0u64;
    for line in lines {
        let mut matched = false;
        for c in &line.contacts {
            if let Some(&i) = by_contact.get(c) {
                matched = true;
                found[i] = match found[i] {
                    None => Some(Ok(&line.outcome)),
                    Some(Ok(o)) if o == &line.outcome => Some(Ok(o)),
                    Some(_) => Some(Err(())),
                };
            }
        }
        stray += u64::from(!matched);
    }
    if stray > 0 {
        tracing::warn!(
            lines = stray,
            "lines of a bulk job's result file name no record of the job (unreadable, or cut short); those records are sent again"
        );
    }
    found
        .into_iter()
        .map(|f| match f {
            Some(Ok(BulkRecordOutcome::Acknowledged)) => RecordResult::Applied,
            Some(Ok(BulkRecordOutcome::Rejected { message })) => {
                RecordResult::Rejected(message.clone())
            }
            Some(Ok(BulkRecordOutcome::Failed { reason })) => RecordResult::Failed(reason.clone()),
            // An outcome a newer port knows: not known to be applied, so sent again.
            Some(Ok(other)) => {
                RecordResult::Failed(format!("an outcome this version does not know: {other:?}"))
            }
            Some(Err(())) => RecordResult::Failed(
                "the job's result file gives this record two different outcomes".to_owned(),
            ),
            None => RecordResult::Failed(
                "no line of the job's result file is about this record (the file may be cut short)"
                    .to_owned(),
            ),
        })
        .collect()
}

/// Asks about one open job once, and settles it when its result is known. `Ok(true)` when it
/// was settled.
async fn settle_one<D: Destination>(
    store: &SharedStore,
    activation: &str,
    job: &JobSummary,
    destination: &D,
) -> Result<bool, SettleError> {
    let failed = |message: String| -> Result<bool, SettleError> {
        store.with(|s| s.settle_job(activation, job.id, &[], None, Some(&message)))?;
        Ok(true)
    };
    let age = chrono::DateTime::parse_from_rfc3339(&job.created_at)
        .ok()
        .and_then(|t| chrono::Utc::now().signed_duration_since(t).to_std().ok())
        .unwrap_or_default();
    let remote = match (&job.state, &job.remote_id) {
        (JobState::Submitting, _) | (_, None) => {
            return failed(
                "its submission's answer was never recorded (the process stopped while submitting it); its records are sent again"
                    .to_owned(),
            )
        }
        (_, Some(remote)) => remote.clone(),
    };
    if age >= JOB_EXPIRY {
        return failed(format!(
            "not settled within {} days (Attentive keeps jobs two weeks); its records are sent again",
            JOB_EXPIRY.as_secs() / 86_400
        ));
    }
    // A destination error stops settling when it would stop a run (key rejected); any other
    // leaves the job for a later poll.
    let later = |e: D::Error, doing: &str| -> Result<bool, SettleError> {
        if destination.stops_run(&e) {
            return Err(SettleError::Destination(crate::error_chain(&e)));
        }
        tracing::warn!(job = job.id, remote = %remote, error = %crate::error_chain(&e), "{doing} failed; tried again later");
        Ok(false)
    };
    let state = match destination.bulk_job(&remote).await {
        Ok(s) => s,
        Err(e) => return later(e, "asking about a bulk job"),
    };
    if let BulkJobState::Pending { status }
    | BulkJobState::Completed { status, .. }
    | BulkJobState::Failed { status } = &state
    {
        store.with(|s| s.note_poll(job.id, status))?;
    }
    match state {
        BulkJobState::Pending { .. } => Ok(false),
        BulkJobState::Completed {
            status,
            result_url: None,
        } => failed(format!(
            "Attentive says {status} but names no result file, so nothing of it is known to be applied; its records are sent again"
        )),
        BulkJobState::Completed {
            status,
            result_url: Some(url),
        } => {
            let lines = match destination.bulk_results(&remote, &url).await {
                Ok(lines) => lines,
                Err(e) => return later(e, "reading a bulk job's result file"),
            };
            let records = store.with(|s| s.job_records(job.id))?;
            let results = match_results(&records, &lines);
            store.with(|s| s.settle_job(activation, job.id, &results, Some(&status), None))?;
            Ok(true)
        }
        BulkJobState::Failed { status } => failed(format!(
            "Attentive says the job {status} as a whole; its records are sent again"
        )),
        BulkJobState::Unknown { message } => failed(format!(
            "Attentive does not know job {remote} ({message}); its records are sent again"
        )),
        // A state a newer port knows: asked again later (a job open for two weeks fails).
        _ => Ok(false),
    }
}

/// [`settle_one`], with the job it is about.
async fn settle_tagged<'a, D: Destination>(
    store: &SharedStore,
    activation: &str,
    job: &'a JobSummary,
    destination: &D,
) -> (&'a JobSummary, Result<bool, SettleError>) {
    (job, settle_one(store, activation, job, destination).await)
}

/// Asks once about each open job of the activation (of one run, with `run`), settling those
/// whose result is known, and brings the runs they settle up to date.
pub(super) async fn settle_open<D: Destination>(
    store: &SharedStore,
    activation: &str,
    run: Option<i64>,
    destination: &D,
) -> Result<Settled, SettleError> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let jobs = store.with(|s| s.open_jobs(activation))?;
    let mut out = Settled::default();
    let mut runs = Vec::new();
    // A few jobs at a time: each costs a poll and a result file (the routes' budgets pace
    // them), and a backlog of thousands of jobs must not take an hour before a run plans.
    let mut queue = jobs.iter().filter(|j| run.is_none_or(|r| j.run_id == r));
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < SETTLE_CONCURRENCY {
            match queue.next() {
                Some(job) => running.push(settle_tagged(store, activation, job, destination)),
                None => break,
            }
        }
        let Some((job, result)) = running.next().await else {
            break;
        };
        if result? {
            out.jobs += 1;
            if !runs.contains(&job.run_id) {
                runs.push(job.run_id);
            }
        } else {
            out.open += 1;
        }
    }
    for r in runs {
        store.with(|s| refresh_run(s, r))?;
    }
    Ok(out)
}

/// Opens the project's state file and settles one activation's open jobs (what `serve` does
/// in the background), under the activation's lock; `Ok(None)` when a run holds the lock.
pub async fn settle_activation<D: Destination>(
    state_path: &std::path::Path,
    activation: &str,
    destination: &D,
) -> Result<Option<Settled>, SettleError> {
    let store = StateStore::open(state_path)?;
    if store.open_jobs(activation)?.is_empty() {
        return Ok(Some(Settled::default()));
    }
    let holder = format!(
        "attentive-sync pid {} (settling bulk jobs)",
        std::process::id()
    );
    let lock = match store.try_lock(activation, &holder) {
        Ok(l) => l,
        Err(state_store::Error::Locked { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let store = SharedStore(std::sync::Arc::new(std::sync::Mutex::new(store)));
    let result = settle_open(&store, activation, None, destination).await;
    drop(lock);
    result.map(Some)
}

/// Waits for a run's jobs: polls them with a growing interval until every one is settled or
/// the run is stopped. Returns the jobs still open.
pub(super) async fn wait_for_run<D: Destination>(
    store: &SharedStore,
    activation: &str,
    run_id: i64,
    destination: &D,
    opts: &super::RunOptions,
    report: &(dyn Fn(u64) + Send + Sync),
) -> Result<u64, SettleError> {
    let mut every = opts.poll_every.max(Duration::from_millis(10));
    loop {
        let open = pending_records(store, run_id)?;
        report(open);
        if open == 0 {
            return Ok(0);
        }
        let deadline = tokio::time::Instant::now() + every;
        while tokio::time::Instant::now() < deadline {
            if opts.stop.load(Ordering::Relaxed) {
                return Ok(store.with(|s| s.open_job_count(run_id))?);
            }
            tokio::time::sleep(Duration::from_millis(50).min(every)).await;
        }
        settle_open(store, activation, Some(run_id), destination).await?;
        every = (every.mul_f64(1.5)).min(MAX_POLL_EVERY);
    }
}

/// Records of a run's jobs not settled yet.
fn pending_records(store: &SharedStore, run_id: i64) -> Result<u64, state_store::Error> {
    store.with(|s| {
        Ok(s.run_jobs(run_id)?
            .iter()
            .filter(|j| j.state != JobState::Settled)
            .map(|j| j.pending)
            .sum())
    })
}

/// The counts of a run from its recorded rows (bulk records settle after the run).
pub(super) fn counts_from_rows(
    store: &StateStore,
    run_id: i64,
    counts: &mut super::RunCounts,
) -> Result<(), state_store::Error> {
    use state_store::Outcome;
    let (mut updated, mut not_found, mut rejected, mut failed, mut pending) = (0, 0, 0, 0, 0);
    for (outcome, n) in store.run_outcome_counts(run_id)? {
        match outcome {
            Outcome::Updated => updated = n,
            Outcome::NotFound => not_found = n,
            Outcome::Rejected => rejected = n,
            Outcome::Failed => failed = n,
            Outcome::Pending => pending = n,
            Outcome::Unchanged => {}
        }
    }
    counts.updated = updated;
    counts.not_found = not_found;
    counts.rejected = rejected;
    counts.failed = failed;
    counts.pending = pending;
    Ok(())
}

/// Brings a finished run whose jobs settled since up to date: its counts from its rows, and
/// its status once no job is open (`partial` when a row was not applied).
fn refresh_run(store: &mut StateStore, run_id: i64) -> Result<(), state_store::Error> {
    let Some(run) = store.run(run_id)? else {
        return Ok(());
    };
    if !matches!(
        run.status,
        RunStatus::Pending | RunStatus::Succeeded | RunStatus::Partial
    ) {
        return Ok(()); // failed or interrupted runs keep their status
    }
    let Some(mut report) = run
        .counts_json
        .as_deref()
        .and_then(super::RunReport::from_json)
    else {
        return Ok(()); // ended before it had a report: nothing of it was submitted
    };
    counts_from_rows(store, run_id, &mut report.counts)?;
    let status = report.counts.status(store.open_job_count(run_id)? > 0);
    report.status = status;
    let json = serde_json::to_string(&report).unwrap_or_else(|_| "{}".into());
    store.update_run_result(run_id, status, &json)
}
