//! End-to-end tests: the real `attentive-sync` binary, run as a user would.
//!
//! One integration-test binary for the workspace (fast to link, one place to look).

#![allow(unreachable_pub, clippy::unwrap_used)]

mod support;

mod alerts;
mod bad_input;
mod browser;
mod bulk;
mod identity;
mod migration;
mod plan;
mod reliability;
mod run;
mod server;
mod sources;
