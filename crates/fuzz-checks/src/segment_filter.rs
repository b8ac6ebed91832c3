//! `segment_filter`: the segment predicate language ([`Filter::parse`], its `Display`, binding
//! and evaluation).
//!
//! The first input byte picks one of two modes:
//!
//! - **text** (even): the rest, as UTF-8, is parsed. A syntax error points at a character of
//!   the text (or just past its end). A filter prints in a canonical form that parses back to
//!   the same filter and prints the same again; it binds to the columns it names and to no
//!   fewer (every missing one is named); on a few rows (nulls, blanks, each literal of the
//!   filter as a cell) `not f` is never true when `f` is, evaluating `f` fails exactly when
//!   evaluating `not f` does, and `f` is never true of a row of nulls unless it tests for
//!   null.
//! - **tree** (odd): a filter tree is built from the rest (any column name, any text, numbers,
//!   `and`/`or` of 2 to 4 operands, nesting up to 6 deep) and printed; the text must parse
//!   back to the same tree.

use sync_core::segment::{self, CompareOp, Filter, FilterError, Literal};
use sync_core::value::{SourceRow, Value};

use crate::Bytes;

pub fn check(data: &[u8]) {
    let mut b = Bytes::new(data);
    if b.byte() & 1 == 0 {
        if let Ok(text) = std::str::from_utf8(b.rest()) {
            text_mode(text);
        }
    } else {
        let tree = build(&mut b, 0);
        let text = tree.to_string();
        match Filter::parse(&text) {
            Ok(back) => assert_eq!(back, tree, "{text}"),
            Err(e) => panic!("{tree:?} printed as {text:?}, which does not parse: {e}"),
        }
    }
}

fn text_mode(text: &str) {
    let f = match Filter::parse(text) {
        Ok(f) => f,
        Err(e) => {
            match &e {
                FilterError::Syntax { at, message, .. } => {
                    assert!(*at <= text.chars().count(), "error at {at}: {message}");
                    assert!(!message.is_empty());
                }
                other => panic!("parse gave {other:?}"),
            }
            let _ = e.to_string();
            return;
        }
    };
    let printed = f.to_string();
    let again = Filter::parse(&printed)
        .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which fails: {e}"));
    assert_eq!(again, f, "{text:?} printed as {printed:?}");
    assert_eq!(
        again.to_string(),
        printed,
        "the canonical form is a fixpoint"
    );

    let columns: Vec<String> = segment::columns(&f)
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert!(!columns.is_empty());
    let bound = f.bind(&columns).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(bound.text(), printed);
    match f.bind(&[]) {
        Ok(_) => panic!("{printed} bound to no columns"),
        Err(errors) => assert_eq!(errors.len(), columns.len(), "{errors:?}"),
    }
    let not = Filter::Not(Box::new(f.clone()));
    let bound_not = not.bind(&columns).unwrap_or_else(|e| panic!("{e:?}"));
    let tests_null = printed.to_ascii_lowercase().contains("null");
    for value in cells(&f) {
        let row = SourceRow {
            number: 2,
            values: vec![value.clone(); columns.len()],
            defect: None,
        };
        let a = bound.matches(&row);
        let b = bound_not.matches(&row);
        assert_eq!(
            a.is_err(),
            b.is_err(),
            "{printed} on {value:?}: {a:?} / {b:?}"
        );
        assert!(
            !(a == Ok(true) && b == Ok(true)),
            "{printed} and its negation both hold on {value:?}"
        );
        if matches!(value, Value::Null) && !tests_null {
            assert_eq!(a, Ok(false), "{printed} on nulls");
        }
    }
}

/// The cells the filter is evaluated on: nulls, blanks, a few values and each literal.
fn cells(f: &Filter) -> Vec<Value> {
    let mut out = vec![
        Value::Null,
        Value::Text("  ".into()),
        Value::Text("gold".into()),
        Value::Int(100),
        Value::Bool(true),
        Value::Number("1.5".into()),
    ];
    let mut literals = Vec::new();
    collect_literals(f, &mut literals);
    for l in literals.into_iter().take(8) {
        out.push(match l {
            Literal::Text(s) => Value::Text(s.clone()),
            Literal::Number(n) => Value::Number(n.clone()),
            Literal::Bool(b) => Value::Bool(*b),
        });
    }
    out
}

fn collect_literals<'a>(f: &'a Filter, out: &mut Vec<&'a Literal>) {
    match f {
        Filter::And(operands) | Filter::Or(operands) => {
            for o in operands {
                collect_literals(o, out);
            }
        }
        Filter::Not(a) => collect_literals(a, out),
        Filter::Compare { literal, .. } => out.push(literal),
        Filter::In { literals, .. } => out.extend(literals),
        Filter::IsNull { .. } => {}
    }
}

/// A filter tree from the input, at most 6 deep.
fn build(b: &mut Bytes<'_>, depth: usize) -> Filter {
    let choice = if depth >= 6 {
        3 + b.below(3)
    } else {
        b.below(6)
    };
    match choice {
        // As the parser makes them: two operands or more.
        0 => Filter::And((0..2 + b.below(3)).map(|_| build(b, depth + 1)).collect()),
        1 => Filter::Or((0..2 + b.below(3)).map(|_| build(b, depth + 1)).collect()),
        2 => Filter::Not(Box::new(build(b, depth + 1))),
        3 => {
            let ops = [
                CompareOp::Eq,
                CompareOp::Ne,
                CompareOp::Lt,
                CompareOp::Le,
                CompareOp::Gt,
                CompareOp::Ge,
            ];
            Filter::Compare {
                column: column(b),
                op: ops[b.below(ops.len())],
                literal: literal(b),
            }
        }
        4 => {
            let column = column(b);
            let negated = b.byte() & 1 == 1;
            let n = 1 + b.below(4);
            Filter::In {
                column,
                negated,
                literals: (0..n).map(|_| literal(b)).collect(),
            }
        }
        _ => Filter::IsNull {
            column: column(b),
            negated: b.byte() & 1 == 1,
        },
    }
}

/// A column name: a plain one, a keyword, or any non-empty text.
fn column(b: &mut Bytes<'_>) -> String {
    match b.below(4) {
        0 => ["tier", "ltv", "a.b", "_x1"][b.below(4)].to_owned(),
        1 => ["and", "Not", "NULL", "in"][b.below(4)].to_owned(),
        _ => {
            let s = String::from_utf8_lossy(b.take(10)).into_owned();
            if s.is_empty() {
                "c".to_owned()
            } else {
                s
            }
        }
    }
}

fn literal(b: &mut Bytes<'_>) -> Literal {
    match b.below(4) {
        0 => Literal::Text(String::from_utf8_lossy(b.take(10)).into_owned()),
        1 => Literal::Bool(b.byte() & 1 == 1),
        2 => {
            let n = i64::from_le_bytes([
                b.byte(),
                b.byte(),
                b.byte(),
                b.byte(),
                b.byte(),
                b.byte(),
                b.byte(),
                b.byte(),
            ]);
            Literal::Number(n.to_string())
        }
        _ => {
            let forms = ["0.5", "-1.25e3", "+7", ".5", "5.", "1E-2", "007", "-0"];
            Literal::Number(forms[b.below(forms.len())].to_owned())
        }
    }
}
