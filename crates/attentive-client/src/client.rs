//! The client: one Attentive account, behind the key's shared budget, with retries.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use backon::BackoffBuilder;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use sync_core::ports::{
    BulkJobState, BulkRecordResult, BulkSubmission, ContactRef, ContactWrite, Destination,
    Existence, Lookup, WriteOutcome,
};
use tokio::time::Instant;
use url::Url;

use crate::budget::{Budget, Feedback};
use crate::config::{ClientConfig, RateLimitScope};
use crate::error::Error;
use crate::lookup::{self, AliasAnswer, BatchAnswer, ExistenceStrategy, GraphqlState};
use crate::retry::{FullJitter, RetryTokens};
use crate::stats::{ClientStats, StatsSnapshot};
use crate::wire::{self, Me, Method, Request, Response};

/// The `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("attentive-sync/", env!("CARGO_PKG_VERSION"));

/// Response bodies are read up to this many bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// A bulk job's result file is read up to this many bytes (256 records with their requests
/// take well under 1 MiB).
const MAX_RESULT_FILE_BYTES: usize = 64 * 1024 * 1024;

/// Attempts at downloading a result file before the job is left for a later poll.
const RESULT_FILE_ATTEMPTS: u32 = 3;

/// The request budgets of a client: one per endpoint ([`RateLimitScope::Endpoint`], as
/// Attentive's rate-limit page says: 150 requests/s per endpoint), or the key's one
/// ([`RateLimitScope::Key`]). Each is shared with every client of the key in the process
/// ([`Budget::shared_for`]) and reads its own `x-ratelimit-*` headers.
///
/// If the account turns out to limit the key as a whole (a 429 on an endpoint that sent well
/// under its rate in a second in which all endpoints together sent the rate or more), the
/// client moves to the key's one budget for the rest of its life, and says so once: 429s stay
/// rare under either reading of the limit.
struct Budgets {
    key: crate::key::ApiKey,
    rate: f64,
    /// Each bulk route's rate (bulk routes always have budgets of their own).
    bulk_rate: f64,
    per_endpoint: std::sync::atomic::AtomicBool,
    key_wide: Arc<Budget>,
    endpoints: Mutex<std::collections::HashMap<&'static str, Arc<Budget>>>,
    /// Requests sent per endpoint in the current one-second window.
    window: Mutex<(Instant, std::collections::HashMap<&'static str, u64>)>,
}

impl Budgets {
    fn new(config: &ClientConfig) -> Budgets {
        Budgets {
            key: config.api_key.clone(),
            rate: config.requests_per_second,
            bulk_rate: config.bulk_requests_per_second,
            per_endpoint: std::sync::atomic::AtomicBool::new(
                config.rate_limit_scope == RateLimitScope::Endpoint,
            ),
            key_wide: Budget::shared(&config.api_key, config.requests_per_second),
            endpoints: Mutex::default(),
            window: Mutex::new((Instant::now(), Default::default())),
        }
    }

    fn for_endpoint(&self, endpoint: &'static str) -> Arc<Budget> {
        if endpoint.contains(" /v2/bulk/") {
            // Attentive limits its bulk routes apart (100/s): per route, or one budget for
            // them all when the key is limited as a whole.
            let name = if self.per_endpoint.load(Ordering::Relaxed) {
                endpoint
            } else {
                "bulk routes"
            };
            let mut map = self
                .endpoints
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            return map
                .entry(name)
                .or_insert_with(|| Budget::shared_for(&self.key, name, self.bulk_rate))
                .clone();
        }
        if !self.per_endpoint.load(Ordering::Relaxed) {
            return self.key_wide.clone();
        }
        let mut map = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(endpoint)
            .or_insert_with(|| Budget::shared_for(&self.key, endpoint, self.rate))
            .clone()
    }

    /// Counts a request sent to `endpoint` (bulk routes are limited apart: not counted).
    fn sent(&self, endpoint: &'static str) {
        if endpoint.contains(" /v2/bulk/") {
            return;
        }
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if w.0.elapsed() >= Duration::from_secs(1) {
            *w = (Instant::now(), Default::default());
        }
        *w.1.entry(endpoint).or_default() += 1;
    }

    /// A 429 on `endpoint`: moves to the key's one budget when the limit looks per key.
    fn rate_limited(&self, endpoint: &'static str) {
        if !self.per_endpoint.load(Ordering::Relaxed) || endpoint.contains(" /v2/bulk/") {
            return;
        }
        let (own, all) = {
            let w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
            (
                w.1.get(endpoint).copied().unwrap_or(0),
                w.1.values().sum::<u64>(),
            )
        };
        #[allow(clippy::cast_precision_loss)]
        let per_key = (all as f64) >= self.rate * 0.9 && (own as f64) < self.rate * 0.8;
        if per_key && self.per_endpoint.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                endpoint,
                sent_to_it = own,
                sent_in_all = all,
                "Attentive's rate limit looks shared by every endpoint of the key (429 after {own} requests to {endpoint} and {all} in all within a second): one budget for the whole key from now on (rate_limit_scope = \"key\" says so from the start)"
            );
        }
    }
}

/// One-contact checks made at once for the contacts of a batch that GraphQL could not answer.
const REST_FALLBACK_CONCURRENCY: usize = 4;

/// A boxed future, as [`ExistenceCheck`] returns (which keeps that trait object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How [`Client`] checks that a contact exists before its first write. Read-only: it must
/// never create a contact or a subscription. [`SubscriptionsLookup`] is the default; set
/// another with [`Client::with_existence_check`].
pub trait ExistenceCheck: Send + Sync + fmt::Debug {
    /// `Ok(Exists | NotFound)`; `Err` as [`Client::send`] returns it, or
    /// [`Error::Rejected`] for an answer that says neither.
    fn check<'a>(
        &'a self,
        client: &'a Client,
        contact: &'a ContactRef,
    ) -> BoxFuture<'a, Result<Existence, Error>>;
}

/// `GET /v1/subscriptions?email=..|phone=..`: 200 ⇒ exists, 404 ⇒ not found. Needs the
/// "Subscribers" (read) permission. A profile with no subscription at all is reported as not
/// found (Attentive has no documented "profile exists" lookup).
#[derive(Debug, Clone, Copy, Default)]
pub struct SubscriptionsLookup;

impl ExistenceCheck for SubscriptionsLookup {
    fn check<'a>(
        &'a self,
        client: &'a Client,
        contact: &'a ContactRef,
    ) -> BoxFuture<'a, Result<Existence, Error>> {
        Box::pin(async move {
            let r = client.send(&wire::existence_request(contact)).await?;
            match r.status {
                200..=299 => Ok(Existence::Exists),
                404 => Ok(Existence::NotFound),
                status => Err(Error::Rejected {
                    status,
                    message: r.message(),
                }),
            }
        })
    }
}

/// A client of one Attentive account. Cheap to clone: clones share the connection pool,
/// the stats and the retry budget; every client of the same key shares the request
/// [`Budget`].
///
/// A client is meant to serve one run: its [`ClientStats`] and retry budget count from its
/// creation.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    existence: Arc<dyn ExistenceCheck>,
    /// The batched GraphQL lookup's batch size and whether it was given up.
    graphql: Arc<GraphqlState>,
}

struct Inner {
    http: reqwest::Client,
    /// The base URL without a trailing `/`.
    base: String,
    config: ClientConfig,
    budgets: Budgets,
    stats: ClientStats,
    retry_tokens: RetryTokens,
    backoff: FullJitter,
    /// Connection failures since the last answer (the unreachable-destination breaker).
    connect_failures: AtomicU32,
    /// Set once the breaker trips: every later request fails at once with this.
    unreachable: OnceLock<(u32, String)>,
    /// Set when a one-contact existence check got an answer that stops the run: no other is
    /// started.
    lookups_stopped: OnceLock<String>,
    retry_log: RetryLog,
    /// A client without the key, for result files stored at another origin.
    plain_http: OnceLock<reqwest::Client>,
}

/// Retries are logged in summary, not one line each: the first retry of a client at once,
/// then at most one line per [`RetryLog::EVERY`] with how many there were since.
#[derive(Debug, Default)]
struct RetryLog(Mutex<RetryLogState>);

#[derive(Debug, Default)]
struct RetryLogState {
    last_line: Option<Instant>,
    since: u64,
}

impl RetryLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn note(&self, budget: &str, endpoint: &str, delay: Duration, reason: &str) {
        let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        s.since += 1;
        let due = s.last_line.is_none_or(|t| t.elapsed() >= Self::EVERY);
        if due {
            let retries = std::mem::take(&mut s.since);
            s.last_line = Some(Instant::now());
            drop(s);
            tracing::warn!(
                budget,
                endpoint,
                retries,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                %reason,
                "retrying Attentive requests ({retries} since the last such line; latest reason shown)"
            );
        } else {
            tracing::debug!(budget, endpoint, %reason, "retrying Attentive request");
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base)
            .field(
                "key",
                &format_args!("<redacted {}>", self.inner.budgets.key_wide.label()),
            )
            .field("requests_per_second", &self.inner.budgets.key_wide.rate())
            .field("custom_only_v1", &self.inner.config.custom_only_v1)
            .field("existence", &self.existence)
            .finish_non_exhaustive()
    }
}

/// What one attempt came to.
enum Attempt {
    Done(Response),
    Fatal(Error),
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
}

impl Client {
    /// Checks the settings and builds the HTTP client (rustls, pooled connections).
    pub fn new(config: ClientConfig) -> Result<Client, Error> {
        let base = check_base_url(&config.base_url)?;
        if !(config.requests_per_second.is_finite() && config.requests_per_second > 0.0) {
            return Err(Error::InvalidConfig {
                field: "requests_per_second",
                reason: format!("must be above 0, not {}", config.requests_per_second),
            });
        }
        if config.timeout.is_zero() {
            return Err(Error::InvalidConfig {
                field: "timeout",
                reason: "must be above 0".into(),
            });
        }
        if config.api_key.expose().trim().is_empty() {
            return Err(Error::InvalidConfig {
                field: "api_key",
                reason: "is empty".into(),
            });
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", config.api_key.expose()))
            .map_err(|_| Error::InvalidConfig {
                field: "api_key",
                reason: "contains characters that cannot be sent in an HTTP header".into(),
            })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(USER_AGENT)
            .default_headers(headers)
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Http(e.without_url()))?;
        let budgets = Budgets::new(&config);
        let budget = budgets.key_wide.clone();
        let graphql = Arc::new(GraphqlState::new(
            config.lookup_batch,
            config.existence_check,
        ));
        let backoff = FullJitter {
            base: config.retry_base,
            max: config.retry_max_delay,
            max_retries: config.max_retries,
        };
        tracing::debug!(
            budget = %budget.label(),
            base_url = %base,
            requests_per_second = budget.rate(),
            "attentive client ready"
        );
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                retry_tokens: RetryTokens::new(config.retry_budget),
                config,
                budgets,
                stats: ClientStats::default(),
                backoff,
                connect_failures: AtomicU32::new(0),
                unreachable: OnceLock::new(),
                lookups_stopped: OnceLock::new(),
                retry_log: RetryLog::default(),
                plain_http: OnceLock::new(),
            }),
            existence: Arc::new(SubscriptionsLookup),
            graphql,
        })
    }

    /// Replaces the one-contact existence check ([`SubscriptionsLookup`] by default), which
    /// then answers every lookup (the GraphQL lookup is off).
    pub fn with_existence_check(mut self, check: impl ExistenceCheck + 'static) -> Client {
        self.existence = Arc::new(check);
        self.graphql = Arc::new(GraphqlState::new(1, ExistenceStrategy::Subscriptions));
        self
    }

    /// Why this client stopped using GraphQL lookups, if it did.
    pub fn graphql_given_up(&self) -> Option<String> {
        self.graphql.reason()
    }

    /// Looks contacts up, in order: through GraphQL in batches (see [`crate::lookup`]), and
    /// through the one-contact check for those GraphQL cannot answer (or all of them, under
    /// [`ExistenceStrategy::Subscriptions`] or once GraphQL was given up).
    pub async fn lookup_many(&self, contacts: &[ContactRef]) -> Vec<Result<Lookup, Error>> {
        let mut out: Vec<Option<Result<Lookup, Error>>> = std::iter::repeat_with(|| None)
            .take(contacts.len())
            .collect();
        let mut rest: Vec<usize> = Vec::new();
        let mut queue: std::collections::VecDeque<std::ops::Range<usize>> = Default::default();
        let size = self.graphql.batch();
        let mut start = 0;
        while start < contacts.len() {
            let end = (start + size).min(contacts.len());
            queue.push_back(start..end);
            start = end;
        }
        while let Some(range) = queue.pop_front() {
            if !self.graphql.on() {
                rest.extend(range);
                continue;
            }
            let batch = &contacts[range.clone()];
            let answer = match self.send(&lookup::graphql_lookup_request(batch)).await {
                Ok(r) => lookup::read_lookup_answer(&r, batch.len()),
                Err(e @ Error::Forbidden { .. }) => BatchAnswer::Unusable(e.to_string()),
                Err(e) => {
                    // Transient (retries spent) or fatal: the same for every contact of it.
                    let reason = e.to_string();
                    let mut first = Some(e);
                    for i in range {
                        out[i] = Some(Err(first.take().unwrap_or_else(|| Error::Transient {
                            reason: reason.clone(),
                        })));
                    }
                    continue;
                }
            };
            match answer {
                BatchAnswer::Aliases(answers) => {
                    for (i, a) in range.zip(answers) {
                        match a {
                            AliasAnswer::Found(l) => out[i] = Some(Ok(l)),
                            AliasAnswer::Unknown(why) => {
                                tracing::debug!(%why, "GraphQL could not tell; checking through REST");
                                rest.push(i);
                            }
                        }
                    }
                }
                BatchAnswer::TooLarge(why) if range.len() > 1 => {
                    let half = self.graphql.halve(range.len());
                    let mut pieces = Vec::new();
                    let mut s = range.start;
                    while s < range.end {
                        let e = (s + half).min(range.end);
                        pieces.push(s..e);
                        s = e;
                    }
                    tracing::debug!(%why, "GraphQL lookup too large");
                    for p in pieces.into_iter().rev() {
                        queue.push_front(p);
                    }
                }
                BatchAnswer::TooLarge(why) | BatchAnswer::Unusable(why) => {
                    self.graphql.give_up(why);
                    rest.extend(range);
                }
            }
        }
        // The one-contact check: one first, then a few at a time (the key's budget paces
        // them), none started after an error that stops the run, here or in another lookup
        // of this client (a 403: they would all get it).
        let (first, others) = rest.split_at(rest.len().min(1));
        let chunks = std::iter::once(first).chain(others.chunks(REST_FALLBACK_CONCURRENCY));
        for chunk in chunks {
            let stopped = self.inner.lookups_stopped.get().cloned();
            if let Some(why) = &stopped {
                for &i in chunk {
                    out[i] = Some(Err(Error::Transient {
                        reason: format!("not checked: {why}"),
                    }));
                }
                continue;
            }
            let mut checks = tokio::task::JoinSet::new();
            for &i in chunk {
                let (client, contact) = (self.clone(), contacts[i].clone());
                checks.spawn(async move {
                    let r = client.existence.check(&client, &contact).await;
                    (i, r.map(Lookup::existence))
                });
            }
            while let Some(done) = checks.join_next().await {
                match done {
                    Ok((i, r)) => {
                        if let Err(e) = &r {
                            if e.is_fatal() {
                                let _ = self.inner.lookups_stopped.set(e.to_string());
                            }
                        }
                        out[i] = Some(r);
                    }
                    Err(e) => tracing::error!(error = %e, "an existence check task failed"),
                }
            }
        }
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Error::Transient {
                        reason: "the existence check did not finish".into(),
                    })
                })
            })
            .collect()
    }

    /// The settings this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The key's own budget, shared by every client of the key: what every request goes
    /// through under [`RateLimitScope::Key`] (see [`Client::budget_for`]).
    pub fn budget(&self) -> &Arc<Budget> {
        &self.inner.budgets.key_wide
    }

    /// The budget a request to `endpoint` (`POST /v2/user/attributes`) goes through now.
    pub fn budget_for(&self, endpoint: &'static str) -> Arc<Budget> {
        self.inner.budgets.for_endpoint(endpoint)
    }

    /// The live counters.
    pub fn stats(&self) -> &ClientStats {
        &self.inner.stats
    }

    /// A copy of the counters now.
    pub fn stats_snapshot(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// `GET /v1/me`: who the key belongs to. Checks the key (401), not its permissions.
    pub async fn me(&self) -> Result<Me, Error> {
        read_me(&self.send(&Request::get(wire::PATH_ME)).await?)
    }

    /// [`Client::me`] as a run asks it before its first request: with few retries (it is one
    /// request, and it holds up the run), and a base URL that answers nothing at all is
    /// [`Error::Unreachable`] at once.
    async fn who_am_i(&self) -> Result<Me, Error> {
        let request = Request::get(wire::PATH_ME);
        let r = match self.send_retrying(&request, 2).await {
            Ok(r) => r,
            // No answer at all: do not wait through every retry to say so.
            Err(Error::RetriesExhausted { attempts, last })
                if self.inner.connect_failures.load(Ordering::Relaxed) >= attempts =>
            {
                return Err(Error::Unreachable {
                    url: self.inner.base.clone(),
                    failures: attempts,
                    last,
                    destination: self.inner.config.destination.clone(),
                })
            }
            // Answers that may pass (503, 429): the usual retries.
            Err(Error::RetriesExhausted { .. }) => self.send(&request).await?,
            Err(e) => return Err(e),
        };
        read_me(&r)
    }

    /// Sends one contact's changes (what [`Destination::write`] does).
    pub async fn write_contact(&self, write: &ContactWrite) -> Result<WriteOutcome, Error> {
        if write.attributes.is_empty() {
            return Ok(WriteOutcome::Acknowledged); // nothing to change, nothing to send
        }
        let request = match wire::write_request(write, self.inner.config.custom_only_v1) {
            Ok(r) => r,
            Err(e) => {
                return Ok(WriteOutcome::Rejected {
                    message: e.to_string(),
                })
            }
        };
        match self.send(&request).await {
            Ok(r) if r.is_success() => Ok(WriteOutcome::Acknowledged),
            Ok(r) if r.status == 404 => Ok(WriteOutcome::NotFound),
            Ok(r) if r.status == 400 => Ok(WriteOutcome::Rejected {
                message: r.message(),
            }),
            Ok(r) if (400..500).contains(&r.status) => Ok(WriteOutcome::Rejected {
                message: format!("HTTP {}: {}", r.status, r.message()),
            }),
            Ok(r) => Ok(WriteOutcome::Failed {
                reason: unexpected(&r, &request),
            }),
            Err(e) if e.is_fatal() => Err(e),
            Err(e) => Ok(WriteOutcome::Failed {
                reason: e.to_string(),
            }),
        }
    }

    /// Submits writes as one bulk job (what [`Destination::submit_bulk`] does): the same
    /// record [`Client::write_contact`] would send for each, under the bulk route's budget.
    pub async fn submit_bulk_job(&self, writes: &[ContactWrite]) -> Result<BulkSubmission, Error> {
        let (body, refused) = wire::bulk_body(writes);
        let refused: Vec<(usize, String)> = refused
            .into_iter()
            .map(|(i, e)| (i, e.to_string()))
            .collect();
        if refused.len() == writes.len() {
            // Nothing to submit: each write, sent on its own, is refused the same way.
            return Ok(BulkSubmission::Rejected {
                message: "no record of the job can be sent".to_owned(),
            });
        }
        let request = Request::post_json(wire::PATH_BULK_ATTRIBUTES, body);
        match self.send(&request).await {
            Ok(r) if r.is_success() => Ok(match wire::bulk_job_id(&r.body) {
                Some(job_id) => BulkSubmission::Submitted { job_id, refused },
                None => BulkSubmission::Failed {
                    reason: format!(
                        "Attentive accepted the bulk job (HTTP {}) but gave no batchJobId to follow it: {}",
                        r.status,
                        r.message()
                    ),
                },
            }),
            Ok(r) if (400..500).contains(&r.status) => Ok(BulkSubmission::Rejected {
                message: format!("HTTP {}: {}", r.status, r.message()),
            }),
            Ok(r) => Ok(BulkSubmission::Failed {
                reason: unexpected(&r, &request),
            }),
            Err(e) if e.is_fatal() => Err(e),
            Err(e) => Ok(BulkSubmission::Failed {
                reason: e.to_string(),
            }),
        }
    }

    /// `GET /v2/bulk/job/{id}` (what [`Destination::bulk_job`] does).
    pub async fn bulk_job_state(&self, job_id: &str) -> Result<BulkJobState, Error> {
        let mut request = Request::get(wire::PATH_BULK_JOB);
        request.segment = Some(job_id.to_owned());
        let r = self.send(&request).await?;
        if r.is_success() {
            Ok(wire::bulk_job_state(&r.body))
        } else if r.status == 404 {
            Ok(BulkJobState::Unknown {
                message: r.message(),
            })
        } else {
            Err(Error::Rejected {
                status: r.status,
                message: r.message(),
            })
        }
    }

    /// Downloads a bulk job's result file and reads it line by line (what
    /// [`Destination::bulk_results`] does). The key goes only to the API's own origin; a
    /// file elsewhere (a storage link) must be `https` and is fetched without it.
    pub async fn bulk_result_file(&self, url: &str) -> Result<Vec<BulkRecordResult>, Error> {
        let inner = &*self.inner;
        let target = Url::parse(url).map_err(|e| Error::Transient {
            reason: format!("the bulk job's result file link is not a URL: {e}"),
        })?;
        let base = Url::parse(&inner.base).map_err(|e| Error::InvalidBaseUrl {
            url: inner.base.clone(),
            reason: e.to_string(),
        })?;
        let same_origin = target.origin() == base.origin();
        if !same_origin && target.scheme() != "https" {
            return Err(Error::Transient {
                reason: format!(
                    "the bulk job's result file is at a plain-http address of another host ({}); it is not read",
                    target.host_str().unwrap_or("?")
                ),
            });
        }
        let http = if same_origin {
            inner.http.clone()
        } else {
            inner
                .plain_http
                .get_or_init(|| {
                    reqwest::Client::builder()
                        .use_rustls_tls()
                        .user_agent(USER_AGENT)
                        .timeout(inner.config.timeout.max(Duration::from_secs(60)))
                        .redirect(reqwest::redirect::Policy::limited(3))
                        .build()
                        .unwrap_or_default()
                })
                .clone()
        };
        let mut last = String::new();
        for attempt in 0..RESULT_FILE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(inner.config.retry_base * 2u32.pow(attempt)).await;
            }
            inner.stats.request_sent();
            let resp = match http.get(target.clone()).send().await {
                Ok(r) => r,
                Err(e) => {
                    last = error_chain(&e.without_url());
                    continue;
                }
            };
            let status = resp.status().as_u16();
            inner.stats.response(status);
            match status {
                200..=299 => {}
                401 if same_origin => {
                    return Err(Error::Unauthorized {
                        destination: inner.config.destination.clone(),
                    })
                }
                408 | 429 | 500..=599 => {
                    last = format!("HTTP {status}");
                    continue;
                }
                _ => {
                    return Err(Error::Rejected {
                        status,
                        message: "reading the bulk job's result file".to_owned(),
                    })
                }
            }
            let body = match read_capped_to(resp, MAX_RESULT_FILE_BYTES).await {
                Ok(b) => b,
                Err(e) => {
                    last = error_chain(&e.without_url());
                    continue;
                }
            };
            let text = String::from_utf8_lossy(&body);
            return Ok(text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(wire::bulk_result_line)
                .collect());
        }
        Err(Error::Transient {
            reason: format!("reading the bulk job's result file failed: {last}"),
        })
    }

    /// Sends `request` through the key's budget, retrying 429, 408, 5xx, timeouts and dropped
    /// connections with backoff (honouring `Retry-After`).
    ///
    /// `Ok` for every other answer, whatever its status (2xx, 3xx, 400, 404...): the caller
    /// decides what it means. `Err(Unauthorized | Forbidden)` for 401/403, which stop a run;
    /// `Err(RetriesExhausted)` when the retries allowed are spent.
    pub async fn send(&self, request: &Request) -> Result<Response, Error> {
        self.send_retrying(request, self.inner.config.max_retries)
            .await
    }

    /// [`Client::send`] with at most `max_retries` retries.
    async fn send_retrying(&self, request: &Request, max_retries: u32) -> Result<Response, Error> {
        let url = self.url(request)?;
        let inner = &*self.inner;
        inner.retry_tokens.deposit();
        let mut backoff = FullJitter {
            max_retries: max_retries.min(inner.config.max_retries),
            ..inner.backoff
        }
        .build();
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            let (reason, retry_after) = match self.attempt(request, &url, attempts).await {
                Attempt::Done(r) => return Ok(r),
                Attempt::Fatal(e) => return Err(e),
                Attempt::Retry {
                    reason,
                    retry_after,
                } => (reason, retry_after),
            };
            let Some(jittered) = backoff.next() else {
                return Err(Error::RetriesExhausted {
                    attempts,
                    last: reason,
                });
            };
            let delay = match retry_after {
                Some(ra) if ra > inner.config.retry_max_delay => {
                    return Err(Error::RetriesExhausted {
                        attempts,
                        last: format!(
                            "{reason}; Retry-After {:.0}s is longer than retry_max_delay",
                            ra.as_secs_f64()
                        ),
                    });
                }
                Some(ra) => ra,
                None => jittered,
            };
            if !inner.retry_tokens.try_withdraw() {
                return Err(Error::RetriesExhausted {
                    attempts,
                    last: format!("{reason} (this run's retry budget is spent)"),
                });
            }
            inner.stats.retry();
            inner.stats.throttled(delay);
            inner
                .retry_log
                .note(inner.budgets.key_wide.label(), request.path, delay, &reason);
            tokio::time::sleep(delay).await;
        }
    }

    /// The breaker's error, once it has tripped.
    fn unreachable_error(&self) -> Option<Error> {
        let inner = &*self.inner;
        inner
            .unreachable
            .get()
            .map(|(failures, last)| Error::Unreachable {
                url: inner.base.clone(),
                failures: *failures,
                last: last.clone(),
                destination: inner.config.destination.clone(),
            })
    }

    async fn attempt(&self, request: &Request, url: &Url, attempt: u32) -> Attempt {
        let inner = &*self.inner;
        if let Some(e) = self.unreachable_error() {
            return Attempt::Fatal(e);
        }
        let endpoint = request.endpoint();
        let budget = inner.budgets.for_endpoint(endpoint);
        let permit = budget.permit().await;
        inner.budgets.sent(endpoint);
        if let Some(e) = self.unreachable_error() {
            return Attempt::Fatal(e); // tripped while this request waited for its turn
        }
        inner.stats.throttled(permit.throttled());
        let builder = match request.method {
            Method::Get => inner.http.get(url.clone()),
            Method::Post => inner
                .http
                .post(url.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(request.body.clone().unwrap_or_default()),
        };
        inner.stats.request_sent();
        let started = Instant::now();
        let result = async {
            let resp = builder.send().await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = read_capped(resp).await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        }
        .await;
        let latency = started.elapsed();
        let (status, headers, body) = match result {
            Ok(r) => r,
            Err(e) => {
                let e = e.without_url();
                if e.is_builder() {
                    permit.finish(Feedback::Neutral);
                    return Attempt::Fatal(Error::Http(e));
                }
                permit.finish(Feedback::Overloaded);
                if e.is_connect() {
                    let failures = inner.connect_failures.fetch_add(1, Ordering::Relaxed) + 1;
                    if failures >= inner.config.unreachable_after.max(1) {
                        let _ = inner.unreachable.set((failures, error_chain(&e)));
                        if let Some(e) = self.unreachable_error() {
                            return Attempt::Fatal(e);
                        }
                    }
                }
                let reason = if e.is_timeout() {
                    inner.stats.timeout();
                    format!(
                        "{}: no answer within {:.1}s",
                        request.path,
                        inner.config.timeout.as_secs_f64()
                    )
                } else {
                    inner.stats.dropped_connection();
                    format!("{}: connection failed: {}", request.path, error_chain(&e))
                };
                tracing::debug!(
                    budget = %budget.label(),
                    endpoint = request.path,
                    attempt,
                    %reason,
                    "attentive request failed"
                );
                return Attempt::Retry {
                    reason,
                    retry_after: None,
                };
            }
        };
        inner.stats.response(status);
        inner.connect_failures.store(0, Ordering::Relaxed);
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let limit = header("x-ratelimit-limit").and_then(wire::parse_rate_header);
        let remaining = header("x-ratelimit-remaining").and_then(wire::parse_rate_header);
        if budget.observe_rate_headers(limit, remaining) {
            tracing::debug!(
                budget = %budget.label(),
                limit,
                remaining,
                "rate limit nearly spent: pausing until the next second"
            );
        }
        tracing::debug!(
            budget = %budget.label(),
            endpoint = request.path,
            attempt,
            status,
            latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            "attentive answered"
        );
        let retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(wire::parse_retry_after);
        match status {
            429 => {
                permit.finish(Feedback::Overloaded);
                inner.budgets.rate_limited(endpoint);
                match retry_after {
                    Some(ra) => {
                        budget.pause_until(Instant::now() + ra.min(inner.config.retry_max_delay))
                    }
                    None => budget.pause_until_next_second(),
                }
                Attempt::Retry {
                    reason: format!("{}: rate limited (429)", request.path),
                    retry_after,
                }
            }
            408 | 500..=599 => {
                permit.finish(Feedback::Overloaded);
                Attempt::Retry {
                    reason: format!(
                        "{}: HTTP {status}: {}",
                        request.path,
                        wire::error_message(&body)
                    ),
                    retry_after,
                }
            }
            401 => {
                permit.finish(Feedback::Neutral);
                Attempt::Fatal(Error::Unauthorized {
                    destination: inner.config.destination.clone(),
                })
            }
            403 => {
                permit.finish(Feedback::Neutral);
                let method = match request.method {
                    Method::Get => "GET",
                    Method::Post => "POST",
                };
                Attempt::Fatal(Error::Forbidden {
                    endpoint: format!("{method} {}", request.path),
                    permission: wire::permission_for(request.path).to_owned(),
                })
            }
            _ => {
                permit.finish(Feedback::Answered { latency });
                Attempt::Done(Response { status, body })
            }
        }
    }

    fn url(&self, request: &Request) -> Result<Url, Error> {
        let mut url = Url::parse(&format!("{}{}", self.inner.base, request.path)).map_err(|e| {
            Error::InvalidBaseUrl {
                url: self.inner.base.clone(),
                reason: e.to_string(),
            }
        })?;
        if let Some(segment) = &request.segment {
            if let Ok(mut path) = url.path_segments_mut() {
                path.pop_if_empty().push(segment);
            }
        }
        if !request.query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(request.query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(url)
    }
}

impl Destination for Client {
    type Error = Error;

    async fn check_exists(&self, contact: &ContactRef) -> Result<Existence, Error> {
        let mut answers = self.lookup_many(std::slice::from_ref(contact)).await;
        answers
            .pop()
            .unwrap_or_else(|| {
                Err(Error::Transient {
                    reason: "no answer".into(),
                })
            })
            .map(|l| l.existence)
    }

    async fn check_many(&self, contacts: &[ContactRef]) -> Vec<Result<Lookup, Error>> {
        self.lookup_many(contacts).await
    }

    async fn account(&self) -> Result<Option<sync_core::ports::Account>, Error> {
        let me = self.who_am_i().await?;
        Ok(me.company_id.map(|id| sync_core::ports::Account {
            id,
            name: me.company_name,
        }))
    }

    fn lookup_batch(&self) -> usize {
        if self.graphql.on() {
            self.graphql.batch()
        } else {
            1
        }
    }

    async fn write(&self, write: &ContactWrite) -> Result<WriteOutcome, Error> {
        self.write_contact(write).await
    }

    fn stops_run(&self, error: &Error) -> bool {
        error.is_fatal()
    }

    fn bulk_limit(&self) -> usize {
        self.inner
            .config
            .bulk_batch_size
            .clamp(1, wire::MAX_BULK_RECORDS)
    }

    async fn submit_bulk(&self, writes: &[ContactWrite]) -> Result<BulkSubmission, Error> {
        self.submit_bulk_job(writes).await
    }

    async fn bulk_job(&self, job_id: &str) -> Result<BulkJobState, Error> {
        self.bulk_job_state(job_id).await
    }

    async fn bulk_results(
        &self,
        _job_id: &str,
        result_url: &str,
    ) -> Result<Vec<BulkRecordResult>, Error> {
        self.bulk_result_file(result_url).await
    }

    fn stats(&self) -> sync_core::ports::DeliveryStats {
        let s = self.stats_snapshot();
        sync_core::ports::DeliveryStats {
            requests: s.requests_sent,
            retries: s.retries,
            rate_limited: s.rate_limited,
            throttled_ms: u64::try_from(s.throttled.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Why an answer that is neither success nor refusal (3xx, an unretried 5xx) fails a write.
fn unexpected(r: &Response, request: &Request) -> String {
    format!(
        "unexpected HTTP {} from {}: {}",
        r.status,
        request.path,
        r.message()
    )
}

/// The account in an answer to `GET /v1/me`.
fn read_me(r: &Response) -> Result<Me, Error> {
    if r.is_success() {
        Ok(Me::parse(&r.body))
    } else {
        Err(Error::Rejected {
            status: r.status,
            message: r.message(),
        })
    }
}

/// Checks and normalizes a base URL: http(s), a host, no credentials, query or fragment.
fn check_base_url(raw: &str) -> Result<String, Error> {
    let bad = |reason: &str| Error::InvalidBaseUrl {
        url: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(raw.trim()).map_err(|e| Error::InvalidBaseUrl {
        url: raw.to_owned(),
        reason: e.to_string(),
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        // Never echo credentials back.
        return Err(Error::InvalidBaseUrl {
            url: "<redacted: it contains credentials>".into(),
            reason: "credentials in the URL are not allowed; the API key is sent as a header"
                .into(),
        });
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(
            "the scheme must be https (or http for a local simulator)",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it must not have a query or a fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

async fn read_capped(resp: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    read_capped_to(resp, MAX_BODY_BYTES).await
}

/// Reads a body up to `max` bytes (the rest is dropped).
async fn read_capped_to(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = max - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= max {
            break;
        }
    }
    Ok(out)
}

/// An error with its sources, `a: b: c`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_per_endpoint_until_the_limit_proves_per_key() {
        let mut config = ClientConfig::new(crate::ApiKey::new("key-budgets-unit".into()));
        config.requests_per_second = 10.0;
        let b = Budgets::new(&config);
        let (write, check) = ("POST /v2/user/attributes", "GET /v1/subscriptions");
        let w = b.for_endpoint(write);
        assert!(!Arc::ptr_eq(&w, &b.for_endpoint(check)));
        assert!(Arc::ptr_eq(&w, &b.for_endpoint(write)));
        // A 429 on an endpoint that sent its whole rate: its own limit; nothing changes.
        for _ in 0..10 {
            b.sent(write);
        }
        b.rate_limited(write);
        assert!(!Arc::ptr_eq(&b.for_endpoint(check), &b.key_wide));
        // A 429 on one that sent nothing while the key sent the rate: the limit is per key.
        b.rate_limited(check);
        assert!(Arc::ptr_eq(&b.for_endpoint(check), &b.key_wide));
        assert!(Arc::ptr_eq(&b.for_endpoint(write), &b.key_wide));

        config.rate_limit_scope = RateLimitScope::Key;
        let k = Budgets::new(&config);
        assert!(Arc::ptr_eq(&k.for_endpoint(write), &k.for_endpoint(check)));
    }

    #[test]
    fn base_urls_are_checked() {
        assert_eq!(
            check_base_url("https://api.attentivemobile.com/").unwrap(),
            "https://api.attentivemobile.com"
        );
        assert_eq!(
            check_base_url("http://127.0.0.1:8080/sim/").unwrap(),
            "http://127.0.0.1:8080/sim"
        );
        for bad in [
            "ftp://x",
            "not a url",
            "https://api.attentivemobile.com?x=1",
            "https://api.attentivemobile.com/#f",
        ] {
            assert!(
                matches!(check_base_url(bad), Err(Error::InvalidBaseUrl { .. })),
                "{bad}"
            );
        }
        let e = check_base_url("https://user:hunter2@api.attentivemobile.com").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
