//! The planner: model rows + snapshot → what to send, per contact, and an outcome per row.
//!
//! Memory is bounded by the number of contacts, not by values: the planner keeps one
//! `u64 → u64` entry per contact (key hash → row fingerprint, with two bits of per-run state),
//! and reads per-attribute values from the snapshot only for contacts whose row changed.

use std::collections::HashMap;
use std::fmt;

use nohash_hasher::BuildNoHashHasher;

use crate::fingerprint::{self, RowHasher, ROW_FP_MASK};
use crate::mapping::{AttributeId, BoundMapping, DuplicatePolicy, OnNull};
use crate::normalize;
use crate::ports::{ContactRef, ContactWrite, SnapshotStore, StoredAttribute};
use crate::segment::BoundFilter;
use crate::value::{Canonical, SourceRow};

const STATE_SHIFT: u32 = 62;
const UNSEEN: u64 = 0;
const SEEN_UNCHANGED: u64 = 1;
const SEEN_CHANGED: u64 = 2;
/// Seen, and the row was rejected for an invalid value.
const SEEN_INVALID: u64 = 3;

/// Per contact: the row fingerprint last settled in the snapshot (0 = none), plus two bits of
/// per-run state used to find duplicated identifiers.
#[derive(Debug, Default)]
pub struct SnapshotIndex {
    map: HashMap<u64, u64, BuildNoHashHasher<u64>>,
}

impl SnapshotIndex {
    /// An index with room for `n` contacts.
    pub fn with_capacity(n: usize) -> Self {
        SnapshotIndex {
            map: HashMap::with_capacity_and_hasher(n, BuildNoHashHasher::default()),
        }
    }

    /// Records a contact's settled row fingerprint.
    pub fn insert(&mut self, key_hash: u64, row_fingerprint: u64) {
        self.map.insert(key_hash, row_fingerprint & ROW_FP_MASK);
    }

    /// Makes room for `additional` more contacts.
    pub fn reserve(&mut self, additional: usize) {
        self.map.reserve(additional);
    }

    /// How many contacts it holds.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The settled row fingerprint of a contact, if the snapshot has one.
    pub fn get(&self, key_hash: u64) -> Option<u64> {
        self.map
            .get(&key_hash)
            .map(|v| v & ROW_FP_MASK)
            .filter(|fp| *fp != 0)
    }
}

/// Why a row was rejected, as a stable code for reports and filters.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectCode {
    /// The source could not read the record (ragged row, invalid UTF-8, bad JSON).
    UnreadableRow,
    /// The identifier's cell is empty.
    MissingIdentifier,
    /// The identifier is not a valid email or phone.
    InvalidIdentifier,
    /// A mapped value breaks its attribute's rule.
    InvalidValue,
    /// Another row has the same identifier (with `duplicates = "reject"`).
    DuplicateIdentifier,
}

impl RejectCode {
    /// The stable snake_case code reports and filters use.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::UnreadableRow => "unreadable_row",
            RejectCode::MissingIdentifier => "missing_identifier",
            RejectCode::InvalidIdentifier => "invalid_identifier",
            RejectCode::InvalidValue => "invalid_value",
            RejectCode::DuplicateIdentifier => "duplicate_identifier",
        }
    }
}

/// One problem in a row: which column, which value, which rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The column, when the problem is one cell's.
    pub column: Option<String>,
    /// The raw value, cut to 80 characters.
    pub value: Option<String>,
    /// The rule it breaks, for people.
    pub rule: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.column, &self.value) {
            (Some(c), Some(v)) => write!(f, "column `{c}` = {v:?}: {}", self.rule),
            (Some(c), None) => write!(f, "column `{c}`: {}", self.rule),
            _ => f.write_str(&self.rule),
        }
    }
}

/// A rejected row: never sent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    /// Why, as a stable code.
    pub code: RejectCode,
    /// The normalized identifier, when it could be read.
    pub identifier: Option<String>,
    /// Every problem of the row (column, value, rule).
    pub problems: Vec<Problem>,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.code.as_str())?;
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// One attribute to send.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeChange {
    /// Index into [`BoundMapping::attributes`].
    pub attribute: usize,
    /// The new value; `None` clears it (`on_null = "clear"`).
    pub value: Option<Canonical>,
    /// The value's fingerprint (for `None`: of the empty string that is sent).
    pub fingerprint: u64,
    /// What the snapshot held, if anything.
    pub previous: Option<Canonical>,
}

/// A contact with attributes to send.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactChange {
    /// The contact, by its normalized identifier.
    pub contact: ContactRef,
    /// The identifier's hash ([`crate::fingerprint::key_hash`]).
    pub key_hash: u64,
    /// The row fingerprint the snapshot takes once the write is acknowledged.
    pub row_fingerprint: u64,
    /// True when the snapshot knew nothing of this contact.
    pub new_contact: bool,
    /// The attributes to send, in mapping order.
    pub changes: Vec<AttributeChange>,
}

impl ContactChange {
    /// The write for the destination.
    pub fn to_write(&self, mapping: &BoundMapping) -> ContactWrite {
        ContactWrite {
            contact: self.contact.clone(),
            attributes: self
                .changes
                .iter()
                .map(|c| {
                    (
                        mapping.attributes[c.attribute].attribute.clone(),
                        c.value.clone(),
                    )
                })
                .collect(),
        }
    }
}

/// A contact whose row fingerprint moved but that has nothing to send (a value became null
/// and is omitted, or a mapping was removed): the snapshot may record the new fingerprint
/// without a write, so the next run does not look again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refresh {
    /// The contact.
    pub contact: ContactRef,
    /// The identifier's hash.
    pub key_hash: u64,
    /// The row fingerprint the snapshot takes.
    pub row_fingerprint: u64,
}

/// The plan for one row.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOutcome {
    /// Nothing to send.
    Unchanged {
        /// The identifier's hash.
        key_hash: u64,
        /// A new row fingerprint to record, when the row changed without anything to send.
        refresh: Option<Refresh>,
    },
    /// Attributes to send.
    Changed(ContactChange),
    /// The row is invalid: never sent.
    Rejected(Rejection),
    /// The activation's segment filter leaves the row out: nothing is planned or sent, and the
    /// contact's snapshot is kept (see [`crate::segment`]).
    OutsideSegment,
}

/// What the planner decided for one row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowPlan {
    /// [`SourceRow::number`].
    pub row: u64,
    /// What to do with it.
    pub outcome: RowOutcome,
    /// Set (to the identifier's key hash) when this row makes the earlier row of the same
    /// identifier a rejected duplicate: a consumer that kept that row's change must drop it and
    /// report it as `duplicate_identifier`. [`PlanCounts`] already counts it so.
    pub voids_earlier: Option<u64>,
}

/// Counts per outcome, kept exact as duplicates void earlier rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PlanCounts {
    /// Rows planned: those in the segment (all rows read when there is no filter), so
    /// `rows = changed + unchanged + rejected`.
    pub rows: u64,
    /// Rows read that the segment filter left out (a file model's filter; SQL models filter in
    /// the database, so they never see such rows).
    pub outside_segment: u64,
    /// Rows with attributes to send.
    pub changed: u64,
    /// Rows with nothing to send.
    pub unchanged: u64,
    /// Rows rejected (never sent).
    pub rejected: u64,
    /// Rejections by code.
    pub rejected_by_code: std::collections::BTreeMap<RejectCode, u64>,
    /// Attributes to send, by snapshot key.
    pub attributes_to_send: std::collections::BTreeMap<String, u64>,
}

/// Errors that stop planning.
#[derive(Debug, thiserror::Error)]
pub enum PlanError<E: std::error::Error + 'static> {
    /// The snapshot store failed.
    #[error("reading the snapshot failed")]
    Snapshot(#[source] E),
}

/// A row half planned by a [`RowPreparer`]: rejected already, or identified and
/// fingerprinted. Needs no snapshot, so it can be computed on another thread.
#[derive(Debug, Clone, PartialEq)]
pub enum Prepared {
    /// Invalid already.
    Rejected(Rejection),
    /// Left out by the segment filter.
    Outside,
    /// Identified and fingerprinted.
    Ready {
        /// The normalized identifier.
        key: String,
        /// Its hash.
        key_hash: u64,
        /// The row fingerprint.
        row_fp: u64,
    },
}

// A performance internal of the runner's pipeline, public for it; not part of the API.
#[doc(hidden)]
/// The first half of planning: reads the identifier and fingerprints the raw row. Pure (no
/// snapshot, no counts), so a source's reader thread can run it.
#[derive(Debug)]
pub struct RowPreparer<'m> {
    mapping: &'m BoundMapping,
    segment: Option<BoundFilter>,
    hasher: RowHasher,
}

impl<'m> RowPreparer<'m> {
    pub fn new(mapping: &'m BoundMapping) -> Self {
        RowPreparer {
            mapping,
            segment: None,
            hasher: RowHasher::default(),
        }
    }

    /// Keeps only the rows `segment` matches (bound to the same columns as the mapping).
    pub fn with_segment(mut self, segment: Option<BoundFilter>) -> Self {
        self.segment = segment;
        self
    }

    /// Identifies and fingerprints one row.
    pub fn prepare(&mut self, row: &SourceRow) -> Prepared {
        self.prepare_digested(row, None)
    }

    // A performance internal of the runner's pipeline, public for it; not part of the API.
    #[doc(hidden)]
    /// [`RowPreparer::prepare`] with the row's cells digest
    /// ([`fingerprint::RowHasher::cells_digest`] over the same mapping) when the thread that
    /// read the row computed it already.
    pub fn prepare_digested(&mut self, row: &SourceRow, cells_digest: Option<u64>) -> Prepared {
        let m = self.mapping;
        let rejected = |code, column: Option<&String>, value: Option<String>, rule: String| {
            Prepared::Rejected(Rejection {
                code,
                identifier: None,
                problems: vec![Problem {
                    column: column.cloned(),
                    value,
                    rule,
                }],
            })
        };
        if let Some(defect) = &row.defect {
            return rejected(RejectCode::UnreadableRow, None, None, defect.clone());
        }
        if let Some(segment) = &self.segment {
            match segment.matches(row) {
                Ok(true) => {}
                Ok(false) => return Prepared::Outside,
                Err(p) => {
                    let value = Some(cut(&p.value));
                    return rejected(RejectCode::InvalidValue, Some(&p.column), value, p.rule);
                }
            }
        }
        let id_col = &m.identifier.column;
        let raw_id = row.values.get(m.identifier_index);
        let key = match raw_id.map(|v| normalize::identifier(m.identifier.kind, v, &m.options)) {
            Some(Ok(Some(k))) => k,
            Some(Ok(None)) | None => {
                let rule = format!("the {} identifier is empty", m.identifier.kind.as_str());
                return rejected(RejectCode::MissingIdentifier, Some(id_col), None, rule);
            }
            Some(Err(e)) => {
                let value = raw_id.map(|v| cut(&v.to_string()));
                return rejected(RejectCode::InvalidIdentifier, Some(id_col), value, e.0);
            }
        };
        let key_hash = fingerprint::key_hash(m.identifier.kind, &key);
        // The row fingerprint covers the raw cells: equal to the snapshot's means nothing to
        // do, without normalizing anything.
        let digest = cells_digest.unwrap_or_else(|| self.hasher.cells_digest(m, row));
        Prepared::Ready {
            key,
            key_hash,
            row_fp: fingerprint::row_fingerprint(m.signature, key_hash, digest),
        }
    }
}

/// Plans rows one at a time. Create one per run; feed every row; read [`Planner::counts`].
#[derive(Debug)]
pub struct Planner<'m> {
    mapping: &'m BoundMapping,
    activation: String,
    index: SnapshotIndex,
    preparer: RowPreparer<'m>,
    values: Vec<Option<Canonical>>,
    stored: Vec<StoredAttribute>,
    /// Reused between batches.
    prepared: Vec<Prepared>,
    /// Duplicated identifiers known before planning: key hash → the row that wins (`None`:
    /// every row is rejected). See [`Planner::with_known_duplicates`].
    known_duplicates: HashMap<u64, Option<u64>, BuildNoHashHasher<u64>>,
    /// Identifiers found on more than one row (duplicates = "reject"): usually few.
    duplicated: std::collections::HashSet<u64, BuildNoHashHasher<u64>>,
    counts: PlanCounts,
}

fn cut(s: &str) -> String {
    if s.chars().count() <= 80 {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(79).collect();
        t.push('…');
        t
    }
}

impl<'m> Planner<'m> {
    /// `index` comes from [`SnapshotStore::load_index`] for the same activation.
    pub fn new(mapping: &'m BoundMapping, activation: &str, index: SnapshotIndex) -> Self {
        Planner {
            mapping,
            activation: activation.to_owned(),
            index,
            preparer: RowPreparer::new(mapping),
            values: Vec::with_capacity(mapping.attributes.len()),
            stored: Vec::new(),
            prepared: Vec::new(),
            known_duplicates: HashMap::default(),
            duplicated: Default::default(),
            counts: PlanCounts::default(),
        }
    }

    /// Plans only the rows `segment` matches; the others are [`RowOutcome::OutsideSegment`].
    pub fn with_segment(mut self, segment: Option<BoundFilter>) -> Self {
        self.preparer = self.preparer.with_segment(segment);
        self
    }

    /// Plans with duplicates found by an earlier pass over the same model (collected from
    /// [`RowPlan::voids_earlier`]: key hash → winning row, `None` when every row is rejected).
    /// A run plans twice: a first pass finds duplicates, the second sends, so that no row is
    /// sent and then voided by a later duplicate.
    pub fn with_known_duplicates(
        mut self,
        known: impl IntoIterator<Item = (u64, Option<u64>)>,
    ) -> Self {
        self.known_duplicates = known.into_iter().collect();
        self
    }

    /// The counts so far.
    pub fn counts(&self) -> &PlanCounts {
        &self.counts
    }

    /// The counts, once planning is done.
    pub fn into_counts(self) -> PlanCounts {
        self.counts
    }

    fn reject(&mut self, row: u64, rejection: Rejection, voids: Option<u64>) -> RowPlan {
        self.counts.rejected += 1;
        *self
            .counts
            .rejected_by_code
            .entry(rejection.code)
            .or_default() += 1;
        RowPlan {
            row,
            outcome: RowOutcome::Rejected(rejection),
            voids_earlier: voids,
        }
    }

    /// Plans one row. `snapshot` is read only for contacts whose row fingerprint moved.
    pub fn plan_row<S: SnapshotStore>(
        &mut self,
        row: &SourceRow,
        snapshot: &S,
    ) -> Result<RowPlan, PlanError<S::Error>> {
        let prepared = self.preparer.prepare(row);
        self.plan_prepared(row, prepared, snapshot)
    }

    /// Plans a row a [`RowPreparer`] over the same mapping has prepared.
    pub fn plan_prepared<S: SnapshotStore>(
        &mut self,
        row: &SourceRow,
        prepared: Prepared,
        snapshot: &S,
    ) -> Result<RowPlan, PlanError<S::Error>> {
        if !matches!(prepared, Prepared::Outside) {
            self.counts.rows += 1;
        }
        match prepared {
            Prepared::Outside => {
                self.counts.outside_segment += 1;
                Ok(RowPlan {
                    row: row.number,
                    outcome: RowOutcome::OutsideSegment,
                    voids_earlier: None,
                })
            }
            Prepared::Rejected(r) => Ok(self.reject(row.number, r, None)),
            Prepared::Ready {
                key,
                key_hash,
                row_fp,
            } => self.finish(row, key, key_hash, row_fp, snapshot),
        }
    }

    // A performance internal of the runner's pipeline, public for it; not part of the API.
    #[doc(hidden)]
    /// Plans a batch of prepared rows into `out` (in order). Faster than one by one: every
    /// row's snapshot entry is looked up in one tight loop first, so the CPU overlaps the cache
    /// misses of independent lookups.
    pub fn plan_prepared_batch<S: SnapshotStore>(
        &mut self,
        rows: &[SourceRow],
        prepared: &mut Vec<Prepared>,
        snapshot: &S,
        out: &mut Vec<RowPlan>,
    ) -> Result<(), PlanError<S::Error>> {
        let mut touched = 0u64;
        for p in prepared.iter() {
            if let Prepared::Ready { key_hash, .. } = p {
                touched ^= self.index.map.get(key_hash).copied().unwrap_or(0);
            }
        }
        std::hint::black_box(touched);
        for (row, p) in rows.iter().zip(prepared.drain(..)) {
            out.push(self.plan_prepared(row, p, snapshot)?);
        }
        Ok(())
    }

    /// Prepares and plans a batch of rows on this thread (see [`Planner::plan_prepared_batch`]).
    pub fn plan_batch<S: SnapshotStore>(
        &mut self,
        rows: &[SourceRow],
        snapshot: &S,
        out: &mut Vec<RowPlan>,
    ) -> Result<(), PlanError<S::Error>> {
        self.plan_digested_batch(rows, &[], snapshot, out)
    }

    // A performance internal of the runner's pipeline, public for it; not part of the API.
    #[doc(hidden)]
    /// [`Planner::plan_batch`] with the rows' cells digests computed by the thread that read
    /// them (`digests[i]` for `rows[i]`; rows without one are digested here). Hashing cells
    /// where they were just parsed is cheaper than reading them again from another core.
    pub fn plan_digested_batch<S: SnapshotStore>(
        &mut self,
        rows: &[SourceRow],
        digests: &[u64],
        snapshot: &S,
        out: &mut Vec<RowPlan>,
    ) -> Result<(), PlanError<S::Error>> {
        let mut prepared = std::mem::take(&mut self.prepared);
        prepared.clear();
        prepared.extend(
            rows.iter()
                .enumerate()
                .map(|(i, r)| self.preparer.prepare_digested(r, digests.get(i).copied())),
        );
        let result = self.plan_prepared_batch(rows, &mut prepared, snapshot, out);
        self.prepared = prepared;
        result
    }

    /// Second half: compares with the snapshot, checks duplicates, normalizes and diffs.
    fn finish<S: SnapshotStore>(
        &mut self,
        row: &SourceRow,
        key: String,
        key_hash: u64,
        row_fp: u64,
        snapshot: &S,
    ) -> Result<RowPlan, PlanError<S::Error>> {
        let m = self.mapping;
        let id_col = &m.identifier.column;

        // The common case, with one hash lookup: first sight of a contact whose row is as the
        // snapshot has it.
        if let Some(slot) = self.index.map.get_mut(&key_hash) {
            if *slot == row_fp {
                // State bits are zero (unseen) and the fingerprint is equal.
                *slot = (SEEN_UNCHANGED << STATE_SHIFT) | row_fp;
                self.counts.unchanged += 1;
                return Ok(RowPlan {
                    row: row.number,
                    outcome: RowOutcome::Unchanged {
                        key_hash,
                        refresh: None,
                    },
                    voids_earlier: None,
                });
            }
        }

        // Duplicate identifiers.
        let current = self.index.map.get(&key_hash).copied().unwrap_or(0);
        let state = current >> STATE_SHIFT;
        let stored_fp = current & ROW_FP_MASK;
        let mut voids = None;
        let dup = |key: &str| {
            Rejection {
            code: RejectCode::DuplicateIdentifier,
            identifier: Some(key.to_owned()),
            problems: vec![Problem {
                column: Some(id_col.clone()),
                value: Some(cut(key)),
                rule: match m.duplicates {
                    DuplicatePolicy::Reject => "this identifier appears on more than one row; every row with it is rejected (set duplicates = \"first\" or \"last\" to keep one)".to_owned(),
                    DuplicatePolicy::First => "this identifier appeared on an earlier row, which wins (duplicates = \"first\")".to_owned(),
                    DuplicatePolicy::Last => "this identifier appears on a later row, which wins (duplicates = \"last\")".to_owned(),
                },
            }],
        }
        };
        if let Some(winner) = self.known_duplicates.get(&key_hash) {
            // Found by an earlier pass over the same model: only the winning row (if any) is
            // planned, so nothing is ever voided after it was sent.
            if *winner != Some(row.number) {
                return Ok(self.reject(row.number, dup(&key), None));
            }
        } else if state != UNSEEN {
            let dead = self.duplicated.contains(&key_hash);
            match m.duplicates {
                DuplicatePolicy::Reject => {
                    if !dead {
                        // The earlier row becomes a rejected duplicate too.
                        self.void_earlier(state);
                        voids = Some(key_hash);
                        self.duplicated.insert(key_hash);
                    }
                    return Ok(self.reject(row.number, dup(&key), voids));
                }
                DuplicatePolicy::First => return Ok(self.reject(row.number, dup(&key), None)),
                DuplicatePolicy::Last => {
                    self.void_earlier(state);
                    voids = Some(key_hash);
                }
            }
        }

        let contact = ContactRef {
            kind: m.identifier.kind,
            key,
        };
        if stored_fp == row_fp {
            self.set_state(key_hash, SEEN_UNCHANGED, stored_fp);
            self.counts.unchanged += 1;
            return Ok(RowPlan {
                row: row.number,
                outcome: RowOutcome::Unchanged {
                    key_hash,
                    refresh: None,
                },
                voids_earlier: voids,
            });
        }

        // Normalize every mapped value, collecting every problem of the row.
        self.values.clear();
        let mut problems = Vec::new();
        for a in &m.attributes {
            let raw = row
                .values
                .get(a.index)
                .unwrap_or(&crate::value::Value::Null);
            let res = match &a.attribute {
                AttributeId::Standard(f) => normalize::standard(*f, raw, &m.options),
                AttributeId::Custom(_) => normalize::custom(raw, a.custom_type, &m.options),
            };
            match res {
                Ok(v) => self.values.push(v),
                Err(e) => {
                    problems.push(Problem {
                        column: Some(a.column.clone()),
                        value: Some(cut(&raw.to_string())),
                        rule: e.0,
                    });
                    self.values.push(None);
                }
            }
        }

        if !problems.is_empty() {
            self.set_state(key_hash, SEEN_INVALID, stored_fp);
            let r = Rejection {
                code: RejectCode::InvalidValue,
                identifier: Some(contact.key),
                problems,
            };
            return Ok(self.reject(row.number, r, voids));
        }

        // Something moved: compare attribute by attribute with the snapshot.
        self.stored.clear();
        if stored_fp != 0 {
            snapshot
                .contact_attributes(&self.activation, key_hash, &contact.key, &mut self.stored)
                .map_err(PlanError::Snapshot)?;
        }
        let mut changes = Vec::new();
        for (i, (a, v)) in m.attributes.iter().zip(self.values.iter()).enumerate() {
            let prev = self.stored.iter().find(|s| s.key == a.key);
            match v {
                Some(v) => {
                    let fp = fingerprint::value_fingerprint(v);
                    if prev.map(|p| p.fingerprint) != Some(fp) {
                        changes.push(AttributeChange {
                            attribute: i,
                            value: Some(v.clone()),
                            fingerprint: fp,
                            previous: prev.map(|p| p.value.clone()),
                        });
                    }
                }
                None => {
                    let cleared = Canonical::Text(String::new());
                    let fp = fingerprint::value_fingerprint(&cleared);
                    // `""` only goes to string fields; for others a null is omitted.
                    let clears = prev.is_some_and(|p| {
                        p.fingerprint != fp
                            && crate::mapping::clears_with_empty_string(
                                &a.attribute,
                                a.custom_type,
                                Some(&p.value),
                            )
                    });
                    if m.on_null == OnNull::Clear && clears {
                        changes.push(AttributeChange {
                            attribute: i,
                            value: None,
                            fingerprint: fp,
                            previous: prev.map(|p| p.value.clone()),
                        });
                    }
                }
            }
        }
        if changes.is_empty() {
            self.set_state(key_hash, SEEN_UNCHANGED, stored_fp);
            self.counts.unchanged += 1;
            return Ok(RowPlan {
                row: row.number,
                outcome: RowOutcome::Unchanged {
                    key_hash,
                    refresh: Some(Refresh {
                        contact,
                        key_hash,
                        row_fingerprint: row_fp,
                    }),
                },
                voids_earlier: voids,
            });
        }
        self.set_state(key_hash, SEEN_CHANGED, stored_fp);
        self.counts.changed += 1;
        for c in &changes {
            *self
                .counts
                .attributes_to_send
                .entry(m.attributes[c.attribute].key.clone())
                .or_default() += 1;
        }
        Ok(RowPlan {
            row: row.number,
            outcome: RowOutcome::Changed(ContactChange {
                contact,
                key_hash,
                row_fingerprint: row_fp,
                new_contact: stored_fp == 0,
                changes,
            }),
            voids_earlier: voids,
        })
    }

    fn set_state(&mut self, key_hash: u64, state: u64, stored_fp: u64) {
        self.index
            .map
            .insert(key_hash, (state << STATE_SHIFT) | stored_fp);
    }

    /// Moves the earlier row of a duplicated identifier to `rejected` as a duplicate.
    fn void_earlier(&mut self, state: u64) {
        let code = RejectCode::DuplicateIdentifier;
        match state {
            SEEN_UNCHANGED => self.counts.unchanged -= 1,
            SEEN_CHANGED => self.counts.changed -= 1,
            SEEN_INVALID => {
                // Already rejected; it is now counted as a duplicate instead.
                self.counts.rejected -= 1;
                decrement(&mut self.counts.rejected_by_code, &RejectCode::InvalidValue);
            }
            _ => return,
        }
        self.counts.rejected += 1;
        *self.counts.rejected_by_code.entry(code).or_default() += 1;
    }

    /// Subtracts a dropped change's attributes from [`PlanCounts::attributes_to_send`]; call
    /// when dropping a change because of [`RowPlan::voids_earlier`].
    pub fn forget_change(&mut self, change: &ContactChange) {
        for c in &change.changes {
            let key = &self.mapping.attributes[c.attribute].key;
            decrement(&mut self.counts.attributes_to_send, key);
        }
    }
}

/// Lowers a count, removing it at zero so that counts compare equal however they were reached.
fn decrement<K: Ord>(map: &mut std::collections::BTreeMap<K, u64>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests;
