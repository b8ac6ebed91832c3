//! Configuration of a simulator: API keys, rate limits, seed contacts, faults.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// A permission of an Attentive custom app (what a private-app key may do).
///
/// Only `Attributes` and `Subscriptions` gate endpoints of the simulator; the others exist so
/// that keys can be described as they are in Attentive's UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// "Custom Attributes" (`attributes:write`): v1 custom attributes, v2 user attributes, bulk.
    Attributes,
    /// "Subscribers" (`subscriptions:read`/`write`): subscription lookup, v2 user attributes,
    /// bulk, subscribe/unsubscribe.
    Subscriptions,
    /// "Identity" (`identity:write`).
    Identity,
    /// "Custom Events" (`events:write`).
    Events,
    /// "eCommerce" (`ecommerce:write`).
    Ecommerce,
    /// "Segments" (`segments:read`/`write`).
    Segments,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 6] = [
        Permission::Attributes,
        Permission::Subscriptions,
        Permission::Identity,
        Permission::Events,
        Permission::Ecommerce,
        Permission::Segments,
    ];

    /// The short name used in flags and JSON (`attributes`, `subscriptions`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Attributes => "attributes",
            Permission::Subscriptions => "subscriptions",
            Permission::Identity => "identity",
            Permission::Events => "events",
            Permission::Ecommerce => "ecommerce",
            Permission::Segments => "segments",
        }
    }

    /// The name of the permission in Attentive's custom-app UI.
    pub fn ui_name(self) -> &'static str {
        match self {
            Permission::Attributes => "Custom Attributes",
            Permission::Subscriptions => "Subscribers",
            Permission::Identity => "Identity",
            Permission::Events => "Custom Events",
            Permission::Ecommerce => "eCommerce",
            Permission::Segments => "Segments",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        Ok(match norm.as_str() {
            "attributes" | "custom_attributes" | "attributes:write" => Permission::Attributes,
            "subscriptions" | "subscribers" | "subscriptions:write" | "subscriptions:read" => {
                Permission::Subscriptions
            }
            "identity" => Permission::Identity,
            "events" | "custom_events" => Permission::Events,
            "ecommerce" => Permission::Ecommerce,
            "segments" => Permission::Segments,
            _ => {
                return Err(Error::Config(format!(
                    "unknown permission '{s}' (expected one of attributes, subscriptions, \
                     identity, events, ecommerce, segments, all)"
                )))
            }
        })
    }
}

/// An API key the simulator accepts, with the permissions of its custom app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimKey {
    /// The bearer token.
    pub key: String,
    /// What the key may do.
    pub permissions: BTreeSet<Permission>,
}

impl SimKey {
    /// A key with every permission.
    pub fn all(key: impl Into<String>) -> Self {
        SimKey {
            key: key.into(),
            permissions: Permission::ALL.into_iter().collect(),
        }
    }

    /// A key with the given permissions.
    pub fn with(key: impl Into<String>, permissions: impl IntoIterator<Item = Permission>) -> Self {
        SimKey {
            key: key.into(),
            permissions: permissions.into_iter().collect(),
        }
    }

    /// Parses `KEY` (every permission) or `KEY:perm,perm` (`all`, or names as in
    /// [`Permission::as_str`]; `KEY:` alone gives a key with no permission).
    pub fn parse_spec(spec: &str) -> Result<Self, Error> {
        let Some((key, perms)) = spec.split_once(':') else {
            if spec.is_empty() {
                return Err(Error::Config("empty API key".into()));
            }
            return Ok(SimKey::all(spec));
        };
        if key.is_empty() {
            return Err(Error::Config(format!("empty API key in '{spec}'")));
        }
        let mut permissions = BTreeSet::new();
        for p in perms.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if p.eq_ignore_ascii_case("all") {
                permissions.extend(Permission::ALL);
            } else {
                permissions.insert(p.parse()?);
            }
        }
        Ok(SimKey {
            key: key.to_owned(),
            permissions,
        })
    }
}

/// What `GET /v1/me` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompanyInfo {
    /// `applicationName`.
    pub application_name: String,
    /// `attentiveDomainName`.
    pub attentive_domain_name: String,
    /// `companyName`.
    pub company_name: String,
    /// `contactEmail`.
    pub contact_email: String,
    /// `companyId`.
    pub company_id: String,
}

impl Default for CompanyInfo {
    fn default() -> Self {
        CompanyInfo {
            application_name: "attentive-sim".into(),
            attentive_domain_name: "sim.attn.tv".into(),
            company_name: "Simulated Company".into(),
            contact_email: "sim@example.com".into(),
            company_id: "U2ltQ29tcGFueTE".into(),
        }
    }
}

/// How requests are counted against `rate_limit_per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitAlgorithm {
    /// Fixed one-second windows per key and limit class; a window opens at the first request
    /// after the previous one ended. At most `limit` requests per window.
    #[default]
    FixedWindow,
    /// A token bucket per key and limit class: capacity `limit`, refilled at `limit` per second.
    TokenBucket,
}

/// What a key's non-bulk rate limit counts together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitScope {
    /// Each endpoint (`GET /v1/subscriptions`, `POST /v2/user/attributes`, ...) has its own
    /// `rate_limit_per_second` window.
    #[default]
    Endpoint,
    /// All of a key's non-bulk endpoints share one window.
    Key,
}

/// A contact that exists before any request (a subscriber of the simulated account, or a
/// profile without subscriptions when `subscribed` is false).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedContact {
    /// Email address.
    pub email: Option<String>,
    /// Phone number, E.164.
    pub phone: Option<String>,
    /// `clientUserId`.
    pub client_user_id: Option<String>,
    /// Custom attributes (scalars); they fix the attribute types like any write.
    pub custom: BTreeMap<String, serde_json::Value>,
    /// Whether the contact has subscription records (default true). A profile without
    /// subscriptions answers 404 "Subscriptions not found" on `GET /v1/subscriptions`, as
    /// Attentive does, while GraphQL finds it and writes update it. Only applies when the
    /// seed creates the contact; writes never change it.
    pub subscribed: bool,
}

impl Default for SeedContact {
    fn default() -> Self {
        SeedContact {
            email: None,
            phone: None,
            client_user_id: None,
            custom: BTreeMap::new(),
            subscribed: true,
        }
    }
}

impl SeedContact {
    /// A contact known by its email.
    pub fn email(email: impl Into<String>) -> Self {
        SeedContact {
            email: Some(email.into()),
            ..SeedContact::default()
        }
    }

    /// A contact known by its phone (E.164).
    pub fn phone(phone: impl Into<String>) -> Self {
        SeedContact {
            phone: Some(phone.into()),
            ..SeedContact::default()
        }
    }

    /// A profile without subscriptions (`subscribed: false`) known by its email.
    pub fn unsubscribed_email(email: impl Into<String>) -> Self {
        SeedContact {
            subscribed: false,
            ..SeedContact::email(email)
        }
    }

    /// Loads contacts from a file: a JSON array of objects (`[{"email":..,"phone":..}]`) when
    /// the name ends in `.json` or the content starts with `[`, otherwise a CSV with a header
    /// naming `email` and/or `phone` (and optionally `clientUserId` and `subscribed`, which
    /// takes `true`/`false`, empty meaning true) columns; empty cells are absent values,
    /// other columns are ignored.
    pub fn load_file(path: impl AsRef<std::path::Path>) -> Result<Vec<SeedContact>, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Seed(format!("cannot read {}: {e}", path.display())))?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
            || text.trim_start().starts_with('[');
        if is_json {
            serde_json::from_str(&text)
                .map_err(|e| Error::Seed(format!("{}: invalid JSON contacts: {e}", path.display())))
        } else {
            Self::parse_csv(&text).map_err(|e| Error::Seed(format!("{}: {e}", path.display())))
        }
    }

    fn parse_csv(text: &str) -> Result<Vec<SeedContact>, String> {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let headers = reader.headers().map_err(|e| e.to_string())?.clone();
        let col = |names: &[&str]| {
            headers.iter().position(|h| {
                let h = h.to_ascii_lowercase().replace(['_', ' '], "");
                names.contains(&h.as_str())
            })
        };
        let email = col(&["email"]);
        let phone = col(&["phone"]);
        let client = col(&["clientuserid"]);
        let subscribed = col(&["subscribed"]);
        if email.is_none() && phone.is_none() {
            return Err("CSV header must name an email or a phone column".into());
        }
        let mut out = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(|e| format!("line {}: {e}", i + 2))?;
            let cell = |idx: Option<usize>| {
                idx.and_then(|i| record.get(i))
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            };
            let subscribed = match cell(subscribed) {
                None => true,
                Some(v) => match v.to_ascii_lowercase().as_str() {
                    "true" | "yes" | "1" => true,
                    "false" | "no" | "0" => false,
                    _ => {
                        return Err(format!(
                            "line {}: subscribed must be true or false, got '{v}'",
                            i + 2
                        ))
                    }
                },
            };
            out.push(SeedContact {
                email: cell(email),
                phone: cell(phone),
                client_user_id: cell(client),
                custom: BTreeMap::new(),
                subscribed,
            });
        }
        Ok(out)
    }
}

/// Periodic 429 bursts: for `duration_ms` out of every `period_ms` (counted from when the
/// faults were set), every API request is answered 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst429 {
    /// Length of the cycle.
    pub period_ms: u64,
    /// Length of the 429 part at the start of each cycle.
    pub duration_ms: u64,
}

/// Injected faults, applied to API routes (never to `/_sim/` routes) after authentication,
/// rate limiting and the permission check, and before the request is processed: a request
/// answered by a fault is not applied.
///
/// Every API request draws the same four random numbers from a generator seeded with
/// `seed` (jitter, spike, drop, error), so a given sequence of requests sees the same faults on
/// every run. Setting faults (config, [`crate::SimHandle::set_faults`], `PUT /_sim/faults`)
/// restarts the generator and the burst cycle.
///
/// The `bulk_*` fields shape bulk jobs. Creating a job draws two more numbers from that
/// generator (whether it fails, and the seed of the job's own generator, which gives one
/// number per record when the job is processed), so record outcomes do not depend on when the
/// job happens to be processed. When each one is decided:
/// - whole-job failure (`bulk_fail_next_jobs`, `bulk_job_failure_rate`): when the job is
///   created;
/// - per-record outcomes (`bulk_record_errors`, `bulk_record_error_rate`,
///   `bulk_record_reject_rate`): when the job is processed, with the faults in force then;
/// - `bulk_unknown_status_polls`: at each poll, with the value in force then;
/// - `bulk_truncate_results`: at each download of the result file, with the value in force
///   then (clearing it lets a retried download get the whole file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Probability per HTTP status of answering that status instead of processing, e.g.
    /// `{500: 0.2, 503: 0.05}`. The sum must be at most 1.
    pub error_rates: BTreeMap<u16, f64>,
    /// Fixed latency added to every API response.
    pub latency_ms: u64,
    /// Uniform random extra latency in `0..=jitter_ms`.
    pub jitter_ms: u64,
    /// Probability of a latency spike.
    pub spike_probability: f64,
    /// Extra latency of a spike.
    pub spike_ms: u64,
    /// Probability of closing the connection without a response.
    pub drop_rate: f64,
    /// Periodic 429 bursts.
    pub burst_429: Option<Burst429>,
    /// Probability that a bulk job ends `FAILED` (nothing of it is applied). Drawn when the
    /// job is created.
    pub bulk_job_failure_rate: f64,
    /// The next N bulk jobs created end `FAILED` (nothing of them applied), whatever
    /// `bulk_job_failure_rate`; counts down as jobs are created (so [`crate::SimHandle::faults`]
    /// shows how many are left).
    pub bulk_fail_next_jobs: u32,
    /// Probability per bulk record that its result line is `{"status": 500, "message":
    /// "Internal error"}` and the record is not applied. With `bulk_record_reject_rate`, at
    /// most 1 in all.
    pub bulk_record_error_rate: f64,
    /// Probability per bulk record that its result line is a 400 (`"Invalid value for
    /// attribute '...'"`) and the record is not applied.
    pub bulk_record_reject_rate: f64,
    /// Deterministic per-record outcomes: a bulk record whose `identifiers.email` (as sent,
    /// compared case-insensitively) or `identifiers.phone` (as sent, exactly) is a key gets a
    /// result line with that status (400..=599) and is not applied. Keys are emails (with an
    /// `@`) or phones (starting with `+`). Checked before the random rates and the record's
    /// own validation; the email wins when both match.
    pub bulk_record_errors: BTreeMap<String, u16>,
    /// The first N polls (`GET /v2/bulk/job/{id}`) of each job answer status
    /// `"NEEDS_REVIEW"` with no result URL, whatever the job's state; later polls answer
    /// normally. The job itself runs on meanwhile.
    pub bulk_unknown_status_polls: u32,
    /// Result files drop the second half of their lines and end with a cut-off line (not
    /// valid JSON, no final newline), as a download cut short. The records of the dropped
    /// lines were applied all the same.
    pub bulk_truncate_results: bool,
    /// Seed of the fault generator.
    pub seed: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_rates: BTreeMap::new(),
            latency_ms: 0,
            jitter_ms: 0,
            spike_probability: 0.0,
            spike_ms: 0,
            drop_rate: 0.0,
            burst_429: None,
            bulk_job_failure_rate: 0.0,
            bulk_fail_next_jobs: 0,
            bulk_record_error_rate: 0.0,
            bulk_record_reject_rate: 0.0,
            bulk_record_errors: BTreeMap::new(),
            bulk_unknown_status_polls: 0,
            bulk_truncate_results: false,
            seed: 0,
        }
    }
}

impl Faults {
    /// No fault at all.
    pub fn none() -> Self {
        Faults::default()
    }

    /// Checks probabilities (0..=1; `error_rates` summing to at most 1, and the two bulk
    /// record rates too), statuses (400..=599), the keys of `bulk_record_errors` (an email
    /// with `@` or a phone starting with `+`, no email twice in different cases) and the
    /// burst cycle.
    pub fn validate(&self) -> Result<(), Error> {
        let prob = |name: &str, p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(Error::Config(format!(
                    "{name} must be between 0 and 1, got {p}"
                )))
            }
        };
        let mut sum = 0.0;
        for (&status, &p) in &self.error_rates {
            if !(400..=599).contains(&status) {
                return Err(Error::Config(format!(
                    "error_rates: status {status} is not an error status (400..=599)"
                )));
            }
            prob(&format!("error_rates[{status}]"), p)?;
            sum += p;
        }
        if sum > 1.0 + 1e-9 {
            return Err(Error::Config(format!(
                "error_rates add up to {sum}, more than 1"
            )));
        }
        prob("spike_probability", self.spike_probability)?;
        prob("drop_rate", self.drop_rate)?;
        prob("bulk_job_failure_rate", self.bulk_job_failure_rate)?;
        prob("bulk_record_error_rate", self.bulk_record_error_rate)?;
        prob("bulk_record_reject_rate", self.bulk_record_reject_rate)?;
        let record_sum = self.bulk_record_error_rate + self.bulk_record_reject_rate;
        if record_sum > 1.0 + 1e-9 {
            return Err(Error::Config(format!(
                "bulk_record_error_rate and bulk_record_reject_rate add up to {record_sum}, \
                 more than 1"
            )));
        }
        let mut emails = BTreeSet::new();
        for (id, &status) in &self.bulk_record_errors {
            if !(400..=599).contains(&status) {
                return Err(Error::Config(format!(
                    "bulk_record_errors['{id}']: status {status} is not an error status \
                     (400..=599)"
                )));
            }
            if id.contains('@') {
                if !emails.insert(id.to_lowercase()) {
                    return Err(Error::Config(format!(
                        "bulk_record_errors: email '{id}' is given twice (emails match \
                         case-insensitively)"
                    )));
                }
            } else if !id.starts_with('+') {
                return Err(Error::Config(format!(
                    "bulk_record_errors: key '{id}' is neither an email (with '@') nor a \
                     phone (starting with '+')"
                )));
            }
        }
        if let Some(b) = self.burst_429 {
            if b.period_ms == 0 || b.duration_ms > b.period_ms {
                return Err(Error::Config(
                    "burst_429 needs period_ms > 0 and duration_ms <= period_ms".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Which field of `GET /v2/bulk/job/{id}` carries the result file's URL. Attentive's v2 spec
/// names it `url`; community code reads `resultUrl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkResultField {
    /// `url` only (default, as the spec says).
    #[default]
    Url,
    /// `resultUrl` only (no `url` key at all).
    ResultUrl,
    /// Both `url` and `resultUrl`, with the same value.
    Both,
}

impl BulkResultField {
    /// The JSON field names it answers.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            BulkResultField::Url => &["url"],
            BulkResultField::ResultUrl => &["resultUrl"],
            BulkResultField::Both => &["url", "resultUrl"],
        }
    }
}

impl FromStr for BulkResultField {
    type Err = Error;

    /// `url`, `result-url` (or `result_url`, `resultUrl`) or `both`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace(['-', '_'], "");
        match norm.as_str() {
            "url" => Ok(BulkResultField::Url),
            "resulturl" => Ok(BulkResultField::ResultUrl),
            "both" => Ok(BulkResultField::Both),
            _ => Err(Error::Config(format!(
                "unknown bulk result field '{s}' (expected url, result-url or both)"
            ))),
        }
    }
}

/// Everything a simulator starts with.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Address to bind; the default `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// Accepted API keys. Default: `sim-key` with every permission.
    pub keys: Vec<SimKey>,
    /// What `GET /v1/me` answers at the start (switchable at runtime with
    /// [`crate::SimHandle::set_company`] or `PUT /_sim/company`).
    pub company: CompanyInfo,
    /// Requests per second per key on non-bulk endpoints (default 150; 0 = unlimited).
    pub rate_limit_per_second: u32,
    /// Requests per second per key on `/v2/bulk/...` (default 100; 0 = unlimited).
    pub bulk_rate_limit_per_second: u32,
    /// How the rate limit counts.
    pub rate_limit_algorithm: RateLimitAlgorithm,
    /// What `rate_limit_per_second` applies to: each endpoint of a key on its own (default,
    /// as Attentive's rate-limit page now says) or all of a key's non-bulk endpoints together
    /// (as an older revision read).
    pub rate_limit_scope: RateLimitScope,
    /// When set, 429 responses carry `Retry-After: <secs>` (Attentive documents none).
    pub retry_after_secs: Option<u64>,
    /// Contacts that exist from the start (and again after a reset).
    pub contacts: Vec<SeedContact>,
    /// Injected faults.
    pub faults: Faults,
    /// Whether `POST /v1/attributes/custom` creates a contact for an unknown email/phone
    /// (Attentive's behaviour is undocumented; default true). When false it answers 404.
    pub v1_creates_unknown_users: bool,
    /// How long a bulk job takes before it is processed (default 0: done at the first poll).
    pub bulk_processing_delay_ms: u64,
    /// Which field of `GET /v2/bulk/job/{id}` carries the result URL: `url` (default),
    /// `resultUrl`, or both.
    pub bulk_result_url_field: BulkResultField,
    /// The request log keeps at most this many entries (oldest dropped first).
    pub max_logged_requests: usize,
    /// Finish every request that was received, even when its client closes the connection
    /// before the answer (killed, timed out), as a real server does: it is applied and
    /// logged, and the answer goes nowhere. Default false: hyper drops the handler of a
    /// connection that closed, so a request still in its injected latency is neither applied
    /// nor logged.
    pub apply_after_disconnect: bool,
    /// Whether `POST /v1/graphql` exists (default true). When false it answers 404, as for
    /// an account without the beta GraphQL API.
    pub graphql_enabled: bool,
    /// Most `user` fields (aliases) one GraphQL query may select (default 100; 0 = no
    /// limit). A larger query gets a `QUERY_COMPLEXITY` error and no data.
    pub graphql_max_aliases: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            keys: vec![SimKey::all(DEFAULT_KEY)],
            company: CompanyInfo::default(),
            rate_limit_per_second: 150,
            bulk_rate_limit_per_second: 100,
            rate_limit_algorithm: RateLimitAlgorithm::default(),
            rate_limit_scope: RateLimitScope::default(),
            retry_after_secs: None,
            contacts: Vec::new(),
            faults: Faults::default(),
            v1_creates_unknown_users: true,
            bulk_processing_delay_ms: 0,
            bulk_result_url_field: BulkResultField::Url,
            max_logged_requests: 100_000,
            apply_after_disconnect: false,
            graphql_enabled: true,
            graphql_max_aliases: 100,
        }
    }
}

/// The key of [`SimConfig::default`], with every permission.
pub const DEFAULT_KEY: &str = "sim-key";

impl SimConfig {
    /// Checks the faults and the keys (non-empty, unique).
    pub fn validate(&self) -> Result<(), Error> {
        self.faults.validate()?;
        let mut seen = BTreeSet::new();
        for k in &self.keys {
            if k.key.is_empty() {
                return Err(Error::Config("empty API key".into()));
            }
            if !seen.insert(k.key.as_str()) {
                return Err(Error::Config("duplicate API key".into()));
            }
        }
        Ok(())
    }
}
