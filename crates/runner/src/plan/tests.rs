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
        Some(sync_core::Canonical::Text("Springfield".into()))
    );
    assert_eq!(
        views[0].attributes[0].previous,
        Some(sync_core::Canonical::Text(old_city))
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
