//! Starting runs: one run per activation at a time in this process (the [`Registry`]), and
//! the state store's lock across processes; each run goes through `runner::run::run`, the
//! same pipeline as `attentive-sync run`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use runner::run::{OnStart, Progress, RunOptions};
use tracing::Instrument;

use crate::error::{error_chain, ApiError, ErrorCode};
use crate::state::App;

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `POST /api/v1/activations/{name}/runs` or the dashboard's "Run now".
    Manual,
    /// The activation's schedule.
    Schedule,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Schedule => "schedule",
        }
    }
}

/// A run going on in this server.
#[derive(Debug)]
pub struct ActiveRun {
    pub activation: String,
    pub trigger: Trigger,
    pub started_at: DateTime<Utc>,
    /// Set as soon as the run is recorded in the state database.
    pub run_id: OnceLock<i64>,
    /// Set to stop the run cleanly.
    pub stop: Arc<AtomicBool>,
    /// Rows read by the delivering pass.
    pub rows: AtomicU64,
    /// Changed contacts found so far.
    pub changed: AtomicU64,
    /// Contacts whose delivery has finished.
    pub delivered: AtomicU64,
}

impl ActiveRun {
    fn update(&self, p: Progress) {
        self.rows.store(p.rows, Ordering::Relaxed);
        self.changed.store(p.changed, Ordering::Relaxed);
        self.delivered.store(p.delivered, Ordering::Relaxed);
    }
}

/// The runs going on in this server, by activation.
#[derive(Debug)]
pub struct Registry {
    active: Mutex<HashMap<String, Arc<ActiveRun>>>,
    /// How many runs are going on (shutdown waits for 0).
    count: tokio::sync::watch::Sender<usize>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            active: Mutex::new(HashMap::new()),
            count: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Registry {
    /// The run of this activation going on, if any.
    pub fn get(&self, activation: &str) -> Option<Arc<ActiveRun>> {
        self.lock().get(activation).cloned()
    }

    /// The run with this id, if it goes on in this server.
    pub fn by_run_id(&self, id: i64) -> Option<Arc<ActiveRun>> {
        self.lock()
            .values()
            .find(|r| r.run_id.get() == Some(&id))
            .cloned()
    }

    /// Asks every run going on to stop cleanly.
    pub fn stop_all(&self) {
        for r in self.lock().values() {
            r.stop.store(true, Ordering::Relaxed);
        }
    }

    /// Waits until no run goes on.
    pub async fn idle(&self) {
        let mut rx = self.count.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ActiveRun>>> {
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims the activation, or returns the run that holds it.
    fn claim(&self, activation: &str, trigger: Trigger) -> Result<Arc<ActiveRun>, Arc<ActiveRun>> {
        let mut map = self.lock();
        if let Some(r) = map.get(activation) {
            return Err(r.clone());
        }
        let run = Arc::new(ActiveRun {
            activation: activation.to_owned(),
            trigger,
            started_at: Utc::now(),
            run_id: OnceLock::new(),
            stop: Arc::new(AtomicBool::new(false)),
            rows: AtomicU64::new(0),
            changed: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        });
        map.insert(activation.to_owned(), run.clone());
        self.count.send_modify(|n| *n += 1);
        Ok(run)
    }

    fn release(&self, run: &Arc<ActiveRun>) {
        let mut map = self.lock();
        if map
            .get(&run.activation)
            .is_some_and(|r| Arc::ptr_eq(r, run))
        {
            map.remove(&run.activation);
            self.count.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}

/// Frees an activation in the registry when dropped.
struct Release {
    app: Arc<App>,
    entry: Arc<ActiveRun>,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.app
            .metrics
            .set_in_progress(&self.entry.activation, false);
        self.app.runs.release(&self.entry);
    }
}

/// Why a run did not start.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StartError {
    /// A run of the activation goes on in this server.
    #[error("a run of activation {activation:?} is in progress{}", run_id.map(|id| format!(" (run {id})")).unwrap_or_default())]
    InProgress {
        activation: String,
        run_id: Option<i64>,
    },
    /// Another process holds the activation's lock.
    #[error("{0}")]
    Locked(String),
    /// The server is stopping.
    #[error("the server is shutting down; no new run starts")]
    ShuttingDown,
    /// The activation cannot be run as configured (e.g. the API key's variable is unset).
    #[error("{0}")]
    NotRunnable(String),
    /// The run failed before it was recorded.
    #[error("{0}")]
    Failed(String),
}

impl From<StartError> for ApiError {
    fn from(e: StartError) -> ApiError {
        let message = e.to_string();
        match e {
            StartError::InProgress { .. } | StartError::Locked(_) => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::RunInProgress, message)
            }
            StartError::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::ShuttingDown,
                message,
            ),
            StartError::NotRunnable(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::NotRunnable,
                message,
            ),
            StartError::Failed(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::RunFailedToStart,
                message,
            ),
        }
    }
}

/// How a run is started beyond its trigger.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartOptions {
    /// See `runner::run::RunOptions::rebind_destination`.
    pub rebind_destination: bool,
}

/// Starts a run of the activation (which must exist) in the background; returns its id once
/// it is recorded, or why it could not start.
pub async fn start(app: &Arc<App>, activation: &str, trigger: Trigger) -> Result<i64, StartError> {
    start_with(app, activation, trigger, StartOptions::default()).await
}

/// [`start`], with options.
pub async fn start_with(
    app: &Arc<App>,
    activation: &str,
    trigger: Trigger,
    how: StartOptions,
) -> Result<i64, StartError> {
    if app.is_shutting_down() {
        return Err(StartError::ShuttingDown);
    }
    let entry = app
        .runs
        .claim(activation, trigger)
        .map_err(|running| StartError::InProgress {
            activation: activation.to_owned(),
            run_id: running.run_id.get().copied(),
        })?;
    let client = match runner::run::client_for(&app.project, activation) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            app.runs.release(&entry);
            return Err(StartError::NotRunnable(error_chain(&e)));
        }
    };
    app.metrics.set_in_progress(activation, true);

    type Started = Arc<Mutex<Option<tokio::sync::oneshot::Sender<Result<i64, StartError>>>>>;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let started: Started = Arc::new(Mutex::new(Some(tx)));
    let notify = {
        let started = started.clone();
        move |r: Result<i64, StartError>| {
            let tx = started
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(tx) = tx {
                let _ = tx.send(r);
            }
        }
    };
    let on_start = {
        let entry = entry.clone();
        let notify = notify.clone();
        OnStart(Arc::new(move |id| {
            let _ = entry.run_id.set(id);
            tracing::info!(run_id = id, "run started");
            notify(Ok(id));
        }))
    };
    let progress: Arc<dyn Fn(Progress) + Send + Sync> = {
        let entry = entry.clone();
        Arc::new(move |p| entry.update(p))
    };
    let opts = RunOptions {
        recheck_after: app.settings.recheck_after,
        max_in_flight: app.settings.max_in_flight.max(1),
        stop: entry.stop.clone(),
        on_start: Some(on_start),
        rebind_destination: how.rebind_destination,
        // Bulk jobs are settled in the background (see `settle_bulk_jobs`), not by holding
        // the activation's run for hours.
        wait_for_jobs: false,
        ..RunOptions::default()
    };
    let span = tracing::info_span!("run", activation = %activation, trigger = trigger.as_str());
    let task_app = app.clone();
    let name = activation.to_owned();
    tokio::spawn(
        async move {
            let app = task_app;
            // Frees the activation when the task ends, even by a panic.
            let _release = Release {
                app: app.clone(),
                entry: entry.clone(),
            };
            let result =
                runner::run::run(&app.project, &name, client.clone(), opts, progress).await;
            match result {
                Ok(report) => {
                    app.metrics
                        .record(&report, Some(&client.stats_snapshot()));
                    let d = &report.delivery;
                    let c = &report.counts;
                    let fields = format!(
                        "updated {} unchanged {} not_found {} rejected {} failed {} pending {}; requests {} retries {} 429s {} throttled {:.1} s",
                        c.updated, c.unchanged, c.not_found, c.rejected, c.failed, c.pending,
                        d.requests, d.retries, d.rate_limited, d.throttled_ms as f64 / 1000.0
                    );
                    match report.status {
                        state_store::RunStatus::Failed => tracing::error!(
                            run_id = report.run_id,
                            status = %report.status,
                            error = report.error.as_deref().unwrap_or(""),
                            "run failed: {fields}"
                        ),
                        state_store::RunStatus::Interrupted => tracing::warn!(
                            run_id = report.run_id,
                            status = %report.status,
                            "run interrupted (what Attentive acknowledged is committed; the next run sends the rest): {fields}"
                        ),
                        _ => tracing::info!(
                            run_id = report.run_id,
                            status = %report.status,
                            duration_ms = report.duration_ms,
                            "run finished: {fields}"
                        ),
                    }
                    notify(Ok(report.run_id));
                }
                Err(e) => {
                    let err = match &e {
                        runner::run::Error::Store(state_store::Error::Locked { .. }) => {
                            StartError::Locked(error_chain(&e))
                        }
                        _ => StartError::Failed(error_chain(&e)),
                    };
                    if entry.run_id.get().is_some() {
                        tracing::error!(error = %err, "run stopped by an error");
                    } else {
                        tracing::warn!(error = %err, "run did not start");
                    }
                    notify(Err(err));
                }
            }
        }
        .instrument(span),
    );
    rx.await
        .unwrap_or_else(|_| Err(StartError::Failed("the run task ended unexpectedly".into())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn one_run_per_activation() {
        let r = Registry::default();
        let a = r.claim("a", Trigger::Manual).unwrap();
        let _ = a.run_id.set(7);
        let held = r.claim("a", Trigger::Schedule).unwrap_err();
        assert_eq!(held.run_id.get(), Some(&7));
        let b = r.claim("b", Trigger::Schedule).unwrap();
        assert_eq!(*r.count.borrow(), 2);
        assert!(r.by_run_id(7).is_some());
        r.stop_all();
        assert!(a.stop.load(Ordering::Relaxed) && b.stop.load(Ordering::Relaxed));
        r.release(&a);
        r.release(&a); // twice is harmless
        assert!(r.get("a").is_none());
        assert_eq!(*r.count.borrow(), 1);
        let idle = tokio::time::timeout(std::time::Duration::from_millis(50), r.idle()).await;
        assert!(idle.is_err(), "b still runs");
        r.release(&b);
        r.idle().await;
    }

    #[test]
    fn start_errors_map_to_api_errors() {
        let e: ApiError = StartError::InProgress {
            activation: "a".into(),
            run_id: Some(3),
        }
        .into();
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert_eq!(e.code, ErrorCode::RunInProgress);
        assert_eq!(
            e.message,
            "a run of activation \"a\" is in progress (run 3)"
        );
        let e: ApiError = StartError::Locked("locked by pid 1".into()).into();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::CONFLICT, ErrorCode::RunInProgress)
        );
        let e: ApiError = StartError::ShuttingDown.into();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
