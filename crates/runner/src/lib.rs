//! Wiring shared by the `attentive-sync` CLI and server: the project config (raw TOML →
//! validated [`config::Project`]), opening the adapters it names, and the pipelines that run
//! the core planner over them.
//!
//! **Architecture invariant**: only this crate, `cli` and `server` read config files and
//! environment variables; the adapters and the core receive validated values.

pub mod config;
pub mod model;
pub mod plan;
pub mod run;
pub mod sample;
pub mod schedule;

pub use config::{ConfigError, Project};
