//! Alerts and notifications, wired to the state store and the config: what a run's end (or
//! the clock) changes in the alert states and which events that queues in the outbox
//! ([`evaluate_activation`], [`evaluate_schedules`], [`run_started`]), and the delivery of
//! the outbox ([`deliver_once`], [`deliver_for`]).
//!
//! Nothing here can fail or hold up a run: the run's frontends call these after the run (or
//! in the background), and their errors are logged, not the run's. Events are recorded in the
//! state right after the run; a delivery that fails is attempted again with exponential
//! backoff, by this process or the next one that delivers.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use notifications::{Attempt, Event, EventKind};
use state_store::{
    AlertBatch, AlertState, AlertUpdate, AlertsRecorded, AttemptResult, NewNotification, RunStatus,
    RunSummary, StateStore,
};

use crate::alerts::{self, PastRun, Rule, RunFacts, Verdict};
use crate::config::{Activation, Project};
use crate::run::RunReport;

/// How many runs back the history of the rules reaches at most.
const HISTORY_LIMIT: u64 = 200;

/// A time as events show it.
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The endpoints (by name) that take `event` of `activation`.
fn subscribers(project: &Project, activation: &str, event: EventKind) -> Vec<String> {
    project
        .notifications
        .values()
        .filter(|n| n.subscribes(activation, event))
        .map(|n| n.name.clone())
        .collect()
}

fn notification(project: &Project, event: &Event) -> NewNotification {
    NewNotification {
        activation: Some(event.activation.clone()),
        event: event.event.as_str().to_owned(),
        run_id: event.run_id,
        rule: event.rule.clone(),
        payload_json: serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned()),
        endpoints: subscribers(project, &event.activation, event.event),
    }
}

/// Queues `run.started` for a run that has just started.
pub fn run_started(
    project: &Project,
    store: &mut StateStore,
    activation: &str,
    run_id: i64,
) -> Result<(), state_store::Error> {
    let event = Event {
        id: 0,
        event: EventKind::RunStarted,
        activation: activation.to_owned(),
        run_id: Some(run_id),
        occurred_at: rfc3339(Utc::now()),
        summary: format!("run {run_id} of {activation} started"),
        rule: None,
        status: None,
        details: serde_json::Value::Null,
    };
    let n = notification(project, &event);
    if !n.endpoints.is_empty() {
        store.queue_notification(&n)?;
    }
    Ok(())
}

/// How long delivered (or given up) notifications are kept.
pub const KEEP_NOTIFICATIONS: Duration = Duration::from_secs(30 * 86_400);

/// The lifecycle event of a finished run.
fn lifecycle(run: &RunSummary, report: Option<&RunReport>) -> Option<Event> {
    let kind = match run.status {
        RunStatus::Succeeded => EventKind::RunSucceeded,
        RunStatus::Partial => EventKind::RunPartial,
        RunStatus::Failed | RunStatus::Interrupted => EventKind::RunFailed,
        RunStatus::Running | RunStatus::Pending => return None,
    };
    let summary = match report {
        Some(r) => {
            let c = &r.counts;
            let counts = format!(
                "{} updated, {} unchanged, {} not found, {} rejected, {} failed",
                c.updated, c.unchanged, c.not_found, c.rejected, c.failed
            );
            match (&run.error, run.status) {
                (Some(e), _) => format!("run {} {}: {e} ({counts})", run.id, run.status),
                (None, _) => format!("run {} {}: {counts}", run.id, run.status),
            }
        }
        None => format!(
            "run {} {}{}",
            run.id,
            run.status,
            run.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
    };
    Some(Event {
        id: 0,
        event: kind,
        activation: run.activation.clone(),
        run_id: Some(run.id),
        occurred_at: run
            .finished_at
            .clone()
            .unwrap_or_else(|| rfc3339(Utc::now())),
        summary,
        rule: None,
        status: Some(run.status.as_str().to_owned()),
        details: match report {
            Some(r) => serde_json::json!({
                "counts": r.counts,
                "rows": r.plan.rows,
                "changed": r.plan.changed,
                "duration_ms": r.duration_ms,
                "delivery_mode": r.delivery_mode,
                "error": r.error,
            }),
            None => serde_json::json!({ "error": run.error }),
        },
    })
}

/// The alert event of a transition.
fn alert_event(
    activation: &str,
    run_id: Option<i64>,
    verdict: &Verdict,
    since: Option<&str>,
) -> Event {
    let (kind, summary) = if verdict.firing {
        (
            EventKind::AlertFiring,
            format!("{} is firing: {}", verdict.rule, verdict.message),
        )
    } else {
        (
            EventKind::AlertResolved,
            format!(
                "{} resolved{}: {}",
                verdict.rule,
                since
                    .map(|s| format!(" (firing since {s})"))
                    .unwrap_or_default(),
                verdict.message
            ),
        )
    };
    Event {
        id: 0,
        event: kind,
        activation: activation.to_owned(),
        run_id,
        occurred_at: rfc3339(Utc::now()),
        summary,
        rule: Some(verdict.rule.as_str().to_owned()),
        status: None,
        details: verdict.details.clone(),
    }
}

/// The earlier runs of an activation the run rules compare a run with: finished ones
/// (`succeeded`, `partial`) before `before`, newest first.
pub fn history(
    store: &StateStore,
    activation: &str,
    before: Option<i64>,
) -> Result<Vec<PastRun>, state_store::Error> {
    Ok(store
        .runs(Some(activation), HISTORY_LIMIT)?
        .into_iter()
        .filter(|r| r.kind == state_store::RunKind::Run && before.is_none_or(|b| r.id < b))
        .filter_map(|r| r.counts_json.as_deref().and_then(RunReport::from_json))
        .filter_map(|r| PastRun::of(&r))
        .collect())
}

/// What [`evaluate_activation`] recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evaluated {
    /// Runs evaluated.
    pub runs: u64,
    /// Rules that changed state (one `alert.*` event each).
    pub transitions: u64,
    /// Notifications queued (lifecycle and alert events).
    pub notifications: u64,
}

/// Evaluates the alerts of every finished run of the activation not evaluated yet, oldest
/// first (a `pending` run waits until its bulk jobs settle): per run, its lifecycle event and
/// the transitions of its rules, recorded with their notifications in one transaction. A
/// run older than the one a rule was last evaluated on (a bulk run that settled after a
/// newer run) only sends its lifecycle event.
pub fn evaluate_activation(
    project: &Project,
    store: &mut StateStore,
    activation: &Activation,
) -> Result<Evaluated, state_store::Error> {
    let mut done = Evaluated::default();
    for run in store.runs_to_evaluate(&activation.name, 50)? {
        let report = run.counts_json.as_deref().and_then(RunReport::from_json);
        let states = store.alert_states(Some(&activation.name))?;
        let current = |rule: Rule| states.iter().find(|s| s.rule == rule.as_str());
        let verdicts = match &report {
            Some(r) => {
                let past = history(store, &activation.name, Some(run.id))?;
                alerts::evaluate(&activation.alerts, &RunFacts::of_run(r), &past)
            }
            // A run that stopped before it had a report (its model could not be read, its
            // account did not match...): only `run_failed` can judge it.
            None => alerts::evaluate(
                &activation.alerts,
                &RunFacts {
                    status: Some(run.status),
                    ..RunFacts::default()
                },
                &[],
            )
            .into_iter()
            .filter(|v| v.rule == Rule::RunFailed)
            .collect(),
        };
        // A rule already evaluated on a newer run keeps its state.
        let verdicts: Vec<Verdict> = verdicts
            .into_iter()
            .filter(|v| {
                current(v.rule)
                    .and_then(|s| s.run_id)
                    .is_none_or(|last| last < run.id)
            })
            .collect();
        let mut batch = AlertBatch {
            evaluated_runs: vec![run.id],
            ..AlertBatch::default()
        };
        if let Some(event) = lifecycle(&run, report.as_ref()) {
            batch.notifications.push(notification(project, &event));
        }
        // An event no endpoint takes is not kept (the alert's state is).
        let keep = |n: &NewNotification| !n.endpoints.is_empty();
        let previous = |rule: Rule| current(rule).map(|s| s.state);
        for t in alerts::transitions(&previous, &verdicts) {
            let since = current(t.verdict.rule).map(|s| s.since.as_str());
            let event = alert_event(&activation.name, Some(run.id), t.verdict, since);
            batch.notifications.push(notification(project, &event));
            done.transitions += 1;
        }
        batch.notifications.retain(keep);
        for v in &verdicts {
            batch.updates.push(AlertUpdate {
                rule: v.rule.as_str().to_owned(),
                previous: previous(v.rule),
                state: v.state(),
                run_id: Some(run.id),
                message: Some(v.message.clone()),
            });
        }
        let queued = batch.notifications.len() as u64;
        match store.record_alerts(&activation.name, &batch)? {
            AlertsRecorded::Recorded(_) => {
                done.runs += 1;
                done.notifications += queued;
            }
            AlertsRecorded::Superseded => {
                tracing::debug!(activation = %activation.name, run_id = run.id, "alerts evaluated by another process");
            }
        }
    }
    Ok(done)
}

/// When the activation last ran successfully (`succeeded` or `partial`; a run whose report
/// says so, `pending` ones once settled).
fn last_success(
    store: &StateStore,
    activation: &str,
) -> Result<Option<DateTime<Utc>>, state_store::Error> {
    Ok(store
        .runs(Some(activation), HISTORY_LIMIT)?
        .into_iter()
        .filter(|r| r.kind == state_store::RunKind::Run)
        .find(|r| matches!(r.status, RunStatus::Succeeded | RunStatus::Partial))
        .and_then(|r| r.finished_at)
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc)))
}

/// The `schedule_missed` verdict of an activation now, if the rule can judge.
pub fn schedule_verdict(
    store: &StateStore,
    activation: &Activation,
    now: DateTime<Utc>,
) -> Result<Option<Verdict>, state_store::Error> {
    let Some(rule) = &activation.alerts.schedule_missed else {
        return Ok(None);
    };
    let last = last_success(store, &activation.name)?;
    Ok(alerts::schedule_missed(
        rule,
        activation.cron.as_ref(),
        last,
        now,
    ))
}

/// Evaluates `schedule_missed` for every activation (the clock's rule), recording changes and
/// their notifications; returns the transitions.
pub fn evaluate_schedules(
    project: &Project,
    store: &mut StateStore,
    now: DateTime<Utc>,
) -> Result<u64, state_store::Error> {
    let mut transitions = 0;
    for activation in project.activations.values() {
        let Some(verdict) = schedule_verdict(store, activation, now)? else {
            continue;
        };
        let states = store.alert_states(Some(&activation.name))?;
        let current = states
            .iter()
            .find(|s| s.rule == Rule::ScheduleMissed.as_str());
        let previous = current.map(|s| s.state);
        let changed = previous.unwrap_or(AlertState::Ok) != verdict.state();
        if !changed && current.is_some() {
            continue; // nothing new to record
        }
        let mut batch = AlertBatch {
            updates: vec![AlertUpdate {
                rule: Rule::ScheduleMissed.as_str().to_owned(),
                previous,
                state: verdict.state(),
                run_id: None,
                message: Some(verdict.message.clone()),
            }],
            ..AlertBatch::default()
        };
        if changed {
            let since = current.map(|s| s.since.as_str());
            let event = alert_event(&activation.name, None, &verdict, since);
            let n = notification(project, &event);
            if !n.endpoints.is_empty() {
                batch.notifications.push(n);
            }
        }
        if let AlertsRecorded::Recorded(_) = store.record_alerts(&activation.name, &batch)? {
            transitions += u64::from(changed);
        }
    }
    Ok(transitions)
}

/// What a plan of the activation would fire: the verdicts a plan can judge (rows rejected by
/// validation, changed contacts against the history, a mapping change), with whether each
/// would be a transition.
pub fn plan_alerts(
    store: &StateStore,
    activation: &Activation,
    report: &crate::plan::PlanReport,
) -> Result<Vec<crate::plan::PlanAlert>, state_store::Error> {
    let previous = crate::run::previous_attribute_keys(store, &activation.name)?;
    let facts = RunFacts::of_plan(report, previous.as_deref());
    let past = history(store, &activation.name, None)?;
    let states = store.alert_states(Some(&activation.name))?;
    Ok(alerts::evaluate(&activation.alerts, &facts, &past)
        .into_iter()
        .map(|v| {
            let current = states
                .iter()
                .find(|s| s.rule == v.rule.as_str())
                .map(|s| s.state)
                .unwrap_or(AlertState::Ok);
            crate::plan::PlanAlert {
                rule: v.rule.as_str().to_owned(),
                firing: v.firing,
                current: current.as_str().to_owned(),
                message: v.message,
            }
        })
        .collect())
}

/// What one delivery pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryPass {
    /// Deliveries attempted.
    pub attempted: u64,
    /// Of which acknowledged.
    pub delivered: u64,
    /// Of which given up.
    pub failed: u64,
}

/// One pass over the due deliveries: claims them (so no other process attempts them at the
/// same time), sends each once, records each outcome. Deliveries to endpoints that cannot be
/// sent to now (an unset URL or secret variable, an endpoint no longer in the config) are
/// left pending.
pub async fn deliver_once(
    project: &Project,
    store: &mut StateStore,
    sender: &notifications::Sender,
) -> Result<DeliveryPass, state_store::Error> {
    let usable: Vec<(String, notifications::Endpoint)> = project
        .notifications
        .values()
        .filter_map(|n| n.endpoint().ok().map(|e| (n.name.clone(), e)))
        .collect();
    let names: Vec<String> = usable.iter().map(|(n, _)| n.clone()).collect();
    if names.is_empty() {
        return Ok(DeliveryPass::default());
    }
    let lease = project
        .notifications
        .values()
        .map(|n| n.timeout)
        .max()
        .unwrap_or(Duration::from_secs(10))
        + Duration::from_secs(30);
    let claimed = store.claim_deliveries(&names, lease, 64)?;
    let mut pass = DeliveryPass::default();
    for c in claimed {
        let Some((_, endpoint)) = usable.iter().find(|(n, _)| *n == c.endpoint) else {
            continue;
        };
        let Some(config) = project.notifications.get(&c.endpoint) else {
            continue;
        };
        pass.attempted += 1;
        let result = match notifications::event_of(c.notification_id, &c.payload_json) {
            Err(e) => AttemptResult::Failed {
                http_status: None,
                error: e.to_string(),
                retry_in: None,
            },
            Ok(event) => {
                let attempt = sender.send(endpoint, &event, Utc::now().timestamp()).await;
                match attempt {
                    Attempt::Delivered { status } => AttemptResult::Delivered {
                        http_status: status,
                    },
                    Attempt::Failed {
                        status,
                        error,
                        retryable,
                    } => AttemptResult::Failed {
                        http_status: status,
                        retry_in: (retryable && c.attempt < config.max_attempts).then(|| {
                            notifications::backoff(
                                c.attempt,
                                config.retry_initial,
                                config.retry_max,
                            )
                        }),
                        error,
                    },
                }
            }
        };
        match &result {
            AttemptResult::Delivered { http_status } => {
                pass.delivered += 1;
                tracing::info!(endpoint = %c.endpoint, event = %c.event, notification = c.notification_id, attempt = c.attempt, status = http_status, "notification delivered");
            }
            AttemptResult::Failed {
                error, retry_in, ..
            } => {
                if retry_in.is_none() {
                    pass.failed += 1;
                }
                tracing::warn!(endpoint = %c.endpoint, event = %c.event, notification = c.notification_id, attempt = c.attempt, retry_in_secs = retry_in.map(|d| d.as_secs_f64()), "notification not delivered: {error}");
            }
        }
        store.record_attempt(c.id, &result)?;
    }
    Ok(pass)
}

/// Delivers what is due, again and again as retries come due, until nothing deliverable is
/// pending or `wait` has passed (what is left waits for the next process that delivers).
/// Returns the deliveries still pending.
pub async fn deliver_for(
    project: &Project,
    store: &mut StateStore,
    sender: &notifications::Sender,
    wait: Duration,
) -> Result<u64, state_store::Error> {
    let until = Instant::now() + wait;
    loop {
        deliver_once(project, store, sender).await?;
        let names: Vec<String> = project
            .notifications
            .values()
            .filter(|n| n.problem().is_none())
            .map(|n| n.name.clone())
            .collect();
        let next = store.next_delivery_due(&names)?;
        let Some(next) = next else {
            return store.pending_deliveries();
        };
        let now = Instant::now();
        if now >= until {
            return store.pending_deliveries();
        }
        let due_in = DateTime::parse_from_rfc3339(&next)
            .ok()
            .and_then(|t| (t.with_timezone(&Utc) - Utc::now()).to_std().ok())
            .unwrap_or(Duration::ZERO);
        if now + due_in > until {
            return store.pending_deliveries();
        }
        tokio::time::sleep(due_in.max(Duration::from_millis(20))).await;
    }
}

#[cfg(test)]
mod tests;
