//! Typed-value helpers shared by the sources, so that no source reaches into another: JSON
//! scalars (JSONL lines, PostgreSQL `json`/`jsonb`), UUIDs (Parquet, PostgreSQL), previews of
//! bytes that cannot be sent (SQLite blobs, Parquet binaries). Floats are in
//! [`crate::float`], dates and times in [`crate::timestamp`].

use std::fmt::Write as _;

use sync_core::value::Value;

/// How many characters of an unsupported JSON array or object a value keeps.
const UNSUPPORTED_CHARS: usize = 200;

/// Sets `value` from the JSON text `raw` of one value, reusing its allocation where it can
/// (how the JSONL source reads its values, and the PostgreSQL source its `json`/`jsonb` values):
/// `null`, booleans, integers that fit `i64`, other numbers as their text, strings; arrays
/// and objects are [`Value::Unsupported`], their text cut to [`UNSUPPORTED_CHARS`] characters.
#[inline]
pub(crate) fn set_json(value: &mut Value, raw: &str) {
    match raw.as_bytes().first() {
        Some(b'n') => *value = Value::Null,
        Some(b't') => *value = Value::Bool(true),
        Some(b'f') => *value = Value::Bool(false),
        Some(b'"') => {
            let inner = raw.strip_prefix('"').and_then(|s| s.strip_suffix('"'));
            match inner {
                Some(s) if !s.contains('\\') => value.set_text(s),
                _ => match serde_json::from_str::<String>(raw) {
                    Ok(s) => *value = Value::Text(s),
                    Err(_) => value.set_text(raw),
                },
            }
        }
        Some(b'[') => *value = unsupported("array", raw),
        Some(b'{') => *value = unsupported("object", raw),
        _ => match raw.parse::<i64>() {
            Ok(i) => *value = Value::Int(i),
            Err(_) => {
                if let Value::Number(buf) = value {
                    buf.clear();
                    buf.push_str(raw);
                } else {
                    *value = Value::Number(raw.to_owned());
                }
            }
        },
    }
}

fn unsupported(kind: &'static str, raw: &str) -> Value {
    let cut = raw
        .char_indices()
        .nth(UNSUPPORTED_CHARS)
        .map_or(raw, |(i, _)| raw.get(..i).unwrap_or(raw));
    Value::Unsupported {
        kind,
        text: cut.to_owned(),
    }
}

/// The 16 bytes of a UUID as hyphenated lower-case hex (`0f8e…-…`), into `buf`.
pub(crate) fn push_uuid(buf: &mut String, bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            buf.push('-');
        }
        let _ = write!(buf, "{b:02x}");
    }
}

/// The first `limit` of `bytes` in hex between `open` and `close` (`x'0102'`, `0x0102`), with
/// `…` before `close` when there are more.
pub(crate) fn hex_preview(bytes: &[u8], limit: usize, open: &str, close: &str) -> String {
    let mut out = String::with_capacity(open.len() + 2 * limit + 3 + close.len());
    out.push_str(open);
    for b in bytes.iter().take(limit) {
        let _ = write!(out, "{b:02x}");
    }
    if bytes.len() > limit {
        out.push('…');
    }
    out.push_str(close);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_scalars_are_typed_and_containers_unsupported() {
        let typed = |raw: &str| {
            let mut v = Value::Null;
            set_json(&mut v, raw);
            v
        };
        assert_eq!(typed("null"), Value::Null);
        assert_eq!(typed("true"), Value::Bool(true));
        assert_eq!(typed("12"), Value::Int(12));
        assert_eq!(typed("1.50"), Value::Number("1.50".to_owned()));
        assert_eq!(typed(r#""a\nb""#), Value::Text("a\nb".to_owned()));
        assert!(matches!(
            typed("[1]"),
            Value::Unsupported { kind: "array", .. }
        ));
    }

    #[test]
    fn uuids_and_previews() {
        let mut s = String::new();
        push_uuid(&mut s, &[0xab; 16]);
        assert_eq!(s, "abababab-abab-abab-abab-abababababab");
        assert_eq!(hex_preview(&[1, 2, 3], 2, "x'", "'"), "x'0102…'");
        assert_eq!(hex_preview(&[1, 2], 2, "0x", ""), "0x0102");
    }
}
