//! PostgreSQL models: the rows of a SQL query, streamed through a server-side cursor (see
//! [`PostgresSource`]).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use postgres::config::{Host, SslMode};
use postgres::error::{DbError, ErrorPosition, SqlState};
use postgres::types::{FromSql, Kind, Type};
use postgres::{Client, Config, NoTls, Row};
use sync_core::ports::ModelSource;
use sync_core::value::{SourceRow, Value};

use tls::{TlsMode, TlsOptions, Verify, TLS_MODES};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Model};
use crate::float::set_float;
use crate::readahead::{Feed, Next, ReadAhead};
use crate::typed;
use crate::{set_defect, set_text};

mod columns;
mod connect;
mod decode;
mod tls;

use columns::*;
pub use connect::redact_url;
use connect::*;
use decode::*;

/// The name of the server-side cursor the rows are fetched from.
const CURSOR: &str = "attentive_sync_model";

/// Rows asked for by the first `FETCH`, before the width of a row is known.
const FIRST_FETCH_ROWS: u64 = 1_000;
/// The most rows one `FETCH` asks for.
const MAX_FETCH_ROWS: u64 = 10_000;
/// The fewest rows one `FETCH` asks for, however wide the rows are.
const MIN_FETCH_ROWS: u64 = 16;
/// About how many bytes of rows one `FETCH` brings into memory (at most three batches are in
/// memory at once: one being fetched, one waiting, one being handed out).
const FETCH_BYTES: u64 = 4 * 1024 * 1024;
/// What a fetched row costs besides its values (the row, its value ranges), per column.
const ROW_OVERHEAD_PER_COLUMN: u64 = 24;

/// How long connecting may take when the `url` sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A PostgreSQL model: the rows of one query, streamed.
///
/// [`PostgresSource::open`] connects, starts a read-only transaction and has the server
/// describe the query, so its columns and their types are known (and checked) before any row
/// is read. It then declares a server-side cursor for the query and fetches the first rows;
/// the next rows are fetched from it on a thread of the source's own, in batches of at most
/// 10,000 (fewer when rows are wide: a batch holds about 4 MiB), one batch ahead of the rows
/// handed out, so the server produces the next rows while these are decoded, and memory stays
/// flat however many rows the query returns. [`SourceRow::number`] is the record number
/// (1-based).
///
/// Values map from the column's type, exactly (never through a float unless the column is
/// one):
///
/// | PostgreSQL type | value |
/// |---|---|
/// | `text`, `varchar`, `char`, `name`, `citext` | [`Value::Text`] (`char` keeps its padding) |
/// | `smallint`, `integer`, `bigint` | [`Value::Int`] |
/// | `numeric` | [`Value::Number`], its decimal text as PostgreSQL prints it (`1.50`); `NaN` and `±Infinity` are [`Value::Unsupported`] |
/// | `real`, `double precision` | [`Value::Number`], the shortest text that reads back as the same float, as every source writes floats (`0.1`, `3.0`, `-0.0`, `1e300`); `NaN` and `±Infinity` are [`Value::Unsupported`] (`non-finite number`) |
/// | `boolean` | [`Value::Bool`] |
/// | `date` | [`Value::Date`]; `±infinity` and years outside 1–9999 are [`Value::Unsupported`] |
/// | `timestamp` (taken as UTC), `timestamptz` | [`Value::Timestamp`] in UTC: `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`; `±infinity` and years outside 1–9999 are [`Value::Unsupported`] |
/// | `uuid` | [`Value::Text`], lower-case and hyphenated |
/// | `json`, `jsonb` | like a JSONL value: a string is [`Value::Text`], a number [`Value::Int`] or [`Value::Number`] (digits as written), `true`/`false` [`Value::Bool`], `null` [`Value::Null`], an array or an object [`Value::Unsupported`] |
/// | SQL `NULL` | [`Value::Null`] |
///
/// A domain maps as its base type. A column of any other type makes [`PostgresSource::open`]
/// fail, naming the column and its type.
///
/// The password in the `url` never appears in messages or in `Debug` output: the source is
/// named by [`redact_url`].
///
/// TLS follows the `url`'s `sslmode`, as libpq reads it (rustls does the TLS):
///
/// | `sslmode` | TLS | the server's certificate |
/// |---|---|---|
/// | `disable` | never | — |
/// | `allow` | only when the server refuses the connection without | not checked |
/// | `prefer` (the default) | when the server offers it (without, when it offers none or the handshake fails) | not checked |
/// | `require` | always | not checked; without `sslrootcert` the connection is encrypted but the server could be anyone (with `sslrootcert`, checked as by `verify-ca`, as libpq does) |
/// | `verify-ca` | always | signed by a CA of `sslrootcert` |
/// | `verify-full` | always | signed by a CA of `sslrootcert`, and issued for the host of the `url` |
///
/// `sslrootcert` is the absolute path of a PEM file of CA certificates; without it,
/// `verify-ca` and `verify-full` trust the Mozilla roots bundled with attentive-sync. TLS is
/// not used over Unix sockets.
///
/// The client is synchronous (it drives its own small runtime): call it from a plain thread or
/// `spawn_blocking`, never directly on an async runtime's worker.
pub struct PostgresSource {
    /// The `url` with its password hidden, for messages.
    name: String,
    /// The password, to scrub from messages that come from the server or the client library.
    secret: Option<String>,
    columns: Vec<String>,
    types: Vec<ColumnType>,
    /// Each column's type as named in messages.
    type_names: Vec<String>,
    /// The thread that owns the connection and fetches the rows, a batch ahead.
    ahead: ReadAhead<Vec<Row>, postgres::Error>,
    /// The rows of the last `FETCH` not yet handed out.
    batch: std::vec::IntoIter<Row>,
    /// The number of the last record handed out.
    record: u64,
    /// The server process serving this source, as `pg_stat_activity` shows it.
    backend_pid: i32,
    /// Why reading stopped, when it failed: every later read fails the same way.
    failure: Option<(io::ErrorKind, String)>,
}

impl fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSource")
            .field("name", &self.name)
            .field("columns", &self.columns)
            .field("backend_pid", &self.backend_pid)
            .field("record", &self.record)
            .field("open", &self.ahead.is_running())
            .finish_non_exhaustive()
    }
}

impl PostgresSource {
    /// Connects to the PostgreSQL server at `url` and prepares to stream the rows of `query`.
    ///
    /// `url` is a `postgres://user:password@host:port/database?option=value` URL or libpq
    /// `key=value` pairs; `sslmode` and `sslrootcert` set TLS (see [`PostgresSource`]). `query` is one `SELECT` (or `VALUES`, `TABLE`, `WITH ... SELECT`)
    /// without parameters; it runs in a read-only transaction.
    ///
    /// Fails when the server cannot be reached or refuses the login, when TLS fails (the
    /// message names the server and the reason: an untrusted certificate, a certificate for
    /// another host, a server without TLS), when the query is invalid
    /// or not permitted, and when a column has a type that cannot be sent (the message names
    /// the column, its type and the supported types) or a name another column has too.
    pub fn open(url: &str, query: &str) -> Result<Self, Error> {
        let name = redact_url(url);
        let model = || Model::Database(name.clone());
        let options = |message: String| Error::Options {
            model: model(),
            message,
        };
        // The client library knows neither `sslrootcert` nor the verifying modes: they are
        // taken out of the `url` and applied here.
        let (url, tls_options) = tls::split_tls_options(url);
        let mut config: Config = url.parse().map_err(|e: postgres::Error| {
            options(format!(
                "the PostgreSQL `url` cannot be read ({}); write it as \
                 postgres://user:password@host:port/database, or as key=value pairs \
                 (host=... port=... user=... password=... dbname=...)",
                chain(&e)
            ))
        })?;
        let secret = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .filter(|p| !p.is_empty());
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err(options(
                "the PostgreSQL `url` names no host; write it as \
                 postgres://user:password@host:port/database"
                    .to_owned(),
            ));
        }
        let tls = Tls::of(&tls_options, &config)
            .map_err(|message| options(scrub(message, secret.as_deref())))?;
        if query.trim().is_empty() {
            return Err(options(
                "the `query` is empty; write the SELECT that returns the model's rows".to_owned(),
            ));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("attentive-sync");
        }
        let target = Target::of(&config);
        let open_error = |kind: io::ErrorKind, message: String| Error::Open {
            model: model(),
            source: io::Error::new(kind, scrub(message, secret.as_deref())),
        };

        let mut client = tls
            .connect(&mut config)
            .map_err(|e| open_error(connect_error_kind(&e), connect_message(&e, &target, &tls)))?;
        let lost = |e: &postgres::Error, doing: &str| {
            open_error(
                io::ErrorKind::ConnectionAborted,
                format!(
                    "PostgreSQL at {} failed while {doing}: {}",
                    target.at,
                    describe(e)
                ),
            )
        };
        let backend_pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .and_then(|row| row.try_get(0))
            .map_err(|e| lost(&e, "starting the session"))?;
        client
            .batch_execute("START TRANSACTION READ ONLY")
            .map_err(|e| lost(&e, "starting a read-only transaction"))?;

        // Describe the query: its columns and their types, before any row is read.
        let statement = client.prepare(query).map_err(|e| {
            open_error(
                query_error_kind(&e),
                query_message(&e, query, Some(0), &target),
            )
        })?;
        if let Some(first) = statement.params().first() {
            return Err(options(format!(
                "the `query` takes {} parameter(s) ($1 has type {}); a model query cannot \
                 have parameters: write the values into the query",
                statement.params().len(),
                type_name(first)
            )));
        }
        let header = |message: String| Error::Header {
            model: model(),
            message,
        };
        if statement.columns().is_empty() {
            return Err(header(
                "the `query` returns no columns; a model query is a SELECT that returns the \
                 identifier and attribute columns"
                    .to_owned(),
            ));
        }
        let QueryColumns {
            names: columns,
            types,
            type_names,
        } = QueryColumns::check(statement.columns()).map_err(header)?;
        drop(statement);

        let declare = format!("DECLARE {CURSOR} NO SCROLL CURSOR FOR ");
        client
            .execute(&format!("{declare}{query}"), &[])
            .map_err(|e| {
                let offset = declare.chars().count();
                let message = if e.code() == Some(&SqlState::SYNTAX_ERROR) {
                    // The query itself was understood: it is not one a cursor can run.
                    format!(
                        "the `query` is not a SELECT: {}; a model query is a SELECT (or \
                         VALUES, TABLE, WITH ... SELECT) that only reads",
                        describe(&e)
                    )
                } else {
                    query_message(&e, query, Some(offset), &target)
                };
                open_error(query_error_kind(&e), message)
            })?;

        // The first rows: an error the query raises on them is found before the run starts.
        let first = fetch(&mut client, FIRST_FETCH_ROWS).map_err(|e| {
            open_error(
                query_error_kind(&e),
                query_message(&e, query, None, &target),
            )
        })?;
        let exhausted = (first.len() as u64) < FIRST_FETCH_ROWS;
        let next_rows = fetch_size(&first, columns.len());
        let ahead = ReadAhead::spawn("postgres-model", 1, move |feed| {
            fetch_thread(client, exhausted, next_rows, feed)
        })
        .map_err(|e| open_error(e.kind(), format!("cannot start the reading thread: {e}")))?;
        Ok(PostgresSource {
            name: name.clone(),
            secret: secret.clone(),
            columns,
            types,
            type_names,
            ahead,
            batch: first.into_iter(),
            record: 0,
            backend_pid,
            failure: None,
        })
    }

    /// The server process serving this source (`pg_backend_pid()`).
    #[cfg(test)]
    fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// Waits for the next batch of rows from the fetching thread: `Ok(false)` at the end. A
    /// failure stops the read for good.
    fn next_batch(&mut self) -> Result<bool, Error> {
        let e = match self.ahead.next() {
            Next::Batch(rows) => {
                self.batch = rows.into_iter();
                return Ok(true);
            }
            Next::End => {
                self.finish();
                return Ok(false);
            }
            Next::Failed(e) => e,
            Next::Stopped => {
                self.finish();
                self.failure = Some((
                    io::ErrorKind::Other,
                    "the thread reading from PostgreSQL stopped unexpectedly; the model was \
                     not read to the end"
                        .to_owned(),
                ));
                return Err(self.failure_error());
            }
        };
        let kind = if is_connection_lost(&e) {
            io::ErrorKind::ConnectionAborted
        } else {
            io::ErrorKind::Other
        };
        let what = if kind == io::ErrorKind::ConnectionAborted {
            "the connection to PostgreSQL was lost"
        } else {
            "PostgreSQL stopped the query"
        };
        let message = scrub(
            format!(
                "{what} after {} record(s): {}; the model was not read to the end",
                self.record,
                describe(&e)
            ),
            self.secret.as_deref(),
        );
        self.finish();
        self.failure = Some((kind, message));
        Err(self.failure_error())
    }

    /// The error every read returns once reading has failed.
    fn failure_error(&self) -> Error {
        let (kind, message) = match &self.failure {
            Some((kind, message)) => (*kind, message.clone()),
            None => (io::ErrorKind::Other, "reading failed".to_owned()),
        };
        Error::Read {
            model: Model::Database(self.name.clone()),
            line: Some(self.record + 1),
            source: io::Error::new(kind, message),
        }
    }

    /// Ends the read: the fetching thread has closed the connection and ended.
    fn finish(&mut self) {
        self.batch = Vec::new().into_iter();
    }

    /// Decodes one fetched row into `row`, or marks it as a defect.
    fn fill_row(&mut self, fetched: &Row, row: &mut SourceRow) {
        row.reset(self.record, self.columns.len());
        let mut defect = None;
        for (i, (value, ty)) in row.values.iter_mut().zip(&self.types).enumerate() {
            let decoded = match fetched.try_get::<_, Cell<'_>>(i) {
                Ok(Cell(None)) => {
                    *value = Value::Null;
                    Ok(())
                }
                Ok(Cell(Some(raw))) => decode(*ty, raw, value),
                Err(e) => Err(chain(&e)),
            };
            if let Err(why) = decoded {
                let column = self.columns.get(i).map_or("?", String::as_str);
                let ty = self.type_names.get(i).map_or("?", String::as_str);
                defect = Some(format!(
                    "record {}: column `{column}` ({ty}): the value cannot be read: {why}",
                    self.record
                ));
                break;
            }
        }
        if let Some(defect) = defect {
            set_defect(row, defect);
        }
    }
}

impl ModelSource for PostgresSource {
    type Error = Error;

    /// It reads on its own thread (`crate::readahead::ReadAhead`).
    fn reads_ahead(&self) -> bool {
        true
    }

    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_row(&mut self, row: &mut SourceRow) -> Result<bool, Error> {
        loop {
            if self.failure.is_some() {
                return Err(self.failure_error());
            }
            if let Some(fetched) = self.batch.next() {
                self.record += 1;
                self.fill_row(&fetched, row);
                return Ok(true);
            }
            if !self.next_batch()? {
                return Ok(false);
            }
        }
    }
}

/// Fetches up to `rows` rows from the cursor.
fn fetch(client: &mut Client, rows: u64) -> Result<Vec<Row>, postgres::Error> {
    client.query(&format!("FETCH FORWARD {rows} FROM {CURSOR}"), &[])
}

/// How many rows the next `FETCH` asks for, after `rows`: up to 10,000, fewer when they are
/// wide, so that a batch holds about [`FETCH_BYTES`].
fn fetch_size(rows: &[Row], ncols: usize) -> u64 {
    let mut bytes = 0u64;
    for row in rows {
        bytes += ROW_OVERHEAD_PER_COLUMN * ncols as u64;
        for i in 0..ncols {
            if let Ok(Cell(Some(raw))) = row.try_get::<_, Cell<'_>>(i) {
                bytes += raw.len() as u64;
            }
        }
    }
    match bytes.checked_div(rows.len() as u64) {
        None => FIRST_FETCH_ROWS,
        Some(per_row) => (FETCH_BYTES / per_row.max(1)).clamp(MIN_FETCH_ROWS, MAX_FETCH_ROWS),
    }
}

/// The fetching thread: fetches batches of `rows` rows (sized after the batch before) and
/// hands them to `feed`, one batch ahead of the reader, until the cursor is exhausted (then it
/// closes the connection), a `FETCH` fails, or the receiver is gone (then the connection is
/// dropped, which ends the transaction).
fn fetch_thread(
    mut client: Client,
    exhausted: bool,
    mut rows: u64,
    feed: Feed<Vec<Row>, postgres::Error>,
) {
    let mut exhausted = exhausted;
    while !exhausted {
        match fetch(&mut client, rows) {
            Ok(fetched) => {
                exhausted = (fetched.len() as u64) < rows;
                let next = fetch_size(&fetched, fetched.first().map_or(0, Row::len));
                if !feed.send(fetched) {
                    return;
                }
                rows = next;
            }
            Err(e) => {
                feed.fail(e);
                return;
            }
        }
    }
    // Every row has arrived; a failure to say goodbye changes nothing.
    let _ = client.close();
    feed.end();
}

#[cfg(test)]
mod tests;
