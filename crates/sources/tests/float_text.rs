//! Every source writes the same float as the same text: the same `f64`s read through SQLite
//! (`REAL`), Parquet (`DOUBLE`) and PostgreSQL (`double precision`) come out as the same
//! values, and that text, written into a JSONL or CSV model, reads back unchanged. (Before,
//! PostgreSQL wrote `3` and `NaN` where the others wrote `3.0` and `non-finite number`.)
//!
//! Needs the local PostgreSQL (`cargo xtask postgres`), like the PostgreSQL source's tests.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use parquet::data_type::DoubleType;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use sources::{CsvOptions, CsvSource, JsonlSource, ParquetSource, PostgresSource, SqliteSource};
use sync_core::ports::ModelSource;
use sync_core::value::{SourceRow, Value};

/// Floats of every shape: from short decimals, integers, signed zero, tiny and huge
/// magnitudes (exponent forms), the extremes, and the non-finite ones.
const FLOATS: [f64; 18] = [
    0.1,
    3.0,
    -0.0,
    0.0,
    412.5,
    13195.32,
    -7.25,
    123456789.123,
    9007199254740993.0,
    1e20,
    1e300,
    -2.5e-10,
    1e-7,
    f64::MAX,
    5e-324,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
];

/// The value every source is expected to give each of [`FLOATS`].
fn expected(x: f64) -> Value {
    if x.is_finite() {
        Value::Number(format!("{x:?}"))
    } else {
        Value::Unsupported {
            kind: "non-finite number",
            text: x.to_string(),
        }
    }
}

fn read_column(mut source: impl ModelSource<Error = sources::Error>) -> Vec<Value> {
    let mut out = Vec::new();
    let mut row = SourceRow::default();
    while source.next_row(&mut row).unwrap() {
        assert_eq!(row.defect, None);
        out.push(row.values[0].clone());
    }
    out
}

fn sqlite(dir: &Path, floats: &[f64]) -> Vec<Value> {
    let path = dir.join("m.sqlite");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE t (i INTEGER, x REAL)")
        .unwrap();
    for (i, x) in floats.iter().enumerate() {
        conn.execute(
            "INSERT INTO t VALUES (?1, ?2)",
            rusqlite::params![i as i64, x],
        )
        .unwrap();
    }
    drop(conn);
    read_column(SqliteSource::open(&path, "SELECT x FROM t ORDER BY i").unwrap())
}

fn parquet(dir: &Path, floats: &[f64]) -> Vec<Value> {
    let path = dir.join("m.parquet");
    let schema = Arc::new(parse_message_type("message m { REQUIRED DOUBLE x; }").unwrap());
    let props = Arc::new(WriterProperties::builder().build());
    let mut writer =
        SerializedFileWriter::new(File::create(&path).unwrap(), schema, props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let mut column = group.next_column().unwrap().unwrap();
    column
        .typed::<DoubleType>()
        .write_batch(floats, None, None)
        .unwrap();
    column.close().unwrap();
    group.close().unwrap();
    writer.close().unwrap();
    read_column(ParquetSource::open(&path).unwrap())
}

fn postgres(floats: &[f64]) -> Vec<Value> {
    let url = std::env::var("ATTENTIVE_SYNC_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let rows: Vec<String> = floats
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let literal = match x {
                x if x.is_nan() => "NaN".to_owned(),
                x if *x == f64::INFINITY => "Infinity".to_owned(),
                x if *x == f64::NEG_INFINITY => "-Infinity".to_owned(),
                x => format!("{x:e}"),
            };
            format!("({i}, '{literal}'::float8)")
        })
        .collect();
    let query = format!(
        "SELECT x FROM (VALUES {}) AS t(i, x) ORDER BY i",
        rows.join(", ")
    );
    read_column(PostgresSource::open(&url, &query).unwrap())
}

#[test]
fn every_source_writes_the_same_float_as_the_same_text() {
    let dir = tempfile::tempdir().unwrap();
    let want: Vec<Value> = FLOATS.iter().map(|&x| expected(x)).collect();
    assert_eq!(parquet(dir.path(), &FLOATS), want, "Parquet");
    assert_eq!(postgres(&FLOATS), want, "PostgreSQL");
    // SQLite stores NaN as NULL and -0.0 as 0.0 (a whole REAL is stored as an integer): it
    // holds every other float.
    let held: Vec<f64> = FLOATS
        .iter()
        .copied()
        .filter(|x| !(x.is_nan() || (*x == 0.0 && x.is_sign_negative())))
        .collect();
    let want_held: Vec<Value> = held.iter().map(|&x| expected(x)).collect();
    assert_eq!(sqlite(dir.path(), &held), want_held, "SQLite");

    // That text, as a file model holds it, reads back unchanged.
    let finite: Vec<String> = want
        .iter()
        .filter_map(|v| match v {
            Value::Number(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    let jsonl = dir.path().join("m.jsonl");
    let mut f = File::create(&jsonl).unwrap();
    for s in &finite {
        writeln!(f, "{{\"x\": {s}}}").unwrap();
    }
    drop(f);
    let texts = |values: Vec<Value>| -> Vec<String> {
        values
            .into_iter()
            .map(|v| match v {
                Value::Number(s) | Value::Text(s) => s,
                Value::Int(i) => i.to_string(),
                other => panic!("not a number: {other:?}"),
            })
            .collect()
    };
    assert_eq!(
        texts(read_column(JsonlSource::open(&jsonl).unwrap())),
        finite,
        "JSONL"
    );
    let csv = dir.path().join("m.csv");
    std::fs::write(&csv, format!("x\n{}\n", finite.join("\n"))).unwrap();
    assert_eq!(
        texts(read_column(
            CsvSource::open(&csv, &CsvOptions::default()).unwrap()
        )),
        finite,
        "CSV"
    );
}
