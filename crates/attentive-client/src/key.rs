//! The API key, a secret that only the `Authorization` header ever sees.

use std::fmt;

/// An Attentive API key (a private app's key or an OAuth access token).
///
/// `Debug` and `Display` print `ApiKey(<redacted>)`, so the key cannot leak through a log line,
/// an error message or a `{:?}` of a config. [`ApiKey::expose`] is the one way to read it, and
/// this crate calls it only to build the `Authorization` header (marked sensitive).
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: String) -> ApiKey {
        ApiKey(key)
    }

    /// The key itself. Only for the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A short label for logs and metrics (`3fa81c0e`): the first 8 hex digits of a 128-bit
    /// XXH3 hash of the key. It cannot be turned back into the key (32 bits of a hash of a
    /// long random secret), but the same key always gives the same label, so budgets and log
    /// lines of one key can be told apart from another's.
    pub fn fingerprint(&self) -> String {
        format!("{:08x}", (self.digest() >> 96) as u32)
    }

    /// The full 128-bit hash that identifies the key in the process-global budget registry.
    pub(crate) fn digest(&self) -> u128 {
        // A fixed domain prefix, so the digest is not the plain hash of the key.
        let mut buf = Vec::with_capacity(self.0.len() + 24);
        buf.extend_from_slice(b"attentive-sync/api-key\0");
        buf.extend_from_slice(self.0.as_bytes());
        xxhash_rust::xxh3::xxh3_128(&buf)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_redacted() {
        let k = ApiKey::new("sk_live_abcdef123456".into());
        assert_eq!(format!("{k:?}"), "ApiKey(<redacted>)");
        assert_eq!(format!("{k}"), "ApiKey(<redacted>)");
        assert_eq!(format!("{k:#?}"), "ApiKey(<redacted>)");
        assert_eq!(k.expose(), "sk_live_abcdef123456");
    }

    #[test]
    fn fingerprint_is_short_stable_and_distinct() {
        let a = ApiKey::new("key-a".into());
        let fp = a.fingerprint();
        assert_eq!(fp.len(), 8);
        assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(fp, ApiKey::new("key-a".into()).fingerprint());
        assert_ne!(fp, ApiKey::new("key-b".into()).fingerprint());
        assert!(!fp.contains("key"));
    }
}
