//! The plan pipeline over the bundled sample, with the real state store.

use super::*;
use state_store::StateStore;
use sync_core::plan::{ContactChange, Refresh};

fn sample(dir: &Path) -> Project {
    let cfg = crate::sample::write_sample_project(dir, 1000, None, true).unwrap();
    Project::parse(&cfg, &std::fs::read_to_string(&cfg).unwrap(), &|_| None).unwrap()
}

/// Plans, then acknowledges every change into the store as a run would.
fn plan_and_ack(
    project: &Project,
    store: &mut StateStore,
    run_id: i64,
) -> (PlanCounts, Vec<ChangeView>) {
    let mut changes: Vec<ContactChange> = Vec::new();
    let mut refreshes: Vec<Refresh> = Vec::new();
    let mut views = Vec::new();
    let mut mapping = None;
    let (counts, _, _) = plan_rows(
        project,
        "vip",
        &*store,
        Default::default(),
        &|_| {},
        &mut |m, p, _| {
            if let Some(h) = p.voids_earlier {
                changes.retain(|c| c.key_hash != h);
            }
            match &p.outcome {
                RowOutcome::Changed(c) => {
                    views.push(change_view(m, p.row, c));
                    changes.push(c.clone());
                }
                RowOutcome::Unchanged {
                    refresh: Some(r), ..
                } => refreshes.push(r.clone()),
                _ => {}
            }
            mapping.get_or_insert_with(|| m.clone());
            Ok(())
        },
    )
    .unwrap();
    if let Some(m) = mapping {
        store.apply_changes("vip", run_id, &m, &changes).unwrap();
        store.apply_refreshes("vip", run_id, &refreshes).unwrap();
    }
    (counts, views)
}

#[test]
fn planning_the_sample_twice_with_the_snapshot_updated_between_gives_no_changes() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path());
    let mut store = StateStore::open(&project.state_path).unwrap();
    let (first, _) = plan_and_ack(&project, &mut store, 1);
    assert_eq!(first.rows, 1000);
    assert_eq!(first.changed, 1000 - first.rejected);
    assert!(first.rejected > 0);
    let (second, views) = plan_and_ack(&project, &mut store, 2);
    assert_eq!(second.changed, 0, "{views:#?}");
    assert_eq!(second.unchanged, first.changed);
    assert_eq!(second.rejected, first.rejected);
}

#[test]
fn changing_one_cell_changes_exactly_one_attribute_of_one_contact() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path());
    let mut store = StateStore::open(&project.state_path).unwrap();
    plan_and_ack(&project, &mut store, 1);
    // Line 3 of the model: change its city.
    let model = dir.path().join("data/customers.csv");
    let text = std::fs::read_to_string(&model).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let cols: Vec<&str> = lines[2].split(',').collect();
    let old_city = cols[4].to_owned();
    lines[2] = lines[2].replacen(&format!(",{old_city},"), ",Springfield,", 1);
    std::fs::write(&model, lines.join("\n") + "\n").unwrap();
    let (counts, views) = plan_and_ack(&project, &mut store, 2);
    assert_eq!(counts.changed, 1);
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].row, 3);
    assert_eq!(views[0].attributes.len(), 1);
    assert_eq!(views[0].attributes[0].attribute, "city");
    assert_eq!(
        views[0].attributes[0].value,
        Some(sync_core::value::Canonical::Text("Springfield".into()))
    );
    assert_eq!(
        views[0].attributes[0].previous,
        Some(sync_core::value::Canonical::Text(old_city))
    );
}

#[test]
fn adding_a_custom_mapping_plans_exactly_that_attribute_for_every_valid_row() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path());
    let mut store = StateStore::open(&project.state_path).unwrap();
    let (first, _) = plan_and_ack(&project, &mut store, 1);
    let cfg = dir.path().join("attentive-sync.toml");
    let text = std::fs::read_to_string(&cfg).unwrap() + "\"Last Name Copy\" = \"last_name\"\n";
    std::fs::write(&cfg, &text).unwrap();
    let project = Project::parse(&cfg, &text, &|_| None).unwrap();
    let (counts, views) = plan_and_ack(&project, &mut store, 2);
    assert_eq!(
        counts.changed, first.changed,
        "every valid row gets the new attribute"
    );
    assert!(views
        .iter()
        .all(|v| v.attributes.len() == 1 && v.attributes[0].attribute == "Last Name Copy"));
    let (again, _) = plan_and_ack(&project, &mut store, 3);
    assert_eq!(again.changed, 0);
}

#[test]
fn plan_report_samples_and_output_file_agree_with_counts() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path());
    let store = StateStore::open(&project.state_path).unwrap();
    let out = dir.path().join("plan.jsonl");
    let opts = PlanOptions {
        sample_size: 3,
        output: Some(out.clone()),
    };
    let report = plan(&project, "vip", &store, &opts, &|_| {}).unwrap();
    assert_eq!(report.sample_changes.len(), 3);
    assert_eq!(report.sample_rejections.len(), 3);
    let text = std::fs::read_to_string(out).unwrap();
    assert_eq!(
        text.lines().count() as u64,
        report.counts.changed + report.counts.rejected
    );
}

/// The sample project with `filter` set on its activation.
fn with_filter(dir: &Path, filter: &str) -> Project {
    let cfg = dir.join("attentive-sync.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let start = text.find("\nfilter = ").map_or(text.len(), |i| i);
    let text = if start < text.len() {
        let end = text[start + 1..]
            .find('\n')
            .map_or(text.len(), |e| start + 1 + e);
        format!("{}{}", &text[..start], &text[end..])
    } else {
        text
    };
    let text = text.replacen(
        "[activations.vip]\n",
        &format!("[activations.vip]\nfilter = {}\n", toml_string(filter)),
        1,
    );
    std::fs::write(&cfg, &text).unwrap();
    Project::parse(&cfg, &text, &|_| None).unwrap()
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Emails (lower-cased, trimmed) of the sample rows whose tier is `tier`.
fn emails_with_tier(dir: &Path, tier: &str) -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(dir.join("data/customers.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (email, t) = (at("email"), at("loyalty_tier"));
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|c| c[t].trim() == tier)
        .map(|c| c[email].trim().to_lowercase())
        .collect()
}

#[test]
fn a_segment_plans_only_its_rows_and_contacts_leaving_it_keep_their_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    sample(dir.path());
    let gold = emails_with_tier(dir.path(), "gold");
    assert!(gold.len() > 50, "the sample has gold rows");
    let project = with_filter(dir.path(), "loyalty_tier = 'gold'");
    let mut store = StateStore::open(&project.state_path).unwrap();

    let (first, views) = plan_and_ack(&project, &mut store, 1);
    assert_eq!(first.rows + first.outside_segment, 1000);
    assert_eq!(
        first.rows as usize,
        gold.len(),
        "every gold row, and only them"
    );
    assert!(
        views.iter().all(|v| gold.contains(&v.contact)),
        "only gold contacts change"
    );
    let gold_in_snapshot = store.contact_count("vip").unwrap();
    assert_eq!(gold_in_snapshot, first.changed);

    // The gold contacts leave the segment: nothing is planned for them, and their
    // snapshot stays.
    let project = with_filter(dir.path(), "loyalty_tier != 'gold'");
    let (other, views) = plan_and_ack(&project, &mut store, 2);
    assert_eq!(other.rows as usize, 1000 - gold.len());
    assert!(views.iter().all(|v| !gold.contains(&v.contact)));
    assert_eq!(
        store.contact_count("vip").unwrap(),
        gold_in_snapshot + other.changed,
        "the contacts that left are still in the snapshot"
    );

    // They come back with the same values: nothing to send.
    let project = with_filter(dir.path(), "loyalty_tier = 'gold'");
    let (back, _) = plan_and_ack(&project, &mut store, 3);
    assert_eq!(back.changed, 0);
    assert_eq!(back.unchanged, first.changed);

    // Without the filter, the whole model is one segment: nothing left to send.
    let cfg = dir.path().join("attentive-sync.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("filter = \"loyalty_tier = 'gold'\"\n", "");
    std::fs::write(&cfg, &text).unwrap();
    let project = Project::parse(&cfg, &text, &|_| None).unwrap();
    let (all, _) = plan_and_ack(&project, &mut store, 4);
    assert_eq!((all.rows, all.outside_segment, all.changed), (1000, 0, 0));
}

#[test]
fn a_cell_the_filter_cannot_compare_rejects_its_row_and_the_report_names_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    sample(dir.path());
    // `first_name` is text: comparing it with a number rejects every non-empty row.
    let project = with_filter(dir.path(), "first_name > 5 or loyalty_tier = 'gold'");
    let store = StateStore::open(&project.state_path).unwrap();
    let report = plan(&project, "vip", &store, &PlanOptions::default(), &|_| {}).unwrap();
    let seg = report.segment.as_ref().expect("segment in the report");
    assert_eq!(seg.filter, "first_name > 5 or loyalty_tier = 'gold'");
    assert_eq!(seg.filtered_by, "rows");
    let by_code = &report.counts.rejected_by_code;
    assert!(
        by_code[&sync_core::plan::RejectCode::InvalidValue] > 900,
        "{by_code:?}"
    );
    let r = &report.sample_rejections[0];
    let p = &r.rejection.problems[0];
    assert_eq!(p.column.as_deref(), Some("first_name"));
    assert!(
        p.rule.contains("the segment filter `first_name > 5 or loyalty_tier = 'gold'` compares this column with a number"),
        "{}",
        r.message
    );
}

#[test]
fn a_filter_naming_an_unknown_column_fails_before_any_row_is_planned() {
    let dir = tempfile::tempdir().unwrap();
    sample(dir.path());
    let project = with_filter(dir.path(), "tier = 'gold'");
    let store = StateStore::open(&project.state_path).unwrap();
    let err = plan(&project, "vip", &store, &PlanOptions::default(), &|_| {}).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("the filter of activation \"vip\" does not fit model \"customers\"")
            && text.contains("column `tier`, which is not in the model")
            && text.contains("loyalty_tier"),
        "{text}"
    );
}

// ---- regression tests: issue 12 (vague messages) ----

#[test]
fn a_wrong_delimiter_gave_no_hint() {
    // A `;` file read with the default `,` is one column named `email;first_name;...`: the
    // mapping error listed that one column and left the reader to guess.
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path());
    let model = dir.path().join("data/customers.csv");
    let text = std::fs::read_to_string(&model).unwrap();
    std::fs::write(&model, text.replace(',', ";")).unwrap();
    let store = StateStore::open(&project.state_path).unwrap();
    let err = plan(&project, "vip", &store, &PlanOptions::default(), &|_| {}).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("hint: the model reads the file with delimiter \",\", and 1 of its 1 columns hold \";\"")
            && text.contains("set `delimiter = \";\"` in [models.customers]"),
        "{text}"
    );

    // A delimiter that is not one character says what it is and what would do.
    let cfg = dir.path().join("attentive-sync.toml");
    let toml = std::fs::read_to_string(&cfg).unwrap().replacen(
        "[models.customers]\n",
        "[models.customers]\ndelimiter = \"tab\"\n",
        1,
    );
    let err = Project::parse(&cfg, &toml, &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("models.customers.delimiter")
            && err.contains("\"tab\" is 3 characters; it must be exactly one ASCII character, like \",\", \";\", \"|\" or \"\\t\" (a tab)"),
        "{err}"
    );
}

#[test]
fn a_missing_column_echoed_the_whole_header_for_each_missing_column() {
    // A 50 MB header printed 629 MB. Now each list names the first columns and counts the rest.
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path());
    let model = dir.path().join("data/customers.csv");
    let names: Vec<String> = (0..10_000)
        .map(|i| format!("column_{i}_{}", "x".repeat(90)))
        .collect();
    std::fs::write(&model, format!("{}\n", names.join(","))).unwrap();
    let store = StateStore::open(&project.state_path).unwrap();
    let err = plan(&project, "vip", &store, &PlanOptions::default(), &|_| {}).unwrap_err();
    let text = err.to_string();
    assert_eq!(text.matches("… and 9980 more").count(), 1, "{text}");
    assert!(text.contains("is not in the model either"), "{text}");
    assert!(text.len() < 5_000, "{} bytes", text.len());
}

/// The sample's source, saying it reads ahead or not as told, and failing after `fail_after`
/// rows when set.
struct Told {
    inner: model::DynSource,
    reads_ahead: bool,
    fail_after: Option<u64>,
    read: u64,
}

impl ModelSource for Told {
    type Error = sources::Error;
    fn columns(&self) -> &[String] {
        self.inner.columns()
    }
    fn next_row(&mut self, row: &mut sync_core::value::SourceRow) -> Result<bool, Self::Error> {
        if self.fail_after == Some(self.read) {
            return Err(sources::Error::Read {
                model: sources::Model::Database("postgres://db/m".to_owned()),
                line: Some(self.read + 1),
                source: std::io::Error::other("connection lost"),
            });
        }
        self.read += 1;
        self.inner.next_row(row)
    }
    fn reads_ahead(&self) -> bool {
        self.reads_ahead
    }
}

/// Plans the sample's `vip` activation with its source wrapped in [`Told`]: the outcome of
/// every row planned, in order, and the result.
fn plan_told(
    project: &Project,
    reads_ahead: bool,
    fail_after: Option<u64>,
) -> (Vec<String>, Result<PlanCounts, String>) {
    let store = StateStore::open(&project.state_path).unwrap();
    let activation = project.activation("vip").unwrap();
    let mut bound = bind(project, activation).unwrap();
    bound.source = Box::new(Told {
        inner: bound.source,
        reads_ahead,
        fail_after,
        read: 0,
    });
    let mut rows = Vec::new();
    let result = plan_bound(
        bound,
        "vip",
        &activation.model,
        &store,
        Default::default(),
        &|_| {},
        &mut |_, p, _| {
            rows.push(format!("{} {:?}", p.row, p.outcome));
            Ok(())
        },
    );
    (
        rows,
        result.map(|(counts, _, _)| counts).map_err(|e| {
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text.push_str(&format!(": {c}"));
                cause = c.source();
            }
            text
        }),
    )
}

#[test]
fn a_source_that_reads_ahead_is_planned_without_a_second_thread_and_plans_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::sample::write_sample_project(dir.path(), 3000, None, true).unwrap();
    let project = Project::parse(&cfg, &std::fs::read_to_string(&cfg).unwrap(), &|_| None).unwrap();
    let (threaded, counts) = plan_told(&project, false, None);
    let (inline, inline_counts) = plan_told(&project, true, None);
    assert_eq!(threaded.len(), 3000);
    assert_eq!(inline, threaded);
    assert_eq!(inline_counts, counts);

    // A failure part way stops both the same way: the batch it ends is not planned, and the
    // error names the model.
    let (threaded, failed) = plan_told(&project, false, Some(1024 + 10));
    let (inline, inline_failed) = plan_told(&project, true, Some(1024 + 10));
    assert_eq!(threaded.len(), 1024);
    assert_eq!(inline, threaded);
    assert_eq!(inline_failed, failed);
    let message = failed.unwrap_err();
    assert!(
        message.contains("the model database postgres://db/m at record 1035 failed"),
        "{message}"
    );
}
