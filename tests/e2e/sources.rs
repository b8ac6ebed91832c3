//! The same model read from every source kind gives the same plan.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parquet::data_type::{
    BoolType, ByteArray, ByteArrayType, FixedLenByteArray, FixedLenByteArrayType, Int32Type,
};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use crate::support::{config, Project};

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// One customer: email, first_name, city, ltv (cents, None = NULL), vip, signup.
struct Customer {
    email: &'static str,
    first_name: &'static str,
    city: &'static str,
    ltv_cents: Option<i64>,
    vip: bool,
    signup: &'static str,
}

const fn c(
    email: &'static str,
    first_name: &'static str,
    city: &'static str,
    ltv_cents: Option<i64>,
    vip: bool,
    signup: &'static str,
) -> Customer {
    Customer {
        email,
        first_name,
        city,
        ltv_cents,
        vip,
        signup,
    }
}

/// Six rows: one invalid email, one email on two rows (both rejected by default), a NULL
/// ltv and messy spacing in a name and a city.
#[rustfmt::skip]
const ROWS: [Customer; 6] = [
    c("ann@example.com", "Ann", "Boston", Some(41250), true, "2024-05-01"),
    c("bob@example.com", "  Bob   Lee ", "Chicago", Some(700), false, "2024-05-02"),
    c("not-an-email", "Cy", "Denver", Some(5), true, "2024-05-03"),
    c("dee@example.com", "Dee", "  El  Paso ", None, false, "2024-05-04"),
    c("Ann@Example.com", "Annie", "Boston", Some(100), true, "2024-05-05"),
    c("eve@example.com", "Eve", "Austin", Some(5), true, "2024-05-06"),
];

/// `41250` → `412.50`.
fn ltv_text(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn signup_days(date: &str) -> i32 {
    let parts: Vec<i32> = date.split('-').map(|p| p.parse().unwrap()).collect();
    // Days from civil (Howard Hinnant), 1970-01-01 = 0.
    let (y, m, d) = (parts[0], parts[1], parts[2]);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn csv_model() -> String {
    let mut s = String::from("email,first_name,city,ltv,vip,signup\n");
    for r in &ROWS {
        s.push_str(&format!(
            "{},\"{}\",\"{}\",{},{},{}\n",
            r.email,
            r.first_name,
            r.city,
            r.ltv_cents.map(ltv_text).unwrap_or_default(),
            r.vip,
            r.signup
        ));
    }
    s
}

fn jsonl_model() -> String {
    let mut s = String::new();
    for r in &ROWS {
        // The number is written as a literal so that the file carries exactly `412.50`.
        s.push_str(&format!(
            "{{\"email\":{},\"first_name\":{},\"city\":{},\"ltv\":{},\"vip\":{},\"signup\":{}}}\n",
            serde_json::json!(r.email),
            serde_json::json!(r.first_name),
            serde_json::json!(r.city),
            r.ltv_cents.map_or_else(|| "null".to_owned(), ltv_text),
            r.vip,
            serde_json::json!(r.signup),
        ));
    }
    s
}

fn sqlite_model(path: &std::path::Path) {
    let db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT, first_name TEXT, \
         city TEXT, ltv TEXT, vip BOOLEAN, signup DATE);",
    )
    .unwrap();
    for (i, r) in ROWS.iter().enumerate() {
        db.execute(
            "INSERT INTO customers VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params![
                i as i64 + 1,
                r.email,
                r.first_name,
                r.city,
                r.ltv_cents.map(ltv_text),
                i64::from(r.vip),
                r.signup
            ],
        )
        .unwrap();
    }
}

fn parquet_model(path: &std::path::Path) {
    let schema = Arc::new(
        parse_message_type(
            "message customers {
                required binary email (UTF8);
                required binary first_name (UTF8);
                required binary city (UTF8);
                optional fixed_len_byte_array(9) ltv (DECIMAL(20,2));
                required boolean vip;
                required int32 signup (DATE);
            }",
        )
        .unwrap(),
    );
    let file = std::fs::File::create(path).unwrap();
    let props = Arc::new(WriterProperties::builder().build());
    let mut writer = SerializedFileWriter::new(file, schema, props).unwrap();
    let mut rg = writer.next_row_group().unwrap();
    let text = |f: fn(&Customer) -> &'static str| -> Vec<ByteArray> {
        ROWS.iter().map(|r| ByteArray::from(f(r))).collect()
    };
    for col in [text(|r| r.email), text(|r| r.first_name), text(|r| r.city)] {
        let mut cw = rg.next_column().unwrap().unwrap();
        cw.typed::<ByteArrayType>()
            .write_batch(&col, None, None)
            .unwrap();
        cw.close().unwrap();
    }
    {
        // Big-endian two's complement unscaled values, 9 bytes.
        let values: Vec<FixedLenByteArray> = ROWS
            .iter()
            .filter_map(|r| r.ltv_cents)
            .map(|c| {
                let be = i128::from(c).to_be_bytes();
                FixedLenByteArray::from(be[16 - 9..].to_vec())
            })
            .collect();
        let defs: Vec<i16> = ROWS
            .iter()
            .map(|r| i16::from(r.ltv_cents.is_some()))
            .collect();
        let mut cw = rg.next_column().unwrap().unwrap();
        cw.typed::<FixedLenByteArrayType>()
            .write_batch(&values, Some(&defs), None)
            .unwrap();
        cw.close().unwrap();
    }
    {
        let values: Vec<bool> = ROWS.iter().map(|r| r.vip).collect();
        let mut cw = rg.next_column().unwrap().unwrap();
        cw.typed::<BoolType>()
            .write_batch(&values, None, None)
            .unwrap();
        cw.close().unwrap();
    }
    {
        let values: Vec<i32> = ROWS.iter().map(|r| signup_days(r.signup)).collect();
        let mut cw = rg.next_column().unwrap().unwrap();
        cw.typed::<Int32Type>()
            .write_batch(&values, None, None)
            .unwrap();
        cw.close().unwrap();
    }
    rg.close().unwrap();
    writer.close().unwrap();
}

/// Drops the test's PostgreSQL schema, whatever happens to the test.
struct PgSchema {
    name: String,
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if let Ok(mut db) = postgres::Client::connect(PG_URL, postgres::NoTls) {
            let _ = db.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}

fn postgres_model() -> PgSchema {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let guard = PgSchema {
        name: format!("e2e_sources_{}_{nanos}", std::process::id()),
    };
    let mut db = postgres::Client::connect(PG_URL, postgres::NoTls).unwrap();
    db.batch_execute(&format!(
        "CREATE SCHEMA {s};
         CREATE TABLE {s}.customers (id integer PRIMARY KEY, email text, first_name text,
             city text, ltv numeric(20,2), vip boolean, signup date);",
        s = guard.name
    ))
    .unwrap();
    for (i, r) in ROWS.iter().enumerate() {
        // Numbers and dates go through their text form, cast by the server.
        db.execute(
            &format!(
                "INSERT INTO {}.customers VALUES ($1, $2, $3, $4, $5::text::numeric, $6, $7::text::date)",
                guard.name
            ),
            &[
                &(i as i32 + 1),
                &r.email,
                &r.first_name,
                &r.city,
                &r.ltv_cents.map(ltv_text),
                &r.vip,
                &r.signup,
            ],
        )
        .unwrap();
    }
    guard
}

const COLUMNS: &str = "email, first_name, city, ltv, vip, signup";

/// A project whose model `m` is `model` (the TOML lines after `[models.m]`).
fn project(model: &str) -> Project {
    let p = Project::new();
    let text = config(
        "first_name = \"first_name\"\ncity = \"city\"",
        "\"LTV\" = { column = \"ltv\", type = \"number\" }\n\
         \"VIP\" = { column = \"vip\", type = \"bool\" }\n\
         \"Signup\" = { column = \"signup\", type = \"date\" }",
    );
    let csv = "source = \"csv\"\npath = \"data/m.csv\"";
    assert!(text.contains(csv));
    p.write("attentive-sync.toml", &text.replacen(csv, model, 1));
    p
}

/// `plan a --output plan.jsonl --format json`: the plan file and the JSON counts.
fn plan(name: &str, p: &Project) -> (String, serde_json::Value) {
    let r = p.run(&["plan", "a", "--output", "plan.jsonl", "--format", "json"]);
    assert_eq!(r.code, 3, "{name}: {}", r.all());
    let report: serde_json::Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("{name}: plan is not JSON ({e}): {}", r.all()));
    (p.read("plan.jsonl"), report["counts"].clone())
}

/// `text` with every `"row":N` lowered by `by`, the rest byte for byte.
fn shift_rows(text: &str, by: u64) -> String {
    const KEY: &str = "\"row\":";
    let mut out = String::new();
    for line in text.lines() {
        let at = line.find(KEY).unwrap_or_else(|| panic!("no row: {line}")) + KEY.len();
        let digits = line[at..].bytes().take_while(u8::is_ascii_digit).count();
        let row: u64 = line[at..at + digits].parse().unwrap();
        out.push_str(&line[..at]);
        out.push_str(&(row - by).to_string());
        out.push_str(&line[at + digits..]);
        out.push('\n');
    }
    out
}

/// A line-by-line diff of two plan files, for assertion messages.
fn diff(a_name: &str, a: &str, b_name: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out = String::new();
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i).copied(), b.get(i).copied());
        if x != y {
            out.push_str(&format!(
                "line {}:\n  {a_name}: {}\n  {b_name}: {}\n",
                i + 1,
                x.unwrap_or("<none>"),
                y.unwrap_or("<none>")
            ));
        }
    }
    out
}

#[test]
fn the_same_model_from_every_source_gives_an_identical_plan() {
    let csv = project("source = \"csv\"\npath = \"data/m.csv\"");
    csv.write("data/m.csv", &csv_model());

    let jsonl = project("source = \"jsonl\"\npath = \"data/m.jsonl\"");
    jsonl.write("data/m.jsonl", &jsonl_model());

    let sqlite = project(&format!(
        "source = \"sqlite\"\npath = \"data/m.db\"\n\
         query = \"SELECT {COLUMNS} FROM customers ORDER BY id\""
    ));
    std::fs::create_dir_all(sqlite.path("data")).unwrap();
    sqlite_model(&sqlite.path("data/m.db"));

    let parquet = project("source = \"parquet\"\npath = \"data/m.parquet\"");
    std::fs::create_dir_all(parquet.path("data")).unwrap();
    parquet_model(&parquet.path("data/m.parquet"));

    let schema = postgres_model();
    let pg = project(&format!(
        "source = \"postgres\"\nurl = \"{PG_URL}\"\n\
         query = \"SELECT {COLUMNS} FROM {}.customers ORDER BY id\"",
        schema.name
    ));

    let plans: Vec<(&str, (String, serde_json::Value))> = [
        ("csv", &csv),
        ("jsonl", &jsonl),
        ("sqlite", &sqlite),
        ("parquet", &parquet),
        ("postgres", &pg),
    ]
    .into_iter()
    .map(|(name, p)| (name, plan(name, p)))
    .collect();

    // The expected plan: ann@example.com is on two rows (both rejected), not-an-email is
    // invalid; bob, dee and eve are new contacts.
    let (base_name, (base_file, base_counts)) = &plans[0];
    assert_eq!(base_counts["rows"], 6, "{base_counts}");
    assert_eq!(base_counts["changed"], 3, "{base_counts}");
    assert_eq!(base_counts["unchanged"], 0, "{base_counts}");
    assert_eq!(base_counts["rejected"], 3, "{base_counts}");
    assert_eq!(
        base_counts["rejected_by_code"],
        serde_json::json!({"invalid_identifier": 1, "duplicate_identifier": 2}),
        "{base_counts}"
    );
    let changed: Vec<serde_json::Value> = base_file
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["outcome"] == "changed")
        .collect();
    let contacts: Vec<&str> = changed
        .iter()
        .map(|l| l["contact"].as_str().unwrap())
        .collect();
    assert_eq!(
        contacts,
        ["bob@example.com", "dee@example.com", "eve@example.com"],
        "{base_file}"
    );

    // `row` is where the record is in its source: for CSV the file line (1 = header), for
    // every other source the record number (JSONL has no header, so its line is the record).
    // So the CSV plan is compared with its rows shifted back by the header line; the other
    // four must be byte-identical as they are.
    let csv_as_records = shift_rows(base_file, 1);
    assert_ne!(&csv_as_records, base_file);
    let mut findings = String::new();
    for (name, (file, counts)) in &plans[1..] {
        if counts != base_counts {
            findings.push_str(&format!(
                "{name} counts differ from {base_name}:\n  {base_name}: {base_counts}\n  {name}: {counts}\n"
            ));
        }
        if *file != csv_as_records {
            findings.push_str(&format!(
                "{name} plan.jsonl differs from {base_name} (rows as record numbers):\n{}",
                diff(base_name, &csv_as_records, name, file)
            ));
        }
    }
    assert!(
        findings.is_empty(),
        "{findings}\n{base_name} plan.jsonl (rows as record numbers):\n{csv_as_records}"
    );

    // The attributes counted to send are those of the changes listed: Ann's first row is
    // voided by her second, so only bob, dee and eve count, and Dee's NULL ltv sends nothing
    // (on_null = "omit").
    assert_eq!(
        base_counts["attributes_to_send"],
        serde_json::json!({
            "custom:LTV": 2, "custom:Signup": 3, "custom:VIP": 3,
            "std:city": 3, "std:first_name": 3
        }),
        "attributes_to_send still counts the change of a row voided as a duplicate: {base_counts}"
    );
    drop(schema);
}

/// `project(model)` with `filter` on its activation.
fn segment_project(model: &str, filter: &str) -> Project {
    let p = project(model);
    let text = p.read("attentive-sync.toml").replacen(
        "[activations.a.standard]",
        &format!("filter = {filter:?}\n[activations.a.standard]"),
        1,
    );
    p.write("attentive-sync.toml", &text);
    p
}

/// A segment: PostgreSQL filters inside the database (the query wrapped in a `WHERE`), a CSV
/// model with the same condition in the file predicate language; both keep the same rows and
/// plan the same changes. A filter the database rejects is reported by `validate`.
#[test]
fn a_segment_filter_keeps_the_same_rows_in_postgres_and_in_a_file() {
    let schema = postgres_model();
    let pg = segment_project(
        &format!(
            "source = \"postgres\"\nurl = \"{PG_URL}\"\n\
             query = \"SELECT {COLUMNS} FROM {}.customers ORDER BY id;\"",
            schema.name
        ),
        "ltv >= 1 AND vip IS NOT NULL",
    );
    let csv = segment_project(
        "source = \"csv\"\npath = \"data/m.csv\"",
        "ltv >= 1 and vip is not null",
    );
    csv.write("data/m.csv", &csv_model());

    let report = |p: &Project| -> serde_json::Value {
        let r = p.run(&["plan", "a", "--output", "plan.jsonl", "--format", "json"]);
        assert_eq!(r.code, 3, "{}", r.all());
        serde_json::from_str(&r.stdout).unwrap()
    };
    let (pg_report, csv_report) = (report(&pg), report(&csv));
    // ltv >= 1.00: Ann (412.50) twice, so both rejected as duplicates, and Bob (7.00); Cy and
    // Eve (0.05) and Dee (NULL) are outside.
    assert_eq!(
        pg_report["segment"],
        serde_json::json!({"filter": "ltv >= 1 AND vip IS NOT NULL", "filtered_by": "database"})
    );
    assert_eq!(
        csv_report["segment"],
        serde_json::json!({"filter": "ltv >= 1 and vip is not null", "filtered_by": "rows"})
    );
    assert_eq!(pg_report["counts"]["rows"], 3, "{pg_report}");
    assert_eq!(
        pg_report["counts"]["outside_segment"], 0,
        "the database filtered them"
    );
    assert_eq!(csv_report["counts"]["rows"], 3, "{csv_report}");
    assert_eq!(csv_report["counts"]["outside_segment"], 3, "{csv_report}");
    assert_eq!(pg_report["counts"]["changed"], 1);
    assert_eq!(
        pg_report["counts"]["rejected_by_code"],
        serde_json::json!({"duplicate_identifier": 2})
    );
    // The rows kept by PostgreSQL are numbered as the wrapped query returns them (1..3); the
    // file's rows keep their lines. The changes are the same.
    let changes = |p: &Project| -> Vec<serde_json::Value> {
        p.read("plan.jsonl")
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|l| l["outcome"] == "changed")
            .map(|mut l| {
                l["row"] = serde_json::Value::Null;
                l
            })
            .collect()
    };
    let pg_changes = changes(&pg);
    assert_eq!(pg_changes, changes(&csv));
    assert_eq!(pg_changes.len(), 1);
    assert_eq!(pg_changes[0]["contact"], "bob@example.com");

    let text = pg.run(&["plan", "a"]).stdout;
    assert!(
        text.contains(
            "segment `ltv >= 1 AND vip IS NOT NULL` (filtered by the database): 3 rows kept"
        ),
        "{text}"
    );
    let text = csv.run(&["plan", "a"]).stdout;
    assert!(
        text.contains("segment `ltv >= 1 and vip is not null`: 3 rows kept, 3 left out"),
        "{text}"
    );

    // A filter naming a column the query does not have: `validate` says which activation,
    // which filter, and what PostgreSQL said.
    let cfg = pg
        .read("attentive-sync.toml")
        .replace("ltv >= 1 AND", "ltvv >= 1 AND");
    pg.write("attentive-sync.toml", &cfg);
    let r = pg.run(&["validate"]);
    assert_ne!(r.code, 0, "{}", r.all());
    let all = r.all();
    assert!(
        all.contains(
            "narrowed by activation \"a\"'s filter `ltvv >= 1 AND vip IS NOT NULL` failed"
        ) && all.contains("ltvv"),
        "{all}"
    );
    // And a file filter naming an unknown column, or that does not parse.
    let cfg = csv
        .read("attentive-sync.toml")
        .replace("ltv >= 1 and", "ltvv >= 1 and");
    csv.write("attentive-sync.toml", &cfg);
    let all = csv.run(&["validate"]).all();
    assert!(
        all.contains("column `ltvv`, which is not in the model"),
        "{all}"
    );
    let cfg = csv
        .read("attentive-sync.toml")
        .replace("ltvv >= 1 and", "ltv >=");
    csv.write("attentive-sync.toml", &cfg);
    let r = csv.run(&["validate"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all().contains("activations.a.filter: expected a value"),
        "{}",
        r.all()
    );
    drop(schema);
}

/// A PostgreSQL connection killed while a run reads the model: the run is reported as failed
/// with a message that says so, nothing is sent, and the snapshot is untouched.
#[test]
fn a_postgres_connection_killed_mid_run_fails_the_run_and_keeps_the_snapshot() {
    let schema = postgres_model();
    let emails: Vec<&str> = ROWS
        .iter()
        .map(|r| r.email)
        .filter(|e| e.contains('@'))
        .collect();
    let sim = crate::support::start_sim(attentive_sim::SimConfig {
        contacts: crate::support::seed(&emails),
        ..attentive_sim::SimConfig::default()
    });
    let base_url = format!("http://{}", sim.local_addr().unwrap());
    let p = Project::new();
    let text = crate::support::sim_config(
        &base_url,
        "first_name = \"first_name\"\ncity = \"city\"",
        "\"VIP\" = { column = \"vip\", type = \"bool\" }",
    );
    // Every row takes 0.3 s to produce, so the read is still going when the backend is killed.
    // The run's connections carry a name of their own, so that only they are killed (other
    // tests, and other test runs, use the same server).
    let app = schema.name.clone();
    let model = format!(
        "source = \"postgres\"\nurl = \"{PG_URL}?application_name={app}\"\nquery = \"SELECT {COLUMNS}, pg_sleep(0.3)::text AS pause FROM {}.customers ORDER BY id\"",
        schema.name
    );
    p.write(
        "attentive-sync.toml",
        &text.replacen("source = \"csv\"\npath = \"data/m.csv\"", &model, 1),
    );

    let killer = std::thread::spawn(move || {
        let mut db = postgres::Client::connect(PG_URL, postgres::NoTls).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            let rows = db
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = $1 AND state = 'active'",
                    &[&app],
                )
                .unwrap();
            if !rows.is_empty() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    });
    let r = p.run_within(
        &["run", "a", "--format", "json"],
        &[("ATTENTIVE_API_KEY", attentive_sim::DEFAULT_KEY)],
        std::time::Duration::from_secs(60),
    );
    assert!(
        killer.join().unwrap(),
        "the model backend was never killed: {}",
        r.all()
    );
    assert_eq!(r.code, 1, "{}", r.all());
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["status"], "failed", "{report}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(error.contains("PostgreSQL"), "{error}");
    assert!(r.stderr.contains("failed"), "{}", r.stderr);
    // Nothing was sent, and the snapshot knows nobody.
    let writes = sim
        .requests()
        .iter()
        .filter(|q| q.endpoint == crate::support::WRITE)
        .count();
    assert_eq!(writes, 0);
    let shown = p.run(&["contacts", "show", "bob@example.com"]);
    assert!(
        shown.stdout.contains("not in the snapshot"),
        "{}",
        shown.all()
    );
    // The next run, with the server healthy, delivers everything.
    let query_fast = p
        .read("attentive-sync.toml")
        .replace(", pg_sleep(0.3)::text AS pause", "");
    p.write("attentive-sync.toml", &query_fast);
    let (r, report) = p.sync_with(attentive_sim::DEFAULT_KEY, &[]);
    assert_eq!(r.code, 3, "{}", r.all()); // the invalid and duplicated rows are rejected
    assert!(
        report["counts"]["updated"].as_u64().unwrap() >= 3,
        "{report}"
    );
}

/// Every PostgreSQL type a model may use, next to the CSV text a person would write for the
/// same values (time stamps in another offset, JSON scalars as plain text): the two plan the
/// same attributes, and after a run from the CSV, switching the model to PostgreSQL sends
/// nothing, because every value has the same fingerprint.
#[test]
fn every_postgres_type_round_trips_into_the_fingerprints_of_the_equivalent_csv() {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let schema = PgSchema {
        name: format!("e2e_types_{}_{nanos}", std::process::id()),
    };
    let mut db = postgres::Client::connect(PG_URL, postgres::NoTls).unwrap();
    db.batch_execute(&format!(
        "CREATE SCHEMA {s};
         CREATE TABLE {s}.t (id serial PRIMARY KEY, email varchar(80), name text, small int2,
             count int4, big int8, ltv numeric(14,2), ratio float8, vip boolean, signup date,
             seen timestamp, seen_tz timestamptz, ext_id uuid, meta json, score jsonb);
         INSERT INTO {s}.t (email, name, small, count, big, ltv, ratio, vip, signup, seen,
             seen_tz, ext_id, meta, score) VALUES
           ('ann@example.com', 'Ann', -3, 70000, 9007199254740993, 41250.10, 0.25, true,
            '2024-02-29', '2024-05-01 12:30:00', '2024-05-01 12:30:00.123456+02',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\"gold\"', '12.5'),
           ('bob@example.com', 'Bob', 0, 1, -42, 0.01, -1.5e-3, false,
            '1999-12-31', '2000-01-01 00:00:00', '1999-12-31 19:00:00-05',
            '00000000-0000-0000-0000-000000000001', '7', '3'),
           ('cy@example.com', NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, 'null', NULL);",
        s = schema.name
    ))
    .unwrap();
    let csv_text =
        "email,name,small,count,big,ltv,ratio,vip,signup,seen,seen_tz,ext_id,meta,score\n\
        ann@example.com,Ann,-3,70000,9007199254740993,41250.10,0.25,true,2024-02-29,\
        2024-05-01T12:30:00Z,2024-05-01T12:30:00.123456+02:00,\
        a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,gold,12.5\n\
        bob@example.com,Bob,0,1,-42,0.01,-0.0015,false,1999-12-31,\
        2000-01-01T00:00:00Z,2000-01-01T00:00:00Z,\
        00000000-0000-0000-0000-000000000001,7,3\n\
        cy@example.com,,,,,,,,,,,,,\n";

    let sim = crate::support::start_sim(attentive_sim::SimConfig {
        contacts: crate::support::seed(&["ann@example.com", "bob@example.com", "cy@example.com"]),
        ..attentive_sim::SimConfig::default()
    });
    let base_url = format!("http://{}", sim.local_addr().unwrap());
    let custom = "\"Name\" = \"name\"\n\
        \"Small\" = { column = \"small\", type = \"number\" }\n\
        \"Count\" = { column = \"count\", type = \"number\" }\n\
        \"Big\" = { column = \"big\", type = \"number\" }\n\
        \"LTV\" = { column = \"ltv\", type = \"number\" }\n\
        \"Ratio\" = { column = \"ratio\", type = \"number\" }\n\
        \"VIP\" = { column = \"vip\", type = \"bool\" }\n\
        \"Signup\" = { column = \"signup\", type = \"date\" }\n\
        \"Seen\" = { column = \"seen\", type = \"datetime\" }\n\
        \"Seen TZ\" = { column = \"seen_tz\", type = \"datetime\" }\n\
        \"External Id\" = { column = \"ext_id\", type = \"string\" }\n\
        \"Meta\" = { column = \"meta\", type = \"string\" }\n\
        \"Score\" = { column = \"score\", type = \"number\" }";
    let csv_model = "source = \"csv\"\npath = \"data/m.csv\"";
    let pg_model = format!(
        "source = \"postgres\"\nurl = \"{PG_URL}\"\n\
         query = \"SELECT email, name, small, count, big, ltv, ratio, vip, signup, seen, seen_tz, \
         ext_id, meta, score FROM {}.t ORDER BY id\"",
        schema.name
    );
    let p = Project::new();
    let csv_config = crate::support::sim_config(&base_url, "", custom);
    let pg_config = csv_config.replacen(csv_model, &pg_model, 1);
    p.write("data/m.csv", csv_text);

    // With an empty snapshot, both plan the same changes, value for value.
    let plan_file = |config: &str| {
        p.write("attentive-sync.toml", config);
        let r = p.run(&["plan", "a", "--output", "plan.jsonl", "--format", "json"]);
        assert_eq!(r.code, 0, "{}", r.all());
        p.read("plan.jsonl")
    };
    let from_csv = shift_rows(&plan_file(&csv_config), 1);
    let from_pg = plan_file(&pg_config);
    assert_eq!(
        from_pg,
        from_csv,
        "{}",
        diff("csv", &from_csv, "postgres", &from_pg)
    );
    let ann: serde_json::Value = serde_json::from_str(from_pg.lines().next().unwrap()).unwrap();
    let value = |name: &str| {
        ann["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["attribute"] == name)
            .unwrap_or_else(|| panic!("no {name} in {ann}"))["value"]
            .clone()
    };
    assert_eq!(
        value("Big"),
        serde_json::json!(9007199254740993_i64),
        "{ann}"
    );
    assert_eq!(value("Seen TZ"), "2024-05-01T10:30:00.123456Z", "{ann}");
    assert_eq!(value("External Id"), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    assert_eq!(value("Meta"), "gold");

    // Send from the CSV, then read the same contacts from PostgreSQL: nothing to send.
    p.write("attentive-sync.toml", &csv_config);
    let (_, first) = p.sync();
    assert_eq!(first["counts"]["updated"], 2, "cy has only nulls: {first}");
    p.write("attentive-sync.toml", &pg_config);
    let r = p.run(&["plan", "a", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["counts"]["changed"], 0, "{report}");
    assert_eq!(report["counts"]["unchanged"], 3, "{report}");
    drop(db);
    drop(schema);
}
