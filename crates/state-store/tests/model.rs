//! Model-based tests: `StateStore` must behave exactly like `sync_core::memory::MemorySnapshot`.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

use proptest::prelude::*;
use state_store::{RunKind, StateStore};
use sync_core::fingerprint::value_fingerprint;
use sync_core::mapping::{
    AttributeMapping, CustomType, DuplicatePolicy, Identifier, NormalizeOptions, OnNull,
};
use sync_core::memory::MemorySnapshot;
use sync_core::plan::{AttributeChange, ContactChange, Refresh, RowOutcome, SnapshotIndex};
use sync_core::ports::{ContactRef, InDoubt, SnapshotStore, StoredAttribute};
use sync_core::value::NumberText;
use sync_core::{
    mapping::AttributeId, mapping::BoundMapping, mapping::IdentifierKind, mapping::Mapping,
    mapping::StandardField, plan::Planner, value::Canonical, value::SourceRow, value::Value,
};

const ACTIVATIONS: [&str; 2] = ["orders", "loyalty"];
const CONTACTS: [&str; 7] = [
    "a@x.com",
    "b@x.com",
    "c@x.com",
    "zed@example.org",
    "ünï@x.com",
    "a@x.co",
    "",
];
const COLUMNS: [&str; 5] = ["email", "first_name", "city", "tier", "ltv"];
/// Keys offered to `retain_attributes`: the mapping's, plus one it never had.
const RETAIN_POOL: [&str; 5] = [
    "custom:Loyalty Tier",
    "custom:ltv",
    "std:city",
    "std:first_name",
    "custom:gone",
];

fn mapping(on_null: OnNull) -> BoundMapping {
    let attr = |attribute, column: &str, custom_type| AttributeMapping {
        attribute,
        column: column.into(),
        custom_type,
    };
    Mapping {
        identifier: Identifier {
            column: "email".into(),
            kind: IdentifierKind::Email,
        },
        attributes: vec![
            attr(
                AttributeId::Standard(StandardField::FirstName),
                "first_name",
                None,
            ),
            attr(AttributeId::Standard(StandardField::City), "city", None),
            attr(
                AttributeId::Custom("Loyalty Tier".into()),
                "tier",
                Some(CustomType::String),
            ),
            attr(
                AttributeId::Custom("ltv".into()),
                "ltv",
                Some(CustomType::Number),
            ),
        ],
        on_null,
        duplicates: DuplicatePolicy::Reject,
        options: NormalizeOptions::default(),
    }
    .bind(&COLUMNS.map(String::from))
    .expect("the test mapping binds")
}

fn key_hash(key: &str) -> u64 {
    sync_core::fingerprint::key_hash(IdentifierKind::Email, key)
}

fn contact_ref(key: &str) -> ContactRef {
    ContactRef {
        kind: IdentifierKind::Email,
        key: key.into(),
    }
}

/// A generated change: (contact, row fingerprint, [(attribute index, value)]). Value
/// fingerprints are the values' (what the planner gives, and what the store recomputes).
type GenChange = (usize, u64, Vec<(usize, Option<Canonical>)>);

#[derive(Debug, Clone)]
enum Op {
    Apply {
        activation: usize,
        run_id: i64,
        changes: Vec<GenChange>,
    },
    Refresh {
        activation: usize,
        run_id: i64,
        refreshes: Vec<(usize, u64)>,
    },
    Retain {
        activation: usize,
        keys: Vec<usize>,
    },
    /// Writes about to be sent: their attributes are in doubt.
    Mark {
        activation: usize,
        run_id: i64,
        changes: Vec<GenChange>,
    },
    /// Answers that applied nothing: some attributes' doubts settled, or all of them.
    Settle {
        activation: usize,
        contact: usize,
        keys: Option<Vec<usize>>,
    },
}

fn arb_canonical() -> impl Strategy<Value = Canonical> {
    prop_oneof![
        any::<bool>().prop_map(Canonical::Bool),
        any::<i64>().prop_map(Canonical::Int),
        "[-+]?0*[0-9]{1,22}(\\.[0-9]{0,8}0*)?([eE][-+]?[0-9]{1,3})?"
            .prop_filter_map("a number", |s| NumberText::parse(&s))
            .prop_map(Canonical::Number),
        any::<String>().prop_map(Canonical::Text),
        "[a-z ]{0,3}".prop_map(Canonical::Text),
    ]
}

fn arb_fingerprint() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        Just(0),
        Just(u64::MAX),
        Just(1 << 63),
        Just((1 << 62) - 1),
        1u64..4,
    ]
}

fn arb_op() -> impl Strategy<Value = Op> {
    let attribute = (0..4usize, proptest::option::weighted(0.8, arb_canonical()));
    let change = (
        0..CONTACTS.len(),
        arb_fingerprint(),
        proptest::collection::vec(attribute, 0..5),
    );
    let change = change.boxed();
    prop_oneof![
        4 => (0..2usize, 1..50i64, proptest::collection::vec(change.clone(), 0..6)).prop_map(
            |(activation, run_id, changes)| Op::Apply { activation, run_id, changes }
        ),
        2 => (
            0..2usize,
            1..50i64,
            proptest::collection::vec((0..CONTACTS.len(), arb_fingerprint()), 0..5)
        )
            .prop_map(|(activation, run_id, refreshes)| Op::Refresh {
                activation,
                run_id,
                refreshes
            }),
        1 => (0..2usize, proptest::collection::vec(0..RETAIN_POOL.len(), 0..4))
            .prop_map(|(activation, keys)| Op::Retain { activation, keys }),
        2 => (0..2usize, 1..50i64, proptest::collection::vec(change.clone(), 0..4)).prop_map(
            |(activation, run_id, changes)| Op::Mark { activation, run_id, changes }
        ),
        1 => (
            0..2usize,
            0..CONTACTS.len(),
            proptest::option::of(proptest::collection::vec(0..RETAIN_POOL.len(), 0..3))
        )
            .prop_map(|(activation, contact, keys)| Op::Settle { activation, contact, keys }),
    ]
}

fn sorted(mut v: Vec<StoredAttribute>) -> Vec<StoredAttribute> {
    v.sort_by(|a, b| a.key.cmp(&b.key));
    v
}

/// One activation's entry for a contact as `contacts show` gives it.
type Shown<'a> = (&'a str, u64, Vec<StoredAttribute>, Vec<InDoubt>);

/// Checks that the store and the models agree on everything the planner can read.
fn assert_same(store: &StateStore, models: &[MemorySnapshot]) -> Result<(), TestCaseError> {
    for (activation, model) in ACTIVATIONS.iter().zip(models) {
        let mut got = SnapshotIndex::default();
        let mut want = SnapshotIndex::default();
        store.load_index(activation, &mut got).unwrap();
        model.load_index(activation, &mut want).unwrap();
        prop_assert_eq!(got.len(), want.len());
        prop_assert_eq!(
            store.contact_count(activation).unwrap(),
            model.contacts.len() as u64
        );
        for key in CONTACTS {
            prop_assert_eq!(got.get(key_hash(key)), want.get(key_hash(key)), "{}", key);
            let mut g = Vec::new();
            let mut w = Vec::new();
            store
                .contact_attributes(activation, key_hash(key), key, &mut g)
                .unwrap();
            model
                .contact_attributes(activation, key_hash(key), key, &mut w)
                .unwrap();
            prop_assert_eq!(sorted(g), sorted(w), "{} / {}", activation, key);
        }
    }
    // `contacts show` sees the same as the models.
    for key in CONTACTS {
        let shown = store.contact(key).unwrap();
        let mut expected: Vec<Shown<'_>> = ACTIVATIONS
            .iter()
            .zip(models)
            .filter_map(|(a, m)| {
                let doubts: Vec<InDoubt> = m
                    .in_doubt
                    .get(key)
                    .map(|(_, d)| d.values().cloned().collect())
                    .unwrap_or_default();
                match m.contacts.get(key) {
                    Some(c) => Some((
                        *a,
                        c.row_fingerprint,
                        c.attributes.values().cloned().collect(),
                        doubts,
                    )),
                    None if !doubts.is_empty() => Some((*a, 0, Vec::new(), doubts)),
                    None => None,
                }
            })
            .collect();
        expected.sort_by(|a, b| a.0.cmp(b.0));
        let shown: Vec<Shown<'_>> = shown
            .iter()
            .map(|s| {
                (
                    s.activation.as_str(),
                    s.row_fingerprint,
                    s.attributes.clone(),
                    s.in_doubt.clone(),
                )
            })
            .collect();
        prop_assert_eq!(shown, expected);
    }
    Ok(())
}

fn contact_changes(changes: &[GenChange]) -> Vec<ContactChange> {
    changes
        .iter()
        .map(|(c, row_fp, attrs)| ContactChange {
            contact: contact_ref(CONTACTS[*c]),
            key_hash: key_hash(CONTACTS[*c]),
            row_fingerprint: *row_fp,
            new_contact: false,
            changes: attrs
                .iter()
                .map(|(i, v)| AttributeChange {
                    attribute: *i,
                    value: v.clone(),
                    // A clear sends the empty text: its fingerprint is that text's.
                    fingerprint: value_fingerprint(
                        v.as_ref().unwrap_or(&Canonical::Text(String::new())),
                    ),
                    previous: None,
                })
                .collect(),
        })
        .collect()
}

/// Applies one operation to the store and to the models.
fn apply_op(
    store: &mut StateStore,
    models: &mut [MemorySnapshot],
    m: &BoundMapping,
    op: &Op,
) -> Result<(), TestCaseError> {
    match op {
        Op::Apply {
            activation,
            run_id,
            changes,
        } => {
            let changes = contact_changes(changes);
            store
                .apply_changes(ACTIVATIONS[*activation], *run_id, m, &changes)
                .unwrap();
            for c in &changes {
                models[*activation].apply(c, m, *run_id);
            }
        }
        Op::Refresh {
            activation,
            run_id,
            refreshes,
        } => {
            let refreshes: Vec<Refresh> = refreshes
                .iter()
                .map(|(c, fp)| Refresh {
                    contact: contact_ref(CONTACTS[*c]),
                    key_hash: key_hash(CONTACTS[*c]),
                    row_fingerprint: *fp,
                })
                .collect();
            store
                .apply_refreshes(ACTIVATIONS[*activation], *run_id, &refreshes)
                .unwrap();
            for r in &refreshes {
                models[*activation].refresh(r);
            }
        }
        Op::Retain { activation, keys } => {
            let keys: Vec<&str> = keys.iter().map(|k| RETAIN_POOL[*k]).collect();
            let model = &mut models[*activation];
            let before: usize = model.contacts.values().map(|c| c.attributes.len()).sum();
            model.retain_attributes(&keys);
            let after: usize = model.contacts.values().map(|c| c.attributes.len()).sum();
            let deleted = store
                .retain_attributes(ACTIVATIONS[*activation], &keys)
                .unwrap();
            prop_assert_eq!(deleted, (before - after) as u64);
        }
        Op::Mark {
            activation,
            run_id,
            changes,
        } => {
            let changes = contact_changes(changes);
            store
                .mark_in_doubt(ACTIVATIONS[*activation], *run_id, m, &changes)
                .unwrap();
            for c in &changes {
                models[*activation].mark_in_doubt(c, m, *run_id);
            }
        }
        Op::Settle {
            activation,
            contact,
            keys,
        } => {
            let keys: Option<Vec<&str>> = keys
                .as_ref()
                .map(|k| k.iter().map(|i| RETAIN_POOL[*i]).collect());
            store
                .settle_in_doubt(
                    ACTIVATIONS[*activation],
                    CONTACTS[*contact],
                    keys.as_deref(),
                )
                .unwrap();
            models[*activation].settle(CONTACTS[*contact], keys.as_deref());
        }
    }
    Ok(())
}

/// Writes what `store` holds into a new file of schema 5 (the layout before the compact
/// snapshot), as a file written by an earlier build would hold it.
fn write_schema_5(store: &StateStore, path: &std::path::Path) {
    StateStore::create_at_schema(path, 5).unwrap();
    let conn = rusqlite::Connection::open(path).unwrap();
    for (id, activation) in ACTIVATIONS.iter().enumerate() {
        conn.execute(
            "INSERT INTO activations (id, name) VALUES (?1, ?2)",
            rusqlite::params![id as i64 + 1, activation],
        )
        .unwrap();
    }
    for key in CONTACTS {
        for snap in store.contact(key).unwrap() {
            let id = ACTIVATIONS
                .iter()
                .position(|a| *a == snap.activation)
                .unwrap() as i64
                + 1;
            if !snap.updated_at.is_empty() {
                conn.execute(
                    "INSERT INTO snapshot_contacts VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    rusqlite::params![
                        id,
                        key,
                        snap.key_hash as i64,
                        snap.row_fingerprint as i64,
                        snap.updated_run,
                        snap.updated_at
                    ],
                )
                .unwrap();
            }
            for a in &snap.attributes {
                conn.execute(
                    "INSERT INTO snapshot_attributes VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    rusqlite::params![
                        id,
                        key,
                        a.key,
                        a.fingerprint as i64,
                        a.value.tag().to_string(),
                        a.value.to_text(),
                        a.run_id
                    ],
                )
                .unwrap();
            }
            for d in &snap.in_doubt {
                conn.execute(
                    "INSERT INTO in_doubt (activation_id, contact_key, attribute_key, key_hash, \
                     value_tag, value_text, run_id, sent_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, '2026-12-01T00:00:00.000Z')",
                    rusqlite::params![
                        id,
                        key,
                        d.key,
                        snap.key_hash as i64,
                        d.sent.tag().to_string(),
                        d.sent.to_text(),
                        d.run_id
                    ],
                )
                .unwrap();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn the_store_behaves_like_the_memory_snapshot(ops in proptest::collection::vec(arb_op(), 1..14)) {
        let m = mapping(OnNull::Clear);
        let mut store = StateStore::open_in_memory().unwrap();
        let mut models = vec![MemorySnapshot::default(), MemorySnapshot::default()];
        for op in &ops {
            apply_op(&mut store, &mut models, &m, op)?;
            assert_same(&store, &models)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The migration path: a schema-5 file holding what the operations left (values of every
    /// type, runs, doubts) is migrated to the compact layout on opening, and the migrated
    /// store still behaves like the memory snapshot, also under further operations.
    #[test]
    fn a_migrated_store_behaves_like_the_memory_snapshot(
        ops in proptest::collection::vec(arb_op(), 1..14),
        more in proptest::collection::vec(arb_op(), 0..6),
    ) {
        let m = mapping(OnNull::Clear);
        let mut store = StateStore::open_in_memory().unwrap();
        let mut models = vec![MemorySnapshot::default(), MemorySnapshot::default()];
        for op in &ops {
            apply_op(&mut store, &mut models, &m, op)?;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        write_schema_5(&store, &path);
        let mut migrated = StateStore::open(&path).unwrap();
        prop_assert_eq!(
            migrated.schema_version().unwrap(),
            StateStore::supported_schema_version()
        );
        assert_same(&migrated, &models)?;
        for op in &more {
            apply_op(&mut migrated, &mut models, &m, op)?;
            assert_same(&migrated, &models)?;
        }
    }
}

fn source_rows(rows: &[[&str; 5]]) -> Vec<SourceRow> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| SourceRow {
            number: i as u64 + 2,
            values: r
                .iter()
                .map(|v| match *v {
                    "" => Value::Null,
                    t => Value::Text(t.to_owned()),
                })
                .collect(),
            defect: None,
        })
        .collect()
}

/// Plans `rows` against `snap`, returning the changes and refreshes to apply.
fn plan<S: SnapshotStore>(
    m: &BoundMapping,
    snap: &S,
    rows: &[SourceRow],
) -> (Vec<ContactChange>, Vec<Refresh>) {
    let mut index = SnapshotIndex::default();
    snap.load_index("orders", &mut index).unwrap();
    let mut planner = Planner::new(m, "orders", index);
    let mut changes = Vec::new();
    let mut refreshes = Vec::new();
    for r in rows {
        match planner.plan_row(r, snap).unwrap().outcome {
            RowOutcome::Changed(c) => changes.push(c),
            RowOutcome::Unchanged {
                refresh: Some(r), ..
            } => refreshes.push(r),
            _ => {}
        }
    }
    (changes, refreshes)
}

/// The planner, run against the store and against the memory snapshot, makes the same plans
/// over several runs; replanning after applying sends nothing.
#[test]
fn the_planner_sees_the_same_snapshot() {
    let m = mapping(OnNull::Clear);
    let mut store = StateStore::open_in_memory().unwrap();
    let mut memory = MemorySnapshot::default();
    let runs: [&[[&str; 5]]; 3] = [
        &[
            ["Ann@X.com", "Ann", "Paris", "gold", "12.50"],
            ["bob@x.com", "Bob", "", "silver", "3"],
            ["cy@x.com", "Cy", "Rome", "", ""],
        ],
        &[
            ["ann@x.com", "Ann", "Lyon", "gold", "12.5"],
            ["bob@x.com", "Bob", "", "silver", "3.0"],
            ["cy@x.com", "Cy", "", "", ""],
            ["dee@x.com", "Dee", "Oslo", "bronze", "1"],
        ],
        &[
            ["ann@x.com", "Ann", "Lyon", "gold", "12.5"],
            ["bob@x.com", "", "", "", ""],
            ["dee@x.com", "Dee", "Oslo", "bronze", "1"],
        ],
    ];
    for rows in runs {
        let rows = source_rows(rows);
        let run_id = store.begin_run("orders", RunKind::Run).unwrap();
        let (changes, refreshes) = plan(&m, &store, &rows);
        let expected = plan(&m, &memory, &rows);
        assert_eq!((&changes, &refreshes), (&expected.0, &expected.1));
        store.apply_changes("orders", run_id, &m, &changes).unwrap();
        store.apply_refreshes("orders", run_id, &refreshes).unwrap();
        for c in &changes {
            memory.apply(c, &m, run_id);
        }
        for r in &refreshes {
            memory.refresh(r);
        }
        let (again, _) = plan(&m, &store, &rows);
        assert!(again.is_empty(), "{again:#?}");
    }
    assert_eq!(store.contact_count("orders").unwrap(), 4);
}
