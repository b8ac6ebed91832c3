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
    /// A boolean.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A decimal number as text, e.g. `"412.50"` or `"1e3"`; always parses as a finite number.
    Number(String),
    /// Text, as read (trimmed and normalized later, per the attribute's rules).
    Text(String),
    /// A calendar date.
    Date(chrono::NaiveDate),
    /// A point in time, kept as ISO-8601 text in UTC (`2024-05-01T12:00:00Z`).
    Timestamp(String),
    /// A value this tool never sends (array, object, binary...): `kind` names it for the
    /// rejection message.
    Unsupported {
        /// What the value is (`array`, `object`, `binary`...).
        kind: &'static str,
        /// The value as text, for the rejection message.
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
    /// A boolean.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A JSON number literal in canonical decimal form, sent unquoted.
    Number(NumberText),
    /// Text, normalized.
    Text(String),
}

/// Canonical decimal text that is sent as a JSON number literal, digit for digit.
///
/// Canonical form: plain decimal notation (an exponent is applied to the digits, exactly), no
/// `+` sign, no leading zeros in the integer part, no trailing zeros in the fraction, no
/// trailing `.`, `-0` is `0`. So `"0412.50"` and `"412.5"`, or `"100"`, `"1e2"` and
/// `"1.00E+2"`, are the same number and never cause a send. The digits are never rounded
/// through a float; a float is only used to check that Attentive (which reads numbers as
/// 64-bit floating point) can hold the value ([`NumberError`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NumberText(String);

/// Why a text is not a number Attentive can be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NumberError {
    /// Not a decimal number at all (`"12x"`, `"NaN"`, `"1,5"`).
    NotANumber,
    /// Too large for a finite 64-bit float (`1e400`): Attentive would refuse it.
    OutOfRange,
    /// Non-zero but so small that a 64-bit float rounds it to zero (`1e-400`): it would arrive
    /// as `0`.
    Underflow,
}

impl NumberError {
    /// The rule, in words, for rejection messages.
    pub fn rule(self) -> &'static str {
        match self {
            NumberError::NotANumber => "is not a number",
            NumberError::OutOfRange => {
                "is out of range: Attentive reads numbers as 64-bit floating point, which holds at most \u{b1}1.7976931348623157e308"
            }
            NumberError::Underflow => {
                "is too small: Attentive reads numbers as 64-bit floating point, in which this non-zero number underflows to 0 (the smallest non-zero magnitude is about 4.9e-324)"
            }
        }
    }
}

/// A decimal number as written: sign, integer and fraction digits, exponent.
struct Decimal<'a> {
    neg: bool,
    int: &'a str,
    frac: &'a str,
    /// The exponent written after `e` (saturated far beyond any finite float).
    written_exp: i64,
}

impl<'a> Decimal<'a> {
    /// Reads `[+-]digits[.digits][(e|E)[+-]digits]` (at least one mantissa digit).
    fn read(t: &'a str) -> Option<Decimal<'a>> {
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
        let written_exp = match exponent {
            Some(e) => {
                let (eneg, ed) = match e.as_bytes().first()? {
                    b'-' => (true, &e[1..]),
                    b'+' => (false, &e[1..]),
                    _ => (false, e),
                };
                if ed.is_empty() || !digits(ed) {
                    return None;
                }
                // Saturate: anything beyond 10^18 is far out of any float's range.
                let mag = ed.bytes().fold(0i64, |acc, b| {
                    acc.saturating_mul(10)
                        .saturating_add(i64::from(b - b'0'))
                        .min(1_000_000_000_000_000_000)
                });
                if eneg {
                    -mag
                } else {
                    mag
                }
            }
            None => 0,
        };
        Some(Decimal {
            neg,
            int,
            frac,
            written_exp,
        })
    }

    /// The significant digits (no leading or trailing zeros; empty for zero) and the power of
    /// ten of the last one.
    fn significand(&self) -> (String, i64) {
        let mut digits: String = self.int.chars().chain(self.frac.chars()).collect();
        let lead = digits.len() - digits.trim_start_matches('0').len();
        digits.drain(..lead);
        let trail = digits.len() - digits.trim_end_matches('0').len();
        digits.truncate(digits.len() - trail);
        let exp = self
            .written_exp
            .saturating_sub(self.frac.len() as i64)
            .saturating_add(trail as i64);
        (digits, exp)
    }
}

/// Plain decimal notation of `digits × 10^exp`; the caller bounds `exp`.
fn plain(neg: bool, digits: &str, exp: i64) -> String {
    let mut out = String::with_capacity(digits.len() + exp.unsigned_abs() as usize + 3);
    if digits.is_empty() {
        out.push('0');
        return out;
    }
    if neg {
        out.push('-');
    }
    if exp >= 0 {
        out.push_str(digits);
        out.extend(std::iter::repeat_n('0', exp as usize));
    } else {
        let point = digits.len() as i64 + exp; // digits before the decimal point
        if point > 0 {
            let (i, f) = digits.split_at(point as usize);
            out.push_str(i);
            out.push('.');
            out.push_str(f);
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-point) as usize));
            out.push_str(digits);
        }
    }
    out
}

impl NumberText {
    /// Accepts `s` (after trimming) when it is a decimal number that a 64-bit float can hold
    /// ([`NumberText::parse_checked`]); `None` otherwise.
    pub fn parse(s: &str) -> Option<Self> {
        Self::parse_checked(s).ok()
    }

    /// The canonical form of `s` (after trimming), or why it is not a number Attentive can be
    /// sent: not a decimal number, out of a finite 64-bit float's range, or a non-zero value
    /// that a 64-bit float rounds to zero.
    pub fn parse_checked(s: &str) -> Result<Self, NumberError> {
        let d = Decimal::read(s.trim()).ok_or(NumberError::NotANumber)?;
        let (digits, exp) = d.significand();
        if digits.is_empty() {
            return Ok(NumberText("0".to_owned()));
        }
        // The power of ten of the leading digit; a finite, non-zero f64 lies in 4.9e-324..1.8e308.
        let order = exp.saturating_add(digits.len() as i64 - 1);
        if order > 308 {
            return Err(NumberError::OutOfRange);
        }
        if order < -325 {
            return Err(NumberError::Underflow);
        }
        // Near the limits, let the (correctly rounded) float parser decide.
        let x: f64 = format!("{digits}e{exp}")
            .parse()
            .map_err(|_| NumberError::NotANumber)?;
        if x.is_infinite() {
            return Err(NumberError::OutOfRange);
        }
        if x == 0.0 {
            return Err(NumberError::Underflow);
        }
        Ok(NumberText(plain(d.neg, &digits, exp)))
    }

    /// A number read back from storage: its canonical form, or, for a value today's range
    /// rules would refuse, its text as stored (so an old snapshot still reads).
    fn from_stored(s: &str) -> Option<Self> {
        match Self::parse_checked(s) {
            Ok(n) => Some(n),
            Err(NumberError::NotANumber) => None,
            Err(_) => Some(NumberText(s.trim().to_owned())),
        }
    }

    /// The text, canonical.
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
            'n' => NumberText::from_stored(text).map(Canonical::Number),
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
        assert_eq!(n("1E+03").as_deref(), Some("1000"));
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
