//! Typing the values of one JSON object into a row, or finding the line's defect.

use super::*;

/// The line as text, or its defect.
pub(super) fn line_text(bytes: &[u8], info: LineInfo) -> Result<&str, String> {
    if info.too_long {
        return Err(format!(
            "line {}: longer than {}",
            info.number,
            max_record_size()
        ));
    }
    std::str::from_utf8(bytes).map_err(|_| format!("line {}: not valid UTF-8", info.number))
}

pub(super) fn json_defect(line: u64, e: &serde_json::Error) -> String {
    let full = e.to_string();
    // serde_json appends " at line L column C"; a line is always line 1 to it.
    let what = full
        .rsplit_once(" at line ")
        .map_or(full.as_str(), |(what, _)| what);
    format!(
        "line {line}: not a JSON object: {what} at column {}",
        e.column()
    )
}

/// Types the values of one object into the row.
pub(super) struct RowSeed<'r> {
    pub(super) columns: &'r [String],
    pub(super) index: &'r HashMap<String, usize>,
    pub(super) values: &'r mut [Value],
    pub(super) seen: &'r mut [bool],
    /// Set to a column's key that the object has twice (and the object is not read on).
    pub(super) duplicate: &'r mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Lines mostly list their keys in the same order: try the column after the last one
        // before hashing.
        let mut next = 0;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let i = match self.columns.get(next) {
                Some(column) if *column == key => next,
                _ => match self.index.get(key.as_ref()) {
                    Some(&i) => i,
                    None => {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                },
            };
            next = i + 1;
            if self.seen.get(i).copied().unwrap_or(false) {
                *self.duplicate = Some(key.into_owned());
                return Err(de::Error::custom("duplicate key"));
            }
            let raw: &'de RawValue = map.next_value()?;
            if let (Some(value), Some(seen)) = (self.values.get_mut(i), self.seen.get_mut(i)) {
                let text = raw.get();
                if text.starts_with('"') && text.contains('\\') {
                    // Decoded here, so that an escape that stands for no character (a lone
                    // surrogate, `"\udc00"`, which `RawValue` lets through) makes the line a
                    // defect instead of a value holding the JSON text.
                    let s = serde_json::from_str::<String>(text).map_err(|e| {
                        de::Error::custom(format_args!(
                            "a string that is not valid text ({})",
                            e.to_string()
                                .rsplit_once(" at line ")
                                .map_or("", |(m, _)| m)
                        ))
                    })?;
                    *value = Value::Text(s);
                } else {
                    typed::set_json(value, text);
                }
                *seen = true;
            }
        }
        Ok(())
    }
}
