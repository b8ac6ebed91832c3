//! How a [`crate::Client`] talks to one Attentive account.

use std::time::Duration;

use crate::key::ApiKey;
use crate::lookup::ExistenceStrategy;

/// Attentive's production API.
pub const DEFAULT_BASE_URL: &str = "https://api.attentivemobile.com";

/// Settings of one [`crate::Client`]. [`ClientConfig::new`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Default [`DEFAULT_BASE_URL`]. May carry a path prefix (`http://127.0.0.1:8080/attentive`).
    pub base_url: String,
    pub api_key: ApiKey,
    /// The key's request budget, shared by every client of the process that uses the same key
    /// (see [`crate::Budget::shared`]). Default 150, Attentive's limit for attribute writes.
    pub requests_per_second: f64,
    /// Whole-request timeout (connect, send, response). Default 30 s.
    pub timeout: Duration,
    /// Retries of one request after a 429, a 5xx, a timeout or a dropped connection.
    /// Default 6.
    pub max_retries: u32,
    /// First backoff ceiling; attempt `n` waits a random time in `[0, retry_base × 2ⁿ]`
    /// (full jitter), capped by `retry_max_delay`. Default 500 ms.
    pub retry_base: Duration,
    /// Upper bound of one backoff, and of a `Retry-After` the client is willing to honour.
    /// Default 30 s.
    pub retry_max_delay: Duration,
    /// How many retries a client may spend in total, so that a dead API is not retried forever.
    pub retry_budget: RetryBudget,
    /// Send writes that carry only custom attributes to `POST /v1/attributes/custom` instead of
    /// `POST /v2/user/attributes`. Default false.
    pub custom_only_v1: bool,
    /// The destination's name in the config file (`[destinations.<name>]`), used only to make
    /// error messages point at the key to fix. Default `attentive`.
    pub destination: String,
    /// Connection failures in a row (refused, DNS, TLS, connect timeout: no answer at all)
    /// after which the base URL is declared unreachable: every request of this client then
    /// fails at once with [`crate::Error::Unreachable`], which stops a run. Any answer, whatever
    /// its status, resets the count. Default 20 (with 16 contacts in flight, one failed round
    /// of them and its retries).
    pub unreachable_after: u32,
    /// What Attentive's rate limit counts together: each endpoint (default, as its
    /// rate-limit page says) or the whole key. See the client's budgets.
    pub rate_limit_scope: RateLimitScope,
    /// How existence is checked before a contact's first write. Default
    /// [`ExistenceStrategy::Graphql`].
    pub existence_check: ExistenceStrategy,
    /// Contacts per GraphQL lookup to start with (halved when Attentive finds a batch too
    /// large). Default [`crate::lookup::DEFAULT_LOOKUP_BATCH`] (25).
    pub lookup_batch: usize,
    /// Requests per second on each bulk route (`POST /v2/bulk/user/attributes`, `GET
    /// /v2/bulk/job/{id}`), budgets of their own. Default 100, Attentive's published limit.
    pub bulk_requests_per_second: f64,
    /// Records per bulk job (1..=256). Default 256, the most Attentive takes.
    pub bulk_batch_size: usize,
}

impl ClientConfig {
    /// The defaults, with `api_key`.
    pub fn new(api_key: ApiKey) -> ClientConfig {
        ClientConfig {
            base_url: DEFAULT_BASE_URL.to_owned(),
            api_key,
            requests_per_second: 150.0,
            timeout: Duration::from_secs(30),
            max_retries: 6,
            retry_base: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(30),
            retry_budget: RetryBudget::default(),
            custom_only_v1: false,
            destination: "attentive".to_owned(),
            unreachable_after: 20,
            rate_limit_scope: RateLimitScope::default(),
            existence_check: ExistenceStrategy::default(),
            lookup_batch: crate::lookup::DEFAULT_LOOKUP_BATCH,
            bulk_requests_per_second: 100.0,
            bulk_batch_size: crate::wire::MAX_BULK_RECORDS,
        }
    }
}

/// What one `requests_per_second` budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateLimitScope {
    /// One budget per endpoint (`GET /v1/subscriptions`, `POST /v2/user/attributes`, ...).
    #[default]
    Endpoint,
    /// One budget for every endpoint of the key.
    Key,
}

/// The total number of retries one [`crate::Client`] (and its clones) may make.
///
/// A client normally serves one run, so this is a budget per run. When it is spent, a request
/// that would be retried fails at once (`RetriesExhausted`, a `failed` row that the next run
/// sends again) instead of waiting through its backoff.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryBudget {
    /// Retries may add at most `ratio` × the first attempts made so far, plus `min` (which
    /// lets a short run retry a few times). Default `ratio = 0.2, min = 100`: a healthy API
    /// costs nothing, a dead one costs at most 20 % more requests than it would without
    /// retries.
    Ratio { ratio: f64, min: u32 },
    /// At most this many retries in all.
    Count(u64),
    /// Only `max_retries` per request limits retries.
    Unlimited,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::Ratio {
            ratio: 0.2,
            min: 100,
        }
    }
}
