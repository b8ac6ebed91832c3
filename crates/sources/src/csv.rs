//! CSV models, read record by record (see [`CsvSource`]).

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

use csv_core::ReadRecordResult;
use sync_core::message::excerpt;
use sync_core::ports::ModelSource;
use sync_core::value::SourceRow;

use crate::columns::{name_problem, NameProblem};
use crate::error::{Error, Model};
use crate::{
    buffered, max_record_size, set_defect, set_text, Input, BOM, MAX_COLUMNS, MAX_RECORD_BYTES,
};

mod columns;
mod decode;

use columns::*;
use decode::*;

/// At most this many fields in one record; past it the record is a defect.
const MAX_FIELDS: usize = 1 << 20;

/// The longest header: it names at most [`MAX_COLUMNS`] columns, and past this many bytes it
/// is not a header but a broken file (or not a CSV file at all). Reading stops there.
const MAX_HEADER_BYTES: usize = 1024 * 1024;

/// How a CSV file is written.
///
/// Records end at `\n`, `\r\n` or `\r` (and lines are counted the same way); completely
/// empty lines are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// The byte between fields: `b','` by default, `b';'` and `b'\t'` are common too.
    pub delimiter: u8,
    /// The byte that quotes a field: `b'"'` by default.
    pub quote: u8,
    /// A byte that escapes a quote inside a quoted field (`b'\\'` for `\"`); none by default.
    pub escape: Option<u8>,
    /// Whether two quotes in a quoted field stand for one (`""` → `"`); on by default.
    pub double_quote: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: b',',
            quote: b'"',
            escape: None,
            double_quote: true,
        }
    }
}

impl CsvOptions {
    /// What is wrong with these options, if anything.
    fn problem(&self) -> Option<String> {
        let name = |b: u8| format!("{:?}", char::from(b));
        let roles = [
            ("delimiter", Some(self.delimiter)),
            ("quote", Some(self.quote)),
            ("escape", self.escape),
        ];
        for (role, byte) in roles {
            if let Some(b @ (b'\r' | b'\n')) = byte {
                return Some(format!(
                    "the {role} cannot be a line break ({}); records end at line breaks",
                    name(b)
                ));
            }
        }
        if self.escape == Some(self.quote) {
            return Some(format!(
                "the quote and the escape are the same byte ({}); for doubled quotes (`\"\"`) \
                 set no escape and keep double quotes on",
                name(self.quote)
            ));
        }
        let pairs = [
            ("delimiter", Some(self.delimiter), "quote", Some(self.quote)),
            ("delimiter", Some(self.delimiter), "escape", self.escape),
        ];
        for (role_a, a, role_b, b) in pairs {
            if let (Some(a), Some(b)) = (a, b) {
                if a == b {
                    return Some(format!(
                        "the {role_a} and the {role_b} are the same byte ({}); they must differ",
                        name(a)
                    ));
                }
            }
        }
        None
    }
}

/// A CSV model, read one record at a time.
///
/// The first non-blank record is the header: its cells, trimmed of surrounding whitespace and
/// a UTF-8 byte-order mark, are the column names. Every later record becomes one row of
/// [`Value::Text`](sync_core::value::Value::Text) cells, an empty cell being empty text;
/// completely empty lines are skipped. A record whose field count differs from the header's,
/// or with a field that is not valid UTF-8, comes back as a row with
/// [`SourceRow::defect`] set, and reading goes on.
///
/// Records are parsed by `csv-core` (the engine of the `csv` crate) straight from a 256 KiB
/// buffer into reused buffers, so memory stays flat however large the file is and rows stop
/// allocating once the first few have been read.
///
/// [`SourceRow::number`] is the line on which the record starts (the header is line 1 unless
/// blank lines precede it). A line ends at `\n`, `\r\n` or a lone `\r`, counted inside quoted
/// fields and in skipped blank lines too, so LF, CRLF and CR files and multi-line cells all
/// number correctly (and the same).
///
/// A file that ends inside a quoted field is an [`Error::Record`] naming the line where that
/// field starts: a quote left open takes every record after it into one value, so the file
/// is refused rather than read as a few rows. (A stray quote that a later one closes makes
/// one record of the lines between; when its field count is wrong, its defect names them.)
/// The header is at most 1 MiB and 16,384 columns; reading stops past either.
pub struct CsvSource {
    path: PathBuf,
    columns: Vec<String>,
    records: Records,
}

impl fmt::Debug for CsvSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsvSource")
            .field("path", &self.path)
            .field("columns", &self.columns)
            .field("line", &self.records.line)
            .finish_non_exhaustive()
    }
}

impl CsvSource {
    /// Opens the CSV file at `path` and reads its header.
    pub fn open(path: &Path, opts: &CsvOptions) -> Result<Self, Error> {
        let file = File::open(path).map_err(|source| Error::Open {
            model: Model::File(path.to_owned()),
            source,
        })?;
        Self::with_input(Box::new(file), path.to_owned(), opts)
    }

    /// Reads CSV from `reader` and reads its header; `name` stands for the file in messages.
    ///
    /// `reader` is buffered here; there is no need to wrap it in a `BufReader`.
    pub fn from_reader<R: Read + Send + 'static>(
        reader: R,
        name: &str,
        opts: &CsvOptions,
    ) -> Result<Self, Error> {
        Self::with_input(Box::new(reader), PathBuf::from(name), opts)
    }

    fn with_input(
        input: Box<dyn Read + Send>,
        path: PathBuf,
        opts: &CsvOptions,
    ) -> Result<Self, Error> {
        if let Some(message) = opts.problem() {
            return Err(Error::Options {
                model: Model::File(path),
                message,
            });
        }
        let mut records = Records::new(input, opts);
        match records.read() {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::Header {
                    model: Model::File(path),
                    message: "the file is empty; a CSV model needs a header row naming its \
                              columns"
                        .to_owned(),
                })
            }
            Err(e) => return Err(read_error(e, &path, records.line)),
        }
        let columns = header_columns(&records).map_err(|message| Error::Header {
            model: Model::File(path.clone()),
            message,
        })?;
        Ok(CsvSource {
            path,
            columns,
            records,
        })
    }
}

/// The [`Error`] for a record that could not be read, the record starting on `line`.
fn read_error(e: ReadError, path: &Path, line: u64) -> Error {
    match e {
        ReadError::Io(source) => Error::Read {
            model: Model::File(path.to_owned()),
            line: Some(line),
            source,
        },
        ReadError::OpenQuote {
            record_line,
            quote_line,
            last_line,
        } => {
            let field = if quote_line == record_line {
                format!("the quoted field that starts on line {quote_line}")
            } else {
                format!(
                    "a quoted field of the record that starts on line {record_line} (on line \
                     {quote_line})"
                )
            };
            let rest = if last_line > quote_line {
                format!(
                    "the rest of the file (lines {quote_line} to {last_line}) would be one value"
                )
            } else {
                "the rest of the line would be a value".to_owned()
            };
            Error::Record {
                model: Model::File(path.to_owned()),
                line: quote_line,
                message: format!(
                    "{field} is never closed: the file ends inside it, so {rest}. Nothing of \
                     the file is synced until it is fixed: close the quote (a quote inside a \
                     quoted field is written twice, \"\")"
                ),
            }
        }
    }
}

impl ModelSource for CsvSource {
    type Error = Error;

    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_row(&mut self, row: &mut SourceRow) -> Result<bool, Error> {
        let records = &mut self.records;
        match records.read() {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => return Err(read_error(e, &self.path, records.line)),
        }
        let line = records.line;
        let ncols = self.columns.len();
        row.reset(line, ncols);
        if let Some(over) = records.oversized {
            let what = match over {
                Oversized::Bytes => format!("is longer than {}", max_record_size()),
                Oversized::Fields => format!("has more than {MAX_FIELDS} fields"),
            };
            let message = format!(
                "line {line}: the record {what} (it ends on line {}); is a quote left open?",
                records.lines.last_line()
            );
            set_defect(row, message);
            return Ok(true);
        }
        if records.fields != ncols {
            // A quoted field may hold line breaks; a record with the wrong field count that
            // spans lines is most likely a quote left open, which took the lines after it.
            let spanned = if records.quick > 0 {
                0
            } else {
                line_ends(records.all_bytes())
            };
            let message = if spanned == 0 {
                format!(
                    "line {line} has {}; the header has {ncols}",
                    plural(records.fields, "field")
                )
            } else {
                format!(
                    "lines {line} to {} are one record (a quoted field holds their line \
                     breaks) with {}; the header has {ncols}. Is a quote left open on line \
                     {line}?",
                    line + spanned,
                    plural(records.fields, "field")
                )
            };
            set_defect(row, message);
            return Ok(true);
        }
        if records.quick > 0 {
            let bytes = records.quick_bytes();
            let ends = || {
                let last = std::iter::once(bytes.len());
                records.delimiters.iter().copied().chain(last)
            };
            // The delimiter is ASCII: the record is valid UTF-8 exactly when every field is,
            // and every field boundary of valid text is a character boundary.
            if let Ok(text) = std::str::from_utf8(bytes) {
                let mut start = 0;
                let mut whole = true;
                for (end, value) in ends().zip(&mut row.values) {
                    match text.get(start..end) {
                        Some(field) => set_text(value, field),
                        None => {
                            whole = false;
                            break;
                        }
                    }
                    start = end + 1;
                }
                if whole {
                    return Ok(true);
                }
            }
            let mut start = 0;
            let bad = ends()
                .position(|end| {
                    let field = bytes.get(start..end).unwrap_or_default();
                    start = end + 1;
                    std::str::from_utf8(field).is_err()
                })
                .unwrap_or(0);
            return Ok(utf8_defect(row, line, &self.columns, bad));
        }
        if let Ok(text) = std::str::from_utf8(records.all_bytes()) {
            // Every field is valid UTF-8 when the whole record is and each field boundary is a
            // character boundary.
            let mut start = 0;
            let mut bad = None;
            for ((i, &end), value) in records.ends().iter().enumerate().zip(&mut row.values) {
                match text.get(start..end) {
                    Some(field) => set_text(value, field),
                    None => {
                        bad = Some(i);
                        break;
                    }
                }
                start = end;
            }
            match bad {
                None => return Ok(true),
                Some(i) => return Ok(utf8_defect(row, line, &self.columns, i)),
            }
        }
        let bad = records
            .fields()
            .position(|f| std::str::from_utf8(f).is_err())
            .unwrap_or(0);
        Ok(utf8_defect(row, line, &self.columns, bad))
    }
}

fn utf8_defect(row: &mut SourceRow, line: u64, columns: &[String], index: usize) -> bool {
    let column = columns.get(index).map(String::as_str).unwrap_or("?");
    set_defect(
        row,
        format!("line {line}, column `{}`: not valid UTF-8", excerpt(column)),
    );
    true
}

#[cfg(test)]
mod tests;
