//! Bad input as a new user would write it: each gives a clear, located message, and the rest
//! of the model is still planned.

use crate::support::{config, Project};

fn project(csv: &str) -> Project {
    let p = Project::new();
    p.write(
        "attentive-sync.toml",
        &config(
            "first_name = \"first\"\nphone = \"phone\"\ncountry = \"country\"\nlatitude = \"lat\"",
            "\"Tier\" = \"tier\"",
        ),
    );
    p.write("data/m.csv", csv);
    p
}

const HEADER: &str = "email,first,phone,country,lat,tier\n";

/// Plans and returns (rejection messages by line, number of changed contacts).
fn plan(p: &Project) -> (Vec<(u64, String)>, u64) {
    let (code, plan) = p.plan_json("a");
    let rejections: Vec<(u64, String)> = plan["sample_rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["row"].as_u64().unwrap(),
                r["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(code, if rejections.is_empty() { 0 } else { 3 });
    (rejections, plan["counts"]["changed"].as_u64().unwrap())
}

#[test]
fn each_bad_cell_is_named_by_line_column_value_and_rule() {
    let p = project(&format!(
        "{HEADER}\
ann@example.com,Ann,+12125550100,US,40.7,gold
ann2@example.com,Ann,+1 212,US,40.7,gold
not-an-email,Bob,,US,,gold
cat@example.com,Cat,,Atlantis,,gold
dan@example.com,Dan,,US,123,gold
eve@example.com,Eve,,US,,silver
"
    ));
    let (rejections, changed) = plan(&p);
    expect_test::expect![[r#"
        [
            (
                3,
                "invalid_value: column `phone` = \"+1 212\": phone is not a valid number for its country code",
            ),
            (
                4,
                "invalid_identifier: column `email` = \"not-an-email\": email must contain exactly one @",
            ),
            (
                5,
                "invalid_value: column `country` = \"Atlantis\": country is not an ISO 3166-1 code (US, USA) or an English short name (United States of America)",
            ),
            (
                6,
                "invalid_value: column `lat` = \"123\": latitude must be between -90 and 90",
            ),
        ]
    "#]]
    .assert_debug_eq(&rejections);
    assert_eq!(changed, 2, "ann and eve are still planned");
}

#[test]
fn ragged_rows_are_rejected_with_their_line() {
    let p = project(&format!(
        "{HEADER}ann@example.com,Ann,,US,,gold\nbob@example.com,Bob\ncat@example.com,Cat,,US,,gold,extra\ndan@example.com,Dan,,US,,gold\n"
    ));
    let (rejections, changed) = plan(&p);
    assert_eq!(rejections.len(), 2, "{rejections:?}");
    assert_eq!(rejections[0].0, 3);
    assert!(
        rejections[0].1.contains("line 3") && rejections[0].1.contains("2 fields"),
        "{rejections:?}"
    );
    assert_eq!(rejections[1].0, 4);
    assert_eq!(changed, 2);
}

#[test]
fn duplicated_identifiers_reject_every_row_of_it() {
    let p = project(&format!(
        "{HEADER}ann@example.com,Ann,,US,,gold\nbob@example.com,Bob,,US,,gold\n ANN@example.com ,Annie,,US,,gold\n"
    ));
    let (rejections, changed) = plan(&p);
    assert_eq!(changed, 1);
    // Both rows are listed, each as a duplicate (the plan re-reads the model once it has found
    // duplicates, so no row is first reported as a change).
    let rows: Vec<u64> = rejections.iter().map(|r| r.0).collect();
    assert_eq!(rows, [2, 4], "{rejections:?}");
    assert!(
        rejections
            .iter()
            .all(|r| r.1.starts_with("duplicate_identifier")),
        "{rejections:?}"
    );
    let (_, plan) = p.plan_json("a");
    assert_eq!(
        plan["counts"]["rejected_by_code"]["duplicate_identifier"],
        2
    );
}

#[test]
fn a_missing_column_names_the_activation_the_column_and_the_columns_there_are() {
    let p = project(&format!("{HEADER}ann@example.com,Ann,,US,,gold\n"));
    p.write(
        "attentive-sync.toml",
        &config("first_name = \"fname\"", "\"Tier\" = \"tier\""),
    );
    let r = p.run(&["plan", "a"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("activation \"a\" does not fit model \"m\""),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("column `fname`"), "{}", r.stderr);
    assert!(
        r.stderr.contains("email, first, phone, country, lat, tier"),
        "{}",
        r.stderr
    );
    let v = p.run(&["validate"]);
    assert_eq!(v.code, 1);
    assert!(v.stdout.contains("column `fname`"), "{}", v.all());
}

#[test]
fn an_unknown_config_key_names_the_file_the_line_and_the_valid_keys() {
    let p = project(&format!("{HEADER}ann@example.com,Ann,,US,,gold\n"));
    let text = p
        .read("attentive-sync.toml")
        .replace("default_phone_region", "default_region");
    p.write("attentive-sync.toml", &text);
    let r = p.run(&["plan", "a"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("attentive-sync.toml"), "{}", r.stderr);
    assert!(
        r.stderr.contains("unknown field `default_region`"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("default_phone_region"),
        "valid keys listed: {}",
        r.stderr
    );
    assert!(r.stderr.contains("line 12"), "{}", r.stderr);
}

#[test]
fn an_unset_api_key_is_a_validate_problem_but_not_a_plan_problem() {
    let p = project(&format!("{HEADER}ann@example.com,Ann,,US,,gold\n"));
    let v = p.run(&["validate"]);
    assert_eq!(v.code, 1);
    assert!(
        v.stdout
            .contains("environment variable ATTENTIVE_API_KEY is not set"),
        "{}",
        v.all()
    );
    let (_, changed) = plan(&p);
    assert_eq!(changed, 1);
}

// ---- regression tests: issue 12 (parsing) ----

#[test]
fn a_quote_left_open_stopped_nothing_and_plan_exited_0() {
    // Line 3 opens a quote that nothing closes: the rest of the file was one value, "2 rows
    // read", exit 0. Now the plan stops, naming the line.
    let p = project(&format!(
        "{HEADER}ann@example.com,Ann,,US,,gold\nbob@example.com,\"Bob,,US,,gold\ncat@example.com,Cat,,US,,gold\n"
    ));
    let r = p.run(&["plan", "a"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr
            .contains("line 3: the quoted field that starts on line 3 is never closed"),
        "{}",
        r.stderr
    );
}

#[test]
fn cr_only_line_ends_put_every_row_on_line_1() {
    let csv = format!(
        "{HEADER}ann@example.com,Ann,,US,,gold\nbob@example.com,Bob\ncat@example.com,Cat,,US,,gold\ndan@example.com\neve@example.com,Eve,,US,,gold\n"
    )
    .replace('\n', "\r");
    let p = project(&csv);
    let (rejections, changed) = plan(&p);
    let rows: Vec<u64> = rejections.iter().map(|r| r.0).collect();
    assert_eq!(rows, [3, 5], "{rejections:?}");
    assert!(
        rejections[1].1.contains("line 5 has 1 field"),
        "{rejections:?}"
    );
    assert_eq!(changed, 3);
}

#[test]
fn a_wrong_delimiter_named_one_column_and_gave_no_hint() {
    let p = project(&format!("{HEADER}ann@example.com,Ann,,US,,gold\n").replace(',', ";"));
    let r = p.run(&["plan", "a"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr
            .contains("is the file delimited by \";\"? Then set `delimiter = \";\"` in [models.m]"),
        "{}",
        r.stderr
    );
}
