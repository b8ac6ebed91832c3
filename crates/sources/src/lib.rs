//! Model sources for attentive-sync: CSV, JSONL and Parquet files, SQLite and PostgreSQL
//! queries, streamed.
//!
//! Each source implements [`sync_core::ports::ModelSource`]. They read incrementally (the files
//! through a 256 KiB buffer) and reuse the row they are given, so memory stays flat however
//! large the model is. (A JSONL source holds its first 1,000 non-blank lines while it learns
//! the columns; a single record or line may grow to 64 MiB before it is cut off as a defect.)
//! The SQLite, Parquet and PostgreSQL sources read on a thread of their own (stepping the
//! query, decoding the column chunks, fetching from the cursor) a few batches ahead, and type
//! the values as rows are handed out, so reading and typing overlap; see
//! `docs/PERFORMANCE.md` for what that buys. That thread is one primitive (`readahead`), and
//! such a source says so ([`ModelSource::reads_ahead`](sync_core::ports::ModelSource)), so
//! that a caller does not put a second reading thread in front of it.
//!
//! Every source has the same layout: `<source>.rs` (the source and its `ModelSource` impl),
//! `<source>/columns.rs` (the schema and column checks), `<source>/decode.rs` (typing values),
//! `<source>/tests.rs`; what they share is in `columns`, `float` (the one float formatter),
//! `typed`, `timestamp` and [`Error`].
//!
//! # Defects and errors
//!
//! A record that cannot be read properly is a *defect*: it comes back as a row with
//! [`SourceRow::defect`](sync_core::value::SourceRow::defect) set to a message naming its line
//! (every value of such a row is [`Value::Null`]), and reading
//! goes on with the next record. Defects are:
//!
//! - CSV: a record whose field count differs from the header's (when a quoted field makes
//!   it span lines, the message gives its first and last line: usually a quote left open
//!   that a later stray quote closed); a field that is not valid UTF-8; a record longer than
//!   64 MiB (usually a quote left open).
//! - JSONL: a line that is not valid JSON, not a JSON object, or not valid UTF-8; an object
//!   with the same key twice (which value is meant is unknown; the identifier could be
//!   either); a line longer than 64 MiB.
//!
//! An [`Error`] stops the read: the file cannot be opened, reading it fails (I/O), the CSV
//! header is missing or unusable (empty file, empty or duplicate column name, invalid UTF-8,
//! longer than 1 MiB or more than 16,384 columns), a JSONL file yields no column (empty, or
//! no JSON object with keys in its first 1,000 non-blank lines) or more than 16,384, the CSV
//! options cannot work, or a CSV file ends inside a quoted field ([`Error::Record`], naming
//! the line where that field starts: a quote left open swallows every record after it, so
//! the file is refused rather than read as fewer rows). After an error a source reports the
//! end of the input.
//!
//! Lines are numbered from 1; a line ends at `\n`, `\r\n` or a lone `\r`. Messages quote
//! input through [`sync_core::message`], so that they stay short whatever the input is.

mod columns;
mod csv;
mod error;
mod float;
mod jsonl;
mod parquet;
mod postgres;
mod readahead;
pub mod segment;
mod sqlite;
mod timestamp;
mod typed;

use std::io::{self, BufReader, Read};

use sync_core::value::{SourceRow, Value};

pub use crate::csv::{CsvOptions, CsvSource};
pub use crate::error::{Error, Model};
pub use crate::jsonl::JsonlSource;
pub use crate::parquet::ParquetSource;
pub use crate::postgres::{redact_url, PostgresSource};
pub use crate::sqlite::SqliteSource;

/// The UTF-8 byte-order mark, which some tools write at the start of a file.
const BOM: &[u8] = b"\xef\xbb\xbf";

/// The read buffer of every source.
const BUFFER_CAPACITY: usize = 256 * 1024;

/// The longest record or line a source keeps; a longer one is a defect.
#[cfg(not(test))]
const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;
/// Small in tests, so that the limit can be reached cheaply.
#[cfg(test)]
const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// The most columns a CSV header or the keys of a JSONL sample may name (Excel's limit too);
/// more is a broken or hostile file, and every row would carry that many values.
const MAX_COLUMNS: usize = 16_384;

/// [`MAX_RECORD_BYTES`] for messages.
fn max_record_size() -> String {
    format!("{} MiB", MAX_RECORD_BYTES >> 20)
}

/// A buffered input that retries interrupted reads.
type Input = BufReader<Retry>;

fn buffered(reader: Box<dyn Read + Send>) -> Input {
    BufReader::with_capacity(BUFFER_CAPACITY, Retry(reader))
}

/// A reader that retries reads interrupted by a signal, so that buffered reads never see
/// [`io::ErrorKind::Interrupted`].
struct Retry(Box<dyn Read + Send>);

impl Read for Retry {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

/// [`Value::set_text`], inlined: the sources call it for nearly every cell.
#[inline]
fn set_text(value: &mut Value, s: &str) {
    if let Value::Text(buf) = value {
        buf.clear();
        buf.push_str(s);
    } else {
        *value = Value::Text(s.to_owned());
    }
}

/// Marks `row` as unreadable: every value becomes null and `message` says why.
fn set_defect(row: &mut SourceRow, message: String) {
    for value in &mut row.values {
        *value = Value::Null;
    }
    row.defect = Some(message);
}
