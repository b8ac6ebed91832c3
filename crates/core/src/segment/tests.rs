use proptest::prelude::*;

use super::*;

fn cols() -> Vec<String> {
    [
        "tier",
        "ltv",
        "vip",
        "country",
        "Loyalty Tier",
        "joined",
        "note",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn row(cells: &[Value]) -> SourceRow {
    SourceRow {
        number: 7,
        values: cells.to_vec(),
        defect: None,
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// tier, ltv, vip, country, Loyalty Tier, joined, note
fn csv_row(cells: [&str; 7]) -> SourceRow {
    row(&cells.map(text))
}

fn eval(filter: &str, r: &SourceRow) -> Result<bool, FilterProblem> {
    Filter::parse(filter)
        .expect("parses")
        .bind(&cols())
        .expect("binds")
        .matches(r)
}

fn syntax_error(filter: &str) -> (usize, String) {
    match Filter::parse(filter) {
        Err(FilterError::Syntax { at, message, .. }) => (at, message),
        other => panic!("{filter:?} should not parse, got {other:?}"),
    }
}

#[test]
fn parses_every_form_into_its_canonical_text() {
    let cases = [
        ("tier = 'gold'", "tier = 'gold'"),
        ("tier == 'gold'", "tier = 'gold'"),
        ("tier <> 'gold'", "tier != 'gold'"),
        ("ltv>=100 AND ltv<1e3", "ltv >= 100 and ltv < 1e3"),
        ("NOT vip = true", "not vip = true"),
        ("tier IN ('gold','silver')", "tier in ('gold', 'silver')"),
        ("tier not in ('gold')", "tier not in ('gold')"),
        (
            "note IS NULL or note is not null",
            "note is null or note is not null",
        ),
        ("\"Loyalty Tier\" = 'it''s'", "\"Loyalty Tier\" = 'it''s'"),
        ("(a = 1 or b = 2) and c = 3", "(a = 1 or b = 2) and c = 3"),
        ("a = 1 or b = 2 and c = 3", "a = 1 or b = 2 and c = 3"),
        ("not (a = 1 and b = -2.5)", "not (a = 1 and b = -2.5)"),
        ("\"and\" = 1", "\"and\" = 1"),
        ("x.y = +3", "x.y = +3"),
    ];
    for (input, canonical) in cases {
        let f = Filter::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(f.to_string(), canonical, "{input}");
    }
}

#[test]
fn and_binds_tighter_than_or_and_chains_are_one_node() {
    let f = Filter::parse("a = 1 or b = 2 and c = 3").expect("parses");
    assert!(
        matches!(&f, Filter::Or(ops) if ops.len() == 2 && matches!(ops[1], Filter::And(ref a) if a.len() == 2))
    );
    let f = Filter::parse("a = 1 and b = 2 and c = 3").expect("parses");
    assert!(matches!(&f, Filter::And(ops) if ops.len() == 3));
    let f = Filter::parse("(a = 1 and b = 2) and c = 3").expect("parses");
    assert!(matches!(&f, Filter::And(ops) if ops.len() == 2 && matches!(ops[0], Filter::And(_))));
    assert_eq!(f.to_string(), "(a = 1 and b = 2) and c = 3");
}

#[test]
fn syntax_errors_point_at_the_problem() {
    assert_eq!(
        syntax_error("ltv >"),
        (
            5,
            "expected a value ('text', a number, true or false), found the end".into()
        )
    );
    let (at, m) = syntax_error("tier = gold");
    assert_eq!(at, 7);
    assert!(m.contains("'gold'"), "{m}");
    let (at, m) = syntax_error("tier = 'gold");
    assert_eq!((at, m.as_str()), (7, "this text is not closed"));
    let (at, m) = syntax_error("tier = null");
    assert_eq!(at, 7);
    assert!(m.contains("is null"), "{m}");
    let (at, m) = syntax_error("tier 'gold'");
    assert_eq!(at, 5);
    assert!(m.contains("expected a comparison"), "{m}");
    let (at, m) = syntax_error("(tier = 'a'");
    assert_eq!((at, m.as_str()), (11, "expected `)`, found the end"));
    let (at, m) = syntax_error("tier = 'a' tier = 'b'");
    assert_eq!(at, 11);
    assert!(m.contains("expected `and`, `or`"), "{m}");
    let (at, m) = syntax_error("ltv > 1.2.3");
    assert_eq!((at, m.as_str()), (6, "`1.2.3` is not a number"));
    let (at, _) = syntax_error("tier ~ 'a'");
    assert_eq!(at, 5);
    let (at, m) = syntax_error("in = 1");
    assert_eq!(at, 0);
    assert!(m.contains("double quotes"), "{m}");
    let (at, m) = syntax_error("tier in ('a' 'b')");
    assert_eq!(
        (at, m.as_str()),
        (13, "expected `,` or `)`, found text 'b'")
    );
    assert_eq!(syntax_error("").1, "expected a column name, found the end");
    let (at, m) = syntax_error("tier is 'x'");
    assert_eq!(
        (at, m.as_str()),
        (8, "expected `null` after `is`, found text 'x'")
    );
}

#[test]
fn a_syntax_error_renders_a_caret_under_the_problem() {
    let e = Filter::parse("ltv > 'x' and").expect_err("incomplete");
    assert_eq!(
        e.to_string(),
        "expected a column name, found the end at character 14:\n  ltv > 'x' and\n               ^"
    );
}

#[test]
fn binding_names_every_unknown_column_once() {
    let f = Filter::parse("tierr = 'a' or ltv > 1 or tierr = 'b' or nope is null").expect("parses");
    let errors = f.bind(&cols()).expect_err("unknown columns");
    let names: Vec<_> = errors
        .iter()
        .map(|e| match e {
            FilterError::UnknownColumn { column, available } => {
                assert!(available.contains("Loyalty Tier"));
                column.as_str()
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(names, ["tierr", "nope"]);
    assert_eq!(columns(&f), ["tierr", "ltv", "nope"]);
}

#[test]
fn text_comparisons() {
    let r = csv_row(["gold ", "120", "yes", "US", "A", "2024-05-01", ""]);
    assert_eq!(eval("tier = 'gold'", &r), Ok(true), "cells are trimmed");
    assert_eq!(eval("tier = 'Gold'", &r), Ok(false), "case matters");
    assert_eq!(eval("tier != 'silver'", &r), Ok(true));
    assert_eq!(eval("tier in ('silver', 'gold')", &r), Ok(true));
    assert_eq!(eval("tier not in ('silver', 'gold')", &r), Ok(false));
    assert_eq!(
        eval("joined >= '2024-01-01' and joined < '2025-01-01'", &r),
        Ok(true)
    );
    assert_eq!(eval("\"Loyalty Tier\" = 'A'", &r), Ok(true));
    // A number cell compared with text compares its text.
    assert_eq!(
        eval("ltv = '120'", &row(&[Value::Null, Value::Int(120)])),
        Ok(true)
    );
}

#[test]
fn numbers_compare_numerically_and_integers_exactly() {
    let r = csv_row(["", " 120.50", "", "", "", "", ""]);
    assert_eq!(eval("ltv > 100", &r), Ok(true));
    assert_eq!(eval("ltv > 99.5e1", &r), Ok(false));
    assert_eq!(eval("ltv = 120.5", &r), Ok(true));
    assert_eq!(eval("ltv in (1, 120.5)", &r), Ok(true));
    let big = csv_row(["", "9007199254740993", "", "", "", "", ""]);
    assert_eq!(eval("ltv = 9007199254740993", &big), Ok(true));
    assert_eq!(
        eval("ltv = 9007199254740992", &big),
        Ok(false),
        "no float rounding"
    );
    let typed = row(&[Value::Null, Value::Number("1e3".into())]);
    assert_eq!(eval("ltv = 1000", &typed), Ok(true));
    assert_eq!(
        eval("ltv <= -1", &row(&[Value::Null, Value::Int(-1)])),
        Ok(true)
    );
}

#[test]
fn booleans_read_like_the_mapping_reads_them() {
    for (cell, expect) in [
        ("yes", true),
        ("TRUE", true),
        ("1", true),
        ("no", false),
        ("f", false),
    ] {
        let r = csv_row(["", "", cell, "", "", "", ""]);
        assert_eq!(eval("vip = true", &r), Ok(expect), "{cell}");
    }
    let r = row(&[Value::Null, Value::Null, Value::Bool(true)]);
    assert_eq!(eval("vip = true", &r), Ok(true));
    assert_eq!(eval("vip != true", &r), Ok(false));
}

#[test]
fn a_cell_that_cannot_be_compared_is_a_problem_naming_column_value_and_rule() {
    let r = csv_row(["gold", "abc", "maybe", "", "", "", ""]);
    let p = eval("ltv > 100", &r).expect_err("not a number");
    assert_eq!(p.column, "ltv");
    assert_eq!(p.value, "abc");
    assert_eq!(
        p.rule,
        "the segment filter `ltv > 100` compares this column with a number, and this text is not one"
    );
    let p = eval("vip = true", &r).expect_err("not a boolean");
    assert_eq!((p.column.as_str(), p.value.as_str()), ("vip", "maybe"));
    let date = row(&[Value::Null, Value::Date(chrono::NaiveDate::MIN)]);
    assert!(eval("ltv > 1", &date).is_err());
    // Short-circuit: a false left side decides `and` without reading the bad cell.
    assert_eq!(eval("tier = 'silver' and ltv > 100", &r), Ok(false));
    assert_eq!(eval("tier = 'gold' or ltv > 100", &r), Ok(true));
}

#[test]
fn nulls_follow_sql_three_valued_logic() {
    let r = row(&[Value::Null, text("  "), Value::Null, text("US")]);
    assert_eq!(eval("tier is null", &r), Ok(true));
    assert_eq!(eval("ltv is null", &r), Ok(true), "blank text is null");
    assert_eq!(eval("tier is not null", &r), Ok(false));
    assert_eq!(eval("tier = 'gold'", &r), Ok(false));
    assert_eq!(
        eval("tier != 'gold'", &r),
        Ok(false),
        "null != x is unknown"
    );
    assert_eq!(
        eval("not tier = 'gold'", &r),
        Ok(false),
        "not unknown is unknown"
    );
    assert_eq!(eval("tier not in ('gold')", &r), Ok(false));
    assert_eq!(
        eval("ltv > 5", &r),
        Ok(false),
        "blank is null, not a bad number"
    );
    assert_eq!(eval("tier = 'gold' or country = 'US'", &r), Ok(true));
    assert_eq!(eval("tier = 'gold' and country = 'US'", &r), Ok(false));
    assert_eq!(
        eval("not (tier = 'gold' and country = 'FR')", &r),
        Ok(true),
        "unknown and false is false"
    );
    // A short row (missing cells) reads as null.
    assert_eq!(eval("note is null", &row(&[])), Ok(true));
}

fn arb_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_][a-z0-9_.]{0,8}",
        "[A-Za-z \"'()]{1,10}",
        Just("and".to_owned()),
        Just("Null".to_owned()),
        "\\PC{1,6}",
    ]
    .prop_filter("no empty names", |s| !s.is_empty())
}

fn arb_literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        "\\PC{0,8}".prop_map(Literal::Text),
        "'[a']{0,4}'".prop_map(Literal::Text),
        any::<i64>().prop_map(|i| Literal::Number(i.to_string())),
        (-1e9f64..1e9).prop_map(|f| Literal::Number(format!("{f}"))),
        (1u32..999, -20i32..20).prop_map(|(m, e)| Literal::Number(format!("{m}.5e{e}"))),
        any::<bool>().prop_map(Literal::Bool),
    ]
}

fn arb_op() -> impl Strategy<Value = CompareOp> {
    prop_oneof![
        Just(CompareOp::Eq),
        Just(CompareOp::Ne),
        Just(CompareOp::Lt),
        Just(CompareOp::Le),
        Just(CompareOp::Gt),
        Just(CompareOp::Ge),
    ]
}

fn arb_filter() -> impl Strategy<Value = Filter> {
    let leaf = prop_oneof![
        (arb_name(), arb_op(), arb_literal()).prop_map(|(column, op, literal)| Filter::Compare {
            column,
            op,
            literal
        }),
        (
            arb_name(),
            any::<bool>(),
            prop::collection::vec(arb_literal(), 1..4)
        )
            .prop_map(|(column, negated, literals)| Filter::In {
                column,
                negated,
                literals
            }),
        (arb_name(), any::<bool>())
            .prop_map(|(column, negated)| Filter::IsNull { column, negated }),
    ];
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Filter::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Filter::Or),
            inner.prop_map(|a| Filter::Not(Box::new(a))),
        ]
    })
}

/// A reference evaluator over plain optional integers: SQL semantics written the obvious way.
fn reference(f: &Filter, cell: &dyn Fn(&str) -> Option<i64>) -> Option<bool> {
    match f {
        Filter::And(ops) => {
            let all: Vec<_> = ops.iter().map(|o| reference(o, cell)).collect();
            if all.contains(&Some(false)) {
                Some(false)
            } else if all.iter().all(|t| *t == Some(true)) {
                Some(true)
            } else {
                None
            }
        }
        Filter::Or(ops) => {
            let all: Vec<_> = ops.iter().map(|o| reference(o, cell)).collect();
            if all.contains(&Some(true)) {
                Some(true)
            } else if all.iter().all(|t| *t == Some(false)) {
                Some(false)
            } else {
                None
            }
        }
        Filter::Not(a) => reference(a, cell).map(|t| !t),
        Filter::IsNull { column, negated } => Some(cell(column).is_none() != *negated),
        Filter::Compare {
            column,
            op,
            literal: Literal::Number(n),
        } => {
            let (c, n) = (cell(column)?, n.parse::<i64>().ok()?);
            Some(match op {
                CompareOp::Eq => c == n,
                CompareOp::Ne => c != n,
                CompareOp::Lt => c < n,
                CompareOp::Le => c <= n,
                CompareOp::Gt => c > n,
                CompareOp::Ge => c >= n,
            })
        }
        Filter::In {
            column,
            negated,
            literals,
        } => {
            let c = cell(column)?;
            let found = literals
                .iter()
                .any(|l| matches!(l, Literal::Number(n) if n.parse::<i64>().ok() == Some(c)));
            Some(found != *negated)
        }
        Filter::Compare { .. } => None,
    }
}

fn arb_int_filter() -> impl Strategy<Value = Filter> {
    let name = prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("c".to_owned())
    ];
    let lit = (-3i64..4).prop_map(|i| Literal::Number(i.to_string()));
    let leaf = prop_oneof![
        (name.clone(), arb_op(), lit.clone()).prop_map(|(column, op, literal)| Filter::Compare {
            column,
            op,
            literal
        }),
        (
            name.clone(),
            any::<bool>(),
            prop::collection::vec(lit, 1..3)
        )
            .prop_map(|(column, negated, literals)| Filter::In {
                column,
                negated,
                literals
            }),
        (name, any::<bool>()).prop_map(|(column, negated)| Filter::IsNull { column, negated }),
    ];
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Filter::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Filter::Or),
            inner.prop_map(|a| Filter::Not(Box::new(a))),
        ]
    })
}

proptest! {
    /// The canonical text parses back to the same filter.
    #[test]
    fn display_then_parse_is_the_identity(f in arb_filter()) {
        let text = f.to_string();
        let back = Filter::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(back, f);
    }

    /// Evaluation agrees with SQL's three-valued logic (a reference evaluator); CSV, JSON and
    /// SQL spellings of the same cells give the same answer.
    #[test]
    fn evaluation_is_sql_three_valued_logic(
        f in arb_int_filter(),
        cells in prop::collection::vec(prop::option::of(-3i64..4), 3),
    ) {
        let columns = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let bound = f.bind(&columns).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let cell = |name: &str| cells[columns.iter().position(|c| c == name).unwrap_or(0)];
        let expect = reference(&f, &cell) == Some(true);
        let as_text = row(&cells.iter().map(|c| c.map_or(text(""), |i| text(&i.to_string()))).collect::<Vec<_>>());
        let as_ints = row(&cells.iter().map(|c| c.map_or(Value::Null, Value::Int)).collect::<Vec<_>>());
        prop_assert_eq!(bound.matches(&as_text), Ok(expect), "{}", f);
        prop_assert_eq!(bound.matches(&as_ints), Ok(expect), "{}", f);
    }

    /// Nothing panics on arbitrary input.
    #[test]
    fn arbitrary_text_parses_or_fails_cleanly(s in "\\PC{0,40}") {
        if let Err(FilterError::Syntax { at, .. }) = Filter::parse(&s) {
            prop_assert!(at <= s.chars().count());
        }
    }
}

// ---- regression tests: issue 12 (hostile filters) ----

/// A quarter of a tokio worker's stack (2 MiB), in a debug build, whose frames are several
/// times larger than a release build's.
const SMALL_STACK: usize = 512 * 1024;

/// Runs `f` on a thread with a small stack ([`SMALL_STACK`]), so that a walk of a filter that
/// recursed once per operand, or too deep, would overflow here first.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(f)
        .expect("spawns")
        .join()
        .expect("no panic, no overflow");
}

#[test]
fn deeply_nested_parentheses_overflowed_the_stack() {
    // 10,000 `(` crashed `validate` and `plan` (SIGABRT); now a syntax error at the first `(`
    // past the limit.
    on_small_stack(|| {
        let text = format!("{}tier = 'a'{}", "(".repeat(10_000), ")".repeat(10_000));
        let (at, m) = syntax_error(&text);
        assert_eq!(at, MAX_NESTING, "{m}");
        assert!(m.contains(&format!("at most {MAX_NESTING} deep")), "{m}");
    });
}

#[test]
fn deeply_nested_not_overflowed_the_stack() {
    on_small_stack(|| {
        let text = format!("{}tier = 'a'", "not ".repeat(20_000));
        let (at, m) = syntax_error(&text);
        assert_eq!(at, 4 * MAX_NESTING, "{m}");
        // The error renders with its caret without trouble.
        let rendered = Filter::parse(&text).expect_err("too deep").to_string();
        assert!(rendered.ends_with('^'), "{rendered}");
    });
}

#[test]
fn nesting_at_the_limit_parses_binds_evaluates_displays_and_drops_on_a_small_stack() {
    on_small_stack(|| {
        // Alternate `(`, `not` and chains so that every kind of node is at every depth.
        let mut text = "tier = 'a'".to_owned();
        for i in 0..MAX_NESTING {
            text = if i % 2 == 0 {
                format!("not {text}")
            } else {
                format!("(ltv > 1 or {text} and vip = true)")
            };
        }
        let f = Filter::parse(&text).expect("the limit itself is allowed");
        let back = Filter::parse(&f.to_string()).expect("canonical text parses");
        assert_eq!(back, f);
        let bound = f.bind(&cols()).expect("binds");
        let r = csv_row(["a", "0", "yes", "", "", "", ""]);
        assert!(bound.matches(&r).is_ok());
        let copy = bound.clone();
        assert_eq!(copy, bound);
        assert!(!format!("{f:?}").is_empty());
        drop((f, back, bound, copy));
        // One more level is refused.
        assert!(Filter::parse(&format!("not {text}")).is_err());
    });
}

#[test]
fn a_long_chain_of_or_is_one_node_not_a_deep_tree() {
    // 100,000 `or`s once made a left-deep tree 100,000 levels deep, which every walk (bind,
    // evaluation, display, clone, drop) recursed through.
    on_small_stack(|| {
        let terms: Vec<String> = (0..100_000).map(|i| format!("ltv = {i}")).collect();
        let text = terms.join(" or ");
        let f = Filter::parse(&text).expect("parses");
        assert!(matches!(&f, Filter::Or(ops) if ops.len() == 100_000));
        assert_eq!(f.to_string(), text);
        let bound = f.bind(&cols()).expect("binds");
        let hit = csv_row(["", "99999", "", "", "", "", ""]);
        let miss = csv_row(["", "-1", "", "", "", "", ""]);
        assert_eq!(bound.matches(&hit), Ok(true));
        assert_eq!(bound.matches(&miss), Ok(false));
        let and_text = terms.join(" and ");
        let g = Filter::parse(&and_text).expect("parses");
        assert_eq!(g.bind(&cols()).expect("binds").matches(&hit), Ok(false));
        drop((f.clone(), f, g, bound));
    });
}

#[test]
fn unknown_column_errors_list_a_bounded_excerpt_of_the_columns() {
    // A model with 100,000 columns of 1,000 characters: the message names the first ones.
    let columns: Vec<String> = (0..100_000)
        .map(|i| format!("{i}{}", "x".repeat(1_000)))
        .collect();
    let long_name = "n".repeat(10_000);
    let f = Filter::parse(&format!("\"{long_name}\" = 1 or nope = 2 or nope = 3")).expect("parses");
    let errors = f.bind(&columns).expect_err("unknown columns");
    assert_eq!(errors.len(), 2, "each unknown column once");
    for e in &errors {
        let m = e.to_string();
        assert!(m.len() < 4_000, "{} bytes", m.len());
        assert!(m.contains("… and 99980 more"), "{m}");
    }
}

#[test]
fn a_syntax_error_in_a_long_filter_echoed_all_of_it() {
    let mut text = vec!["ltv = 1"; 50_000].join(" or ");
    text.push_str(" or ltv =");
    let e = Filter::parse(&text).expect_err("incomplete");
    let m = e.to_string();
    assert!(m.len() < 300, "{} bytes", m.len());
    let lines: Vec<&str> = m.lines().collect();
    assert_eq!(lines.len(), 3, "{m}");
    assert!(
        lines[1].starts_with("  …") && lines[1].ends_with("or ltv ="),
        "{m}"
    );
    // The caret is under the end, where the value is missing.
    assert_eq!(
        lines[2].chars().count(),
        lines[1].chars().count() + 1,
        "{m}"
    );
}
