use std::time::Instant;
use state_store::StateStore;
use sync_core::mapping::{AttributeMapping, DuplicatePolicy, Identifier, NormalizeOptions, OnNull};
use sync_core::plan::{AttributeChange, ContactChange};
use sync_core::ports::ContactRef;
use sync_core::{AttributeId, Canonical, IdentifierKind, Mapping, StandardField};

#[test]
#[ignore]
fn exp2() {
    let src = std::path::Path::new("/tmp/sbench/state.db");
    let path = std::path::Path::new("/tmp/sbench/copy.db");
    let _ = std::fs::remove_file(path.with_extension("db-wal"));
    std::fs::copy(src, path).unwrap();
    let m = Mapping { identifier: Identifier { column: "email".into(), kind: IdentifierKind::Email },
        attributes: vec![
            AttributeMapping { attribute: AttributeId::Standard(StandardField::FirstName), column: "first_name".into(), custom_type: None },
            AttributeMapping { attribute: AttributeId::Custom("Loyalty Tier".into()), column: "tier".into(), custom_type: None },
        ], on_null: OnNull::Omit, duplicates: DuplicatePolicy::Reject, options: NormalizeOptions::default(),
    }.bind(&["email", "first_name", "tier"].map(String::from)).unwrap();
    let mut store = StateStore::open(path).unwrap();
    for pass in 0..3i64 {
        let changes: Vec<ContactChange> = (0..100_000usize).map(|j| { let i = j * 20 + pass as usize; let key = format!("customer.{i:08}@example.com"); ContactChange {
            key_hash: sync_core::fingerprint::key_hash(IdentifierKind::Email, &key),
            contact: ContactRef { kind: IdentifierKind::Email, key }, row_fingerprint: i as u64 + 7 + pass as u64, new_contact: false,
            changes: (0..2).map(|a| AttributeChange { attribute: a, value: Some(Canonical::Text(format!("value {i} {a} {pass}"))), fingerprint: (i * 2 + a) as u64 + pass as u64, previous: None }).collect() } }).collect();
        let t = Instant::now();
        store.apply_changes("bench", pass, &m, &changes).unwrap();
        println!("pass {pass}: {:?}", t.elapsed());
    }
    let changes: Vec<ContactChange> = (0..100_000usize).map(|j| { let i = j * 20; let key = format!("customer.{i:08}@example.com"); ContactChange {
        key_hash: sync_core::fingerprint::key_hash(IdentifierKind::Email, &key),
        contact: ContactRef { kind: IdentifierKind::Email, key }, row_fingerprint: i as u64 + 99, new_contact: false,
        changes: (0..2).map(|a| AttributeChange { attribute: a, value: Some(Canonical::Text(format!("value {i} {a} x"))), fingerprint: (i * 2 + a) as u64 + 99, previous: None }).collect() } }).collect();
    let t = Instant::now();
    store.apply_changes("bench", 9, &m, &changes).unwrap();
    println!("update pass: {:?}", t.elapsed());
}
