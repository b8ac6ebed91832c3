//! The ports: traits that adapters implement so the engine can stay free of I/O.
//!
//! `sources` implements [`ModelSource`], `state-store` implements [`SnapshotStore`],
//! `attentive-client` implements [`Destination`]. This crate knows none of them.

use std::future::Future;

use crate::fingerprint::IN_DOUBT_VALUE;
use crate::plan::SnapshotIndex;
use crate::value::{Canonical, SourceRow};

/// A stream of model rows. Implementations read incrementally and never load the whole model.
pub trait ModelSource {
    /// What stops a read (I/O error, lost connection).
    type Error: std::error::Error + Send + Sync + 'static;

    /// The column names, in the order of [`SourceRow::values`].
    fn columns(&self) -> &[String];

    /// Reads the next record into `row` (reusing its allocations). Returns `Ok(false)` at the
    /// end. A record that cannot be read properly (ragged, invalid UTF-8, bad JSON) is not an
    /// error: it comes back with [`SourceRow::defect`] set, and reading goes on. `Err` is for
    /// failures that stop the read (I/O error, lost connection).
    fn next_row(&mut self, row: &mut SourceRow) -> Result<bool, Self::Error>;

    /// Whether the source already reads on a thread of its own, batches ahead of
    /// [`next_row`](ModelSource::next_row) (the SQLite, Parquet and PostgreSQL sources do). A
    /// caller that reads on a separate thread from where it plans adds that thread only for
    /// sources that do not, so that rows cross one read-ahead thread, not two. `false` unless
    /// a source says otherwise.
    fn reads_ahead(&self) -> bool {
        false
    }
}

impl<S: ModelSource + ?Sized> ModelSource for Box<S> {
    type Error = S::Error;
    fn columns(&self) -> &[String] {
        (**self).columns()
    }
    fn next_row(&mut self, row: &mut SourceRow) -> Result<bool, Self::Error> {
        (**self).next_row(row)
    }
    fn reads_ahead(&self) -> bool {
        (**self).reads_ahead()
    }
}

/// What the snapshot holds for one attribute of one contact.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAttribute {
    /// The attribute's snapshot key ([`crate::mapping::AttributeId::key`]).
    pub key: String,
    /// The value's fingerprint ([`crate::fingerprint`]), compared with the model's.
    pub fingerprint: u64,
    /// The value Attentive acknowledged (a clear is the empty text that was sent).
    pub value: Canonical,
    /// The run whose acknowledged write set it.
    pub run_id: Option<i64>,
}

/// An attribute in doubt: a run sent it and its answer was never recorded (the process was
/// killed while the write was in flight, or the write still failed after its retries), so
/// Attentive may or may not hold the value sent. Until a write of it is answered, the planner
/// sends the attribute again, whatever the model holds by then: without this, a model that
/// went back to the snapshot's value would never be sent, and Attentive would keep the value
/// that was in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct InDoubt {
    /// The attribute's snapshot key.
    pub key: String,
    /// The value sent; a clear is the empty text that was sent.
    pub sent: Canonical,
    /// The run that sent it.
    pub run_id: Option<i64>,
    /// The fingerprint of the value sent, while the write is *pending*: submitted in a bulk
    /// job whose result is not known yet. A pending value is not sent again while the model
    /// still holds it (and is not acknowledged either: the snapshot keeps its own value).
    /// `None` for a write whose answer was lost, which is sent again whatever the model holds.
    pub pending: Option<u64>,
}

/// How a snapshot store shows attributes in doubt to the planner: a stored attribute in doubt
/// gets the fingerprint [`IN_DOUBT_VALUE`], which no value has, and one the snapshot never
/// had is added with the value sent (so that a null in the model clears it). Either way the
/// planner sends the model's value again. A *pending* attribute ([`InDoubt::pending`]) shows
/// the fingerprint of the value in flight instead, so that the planner sends it only when
/// the model has moved on from that value. Stores also index a contact with an attribute in
/// doubt under [`crate::fingerprint::IN_DOUBT_ROW`], so that its row is compared attribute
/// by attribute.
///
/// Only `stored[from..]` is one contact's (a store appends each contact's attributes to a
/// buffer it reuses).
pub fn with_in_doubt(stored: &mut Vec<StoredAttribute>, from: usize, in_doubt: &[InDoubt]) {
    for d in in_doubt {
        let mine = stored.get_mut(from..).unwrap_or_default();
        match mine.iter_mut().find(|s| s.key == d.key) {
            Some(s) => s.fingerprint = d.pending.unwrap_or(IN_DOUBT_VALUE),
            None => stored.push(StoredAttribute {
                key: d.key.clone(),
                fingerprint: d.pending.unwrap_or(IN_DOUBT_VALUE),
                value: d.sent.clone(),
                run_id: d.run_id,
            }),
        }
    }
}

/// The read side of the snapshot, which planning needs.
///
/// A store that records writes in flight ([`InDoubt`]) shows them as [`with_in_doubt`] says,
/// in both methods.
pub trait SnapshotStore {
    /// What reading the snapshot can fail with.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Fills `index` with `(key hash, row fingerprint)` for every contact of the activation.
    fn load_index(&self, activation: &str, index: &mut SnapshotIndex) -> Result<(), Self::Error>;

    /// The stored attributes of one contact (any order), appended to `out`. `key_hash` is the
    /// contact's [`crate::fingerprint::key_hash`], under which [`SnapshotStore::load_index`]
    /// listed it.
    fn contact_attributes(
        &self,
        activation: &str,
        key_hash: u64,
        contact_key: &str,
        out: &mut Vec<StoredAttribute>,
    ) -> Result<(), Self::Error>;
}

/// Whether a contact exists in the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existence {
    /// A contact with this identifier exists.
    Exists,
    /// No contact has this identifier: nothing is written to it.
    NotFound,
}

/// The account a destination writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// A stable id (Attentive's company id).
    pub id: String,
    /// A name for people.
    pub name: Option<String>,
}

/// What a lookup found for one contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// Whether the contact exists.
    pub existence: Existence,
    /// The destination's own id of the contact, when the lookup tells it: two identifiers
    /// with the same id belong to the same contact.
    pub id: Option<String>,
}

impl Lookup {
    /// A lookup that tells existence only.
    pub fn existence(existence: Existence) -> Lookup {
        Lookup {
            existence,
            id: None,
        }
    }
}

/// An identifier as the destination matches it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContactRef {
    /// Email or phone.
    pub kind: crate::mapping::IdentifierKind,
    /// Normalized: lower-case email or E.164 phone.
    pub key: String,
}

/// One write to the destination: the changed attributes of one contact.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactWrite {
    /// Who the write is for.
    pub contact: ContactRef,
    /// Each changed attribute with its new value; `None` clears it (`on_null = "clear"`).
    pub attributes: Vec<(crate::mapping::AttributeId, Option<Canonical>)>,
}

/// What the destination answered for one write.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteOutcome {
    /// Accepted (2xx, or a bulk result line saying success): the snapshot may move.
    Acknowledged,
    /// Refused for its content (400): not re-sent until its values change.
    Rejected {
        /// Attentive's message.
        message: String,
    },
    /// The contact does not exist.
    NotFound,
    /// Still failing after retries: sent again by the next run.
    Failed {
        /// Why, for people (the last error after the retries).
        reason: String,
    },
}

/// What a destination answered to a bulk submission ([`Destination::submit_bulk`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BulkSubmission {
    /// Accepted for processing: the job's id, to poll ([`Destination::bulk_job`]). `refused`
    /// lists the writes (by index) left out of the job because they cannot be sent at all,
    /// with why; they are rejected as a realtime write of them would be.
    Submitted {
        /// Attentive's id of the job, to poll.
        job_id: String,
        /// Writes left out, by index into the submitted writes, with why.
        refused: Vec<(usize, String)>,
    },
    /// Refused as a whole for its content (400): nothing of it was queued. Each write can
    /// still be sent on its own, to learn which one is at fault.
    Rejected {
        /// Attentive's message.
        message: String,
    },
    /// No answer that says whether a job was created (retries spent, timeouts): its writes
    /// are in doubt.
    Failed {
        /// Why, for people.
        reason: String,
    },
}

/// Where a bulk job is ([`Destination::bulk_job`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BulkJobState {
    /// Not done: `PENDING`, `IN_PROGRESS`, or a status the destination does not know (which
    /// is never taken for an answer).
    Pending {
        /// The status as Attentive wrote it.
        status: String,
    },
    /// Processed: the result file says what became of each record. Completion alone
    /// acknowledges nothing; `result_url` is `None` when the answer names no file.
    Completed {
        /// The status as Attentive wrote it.
        status: String,
        /// Where the result file is, when Attentive names it (`url` or `resultUrl`).
        result_url: Option<String>,
    },
    /// Failed as a whole (`FAILED`, `CANCELLED`): none of its records counts as applied.
    Failed {
        /// The status as Attentive wrote it.
        status: String,
    },
    /// The destination does not know the job (expired, or never created).
    Unknown {
        /// What Attentive said.
        message: String,
    },
}

/// What a bulk job's result file says of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkRecordResult {
    /// The identifiers the record was sent with, as the file gives them back (normalized);
    /// empty when the line cannot be read.
    pub contacts: Vec<ContactRef>,
    /// What became of the record.
    pub outcome: BulkRecordOutcome,
}

/// The outcome of one bulk record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BulkRecordOutcome {
    /// The line clearly says success: the values the record carried are applied.
    Acknowledged,
    /// Refused for its content (4xx), with the destination's message.
    Rejected {
        /// Attentive's message.
        message: String,
    },
    /// Anything else: a 5xx, an unreadable or unclear line. Sent again later.
    Failed {
        /// Why, for people.
        reason: String,
    },
}

/// What delivering cost so far, for run reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DeliveryStats {
    /// HTTP requests sent, retries included.
    pub requests: u64,
    /// Requests that were retries.
    pub retries: u64,
    /// Answers with status 429.
    pub rate_limited: u64,
    /// Time spent waiting for the request budget or backing off, in milliseconds.
    pub throttled_ms: u64,
}

/// Where changes go: one Attentive account. Implemented by `attentive-client`.
///
/// `Err` is reserved for what stops a whole run (key rejected, permission missing); per-write
/// problems are [`WriteOutcome`]s.
pub trait Destination: Send + Sync {
    /// What stops a run (key rejected, permission missing); see [`Destination::stops_run`].
    type Error: std::error::Error + Send + Sync + 'static;

    /// A read-only check that the contact exists. Never creates anything.
    fn check_exists(
        &self,
        contact: &ContactRef,
    ) -> impl Future<Output = Result<Existence, Self::Error>> + Send;

    /// Sends one contact's changes.
    fn write(
        &self,
        write: &ContactWrite,
    ) -> impl Future<Output = Result<WriteOutcome, Self::Error>> + Send;

    /// Looks several contacts up at once (in one request where the destination can), answering
    /// in order: an `Err` entry is that contact's failure, or, when
    /// [`stops_run`](Destination::stops_run) says so, the run's. Read-only, like
    /// [`check_exists`](Destination::check_exists); the default checks one after another.
    fn check_many<'a>(
        &'a self,
        contacts: &'a [ContactRef],
    ) -> impl Future<Output = Vec<Result<Lookup, Self::Error>>> + Send + 'a {
        async move {
            let mut out = Vec::with_capacity(contacts.len());
            for c in contacts {
                out.push(self.check_exists(c).await.map(Lookup::existence));
            }
            out
        }
    }

    /// How many contacts [`check_many`](Destination::check_many) takes at a time (at least 1;
    /// may shrink during a run, when the destination finds its batches too large).
    fn lookup_batch(&self) -> usize {
        1
    }

    /// The account (company) the destination writes to, asked once per run so that a state
    /// file is never used against another account: `Ok(None)` when the destination cannot
    /// tell (the default).
    fn account(&self) -> impl Future<Output = Result<Option<Account>, Self::Error>> + Send {
        std::future::ready(Ok(None))
    }

    /// Most writes one bulk submission takes; 0 (the default) when the destination has no
    /// bulk route, and every write goes through [`write`](Destination::write).
    fn bulk_limit(&self) -> usize {
        0
    }

    /// Submits writes of contacts known to exist as one bulk job (at most
    /// [`bulk_limit`](Destination::bulk_limit)). A bulk job may create the contacts it does
    /// not know, so callers submit only contacts a check found.
    fn submit_bulk<'a>(
        &'a self,
        writes: &'a [ContactWrite],
    ) -> impl Future<Output = Result<BulkSubmission, Self::Error>> + Send + 'a {
        let _ = writes;
        std::future::ready(Ok(BulkSubmission::Rejected {
            message: "this destination takes no bulk jobs".to_owned(),
        }))
    }

    /// Where a bulk job is. Read-only.
    fn bulk_job<'a>(
        &'a self,
        job_id: &'a str,
    ) -> impl Future<Output = Result<BulkJobState, Self::Error>> + Send + 'a {
        let _ = job_id;
        std::future::ready(Ok(BulkJobState::Unknown {
            message: "this destination takes no bulk jobs".to_owned(),
        }))
    }

    /// Reads a completed job's result file: one entry per line, in order. Read-only. `Err`
    /// when the file cannot be read at all (its records then stay pending, and the file is
    /// read again later).
    fn bulk_results<'a>(
        &'a self,
        job_id: &'a str,
        result_url: &'a str,
    ) -> impl Future<Output = Result<Vec<BulkRecordResult>, Self::Error>> + Send + 'a {
        let _ = (job_id, result_url);
        std::future::ready(Ok(Vec::new()))
    }

    /// Whether an error stops the whole run (key rejected, permission missing), or fails only
    /// the contact at hand (e.g. retries exhausted on an existence check). Default: stops it.
    fn stops_run(&self, error: &Self::Error) -> bool {
        let _ = error;
        true
    }

    /// Requests, retries and throttling so far (zeros when the destination does not count).
    fn stats(&self) -> DeliveryStats {
        DeliveryStats::default()
    }
}
