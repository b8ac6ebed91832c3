//! `jsonl_source`: [`sources::JsonlSource`] read to the end through [`ModelSource`].
//!
//! The first input byte says how the rest is handed to the source (all at once, or a few
//! bytes at a time so that lines cross buffer refills); the rest is the file. Checked:
//!
//! - the source opens exactly when one of the first 1,000 non-blank lines is a JSON object
//!   with a key, and its columns are then the keys of those objects, each once;
//! - every non-blank line becomes exactly one row (none lost, none invented), numbered with
//!   its line, so numbers strictly increase;
//! - a row is a defect (every value null) exactly when its line is not a JSON object (or not
//!   UTF-8), as `serde_json` reads it;
//! - otherwise each value is the line's value for that key as `serde_json` reads it: null for
//!   a missing key or `null`, the same boolean, the same string, an integer when the number
//!   fits `i64`, otherwise the number's text, which denotes the same `f64` and is finite;
//!   arrays and objects are unsupported values of that kind.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;

use serde_json::Value as Json;
use sources::{Error, JsonlSource};
use sync_core::ports::ModelSource;
use sync_core::value::{SourceRow, Value};

use crate::chunked::{chunk_size, Chunked};
use crate::Bytes;

const BOM: &[u8] = b"\xef\xbb\xbf";

/// How many non-blank lines the source learns its columns from.
const SAMPLE_LINES: usize = 1000;

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
    // What serde_json makes of each: `Some(object)` for an object.
    let parsed: Vec<Option<BTreeMap<String, Json>>> = lines
        .iter()
        .map(|(_, line)| match serde_json::from_slice::<Json>(line) {
            Ok(Json::Object(map)) if std::str::from_utf8(line).is_ok() => {
                Some(map.into_iter().collect())
            }
            _ => None,
        })
        .collect();
    let keys: BTreeSet<&String> = parsed
        .iter()
        .take(SAMPLE_LINES)
        .flatten()
        .flat_map(BTreeMap::keys)
        .collect();

    let opened = if chunk == 0 {
        JsonlSource::from_reader(Cursor::new(input.to_vec()), "fuzz.jsonl")
    } else {
        JsonlSource::from_reader(Chunked::new(input.to_vec(), chunk), "fuzz.jsonl")
    };
    let mut src = match opened {
        Ok(src) => src,
        Err(Error::Json { message, .. }) => {
            assert!(keys.is_empty(), "refused ({message}) with keys {keys:?}");
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
            (Some(d), Some(_)) => panic!("line {number}: a defect ({d}) for an object"),
            (None, None) => panic!("line {number}: {:?} read as {row:?}", lossy(line)),
            (None, Some(object)) => {
                for (column, value) in columns.iter().zip(&row.values) {
                    same(value, object.get(column), number, column);
                }
            }
        }
        n += 1;
    }
    assert_eq!(n, lines.len(), "rows vs non-blank lines");
    assert!(matches!(src.next_row(&mut row), Ok(false)), "the end is sticky");
}

fn lossy(line: &[u8]) -> String {
    String::from_utf8_lossy(line).into_owned()
}

/// `value`, read by the source, is what `json` (read by serde_json) is.
fn same(value: &Value, json: Option<&Json>, line: u64, column: &str) {
    let at = || format!("line {line}, column {column:?}: {value:?} vs {json:?}");
    match (value, json) {
        (Value::Null, None | Some(Json::Null)) => {}
        (Value::Bool(a), Some(Json::Bool(b))) => assert_eq!(a, b, "{}", at()),
        (Value::Text(a), Some(Json::String(b))) => assert_eq!(a, b, "{}", at()),
        (Value::Int(a), Some(Json::Number(b))) => {
            assert_eq!(b.as_i64(), Some(*a), "{}", at());
        }
        (Value::Number(text), Some(Json::Number(b))) => {
            assert!(b.as_i64().is_none(), "{}: fits i64", at());
            let f: f64 = text.parse().unwrap_or_else(|_| panic!("{}: not a number", at()));
            assert!(f.is_finite(), "{}: not finite", at());
            assert_eq!(Some(f), b.as_f64(), "{}", at());
        }
        (Value::Unsupported { kind: "array", .. }, Some(Json::Array(_)))
        | (Value::Unsupported { kind: "object", .. }, Some(Json::Object(_))) => {}
        _ => panic!("{}", at()),
    }
}
