//! Which Attentive account (company) a destination's existence cache and snapshots belong to.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use crate::{now, Context, Error, StateStore};

/// The account a destination is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountBinding {
    /// Attentive's company id (`GET /v1/me` `companyId`).
    pub company_id: String,
    /// The company's name, for messages.
    pub company_name: Option<String>,
    /// The base URL the destination was bound through.
    pub base_url: String,
    /// When it was bound (RFC 3339, UTC).
    pub bound_at: String,
}

impl StateStore {
    /// The account a destination (its config name) is bound to, if any.
    pub fn account_binding(&self, destination: &str) -> Result<Option<AccountBinding>, Error> {
        self.conn
            .prepare_cached(
                "SELECT company_id, company_name, base_url, bound_at \
                 FROM destination_accounts WHERE destination = ?1",
            )
            .and_then(|mut s| {
                s.query_row([destination], |r| {
                    Ok(AccountBinding {
                        company_id: r.get(0)?,
                        company_name: r.get(1)?,
                        base_url: r.get(2)?,
                        bound_at: r.get(3)?,
                    })
                })
                .optional()
            })
            .ctx("reading a destination's account")
    }

    /// Binds a destination to an account (keeping the first binding time when the account is
    /// the same: only its name and base URL are refreshed).
    pub fn bind_account(
        &mut self,
        destination: &str,
        company_id: &str,
        company_name: Option<&str>,
        base_url: &str,
    ) -> Result<(), Error> {
        self.conn
            .prepare_cached(
                "INSERT INTO destination_accounts \
                 (destination, company_id, company_name, base_url, bound_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (destination) DO UPDATE SET \
                 company_name = excluded.company_name, base_url = excluded.base_url, \
                 bound_at = CASE WHEN company_id = excluded.company_id THEN bound_at \
                                 ELSE excluded.bound_at END, \
                 company_id = excluded.company_id",
            )
            .and_then(|mut s| {
                s.execute(params![
                    destination,
                    company_id,
                    company_name,
                    base_url,
                    now()
                ])
            })
            .ctx("binding a destination to its account")?;
        Ok(())
    }

    /// Binds a destination to another account, in one transaction: forgets its existence
    /// cache, and the snapshots and attributes in doubt of `activations` (those that send to
    /// it), so that the next run checks every contact again and backfills. Returns how many
    /// snapshot contacts were forgotten.
    pub fn rebind_account(
        &mut self,
        destination: &str,
        activations: &[&str],
        company_id: &str,
        company_name: Option<&str>,
        base_url: &str,
    ) -> Result<u64, Error> {
        const A: &str = "binding a destination to another account";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(A)?;
        tx.execute(
            "DELETE FROM contact_existence WHERE destination = ?1",
            [destination],
        )
        .ctx(A)?;
        let mut forgotten = 0u64;
        for activation in activations {
            let in_activation = "activation_id = (SELECT id FROM activations WHERE name = ?1)";
            tx.execute(
                &format!("DELETE FROM in_doubt WHERE {in_activation}"),
                [activation],
            )
            .ctx(A)?;
            // Jobs of the old account: their results would settle nothing of the new one.
            tx.execute(
                &format!(
                    "UPDATE bulk_jobs SET state = 'settled', message = 'forgotten: the \
                     destination was bound to another account' \
                     WHERE state != 'settled' AND {in_activation}"
                ),
                [activation],
            )
            .ctx(A)?;
            forgotten += tx
                .execute(
                    &format!("DELETE FROM snapshot WHERE {in_activation}"),
                    [activation],
                )
                .ctx(A)? as u64;
        }
        tx.execute(
            "INSERT INTO destination_accounts \
             (destination, company_id, company_name, base_url, bound_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (destination) DO UPDATE SET company_id = excluded.company_id, \
             company_name = excluded.company_name, base_url = excluded.base_url, \
             bound_at = excluded.bound_at",
            params![destination, company_id, company_name, base_url, now()],
        )
        .ctx(A)?;
        tx.commit().ctx(A)?;
        Ok(forgotten)
    }
}
