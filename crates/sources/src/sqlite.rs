//! SQLite models: the rows of one query, streamed from a reader thread (see [`SqliteSource`]).

use std::fmt::{self, Write as _};

use crate::float::set_float;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::{self, JoinHandle};

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, InterruptHandle, OpenFlags};
use sync_core::ports::ModelSource;
use sync_core::value::{SourceRow, Value};

use crate::error::Error;
use crate::{set_defect, set_text};

/// At most this many cells (rows × columns) travel in one batch from the reader thread: 2,048
/// rows of 16 columns. Large batches make the threads wait on each other rarely, which
/// matters on a busy machine, where every wait can cost a scheduling delay.
const BATCH_CELLS: usize = 32 * 1024;

/// A batch is sent early once its text and blob values reach this many bytes.
const BATCH_BYTES: usize = 1 << 20;

/// How many full batches may wait in the channel while the reader thread fills the next one.
const BATCHES_IN_FLIGHT: usize = 4;

/// How many bytes of a blob are shown in [`Value::Unsupported`].
const BLOB_PREVIEW_BYTES: usize = 32;

/// The temporary view through which declared column types are learnt.
const TYPES_VIEW: &str = "attentive_sync_model_columns";

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
    receiver: Receiver<Message>,
    /// Consumed batches, sent back to the reader thread to be refilled.
    recycle: Sender<Batch>,
    batch: Batch,
    /// The next row of `batch` to hand out.
    next: usize,
    /// The number of the last record handed out.
    number: u64,
    done: bool,
    interrupt: InterruptHandle,
    thread: Option<JoinHandle<()>>,
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

/// What the reader thread sends.
enum Message {
    Rows(Batch),
    /// Every row has been sent.
    End,
    /// Reading failed; nothing follows.
    Failed(Error),
}

/// What the reader thread reports once the query is prepared.
struct Ready {
    columns: Vec<String>,
    declared: Vec<Declared>,
    interrupt: InterruptHandle,
}

/// How a column's declared type changes the typing of its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    Other,
    Bool,
    Date,
    Timestamp,
}

impl Declared {
    fn of(decl: &str) -> Self {
        let first = decl
            .trim()
            .split(|c: char| c.is_whitespace() || c == '(')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        match first.as_str() {
            "BOOLEAN" | "BOOL" => Declared::Bool,
            "DATE" => Declared::Date,
            "DATETIME" | "TIMESTAMP" | "TIMESTAMPTZ" => Declared::Timestamp,
            _ => Declared::Other,
        }
    }
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
                path: path.to_owned(),
                source,
            });
        }
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (tx, receiver) = mpsc::sync_channel(BATCHES_IN_FLIGHT);
        let (recycle, recycled) = mpsc::channel();
        let thread_path = path.to_owned();
        let thread_query = query.to_owned();
        let thread = thread::Builder::new()
            .name("sqlite-model".to_owned())
            .spawn(move || read_thread(&thread_path, &thread_query, &ready_tx, &tx, &recycled))
            .map_err(|source| Error::Open {
                path: path.to_owned(),
                source,
            })?;
        let ready = match ready_rx.recv() {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(Error::Open {
                    path: path.to_owned(),
                    source: io::Error::other("the SQLite reader thread stopped unexpectedly"),
                });
            }
        };
        Ok(SqliteSource {
            path: path.to_owned(),
            columns: ready.columns,
            declared: ready.declared,
            receiver,
            recycle,
            batch: Batch::default(),
            next: 0,
            number: 0,
            done: false,
            interrupt: ready.interrupt,
            thread: Some(thread),
        })
    }
}

impl ModelSource for SqliteSource {
    type Error = Error;

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
                // The thread may be gone already; the batch is then simply dropped.
                let _ = self.recycle.send(std::mem::take(&mut self.batch));
            }
            match self.receiver.recv() {
                Ok(Message::Rows(batch)) => {
                    self.batch = batch;
                    self.next = 0;
                }
                Ok(Message::End) => {
                    self.finish();
                    return Ok(false);
                }
                Ok(Message::Failed(e)) => {
                    self.finish();
                    return Err(e);
                }
                Err(_) => {
                    self.finish();
                    return Err(Error::Read {
                        path: self.path.clone(),
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

    /// The reader thread has nothing more to say: wait for it to end.
    fn finish(&mut self) {
        self.done = true;
        self.batch = Batch::default();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SqliteSource {
    fn drop(&mut self) {
        if self.thread.is_some() {
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
    tx: &SyncSender<Message>,
    recycled: &Receiver<Batch>,
) {
    let (conn, declared, columns) = match prepare(path, query) {
        Ok(prepared) => prepared,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let read_error = |record: u64, e: rusqlite::Error| Error::Read {
        path: path.to_owned(),
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
            let _ = tx.send(Message::Failed(read_error(1, e)));
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
                            let _ = tx.send(Message::Failed(read_error(read, e)));
                            return;
                        }
                    }
                }
                batch.end_row();
                if batch.cells.len() >= BATCH_CELLS || bytes >= BATCH_BYTES {
                    if tx.send(Message::Rows(batch)).is_err() {
                        return;
                    }
                    batch = recycled.try_recv().unwrap_or_default();
                    batch.clear();
                    bytes = 0;
                }
            }
            Ok(None) => {
                if batch.rows > 0 && tx.send(Message::Rows(batch)).is_err() {
                    return;
                }
                let _ = tx.send(Message::End);
                return;
            }
            Err(e) => {
                if batch.rows > 0 && tx.send(Message::Rows(batch)).is_err() {
                    return;
                }
                let _ = tx.send(Message::Failed(read_error(read + 1, e)));
                return;
            }
        }
    }
}

/// Opens the database, checks the query, and learns its columns and their declared types.
fn prepare(path: &Path, query: &str) -> Result<(Connection, Vec<Declared>, Vec<String>), Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| Error::Open {
        path: path.to_owned(),
        source: io::Error::other(e),
    })?;
    let columns = {
        let stmt = conn.prepare(query).map_err(|e| query_error(path, e))?;
        let options = |message: &str| Error::Options {
            path: path.to_owned(),
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
            path: path.to_owned(),
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
            path: path.to_owned(),
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
        path: path.to_owned(),
        message,
    }
}

/// What is wrong with the column names, if anything.
fn check_names(columns: &[String]) -> Result<(), String> {
    for (i, name) in columns.iter().enumerate() {
        let position = i + 1;
        if name.trim().is_empty() {
            return Err(format!(
                "column {position} of the query has no name; name it with `AS`"
            ));
        }
        if let Some(first) = columns.iter().position(|c| c == name) {
            if first != i {
                return Err(format!(
                    "the query returns two columns named `{name}`, at positions {} and \
                     {position}; give each a unique name with `AS`",
                    first + 1
                ));
            }
        }
    }
    Ok(())
}

/// The declared type of each result column of `query`.
///
/// `rusqlite` gives declared types only with its `column_decltype` feature; without it, the
/// query is wrapped in a temporary view (in memory: the database itself stays untouched),
/// whose columns SQLite types like `sqlite3_column_decltype` does. A query that cannot be a
/// view (a `PRAGMA`...) has no declared types.
fn declared_types(conn: &Connection, query: &str, ncols: usize) -> Vec<Declared> {
    let mut declared = vec![Declared::Other; ncols];
    let query = query.trim().trim_end_matches(';');
    let _ = conn.execute_batch("PRAGMA temp_store = MEMORY");
    let create = format!("CREATE TEMP VIEW {TYPES_VIEW} AS {query}");
    if conn.execute(&create, []).is_err() {
        return declared;
    }
    let types: rusqlite::Result<Vec<String>> = conn
        .prepare(&format!("PRAGMA temp.table_info({TYPES_VIEW})"))
        .and_then(|mut stmt| {
            stmt.query_map([], |row| row.get::<_, Option<String>>(2))?
                .map(|t| t.map(Option::unwrap_or_default))
                .collect()
        });
    if let Ok(types) = types {
        if types.len() == ncols {
            for (d, t) in declared.iter_mut().zip(&types) {
                *d = Declared::of(t);
            }
        }
    }
    let _ = conn.execute_batch(&format!("DROP VIEW IF EXISTS temp.{TYPES_VIEW}"));
    declared
}

/// Types one SQLite value into `slot`, reusing its allocation where it can. `Err` when text
/// is not valid UTF-8 (the slot is then null).
fn set_value(slot: &mut Value, value: ValueRef<'_>, declared: Declared) -> Result<(), ()> {
    match value {
        ValueRef::Null => *slot = Value::Null,
        ValueRef::Integer(i) => {
            *slot = match (declared, i) {
                (Declared::Bool, 0 | 1) => Value::Bool(i == 1),
                _ => Value::Int(i),
            }
        }
        ValueRef::Real(f) => set_float(slot, f),
        ValueRef::Text(bytes) => {
            let Ok(text) = std::str::from_utf8(bytes) else {
                *slot = Value::Null;
                return Err(());
            };
            set_text_value(slot, text, declared);
        }
        ValueRef::Blob(bytes) => {
            *slot = Value::Unsupported {
                kind: "blob",
                text: hex_preview(bytes),
            }
        }
    }
    Ok(())
}

/// Types a SQLite text value into `slot`.
fn set_text_value(slot: &mut Value, text: &str, declared: Declared) {
    match declared {
        Declared::Date => match iso_date(text) {
            Some(d) => *slot = Value::Date(d),
            None => set_text(slot, text),
        },
        Declared::Timestamp => match timestamp_utc(text) {
            Some(at) => crate::timestamp::set_utc(slot, &at),
            None => set_text(slot, text),
        },
        Declared::Bool | Declared::Other => set_text(slot, text),
    }
}

/// `x'0102…'`: the first bytes of a blob, in hex.
fn hex_preview(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(3 + 2 * BLOB_PREVIEW_BYTES + 3);
    out.push_str("x'");
    for b in bytes.iter().take(BLOB_PREVIEW_BYTES) {
        let _ = write!(out, "{b:02x}");
    }
    if bytes.len() > BLOB_PREVIEW_BYTES {
        out.push('…');
    }
    out.push('\'');
    out
}

/// A `YYYY-MM-DD` date (surrounding whitespace ignored).
fn iso_date(text: &str) -> Option<NaiveDate> {
    let t = text.trim();
    let b = t.as_bytes();
    let shaped = b.len() == 10
        && b.get(4) == Some(&b'-')
        && b.get(7) == Some(&b'-')
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shaped {
        return None;
    }
    // Every byte of the ranges is an ASCII digit (checked above).
    let n = |r: std::ops::Range<usize>| {
        b.get(r).map(|d| {
            d.iter()
                .fold(0u32, |n, &c| n * 10 + u32::from(c.wrapping_sub(b'0')))
        })
    };
    let year = i32::try_from(n(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(year, n(5..7)?, n(8..10)?)
}

/// A SQLite date-time (`YYYY-MM-DD`, then optionally `T` or a space, `HH:MM[:SS[.fff…]]`, and
/// `Z` or `±HH:MM`), as UTC text `YYYY-MM-DDTHH:MM:SS[.fff]Z`. No offset means UTC.
#[cfg(test)]
fn timestamp(text: &str) -> Option<String> {
    timestamp_utc(text).map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// [`timestamp`] as a point in time.
fn timestamp_utc(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let t = text.trim();
    let date = iso_date(t.get(..10)?)?;
    let rest = t.get(10..)?;
    let naive = if rest.is_empty() {
        date.and_time(NaiveTime::MIN)
    } else {
        let rest = rest.strip_prefix(['T', 't', ' '])?;
        let (time, offset) = split_offset(rest)?;
        let time = match plain_time(time) {
            Some(time) => time,
            None => NaiveTime::parse_from_str(time, "%H:%M:%S%.f")
                .or_else(|_| NaiveTime::parse_from_str(time, "%H:%M"))
                .ok()?,
        };
        let local = NaiveDateTime::new(date, time);
        local.checked_sub_signed(chrono::TimeDelta::try_seconds(offset)?)?
    };
    Some(naive.and_utc())
}

/// A time of day written exactly `HH:MM:SS` or `HH:MM:SS.f` (1 to 9 digits), within
/// 00:00:00–23:59:59, read without `chrono`'s format parser (the common case, and the same
/// time that parser reads from it). `None` for anything else, which the parser then reads.
fn plain_time(time: &str) -> Option<NaiveTime> {
    let b = time.as_bytes();
    let digit = |i: usize| -> Option<u32> {
        let d = b.get(i)?.wrapping_sub(b'0');
        (d < 10).then_some(u32::from(d))
    };
    let two = |i: usize| Some(digit(i)? * 10 + digit(i + 1)?);
    if b.len() < 8 || b.get(2) != Some(&b':') || b.get(5) != Some(&b':') {
        return None;
    }
    let (hour, minute, second) = (two(0)?, two(3)?, two(6)?);
    let mut nanos = 0;
    if let Some(fraction) = b.get(8..).filter(|f| !f.is_empty()) {
        let digits = fraction.get(1..).filter(|d| (1..=9).contains(&d.len()))?;
        if fraction.first() != Some(&b'.') {
            return None;
        }
        for (i, _) in digits.iter().enumerate() {
            nanos = nanos * 10 + digit(9 + i)?;
        }
        nanos *= 10u32.pow(9 - digits.len() as u32);
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)
}

/// Splits a time of day from its UTC offset (`Z`, `±HH:MM`, `±HHMM`, `±HH`), in seconds.
fn split_offset(time: &str) -> Option<(&str, i64)> {
    if let Some(t) = time.strip_suffix(['Z', 'z']) {
        return Some((t, 0));
    }
    let Some(at) = time.rfind(['+', '-']) else {
        return Some((time, 0));
    };
    let (t, offset) = time.split_at(at);
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let digits: String = offset.get(1..)?.chars().filter(|&c| c != ':').collect();
    if !(digits.len() == 2 || digits.len() == 4) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i64 = digits.get(..2)?.parse().ok()?;
    let minutes: i64 = digits
        .get(2..)
        .filter(|m| !m.is_empty())
        .map_or(Ok(0), str::parse)
        .ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((t.trim_end(), sign * (hours * 3600 + minutes * 60)))
}

#[cfg(test)]
mod tests {
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
        let query =
            "SELECT CASE WHEN x = 500 THEN abs(-9223372036854775808) ELSE x END AS x FROM t \
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
}
