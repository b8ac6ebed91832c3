use super::*;
use crate::mapping::{
    AttributeMapping, CustomType, DateOrder, Identifier, IdentifierKind, Mapping, NormalizeOptions,
    StandardField,
};
use crate::memory::MemorySnapshot;
use crate::value::Value;
use expect_test::{expect, Expect};
use proptest::prelude::*;
use std::fmt::Write as _;

const COLUMNS: [&str; 6] = ["email", "first_name", "city", "tier", "ltv", "phone"];

fn columns() -> Vec<String> {
    COLUMNS.iter().map(|c| c.to_string()).collect()
}

fn mapping_with(extra: &[(&str, &str)], duplicates: DuplicatePolicy, on_null: OnNull) -> Mapping {
    let mut attributes = vec![
        AttributeMapping {
            attribute: AttributeId::Standard(StandardField::FirstName),
            column: "first_name".into(),
            custom_type: None,
        },
        AttributeMapping {
            attribute: AttributeId::Standard(StandardField::City),
            column: "city".into(),
            custom_type: None,
        },
        AttributeMapping {
            attribute: AttributeId::Custom("Loyalty Tier".into()),
            column: "tier".into(),
            custom_type: None,
        },
    ];
    for (name, col) in extra {
        attributes.push(AttributeMapping {
            attribute: AttributeId::Custom((*name).into()),
            column: (*col).into(),
            custom_type: Some(CustomType::Number),
        });
    }
    Mapping {
        identifier: Identifier {
            column: "email".into(),
            kind: IdentifierKind::Email,
        },
        attributes,
        on_null,
        duplicates,
        options: NormalizeOptions {
            default_phone_region: None,
            date_order: DateOrder::Iso,
            today: chrono::NaiveDate::from_ymd_opt(2026, 11, 29),
        },
    }
}

fn base_mapping() -> BoundMapping {
    mapping_with(&[], DuplicatePolicy::Reject, OnNull::Omit)
        .bind(&columns())
        .unwrap()
}

fn rows(csv: &str) -> Vec<SourceRow> {
    csv.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            let mut values: Vec<Value> = line
                .split('|')
                .map(|c| match c.trim() {
                    "NULL" => Value::Null,
                    t => Value::Text(t.to_owned()),
                })
                .collect();
            values.resize(COLUMNS.len(), Value::Null);
            SourceRow {
                number: i as u64 + 2,
                values,
                defect: None,
            }
        })
        .collect()
}

/// Plans `rows` against `snap`; returns the plans with earlier voided changes removed.
fn plan(
    mapping: &BoundMapping,
    snap: &MemorySnapshot,
    rows: &[SourceRow],
) -> (Vec<RowPlan>, PlanCounts) {
    let mut index = SnapshotIndex::default();
    snap.load_index("a", &mut index).unwrap();
    let mut planner = Planner::new(mapping, "a", index);
    let mut out: Vec<RowPlan> = Vec::new();
    for r in rows {
        let p = planner.plan_row(r, snap).unwrap();
        if let Some(h) = p.voids_earlier {
            // The earlier row of this identifier is now a rejected duplicate.
            for e in out.iter_mut() {
                let voided = match &e.outcome {
                    RowOutcome::Changed(c) if c.key_hash == h => {
                        planner.forget_change(c);
                        true
                    }
                    RowOutcome::Unchanged { key_hash, .. } => *key_hash == h,
                    RowOutcome::Rejected(r) => r.identifier.as_deref().is_some_and(|k| {
                        crate::fingerprint::key_hash(IdentifierKind::Email, k) == h
                    }),
                    _ => false,
                };
                if voided {
                    e.outcome = RowOutcome::Rejected(Rejection {
                        code: RejectCode::DuplicateIdentifier,
                        identifier: None,
                        problems: vec![Problem {
                            column: None,
                            value: None,
                            rule: "voided by a later row".into(),
                        }],
                    });
                }
            }
        }
        out.push(p);
    }
    (out, planner.into_counts())
}

fn apply(mapping: &BoundMapping, snap: &mut MemorySnapshot, plans: &[RowPlan]) {
    for p in plans {
        match &p.outcome {
            RowOutcome::Changed(c) => snap.apply(c, mapping, 1),
            RowOutcome::Unchanged {
                refresh: Some(r), ..
            } => snap.refresh(r),
            _ => {}
        }
    }
}

fn render(mapping: &BoundMapping, plans: &[RowPlan], counts: &PlanCounts) -> String {
    let mut s = String::new();
    for p in plans {
        match &p.outcome {
            RowOutcome::Unchanged { .. } => {}
            RowOutcome::OutsideSegment => {
                let _ = writeln!(s, "line {}: outside the segment", p.row);
            }
            RowOutcome::Changed(c) => {
                let _ = write!(
                    s,
                    "line {}: {}{}:",
                    p.row,
                    c.contact.key,
                    if c.new_contact { " (new)" } else { "" }
                );
                for ch in &c.changes {
                    let a = &mapping.attributes[ch.attribute];
                    let v = ch
                        .value
                        .as_ref()
                        .map_or("<clear>".to_owned(), |v| v.to_string());
                    let _ = write!(s, " {}={}", a.key, v);
                }
                s.push('\n');
            }
            RowOutcome::Rejected(r) => {
                let _ = writeln!(s, "line {}: {r}", p.row);
            }
        }
    }
    let _ = writeln!(
        s,
        "rows={} changed={} unchanged={} rejected={}",
        counts.rows, counts.changed, counts.unchanged, counts.rejected
    );
    s
}

/// Plans `old`, acknowledges everything, then plans `new` and compares with `expect`.
fn check_plan(old: &str, new: &str, expect: Expect) {
    check_plan_with(&base_mapping(), &base_mapping(), old, new, expect);
}

fn check_plan_with(
    m_old: &BoundMapping,
    m_new: &BoundMapping,
    old: &str,
    new: &str,
    expect: Expect,
) {
    let mut snap = MemorySnapshot::default();
    let (p, _) = plan(m_old, &snap, &rows(old));
    apply(m_old, &mut snap, &p);
    let (p, counts) = plan(m_new, &snap, &rows(new));
    expect.assert_eq(&render(m_new, &p, &counts));
}

#[test]
fn first_plan_sends_everything_non_null() {
    check_plan(
        "",
        "ann@example.com|Ann|Paris|gold\nBob@Example.com | Bob |  | silver",
        expect![[r#"
            line 2: ann@example.com (new): custom:Loyalty Tier="gold" std:city="Paris" std:first_name="Ann"
            line 3: bob@example.com (new): custom:Loyalty Tier="silver" std:first_name="Bob"
            rows=2 changed=2 unchanged=0 rejected=0
        "#]],
    );
}

#[test]
fn nothing_changed_sends_nothing_even_with_cosmetic_edits() {
    check_plan(
        "ann@example.com|Ann|Paris|gold",
        "  ANN@example.com |  Ann | Paris  |gold ",
        expect![[r#"
            rows=1 changed=0 unchanged=1 rejected=0
        "#]],
    );
}

#[test]
fn one_cell_changes_one_attribute_of_one_contact() {
    check_plan(
        "ann@example.com|Ann|Paris|gold\nbob@example.com|Bob|Rome|silver",
        "ann@example.com|Ann|Paris|gold\nbob@example.com|Bob|Milan|silver",
        expect![[r#"
            line 3: bob@example.com: std:city="Milan"
            rows=2 changed=1 unchanged=1 rejected=0
        "#]],
    );
}

#[test]
fn a_new_mapping_backfills_only_that_attribute() {
    let old = base_mapping();
    let new = mapping_with(
        &[("Lifetime Value", "ltv")],
        DuplicatePolicy::Reject,
        OnNull::Omit,
    )
    .bind(&columns())
    .unwrap();
    check_plan_with(
        &old,
        &new,
        "ann@example.com|Ann|Paris|gold|10.50\nbob@example.com|Bob|Rome|silver|7",
        "ann@example.com|Ann|Paris|gold|10.50\nbob@example.com|Bob|Rome|silver|7",
        expect![[r#"
            line 2: ann@example.com: custom:Lifetime Value=10.5
            line 3: bob@example.com: custom:Lifetime Value=7
            rows=2 changed=2 unchanged=0 rejected=0
        "#]],
    );
}

#[test]
fn a_removed_mapping_sends_nothing_and_refreshes() {
    let old = mapping_with(
        &[("Lifetime Value", "ltv")],
        DuplicatePolicy::Reject,
        OnNull::Omit,
    )
    .bind(&columns())
    .unwrap();
    let new = base_mapping();
    let mut snap = MemorySnapshot::default();
    let r = rows("ann@example.com|Ann|Paris|gold|10");
    let (p, _) = plan(&old, &snap, &r);
    apply(&old, &mut snap, &p);
    let (p, counts) = plan(&new, &snap, &r);
    assert_eq!(counts.changed, 0);
    assert!(matches!(
        p[0].outcome,
        RowOutcome::Unchanged {
            refresh: Some(_),
            ..
        }
    ));
    apply(&new, &mut snap, &p);
    snap.retain_attributes(&new.attribute_keys().collect::<Vec<_>>());
    let (p, _) = plan(&new, &snap, &r);
    assert!(matches!(
        p[0].outcome,
        RowOutcome::Unchanged { refresh: None, .. }
    ));
}

#[test]
fn bad_rows_are_rejected_with_column_value_and_rule_and_the_rest_is_planned() {
    check_plan(
        "",
        "not-an-email|Ann|Paris|gold\n|Bob|Rome|x\ncat@example.com|Cat|Oslo|gold\nann@example.com|Ann|Paris|gold|12x",
        expect![[r#"
            line 2: invalid_identifier: column `email` = "not-an-email": email must contain exactly one @
            line 3: missing_identifier: column `email`: the email identifier is empty
            line 4: cat@example.com (new): custom:Loyalty Tier="gold" std:city="Oslo" std:first_name="Cat"
            line 5: ann@example.com (new): custom:Loyalty Tier="gold" std:city="Paris" std:first_name="Ann"
            rows=4 changed=2 unchanged=0 rejected=2
        "#]],
    );
}

#[test]
fn unreadable_rows_are_rejected() {
    let m = base_mapping();
    let mut r = rows("ann@example.com|Ann|Paris|gold");
    r[0].defect = Some("line 2 has 3 fields, the header has 6".into());
    let (p, counts) = plan(&m, &MemorySnapshot::default(), &r);
    expect![[r#"
        line 2: unreadable_row: line 2 has 3 fields, the header has 6
        rows=1 changed=0 unchanged=0 rejected=1
    "#]]
    .assert_eq(&render(&m, &p, &counts));
}

#[test]
fn duplicates_reject_every_row_by_default() {
    check_plan(
        "",
        "ann@example.com|Ann|Paris|gold\nbob@example.com|Bob|Rome|x\nANN@example.com|Annie|Paris|gold\nann@example.com|A|P|g",
        expect![[r#"
            line 2: duplicate_identifier: voided by a later row
            line 3: bob@example.com (new): custom:Loyalty Tier="x" std:city="Rome" std:first_name="Bob"
            line 4: duplicate_identifier: column `email` = "ann@example.com": this identifier appears on more than one row; every row with it is rejected (set duplicates = "first" or "last" to keep one)
            line 5: duplicate_identifier: column `email` = "ann@example.com": this identifier appears on more than one row; every row with it is rejected (set duplicates = "first" or "last" to keep one)
            rows=4 changed=1 unchanged=0 rejected=3
        "#]],
    );
}

#[test]
fn duplicates_first_or_last_wins() {
    let input = "ann@example.com|Ann|Paris|gold\nann@example.com|Annie|Paris|gold";
    for (policy, winner) in [
        (DuplicatePolicy::First, "Ann"),
        (DuplicatePolicy::Last, "Annie"),
    ] {
        let m = mapping_with(&[], policy, OnNull::Omit)
            .bind(&columns())
            .unwrap();
        let (p, counts) = plan(&m, &MemorySnapshot::default(), &rows(input));
        assert_eq!((counts.changed, counts.rejected), (1, 1), "{policy:?}");
        let changed: Vec<_> = p
            .iter()
            .filter_map(|p| match &p.outcome {
                RowOutcome::Changed(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(changed.len(), 1);
        assert!(changed[0]
            .changes
            .iter()
            .any(|c| c.value == Some(Canonical::Text(winner.into()))));
    }
}

#[test]
fn nulls_are_omitted_by_default_and_cleared_on_request() {
    let before = "ann@example.com|Ann|Paris|gold";
    let after = "ann@example.com|Ann|NULL|gold";
    check_plan(
        before,
        after,
        expect![[r#"
            rows=1 changed=0 unchanged=1 rejected=0
        "#]],
    );
    let clear = mapping_with(&[], DuplicatePolicy::Reject, OnNull::Clear)
        .bind(&columns())
        .unwrap();
    check_plan_with(
        &clear,
        &clear,
        before,
        after,
        expect![[r#"
            line 2: ann@example.com: std:city=<clear>
            rows=1 changed=1 unchanged=0 rejected=0
        "#]],
    );
}

/// Issue 12, item 8: a clear of `age` or a typed custom attribute sent `""` to a non-string
/// field. Only string fields are cleared; for the others a null is omitted.
#[test]
fn regression_clear_never_sends_an_empty_string_to_a_non_string_field() {
    let mut m = mapping_with(&[("LTV", "ltv")], DuplicatePolicy::Reject, OnNull::Clear);
    m.attributes.push(AttributeMapping {
        attribute: AttributeId::Standard(StandardField::Age),
        column: "phone".into(),
        custom_type: None,
    });
    let m = m.bind(&columns()).unwrap();
    check_plan_with(
        &m,
        &m,
        "ann@example.com|Ann|Paris|gold|12.5|34",
        "ann@example.com|NULL|NULL|NULL|NULL|NULL",
        expect![[r#"
            line 2: ann@example.com: custom:Loyalty Tier=<clear> std:city=<clear> std:first_name=<clear>
            rows=1 changed=1 unchanged=0 rejected=0
        "#]],
    );

    // An undeclared custom attribute is cleared only when what Attentive holds is text: a
    // typed source's number stays as it was.
    let mut m = mapping_with(&[], DuplicatePolicy::Reject, OnNull::Clear);
    m.attributes.push(AttributeMapping {
        attribute: AttributeId::Custom("Score".into()),
        column: "ltv".into(),
        custom_type: None,
    });
    let m = m.bind(&columns()).unwrap();
    let mut snap = MemorySnapshot::default();
    let mut old = rows("ann@example.com|Ann|Paris|gold|x\nbob@example.com|Bob|Rome|gold|x");
    old[0].values[4] = Value::Number("12.5".into());
    old[1].values[4] = Value::Text("high".into());
    let (p, _) = plan(&m, &snap, &old);
    apply(&m, &mut snap, &p);
    let new = rows("ann@example.com|Ann|Paris|gold|NULL\nbob@example.com|Bob|Rome|gold|NULL");
    let (p, counts) = plan(&m, &snap, &new);
    expect![[r#"
        line 3: bob@example.com: custom:Score=<clear>
        rows=2 changed=1 unchanged=1 rejected=0
    "#]]
    .assert_eq(&render(&m, &p, &counts));
}

// ---- properties ----------------------------------------------------------------------------

fn arb_row() -> impl Strategy<Value = (u8, String, String, String, String)> {
    (
        0u8..40,
        prop_oneof![
            "[A-Z][a-z]{0,6}",
            Just(String::new()),
            Just("  Ann  ".to_owned())
        ],
        prop_oneof!["[A-Z][a-z]{0,6}", Just(String::new())],
        prop_oneof!["gold|silver|bronze", Just(String::new())],
        prop_oneof![
            "[0-9]{1,4}(\\.[0-9]{1,2})?",
            Just("x1".to_owned()),
            Just(String::new())
        ],
    )
}

fn to_rows(spec: &[(u8, String, String, String, String)], bad_every: Option<u8>) -> Vec<SourceRow> {
    spec.iter()
        .enumerate()
        .map(|(i, (id, f, c, t, l))| {
            let email = if bad_every.is_some_and(|b| *id % b == 0) {
                format!("user{id}-no-at")
            } else {
                format!("User{id}@Example.com")
            };
            SourceRow {
                number: i as u64 + 2,
                values: vec![
                    Value::Text(email),
                    Value::Text(f.clone()),
                    Value::Text(c.clone()),
                    Value::Text(t.clone()),
                    Value::Text(l.clone()),
                    Value::Null,
                ],
                defect: None,
            }
        })
        .collect()
}

/// A contact key with its (attribute key, new value) pairs.
type ContactChanges = (String, Vec<(String, Option<Canonical>)>);

fn changes_by_contact(m: &BoundMapping, plans: &[RowPlan]) -> Vec<ContactChanges> {
    let mut v: Vec<_> = plans
        .iter()
        .filter_map(|p| match &p.outcome {
            RowOutcome::Changed(c) => Some((
                c.contact.key.clone(),
                c.changes
                    .iter()
                    .map(|a| (m.attributes[a.attribute].key.clone(), a.value.clone()))
                    .collect(),
            )),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// apply(plan(rows)) then plan(rows) again: nothing to send.
    #[test]
    fn applying_a_plan_then_replanning_yields_no_changes(
        spec in proptest::collection::vec(arb_row(), 0..60),
        policy in prop_oneof![Just(DuplicatePolicy::Reject), Just(DuplicatePolicy::First), Just(DuplicatePolicy::Last)],
        on_null in prop_oneof![Just(OnNull::Omit), Just(OnNull::Clear)],
    ) {
        let m = mapping_with(&[("LTV", "ltv")], policy, on_null).bind(&columns()).unwrap();
        let r = to_rows(&spec, Some(7));
        let mut snap = MemorySnapshot::default();
        let (p1, c1) = plan(&m, &snap, &r);
        apply(&m, &mut snap, &p1);
        let (p2, c2) = plan(&m, &snap, &r);
        prop_assert_eq!(c2.changed, 0);
        prop_assert_eq!(c1.rejected, c2.rejected);
        prop_assert_eq!(c1.changed + c1.unchanged, c2.unchanged);
        let no_refresh = p2.iter().all(|p| !matches!(p.outcome, RowOutcome::Unchanged { refresh: Some(_), .. }));
        prop_assert!(no_refresh);
    }

    /// Digests computed by the reading thread (`plan_digested_batch`) plan exactly as the
    /// planner digesting the rows itself.
    #[test]
    fn digests_from_the_reader_plan_like_digesting_in_the_planner(
        spec in proptest::collection::vec(arb_row(), 0..60),
    ) {
        let m = mapping_with(&[("LTV", "ltv")], DuplicatePolicy::Reject, OnNull::Omit).bind(&columns()).unwrap();
        let r = to_rows(&spec, Some(7));
        let mut snap = MemorySnapshot::default();
        let (p1, _) = plan(&m, &snap, &r);
        apply(&m, &mut snap, &p1[..p1.len() / 2]);
        let mut hasher = crate::fingerprint::RowHasher::default();
        let digests: Vec<u64> = r.iter().map(|row| hasher.cells_digest(&m, row)).collect();
        let run = |digested: bool| {
            let mut index = SnapshotIndex::default();
            snap.load_index("a", &mut index).unwrap();
            let mut planner = Planner::new(&m, "a", index);
            let mut out = Vec::new();
            let d: &[u64] = if digested { &digests } else { &[] };
            planner.plan_digested_batch(&r, d, &snap, &mut out).unwrap();
            (out, planner.into_counts())
        };
        let (with, with_counts) = run(true);
        let (without, without_counts) = run(false);
        prop_assert_eq!(&with, &without);
        prop_assert_eq!(with_counts, without_counts);
    }

    /// Adding one mapping plans exactly that attribute for every valid row that has a value.
    #[test]
    fn adding_a_mapping_backfills_exactly_that_attribute(spec in proptest::collection::vec(arb_row(), 0..60)) {
        let old = mapping_with(&[], DuplicatePolicy::Reject, OnNull::Omit).bind(&columns()).unwrap();
        let new = mapping_with(&[("LTV", "ltv")], DuplicatePolicy::Reject, OnNull::Omit).bind(&columns()).unwrap();
        let r = to_rows(&spec, None);
        let mut snap = MemorySnapshot::default();
        let (p1, _) = plan(&old, &snap, &r);
        apply(&old, &mut snap, &p1);
        let (p2, _) = plan(&new, &snap, &r);
        let valid_with_value: std::collections::BTreeSet<String> = p2.iter().filter_map(|p| match &p.outcome {
            RowOutcome::Changed(c) => Some(c.contact.key.clone()),
            _ => None,
        }).collect();
        for (key, changes) in changes_by_contact(&new, &p2) {
            prop_assert_eq!(changes.len(), 1, "{} {:?}", key, changes);
            prop_assert_eq!(&changes[0].0, "custom:LTV");
        }
        // Every accepted row of the first plan whose ltv is a number is in the backfill.
        let accepted_first: std::collections::BTreeSet<String> = p1.iter().filter_map(|p| match &p.outcome {
            RowOutcome::Changed(c) => Some(c.contact.key.clone()),
            _ => None,
        }).collect();
        for (i, (id, _, _, _, l)) in spec.iter().enumerate() {
            let key = format!("user{id}@example.com");
            let rejected_now = matches!(p2[i].outcome, RowOutcome::Rejected(_));
            if !l.is_empty() && l != "x1" && accepted_first.contains(&key) && !rejected_now {
                prop_assert!(valid_with_value.contains(&key), "{} missing", key);
            }
        }
    }

    /// The plan does not depend on row order (with the default duplicate policy).
    #[test]
    fn row_order_does_not_change_the_plan(spec in proptest::collection::vec(arb_row(), 0..60), seed in any::<u64>()) {
        let m = mapping_with(&[("LTV", "ltv")], DuplicatePolicy::Reject, OnNull::Omit).bind(&columns()).unwrap();
        let r = to_rows(&spec, Some(5));
        let mut shuffled = r.clone();
        // Deterministic Fisher-Yates from the seed.
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let snap = MemorySnapshot::default();
        let (a, ca) = plan(&m, &snap, &r);
        let (b, cb) = plan(&m, &snap, &shuffled);
        prop_assert_eq!(changes_by_contact(&m, &a), changes_by_contact(&m, &b));
        prop_assert_eq!(ca, cb);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Two passes (find duplicates, then plan with them known) give the same final plan as one
    /// pass with voiding, and the second pass never voids a row it already planned.
    #[test]
    fn a_second_pass_with_known_duplicates_never_voids(
        spec in proptest::collection::vec(arb_row(), 0..60),
        policy in prop_oneof![Just(DuplicatePolicy::Reject), Just(DuplicatePolicy::First), Just(DuplicatePolicy::Last)],
    ) {
        let m = mapping_with(&[("LTV", "ltv")], policy, OnNull::Omit).bind(&columns()).unwrap();
        let r = to_rows(&spec, Some(7));
        let snap = MemorySnapshot::default();
        let (one_pass, counts1) = plan(&m, &snap, &r);
        let mut known = std::collections::HashMap::new();
        for p in &one_pass {
            if let Some(h) = p.voids_earlier {
                known.insert(h, (policy == DuplicatePolicy::Last).then_some(p.row));
            }
        }
        let mut index = SnapshotIndex::default();
        snap.load_index("a", &mut index).unwrap();
        let mut planner = Planner::new(&m, "a", index).with_known_duplicates(known);
        let mut two_pass = Vec::new();
        for row in &r {
            let p = planner.plan_row(row, &snap).unwrap();
            prop_assert_eq!(p.voids_earlier, None);
            two_pass.push(p);
        }
        prop_assert_eq!(changes_by_contact(&m, &one_pass), changes_by_contact(&m, &two_pass));
        let counts2 = planner.into_counts();
        prop_assert_eq!(counts1.changed, counts2.changed);
        prop_assert_eq!(counts1.unchanged, counts2.unchanged);
        prop_assert_eq!(counts1.rejected, counts2.rejected);
    }
}

/// The changes a plan sends, as `contact: attribute=value` lines (`∅` for a clear).
fn sent(mapping: &BoundMapping, plans: &[RowPlan]) -> Vec<String> {
    plans
        .iter()
        .filter_map(|p| match &p.outcome {
            RowOutcome::Changed(c) => Some(c),
            _ => None,
        })
        .flat_map(|c| {
            c.changes.iter().map(move |a| {
                let value = a.value.as_ref().map_or("∅".to_owned(), |v| v.to_text());
                format!(
                    "{}: {}={value}",
                    c.contact.key, mapping.attributes[a.attribute].key
                )
            })
        })
        .collect()
}

/// Regression (issue 12, found by the SIGKILL soak): a write in flight when the process died
/// was applied by Attentive while the snapshot kept the old value; when the model then went
/// back to the old value, the planner saw no change and never sent it. An attribute in doubt
/// is now sent again whatever the model holds, until a write of it is answered.
#[test]
fn attributes_in_doubt_are_sent_again_whatever_the_model_holds() {
    let m = mapping_with(&[], DuplicatePolicy::Reject, OnNull::Clear)
        .bind(&columns())
        .unwrap();
    let mut snap = MemorySnapshot::default();
    let old = rows("ann@x.com|Ann|Paris|gold");
    let (p, _) = plan(&m, &snap, &old);
    apply(&m, &mut snap, &p);
    assert!(sent(&m, &plan(&m, &snap, &old).0).is_empty());

    // The city moves to Lyon; the write is sent but its answer is never recorded.
    let (p, _) = plan(&m, &snap, &rows("ann@x.com|Ann|Lyon|gold"));
    let RowOutcome::Changed(in_flight) = &p[0].outcome else {
        panic!("{p:?}")
    };
    snap.mark_in_doubt(in_flight, &m, 2);

    // The model goes back to Paris: the city is sent (Attentive may hold Lyon), and only it.
    let (p, counts) = plan(&m, &snap, &old);
    assert_eq!(sent(&m, &p), ["ann@x.com: std:city=Paris"]);
    assert_eq!(counts.changed, 1);
    // Or it stays at Lyon: sent again, since nobody knows whether Lyon arrived.
    assert_eq!(
        sent(&m, &plan(&m, &snap, &rows("ann@x.com|Ann|Lyon|gold")).0),
        ["ann@x.com: std:city=Lyon"]
    );
    // Or it becomes null: cleared, whichever of the two Attentive holds.
    assert_eq!(
        sent(&m, &plan(&m, &snap, &rows("ann@x.com|Ann|NULL|gold")).0),
        ["ann@x.com: std:city=∅"]
    );

    // Once a write of it is acknowledged, the doubt is gone and nothing more is sent.
    let (p, _) = plan(&m, &snap, &old);
    apply(&m, &mut snap, &p);
    assert!(snap.in_doubt.is_empty(), "{:?}", snap.in_doubt);
    assert!(sent(&m, &plan(&m, &snap, &old).0).is_empty());
}

/// An attribute the snapshot never had, in doubt, is cleared by a null (the value sent may be
/// in Attentive); a contact the snapshot never had is planned whole again.
#[test]
fn an_attribute_in_doubt_that_the_snapshot_never_had_is_cleared_by_a_null() {
    let m = mapping_with(&[], DuplicatePolicy::Reject, OnNull::Clear)
        .bind(&columns())
        .unwrap();
    let mut snap = MemorySnapshot::default();
    let (p, _) = plan(&m, &snap, &rows("bo@x.com|Bo|NULL|NULL"));
    apply(&m, &mut snap, &p);
    let (p, _) = plan(&m, &snap, &rows("bo@x.com|Bo|Oslo|NULL"));
    let RowOutcome::Changed(c) = &p[0].outcome else {
        panic!("{p:?}")
    };
    snap.mark_in_doubt(c, &m, 2);
    assert_eq!(
        sent(&m, &plan(&m, &snap, &rows("bo@x.com|Bo|NULL|NULL")).0),
        ["bo@x.com: std:city=∅"]
    );

    // A 400 or a 404 settles the doubt without moving the snapshot.
    snap.settle("bo@x.com", Some(&["std:city"]));
    assert!(sent(&m, &plan(&m, &snap, &rows("bo@x.com|Bo|NULL|NULL")).0).is_empty());

    let (p, _) = plan(&m, &snap, &rows("new@x.com|Cy|Rome|NULL"));
    let RowOutcome::Changed(c) = &p[0].outcome else {
        panic!("{p:?}")
    };
    snap.mark_in_doubt(c, &m, 3);
    assert_eq!(
        sent(&m, &plan(&m, &snap, &rows("new@x.com|Cy|NULL|NULL")).0),
        ["new@x.com: std:city=∅", "new@x.com: std:first_name=Cy"]
    );
    snap.settle("new@x.com", None);
    assert!(snap.in_doubt.is_empty());
}
