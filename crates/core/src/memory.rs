//! An in-memory snapshot store: for tests, examples and programs that keep no state on disk.

use std::collections::BTreeMap;
use std::convert::Infallible;

use crate::plan::{ContactChange, Refresh, SnapshotIndex};
use crate::ports::{SnapshotStore, StoredAttribute};
use crate::value::Canonical;

/// One activation's snapshot, kept in ordered maps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemorySnapshot {
    /// contact key → (key hash, row fingerprint, attribute key → stored attribute)
    pub contacts: BTreeMap<String, MemoryContact>,
}

/// What the snapshot holds for one contact.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryContact {
    pub key_hash: u64,
    pub row_fingerprint: u64,
    pub attributes: BTreeMap<String, StoredAttribute>,
}

impl MemorySnapshot {
    /// Records an acknowledged write: its attributes and its row fingerprint.
    pub fn apply(&mut self, change: &ContactChange, mapping: &crate::BoundMapping, run_id: i64) {
        let c = self.contacts.entry(change.contact.key.clone()).or_default();
        c.key_hash = change.key_hash;
        c.row_fingerprint = change.row_fingerprint;
        for a in &change.changes {
            let key = mapping.attributes[a.attribute].key.clone();
            let value = a.value.clone().unwrap_or(Canonical::Text(String::new()));
            c.attributes.insert(
                key.clone(),
                StoredAttribute {
                    key,
                    fingerprint: a.fingerprint,
                    value,
                    run_id: Some(run_id),
                },
            );
        }
    }

    /// Records a new row fingerprint for a contact with nothing to send (creating its entry).
    pub fn refresh(&mut self, r: &Refresh) {
        let c = self.contacts.entry(r.contact.key.clone()).or_default();
        c.key_hash = r.key_hash;
        c.row_fingerprint = r.row_fingerprint;
    }

    /// Drops attributes that are no longer mapped.
    pub fn retain_attributes(&mut self, keys: &[&str]) {
        for c in self.contacts.values_mut() {
            c.attributes.retain(|k, _| keys.contains(&k.as_str()));
        }
    }
}

impl SnapshotStore for MemorySnapshot {
    type Error = Infallible;

    fn load_index(&self, _activation: &str, index: &mut SnapshotIndex) -> Result<(), Infallible> {
        index.reserve(self.contacts.len());
        for c in self.contacts.values() {
            index.insert(c.key_hash, c.row_fingerprint);
        }
        Ok(())
    }

    fn contact_attributes(
        &self,
        _activation: &str,
        contact_key: &str,
        out: &mut Vec<StoredAttribute>,
    ) -> Result<(), Infallible> {
        if let Some(c) = self.contacts.get(contact_key) {
            out.extend(c.attributes.values().cloned());
        }
        Ok(())
    }
}
