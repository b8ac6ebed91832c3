//! The plan pipeline: model → normalize → diff against the snapshot. `plan` (dry run) and
//! `run` use this same code path.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sync_core::mapping::{BoundMapping, MappingError};
use sync_core::plan::{PlanCounts, PlanError, Planner, Rejection, RowOutcome, RowPlan};
use sync_core::ports::{ModelSource, SnapshotStore};
use sync_core::segment::BoundFilter;
use sync_core::{plan::SnapshotIndex, value::SourceRow};

use crate::config::{Activation, Project, Segment};
use crate::model;

/// What stops a plan.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    UnknownActivation(#[from] crate::config::UnknownActivation),
    /// A validated config always names existing models; a project built by hand may not.
    #[error("activation {activation:?} names model {model:?}, which the config does not have")]
    UnknownModel { activation: String, model: String },
    /// As [`Error::UnknownModel`], for destinations.
    #[error(
        "activation {activation:?} names destination {destination:?}, which the config does not have"
    )]
    UnknownDestination {
        activation: String,
        destination: String,
    },
    /// The destination's API key cannot be read (its variable is unset): sending needs it.
    #[error("{why}: sending needs it")]
    MissingKey { destination: String, why: String },
    /// The model reader thread could not be started.
    #[error("cannot start the model reader thread")]
    Thread(#[source] std::io::Error),
    #[error(
        "activation {activation:?} does not fit model {model:?}:{}{hint}",
        render_mapping(problems)
    )]
    Mapping {
        activation: String,
        model: String,
        problems: Vec<MappingError>,
        /// What probably went wrong (a CSV delimiter that is not the file's), or empty.
        hint: String,
    },
    #[error(
        "the filter of activation {activation:?} does not fit model {model:?}:{}{hint}",
        render_filter(problems)
    )]
    Filter {
        activation: String,
        model: String,
        problems: Vec<sync_core::segment::FilterError>,
        /// As for [`Error::Mapping`].
        hint: String,
    },
    #[error(
        "reading model {model:?} narrowed by activation {activation:?}'s filter `{filter}` failed"
    )]
    SegmentSource {
        model: String,
        activation: String,
        filter: String,
        #[source]
        source: Box<sources::Error>,
    },
    #[error("reading model {model:?} failed")]
    Source {
        model: String,
        #[source]
        source: sources::Error,
    },
    #[error(transparent)]
    Store(state_store::Error),
    #[error("stopped: {0}")]
    Stopped(&'static str),
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
}

/// The problems, one a line; the model's columns are listed with the first unknown column
/// only (a list per unknown column once made a 50 MB header print 629 MB).
fn render_mapping(problems: &[MappingError]) -> String {
    let mut listed = false;
    let mut out = String::new();
    for p in problems {
        match p {
            MappingError::UnknownColumn { column, target, .. } if listed => out.push_str(&format!(
                "\n  - column `{column}` (mapped to {target}) is not in the model either"
            )),
            p => {
                listed |= matches!(p, MappingError::UnknownColumn { .. });
                out.push_str(&format!("\n  - {p}"));
            }
        }
    }
    out
}

/// As [`render_mapping`].
fn render_filter(problems: &[sync_core::segment::FilterError]) -> String {
    use sync_core::segment::FilterError;
    let mut listed = false;
    let mut out = String::new();
    for p in problems {
        match p {
            FilterError::UnknownColumn { column, .. } if listed => out.push_str(&format!(
                "\n  - the filter names column `{column}`, which is not in the model either"
            )),
            p => {
                listed |= matches!(p, FilterError::UnknownColumn { .. });
                out.push_str(&format!("\n  - {p}"));
            }
        }
    }
    out
}

/// When the columns of a CSV model suggest that its delimiter is not the file's (a header
/// `email;tier` read with `,` is one column named `email;tier`), a line saying so and what to
/// set; otherwise empty.
fn delimiter_hint(model: &crate::config::Model, columns: &[String]) -> String {
    let crate::config::ModelSpec::Csv { delimiter, .. } = &model.spec else {
        return String::new();
    };
    let spell = |b: u8| match b {
        b'\t' => "\\t".to_owned(),
        b => char::from(b).escape_default().to_string(),
    };
    for candidate in [b',', b';', b'\t', b'|'] {
        if candidate == *delimiter {
            continue;
        }
        let c = char::from(candidate);
        let holding = columns.iter().filter(|name| name.contains(c)).count();
        if holding > 0 && 2 * holding >= columns.len() {
            let example = columns
                .iter()
                .find(|name| name.contains(c))
                .map(|name| sync_core::message::excerpt(name).into_owned())
                .unwrap_or_default();
            return format!(
                "\n  hint: the model reads the file with delimiter \"{}\", and {} of its {} \
                 columns hold \"{}\" (`{example}`): is the file delimited by \"{}\"? Then set \
                 `delimiter = \"{}\"` in [models.{}]",
                spell(*delimiter),
                holding,
                columns.len(),
                spell(candidate),
                spell(candidate),
                spell(candidate),
                model.name
            );
        }
    }
    String::new()
}

/// One attribute of a planned change, for people and JSON.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AttributeView {
    /// `first_name`, or the custom attribute's name.
    pub attribute: String,
    pub custom: bool,
    /// The new value (`null` = cleared).
    pub value: Option<sync_core::value::Canonical>,
    pub previous: Option<sync_core::value::Canonical>,
}

/// One contact's planned change.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChangeView {
    pub row: u64,
    pub contact: String,
    pub new_contact: bool,
    pub attributes: Vec<AttributeView>,
}

/// One rejected row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RejectionView {
    pub row: u64,
    #[serde(flatten)]
    pub rejection: Rejection,
    pub message: String,
}

/// The result of planning one activation.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub activation: String,
    pub model: String,
    pub counts: PlanCounts,
    /// Contacts the snapshot knew before this plan.
    pub snapshot_contacts: u64,
    /// The first changes, in row order.
    pub sample_changes: Vec<ChangeView>,
    /// The first rejected rows, in row order.
    pub sample_rejections: Vec<RejectionView>,
    /// The activation's segment, when it has a filter: `counts.rows` are the rows it kept,
    /// `counts.outside_segment` those a file model's filter left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<SegmentView>,
    /// How a run would deliver these changes.
    pub delivery: DeliveryView,
    pub duration_ms: u64,
    /// The alert rules a plan can judge, and whether a run like it would fire them (filled
    /// by [`crate::notify::plan_alerts`]; empty until then).
    pub alerts: Vec<PlanAlert>,
}

/// What a plan says of one alert rule.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlanAlert {
    pub rule: String,
    /// A run like this plan would put the rule in `firing`.
    pub firing: bool,
    /// The rule's state now (`ok` or `firing`).
    pub current: String,
    pub message: String,
}

/// How a run would deliver a plan's changes (`delivery`, `bulk_threshold`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeliveryView {
    /// `realtime` or `bulk`: what a run of this plan would use.
    pub mode: &'static str,
    /// The activation's setting (`realtime`, `bulk`, `auto`).
    pub configured: &'static str,
    pub bulk_threshold: u64,
    pub bulk_batch_size: usize,
    /// Write requests the changes take (bulk: one per job of `bulk_batch_size`), existence
    /// checks and retries aside.
    pub write_requests: u64,
}

impl DeliveryView {
    /// What a run with `changed` contacts to send would do.
    pub fn of(delivery: &crate::config::Delivery, changed: u64) -> DeliveryView {
        DeliveryView {
            mode: if delivery.uses_bulk(changed) {
                "bulk"
            } else {
                "realtime"
            },
            configured: delivery.mode.as_str(),
            bulk_threshold: delivery.threshold,
            bulk_batch_size: delivery.batch_size,
            write_requests: delivery.write_requests(changed),
        }
    }
}

/// An activation's segment, for people and JSON.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SegmentView {
    pub filter: String,
    /// `database` (a SQL model's query wrapped in a `WHERE`) or `rows` (a file model's rows).
    pub filtered_by: &'static str,
}

impl SegmentView {
    fn of(segment: &Segment) -> SegmentView {
        SegmentView {
            filter: segment.text(),
            filtered_by: match segment {
                Segment::Sql(_) => "database",
                Segment::Rows(_) => "rows",
            },
        }
    }
}

/// How to plan.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// How many changes and rejections the report shows.
    pub sample_size: usize,
    /// Where to write every changed contact and rejected row (JSON Lines).
    pub output: Option<PathBuf>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            sample_size: 10,
            output: None,
        }
    }
}

/// An activation's model, opened (narrowed to its segment), with the mapping and the filter
/// bound to its columns.
pub struct Bound {
    pub source: model::DynSource,
    pub mapping: BoundMapping,
    /// A file model's segment filter; SQL models filter inside the database.
    pub filter: Option<BoundFilter>,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("columns", &self.source.columns())
            .field("mapping", &self.mapping)
            .field("filter", &self.filter)
            .finish()
    }
}

/// Opens an activation's model (a SQL model narrowed to its segment) and binds its mapping and
/// filter to the model's columns.
pub fn bind(project: &Project, activation: &Activation) -> Result<Bound, Error> {
    let model = project
        .models
        .get(&activation.model)
        .ok_or_else(|| Error::UnknownModel {
            activation: activation.name.clone(),
            model: activation.model.clone(),
        })?;
    let sql_filter = match &activation.segment {
        Some(Segment::Sql(condition)) => Some(condition.as_str()),
        _ => None,
    };
    let source =
        model::open_segment(&model.spec, sql_filter).map_err(|source| match sql_filter {
            Some(filter) => Error::SegmentSource {
                model: model.name.clone(),
                activation: activation.name.clone(),
                filter: filter.to_owned(),
                source: Box::new(source),
            },
            None => Error::Source {
                model: model.name.clone(),
                source,
            },
        })?;
    // Dates of birth are checked against today (core reads no clock).
    let mut configured = activation.mapping.clone();
    configured
        .options
        .today
        .get_or_insert_with(|| chrono::Utc::now().date_naive());
    let mapping = configured
        .bind(source.columns())
        .map_err(|problems| Error::Mapping {
            activation: activation.name.clone(),
            model: model.name.clone(),
            problems,
            hint: delimiter_hint(model, source.columns()),
        })?;
    let filter = match &activation.segment {
        Some(Segment::Rows(f)) => {
            Some(f.bind(source.columns()).map_err(|problems| Error::Filter {
                activation: activation.name.clone(),
                model: model.name.clone(),
                problems,
                hint: delimiter_hint(model, source.columns()),
            })?)
        }
        _ => None,
    };
    Ok(Bound {
        source,
        mapping,
        filter,
    })
}

/// Converts one change to its view.
pub fn change_view(
    mapping: &BoundMapping,
    row: u64,
    c: &sync_core::plan::ContactChange,
) -> ChangeView {
    ChangeView {
        row,
        contact: c.contact.key.clone(),
        new_contact: c.new_contact,
        attributes: c
            .changes
            .iter()
            .map(|a| {
                let attr = &mapping.attributes()[a.attribute].attribute;
                AttributeView {
                    attribute: match attr {
                        sync_core::mapping::AttributeId::Standard(f) => f.name().to_owned(),
                        sync_core::mapping::AttributeId::Custom(n) => n.clone(),
                    },
                    custom: matches!(attr, sync_core::mapping::AttributeId::Custom(_)),
                    value: a.value.clone(),
                    previous: a.previous.clone(),
                }
            })
            .collect(),
    }
}

/// Runs the planner over the whole model, calling `on_row` for every row in order, and
/// `progress` with the number of rows read so far every few thousand rows.
///
/// When a row voids an earlier one (duplicate identifiers), [`RowPlan::voids_earlier`] is set
/// on the later row; consumers that keep changes must drop the earlier change of that key.
pub fn plan_rows<S: SnapshotStore<Error = state_store::Error>>(
    project: &Project,
    activation_name: &str,
    store: &S,
    known_duplicates: HashMap<u64, Option<u64>>,
    progress: &dyn Fn(u64),
    on_row: &mut dyn FnMut(&BoundMapping, &RowPlan, &mut Planner<'_>) -> Result<(), Error>,
) -> Result<(PlanCounts, u64, Duration), Error> {
    let activation = project.activation(activation_name)?;
    let bound = bind(project, activation)?;
    plan_bound(
        bound,
        &activation.name,
        &activation.model,
        store,
        known_duplicates,
        progress,
        on_row,
    )
}

/// [`plan_rows`] over a model already opened and bound ([`bind`]): `activation` names the
/// snapshot to diff against, `model` is the model's name for errors.
pub fn plan_bound<S: SnapshotStore<Error = state_store::Error>>(
    bound: Bound,
    activation: &str,
    model: &str,
    store: &S,
    known_duplicates: HashMap<u64, Option<u64>>,
    progress: &dyn Fn(u64),
    on_row: &mut dyn FnMut(&BoundMapping, &RowPlan, &mut Planner<'_>) -> Result<(), Error>,
) -> Result<(PlanCounts, u64, Duration), Error> {
    let started = Instant::now();
    let Bound {
        mut source,
        mapping,
        filter,
    } = bound;
    let source_error = |source| Error::Source {
        model: model.to_owned(),
        source,
    };
    std::thread::scope(|scope| {
        // The model is read and parsed on a thread of its own, in batches, while this thread
        // loads the snapshot index and plans: the source's own thread when it has one
        // (`ModelSource::reads_ahead`), else one started here. Either way one thread, not two,
        // is between reading and planning. Batches go back to be refilled.
        let mut batches = if source.reads_ahead() {
            Batches::Inline {
                source: &mut *source,
                hasher: sync_core::fingerprint::RowHasher::default(),
                batch: None,
                ended: false,
            }
        } else {
            let (tx, rx) = mpsc::sync_channel::<Result<Batch, sources::Error>>(READ_AHEAD);
            let (back_tx, back_rx) = mpsc::channel::<Batch>();
            std::thread::Builder::new()
                .name("model-reader".into())
                .spawn_scoped(scope, {
                    let mapping = &mapping;
                    move || read_batches(&mut *source, mapping, &tx, &back_rx)
                })
                .map_err(Error::Thread)?;
            Batches::Thread { rx, back_tx }
        };

        let mut index = SnapshotIndex::default();
        store
            .load_index(activation, &mut index)
            .map_err(Error::Store)?;
        let snapshot_contacts = index.len() as u64;
        let mut planner = Planner::new(&mapping, activation, index)
            .with_known_duplicates(known_duplicates)
            .with_segment(filter);
        let mut n = 0u64;
        let mut plans = Vec::with_capacity(BATCH_ROWS);
        while let Some(batch) = batches.next(&mapping) {
            let batch = batch.map_err(source_error)?;
            plans.clear();
            planner
                .plan_digested_batch(&batch.rows, &batch.digests, store, &mut plans)
                .map_err(|e| match e {
                    PlanError::Snapshot(s) => Error::Store(s),
                })?;
            for plan in &plans {
                on_row(&mapping, plan, &mut planner)?;
                n += 1;
                if n.is_multiple_of(8192) {
                    progress(n);
                }
            }
            batches.recycle(batch);
        }
        progress(n);
        Ok((planner.into_counts(), snapshot_contacts, started.elapsed()))
    })
}

/// Where the planner's batches come from: the model-reader thread, or, for a source that
/// reads ahead on its own thread, the source itself, read here.
enum Batches<'s> {
    Thread {
        rx: mpsc::Receiver<Result<Batch, sources::Error>>,
        back_tx: mpsc::Sender<Batch>,
    },
    Inline {
        source: &'s mut (dyn ModelSource<Error = sources::Error> + Send),
        hasher: sync_core::fingerprint::RowHasher,
        /// The batch to refill (`None` while the planner holds it).
        batch: Option<Batch>,
        /// The source has reported its end or an error: nothing is read after it.
        ended: bool,
    },
}

impl Batches<'_> {
    /// The next batch; `None` at the end (after an error too).
    fn next(&mut self, mapping: &BoundMapping) -> Option<Result<Batch, sources::Error>> {
        match self {
            Batches::Thread { rx, .. } => rx.recv().ok(),
            Batches::Inline {
                source,
                hasher,
                batch,
                ended,
            } => {
                if *ended {
                    return None;
                }
                let mut next = batch.take().unwrap_or_default();
                match fill_batch(&mut **source, mapping, hasher, &mut next) {
                    Ok(end) => {
                        *ended = end;
                        (!next.rows.is_empty()).then_some(Ok(next))
                    }
                    Err(e) => {
                        *ended = true;
                        Some(Err(e))
                    }
                }
            }
        }
    }

    /// Hands a planned batch back to be refilled.
    fn recycle(&mut self, planned: Batch) {
        match self {
            // The reader may have finished; then the batch is simply dropped.
            Batches::Thread { back_tx, .. } => {
                let _ = back_tx.send(planned);
            }
            Batches::Inline { batch, .. } => *batch = Some(planned),
        }
    }
}

/// Rows per batch handed from the reader thread to the planner.
const BATCH_ROWS: usize = 1024;
/// Batches the reader may be ahead of the planner.
const READ_AHEAD: usize = 16;

/// Rows read by the reader thread, with the digest of each row's mapped cells, computed there
/// while the cells are in that core's cache. (Identifying the rows there too measured slower:
/// parsing keeps that thread busy; see docs/PERFORMANCE.md.)
#[derive(Debug, Default)]
struct Batch {
    rows: Vec<SourceRow>,
    digests: Vec<u64>,
}

/// Reads the whole model into batches; stops at the end, on an error (sent on), or
/// when the planner hangs up.
fn read_batches(
    source: &mut (dyn ModelSource<Error = sources::Error> + Send),
    mapping: &BoundMapping,
    tx: &mpsc::SyncSender<Result<Batch, sources::Error>>,
    recycled: &mpsc::Receiver<Batch>,
) {
    let mut hasher = sync_core::fingerprint::RowHasher::default();
    loop {
        let mut batch = recycled.try_recv().unwrap_or_default();
        let end = match fill_batch(source, mapping, &mut hasher, &mut batch) {
            Ok(end) => end,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        if !batch.rows.is_empty() && tx.send(Ok(batch)).is_err() {
            return;
        }
        if end {
            return;
        }
    }
}

/// Reads up to [`BATCH_ROWS`] rows into `batch` (reusing its rows), with their digests;
/// `Ok(true)` when the model ended.
fn fill_batch(
    source: &mut (dyn ModelSource<Error = sources::Error> + Send),
    mapping: &BoundMapping,
    hasher: &mut sync_core::fingerprint::RowHasher,
    batch: &mut Batch,
) -> Result<bool, sources::Error> {
    batch.digests.clear();
    let mut n = 0;
    let mut end = false;
    while n < BATCH_ROWS {
        if batch.rows.len() <= n {
            batch.rows.push(SourceRow::default());
        }
        if source.next_row(&mut batch.rows[n])? {
            batch
                .digests
                .push(hasher.cells_digest(mapping, &batch.rows[n]));
            n += 1;
        } else {
            end = true;
            break;
        }
    }
    batch.rows.truncate(n);
    Ok(end)
}

#[derive(Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum OutputLine<'a> {
    Changed(&'a ChangeView),
    Rejected(&'a RejectionView),
}

/// Plans an activation without sending anything: counts, samples, and optionally the full
/// list of changes and rejections as JSON Lines.
///
/// Like a run, it never reports a change that a later duplicate voids: when the first pass
/// finds duplicated identifiers, the model is planned again with them known (the common case,
/// no duplicates, reads the model once).
pub fn plan<S: SnapshotStore<Error = state_store::Error>>(
    project: &Project,
    activation_name: &str,
    store: &S,
    opts: &PlanOptions,
    progress: &dyn Fn(u64),
) -> Result<PlanReport, Error> {
    let activation = project.activation(activation_name)?;
    let last_wins = activation.mapping.duplicates == sync_core::mapping::DuplicatePolicy::Last;
    let out_err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Output(crate::output::OutputError::Io { path, source })
    };
    let started = Instant::now();
    let mut known: HashMap<u64, Option<u64>> = HashMap::new();
    loop {
        let second_pass = !known.is_empty();
        let mut found: HashMap<u64, Option<u64>> = HashMap::new();
        let mut sample_changes: Vec<ChangeView> = Vec::new();
        let mut sample_rejections: Vec<RejectionView> = Vec::new();
        let mut output = match &opts.output {
            Some(p) => Some(crate::output::OutputFile::create(project, p)?),
            None => None,
        };
        let (counts, snapshot_contacts, _) = plan_rows(
            project,
            activation_name,
            store,
            std::mem::take(&mut known),
            progress,
            &mut |mapping, p, _| {
                if let Some(h) = p.voids_earlier {
                    found.insert(h, last_wins.then_some(p.row));
                }
                if !second_pass && !found.is_empty() {
                    return Ok(()); // this pass is only finding duplicates now
                }
                let line = match &p.outcome {
                    RowOutcome::Changed(c) => {
                        let view = change_view(mapping, p.row, c);
                        let line = serde_json::to_string(&OutputLine::Changed(&view));
                        if sample_changes.len() < opts.sample_size {
                            sample_changes.push(view);
                        }
                        Some(line)
                    }
                    RowOutcome::Rejected(r) => {
                        let view = RejectionView {
                            row: p.row,
                            message: r.to_string(),
                            rejection: r.clone(),
                        };
                        let line = serde_json::to_string(&OutputLine::Rejected(&view));
                        if sample_rejections.len() < opts.sample_size {
                            sample_rejections.push(view);
                        }
                        Some(line)
                    }
                    RowOutcome::Unchanged { .. } | RowOutcome::OutsideSegment => None,
                };
                if let (Some(w), Some(line), Some(path)) = (output.as_mut(), line, &opts.output) {
                    line.map_err(|e| std::io::Error::other(e.to_string()))
                        .and_then(|l| writeln!(w, "{l}"))
                        .map_err(out_err(path))?;
                }
                Ok(())
            },
        )?;
        if !second_pass && !found.is_empty() {
            known = found;
            continue;
        }
        if let Some(w) = output {
            w.finish()?;
        }
        let delivery = DeliveryView::of(&activation.delivery, counts.changed);
        return Ok(PlanReport {
            activation: activation.name.clone(),
            model: activation.model.clone(),
            counts,
            snapshot_contacts,
            sample_changes,
            sample_rejections,
            segment: activation.segment.as_ref().map(SegmentView::of),
            delivery,
            duration_ms: started.elapsed().as_millis() as u64,
            alerts: Vec::new(),
        });
    }
}

#[cfg(test)]
mod tests;
