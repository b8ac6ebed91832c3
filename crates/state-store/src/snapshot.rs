//! The snapshot: per activation and contact, the row fingerprint and every attribute value
//! Attentive acknowledged.

use std::sync::mpsc;

use std::borrow::Cow;
use std::collections::HashMap;

use rusqlite::{params, params_from_iter, Connection, Row, Rows, TransactionBehavior};
use sync_core::fingerprint::{key_hash, value_fingerprint, IN_DOUBT_ROW};
use sync_core::mapping::IdentifierKind;
use sync_core::plan::{ContactChange, Refresh, SnapshotIndex};
use sync_core::ports::{with_in_doubt, InDoubt, SnapshotStore, StoredAttribute};
use sync_core::{mapping::BoundMapping, value::Canonical};

use crate::packed::{write_values, Malformed, Packed, Slot};
use crate::{activation_id, u64_from_sql, u64_to_sql, Context, Error, StateStore};

/// One activation's entry for a contact, for `contacts show`.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactSnapshot {
    /// The activation's name.
    pub activation: String,
    /// Hash of the contact's identifier ([`sync_core::fingerprint::key_hash`]).
    pub key_hash: u64,
    /// The row fingerprint settled by the last acknowledged write or refresh (0: never
    /// settled, the contact only has attributes in doubt).
    pub row_fingerprint: u64,
    /// The run that last settled this contact.
    pub updated_run: Option<i64>,
    /// When it was settled (RFC 3339, UTC; empty if never).
    pub updated_at: String,
    /// The stored attributes, sorted by key.
    pub attributes: Vec<StoredAttribute>,
    /// Attributes sent without a recorded answer, sorted by key: the next run sends them again.
    pub in_doubt: Vec<InDoubt>,
}

/// The activation's attribute keys by slot ([`crate::packed`]), as written by
/// [`Slots::slot`]. Slots are never renumbered or reused for another key, so a list read
/// earlier is never wrong, only possibly short.
pub(crate) fn slot_keys(conn: &Connection, activation_id: i64) -> Result<Vec<String>, Error> {
    const A: &str = "reading attribute slots";
    let mut stmt = conn
        .prepare_cached(
            "SELECT slot, attribute_key FROM snapshot_keys WHERE activation_id = ?1 ORDER BY slot",
        )
        .ctx(A)?;
    let rows = stmt
        .query_map([activation_id], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })
        .ctx(A)?;
    let mut keys = Vec::new();
    for row in rows {
        let (slot, key) = row.ctx(A)?;
        if usize::try_from(slot).ok() != Some(keys.len()) {
            return Err(Error::Corrupt {
                table: "snapshot_keys",
                column: "slot",
                value: slot.to_string(),
            });
        }
        keys.push(key);
    }
    Ok(keys)
}

/// An activation's attribute slots inside a write transaction, numbering new keys.
pub(crate) struct Slots {
    activation_id: i64,
    by_key: HashMap<String, usize>,
}

impl Slots {
    pub(crate) fn load(tx: &Connection, activation_id: i64) -> Result<Slots, Error> {
        let keys = slot_keys(tx, activation_id)?;
        Ok(Slots {
            activation_id,
            by_key: keys.into_iter().enumerate().map(|(i, k)| (k, i)).collect(),
        })
    }

    /// The slot of an attribute key, numbering it if it has none yet.
    pub(crate) fn slot(&mut self, tx: &Connection, key: &str) -> Result<usize, Error> {
        if let Some(&slot) = self.by_key.get(key) {
            return Ok(slot);
        }
        let slot = self.by_key.len();
        tx.prepare_cached(
            "INSERT INTO snapshot_keys (activation_id, slot, attribute_key) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut s| s.execute(params![self.activation_id, slot as i64, key]))
        .ctx("numbering an attribute key")?;
        self.by_key.insert(key.to_owned(), slot);
        Ok(slot)
    }
}

/// One contact's `snapshot` row, read to be changed and written back ([`Entry::write`]).
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Its row id; `None` until written.
    pub id: Option<i64>,
    pub contact_key: String,
    pub key_hash: u64,
    pub row_fingerprint: u64,
    pub updated_run: Option<i64>,
    /// Milliseconds since the Unix epoch.
    pub updated_at: i64,
    pub packed: Packed,
}

pub(crate) const FIND_ENTRY: &str = "\
SELECT id, contact_key, row_fingerprint, updated_run, updated_at, attribute_runs, attributes
FROM snapshot WHERE activation_id = ?1 AND key_hash = ?2";

const INSERT_ENTRY: &str = "\
INSERT INTO snapshot (activation_id, key_hash, row_fingerprint, updated_run, updated_at,
                      contact_key, attribute_runs, attributes)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

const UPDATE_ENTRY: &str = "\
UPDATE snapshot SET row_fingerprint = ?2, updated_run = ?3, updated_at = ?4,
                    attribute_runs = ?5, attributes = ?6
WHERE id = ?1";

impl Entry {
    /// A contact with no row yet.
    pub(crate) fn new(contact_key: &str, key_hash: u64) -> Entry {
        Entry {
            id: None,
            contact_key: contact_key.to_owned(),
            key_hash,
            row_fingerprint: 0,
            updated_run: None,
            updated_at: 0,
            packed: Packed::default(),
        }
    }

    /// The contact's row in the activation, if it has one. Rows are found by key hash and
    /// told apart by key, so two keys with the same hash never share a row.
    pub(crate) fn find(
        conn: &Connection,
        activation_id: i64,
        contact_key: &str,
        key_hash: u64,
    ) -> Result<Option<Entry>, Error> {
        const A: &str = "reading a contact's snapshot";
        let mut stmt = conn.prepare_cached(FIND_ENTRY).ctx(A)?;
        let mut rows = stmt
            .query(params![activation_id, u64_to_sql(key_hash)])
            .ctx(A)?;
        while let Some(r) = rows.next().ctx(A)? {
            let key = text_at(r, 1, A)?;
            if key != contact_key {
                continue;
            }
            let attributes = text_at(r, 6, A)?;
            let packed = Packed::decode(attributes, r.get_ref(5).ctx(A)?).map_err(corrupt)?;
            return Ok(Some(Entry {
                id: Some(r.get(0).ctx(A)?),
                contact_key: contact_key.to_owned(),
                key_hash,
                row_fingerprint: u64_from_sql(r.get(2).ctx(A)?),
                updated_run: r.get(3).ctx(A)?,
                updated_at: r.get(4).ctx(A)?,
                packed,
            }));
        }
        Ok(None)
    }

    /// The row as found, or a new one.
    pub(crate) fn find_or_new(
        conn: &Connection,
        activation_id: i64,
        contact_key: &str,
        key_hash: u64,
    ) -> Result<Entry, Error> {
        Ok(Entry::find(conn, activation_id, contact_key, key_hash)?
            .unwrap_or_else(|| Entry::new(contact_key, key_hash)))
    }

    /// Writes the row (inserting it if it has no id yet); `buf` is scratch space.
    pub(crate) fn write(
        &mut self,
        tx: &Connection,
        activation_id: i64,
        buf: &mut Vec<u8>,
    ) -> Result<(), Error> {
        const A: &str = "recording a contact's snapshot";
        let runs = self.packed.encode(buf);
        let json = json_text(buf);
        match self.id {
            Some(id) => {
                tx.prepare_cached(UPDATE_ENTRY)
                    .and_then(|mut s| {
                        s.execute(params![
                            id,
                            u64_to_sql(self.row_fingerprint),
                            self.updated_run,
                            self.updated_at,
                            runs,
                            json
                        ])
                    })
                    .ctx(A)?;
            }
            None => {
                let new = NewRow {
                    contact_key: &self.contact_key,
                    key_hash: self.key_hash,
                    row_fingerprint: self.row_fingerprint,
                    updated_run: self.updated_run,
                    updated_at: self.updated_at,
                };
                self.id = Some(new.insert(tx, activation_id, runs, json)?);
            }
        }
        Ok(())
    }

    /// The stored attributes, with their keys (`keys`, by slot) and fingerprints.
    pub(crate) fn attributes(
        &self,
        keys: &[String],
        out: &mut Vec<StoredAttribute>,
    ) -> Result<(), Error> {
        for (i, slot) in self.packed.slots.iter().enumerate() {
            let Some(slot) = slot else { continue };
            let key = keys.get(i).ok_or_else(|| Error::Corrupt {
                table: "snapshot",
                column: "attributes",
                value: format!("a value in slot {i}, which `snapshot_keys` does not number"),
            })?;
            let value = slot.value().ok_or_else(|| Error::Corrupt {
                table: "snapshot",
                column: "attributes",
                value: slot.tagged.clone(),
            })?;
            out.push(StoredAttribute {
                key: key.clone(),
                fingerprint: value_fingerprint(&value),
                value,
                run_id: slot.run,
            });
        }
        Ok(())
    }
}

/// Column `i` of a row as text, borrowed.
fn text_at<'r>(r: &'r Row<'_>, i: usize, action: &'static str) -> Result<&'r str, Error> {
    let v = r.get_ref(i).ctx(action)?;
    v.as_str().map_err(|e| Error::Sqlite {
        action,
        source: rusqlite::Error::FromSqlConversionFailure(i, v.data_type(), Box::new(e)),
    })
}

/// The JSON [`write_values`] writes: UTF-8 by construction.
fn json_text(buf: &[u8]) -> &str {
    std::str::from_utf8(buf).unwrap_or("[]")
}

/// A contact's row written for the first time.
struct NewRow<'a> {
    contact_key: &'a str,
    key_hash: u64,
    row_fingerprint: u64,
    updated_run: Option<i64>,
    updated_at: i64,
}

impl NewRow<'_> {
    /// Inserts the row; returns its id.
    fn insert(
        &self,
        tx: &Connection,
        activation_id: i64,
        runs: rusqlite::types::Value,
        attributes: &str,
    ) -> Result<i64, Error> {
        tx.prepare_cached(INSERT_ENTRY)
            .and_then(|mut s| {
                s.execute(params![
                    activation_id,
                    u64_to_sql(self.key_hash),
                    u64_to_sql(self.row_fingerprint),
                    self.updated_run,
                    self.updated_at,
                    self.contact_key,
                    runs,
                    attributes
                ])
            })
            .ctx("recording a contact's snapshot")?;
        Ok(tx.last_insert_rowid())
    }
}

/// A value's text, borrowed where it can be.
fn text_of(v: &Canonical) -> Cow<'_, str> {
    match v {
        Canonical::Bool(true) => Cow::Borrowed("true"),
        Canonical::Bool(false) => Cow::Borrowed("false"),
        Canonical::Int(i) => Cow::Owned(i.to_string()),
        Canonical::Number(n) => Cow::Borrowed(n.as_str()),
        Canonical::Text(t) => Cow::Borrowed(t),
    }
}

fn corrupt(m: Malformed) -> Error {
    Error::Corrupt {
        table: "snapshot",
        column: m.column,
        value: m.value,
    }
}

/// Milliseconds since the Unix epoch of an RFC 3339 time (what [`crate::now`] writes).
pub(crate) fn millis(at: &str) -> Result<i64, Error> {
    chrono::DateTime::parse_from_rfc3339(at)
        .map(|t| t.timestamp_millis())
        .map_err(|_| Error::Corrupt {
            table: "snapshot",
            column: "updated_at",
            value: at.to_owned(),
        })
}

/// RFC 3339 text (UTC, milliseconds) of a time in milliseconds since the Unix epoch.
pub(crate) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// A value stored as `value_tag, value_text` in `table`.
pub(crate) fn decode_value(table: &'static str, tag: &str, text: &str) -> Result<Canonical, Error> {
    let mut chars = tag.chars();
    let value = match (chars.next(), chars.next()) {
        (Some(t), None) => Canonical::from_tagged(t, text),
        _ => None,
    };
    value.ok_or_else(|| Error::Corrupt {
        table,
        column: "value_tag, value_text",
        value: format!("{tag}, {text}"),
    })
}

/// From this many contacts on, [`SnapshotStore::load_index`] reads rows on the calling thread
/// while a second thread fills the index (hash-table inserts cost more than the scan).
pub(crate) const PIPELINE_MIN: usize = 1 << 16;

/// Entries handed from the reading thread to the inserting thread at a time.
const BATCH: usize = 8 * 1024;

/// Reads one `(key_hash, row_fingerprint)` row.
fn index_entry(r: &Row<'_>) -> Result<(u64, u64), Error> {
    const A: &str = "loading the snapshot index";
    let key_hash: i64 = r.get(0).ctx(A)?;
    let row_fingerprint: i64 = r.get(1).ctx(A)?;
    Ok((u64_from_sql(key_hash), u64_from_sql(row_fingerprint)))
}

/// Scans `rows` on this thread and inserts into `index` on a scoped helper thread, in batches.
/// `Err` only when the helper thread cannot be started (nothing has been read then).
fn load_pipelined(
    rows: &mut Rows<'_>,
    index: &mut SnapshotIndex,
) -> std::io::Result<Result<(), Error>> {
    const A: &str = "loading the snapshot index";
    std::thread::scope(|s| {
        let (full_tx, full_rx) = mpsc::sync_channel::<Vec<(u64, u64)>>(4);
        let (empty_tx, empty_rx) = mpsc::channel::<Vec<(u64, u64)>>();
        let inserter = std::thread::Builder::new()
            .name("load-index".into())
            .spawn_scoped(s, move || {
                for mut batch in full_rx {
                    for &(key_hash, row_fingerprint) in &batch {
                        index.insert(key_hash, row_fingerprint);
                    }
                    batch.clear();
                    // The reader may be done already; the batch is simply dropped then.
                    let _ = empty_tx.send(batch);
                }
            })?;
        let mut read = || -> Result<(), Error> {
            let mut batch = Vec::with_capacity(BATCH);
            while let Some(r) = rows.next().ctx(A)? {
                batch.push(index_entry(r)?);
                if batch.len() == BATCH {
                    let next = empty_rx
                        .try_recv()
                        .unwrap_or_else(|_| Vec::with_capacity(BATCH));
                    if full_tx.send(std::mem::replace(&mut batch, next)).is_err() {
                        // The inserter is gone (it panicked): `join` below reports it.
                        return Ok(());
                    }
                }
            }
            if !batch.is_empty() {
                let _ = full_tx.send(batch);
            }
            Ok(())
        };
        let result = read();
        drop(full_tx);
        if let Err(panic) = inserter.join() {
            std::panic::resume_unwind(panic);
        }
        Ok(result)
    })
}

impl SnapshotStore for StateStore {
    type Error = Error;

    /// Streams `(key hash, row fingerprint)` of every contact of the activation into `index`
    /// with one range scan of the covering index `snapshot_index`.
    fn load_index(&self, activation: &str, index: &mut SnapshotIndex) -> Result<(), Error> {
        const A: &str = "loading the snapshot index";
        let Some(id) = activation_id(&self.conn, activation).ctx(A)? else {
            return Ok(());
        };
        let count: i64 = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM snapshot INDEXED BY snapshot_index WHERE activation_id = ?1",
            )
            .and_then(|mut s| s.query_row([id], |r| r.get(0)))
            .ctx(A)?;
        let count = usize::try_from(count).unwrap_or(0);
        index.reserve(count);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT key_hash, row_fingerprint FROM snapshot \
                 INDEXED BY snapshot_index WHERE activation_id = ?1",
            )
            .ctx(A)?;
        let mut rows = stmt.query([id]).ctx(A)?;
        let mut loaded = None;
        if count >= PIPELINE_MIN {
            match load_pipelined(&mut rows, index) {
                Ok(result) => loaded = Some(result),
                // No thread to spare: load on this one.
                Err(_spawn_error) => {}
            }
        }
        match loaded {
            Some(result) => result?,
            None => {
                while let Some(r) = rows.next().ctx(A)? {
                    let (key_hash, row_fingerprint) = index_entry(r)?;
                    index.insert(key_hash, row_fingerprint);
                }
            }
        }
        // Contacts with attributes in doubt are compared attribute by attribute.
        let in_doubt = crate::doubt::contacts_in_doubt(&self.conn, id)?;
        for &key_hash in &in_doubt {
            index.insert(key_hash, IN_DOUBT_ROW);
        }
        *self.doubt_free.borrow_mut() = in_doubt.is_empty().then(|| activation.to_owned());
        Ok(())
    }

    fn contact_attributes(
        &self,
        activation: &str,
        key_hash: u64,
        contact_key: &str,
        out: &mut Vec<StoredAttribute>,
    ) -> Result<(), Error> {
        const A: &str = "reading a contact's attributes";
        let Some(id) = activation_id(&self.conn, activation).ctx(A)? else {
            return Ok(());
        };
        let start = out.len();
        if let Some(entry) = Entry::find(&self.conn, id, contact_key, key_hash)? {
            self.with_slot_keys(id, entry.packed.slots.len(), |keys| {
                entry.attributes(keys, out)
            })?;
        }
        // Skipped when the index was loaded and found no doubts (the common case).
        let doubt_free = self.doubt_free.borrow().as_deref() == Some(activation);
        if !doubt_free {
            let doubts = crate::doubt::in_doubt_of(&self.conn, id, contact_key)?;
            with_in_doubt(out, start, &doubts);
        }
        Ok(())
    }
}

impl StateStore {
    /// Runs `f` with the activation's attribute keys by slot, at least `needed` of them if the
    /// database has that many (read again when the cached list is shorter).
    fn with_slot_keys<T>(
        &self,
        activation_id: i64,
        needed: usize,
        f: impl FnOnce(&[String]) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut cache = self.slot_keys.borrow_mut();
        let keys = cache.entry(activation_id).or_default();
        if keys.len() < needed {
            *keys = slot_keys(&self.conn, activation_id)?;
        }
        f(keys)
    }

    /// Records acknowledged writes, in one transaction: for each change, the contact's key
    /// hash, row fingerprint and run, and each changed attribute's value (a cleared value,
    /// `None`, is stored as the empty text that was sent). Creates the activation on first
    /// use. When a contact appears more than once, the later change wins. The attributes the
    /// changes carried are no longer in doubt.
    pub fn apply_changes(
        &mut self,
        activation: &str,
        run_id: i64,
        mapping: &BoundMapping,
        changes: &[ContactChange],
    ) -> Result<(), Error> {
        self.write_activation(
            "recording acknowledged changes",
            activation,
            |tx, id, at| apply_changes_in(tx, id, run_id, mapping, changes, at),
        )
    }

    /// Records new row fingerprints of contacts with nothing to send, in one transaction,
    /// creating contact entries that do not exist. Attributes are untouched; `updated_run` and
    /// `updated_at` move to this run.
    pub fn apply_refreshes(
        &mut self,
        activation: &str,
        run_id: i64,
        refreshes: &[Refresh],
    ) -> Result<(), Error> {
        self.write_activation(
            "recording refreshed row fingerprints",
            activation,
            |tx, id, at| apply_refreshes_in(tx, id, run_id, refreshes, at),
        )
    }

    /// Deletes the activation's stored attributes whose key is not in `keys` (attributes no
    /// longer mapped) and their doubts; contacts stay. Returns how many stored values were
    /// deleted.
    pub fn retain_attributes(&mut self, activation: &str, keys: &[&str]) -> Result<u64, Error> {
        const A: &str = "dropping attributes that are no longer mapped";
        let Some(id) = activation_id(&self.conn, activation).ctx(A)? else {
            return Ok(0);
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(A)?;
        let dropped: Vec<bool> = slot_keys(&tx, id)?
            .iter()
            .map(|k| !keys.contains(&k.as_str()))
            .collect();
        let mut n = 0;
        if dropped.contains(&true) {
            // Rewrite the rows holding a value in a dropped slot (a mapping change, rare).
            let mut rows: Vec<(i64, Packed)> = Vec::new();
            {
                let mut stmt = tx
                    .prepare(
                        "SELECT id, attribute_runs, attributes FROM snapshot \
                         WHERE activation_id = ?1",
                    )
                    .ctx(A)?;
                let mut q = stmt.query([id]).ctx(A)?;
                while let Some(r) = q.next().ctx(A)? {
                    let attributes = text_at(r, 2, A)?;
                    let mut packed =
                        Packed::decode(attributes, r.get_ref(1).ctx(A)?).map_err(corrupt)?;
                    let cleared = packed.clear(|slot| dropped.get(slot) == Some(&true));
                    if cleared > 0 {
                        n += cleared;
                        rows.push((r.get(0).ctx(A)?, packed));
                    }
                }
            }
            let mut update = tx
                .prepare_cached(
                    "UPDATE snapshot SET attribute_runs = ?2, attributes = ?3 WHERE id = ?1",
                )
                .ctx(A)?;
            let mut buf = Vec::new();
            for (row, packed) in &rows {
                let runs = packed.encode(&mut buf);
                update.execute(params![row, runs, json_text(&buf)]).ctx(A)?;
            }
        }
        let mut filter = String::from(" WHERE activation_id = ?1");
        if !keys.is_empty() {
            filter.push_str(" AND attribute_key NOT IN (");
            for i in 0..keys.len() {
                if i > 0 {
                    filter.push_str(", ");
                }
                filter.push_str(&format!("?{}", i + 2));
            }
            filter.push(')');
        }
        let values: Vec<rusqlite::types::Value> =
            std::iter::once(rusqlite::types::Value::Integer(id))
                .chain(
                    keys.iter()
                        .map(|k| rusqlite::types::Value::Text((*k).to_owned())),
                )
                .collect();
        // What is no longer mapped is no longer sent, so it is no longer in doubt either.
        tx.execute(
            &format!("DELETE FROM in_doubt{filter}"),
            params_from_iter(&values),
        )
        .ctx(A)?;
        tx.commit().ctx(A)?;
        Ok(n)
    }

    /// Every activation's entry for a contact key, sorted by activation name.
    pub fn contact(&self, key: &str) -> Result<Vec<ContactSnapshot>, Error> {
        const A: &str = "reading a contact";
        let activations: Vec<(i64, String)> = {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT id, name FROM activations ORDER BY name")
                .ctx(A)?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).ctx(A)?;
            rows.collect::<Result<_, _>>().ctx(A)?
        };
        // The key may be an email or a phone: its row is under one of the two hashes.
        let hashes = [IdentifierKind::Email, IdentifierKind::Phone].map(|k| key_hash(k, key));
        let mut out = Vec::new();
        for (id, activation) in activations {
            let mut entry = None;
            for h in hashes {
                if let Some(e) = Entry::find(&self.conn, id, key, h)? {
                    entry = Some(e);
                    break;
                }
            }
            let in_doubt = crate::doubt::in_doubt_of(&self.conn, id, key)?;
            let snap = match entry {
                Some(e) => {
                    let mut attributes = Vec::new();
                    self.with_slot_keys(id, e.packed.slots.len(), |keys| {
                        e.attributes(keys, &mut attributes)
                    })?;
                    attributes.sort_by(|a, b| a.key.cmp(&b.key));
                    ContactSnapshot {
                        activation,
                        key_hash: e.key_hash,
                        row_fingerprint: e.row_fingerprint,
                        updated_run: e.updated_run,
                        updated_at: rfc3339(e.updated_at),
                        attributes,
                        in_doubt,
                    }
                }
                // Activations that never settled the contact but have sent it something.
                None if !in_doubt.is_empty() => ContactSnapshot {
                    activation,
                    key_hash: crate::doubt::key_hash_in_doubt(&self.conn, id, key)?
                        .unwrap_or(hashes[0]),
                    row_fingerprint: 0,
                    updated_run: None,
                    updated_at: String::new(),
                    attributes: Vec::new(),
                    in_doubt,
                },
                None => continue,
            };
            out.push(snap);
        }
        Ok(out)
    }

    /// How many contacts the activation's snapshot holds (0 for an unknown activation).
    pub fn contact_count(&self, activation: &str) -> Result<u64, Error> {
        let n: i64 = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM snapshot INDEXED BY snapshot_index \
                 WHERE activation_id = (SELECT id FROM activations WHERE name = ?1)",
            )
            .and_then(|mut s| s.query_row([activation], |r| r.get(0)))
            .ctx("counting contacts")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// The attribute keys a change carries.
pub(crate) fn change_keys<'m>(
    mapping: &'m BoundMapping,
    change: &ContactChange,
) -> Result<Vec<&'m str>, Error> {
    change
        .changes
        .iter()
        .map(|a| {
            mapping
                .attributes()
                .get(a.attribute)
                .map(|b| b.key.as_str())
                .ok_or_else(|| Error::AttributeIndex {
                    contact_key: change.contact.key.clone(),
                    index: a.attribute,
                    count: mapping.attributes().len(),
                })
        })
        .collect()
}

/// The tag and text a change's value is stored as (a clear, `None`, as the empty text sent).
pub(crate) fn stored_value(value: Option<&Canonical>) -> (char, Cow<'_, str>) {
    match value {
        Some(v) => (v.tag(), text_of(v)),
        None => ('s', Cow::Borrowed("")),
    }
}

/// The order to write changes in: by key hash, the order of `snapshot_index`, which keeps
/// the B-tree pages a batch touches close together. Stable: repeated contacts keep their
/// order, so the later change wins.
fn by_key_hash<T>(items: &[T], hash: impl Fn(&T) -> u64) -> Vec<&T> {
    let mut order: Vec<&T> = items.iter().collect();
    order.sort_by_key(|t| hash(t));
    order
}

/// [`StateStore::apply_changes`] inside a transaction: the snapshot takes each change, and the
/// attributes it carried are no longer in doubt.
pub(crate) fn apply_changes_in(
    tx: &Connection,
    activation_id: i64,
    run_id: i64,
    mapping: &BoundMapping,
    changes: &[ContactChange],
    at: &str,
) -> Result<(), Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let at_ms = millis(at)?;
    let mut slots = Slots::load(tx, activation_id)?;
    // The slot of each of the mapping's attributes, numbered on first use.
    let mut slot_of: Vec<Option<usize>> = vec![None; mapping.attributes().len()];
    let doubts = crate::doubt::any_in_doubt(tx, activation_id)?;
    let mut buf = Vec::new();
    // (slot, tag, text) of a new contact's values.
    let mut values: Vec<(usize, char, Cow<'_, str>)> = Vec::new();
    for c in by_key_hash(changes, |c| c.key_hash) {
        let key = c.contact.key.as_str();
        let found = Entry::find(tx, activation_id, key, c.key_hash)?;
        values.clear();
        for a in &c.changes {
            let slot = match slot_of.get(a.attribute).copied().flatten() {
                Some(slot) => slot,
                None => {
                    let attribute = mapping.attributes().get(a.attribute).ok_or_else(|| {
                        Error::AttributeIndex {
                            contact_key: key.to_owned(),
                            index: a.attribute,
                            count: mapping.attributes().len(),
                        }
                    })?;
                    let slot = slots.slot(tx, &attribute.key)?;
                    if let Some(s) = slot_of.get_mut(a.attribute) {
                        *s = Some(slot);
                    }
                    slot
                }
            };
            let (tag, text) = stored_value(a.value.as_ref());
            values.push((slot, tag, text));
        }
        match found {
            Some(mut entry) => {
                entry.row_fingerprint = c.row_fingerprint;
                entry.updated_run = Some(run_id);
                entry.updated_at = at_ms;
                for (slot, tag, text) in &values {
                    entry.packed.set(*slot, Slot::new(*tag, text, Some(run_id)));
                }
                entry.write(tx, activation_id, &mut buf)?;
            }
            // The common case of a first sync: the row is written straight from the change.
            None => {
                values.sort_by_key(|v| v.0);
                // The same attribute twice (the sort is stable): the later one wins.
                let last_of_each = values
                    .iter()
                    .enumerate()
                    .filter(|(i, v)| values.get(i + 1).is_none_or(|next| next.0 != v.0));
                write_values(
                    &mut buf,
                    last_of_each.map(|(_, (slot, tag, text))| (*slot, (*tag, text.as_ref()))),
                );
                let runs = if values.is_empty() {
                    rusqlite::types::Value::Null
                } else {
                    rusqlite::types::Value::Integer(run_id)
                };
                NewRow {
                    contact_key: key,
                    key_hash: c.key_hash,
                    row_fingerprint: c.row_fingerprint,
                    updated_run: Some(run_id),
                    updated_at: at_ms,
                }
                .insert(tx, activation_id, runs, json_text(&buf))?;
            }
        }
        if doubts {
            let keys = change_keys(mapping, c)?;
            crate::doubt::settle_in(tx, activation_id, key, Some(&keys))?;
        }
    }
    Ok(())
}

/// [`StateStore::apply_refreshes`] inside a transaction.
pub(crate) fn apply_refreshes_in(
    tx: &Connection,
    activation_id: i64,
    run_id: i64,
    refreshes: &[Refresh],
    at: &str,
) -> Result<(), Error> {
    if refreshes.is_empty() {
        return Ok(());
    }
    let at_ms = millis(at)?;
    for r in by_key_hash(refreshes, |r| r.key_hash) {
        let key = r.contact.key.as_str();
        match Entry::find(tx, activation_id, key, r.key_hash)? {
            // Only the row's own columns move.
            Some(entry) => {
                tx.prepare_cached(
                    "UPDATE snapshot SET row_fingerprint = ?2, updated_run = ?3, \
                     updated_at = ?4 WHERE id = ?1",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        entry.id,
                        u64_to_sql(r.row_fingerprint),
                        run_id,
                        at_ms
                    ])
                })
                .ctx("recording refreshed row fingerprints")?;
            }
            None => {
                NewRow {
                    contact_key: key,
                    key_hash: r.key_hash,
                    row_fingerprint: r.row_fingerprint,
                    updated_run: Some(run_id),
                    updated_at: at_ms,
                }
                .insert(tx, activation_id, rusqlite::types::Value::Null, "[]")?;
            }
        }
    }
    Ok(())
}
