//! `run` against the in-process Attentive simulator on 127.0.0.1: only what changed is sent,
//! contacts are never created nor opted in, bad rows never reach Attentive, faults and kills
//! lose nothing, and a bad key stops the run without leaking.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use attentive_sim::{
    Burst429, Faults, Permission, RequestRecord, SeedContact, SimConfig, SimHandle, SimKey,
};
use serde_json::{json, Value};

use crate::support::{
    bin, body_email, has_key, last_seq, requests_after, seed, sent_after, sim_config,
    sim_config_jsonl, start_sim, writes_after, Project, WRITE,
};

/// A project over `data/m.csv` pointed at `sim`.
fn project(sim: &SimHandle, standard: &str, custom: &str, csv: &str) -> Project {
    let p = Project::new();
    p.write(
        "attentive-sync.toml",
        &sim_config(&base_url(sim), standard, custom),
    );
    p.write("data/m.csv", csv);
    p
}

fn base_url(sim: &SimHandle) -> String {
    format!("http://{}", sim.local_addr().expect("simulator address"))
}

fn count(report: &Value, outcome: &str) -> u64 {
    report["counts"][outcome]
        .as_u64()
        .unwrap_or_else(|| panic!("no counts.{outcome} in {report}"))
}

fn emails_of(writes: &[RequestRecord]) -> BTreeSet<String> {
    writes.iter().map(body_email).collect()
}

/// A contact's standard attribute (`firstName`, `location.city`) as text.
fn standard(sim: &SimHandle, email: &str, path: &str) -> Option<String> {
    let c = sim
        .find_contact(email)
        .unwrap_or_else(|| panic!("{email} is not a contact"));
    c.standard(path)
        .map(|v| v.as_str().expect("text").to_owned())
}

/// Every request's body and query as one string, to look for values that must not be sent.
fn everything_sent(requests: &[RequestRecord]) -> String {
    requests
        .iter()
        .map(|r| format!("{} {} {}", r.path, r.query.as_deref().unwrap_or(""), r.body))
        .collect::<Vec<_>>()
        .join("\n")
}

// 1 ------------------------------------------------------------------------------------------

const CITIES: &[&str] = &["Austin", "Boston", "Denver", "Seattle", "Brooklyn"];
const NAMES: &[&str] = &["Ann", "Bob", "Carla", "Dev", "Elena", "Farid", "Grace"];

/// Ten seeded contacts `c0..c9@example.com` (row 2 spelled messily), an invalid email and a
/// person who is not an Attentive contact.
fn ten_contacts_csv(city_of_c3: &str, messy: bool) -> String {
    let mut s = String::from("email,first,city,tier\n");
    for i in 0..10 {
        let (email, first) = if i == 2 && messy {
            ("  C2@Example.COM  ".to_owned(), " Bea   Marie ".to_owned())
        } else if i == 2 {
            ("c2@example.com".to_owned(), "Bea Marie".to_owned())
        } else {
            (
                format!("c{i}@example.com"),
                NAMES[i % NAMES.len()].to_owned(),
            )
        };
        let city = if i == 3 {
            city_of_c3
        } else {
            CITIES[i % CITIES.len()]
        };
        let tier = ["gold", "silver", "bronze"][i % 3];
        s.push_str(&format!("{email},{first},{city},{tier}\n"));
    }
    s.push_str("not-an-email,Zed,Austin,gold\n");
    s.push_str("ghost@example.com,Gus,Austin,gold\n");
    s
}

fn ten_contacts() -> Vec<SeedContact> {
    (0..10)
        .map(|i| SeedContact::email(format!("c{i}@example.com")))
        .collect()
}

#[test]
fn a_rerun_without_changes_sends_nothing_and_one_cell_sends_one_attribute() {
    let sim = start_sim(SimConfig {
        contacts: ten_contacts(),
        ..SimConfig::default()
    });
    let p = project(
        &sim,
        "first_name = \"first\"\ncity = \"city\"",
        "",
        &ten_contacts_csv("Denver", true),
    );

    // First run: every seeded, valid row is updated with both attributes.
    let (code, first) = p.sync();
    assert_eq!(
        code, 3,
        "one rejected row and one contact not found: {first}"
    );
    assert_eq!(count(&first, "updated"), 10, "{first}");
    assert_eq!(count(&first, "rejected"), 1, "{first}");
    assert_eq!(count(&first, "not_found"), 1, "{first}");
    let writes = writes_after(&sim, 0);
    assert_eq!(writes.len(), 10, "one write per contact");
    assert!(writes.iter().all(|w| w.status == Some(202)));
    let expected: BTreeSet<String> = (0..10).map(|i| format!("c{i}@example.com")).collect();
    assert_eq!(emails_of(&writes), expected);
    for w in &writes {
        let attrs = w.body["attributes"].as_object().expect("attributes");
        let keys: BTreeSet<&str> = attrs.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["firstName", "location"]),
            "{}",
            w.body
        );
        assert_eq!(
            attrs["location"].as_object().unwrap().len(),
            1,
            "{}",
            w.body
        );
    }
    assert_eq!(
        standard(&sim, "c2@example.com", "firstName").as_deref(),
        Some("Bea Marie"),
        "names are trimmed and inner spaces collapsed"
    );
    assert_eq!(
        standard(&sim, "c3@example.com", "location.city").as_deref(),
        Some("Denver")
    );

    // Second run, nothing changed: not one request but the account check (existence is
    // cached, values unchanged).
    let before = last_seq(&sim);
    let (_, second) = p.sync();
    assert_eq!(
        sent_after(&sim, before).len(),
        0,
        "{:#?}",
        requests_after(&sim, before)
    );
    assert_eq!(requests_after(&sim, before).len(), 1, "GET /v1/me, once");
    assert_eq!(count(&second, "updated"), 0, "{second}");
    assert_eq!(count(&second, "unchanged"), 10, "{second}");

    // A cosmetic edit (spacing, case of the email) is not a change either.
    p.write("data/m.csv", &ten_contacts_csv("Denver", false));
    let before = last_seq(&sim);
    let (_, third) = p.sync();
    assert_eq!(writes_after(&sim, before).len(), 0, "{third}");
    assert_eq!(count(&third, "updated"), 0, "{third}");

    // One cell edited: one write, carrying that one attribute and the identifier only.
    p.write("data/m.csv", &ten_contacts_csv("Springfield", false));
    let before = last_seq(&sim);
    let (_, fourth) = p.sync();
    let writes = writes_after(&sim, before);
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert_eq!(
        writes[0].body,
        json!({
            "identifiers": { "email": "c3@example.com" },
            "attributes": { "location": { "city": "Springfield" } }
        })
    );
    assert_eq!(writes[0].status, Some(202));
    assert_eq!(count(&fourth, "updated"), 1, "{fourth}");
    assert_eq!(count(&fourth, "unchanged"), 9, "{fourth}");
    assert_eq!(
        standard(&sim, "c3@example.com", "location.city").as_deref(),
        Some("Springfield")
    );
    assert_eq!(
        sent_after(&sim, before).len(),
        1,
        "no existence check for a known contact"
    );
}

// 2 ------------------------------------------------------------------------------------------

#[test]
fn a_new_custom_mapping_backfills_only_that_attribute() {
    let sim = start_sim(SimConfig {
        contacts: ten_contacts(),
        ..SimConfig::default()
    });
    let standard_both = "first_name = \"first\"\ncity = \"city\"";
    let p = project(&sim, standard_both, "", &ten_contacts_csv("Denver", false));
    let (_, first) = p.sync();
    assert_eq!(count(&first, "updated"), 10, "{first}");

    // Add a custom mapping: one write per existing contact, with only that attribute.
    let with_tier = "\"Loyalty Tier\" = \"tier\"";
    p.write(
        "attentive-sync.toml",
        &sim_config(&base_url(&sim), standard_both, with_tier),
    );
    let before = last_seq(&sim);
    let (_, second) = p.sync();
    let writes = writes_after(&sim, before);
    assert_eq!(count(&second, "updated"), 10, "{second}");
    assert_eq!(writes.len(), 10, "{writes:#?}");
    for w in &writes {
        let email = body_email(w);
        let i: usize = email
            .strip_prefix('c')
            .and_then(|s| s.strip_suffix("@example.com"))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unexpected write for {email}"));
        let tier = ["gold", "silver", "bronze"][i % 3];
        assert_eq!(
            w.body,
            json!({
                "identifiers": { "email": email },
                "attributes": { "custom": { "Loyalty Tier": tier } }
            })
        );
        assert_eq!(w.status, Some(202));
        assert_eq!(
            sim.find_contact(&email)
                .unwrap()
                .custom_value("Loyalty Tier"),
            Some(&json!(tier))
        );
    }
    assert!(
        !emails_of(&writes).contains("ghost@example.com"),
        "the unknown contact is never written"
    );

    // Backfilled: nothing more to send.
    let before = last_seq(&sim);
    p.sync();
    assert_eq!(writes_after(&sim, before).len(), 0);

    // A removed mapping sends nothing...
    p.write(
        "attentive-sync.toml",
        &sim_config(&base_url(&sim), "first_name = \"first\"", with_tier),
    );
    let before = last_seq(&sim);
    let (_, removed) = p.sync();
    assert_eq!(writes_after(&sim, before).len(), 0, "{removed}");
    // ...and is dropped from the snapshot: mapping it again backfills it, alone.
    p.write(
        "attentive-sync.toml",
        &sim_config(&base_url(&sim), standard_both, with_tier),
    );
    let before = last_seq(&sim);
    p.sync();
    let writes = writes_after(&sim, before);
    assert_eq!(writes.len(), 10, "{writes:#?}");
    for w in &writes {
        let attrs = &w.body["attributes"];
        assert_eq!(
            attrs.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["location"],
            "{}",
            w.body
        );
        assert!(attrs["location"]["city"].is_string(), "{}", w.body);
        assert_eq!(attrs["location"].as_object().unwrap().len(), 1);
    }
}

// 3 ------------------------------------------------------------------------------------------

#[test]
fn contacts_not_in_attentive_are_not_found_and_never_created() {
    let known = ["ann@example.com", "bob@example.com", "cat@example.com"];
    let sim = start_sim(SimConfig {
        contacts: seed(&known),
        ..SimConfig::default()
    });
    let p = project(
        &sim,
        "first_name = \"first\"",
        "\"Tier\" = \"tier\"",
        "email,first,tier\n\
         ann@example.com,Ann,gold\n\
         ghost@example.com,Gus,gold\n\
         bob@example.com,Bob,silver\n\
         cat@example.com,Cat,bronze\n",
    );
    let contacts_before = sim.contact_count();

    let (code, report) = p.sync();
    assert_eq!(
        code, 3,
        "a contact not found makes the run partial: {report}"
    );
    assert_eq!(count(&report, "updated"), 3, "{report}");
    assert_eq!(count(&report, "not_found"), 1, "{report}");

    let shown = p.runs_show(&report["run_id"], Some("not_found"));
    let rows = shown["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{shown}");
    assert_eq!(rows[0]["contact"], "ghost@example.com", "{shown}");
    assert_eq!(rows[0]["outcome"], "not_found", "{shown}");
    assert_eq!(rows[0]["row"], 3, "line 3 of the model: {shown}");

    let all = sim.requests();
    let writes: Vec<&RequestRecord> = all.iter().filter(|r| r.endpoint == WRITE).collect();
    assert_eq!(writes.len(), 3);
    assert!(
        writes.iter().all(|w| !w.body.to_string().contains("ghost")),
        "{writes:#?}"
    );
    // The one request about the ghost is the read-only lookup.
    let about_ghost: Vec<&RequestRecord> = all
        .iter()
        .filter(|r| {
            r.query.as_deref().unwrap_or("").contains("ghost")
                || r.body.to_string().contains("ghost")
        })
        .collect();
    assert_eq!(about_ghost.len(), 1, "{about_ghost:#?}");
    assert_eq!(about_ghost[0].endpoint, "POST /v1/graphql");
    assert_eq!(about_ghost[0].status, Some(200));
    assert!(!about_ghost[0].body.to_string().contains("mutation"));

    assert_eq!(
        sim.contact_count(),
        contacts_before,
        "no contact was created"
    );
    assert!(sim.find_contact("ghost@example.com").is_none());
    assert!(
        all.iter().all(|r| !has_key(&r.body, "subscriptions")),
        "a subscriptions field was sent"
    );
    assert!(
        all.iter()
            .all(|r| !(r.method == "POST" && r.path.starts_with("/v1/subscriptions"))),
        "a subscription endpoint was called"
    );
    assert!(sim.violations().is_empty(), "{:#?}", sim.violations());

    // The next run trusts the cache: no request but the account check, and still not found.
    let before = last_seq(&sim);
    let (_, again) = p.sync();
    assert_eq!(sent_after(&sim, before).len(), 0);
    assert_eq!(count(&again, "not_found"), 1, "{again}");
    // --recheck-missing looks again, read-only.
    let before = last_seq(&sim);
    let (r, rechecked) = p.sync_with(attentive_sim::DEFAULT_KEY, &["--recheck-missing"]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert_eq!(count(&rechecked, "not_found"), 1, "{rechecked}");
    let sent = sent_after(&sim, before);
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0].endpoint, "POST /v1/graphql");
    assert_eq!(sim.contact_count(), contacts_before);
    assert!(sim.violations().is_empty(), "{:#?}", sim.violations());
}

// 4 ------------------------------------------------------------------------------------------

fn jsonl(rows: &[Value]) -> String {
    rows.iter().map(|r| format!("{r}\n")).collect()
}

fn model_4(points_of_dan: Value) -> String {
    jsonl(&[
        json!({"email": "ann@example.com", "first": "Ann", "phone": "+12125550101", "points": 5}),
        json!({"email": "not-an-email", "first": "Yorick", "phone": "", "points": 1}),
        json!({"email": "badphone@example.com", "first": "Zelda", "phone": "+1 8675309", "points": 2}),
        json!({"email": "dan@example.com", "first": "Dan", "phone": "", "points": points_of_dan}),
        json!({"email": "eve@example.com", "first": "Eve", "phone": "+12125550102", "points": 7}),
    ])
}

#[test]
fn invalid_rows_never_reach_attentive_and_a_400_is_not_resent() {
    let mut dan = SeedContact::email("dan@example.com");
    // Attentive fixes a custom attribute's type with its first value: Points is a NUMBER.
    dan.custom.insert("Points".into(), json!(10));
    let sim = start_sim(SimConfig {
        contacts: vec![
            SeedContact::email("ann@example.com"),
            SeedContact::email("badphone@example.com"),
            dan,
            SeedContact::email("eve@example.com"),
        ],
        ..SimConfig::default()
    });
    let p = Project::new();
    p.write(
        "attentive-sync.toml",
        &sim_config_jsonl(
            &base_url(&sim),
            "first_name = \"first\"\nphone = \"phone\"",
            "\"Points\" = \"points\"",
        ),
    );
    // Dan's points are text: valid for the model, refused by Attentive (400).
    p.write("data/m.jsonl", &model_4(json!("lots")));

    let (code, first) = p.sync();
    assert_eq!(code, 3, "{first}");
    assert_eq!(count(&first, "updated"), 2, "{first}");
    assert_eq!(count(&first, "rejected"), 3, "{first}");

    let sent = everything_sent(&sim.requests());
    for never in ["not-an-email", "Yorick", "badphone", "Zelda", "8675309"] {
        assert!(
            !sent.contains(never),
            "{never:?} reached Attentive:\n{sent}"
        );
    }

    let rejected = p.runs_show(&first["run_id"], Some("rejected"));
    let rows = rejected["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 3, "{rejected}");
    let by_row: BTreeMap<u64, &Value> = rows
        .iter()
        .map(|r| (r["row"].as_u64().unwrap(), r))
        .collect();
    assert_eq!(by_row.keys().copied().collect::<Vec<_>>(), [2, 3, 4]);
    assert_eq!(by_row[&2]["code"], "invalid_identifier", "{rejected}");
    assert_eq!(by_row[&3]["code"], "invalid_value", "{rejected}");
    assert!(
        by_row[&3]["message"].as_str().unwrap().contains("phone"),
        "{rejected}"
    );
    let dan_row = by_row[&4];
    assert_eq!(dan_row["contact"], "dan@example.com", "{rejected}");
    let message = dan_row["message"].as_str().unwrap();
    assert!(
        message.contains("Points") && message.contains("NUMBER"),
        "the simulator's message is kept: {message}"
    );
    let dan_writes: Vec<RequestRecord> = writes_after(&sim, 0)
        .into_iter()
        .filter(|w| body_email(w) == "dan@example.com")
        .collect();
    assert_eq!(dan_writes.len(), 1, "a 400 is not retried: {dan_writes:#?}");
    assert_eq!(dan_writes[0].status, Some(400));

    // Nothing changed: the refused row is not sent again.
    let before = last_seq(&sim);
    let (_, second) = p.sync();
    assert_eq!(writes_after(&sim, before).len(), 0, "{second}");
    assert_eq!(count(&second, "rejected"), 2, "{second}");
    assert_eq!(count(&second, "updated"), 0, "{second}");

    // Dan's points become a number: now his row goes out, with everything never acknowledged.
    p.write("data/m.jsonl", &model_4(json!(42)));
    let before = last_seq(&sim);
    let (_, third) = p.sync();
    let writes = writes_after(&sim, before);
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert_eq!(
        writes[0].body,
        json!({
            "identifiers": { "email": "dan@example.com" },
            "attributes": { "firstName": "Dan", "custom": { "Points": 42 } }
        })
    );
    assert_eq!(writes[0].status, Some(202));
    assert_eq!(count(&third, "updated"), 1, "{third}");
    let dan = sim.find_contact("dan@example.com").unwrap();
    assert_eq!(dan.custom_value("Points"), Some(&json!(42)));
    let sent = everything_sent(&sim.requests());
    for never in ["not-an-email", "Yorick", "badphone", "Zelda", "8675309"] {
        assert!(
            !sent.contains(never),
            "{never:?} reached Attentive:\n{sent}"
        );
    }
    assert!(sim.violations().is_empty(), "{:#?}", sim.violations());
}

// 5 ------------------------------------------------------------------------------------------

/// A model row and the values Attentive must end up with.
struct Person {
    email: String,
    first_cell: String,
    first: String,
    city: String,
    tier: String,
}

fn people(n: usize) -> Vec<Person> {
    (0..n)
        .map(|i| {
            let first = NAMES[i % NAMES.len()];
            let first_cell = if i % 5 == 1 {
                format!("  {first}  ")
            } else {
                first.to_owned()
            };
            Person {
                email: format!("p{i}@example.com"),
                first_cell,
                first: first.to_owned(),
                city: CITIES[(i * 3) % CITIES.len()].to_owned(),
                tier: format!("tier-{}", i % 4),
            }
        })
        .collect()
}

fn people_csv(people: &[Person], extra: &str) -> String {
    let mut s = String::from("email,first,city,tier\n");
    for p in people {
        s.push_str(&format!(
            "{},{},{},{}\n",
            p.email, p.first_cell, p.city, p.tier
        ));
    }
    s.push_str(extra);
    s
}

const PEOPLE_STANDARD: &str = "first_name = \"first\"\ncity = \"city\"";
const PEOPLE_CUSTOM: &str = "\"Tier\" = \"tier\"";

/// Every person's attributes in the simulator equal the model's normalized values.
fn assert_state_equals_model(sim: &SimHandle, people: &[Person]) {
    for p in people {
        let c = sim
            .find_contact(&p.email)
            .unwrap_or_else(|| panic!("{} is not a contact", p.email));
        assert_eq!(c.standard("firstName"), Some(&json!(p.first)), "{c:?}");
        assert_eq!(c.standard("location.city"), Some(&json!(p.city)), "{c:?}");
        assert_eq!(c.custom_value("Tier"), Some(&json!(p.tier)), "{c:?}");
    }
}

/// Writes the simulator applied (202), per contact.
fn applied_per_contact(requests: &[RequestRecord]) -> BTreeMap<String, Vec<&RequestRecord>> {
    let mut m: BTreeMap<String, Vec<&RequestRecord>> = BTreeMap::new();
    for r in requests
        .iter()
        .filter(|r| r.endpoint == WRITE && r.status == Some(202))
    {
        m.entry(body_email(r)).or_default().push(r);
    }
    m
}

/// The faults of a bad day: 20 % 500/503, 5 % dropped connections, 200 ms latency spikes and
/// periodic 429 bursts.
fn bad_day(seed: u64) -> Faults {
    Faults {
        error_rates: [(500, 0.1), (503, 0.1)].into_iter().collect(),
        latency_ms: 2,
        jitter_ms: 5,
        spike_probability: 0.05,
        spike_ms: 200,
        drop_rate: 0.05,
        burst_429: Some(Burst429 {
            period_ms: 1500,
            duration_ms: 150,
        }),
        seed,
        ..Faults::default()
    }
}

/// Runs until no row failed (retries absorb most faults; the next run sends what failed).
fn run_until_nothing_failed(p: &Project) -> Vec<Value> {
    let mut runs = Vec::new();
    loop {
        let (_, report) = p.sync();
        let failed = count(&report, "failed");
        runs.push(report);
        if failed == 0 {
            return runs;
        }
        assert!(runs.len() < 4, "still failing after 3 runs: {runs:#?}");
    }
}

/// Checks, after runs that ended with nothing failed, that Attentive holds the model and that
/// each contact's write was applied exactly once since `since` (a faulted request is never
/// applied; an acknowledged one is never sent again).
fn assert_converged(sim: &SimHandle, people: &[Person], runs: &[Value], since: u64) {
    let last = runs.last().unwrap();
    assert_eq!(count(last, "rejected"), 1, "{last}");
    assert_eq!(count(last, "not_found"), 0, "{last}");
    let updated: u64 = runs.iter().map(|r| count(r, "updated")).sum();
    assert_eq!(updated, people.len() as u64, "{runs:#?}");
    assert_state_equals_model(sim, people);
    let requests = requests_after(sim, since);
    let applied = applied_per_contact(&requests);
    assert_eq!(applied.len(), people.len());
    for (email, writes) in &applied {
        assert_eq!(
            writes.len(),
            1,
            "{email} was written {} times",
            writes.len()
        );
    }
    assert_eq!(sim.contact_count(), people.len());
    assert!(sim.violations().is_empty(), "{:#?}", sim.violations());
}

#[test]
fn faults_are_survived_and_the_final_state_equals_the_model() {
    let mut people = people(40);
    let emails: Vec<&str> = people.iter().map(|p| p.email.as_str()).collect();
    let sim = start_sim(SimConfig {
        contacts: seed(&emails),
        faults: bad_day(7),
        ..SimConfig::default()
    });
    const INVALID: &str = "not-an-email,Zed,Austin,gold\n";
    let p = project(
        &sim,
        PEOPLE_STANDARD,
        PEOPLE_CUSTOM,
        &people_csv(&people, INVALID),
    );

    // A bad day: every contact ends up with the model's values, each written once.
    let runs = run_until_nothing_failed(&p);
    assert_converged(&sim, &people, &runs, 0);
    let c = sim.counters();
    assert!(
        c.faults_injected > 0 && c.dropped > 0 && c.too_many_requests > 0,
        "the faults did happen: {c:?}"
    );
    let retries: u64 = runs
        .iter()
        .map(|r| r["delivery"]["retries"].as_u64().unwrap())
        .sum();
    assert!(retries > 0, "{runs:#?}");

    // A further run sends nothing.
    let before = last_seq(&sim);
    let (_, further) = p.sync();
    assert_eq!(
        sent_after(&sim, before).len(),
        0,
        "a further run sends nothing: {further}"
    );
    assert_eq!(count(&further, "updated"), 0);

    // Every city changes while Attentive is down (503 to everything): the account check
    // every run makes first fails once its retries are spent, so the run fails before sending
    // anything (exit 1); nothing is applied and the snapshot does not move. (Writes that fail
    // one by one are `failed` rows: `runner` `run::tests::refused_and_failed_writes_make_a_
    // partial_run`.)
    let old_cities: Vec<String> = people.iter().map(|p| p.city.clone()).collect();
    for (i, person) in people.iter_mut().enumerate() {
        person.city = format!("New {}", CITIES[i % CITIES.len()]);
    }
    p.write("data/m.csv", &people_csv(&people, INVALID));
    sim.set_faults(Faults {
        error_rates: [(503, 1.0)].into_iter().collect(),
        ..Faults::default()
    })
    .unwrap();
    let before = last_seq(&sim);
    let (r, down) = p.sync_with(attentive_sim::DEFAULT_KEY, &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(down["status"], "failed", "{down}");
    assert_eq!(count(&down, "updated"), 0, "{down}");
    let error = down["error"].as_str().unwrap_or("");
    assert!(error.contains("/v1/me") && error.contains("503"), "{error}");
    let sent = requests_after(&sim, before);
    assert!(
        !sent.is_empty() && sent.iter().all(|r| r.endpoint == "GET /v1/me"),
        "{sent:#?}"
    );
    for (person, old) in people.iter().zip(&old_cities) {
        assert_eq!(
            standard(&sim, &person.email, "location.city").as_deref(),
            Some(old.as_str())
        );
    }

    // Attentive is back (with a bad day's faults): the next runs send exactly what failed.
    sim.set_faults(bad_day(8)).unwrap();
    let before = last_seq(&sim);
    let runs = run_until_nothing_failed(&p);
    assert_converged(&sim, &people, &runs, before);
    for w in writes_after(&sim, before) {
        let attrs = w.body["attributes"].as_object().unwrap();
        assert_eq!(attrs.keys().collect::<Vec<_>>(), ["location"], "{}", w.body);
    }
    let before = last_seq(&sim);
    p.sync();
    assert_eq!(sent_after(&sim, before).len(), 0);
}

// 6 ------------------------------------------------------------------------------------------

/// Unix milliseconds of the simulator's RFC 3339 UTC timestamps (`2025-05-01T12:34:56.789Z`).
fn unix_ms(at: &str) -> i64 {
    let bad = format!("unexpected timestamp {at:?}");
    let num = |s: Option<&str>| -> i64 { s.and_then(|s| s.parse().ok()).expect(&bad) };
    let (date, time) = at.split_once('T').expect(&bad);
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next()), num(d.next()), num(d.next()));
    let time = time.strip_suffix('Z').expect(&bad);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':');
    let (h, mi, s) = (num(t.next()), num(t.next()), num(t.next()));
    let ms = num(Some(&format!("{frac:0<3}")[..3]));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

#[test]
fn unix_ms_reads_the_simulators_timestamps() {
    assert_eq!(unix_ms("1970-01-01T00:00:00.000Z"), 0);
    assert_eq!(unix_ms("2000-03-01T00:00:01.5Z"), 951_868_801_500);
    assert_eq!(unix_ms("2024-02-29T23:59:59.999Z"), 1_709_251_199_999);
}

const MAX_IN_FLIGHT: usize = 8;
/// Injected latency of the simulator: 20 ms + up to 30 ms of jitter.
const LATENCY_MS: i64 = 50;
/// How long before the kill a re-sent write may have reached the simulator.
///
/// A write is re-sent when the killed run had not committed its acknowledgement. Those are
///  - the writes in flight at the kill: at most MAX_IN_FLIGHT (the runner's semaphore); the
///    simulator may still apply them after the client died;
///  - the writes acknowledged but not yet committed. The committer commits whatever is queued
///    as soon as a result arrives, so an acknowledgement waits for at most one commit in
///    progress (milliseconds).
///
/// The simulator logs a write's arrival, then waits its latency (≤ 50 ms) before applying
/// and answering it. So a write that arrived more than 50 ms plus one commit before the kill
/// had been committed; 300 ms more cover scheduling on a busy 2-core machine.
const WINDOW_MS: i64 = LATENCY_MS + 300;

/// What one kill trial saw.
struct Trial {
    killed_mid_run: bool,
    resent: usize,
}

/// Starts a run of a fresh project, SIGKILLs it once the simulator has applied a random
/// number of its writes (plus a random few milliseconds), runs again to completion, and checks
/// that nothing was lost and little was sent twice.
fn kill_trial(trial: u64, people: &[Person]) -> Trial {
    let rows = people.len();
    let emails: Vec<&str> = people.iter().map(|p| p.email.as_str()).collect();
    let mut rng = runner::sample::Rng::new(0xC0FFEE + trial);
    // Even trials are fast (no rate limit: MAX_IN_FLIGHT writes in flight, ~100 contacts/s);
    // odd ones slow (60 requests/s, an existence check and a write per contact: ~30/s).
    let fast = trial.is_multiple_of(2);
    let sim = start_sim(SimConfig {
        contacts: seed(&emails),
        rate_limit_per_second: if fast { 0 } else { 150 },
        faults: Faults {
            latency_ms: 20,
            jitter_ms: 30,
            seed: trial,
            ..Faults::default()
        },
        ..SimConfig::default()
    });
    let p = project(
        &sim,
        PEOPLE_STANDARD,
        PEOPLE_CUSTOM,
        &people_csv(people, ""),
    );
    let rate = if fast { 2000 } else { 60 };
    let cfg = p.read("attentive-sync.toml").replacen(
        "base_url",
        &format!("requests_per_second = {rate}\nbase_url"),
        1,
    );
    p.write("attentive-sync.toml", &cfg);

    let target = rng.below(rows as u64);
    let extra = Duration::from_millis(rng.below(25));
    let mut child = Command::new(bin())
        .args(["run", "a", "--max-in-flight", &MAX_IN_FLIGHT.to_string()])
        .current_dir(p.dir())
        .env_remove("ATTENTIVE_SYNC_CONFIG")
        .env_remove("RUST_LOG")
        .env("ATTENTIVE_API_KEY", attentive_sim::DEFAULT_KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start attentive-sync");
    let deadline = Instant::now() + Duration::from_secs(60);
    while sim.counters().count(WRITE, 202) < target
        && child.try_wait().expect("poll the run").is_none()
    {
        assert!(Instant::now() < deadline, "trial {trial}: the run is stuck");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(extra);
    let kill_ms = now_ms();
    let _ = child.kill(); // SIGKILL (Ok, or an error if it had exited)
    let status = child.wait().expect("reap the killed run"); // /proc/PID goes away
    let killed_run: Vec<RequestRecord> = sim.requests();

    // Run again to completion: it sends every change that was not committed.
    let (code, report) = p.sync();
    assert_eq!(code, 0, "trial {trial}: {report}");
    assert_state_equals_model(&sim, people);
    assert_eq!(sim.contact_count(), rows);
    assert!(sim.violations().is_empty(), "{:#?}", sim.violations());

    // Each contact needed one applied write (202); every further one was re-sent.
    let all = sim.requests();
    let applied = applied_per_contact(&all);
    assert_eq!(
        applied.len(),
        rows,
        "trial {trial}: every contact was written"
    );
    let mut resent = 0;
    for (email, writes) in &applied {
        if writes.len() > 1 {
            assert_eq!(writes.len(), 2, "trial {trial}: {email}: {writes:#?}");
            let age = kill_ms - unix_ms(&writes[0].at);
            assert!(
                age <= WINDOW_MS,
                "trial {trial}: {email} reached Attentive {age} ms before the kill and was \
                 acknowledged, yet the next run sent it again: its acknowledgement was not \
                 committed in time"
            );
            resent += writes.len() - 1;
        }
    }
    // So every re-sent write is one of those that reached Attentive in the window; the bound
    // adds MAX_IN_FLIGHT, the writes in flight at the kill.
    let acknowledged_in_window = killed_run
        .iter()
        .filter(|r| r.endpoint == WRITE && r.status == Some(202))
        .filter(|r| unix_ms(&r.at) >= kill_ms - WINDOW_MS)
        .count();
    assert!(
        resent <= MAX_IN_FLIGHT + acknowledged_in_window,
        "trial {trial}: {resent} writes re-sent; at most {MAX_IN_FLIGHT} in flight + \
         {acknowledged_in_window} acknowledged in the last {WINDOW_MS} ms"
    );

    // The state store agrees with Attentive: nothing more to send.
    let before = last_seq(&sim);
    let (_, further) = p.sync();
    assert_eq!(
        sent_after(&sim, before).len(),
        0,
        "trial {trial}: {further}"
    );
    Trial {
        killed_mid_run: status.code().is_none(),
        resent,
    }
}

#[test]
fn killed_runs_lose_nothing() {
    const TRIALS: u64 = 12;
    /// Trials at once: each mostly waits on the simulator's latency and its own budget.
    const AT_ONCE: u64 = 6;
    let people = people(100);
    let mut trials = Vec::new();
    for wave in 0..TRIALS / AT_ONCE {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..AT_ONCE)
                .map(|i| {
                    let people = &people;
                    s.spawn(move || kill_trial(wave * AT_ONCE + i, people))
                })
                .collect();
            for h in handles {
                trials.push(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
            }
        });
    }
    let killed = trials.iter().filter(|t| t.killed_mid_run).count();
    let resent: usize = trials.iter().map(|t| t.resent).sum();
    eprintln!(
        "killed_runs_lose_nothing: {killed}/{TRIALS} runs killed mid-run, {resent} writes re-sent in all"
    );
    assert!(
        killed as u64 >= TRIALS - 2,
        "only {killed} of {TRIALS} runs were killed before they finished"
    );
}

// 7 ------------------------------------------------------------------------------------------

/// Every file of the project (state database, its -wal and -shm, the rest), as bytes.
fn project_files(p: &Project) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![p.dir().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let path = e.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

fn assert_key_not_stored(p: &Project, key: &str) {
    let files = project_files(p);
    let names: Vec<String> = files
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "attentive-sync.db"),
        "the state database exists: {names:?}"
    );
    for (path, bytes) in &files {
        assert!(
            !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
            "the API key is stored in {}",
            path.display()
        );
    }
}

#[test]
fn a_bad_key_stops_at_once_and_the_key_never_leaks() {
    const BAD: &str = "sk-live-LEAKCHECK-1234";
    const GOOD: &str = "sk-live-GOODKEY-5678";
    let rows = 200;
    let people = people(rows);
    let emails: Vec<&str> = people.iter().map(|p| p.email.as_str()).collect();
    let sim = start_sim(SimConfig {
        contacts: seed(&emails),
        keys: vec![
            SimKey::all(GOOD),
            SimKey::with("sk-no-subscribers", [Permission::Attributes]),
            SimKey::with("sk-no-attributes", [Permission::Subscriptions]),
        ],
        ..SimConfig::default()
    });
    let p = project(
        &sim,
        PEOPLE_STANDARD,
        PEOPLE_CUSTOM,
        &people_csv(&people, ""),
    );

    // A wrong key: 401, the run stops at once, exit 1, the message says what to fix.
    for flags in [&[][..], &["-vv"][..], &["-vv", "--log-format", "json"][..]] {
        let before = last_seq(&sim);
        let started = Instant::now();
        let (r, report) = p.sync_with(BAD, &[&["--max-in-flight", "4"][..], flags].concat());
        let took = started.elapsed();
        assert_eq!(r.code, 1, "{flags:?}: {}", r.all());
        assert_eq!(report["status"], "failed", "{report}");
        let all = r.all();
        assert!(all.contains("401") && all.contains("api_key"), "{all}");
        assert!(took < Duration::from_secs(10), "{flags:?}: took {took:?}");
        // At most 4 requests in flight when the first 401 comes back, and the runner may
        // have dispatched one more row while it did.
        let sent = requests_after(&sim, before);
        assert!(
            !sent.is_empty() && sent.len() <= 2 * 4 + 1,
            "{flags:?}: a 401 stops the run, {} requests sent",
            sent.len()
        );
        assert!(sent.iter().all(|r| r.status == Some(401)), "{sent:#?}");
        assert_eq!(count(&report, "updated"), 0);
        assert!(
            !all.contains(BAD),
            "{flags:?}: the key leaked into the output:\n{all}"
        );
        if flags.len() > 1 {
            assert!(r.stderr.contains("\"level\""), "JSON logs: {}", r.stderr);
        }
    }
    // Even with every log on.
    let r = p.run_within(
        &["run", "a", "--max-in-flight", "4"],
        &[("ATTENTIVE_API_KEY", BAD), ("RUST_LOG", "trace")],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("error: the API key was rejected (401)") && r.stdout.contains("api_key"),
        "the text report names the cause: {}",
        r.all()
    );
    assert!(!r.all().contains(BAD), "RUST_LOG=trace leaked the key");
    assert_key_not_stored(&p, BAD);

    // A key whose app lacks a permission: 403 stops the run with the permission to grant.
    // Without "Subscribers" the read-only existence check is refused; without "Custom
    // Attributes" the first writes are.
    for (key, permission) in [
        ("sk-no-subscribers", "Subscribers"),
        ("sk-no-attributes", "Custom Attributes"),
    ] {
        let before = last_seq(&sim);
        let (r, report) = p.sync_with(key, &["--max-in-flight", "4"]);
        assert_eq!(r.code, 1, "{key}: {}", r.all());
        assert_eq!(report["status"], "failed", "{report}");
        let all = r.all();
        assert!(
            all.contains("403") && all.contains(permission),
            "{key}: the message names the missing permission {permission:?}: {all}"
        );
        let sent = requests_after(&sim, before);
        assert!(
            sent.len() <= 2 * (2 * 4 + 1),
            "{key}: {} requests",
            sent.len()
        );
        assert!(sent.iter().any(|r| r.status == Some(403)), "{sent:#?}");
        assert!(
            sent.iter()
                .all(|r| !(r.endpoint == WRITE && r.status == Some(202))),
            "{sent:#?}"
        );
    }

    // The right key works, and is stored nowhere either.
    let (r, report) = p.sync_with(GOOD, &["-vv"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(count(&report, "updated"), rows as u64);
    assert!(!r.all().contains(GOOD));
    assert_key_not_stored(&p, GOOD);
    assert_key_not_stored(&p, BAD);
    assert!(sim
        .requests()
        .iter()
        .all(|r| !r.body.to_string().contains("sk-")));
}

// 8 ------------------------------------------------------------------------------------------

/// Ctrl-C (SIGINT) stops a run cleanly: in-flight writes finish and are committed, the run is
/// `interrupted` (exit 4), and the next run sends exactly the rest, nothing twice.
#[test]
fn ctrl_c_stops_cleanly_and_the_next_run_sends_only_the_rest() {
    let people = people(60);
    let emails: Vec<&str> = people.iter().map(|p| p.email.as_str()).collect();
    let sim = start_sim(SimConfig {
        contacts: seed(&emails),
        faults: Faults {
            latency_ms: 30,
            ..Faults::default()
        },
        ..SimConfig::default()
    });
    let p = project(
        &sim,
        PEOPLE_STANDARD,
        PEOPLE_CUSTOM,
        &people_csv(&people, ""),
    );
    // A slow budget so that the run is still delivering when it is interrupted.
    let cfg = p.read("attentive-sync.toml").replacen(
        "api_key = \"${ATTENTIVE_API_KEY}\"\n",
        "api_key = \"${ATTENTIVE_API_KEY}\"\nrequests_per_second = 20\n",
        1,
    );
    p.write("attentive-sync.toml", &cfg);

    let child = p.spawn(&["run", "a", "--format", "json"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while applied_per_contact(&sim.requests()).len() < 5 {
        assert!(Instant::now() < deadline, "the run never started writing");
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("send SIGINT");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait for attentive-sync");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).expect("report JSON");
    assert_eq!(report["status"], "interrupted");
    let updated_first = count(&report, "updated");
    assert!((5..60).contains(&updated_first), "{report}");

    // Everything the first run's writes did is committed: the next run sends only the rest.
    let (_, report) = p.sync();
    assert_eq!(count(&report, "updated") + updated_first, 60, "{report}");
    assert_state_equals_model(&sim, &people);
    for (email, writes) in applied_per_contact(&sim.requests()) {
        assert_eq!(
            writes.len(),
            1,
            "{email} was written {} times",
            writes.len()
        );
    }
}

/// `validate --check-key` asks Attentive whom the key belongs to, and names a bad key.
#[test]
fn validate_check_key_shows_the_app_and_names_a_bad_key() {
    let sim = start_sim(SimConfig::default());
    let p = project(
        &sim,
        PEOPLE_STANDARD,
        PEOPLE_CUSTOM,
        &people_csv(&people(1), ""),
    );
    let ok = p.run_env(
        &["validate", "--check-key"],
        &[("ATTENTIVE_API_KEY", attentive_sim::DEFAULT_KEY)],
    );
    assert_eq!(ok.code, 0, "{}", ok.all());
    assert!(
        ok.stdout
            .contains("ok: destination attentive: the key belongs to app"),
        "{}",
        ok.stdout
    );
    let bad = p.run_env(
        &["validate", "--check-key"],
        &[("ATTENTIVE_API_KEY", "sk-wrong-KEYCHECK")],
    );
    assert_eq!(bad.code, 1, "{}", bad.all());
    assert!(bad.stdout.contains("401"), "{}", bad.stdout);
    assert!(!bad.all().contains("sk-wrong-KEYCHECK"));
}

/// Issue 12: with `\r` line ends every row was "line 1", and run rows are keyed by line: a
/// 5-row run recorded one row while its counts said 2 rejected.
#[test]
fn a_cr_only_run_recorded_one_row_of_five() {
    let sim = start_sim(SimConfig {
        contacts: (0..5)
            .map(|i| SeedContact::email(format!("c{i}@example.com")))
            .collect(),
        ..SimConfig::default()
    });
    let csv = "email,first,city,tier\rc0@example.com,Ann,Austin,gold\rc1@example.com,Bob\rc2@example.com,Cat,Denver,gold\rc3@example.com\rc4@example.com,Eve,Boston,gold\r";
    let p = project(&sim, "first_name = \"first\"\ncity = \"city\"", "", csv);
    let (_, report) = p.sync();
    assert_eq!(count(&report, "updated"), 3, "{report}");
    assert_eq!(count(&report, "rejected"), 2, "{report}");
    let shown = p.runs_show(&report["run_id"], None);
    let mut rows: Vec<u64> = shown["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["row"].as_u64().unwrap())
        .collect();
    rows.sort_unstable();
    assert_eq!(rows, [2, 3, 4, 5, 6], "{shown}");
}

/// `state vacuum` rebuilds the state file and keeps everything: the next run sends nothing.
#[test]
fn state_vacuum_keeps_the_state() {
    let sim = start_sim(attentive_sim::SimConfig {
        contacts: seed(&["a@x.com", "b@x.com"]),
        ..attentive_sim::SimConfig::default()
    });
    let p = Project::new();
    p.write(
        "attentive-sync.toml",
        &sim_config(
            &format!("http://{}", sim.local_addr().unwrap()),
            "first_name = \"first_name\"",
            "",
        ),
    );
    p.write("data/m.csv", "email,first_name\na@x.com,Ann\nb@x.com,Bob\n");
    let (_, first) = p.sync();
    assert_eq!(first["counts"]["updated"], 2, "{first}");
    let r = p.run(&["state", "vacuum"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.starts_with("vacuumed "), "{}", r.all());
    let seq = last_seq(&sim);
    let (_, again) = p.sync();
    assert_eq!(again["counts"]["updated"], 0, "{again}");
    assert!(sent_after(&sim, seq).is_empty());
}

/// `[state] keep_runs = 2`: after a third run, the first run's rows are pruned, `runs show`
/// says so, and its counts remain.
#[test]
fn old_runs_rows_are_pruned_after_keep_runs() {
    let sim = start_sim(attentive_sim::SimConfig {
        contacts: seed(&["a@x.com"]),
        ..attentive_sim::SimConfig::default()
    });
    let p = Project::new();
    let config = sim_config(
        &format!("http://{}", sim.local_addr().unwrap()),
        "first_name = \"first_name\"",
        "",
    );
    p.write(
        "attentive-sync.toml",
        &format!("[state]\nkeep_runs = 2\n\n{config}"),
    );
    let mut ids = Vec::new();
    for name in ["Ann", "Anna", "Annie"] {
        p.write(
            "data/m.csv",
            &format!("email,first_name\na@x.com,{name}\nnot-an-email,X\n"),
        );
        let (_, report) = p.sync();
        ids.push(report["run_id"].clone());
    }
    let first = p.runs_show(&ids[0], None);
    assert!(first["rows_pruned_at"].is_string(), "{first}");
    assert_eq!(first["rows"].as_array().map(Vec::len), Some(0), "{first}");
    assert_eq!(first["report"]["counts"]["rejected"], 1, "{first}");
    let r = p.run(&["runs", "show", &ids[0].to_string()]);
    assert!(r.stdout.contains("Rows: pruned at"), "{}", r.all());
    for id in &ids[1..] {
        let kept = p.runs_show(id, None);
        assert!(kept["rows_pruned_at"].is_null(), "{kept}");
        assert_eq!(kept["rows"].as_array().map(Vec::len), Some(2), "{kept}");
    }
}
