//! Throughput checks, ignored by default. Run them in release mode:
//!
//! ```sh
//! cargo test -p state-store --release --test bench -- --ignored --nocapture
//! ```
//!
//! `STATE_BENCH_CONTACTS` sets the number of contacts (default 2,000,000).

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

use std::time::Instant;

use state_store::StateStore;
use sync_core::mapping::{AttributeMapping, DuplicatePolicy, Identifier, NormalizeOptions, OnNull};
use sync_core::plan::{AttributeChange, ContactChange, Refresh, SnapshotIndex};
use sync_core::ports::{ContactRef, SnapshotStore};
use sync_core::{
    mapping::AttributeId, mapping::IdentifierKind, mapping::Mapping, mapping::StandardField,
    value::Canonical,
};

fn contacts() -> usize {
    std::env::var("STATE_BENCH_CONTACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000)
}

fn key(i: usize) -> String {
    format!("customer.{i:08}@example.com")
}

fn contact(i: usize) -> ContactRef {
    ContactRef {
        kind: IdentifierKind::Email,
        key: key(i),
    }
}

fn key_hash(i: usize) -> u64 {
    sync_core::fingerprint::key_hash(IdentifierKind::Email, &key(i))
}

#[test]
#[ignore = "benchmark; run in release mode"]
fn load_index_throughput() {
    let n = contacts();
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(&dir.path().join("state.db")).unwrap();
    let start = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(100_000) {
        let refreshes: Vec<Refresh> = chunk
            .iter()
            .map(|&i| Refresh {
                contact: contact(i),
                key_hash: key_hash(i),
                row_fingerprint: (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 2 | 1,
            })
            .collect();
        store.apply_refreshes("bench", 1, &refreshes).unwrap();
    }
    let write = start.elapsed();
    println!(
        "apply_refreshes: {n} contacts in {write:?} ({:.0}/s)",
        n as f64 / write.as_secs_f64()
    );
    drop(store);

    let store = StateStore::open(&dir.path().join("state.db")).unwrap();
    for pass in 0..3 {
        let start = Instant::now();
        let mut index = SnapshotIndex::default();
        store.load_index("bench", &mut index).unwrap();
        let took = start.elapsed();
        assert_eq!(index.len(), n);
        println!(
            "load_index pass {pass}: {n} contacts in {took:?} ({:.0}/s)",
            n as f64 / took.as_secs_f64()
        );
    }
}

#[test]
#[ignore = "benchmark; run in release mode"]
fn apply_changes_throughput() {
    let n = 100_000;
    let m = Mapping {
        identifier: Identifier {
            column: "email".into(),
            kind: IdentifierKind::Email,
        },
        attributes: vec![
            AttributeMapping {
                attribute: AttributeId::Standard(StandardField::FirstName),
                column: "first_name".into(),
                custom_type: None,
            },
            AttributeMapping {
                attribute: AttributeId::Custom("Loyalty Tier".into()),
                column: "tier".into(),
                custom_type: None,
            },
        ],
        on_null: OnNull::Omit,
        duplicates: DuplicatePolicy::Reject,
        options: NormalizeOptions::default(),
    }
    .bind(&["email", "first_name", "tier"].map(String::from))
    .unwrap();
    let changes: Vec<ContactChange> = (0..n)
        .rev()
        .map(|i| ContactChange {
            contact: contact(i),
            key_hash: key_hash(i),
            row_fingerprint: i as u64 + 1,
            new_contact: true,
            changes: (0..2)
                .map(|a| AttributeChange {
                    attribute: a,
                    value: Some(Canonical::Text(format!("value {i} {a}"))),
                    fingerprint: (i * 2 + a) as u64,
                    previous: None,
                })
                .collect(),
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(&dir.path().join("state.db")).unwrap();
    for pass in 0..2 {
        let start = Instant::now();
        store.apply_changes("bench", pass, &m, &changes).unwrap();
        let took = start.elapsed();
        println!(
            "apply_changes pass {pass} ({}): {n} contacts × 2 attributes in {took:?} ({:.0} contacts/s)",
            if pass == 0 { "inserts" } else { "updates" },
            n as f64 / took.as_secs_f64()
        );
    }
    assert_eq!(store.contact_count("bench").unwrap(), n as u64);
}
