//! A downstream program using `attentive-sync-core` as a library: it plans a model read from
//! its own [`ModelSource`] against an in-memory snapshot and delivers the changes to its own
//! [`Destination`], through the public API only. The second pass finds nothing to send.
//!
//! `cargo run -p attentive-sync-core --example own_adapters` (built by `cargo test`).

// The example's errors are `Infallible`, or a lock poisoned by a panic already reported.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use sync_core::mapping::{
    AttributeId, AttributeMapping, CustomType, DuplicatePolicy, Identifier, IdentifierKind,
    Mapping, NormalizeOptions, OnNull, StandardField,
};
use sync_core::memory::MemorySnapshot;
use sync_core::ports::{
    ContactRef, ContactWrite, Destination, Existence, ModelSource, SnapshotStore, WriteOutcome,
};
use sync_core::{
    plan::Planner, plan::RowOutcome, plan::SnapshotIndex, value::Canonical, value::SourceRow,
    value::Value,
};

/// The program's own model: rows it already holds in memory.
struct Rows {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
    next: usize,
}

impl ModelSource for Rows {
    type Error = Infallible;

    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_row(&mut self, row: &mut SourceRow) -> Result<bool, Infallible> {
        let Some(values) = self.rows.get(self.next) else {
            return Ok(false);
        };
        self.next += 1;
        row.reset(self.next as u64, self.columns.len());
        row.values.clone_from(values);
        Ok(true)
    }
}

/// The program's own destination: an account of known contacts that logs every write. Like
/// Attentive's update routes it never creates anyone.
#[derive(Default)]
struct Account {
    contacts: Mutex<BTreeMap<String, BTreeMap<String, Canonical>>>,
    writes: Mutex<u64>,
}

impl Destination for Account {
    type Error = Infallible;

    async fn check_exists(&self, contact: &ContactRef) -> Result<Existence, Infallible> {
        let known = self.contacts.lock().unwrap().contains_key(&contact.key);
        Ok(if known {
            Existence::Exists
        } else {
            Existence::NotFound
        })
    }

    async fn write(&self, write: &ContactWrite) -> Result<WriteOutcome, Infallible> {
        *self.writes.lock().unwrap() += 1;
        let mut contacts = self.contacts.lock().unwrap();
        let Some(contact) = contacts.get_mut(&write.contact.key) else {
            return Ok(WriteOutcome::NotFound);
        };
        for (id, value) in &write.attributes {
            match value {
                Some(v) => contact.insert(id.key(), v.clone()),
                None => contact.remove(&id.key()),
            };
        }
        Ok(WriteOutcome::Acknowledged)
    }
}

/// Runs a future to completion on this thread (the example's destination answers at once;
/// a real program would use its own runtime).
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

fn model() -> Rows {
    let text = |s: &str| Value::Text(s.to_owned());
    Rows {
        columns: ["email", "first_name", "lifetime_value"]
            .map(String::from)
            .to_vec(),
        rows: vec![
            vec![
                text(" Ann@Example.com "),
                text("Ann"),
                Value::Number("412.50".into()),
            ],
            vec![text("bob@example.com"), text("Bob"), Value::Int(7)],
            vec![text("not an email"), text("Eve"), Value::Int(1)],
            vec![text("carol@example.com"), text("Carol"), Value::Int(3)],
        ],
        next: 0,
    }
}

fn main() {
    let mapping = Mapping {
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
                attribute: AttributeId::Custom("Lifetime Value".into()),
                column: "lifetime_value".into(),
                custom_type: Some(CustomType::Number),
            },
        ],
        on_null: OnNull::Omit,
        duplicates: DuplicatePolicy::Reject,
        options: NormalizeOptions {
            // The caller gives the day dates of birth are checked against.
            today: chrono::NaiveDate::from_ymd_opt(2026, 12, 1),
            ..NormalizeOptions::default()
        },
    }
    .bind(&model().columns)
    .expect("the mapping fits the model");

    // Attentive knows Ann and Bob; carol@example.com is not a contact.
    let account = Account::default();
    for key in ["ann@example.com", "bob@example.com"] {
        account
            .contacts
            .lock()
            .unwrap()
            .insert(key.to_owned(), BTreeMap::new());
    }
    let mut snapshot = MemorySnapshot::default();

    for pass in 1..=2 {
        let mut index = SnapshotIndex::default();
        snapshot.load_index("example", &mut index).unwrap();
        let mut planner = Planner::new(&mapping, "example", index);
        let mut source = model();
        let mut row = SourceRow::default();
        let mut changes = Vec::new();
        while source.next_row(&mut row).unwrap() {
            match planner.plan_row(&row, &snapshot).unwrap().outcome {
                RowOutcome::Changed(change) => changes.push(change),
                RowOutcome::Rejected(r) => println!("pass {pass}: row {}: {r}", row.number),
                RowOutcome::Unchanged { .. } | RowOutcome::OutsideSegment => {}
            }
        }
        let mut sent = 0;
        for change in &changes {
            // Never write to an identifier not known to exist: a write may create a contact.
            if block_on(account.check_exists(&change.contact)).unwrap() != Existence::Exists {
                println!(
                    "pass {pass}: {} is not a contact; nothing sent",
                    change.contact.key
                );
                continue;
            }
            let outcome = block_on(account.write(&change.to_write(&mapping))).unwrap();
            if outcome == WriteOutcome::Acknowledged {
                // Only acknowledged values move the snapshot.
                snapshot.apply(change, &mapping, pass);
                sent += 1;
            }
        }
        println!(
            "pass {pass}: {} rows, {} changed, {sent} written, {} rejected",
            planner.counts().rows,
            planner.counts().changed,
            planner.counts().rejected
        );
        if pass == 2 {
            assert_eq!(sent, 0, "the second pass has nothing new to send");
        }
    }
    let contacts = account.contacts.lock().unwrap();
    assert_eq!(
        contacts["ann@example.com"].get("custom:Lifetime Value"),
        Some(&Canonical::Number(
            sync_core::value::NumberText::parse("412.50").unwrap()
        ))
    );
    println!(
        "Ann holds {:?}; {} writes in all",
        contacts["ann@example.com"],
        account.writes.lock().unwrap()
    );
}
