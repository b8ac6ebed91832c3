//! Tests of the SQLite source.

use super::*;

use rusqlite::params;
use tempfile::TempDir;

fn db(sql: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(sql).unwrap();
    (dir, path)
}

fn read_all(src: &mut SqliteSource) -> Vec<SourceRow> {
    let mut rows = Vec::new();
    let mut row = SourceRow::default();
    while src.next_row(&mut row).unwrap() {
        rows.push(row.clone());
    }
    rows
}

fn date(y: i32, m: u32, d: u32) -> Value {
    Value::Date(NaiveDate::from_ymd_opt(y, m, d).unwrap())
}

fn num(s: &str) -> Value {
    Value::Number(s.to_owned())
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn ts(s: &str) -> Value {
    Value::Timestamp(s.to_owned())
}

#[test]
fn is_send() {
    fn send<T: Send>() {}
    send::<SqliteSource>();
}

#[test]
fn types_each_storage_class() {
    let (_dir, path) = db(
        "CREATE TABLE t (email TEXT, age INTEGER, score REAL, x, b BLOB);
             INSERT INTO t VALUES ('a@x.io', 42, 412.5, 7, x'00ff');
             INSERT INTO t VALUES (NULL, -9223372036854775808, 3.0, 'seven', NULL);
             INSERT INTO t VALUES ('', 9223372036854775807, 1e-7, 2.5, x'');
             INSERT INTO t VALUES ('ünï', 0, 1e300, NULL, NULL);
             INSERT INTO t VALUES ('big', 1, 9e999, NULL, NULL);
             INSERT INTO t VALUES ('neg', 1, -0.1, NULL, NULL);",
    );
    let mut src = SqliteSource::open(&path, "SELECT * FROM t ORDER BY rowid").unwrap();
    assert_eq!(src.columns(), ["email", "age", "score", "x", "b"]);
    let rows = read_all(&mut src);
    let values: Vec<_> = rows.iter().map(|r| r.values.clone()).collect();
    let blob = |t: &str| Value::Unsupported {
        kind: "blob",
        text: t.to_owned(),
    };
    assert_eq!(
        values,
        vec![
            vec![
                text("a@x.io"),
                Value::Int(42),
                num("412.5"),
                Value::Int(7),
                blob("x'00ff'")
            ],
            vec![
                Value::Null,
                Value::Int(i64::MIN),
                num("3.0"),
                text("seven"),
                Value::Null
            ],
            vec![
                text(""),
                Value::Int(i64::MAX),
                num("1e-7"),
                num("2.5"),
                blob("x''")
            ],
            vec![
                text("ünï"),
                Value::Int(0),
                num("1e300"),
                Value::Null,
                Value::Null
            ],
            vec![
                text("big"),
                Value::Int(1),
                Value::Unsupported {
                    kind: "non-finite number",
                    text: "inf".to_owned()
                },
                Value::Null,
                Value::Null
            ],
            vec![
                text("neg"),
                Value::Int(1),
                num("-0.1"),
                Value::Null,
                Value::Null
            ],
        ]
    );
    let numbers: Vec<u64> = rows.iter().map(|r| r.number).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6]);
    assert!(rows.iter().all(|r| r.defect.is_none()));
    // The end is sticky.
    let mut row = SourceRow::default();
    assert!(!src.next_row(&mut row).unwrap());
    assert!(!src.next_row(&mut row).unwrap());
}

#[test]
fn floats_keep_their_shortest_round_trip_text() {
    let (_dir, path) = db("CREATE TABLE t (f REAL)");
    let conn = Connection::open(&path).unwrap();
    let samples = [
        0.1,
        1.0 / 3.0,
        1e16,
        123456789.125,
        -2.5e-12,
        5e-324,
        f64::MAX,
    ];
    for f in samples {
        conn.execute("INSERT INTO t VALUES (?1)", params![f])
            .unwrap();
    }
    let mut src = SqliteSource::open(&path, "SELECT f FROM t ORDER BY rowid").unwrap();
    for (row, f) in read_all(&mut src).iter().zip(samples) {
        let Value::Number(n) = &row.values[0] else {
            panic!("{:?}", row.values)
        };
        assert_eq!(n.parse::<f64>().unwrap(), f);
        assert!(sync_core::value::NumberText::parse(n).is_some(), "{n}");
    }
}

#[test]
fn declared_types_type_text_and_integers() {
    let (_dir, path) = db(
        "CREATE TABLE t (d DATE, dt DATETIME, ts TIMESTAMP, tz timestamp with time zone,
                             b BOOLEAN, b2 bool, n INTEGER);
             INSERT INTO t VALUES ('2024-05-01', '2024-05-01 12:30:00', '2024-05-01T12:30:00.5',
                                   '2024-05-01T12:30:00+02:00', 1, 0, 1);
             INSERT INTO t VALUES ('2024-5-1', 'yesterday', '2024-05-01 12:30',
                                   '2024-05-01T23:30:00.123-01:30', 0, 2, 0);
             INSERT INTO t VALUES (20240501, '2024-05-01', '2024-05-01T12:30:00Z',
                                   '2024-02-30 00:00:00', 'true', NULL, NULL);
             INSERT INTO t VALUES (NULL, NULL, '2024-05-01 12:30:00.123456', ' 2024-05-01 ',
                                   NULL, 1.5, NULL);",
    );
    let mut src = SqliteSource::open(&path, "SELECT * FROM t ORDER BY rowid").unwrap();
    let values: Vec<_> = read_all(&mut src).into_iter().map(|r| r.values).collect();
    assert_eq!(
        values,
        vec![
            vec![
                date(2024, 5, 1),
                ts("2024-05-01T12:30:00Z"),
                ts("2024-05-01T12:30:00.500Z"),
                ts("2024-05-01T10:30:00Z"),
                Value::Bool(true),
                Value::Bool(false),
                Value::Int(1),
            ],
            vec![
                text("2024-5-1"),
                text("yesterday"),
                ts("2024-05-01T12:30:00Z"),
                ts("2024-05-02T01:00:00.123Z"),
                Value::Bool(false),
                Value::Int(2),
                Value::Int(0),
            ],
            vec![
                Value::Int(20240501),
                ts("2024-05-01T00:00:00Z"),
                ts("2024-05-01T12:30:00Z"),
                text("2024-02-30 00:00:00"),
                text("true"),
                Value::Null,
                Value::Null,
            ],
            vec![
                Value::Null,
                Value::Null,
                ts("2024-05-01T12:30:00.123456Z"),
                ts("2024-05-01T00:00:00Z"),
                Value::Null,
                num("1.5"),
                Value::Null,
            ],
        ]
    );
}

#[test]
fn declared_types_follow_renamed_joined_and_aggregated_columns() {
    let (_dir, path) = db(
        "CREATE TABLE c (id INTEGER PRIMARY KEY, born DATE, vip BOOLEAN);
             CREATE TABLE o (cid INTEGER, at DATETIME);
             INSERT INTO c VALUES (1, '1990-01-02', 1);
             INSERT INTO o VALUES (1, '2024-05-01 10:00:00');",
    );
    let query = "WITH x AS (SELECT id, born AS birthday FROM c)
             SELECT x.birthday, c.vip AS is_vip, o.at AS last_order, upper('a') AS expr,
                    '2024-05-01' AS literal_date
             FROM x JOIN c ON c.id = x.id JOIN o ON o.cid = c.id;";
    let mut src = SqliteSource::open(&path, query).unwrap();
    assert_eq!(
        src.columns(),
        ["birthday", "is_vip", "last_order", "expr", "literal_date"]
    );
    let rows = read_all(&mut src);
    assert_eq!(
        rows[0].values,
        vec![
            date(1990, 1, 2),
            Value::Bool(true),
            ts("2024-05-01T10:00:00Z"),
            text("A"),
            text("2024-05-01"),
        ]
    );
}

#[test]
fn queries_without_declared_types_still_read() {
    let (_dir, path) = db("CREATE TABLE t (d DATE); INSERT INTO t VALUES ('2024-05-01');");
    // A PRAGMA cannot be a view: no declared types, plain values.
    let mut src = SqliteSource::open(&path, "PRAGMA table_info(t)").unwrap();
    let rows = read_all(&mut src);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].values[1], text("d"));
}

#[test]
fn opening_is_read_only() {
    let (_dir, path) = db("CREATE TABLE t (a); INSERT INTO t VALUES (1);");
    let mut src = SqliteSource::open(&path, "SELECT a FROM t").unwrap();
    assert_eq!(read_all(&mut src).len(), 1);
    drop(src);
    // Nothing was left behind (the type-learning view is temporary).
    let conn = Connection::open(&path).unwrap();
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(objects, 1);
    let err = SqliteSource::open(&path, "DELETE FROM t RETURNING a").unwrap_err();
    assert!(err.to_string().contains("model.db"), "{err}");
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
}

#[test]
fn a_missing_file_is_an_error_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.db");
    let err = SqliteSource::open(&path, "SELECT 1").unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.db"), "{err}");
    assert!(!path.exists());
}

#[test]
fn a_file_that_is_not_a_database_is_an_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    std::fs::write(
        &path,
        "this is not a database, just some text that is long enough",
    )
    .unwrap();
    let err = SqliteSource::open(&path, "SELECT 1").unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("notes.db"), "{err}");
}

#[test]
fn bad_queries_are_errors_with_sqlites_message() {
    let (_dir, path) = db("CREATE TABLE t (a, b)");
    let cases = [
        ("SELECT * FROM nope", "no such table: nope"),
        ("SELEC 1", "syntax error"),
        ("", "empty"),
        ("SELECT 1; SELECT 2", "more than one statement"),
        ("SELECT a FROM t WHERE a = ?", "parameters"),
        ("CREATE TABLE u (x)", "no columns"),
        ("SELECT a, b AS a FROM t", "two columns named `a`"),
        ("SELECT a AS \"\" FROM t", "no name"),
    ];
    for (query, expected) in cases {
        let err = SqliteSource::open(&path, query).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("model.db"), "{query}: {message}");
        assert!(message.contains(expected), "{query}: {message}");
    }
}

#[test]
fn invalid_utf8_text_is_a_defect_and_reading_goes_on() {
    let (_dir, path) = db("CREATE TABLE t (id INTEGER, name TEXT)");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "INSERT INTO t VALUES (1, 'ok');
             INSERT INTO t VALUES (2, CAST(x'ff00' AS TEXT));
             INSERT INTO t VALUES (3, 'fine');",
    )
    .unwrap();
    let mut src = SqliteSource::open(&path, "SELECT id, name FROM t ORDER BY id").unwrap();
    let rows = read_all(&mut src);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].defect, None);
    assert_eq!(
        rows[1].defect.as_deref(),
        Some("record 2, column `name`: not valid UTF-8")
    );
    assert_eq!(rows[1].values, vec![Value::Null, Value::Null]);
    assert_eq!(rows[2].values, vec![Value::Int(3), text("fine")]);
    assert_eq!(rows[2].defect, None);
}

#[test]
fn texts_and_blobs_mixed_in_rows_keep_their_bytes() {
    let (_dir, path) = db("CREATE TABLE t (a TEXT, b BLOB, c TEXT, d BLOB, e TEXT)");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "INSERT INTO t VALUES ('a', randomblob(40), 'bc', x'01', 'é');
             INSERT INTO t VALUES (NULL, x'', '', NULL, 'ü');
             INSERT INTO t VALUES ('x', x'0203', 'yz', x'04', '');",
    )
    .unwrap();
    let mut src = SqliteSource::open(&path, "SELECT * FROM t ORDER BY rowid").unwrap();
    let rows = read_all(&mut src);
    let blob = |t: &str| Value::Unsupported {
        kind: "blob",
        text: t.to_owned(),
    };
    let Value::Unsupported { text: long, .. } = &rows[0].values[1] else {
        panic!("{:?}", rows[0].values[1]);
    };
    assert!(long.starts_with("x'") && long.ends_with("…'"), "{long}");
    assert_eq!(long.chars().count(), 2 + 64 + 2);
    assert_eq!(rows[0].values[2..], [text("bc"), blob("x'01'"), text("é")]);
    assert_eq!(
        rows[1].values,
        [Value::Null, blob("x''"), text(""), Value::Null, text("ü")]
    );
    assert_eq!(
        rows[2].values,
        [
            text("x"),
            blob("x'0203'"),
            text("yz"),
            blob("x'04'"),
            text("")
        ]
    );
}

#[test]
fn a_character_split_across_two_cells_is_invalid_utf8() {
    // "é" is C3 A9: the row's text as a whole is valid, neither cell is.
    let (_dir, path) = db("CREATE TABLE t (a TEXT, b TEXT, c TEXT)");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "INSERT INTO t VALUES ('x', CAST(x'c3' AS TEXT), CAST(x'a9' AS TEXT));
             INSERT INTO t VALUES ('é', 'ü', CAST(x'a9' AS TEXT));
             INSERT INTO t VALUES ('é', x'c3', CAST(x'a9' AS TEXT));",
    )
    .unwrap();
    let mut src = SqliteSource::open(&path, "SELECT * FROM t ORDER BY rowid").unwrap();
    let rows = read_all(&mut src);
    let defects: Vec<_> = rows.iter().map(|r| r.defect.as_deref()).collect();
    assert_eq!(
        defects,
        [
            Some("record 1, column `b`: not valid UTF-8"),
            Some("record 2, column `c`: not valid UTF-8"),
            Some("record 3, column `c`: not valid UTF-8"),
        ]
    );
    assert!(rows
        .iter()
        .all(|r| r.values.iter().all(|v| *v == Value::Null)));
}

#[test]
fn streams_100_000_rows() {
    let (_dir, path) = db("CREATE TABLE t (id INTEGER, email TEXT, score REAL);");
    let mut conn = Connection::open(&path).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx.prepare("INSERT INTO t VALUES (?1, ?2, ?3)").unwrap();
        for i in 0..100_000_i64 {
            insert
                .execute(params![i, format!("user{i}@example.com"), i as f64 / 4.0])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    let mut src = SqliteSource::open(&path, "SELECT * FROM t ORDER BY id").unwrap();
    let mut row = SourceRow::default();
    let mut n = 0_i64;
    while src.next_row(&mut row).unwrap() {
        assert_eq!(row.number, n as u64 + 1);
        assert_eq!(row.values[0], Value::Int(n));
        assert_eq!(row.values[1], text(&format!("user{n}@example.com")));
        assert_eq!(row.values[2], num(&format!("{:?}", n as f64 / 4.0)));
        n += 1;
    }
    assert_eq!(n, 100_000);
}

#[test]
fn dropping_part_way_stops_the_reader() {
    let (_dir, path) = db("CREATE TABLE t (id INTEGER);
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 5000)
             INSERT INTO t SELECT i FROM s;");
    let mut src = SqliteSource::open(&path, "SELECT id FROM t").unwrap();
    let mut row = SourceRow::default();
    assert!(src.next_row(&mut row).unwrap());
    drop(src);
    // An endless query too.
    let endless = "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s) \
                       SELECT i FROM s";
    let mut src = SqliteSource::open(&path, endless).unwrap();
    for _ in 0..1000 {
        assert!(src.next_row(&mut row).unwrap());
    }
    drop(src);
}

#[test]
fn a_failure_on_the_reader_thread_is_an_error_from_next_row() {
    let (_dir, path) = db("CREATE TABLE t (x INTEGER);
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 1000)
             INSERT INTO t SELECT i FROM s;");
    let query = "SELECT CASE WHEN x = 500 THEN abs(-9223372036854775808) ELSE x END AS x FROM t \
             ORDER BY rowid";
    let mut src = SqliteSource::open(&path, query).unwrap();
    let mut row = SourceRow::default();
    let mut n = 0;
    let err = loop {
        match src.next_row(&mut row) {
            Ok(true) => {
                n += 1;
                assert_eq!(row.values[0], Value::Int(n));
            }
            Ok(false) => panic!("no error after {n} rows"),
            Err(e) => break e,
        }
    };
    assert_eq!(n, 499);
    assert!(
        matches!(
            err,
            Error::Read {
                line: Some(500),
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("model.db"), "{message}");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("integer overflow"), "{source}");
    // Reading does not go on after an error.
    assert!(!src.next_row(&mut row).unwrap());
}

#[test]
fn timestamps_parse_like_sqlite_writes_them() {
    let cases = [
        ("2024-05-01 12:00:00", Some("2024-05-01T12:00:00Z")),
        ("2024-05-01T12:00", Some("2024-05-01T12:00:00Z")),
        ("2024-05-01 12:00:00.1", Some("2024-05-01T12:00:00.100Z")),
        (
            "2024-05-01 12:00:00.123456789",
            Some("2024-05-01T12:00:00.123456789Z"),
        ),
        ("2024-05-01T00:30:00+01:00", Some("2024-04-30T23:30:00Z")),
        ("2024-05-01T00:30:00+0100", Some("2024-04-30T23:30:00Z")),
        ("2024-05-01T00:30:00 -05", Some("2024-05-01T05:30:00Z")),
        ("2024-05-01T12:00:00z", Some("2024-05-01T12:00:00Z")),
        ("2024-05-01", Some("2024-05-01T00:00:00Z")),
        ("2024-05-01X12:00", None),
        ("2024-05-01 25:00", None),
        ("2024-05-01 12:00+25:00", None),
        ("2024-05-01 12:00+1", None),
        ("12:00", None),
        ("", None),
        ("2024-05-01 12", None),
    ];
    for (input, expected) in cases {
        assert_eq!(timestamp(input).as_deref(), expected, "{input}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5000))]
    #[test]
    fn plain_times_read_as_chrono_reads_them(
        time in "[0-2][0-9]:[0-6][0-9]:[0-6][0-9](\\.[0-9]{0,11})?[ Z]?|[0-9 :.+-]{0,14}"
    ) {
        if let Some(t) = plain_time(&time) {
            proptest::prop_assert_eq!(
                NaiveTime::parse_from_str(&time, "%H:%M:%S%.f").ok(),
                Some(t),
                "{}",
                time
            );
        }
    }
}

#[test]
fn plain_times() {
    let t = |h, m, s, n| NaiveTime::from_hms_nano_opt(h, m, s, n);
    assert_eq!(plain_time("12:34:56"), t(12, 34, 56, 0));
    assert_eq!(plain_time("23:59:59.5"), t(23, 59, 59, 500_000_000));
    assert_eq!(plain_time("00:00:00.000000001"), t(0, 0, 0, 1));
    for other in [
        "24:00:00",
        "12:60:00",
        "12:00:60",
        "12:00:00.",
        "12:00:00.1234567890",
    ] {
        assert_eq!(plain_time(other), None, "{other}");
    }
    for other in ["12:00", "1:00:00", "12:00:00 ", "12:00:00,5", " 12:00:00"] {
        assert_eq!(plain_time(other), None, "{other}");
    }
}
