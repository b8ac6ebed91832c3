//! Stable fingerprints of canonical values.
//!
//! **Specification** (stored in the snapshot, so it must never change silently; any change
//! bumps [`FINGERPRINT_VERSION`], which changes every row fingerprint and so re-plans every
//! contact's attributes against the stored per-attribute fingerprints, which are unaffected):
//!
//! * Hash function: XXH3-64 (`xxhash-rust`), which is specified and identical on every
//!   platform and version; all integers below are little-endian.
//! * **Value fingerprint**: `XXH3_64(tag ‖ text)` with seed 0, where `tag` is one byte
//!   (`b` bool, `i` integer, `n` number, `s` string) and `text` is the canonical text
//!   ([`Canonical::to_text`]) in UTF-8; never [`IN_DOUBT_VALUE`] (0 becomes 1).
//! * **Contact key hash**: `XXH3_64(kind ‖ 0x00 ‖ key)` with seed 0, `kind` = `email`/`phone`.
//! * **Mapping signature**: `XXH3_64` of the version bytes, the identifier kind, the null
//!   policy, the default phone region, the date order, and every mapped attribute's snapshot key
//!   and declared type, in ascending key order ([`mapping_signature`]).
//! * **Row fingerprint**: `XXH3_64(signature ‖ key hash ‖ cells digest)` (each part 8 bytes
//!   little-endian), where `key hash` is the contact key hash above and `cells digest` is
//!   `XXH3_64` of the 8-byte hashes of the **raw** cell of each mapped attribute as the source
//!   gave it ([`cell_hash`]: its type tag as seed), in ascending order of snapshot key; the
//!   result keeps its low 62 bits and is never 0 or [`IN_DOUBT_ROW`] (both become 2). The
//!   cells' digest needs no identifier, so the thread that parses a row can compute it while
//!   the bytes are in its cache ([`RowHasher::cells_digest`]). Because it covers the raw cells
//!   and every rule that turns them into canonical values, an equal fingerprint proves the
//!   canonical values are equal, so the planner skips normalization for unchanged rows. It
//!   changes when any mapped cell, the mapping, the normalization options or
//!   [`NORMALIZATION_VERSION`] changes; a change that turns out to be cosmetic is caught by the
//!   per-attribute value fingerprints, which only cover canonical values.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::mapping::{CustomType, DateOrder, IdentifierKind, OnNull};
use crate::value::Canonical;

/// Version byte mixed into every row fingerprint (2: the cells are hashed on their own).
pub const FINGERPRINT_VERSION: u8 = 2;

/// Bumped whenever a normalization rule changes what a raw value becomes, so that rows are
/// normalized again (and only attributes whose canonical value moved are sent).
pub const NORMALIZATION_VERSION: u8 = 1;

// A performance internal of the runner's pipeline, public for it; not part of the API.
#[doc(hidden)]
/// Row fingerprints use the low 62 bits; the planner keeps per-run state in the top two.
pub const ROW_FP_MASK: u64 = (1 << 62) - 1;

/// The row fingerprint no row has, given to a contact with a write in doubt (sent, its answer
/// never recorded): the planner then compares it attribute by attribute, whatever its row.
pub const IN_DOUBT_ROW: u64 = 1;

/// The value fingerprint no value has, given to an attribute in doubt: the planner sends it
/// again whatever the model holds (see [`crate::ports::with_in_doubt`]).
pub const IN_DOUBT_VALUE: u64 = 0;

/// Fingerprint of one canonical value.
pub fn value_fingerprint(v: &Canonical) -> u64 {
    let mut buf = Vec::with_capacity(24);
    push_value(&mut buf, v);
    match xxh3_64(&buf) {
        IN_DOUBT_VALUE => 1,
        h => h,
    }
}

fn push_value(buf: &mut Vec<u8>, v: &Canonical) {
    buf.push(v.tag() as u8);
    match v {
        Canonical::Bool(b) => buf.extend_from_slice(if *b { b"true" } else { b"false" }),
        Canonical::Int(i) => {
            use std::io::Write;
            let _ = write!(buf, "{i}");
        }
        Canonical::Number(n) => buf.extend_from_slice(n.as_str().as_bytes()),
        Canonical::Text(s) => buf.extend_from_slice(s.as_bytes()),
    }
}

/// Hash of a contact's normalized identifier.
pub fn key_hash(kind: IdentifierKind, key: &str) -> u64 {
    let mut buf = Vec::with_capacity(key.len() + 8);
    buf.extend_from_slice(kind.as_str().as_bytes());
    buf.push(0);
    buf.extend_from_slice(key.as_bytes());
    xxh3_64(&buf)
}

/// The mapping signature mixed into every row fingerprint (see the module docs).
pub fn mapping_signature(
    kind: IdentifierKind,
    on_null: OnNull,
    options: &crate::mapping::NormalizeOptions,
    attributes: &[(&str, Option<CustomType>)],
) -> u64 {
    let mut buf = vec![FINGERPRINT_VERSION, NORMALIZATION_VERSION];
    buf.extend_from_slice(kind.as_str().as_bytes());
    buf.push(0);
    buf.push(match on_null {
        OnNull::Omit => b'o',
        OnNull::Clear => b'c',
    });
    if let Some(r) = options.default_phone_region {
        buf.extend_from_slice(AsRef::<str>::as_ref(&r).as_bytes());
    }
    buf.push(0);
    buf.extend_from_slice(match options.date_order {
        DateOrder::Iso => b"iso",
        DateOrder::Mdy => b"mdy",
        DateOrder::Dmy => b"dmy",
    });
    buf.push(0);
    let mut attrs: Vec<_> = attributes.to_vec();
    attrs.sort_by(|a, b| a.0.cmp(b.0));
    for (key, ty) in attrs {
        buf.extend_from_slice(key.as_bytes());
        buf.push(0);
        buf.extend_from_slice(match ty {
            None => b"" as &[u8],
            Some(CustomType::String) => b"string",
            Some(CustomType::Number) => b"number",
            Some(CustomType::Bool) => b"bool",
            Some(CustomType::Date) => b"date",
            Some(CustomType::Datetime) => b"datetime",
        });
        buf.push(0x1F);
    }
    xxh3_64(&buf)
}

// A performance internal of the runner's pipeline, public for it; not part of the API.
#[doc(hidden)]
/// Builds row fingerprints, reusing one buffer.
#[derive(Debug, Default)]
pub struct RowHasher {
    buf: Vec<u8>,
}

impl RowHasher {
    /// The digest of the raw cells of every mapped attribute of `row`, in the mapping's order
    /// (ascending snapshot key); a missing cell counts as null. See [`cell_hash`].
    pub fn cells_digest(
        &mut self,
        mapping: &crate::mapping::BoundMapping,
        row: &crate::value::SourceRow,
    ) -> u64 {
        self.buf.clear();
        for a in &mapping.attributes {
            let h = cell_hash(
                row.values
                    .get(a.index)
                    .unwrap_or(&crate::value::Value::Null),
            );
            self.buf.extend_from_slice(&h.to_le_bytes());
        }
        xxh3_64(&self.buf)
    }
}

/// The hash of one raw cell: `XXH3_64` with the cell's tag byte as the seed (`z` null, `b`
/// bool, `i` integer, `n` number text, `s` text, `d` date as `YYYY-MM-DD`, `t` timestamp
/// text, `u` unsupported as `kind ‖ 0x00 ‖ text`) over its bytes (a bool as one byte 0/1, an
/// integer as 8 bytes little-endian, null as no bytes).
pub fn cell_hash(v: &crate::value::Value) -> u64 {
    use crate::value::Value;
    let seeded = |tag: u8, bytes: &[u8]| xxh3_64_with_seed(bytes, u64::from(tag));
    match v {
        Value::Null => seeded(b'z', &[]),
        Value::Bool(b) => seeded(b'b', &[u8::from(*b)]),
        Value::Int(i) => seeded(b'i', &i.to_le_bytes()),
        Value::Number(n) => seeded(b'n', n.as_bytes()),
        Value::Text(t) => seeded(b's', t.as_bytes()),
        Value::Date(d) => seeded(b'd', d.format("%Y-%m-%d").to_string().as_bytes()),
        Value::Timestamp(t) => seeded(b't', t.as_bytes()),
        Value::Unsupported { kind, text } => seeded(b'u', format!("{kind}\0{text}").as_bytes()),
    }
}

/// The row fingerprint from the mapping signature, the contact key hash and the cells' digest
/// ([`RowHasher::cells_digest`]): low 62 bits, never 0 or [`IN_DOUBT_ROW`].
pub fn row_fingerprint(signature: u64, key_hash: u64, cells_digest: u64) -> u64 {
    let mut buf = [0u8; 24];
    buf[..8].copy_from_slice(&signature.to_le_bytes());
    buf[8..16].copy_from_slice(&key_hash.to_le_bytes());
    buf[16..].copy_from_slice(&cells_digest.to_le_bytes());
    match xxh3_64(&buf) & ROW_FP_MASK {
        0 | IN_DOUBT_ROW => 2,
        h => h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::NumberText;
    use proptest::prelude::*;

    /// Pinned values: if one of these changes, stored snapshots would be invalidated.
    #[test]
    fn fingerprints_are_pinned() {
        let got = [
            value_fingerprint(&Canonical::Text("Gold".into())),
            value_fingerprint(&Canonical::Int(42)),
            value_fingerprint(&Canonical::Bool(true)),
            value_fingerprint(&Canonical::Number(NumberText::parse("412.5").unwrap())),
            key_hash(IdentifierKind::Email, "ann@example.com"),
            row(
                "ann@example.com",
                &[
                    ("custom:Tier", Some(Canonical::Text("Gold".into()))),
                    ("std:city", None),
                ],
            ),
        ];
        assert_eq!(got, PINNED);
    }

    const PINNED: [u64; 6] = [
        0xa765_d44c_57a4_dbf6,
        0xc55f_260c_193d_d5f1,
        0x8258_6df6_a6c6_0eae,
        0xfd8b_8122_f926_9616,
        0x208b_6d24_9d3b_7f47,
        0x1407_ffe3_8ba8_d5d4,
    ];

    #[test]
    fn tags_separate_types() {
        let s = value_fingerprint(&Canonical::Text("1".into()));
        let i = value_fingerprint(&Canonical::Int(1));
        let b = value_fingerprint(&Canonical::Text("true".into()));
        let t = value_fingerprint(&Canonical::Bool(true));
        assert_ne!(s, i);
        assert_ne!(b, t);
    }

    fn row(key: &str, attrs: &[(&str, Option<Canonical>)]) -> u64 {
        use crate::value::Value;
        let keys: Vec<(&str, Option<crate::mapping::CustomType>)> =
            attrs.iter().map(|(k, _)| (*k, None)).collect();
        let sig = mapping_signature(
            IdentifierKind::Email,
            OnNull::Omit,
            &Default::default(),
            &keys,
        );
        let mut cells = Vec::new();
        for (_, v) in attrs {
            let h = cell_hash(&match v {
                None => Value::Null,
                Some(Canonical::Text(t)) => Value::Text(t.clone()),
                Some(c) => Value::Number(c.to_text()),
            });
            cells.extend_from_slice(&h.to_le_bytes());
        }
        row_fingerprint(sig, key_hash(IdentifierKind::Email, key), xxh3_64(&cells))
    }

    proptest! {
        #[test]
        fn row_fingerprint_is_a_pure_function(key in ".{0,20}", vals in proptest::collection::vec(proptest::option::of(".{0,10}"), 0..6)) {
            let attrs: Vec<(String, Option<Canonical>)> = vals.iter().enumerate()
                .map(|(i, v)| (format!("custom:a{i}"), v.clone().map(Canonical::Text))).collect();
            let refs: Vec<(&str, Option<Canonical>)> = attrs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            let a = row(&key, &refs);
            prop_assert_eq!(a, row(&key, &refs));
            prop_assert!(a != 0 && a <= ROW_FP_MASK);
        }

        #[test]
        fn any_single_value_change_changes_the_row(a in ".{0,10}", b in ".{0,10}") {
            prop_assume!(a != b);
            let x = row("k", &[("custom:x", Some(Canonical::Text(a.clone())))]);
            let y = row("k", &[("custom:x", Some(Canonical::Text(b.clone())))]);
            prop_assert_ne!(x, y);
            // Null is distinct from every value, including the empty string.
            prop_assert_ne!(row("k", &[("custom:x", None)]), row("k", &[("custom:x", Some(Canonical::Text(String::new())))]));
        }

        #[test]
        fn value_fingerprint_is_stable_for_equal_numbers(s in "[0-9]{1,4}\\.[0-9]{1,3}") {
            let a = NumberText::parse(&s).expect("number");
            let b = NumberText::parse(&format!("0{s}0")).expect("number");
            prop_assert_eq!(value_fingerprint(&Canonical::Number(a)), value_fingerprint(&Canonical::Number(b)));
        }
    }
}
