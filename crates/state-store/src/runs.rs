//! Run history: one row per `plan` or `run`, and the outcome of each model row.

use std::fmt;
use std::str::FromStr;

use rusqlite::{params, Row, TransactionBehavior};

use crate::{ensure_activation, now, Context, Error, StateStore};

macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $table:literal, $column:literal {
            $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize,
            serde::Deserialize,
        )]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The text stored in the database and shown to people.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// Parses [`Self::as_str`]'s text.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }

            fn from_sql(text: String) -> Result<Self, Error> {
                Self::parse(&text).ok_or(Error::Corrupt {
                    table: $table,
                    column: $column,
                    value: text,
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// Whether a run only planned or also wrote to Attentive.
    RunKind, "runs", "kind" {
        /// A dry run: planned, nothing sent, snapshot untouched.
        Plan => "plan",
        /// A real run: changes sent, snapshot moved for acknowledged writes.
        Run => "run",
    }
}

text_enum! {
    /// Where a run is.
    RunStatus, "runs", "status" {
        /// Started, not finished (or its process died: see
        /// [`StateStore::mark_interrupted_runs`]).
        Running => "running",
        /// Finished; every row settled.
        Succeeded => "succeeded",
        /// Finished, but some writes failed and are sent again next time.
        Partial => "partial",
        /// Stopped by an error (see [`RunSummary::error`]).
        Failed => "failed",
        /// Found `running` after its process ended.
        Interrupted => "interrupted",
        /// Finished submitting, with bulk jobs not settled yet: becomes `succeeded` or
        /// `partial` when the last of them is.
        Pending => "pending",
    }
}

text_enum! {
    /// What happened to one model row.
    Outcome, "run_rows", "outcome" {
        /// Changes were sent and acknowledged.
        Updated => "updated",
        /// Nothing to send.
        Unchanged => "unchanged",
        /// The contact does not exist in Attentive.
        NotFound => "not_found",
        /// The row was invalid, or Attentive refused its values.
        Rejected => "rejected",
        /// The write still failed after retries.
        Failed => "failed",
        /// Submitted in a bulk job whose result is not known yet.
        Pending => "pending",
    }
}

impl FromStr for Outcome {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Outcome::parse(s).ok_or_else(|| Error::UnknownOutcome {
            outcome: s.to_owned(),
        })
    }
}

/// One run, as listed by `runs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// The run's id ([`StateStore::begin_run`]).
    pub id: i64,
    /// The activation's name.
    pub activation: String,
    /// Plan or run.
    pub kind: RunKind,
    /// Where it is.
    pub status: RunStatus,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// RFC 3339, UTC; `None` while running.
    pub finished_at: Option<String>,
    /// The counts the runner recorded (JSON), if finished.
    pub counts_json: Option<String>,
    /// Why the run failed or was interrupted.
    pub error: Option<String>,
    /// When its per-row outcomes were pruned ([`StateStore::prune_run_rows`]), if they were.
    pub rows_pruned_at: Option<String>,
}

/// The outcome of one model row in one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    /// The row's number in its source ([`sync_core::value::SourceRow::number`]); unique per run:
    /// recording a number again replaces the earlier entry.
    pub row_number: u64,
    /// The normalized identifier, when the row had a readable one.
    pub contact_key: Option<String>,
    /// What happened to it.
    pub outcome: Outcome,
    /// A stable code, e.g. [`sync_core::plan::RejectCode::as_str`].
    pub code: Option<String>,
    /// A message for people.
    pub message: Option<String>,
    /// The attributes sent or rejected, as JSON.
    pub attributes_json: Option<String>,
}

const SELECT_RUN: &str = "\
SELECT r.id, a.name, r.kind, r.status, r.started_at, r.finished_at, r.counts_json, r.error,
       CASE WHEN json_valid(r.counts_json) THEN json_extract(r.counts_json, '$.rows_pruned_at') END
FROM runs AS r JOIN activations AS a ON a.id = r.activation_id";

fn run_summary(r: &Row<'_>) -> Result<RunSummary, Error> {
    const A: &str = "reading runs";
    Ok(RunSummary {
        id: r.get(0).ctx(A)?,
        activation: r.get(1).ctx(A)?,
        kind: RunKind::from_sql(r.get(2).ctx(A)?)?,
        status: RunStatus::from_sql(r.get(3).ctx(A)?)?,
        started_at: r.get(4).ctx(A)?,
        finished_at: r.get(5).ctx(A)?,
        counts_json: r.get(6).ctx(A)?,
        error: r.get(7).ctx(A)?,
        rows_pruned_at: r.get(8).ctx(A)?,
    })
}

/// A `run_rows` row selected as `row_number, contact_key, outcome, code, message,
/// attributes_json`.
fn run_row(r: &Row<'_>) -> Result<RunRow, Error> {
    const A: &str = "reading row outcomes";
    let number: i64 = r.get(0).ctx(A)?;
    Ok(RunRow {
        row_number: u64::try_from(number).map_err(|_| Error::Corrupt {
            table: "run_rows",
            column: "row_number",
            value: number.to_string(),
        })?,
        contact_key: r.get(1).ctx(A)?,
        outcome: Outcome::from_sql(r.get(2).ctx(A)?)?,
        code: r.get(3).ctx(A)?,
        message: r.get(4).ctx(A)?,
        attributes_json: r.get(5).ctx(A)?,
    })
}

/// SQLite's LIMIT and OFFSET take an `i64`; anything larger means "no limit".
fn sql_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl StateStore {
    /// Starts a run of the activation (created on first use) with status `running`; returns
    /// its id.
    pub fn begin_run(&mut self, activation: &str, kind: RunKind) -> Result<i64, Error> {
        const A: &str = "starting a run";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(A)?;
        let id = ensure_activation(&tx, activation).ctx(A)?;
        tx.prepare_cached(
            "INSERT INTO runs (activation_id, kind, status, started_at) \
             VALUES (?1, ?2, 'running', ?3)",
        )
        .and_then(|mut s| s.execute(params![id, kind.as_str(), now()]))
        .ctx(A)?;
        let run_id = tx.last_insert_rowid();
        tx.commit().ctx(A)?;
        Ok(run_id)
    }

    /// Finishes a run: its final status, counts (JSON) and error, if any.
    pub fn finish_run(
        &mut self,
        run_id: i64,
        status: RunStatus,
        counts_json: &str,
        error: Option<&str>,
    ) -> Result<(), Error> {
        if status == RunStatus::Running {
            return Err(Error::NotFinished { run_id });
        }
        let n = self
            .conn
            .prepare_cached(
                "UPDATE runs SET status = ?2, finished_at = ?3, counts_json = ?4, error = ?5 \
                 WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![run_id, status.as_str(), now(), counts_json, error])
            })
            .ctx("finishing a run")?;
        if n == 0 {
            return Err(Error::UnknownRun { run_id });
        }
        Ok(())
    }

    /// Records row outcomes of a run, in one transaction. A row number recorded again
    /// replaces its earlier entry.
    pub fn record_rows(&mut self, run_id: i64, rows: &[RunRow]) -> Result<(), Error> {
        const A: &str = "recording row outcomes";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(A)?;
        record_rows_in(&tx, run_id, rows)?;
        tx.commit().ctx(A)
    }

    /// The latest runs, newest first: of one activation, or of all.
    pub fn runs(&self, activation: Option<&str>, limit: u64) -> Result<Vec<RunSummary>, Error> {
        const A: &str = "listing runs";
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "{SELECT_RUN} WHERE ?1 IS NULL OR a.name = ?1 ORDER BY r.id DESC LIMIT ?2"
            ))
            .ctx(A)?;
        let mut rows = stmt.query(params![activation, sql_count(limit)]).ctx(A)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().ctx(A)? {
            out.push(run_summary(r)?);
        }
        Ok(out)
    }

    /// One run.
    pub fn run(&self, id: i64) -> Result<Option<RunSummary>, Error> {
        const A: &str = "reading a run";
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{SELECT_RUN} WHERE r.id = ?1"))
            .ctx(A)?;
        let mut rows = stmt.query([id]).ctx(A)?;
        match rows.next().ctx(A)? {
            Some(r) => Ok(Some(run_summary(r)?)),
            None => Ok(None),
        }
    }

    /// A page of a run's row outcomes in row order, optionally only those with one outcome
    /// (`updated`, `unchanged`, `not_found`, `rejected`, `failed`; anything else is
    /// [`Error::UnknownOutcome`]).
    pub fn run_rows(
        &self,
        run_id: i64,
        outcome: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<RunRow>, Error> {
        const A: &str = "reading row outcomes";
        let outcome = outcome.map(str::parse::<Outcome>).transpose()?;
        let sql = if outcome.is_some() {
            "SELECT row_number, contact_key, outcome, code, message, attributes_json \
             FROM run_rows INDEXED BY run_rows_by_outcome \
             WHERE run_id = ?1 AND outcome = ?2 ORDER BY row_number LIMIT ?3 OFFSET ?4"
        } else {
            "SELECT row_number, contact_key, outcome, code, message, attributes_json \
             FROM run_rows WHERE run_id = ?1 AND ?2 IS NULL \
             ORDER BY row_number LIMIT ?3 OFFSET ?4"
        };
        let mut stmt = self.conn.prepare_cached(sql).ctx(A)?;
        let mut rows = stmt
            .query(params![
                run_id,
                outcome.map(Outcome::as_str),
                sql_count(limit),
                sql_count(offset)
            ])
            .ctx(A)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().ctx(A)? {
            out.push(run_row(r)?);
        }
        Ok(out)
    }

    /// A page of runs, newest first: of one activation or of all, with ids below `before`
    /// when given (keyset paging: pass the last id of a page to get the next one).
    pub fn runs_before(
        &self,
        activation: Option<&str>,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<RunSummary>, Error> {
        const A: &str = "listing runs";
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "{SELECT_RUN} WHERE (?1 IS NULL OR a.name = ?1) AND (?2 IS NULL OR r.id < ?2) \
                 ORDER BY r.id DESC LIMIT ?3"
            ))
            .ctx(A)?;
        let mut rows = stmt
            .query(params![activation, before, sql_count(limit)])
            .ctx(A)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().ctx(A)? {
            out.push(run_summary(r)?);
        }
        Ok(out)
    }

    /// A page of a run's row outcomes in row order, after row number `after` when given
    /// (keyset paging: pass the last row number of a page to get the next one), optionally
    /// only those with one outcome. Each page is one range scan of an index, however deep.
    pub fn run_rows_after(
        &self,
        run_id: i64,
        outcome: Option<Outcome>,
        after: Option<u64>,
        limit: u64,
    ) -> Result<Vec<RunRow>, Error> {
        const A: &str = "reading row outcomes";
        let after = match after {
            Some(n) => i64::try_from(n).map_err(|_| Error::OutOfRange {
                what: "row number",
                value: n,
            })?,
            None => -1,
        };
        let sql = if outcome.is_some() {
            "SELECT row_number, contact_key, outcome, code, message, attributes_json \
             FROM run_rows INDEXED BY run_rows_by_outcome \
             WHERE run_id = ?1 AND outcome = ?2 AND row_number > ?3 \
             ORDER BY row_number LIMIT ?4"
        } else {
            "SELECT row_number, contact_key, outcome, code, message, attributes_json \
             FROM run_rows WHERE run_id = ?1 AND ?2 IS NULL AND row_number > ?3 \
             ORDER BY row_number LIMIT ?4"
        };
        let mut stmt = self.conn.prepare_cached(sql).ctx(A)?;
        let mut rows = stmt
            .query(params![
                run_id,
                outcome.map(Outcome::as_str),
                after,
                sql_count(limit)
            ])
            .ctx(A)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().ctx(A)? {
            out.push(run_row(r)?);
        }
        Ok(out)
    }

    /// How many rows of a run were recorded with each outcome so far (outcomes with none are
    /// left out). `unchanged` rows are not recorded one by one, so they are not counted here.
    pub fn run_outcome_counts(&self, run_id: i64) -> Result<Vec<(Outcome, u64)>, Error> {
        const A: &str = "counting row outcomes";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT outcome, count(*) FROM run_rows INDEXED BY run_rows_by_outcome \
                 WHERE run_id = ?1 GROUP BY outcome ORDER BY outcome",
            )
            .ctx(A)?;
        let mut rows = stmt.query([run_id]).ctx(A)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().ctx(A)? {
            let n: i64 = r.get(1).ctx(A)?;
            out.push((
                Outcome::from_sql(r.get(0).ctx(A)?)?,
                u64::try_from(n).unwrap_or(0),
            ));
        }
        Ok(out)
    }

    /// Prunes the per-row outcomes of the activation's older runs: those beyond its newest
    /// `keep_runs`, and those that finished before `finished_before` (RFC 3339) when given.
    /// Runs still going on, or with bulk jobs not settled (their rows settle later), are kept.
    /// The runs and their counts stay; each pruned run records when (`rows_pruned_at` in its
    /// `counts_json`, read back as [`RunSummary::rows_pruned_at`]). Returns how many rows were
    /// deleted; SQLite reuses their pages (`VACUUM` gives them back: [`StateStore::vacuum`]).
    pub fn prune_run_rows(
        &mut self,
        activation: &str,
        keep_runs: u64,
        finished_before: Option<&str>,
    ) -> Result<u64, Error> {
        const A: &str = "pruning old runs' rows";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(A)?;
        let Some(id) = crate::activation_id(&tx, activation).ctx(A)? else {
            return Ok(0);
        };
        let old: Vec<i64> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT r.id FROM runs AS r \
                     WHERE r.activation_id = ?1 AND r.status NOT IN ('running', 'pending') \
                     AND NOT EXISTS (SELECT 1 FROM bulk_jobs AS j \
                                     WHERE j.run_id = r.id AND j.state != 'settled') \
                     AND (r.id NOT IN (SELECT id FROM runs WHERE activation_id = ?1 \
                                       ORDER BY id DESC LIMIT ?2) \
                          OR (?3 IS NOT NULL AND r.finished_at < ?3)) \
                     AND EXISTS (SELECT 1 FROM run_rows WHERE run_id = r.id)",
                )
                .ctx(A)?;
            let rows = stmt
                .query_map(params![id, sql_count(keep_runs), finished_before], |r| {
                    r.get(0)
                })
                .ctx(A)?;
            rows.collect::<Result<_, _>>().ctx(A)?
        };
        let mut deleted = 0u64;
        let at = now();
        for run in old {
            deleted += tx
                .execute("DELETE FROM run_rows WHERE run_id = ?1", [run])
                .ctx(A)? as u64;
            tx.execute(
                "UPDATE runs SET counts_json = json_set(\
                 CASE WHEN json_valid(counts_json) THEN counts_json ELSE '{}' END, \
                 '$.rows_pruned_at', ?2) WHERE id = ?1",
                params![run, at],
            )
            .ctx(A)?;
        }
        tx.commit().ctx(A)?;
        Ok(deleted)
    }

    /// Marks the activation's runs still `running` as `interrupted` (their process died).
    /// Call it while holding the activation's [`crate::ActivationLock`], so that no live run
    /// is affected. Returns how many runs were marked.
    pub fn mark_interrupted_runs(&mut self, activation: &str) -> Result<u64, Error> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE runs SET status = 'interrupted', finished_at = ?2, \
                 error = coalesce(error, 'the process ended before the run finished') \
                 WHERE status = 'running' \
                 AND activation_id = (SELECT id FROM activations WHERE name = ?1)",
            )
            .and_then(|mut s| s.execute(params![activation, now()]))
            .ctx("marking interrupted runs")?;
        Ok(n as u64)
    }
}

/// [`StateStore::record_rows`] inside a transaction.
pub(crate) fn record_rows_in(
    tx: &rusqlite::Connection,
    run_id: i64,
    rows: &[RunRow],
) -> Result<(), Error> {
    const A: &str = "recording row outcomes";
    let exists = tx
        .prepare_cached("SELECT 1 FROM runs WHERE id = ?1")
        .and_then(|mut s| s.exists([run_id]))
        .ctx(A)?;
    if !exists {
        return Err(Error::UnknownRun { run_id });
    }
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO run_rows \
             (run_id, row_number, contact_key, outcome, code, message, attributes_json) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (run_id, row_number) DO UPDATE SET \
             contact_key = excluded.contact_key, outcome = excluded.outcome, \
             code = excluded.code, message = excluded.message, \
             attributes_json = excluded.attributes_json",
        )
        .ctx(A)?;
    for r in rows {
        let number = i64::try_from(r.row_number).map_err(|_| Error::OutOfRange {
            what: "row number",
            value: r.row_number,
        })?;
        stmt.execute(params![
            run_id,
            number,
            r.contact_key,
            r.outcome.as_str(),
            r.code,
            r.message,
            r.attributes_json
        ])
        .ctx(A)?;
    }
    Ok(())
}
