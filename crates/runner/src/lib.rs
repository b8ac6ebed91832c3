//! Wiring shared by the `attentive-sync` CLI and server: the project config (raw TOML →
//! validated [`config::Project`]), opening the adapters it names, and the pipelines that run
//! the core planner over them.
//!
//! **Architecture invariant**: only this crate, `cli` and `server` read config files and
//! environment variables; the adapters and the core receive validated values.

pub mod alerts;
pub mod config;
pub mod model;
pub mod notify;
pub mod output;
pub mod plan;
pub mod run;
pub mod sample;
pub mod schedule;

pub use config::{ConfigError, Project};

/// An error with its sources, on one line (`outer: cause: root cause`), for reports and
/// API answers.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
