//! Issue 9 end to end: bulk jobs against the simulator, through the real binary. Contacts
//! are checked before they go in a job (a bulk job creates unknown contacts), only records a
//! result line acknowledges move the snapshot, and pending jobs are settled by later runs.

use attentive_sim::{ContactOrigin, Faults, SimConfig, SimHandle};
use serde_json::Value;

use crate::support::{seed, sent_after, sim_config, start_sim, Project};

fn base_url(sim: &SimHandle) -> String {
    format!("http://{}", sim.local_addr().expect("simulator address"))
}

const BULK: &str = "POST /v2/bulk/user/attributes";

/// A project whose activation delivers as `delivery` (`bulk_threshold = 5`).
fn project(sim: &SimHandle, delivery: &str, custom: &str, csv: &str) -> Project {
    let p = Project::new();
    let text = sim_config(&base_url(sim), "first_name = \"first_name\"", custom).replacen(
        "default_phone_region = \"US\"\n",
        &format!(
            "default_phone_region = \"US\"\ndelivery = \"{delivery}\"\nbulk_threshold = 5\nbulk_batch_size = 10\n"
        ),
        1,
    );
    p.write("attentive-sync.toml", &text);
    p.write("data/m.csv", csv);
    p
}

fn model(n: usize, tier: &str) -> String {
    let mut csv = String::from("email,first_name,tier\n");
    for i in 0..n {
        csv.push_str(&format!("c{i}@x.com,N{i},{tier}\n"));
    }
    csv
}

fn emails(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("c{i}@x.com")).collect()
}

fn sim_with(n: usize) -> attentive_sim::RunningSim {
    let e = emails(n);
    start_sim(SimConfig {
        contacts: seed(&e.iter().map(String::as_str).collect::<Vec<_>>()),
        ..SimConfig::default()
    })
}

fn count(report: &Value, outcome: &str) -> u64 {
    report["counts"][outcome]
        .as_u64()
        .unwrap_or_else(|| panic!("no counts.{outcome} in {report}"))
}

fn tier(sim: &SimHandle, email: &str) -> Option<String> {
    sim.find_contact(email)?
        .custom_value("Tier")
        .and_then(|v| v.as_str().map(str::to_owned))
}

fn run(p: &Project, extra: &[&str]) -> (i32, Value) {
    let (r, report) = p.sync_with(attentive_sim::DEFAULT_KEY, extra);
    (r.code, report)
}

/// A bulk run leaves the simulator equal to the model, in ⌈n/10⌉ jobs, creates nobody (an
/// unknown contact is checked and left out), and a second run sends nothing.
#[test]
fn a_bulk_run_matches_the_model_and_a_rerun_sends_nothing() {
    let sim = sim_with(25);
    let mut csv = model(25, "gold");
    csv.push_str("ghost@x.com,Gus,gold\n");
    let p = project(&sim, "bulk", "\"Tier\" = \"tier\"", &csv);
    let (code, report) = run(&p, &[]);
    assert_eq!(code, 3, "ghost is not found: {report}");
    assert_eq!(report["delivery_mode"], "bulk", "{report}");
    assert_eq!(count(&report, "updated"), 25, "{report}");
    assert_eq!(count(&report, "not_found"), 1, "{report}");
    assert_eq!(count(&report, "pending"), 0, "{report}");
    assert_eq!(report["bulk_jobs"], 3, "{report}");
    for e in emails(25) {
        assert_eq!(tier(&sim, &e).as_deref(), Some("gold"), "{e}");
    }
    assert!(
        sim.find_contact("ghost@x.com").is_none(),
        "a bulk job created a contact"
    );
    assert!(sim
        .contacts()
        .iter()
        .all(|c| c.origin != ContactOrigin::Bulk));
    assert_eq!(
        sim.counters()
            .by_endpoint
            .get(BULK)
            .map_or(0, |m| m.values().sum::<u64>()),
        3
    );
    let shown = p.runs_show(&report["run_id"], None);
    assert_eq!(shown["bulk_jobs"].as_array().unwrap().len(), 3, "{shown}");
    assert_eq!(shown["bulk_jobs"][0]["state"], "settled", "{shown}");

    let seq = crate::support::last_seq(&sim);
    let (code, again) = run(&p, &[]);
    assert_eq!(code, 3, "{again}");
    assert_eq!(count(&again, "updated"), 0, "{again}");
    assert!(
        sent_after(&sim, seq).is_empty(),
        "{:?}",
        sent_after(&sim, seq)
    );
}

/// A record answered 400 in the result file is rejected with Attentive's message and not
/// sent again; one answered 500 is failed and sent by the next run; a job FAILED as a whole
/// sends all its records again.
#[test]
fn per_record_failures_and_failed_jobs() {
    let sim = sim_with(12);
    let mut faults = Faults::none();
    faults.bulk_record_errors.insert("c1@x.com".into(), 400);
    faults.bulk_record_errors.insert("c2@x.com".into(), 500);
    sim.set_faults(faults).unwrap();
    let p = project(&sim, "bulk", "\"Tier\" = \"tier\"", &model(12, "gold"));
    let (code, report) = run(&p, &[]);
    assert_eq!(code, 3, "{report}");
    assert_eq!(count(&report, "updated"), 10, "{report}");
    assert_eq!(count(&report, "rejected"), 1, "{report}");
    assert_eq!(count(&report, "failed"), 1, "{report}");
    let rejected = p.runs_show(&report["run_id"], Some("rejected"));
    let message = rejected["rows"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("Invalid value"), "{rejected}");
    assert_eq!(tier(&sim, "c1@x.com"), None);

    // Next run: only c2 is sent again (c1 waits for its values to change); its job fails.
    let mut faults = Faults::none();
    faults.bulk_fail_next_jobs = 1;
    sim.set_faults(faults).unwrap();
    let seq = crate::support::last_seq(&sim);
    let (_, second) = run(&p, &[]);
    assert_eq!(count(&second, "failed"), 1, "{second}");
    let bulk: Vec<_> = sent_after(&sim, seq)
        .into_iter()
        .filter(|r| r.endpoint == BULK)
        .collect();
    assert_eq!(bulk.len(), 1, "{bulk:?}");
    let body: Value = bulk[0].body.clone();
    assert_eq!(body["users"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["users"][0]["identifiers"]["email"], "c2@x.com");

    // And the run after that sends it again, now applied.
    let (_, third) = run(&p, &[]);
    assert_eq!(count(&third, "updated"), 1, "{third}");
    assert_eq!(tier(&sim, "c2@x.com").as_deref(), Some("gold"));
    assert_eq!(
        tier(&sim, "c1@x.com"),
        None,
        "a rejected record is not sent again"
    );
}

/// `--no-wait`: the run ends `pending` (exit 5); a later run settles its jobs first, sends
/// nothing more for the same values, and the first run's record becomes `succeeded`.
#[test]
fn no_wait_then_a_later_run_settles() {
    let sim = start_sim(SimConfig {
        contacts: seed(&emails(15).iter().map(String::as_str).collect::<Vec<_>>()),
        bulk_processing_delay_ms: 1500,
        ..SimConfig::default()
    });
    let p = project(&sim, "bulk", "\"Tier\" = \"tier\"", &model(15, "gold"));
    let (code, first) = run(&p, &["--no-wait"]);
    assert_eq!(code, 5, "{first}");
    assert_eq!(first["status"], "pending", "{first}");
    assert_eq!(count(&first, "pending"), 15, "{first}");
    let listed = p.runs_show(&first["run_id"], Some("pending"));
    assert_eq!(listed["rows"].as_array().unwrap().len(), 15, "{listed}");
    // Still processing: nothing is submitted again.
    let (code, second) = run(&p, &["--no-wait"]);
    assert_eq!(code, 0, "{second}");
    assert_eq!(second["bulk_jobs"], 0, "{second}");
    std::thread::sleep(std::time::Duration::from_millis(1600));
    let seq = crate::support::last_seq(&sim);
    let (code, third) = run(&p, &[]);
    assert_eq!(code, 0, "{third}");
    assert_eq!(third["jobs_settled"], 2, "{third}");
    assert!(
        sent_after(&sim, seq).iter().all(|r| r.endpoint != BULK),
        "settled values are not sent again"
    );
    let shown = p.runs_show(&first["run_id"], None);
    assert_eq!(shown["status"], "succeeded", "{shown}");
    assert_eq!(tier(&sim, "c3@x.com").as_deref(), Some("gold"));
}

/// `auto`: 3 changed contacts go in realtime, more than `bulk_threshold` in bulk; a new
/// mapping backfills only its attribute, in bulk records.
#[test]
fn auto_picks_realtime_for_few_changes_and_bulk_backfills_a_new_mapping() {
    let sim = sim_with(20);
    let p = project(&sim, "auto", "", &model(3, "gold"));
    let (_, small) = run(&p, &[]);
    assert_eq!(small["delivery_mode"], "realtime", "{small}");
    let (_, plan) = p.plan_json("a");
    assert_eq!(plan["delivery"]["mode"], "realtime", "{plan}");

    p.write("data/m.csv", &model(20, "gold"));
    let (_, plan) = p.plan_json("a");
    assert_eq!(plan["delivery"]["mode"], "bulk", "{plan}");
    assert_eq!(
        plan["delivery"]["write_requests"], 2,
        "17 new contacts in jobs of 10: {plan}"
    );
    let (_, big) = run(&p, &[]);
    assert_eq!(big["delivery_mode"], "bulk", "{big}");
    assert_eq!(count(&big, "updated"), 17, "{big}");

    // A new mapping: every contact changes, but only the new attribute is sent.
    let text = p.read("attentive-sync.toml").replacen(
        "[activations.a.custom]\n",
        "[activations.a.custom]\n\"Tier\" = \"tier\"\n",
        1,
    );
    p.write("attentive-sync.toml", &text);
    let seq = crate::support::last_seq(&sim);
    let (_, backfill) = run(&p, &[]);
    assert_eq!(backfill["delivery_mode"], "bulk", "{backfill}");
    assert_eq!(count(&backfill, "updated"), 20, "{backfill}");
    for r in sent_after(&sim, seq).iter().filter(|r| r.endpoint == BULK) {
        let body: Value = r.body.clone();
        for u in body["users"].as_array().unwrap() {
            assert_eq!(
                u["attributes"],
                serde_json::json!({"custom": {"Tier": "gold"}}),
                "only the new attribute: {u}"
            );
        }
    }
    assert_eq!(tier(&sim, "c19@x.com").as_deref(), Some("gold"));
}
