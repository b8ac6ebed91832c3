//! The attentive-sync engine: field mapping, normalization and validation, fingerprints and
//! change planning, and the ports that adapters implement.
//!
//! **Architecture invariant**: this crate does no network or disk I/O and reads no
//! environment or clock except `today` for date-of-birth checks when none is given. Sources,
//! the snapshot store and the destination come in through the traits of [`ports`].

pub mod fingerprint;
pub mod mapping;
pub mod memory;
pub mod message;
pub mod normalize;
pub mod plan;
pub mod ports;
pub mod segment;
pub mod value;

pub use mapping::{AttributeId, BoundMapping, IdentifierKind, Mapping, StandardField};
pub use plan::{PlanCounts, Planner, RowOutcome, RowPlan, SnapshotIndex};
pub use value::{Canonical, SourceRow, Value};
