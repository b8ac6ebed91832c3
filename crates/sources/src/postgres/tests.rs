//! Tests of the PostgreSQL source.

use super::*;

use std::sync::atomic::{AtomicU32, Ordering};

/// The server the tests use; `ATTENTIVE_SYNC_TEST_PG_URL` overrides it.
fn test_url() -> String {
    std::env::var("ATTENTIVE_SYNC_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A schema (and roles) of one test, dropped at the end even when the test fails.
struct Scratch {
    client: Client,
    schema: String,
    roles: Vec<String>,
}

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let url = test_url();
        let client = Client::connect(&url, NoTls).unwrap_or_else(|e| {
            panic!(
                "these tests need PostgreSQL at {} ({e}); start it with \
                     `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
                     or set ATTENTIVE_SYNC_TEST_PG_URL",
                redact_url(&url)
            )
        });
        let schema = format!(
            "as_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut scratch = Scratch {
            client,
            schema,
            roles: Vec::new(),
        };
        scratch.exec("CREATE SCHEMA {s}");
        scratch
    }

    /// Runs `sql` with `{s}` standing for the schema.
    fn exec(&mut self, sql: &str) {
        let sql = sql.replace("{s}", &self.schema);
        self.client
            .batch_execute(&sql)
            .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    }

    /// A login role (no password) dropped with the scratch.
    fn role(&mut self, suffix: &str) -> String {
        let role = format!("{}_{suffix}", self.schema);
        self.exec(&format!("CREATE ROLE {role} LOGIN"));
        self.roles.push(role.clone());
        role
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self
            .client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
        for role in &self.roles {
            let _ = self
                .client
                .batch_execute(&format!("DROP ROLE IF EXISTS {role}"));
        }
    }
}

fn open(query: &str) -> PostgresSource {
    PostgresSource::open(&test_url(), query).unwrap_or_else(|e| panic!("{}", full_message(&e)))
}

fn open_err(url: &str, query: &str) -> Error {
    match PostgresSource::open(url, query) {
        Ok(source) => panic!("opened: {source:?}"),
        Err(e) => e,
    }
}

fn full_message(e: &Error) -> String {
    chain(e)
}

fn read_all(source: &mut PostgresSource) -> Vec<SourceRow> {
    let mut rows = Vec::new();
    let mut row = SourceRow::default();
    while source
        .next_row(&mut row)
        .unwrap_or_else(|e| panic!("{}", full_message(&e)))
    {
        rows.push(row.clone());
    }
    rows
}

/// The values of one column of type `ty` holding `literals` (SQL expressions) in order.
fn values_of(ty: &str, literals: &[&str]) -> Vec<Value> {
    let rows: Vec<String> = literals
        .iter()
        .enumerate()
        .map(|(i, lit)| format!("({i}, CAST({lit} AS {ty}))"))
        .collect();
    let query = format!(
        "SELECT v FROM (VALUES {}) AS t(i, v) ORDER BY i",
        rows.join(", ")
    );
    let mut source = open(&query);
    read_all(&mut source)
        .into_iter()
        .map(|row| {
            assert_eq!(row.defect, None);
            row.values.into_iter().next().unwrap()
        })
        .collect()
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}
fn number(s: &str) -> Value {
    Value::Number(s.to_owned())
}
fn timestamp(s: &str) -> Value {
    Value::Timestamp(s.to_owned())
}
fn unsupported(kind: &'static str, s: &str) -> Value {
    Value::Unsupported {
        kind,
        text: s.to_owned(),
    }
}

#[test]
fn postgres_source_is_send() {
    fn send<T: Send>() {}
    send::<PostgresSource>();
}

#[test]
fn postgres_every_type_maps_to_its_value() {
    let mut scratch = Scratch::new();
    scratch.exec(
        "CREATE TABLE {s}.people (
                 email text, nick varchar(20), code char(5), sys name,
                 small int2, mid int4, big int8, ltv numeric, ratio real, score float8,
                 vip bool, born date, seen timestamp, paid timestamptz, id uuid,
                 meta json, metab jsonb
             );
             INSERT INTO {s}.people VALUES
                 ('ann@example.com', 'annie', 'ab', 'sys', 7, -42, 9223372036854775807,
                  12345678901234567890.123, 0.1, '-0', true, '2024-02-29',
                  '2024-05-01 12:00:00.5', '2024-05-01 12:00:00+05:30',
                  'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '\"vip\"', '{\"a\": [1]}'),
                 (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                  NULL, NULL, NULL, NULL, NULL);",
    );
    let mut source = open(&format!(
        "SELECT * FROM {}.people ORDER BY email NULLS LAST",
        scratch.schema
    ));
    assert_eq!(
        source.columns(),
        [
            "email", "nick", "code", "sys", "small", "mid", "big", "ltv", "ratio", "score", "vip",
            "born", "seen", "paid", "id", "meta", "metab"
        ]
    );
    let rows = read_all(&mut source);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].number, 1);
    assert_eq!(rows[1].number, 2);
    assert_eq!(
        rows[0].values,
        [
            text("ann@example.com"),
            text("annie"),
            text("ab   "),
            text("sys"),
            Value::Int(7),
            Value::Int(-42),
            Value::Int(i64::MAX),
            number("12345678901234567890.123"),
            number("0.1"),
            number("-0.0"),
            Value::Bool(true),
            Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()),
            timestamp("2024-05-01T12:00:00.500000Z"),
            timestamp("2024-05-01T06:30:00Z"),
            text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            text("vip"),
            unsupported("object", "{\"a\": [1]}"),
        ]
    );
    assert_eq!(rows[1].values, vec![Value::Null; 17]);
    assert!(rows.iter().all(|r| r.defect.is_none()));
}

#[test]
fn postgres_integers_and_booleans() {
    let _scratch = Scratch::new();
    assert_eq!(
        values_of("int2", &["32767", "-32768", "NULL"]),
        [Value::Int(32767), Value::Int(-32768), Value::Null]
    );
    assert_eq!(
        values_of("int4", &["2147483647", "-2147483648", "0"]),
        [
            Value::Int(2_147_483_647),
            Value::Int(-2_147_483_648),
            Value::Int(0)
        ]
    );
    assert_eq!(
        values_of("int8", &["9223372036854775807", "-9223372036854775808"]),
        [Value::Int(i64::MAX), Value::Int(i64::MIN)]
    );
    assert_eq!(
        values_of("bool", &["true", "false", "NULL"]),
        [Value::Bool(true), Value::Bool(false), Value::Null]
    );
}

#[test]
fn postgres_numerics_keep_every_digit() {
    let _scratch = Scratch::new();
    let literals = [
        "'12345678901234567890.123'",
        "'-12345678901234567890.123'",
        "'0'",
        "'-0'",
        "'0.000'",
        "'1.50'",
        "'-0.5'",
        "'10000'",
        "'0.0001'",
        "'0.00001'",
        "'1e-20'",
        "'99999999.99990000'",
        "'1e30'",
        "'123456789.000000001'",
        "'NaN'",
        "'Infinity'",
        "'-Infinity'",
    ];
    let got = values_of("numeric", &literals);
    let expected = [
        number("12345678901234567890.123"),
        number("-12345678901234567890.123"),
        number("0"),
        number("0"),
        number("0.000"),
        number("1.50"),
        number("-0.5"),
        number("10000"),
        number("0.0001"),
        number("0.00001"),
        number("0.00000000000000000001"),
        number("99999999.99990000"),
        number("1000000000000000000000000000000"),
        number("123456789.000000001"),
        unsupported("NaN", "NaN"),
        unsupported("infinity", "Infinity"),
        unsupported("infinity", "-Infinity"),
    ];
    assert_eq!(got, expected);
}

#[test]
fn postgres_numerics_match_the_server_text() {
    // Every numeric decodes to the text PostgreSQL itself prints.
    let _scratch = Scratch::new();
    let query = "SELECT v, v::text AS t FROM (
                 SELECT (random() * 10 ^ (random() * 40 - 20))::numeric(60, 25) * sign(random() - 0.5)::numeric AS v
                 FROM generate_series(1, 500)
                 UNION ALL SELECT round(x::numeric, s) FROM generate_series(-3, 3) x, generate_series(0, 9) s
                 UNION ALL SELECT (10::numeric ^ e) - 1 FROM generate_series(0, 30) e
                 UNION ALL SELECT 1 / (10::numeric ^ e) FROM generate_series(0, 30) e
             ) AS q";
    let mut source = open(query);
    let rows = read_all(&mut source);
    assert!(rows.len() > 500);
    for row in rows {
        let Value::Text(t) = &row.values[1] else {
            panic!("{row:?}")
        };
        assert_eq!(row.values[0], number(t), "{row:?}");
    }
}

#[test]
fn postgres_floats_are_shortest_round_trip_text() {
    // Written as every source writes floats (`crate::float`): `3.0`, `-0.0`, and NaN and
    // the infinities as `non-finite number` values (they used to be `3`, `-0`, `NaN`,
    // `infinity`: tests/float_text.rs checks the sources agree).
    let _scratch = Scratch::new();
    assert_eq!(
        values_of(
            "float8",
            &[
                "0.1",
                "'-0'",
                "123.456",
                "1e300",
                "-2.5e-10",
                "3",
                "'NaN'",
                "'Infinity'",
                "'-Infinity'"
            ]
        ),
        [
            number("0.1"),
            number("-0.0"),
            number("123.456"),
            number("1e300"),
            number("-2.5e-10"),
            number("3.0"),
            unsupported("non-finite number", "NaN"),
            unsupported("non-finite number", "inf"),
            unsupported("non-finite number", "-inf"),
        ]
    );
    assert_eq!(
        values_of("real", &["0.1", "'-0'", "16777216", "'NaN'"]),
        [
            number("0.1"),
            number("-0.0"),
            number("16777216.0"),
            unsupported("non-finite number", "NaN")
        ]
    );
}

#[test]
fn postgres_dates_and_timestamps_are_utc() {
    let _scratch = Scratch::new();
    let date = |y, m, d| Value::Date(NaiveDate::from_ymd_opt(y, m, d).unwrap());
    assert_eq!(
        values_of(
            "date",
            &[
                "'2024-02-29'",
                "'2000-01-01'",
                "'1999-12-31'",
                "'0001-01-01'",
                "'infinity'",
                "'-infinity'",
                "'10000-01-01'",
                "'0044-03-15 BC'"
            ]
        ),
        [
            date(2024, 2, 29),
            date(2000, 1, 1),
            date(1999, 12, 31),
            date(1, 1, 1),
            unsupported("infinite date", "infinity"),
            unsupported("infinite date", "-infinity"),
            unsupported("out-of-range date", "10000-01-01"),
            unsupported("out-of-range date", "0044-03-15 BC"),
        ]
    );
    assert_eq!(
        values_of(
            "timestamp",
            &[
                "'2024-05-01 12:00:00'",
                "'2024-05-01 12:00:00.123456'",
                "'1970-01-01 00:00:00.000001'",
                "'1999-12-31 23:59:59.999999'",
                "'infinity'",
                "'10000-01-01 10:00:00.25'",
                "'0044-03-15 12:00:00 BC'"
            ]
        ),
        [
            timestamp("2024-05-01T12:00:00Z"),
            timestamp("2024-05-01T12:00:00.123456Z"),
            timestamp("1970-01-01T00:00:00.000001Z"),
            timestamp("1999-12-31T23:59:59.999999Z"),
            unsupported("infinite timestamp", "infinity"),
            unsupported("out-of-range timestamp", "10000-01-01T10:00:00.250Z"),
            unsupported("out-of-range timestamp", "0044-03-15T12:00:00Z BC"),
        ]
    );
    assert_eq!(
        values_of(
            "timestamptz",
            &[
                "'2024-05-01 12:00:00+05:30'",
                "'2024-05-01 01:00:00-08'",
                "'2024-12-31 23:30:00.25-01'",
                "'-infinity'"
            ]
        ),
        [
            timestamp("2024-05-01T06:30:00Z"),
            timestamp("2024-05-01T09:00:00Z"),
            timestamp("2025-01-01T00:30:00.250000Z"),
            unsupported("infinite timestamp", "-infinity"),
        ]
    );
}

#[test]
fn postgres_timestamptz_ignores_the_session_time_zone() {
    let _scratch = Scratch::new();
    let url = format!("{}?options=-c%20TimeZone%3DAsia%2FKolkata", test_url());
    let mut source = PostgresSource::open(
        &url,
        "SELECT '2024-05-01 12:00:00+00'::timestamptz AS t, \
             current_setting('TimeZone') AS zone",
    )
    .unwrap_or_else(|e| panic!("{}", full_message(&e)));
    let rows = read_all(&mut source);
    assert_eq!(
        rows[0].values,
        [timestamp("2024-05-01T12:00:00Z"), text("Asia/Kolkata")]
    );
}

#[test]
fn postgres_texts_uuids_and_json() {
    let mut scratch = Scratch::new();
    assert_eq!(
        values_of("text", &["'Ann'", "''", "'é ☃'", "NULL"]),
        [text("Ann"), text(""), text("é ☃"), Value::Null]
    );
    assert_eq!(values_of("varchar(3)", &["'abc'"]), [text("abc")]);
    assert_eq!(values_of("char(3)", &["'a'"]), [text("a  ")]);
    assert_eq!(values_of("name", &["'pg_class'"]), [text("pg_class")]);
    assert_eq!(
        values_of(
            "uuid",
            &[
                "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'",
                "'00000000-0000-0000-0000-000000000000'"
            ]
        ),
        [
            text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            text("00000000-0000-0000-0000-000000000000")
        ]
    );
    let json = [
        "'\"vip\"'",
        r#"'"a\"b \u00e9"'"#,
        "' 12 '",
        "'1.50'",
        "'12345678901234567890.123'",
        "'-0'",
        "'true'",
        "'false'",
        "'null'",
        "'[1, 2]'",
        "'{\"a\": 1}'",
        "NULL",
    ];
    let expected = |one_fifty: &str, array: &str, object: &str| {
        vec![
            text("vip"),
            text("a\"b é"),
            Value::Int(12),
            number(one_fifty),
            number("12345678901234567890.123"),
            Value::Int(0),
            Value::Bool(true),
            Value::Bool(false),
            Value::Null,
            unsupported("array", array),
            unsupported("object", object),
            Value::Null,
        ]
    };
    assert_eq!(
        values_of("json", &json),
        expected("1.50", "[1, 2]", "{\"a\": 1}")
    );
    assert_eq!(
        values_of("jsonb", &json),
        expected("1.50", "[1, 2]", "{\"a\": 1}")
    );
    // A long array keeps its first 200 characters.
    let long = values_of(
        "jsonb",
        &["(SELECT jsonb_agg(g) FROM generate_series(1, 1000) g)"],
    );
    match &long[0] {
        Value::Unsupported { kind, text } => {
            assert_eq!(*kind, "array");
            assert_eq!(text.chars().count(), 200);
        }
        other => panic!("{other:?}"),
    }

    // citext is an extension: installed into this test's schema unless already there.
    let installed: Option<String> = scratch
        .client
        .query_opt(
            "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'citext'",
            &[],
        )
        .unwrap()
        .map(|row| row.get(0));
    let citext_schema = match installed {
        Some(schema) => schema,
        None => {
            scratch.exec("CREATE EXTENSION IF NOT EXISTS citext SCHEMA {s}");
            scratch.schema.clone()
        }
    };
    let mut source = open(&format!(
        "SELECT CAST('Ann@Example.com' AS {citext_schema}.citext) AS email, \
             CAST('x' AS {citext_schema}.citext)::text AS plain"
    ));
    assert_eq!(
        read_all(&mut source)[0].values,
        [text("Ann@Example.com"), text("x")]
    );
}

#[test]
fn postgres_domains_map_as_their_base_type() {
    let mut scratch = Scratch::new();
    scratch.exec("CREATE DOMAIN {s}.money_amount AS numeric(12, 2)");
    let mut source = open(&format!(
        "SELECT CAST(412.5 AS {}.money_amount) AS ltv",
        scratch.schema
    ));
    assert_eq!(read_all(&mut source)[0].values, [number("412.50")]);
}

#[test]
fn postgres_unsupported_types_fail_open_naming_the_column() {
    let mut scratch = Scratch::new();
    scratch.exec(
        "CREATE TYPE {s}.mood AS ENUM ('happy', 'sad');
             CREATE TABLE {s}.people (email text, tags text[], span interval, mood {s}.mood,
                                      \"Raw Bytes\" bytea);",
    );
    let e = open_err(
        &test_url(),
        &format!("SELECT * FROM {}.people", scratch.schema),
    );
    assert!(matches!(e, Error::Header { .. }), "{e:?}");
    let message = full_message(&e);
    for part in [
            "column `tags` has type text[], which attentive-sync cannot send; cast it in the query, e.g. tags::text",
            "column `span` has type interval",
            "column `mood` has type mood (an enum)",
            "column `Raw Bytes` has type bytea, which attentive-sync cannot send; cast it in the query, e.g. \"Raw Bytes\"::text",
            "supported types: text, varchar",
        ] {
            assert!(message.contains(part), "{part:?} not in {message}");
        }
    assert!(!message.contains("column `email`"), "{message}");
    // Nothing was read: the check comes from describing the query.
    let casted = open(&format!(
        "SELECT email, tags::text AS tags FROM {}.people",
        scratch.schema
    ));
    assert_eq!(casted.columns(), ["email", "tags"]);
}

#[test]
fn postgres_query_shape_problems_fail_open() {
    let _scratch = Scratch::new();
    let url = test_url();
    let message = |query: &str| full_message(&open_err(&url, query));
    let dup = message("SELECT 1 AS id, 2 AS id");
    assert!(dup.contains("more than one column named `id`"), "{dup}");
    let params = message("SELECT $1::text AS x");
    assert!(params.contains("cannot have parameters"), "{params}");
    let none = message("SELECT");
    assert!(none.contains("returns no columns"), "{none}");
    let empty = message("  ");
    assert!(empty.contains("the `query` is empty"), "{empty}");
    let two = message("SELECT 1 AS a; SELECT 2 AS b");
    assert!(two.contains("the `query`"), "{two}");
}

#[test]
fn postgres_query_runs_read_only() {
    let mut scratch = Scratch::new();
    scratch.exec("CREATE TABLE {s}.t (id int); CREATE SEQUENCE {s}.seq;");
    let url = test_url();
    let delete = full_message(&open_err(
        &url,
        &format!("DELETE FROM {}.t RETURNING id", scratch.schema),
    ));
    assert!(delete.contains("the `query` is not a SELECT"), "{delete}");
    let write = full_message(&open_err(
        &url,
        &format!("SELECT nextval('{}.seq') AS n", scratch.schema),
    ));
    assert!(write.contains("read-only transaction"), "{write}");
}

#[test]
fn postgres_streams_100k_rows_in_bounded_memory() {
    let mut scratch = Scratch::new();
    scratch.exec(
            "CREATE TABLE {s}.people AS
                 SELECT g AS id, 'user' || g || '@example.com' AS email FROM generate_series(1, 100000) g",
        );
    // About 1 KB a row: the whole result would take well over 100 MB in memory.
    // Measured before opening: the first rows are fetched by `open`.
    let before = rss_kib();
    let mut source = open(&format!(
        "SELECT id, email, repeat(md5(id::text), 4) AS a, repeat(md5(email), 4) AS b,
                    repeat(md5(id::text || 'c'), 4) AS c, repeat(md5(id::text || 'd'), 4) AS d,
                    repeat(md5(id::text || 'e'), 4) AS e, repeat(md5(id::text || 'f'), 4) AS f,
                    id * 1.5 AS ltv, id % 2 = 0 AS vip
             FROM {}.people ORDER BY id",
        scratch.schema
    ));
    let mut peak = before;
    let mut row = SourceRow::default();
    let mut n = 0u64;
    while source.next_row(&mut row).unwrap() {
        n += 1;
        assert_eq!(row.number, n);
        assert_eq!(row.values[0], Value::Int(n as i64));
        if n.is_multiple_of(5000) {
            peak = peak.max(rss_kib());
            assert_eq!(row.values[1], text(&format!("user{n}@example.com")));
            assert_eq!(row.values[8], number(&format!("{}.0", n * 3 / 2)));
        }
    }
    assert_eq!(n, 100_000);
    assert!(!source.next_row(&mut row).unwrap());
    let grown_mib = peak.saturating_sub(before) / 1024;
    eprintln!("100,000 rows read; resident memory grew by {grown_mib} MiB");
    assert!(grown_mib < 50, "memory grew by {grown_mib} MiB");
}

/// The resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn postgres_empty_result_ends_at_once() {
    let _scratch = Scratch::new();
    let mut source = open("SELECT 1 AS a WHERE false");
    let mut row = SourceRow::default();
    assert!(!source.next_row(&mut row).unwrap());
    assert!(!source.next_row(&mut row).unwrap());
}

#[test]
fn postgres_queries_in_every_reading_form() {
    let _scratch = Scratch::new();
    for query in [
        "SELECT 1 AS a;",
        "SELECT 1 AS a -- the model\n",
        "/* the model */ WITH x AS (SELECT 1 AS a) SELECT a FROM x",
        "VALUES (1)",
    ] {
        let mut source = open(query);
        let rows = read_all(&mut source);
        assert_eq!(rows.len(), 1, "{query}");
        assert_eq!(rows[0].values, [Value::Int(1)], "{query}");
    }
}

#[test]
fn postgres_connection_refused_says_what_to_check() {
    let e = open_err(
        "postgres://postgres:s3cretPW@127.0.0.1:1/test",
        "SELECT 1 AS a",
    );
    let message = full_message(&e);
    assert!(matches!(e, Error::Open { .. }), "{e:?}");
    assert!(
        message.contains("cannot connect to PostgreSQL at 127.0.0.1:1: "),
        "{message}"
    );
    assert!(
        message.contains("is the server running? check `url`"),
        "{message}"
    );
    assert!(
        message.contains("postgres://postgres:***@127.0.0.1:1/test"),
        "{message}"
    );
    assert!(!message.contains("s3cretPW"), "{message}");
    assert!(!format!("{e:?}").contains("s3cretPW"));
}

#[test]
fn postgres_unknown_host_says_what_to_check() {
    let e = open_err(
        "host=no-such-host.invalid port=5432 user=u password='s3cret PW' dbname=db",
        "SELECT 1 AS a",
    );
    let message = full_message(&e);
    assert!(
        message.contains("cannot connect to PostgreSQL at no-such-host.invalid:5432: "),
        "{message}"
    );
    assert!(message.contains("password=***"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
}

#[test]
fn postgres_unknown_role_and_database_say_what_to_check() {
    // The test server trusts local connections, so a wrong password is accepted; an
    // unknown role is how a login gets refused here.
    let e = open_err(
        "postgres://no_such_role_xyz:s3cretPW@127.0.0.1:5432/test",
        "SELECT 1 AS a",
    );
    let message = full_message(&e);
    assert!(
        message.contains(
            "PostgreSQL at 127.0.0.1:5432 refused the login of user `no_such_role_xyz`: \
                 role \"no_such_role_xyz\" does not exist"
        ),
        "{message}"
    );
    assert!(!message.contains("s3cretPW"), "{message}");

    let e = open_err(
        "postgres://postgres:s3cretPW@127.0.0.1:5432/no_such_db_xyz",
        "SELECT 1 AS a",
    );
    let message = full_message(&e);
    assert!(
        message.contains("PostgreSQL at 127.0.0.1:5432 has no database `no_such_db_xyz`"),
        "{message}"
    );
    assert!(
        message.contains("check the database name in `url`"),
        "{message}"
    );
    assert!(!message.contains("s3cretPW"), "{message}");
}

#[test]
fn postgres_wrong_password_message() {
    // The test server never asks for a password, so the message is checked on its own.
    let target = Target {
        at: "db.example.com:5432".to_owned(),
        user: Some("sync".to_owned()),
        dbname: Some("warehouse".to_owned()),
    };
    let message = login_message(
        &SqlState::INVALID_PASSWORD,
        "password authentication failed for user \"sync\" [SQLSTATE 28P01]",
        &target,
    );
    assert_eq!(
        message,
        "PostgreSQL at db.example.com:5432 rejected the user/password for user `sync`: \
             password authentication failed for user \"sync\" [SQLSTATE 28P01]; check the \
             user and password in `url`"
    );
}

#[test]
fn postgres_password_in_url_is_accepted_and_hidden() {
    // With trust authentication the password is ignored, but it must never show.
    let _scratch = Scratch::new();
    let source = PostgresSource::open(
        "postgres://postgres:hunter2pw@127.0.0.1:5432/test",
        "SELECT 1 AS a",
    )
    .unwrap_or_else(|e| panic!("{}", full_message(&e)));
    let debug = format!("{source:?}");
    assert!(
        debug.contains("postgres://postgres:***@127.0.0.1:5432/test"),
        "{debug}"
    );
    assert!(!debug.contains("hunter2pw"), "{debug}");
}

#[test]
fn postgres_bad_url_is_an_options_error() {
    let e = open_err(
        "postgres://u:s3cretPW@127.0.0.1:notaport/db",
        "SELECT 1 AS a",
    );
    assert!(matches!(e, Error::Options { .. }), "{e:?}");
    let message = full_message(&e);
    assert!(
        message.contains("the PostgreSQL `url` cannot be read"),
        "{message}"
    );
    assert!(!message.contains("s3cretPW"), "{message}");
    let e = open_err("user=u password=s3cretPW dbname=db", "SELECT 1 AS a");
    let message = full_message(&e);
    assert!(message.contains("names no host"), "{message}");
    assert!(!message.contains("s3cretPW"), "{message}");
}

#[test]
fn postgres_syntax_error_shows_where() {
    let _scratch = Scratch::new();
    let url = test_url().replace("postgres@", "postgres:s3cretPW@");
    let e = open_err(&url, "SELECT id,\n       email,\nFROM people");
    assert!(matches!(e, Error::Open { .. }), "{e:?}");
    let message = full_message(&e);
    assert!(
        message.contains(
            "the `query` has a syntax error: syntax error at or near \"FROM\" at line 3, \
                 column 1 of the query (`FROM people`) [SQLSTATE 42601]; fix `query`"
        ),
        "{message}"
    );
    assert!(!message.contains("s3cretPW"), "{message}");
    let e = open_err(&url, "SELECT nope FROM no_such_table_xyz");
    let message = full_message(&e);
    assert!(
        message.contains(
            "the `query` is invalid: relation \"no_such_table_xyz\" does not exist at line \
                 1, column 18 of the query (`SELECT nope FROM no_such_table_xyz`) [SQLSTATE \
                 42P01]; fix `query`"
        ),
        "{message}"
    );
}

#[test]
fn postgres_permission_denied_says_what_to_grant() {
    let mut scratch = Scratch::new();
    let role = scratch.role("reader");
    scratch.exec(&format!(
        "CREATE TABLE {{s}}.secret (email text);
             GRANT USAGE ON SCHEMA {{s}} TO {role};"
    ));
    let url = format!("postgres://{role}:s3cretPW@127.0.0.1:5432/test");
    let e = open_err(
        &url,
        &format!("SELECT email FROM {}.secret", scratch.schema),
    );
    assert!(matches!(e, Error::Open { .. }), "{e:?}");
    let message = full_message(&e);
    assert!(
        message.contains(&format!(
            "PostgreSQL refused the `query` to user `{role}`: permission denied for table \
                 secret [SQLSTATE 42501]"
        )),
        "{message}"
    );
    assert!(message.contains("grant it SELECT"), "{message}");
    assert!(!message.contains("s3cretPW"), "{message}");
}

#[test]
fn postgres_connection_killed_mid_stream_is_an_error() {
    let mut scratch = Scratch::new();
    let mut source = PostgresSource::open(
        &test_url().replace("postgres@", "postgres:s3cretPW@"),
        "SELECT g AS id FROM generate_series(1, 50000) g",
    )
    .unwrap();
    let mut row = SourceRow::default();
    for _ in 0..10 {
        assert!(source.next_row(&mut row).unwrap());
    }
    let pid = source.backend_pid();
    let killed: bool = scratch
        .client
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap()
        .get(0);
    assert!(killed);
    // Wait until the backend is gone.
    for _ in 0..100 {
        let alive = scratch
            .client
            .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])
            .unwrap()
            .is_some();
        if !alive {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The rows already fetched come out; then reading fails, and keeps failing.
    let mut read = 10u64;
    let error = loop {
        match source.next_row(&mut row) {
            Ok(true) => read += 1,
            Ok(false) => panic!("a lost connection read as the end of the model"),
            Err(e) => break e,
        }
        assert!(read < 50_000, "the stream never failed");
    };
    assert!(matches!(error, Error::Read { .. }), "{error:?}");
    let message = full_message(&error);
    assert!(
        message.contains(&format!(
            "the connection to PostgreSQL was lost after {read} record(s)"
        )),
        "{message}"
    );
    assert!(
        message.contains("the model was not read to the end"),
        "{message}"
    );
    assert!(!message.contains("s3cretPW"), "{message}");
    for _ in 0..3 {
        assert!(source.next_row(&mut row).is_err());
    }
    drop(scratch);
}

#[test]
fn postgres_query_failing_mid_stream_is_an_error() {
    let _scratch = Scratch::new();
    let mut source = open("SELECT 1 / (5000 - g) AS x FROM generate_series(1, 10000) g");
    let mut row = SourceRow::default();
    let mut read = 0u64;
    let error = loop {
        match source.next_row(&mut row) {
            Ok(true) => read += 1,
            Ok(false) => panic!("a failed query read as the end of the model"),
            Err(e) => break e,
        }
    };
    assert!(read < 5000);
    let message = full_message(&error);
    assert!(
        message.contains(&format!(
            "PostgreSQL stopped the query after {read} record(s): division by zero"
        )),
        "{message}"
    );
    assert!(source.next_row(&mut row).is_err());
}

/// Where `cargo xtask test` (or `cargo xtask postgres`) keeps the test server's TLS
/// certificates (`xtask/src/postgres_tls.rs`): `ca.crt` signed `server.crt` (for
/// `localhost` and `127.0.0.1`); `other-ca.crt` signed nothing the server has.
const PG_TLS_DIR: &str = "/var/lib/postgresql/attentive-sync-test-tls";
/// The server the TLS tests use: the certificate names it.
const TLS_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The test CA and the other CA, when the server on 127.0.0.1:5432 presents the test
/// certificate; else the test is skipped (it fails instead when `cargo xtask test` set
/// the certificate up, which it says in `ATTENTIVE_SYNC_TEST_PG_TLS`).
fn test_cas() -> Option<(String, String)> {
    let dir = Path::new(PG_TLS_DIR);
    let (ca, other) = (dir.join("ca.crt"), dir.join("other-ca.crt"));
    let served: Result<(String, String), String> = Client::connect(TLS_URL, NoTls)
        .and_then(|mut c| {
            let row = c.query_one(
                "SELECT current_setting('ssl'), current_setting('ssl_cert_file')",
                &[],
            )?;
            Ok((row.try_get(0)?, row.try_get(1)?))
        })
        .map_err(|e| describe(&e));
    let cert = dir.join("server.crt").display().to_string();
    let why = match served {
        Err(e) => format!("PostgreSQL at 127.0.0.1:5432 cannot be reached ({e})"),
        Ok((ssl, _)) if ssl != "on" => "PostgreSQL at 127.0.0.1:5432 has ssl off".to_owned(),
        Ok((_, file)) if file != cert => {
            format!("PostgreSQL at 127.0.0.1:5432 serves {file}, not {cert}")
        }
        Ok(_) if !ca.is_file() || !other.is_file() => format!("{PG_TLS_DIR} lacks a CA"),
        Ok(_) => {
            return Some((ca.display().to_string(), other.display().to_string()));
        }
    };
    let message =
        format!("{why}; `cargo xtask postgres` (as root) gives the server the test certificate");
    if std::env::var_os("ATTENTIVE_SYNC_TEST_PG_TLS").is_some() {
        panic!("{message}");
    }
    eprintln!("skipped: {message}");
    None
}

/// Whether the connection of `url` uses TLS, as the server sees it.
fn uses_tls(url: &str) -> bool {
    let mut source = PostgresSource::open(
        url,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .unwrap_or_else(|e| panic!("{url}: {}", full_message(&e)));
    match read_all(&mut source).as_slice() {
        [row] => row.values == [Value::Bool(true)],
        rows => panic!("{url}: {rows:?}"),
    }
}

#[test]
fn postgres_tls_require_encrypts_and_reads_rows() {
    if test_cas().is_none() {
        return;
    }
    let url = format!("{TLS_URL}?sslmode=require");
    assert!(uses_tls(&url));
    let mut source = PostgresSource::open(
        &url,
        "SELECT v FROM generate_series(1, 3) AS t(v) ORDER BY v",
    )
    .unwrap_or_else(|e| panic!("{}", full_message(&e)));
    let values: Vec<Value> = read_all(&mut source)
        .into_iter()
        .flat_map(|row| row.values)
        .collect();
    assert_eq!(values, [Value::Int(1), Value::Int(2), Value::Int(3)]);
    // libpq's default, prefer, takes TLS when the server offers it; disable never does.
    assert!(uses_tls(TLS_URL));
    assert!(!uses_tls(&format!("{TLS_URL}?sslmode=disable")));
    assert!(!uses_tls(
        "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable"
    ));
}

#[test]
fn postgres_tls_verify_full_with_the_right_ca_reads_rows() {
    let Some((ca, _)) = test_cas() else { return };
    // The certificate names both; an IP address is checked against its IP entries.
    for host in ["localhost", "127.0.0.1"] {
        assert!(uses_tls(&format!(
            "postgres://postgres@{host}:5432/test?sslmode=verify-full&sslrootcert={ca}"
        )));
    }
    assert!(uses_tls(&format!(
        "host=localhost port=5432 user=postgres dbname=test sslmode='verify-full' \
             sslrootcert='{ca}'"
    )));
}

#[test]
fn postgres_tls_another_ca_is_refused_naming_the_problem() {
    let Some((_, other)) = test_cas() else { return };
    let e = open_err(
        &format!(
            "postgres://postgres:s3cretPW@localhost:5432/test?sslmode=verify-full&\
                 sslrootcert={other}"
        ),
        "SELECT 1 AS a",
    );
    assert!(matches!(e, Error::Open { .. }), "{e:?}");
    let message = full_message(&e);
    assert!(
        message.contains(&format!(
            "the TLS handshake with PostgreSQL at localhost:5432 failed \
                 (sslmode=verify-full): its certificate is not signed by a trusted CA \
                 (trusted: the CA certificates in sslrootcert={other}); set sslrootcert to \
                 the PEM file of the CA that signed it"
        )),
        "{message}"
    );
    assert!(!message.contains("s3cretPW"), "{message}");
    // Without sslrootcert: the bundled roots, which do not hold the test CA.
    let message = full_message(&open_err(
        "postgres://postgres@localhost:5432/test?sslmode=verify-ca",
        "SELECT 1 AS a",
    ));
    assert!(
            message.contains("(sslmode=verify-ca): its certificate is not signed by a trusted CA (trusted: the Mozilla roots bundled"),
            "{message}"
        );
    // require with a root certificate verifies the chain, as libpq does.
    let message = full_message(&open_err(
        &format!("{TLS_URL}?sslmode=require&sslrootcert={other}"),
        "SELECT 1 AS a",
    ));
    assert!(
        message.contains("(sslmode=require): its certificate is not signed by a trusted CA"),
        "{message}"
    );
}

#[test]
fn postgres_tls_verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let Some((ca, _)) = test_cas() else { return };
    // Connect to 127.0.0.1, but check the certificate against another name.
    let url = |mode: &str| {
        format!(
            "host=db.example.invalid hostaddr=127.0.0.1 port=5432 user=postgres \
                 dbname=test sslmode={mode} sslrootcert={ca}"
        )
    };
    let e = open_err(&url("verify-full"), "SELECT 1 AS a");
    assert!(matches!(e, Error::Open { .. }), "{e:?}");
    let message = full_message(&e);
    assert!(
        message.contains(
            "the TLS handshake with PostgreSQL at db.example.invalid:5432 failed \
                 (sslmode=verify-full): its certificate is not issued for the host name \
                 `db.example.invalid` (it names localhost, 127.0.0.1)"
        ),
        "{message}"
    );
    assert!(message.contains("or use sslmode=verify-ca"), "{message}");
    // verify-ca checks who signed the certificate, not whom it is for.
    assert!(uses_tls(&url("verify-ca")));
}

#[test]
fn postgres_tls_require_refuses_a_server_without_tls() {
    // A server that answers the TLS request with "N" (no TLS), as PostgreSQL with ssl off.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0; 8];
        stream.read_exact(&mut request).unwrap();
        // Length 8, then the SSLRequest code 80877103.
        assert_eq!(request, [0, 0, 0, 8, 4, 210, 22, 47]);
        stream.write_all(b"N").unwrap();
        let _ = stream.read(&mut [0; 64]);
    });
    let e = open_err(
        &format!("postgres://u:s3cretPW@127.0.0.1:{port}/db?sslmode=require"),
        "SELECT 1 AS a",
    );
    server.join().unwrap();
    assert!(matches!(e, Error::Open { .. }), "{e:?}");
    let message = full_message(&e);
    assert!(
        message.contains(&format!(
            "PostgreSQL at 127.0.0.1:{port} does not accept TLS connections, and the \
                 `url` asks for sslmode=require; turn `ssl` on in the server's \
                 configuration, or use sslmode=prefer"
        )),
        "{message}"
    );
    assert!(!message.contains("s3cretPW"), "{message}");
}

#[test]
fn postgres_bad_tls_options_are_options_errors() {
    let check = |url: &str, expected: &[&str]| {
        let e = open_err(url, "SELECT 1 AS a");
        assert!(matches!(e, Error::Options { .. }), "{url}: {e:?}");
        let message = full_message(&e);
        for part in expected {
            assert!(message.contains(part), "{url}: {message}");
        }
        assert!(!message.contains("s3cretPW"), "{message}");
    };
    check(
        "postgres://u:s3cretPW@127.0.0.1:5432/db?sslmode=verify_full",
        &[
            "`sslmode=verify_full` in the PostgreSQL `url` is not a TLS mode; use one of \
                 disable, allow, prefer, require, verify-ca or verify-full",
            "postgres://u:***@127.0.0.1:5432/db",
        ],
    );
    check(
        "host=127.0.0.1 user=u password=s3cretPW sslmode=on",
        &["`sslmode=on`", "verify-full", "password=***"],
    );
    check(
        "postgres://u:s3cretPW@127.0.0.1/db?sslmode=verify-full&sslrootcert=/no/such/ca.pem",
        &[
            "`sslrootcert=/no/such/ca.pem` in the PostgreSQL `url` cannot be read (No such \
                 file or directory",
            "give the absolute path of a PEM file",
        ],
    );
    check(
        "postgres://u:s3cretPW@127.0.0.1/db?sslmode=verify-ca&sslrootcert=certs/ca.pem",
        &["`sslrootcert=certs/ca.pem` in the PostgreSQL `url` is a relative path"],
    );
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    check(
        &format!(
            "postgres://u:s3cretPW@127.0.0.1/db?sslmode=verify-full&sslrootcert={}",
            not_pem.display()
        ),
        &["holds no usable CA certificate (it holds no -----BEGIN CERTIFICATE----- block)"],
    );
    check(
            "postgres://u:s3cretPW@/db?host=/var/run/postgresql&sslmode=require",
            &["`sslmode=require` in the PostgreSQL `url` needs TLS, which needs the server's host name"],
        );
}

#[test]
fn redacts_passwords_in_urls() {
    let cases = [
        (
            "postgres://user:secret@host/db",
            "postgres://user:***@host/db",
        ),
        (
            "postgresql://user:secret@host:5432/db?sslmode=disable",
            "postgresql://user:***@host:5432/db?sslmode=disable",
        ),
        (
            "postgres://user:p@ss:w/rd@host/db",
            "postgres://user:***@host/db",
        ),
        ("postgres://user@host/db", "postgres://user@host/db"),
        ("postgres://host/db", "postgres://host/db"),
        (
            "postgres://host/db?user=u&password=secret&x=1",
            "postgres://host/db?user=u&password=***&x=1",
        ),
        (
            "postgres://user:se%40cret@host/db",
            "postgres://user:***@host/db",
        ),
        (
            "postgres://user:secret@host/db?application_name=a@b",
            "postgres://user:***@host/db?application_name=a@b",
        ),
        (
            "host=h user=u password=secret dbname=d",
            "host=h user=u password=*** dbname=d",
        ),
        (
            "host=h password = 'se cr\\'et' dbname=d",
            "host=h password = *** dbname=d",
        ),
        ("password=secret", "password=***"),
        ("host=h password='unterminated secret", "host=h ***"),
        ("host=h password", "host=h ***"),
        ("host=h user=u", "host=h user=u"),
    ];
    for (url, expected) in cases {
        assert_eq!(redact_url(url), expected, "{url}");
    }
}

#[test]
fn numeric_wire_form_decodes() {
    let wire = |ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]| {
        let mut raw = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale].iter().chain(digits) {
            raw.extend_from_slice(&w.to_be_bytes());
        }
        let mut out = String::new();
        numeric_text(&raw, &mut out).map(|d| (d, out))
    };
    let finite = |s: &str| Ok((Numeric::Finite, s.to_owned()));
    assert_eq!(wire(2, 0, 0, 2, &[12, 5000]), finite("12.50"));
    assert_eq!(wire(1, -2, 0x4000, 5, &[1000]), finite("-0.00001"));
    assert_eq!(wire(1, 2, 0, 0, &[7]), finite("700000000"));
    assert_eq!(wire(0, 0, 0, 3, &[]), finite("0.000"));
    assert_eq!(wire(0, 0, 0x4000, 0, &[]), finite("0"));
    assert_eq!(wire(0, 0, 0xC000, 0, &[]).map(|r| r.0), Ok(Numeric::NaN));
    assert_eq!(
        wire(0, 0, 0xF000, 0, &[]).map(|r| r.0),
        Ok(Numeric::Infinity(true))
    );
    assert!(wire(1, 0, 0, 0, &[10_000]).is_err());
    assert!(wire(2, 0, 0, 0, &[1]).is_err());
    assert!(wire(0, 0, 0x1234, 0, &[]).is_err());
    let mut out = String::new();
    assert!(numeric_text(&[0, 1], &mut out).is_err());
}

#[test]
fn pg_epochs_are_right() {
    assert_eq!(date_from_pg(0), NaiveDate::from_ymd_opt(2000, 1, 1));
    let mut out = String::new();
    timestamp_text(0, &mut out).unwrap();
    assert_eq!(out, "2000-01-01T00:00:00Z");
    assert!(date_from_pg(i32::MAX - 1).is_none());
}
