//! Migration 6: moves the snapshot of schemas 1–5 (`snapshot_contacts`, one row per contact,
//! and `snapshot_attributes`, one row per attribute) into the compact `snapshot` table (one
//! row per contact, values packed by slot, see [`crate::packed`]), then replaces the two old
//! tables with views of the same names.
//!
//! Both old tables are read in primary-key order, `(activation_id, contact_key)` and
//! `(activation_id, contact_key, attribute_key)`, and merged, so the move is one pass over
//! each. Every value is kept with its run. Value fingerprints are recomputed from the values;
//! a stored fingerprint that differs (written by a build whose value fingerprints differed,
//! which no released build did) is counted and logged, and the planner then compares that
//! value by value, as it would have.
//!
//! Progress is logged (`tracing`, target `state_store::migration`, level INFO) every 5 % on
//! files of [`PROGRESS_FROM`] contacts or more.

use std::collections::HashMap;

use rusqlite::Connection;
use sync_core::fingerprint::value_fingerprint;

use crate::packed::{Packed, Slot};
use crate::snapshot::{decode_value, millis, Entry, Slots};
use crate::{u64_from_sql, Context, Error};

/// From this many contacts on, the migration logs its progress.
pub(crate) const PROGRESS_FROM: u64 = 50_000;

/// One `snapshot_attributes` row.
struct OldAttribute {
    activation_id: i64,
    contact_key: String,
    attribute_key: String,
    fingerprint: u64,
    tag: String,
    text: String,
    run_id: Option<i64>,
}

/// The move, inside the migration's transaction.
pub(crate) fn migrate(tx: &Connection) -> Result<(), Error> {
    const A: &str = "moving the snapshot into the compact layout";
    let total: i64 = tx
        .query_row("SELECT count(*) FROM snapshot_contacts", [], |r| r.get(0))
        .ctx(A)?;
    let total = u64::try_from(total).unwrap_or(0);
    let report = total >= PROGRESS_FROM;
    if report {
        tracing::info!(
            target: "state_store::migration",
            contacts = total,
            "migrating the state database to schema 6 (compact snapshot): {total} contacts"
        );
    }
    let mut contacts = tx
        .prepare(
            "SELECT activation_id, contact_key, key_hash, row_fingerprint, updated_run, \
             updated_at FROM snapshot_contacts ORDER BY activation_id, contact_key",
        )
        .ctx(A)?;
    let mut attributes = tx
        .prepare(
            "SELECT activation_id, contact_key, attribute_key, fingerprint, value_tag, \
             value_text, run_id FROM snapshot_attributes \
             ORDER BY activation_id, contact_key, attribute_key",
        )
        .ctx(A)?;
    let mut attrs = attributes
        .query_map([], |r| {
            Ok(OldAttribute {
                activation_id: r.get(0)?,
                contact_key: r.get(1)?,
                attribute_key: r.get(2)?,
                fingerprint: u64_from_sql(r.get(3)?),
                tag: r.get(4)?,
                text: r.get(5)?,
                run_id: r.get(6)?,
            })
        })
        .ctx(A)?
        .peekable();
    let mut rows = contacts.query([]).ctx(A)?;
    let mut slots: HashMap<i64, Slots> = HashMap::new();
    let mut buf = Vec::new();
    let (mut moved, mut values, mut differing) = (0u64, 0u64, 0u64);
    let step = (total / 20).max(1);
    while let Some(r) = rows.next().ctx(A)? {
        let activation_id: i64 = r.get(0).ctx(A)?;
        let contact_key: String = r.get(1).ctx(A)?;
        let updated_at: String = r.get(5).ctx(A)?;
        let mut entry = Entry::new(&contact_key, u64_from_sql(r.get(2).ctx(A)?));
        entry.row_fingerprint = u64_from_sql(r.get(3).ctx(A)?);
        entry.updated_run = r.get(4).ctx(A)?;
        entry.updated_at = millis(&updated_at)?;
        let activation_slots = match slots.entry(activation_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Slots::load(tx, activation_id)?)
            }
        };
        entry.packed = Packed::default();
        // The attributes of this contact come next in the attribute scan (a foreign key ties
        // every attribute row to its contact row, so none is skipped).
        loop {
            let this_contact = match attrs.peek() {
                Some(Ok(a)) => a.activation_id == activation_id && a.contact_key == contact_key,
                Some(Err(_)) => true,
                None => false,
            };
            if !this_contact {
                break;
            }
            let Some(next) = attrs.next() else { break };
            let a = next.ctx(A)?;
            let value = decode_value("snapshot_attributes", &a.tag, &a.text)?;
            if value_fingerprint(&value) != a.fingerprint {
                differing += 1;
            }
            let slot = activation_slots.slot(tx, &a.attribute_key)?;
            entry
                .packed
                .set(slot, Slot::new(value.tag(), &a.text, a.run_id));
            values += 1;
        }
        entry.write(tx, activation_id, &mut buf)?;
        moved += 1;
        if report && moved % step == 0 {
            tracing::info!(
                target: "state_store::migration",
                moved,
                total,
                "migrating the state database to schema 6: {moved} of {total} contacts ({}%)",
                moved * 100 / total.max(1)
            );
        }
    }
    drop(rows);
    // Attribute rows left over would belong to no contact, which the foreign key forbids.
    if let Some(Ok(a)) = attrs.next() {
        return Err(Error::Corrupt {
            table: "snapshot_attributes",
            column: "contact_key",
            value: a.contact_key,
        });
    }
    drop(attrs);
    drop(attributes);
    drop(contacts);
    tx.execute_batch(
        "DROP TABLE snapshot_attributes; DROP TABLE snapshot_contacts; DROP INDEX IF EXISTS \
         snapshot_contacts_index;",
    )
    .ctx(A)?;
    tx.execute_batch(crate::schema::SNAPSHOT_VIEWS).ctx(A)?;
    if differing > 0 {
        tracing::warn!(
            target: "state_store::migration",
            differing,
            "{differing} stored value fingerprints differed from their values' and were \
             recomputed: those values are compared value by value at the next run"
        );
    }
    if report {
        tracing::info!(
            target: "state_store::migration",
            contacts = moved,
            values,
            "migrated the snapshot to schema 6: {moved} contacts, {values} values"
        );
    }
    Ok(())
}
