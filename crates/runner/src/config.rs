//! The project config file, in two stages: [`RawConfig`] is what serde reads (unknown keys
//! refused); [`Project`] is the validated form, with every error found before any row is read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use attentive_client::ApiKey;
pub use notify::{
    AlertRules, Deviation, NotificationEndpoint, RawAlerts, RawNotification, ScheduleMissed,
    SlowRun, Threshold,
};
use serde::Deserialize;
use sync_core::mapping::{
    check_custom_name, AttributeId, AttributeMapping, CustomType, DateOrder, DuplicatePolicy,
    Identifier, IdentifierKind, Mapping, NormalizeOptions, OnNull, StandardField,
};

/// The config file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub state: RawState,
    #[serde(default)]
    pub destinations: BTreeMap<String, RawDestination>,
    #[serde(default)]
    pub models: BTreeMap<String, RawModel>,
    #[serde(default)]
    pub activations: BTreeMap<String, RawActivation>,
    /// Where lifecycle events and alerts are sent.
    #[serde(default)]
    pub notifications: BTreeMap<String, RawNotification>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// SQLite file, relative to the config file. Default `attentive-sync.db`.
    pub path: Option<String>,
    /// Runs per activation whose per-row outcomes are kept (default 200).
    pub keep_runs: Option<u64>,
    /// Days the per-row outcomes of a run are kept (default: no limit by age).
    pub keep_run_rows_days: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    pub api_key: String,
    pub base_url: Option<String>,
    pub requests_per_second: Option<f64>,
    /// Send contacts whose changes are all custom attributes through `POST /v1/attributes/custom`.
    #[serde(default)]
    pub custom_only_via_v1: bool,
    /// `graphql` (default) or `subscriptions`.
    pub existence_check: Option<String>,
    /// `endpoint` (default) or `key`: what one `requests_per_second` budget counts.
    pub rate_limit_scope: Option<String>,
    /// Contacts per GraphQL lookup (default 25).
    pub lookup_batch: Option<u64>,
    /// Days after which a contact cached as existing is checked again (default 30).
    pub recheck_exists_after_days: Option<u64>,
    /// Requests per second on each bulk route (default 100).
    pub bulk_requests_per_second: Option<f64>,
    /// Accept an `http://` `base_url` on a host other than loopback (the API key would
    /// travel in clear).
    #[serde(default)]
    pub allow_insecure_http: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub source: String,
    pub path: Option<String>,
    pub url: Option<String>,
    pub query: Option<String>,
    pub delimiter: Option<String>,
    pub quote: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentifier {
    pub column: String,
    pub kind: IdentifierKind,
}

/// A custom attribute's column: `"tier"`, or `{ column = "ltv", type = "number" }`.
#[derive(Debug)]
pub enum RawCustom {
    Column(String),
    Typed(RawTypedCustom),
}

/// Read by hand rather than as an untagged enum, so that a mistake inside the table (an
/// unknown key, a missing `column`) is reported as itself, not as "did not match any variant".
impl<'de> Deserialize<'de> for RawCustom {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawCustom;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a column name (\"tier\") or a table like { column = \"ltv\", type = \"number\" }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawCustom, E> {
                Ok(RawCustom::Column(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawCustom, A::Error> {
                RawTypedCustom::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawCustom::Typed)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTypedCustom {
    pub column: String,
    /// Checked when the config is validated, so that a bad name is reported with its key.
    #[serde(rename = "type")]
    pub ty: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawActivation {
    pub model: String,
    pub destination: String,
    pub identifier: RawIdentifier,
    pub default_phone_region: Option<String>,
    #[serde(default)]
    pub date_order: DateOrder,
    #[serde(default)]
    pub on_null: OnNull,
    #[serde(default)]
    pub duplicates: DuplicatePolicy,
    #[serde(default)]
    pub attach_secondary: AttachSecondary,
    #[serde(default)]
    pub delivery: DeliveryMode,
    /// Changed contacts above which `delivery = "auto"` submits bulk jobs.
    pub bulk_threshold: Option<u64>,
    /// Records per bulk job (1..=256).
    pub bulk_batch_size: Option<u64>,
    pub schedule: Option<String>,
    /// Narrows the model to a segment: a SQL condition for SQL models, a predicate over
    /// columns for file models.
    pub filter: Option<String>,
    /// The IANA time zone `schedule` is evaluated in (default UTC).
    pub timezone: Option<String>,
    #[serde(default)]
    pub standard: BTreeMap<String, String>,
    #[serde(default)]
    pub custom: BTreeMap<String, RawCustom>,
    /// Alert rules (every one on unless set to `false`).
    #[serde(default)]
    pub alerts: RawAlerts,
}

/// A validated destination.
#[derive(Debug, Clone)]
pub struct Destination {
    pub name: String,
    /// `Err` (why) when the key's environment variable is not set: planning works without it,
    /// sending does not. The key itself is never printed, logged or stored.
    pub api_key: Result<ApiKey, String>,
    pub base_url: String,
    pub requests_per_second: f64,
    /// Custom-only changes go through `POST /v1/attributes/custom`.
    pub custom_only_via_v1: bool,
    /// How existence is checked before a contact's first write.
    pub existence_check: attentive_client::ExistenceStrategy,
    /// What one `requests_per_second` budget counts.
    pub rate_limit_scope: attentive_client::RateLimitScope,
    /// Contacts per GraphQL lookup to start with.
    pub lookup_batch: usize,
    /// A contact cached as existing is checked again after this long (profiles are deleted
    /// by privacy requests).
    pub recheck_exists_after: std::time::Duration,
    /// Requests per second on each bulk route.
    pub bulk_requests_per_second: f64,
}

/// Where a model's rows come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSpec {
    Csv {
        path: PathBuf,
        delimiter: u8,
        quote: u8,
    },
    Jsonl {
        path: PathBuf,
    },
    /// A file, or a folder of `*.parquet` files.
    Parquet {
        path: PathBuf,
    },
    Sqlite {
        path: PathBuf,
        query: String,
    },
    Postgres {
        url: DatabaseUrl,
        query: String,
    },
}

/// A database URL; it may hold a password, so `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(pub String);

impl DatabaseUrl {
    /// The URL with any password replaced by `***`, for messages.
    pub fn redacted(&self) -> String {
        sources::redact_url(&self.0)
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

/// Whether a URL's host is this machine (`localhost`, `127.0.0.0/8`, `::1`).
fn loopback_url(u: &str) -> bool {
    let host = url::Url::parse(u)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned));
    match host.as_deref() {
        Some("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// A validated model.
#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub spec: ModelSpec,
}

/// What a run does with a new value of the identifier an activation does not match on
/// (`phone` for an email identifier, `email` for a phone identifier), which Attentive files
/// under `identifiers` and so links to the contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachSecondary {
    /// Look it up with the contact first: send it only when no contact has it, or this one
    /// does; otherwise leave it out (row code `identifier_conflict`).
    #[default]
    Checked,
    /// Send it as it is: it may link two people's profiles if it is stale or shared.
    Always,
    /// Never send it.
    Never,
}

/// An activation name the config does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no activation named {name:?} in {}; activations: {known}", config.display())]
pub struct UnknownActivation {
    pub name: String,
    pub config: PathBuf,
    /// The activations it has, comma-separated (`(none)`).
    pub known: String,
}

/// How an activation's changes are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// One request per contact, acknowledged at once.
    Realtime,
    /// Bulk jobs of up to `bulk_batch_size` contacts, acknowledged when Attentive has
    /// processed them (hours later).
    Bulk,
    /// Realtime up to `bulk_threshold` changed contacts in a run, bulk above.
    #[default]
    Auto,
}

impl DeliveryMode {
    /// The name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMode::Realtime => "realtime",
            DeliveryMode::Bulk => "bulk",
            DeliveryMode::Auto => "auto",
        }
    }
}

/// How an activation delivers (`delivery`, `bulk_threshold`, `bulk_batch_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub mode: DeliveryMode,
    /// `auto` uses bulk when a run has more changed contacts than this.
    pub threshold: u64,
    /// Records per bulk job.
    pub batch_size: usize,
}

/// `bulk_threshold` when the config says nothing: 10,000 changed contacts take about 70 s
/// in realtime at Attentive's 150 writes/s and are acknowledged at once, while a bulk job is
/// acknowledged hours later (Attentive processes the first 10,000 bulk records of a day
/// within about 4 hours); beyond it, realtime takes minutes to hours and bulk submits 256
/// contacts a request.
pub const DEFAULT_BULK_THRESHOLD: u64 = 10_000;

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            mode: DeliveryMode::Auto,
            threshold: DEFAULT_BULK_THRESHOLD,
            batch_size: attentive_client::wire::MAX_BULK_RECORDS,
        }
    }
}

impl Delivery {
    /// Whether a run with `changed` contacts to send uses bulk jobs.
    pub fn uses_bulk(&self, changed: u64) -> bool {
        match self.mode {
            DeliveryMode::Realtime => false,
            DeliveryMode::Bulk => true,
            DeliveryMode::Auto => changed > self.threshold,
        }
    }

    /// Write requests a run with `changed` contacts to send takes (bulk: one per job).
    pub fn write_requests(&self, changed: u64) -> u64 {
        if self.uses_bulk(changed) {
            changed.div_ceil(self.batch_size.max(1) as u64)
        } else {
            changed
        }
    }
}

/// A validated activation: model → destination with a mapping.
#[derive(Debug, Clone)]
pub struct Activation {
    pub name: String,
    pub model: String,
    pub destination: String,
    pub mapping: Mapping,
    /// What to do with a new value of the identifier it does not match on.
    pub attach_secondary: AttachSecondary,
    /// Realtime, bulk or auto, and the bulk settings.
    pub delivery: Delivery,
    pub schedule: Option<String>,
    /// The segment of the model this activation sends, when it has a `filter`.
    pub segment: Option<Segment>,
    /// The time zone of the schedule (`timezone`, default UTC).
    pub timezone: chrono_tz::Tz,
    /// `schedule`, parsed: `Some` exactly when `schedule` is set.
    pub cron: Option<crate::schedule::Schedule>,
    /// Its alert rules.
    pub alerts: AlertRules,
}

/// How an activation narrows its model.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    /// A SQL condition: the model query is wrapped in `SELECT * FROM (query) WHERE condition`
    /// so the database filters the rows.
    Sql(String),
    /// A predicate over a file model's columns, evaluated on each row as it is read.
    Rows(sync_core::segment::Filter),
}

impl Segment {
    /// The filter as configured (rows: canonical form).
    pub fn text(&self) -> String {
        match self {
            Segment::Sql(s) => s.clone(),
            Segment::Rows(f) => f.to_string(),
        }
    }
}

/// A validated project.
#[derive(Debug, Clone)]
pub struct Project {
    /// The config file.
    pub path: PathBuf,
    pub state_path: PathBuf,
    /// How much run history the state file keeps.
    pub history: History,
    pub destinations: BTreeMap<String, Destination>,
    pub models: BTreeMap<String, Model>,
    pub activations: BTreeMap<String, Activation>,
    /// The activations' names in the order the config file lists them (`run --all`).
    pub activation_order: Vec<String>,
    /// Where events are sent, by name.
    pub notifications: BTreeMap<String, NotificationEndpoint>,
}

/// How much run history the state file keeps: the per-row outcomes of older runs are pruned
/// after each run (the runs themselves and their counts stay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    /// Runs per activation whose rows are kept (`[state] keep_runs`).
    pub keep_runs: u64,
    /// Rows of runs that finished longer ago than this are pruned too
    /// (`[state] keep_run_rows_days`).
    pub keep_days: Option<u64>,
}

/// `[state] keep_runs` when the config says nothing.
pub const DEFAULT_KEEP_RUNS: u64 = 200;

impl Default for History {
    fn default() -> Self {
        History {
            keep_runs: DEFAULT_KEEP_RUNS,
            keep_days: None,
        }
    }
}

/// The longest activation name.
pub const MAX_ACTIVATION_NAME: usize = 64;

/// Activation names appear in URLs, metric labels, file names of exports and logs, so they
/// are kept to a plain character set: 1 to 64 ASCII letters, digits, `_`, `-` and `.`,
/// starting with a letter or a digit.
pub fn check_activation_name(name: &str) -> Result<(), String> {
    let shown: String = name.chars().take(MAX_ACTIVATION_NAME).collect();
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if name.is_empty() || name.len() > MAX_ACTIVATION_NAME {
        return Err(format!(
            "activation name {shown:?} must be 1 to {MAX_ACTIVATION_NAME} characters long"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) || !name.chars().all(plain) {
        return Err(format!(
            "activation name {shown:?} may hold only ASCII letters, digits, `_`, `-` and `.`, \
             starting with a letter or a digit"
        ));
    }
    Ok(())
}

/// One config problem: the file, the key, and what would be valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// Everything wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{}", render_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    let mut s = format!(
        "{} has {} problem{}:",
        path.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        s.push_str(&format!("\n  - {}: {}", p.key, p.message));
    }
    s
}

/// Replaces `${VAR}` with the variable's value (`$$` is a literal `$`).
pub fn interpolate(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let Some(end) = r.find('}') else {
                return Err("`${` without a closing `}`".to_owned());
            };
            let name = &r[..end];
            let valid =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(format!(
                    "`${{{name}}}` is not a variable name (letters, digits, _)"
                ));
            }
            match env(name) {
                Some(v) => out.push_str(&v),
                None => return Err(format!("environment variable {name} is not set")),
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn one_byte(value: &Option<String>, default: u8, key: &str, problems: &mut Vec<Problem>) -> u8 {
    match value.as_deref() {
        None => default,
        Some("\\t") | Some("\t") => b'\t',
        Some(s) if s.len() == 1 => s.as_bytes()[0],
        Some(s) => {
            let examples = if key.ends_with("quote") {
                "\"\\\"\" or \"'\""
            } else {
                "\",\", \";\", \"|\" or \"\\t\" (a tab)"
            };
            let chars = s.chars().count();
            let given = if chars == 1 {
                format!("{s:?} is not ASCII")
            } else {
                format!("{:?} is {chars} characters", sync_core::message::excerpt(s))
            };
            problems.push(Problem {
                key: key.to_owned(),
                message: format!(
                    "{given}; it must be exactly one ASCII character, like {examples}"
                ),
            });
            default
        }
    }
}

impl Project {
    /// Reads, parses and validates a config file, reading environment variables for `${VAR}`.
    pub fn load(path: &Path) -> Result<Project, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Project::parse(path, &text, &|name| std::env::var(name).ok())
    }

    /// Parses and validates config text; `path` locates relative paths and names the file in
    /// messages; `env` resolves `${VAR}`.
    pub fn parse(
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Project, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let resolve = |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let mut problems = Vec::new();
        let interp = |key: String, s: &str, problems: &mut Vec<Problem>| match interpolate(s, env) {
            Ok(v) => Some(v),
            Err(message) => {
                problems.push(Problem { key, message });
                None
            }
        };

        let state_path = resolve(raw.state.path.as_deref().unwrap_or("attentive-sync.db"));
        let keep_runs = raw.state.keep_runs.unwrap_or(DEFAULT_KEEP_RUNS);
        if keep_runs == 0 {
            problems.push(Problem {
                key: "state.keep_runs".into(),
                message: "0 would prune the rows of the run that just ended; keep at least 1"
                    .into(),
            });
        }
        if raw
            .state
            .keep_run_rows_days
            .is_some_and(|d| !(1..=36_500).contains(&d))
        {
            problems.push(Problem {
                key: "state.keep_run_rows_days".into(),
                message: "must be between 1 and 36500 days (leave it out to keep rows whatever their age)"
                    .into(),
            });
        }
        let history = History {
            keep_runs: keep_runs.max(1),
            keep_days: raw.state.keep_run_rows_days.filter(|d| *d > 0),
        };

        let mut destinations = BTreeMap::new();
        for (name, d) in &raw.destinations {
            let key = format!("destinations.{name}");
            let api_key = match interpolate(&d.api_key, env) {
                Ok(k) if k.trim().is_empty() => Err(format!("{key}.api_key is empty")),
                Ok(k) => Ok(ApiKey::new(k)),
                Err(e) => Err(format!("{key}.api_key: {e}")),
            };
            let base_url = match &d.base_url {
                Some(u) => interp(format!("{key}.base_url"), u, &mut problems).unwrap_or_default(),
                None => "https://api.attentivemobile.com".to_owned(),
            };
            if !(base_url.starts_with("http://")
                || base_url.starts_with("https://")
                || base_url.is_empty())
            {
                problems.push(Problem {
                    key: format!("{key}.base_url"),
                    message: format!("{base_url:?} must start with http:// or https://"),
                });
            }
            if base_url.starts_with("http://") && !d.allow_insecure_http && !loopback_url(&base_url)
            {
                problems.push(Problem {
                    key: format!("{key}.base_url"),
                    message: format!(
                        "{base_url:?} is plain http on a host other than this machine: the API key would travel in clear; use https://, or set {key}.allow_insecure_http = true (a test double on a private network)"
                    ),
                });
            }
            let rps = d.requests_per_second.unwrap_or(150.0);
            if !(rps > 0.0 && rps <= 10_000.0) {
                problems.push(Problem {
                    key: format!("{key}.requests_per_second"),
                    message: format!("{rps} must be greater than 0 and at most 10000"),
                });
            }
            let existence_check = match d.existence_check.as_deref() {
                None | Some("graphql") => attentive_client::ExistenceStrategy::Graphql,
                Some("subscriptions") => attentive_client::ExistenceStrategy::Subscriptions,
                Some(other) => {
                    problems.push(Problem {
                        key: format!("{key}.existence_check"),
                        message: format!(
                            "{other:?} is not a strategy: use \"graphql\" or \"subscriptions\""
                        ),
                    });
                    attentive_client::ExistenceStrategy::Graphql
                }
            };
            let rate_limit_scope = match d.rate_limit_scope.as_deref() {
                None | Some("endpoint") => attentive_client::RateLimitScope::Endpoint,
                Some("key") => attentive_client::RateLimitScope::Key,
                Some(other) => {
                    problems.push(Problem {
                        key: format!("{key}.rate_limit_scope"),
                        message: format!("{other:?} is not a scope: use \"endpoint\" or \"key\""),
                    });
                    attentive_client::RateLimitScope::Endpoint
                }
            };
            let lookup_batch = d.lookup_batch.unwrap_or(25);
            if !(1..=100).contains(&lookup_batch) {
                problems.push(Problem {
                    key: format!("{key}.lookup_batch"),
                    message: format!("{lookup_batch} must be between 1 and 100"),
                });
            }
            let bulk_rps = d.bulk_requests_per_second.unwrap_or(100.0);
            if !(bulk_rps.is_finite() && bulk_rps > 0.0 && bulk_rps <= 10_000.0) {
                problems.push(Problem {
                    key: format!("{key}.bulk_requests_per_second"),
                    message: format!("{bulk_rps} must be above 0 and at most 10000"),
                });
            }
            let recheck_days = d.recheck_exists_after_days.unwrap_or(30);
            if !(1..=3650).contains(&recheck_days) {
                problems.push(Problem {
                    key: format!("{key}.recheck_exists_after_days"),
                    message: format!("{recheck_days} must be between 1 and 3650 days"),
                });
            }
            destinations.insert(
                name.clone(),
                Destination {
                    name: name.clone(),
                    api_key,
                    base_url,
                    requests_per_second: rps,
                    custom_only_via_v1: d.custom_only_via_v1,
                    existence_check,
                    rate_limit_scope,
                    lookup_batch: usize::try_from(lookup_batch.clamp(1, 100)).unwrap_or(25),
                    recheck_exists_after: std::time::Duration::from_secs(
                        recheck_days.clamp(1, 3650) * 86_400,
                    ),
                    bulk_requests_per_second: if bulk_rps.is_finite() && bulk_rps > 0.0 {
                        bulk_rps.min(10_000.0)
                    } else {
                        100.0
                    },
                },
            );
        }

        let mut models = BTreeMap::new();
        for (name, m) in &raw.models {
            let key = format!("models.{name}");
            // Which keys each source takes; anything else set is a mistake worth naming.
            let takes: &[&str] = match m.source.as_str() {
                "csv" => &["path", "delimiter", "quote"],
                "jsonl" | "parquet" => &["path"],
                "sqlite" => &["path", "query"],
                "postgres" => &["url", "query"],
                _ => &[],
            };
            let set = [
                ("path", m.path.is_some()),
                ("url", m.url.is_some()),
                ("query", m.query.is_some()),
                ("delimiter", m.delimiter.is_some()),
                ("quote", m.quote.is_some()),
            ];
            if !takes.is_empty() {
                for (field, is_set) in set {
                    if is_set && !takes.contains(&field) {
                        problems.push(Problem {
                            key: format!("{key}.{field}"),
                            message: format!(
                                "`{field}` does not apply to source = {:?}, which takes: {}",
                                m.source,
                                takes.join(", ")
                            ),
                        });
                    }
                }
            }
            let required =
                |field: &str, value: &Option<String>, problems: &mut Vec<Problem>| match value {
                    Some(v) => match interpolate(v, env) {
                        Ok(v) if !v.trim().is_empty() => Some(v),
                        Ok(_) => {
                            problems.push(Problem {
                                key: format!("{key}.{field}"),
                                message: "is empty".to_owned(),
                            });
                            None
                        }
                        Err(e) => {
                            problems.push(Problem {
                                key: format!("{key}.{field}"),
                                message: e,
                            });
                            None
                        }
                    },
                    None => {
                        problems.push(Problem {
                            key: format!("{key}.{field}"),
                            message: format!("a {} model needs `{field}`", m.source),
                        });
                        None
                    }
                };
            let spec = match m.source.as_str() {
                "csv" => required("path", &m.path, &mut problems).map(|p| ModelSpec::Csv {
                    path: resolve(&p),
                    delimiter: one_byte(
                        &m.delimiter,
                        b',',
                        &format!("{key}.delimiter"),
                        &mut problems,
                    ),
                    quote: one_byte(&m.quote, b'"', &format!("{key}.quote"), &mut problems),
                }),
                "jsonl" => required("path", &m.path, &mut problems)
                    .map(|p| ModelSpec::Jsonl { path: resolve(&p) }),
                "parquet" => required("path", &m.path, &mut problems)
                    .map(|p| ModelSpec::Parquet { path: resolve(&p) }),
                "sqlite" => {
                    let path = required("path", &m.path, &mut problems);
                    let query = required("query", &m.query, &mut problems);
                    path.zip(query).map(|(p, query)| ModelSpec::Sqlite {
                        path: resolve(&p),
                        query,
                    })
                }
                "postgres" => {
                    let url = required("url", &m.url, &mut problems);
                    let query = required("query", &m.query, &mut problems);
                    url.zip(query).map(|(url, query)| ModelSpec::Postgres {
                        url: DatabaseUrl(url),
                        query,
                    })
                }
                other => {
                    problems.push(Problem {
                        key: format!("{key}.source"),
                        message: format!(
                            "{other:?} is not a supported source; use \"csv\", \"jsonl\", \"parquet\", \"sqlite\" or \"postgres\""
                        ),
                    });
                    None
                }
            };
            if let Some(spec) = spec {
                models.insert(
                    name.clone(),
                    Model {
                        name: name.clone(),
                        spec,
                    },
                );
            }
        }

        let mut activations = BTreeMap::new();
        for (name, a) in &raw.activations {
            let key = format!("activations.{name}");
            if let Err(message) = check_activation_name(name) {
                problems.push(Problem {
                    key: format!("activations.{name:?}"),
                    message,
                });
            }
            if !raw.models.contains_key(&a.model) {
                problems.push(Problem {
                    key: format!("{key}.model"),
                    message: format!(
                        "no model named {:?}; models: {}",
                        a.model,
                        list(raw.models.keys())
                    ),
                });
            }
            if !raw.destinations.contains_key(&a.destination) {
                problems.push(Problem {
                    key: format!("{key}.destination"),
                    message: format!(
                        "no destination named {:?}; destinations: {}",
                        a.destination,
                        list(raw.destinations.keys())
                    ),
                });
            }
            let region = match &a.default_phone_region {
                None => None,
                Some(r) => match r.trim().to_uppercase().parse::<phonenumber::country::Id>() {
                    Ok(id) => Some(id),
                    Err(_) => {
                        problems.push(Problem {
                            key: format!("{key}.default_phone_region"),
                            message: format!("{r:?} is not an ISO 3166-1 alpha-2 region with phone numbers (like \"US\", \"GB\")"),
                        });
                        None
                    }
                },
            };
            let mut attributes = Vec::new();
            for (field, column) in &a.standard {
                match StandardField::from_name(field) {
                    Some(f) => attributes.push(AttributeMapping {
                        attribute: AttributeId::Standard(f),
                        column: column.clone(),
                        custom_type: None,
                    }),
                    None => problems.push(Problem {
                        key: format!("{key}.standard.{field}"),
                        message: format!("not a standard field; valid: {}", StandardField::names()),
                    }),
                }
            }
            for (attr, c) in &a.custom {
                if let Err(e) = check_custom_name(attr) {
                    problems.push(Problem {
                        key: format!("{key}.custom.{attr:?}"),
                        message: e.to_string(),
                    });
                    continue;
                }
                let (column, ty) = match c {
                    RawCustom::Column(c) => (c.clone(), None),
                    RawCustom::Typed(t) => {
                        let ty = match t.ty.as_deref() {
                            None => None,
                            Some(name) => match CustomType::from_name(name) {
                                Some(ty) => Some(ty),
                                None => {
                                    problems.push(Problem {
                                        key: format!("{key}.custom.{attr:?}.type"),
                                        message: format!(
                                            "{name:?} is not a custom type; valid: {}",
                                            CustomType::names()
                                        ),
                                    });
                                    continue;
                                }
                            },
                        };
                        (t.column.clone(), ty)
                    }
                };
                attributes.push(AttributeMapping {
                    attribute: AttributeId::Custom(attr.clone()),
                    column,
                    custom_type: ty,
                });
            }
            if a.on_null == OnNull::Clear {
                // The identifier's own field is refused by the mapping; the other one is a
                // second identifier Attentive cannot remove.
                for f in [StandardField::Email, StandardField::Phone] {
                    if a.standard.contains_key(f.name()) && f.name() != a.identifier.kind.as_str() {
                        problems.push(Problem {
                            key: format!("{key}.on_null"),
                            message: sync_core::mapping::clear_identifier_message(f),
                        });
                    }
                }
            }
            if a.standard.is_empty() && a.custom.is_empty() {
                problems.push(Problem {
                    key: key.clone(),
                    message: "maps no attributes; add [activations.NAME.standard] or [activations.NAME.custom] entries".to_owned(),
                });
            }
            let timezone = match &a.timezone {
                None => chrono_tz::Tz::UTC,
                Some(tz) => match crate::schedule::Schedule::parse_time_zone(tz) {
                    Ok(tz) => tz,
                    Err(e) => {
                        problems.push(Problem {
                            key: format!("{key}.timezone"),
                            message: e.to_string(),
                        });
                        chrono_tz::Tz::UTC
                    }
                },
            };
            let cron = match &a.schedule {
                None => None,
                Some(s) => match crate::schedule::Schedule::parse(s, timezone) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        problems.push(Problem {
                            key: format!("{key}.schedule"),
                            message: e.to_string(),
                        });
                        None
                    }
                },
            };
            let batch_size = a
                .bulk_batch_size
                .unwrap_or(attentive_client::wire::MAX_BULK_RECORDS as u64);
            if !(1..=attentive_client::wire::MAX_BULK_RECORDS as u64).contains(&batch_size) {
                problems.push(Problem {
                    key: format!("{key}.bulk_batch_size"),
                    message: format!(
                        "{batch_size} must be between 1 and {} (Attentive's most per bulk job)",
                        attentive_client::wire::MAX_BULK_RECORDS
                    ),
                });
            }
            let delivery = Delivery {
                mode: a.delivery,
                threshold: a.bulk_threshold.unwrap_or(DEFAULT_BULK_THRESHOLD),
                batch_size: usize::try_from(batch_size)
                    .unwrap_or(1)
                    .clamp(1, attentive_client::wire::MAX_BULK_RECORDS),
            };
            let segment = a.filter.as_deref().and_then(|text| {
                let is_sql = match raw.models.get(&a.model) {
                    Some(m) => matches!(m.source.as_str(), "sqlite" | "postgres"),
                    None => return None, // reported above
                };
                let problem = |message: String| Problem {
                    key: format!("{key}.filter"),
                    message,
                };
                if text.trim().is_empty() {
                    problems.push(problem("is empty; remove it to send the whole model".into()));
                    None
                } else if is_sql {
                    match sources::segment::check_condition(text) {
                        Ok(()) => Some(Segment::Sql(text.trim().to_owned())),
                        Err(e) => {
                            problems.push(problem(format!("`{}` {e}", text.trim())));
                            None
                        }
                    }
                } else {
                    match sync_core::segment::Filter::parse(text) {
                        Ok(f) => Some(Segment::Rows(f)),
                        Err(e) => {
                            problems.push(problem(format!(
                                "{e}\n  (file models take a predicate like tier = 'gold' and ltv > 100; see docs/CONFIG.md)"
                            )));
                            None
                        }
                    }
                }
            });
            activations.insert(
                name.clone(),
                Activation {
                    name: name.clone(),
                    model: a.model.clone(),
                    destination: a.destination.clone(),
                    mapping: Mapping {
                        identifier: Identifier {
                            column: a.identifier.column.clone(),
                            kind: a.identifier.kind,
                        },
                        attributes,
                        on_null: a.on_null,
                        duplicates: a.duplicates,
                        options: NormalizeOptions {
                            default_phone_region: region,
                            date_order: a.date_order,
                            today: None,
                        },
                    },
                    attach_secondary: a.attach_secondary,
                    delivery,
                    schedule: a.schedule.clone(),
                    segment,
                    timezone,
                    cron,
                    alerts: notify::alert_rules(&key, &a.alerts, &mut problems),
                },
            );
        }
        let names: Vec<&String> = raw.activations.keys().collect();
        let notifications =
            notify::notification_endpoints(&raw.notifications, &names, env, &mut problems);
        let activation_order = activation_order(text, &activations);
        if problems.is_empty() {
            Ok(Project {
                path: path.to_owned(),
                state_path,
                history,
                destinations,
                models,
                activations,
                activation_order,
                notifications,
            })
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    /// The activation named `name`, or an error listing the ones there are.
    pub fn activation(&self, name: &str) -> Result<&Activation, UnknownActivation> {
        self.activations.get(name).ok_or_else(|| UnknownActivation {
            name: name.to_owned(),
            config: self.path.clone(),
            known: list(self.activations.keys()),
        })
    }

    /// Problems that keep notifications from being sent (an unset URL or secret variable);
    /// events are still recorded, and delivered once the problem is fixed.
    pub fn notification_problems(&self) -> Vec<String> {
        self.notifications
            .values()
            .filter_map(NotificationEndpoint::problem)
            .collect()
    }

    /// Problems that do not stop planning but stop sending (e.g. an unset API key).
    pub fn delivery_problems(&self) -> Vec<String> {
        self.destinations
            .values()
            .filter_map(|d| d.api_key.as_ref().err().cloned())
            .collect()
    }
}

/// The activations in the order the file lists them: the position of each name's first
/// key under `[activations]` (the validated map is sorted by name).
fn activation_order(text: &str, activations: &BTreeMap<String, Activation>) -> Vec<String> {
    let mut positioned: Vec<(usize, String)> = Vec::new();
    if let Ok(doc) = toml::de::DeTable::parse(text) {
        for (key, value) in doc.get_ref().iter() {
            let toml::de::DeValue::Table(table) = value.get_ref() else {
                continue;
            };
            if &**key.get_ref() != "activations" {
                continue;
            }
            for (k, _) in table.iter() {
                let name: &str = k.get_ref();
                if activations.contains_key(name) {
                    positioned.push((k.span().start, name.to_owned()));
                }
            }
        }
    }
    positioned.sort();
    let mut order: Vec<String> = positioned.into_iter().map(|(_, n)| n).collect();
    // Whatever the file could not place keeps the sorted order, after the others.
    for name in activations.keys() {
        if !order.contains(name) {
            order.push(name.clone());
        }
    }
    order
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "(none)".to_owned()
    } else {
        v.join(", ")
    }
}

mod notify;

#[cfg(test)]
mod tests;
