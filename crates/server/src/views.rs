//! What the API answers (and the dashboard shows), built from the state database and the
//! runs going on.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use runner::run::RunReport;
use serde::Serialize;
use state_store::{Outcome, RunRow, RunSummary, StateStore};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorCode};
use crate::runs::ActiveRun;
use crate::state::App;

/// An activation: its schedule, whether it runs, and its last run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActivationView {
    pub name: String,
    pub model: String,
    pub destination: String,
    /// The cron expression (5 fields, or 6 with seconds first); `null` when it runs only
    /// on demand.
    pub schedule: Option<String>,
    /// The IANA time zone of the schedule.
    #[schema(example = "UTC")]
    pub timezone: String,
    /// When the schedule next starts a run (RFC 3339, UTC; jitter not included).
    pub next_due: Option<String>,
    /// The run going on in this server, if any.
    pub running: Option<LiveRun>,
    /// The latest run (possibly the one going on).
    pub last_run: Option<RunView>,
}

/// A run going on in this server, with its progress.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LiveRun {
    /// `null` for the instant between its start and its record in the state database.
    pub run_id: Option<i64>,
    /// `manual` or `schedule`.
    pub trigger: String,
    pub started_at: String,
    /// Rows read by the delivering pass so far.
    pub rows_read: u64,
    /// Changed contacts found so far.
    pub changed: u64,
    /// Contacts whose delivery has finished (any outcome).
    pub delivered: u64,
    /// Set when a stop was asked for (shutdown): in-flight writes finish and are committed.
    pub stopping: bool,
}

impl LiveRun {
    pub fn of(r: &ActiveRun) -> LiveRun {
        LiveRun {
            run_id: r.run_id.get().copied(),
            trigger: r.trigger.as_str().to_owned(),
            started_at: rfc3339(r.started_at),
            rows_read: r.rows.load(Ordering::Relaxed),
            changed: r.changed.load(Ordering::Relaxed),
            delivered: r.delivered.load(Ordering::Relaxed),
            stopping: r.stop.load(Ordering::Relaxed),
        }
    }
}

/// One run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunView {
    pub id: i64,
    pub activation: String,
    /// `run` (or `plan` for dry runs recorded by other tools).
    pub kind: String,
    /// `running`, `succeeded`, `partial`, `failed`, `interrupted` or `pending` (bulk jobs
    /// not settled yet).
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// From the report, or from the start and end times.
    pub duration_ms: Option<u64>,
    /// Why the run failed or stopped.
    pub error: Option<String>,
    /// When the run's per-row outcomes were pruned (`[state] keep_runs`): its rows are gone,
    /// its report stays.
    pub rows_pruned_at: Option<String>,
    /// The run's report as the runner recorded it when it ended (`attentive-sync run
    /// --format json`): `counts` per outcome, `plan`, `delivery` (`requests`, `retries`,
    /// `rate_limited`, `throttled_ms`), `existence_checks`, `duration_ms`...
    #[schema(value_type = Option<Object>)]
    pub report: Option<RunReport>,
    /// While the run goes on in this server: its progress.
    pub live: Option<LiveRun>,
    /// Rows recorded so far per outcome (`unchanged` rows are counted only in the report).
    pub recorded_rows: Option<BTreeMap<String, u64>>,
    /// The bulk jobs the run submitted (one run's view only): `id`, `remote_id`, `state`
    /// (`submitting`, `pending`, `settled`), `remote_status`, `records` and per-record counts
    /// (`updated`, `rejected`, `failed`, `pending`), times, `message`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub bulk_jobs: Option<Vec<serde_json::Value>>,
}

impl RunView {
    pub fn of(s: &RunSummary) -> RunView {
        let report = s.counts_json.as_deref().and_then(RunReport::from_json);
        let duration_ms = report.as_ref().map(|r| r.duration_ms).or_else(|| {
            let start = chrono::DateTime::parse_from_rfc3339(&s.started_at).ok()?;
            let end = chrono::DateTime::parse_from_rfc3339(s.finished_at.as_deref()?).ok()?;
            u64::try_from((end - start).num_milliseconds()).ok()
        });
        RunView {
            id: s.id,
            activation: s.activation.clone(),
            kind: s.kind.as_str().to_owned(),
            status: s.status.as_str().to_owned(),
            started_at: s.started_at.clone(),
            finished_at: s.finished_at.clone(),
            duration_ms,
            error: s.error.clone(),
            rows_pruned_at: s.rows_pruned_at.clone(),
            report,
            live: None,
            recorded_rows: None,
            bulk_jobs: None,
        }
    }

    /// A count of the report (`counts.updated`...), when the run has a report.
    pub fn count(&self, outcome: Outcome) -> Option<u64> {
        Some(self.report.as_ref()?.counts.get(outcome))
    }

    /// What delivering cost, when the run has a report.
    pub fn delivery(&self) -> Option<sync_core::ports::DeliveryStats> {
        Some(self.report.as_ref()?.delivery)
    }
}

/// A page of runs, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunsPage {
    pub runs: Vec<RunView>,
    /// Pass as `before` to get the next page; `null` on the last page.
    pub next_before: Option<i64>,
}

/// One model row of a run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RowView {
    /// The row's line in the model file (1 = header), or its record number.
    pub row: u64,
    /// The normalized identifier, when the row had a readable one.
    pub contact: Option<String>,
    pub outcome: String,
    /// A stable code (`invalid_value`, `duplicate_identifier`, `attentive_rejected`...).
    pub code: Option<String>,
    /// The reason, for people.
    pub message: Option<String>,
    /// The attributes concerned.
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Value>,
}

impl RowView {
    pub fn of(r: &RunRow) -> RowView {
        RowView {
            row: r.row_number,
            contact: r.contact_key.clone(),
            outcome: r.outcome.as_str().to_owned(),
            code: r.code.clone(),
            message: r.message.clone(),
            attributes: r
                .attributes_json
                .as_deref()
                .and_then(|j| serde_json::from_str(j).ok()),
        }
    }
}

/// A page of a run's rows, in model order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RowsPage {
    pub run_id: i64,
    pub outcome: Option<String>,
    pub rows: Vec<RowView>,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub next_after: Option<u64>,
}

/// A run just started.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StartedRun {
    pub run_id: i64,
    pub activation: String,
    /// Where to follow it: `/api/v1/runs/{run_id}`.
    pub location: String,
}

/// What the snapshot holds for one contact.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ContactView {
    /// The normalized identifier (lower-case email or E.164 phone).
    pub contact: String,
    /// One entry per activation whose snapshot has the contact (none: never acknowledged).
    pub activations: Vec<ContactActivation>,
}

/// One activation's snapshot of a contact.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ContactActivation {
    pub activation: String,
    /// Hex.
    pub row_fingerprint: String,
    /// The run that last settled the contact.
    pub updated_run: Option<i64>,
    /// Empty when the contact was never settled (it only has attributes in doubt).
    pub updated_at: String,
    pub attributes: Vec<ContactAttribute>,
    /// Attributes sent without a recorded answer (the run was killed mid-write, or the write
    /// failed after retries): the next run sends them again.
    pub in_doubt: Vec<ContactInDoubt>,
}

/// An attribute in doubt.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ContactInDoubt {
    /// `std:<field>` or `custom:<name>`.
    pub key: String,
    /// The value that was sent (a string, number or boolean).
    #[schema(value_type = Value)]
    pub sent: serde_json::Value,
    /// The run that sent it.
    pub run_id: Option<i64>,
}

/// One acknowledged attribute value.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ContactAttribute {
    /// `std:<field>` or `custom:<name>`.
    pub key: String,
    /// The value as Attentive acknowledged it (a string, number or boolean).
    #[schema(value_type = Value)]
    pub value: serde_json::Value,
    /// Hex.
    pub fingerprint: String,
    /// The run whose acknowledged write set it.
    pub run_id: Option<i64>,
}

impl ContactView {
    pub fn of(key: &str, entries: &[state_store::ContactSnapshot]) -> ContactView {
        ContactView {
            contact: key.to_owned(),
            activations: entries
                .iter()
                .map(|e| ContactActivation {
                    activation: e.activation.clone(),
                    row_fingerprint: format!("{:016x}", e.row_fingerprint),
                    updated_run: e.updated_run,
                    updated_at: e.updated_at.clone(),
                    attributes: e
                        .attributes
                        .iter()
                        .map(|a| ContactAttribute {
                            key: a.key.clone(),
                            value: serde_json::to_value(&a.value)
                                .unwrap_or(serde_json::Value::Null),
                            fingerprint: format!("{:016x}", a.fingerprint),
                            run_id: a.run_id,
                        })
                        .collect(),
                    in_doubt: e
                        .in_doubt
                        .iter()
                        .map(|d| ContactInDoubt {
                            key: d.key.clone(),
                            sent: serde_json::to_value(&d.sent).unwrap_or(serde_json::Value::Null),
                            run_id: d.run_id,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// A time as the API shows it: RFC 3339, UTC, milliseconds.
pub fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An email or international phone as the snapshot keys it (as `attentive-sync contacts
/// show` does).
pub fn normalize_contact(s: &str) -> Result<String, ApiError> {
    // 404: no contact can be stored under a key that is not one (the path is any string).
    let invalid = |m: String| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            ErrorCode::InvalidContact,
            m,
        )
    };
    sync_core::normalize::contact_key(s).map_err(|e| invalid(format!("{s:?}: {e}")))
}

/// A run with, while it goes on here, its live progress (cheap: for lists).
pub fn run_view(app: &App, s: &RunSummary) -> RunView {
    let mut v = RunView::of(s);
    if s.status == state_store::RunStatus::Running {
        v.live = app.runs.by_run_id(s.id).as_deref().map(LiveRun::of);
    }
    v
}

/// [`run_view`] with, while the run goes on, the rows recorded per outcome so far (one index
/// scan of the run's recorded rows: for one run's page).
pub fn run_detail(app: &App, store: &StateStore, s: &RunSummary) -> Result<RunView, ApiError> {
    let mut v = run_view(app, s);
    let jobs = store.run_jobs(s.id)?;
    if !jobs.is_empty() {
        v.bulk_jobs = Some(
            jobs.iter()
                .map(|j| serde_json::to_value(j).unwrap_or_default())
                .collect(),
        );
    }
    if s.status == state_store::RunStatus::Running {
        v.recorded_rows = Some(
            store
                .run_outcome_counts(s.id)?
                .into_iter()
                .map(|(o, n)| (o.as_str().to_owned(), n))
                .collect(),
        );
    }
    Ok(v)
}

/// Every activation of the project, with its state.
pub fn activations(app: &App, store: &StateStore) -> Result<Vec<ActivationView>, ApiError> {
    let mut out = Vec::new();
    for a in app.project.activations.values() {
        let last = store.runs(Some(&a.name), 1)?;
        let last_run = last.first().map(|s| run_view(app, s));
        out.push(ActivationView {
            name: a.name.clone(),
            model: a.model.clone(),
            destination: a.destination.clone(),
            schedule: a.cron.as_ref().map(|c| c.expression().to_owned()),
            timezone: a.timezone.name().to_owned(),
            next_due: app.next_due(&a.name).map(rfc3339),
            running: app.runs.get(&a.name).as_deref().map(LiveRun::of),
            last_run,
        });
    }
    Ok(out)
}

/// Parses an outcome filter.
pub fn parse_outcome(s: Option<&str>) -> Result<Option<Outcome>, ApiError> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(o) => Outcome::parse(o).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown outcome {o:?}; expected one of: updated, unchanged, not_found, rejected, failed, pending"
            ))
        }),
    }
}

/// Largest page of rows or runs.
pub const MAX_PAGE: u64 = 1000;

/// A page of a run's rows.
pub fn rows_page(
    store: &StateStore,
    run_id: i64,
    outcome: Option<Outcome>,
    after: Option<u64>,
    limit: u64,
) -> Result<RowsPage, ApiError> {
    if store.run(run_id)?.is_none() {
        return Err(ApiError::run_not_found(run_id));
    }
    let limit = limit.clamp(1, MAX_PAGE);
    let rows = store.run_rows_after(run_id, outcome, after, limit)?;
    let next_after = if rows.len() as u64 == limit {
        rows.last().map(|r| r.row_number)
    } else {
        None
    };
    Ok(RowsPage {
        run_id,
        outcome: outcome.map(|o| o.as_str().to_owned()),
        rows: rows.iter().map(RowView::of).collect(),
        next_after,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use state_store::{RunKind, RunStatus};

    fn row(n: u64, outcome: Outcome) -> RunRow {
        RunRow {
            row_number: n,
            contact_key: Some(format!("c{n}@x.com")),
            outcome,
            code: (outcome == Outcome::Rejected).then(|| "invalid_value".to_owned()),
            message: (outcome == Outcome::Rejected).then(|| "bad".to_owned()),
            attributes_json: None,
        }
    }

    #[test]
    fn rows_are_paged_by_key() {
        let mut store = StateStore::open_in_memory().unwrap();
        let id = store.begin_run("a", RunKind::Run).unwrap();
        let rows: Vec<RunRow> = (2..=11)
            .map(|n| {
                row(
                    n,
                    if n % 2 == 0 {
                        Outcome::Rejected
                    } else {
                        Outcome::Updated
                    },
                )
            })
            .collect();
        store.record_rows(id, &rows).unwrap();
        let rejected = Some(Outcome::Rejected);
        let p = rows_page(&store, id, rejected, None, 2).unwrap();
        assert_eq!(p.rows.iter().map(|r| r.row).collect::<Vec<_>>(), [2, 4]);
        assert_eq!(p.next_after, Some(4));
        let p = rows_page(&store, id, rejected, p.next_after, 2).unwrap();
        assert_eq!(p.rows.iter().map(|r| r.row).collect::<Vec<_>>(), [6, 8]);
        let p = rows_page(&store, id, rejected, p.next_after, 2).unwrap();
        assert_eq!(p.rows.iter().map(|r| r.row).collect::<Vec<_>>(), [10]);
        assert_eq!(p.next_after, None);
        assert_eq!(p.rows[0].code.as_deref(), Some("invalid_value"));
        let all = rows_page(&store, id, None, None, 0).unwrap();
        assert_eq!(all.rows.len(), 1, "a limit of 0 is raised to 1");
        let all = rows_page(&store, id, None, None, 5000).unwrap();
        assert_eq!(all.rows.len(), 10);
        assert_eq!(all.next_after, None);
        let e = rows_page(&store, 999, None, None, 10).unwrap_err();
        assert_eq!(e.code, ErrorCode::RunNotFound);

        store
            .finish_run(
                id,
                RunStatus::Partial,
                // As a run writes it, less what this test does not look at.
                &format!(
                    r#"{{"run_id": {id}, "activation": "a", "status": "partial", "duration_ms": 1234, "counts": {{"updated": 5}}}}"#
                ),
                None,
            )
            .unwrap();
        let v = RunView::of(&store.run(id).unwrap().unwrap());
        assert_eq!(v.duration_ms, Some(1234));
        assert_eq!(v.count(Outcome::Updated), Some(5));
        assert_eq!(v.status, "partial");
    }

    #[test]
    fn outcome_filters_and_contacts_are_checked() {
        assert_eq!(parse_outcome(None).unwrap(), None);
        assert_eq!(parse_outcome(Some("")).unwrap(), None);
        assert_eq!(
            parse_outcome(Some("not_found")).unwrap(),
            Some(Outcome::NotFound)
        );
        let e = parse_outcome(Some("nope")).unwrap_err();
        assert_eq!(
            (e.code, e.status.as_u16()),
            (ErrorCode::InvalidRequest, 400)
        );
        assert_eq!(
            normalize_contact("  Ann@Example.COM ").unwrap(),
            "ann@example.com"
        );
        assert_eq!(
            normalize_contact("+1 (415) 555-0100").unwrap(),
            "+14155550100"
        );
        let e = normalize_contact("4155550100").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidContact);
    }
}
