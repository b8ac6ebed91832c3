//! The attentive-sync engine: field mapping, normalization and validation, fingerprints and
//! change planning, and the ports that adapters implement.
//!
//! **Architecture invariant**: this crate does no network or disk I/O and reads no
//! environment or clock (the day dates of birth are checked against is
//! [`mapping::NormalizeOptions::today`], given by the caller). Sources, the snapshot store and
//! the destination come in through the traits of [`ports`].
//!
//! `examples/own_adapters.rs` plans a model from a program's own [`ports::ModelSource`] and
//! delivers it to its own [`ports::Destination`] through this public API
//! (`cargo run -p attentive-sync-core --example own_adapters`).

#![deny(missing_docs)]

pub mod fingerprint;
pub mod mapping;
pub mod memory;
pub mod message;
pub mod normalize;
pub mod plan;
pub mod ports;
pub mod segment;
pub mod value;
