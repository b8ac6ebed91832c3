//! SQLite models: the rows of one query, streamed from a reader thread (see [`SqliteSource`]).

use std::fmt;

use crate::float::set_float;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender};

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, InterruptHandle, OpenFlags};
use sync_core::ports::ModelSource;
use sync_core::value::{SourceRow, Value};

use crate::columns::{name_problem, NameProblem};
use crate::error::{Error, Model};
use crate::readahead::{Feed, Next, ReadAhead};
use crate::typed;
use crate::{set_defect, set_text};

mod columns;
mod decode;

use columns::*;
use decode::*;

/// At most this many cells (rows × columns) travel in one batch from the reader thread: 2,048
/// rows of 16 columns. Large batches make the threads wait on each other rarely, which
/// matters on a busy machine, where every wait can cost a scheduling delay.
const BATCH_CELLS: usize = 32 * 1024;

/// A batch is sent early once its text and blob values reach this many bytes.
const BATCH_BYTES: usize = 1 << 20;

/// How many full batches may wait in the channel while the reader thread fills the next one.
const BATCHES_IN_FLIGHT: usize = 4;

/// A SQLite model: the rows of one query, read from a database opened read-only.
///
/// The query runs on a dedicated reader thread (a `rusqlite` statement borrows its
/// connection, so the connection and the statement live together on that thread). Rows come
/// over a bounded channel in batches of at most 32,768 cells (2,048 rows of 16 columns; fewer
/// when their text reaches 1 MiB), at most four batches waiting, so memory stays flat however
/// many rows the query
/// returns; consumed batches go back to the thread to be refilled, so rows stop allocating
/// once the first few batches have been read. The reader thread only steps the query and
/// copies each cell as SQLite gives it; values are typed as rows are handed out, on the
/// caller's thread, so the two threads share the work.
///
/// Values are typed by their SQLite storage class, and by the declared type of the column
/// they come from (`CREATE TABLE t (d DATE, ...)`; an expression has no declared type):
///
/// | storage class | declared type | value |
/// |---|---|---|
/// | `NULL` | any | [`Value::Null`] |
/// | `INTEGER` | `BOOLEAN`, `BOOL` | [`Value::Bool`] for 0 and 1, else [`Value::Int`] |
/// | `INTEGER` | other | [`Value::Int`] |
/// | `REAL` | any | [`Value::Number`] with the shortest text that reads back as the same `f64` (`412.5`, `3.0`, `1e-7`); infinities are [`Value::Unsupported`] |
/// | `TEXT` | `DATE` | [`Value::Date`] when the text is `YYYY-MM-DD`, else [`Value::Text`] |
/// | `TEXT` | `DATETIME`, `TIMESTAMP`, `TIMESTAMPTZ` | [`Value::Timestamp`] (`YYYY-MM-DDTHH:MM:SS[.fff]Z`, UTC assumed without an offset) when the text is a SQLite date-time, else [`Value::Text`] |
/// | `TEXT` | other | [`Value::Text`] |
/// | `BLOB` | any | [`Value::Unsupported`] (`blob`) |
///
/// A declared type matches by its first word, in any case (`timestamp with time zone` is a
/// `TIMESTAMP`). Text that is not valid UTF-8 makes its row a defect.
///
/// [`SourceRow::number`] is the 1-based record number.
pub struct SqliteSource {
    path: PathBuf,
    columns: Vec<String>,
    /// How each column's declared type types its values.
    declared: Vec<Declared>,
    /// The reader thread, a few batches ahead.
    ahead: ReadAhead<Batch, Error>,
    batch: Batch,
    /// The next row of `batch` to hand out.
    next: usize,
    /// The number of the last record handed out.
    number: u64,
    done: bool,
    interrupt: InterruptHandle,
}

impl fmt::Debug for SqliteSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteSource")
            .field("path", &self.path)
            .field("columns", &self.columns)
            .field("record", &self.number)
            .finish_non_exhaustive()
    }
}

/// Rows as the reader thread read them, untyped: `rows` rows of one cell per column, back to
/// back.
#[derive(Default)]
struct Batch {
    cells: Vec<Cell>,
    /// The bytes of the text cells, back to back.
    text: Vec<u8>,
    /// Where each row's text ends in `text`.
    text_ends: Vec<usize>,
    /// The first bytes of the blob cells, back to back.
    blobs: Vec<u8>,
    /// Where each row's blob bytes end in `blobs`.
    blob_ends: Vec<usize>,
    rows: usize,
}

impl Batch {
    fn clear(&mut self) {
        self.cells.clear();
        self.text.clear();
        self.text_ends.clear();
        self.blobs.clear();
        self.blob_ends.clear();
        self.rows = 0;
    }

    /// Appends a cell (a copy of a text, the first bytes of a blob).
    fn push(&mut self, value: ValueRef<'_>) {
        let cell = match value {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(i) => Cell::Integer(i),
            ValueRef::Real(f) => Cell::Real(f),
            ValueRef::Text(b) => {
                self.text.extend_from_slice(b);
                Cell::Text(self.text.len())
            }
            ValueRef::Blob(b) => {
                // Enough for its preview, and to know that it is longer.
                self.blobs
                    .extend_from_slice(b.get(..=BLOB_PREVIEW_BYTES).unwrap_or(b));
                Cell::Blob(self.blobs.len())
            }
        };
        self.cells.push(cell);
    }

    /// Ends the row being pushed.
    fn end_row(&mut self) {
        self.text_ends.push(self.text.len());
        self.blob_ends.push(self.blobs.len());
        self.rows += 1;
    }

    /// Where row `r`'s text and blob bytes start in `text` and `blobs`.
    fn row_starts(&self, r: usize) -> (usize, usize) {
        match r.checked_sub(1) {
            Some(previous) => (
                self.text_ends.get(previous).copied().unwrap_or(0),
                self.blob_ends.get(previous).copied().unwrap_or(0),
            ),
            None => (0, 0),
        }
    }

    /// The text of row `r` (starting at `start` in `text`), when all of it is valid UTF-8.
    fn row_text(&self, r: usize, start: usize) -> Option<&str> {
        let end = *self.text_ends.get(r)?;
        std::str::from_utf8(self.text.get(start..end)?).ok()
    }
}

/// One value as the reader thread copied it. The bytes of a text are in [`Batch::text`], up to
/// the end it holds, from the end of the row's text cell before it (or the row's start); those
/// of a blob likewise in [`Batch::blobs`] (at most [`BLOB_PREVIEW_BYTES`] + 1 bytes: enough for
/// [`hex_preview`]). Ends only, so that a cell takes 16 bytes.
#[derive(Debug, Clone, Copy)]
enum Cell {
    Null,
    Integer(i64),
    Real(f64),
    Text(usize),
    Blob(usize),
}

const _: () = assert!(std::mem::size_of::<Cell>() <= 16);

/// What the reader thread reports once the query is prepared.
struct Ready {
    columns: Vec<String>,
    declared: Vec<Declared>,
    interrupt: InterruptHandle,
}

impl SqliteSource {
    /// Opens the SQLite database at `path` read-only (it is never created) and prepares
    /// `query`, which must be one read-only statement returning uniquely named columns.
    ///
    /// Errors: the file is missing or is not a SQLite database ([`Error::Open`]); the query
    /// does not compile, has parameters, writes, or returns no column ([`Error::Options`], with
    /// SQLite's message); two columns have the same name, or one has none ([`Error::Header`]).
    pub fn open(path: &Path, query: &str) -> Result<Self, Error> {
        // A read-only open never creates the file, but SQLite's "unable to open" says less
        // than the operating system does about a missing file.
        if let Err(source) = std::fs::metadata(path) {
            return Err(Error::Open {
                model: Model::File(path.to_owned()),
                source,
            });
        }
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread_path = path.to_owned();
        let thread_query = query.to_owned();
        let mut ahead = ReadAhead::spawn("sqlite-model", BATCHES_IN_FLIGHT, move |feed| {
            read_thread(&thread_path, &thread_query, &ready_tx, feed)
        })
        .map_err(|source| Error::Open {
            model: Model::File(path.to_owned()),
            source,
        })?;
        let ready = match ready_rx.recv() {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => {
                let _ = ahead.next();
                return Err(e);
            }
            Err(_) => {
                let _ = ahead.next();
                return Err(Error::Open {
                    model: Model::File(path.to_owned()),
                    source: io::Error::other("the SQLite reader thread stopped unexpectedly"),
                });
            }
        };
        Ok(SqliteSource {
            path: path.to_owned(),
            columns: ready.columns,
            declared: ready.declared,
            ahead,
            batch: Batch::default(),
            next: 0,
            number: 0,
            done: false,
            interrupt: ready.interrupt,
        })
    }
}

impl ModelSource for SqliteSource {
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
            if self.next < self.batch.rows {
                self.take_row(row);
                return Ok(true);
            }
            if self.done {
                return Ok(false);
            }
            if self.batch.rows > 0 {
                self.ahead.recycle(std::mem::take(&mut self.batch));
            }
            match self.ahead.next() {
                Next::Batch(batch) => {
                    self.batch = batch;
                    self.next = 0;
                }
                Next::End => {
                    self.finish();
                    return Ok(false);
                }
                Next::Failed(e) => {
                    self.finish();
                    return Err(e);
                }
                Next::Stopped => {
                    self.finish();
                    return Err(Error::Read {
                        model: Model::File(self.path.clone()),
                        line: Some(self.number + 1),
                        source: io::Error::other("the SQLite reader thread stopped unexpectedly"),
                    });
                }
            }
        }
    }
}

impl SqliteSource {
    /// Types the next row of the current batch into `row`, reusing its values' allocations.
    fn take_row(&mut self, row: &mut SourceRow) {
        self.number += 1;
        let ncols = self.columns.len();
        row.reset(self.number, ncols);
        let start = self.next * ncols;
        let batch = &self.batch;
        let cells = batch.cells.get(start..start + ncols).unwrap_or_default();
        let (row_start, mut blob_at) = batch.row_starts(self.next);
        let mut text_at = row_start;
        // The row's text is checked as UTF-8 at once; a cell whose bounds are character
        // bounds of valid text is valid. Otherwise each cell is checked on its own.
        let row_text = batch.row_text(self.next, row_start);
        let mut bad = None;
        let slots = row.values.iter_mut().zip(cells).zip(&self.declared);
        for (i, ((slot, &cell), &decl)) in slots.enumerate() {
            let set = match cell {
                Cell::Null => set_value(slot, ValueRef::Null, decl),
                Cell::Integer(n) => set_value(slot, ValueRef::Integer(n), decl),
                Cell::Real(f) => set_value(slot, ValueRef::Real(f), decl),
                Cell::Text(end) => {
                    let start = std::mem::replace(&mut text_at, end);
                    let checked = row_text.and_then(|text| {
                        text.get(start.checked_sub(row_start)?..end.checked_sub(row_start)?)
                    });
                    match checked {
                        Some(text) => {
                            set_text_value(slot, text, decl);
                            Ok(())
                        }
                        None => {
                            let bytes = batch.text.get(start..end).unwrap_or_default();
                            set_value(slot, ValueRef::Text(bytes), decl)
                        }
                    }
                }
                Cell::Blob(end) => {
                    let start = std::mem::replace(&mut blob_at, end);
                    let bytes = batch.blobs.get(start..end).unwrap_or_default();
                    set_value(slot, ValueRef::Blob(bytes), decl)
                }
            };
            if set.is_err() && bad.is_none() {
                bad = Some(i);
            }
        }
        if let Some(i) = bad {
            let column = self.columns.get(i).map_or("?", String::as_str);
            let defect = format!("record {}, column `{column}`: not valid UTF-8", self.number);
            set_defect(row, defect);
        }
        self.next += 1;
    }

    /// The reader thread has nothing more to say (and has ended).
    fn finish(&mut self) {
        self.done = true;
        self.batch = Batch::default();
    }
}

impl Drop for SqliteSource {
    fn drop(&mut self) {
        if self.ahead.is_running() {
            // Stop a query still running; the thread then fails to send and ends on its own
            // (it is not waited for, so that dropping never blocks on a long query step).
            self.interrupt.interrupt();
        }
    }
}

/// The reader thread: opens the database, prepares the query, reports the columns on `ready`,
/// then sends the rows on `tx` until the end, an error, or the receiver is gone.
fn read_thread(
    path: &Path,
    query: &str,
    ready: &SyncSender<Result<Ready, Error>>,
    feed: Feed<Batch, Error>,
) {
    let (conn, declared, columns) = match prepare(path, query) {
        Ok(prepared) => prepared,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let read_error = |record: u64, e: rusqlite::Error| Error::Read {
        model: Model::File(path.to_owned()),
        line: Some(record),
        source: io::Error::other(e),
    };
    let mut stmt = match conn.prepare(query) {
        Ok(stmt) => stmt,
        Err(e) => {
            let _ = ready.send(Err(query_error(path, e)));
            return;
        }
    };
    let ncols = columns.len();
    let ready_msg = Ready {
        columns,
        declared,
        interrupt: conn.get_interrupt_handle(),
    };
    if ready.send(Ok(ready_msg)).is_err() {
        return;
    }
    let mut rows = match stmt.query([]) {
        Ok(rows) => rows,
        Err(e) => {
            feed.fail(read_error(1, e));
            return;
        }
    };
    let mut batch = Batch::default();
    let mut bytes = 0;
    let mut read: u64 = 0;
    loop {
        match rows.next() {
            Ok(Some(sql_row)) => {
                read += 1;
                for i in 0..ncols {
                    match sql_row.get_ref(i) {
                        Ok(value) => {
                            if let ValueRef::Text(b) | ValueRef::Blob(b) = value {
                                bytes += b.len();
                            }
                            batch.push(value);
                        }
                        Err(e) => {
                            feed.fail(read_error(read, e));
                            return;
                        }
                    }
                }
                batch.end_row();
                if batch.cells.len() >= BATCH_CELLS || bytes >= BATCH_BYTES {
                    if !feed.send(batch) {
                        return;
                    }
                    batch = feed.batch();
                    batch.clear();
                    bytes = 0;
                }
            }
            Ok(None) => {
                if batch.rows > 0 && !feed.send(batch) {
                    return;
                }
                feed.end();
                return;
            }
            Err(e) => {
                if batch.rows > 0 && !feed.send(batch) {
                    return;
                }
                feed.fail(read_error(read + 1, e));
                return;
            }
        }
    }
}

/// Opens the database, checks the query, and learns its columns and their declared types.
fn prepare(path: &Path, query: &str) -> Result<(Connection, Vec<Declared>, Vec<String>), Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| Error::Open {
        model: Model::File(path.to_owned()),
        source: io::Error::other(e),
    })?;
    let columns = {
        let stmt = conn.prepare(query).map_err(|e| query_error(path, e))?;
        let options = |message: &str| Error::Options {
            model: Model::File(path.to_owned()),
            message: message.to_owned(),
        };
        if stmt.column_count() == 0 {
            return Err(options(
                "the query returns no columns; give a SELECT statement naming the model's columns",
            ));
        }
        if !stmt.readonly() {
            return Err(options(
                "the query would change the database; give a SELECT statement",
            ));
        }
        if stmt.parameter_count() > 0 {
            return Err(options(
                "the query has parameters (`?`, `:name`...), which cannot be given; write the \
                 values into the query",
            ));
        }
        let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
        check_names(&columns).map_err(|message| Error::Header {
            model: Model::File(path.to_owned()),
            message,
        })?;
        columns
    };
    let declared = declared_types(&conn, query, columns.len());
    Ok((conn, declared, columns))
}

/// Why `query` cannot run on the database at `path`.
fn query_error(path: &Path, e: rusqlite::Error) -> Error {
    if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) {
        return Error::Open {
            model: Model::File(path.to_owned()),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        };
    }
    let message = match e {
        rusqlite::Error::Empty => "the query is empty; give a SELECT statement".to_owned(),
        rusqlite::Error::MultipleStatement => {
            "the query has more than one statement; give a single SELECT statement".to_owned()
        }
        e => format!("the query cannot run: {e}"),
    };
    Error::Options {
        model: Model::File(path.to_owned()),
        message,
    }
}

#[cfg(test)]
mod tests;
