//! An in-memory snapshot store: for tests, examples and programs that keep no state on disk.

use std::collections::BTreeMap;
use std::convert::Infallible;

use crate::fingerprint::IN_DOUBT_ROW;
use crate::plan::{ContactChange, Refresh, SnapshotIndex};
use crate::ports::{with_in_doubt, InDoubt, SnapshotStore, StoredAttribute};
use crate::value::Canonical;

/// One activation's snapshot, kept in ordered maps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemorySnapshot {
    /// contact key → (key hash, row fingerprint, attribute key → stored attribute)
    pub contacts: BTreeMap<String, MemoryContact>,
    /// contact key → (key hash, attribute key → attribute in doubt)
    pub in_doubt: BTreeMap<String, (u64, BTreeMap<String, InDoubt>)>,
}

/// What the snapshot holds for one contact.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryContact {
    pub key_hash: u64,
    pub row_fingerprint: u64,
    pub attributes: BTreeMap<String, StoredAttribute>,
}

impl MemorySnapshot {
    /// Records a write about to be sent: its attributes are in doubt until it is answered.
    pub fn mark_in_doubt(
        &mut self,
        change: &ContactChange,
        mapping: &crate::BoundMapping,
        run_id: i64,
    ) {
        if change.changes.is_empty() {
            return;
        }
        let (key_hash, attributes) = self.in_doubt.entry(change.contact.key.clone()).or_default();
        *key_hash = change.key_hash;
        for a in &change.changes {
            let key = mapping.attributes[a.attribute].key.clone();
            let sent = a.value.clone().unwrap_or(Canonical::Text(String::new()));
            attributes.insert(
                key.clone(),
                InDoubt {
                    key,
                    sent,
                    run_id: Some(run_id),
                },
            );
        }
    }

    /// Settles attributes in doubt of a contact that the destination answered without
    /// applying them (`keys`), or all of them (`None`: the contact does not exist).
    pub fn settle(&mut self, contact_key: &str, keys: Option<&[&str]>) {
        let Some((_, attributes)) = self.in_doubt.get_mut(contact_key) else {
            return;
        };
        match keys {
            Some(keys) => attributes.retain(|k, _| !keys.contains(&k.as_str())),
            None => attributes.clear(),
        }
        if attributes.is_empty() {
            self.in_doubt.remove(contact_key);
        }
    }

    /// Records an acknowledged write: its attributes and its row fingerprint. The attributes
    /// it carried are no longer in doubt.
    pub fn apply(&mut self, change: &ContactChange, mapping: &crate::BoundMapping, run_id: i64) {
        let keys: Vec<&str> = change
            .changes
            .iter()
            .map(|a| mapping.attributes[a.attribute].key.as_str())
            .collect();
        self.settle(&change.contact.key, Some(&keys));
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

    /// Drops attributes that are no longer mapped (and their doubts).
    pub fn retain_attributes(&mut self, keys: &[&str]) {
        for c in self.contacts.values_mut() {
            c.attributes.retain(|k, _| keys.contains(&k.as_str()));
        }
        self.in_doubt.retain(|_, (_, attributes)| {
            attributes.retain(|k, _| keys.contains(&k.as_str()));
            !attributes.is_empty()
        });
    }
}

impl SnapshotStore for MemorySnapshot {
    type Error = Infallible;

    fn load_index(&self, _activation: &str, index: &mut SnapshotIndex) -> Result<(), Infallible> {
        index.reserve(self.contacts.len());
        for c in self.contacts.values() {
            index.insert(c.key_hash, c.row_fingerprint);
        }
        for (key_hash, _) in self.in_doubt.values() {
            index.insert(*key_hash, IN_DOUBT_ROW);
        }
        Ok(())
    }

    fn contact_attributes(
        &self,
        _activation: &str,
        contact_key: &str,
        out: &mut Vec<StoredAttribute>,
    ) -> Result<(), Infallible> {
        let start = out.len();
        if let Some(c) = self.contacts.get(contact_key) {
            out.extend(c.attributes.values().cloned());
        }
        if let Some((_, doubts)) = self.in_doubt.get(contact_key) {
            let doubts: Vec<InDoubt> = doubts.values().cloned().collect();
            let mut mine = out.split_off(start);
            with_in_doubt(&mut mine, &doubts);
            out.extend(mine);
        }
        Ok(())
    }
}
