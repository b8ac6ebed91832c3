//! Alert rules, evaluated as pure functions: over a run's facts ([`RunFacts`], from its
//! report or from a plan) and the summaries of the runs before it ([`PastRun`]), or over the
//! clock and the schedule ([`schedule_missed`]). No I/O here: [`crate::notify`] reads the
//! inputs from the state store and records what comes out.
//!
//! A rule that cannot judge (too little history, a run that did not finish) gives no
//! [`Verdict`], and its state stays as it is.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use state_store::{AlertState, RunStatus};

use crate::config::{AlertRules, ScheduleMissed, Threshold};
use crate::run::RunReport;
use crate::schedule::Schedule;

/// The rules, by the names the state store, events and metrics use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The run failed.
    RunFailed,
    /// Rows rejected or failed above a threshold.
    RowsRejected,
    /// Contacts not found above a threshold.
    RowsNotFound,
    /// A run slower than a factor of the median of the last runs.
    SlowRun,
    /// Changed contacts far from the average of the last runs.
    ChangedDeviation,
    /// A mapping change backfilled attributes.
    MappingBackfill,
    /// No successful run within the expected interval.
    ScheduleMissed,
}

impl Rule {
    /// Every rule.
    pub const ALL: &'static [Rule] = &[
        Rule::RunFailed,
        Rule::RowsRejected,
        Rule::RowsNotFound,
        Rule::SlowRun,
        Rule::ChangedDeviation,
        Rule::MappingBackfill,
        Rule::ScheduleMissed,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::RunFailed => "run_failed",
            Rule::RowsRejected => "rows_rejected",
            Rule::RowsNotFound => "rows_not_found",
            Rule::SlowRun => "slow_run",
            Rule::ChangedDeviation => "changed_deviation",
            Rule::MappingBackfill => "mapping_backfill",
            Rule::ScheduleMissed => "schedule_missed",
        }
    }

    /// Parses [`Rule::as_str`]'s text.
    pub fn parse(text: &str) -> Option<Rule> {
        Rule::ALL.iter().copied().find(|r| r.as_str() == text)
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the rules look at in one run (or in a plan: what is only known after sending is
/// `None` there).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFacts {
    /// The run's status; `None` for a plan.
    pub status: Option<RunStatus>,
    /// The model rows planned (in the segment).
    pub rows: u64,
    /// Contacts with attributes to send.
    pub changed: u64,
    /// Rows rejected (by validation, or by Attentive).
    pub rejected: u64,
    /// Rows whose writes failed (unknown for a plan).
    pub failed: Option<u64>,
    /// Contacts not found (unknown for a plan).
    pub not_found: Option<u64>,
    /// How long it took (unknown for a plan).
    pub duration_ms: Option<u64>,
    /// Attributes the mapping did not have at the previous run, with the contacts they are
    /// sent to.
    pub backfill: Vec<(String, u64)>,
}

impl RunFacts {
    /// The facts of a finished run.
    pub fn of_run(report: &RunReport) -> RunFacts {
        RunFacts {
            status: Some(report.status),
            rows: report.plan.rows,
            changed: report.plan.changed,
            rejected: report.counts.rejected,
            failed: Some(report.counts.failed),
            not_found: Some(report.counts.not_found),
            duration_ms: Some(report.duration_ms),
            backfill: backfill(&report.mapping_added, &report.plan.attributes_to_send),
        }
    }

    /// The facts of a plan: `previous` are the attribute keys the activation last ran with
    /// (`None`: it never ran, so nothing is a mapping change).
    pub fn of_plan(report: &crate::plan::PlanReport, previous: Option<&[String]>) -> RunFacts {
        let added: Vec<String> = match previous {
            None => Vec::new(),
            Some(previous) => report
                .counts
                .attributes_to_send
                .keys()
                .filter(|k| !previous.contains(k))
                .cloned()
                .collect(),
        };
        RunFacts {
            status: None,
            rows: report.counts.rows,
            changed: report.counts.changed,
            rejected: report.counts.rejected,
            failed: None,
            not_found: None,
            duration_ms: None,
            backfill: backfill(&added, &report.counts.attributes_to_send),
        }
    }
}

fn backfill(
    added: &[String],
    to_send: &std::collections::BTreeMap<String, u64>,
) -> Vec<(String, u64)> {
    added
        .iter()
        .map(|k| (k.clone(), to_send.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// What the rules need of an earlier run that finished (`succeeded` or `partial`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PastRun {
    pub run_id: i64,
    pub duration_ms: u64,
    pub changed: u64,
    /// It backfilled a mapping change (its changes say nothing of the model's usual pace).
    pub backfill: bool,
}

impl PastRun {
    /// The summary of a finished run, from its report; `None` for a run that did not finish.
    pub fn of(report: &RunReport) -> Option<PastRun> {
        matches!(report.status, RunStatus::Succeeded | RunStatus::Partial).then(|| PastRun {
            run_id: report.run_id,
            duration_ms: report.duration_ms,
            changed: report.plan.changed,
            backfill: !backfill(&report.mapping_added, &report.plan.attributes_to_send).is_empty(),
        })
    }
}

/// One rule's judgement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub rule: Rule,
    /// Whether the rule's condition holds.
    pub firing: bool,
    /// For people: what was measured, against what.
    pub message: String,
    /// The measurements, for receivers.
    pub details: serde_json::Value,
}

impl Verdict {
    fn new(rule: Rule, firing: bool, message: String, details: serde_json::Value) -> Verdict {
        Verdict {
            rule,
            firing,
            message,
            details,
        }
    }

    /// The state it puts its rule in.
    pub fn state(&self) -> AlertState {
        if self.firing {
            AlertState::Firing
        } else {
            AlertState::Ok
        }
    }
}

/// Evaluates the run rules over one run's facts and the runs before it (newest first, at
/// most as many as the rules look at; only `succeeded` and `partial` ones).
///
/// A `failed` run only moves `run_failed` (its counts are incomplete); an `interrupted`,
/// `running` or `pending` one moves nothing (it has not finished: a pending run is evaluated
/// when its bulk jobs settle). A plan moves nothing either: its verdicts say what a run would
/// fire, for the rules a plan can judge.
pub fn evaluate(rules: &AlertRules, facts: &RunFacts, history: &[PastRun]) -> Vec<Verdict> {
    let mut out = Vec::new();
    match facts.status {
        Some(RunStatus::Failed) => {
            if rules.run_failed {
                out.push(Verdict::new(
                    Rule::RunFailed,
                    true,
                    "the run failed".to_owned(),
                    serde_json::json!({ "status": "failed" }),
                ));
            }
            return out;
        }
        Some(RunStatus::Succeeded | RunStatus::Partial) | None => {}
        Some(RunStatus::Interrupted | RunStatus::Running | RunStatus::Pending) => return out,
    }
    if rules.run_failed && facts.status.is_some() {
        out.push(Verdict::new(
            Rule::RunFailed,
            false,
            "the run finished".to_owned(),
            serde_json::json!({ "status": facts.status.map(RunStatus::as_str) }),
        ));
    }
    if let Some(t) = &rules.rows_rejected {
        let n = facts.rejected + facts.failed.unwrap_or(0);
        let what = if facts.failed.is_some() {
            ("row rejected or failed", "rows rejected or failed")
        } else {
            ("row rejected", "rows rejected")
        };
        out.push(threshold(Rule::RowsRejected, t, n, facts.rows, what));
    }
    if let (Some(t), Some(n)) = (&rules.rows_not_found, facts.not_found) {
        out.push(threshold(
            Rule::RowsNotFound,
            t,
            n,
            facts.rows,
            ("contact not found", "contacts not found"),
        ));
    }
    if let (Some(s), Some(ms)) = (&rules.slow_run, facts.duration_ms) {
        let mut past: Vec<u64> = history.iter().take(s.runs).map(|r| r.duration_ms).collect();
        if past.len() >= 3 {
            past.sort_unstable();
            let median = median(&past);
            let limit = median * s.factor;
            let slow = ms as f64 > limit && Duration::from_millis(ms) >= s.min;
            out.push(Verdict::new(
                Rule::SlowRun,
                slow,
                format!(
                    "took {}, {:.1}× the median of the last {} runs ({}); the limit is {:.1}× (and at least {})",
                    human_ms(ms as f64),
                    if median > 0.0 { ms as f64 / median } else { 0.0 },
                    past.len(),
                    human_ms(median),
                    s.factor,
                    human_ms(s.min.as_millis() as f64)
                ),
                serde_json::json!({
                    "duration_ms": ms, "median_ms": median, "runs": past.len(), "factor": s.factor,
                }),
            ));
        }
    }
    if let Some(d) = &rules.changed_deviation {
        let past: Vec<u64> = history
            .iter()
            .filter(|r| !r.backfill)
            .take(d.runs)
            .map(|r| r.changed)
            .collect();
        // A backfill changes everyone on purpose: the backfill rule speaks for it.
        if past.len() >= 3 && facts.backfill.is_empty() {
            let average = past.iter().sum::<u64>() as f64 / past.len() as f64;
            let deviation = if average > 0.0 {
                (facts.changed as f64 - average) / average * 100.0
            } else {
                0.0
            };
            let judged = average >= d.min_average;
            let firing = judged && deviation.abs() > d.percent;
            out.push(Verdict::new(
                Rule::ChangedDeviation,
                firing,
                if judged {
                    format!(
                        "{} changed contacts, {:+.0}% from the average of the last {} runs ({:.1}); the limit is ±{}%",
                        facts.changed, deviation, past.len(), average, d.percent
                    )
                } else {
                    format!(
                        "{} changed contacts; the last {} runs average {:.1}, under the {} this rule needs to judge",
                        facts.changed, past.len(), average, d.min_average
                    )
                },
                serde_json::json!({
                    "changed": facts.changed, "average": average, "deviation_percent": deviation,
                    "runs": past.len(), "limit_percent": d.percent,
                }),
            ));
        }
    }
    if rules.mapping_backfill {
        let firing = !facts.backfill.is_empty();
        let list: Vec<String> = facts
            .backfill
            .iter()
            .map(|(k, n)| format!("{k} for {n} contact{}", if *n == 1 { "" } else { "s" }))
            .collect();
        out.push(Verdict::new(
            Rule::MappingBackfill,
            firing,
            if firing {
                format!("a mapping change backfills {}", list.join(", "))
            } else {
                "no mapping change to backfill".to_owned()
            },
            serde_json::json!({
                "attributes": facts.backfill.iter().map(|(k, n)| serde_json::json!({ "attribute": k, "contacts": n })).collect::<Vec<_>>(),
            }),
        ));
    }
    out
}

/// `what` is the outcome's name for one row and for several.
fn threshold(rule: Rule, t: &Threshold, n: u64, rows: u64, what: (&str, &str)) -> Verdict {
    let what = if n == 1 { what.0 } else { what.1 };
    let percent = if rows > 0 {
        n as f64 * 100.0 / rows as f64
    } else {
        0.0
    };
    let over_count = t.count.is_some_and(|c| n > c);
    let over_percent = t.percent.is_some_and(|p| rows > 0 && percent > p);
    let mut limits = Vec::new();
    if let Some(c) = t.count {
        limits.push(format!("{c} rows"));
    }
    if let Some(p) = t.percent {
        limits.push(format!("{p}%"));
    }
    Verdict::new(
        rule,
        over_count || over_percent,
        format!(
            "{n} {what} ({percent:.1}% of {rows} rows); the limit is {}",
            limits.join(" or ")
        ),
        serde_json::json!({
            "rows": n, "model_rows": rows, "percent": percent,
            "limit_count": t.count, "limit_percent": t.percent,
        }),
    )
}

fn median(sorted: &[u64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        sorted[n / 2] as f64
    } else {
        (sorted[n / 2 - 1] as f64 + sorted[n / 2] as f64) / 2.0
    }
}

fn human_ms(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 120_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{:.1} min", ms / 60_000.0)
    }
}

/// The `schedule_missed` rule: fires when no run succeeded (`succeeded` or `partial`) since
/// `last_success` within the expected interval: `within` when set, else until the second
/// scheduled start after it (the first is when the next run should start; by the second it
/// should have finished), plus the grace. No verdict without a schedule or `within`, or
/// without a successful run to count from.
pub fn schedule_missed(
    rule: &ScheduleMissed,
    schedule: Option<&Schedule>,
    last_success: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<Verdict> {
    let last = last_success?;
    let grace = chrono::Duration::from_std(rule.grace).ok()?;
    let (deadline, expected) = match (rule.within, schedule) {
        (Some(within), _) => (
            last + chrono::Duration::from_std(within).ok()?,
            format!("within {:.1} h", within.as_secs_f64() / 3600.0),
        ),
        (None, Some(s)) => {
            let first = s.next_after(last)?;
            (
                s.next_after(first)?,
                format!("by the second start of `{}` after it", s.expression()),
            )
        }
        (None, None) => return None,
    };
    let deadline = deadline + grace;
    let firing = now > deadline;
    Some(Verdict::new(
        Rule::ScheduleMissed,
        firing,
        if firing {
            format!(
                "no successful run since {} (one was expected {expected}, plus {} min of grace, so by {})",
                last.format("%Y-%m-%d %H:%M UTC"),
                rule.grace.as_secs() / 60,
                deadline.format("%Y-%m-%d %H:%M UTC")
            )
        } else {
            format!(
                "last successful run {}; the next is expected by {}",
                last.format("%Y-%m-%d %H:%M UTC"),
                deadline.format("%Y-%m-%d %H:%M UTC")
            )
        },
        serde_json::json!({
            "last_success": last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "deadline": deadline.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }),
    ))
}

/// A verdict that changes its rule's state: what [`crate::notify`] notifies.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition<'a> {
    pub verdict: &'a Verdict,
    /// The state before (`None`: never evaluated).
    pub from: Option<AlertState>,
}

/// The verdicts that change their rule's state, given the current states: a rule never
/// evaluated counts as `ok`, so its first `ok` is no transition and its first `firing` is.
pub fn transitions<'a>(
    current: &dyn Fn(Rule) -> Option<AlertState>,
    verdicts: &'a [Verdict],
) -> Vec<Transition<'a>> {
    verdicts
        .iter()
        .filter_map(|v| {
            let from = current(v.rule);
            (from.unwrap_or(AlertState::Ok) != v.state()).then_some(Transition { verdict: v, from })
        })
        .collect()
}

#[cfg(test)]
mod tests;
