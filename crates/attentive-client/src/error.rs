//! The one error type of this crate.

use std::time::Duration;

/// What went wrong talking to Attentive.
///
/// [`Error::is_fatal`] tells what must stop a whole run (the key or the configuration is
/// wrong: every later request would fail the same way). The rest concern one request.
///
/// No variant ever holds the API key. Transport errors hold neither the key (it is only in a
/// header) nor the request URL (stripped, because lookups carry an email or phone in it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 401: the key is wrong, revoked or missing.
    #[error("the API key was rejected (401): check destinations.{destination}.api_key")]
    Unauthorized { destination: String },

    /// 403: the key works but its app lacks a permission.
    #[error(
        "the API key is not allowed to call {endpoint} (403): in Attentive (Integrations > \
         Custom apps), give the key's app this permission: {permission}; then run again"
    )]
    Forbidden {
        endpoint: String,
        permission: String,
    },

    /// 429. Retried internally; surfaces only where a caller asked for no retries.
    #[error("Attentive's rate limit was hit (429){}", retry_after_text(*.retry_after))]
    RateLimited { retry_after: Option<Duration> },

    /// A failure worth retrying (5xx, timeout, dropped connection).
    #[error("{reason}")]
    Transient { reason: String },

    /// The base URL answered nothing for many connection attempts in a row: the run stops
    /// instead of spending its retries on a destination that is not there.
    #[error(
        "cannot reach Attentive at {url}: {failures} connection attempts in a row failed \
         (last: {last}); check destinations.{destination}.base_url and the network"
    )]
    Unreachable {
        url: String,
        failures: u32,
        last: String,
        destination: String,
    },

    /// Still failing after every retry allowed (per request, or the client's retry budget).
    #[error("gave up after {attempts} attempt(s): {last}")]
    RetriesExhausted { attempts: u32, last: String },

    /// Attentive refused the request for its content (400 and other 4xx).
    #[error("Attentive refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },

    #[error("invalid base_url {url:?}: {reason}")]
    InvalidBaseUrl { url: String, reason: String },

    #[error("invalid client setting `{field}`: {reason}")]
    InvalidConfig { field: &'static str, reason: String },

    /// Building the HTTP client or a request failed (the URL is stripped from it).
    #[error("HTTP client error: {0}")]
    Http(#[source] reqwest::Error),
}

fn retry_after_text(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("; Retry-After {:.1}s", d.as_secs_f64()),
        None => String::new(),
    }
}

impl Error {
    /// True for what stops a run: every later request would fail the same way.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::Unauthorized { .. }
                | Error::Forbidden { .. }
                | Error::InvalidBaseUrl { .. }
                | Error::InvalidConfig { .. }
                | Error::Unreachable { .. }
                | Error::Http(_)
        )
    }

    /// True when the same request may succeed later (a `failed` row, sent again next run).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::RateLimited { .. } | Error::Transient { .. } | Error::RetriesExhausted { .. }
        )
    }
}
