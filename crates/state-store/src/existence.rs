//! The existence cache: whether a contact was found in a destination, and when that was checked.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use sync_core::ports::{ContactRef, Existence};

use crate::{now, Context, Error, StateStore};

fn status_text(e: Existence) -> &'static str {
    match e {
        Existence::Exists => "exists",
        Existence::NotFound => "not_found",
    }
}

impl StateStore {
    /// What was last found for a contact in a destination (an account), and when it was
    /// checked (RFC 3339, UTC); `None` if never checked.
    pub fn existence(
        &self,
        destination: &str,
        contact: &ContactRef,
    ) -> Result<Option<(Existence, String)>, Error> {
        const A: &str = "reading the existence cache";
        let row: Option<(String, String)> = self
            .conn
            .prepare_cached(
                "SELECT status, checked_at FROM contact_existence \
                 WHERE destination = ?1 AND contact_kind = ?2 AND contact_key = ?3",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![destination, contact.kind.as_str(), contact.key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
            })
            .ctx(A)?;
        let Some((status, checked_at)) = row else {
            return Ok(None);
        };
        let existence = match status.as_str() {
            "exists" => Existence::Exists,
            "not_found" => Existence::NotFound,
            _ => {
                return Err(Error::Corrupt {
                    table: "contact_existence",
                    column: "status",
                    value: status,
                })
            }
        };
        Ok(Some((existence, checked_at)))
    }

    /// Records check results for a destination, in one transaction, all stamped now.
    pub fn record_existence(
        &mut self,
        destination: &str,
        results: &[(ContactRef, Existence)],
    ) -> Result<(), Error> {
        const A: &str = "recording existence checks";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(A)?;
        record_existence_in(&tx, destination, results, &now())?;
        tx.commit().ctx(A)
    }
}

/// [`StateStore::record_existence`] inside a transaction.
pub(crate) fn record_existence_in(
    tx: &Connection,
    destination: &str,
    results: &[(ContactRef, Existence)],
    at: &str,
) -> Result<(), Error> {
    const A: &str = "recording existence checks";
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO contact_existence \
             (destination, contact_kind, contact_key, status, checked_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (destination, contact_kind, contact_key) DO UPDATE SET \
             status = excluded.status, checked_at = excluded.checked_at",
        )
        .ctx(A)?;
    for (contact, existence) in results {
        stmt.execute(params![
            destination,
            contact.kind.as_str(),
            contact.key,
            status_text(*existence),
            at
        ])
        .ctx(A)?;
    }
    Ok(())
}
