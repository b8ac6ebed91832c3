//! The config of alerts (`[activations.NAME.alerts]`: rules, on by default) and of
//! notifications (`[notifications.NAME]`: where events go), raw and validated.

use std::collections::BTreeMap;
use std::time::Duration;

use notifications::{EventKind, Kind, Secret};
use serde::Deserialize;

use super::{loopback_url, Problem};

/// A rule as written: `false` (off), `true` (on, defaults), or a table of settings (on).
#[derive(Debug, Clone)]
pub enum RawRule<T> {
    Switch(bool),
    Settings(T),
}

/// Read by hand rather than as an untagged enum, so that a mistake inside the table is
/// reported as itself.
impl<'de, T: Deserialize<'de>> Deserialize<'de> for RawRule<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = RawRule<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false, or a table of the rule's settings")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RawRule<T>, E> {
                Ok(RawRule::Switch(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawRule<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawRule::Settings)
            }
        }
        d.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

/// `[activations.NAME.alerts]`: every rule is on unless set to `false`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    pub run_failed: Option<bool>,
    pub rows_rejected: Option<RawRule<RawThreshold>>,
    pub rows_not_found: Option<RawRule<RawThreshold>>,
    pub slow_run: Option<RawRule<RawSlowRun>>,
    pub changed_deviation: Option<RawRule<RawDeviation>>,
    pub mapping_backfill: Option<bool>,
    pub schedule_missed: Option<RawRule<RawScheduleMissed>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawThreshold {
    pub count: Option<u64>,
    pub percent: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlowRun {
    pub factor: Option<f64>,
    pub runs: Option<u64>,
    pub min_secs: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeviation {
    pub percent: Option<f64>,
    pub runs: Option<u64>,
    pub min_average: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScheduleMissed {
    pub within_hours: Option<f64>,
    pub grace_minutes: Option<f64>,
}

/// Fires when more rows than `count`, or more than `percent` % of the model's rows, have the
/// outcome (either limit that is set).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub count: Option<u64>,
    pub percent: Option<f64>,
}

/// Fires when a run takes more than `factor` × the median duration of the last `runs`
/// finished runs (at least 3 of them), and longer than `min`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowRun {
    pub factor: f64,
    pub runs: usize,
    pub min: Duration,
}

/// Fires when a run's changed contacts are more than `percent` % away from the average of
/// the last `runs` finished runs (at least 3, whose average is at least `min_average`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deviation {
    pub percent: f64,
    pub runs: usize,
    pub min_average: f64,
}

/// Fires when no run succeeded within `within` (default: two scheduled starts) plus `grace`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleMissed {
    pub within: Option<Duration>,
    pub grace: Duration,
}

/// An activation's alert rules, validated (`None`/`false`: off).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRules {
    pub run_failed: bool,
    pub rows_rejected: Option<Threshold>,
    pub rows_not_found: Option<Threshold>,
    pub slow_run: Option<SlowRun>,
    pub changed_deviation: Option<Deviation>,
    pub mapping_backfill: bool,
    pub schedule_missed: Option<ScheduleMissed>,
}

/// Defaults of the rules (all on).
pub(crate) const DEFAULT_REJECTED_PERCENT: f64 = 1.0;
pub(crate) const DEFAULT_NOT_FOUND_PERCENT: f64 = 5.0;
pub(crate) const DEFAULT_SLOW_FACTOR: f64 = 3.0;
pub(crate) const DEFAULT_HISTORY_RUNS: u64 = 10;
pub(crate) const DEFAULT_SLOW_MIN_SECS: f64 = 60.0;
pub(crate) const DEFAULT_DEVIATION_PERCENT: f64 = 90.0;
pub(crate) const DEFAULT_DEVIATION_MIN_AVERAGE: f64 = 20.0;
pub(crate) const DEFAULT_SCHEDULE_GRACE_MINUTES: f64 = 15.0;

impl AlertRules {
    /// Whether `rule` is on.
    pub fn enabled(&self, rule: crate::alerts::Rule) -> bool {
        use crate::alerts::Rule;
        match rule {
            Rule::RunFailed => self.run_failed,
            Rule::RowsRejected => self.rows_rejected.is_some(),
            Rule::RowsNotFound => self.rows_not_found.is_some(),
            Rule::SlowRun => self.slow_run.is_some(),
            Rule::ChangedDeviation => self.changed_deviation.is_some(),
            Rule::MappingBackfill => self.mapping_backfill,
            Rule::ScheduleMissed => self.schedule_missed.is_some(),
        }
    }
}

impl Default for AlertRules {
    fn default() -> Self {
        let mut problems = Vec::new();
        alert_rules("", &RawAlerts::default(), &mut problems)
    }
}

/// Validates `[activations.NAME.alerts]` (`key` is `activations.NAME`).
pub(crate) fn alert_rules(key: &str, raw: &RawAlerts, problems: &mut Vec<Problem>) -> AlertRules {
    let mut number = |name: String, v: Option<f64>, default: f64, range: (f64, f64)| {
        let v = v.unwrap_or(default);
        if !(v.is_finite() && v >= range.0 && v <= range.1) {
            problems.push(Problem {
                key: name,
                message: format!("{v} must be between {} and {}", range.0, range.1),
            });
            default
        } else {
            v
        }
    };
    let k = |rule: &str, field: &str| format!("{key}.alerts.{rule}.{field}");
    let threshold = |rule: &str,
                     raw: &Option<RawRule<RawThreshold>>,
                     default: f64,
                     number: &mut dyn FnMut(String, Option<f64>, f64, (f64, f64)) -> f64|
     -> Option<Threshold> {
        match raw {
            Some(RawRule::Switch(false)) => None,
            None | Some(RawRule::Switch(true)) => Some(Threshold {
                count: None,
                percent: Some(default),
            }),
            Some(RawRule::Settings(t)) => {
                let percent = t
                    .percent
                    .map(|p| number(k(rule, "percent"), Some(p), default, (0.0, 100.0)));
                Some(Threshold {
                    count: t.count,
                    // An empty table means the defaults.
                    percent: if t.count.is_none() && percent.is_none() {
                        Some(default)
                    } else {
                        percent
                    },
                })
            }
        }
    };
    let rows_rejected = threshold(
        "rows_rejected",
        &raw.rows_rejected,
        DEFAULT_REJECTED_PERCENT,
        &mut number,
    );
    let rows_not_found = threshold(
        "rows_not_found",
        &raw.rows_not_found,
        DEFAULT_NOT_FOUND_PERCENT,
        &mut number,
    );
    let runs =
        |v: Option<u64>,
         name: String,
         problems_fn: &mut dyn FnMut(String, Option<f64>, f64, (f64, f64)) -> f64| {
            let n = problems_fn(
                name,
                v.map(|n| n as f64),
                DEFAULT_HISTORY_RUNS as f64,
                (3.0, 100.0),
            );
            n as usize
        };
    let slow_run = match &raw.slow_run {
        Some(RawRule::Switch(false)) => None,
        other => {
            let s = match other {
                Some(RawRule::Settings(s)) => s,
                _ => &RawSlowRun::default(),
            };
            Some(SlowRun {
                factor: number(
                    k("slow_run", "factor"),
                    s.factor,
                    DEFAULT_SLOW_FACTOR,
                    (1.0, 1000.0),
                ),
                runs: runs(s.runs, k("slow_run", "runs"), &mut number),
                min: Duration::from_secs_f64(number(
                    k("slow_run", "min_secs"),
                    s.min_secs,
                    DEFAULT_SLOW_MIN_SECS,
                    (0.0, 86_400.0),
                )),
            })
        }
    };
    let changed_deviation = match &raw.changed_deviation {
        Some(RawRule::Switch(false)) => None,
        other => {
            let s = match other {
                Some(RawRule::Settings(s)) => s,
                _ => &RawDeviation::default(),
            };
            Some(Deviation {
                percent: number(
                    k("changed_deviation", "percent"),
                    s.percent,
                    DEFAULT_DEVIATION_PERCENT,
                    (1.0, 100_000.0),
                ),
                runs: runs(s.runs, k("changed_deviation", "runs"), &mut number),
                min_average: number(
                    k("changed_deviation", "min_average"),
                    s.min_average,
                    DEFAULT_DEVIATION_MIN_AVERAGE,
                    (0.0, 1e12),
                ),
            })
        }
    };
    let schedule_missed = match &raw.schedule_missed {
        Some(RawRule::Switch(false)) => None,
        other => {
            let s = match other {
                Some(RawRule::Settings(s)) => s,
                _ => &RawScheduleMissed::default(),
            };
            Some(ScheduleMissed {
                within: s.within_hours.map(|h| {
                    Duration::from_secs_f64(
                        number(
                            k("schedule_missed", "within_hours"),
                            Some(h),
                            24.0,
                            (0.01, 8760.0),
                        ) * 3600.0,
                    )
                }),
                grace: Duration::from_secs_f64(
                    number(
                        k("schedule_missed", "grace_minutes"),
                        s.grace_minutes,
                        DEFAULT_SCHEDULE_GRACE_MINUTES,
                        (0.0, 10_080.0),
                    ) * 60.0,
                ),
            })
        }
    };
    AlertRules {
        run_failed: raw.run_failed.unwrap_or(true),
        rows_rejected,
        rows_not_found,
        slow_run,
        changed_deviation,
        mapping_backfill: raw.mapping_backfill.unwrap_or(true),
        schedule_missed,
    }
}

/// `[notifications.NAME]`: an endpoint events are sent to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotification {
    /// `webhook` (default) or `slack`.
    pub kind: Option<String>,
    /// `${VAR}` interpolated (an incoming-webhook URL is a credential: keep it in the
    /// environment).
    pub url: String,
    /// The environment variable holding the signing secret.
    pub secret_env: Option<String>,
    /// Events sent (default: all).
    pub events: Option<Vec<String>>,
    /// Activations whose events are sent (default: all).
    pub activations: Option<Vec<String>>,
    /// Attempts before a delivery is given up (default 8).
    pub max_attempts: Option<u32>,
    /// Wait after the first failed attempt, doubled after each (default 5 s).
    pub retry_initial_secs: Option<f64>,
    /// Longest wait between attempts (default 600 s).
    pub retry_max_secs: Option<f64>,
    /// Seconds an attempt may take (default 10).
    pub timeout_secs: Option<f64>,
    /// Accept an `http://` URL on a host other than loopback.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

/// A validated notification endpoint. `Debug` shows neither its URL nor its secret.
#[derive(Clone)]
pub struct NotificationEndpoint {
    pub name: String,
    pub kind: Kind,
    /// `Err` (why) when the URL's variable is not set: events are still recorded, and
    /// delivered once it is.
    pub url: Result<String, String>,
    /// `Err` (why) when `secret_env` names a variable that is not set: nothing is sent
    /// unsigned; deliveries wait.
    pub secret: Result<Option<Secret>, String>,
    /// The variable of the secret, for messages.
    pub secret_env: Option<String>,
    pub events: Vec<EventKind>,
    /// `None`: every activation.
    pub activations: Option<Vec<String>>,
    pub max_attempts: u32,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub timeout: Duration,
}

impl std::fmt::Debug for NotificationEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationEndpoint")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url.as_ref().map(|_| "(redacted)"))
            .field("secret_env", &self.secret_env)
            .field("events", &self.events)
            .field("activations", &self.activations)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl NotificationEndpoint {
    /// Whether it takes `event` of `activation`.
    pub fn subscribes(&self, activation: &str, event: EventKind) -> bool {
        self.events.contains(&event)
            && self
                .activations
                .as_ref()
                .is_none_or(|a| a.iter().any(|n| n == activation))
    }

    /// What the sender needs, or why it cannot be sent to now.
    pub fn endpoint(&self) -> Result<notifications::Endpoint, String> {
        Ok(notifications::Endpoint {
            name: self.name.clone(),
            url: self.url.clone()?,
            kind: self.kind,
            secret: self.secret.clone()?,
            timeout: self.timeout,
        })
    }

    /// Why it cannot be sent to now, if it cannot.
    pub fn problem(&self) -> Option<String> {
        self.endpoint().err()
    }
}

/// Validates `[notifications.NAME]` tables.
pub(crate) fn notification_endpoints(
    raw: &BTreeMap<String, RawNotification>,
    activations: &[&String],
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, NotificationEndpoint> {
    let mut out = BTreeMap::new();
    for (name, n) in raw {
        let key = format!("notifications.{name}");
        if let Err(message) = super::check_activation_name(name) {
            problems.push(Problem {
                key: format!("notifications.{name:?}"),
                message: message.replace("Activation", "Notification"),
            });
        }
        let kind = match n.kind.as_deref() {
            None | Some("webhook") => Kind::Webhook,
            Some("slack") => Kind::Slack,
            Some(other) => {
                problems.push(Problem {
                    key: format!("{key}.kind"),
                    message: format!(
                        "{other:?} is not a notification kind; use \"webhook\" or \"slack\""
                    ),
                });
                Kind::Webhook
            }
        };
        let url = match super::interpolate(&n.url, env) {
            Err(e) => Err(format!("{key}.url: {e}")),
            Ok(u) => {
                // The URL itself is never shown: an incoming-webhook URL is a credential.
                match url::Url::parse(&u) {
                    Ok(parsed) if matches!(parsed.scheme(), "https" | "http") => {
                        if parsed.scheme() == "http" && !n.allow_insecure_http && !loopback_url(&u)
                        {
                            problems.push(Problem {
                                key: format!("{key}.url"),
                                message: "is http:// on a host other than this machine: events (and their signatures) would travel in clear; use https://, or set allow_insecure_http = true".into(),
                            });
                        }
                        Ok(u)
                    }
                    _ => {
                        problems.push(Problem {
                            key: format!("{key}.url"),
                            message: "is not an http:// or https:// URL (the value is not shown: it may hold a credential)".into(),
                        });
                        Err(format!("{key}.url is not a URL"))
                    }
                }
            }
        };
        let secret = match &n.secret_env {
            None => Ok(None),
            Some(var) => match env(var) {
                Some(v) if !v.is_empty() => Ok(Some(Secret::new(v.into_bytes()))),
                _ => Err(format!(
                    "{key}.secret_env: environment variable {var} is not set (deliveries wait until it is; nothing is sent unsigned)"
                )),
            },
        };
        let events = match &n.events {
            None => EventKind::ALL.to_vec(),
            Some(list) => {
                let mut events = Vec::new();
                for e in list {
                    match EventKind::parse(e) {
                        Some(k) => events.push(k),
                        None => problems.push(Problem {
                            key: format!("{key}.events"),
                            message: format!(
                                "{e:?} is not an event; events: {}",
                                EventKind::ALL
                                    .iter()
                                    .map(|k| k.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        }),
                    }
                }
                events
            }
        };
        if let Some(list) = &n.activations {
            for a in list {
                if !activations.contains(&a) {
                    problems.push(Problem {
                        key: format!("{key}.activations"),
                        message: format!("no activation named {a:?}"),
                    });
                }
            }
        }
        let max_attempts = n.max_attempts.unwrap_or(8);
        if !(1..=100).contains(&max_attempts) {
            problems.push(Problem {
                key: format!("{key}.max_attempts"),
                message: format!("{max_attempts} must be between 1 and 100"),
            });
        }
        let mut secs = |field: &str, v: Option<f64>, default: f64, range: (f64, f64)| {
            let v = v.unwrap_or(default);
            if v.is_finite() && v >= range.0 && v <= range.1 {
                Duration::from_secs_f64(v)
            } else {
                problems.push(Problem {
                    key: format!("{key}.{field}"),
                    message: format!("{v} must be between {} and {} seconds", range.0, range.1),
                });
                Duration::from_secs_f64(default)
            }
        };
        let retry_initial = secs(
            "retry_initial_secs",
            n.retry_initial_secs,
            5.0,
            (0.1, 3600.0),
        );
        let retry_max = secs("retry_max_secs", n.retry_max_secs, 600.0, (0.1, 86_400.0));
        let timeout = secs("timeout_secs", n.timeout_secs, 10.0, (0.1, 300.0));
        out.insert(
            name.clone(),
            NotificationEndpoint {
                name: name.clone(),
                kind,
                url,
                secret,
                secret_env: n.secret_env.clone(),
                events,
                activations: n.activations.clone(),
                max_attempts: max_attempts.clamp(1, 100),
                retry_initial,
                retry_max: retry_max.max(retry_initial),
                timeout,
            },
        );
    }
    out
}
