//! In-memory adapters: a snapshot store ([`MemorySnapshot`]) and a destination
//! ([`MemoryDestination`]), for tests and for programs that keep no state on disk or try a
//! mapping without Attentive.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Mutex;

use crate::fingerprint::IN_DOUBT_ROW;
use crate::plan::{ContactChange, Refresh, SnapshotIndex};
use crate::ports::{
    with_in_doubt, Account, ContactRef, ContactWrite, Destination, Existence, InDoubt, Lookup,
    SnapshotStore, StoredAttribute, WriteOutcome,
};
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
            with_in_doubt(out, start, &doubts);
        }
        Ok(())
    }
}

/// What a [`MemoryDestination`] answers to one write, when scripted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A per-write outcome; only [`WriteOutcome::Acknowledged`] applies the write.
    Outcome(WriteOutcome),
    /// An error that stops the run (as a rejected API key does).
    Fatal(String),
}

/// An error of a [`MemoryDestination`]: always one that stops the run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MemoryError(pub String);

/// What a [`MemoryDestination`] holds and has seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryAccount {
    /// Contact key → attribute key ([`crate::AttributeId::key`]) → value. A cleared value is
    /// removed.
    pub contacts: BTreeMap<String, BTreeMap<String, Canonical>>,
    /// Other identifiers of contacts (a phone of an email contact...): identifier → the key
    /// of the contact that holds it.
    pub aliases: BTreeMap<String, String>,
    /// Every write received, in order (answered or not).
    pub writes: Vec<ContactWrite>,
    /// Contacts looked up (one by one or in batches).
    pub checks: u64,
    /// Lookup requests received ([`Destination::check_exists`] or one batch of
    /// [`Destination::check_many`]).
    pub lookups: u64,
}

type WriteHook = Box<dyn Fn(usize, &ContactWrite) -> Option<Answer> + Send + Sync>;

/// An in-memory destination, beside [`MemorySnapshot`]: one account of known contacts, for
/// tests and for programs that try a mapping without Attentive. Like Attentive's update
/// routes it never creates a contact: a check or a write for a contact it does not hold
/// answers not found. A write to a contact it holds is applied and acknowledged, unless the
/// hook ([`MemoryDestination::with_hook`]) answers otherwise.
pub struct MemoryDestination {
    account: Mutex<MemoryAccount>,
    hook: Option<WriteHook>,
    lookup_batch: usize,
    company: Option<Account>,
}

impl std::fmt::Debug for MemoryDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryDestination")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl MemoryDestination {
    /// An account holding these contacts (normalized keys), with no attributes.
    pub fn with_contacts<K: Into<String>>(keys: impl IntoIterator<Item = K>) -> Self {
        let contacts = keys
            .into_iter()
            .map(|k| (k.into(), BTreeMap::new()))
            .collect();
        MemoryDestination {
            account: Mutex::new(MemoryAccount {
                contacts,
                ..MemoryAccount::default()
            }),
            hook: None,
            lookup_batch: 1,
            company: None,
        }
    }

    /// Gives contact `owner` another identifier (a phone of an email contact): lookups of it
    /// find `owner`, with the same id.
    pub fn with_alias(self, identifier: &str, owner: &str) -> Self {
        self.lock()
            .aliases
            .insert(identifier.to_owned(), owner.to_owned());
        self
    }

    /// Says it is this account (by default it cannot tell).
    pub fn with_account(mut self, id: &str, name: &str) -> Self {
        self.company = Some(Account {
            id: id.to_owned(),
            name: Some(name.to_owned()),
        });
        self
    }

    /// Looks contacts up `n` at a time (as a GraphQL lookup does), instead of one by one.
    pub fn with_lookup_batch(mut self, n: usize) -> Self {
        self.lookup_batch = n.max(1);
        self
    }

    /// Calls `hook` with the 1-based number of each write and the write, before answering it;
    /// an answer it returns replaces the default one.
    pub fn with_hook(
        mut self,
        hook: impl Fn(usize, &ContactWrite) -> Option<Answer> + Send + Sync + 'static,
    ) -> Self {
        self.hook = Some(Box::new(hook));
        self
    }

    /// A copy of what the account holds and has seen.
    pub fn account(&self) -> MemoryAccount {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryAccount> {
        // A panic in a hook cannot leave the account half-updated: recover it.
        self.account
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One lookup request. A contact's id is its key (the key of the contact an alias
    /// belongs to).
    fn look_up(&self, contacts: &[ContactRef]) -> Vec<Lookup> {
        let mut account = self.lock();
        account.lookups += 1;
        account.checks += contacts.len() as u64;
        contacts
            .iter()
            .map(|c| {
                let owner = if account.contacts.contains_key(&c.key) {
                    Some(c.key.clone())
                } else {
                    account.aliases.get(&c.key).cloned()
                };
                match owner {
                    Some(id) => Lookup {
                        existence: Existence::Exists,
                        id: Some(id),
                    },
                    None => Lookup::existence(Existence::NotFound),
                }
            })
            .collect()
    }

    fn answer(&self, write: &ContactWrite) -> Result<WriteOutcome, MemoryError> {
        let n = {
            let mut account = self.lock();
            account.writes.push(write.clone());
            account.writes.len()
        };
        let scripted = self.hook.as_ref().and_then(|h| h(n, write));
        let mut account = self.lock();
        match scripted {
            Some(Answer::Fatal(message)) => Err(MemoryError(message)),
            Some(Answer::Outcome(o)) if o != WriteOutcome::Acknowledged => Ok(o),
            _ => {
                let Some(contact) = account.contacts.get_mut(&write.contact.key) else {
                    return Ok(WriteOutcome::NotFound);
                };
                for (id, value) in &write.attributes {
                    match value {
                        Some(v) => contact.insert(id.key(), v.clone()),
                        None => contact.remove(&id.key()),
                    };
                }
                Ok(WriteOutcome::Acknowledged)
            }
        }
    }
}

impl Destination for MemoryDestination {
    type Error = MemoryError;

    fn check_exists(
        &self,
        contact: &ContactRef,
    ) -> impl std::future::Future<Output = Result<Existence, MemoryError>> + Send {
        let mut found = self.look_up(std::slice::from_ref(contact));
        std::future::ready(Ok(found.pop().map_or(Existence::NotFound, |l| l.existence)))
    }

    fn check_many<'a>(
        &'a self,
        contacts: &'a [ContactRef],
    ) -> impl std::future::Future<Output = Vec<Result<Lookup, MemoryError>>> + Send + 'a {
        let found = contacts
            .chunks(self.lookup_batch)
            .flat_map(|chunk| self.look_up(chunk))
            .map(Ok)
            .collect();
        std::future::ready(found)
    }

    fn lookup_batch(&self) -> usize {
        self.lookup_batch
    }

    fn account(
        &self,
    ) -> impl std::future::Future<Output = Result<Option<Account>, MemoryError>> + Send {
        std::future::ready(Ok(self.company.clone()))
    }

    fn write(
        &self,
        write: &ContactWrite,
    ) -> impl std::future::Future<Output = Result<WriteOutcome, MemoryError>> + Send {
        std::future::ready(self.answer(write))
    }
}
