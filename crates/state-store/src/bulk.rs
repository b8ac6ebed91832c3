//! Bulk jobs: what each carries, recorded before it is submitted, and how its result settles
//! each record.
//!
//! A job is created (with its records, and their attributes marked in doubt as *pending* in
//! it) in the same transaction as the rest of a committer's batch, before the job is
//! submitted; the submission's answer records Attentive's job id (`pending`), or settles the
//! job as lost. The result file then settles each record ([`StateStore::settle_job`]):
//!
//! - **applied**: the snapshot takes the values the record carried, for each attribute whose
//!   doubt still belongs to this job. An attribute written again since (by a later job or a
//!   realtime write) is left in doubt, plain: Attentive may have applied the two in either
//!   order, so the next run sends the model's value again.
//! - **rejected** (4xx): the doubts are settled and the row fingerprint moves, as for a
//!   realtime 400 (not re-sent until the values change).
//! - **failed** (5xx, unreadable, missing, job failed as a whole): the pending doubts become
//!   plain doubts, sent again by the next run whatever the model holds.

use rusqlite::{params, Connection, OptionalExtension, Row};
use sync_core::mapping::BoundMapping;
use sync_core::mapping::IdentifierKind;
use sync_core::plan::ContactChange;
use sync_core::ports::ContactRef;

use crate::packed::Slot;
use crate::snapshot::{change_keys, decode_value, millis, stored_value, Entry, Slots};
use crate::{activation_id, now, u64_from_sql, u64_to_sql, Context, Error, StateStore};

/// One record of a job about to be submitted: the model row and the change it carries.
#[derive(Debug, Clone)]
pub struct JobRecordIn {
    /// The row's number in the model (its run row is recorded `pending`).
    pub row_number: u64,
    /// The change; the record sends exactly its attributes.
    pub change: ContactChange,
}

/// Where a job is, as the store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Recorded, being submitted: no job id known. Found so at the start of a run, its
    /// submission's answer was lost (the process died): settled as failed.
    Submitting,
    /// Submitted (Attentive's id known), result not read yet.
    Pending,
    /// Every record settled.
    Settled,
}

impl JobState {
    /// The text stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Submitting => "submitting",
            JobState::Pending => "pending",
            JobState::Settled => "settled",
        }
    }

    fn from_sql(text: String) -> Result<JobState, Error> {
        match text.as_str() {
            "submitting" => Ok(JobState::Submitting),
            "pending" => Ok(JobState::Pending),
            "settled" => Ok(JobState::Settled),
            _ => Err(Error::Corrupt {
                table: "bulk_jobs",
                column: "state",
                value: text,
            }),
        }
    }
}

/// A bulk job, as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JobSummary {
    /// The store's id of the job.
    pub id: i64,
    /// The run that submitted it.
    pub run_id: i64,
    /// Attentive's `batchJobId`, once the submission was answered.
    pub remote_id: Option<String>,
    /// Where it is.
    pub state: JobState,
    /// The last status Attentive gave (`PENDING`, `COMPLETED`...).
    pub remote_status: Option<String>,
    /// Records it carries.
    pub records: u64,
    /// Records settled as applied, rejected, failed; and not settled yet.
    pub updated: u64,
    /// See `updated`.
    pub rejected: u64,
    /// See `updated`.
    pub failed: u64,
    /// See `updated`.
    pub pending: u64,
    /// Times its status was asked.
    pub polls: u64,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// When Attentive accepted it.
    pub submitted_at: Option<String>,
    /// When its last record was settled.
    pub settled_at: Option<String>,
    /// How it was settled, when not by its result file alone (failed as a whole, lost...).
    pub message: Option<String>,
}

/// One record of a job, as its settlement needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// Its position in the job.
    pub seq: u32,
    /// The model row it came from.
    pub row_number: u64,
    /// The identifier it was sent with.
    pub contact: ContactRef,
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordResult {
    /// Applied: its values move the snapshot.
    Applied,
    /// Refused for its content, with Attentive's message.
    Rejected(String),
    /// Not known to be applied: sent again.
    Failed(String),
}

const SELECT_JOB: &str = "\
SELECT j.id, j.run_id, j.remote_id, j.state, j.remote_status, j.records,
       (SELECT count(*) FROM bulk_records WHERE job_id = j.id AND outcome = 'updated'),
       (SELECT count(*) FROM bulk_records WHERE job_id = j.id AND outcome = 'rejected'),
       (SELECT count(*) FROM bulk_records WHERE job_id = j.id AND outcome = 'failed'),
       (SELECT count(*) FROM bulk_records WHERE job_id = j.id AND outcome IS NULL),
       j.polls, j.created_at, j.submitted_at, j.settled_at, j.message
FROM bulk_jobs AS j";

fn job_summary(r: &Row<'_>) -> Result<JobSummary, Error> {
    const A: &str = "reading bulk jobs";
    let n = |i: usize| -> Result<u64, Error> {
        let v: i64 = r.get(i).ctx(A)?;
        Ok(u64::try_from(v).unwrap_or(0))
    };
    Ok(JobSummary {
        id: r.get(0).ctx(A)?,
        run_id: r.get(1).ctx(A)?,
        remote_id: r.get(2).ctx(A)?,
        state: JobState::from_sql(r.get(3).ctx(A)?)?,
        remote_status: r.get(4).ctx(A)?,
        records: n(5)?,
        updated: n(6)?,
        rejected: n(7)?,
        failed: n(8)?,
        pending: n(9)?,
        polls: n(10)?,
        created_at: r.get(11).ctx(A)?,
        submitted_at: r.get(12).ctx(A)?,
        settled_at: r.get(13).ctx(A)?,
        message: r.get(14).ctx(A)?,
    })
}

/// Records the jobs of a batch about to be submitted: each job, its records, their run rows
/// (`pending`) and their attributes in doubt, pending in it. Returns the jobs' ids, in order.
pub(crate) fn create_jobs_in(
    tx: &Connection,
    activation_id: i64,
    run_id: i64,
    mapping: &BoundMapping,
    jobs: &[Vec<JobRecordIn>],
    at: &str,
) -> Result<Vec<i64>, Error> {
    const A: &str = "recording a bulk job about to be submitted";
    let mut ids = Vec::with_capacity(jobs.len());
    let mut job_stmt = tx
        .prepare_cached(
            "INSERT INTO bulk_jobs (activation_id, run_id, state, records, created_at) \
             VALUES (?1, ?2, 'submitting', ?3, ?4)",
        )
        .ctx(A)?;
    let mut record = tx
        .prepare_cached(
            "INSERT INTO bulk_records (job_id, seq, row_number, contact_kind, contact_key, \
             key_hash, row_fingerprint, attributes_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .ctx(A)?;
    let mut row = tx
        .prepare_cached(
            "INSERT INTO run_rows (run_id, row_number, contact_key, outcome, code, message, \
             attributes_json) VALUES (?1, ?2, ?3, 'pending', 'bulk_pending', ?4, ?5) \
             ON CONFLICT (run_id, row_number) DO UPDATE SET contact_key = excluded.contact_key, \
             outcome = excluded.outcome, code = excluded.code, message = excluded.message, \
             attributes_json = excluded.attributes_json",
        )
        .ctx(A)?;
    for records in jobs {
        job_stmt
            .execute(params![activation_id, run_id, records.len() as i64, at])
            .ctx(A)?;
        let job = tx.last_insert_rowid();
        for (seq, r) in records.iter().enumerate() {
            let keys = change_keys(mapping, &r.change)?;
            let mut attributes = Vec::with_capacity(keys.len());
            let mut shown = serde_json::Map::new();
            for (a, key) in r.change.changes.iter().zip(&keys) {
                let (tag, text) = stored_value(a.value.as_ref());
                attributes.push(serde_json::json!([
                    key,
                    tag.to_string(),
                    text,
                    u64_to_sql(a.fingerprint)
                ]));
                shown.insert(
                    (*key).to_owned(),
                    a.value
                        .as_ref()
                        .map_or(serde_json::Value::String(String::new()), |v| {
                            serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
                        }),
                );
            }
            let number = i64::try_from(r.row_number).map_err(|_| Error::OutOfRange {
                what: "row number",
                value: r.row_number,
            })?;
            record
                .execute(params![
                    job,
                    seq as i64,
                    number,
                    r.change.contact.kind.as_str(),
                    r.change.contact.key,
                    u64_to_sql(r.change.key_hash),
                    u64_to_sql(r.change.row_fingerprint),
                    serde_json::Value::Array(attributes).to_string()
                ])
                .ctx(A)?;
            row.execute(params![
                run_id,
                number,
                r.change.contact.key,
                format!(
                    "submitted in bulk job #{job}; settled when Attentive's result for it is read"
                ),
                serde_json::Value::Object(shown).to_string()
            ])
            .ctx(A)?;
        }
        crate::doubt::mark_in(
            tx,
            activation_id,
            run_id,
            mapping,
            records.iter().map(|r| &r.change),
            Some(job),
            at,
        )?;
        ids.push(job);
    }
    Ok(ids)
}

/// Records Attentive's id of a submitted job.
pub(crate) fn submitted_in(
    tx: &Connection,
    job: i64,
    remote_id: &str,
    at: &str,
) -> Result<(), Error> {
    tx.prepare_cached(
        "UPDATE bulk_jobs SET remote_id = ?2, state = 'pending', submitted_at = ?3 \
         WHERE id = ?1 AND state = 'submitting'",
    )
    .and_then(|mut s| s.execute(params![job, remote_id, at]))
    .ctx("recording a submitted bulk job")?;
    Ok(())
}

/// Settles jobs whose submission got no answer that says whether they were created: every
/// record failed (its attributes in doubt, sent again).
pub(crate) fn lost_in(
    tx: &Connection,
    activation_id: i64,
    lost: &[(i64, String)],
    at: &str,
) -> Result<(), Error> {
    for (job, reason) in lost {
        settle_in(
            tx,
            activation_id,
            *job,
            &|_| None,
            true,
            Some("NOT SUBMITTED"),
            Some(reason),
            at,
        )?;
    }
    Ok(())
}

/// Settles some records of open jobs (records refused before submission), leaving the jobs
/// open.
pub(crate) fn records_in(
    tx: &Connection,
    activation_id: i64,
    records: &[(i64, Vec<(u32, RecordResult)>)],
    at: &str,
) -> Result<(), Error> {
    for (job, results) in records {
        let find = |seq: u32| {
            results
                .iter()
                .find(|(s, _)| *s == seq)
                .map(|(_, r)| r.clone())
        };
        settle_in(tx, activation_id, *job, &find, false, None, None, at)?;
    }
    Ok(())
}

/// One attribute a record carried: `[key, tag, text, fingerprint]` (the fingerprint is the
/// value's, recomputed when the snapshot is read).
struct Carried {
    key: String,
    tag: String,
    text: String,
}

fn carried(json: &str) -> Result<Vec<Carried>, Error> {
    let corrupt = || Error::Corrupt {
        table: "bulk_records",
        column: "attributes_json",
        value: json.chars().take(200).collect(),
    };
    let v: Vec<(String, String, String, i64)> =
        serde_json::from_str(json).map_err(|_| corrupt())?;
    v.into_iter()
        .map(|(key, tag, text, _fingerprint)| {
            // Checked now, so that a settlement never writes a value it cannot read back.
            decode_value("bulk_records", &tag, &text)?;
            Ok(Carried { key, tag, text })
        })
        .collect()
}

/// Settles records of a job inside a transaction (see the module's doc): `result(seq)` for
/// each record not settled yet. With `finish`, a record without a result fails and the job is
/// settled; without it, only the records with a result are (the job stays open).
#[allow(clippy::too_many_arguments)]
fn settle_in(
    tx: &Connection,
    activation_id: i64,
    job: i64,
    result: &dyn Fn(u32) -> Option<RecordResult>,
    finish: bool,
    remote_status: Option<&str>,
    message: Option<&str>,
    at: &str,
) -> Result<(), Error> {
    const A: &str = "settling a bulk job";
    let Some((job_run, state)): Option<(i64, String)> = tx
        .prepare_cached("SELECT run_id, state FROM bulk_jobs WHERE id = ?1 AND activation_id = ?2")
        .and_then(|mut s| {
            s.query_row(params![job, activation_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .ctx(A)?
    else {
        return Ok(());
    };
    if state == "settled" {
        return Ok(());
    }
    let records: Vec<(i64, i64, String, i64, i64, String)> = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT seq, row_number, contact_key, key_hash, row_fingerprint, attributes_json \
                 FROM bulk_records WHERE job_id = ?1 AND outcome IS NULL ORDER BY seq",
            )
            .ctx(A)?;
        let rows = stmt
            .query_map([job], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .ctx(A)?;
        rows.collect::<Result<_, _>>().ctx(A)?
    };
    let mut owner = tx
        .prepare_cached(
            "SELECT job_id FROM in_doubt \
             WHERE activation_id = ?1 AND contact_key = ?2 AND attribute_key = ?3",
        )
        .ctx(A)?;
    let mut settle = tx
        .prepare_cached(
            "DELETE FROM in_doubt WHERE activation_id = ?1 AND contact_key = ?2 \
             AND attribute_key = ?3",
        )
        .ctx(A)?;
    let mut unpend = tx
        .prepare_cached(
            "UPDATE in_doubt SET job_id = NULL, fingerprint = NULL \
             WHERE activation_id = ?1 AND contact_key = ?2 AND attribute_key = ?3",
        )
        .ctx(A)?;
    let mut plain_doubt = tx
        .prepare_cached(
            "INSERT INTO in_doubt (activation_id, contact_key, attribute_key, key_hash, \
             value_tag, value_text, run_id, sent_at, job_id, fingerprint) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, NULL) \
             ON CONFLICT (activation_id, contact_key, attribute_key) DO NOTHING",
        )
        .ctx(A)?;
    let at_ms = millis(at)?;
    let mut slots = Slots::load(tx, activation_id)?;
    let mut buf = Vec::new();
    let mut outcome = tx
        .prepare_cached(
            "UPDATE bulk_records SET outcome = ?3, message = ?4 WHERE job_id = ?1 AND seq = ?2",
        )
        .ctx(A)?;
    let mut row = tx
        .prepare_cached(
            "UPDATE run_rows SET outcome = ?3, code = ?4, message = ?5 \
             WHERE run_id = ?1 AND row_number = ?2",
        )
        .ctx(A)?;
    for (seq, row_number, key, key_hash, row_fp, attributes) in records {
        let result = match result(u32::try_from(seq).unwrap_or(u32::MAX)) {
            Some(r) => r,
            None if finish => RecordResult::Failed(
                message
                    .unwrap_or("the job's result says nothing of this record")
                    .to_owned(),
            ),
            None => continue,
        };
        // The contact's row moves to this job's run only if no later run has settled the
        // contact since.
        let mut entry = None;
        if matches!(result, RecordResult::Applied | RecordResult::Rejected(_)) {
            let mut e = Entry::find_or_new(tx, activation_id, &key, u64_from_sql(key_hash))?;
            if e.id.is_none() || e.updated_run.unwrap_or(0) <= job_run {
                e.row_fingerprint = u64_from_sql(row_fp);
                e.updated_run = Some(job_run);
                e.updated_at = at_ms;
            }
            entry = Some(e);
        }
        for a in carried(&attributes)? {
            let by: Option<Option<i64>> = owner
                .query_row(params![activation_id, key, a.key], |r| r.get(0))
                .optional()
                .ctx(A)?;
            let ours = by == Some(Some(job));
            match &result {
                RecordResult::Applied if ours => {
                    let slot = slots.slot(tx, &a.key)?;
                    let tag = a.tag.chars().next().unwrap_or('s');
                    if let Some(e) = entry.as_mut() {
                        e.packed.set(slot, Slot::new(tag, &a.text, Some(job_run)));
                    }
                    settle.execute(params![activation_id, key, a.key]).ctx(A)?;
                }
                RecordResult::Rejected(_) if ours => {
                    settle.execute(params![activation_id, key, a.key]).ctx(A)?;
                }
                RecordResult::Rejected(_) => {}
                RecordResult::Failed(_) if ours => {
                    unpend.execute(params![activation_id, key, a.key]).ctx(A)?;
                }
                // Written again since: the order in which Attentive applied the two is
                // unknown, so the attribute is sent again whatever the model holds.
                RecordResult::Applied | RecordResult::Failed(_) => match by {
                    Some(_) => {
                        unpend.execute(params![activation_id, key, a.key]).ctx(A)?;
                    }
                    None => {
                        plain_doubt
                            .execute(params![
                                activation_id,
                                key,
                                a.key,
                                key_hash,
                                a.tag,
                                a.text,
                                job_run,
                                at
                            ])
                            .ctx(A)?;
                    }
                },
            }
        }
        if let Some(mut e) = entry {
            e.write(tx, activation_id, &mut buf)?;
        }
        let (text, code, message) = match &result {
            RecordResult::Applied => ("updated", None, None),
            RecordResult::Rejected(m) => ("rejected", Some("attentive_rejected"), Some(m.as_str())),
            RecordResult::Failed(m) => ("failed", Some("failed"), Some(m.as_str())),
        };
        outcome.execute(params![job, seq, text, message]).ctx(A)?;
        row.execute(params![job_run, row_number, text, code, message])
            .ctx(A)?;
    }
    if !finish {
        return Ok(());
    }
    tx.prepare_cached(
        "UPDATE bulk_jobs SET state = 'settled', settled_at = ?2, \
         remote_status = coalesce(?3, remote_status), message = coalesce(?4, message) WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![job, at, remote_status, message]))
    .ctx(A)?;
    Ok(())
}

impl StateStore {
    /// The activation's jobs not settled yet, oldest first.
    pub fn open_jobs(&self, activation: &str) -> Result<Vec<JobSummary>, Error> {
        const A: &str = "listing bulk jobs";
        let Some(id) = activation_id(&self.conn, activation).ctx(A)? else {
            return Ok(Vec::new());
        };
        self.jobs_where("j.activation_id = ?1 AND j.state != 'settled'", id)
    }

    /// The jobs a run submitted, in order.
    pub fn run_jobs(&self, run_id: i64) -> Result<Vec<JobSummary>, Error> {
        self.jobs_where("j.run_id = ?1", run_id)
    }

    /// The jobs a condition on `bulk_jobs AS j` (with one parameter) selects, in order.
    fn jobs_where(&self, condition: &str, param: i64) -> Result<Vec<JobSummary>, Error> {
        const A: &str = "listing bulk jobs";
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{SELECT_JOB} WHERE {condition} ORDER BY j.id"))
            .ctx(A)?;
        let mut rows = stmt.query([param]).ctx(A)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().ctx(A)? {
            out.push(job_summary(r)?);
        }
        Ok(out)
    }

    /// The records of a job, in order.
    pub fn job_records(&self, job: i64) -> Result<Vec<JobRecord>, Error> {
        const A: &str = "reading a bulk job's records";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, row_number, contact_kind, contact_key FROM bulk_records \
                 WHERE job_id = ?1 ORDER BY seq",
            )
            .ctx(A)?;
        let mut rows = stmt.query([job]).ctx(A)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().ctx(A)? {
            let seq: i64 = r.get(0).ctx(A)?;
            let row_number: i64 = r.get(1).ctx(A)?;
            let kind: String = r.get(2).ctx(A)?;
            let kind = match kind.as_str() {
                "email" => IdentifierKind::Email,
                "phone" => IdentifierKind::Phone,
                _ => {
                    return Err(Error::Corrupt {
                        table: "bulk_records",
                        column: "contact_kind",
                        value: kind,
                    })
                }
            };
            out.push(JobRecord {
                seq: u32::try_from(seq).unwrap_or(u32::MAX),
                row_number: u64::try_from(row_number).unwrap_or(0),
                contact: ContactRef {
                    kind,
                    key: r.get(3).ctx(A)?,
                },
            });
        }
        Ok(out)
    }

    /// Notes a poll of a job and the status Attentive gave.
    pub fn note_poll(&mut self, job: i64, remote_status: &str) -> Result<(), Error> {
        self.conn
            .prepare_cached(
                "UPDATE bulk_jobs SET polls = polls + 1, polled_at = ?2, remote_status = ?3 \
                 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![job, now(), remote_status]))
            .ctx("recording a poll of a bulk job")?;
        Ok(())
    }

    /// Settles a job of the activation in one transaction: `results[seq]` for each record
    /// (a record without an entry is failed), then the job is `settled` (see the module's
    /// doc for what each result does to the snapshot and the doubts). Settling a settled
    /// job does nothing.
    pub fn settle_job(
        &mut self,
        activation: &str,
        job: i64,
        results: &[RecordResult],
        remote_status: Option<&str>,
        message: Option<&str>,
    ) -> Result<(), Error> {
        self.doubt_free.get_mut().take();
        let result = |seq: u32| {
            usize::try_from(seq)
                .ok()
                .and_then(|i| results.get(i))
                .cloned()
        };
        self.write_activation("settling a bulk job", activation, |tx, id, at| {
            settle_in(tx, id, job, &result, true, remote_status, message, at)
        })
    }

    /// How many of a run's jobs are not settled.
    pub fn open_job_count(&self, run_id: i64) -> Result<u64, Error> {
        let n: i64 = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM bulk_jobs WHERE run_id = ?1 AND state != 'settled'",
            )
            .and_then(|mut s| s.query_row([run_id], |r| r.get(0)))
            .ctx("counting bulk jobs")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Replaces the status and counts of a finished run whose bulk jobs settled since.
    pub fn update_run_result(
        &mut self,
        run_id: i64,
        status: crate::RunStatus,
        counts_json: &str,
    ) -> Result<(), Error> {
        if status == crate::RunStatus::Running {
            return Err(Error::NotFinished { run_id });
        }
        self.conn
            .prepare_cached("UPDATE runs SET status = ?2, counts_json = ?3 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![run_id, status.as_str(), counts_json]))
            .ctx("recording a run's settled bulk jobs")?;
        Ok(())
    }
}
