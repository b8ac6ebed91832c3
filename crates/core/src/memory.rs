//! In-memory adapters: a snapshot store ([`MemorySnapshot`]) and a destination
//! ([`MemoryDestination`]), for tests and for programs that keep no state on disk or try a
//! mapping without Attentive.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Mutex;

use crate::fingerprint::IN_DOUBT_ROW;
use crate::plan::{ContactChange, Refresh, SnapshotIndex};
use crate::ports::{
    with_in_doubt, Account, BulkJobState, BulkRecordOutcome, BulkRecordResult, BulkSubmission,
    ContactRef, ContactWrite, Destination, Existence, InDoubt, Lookup, SnapshotStore,
    StoredAttribute, WriteOutcome,
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
    /// The hash of the contact's identifier ([`crate::fingerprint::key_hash`]).
    pub key_hash: u64,
    /// The row fingerprint the last acknowledged write or refresh left.
    pub row_fingerprint: u64,
    /// Attribute key → what Attentive acknowledged.
    pub attributes: BTreeMap<String, StoredAttribute>,
}

impl MemorySnapshot {
    /// Records a write about to be sent: its attributes are in doubt until it is answered.
    pub fn mark_in_doubt(
        &mut self,
        change: &ContactChange,
        mapping: &crate::mapping::BoundMapping,
        run_id: i64,
    ) {
        self.mark(change, mapping, run_id, false);
    }

    /// Records a write submitted in a bulk job: its attributes are pending (in doubt, but not
    /// sent again while the model holds the same values) until the job's result settles them.
    pub fn mark_pending(
        &mut self,
        change: &ContactChange,
        mapping: &crate::mapping::BoundMapping,
        run_id: i64,
    ) {
        self.mark(change, mapping, run_id, true);
    }

    /// Turns a contact's pending attributes into plain doubts (their job failed, or its
    /// answer was lost): sent again whatever the model holds.
    pub fn unpend(&mut self, contact_key: &str) {
        if let Some((_, attributes)) = self.in_doubt.get_mut(contact_key) {
            for d in attributes.values_mut() {
                d.pending = None;
            }
        }
    }

    fn mark(
        &mut self,
        change: &ContactChange,
        mapping: &crate::mapping::BoundMapping,
        run_id: i64,
        pending: bool,
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
                    pending: pending.then_some(a.fingerprint),
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
    pub fn apply(
        &mut self,
        change: &ContactChange,
        mapping: &crate::mapping::BoundMapping,
        run_id: i64,
    ) {
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
        _key_hash: u64,
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
    /// Contact key → attribute key ([`crate::mapping::AttributeId::key`]) → value. A cleared value is
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
    /// Bulk jobs submitted, by id (`job-1`, `job-2`...).
    pub jobs: BTreeMap<String, MemoryJob>,
    /// Polls of bulk jobs received.
    pub polls: u64,
    /// Contacts a bulk job created (it should never happen: callers check first).
    pub created: Vec<String>,
}

/// A bulk job of a [`MemoryDestination`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryJob {
    /// The writes submitted, in order.
    pub writes: Vec<ContactWrite>,
    /// The result of each write, once processed (`None` while pending, and for a failed job).
    pub results: Option<Vec<BulkRecordResult>>,
    /// Failed as a whole (by the job hook): nothing of it was applied.
    pub failed: bool,
}

type WriteHook = Box<dyn Fn(usize, &ContactWrite) -> Option<Answer> + Send + Sync>;
type JobHook = Box<dyn Fn(usize, &str) -> Option<BulkJobState> + Send + Sync>;

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
    bulk_limit: usize,
    job_hook: Option<JobHook>,
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
            bulk_limit: 0,
            job_hook: None,
        }
    }

    /// Takes bulk jobs of up to `limit` writes. A job is processed when first polled: each
    /// of its writes is answered as a realtime write would be (the hook included), except
    /// that a write to a contact the account does not hold *creates* it, as Attentive's bulk
    /// route does; callers must never submit such a write.
    pub fn with_bulk(mut self, limit: usize) -> Self {
        self.bulk_limit = limit;
        self
    }

    /// Calls `hook` with the 1-based number of each poll of a bulk job and the job's id; a
    /// state it returns is answered instead of processing the job (`Pending` to keep it
    /// pending, `Failed` to fail it as a whole: nothing of it is applied).
    pub fn with_job_hook(
        mut self,
        hook: impl Fn(usize, &str) -> Option<BulkJobState> + Send + Sync + 'static,
    ) -> Self {
        self.job_hook = Some(Box::new(hook));
        self
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

    /// Processes a job on its first poll, unless the job hook answers for it.
    fn poll(&self, job_id: &str) -> Result<BulkJobState, MemoryError> {
        let n = {
            let mut account = self.lock();
            account.polls += 1;
            match account.jobs.get(job_id) {
                None => {
                    return Ok(BulkJobState::Unknown {
                        message: "Bulk job not found".to_owned(),
                    })
                }
                Some(j) if j.failed => {
                    return Ok(BulkJobState::Failed {
                        status: "FAILED".to_owned(),
                    })
                }
                Some(j) if j.results.is_some() => return Ok(completed(job_id)),
                Some(_) => account.polls as usize,
            }
        };
        match self.job_hook.as_ref().and_then(|h| h(n, job_id)) {
            Some(BulkJobState::Failed { status }) => {
                if let Some(j) = self.lock().jobs.get_mut(job_id) {
                    j.failed = true;
                }
                Ok(BulkJobState::Failed { status })
            }
            Some(state) => Ok(state),
            None => {
                let writes = self
                    .lock()
                    .jobs
                    .get(job_id)
                    .map(|j| j.writes.clone())
                    .unwrap_or_default();
                let mut results = Vec::with_capacity(writes.len());
                for w in &writes {
                    {
                        let mut account = self.lock();
                        if !account.contacts.contains_key(&w.contact.key) {
                            account.created.push(w.contact.key.clone());
                            account
                                .contacts
                                .insert(w.contact.key.clone(), BTreeMap::new());
                        }
                    }
                    let outcome = match self.answer(w)? {
                        WriteOutcome::Acknowledged => BulkRecordOutcome::Acknowledged,
                        WriteOutcome::Rejected { message } => {
                            BulkRecordOutcome::Rejected { message }
                        }
                        WriteOutcome::NotFound => BulkRecordOutcome::Rejected {
                            message: "User not found".to_owned(),
                        },
                        WriteOutcome::Failed { reason } => BulkRecordOutcome::Failed { reason },
                    };
                    results.push(BulkRecordResult {
                        contacts: vec![w.contact.clone()],
                        outcome,
                    });
                }
                if let Some(j) = self.lock().jobs.get_mut(job_id) {
                    j.results = Some(results);
                }
                Ok(completed(job_id))
            }
        }
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

/// A completed job's state, with its result "file".
fn completed(job_id: &str) -> BulkJobState {
    BulkJobState::Completed {
        status: "COMPLETED".to_owned(),
        result_url: Some(format!("memory://{job_id}")),
    }
}

impl Destination for MemoryDestination {
    type Error = MemoryError;

    fn bulk_limit(&self) -> usize {
        self.bulk_limit
    }

    fn submit_bulk<'a>(
        &'a self,
        writes: &'a [ContactWrite],
    ) -> impl std::future::Future<Output = Result<BulkSubmission, MemoryError>> + Send + 'a {
        let answer = if self.bulk_limit == 0 {
            BulkSubmission::Rejected {
                message: "bulk jobs are off (MemoryDestination::with_bulk)".to_owned(),
            }
        } else if writes.is_empty() || writes.len() > self.bulk_limit {
            BulkSubmission::Rejected {
                message: format!(
                    "users must contain between 1 and {} items, got {}",
                    self.bulk_limit,
                    writes.len()
                ),
            }
        } else {
            let mut account = self.lock();
            let job_id = format!("job-{}", account.jobs.len() + 1);
            account.jobs.insert(
                job_id.clone(),
                MemoryJob {
                    writes: writes.to_vec(),
                    ..MemoryJob::default()
                },
            );
            BulkSubmission::Submitted {
                job_id,
                refused: Vec::new(),
            }
        };
        std::future::ready(Ok(answer))
    }

    fn bulk_job<'a>(
        &'a self,
        job_id: &'a str,
    ) -> impl std::future::Future<Output = Result<BulkJobState, MemoryError>> + Send + 'a {
        std::future::ready(self.poll(job_id))
    }

    fn bulk_results<'a>(
        &'a self,
        job_id: &'a str,
        _result_url: &'a str,
    ) -> impl std::future::Future<Output = Result<Vec<BulkRecordResult>, MemoryError>> + Send + 'a
    {
        let results = self
            .lock()
            .jobs
            .get(job_id)
            .and_then(|j| j.results.clone())
            .ok_or_else(|| MemoryError(format!("no result file for job {job_id}")));
        std::future::ready(results)
    }

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
