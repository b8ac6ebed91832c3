//! The columns of a JSONL model: the keys of its objects, learnt from the first lines.

use super::*;

/// The keys of one line's object, in order, into `keys`; or the line's defect.
pub(super) fn line_keys(
    bytes: &[u8],
    info: LineInfo,
    keys: &mut Vec<String>,
) -> Result<(), String> {
    keys.clear();
    let text = line_text(bytes, info)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = KeysSeed(keys).deserialize(&mut de).and_then(|()| de.end());
    parsed.map_err(|e| json_defect(info.number, &e))
}

/// A JSON object key, borrowed from the line unless it has escapes.
pub(super) struct Key<'a>(pub(super) Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Collects the keys of one object, in order.
pub(super) struct KeysSeed<'k>(pub(super) &'k mut Vec<String>);

impl<'de> DeserializeSeed<'de> for KeysSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for KeysSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            map.next_value::<IgnoredAny>()?;
            self.0.push(key.into_owned());
        }
        Ok(())
    }
}
