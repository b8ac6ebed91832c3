//! The Attentive API client of attentive-sync: the only crate that knows Attentive's wire
//! format.
//!
//! [`Client`] implements the engine's [`sync_core::ports::Destination`]: read-only existence
//! checks (batched GraphQL lookups, [`lookup`], with `GET /v1/subscriptions` through
//! [`ExistenceCheck`] where GraphQL cannot answer) and attribute
//! writes (`POST /v2/user/attributes`, or `POST /v1/attributes/custom` for custom-only writes
//! when configured). It never creates a contact on purpose and never sends a `subscriptions`
//! field: nothing here can opt anyone in.
//!
//! Every request goes through the [`Budget`] of its API key (a smooth rate limiter shared by
//! every client of the key in the process, plus an AIMD concurrency limit), and is retried on
//! 429, 5xx, timeouts and dropped connections with full-jitter exponential backoff, bounded
//! per request and by a retry budget per client.
//!
//! **Architecture invariant**: the API key never appears in a log line, an error or a
//! `Debug` output; only the `Authorization` header carries it.

mod budget;
mod client;
mod config;
mod error;
mod key;
pub mod lookup;
mod retry;
mod stats;
pub mod wire;

pub use budget::{Budget, Feedback, Permit, MAX_CONCURRENCY, MIN_START_CONCURRENCY};
pub use client::{BoxFuture, Client, ExistenceCheck, SubscriptionsLookup, USER_AGENT};
pub use config::{ClientConfig, RateLimitScope, RetryBudget, DEFAULT_BASE_URL};
pub use error::Error;
pub use key::ApiKey;
pub use lookup::ExistenceStrategy;
pub use retry::{FullJitter, FullJitterBackoff};
pub use stats::{ClientStats, StatsSnapshot, StatusClasses};
pub use wire::Me;
