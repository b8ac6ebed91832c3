//! Attributes in doubt ([`InDoubt`]): marked before a write is sent, settled by its answer.
//! What is still marked when a run ends (killed mid-write, or failed after retries) is sent
//! again by the next run, whatever the model holds by then.

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use sync_core::mapping::BoundMapping;
use sync_core::plan::ContactChange;
use sync_core::ports::InDoubt;

use crate::snapshot::{change_keys, decode_value, stored_value};
use crate::StateStore;
use crate::{activation_id, u64_from_sql, u64_to_sql, Context, Error};

const MARK: &str = "\
INSERT INTO in_doubt
    (activation_id, contact_key, attribute_key, key_hash, value_tag, value_text, run_id, sent_at,
     job_id, fingerprint)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
ON CONFLICT (activation_id, contact_key, attribute_key) DO UPDATE SET
    key_hash = excluded.key_hash,
    value_tag = excluded.value_tag,
    value_text = excluded.value_text,
    run_id = excluded.run_id,
    sent_at = excluded.sent_at,
    job_id = excluded.job_id,
    fingerprint = excluded.fingerprint";

/// Reads one `attribute_key, value_tag, value_text, run_id, pending fingerprint` row.
fn in_doubt_row(r: &Row<'_>) -> Result<InDoubt, Error> {
    const A: &str = "reading attributes in doubt";
    let key: String = r.get(0).ctx(A)?;
    let tag: String = r.get(1).ctx(A)?;
    let text: String = r.get(2).ctx(A)?;
    let pending: Option<i64> = r.get(4).ctx(A)?;
    Ok(InDoubt {
        key,
        sent: decode_value("in_doubt", &tag, &text)?,
        run_id: r.get(3).ctx(A)?,
        pending: pending.map(u64_from_sql),
    })
}

/// The key hashes of the activation's contacts with an attribute in doubt.
pub(crate) fn contacts_in_doubt(conn: &Connection, activation_id: i64) -> Result<Vec<u64>, Error> {
    const A: &str = "reading contacts in doubt";
    let mut stmt = conn
        .prepare_cached("SELECT DISTINCT key_hash FROM in_doubt WHERE activation_id = ?1")
        .ctx(A)?;
    let rows = stmt
        .query_map([activation_id], |r| r.get::<_, i64>(0))
        .ctx(A)?;
    rows.map(|r| r.map(u64_from_sql).ctx(A)).collect()
}

/// The attributes in doubt of one contact of one activation (by id), sorted by key.
pub(crate) fn in_doubt_of(
    conn: &Connection,
    activation_id: i64,
    contact_key: &str,
) -> Result<Vec<InDoubt>, Error> {
    const A: &str = "reading attributes in doubt";
    let mut stmt = conn
        .prepare_cached(
            "SELECT attribute_key, value_tag, value_text, run_id, \
             CASE WHEN job_id IS NOT NULL THEN fingerprint END FROM in_doubt \
             WHERE activation_id = ?1 AND contact_key = ?2 ORDER BY attribute_key",
        )
        .ctx(A)?;
    let mut rows = stmt.query(params![activation_id, contact_key]).ctx(A)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().ctx(A)? {
        out.push(in_doubt_row(r)?);
    }
    Ok(out)
}

/// Marks every attribute of each change in doubt, with the value about to be sent. An
/// attribute already in doubt takes the new value and run; the contact's other doubts stay.
/// With `job`, the values are *pending* in that bulk job (see
/// [`sync_core::ports::InDoubt::pending`]).
pub(crate) fn mark_in<'c>(
    tx: &Connection,
    activation_id: i64,
    run_id: i64,
    mapping: &BoundMapping,
    changes: impl IntoIterator<Item = &'c ContactChange>,
    job: Option<i64>,
    at: &str,
) -> Result<(), Error> {
    const A: &str = "recording writes about to be sent";
    let mut stmt = tx.prepare_cached(MARK).ctx(A)?;
    let mut tag_buf = [0u8; 4];
    for c in changes {
        let keys = change_keys(mapping, c)?;
        for (a, attribute_key) in c.changes.iter().zip(&keys) {
            let (tag, text) = stored_value(a.value.as_ref());
            let tag: &str = tag.encode_utf8(&mut tag_buf);
            stmt.execute(params![
                activation_id,
                c.contact.key,
                attribute_key,
                u64_to_sql(c.key_hash),
                tag,
                text,
                run_id,
                at,
                job,
                job.map(|_| u64_to_sql(a.fingerprint))
            ])
            .ctx(A)?;
        }
    }
    Ok(())
}

/// Whether the activation has any attribute in doubt (acknowledgements skip settling when
/// it has none).
pub(crate) fn any_in_doubt(conn: &Connection, activation_id: i64) -> Result<bool, Error> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM in_doubt WHERE activation_id = ?1)")
        .and_then(|mut s| s.query_row([activation_id], |r| r.get(0)))
        .ctx("reading attributes in doubt")
}

/// The key hash recorded with a contact's doubts, if it has any.
pub(crate) fn key_hash_in_doubt(
    conn: &Connection,
    activation_id: i64,
    contact_key: &str,
) -> Result<Option<u64>, Error> {
    conn.prepare_cached(
        "SELECT key_hash FROM in_doubt WHERE activation_id = ?1 AND contact_key = ?2 LIMIT 1",
    )
    .and_then(|mut s| {
        s.query_row(params![activation_id, contact_key], |r| r.get::<_, i64>(0))
            .optional()
    })
    .map(|h| h.map(u64_from_sql))
    .ctx("reading attributes in doubt")
}

/// Settles a contact's attributes in doubt: those named, or all of them (`None`), with one
/// statement.
pub(crate) fn settle_in(
    tx: &Connection,
    activation_id: i64,
    contact_key: &str,
    keys: Option<&[&str]>,
) -> Result<(), Error> {
    const A: &str = "settling attributes in doubt";
    match keys {
        Some([]) => {}
        Some(keys) => {
            let keys = serde_json::to_string(keys).unwrap_or_default();
            tx.prepare_cached(
                "DELETE FROM in_doubt WHERE activation_id = ?1 AND contact_key = ?2 \
                 AND attribute_key IN (SELECT value FROM json_each(?3))",
            )
            .and_then(|mut s| s.execute(params![activation_id, contact_key, keys]))
            .ctx(A)?;
        }
        None => {
            tx.prepare_cached("DELETE FROM in_doubt WHERE activation_id = ?1 AND contact_key = ?2")
                .and_then(|mut s| s.execute(params![activation_id, contact_key]))
                .ctx(A)?;
        }
    }
    Ok(())
}

impl StateStore {
    /// Marks the attributes of writes about to be sent as in doubt, in one transaction (see
    /// [`InDoubt`]); [`StateStore::commit`] does the same for a run, together with the rest.
    pub fn mark_in_doubt(
        &mut self,
        activation: &str,
        run_id: i64,
        mapping: &BoundMapping,
        changes: &[ContactChange],
    ) -> Result<(), Error> {
        self.doubt_free.get_mut().take();
        self.write_activation(
            "recording writes about to be sent",
            activation,
            |tx, id, at| mark_in(tx, id, run_id, mapping, changes, None, at),
        )
    }

    /// Settles attributes in doubt of a contact that the destination answered without
    /// applying (`keys`), or all of them (`None`: the contact does not exist there).
    pub fn settle_in_doubt(
        &mut self,
        activation: &str,
        contact_key: &str,
        keys: Option<&[&str]>,
    ) -> Result<(), Error> {
        const A: &str = "settling attributes in doubt";
        let Some(id) = activation_id(&self.conn, activation).ctx(A)? else {
            return Ok(());
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(A)?;
        settle_in(&tx, id, contact_key, keys)?;
        tx.commit().ctx(A)
    }

    /// How many attributes of the activation's contacts are in doubt.
    pub fn in_doubt_count(&self, activation: &str) -> Result<u64, Error> {
        let n: i64 = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM in_doubt \
                 WHERE activation_id = (SELECT id FROM activations WHERE name = ?1)",
            )
            .and_then(|mut s| s.query_row([activation], |r| r.get(0)))
            .ctx("counting attributes in doubt")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
