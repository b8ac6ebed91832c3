//! `jsonl_source`: [`sources::JsonlSource`] read to the end through [`ModelSource`].
//!
//! The first input byte says how the rest is handed to the source (all at once, or a few
//! bytes at a time so that lines cross buffer refills); the rest is the file. Checked:
//!
//! - the source opens exactly when one of the first 1,000 non-blank lines is a JSON object
//!   with a key (and they have at most 16,384 keys), and its columns are then the keys of
//!   those objects, each once;
//! - every non-blank line becomes exactly one row (none lost, none invented), numbered with
//!   its line, so numbers strictly increase;
//! - a row is a defect (every value null) exactly when its line is not a JSON object (or not
//!   UTF-8), as `serde_json` reads it, or has a column whose string is no text (a lone
//!   surrogate escape); a line with a key given twice may be one too;
//! - otherwise each value is the line's value for that key (the last one, for a key given
//!   twice) as `serde_json` reads it: null for a missing key or `null`, the same boolean, the
//!   same string, an integer when the number fits `i64`, otherwise the number's text exactly
//!   as written (also beyond `f64`, like `1e400`); arrays and objects are unsupported values
//!   of that kind.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Cursor;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value as Json;
use sources::{Error, JsonlSource};
use sync_core::ports::ModelSource;
use sync_core::value::{SourceRow, Value};

use crate::chunked::{chunk_size, Chunked};
use crate::Bytes;

const BOM: &[u8] = b"\xef\xbb\xbf";

/// How many non-blank lines the source learns its columns from.
const SAMPLE_LINES: usize = 1000;

/// The most columns a model may have.
const MAX_COLUMNS: usize = 16_384;

pub fn check(data: &[u8]) {
    let mut b = Bytes::new(data);
    let chunk = chunk_size(b.byte());
    let input = b.rest();

    // The lines as the source documents them: split at `\n`, a trailing `\r` dropped, a
    // byte-order mark dropped from the first; blank lines skipped.
    let mut lines: Vec<(u64, &[u8])> = Vec::new();
    for (i, line) in input.split(|&x| x == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = if i == 0 {
            line.strip_prefix(BOM).unwrap_or(line)
        } else {
            line
        };
        if !line.trim_ascii().is_empty() {
            lines.push((i as u64 + 1, line));
        }
    }
    // What serde_json makes of each: `Some(object)` for an object, its keys in order with the
    // JSON text of their values.
    let parsed: Vec<Option<Object>> = lines.iter().map(|(_, line)| object(line)).collect();
    let keys: BTreeSet<&String> = parsed
        .iter()
        .take(SAMPLE_LINES)
        .flatten()
        .flat_map(|o| o.iter().map(|(k, _)| k))
        .collect();

    let opened = if chunk == 0 {
        JsonlSource::from_reader(Cursor::new(input.to_vec()), "fuzz.jsonl")
    } else {
        JsonlSource::from_reader(Chunked::new(input.to_vec(), chunk), "fuzz.jsonl")
    };
    let mut src = match opened {
        Ok(src) => src,
        Err(Error::Json { message, .. }) => {
            assert!(
                keys.is_empty() || keys.len() > MAX_COLUMNS,
                "refused ({message}) with keys {keys:?}"
            );
            return;
        }
        Err(e) => panic!("unexpected error from an in-memory JSONL: {e}"),
    };
    let columns = src.columns().to_vec();
    let unique: BTreeSet<&String> = columns.iter().collect();
    assert_eq!(unique.len(), columns.len(), "a column twice: {columns:?}");
    assert_eq!(unique, keys, "columns vs the keys of the first objects");

    let mut row = SourceRow::default();
    let mut n = 0;
    loop {
        match src.next_row(&mut row) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => panic!("an in-memory JSONL read failed: {e}"),
        }
        let Some(&(number, line)) = lines.get(n) else {
            panic!("a row past the last non-blank line: {row:?}");
        };
        assert_eq!(row.number, number, "row {} of {:?}", n + 1, lossy(line));
        assert_eq!(row.values.len(), columns.len());
        match (&row.defect, &parsed[n]) {
            (Some(_), None) => {
                assert!(row.values.iter().all(|v| *v == Value::Null), "{row:?}");
            }
            // A key given twice may be refused; a string that is no text (a lone surrogate
            // escape, which serde_json reads as an error only when it decodes the string) is.
            (Some(_), Some(object)) if duplicated(object) || no_text(object, &columns) => {}
            (Some(d), Some(_)) => panic!("line {number}: a defect ({d}) for an object"),
            (None, None) => panic!("line {number}: {:?} read as {row:?}", lossy(line)),
            (None, Some(object)) => {
                for (column, value) in columns.iter().zip(&row.values) {
                    // The last value of a key given twice.
                    let raw = object.iter().rev().find(|(k, _)| k == column);
                    same(value, raw.map(|(_, v)| v.get()), number, column);
                }
            }
        }
        n += 1;
    }
    assert_eq!(n, lines.len(), "rows vs non-blank lines");
    assert!(
        matches!(src.next_row(&mut row), Ok(false)),
        "the end is sticky"
    );
}

fn lossy(line: &[u8]) -> String {
    String::from_utf8_lossy(line).into_owned()
}

/// One JSON object: its keys in order, each with the JSON text of its value.
type Object = Vec<(String, Box<RawValue>)>;

/// The line as serde_json reads a JSON object, or `None`.
fn object(line: &[u8]) -> Option<Object> {
    struct Pairs;
    impl<'de> Visitor<'de> for Pairs {
        type Value = Object;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    let text = std::str::from_utf8(line).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let object = de.deserialize_map(Pairs).ok()?;
    de.end().ok()?;
    Some(object)
}

/// Whether a column's value is a string whose escapes stand for no character.
fn no_text(object: &Object, columns: &[String]) -> bool {
    object.iter().any(|(k, v)| {
        let raw = v.get();
        columns.contains(k) && raw.starts_with('"') && serde_json::from_str::<String>(raw).is_err()
    })
}

fn duplicated(object: &Object) -> bool {
    let keys: BTreeSet<&String> = object.iter().map(|(k, _)| k).collect();
    keys.len() != object.len()
}

/// `value`, read by the source, is what the JSON text `raw` is, as serde_json reads it.
fn same(value: &Value, raw: Option<&str>, line: u64, column: &str) {
    let at = || format!("line {line}, column {column:?}: {value:?} vs {raw:?}");
    let Some(raw) = raw else {
        assert_eq!(*value, Value::Null, "{}: a missing key", at());
        return;
    };
    // Arrays and objects are not typed (their nesting may be deeper than serde_json builds).
    match (value, raw.as_bytes().first()) {
        (Value::Unsupported { kind: "array", .. }, Some(b'['))
        | (Value::Unsupported { kind: "object", .. }, Some(b'{')) => return,
        (_, Some(b'[' | b'{')) => panic!("{}", at()),
        _ => {}
    }
    let json = match serde_json::from_str::<Json>(raw) {
        Ok(json) => json,
        Err(_) => {
            // Only a number beyond f64 (`1e400`) is valid JSON that serde_json cannot hold:
            // the source keeps its text.
            assert_eq!(*value, Value::Number(raw.to_owned()), "{}", at());
            return;
        }
    };
    match (value, &json) {
        (Value::Null, Json::Null) => {}
        (Value::Bool(a), Json::Bool(b)) => assert_eq!(a, b, "{}", at()),
        (Value::Text(a), Json::String(b)) => assert_eq!(a, b, "{}", at()),
        (Value::Int(a), Json::Number(b)) => {
            // serde_json reads `-0` as a float.
            let negative_zero = *a == 0 && raw == "-0";
            assert!(b.as_i64() == Some(*a) || negative_zero, "{}", at());
        }
        (Value::Number(text), Json::Number(b)) => {
            assert!(b.as_i64().is_none(), "{}: fits i64", at());
            // The digits as written (serde_json's own f64 may be off by one ulp for long
            // mantissas, so the text is what is compared).
            assert_eq!(text, raw, "{}: the digits as written", at());
            assert!(text.parse::<f64>().is_ok(), "{}: not a number", at());
        }
        _ => panic!("{}", at()),
    }
}
