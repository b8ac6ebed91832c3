use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "ATTENTIVE_API_KEY" => Some("sk-test-123".into()),
        "DATA_DIR" => Some("/data".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Project, ConfigError> {
    Project::parse(Path::new("/proj/attentive-sync.toml"), text, &env)
}

const GOOD: &str = r#"
[destinations.attentive]
api_key = "${ATTENTIVE_API_KEY}"

[models.customers]
source = "csv"
path = "${DATA_DIR}/customers.csv"
delimiter = ";"

[activations.vip]
model = "customers"
destination = "attentive"
identifier = { column = "email", kind = "email" }
default_phone_region = "us"
schedule = "0 */6 * * *"
[activations.vip.standard]
first_name = "fname"
[activations.vip.custom]
"Loyalty Tier" = "tier"
"Lifetime Value" = { column = "ltv", type = "number" }
"#;

#[test]
fn a_good_config_validates() {
    let p = parse(GOOD).unwrap();
    assert_eq!(p.state_path, Path::new("/proj/attentive-sync.db"));
    let d = &p.destinations["attentive"];
    assert_eq!(d.api_key.as_ref().unwrap().expose(), "sk-test-123");
    assert_eq!(format!("{:?}", d.api_key), "Ok(ApiKey(<redacted>))");
    assert!(!format!("{p:?}").contains("sk-test-123"));
    assert_eq!(d.requests_per_second, 150.0);
    assert_eq!(
        p.models["customers"].spec,
        ModelSpec::Csv {
            path: "/data/customers.csv".into(),
            delimiter: b';',
            quote: b'"'
        }
    );
    let a = &p.activations["vip"];
    assert_eq!(a.mapping.attributes.len(), 3);
    assert_eq!(
        a.mapping.options.default_phone_region,
        Some(phonenumber::country::Id::US)
    );
}

#[test]
fn unknown_keys_are_refused_with_their_location() {
    let text = GOOD.replace("schedule =", "shedule =");
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.starts_with("/proj/attentive-sync.toml:"), "{e}");
    assert!(e.contains("unknown field `shedule`"), "{e}");
    assert!(e.contains("line 15"), "{e}");
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let text = r#"
[destinations.attentive]
api_key = "${MISSING_KEY}"
requests_per_second = 0

[models.customers]
source = "excel"

[activations.vip]
model = "custmers"
destination = "attentive"
identifier = { column = "email", kind = "email" }
default_phone_region = "ZZ"
[activations.vip.standard]
frist_name = "fname"
[activations.vip.custom]
" Tier" = "tier"
"#;
    let e = parse(text).unwrap_err().to_string();
    expect_test::expect![[r#"
        /proj/attentive-sync.toml has 6 problems:
          - destinations.attentive.requests_per_second: 0 must be greater than 0 and at most 10000
          - models.customers.source: "excel" is not a supported source; use "csv", "jsonl", "parquet", "sqlite" or "postgres"
          - activations.vip.model: no model named "custmers"; models: customers
          - activations.vip.default_phone_region: "ZZ" is not an ISO 3166-1 alpha-2 region with phone numbers (like "US", "GB")
          - activations.vip.standard.frist_name: not a standard field; valid: address, age, city, country, date_of_birth, email, first_name, language, last_name, latitude, longitude, organization, phone, region, state, time_zone, title, website, zip_code
          - activations.vip.custom." Tier": custom attribute name " Tier" has leading or trailing spaces; Attentive names are exact, so write it without them"#]]
    .assert_eq(&e);
}

#[test]
fn a_missing_api_key_variable_blocks_delivery_not_planning() {
    let text = GOOD.replace("${ATTENTIVE_API_KEY}", "${NOT_SET_ANYWHERE}");
    let p = parse(&text).unwrap();
    let problems = p.delivery_problems();
    assert_eq!(
        problems,
        ["destinations.attentive.api_key: environment variable NOT_SET_ANYWHERE is not set"]
    );
}

#[test]
fn interpolation_rules() {
    assert_eq!(interpolate("a$$b", &env).unwrap(), "a$b");
    assert_eq!(interpolate("${DATA_DIR}/x", &env).unwrap(), "/data/x");
    assert_eq!(interpolate("cost $5", &env).unwrap(), "cost $5");
    assert!(interpolate("${NOPE}", &env)
        .unwrap_err()
        .contains("NOPE is not set"));
    assert!(interpolate("${A-B}", &env)
        .unwrap_err()
        .contains("not a variable name"));
    assert!(interpolate("${OPEN", &env).unwrap_err().contains("closing"));
}

#[test]
fn sql_and_parquet_models_take_their_own_keys() {
    let text = r#"
[models.pg]
source = "postgres"
url = "postgres://app:${PG_PASSWORD}@db.internal/analytics"
query = "select email, tier from customers"

[models.lite]
source = "sqlite"
path = "warehouse.db"
query = "select * from customers"

[models.pq]
source = "parquet"
path = "exports/"

[models.bad]
source = "sqlite"
url = "postgres://x"
"#;
    let env = |name: &str| (name == "PG_PASSWORD").then(|| "hunter2".to_owned());
    let e = Project::parse(Path::new("/p/a.toml"), text, &env)
        .unwrap_err()
        .to_string();
    expect_test::expect![[r#"
        /p/a.toml has 3 problems:
          - models.bad.url: `url` does not apply to source = "sqlite", which takes: path, query
          - models.bad.path: a sqlite model needs `path`
          - models.bad.query: a sqlite model needs `query`"#]]
    .assert_eq(&e);
    let ok = text.split("[models.bad]").next().unwrap();
    let p = Project::parse(Path::new("/p/a.toml"), ok, &env).unwrap();
    match &p.models["pg"].spec {
        ModelSpec::Postgres { url, query } => {
            assert_eq!(url.0, "postgres://app:hunter2@db.internal/analytics");
            assert_eq!(url.redacted(), "postgres://app:***@db.internal/analytics");
            assert_eq!(query, "select email, tier from customers");
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{p:?}").contains("hunter2"));
    assert_eq!(
        p.models["lite"].spec,
        ModelSpec::Sqlite {
            path: "/p/warehouse.db".into(),
            query: "select * from customers".into()
        }
    );
    assert_eq!(
        p.models["pq"].spec,
        ModelSpec::Parquet {
            path: "/p/exports/".into()
        }
    );
}

fn with_filter(config: &str, filter: &str) -> String {
    config.replacen(
        "[activations.vip.standard]",
        &format!("filter = {filter:?}\n[activations.vip.standard]"),
        1,
    )
}

#[test]
fn a_file_models_filter_is_parsed_when_the_config_loads() {
    let p = parse(&with_filter(
        GOOD,
        "tier IN ('gold','platinum') AND ltv >= 100",
    ))
    .unwrap();
    match &p.activations["vip"].segment {
        Some(Segment::Rows(f)) => {
            assert_eq!(f.to_string(), "tier in ('gold', 'platinum') and ltv >= 100");
        }
        other => panic!("{other:?}"),
    }
    let err = parse(&with_filter(GOOD, "tier = gold"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("activations.vip.filter: expected a value, found column `gold` (text values go in single quotes: 'gold') at character 8:")
            && err.contains("tier = gold")
            && err.contains("docs/CONFIG.md"),
        "{err}"
    );
    let err = parse(&with_filter(GOOD, "  ")).unwrap_err().to_string();
    assert!(err.contains("activations.vip.filter: is empty"), "{err}");
}

#[test]
fn a_sql_models_filter_is_left_to_the_database() {
    let sql = GOOD.replace(
        "source = \"csv\"\npath = \"${DATA_DIR}/customers.csv\"\ndelimiter = \";\"",
        "source = \"sqlite\"\npath = \"m.db\"\nquery = \"select * from c\"",
    );
    // Not the file predicate language: SQL's own functions and operators are fine.
    let p = parse(&with_filter(&sql, " lower(tier) LIKE 'g%' ")).unwrap();
    assert_eq!(
        p.activations["vip"].segment,
        Some(Segment::Sql("lower(tier) LIKE 'g%'".into()))
    );
}

#[test]
fn schedules_are_parsed_in_their_time_zone() {
    let p = parse(GOOD).unwrap();
    let a = &p.activations["vip"];
    assert_eq!(a.timezone, chrono_tz::Tz::UTC);
    assert_eq!(a.cron.as_ref().unwrap().expression(), "0 */6 * * *");

    let text = GOOD.replace(
        "schedule = \"0 */6 * * *\"",
        "schedule = \"*/2 * * * * *\"\ntimezone = \"America/New_York\"",
    );
    let p = parse(&text).unwrap();
    let a = &p.activations["vip"];
    assert_eq!(a.timezone, chrono_tz::Tz::America__New_York);
    assert!(a.cron.as_ref().unwrap().has_seconds());
}

#[test]
fn a_bad_schedule_or_time_zone_names_its_key() {
    let text = GOOD.replace(
        "schedule = \"0 */6 * * *\"",
        "schedule = \"0 25 * * *\"\ntimezone = \"Europe/Atlantis\"",
    );
    let e = parse(&text).unwrap_err().to_string();
    assert!(
        e.contains("activations.vip.schedule: \"0 25 * * *\" is not a valid cron expression"),
        "{e}"
    );
    assert!(
        e.contains("activations.vip.timezone: \"Europe/Atlantis\" is not an IANA time zone"),
        "{e}"
    );

    let text = GOOD.replace("schedule = \"0 */6 * * *\"", "schedule = \"every day\"");
    let e = parse(&text).unwrap_err().to_string();
    assert!(
        e.contains("activations.vip.schedule: \"every day\" has 2 fields"),
        "{e}"
    );
}

// ---- regressions: issue 12 ------------------------------------------------------------------

/// Item 9: a bad custom `type` said "data did not match any variant of untagged enum
/// RawCustom"; it names the key, what was given and the valid types.
#[test]
fn regression_bad_custom_type_names_the_key_and_the_valid_types() {
    let text = GOOD.replace("type = \"number\"", "type = \"nubmer\"");
    let e = parse(&text).unwrap_err().to_string();
    expect_test::expect![[r#"
        /proj/attentive-sync.toml has 1 problem:
          - activations.vip.custom."Lifetime Value".type: "nubmer" is not a custom type; valid: string, number, bool, date, datetime"#]]
    .assert_eq(&e);

    // A mistake inside the table is reported as itself, with its line.
    let text = GOOD.replace("{ column = \"ltv\"", "{ colum = \"ltv\"");
    let e = parse(&text).unwrap_err().to_string();
    assert!(
        e.contains("unknown field `colum`, expected `column` or `type`") && e.contains("line 20"),
        "{e}"
    );
    assert!(!e.contains("untagged"), "{e}");
    let text = GOOD.replace("{ column = \"ltv\", type = \"number\" }", "42");
    let e = parse(&text).unwrap_err().to_string();
    assert!(
        e.contains(
            "a column name (\"tier\") or a table like { column = \"ltv\", type = \"number\" }"
        ),
        "{e}"
    );
}

/// Item 8: `on_null = "clear"` with a mapped `phone`/`email` standard field turned every
/// later write of the contact into a rejection; the config refuses it at load.
#[test]
fn regression_on_null_clear_with_a_phone_field_is_a_config_error() {
    let text = GOOD.replace(
        "[activations.vip.standard]\nfirst_name = \"fname\"",
        "on_null = \"clear\"\n[activations.vip.standard]\nfirst_name = \"fname\"\nphone = \"mobile\"",
    );
    let e = parse(&text).unwrap_err().to_string();
    expect_test::expect![[r#"
        /proj/attentive-sync.toml has 1 problem:
          - activations.vip.on_null: on_null = "clear" cannot apply to standard field `phone`: Attentive cannot remove a contact's phone through attribute updates, so every clear would reject the contact; use on_null = "omit", or map `phone` in an activation of its own with on_null = "omit""#]]
    .assert_eq(&e);

    // With a phone identifier, a mapped email is the second identifier.
    let text = text
        .replace(
            "{ column = \"email\", kind = \"email\" }",
            "{ column = \"mobile\", kind = \"phone\" }",
        )
        .replace("phone = \"mobile\"", "email = \"email\"");
    let e = parse(&text).unwrap_err().to_string();
    assert!(
        e.contains(
            "activations.vip.on_null: on_null = \"clear\" cannot apply to standard field `email`"
        ),
        "{e}"
    );

    // Without the identifier field, clear is fine; with omit, the phone field is fine.
    let ok = GOOD.replace(
        "[activations.vip.standard]",
        "on_null = \"clear\"\n[activations.vip.standard]",
    );
    assert_eq!(
        parse(&ok).unwrap().activations["vip"].mapping.on_null,
        OnNull::Clear
    );
    let ok = GOOD.replace(
        "first_name = \"fname\"",
        "first_name = \"fname\"\nphone = \"mobile\"",
    );
    assert!(parse(&ok).is_ok());
}

/// Issue 13: activation names were not validated, and a quoted TOML key holding `"}` and a
/// newline forged series in the metrics text.
#[test]
fn activation_names_are_validated_at_load() {
    for bad in [
        "vip\"} 1\nfake_metric{a=\"",
        "",
        "-vip",
        "v i p",
        "vip/../x",
        &"a".repeat(65),
    ] {
        let text = GOOD.replace("[activations.vip", &format!("[activations.{bad:?}"));
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("activation name"), "{bad:?}: {e}");
    }
    for good in ["vip", "VIP_2", "loyalty-tier.daily", "0day"] {
        check_activation_name(good).unwrap();
    }
}

/// Issue 13: the SQL segment filter could end its WHERE (`x) UNION SELECT ... (`).
#[test]
fn a_sql_filter_that_could_escape_its_segment_is_a_config_error() {
    let text = r#"
[destinations.attentive]
api_key = "k"
[models.db]
source = "sqlite"
path = "m.db"
query = "select * from customers"
[activations.a]
model = "db"
destination = "attentive"
identifier = { column = "email", kind = "email" }
filter = "1=1) UNION SELECT * FROM secrets ("
[activations.a.standard]
first_name = "first"
"#;
    let e = parse(text).unwrap_err().to_string();
    assert!(e.contains("activations.a.filter"), "{e}");
    assert!(e.contains("closes a parenthesis it did not open"), "{e}");
}

/// Issue 13: the API key never travels in clear to another machine.
#[test]
fn plain_http_is_refused_outside_this_machine_unless_allowed() {
    let with = |url: &str, extra: &str| {
        GOOD.replacen(
            "api_key = \"${ATTENTIVE_API_KEY}\"",
            &format!("api_key = \"${{ATTENTIVE_API_KEY}}\"\nbase_url = \"{url}\"\n{extra}"),
            1,
        )
    };
    for ok in [
        "https://api.attentivemobile.com",
        "http://127.0.0.1:8080",
        "http://localhost:9",
        "http://[::1]:80/x",
    ] {
        assert!(parse(&with(ok, "")).is_ok(), "{ok}");
    }
    let err = parse(&with("http://api.example.com", ""))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("destinations.attentive.base_url")
            && err.contains("in clear")
            && err.contains("allow_insecure_http"),
        "{err}"
    );
    assert!(parse(&with("http://10.0.0.5:8080", "allow_insecure_http = true")).is_ok());
}

#[test]
fn run_all_follows_the_order_of_the_file() {
    let text = format!(
        "{GOOD}\n[activations.after]\nmodel = \"customers\"\ndestination = \"attentive\"\nidentifier = {{ column = \"email\", kind = \"email\" }}\ncustom = {{ \"Tier\" = \"tier\" }}\n\n[activations.aardvark]\nmodel = \"customers\"\ndestination = \"attentive\"\nidentifier = {{ column = \"email\", kind = \"email\" }}\ncustom = {{ \"Tier\" = \"tier\" }}\n"
    );
    let p = parse(&text).unwrap();
    assert_eq!(p.activation_order, ["vip", "after", "aardvark"]);
}

#[test]
fn alert_rules_and_notifications_are_validated() {
    let text = format!(
        r#"{GOOD}
[activations.vip.alerts]
rows_rejected = {{ count = 10 }}
rows_not_found = false
slow_run = {{ factor = 0.5 }}
changed_deviation = {{ percent = 50, runs = 5 }}

[notifications.ops]
url = "http://hooks.example.com/x"
kind = "teams"
events = ["run.failed", "run.exploded"]
activations = ["nope"]
"#
    );
    let Err(ConfigError::Invalid { problems, .. }) = parse(&text) else {
        panic!("accepted");
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "activations.vip.alerts.slow_run.factor",
            "notifications.ops.kind",
            "notifications.ops.url",
            "notifications.ops.events",
            "notifications.ops.activations"
        ],
        "{problems:#?}"
    );
    // The URL (a credential for incoming webhooks) is never in a message.
    assert!(problems
        .iter()
        .all(|p| !p.message.contains("hooks.example.com")));

    let text = format!(
        r#"{GOOD}
[activations.vip.alerts]
rows_rejected = {{ count = 10 }}
rows_not_found = false
changed_deviation = {{ percent = 50, runs = 5 }}

[notifications.ops]
kind = "slack"
url = "https://hooks.example.com/x"
secret_env = "UNSET_SECRET"
"#
    );
    let p = parse(&text).unwrap();
    let rules = &p.activations["vip"].alerts;
    assert_eq!(
        rules.rows_rejected,
        Some(Threshold {
            count: Some(10),
            percent: None
        })
    );
    assert_eq!(rules.rows_not_found, None);
    assert_eq!(
        rules.changed_deviation.map(|d| (d.percent, d.runs)),
        Some((50.0, 5))
    );
    assert!(rules.run_failed && rules.slow_run.is_some());
    let ops = &p.notifications["ops"];
    assert_eq!(ops.kind, notifications::Kind::Slack);
    assert_eq!(ops.events.len(), notifications::EventKind::ALL.len());
    let problems = p.notification_problems();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("UNSET_SECRET"), "{problems:?}");
    assert!(!format!("{ops:?}").contains("hooks.example.com"));
}
