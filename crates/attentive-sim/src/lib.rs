//! A local simulator of Attentive's API, for everything an attribute sync uses.
//!
//! It parses requests on its own (plain `serde_json::Value`, no shared types with the real
//! client) and behaves like Attentive where it matters to a sync: bearer auth and permissions,
//! `GET /v1/subscriptions` as a read-only existence check (404 for a profile without
//! subscriptions), batched `POST /v1/graphql` user lookups with stable ids, a switchable
//! account (`GET /v1/me`), `POST /v2/user/attributes` creating
//! unknown contacts (as Attentive does), custom attribute types fixed by the first value,
//! v1 custom attributes, bulk jobs with a `.jsonl` result file (the result URL's field
//! configurable, see [`BulkResultField`]), per-key rate limits with `x-ratelimit-*` headers,
//! and reproducible fault injection (errors, latency, dropped connections, 429 bursts; for bulk
//! jobs, per-record 4xx/5xx lines, unknown `NEEDS_REVIEW` statuses, truncated result files and
//! failed jobs, see [`Faults`]). What an attribute sync must never do (a `subscriptions` field,
//! `null` values, subscription endpoints, GraphQL mutations) is answered as Attentive would and recorded as a
//! [`Violation`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), attentive_sim::Error> {
//! use attentive_sim::{SeedContact, SimConfig, Simulator};
//!
//! let sim = Simulator::start(SimConfig {
//!     contacts: vec![SeedContact::email("ann@example.com")],
//!     ..SimConfig::default()
//! })
//! .await?;
//! // point the client at sim.base_url() with key attentive_sim::DEFAULT_KEY, then:
//! assert_eq!(sim.contact_count(), 1);
//! assert!(sim.violations().is_empty());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! See `docs/SIMULATOR.md` for the endpoints and the fault model.

mod config;
mod graphql;
mod model;
mod server;
mod state;
mod validate;

pub use config::{
    BulkResultField, Burst429, CompanyInfo, Faults, Permission, RateLimitAlgorithm, RateLimitScope,
    SeedContact, SimConfig, SimKey, DEFAULT_KEY,
};
pub use model::{
    BulkJobInfo, BulkJobStatus, Contact, ContactOrigin, Counters, CustomAttribute, CustomType,
    RequestRecord, Violation, ViolationKind,
};
pub use server::{RunningSim, Simulator};
pub use state::SimHandle;

/// Errors of the simulator's Rust API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound.
    #[error("cannot bind {0}: {1}")]
    Bind(std::net::SocketAddr, #[source] std::io::Error),
    /// Another I/O failure (runtime, thread, socket).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Invalid configuration (keys, permissions, faults).
    #[error("invalid simulator configuration: {0}")]
    Config(String),
    /// Invalid seed contacts.
    #[error("invalid seed contacts: {0}")]
    Seed(String),
}
