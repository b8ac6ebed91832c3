//! What a run records as it goes, committed in one transaction per batch.

use sync_core::mapping::BoundMapping;
use sync_core::plan::{ContactChange, Refresh};
use sync_core::ports::{ContactRef, Existence};

use crate::bulk::{self, JobRecordIn, RecordResult};
use crate::runs::{record_rows_in, RunRow};
use crate::snapshot::{apply_changes_in, apply_refreshes_in, change_keys};
use crate::{doubt, existence, Error, StateStore};

/// Everything a run has to record at one time, for [`StateStore::commit`].
#[derive(Debug, Default)]
pub struct CommitBatch {
    /// Writes about to be sent: their attributes are in doubt until answered. The write may
    /// only be sent once the batch is committed.
    pub sending: Vec<ContactChange>,
    /// Acknowledged writes: the snapshot takes them and their doubts are settled.
    pub acknowledged: Vec<ContactChange>,
    /// Writes answered without being applied (refused for their content): their doubts are
    /// settled and the snapshot keeps its values.
    pub unapplied: Vec<ContactChange>,
    /// Contacts the destination does not have: all their doubts are settled.
    pub missing: Vec<String>,
    /// New row fingerprints of contacts with nothing to send.
    pub refreshes: Vec<Refresh>,
    /// Existence checks' results.
    pub existence: Vec<(ContactRef, Existence)>,
    /// Row outcomes of the run.
    pub rows: Vec<RunRow>,
    /// Bulk jobs about to be submitted, each with its records: recorded with their run rows
    /// (`pending`) and their attributes pending in the job. [`StateStore::commit`] returns
    /// their ids; a job may only be submitted once the batch is committed.
    pub jobs: Vec<Vec<JobRecordIn>>,
    /// Jobs Attentive accepted: `(job, Attentive's job id)`.
    pub submitted: Vec<(i64, String)>,
    /// Jobs whose submission got no answer that says whether they were created, with why:
    /// every record fails (sent again).
    pub lost: Vec<(i64, String)>,
    /// Records of open jobs settled before the job's result (refused before submission).
    pub record_results: Vec<(i64, Vec<(u32, RecordResult)>)>,
}

impl CommitBatch {
    /// Nothing to record.
    pub fn is_empty(&self) -> bool {
        self.sending.is_empty()
            && self.acknowledged.is_empty()
            && self.unapplied.is_empty()
            && self.missing.is_empty()
            && self.refreshes.is_empty()
            && self.existence.is_empty()
            && self.rows.is_empty()
            && self.jobs.is_empty()
            && self.submitted.is_empty()
            && self.lost.is_empty()
            && self.record_results.is_empty()
    }

    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.sending.clear();
        self.acknowledged.clear();
        self.unapplied.clear();
        self.missing.clear();
        self.refreshes.clear();
        self.existence.clear();
        self.rows.clear();
        self.jobs.clear();
        self.submitted.clear();
        self.lost.clear();
        self.record_results.clear();
    }
}

impl StateStore {
    /// Records a batch of one run of an activation (`mapping` is the run's, `destination` the
    /// account its existence checks are cached for) in one transaction: all of it or, on
    /// error, nothing. Returns the ids of the jobs it recorded ([`CommitBatch::jobs`]).
    pub fn commit(
        &mut self,
        activation: &str,
        destination: &str,
        run_id: i64,
        mapping: &BoundMapping,
        batch: &CommitBatch,
    ) -> Result<Vec<i64>, Error> {
        const A: &str = "recording the run's results";
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if !batch.sending.is_empty()
            || !batch.jobs.is_empty()
            || !batch.lost.is_empty()
            || !batch.record_results.is_empty()
        {
            self.doubt_free.get_mut().take();
        }
        self.write_activation(A, activation, |tx, id, at| {
            doubt::mark_in(tx, id, run_id, mapping, &batch.sending, None, at)?;
            let jobs = bulk::create_jobs_in(tx, id, run_id, mapping, &batch.jobs, at)?;
            for (job, remote) in &batch.submitted {
                bulk::submitted_in(tx, *job, remote, at)?;
            }
            apply_changes_in(tx, id, run_id, mapping, &batch.acknowledged, at)?;
            for c in &batch.unapplied {
                let keys = change_keys(mapping, c)?;
                doubt::settle_in(tx, id, &c.contact.key, Some(&keys))?;
            }
            for key in &batch.missing {
                doubt::settle_in(tx, id, key, None)?;
            }
            apply_refreshes_in(tx, id, run_id, &batch.refreshes, at)?;
            existence::record_existence_in(tx, destination, &batch.existence, at)?;
            if !batch.rows.is_empty() {
                record_rows_in(tx, run_id, &batch.rows)?;
            }
            bulk::records_in(tx, id, &batch.record_results, at)?;
            bulk::lost_in(tx, id, &batch.lost, at)?;
            Ok(jobs)
        })
    }
}
