//! CSV models, read record by record (see [`CsvSource`]).

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

use csv_core::ReadRecordResult;
use sync_core::ports::ModelSource;
use sync_core::value::SourceRow;

use crate::error::Error;
use crate::{buffered, max_record_size, set_defect, Input, BOM, MAX_RECORD_BYTES};

/// At most this many fields in one record; past it the record is a defect.
const MAX_FIELDS: usize = 1 << 20;

/// How a CSV file is written.
///
/// Records end at `\n`, `\r\n` or `\r`; completely empty lines are skipped.
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

/// The CSV records of one input, parsed into reused buffers.
struct Records {
    input: Input,
    core: csv_core::Reader,
    /// The unescaped bytes of the current record's fields, back to back.
    out: Vec<u8>,
    /// Where each field of the current record ends in `out`.
    ends: Vec<usize>,
    /// How many fields the current record has.
    fields: usize,
    /// The current record did not fit [`MAX_RECORD_BYTES`] or [`MAX_FIELDS`]; its fields are
    /// lost.
    oversized: bool,
    /// The line the current (or last) record starts on.
    line: u64,
    /// Whether reading has begun.
    started: bool,
    done: bool,
}

impl Records {
    fn new(input: Box<dyn Read + Send>, opts: &CsvOptions) -> Self {
        let core = csv_core::ReaderBuilder::new()
            .delimiter(opts.delimiter)
            .quote(opts.quote)
            .escape(opts.escape)
            .double_quote(opts.double_quote)
            .build();
        Records {
            input: buffered(input),
            core,
            out: vec![0; 4096],
            ends: vec![0; 64],
            fields: 0,
            oversized: false,
            line: 1,
            started: false,
            done: false,
        }
    }

    /// Skips the line breaks before a record, counting lines, so that the record's first line
    /// is known. `csv-core` would skip these blank lines too, without saying where the record
    /// starts.
    fn skip_line_breaks(&mut self) -> io::Result<()> {
        if !self.started {
            self.started = true;
            // A byte-order mark first: `csv-core` would drop it too, but then skip the blank
            // lines after it out of sight. (Split across reads, it stays, and the header trim
            // removes it.)
            if self.input.fill_buf()?.starts_with(BOM) {
                self.input.consume(BOM.len());
            }
        }
        loop {
            let buf = self.input.fill_buf()?;
            let len = buf.len();
            let n = buf
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(len);
            let newlines = buf.iter().take(n).filter(|&&b| b == b'\n').count() as u64;
            self.input.consume(n);
            self.core.set_line(self.core.line() + newlines);
            if len == 0 || n < len {
                return Ok(());
            }
        }
    }

    /// Reads the next record. `Ok(false)` at the end of the input.
    fn read(&mut self) -> io::Result<bool> {
        self.fields = 0;
        self.oversized = false;
        if self.done {
            return Ok(false);
        }
        let result = self.read_inner();
        if result.is_err() {
            // The parser is in the middle of a record: nothing sensible follows.
            self.done = true;
        }
        result
    }

    fn read_inner(&mut self) -> io::Result<bool> {
        self.skip_line_breaks()?;
        self.line = self.core.line();
        let (mut outlen, mut endlen) = (0, 0);
        loop {
            let input = self.input.fill_buf()?;
            let (res, nin, nout, nend) = self.core.read_record(
                input,
                self.out.get_mut(outlen..).unwrap_or_default(),
                self.ends.get_mut(endlen..).unwrap_or_default(),
            );
            self.input.consume(nin);
            outlen += nout;
            endlen += nend;
            match res {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    if self.out.len() >= MAX_RECORD_BYTES {
                        // Keep parsing to find the record's end, overwriting its bytes.
                        self.oversized = true;
                        outlen = 0;
                    } else {
                        let len = (self.out.len() * 2).min(MAX_RECORD_BYTES);
                        self.out.resize(len, 0);
                    }
                }
                ReadRecordResult::OutputEndsFull => {
                    if self.ends.len() >= MAX_FIELDS {
                        self.oversized = true;
                        endlen = 0;
                    } else {
                        let len = (self.ends.len() * 2).min(MAX_FIELDS);
                        self.ends.resize(len, 0);
                    }
                }
                ReadRecordResult::Record => {
                    self.fields = endlen;
                    return Ok(true);
                }
                ReadRecordResult::End => {
                    self.done = true;
                    return Ok(false);
                }
            }
        }
    }

    /// The ends of the current record's fields.
    fn ends(&self) -> &[usize] {
        self.ends.get(..self.fields).unwrap_or_default()
    }

    /// The fields of the current record, as bytes.
    fn fields(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends().iter().map(move |&end| {
            let field = self.out.get(start..end).unwrap_or_default();
            start = end;
            field
        })
    }

    /// All the field bytes of the current record, back to back.
    fn all_bytes(&self) -> &[u8] {
        let end = self.ends().last().copied().unwrap_or(0);
        self.out.get(..end).unwrap_or_default()
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
/// blank lines precede it). Lines are counted by `\n` bytes, including those inside quoted
/// fields and those of skipped blank lines, so CRLF files and multi-line cells number
/// correctly.
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
            path: path.to_owned(),
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
            return Err(Error::Options { path, message });
        }
        let mut records = Records::new(input, opts);
        match records.read() {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::Header {
                    path,
                    message: "the file is empty; a CSV model needs a header row naming its \
                              columns"
                        .to_owned(),
                })
            }
            Err(source) => {
                return Err(Error::Read {
                    path,
                    line: Some(records.line),
                    source,
                })
            }
        }
        let columns = header_columns(&records).map_err(|message| Error::Header {
            path: path.clone(),
            message,
        })?;
        Ok(CsvSource {
            path,
            columns,
            records,
        })
    }
}

/// The column names of the header record, or what is wrong with them.
fn header_columns(records: &Records) -> Result<Vec<String>, String> {
    let line = records.line;
    if records.oversized {
        return Err(format!(
            "the header (line {line}) is longer than {} or has more than {MAX_FIELDS} \
             fields; is a quote left open?",
            max_record_size()
        ));
    }
    let mut columns: Vec<String> = Vec::with_capacity(records.fields);
    for (i, field) in records.fields().enumerate() {
        let position = i + 1;
        let Ok(name) = std::str::from_utf8(field) else {
            return Err(format!(
                "column {position} of the header (line {line}) is not valid UTF-8; save the \
                 file as UTF-8"
            ));
        };
        let name = name.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
        if name.is_empty() {
            return Err(format!(
                "column {position} of the header (line {line}) has no name; every column needs \
                 a name (a trailing delimiter makes an empty last column)"
            ));
        }
        if let Some(first) = columns.iter().position(|c| c == name) {
            return Err(format!(
                "column `{name}` appears twice in the header (line {line}), at positions {} and \
                 {position}; column names must be unique",
                first + 1
            ));
        }
        columns.push(name.to_owned());
    }
    Ok(columns)
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
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
            Err(source) => {
                return Err(Error::Read {
                    path: self.path.clone(),
                    line: Some(records.line),
                    source,
                })
            }
        }
        let line = records.line;
        let ncols = self.columns.len();
        row.reset(line, ncols);
        if records.oversized {
            let message = format!(
                "line {line}: the record is longer than {} or has more than {MAX_FIELDS} \
                 fields; is a quote left open?",
                max_record_size()
            );
            set_defect(row, message);
            return Ok(true);
        }
        if records.fields != ncols {
            let message = format!(
                "line {line} has {}; the header has {ncols}",
                plural(records.fields, "field")
            );
            set_defect(row, message);
            return Ok(true);
        }
        if let Ok(text) = std::str::from_utf8(records.all_bytes()) {
            // Every field is valid UTF-8 when the whole record is and each field boundary is a
            // character boundary.
            let mut start = 0;
            let mut bad = None;
            for ((i, &end), value) in records.ends().iter().enumerate().zip(&mut row.values) {
                match text.get(start..end) {
                    Some(field) => value.set_text(field),
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
        format!("line {line}, column `{column}`: not valid UTF-8"),
    );
    true
}

#[cfg(test)]
mod tests;
