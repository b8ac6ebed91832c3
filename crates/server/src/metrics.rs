//! Prometheus metrics (OpenMetrics text, `prometheus-client`). Run values are added when a
//! run ends, from its [`RunReport`] (counts and `delivery`) and from its own Attentive
//! client's per-status counters, so they add up to exactly what the reports say.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `attentive_sync_run_rows_total` | activation, outcome | rows per outcome (`updated`, `unchanged`, `not_found`, `rejected`, `failed`) |
//! | `attentive_sync_attributes_sent_total` | activation | attributes of the changed contacts handed to delivery |
//! | `attentive_sync_requests_total` | activation | requests sent to Attentive, retries included |
//! | `attentive_sync_responses_total` | activation, status | responses per HTTP status |
//! | `attentive_sync_retries_total` | activation | retried requests |
//! | `attentive_sync_rate_limited_total` | activation | 429 answers |
//! | `attentive_sync_throttled_seconds_total` | activation | time waiting for the request budget or backing off, summed over requests |
//! | `attentive_sync_existence_checks_total` | activation | read-only existence checks |
//! | `attentive_sync_runs_total` | activation, status | finished runs per status |
//! | `attentive_sync_runs_skipped_total` | activation, reason | scheduled runs not started (`still_running`, `locked`, `error`) |
//! | `attentive_sync_run_duration_seconds` | activation | histogram of run durations |
//! | `attentive_sync_last_success_timestamp_seconds` | activation | Unix time the last run that finished (`succeeded` or `partial`) ended |
//! | `attentive_sync_run_in_progress` | activation | 1 while a run of the activation goes on in this server |
//! | `attentive_sync_alert_firing` | activation, rule | 1 while the alert rule fires, 0 otherwise (read from the state at each scrape) |
//! | `attentive_sync_notification_deliveries` | endpoint, state | notification deliveries per state (`pending`, `delivered`, `failed`), in the state file |
//! | `attentive_sync_notification_attempts` | endpoint | attempts those deliveries took |

use std::sync::atomic::AtomicU64;

use attentive_client::StatsSnapshot;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use runner::run::RunReport;
use state_store::{Outcome, RunStatus};

/// The `Content-Type` of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActivationLabels {
    activation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    activation: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    activation: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    activation: String,
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    endpoint: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    activation: String,
    reason: String,
}

type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;

fn duration_histogram() -> Histogram {
    // 0.25 s .. ~2.3 h
    Histogram::new(exponential_buckets(0.25, 2.0, 16))
}

/// Why a scheduled run did not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The previous run of the activation is still going on in this server.
    StillRunning,
    /// Another process holds the activation's lock.
    Locked,
    /// It could not start (e.g. the API key's variable is not set).
    Error,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::StillRunning => "still_running",
            SkipReason::Locked => "locked",
            SkipReason::Error => "error",
        }
    }
}

/// Every metric of the server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    rows: Family<OutcomeLabels, Counter>,
    attributes_sent: Family<ActivationLabels, Counter>,
    requests: Family<ActivationLabels, Counter>,
    responses: Family<StatusLabels, Counter>,
    retries: Family<ActivationLabels, Counter>,
    rate_limited: Family<ActivationLabels, Counter>,
    throttled: Family<ActivationLabels, FloatCounter>,
    existence_checks: Family<ActivationLabels, Counter>,
    runs: Family<StatusLabels, Counter>,
    skipped: Family<ReasonLabels, Counter>,
    duration: Family<ActivationLabels, Histogram, fn() -> Histogram>,
    last_success: Family<ActivationLabels, FloatGauge>,
    in_progress: Family<ActivationLabels, Gauge>,
    alert_firing: Family<RuleLabels, Gauge>,
    deliveries: Family<DeliveryLabels, Gauge>,
    attempts: Family<EndpointLabels, Gauge>,
}

/// The row outcomes, as the reports name them.
pub const OUTCOMES: &[Outcome] = Outcome::ALL;

/// The statuses a finished run can have (every status but `running`).
fn final_statuses() -> impl Iterator<Item = RunStatus> {
    RunStatus::ALL
        .iter()
        .copied()
        .filter(|s| *s != RunStatus::Running)
}

impl Metrics {
    /// The metrics, with a zero series for each of these activations.
    pub fn new(activations: &[String]) -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            rows: Family::default(),
            attributes_sent: Family::default(),
            requests: Family::default(),
            responses: Family::default(),
            retries: Family::default(),
            rate_limited: Family::default(),
            throttled: Family::default(),
            existence_checks: Family::default(),
            runs: Family::default(),
            skipped: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            last_success: Family::default(),
            in_progress: Family::default(),
            alert_firing: Family::default(),
            deliveries: Family::default(),
            attempts: Family::default(),
        };
        let mut m = m;
        let r = &mut m.registry;
        r.register(
            "attentive_sync_run_rows",
            "Model rows per outcome, from the reports of finished runs",
            m.rows.clone(),
        );
        r.register(
            "attentive_sync_attributes_sent",
            "Attributes of the changed contacts handed to delivery (the delivering pass's plan)",
            m.attributes_sent.clone(),
        );
        r.register(
            "attentive_sync_requests",
            "Requests sent to Attentive, retries included",
            m.requests.clone(),
        );
        r.register(
            "attentive_sync_responses",
            "Responses from Attentive per HTTP status",
            m.responses.clone(),
        );
        r.register(
            "attentive_sync_retries",
            "Requests that were retries",
            m.retries.clone(),
        );
        r.register(
            "attentive_sync_rate_limited",
            "Answers with status 429",
            m.rate_limited.clone(),
        );
        r.register(
            "attentive_sync_throttled_seconds",
            "Seconds requests waited for the request budget or in backoff, summed over requests",
            m.throttled.clone(),
        );
        r.register(
            "attentive_sync_existence_checks",
            "Read-only existence checks sent",
            m.existence_checks.clone(),
        );
        r.register(
            "attentive_sync_runs",
            "Finished runs per final status",
            m.runs.clone(),
        );
        r.register(
            "attentive_sync_runs_skipped",
            "Scheduled runs that did not start, per reason",
            m.skipped.clone(),
        );
        r.register(
            "attentive_sync_run_duration_seconds",
            "Duration of finished runs",
            m.duration.clone(),
        );
        r.register(
            "attentive_sync_last_success_timestamp_seconds",
            "Unix time the last run that finished (succeeded or partial) ended",
            m.last_success.clone(),
        );
        r.register(
            "attentive_sync_run_in_progress",
            "1 while a run of the activation goes on in this server",
            m.in_progress.clone(),
        );
        r.register(
            "attentive_sync_alert_firing",
            "1 while the alert rule fires for the activation, 0 otherwise",
            m.alert_firing.clone(),
        );
        r.register(
            "attentive_sync_notification_deliveries",
            "Notification deliveries in the state file, per endpoint and state",
            m.deliveries.clone(),
        );
        r.register(
            "attentive_sync_notification_attempts",
            "Attempts the notification deliveries in the state file took, per endpoint",
            m.attempts.clone(),
        );
        for a in activations {
            for rule in runner::alerts::Rule::ALL {
                let _ = m.alert_firing.get_or_create(&RuleLabels {
                    activation: a.clone(),
                    rule: rule.as_str().to_owned(),
                });
            }
            let al = ActivationLabels {
                activation: a.clone(),
            };
            for o in OUTCOMES {
                let _ = m.rows.get_or_create(&outcome_labels(a, o.as_str()));
            }
            for s in final_statuses() {
                let _ = m.runs.get_or_create(&StatusLabels {
                    activation: a.clone(),
                    status: s.as_str().to_owned(),
                });
            }
            let _ = m.attributes_sent.get_or_create(&al);
            let _ = m.requests.get_or_create(&al);
            let _ = m.retries.get_or_create(&al);
            let _ = m.rate_limited.get_or_create(&al);
            let _ = m.throttled.get_or_create(&al);
            let _ = m.existence_checks.get_or_create(&al);
            let _ = m.duration.get_or_create(&al);
            let _ = m.in_progress.get_or_create(&al);
        }
        m
    }

    /// Adds a finished run: its report, and its client's counters (`None` when no request
    /// could be counted).
    pub fn record(&self, report: &RunReport, client: Option<&StatsSnapshot>) {
        let a = &report.activation;
        let al = ActivationLabels {
            activation: a.clone(),
        };
        let c = &report.counts;
        for (outcome, n) in OUTCOMES.iter().map(|o| (o.as_str(), c.get(*o))) {
            self.rows
                .get_or_create(&outcome_labels(a, outcome))
                .inc_by(n);
        }
        let attributes: u64 = report.plan.attributes_to_send.values().sum();
        self.attributes_sent.get_or_create(&al).inc_by(attributes);
        let d = &report.delivery;
        self.requests.get_or_create(&al).inc_by(d.requests);
        self.retries.get_or_create(&al).inc_by(d.retries);
        self.rate_limited.get_or_create(&al).inc_by(d.rate_limited);
        self.throttled
            .get_or_create(&al)
            .inc_by(d.throttled_ms as f64 / 1000.0);
        self.existence_checks
            .get_or_create(&al)
            .inc_by(report.existence_checks);
        if let Some(stats) = client {
            for (status, n) in &stats.by_status {
                self.responses
                    .get_or_create(&StatusLabels {
                        activation: a.clone(),
                        status: status.to_string(),
                    })
                    .inc_by(*n);
            }
        }
        self.runs
            .get_or_create(&StatusLabels {
                activation: a.clone(),
                status: report.status.as_str().to_owned(),
            })
            .inc();
        self.duration
            .get_or_create(&al)
            .observe(report.duration_ms as f64 / 1000.0);
        if matches!(
            report.status,
            RunStatus::Succeeded | RunStatus::Partial | RunStatus::Pending
        ) {
            self.set_last_success(a, chrono::Utc::now());
        }
    }

    /// Sets when the activation's last finished run ended (also from the state database at
    /// start-up).
    pub fn set_last_success(&self, activation: &str, at: chrono::DateTime<chrono::Utc>) {
        let secs = at.timestamp_millis() as f64 / 1000.0;
        self.last_success
            .get_or_create(&ActivationLabels {
                activation: activation.to_owned(),
            })
            .set(secs);
    }

    /// Counts a scheduled run that did not start.
    pub fn skipped(&self, activation: &str, reason: SkipReason) {
        self.skipped
            .get_or_create(&ReasonLabels {
                activation: activation.to_owned(),
                reason: reason.as_str().to_owned(),
            })
            .inc();
    }

    /// Marks a run of the activation as going on (or not).
    pub fn set_in_progress(&self, activation: &str, running: bool) {
        self.in_progress
            .get_or_create(&ActivationLabels {
                activation: activation.to_owned(),
            })
            .set(i64::from(running));
    }

    /// Sets the alert and delivery gauges from what the state holds now: a series for every
    /// rule of every activation and for every state of every configured endpoint.
    pub fn set_notifications(
        &self,
        project: &runner::Project,
        states: &[state_store::AlertStateRow],
        totals: &[(String, state_store::DeliveryState, u64, u64)],
    ) {
        for a in project.activations.keys() {
            for rule in runner::alerts::Rule::ALL {
                let firing = states.iter().any(|s| {
                    s.activation == *a
                        && s.rule == rule.as_str()
                        && s.state == state_store::AlertState::Firing
                });
                self.alert_firing
                    .get_or_create(&RuleLabels {
                        activation: a.clone(),
                        rule: rule.as_str().to_owned(),
                    })
                    .set(i64::from(firing));
            }
        }
        let mut endpoints: Vec<&String> = project.notifications.keys().collect();
        for (e, _, _, _) in totals {
            if !endpoints.contains(&e) {
                endpoints.push(e);
            }
        }
        for e in endpoints {
            let mut attempts = 0;
            for state in state_store::DeliveryState::ALL {
                let (n, a) = totals
                    .iter()
                    .find(|(te, ts, _, _)| te == e && ts == state)
                    .map_or((0, 0), |(_, _, n, a)| (*n, *a));
                attempts += a;
                self.deliveries
                    .get_or_create(&DeliveryLabels {
                        endpoint: e.clone(),
                        state: state.as_str().to_owned(),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            self.attempts
                .get_or_create(&EndpointLabels {
                    endpoint: e.clone(),
                })
                .set(i64::try_from(attempts).unwrap_or(i64::MAX));
        }
    }

    /// The metrics as OpenMetrics text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)?;
        Ok(s)
    }
}

fn outcome_labels(activation: &str, outcome: &str) -> OutcomeLabels {
    OutcomeLabels {
        activation: activation.to_owned(),
        outcome: outcome.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn report() -> RunReport {
        let mut plan = sync_core::plan::PlanCounts::default();
        plan.attributes_to_send.insert("std:city".into(), 3);
        plan.attributes_to_send.insert("custom:Tier".into(), 2);
        RunReport {
            run_id: 1,
            activation: "vip".into(),
            status: RunStatus::Partial,
            counts: runner::run::RunCounts {
                updated: 3,
                unchanged: 10,
                not_found: 1,
                rejected: 2,
                failed: 0,
                identifier_conflicts: 0,
                pending: 0,
            },
            plan,
            delivery: sync_core::ports::DeliveryStats {
                requests: 7,
                retries: 2,
                rate_limited: 1,
                throttled_ms: 1500,
            },
            existence_checks: 4,
            mapping_added: Vec::new(),
            delivery_mode: "realtime".into(),
            bulk_jobs: 0,
            jobs_settled: 0,
            duration_ms: 2500,
            error: None,
        }
    }

    #[test]
    fn a_report_adds_up_in_the_text() {
        let m = Metrics::new(&["vip".into(), "other".into()]);
        let stats = StatsSnapshot {
            by_status: [(200, 4), (202, 2), (429, 1)].into_iter().collect(),
            ..StatsSnapshot::default()
        };
        m.record(&report(), Some(&stats));
        m.skipped("vip", SkipReason::StillRunning);
        m.set_in_progress("vip", true);
        let text = m.encode().unwrap();
        for line in [
            "attentive_sync_run_rows_total{activation=\"vip\",outcome=\"updated\"} 3",
            "attentive_sync_run_rows_total{activation=\"vip\",outcome=\"unchanged\"} 10",
            "attentive_sync_run_rows_total{activation=\"vip\",outcome=\"rejected\"} 2",
            "attentive_sync_run_rows_total{activation=\"other\",outcome=\"updated\"} 0",
            "attentive_sync_attributes_sent_total{activation=\"vip\"} 5",
            "attentive_sync_requests_total{activation=\"vip\"} 7",
            "attentive_sync_responses_total{activation=\"vip\",status=\"202\"} 2",
            "attentive_sync_retries_total{activation=\"vip\"} 2",
            "attentive_sync_rate_limited_total{activation=\"vip\"} 1",
            "attentive_sync_throttled_seconds_total{activation=\"vip\"} 1.5",
            "attentive_sync_existence_checks_total{activation=\"vip\"} 4",
            "attentive_sync_runs_total{activation=\"vip\",status=\"partial\"} 1",
            "attentive_sync_runs_total{activation=\"vip\",status=\"failed\"} 0",
            "attentive_sync_runs_skipped_total{activation=\"vip\",reason=\"still_running\"} 1",
            "attentive_sync_run_duration_seconds_count{activation=\"vip\"} 1",
            "attentive_sync_run_duration_seconds_sum{activation=\"vip\"} 2.5",
            "attentive_sync_run_in_progress{activation=\"vip\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.lines().any(
            |l| l.starts_with("attentive_sync_last_success_timestamp_seconds{activation=\"vip\"} ")
        ));
        assert!(text.trim_end().ends_with("# EOF"));
    }
}
