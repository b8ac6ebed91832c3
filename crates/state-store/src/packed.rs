//! How a contact's acknowledged attributes are packed into one snapshot row (schema 6).
//!
//! Each activation numbers its attribute keys (`snapshot_keys.slot`, from 0). A contact's
//! values are one JSON array indexed by slot (`snapshot.attributes`): `null` where the contact
//! has no value, else a string holding the value's one-letter tag followed by its text
//! (`"sParis"`, `"i42"`, `"btrue"`, `"n12.5"`; a clear is `"s"`). The runs that set them are
//! `snapshot.attribute_runs`: SQL `NULL` when no value has a run, the run's id when every value
//! was set by the same run (the common case, one integer), else a JSON array by slot.
//!
//! Value fingerprints are not stored: they are a function of the value
//! ([`sync_core::fingerprint::value_fingerprint`]) and recomputed when read. JSON keeps the
//! file readable in the `sqlite3` shell (`json_each`); the views `snapshot_contacts` and
//! `snapshot_attributes` show it as the tables of earlier schemas did.

use rusqlite::types::{Value, ValueRef};
use sync_core::value::Canonical;

/// One stored value: its tag and text (`tagged[0]` is the tag), and the run that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The tag followed by the text.
    pub tagged: String,
    /// The run that set it.
    pub run: Option<i64>,
}

impl Slot {
    /// A slot holding `text` with `tag`, set by `run`.
    pub(crate) fn new(tag: char, text: &str, run: Option<i64>) -> Slot {
        let mut tagged = String::with_capacity(text.len() + tag.len_utf8());
        tagged.push(tag);
        tagged.push_str(text);
        Slot { tagged, run }
    }

    /// The tag and text.
    pub(crate) fn parts(&self) -> (char, &str) {
        let mut chars = self.tagged.chars();
        let tag = chars.next().unwrap_or('\0');
        (tag, chars.as_str())
    }

    /// The value, `None` when the tag and text are not one this program writes.
    pub(crate) fn value(&self) -> Option<Canonical> {
        let (tag, text) = self.parts();
        Canonical::from_tagged(tag, text)
    }
}

/// A contact's values by slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Packed {
    pub slots: Vec<Option<Slot>>,
}

/// Why a packed row cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed {
    pub column: &'static str,
    pub value: String,
}

impl Packed {
    /// Reads `snapshot.attributes` and `snapshot.attribute_runs`.
    pub(crate) fn decode(attributes: &str, runs: ValueRef<'_>) -> Result<Packed, Malformed> {
        let values: Vec<Option<String>> =
            serde_json::from_str(attributes).map_err(|_| Malformed {
                column: "attributes",
                value: preview(attributes),
            })?;
        // One run for every value, or a list by slot.
        let shared = match runs {
            ValueRef::Integer(r) => Some(r),
            _ => None,
        };
        let listed: Option<Vec<Option<i64>>> = match runs {
            ValueRef::Text(t) => Some(serde_json::from_slice(t).map_err(|_| Malformed {
                column: "attribute_runs",
                value: preview(&String::from_utf8_lossy(t)),
            })?),
            ValueRef::Null | ValueRef::Integer(_) => None,
            other => {
                return Err(Malformed {
                    column: "attribute_runs",
                    value: format!("{other:?}"),
                })
            }
        };
        let mut slots = Vec::with_capacity(values.len());
        for (i, v) in values.into_iter().enumerate() {
            slots.push(match v {
                None => None,
                Some(tagged) => {
                    if tagged.is_empty() {
                        return Err(Malformed {
                            column: "attributes",
                            value: preview(attributes),
                        });
                    }
                    let run = match &listed {
                        Some(list) => list.get(i).copied().flatten(),
                        None => shared,
                    };
                    Some(Slot { tagged, run })
                }
            });
        }
        Ok(Packed { slots })
    }

    /// Writes `snapshot.attributes` into `out` (cleared first; UTF-8 JSON) and returns
    /// `snapshot.attribute_runs`. Trailing empty slots are left out.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Value {
        let used = self
            .slots
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |i| i + 1);
        write_values(
            out,
            self.slots[..used]
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.as_ref().map(|s| (i, s.parts()))),
        );
        let mut runs = self.slots[..used].iter().flatten().map(|s| s.run);
        let Some(first) = runs.next() else {
            return Value::Null;
        };
        if runs.all(|r| r == first) {
            return first.map_or(Value::Null, Value::Integer);
        }
        let list: Vec<Option<i64>> = self.slots[..used]
            .iter()
            .map(|s| s.as_ref().and_then(|s| s.run))
            .collect();
        Value::Text(serde_json::to_string(&list).unwrap_or_default())
    }

    /// Sets a slot, growing the list as needed.
    pub(crate) fn set(&mut self, slot: usize, value: Slot) {
        if self.slots.len() <= slot {
            self.slots.resize(slot + 1, None);
        }
        self.slots[slot] = Some(value);
    }

    /// Empties the slots `drop` says to; returns how many held a value.
    pub(crate) fn clear(&mut self, drop: impl Fn(usize) -> bool) -> u64 {
        let mut n = 0;
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.is_some() && drop(i) {
                *s = None;
                n += 1;
            }
        }
        n
    }
}

/// Writes `snapshot.attributes` into `out` (cleared first): `(slot, (tag, text))` in ascending
/// slot order, one value a slot, `null` in the slots between.
pub(crate) fn write_values<'a>(
    out: &mut Vec<u8>,
    values: impl IntoIterator<Item = (usize, (char, &'a str))>,
) {
    out.clear();
    out.push(b'[');
    let mut next = 0;
    for (slot, (tag, text)) in values {
        while next < slot {
            out.extend_from_slice(if next == 0 { b"null" } else { b",null" });
            next += 1;
        }
        if next > 0 {
            out.push(b',');
        }
        push_tagged(out, tag, text);
        next = slot + 1;
    }
    out.push(b']');
}

/// Appends one packed value, `"<tag><text>"` as a JSON string, to `out`.
fn push_tagged(out: &mut Vec<u8>, tag: char, text: &str) {
    let start = out.len();
    out.push(b'"');
    let mut t = [0u8; 4];
    out.extend_from_slice(tag.encode_utf8(&mut t).as_bytes());
    let quote = out.len();
    // Writing a string into a Vec cannot fail; serde_json escapes it (its opening quote is
    // removed: the tag's is the string's).
    if serde_json::to_writer(&mut *out, text).is_err() {
        out.truncate(start);
        return;
    }
    out.remove(quote);
}

/// The start of a long text, for error messages.
fn preview(s: &str) -> String {
    let mut p: String = s.chars().take(80).collect();
    if p.len() < s.len() {
        p.push('…');
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(p: &Packed) -> Packed {
        let mut out = Vec::new();
        let runs = p.encode(&mut out);
        Packed::decode(std::str::from_utf8(&out).unwrap(), ValueRef::from(&runs)).unwrap()
    }

    fn encoded(p: &Packed) -> (String, Value) {
        let mut out = Vec::new();
        let runs = p.encode(&mut out);
        (String::from_utf8(out).unwrap(), runs)
    }

    #[test]
    fn one_run_is_one_integer_and_several_are_a_list() {
        let mut p = Packed::default();
        p.set(0, Slot::new('s', "Paris", Some(3)));
        p.set(2, Slot::new('i', "42", Some(3)));
        assert_eq!(
            encoded(&p),
            (r#"["sParis",null,"i42"]"#.to_owned(), Value::Integer(3))
        );
        p.set(1, Slot::new('b', "true", Some(7)));
        assert_eq!(encoded(&p).1, Value::Text("[3,7,3]".into()));
        assert_eq!(roundtrip(&p), p);
        // Trailing empty slots are not written; texts are escaped.
        p.clear(|i| i == 2);
        p.set(0, Slot::new('s', "a \"b\" \\ \n é", Some(7)));
        assert_eq!(
            encoded(&p),
            (
                r#"["sa \"b\" \\ \n é","btrue"]"#.to_owned(),
                Value::Integer(7)
            )
        );
    }

    #[test]
    fn no_values_and_no_runs_are_null() {
        assert_eq!(encoded(&Packed::default()), ("[]".to_owned(), Value::Null));
        let mut p = Packed::default();
        p.set(0, Slot::new('s', "", None));
        assert_eq!(encoded(&p), (r#"["s"]"#.to_owned(), Value::Null));
        assert_eq!(roundtrip(&p), p);
    }

    #[test]
    fn what_this_program_never_writes_is_malformed() {
        for (attributes, runs) in [
            ("not json", ValueRef::Null),
            (r#"[""]"#, ValueRef::Null),
            (r#"[1]"#, ValueRef::Null),
            (r#"["sx"]"#, ValueRef::Text(b"[oops")),
            (r#"["sx"]"#, ValueRef::Real(1.5)),
        ] {
            assert!(
                Packed::decode(attributes, runs).is_err(),
                "{attributes} {runs:?}"
            );
        }
    }

    fn slot() -> impl Strategy<Value = Option<Slot>> {
        prop_oneof![
            1 => Just(None),
            4 => (
                prop_oneof![Just('s'), Just('i'), Just('n'), Just('b')],
                any::<String>(),
                prop::option::of(0i64..5),
            )
                .prop_map(|(tag, text, run)| Some(Slot::new(tag, &text, run))),
        ]
    }

    proptest! {
        /// Whatever the texts (quotes, backslashes, control characters, any Unicode) and
        /// runs, a packed row reads back as written (trailing empty slots aside).
        #[test]
        fn packing_round_trips(slots in prop::collection::vec(slot(), 0..24)) {
            let p = Packed { slots };
            let mut want = p.clone();
            while matches!(want.slots.last(), Some(None)) {
                want.slots.pop();
            }
            prop_assert_eq!(roundtrip(&p), want);
        }

        /// Decoding never panics, whatever the columns hold.
        #[test]
        fn decoding_never_panics(attributes in ".*", runs in ".*", int in any::<i64>()) {
            let _ = Packed::decode(&attributes, ValueRef::Text(runs.as_bytes()));
            let _ = Packed::decode(&attributes, ValueRef::Integer(int));
        }
    }
}
