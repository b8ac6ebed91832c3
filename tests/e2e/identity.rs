//! Issue 10 end to end: existence checks in GraphQL batches, a state file bound to one
//! Attentive account, no contacts bridged through a secondary identifier; never a contact
//! created.

use attentive_sim::{CompanyInfo, SeedContact, SimConfig, SimHandle};
use serde_json::Value;

use crate::support::{seed, sim_config, start_sim, writes_after, Project};

fn base_url(sim: &SimHandle) -> String {
    format!("http://{}", sim.local_addr().expect("simulator address"))
}

fn project(sim: &SimHandle, standard: &str, csv: &str) -> Project {
    let p = Project::new();
    p.write(
        "attentive-sync.toml",
        &sim_config(&base_url(sim), standard, "\"Tier\" = \"tier\""),
    );
    p.write("data/m.csv", csv);
    p
}

fn count(report: &Value, outcome: &str) -> u64 {
    report["counts"][outcome]
        .as_u64()
        .unwrap_or_else(|| panic!("no counts.{outcome} in {report}"))
}

fn endpoint_count(sim: &SimHandle, endpoint: &str) -> u64 {
    sim.counters()
        .by_endpoint
        .get(endpoint)
        .map_or(0, |m| m.values().sum())
}

/// A profile without subscriptions answers 404 on `GET /v1/subscriptions`; under the default
/// GraphQL check it is found and updated; 40 contacts take 2 lookups, not 40.
#[test]
fn a_contact_without_subscriptions_is_updated_and_lookups_are_batched() {
    let mut contacts = seed(
        &(0..39)
            .map(|i| format!("c{i}@x.com"))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    contacts.push(SeedContact::unsubscribed_email("quiet@x.com"));
    let sim = start_sim(SimConfig {
        contacts,
        ..SimConfig::default()
    });
    let mut csv = String::from("email,first_name,tier\n");
    for i in 0..39 {
        csv.push_str(&format!("c{i}@x.com,N{i},gold\n"));
    }
    csv.push_str("quiet@x.com,Quinn,silver\nghost@x.com,Gus,gold\n");
    let p = project(&sim, "first_name = \"first_name\"", &csv);
    let (code, report) = p.sync();
    assert_eq!(code, 3, "{report}"); // ghost@x.com is not found
    assert_eq!(count(&report, "updated"), 40, "{report}");
    assert_eq!(count(&report, "not_found"), 1, "{report}");
    let quiet = sim.find_contact("quiet@x.com").unwrap();
    assert_eq!(
        quiet
            .standard("firstName")
            .and_then(|v| v.as_str().map(str::to_owned))
            .as_deref(),
        Some("Quinn")
    );
    assert_eq!(endpoint_count(&sim, "GET /v1/subscriptions"), 0);
    assert!(
        endpoint_count(&sim, "POST /v1/graphql") <= 3,
        "{:?}",
        sim.counters()
    );
    assert!(
        sim.find_contact("ghost@x.com").is_none(),
        "a contact was created"
    );
    assert_eq!(sim.violations(), []);
}

/// GraphQL unavailable to the account: the run falls back to `GET /v1/subscriptions` and
/// still creates nothing.
#[test]
fn without_graphql_the_run_falls_back_and_creates_nothing() {
    let sim = start_sim(SimConfig {
        contacts: seed(&["ann@x.com", "bo@x.com"]),
        graphql_enabled: false,
        ..SimConfig::default()
    });
    let p = project(
        &sim,
        "first_name = \"first_name\"",
        "email,first_name,tier\nann@x.com,Ann,gold\nbo@x.com,Bo,gold\nghost@x.com,Gus,gold\n",
    );
    let (r, report) = p.sync_with(attentive_sim::DEFAULT_KEY, &[]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert_eq!(count(&report, "updated"), 2, "{report}");
    assert_eq!(count(&report, "not_found"), 1, "{report}");
    assert!(
        r.stderr.contains("GraphQL lookups are not usable"),
        "{}",
        r.stderr
    );
    assert_eq!(
        r.stderr.matches("GraphQL lookups are not usable").count(),
        1
    );
    assert_eq!(endpoint_count(&sim, "GET /v1/subscriptions"), 3);
    assert!(sim.find_contact("ghost@x.com").is_none());
    assert_eq!(sim.violations(), []);
}

/// The same state file pointed at another account (another key, another base URL): the run
/// stops with exit 1 and sends nothing; `--rebind-destination` then backfills, creating
/// nobody.
#[test]
fn another_account_stops_the_run_until_the_destination_is_rebound() {
    let sandbox = start_sim(SimConfig {
        contacts: seed(&["ann@x.com", "bo@x.com"]),
        ..SimConfig::default()
    });
    sandbox.set_company(CompanyInfo {
        company_name: "Acme Sandbox".into(),
        company_id: "SBX1".into(),
        ..CompanyInfo::default()
    });
    let csv = "email,first_name,tier\nann@x.com,Ann,gold\nbo@x.com,Bo,gold\n";
    let p = project(&sandbox, "first_name = \"first_name\"", csv);
    let (_, first) = p.sync();
    assert_eq!(count(&first, "updated"), 2, "{first}");

    let production = start_sim(SimConfig {
        contacts: seed(&["ann@x.com", "bo@x.com"]),
        ..SimConfig::default()
    });
    production.set_company(CompanyInfo {
        company_name: "Acme".into(),
        company_id: "PRD1".into(),
        ..CompanyInfo::default()
    });
    p.write(
        "attentive-sync.toml",
        &sim_config(
            &base_url(&production),
            "first_name = \"first_name\"",
            "\"Tier\" = \"tier\"",
        ),
    );
    let (r, report) = p.sync_with(attentive_sim::DEFAULT_KEY, &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(report["status"], "failed");
    let error = report["error"].as_str().unwrap_or("");
    for needle in [
        "\"Acme\" (company id PRD1)",
        "\"Acme Sandbox\" (company id SBX1)",
        "--rebind-destination",
    ] {
        assert!(error.contains(needle), "{needle}: {error}");
    }
    assert_eq!(writes_after(&production, 0).len(), 0);
    assert_eq!(endpoint_count(&production, "POST /v1/graphql"), 0);

    let (r, backfill) = p.sync_with(attentive_sim::DEFAULT_KEY, &["--rebind-destination"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(count(&backfill, "updated"), 2, "{backfill}");
    assert_eq!(production.contact_count(), 2, "no contact created");
    assert_eq!(production.violations(), []);
    let (_, again) = p.sync();
    assert_eq!(count(&again, "updated"), 0, "{again}");
}

/// A phone that belongs to another contact is never attached to the email contact: the row's
/// other attributes are sent, the row says `identifier_conflict`.
#[test]
fn a_phone_held_by_another_contact_is_not_bridged() {
    let sim = start_sim(SimConfig {
        contacts: vec![
            SeedContact::email("ann@x.com"),
            SeedContact::phone("+12125550111"),
            SeedContact::email("bo@x.com"),
        ],
        ..SimConfig::default()
    });
    let p = project(
        &sim,
        "first_name = \"first_name\"\nphone = \"phone\"",
        "email,first_name,phone,tier\nann@x.com,Ann,(212) 555-0111,gold\nbo@x.com,Bo,(212) 555-0199,gold\n",
    );
    p.write(
        "data/m.csv",
        "email,first_name,phone,tier\nann@x.com,Ann,(212) 555-0111,gold\nbo@x.com,Bo,(212) 555-0199,gold\n",
    );
    let (code, report) = p.sync();
    assert_eq!(code, 3, "{report}");
    assert_eq!(count(&report, "identifier_conflicts"), 1, "{report}");
    assert_eq!(count(&report, "updated"), 2, "{report}");
    let writes = writes_after(&sim, 0);
    let ann: Vec<&Value> = writes
        .iter()
        .filter(|w| w.body["identifiers"]["email"] == "ann@x.com")
        .map(|w| &w.body)
        .collect();
    assert_eq!(ann.len(), 1, "{ann:?}");
    assert!(
        ann[0]["identifiers"].get("phone").is_none(),
        "bridged: {}",
        ann[0]
    );
    assert!(!ann[0].to_string().contains("5550111"), "{}", ann[0]);
    let bo = writes
        .iter()
        .find(|w| w.body["identifiers"]["email"] == "bo@x.com")
        .unwrap();
    assert_eq!(
        bo.body["identifiers"]["phone"], "+12125550199",
        "{}",
        bo.body
    );
    let rows = p.runs_show(&report["run_id"], Some("updated"));
    let text = rows.to_string();
    assert!(
        text.contains("identifier_conflict") && text.contains("+12125550111"),
        "{text}"
    );
    assert_eq!(sim.contact_count(), 3, "no contact created or merged");
    assert_eq!(sim.violations(), []);
}
