//! Values as a model source yields them, before any mapping rule is applied.

use std::fmt;

/// One cell of a model row, typed as the source knows it.
///
/// CSV cells are always [`Value::Text`]; typed sources (JSONL, SQL, Parquet) use the other
/// variants. Numbers that are not plain integers are kept as their decimal text so that money
/// and identifiers are never rounded through a float.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL `NULL`, JSON `null`, or a missing JSON key.
    Null,
    Bool(bool),
    Int(i64),
    /// A decimal number as text, e.g. `"412.50"` or `"1e3"`; always parses as a finite number.
    Number(String),
    Text(String),
    /// A calendar date.
    Date(chrono::NaiveDate),
    /// A point in time, kept as ISO-8601 text in UTC (`2024-05-01T12:00:00Z`).
    Timestamp(String),
    /// A value this tool never sends (array, object, binary...): `kind` names it for the
    /// rejection message.
    Unsupported {
        kind: &'static str,
        text: String,
    },
}

impl Value {
    /// Replaces `self` with text `s`, reusing the existing allocation when it already holds text.
    pub fn set_text(&mut self, s: &str) {
        if let Value::Text(buf) = self {
            buf.clear();
            buf.push_str(s);
        } else {
            *self = Value::Text(s.to_owned());
        }
    }

    /// The type name used in messages (`text`, `integer`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Number(_) => "number",
            Value::Text(_) => "text",
            Value::Date(_) => "date",
            Value::Timestamp(_) => "timestamp",
            Value::Unsupported { kind, .. } => kind,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Number(s) | Value::Text(s) | Value::Timestamp(s) => f.write_str(s),
            Value::Date(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            Value::Unsupported { text, .. } => f.write_str(text),
        }
    }
}

/// One record of a model, reused across reads to avoid allocating per row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceRow {
    /// Where the record is in its source, for messages: the line for text files (1 = header),
    /// the record number (1-based) for others.
    pub number: u64,
    /// One value per model column, in the order of [`crate::ports::ModelSource::columns`].
    pub values: Vec<Value>,
    /// Set when the source could not read this record properly (ragged row, invalid UTF-8...).
    /// The planner rejects such a row with this text and reads on.
    pub defect: Option<String>,
}

impl SourceRow {
    /// Clears the row for the next record, keeping allocations.
    pub fn reset(&mut self, number: u64, columns: usize) {
        self.number = number;
        self.defect = None;
        self.values.resize(columns, Value::Null);
    }
}

/// A value in the form that is fingerprinted, stored in the snapshot and sent to Attentive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Canonical {
    Bool(bool),
    Int(i64),
    /// A JSON number literal in canonical decimal form, sent unquoted.
    Number(NumberText),
    Text(String),
}

/// Canonical decimal text that is sent as a JSON number literal, digit for digit.
///
/// Canonical form: no `+` sign, no leading zeros in the integer part, no trailing zeros in the
/// fraction, no trailing `.`, `-0` is `0`, exponent marker lower case. So `"0412.50"` and
/// `"412.5"` are the same number and never cause a send.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NumberText(String);

impl NumberText {
    /// Accepts `s` (after trimming) when it is a finite decimal number; `None` otherwise.
    pub fn parse(s: &str) -> Option<Self> {
        let t = s.trim();
        let (neg, body) = match t.as_bytes().first()? {
            b'-' => (true, &t[1..]),
            b'+' => (false, &t[1..]),
            _ => (false, t),
        };
        let (mantissa, exponent) = match body.find(['e', 'E']) {
            Some(i) => (&body[..i], Some(&body[i + 1..])),
            None => (body, None),
        };
        let (int, frac) = match mantissa.find('.') {
            Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
            None => (mantissa, ""),
        };
        let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
            return None;
        }
        let exp = match exponent {
            Some(e) => {
                let (eneg, ed) = match e.as_bytes().first()? {
                    b'-' => (true, &e[1..]),
                    b'+' => (false, &e[1..]),
                    _ => (false, e),
                };
                if ed.is_empty() || !digits(ed) {
                    return None;
                }
                let ed = ed.trim_start_matches('0');
                (!ed.is_empty()).then(|| format!("e{}{}", if eneg { "-" } else { "" }, ed))
            }
            None => None,
        };
        let int = int.trim_start_matches('0');
        let frac = frac.trim_end_matches('0');
        let zero = int.is_empty() && frac.is_empty();
        let mut out = String::with_capacity(t.len());
        if neg && !zero {
            out.push('-');
        }
        out.push_str(if int.is_empty() { "0" } else { int });
        if !frac.is_empty() {
            out.push('.');
            out.push_str(frac);
        }
        if let (Some(e), false) = (exp, zero) {
            out.push_str(&e);
        }
        Some(NumberText(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Canonical {
    /// The value as text, for messages, reports and the snapshot.
    pub fn to_text(&self) -> String {
        match self {
            Canonical::Bool(b) => b.to_string(),
            Canonical::Int(i) => i.to_string(),
            Canonical::Number(n) => n.as_str().to_owned(),
            Canonical::Text(s) => s.clone(),
        }
    }

    /// The one-letter type tag used by fingerprints and the snapshot (`b`, `i`, `n`, `s`).
    pub fn tag(&self) -> char {
        match self {
            Canonical::Bool(_) => 'b',
            Canonical::Int(_) => 'i',
            Canonical::Number(_) => 'n',
            Canonical::Text(_) => 's',
        }
    }

    /// Rebuilds a value from its [`Canonical::tag`] and [`Canonical::to_text`] form.
    pub fn from_tagged(tag: char, text: &str) -> Option<Canonical> {
        match tag {
            'b' => text.parse().ok().map(Canonical::Bool),
            'i' => text.parse().ok().map(Canonical::Int),
            'n' => NumberText::parse(text).map(Canonical::Number),
            's' => Some(Canonical::Text(text.to_owned())),
            _ => None,
        }
    }
}

impl serde::Serialize for Canonical {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Canonical::Bool(b) => s.serialize_bool(*b),
            Canonical::Int(i) => s.serialize_i64(*i),
            Canonical::Number(n) => {
                // A raw literal keeps every digit (no round trip through f64).
                match serde_json::value::RawValue::from_string(n.0.clone()) {
                    Ok(raw) => raw.serialize(s),
                    Err(_) => s.serialize_str(&n.0),
                }
            }
            Canonical::Text(t) => s.serialize_str(t),
        }
    }
}

impl fmt::Display for Canonical {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Canonical::Text(s) => write!(f, "{s:?}"),
            other => f.write_str(&other.to_text()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_text_is_canonical() {
        let n = |s: &str| NumberText::parse(s).map(|n| n.0);
        assert_eq!(n("0412.50").as_deref(), Some("412.5"));
        assert_eq!(n(" +3 ").as_deref(), Some("3"));
        assert_eq!(n("-0.000").as_deref(), Some("0"));
        assert_eq!(n("1E+03").as_deref(), Some("1e3"));
        assert_eq!(n(".5").as_deref(), Some("0.5"));
        assert_eq!(n("5.").as_deref(), Some("5"));
        assert_eq!(
            n("12345678901234567890.123").as_deref(),
            Some("12345678901234567890.123")
        );
        for bad in ["", "-", ".", "1.2.3", "abc", "1e", "NaN", "inf", "1,5"] {
            assert_eq!(n(bad), None, "{bad}");
        }
    }

    #[test]
    fn numbers_serialize_digit_for_digit() {
        let v = Canonical::Number(NumberText::parse("12345678901234567890.123").unwrap());
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            "12345678901234567890.123"
        );
    }
}
