//! `bench source`: one deterministic model written in every source format, and the two ways of
//! reading it that the benchmark compares: our source through the `ModelSource` port, and the
//! raw read with the same driver (the baseline). One phase per process, run by
//! `bench-worker`; `cargo xtask bench source` runs them and prints the table.

use std::fmt::Write as _;
use std::fs::File;
use std::hint::black_box;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Datelike, NaiveDate};
use parquet::basic::Compression;
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::{
    BoolType, ByteArray, ByteArrayType, DataType, DoubleType, Int32Type, Int64Type,
};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use runner::config::{DatabaseUrl, ModelSpec};
use runner::sample::{Rng, FIRST, LAST, PLACES, TIERS};
use sync_core::value::{SourceRow, Value};

/// Bumped whenever the generated model changes, so cached files are regenerated.
const GENERATOR_VERSION: u32 = 1;

/// The PostgreSQL schema the gen phase drops and recreates.
const PG_SCHEMA: &str = "attentive_sync_bench";

/// The query every SQL measurement runs (SQLite: without the schema).
fn pg_query() -> String {
    format!("SELECT * FROM {PG_SCHEMA}.model")
}
const SQLITE_QUERY: &str = "SELECT * FROM model";

/// Rows per Parquet row group (8 groups at 1,000,000 rows).
const PARQUET_GROUP_ROWS: usize = 131_072;

/// The read buffer of the raw reads of files, as large as the sources' own.
const RAW_BUFFER: usize = 256 * 1024;

/// The columns of the model, in order: name, PostgreSQL type, SQLite declared type, Parquet
/// field.
const COLUMNS: [(&str, &str, &str, &str); 20] = [
    ("email", "text", "TEXT", "BYTE_ARRAY email (STRING)"),
    (
        "first_name",
        "text",
        "TEXT",
        "BYTE_ARRAY first_name (STRING)",
    ),
    ("last_name", "text", "TEXT", "BYTE_ARRAY last_name (STRING)"),
    ("address", "text", "TEXT", "BYTE_ARRAY address (STRING)"),
    ("city", "text", "TEXT", "BYTE_ARRAY city (STRING)"),
    ("state", "text", "TEXT", "BYTE_ARRAY state (STRING)"),
    ("zip_code", "text", "TEXT", "BYTE_ARRAY zip_code (STRING)"),
    ("country", "text", "TEXT", "BYTE_ARRAY country (STRING)"),
    (
        "organization",
        "text",
        "TEXT",
        "BYTE_ARRAY organization (STRING)",
    ),
    (
        "loyalty_tier",
        "text",
        "TEXT",
        "BYTE_ARRAY loyalty_tier (STRING)",
    ),
    ("phone", "text", "TEXT", "BYTE_ARRAY phone (STRING)"),
    (
        "lifetime_value",
        "numeric(12,2)",
        "REAL",
        "DOUBLE lifetime_value",
    ),
    ("orders", "integer", "INTEGER", "INT32 orders"),
    ("points", "bigint", "INTEGER", "INT64 points"),
    ("score", "double precision", "REAL", "DOUBLE score"),
    ("vip", "boolean", "BOOLEAN", "BOOLEAN vip"),
    ("email_opt_in", "boolean", "BOOLEAN", "BOOLEAN email_opt_in"),
    ("birthday", "date", "DATE", "INT32 birthday (DATE)"),
    ("signup_date", "date", "DATE", "INT32 signup_date (DATE)"),
    (
        "updated_at",
        "timestamptz",
        "TIMESTAMP",
        "INT64 updated_at (TIMESTAMP(MICROS,true))",
    ),
];

const NCOLS: usize = COLUMNS.len();

const STREETS: &[&str] = &["Main Street", "Oak Avenue", "Station Road", "Harbor Lane"];

/// 1970-01-01 as days from the common era.
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// One generated row, typed.
#[derive(Debug, Clone, PartialEq)]
struct GenRow {
    email: String,
    first_name: &'static str,
    last_name: &'static str,
    address: String,
    city: &'static str,
    state: Option<&'static str>,
    zip_code: &'static str,
    country: &'static str,
    organization: Option<String>,
    loyalty_tier: &'static str,
    phone: String,
    lifetime_value_cents: i64,
    orders: i32,
    points: i64,
    /// Thousandths.
    score_milli: i64,
    vip: bool,
    email_opt_in: bool,
    /// Days since 1970-01-01.
    birthday: Option<i32>,
    signup_date: i32,
    /// Seconds since 1970-01-01 UTC.
    updated_at: i64,
}

impl GenRow {
    /// Row `i` of the model; the same `i` and generator state give the same row.
    fn next(rng: &mut Rng, i: u64) -> GenRow {
        let (city, state, zip_code, country) = PLACES[rng.below(PLACES.len() as u64) as usize];
        let first_name = rng.pick(FIRST);
        let last_name = rng.pick(LAST);
        let address = format!("{} {}", 1 + rng.below(999), rng.pick(STREETS));
        let organization = (rng.below(10) != 0).then(|| format!("Company {}", rng.below(500)));
        let phone = format!("+1555{:07}", rng.below(10_000_000));
        // 1950-01-01 .. 2005-12-31, and 2015 .. 2024 for sign-ups.
        let birthday = (rng.below(20) != 0).then(|| -7305 + rng.below(20_454) as i32);
        GenRow {
            email: format!("user{i}@example.com"),
            first_name,
            last_name,
            address,
            city,
            state: (!state.is_empty()).then_some(state),
            zip_code,
            country,
            organization,
            loyalty_tier: rng.pick(TIERS),
            phone,
            lifetime_value_cents: rng.below(10_000_000) as i64,
            orders: rng.below(500) as i32,
            points: rng.below(5_000_000_000) as i64,
            score_milli: rng.below(100_000) as i64,
            vip: rng.below(10) == 0,
            email_opt_in: rng.below(2) == 0,
            birthday,
            signup_date: 16_436 + rng.below(3_652) as i32,
            updated_at: 1_577_836_800 + rng.below(157_766_400) as i64,
        }
    }

    fn lifetime_value(&self) -> f64 {
        self.lifetime_value_cents as f64 / 100.0
    }

    fn score(&self) -> f64 {
        self.score_milli as f64 / 1000.0
    }
}

fn date_text(days: i32) -> String {
    NaiveDate::from_num_days_from_ce_opt(days + UNIX_EPOCH_DAYS_FROM_CE)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// `sep` between the date and the time: `T` (ISO-8601, with `Z`) or a space (SQLite's own form).
fn timestamp_text(secs: i64, iso: bool) -> String {
    let format = if iso {
        "%Y-%m-%dT%H:%M:%SZ"
    } else {
        "%Y-%m-%d %H:%M:%S"
    };
    DateTime::from_timestamp(secs, 0)
        .map(|t| t.format(format).to_string())
        .unwrap_or_default()
}

/// The CSV record of a row (no line break). Nulls are empty fields; no generated value needs
/// quoting.
fn csv_line(r: &GenRow, out: &mut String) {
    out.clear();
    let opt = |s: Option<&str>| s.unwrap_or("").to_owned();
    let fields: [String; NCOLS] = [
        r.email.clone(),
        r.first_name.to_owned(),
        r.last_name.to_owned(),
        r.address.clone(),
        r.city.to_owned(),
        opt(r.state),
        r.zip_code.to_owned(),
        r.country.to_owned(),
        opt(r.organization.as_deref()),
        r.loyalty_tier.to_owned(),
        r.phone.clone(),
        format!(
            "{}.{:02}",
            r.lifetime_value_cents / 100,
            r.lifetime_value_cents % 100
        ),
        r.orders.to_string(),
        r.points.to_string(),
        r.score().to_string(),
        r.vip.to_string(),
        r.email_opt_in.to_string(),
        r.birthday.map(date_text).unwrap_or_default(),
        date_text(r.signup_date),
        timestamp_text(r.updated_at, true),
    ];
    out.push_str(&fields.join(","));
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The JSON object of a row (no line break). Nulls are `null`; dates are strings.
fn json_line(r: &GenRow, out: &mut String) {
    out.clear();
    let opt = |s: Option<&str>| s.map_or_else(|| "null".to_owned(), json_str);
    let values: [String; NCOLS] = [
        json_str(&r.email),
        json_str(r.first_name),
        json_str(r.last_name),
        json_str(&r.address),
        json_str(r.city),
        opt(r.state),
        json_str(r.zip_code),
        json_str(r.country),
        opt(r.organization.as_deref()),
        json_str(r.loyalty_tier),
        json_str(&r.phone),
        format!(
            "{}.{:02}",
            r.lifetime_value_cents / 100,
            r.lifetime_value_cents % 100
        ),
        r.orders.to_string(),
        r.points.to_string(),
        r.score().to_string(),
        r.vip.to_string(),
        r.email_opt_in.to_string(),
        r.birthday
            .map_or_else(|| "null".to_owned(), |d| json_str(&date_text(d))),
        json_str(&date_text(r.signup_date)),
        json_str(&timestamp_text(r.updated_at, true)),
    ];
    out.push('{');
    for (i, ((name, ..), value)) in COLUMNS.iter().zip(values).enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "\"{name}\":{value}");
    }
    out.push('}');
}

/// The model's files in `dir`.
#[derive(Debug, Clone)]
pub(crate) struct Files {
    pub(crate) csv: PathBuf,
    pub(crate) jsonl: PathBuf,
    pub(crate) sqlite: PathBuf,
    pub(crate) parquet: PathBuf,
    marker: PathBuf,
}

impl Files {
    pub(crate) fn in_dir(dir: &Path) -> Files {
        Files {
            csv: dir.join("model.csv"),
            jsonl: dir.join("model.jsonl"),
            sqlite: dir.join("model.db"),
            parquet: dir.join("model.parquet"),
            marker: dir.join("generated"),
        }
    }

    fn all(&self) -> [&Path; 4] {
        [&self.csv, &self.jsonl, &self.sqlite, &self.parquet]
    }
}

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Writes the model of `rows` rows as CSV, JSONL, SQLite and Parquet in `dir` (unless the files
/// of the same rows and generator are there already) and loads it into PostgreSQL at `pg_url`
/// (unless the table holds it already). Reports what it did as JSON.
pub(crate) fn generate(dir: &Path, rows: u64, pg_url: &str) -> Result<serde_json::Value, String> {
    std::fs::create_dir_all(dir).map_err(err("creating the bench folder"))?;
    let files = Files::in_dir(dir);
    let stamp = format!("rows={rows} generator={GENERATOR_VERSION}");
    let cached = std::fs::read_to_string(&files.marker).is_ok_and(|m| m.trim() == stamp)
        && files.all().iter().all(|p| p.exists());
    let started = Instant::now();
    if !cached {
        let _ = std::fs::remove_file(&files.marker);
        write_files(&files, rows)?;
        std::fs::write(&files.marker, &stamp).map_err(err("writing the marker"))?;
    }
    let files_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let postgres = match load_postgres(pg_url, &files.csv, &stamp) {
        Ok(true) => "loaded".to_owned(),
        Ok(false) => "cached".to_owned(),
        Err(e) => format!("unavailable: {e}"),
    };
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    Ok(serde_json::json!({
        "rows": rows,
        "columns": NCOLS,
        "files": if cached { "cached" } else { "generated" },
        "files_seconds": files_seconds,
        "postgres": postgres,
        "postgres_seconds": started.elapsed().as_secs_f64(),
        "bytes": {
            "csv": size(&files.csv),
            "jsonl": size(&files.jsonl),
            "sqlite": size(&files.sqlite),
            "parquet": size(&files.parquet),
        },
    }))
}

fn write_files(files: &Files, rows: u64) -> Result<(), String> {
    let tmp = |p: &Path| {
        let mut name = p.as_os_str().to_owned();
        name.push(".tmp");
        PathBuf::from(name)
    };
    for p in files.all() {
        let _ = std::fs::remove_file(p);
        let _ = std::fs::remove_file(tmp(p));
    }
    let header: Vec<&str> = COLUMNS.iter().map(|c| c.0).collect();
    let mut csv = BufWriter::with_capacity(
        1 << 20,
        File::create(tmp(&files.csv)).map_err(err("creating the CSV file"))?,
    );
    let mut jsonl = BufWriter::with_capacity(
        1 << 20,
        File::create(tmp(&files.jsonl)).map_err(err("creating the JSONL file"))?,
    );
    writeln!(csv, "{}", header.join(",")).map_err(err("writing the CSV file"))?;
    let mut sqlite = SqliteWriter::create(&tmp(&files.sqlite))?;
    let mut parquet = ParquetWriter::create(&tmp(&files.parquet))?;
    let mut rng = Rng::new(0x5EED_50C3);
    let mut line = String::with_capacity(512);
    for i in 0..rows {
        let row = GenRow::next(&mut rng, i);
        csv_line(&row, &mut line);
        writeln!(csv, "{line}").map_err(err("writing the CSV file"))?;
        json_line(&row, &mut line);
        writeln!(jsonl, "{line}").map_err(err("writing the JSONL file"))?;
        sqlite.push(&row)?;
        parquet.push(row)?;
    }
    csv.flush().map_err(err("writing the CSV file"))?;
    jsonl.flush().map_err(err("writing the JSONL file"))?;
    sqlite.finish()?;
    parquet.finish()?;
    for p in files.all() {
        std::fs::rename(tmp(p), p).map_err(err("renaming a generated file"))?;
    }
    Ok(())
}

/// Inserts rows into a new SQLite database, in one transaction.
struct SqliteWriter {
    conn: rusqlite::Connection,
    insert: String,
}

impl SqliteWriter {
    fn create(path: &Path) -> Result<SqliteWriter, String> {
        let conn = rusqlite::Connection::open(path).map_err(err("creating the SQLite file"))?;
        let columns: Vec<String> = COLUMNS.iter().map(|c| format!("{} {}", c.0, c.2)).collect();
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
             CREATE TABLE model ({});
             BEGIN;",
            columns.join(", ")
        ))
        .map_err(err("creating the SQLite table"))?;
        let marks = vec!["?"; NCOLS].join(", ");
        Ok(SqliteWriter {
            conn,
            insert: format!("INSERT INTO model VALUES ({marks})"),
        })
    }

    fn push(&mut self, r: &GenRow) -> Result<(), String> {
        let mut stmt = self
            .conn
            .prepare_cached(&self.insert)
            .map_err(err("preparing the SQLite insert"))?;
        stmt.execute(rusqlite::params![
            r.email,
            r.first_name,
            r.last_name,
            r.address,
            r.city,
            r.state,
            r.zip_code,
            r.country,
            r.organization,
            r.loyalty_tier,
            r.phone,
            r.lifetime_value(),
            r.orders,
            r.points,
            r.score(),
            r.vip,
            r.email_opt_in,
            r.birthday.map(date_text),
            date_text(r.signup_date),
            timestamp_text(r.updated_at, false),
        ])
        .map_err(err("inserting into SQLite"))?;
        Ok(())
    }

    fn finish(self) -> Result<(), String> {
        self.conn
            .execute_batch("COMMIT")
            .map_err(err("committing the SQLite rows"))
    }
}

/// Writes rows into a Parquet file, one row group per [`PARQUET_GROUP_ROWS`] rows.
struct ParquetWriter {
    writer: SerializedFileWriter<File>,
    rows: Vec<GenRow>,
}

impl ParquetWriter {
    fn create(path: &Path) -> Result<ParquetWriter, String> {
        let fields: Vec<String> = COLUMNS
            .iter()
            .map(|c| format!("  OPTIONAL {};", c.3))
            .collect();
        let schema = parse_message_type(&format!("message model {{\n{}\n}}", fields.join("\n")))
            .map_err(err("the Parquet schema"))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let file = File::create(path).map_err(err("creating the Parquet file"))?;
        let writer = SerializedFileWriter::new(file, Arc::new(schema), Arc::new(props))
            .map_err(err("starting the Parquet file"))?;
        Ok(ParquetWriter {
            writer,
            rows: Vec::with_capacity(PARQUET_GROUP_ROWS),
        })
    }

    fn push(&mut self, row: GenRow) -> Result<(), String> {
        self.rows.push(row);
        if self.rows.len() >= PARQUET_GROUP_ROWS {
            self.flush_group()?;
        }
        Ok(())
    }

    fn flush_group(&mut self) -> Result<(), String> {
        let rows = std::mem::take(&mut self.rows);
        let e = err("writing a Parquet row group");
        let mut group = self.writer.next_row_group().map_err(err("a row group"))?;
        for column in 0..NCOLS {
            let Some(mut writer) = group.next_column().map_err(err("a column"))? else {
                return Err("the Parquet writer has fewer columns than the schema".into());
            };
            /// Writes one optional column from the rows.
            fn put<T: DataType>(
                writer: &mut parquet::file::writer::SerializedColumnWriter<'_>,
                rows: &[GenRow],
                get: impl Fn(&GenRow) -> Option<T::T>,
            ) -> parquet::errors::Result<()> {
                let cells: Vec<Option<T::T>> = rows.iter().map(get).collect();
                let defs: Vec<i16> = cells.iter().map(|c| i16::from(c.is_some())).collect();
                let values: Vec<T::T> = cells.into_iter().flatten().collect();
                writer
                    .typed::<T>()
                    .write_batch(&values, Some(&defs), None)
                    .map(|_| ())
            }
            let text = |s: &str| Some(ByteArray::from(s));
            let result = match column {
                0 => put::<ByteArrayType>(&mut writer, &rows, |r| text(&r.email)),
                1 => put::<ByteArrayType>(&mut writer, &rows, |r| text(r.first_name)),
                2 => put::<ByteArrayType>(&mut writer, &rows, |r| text(r.last_name)),
                3 => put::<ByteArrayType>(&mut writer, &rows, |r| text(&r.address)),
                4 => put::<ByteArrayType>(&mut writer, &rows, |r| text(r.city)),
                5 => put::<ByteArrayType>(&mut writer, &rows, |r| r.state.and_then(text)),
                6 => put::<ByteArrayType>(&mut writer, &rows, |r| text(r.zip_code)),
                7 => put::<ByteArrayType>(&mut writer, &rows, |r| text(r.country)),
                8 => put::<ByteArrayType>(&mut writer, &rows, |r| {
                    r.organization.as_deref().and_then(text)
                }),
                9 => put::<ByteArrayType>(&mut writer, &rows, |r| text(r.loyalty_tier)),
                10 => put::<ByteArrayType>(&mut writer, &rows, |r| text(&r.phone)),
                11 => put::<DoubleType>(&mut writer, &rows, |r| Some(r.lifetime_value())),
                12 => put::<Int32Type>(&mut writer, &rows, |r| Some(r.orders)),
                13 => put::<Int64Type>(&mut writer, &rows, |r| Some(r.points)),
                14 => put::<DoubleType>(&mut writer, &rows, |r| Some(r.score())),
                15 => put::<BoolType>(&mut writer, &rows, |r| Some(r.vip)),
                16 => put::<BoolType>(&mut writer, &rows, |r| Some(r.email_opt_in)),
                17 => put::<Int32Type>(&mut writer, &rows, |r| r.birthday),
                18 => put::<Int32Type>(&mut writer, &rows, |r| Some(r.signup_date)),
                _ => put::<Int64Type>(&mut writer, &rows, |r| Some(r.updated_at * 1_000_000)),
            };
            result.map_err(err("writing a Parquet column"))?;
            writer.close().map_err(err("closing a Parquet column"))?;
        }
        group.close().map_err(e)?;
        Ok(())
    }

    fn finish(mut self) -> Result<(), String> {
        if !self.rows.is_empty() {
            self.flush_group()?;
        }
        self.writer
            .close()
            .map(|_| ())
            .map_err(err("closing the Parquet file"))
    }
}

/// Loads the CSV model into `attentive_sync_bench.model` with `COPY`, unless the table's
/// comment says it holds this model already. `Ok(true)` when it loaded.
fn load_postgres(url: &str, csv: &Path, stamp: &str) -> Result<bool, String> {
    let mut client =
        postgres::Client::connect(url, postgres::NoTls).map_err(err("connecting to PostgreSQL"))?;
    let table = format!("{PG_SCHEMA}.model");
    let current: Option<String> = client
        .query_one(
            "SELECT obj_description(to_regclass($1), 'pg_class')",
            &[&table],
        )
        .and_then(|row| row.try_get(0))
        .map_err(err("reading the bench table's comment"))?;
    if current.as_deref() == Some(stamp) {
        return Ok(false);
    }
    let columns: Vec<String> = COLUMNS.iter().map(|c| format!("{} {}", c.0, c.1)).collect();
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE;
             CREATE SCHEMA {PG_SCHEMA};
             CREATE TABLE {table} ({});",
            columns.join(", ")
        ))
        .map_err(err("creating the bench table"))?;
    let mut writer = client
        .copy_in(&format!(
            "COPY {table} FROM STDIN (FORMAT csv, HEADER true)"
        ))
        .map_err(err("starting COPY"))?;
    let mut file = File::open(csv).map_err(err("opening the CSV model"))?;
    io::copy(&mut file, &mut writer).map_err(err("sending the CSV model"))?;
    writer.finish().map_err(err("finishing COPY"))?;
    // Frozen, with hint bits set and statistics: the first read writes nothing.
    client
        .batch_execute(&format!("VACUUM (FREEZE, ANALYZE) {table}"))
        .map_err(err("vacuuming the bench table"))?;
    client
        .batch_execute(&format!("COMMENT ON TABLE {table} IS '{stamp}'"))
        .map_err(err("commenting the bench table"))?;
    Ok(true)
}

/// One measurement: `rows` read in `seconds`, and a checksum of every value touched.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Measured {
    pub(crate) rows: u64,
    pub(crate) seconds: f64,
    pub(crate) checksum: u64,
}

impl Measured {
    pub(crate) fn json(&self, source: &str, kind: &str) -> serde_json::Value {
        serde_json::json!({
            "source": source,
            "kind": kind,
            "rows": self.rows,
            "seconds": self.seconds,
            "rows_per_sec": self.rows as f64 / self.seconds.max(1e-9),
            "cpu_seconds": cpu_seconds(),
            "checksum": self.checksum,
        })
    }
}

/// The CPU time (user + system) of this process, all its threads and the children it waited
/// for (`psql`), from `/proc/self/stat`, in seconds (clock ticks of 1/100 s); 0 when unknown.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The fields after the command name (which is in parentheses and may hold spaces):
    // state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    let Some((_, after)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = (11..=14)
        .filter_map(|i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

/// Reads the whole model through our source, as the runner opens it.
pub(crate) fn ours(source: &str, files: &Files, pg_url: &str) -> Result<Measured, String> {
    let spec = match source {
        "csv" => ModelSpec::Csv {
            path: files.csv.clone(),
            delimiter: b',',
            quote: b'"',
        },
        "jsonl" => ModelSpec::Jsonl {
            path: files.jsonl.clone(),
        },
        "sqlite" => ModelSpec::Sqlite {
            path: files.sqlite.clone(),
            query: SQLITE_QUERY.to_owned(),
        },
        "parquet" => ModelSpec::Parquet {
            path: files.parquet.clone(),
        },
        "postgres" => ModelSpec::Postgres {
            url: DatabaseUrl(pg_url.to_owned()),
            query: pg_query(),
        },
        other => return Err(format!("unknown source {other}")),
    };
    let started = Instant::now();
    let mut model = runner::model::open(&spec).map_err(|e| format!("opening {source}: {e}"))?;
    if model.columns().len() != NCOLS {
        return Err(format!(
            "{source}: {} columns, expected {NCOLS}",
            model.columns().len()
        ));
    }
    // Rows are read into batches of reused rows, as the runner's reader thread does.
    let mut batch: Vec<SourceRow> = vec![SourceRow::default(); 1024];
    let mut rows = 0u64;
    let mut checksum = 0u64;
    let mut defects = 0u64;
    'read: loop {
        for row in &mut batch {
            let more = model
                .next_row(row)
                .map_err(|e| format!("reading {source}: {e}"))?;
            if !more {
                break 'read;
            }
            rows += 1;
            defects += u64::from(row.defect.is_some());
            for value in &row.values {
                checksum = checksum.wrapping_add(touch_value(value));
            }
        }
        black_box(&batch);
    }
    let seconds = started.elapsed().as_secs_f64();
    if defects > 0 {
        return Err(format!("{source}: {defects} rows came back as defects"));
    }
    Ok(Measured {
        rows,
        seconds,
        checksum: black_box(checksum),
    })
}

/// Something of every value, so that none of the work is optimised away.
fn touch_value(value: &Value) -> u64 {
    match value {
        Value::Null => 1,
        Value::Bool(b) => 2 + u64::from(*b),
        Value::Int(i) => *i as u64,
        Value::Number(s) | Value::Text(s) | Value::Timestamp(s) => touch_bytes(s.as_bytes()),
        Value::Date(d) => d.num_days_from_ce() as u64,
        Value::Unsupported { text, .. } => touch_bytes(text.as_bytes()),
    }
}

fn touch_bytes(b: &[u8]) -> u64 {
    b.len() as u64 + u64::from(b.first().copied().unwrap_or(0))
}

/// Reads the whole model with the source's driver alone (the baseline).
pub(crate) fn raw(
    source: &str,
    files: &Files,
    pg_url: &str,
    rows: u64,
) -> Result<Measured, String> {
    let started = Instant::now();
    let (read, checksum) = match source {
        "csv" => raw_csv(&files.csv)?,
        "jsonl" => raw_jsonl(&files.jsonl)?,
        "sqlite" => raw_sqlite(&files.sqlite)?,
        "parquet" => raw_parquet(&files.parquet)?,
        "postgres" => (raw_postgres(pg_url, rows)?, 0),
        other => return Err(format!("unknown source {other}")),
    };
    Ok(Measured {
        rows: read,
        seconds: started.elapsed().as_secs_f64(),
        checksum: black_box(checksum),
    })
}

/// `csv-core` (the CSV source's parser) over the file: every record's fields unescaped into a
/// buffer, no UTF-8 check, nothing copied out. The header counts as a record, and is not a row.
fn raw_csv(path: &Path) -> Result<(u64, u64), String> {
    let mut input = BufReader::with_capacity(
        RAW_BUFFER,
        File::open(path).map_err(err("opening the CSV file"))?,
    );
    let mut reader = csv_core::Reader::new();
    let mut out = vec![0u8; 4096];
    let mut ends = vec![0usize; 64];
    let mut records = 0u64;
    let mut checksum = 0u64;
    let (mut outlen, mut endlen) = (0, 0);
    loop {
        let buf = input.fill_buf().map_err(err("reading the CSV file"))?;
        let (res, nin, nout, nend) = reader.read_record(
            buf,
            out.get_mut(outlen..).unwrap_or_default(),
            ends.get_mut(endlen..).unwrap_or_default(),
        );
        input.consume(nin);
        outlen += nout;
        endlen += nend;
        match res {
            csv_core::ReadRecordResult::InputEmpty => {}
            csv_core::ReadRecordResult::OutputFull => out.resize(out.len() * 2, 0),
            csv_core::ReadRecordResult::OutputEndsFull => ends.resize(ends.len() * 2, 0),
            csv_core::ReadRecordResult::Record => {
                records += 1;
                let mut start = 0;
                for &end in ends.get(..endlen).unwrap_or_default() {
                    checksum =
                        checksum.wrapping_add(touch_bytes(out.get(start..end).unwrap_or_default()));
                    start = end;
                }
                outlen = 0;
                endlen = 0;
            }
            csv_core::ReadRecordResult::End => break,
        }
    }
    Ok((records.saturating_sub(1), checksum))
}

/// `serde_json` parsing every line into a `serde_json::Value`.
fn raw_jsonl(path: &Path) -> Result<(u64, u64), String> {
    let mut input = BufReader::with_capacity(
        RAW_BUFFER,
        File::open(path).map_err(err("opening the JSONL file"))?,
    );
    let mut line = Vec::with_capacity(1024);
    let mut rows = 0u64;
    let mut checksum = 0u64;
    loop {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .map_err(err("reading the JSONL file"))?
            == 0
        {
            break;
        }
        if line.trim_ascii().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_slice(&line).map_err(err("parsing a JSONL line"))?;
        let serde_json::Value::Object(map) = &value else {
            return Err("a JSONL line is not an object".into());
        };
        for v in map.values() {
            checksum = checksum.wrapping_add(match v {
                serde_json::Value::Null => 1,
                serde_json::Value::Bool(b) => 2 + u64::from(*b),
                serde_json::Value::Number(n) => n.as_i64().map_or(7, |i| i as u64),
                serde_json::Value::String(s) => touch_bytes(s.as_bytes()),
                _ => 9,
            });
        }
        rows += 1;
    }
    Ok((rows, checksum))
}

/// `rusqlite` stepping the same query, every column read as a `ValueRef`.
fn raw_sqlite(path: &Path) -> Result<(u64, u64), String> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err("opening the SQLite file"))?;
    let mut stmt = conn
        .prepare(SQLITE_QUERY)
        .map_err(err("preparing the query"))?;
    let ncols = stmt.column_count();
    let mut rows = stmt.query([]).map_err(err("running the query"))?;
    let mut read = 0u64;
    let mut checksum = 0u64;
    while let Some(row) = rows.next().map_err(err("stepping the query"))? {
        read += 1;
        for i in 0..ncols {
            use rusqlite::types::ValueRef;
            let v = row.get_ref(i).map_err(err("reading a column"))?;
            checksum = checksum.wrapping_add(match v {
                ValueRef::Null => 1,
                ValueRef::Integer(i) => i as u64,
                ValueRef::Real(f) => f.to_bits(),
                ValueRef::Text(b) | ValueRef::Blob(b) => touch_bytes(b),
            });
        }
    }
    Ok((read, checksum))
}

/// The `parquet` crate's column readers (the ones the Parquet source uses) decoding every
/// column of every row group, 1,024 records at a time, with their definition levels.
fn raw_parquet(path: &Path) -> Result<(u64, u64), String> {
    let file = File::open(path).map_err(err("opening the Parquet file"))?;
    let reader = SerializedFileReader::new(file).map_err(err("reading the Parquet footer"))?;
    let mut rows = 0u64;
    let mut checksum = 0u64;
    let mut defs = Vec::new();
    for g in 0..reader.num_row_groups() {
        let group = reader.get_row_group(g).map_err(err("a row group"))?;
        rows += u64::try_from(group.metadata().num_rows()).unwrap_or(0);
        for c in 0..group.num_columns() {
            let column = group.get_column_reader(c).map_err(err("a column"))?;
            let sum = match column {
                ColumnReader::BoolColumnReader(r) => {
                    read_column(r, &mut defs, |v: &bool| u64::from(*v))
                }
                ColumnReader::Int32ColumnReader(r) => {
                    read_column(r, &mut defs, |v: &i32| *v as u64)
                }
                ColumnReader::Int64ColumnReader(r) => {
                    read_column(r, &mut defs, |v: &i64| *v as u64)
                }
                ColumnReader::DoubleColumnReader(r) => {
                    read_column(r, &mut defs, |v: &f64| v.to_bits())
                }
                ColumnReader::ByteArrayColumnReader(r) => {
                    read_column(r, &mut defs, |v: &ByteArray| touch_bytes(v.data()))
                }
                _ => return Err("unexpected Parquet column type".into()),
            };
            checksum = checksum.wrapping_add(sum.map_err(err("decoding a column"))?);
        }
    }
    Ok((rows, checksum))
}

fn read_column<T: DataType>(
    mut reader: ColumnReaderImpl<T>,
    defs: &mut Vec<i16>,
    touch: impl Fn(&T::T) -> u64,
) -> parquet::errors::Result<u64> {
    let mut values = Vec::with_capacity(1024);
    let mut checksum = 0u64;
    loop {
        values.clear();
        defs.clear();
        let (records, _, _) = reader.read_records(1024, Some(defs), None, &mut values)?;
        if records == 0 {
            return Ok(checksum);
        }
        for v in &values {
            checksum = checksum.wrapping_add(touch(v));
        }
        checksum = checksum.wrapping_add(defs.len() as u64);
    }
}

/// `psql` running `COPY (query) TO STDOUT` into `/dev/null`, timed from outside. The rows are
/// the table's.
fn raw_postgres(url: &str, rows: u64) -> Result<u64, String> {
    let out = File::create("/dev/null").map_err(err("opening /dev/null"))?;
    let status = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c"])
        .arg(format!("COPY ({}) TO STDOUT", pg_query()))
        .stdin(Stdio::null())
        .stdout(out)
        .status()
        .map_err(err("running psql"))?;
    if !status.success() {
        return Err(format!("psql failed ({status})"));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_rows_are_deterministic() {
        let mut a = Rng::new(1);
        let mut b = Rng::new(1);
        for i in 0..100 {
            assert_eq!(GenRow::next(&mut a, i), GenRow::next(&mut b, i));
        }
    }

    #[test]
    fn csv_and_json_lines_have_every_column() {
        let mut rng = Rng::new(7);
        let mut line = String::new();
        for i in 0..200 {
            let row = GenRow::next(&mut rng, i);
            csv_line(&row, &mut line);
            assert_eq!(line.split(',').count(), NCOLS, "{line}");
            json_line(&row, &mut line);
            let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
            let keys: Vec<&str> = v
                .as_object()
                .expect("an object")
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(keys.len(), NCOLS);
        }
    }

    #[test]
    fn dates_and_timestamps_are_iso() {
        assert_eq!(date_text(0), "1970-01-01");
        assert_eq!(date_text(-7305), "1950-01-01");
        assert_eq!(timestamp_text(1_577_836_800, true), "2020-01-01T00:00:00Z");
        assert_eq!(timestamp_text(1_577_836_800, false), "2020-01-01 00:00:00");
    }

    #[test]
    fn every_format_reads_back_the_same_rows() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let files = Files::in_dir(dir.path());
        write_files(&files, 3000).expect("the files");
        for source in ["csv", "jsonl", "sqlite", "parquet"] {
            let ours = ours(source, &files, "").expect("our read");
            let raw = raw(source, &files, "", 3000).expect("the raw read");
            assert_eq!((ours.rows, raw.rows), (3000, 3000), "{source}");
        }
    }
}
