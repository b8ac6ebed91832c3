//! The snapshot: per activation and contact, the row fingerprint and every attribute value
//! Attentive acknowledged.

use std::sync::mpsc;

use rusqlite::{params, params_from_iter, Connection, Row, Rows, TransactionBehavior};
use sync_core::fingerprint::IN_DOUBT_ROW;
use sync_core::plan::{ContactChange, Refresh, SnapshotIndex};
use sync_core::ports::{with_in_doubt, InDoubt, SnapshotStore, StoredAttribute};
use sync_core::{BoundMapping, Canonical};

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

const UPSERT_CONTACT: &str = "\
INSERT INTO snapshot_contacts
    (activation_id, contact_key, key_hash, row_fingerprint, updated_run, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)
ON CONFLICT (activation_id, contact_key) DO UPDATE SET
    key_hash = excluded.key_hash,
    row_fingerprint = excluded.row_fingerprint,
    updated_run = excluded.updated_run,
    updated_at = excluded.updated_at";

const UPSERT_ATTRIBUTE: &str = "\
INSERT INTO snapshot_attributes
    (activation_id, contact_key, attribute_key, fingerprint, value_tag, value_text, run_id)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (activation_id, contact_key, attribute_key) DO UPDATE SET
    fingerprint = excluded.fingerprint,
    value_tag = excluded.value_tag,
    value_text = excluded.value_text,
    run_id = excluded.run_id";

const SELECT_ATTRIBUTES: &str = "\
SELECT attribute_key, fingerprint, value_tag, value_text, run_id
FROM snapshot_attributes
WHERE activation_id = ?1 AND contact_key = ?2
ORDER BY attribute_key";

/// Reads one `SELECT_ATTRIBUTES` row.
fn stored_attribute(r: &Row<'_>) -> Result<StoredAttribute, Error> {
    const A: &str = "reading a contact's attributes";
    let key: String = r.get(0).ctx(A)?;
    let fingerprint: i64 = r.get(1).ctx(A)?;
    let tag: String = r.get(2).ctx(A)?;
    let text: String = r.get(3).ctx(A)?;
    let run_id: Option<i64> = r.get(4).ctx(A)?;
    let value = decode_value("snapshot_attributes", &tag, &text)?;
    Ok(StoredAttribute {
        key,
        fingerprint: u64_from_sql(fingerprint),
        value,
        run_id,
    })
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

/// Appends the attributes of one contact of one activation (by id), sorted by key.
fn read_attributes(
    conn: &Connection,
    activation_id: i64,
    contact_key: &str,
    out: &mut Vec<StoredAttribute>,
) -> Result<(), Error> {
    const A: &str = "reading a contact's attributes";
    let mut stmt = conn.prepare_cached(SELECT_ATTRIBUTES).ctx(A)?;
    let mut rows = stmt.query(params![activation_id, contact_key]).ctx(A)?;
    while let Some(r) = rows.next().ctx(A)? {
        out.push(stored_attribute(r)?);
    }
    Ok(())
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
    /// with one range scan of the covering index `snapshot_contacts_index`.
    fn load_index(&self, activation: &str, index: &mut SnapshotIndex) -> Result<(), Error> {
        const A: &str = "loading the snapshot index";
        let Some(id) = activation_id(&self.conn, activation).ctx(A)? else {
            return Ok(());
        };
        let count: i64 = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM snapshot_contacts INDEXED BY snapshot_contacts_index \
                 WHERE activation_id = ?1",
            )
            .and_then(|mut s| s.query_row([id], |r| r.get(0)))
            .ctx(A)?;
        let count = usize::try_from(count).unwrap_or(0);
        index.reserve(count);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT key_hash, row_fingerprint FROM snapshot_contacts \
                 INDEXED BY snapshot_contacts_index WHERE activation_id = ?1",
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
        contact_key: &str,
        out: &mut Vec<StoredAttribute>,
    ) -> Result<(), Error> {
        const A: &str = "reading a contact's attributes";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT attribute_key, fingerprint, value_tag, value_text, run_id \
                 FROM snapshot_attributes \
                 WHERE activation_id = (SELECT id FROM activations WHERE name = ?1) \
                 AND contact_key = ?2",
            )
            .ctx(A)?;
        let mut rows = stmt.query(params![activation, contact_key]).ctx(A)?;
        let start = out.len();
        while let Some(r) = rows.next().ctx(A)? {
            out.push(stored_attribute(r)?);
        }
        // Skipped when the index was loaded and found no doubts (the common case).
        let doubt_free = self.doubt_free.borrow().as_deref() == Some(activation);
        if !doubt_free {
            let doubts = crate::doubt::in_doubt_by_name(&self.conn, activation, contact_key)?;
            with_in_doubt(out, start, &doubts);
        }
        Ok(())
    }
}

impl StateStore {
    /// Records acknowledged writes, in one transaction: for each change, the contact's key
    /// hash, row fingerprint and run, and each changed attribute's fingerprint and value (a
    /// cleared value, `None`, is stored as the empty text that was sent). Creates the
    /// activation on first use. When a contact appears more than once, the later change wins.
    /// The attributes the changes carried are no longer in doubt.
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
    /// longer mapped) and their doubts; contacts stay. Returns how many stored attribute rows
    /// were deleted.
    pub fn retain_attributes(&mut self, activation: &str, keys: &[&str]) -> Result<u64, Error> {
        const A: &str = "dropping attributes that are no longer mapped";
        let Some(id) = activation_id(&self.conn, activation).ctx(A)? else {
            return Ok(0);
        };
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
        let values = std::iter::once(rusqlite::types::Value::Integer(id)).chain(
            keys.iter()
                .map(|k| rusqlite::types::Value::Text((*k).to_owned())),
        );
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(A)?;
        let values: Vec<rusqlite::types::Value> = values.collect();
        let n = tx
            .execute(
                &format!("DELETE FROM snapshot_attributes{filter}"),
                params_from_iter(&values),
            )
            .ctx(A)?;
        // What is no longer mapped is no longer sent, so it is no longer in doubt either.
        tx.execute(
            &format!("DELETE FROM in_doubt{filter}"),
            params_from_iter(&values),
        )
        .ctx(A)?;
        tx.commit().ctx(A)?;
        Ok(n as u64)
    }

    /// Every activation's entry for a contact key, sorted by activation name.
    pub fn contact(&self, key: &str) -> Result<Vec<ContactSnapshot>, Error> {
        const A: &str = "reading a contact";
        let mut entries = Vec::new();
        {
            // CROSS JOIN keeps `activations` (few rows) outside: one primary-key lookup each.
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT a.id, a.name, c.key_hash, c.row_fingerprint, c.updated_run, \
                     c.updated_at \
                     FROM activations AS a CROSS JOIN snapshot_contacts AS c \
                     ON c.activation_id = a.id AND c.contact_key = ?1 \
                     ORDER BY a.name",
                )
                .ctx(A)?;
            let rows = stmt
                .query_map([key], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        ContactSnapshot {
                            activation: r.get(1)?,
                            key_hash: u64_from_sql(r.get(2)?),
                            row_fingerprint: u64_from_sql(r.get(3)?),
                            updated_run: r.get(4)?,
                            updated_at: r.get(5)?,
                            attributes: Vec::new(),
                            in_doubt: Vec::new(),
                        },
                    ))
                })
                .ctx(A)?;
            for row in rows {
                entries.push(row.ctx(A)?);
            }
            // Activations that never settled the contact but have sent it something.
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT DISTINCT a.id, a.name, d.key_hash \
                     FROM activations AS a CROSS JOIN in_doubt AS d \
                     ON d.activation_id = a.id AND d.contact_key = ?1",
                )
                .ctx(A)?;
            let rows = stmt
                .query_map([key], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        u64_from_sql(r.get(2)?),
                    ))
                })
                .ctx(A)?;
            for row in rows {
                let (id, activation, key_hash) = row.ctx(A)?;
                if entries.iter().all(|(known, _)| *known != id) {
                    entries.push((
                        id,
                        ContactSnapshot {
                            activation,
                            key_hash,
                            row_fingerprint: 0,
                            updated_run: None,
                            updated_at: String::new(),
                            attributes: Vec::new(),
                            in_doubt: Vec::new(),
                        },
                    ));
                }
            }
        }
        entries.sort_by(|a, b| a.1.activation.cmp(&b.1.activation));
        let mut out = Vec::with_capacity(entries.len());
        for (id, mut snap) in entries {
            read_attributes(&self.conn, id, key, &mut snap.attributes)?;
            snap.in_doubt = crate::doubt::in_doubt_of(&self.conn, id, key)?;
            out.push(snap);
        }
        Ok(out)
    }

    /// How many contacts the activation's snapshot holds (0 for an unknown activation).
    pub fn contact_count(&self, activation: &str) -> Result<u64, Error> {
        let n: i64 = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM snapshot_contacts INDEXED BY snapshot_contacts_index \
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
                .attributes
                .get(a.attribute)
                .map(|b| b.key.as_str())
                .ok_or_else(|| Error::AttributeIndex {
                    contact_key: change.contact.key.clone(),
                    index: a.attribute,
                    count: mapping.attributes.len(),
                })
        })
        .collect()
}

/// The tag and text a change's value is stored as (a clear, `None`, as the empty text sent).
pub(crate) fn stored_value(value: Option<&Canonical>) -> (char, String) {
    match value {
        Some(v) => (v.tag(), v.to_text()),
        None => ('s', String::new()),
    }
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
    const A: &str = "recording acknowledged changes";
    // Key order gives B-tree locality; the sort is stable, so repeated contacts keep order.
    let mut order: Vec<usize> = (0..changes.len()).collect();
    order.sort_by(|&a, &b| changes[a].contact.key.cmp(&changes[b].contact.key));
    let mut contact = tx.prepare_cached(UPSERT_CONTACT).ctx(A)?;
    let mut attribute = tx.prepare_cached(UPSERT_ATTRIBUTE).ctx(A)?;
    let mut tag_buf = [0u8; 4];
    for c in order.iter().filter_map(|&i| changes.get(i)) {
        let key = c.contact.key.as_str();
        contact
            .execute(params![
                activation_id,
                key,
                u64_to_sql(c.key_hash),
                u64_to_sql(c.row_fingerprint),
                run_id,
                at
            ])
            .ctx(A)?;
        let keys = change_keys(mapping, c)?;
        for (a, attribute_key) in c.changes.iter().zip(&keys) {
            let (tag, text) = stored_value(a.value.as_ref());
            let tag: &str = tag.encode_utf8(&mut tag_buf);
            attribute
                .execute(params![
                    activation_id,
                    key,
                    attribute_key,
                    u64_to_sql(a.fingerprint),
                    tag,
                    text,
                    run_id
                ])
                .ctx(A)?;
        }
        crate::doubt::settle_in(tx, activation_id, key, Some(&keys))?;
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
    const A: &str = "recording refreshed row fingerprints";
    let mut order: Vec<usize> = (0..refreshes.len()).collect();
    order.sort_by(|&a, &b| refreshes[a].contact.key.cmp(&refreshes[b].contact.key));
    let mut contact = tx.prepare_cached(UPSERT_CONTACT).ctx(A)?;
    for r in order.iter().filter_map(|&i| refreshes.get(i)) {
        contact
            .execute(params![
                activation_id,
                r.contact.key,
                u64_to_sql(r.key_hash),
                u64_to_sql(r.row_fingerprint),
                run_id,
                at
            ])
            .ctx(A)?;
    }
    Ok(())
}
