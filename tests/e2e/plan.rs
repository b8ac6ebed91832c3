//! `init`, `validate`, `plan`, `contacts show` and `demo` on the bundled sample.

use crate::support::Project;

#[test]
fn init_then_validate_then_plan_the_sample() {
    let p = Project::init(1000);
    let v = p.run_env(&["validate"], &[("ATTENTIVE_API_KEY", "k")]);
    assert_eq!(v.code, 0, "{}", v.all());
    assert!(v.stdout.contains("ok: activation vip"), "{}", v.stdout);

    let r = p.run(&["plan", "vip"]);
    // The sample has a few deliberately invalid rows: exit code 3 says so.
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.stdout
            .contains("Plan for activation vip (model customers): 1000 rows read"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("First rejected rows"), "{}", r.stdout);

    let (_, plan) = p.plan_json("vip");
    let c = &plan["counts"];
    assert_eq!(c["rows"], 1000);
    assert_eq!(
        c["changed"].as_u64().unwrap()
            + c["unchanged"].as_u64().unwrap()
            + c["rejected"].as_u64().unwrap(),
        1000
    );
    assert_eq!(c["rejected"], 16, "{c}");
    assert_eq!(c["rejected_by_code"]["invalid_identifier"], 4);
    assert_eq!(c["rejected_by_code"]["invalid_value"], 12);
    // A plan sends nothing and records no snapshot: planning again gives the same counts.
    let (_, again) = p.plan_json("vip");
    assert_eq!(again["counts"], plan["counts"]);
}

#[test]
fn plan_output_file_lists_every_change_and_rejection() {
    let p = Project::init(300);
    let r = p.run(&["plan", "vip", "--output", "plan.jsonl", "--format", "json"]);
    assert_eq!(r.code, 3, "{}", r.all());
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let lines: Vec<serde_json::Value> = p
        .read("plan.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let changed = lines.iter().filter(|l| l["outcome"] == "changed").count() as u64;
    let rejected = lines.iter().filter(|l| l["outcome"] == "rejected").count() as u64;
    assert_eq!(changed, plan["counts"]["changed"].as_u64().unwrap());
    assert_eq!(rejected, plan["counts"]["rejected"].as_u64().unwrap());
    let first = lines.iter().find(|l| l["outcome"] == "changed").unwrap();
    assert!(first["contact"].as_str().unwrap().ends_with("@example.com"));
    assert!(
        first["attributes"].as_array().unwrap().len() >= 8,
        "{first}"
    );
}

#[test]
fn contacts_show_reports_an_unknown_contact_and_rejects_bad_input() {
    let p = Project::init(10);
    let r = p.run(&["contacts", "show", " Ann@Example.com "]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("ann@example.com: not in the snapshot"),
        "{}",
        r.stdout
    );
    let r = p.run(&["contacts", "show", "212 555 0100"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("+country code"), "{}", r.stderr);
}

#[test]
fn demo_runs_with_nothing_set_up() {
    let p = Project::new();
    let r = p.run(&["demo", "--dir", "demo"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("Plan for activation vip"), "{}", r.stdout);
}

#[test]
fn usage_errors_exit_2() {
    let p = Project::new();
    assert_eq!(p.run(&["plan"]).code, 2);
    assert_eq!(p.run(&["no-such-command"]).code, 2);
}
