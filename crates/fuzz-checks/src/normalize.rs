//! `normalize`: [`normalize::standard`] for each of the 19 standard fields and
//! [`normalize::custom`] for each declared custom type (and none).
//!
//! The first input byte picks the field or type, the second the kind of cell (text, number
//! text, integer, boolean, date, timestamp text, null, unsupported), the third the options
//! (date order, default phone region); the rest is the cell. Checked:
//!
//! - nothing is empty (`Ok(None)`) but a null or blank cell;
//! - **idempotence**: the canonical value, fed back in as the cell it would be read as (text,
//!   integer, number text, boolean), normalizes to itself, with the same value fingerprint;
//! - each field's canonical form: an email has one `@`, no whitespace, is lower case and at
//!   most 100 characters; a phone is E.164 (`+` and up to 15 digits); free text is trimmed,
//!   single-spaced and within its length; a country is two upper-case letters; an age is
//!   0 to 150; a date of birth is `YYYY-MM-DD`, not after today; coordinates are decimal
//!   numbers within their range; a number is a finite decimal; a date is `YYYY-MM-DD`; a
//!   datetime ends in `Z`.

use chrono::NaiveDate;
use sync_core::fingerprint::value_fingerprint;
use sync_core::mapping::{CustomType, DateOrder, NormalizeOptions, StandardField};
use sync_core::normalize;
use sync_core::value::{Canonical, NumberText, Value};

use crate::Bytes;

/// What is normalized: a standard field, or a custom attribute of a declared type (or none).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Standard(StandardField),
    Custom(Option<CustomType>),
}

const CUSTOM: [Option<CustomType>; 6] = [
    None,
    Some(CustomType::String),
    Some(CustomType::Number),
    Some(CustomType::Bool),
    Some(CustomType::Date),
    Some(CustomType::Datetime),
];

/// The day dates of birth are checked against.
fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 15).unwrap_or_default()
}

fn run(target: Target, v: &Value, opts: &NormalizeOptions) -> Result<Option<Canonical>, String> {
    match target {
        Target::Standard(f) => normalize::standard(f, v, opts),
        Target::Custom(t) => normalize::custom(v, t, opts),
    }
    .map_err(|e| e.0)
}

pub fn check(data: &[u8]) {
    let mut b = Bytes::new(data);
    let n = StandardField::ALL.len() + CUSTOM.len();
    let i = b.below(n);
    let target = match StandardField::ALL.get(i) {
        Some(&f) => Target::Standard(f),
        None => Target::Custom(CUSTOM[i - StandardField::ALL.len()]),
    };
    let kind = b.byte();
    let o = b.byte();
    let regions = [
        None,
        Some(phonenumber::country::Id::US),
        Some(phonenumber::country::Id::GB),
        Some(phonenumber::country::Id::DE),
        Some(phonenumber::country::Id::IN),
        Some(phonenumber::country::Id::BR),
        Some(phonenumber::country::Id::IT),
        Some(phonenumber::country::Id::JP),
    ];
    let opts = NormalizeOptions {
        default_phone_region: regions[usize::from(o >> 2) % regions.len()],
        date_order: [
            DateOrder::Iso,
            DateOrder::Mdy,
            DateOrder::Dmy,
            DateOrder::Iso,
        ][usize::from(o & 3)],
        today: Some(today()),
    };
    let rest = b.rest();
    let text = || String::from_utf8_lossy(rest).into_owned();
    let int = || {
        let mut a = [0u8; 8];
        for (x, y) in a.iter_mut().zip(rest) {
            *x = *y;
        }
        i64::from_le_bytes(a)
    };
    let v = match kind % 10 {
        0..=2 => Value::Text(text()),
        3 => Value::Number(text()),
        4 => Value::Int(if rest.len() <= 1 {
            i64::from(rest.first().copied().unwrap_or(0))
        } else {
            int()
        }),
        5 => Value::Bool(rest.first().is_some_and(|x| x & 1 == 1)),
        6 => {
            // Days from 1970-01-01, within chrono's range.
            let days = int() % 3_000_000;
            Value::Date(
                NaiveDate::from_ymd_opt(1970, 1, 1)
                    .and_then(|d| d.checked_add_signed(chrono::Duration::days(days)))
                    .unwrap_or_default(),
            )
        }
        7 => Value::Timestamp(text()),
        8 => Value::Null,
        _ => Value::Unsupported {
            kind: "array",
            text: text(),
        },
    };

    let out = match run(target, &v, &opts) {
        Ok(out) => out,
        Err(rule) => {
            assert!(!rule.is_empty(), "{target:?} {v:?}: a rule without words");
            return;
        }
    };
    let Some(c) = out else {
        let blank = match &v {
            Value::Null => true,
            Value::Text(s) | Value::Number(s) | Value::Timestamp(s) => s.trim().is_empty(),
            _ => false,
        };
        assert!(blank, "{target:?}: {v:?} normalized to nothing");
        return;
    };
    form(target, &c, &v);

    // Fed back in as a source would read it, the canonical value is a fixpoint.
    let back = match &c {
        Canonical::Bool(x) => Value::Bool(*x),
        Canonical::Int(i) => Value::Int(*i),
        Canonical::Number(n) => Value::Number(n.as_str().to_owned()),
        Canonical::Text(s) => Value::Text(s.clone()),
    };
    match run(target, &back, &opts) {
        Ok(Some(again)) => {
            assert_eq!(again, c, "{target:?}: {v:?} → {c:?} → {again:?}");
            assert_eq!(value_fingerprint(&again), value_fingerprint(&c));
        }
        other => panic!("{target:?}: {v:?} → {c:?} → {other:?}"),
    }
}

/// The canonical form of each field and type.
fn form(target: Target, c: &Canonical, v: &Value) {
    use StandardField as F;
    let at = || format!("{target:?}: {v:?} → {c:?}");
    let text = match c {
        Canonical::Text(s) => Some(s.as_str()),
        _ => None,
    };
    match target {
        Target::Standard(F::Age) => {
            assert!(matches!(c, Canonical::Int(0..=150)), "{}", at());
        }
        Target::Standard(f) => {
            let s = text.unwrap_or_else(|| panic!("{}: standard fields are text", at()));
            match f {
                F::Email => {
                    assert_eq!(s.matches('@').count(), 1, "{}", at());
                    assert!(!s.chars().any(char::is_whitespace), "{}", at());
                    assert_eq!(s.to_lowercase(), s, "{}", at());
                    assert!(s.chars().count() <= normalize::MAX_EMAIL_CHARS, "{}", at());
                }
                F::Phone => {
                    let digits = s.strip_prefix('+').unwrap_or_default();
                    assert!(
                        (1..=15).contains(&digits.len())
                            && digits.bytes().all(|x| x.is_ascii_digit()),
                        "{}",
                        at()
                    );
                }
                F::FirstName
                | F::LastName
                | F::Address
                | F::City
                | F::State
                | F::Organization
                | F::Title
                | F::ZipCode => {
                    let max = if f == F::ZipCode {
                        32
                    } else {
                        normalize::MAX_TEXT_CHARS
                    };
                    assert!(s.chars().count() <= max, "{}", at());
                    assert_eq!(s.split_whitespace().collect::<Vec<_>>().join(" "), s);
                }
                F::Country => {
                    assert!(
                        s.len() == 2 && s.bytes().all(|x| x.is_ascii_uppercase()),
                        "{}",
                        at()
                    );
                }
                F::DateOfBirth => {
                    let d = iso_date(s).unwrap_or_else(|| panic!("{}", at()));
                    assert!(d <= today(), "{}", at());
                }
                F::Latitude | F::Longitude => {
                    let limit = if f == F::Latitude { 90.0 } else { 180.0 };
                    let x: f64 = s.parse().unwrap_or_else(|_| panic!("{}", at()));
                    assert!(x.is_finite() && x.abs() <= limit, "{}", at());
                }
                F::Region | F::TimeZone | F::Language | F::Website | F::Age => {
                    assert!(!s.is_empty() && s.trim() == s, "{}", at());
                }
            }
        }
        Target::Custom(Some(CustomType::String)) => {
            let s = text.unwrap_or_else(|| panic!("{}", at()));
            assert!(!s.is_empty() && s.trim() == s, "{}", at());
        }
        Target::Custom(Some(CustomType::Bool)) => {
            assert!(matches!(c, Canonical::Bool(_)), "{}", at());
        }
        Target::Custom(Some(CustomType::Date)) => {
            let s = text.unwrap_or_else(|| panic!("{}", at()));
            assert!(iso_date(s).is_some(), "{}", at());
        }
        Target::Custom(Some(CustomType::Datetime)) => {
            let s = text.unwrap_or_else(|| panic!("{}", at()));
            assert!(s.ends_with('Z'), "{}", at());
        }
        Target::Custom(Some(CustomType::Number) | None) => {}
    }
    match c {
        Canonical::Number(n) => {
            let x: f64 = n.as_str().parse().unwrap_or_else(|_| panic!("{}", at()));
            assert!(x.is_finite(), "{}: not a finite number", at());
            assert_eq!(NumberText::parse(n.as_str()).as_ref(), Some(n), "{}", at());
        }
        Canonical::Int(_) | Canonical::Bool(_) | Canonical::Text(_) => {
            if target == Target::Custom(Some(CustomType::Number)) {
                assert!(
                    !matches!(c, Canonical::Bool(_) | Canonical::Text(_)),
                    "{}",
                    at()
                );
            }
        }
    }
}

/// A date written `YYYY-MM-DD` (exactly ten characters).
fn iso_date(s: &str) -> Option<NaiveDate> {
    (s.len() == 10)
        .then(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .flatten()
}
