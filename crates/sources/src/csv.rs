//! CSV models, read record by record (see [`CsvSource`]).

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

use csv_core::ReadRecordResult;
use sync_core::message::excerpt;
use sync_core::ports::ModelSource;
use sync_core::value::SourceRow;

use crate::error::Error;
use crate::{
    buffered, max_record_size, set_defect, set_text, Input, BOM, MAX_COLUMNS, MAX_RECORD_BYTES,
};

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

/// [`u64`] with every byte 0x01.
const ONES: u64 = 0x0101_0101_0101_0101;
/// [`u64`] with every byte 0x7f.
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// The high bit of every byte of `word` equal to `byte` (exactly: no false positives).
#[inline(always)]
fn bytes_equal(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    // A byte of `x` is zero exactly when adding 0x7f to its low 7 bits leaves its high bit
    // clear and its own high bit is clear; no carry crosses bytes.
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// Finds the plain records that the quick path reads: one line of fields without quotes or
/// escapes, delimited by an ASCII delimiter. Scans 8 bytes at a time.
#[derive(Debug, Clone, Copy)]
struct Scanner {
    delimiter: u8,
    /// The bytes that end a plain record (`\r`, `\n`) or rule it out (the quote, the escape;
    /// the quote twice when there is no escape).
    stops: [u8; 4],
}

impl Scanner {
    /// `None` when the delimiter is not ASCII: its byte could then be part of a character,
    /// and splitting text at it could cut one.
    fn new(opts: &CsvOptions) -> Option<Scanner> {
        opts.delimiter.is_ascii().then(|| Scanner {
            delimiter: opts.delimiter,
            stops: [b'\r', b'\n', opts.quote, opts.escape.unwrap_or(opts.quote)],
        })
    }

    fn is_stop(&self, b: u8) -> bool {
        let [a, c, d, e] = self.stops;
        b == a || b == c || b == d || b == e
    }

    /// The length of the plain record at the start of `buf`, its bytes up to a line break
    /// within `buf`; the positions of its delimiters go to `delimiters` (cleared first). `None`
    /// when the record is not plain (a quote or an escape comes before the line break), is
    /// empty, or does not end within `buf`.
    fn scan(&self, buf: &[u8], delimiters: &mut Vec<usize>) -> Option<usize> {
        delimiters.clear();
        let [a, c, d, e] = self.stops;
        let mut words = buf.chunks_exact(8);
        let mut base = 0;
        for chunk in &mut words {
            let word = u64::from_le_bytes(chunk.try_into().ok()?);
            let stops = bytes_equal(word, a)
                | bytes_equal(word, c)
                | bytes_equal(word, d)
                | bytes_equal(word, e);
            let mut found = bytes_equal(word, self.delimiter);
            if stops != 0 {
                let at = (stops.trailing_zeros() / 8) as usize;
                // Only the delimiters before the stop.
                found &= (1u64 << (8 * at)) - 1;
                push_positions(found, base, delimiters);
                return self.end(buf, base + at);
            }
            push_positions(found, base, delimiters);
            base += 8;
        }
        for (i, &b) in words.remainder().iter().enumerate() {
            if self.is_stop(b) {
                return self.end(buf, base + i);
            }
            if b == self.delimiter {
                delimiters.push(base + i);
            }
        }
        None
    }

    /// `Some(at)` when the stop byte at `at` is a line break ending a non-empty record.
    fn end(&self, buf: &[u8], at: usize) -> Option<usize> {
        let b = *buf.get(at)?;
        (at > 0 && (b == b'\r' || b == b'\n')).then_some(at)
    }
}

/// Pushes `base` plus the index of every byte whose high bit is set in `mask`.
#[inline(always)]
fn push_positions(mut mask: u64, base: usize, out: &mut Vec<usize>) {
    while mask != 0 {
        out.push(base + (mask.trailing_zeros() / 8) as usize);
        mask &= mask - 1;
    }
}

/// Counts lines over the bytes consumed from an input: a line ends at `\n`, at `\r\n` and at
/// a `\r` alone (old Mac files), as records do.
#[derive(Debug, Clone, Copy)]
struct LineCounter {
    /// The line of the next byte (1-based).
    line: u64,
    /// The last byte counted was a `\r`: a `\n` next belongs to its line end.
    after_cr: bool,
    /// The last byte counted was a line break.
    at_line_start: bool,
}

impl LineCounter {
    fn new() -> Self {
        LineCounter {
            line: 1,
            after_cr: false,
            at_line_start: true,
        }
    }

    /// Counts the line ends in `bytes`, the next bytes of the input.
    fn advance(&mut self, bytes: &[u8]) {
        let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
            return;
        };
        let mut ends = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        if bytes.contains(&b'\r') {
            // A `\r` not followed by `\n` ends a line too; one at the end does (its `\n`,
            // if one comes next, is then not counted again).
            let lone = bytes
                .windows(2)
                .filter(|w| w[0] == b'\r' && w[1] != b'\n')
                .count() as u64;
            ends += lone + u64::from(last == b'\r');
        }
        if self.after_cr && first == b'\n' {
            ends -= 1;
        }
        self.after_cr = last == b'\r';
        self.at_line_start = last == b'\r' || last == b'\n';
        self.line += ends;
    }

    /// The last line that has a byte: the current one, or the one before when the input so
    /// far ends with a line break.
    fn last_line(&self) -> u64 {
        self.line - u64::from(self.at_line_start && self.line > 1)
    }
}

/// The line ends in `bytes`, counted as [`LineCounter`] counts them.
fn line_ends(bytes: &[u8]) -> u64 {
    let mut c = LineCounter::new();
    c.advance(bytes);
    c.line - 1
}

/// Why a record could not be read.
#[derive(Debug)]
enum ReadError {
    Io(io::Error),
    /// The input ends inside a quoted field. `quote_line` is where that field starts (the
    /// record's first line when the record was too long to tell); `last_line` the input's last.
    OpenQuote {
        record_line: u64,
        quote_line: u64,
        last_line: u64,
    },
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// A record past the limits: its fields are lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Oversized {
    Bytes,
    Fields,
}

/// The CSV records of one input, parsed into reused buffers.
///
/// Most records are one line of plain fields: no quote, no escape. Such a record, when the
/// whole of it is in the input buffer, is split at its delimiters straight from that buffer
/// (the *quick path*) instead of going through `csv-core`, which would give the same fields.
/// Everything else (quoted fields, a record across a buffer refill, the header, the last
/// record without a line break) goes through `csv-core`.
struct Records {
    input: Input,
    core: csv_core::Reader,
    /// For the quick path; `None` when it cannot be used.
    scanner: Option<Scanner>,
    /// The length of the current record when the quick path read it: its bytes are the first
    /// `quick` bytes of the input buffer, consumed when the next record is read. 0 when
    /// `csv-core` read it (into `out` and `ends`).
    quick: usize,
    /// Where the delimiters of a quick record are, in its bytes.
    delimiters: Vec<usize>,
    /// The unescaped bytes of the current record's fields, back to back.
    out: Vec<u8>,
    /// Where each field of the current record ends in `out`.
    ends: Vec<usize>,
    /// How many fields the current record has.
    fields: usize,
    /// The current record did not fit `max_bytes` or `max_fields`; its fields are lost.
    oversized: Option<Oversized>,
    /// The limits of the current record: [`MAX_HEADER_BYTES`] and [`MAX_COLUMNS`] for the
    /// header, which stops reading when it is over them; [`MAX_RECORD_BYTES`] and
    /// [`MAX_FIELDS`] then.
    max_bytes: usize,
    max_fields: usize,
    /// Lines of the bytes consumed so far.
    lines: LineCounter,
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
            scanner: Scanner::new(opts),
            quick: 0,
            delimiters: Vec::with_capacity(64),
            out: vec![0; 4096],
            ends: vec![0; 64],
            fields: 0,
            oversized: None,
            max_bytes: MAX_HEADER_BYTES,
            max_fields: MAX_COLUMNS,
            lines: LineCounter::new(),
            line: 1,
            started: false,
            done: false,
        }
    }

    /// Skips the line breaks before a record, counting lines, so that the record's first line
    /// is known. `csv-core` would skip these blank lines too, without saying where the record
    /// starts (and its line count knows only `\n`).
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
            self.lines.advance(buf.get(..n).unwrap_or_default());
            self.input.consume(n);
            if len == 0 || n < len {
                return Ok(());
            }
        }
    }

    /// Reads the next record. `Ok(false)` at the end of the input.
    fn read(&mut self) -> Result<bool, ReadError> {
        self.fields = 0;
        self.oversized = None;
        let quick = std::mem::take(&mut self.quick);
        if quick > 0 {
            // A quick record has no line break and is not empty.
            self.lines.after_cr = false;
            self.lines.at_line_start = false;
            self.input.consume(quick);
        }
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

    fn read_inner(&mut self) -> Result<bool, ReadError> {
        let first = !self.started;
        if !first {
            self.max_bytes = MAX_RECORD_BYTES;
            self.max_fields = MAX_FIELDS;
        }
        self.skip_line_breaks()?;
        self.line = self.lines.line;
        // The header goes through `csv-core` (which strips a byte-order mark only from the
        // first bytes it is given, so it must be given them).
        if !first && self.quick_record() {
            return Ok(true);
        }
        let (mut outlen, mut endlen) = (0, 0);
        // At the end of the input, `csv-core` is given a line break before the end itself: it
        // ends a last record that has none as the end would, is skipped between records, and
        // inside a quoted field becomes part of it, which is how a quote left open is told
        // (`csv-core` would end the record at the end of the input, the open quote and all
        // that follows it a value).
        let mut fed_line_break = false;
        loop {
            let buf = self.input.fill_buf()?;
            let at_end = buf.is_empty();
            let input: &[u8] = if at_end && !fed_line_break {
                b"\n"
            } else {
                buf
            };
            let (res, nin, nout, nend) = self.core.read_record(
                input,
                self.out.get_mut(outlen..).unwrap_or_default(),
                self.ends.get_mut(endlen..).unwrap_or_default(),
            );
            if at_end {
                fed_line_break |= nin > 0;
                if nout > 0 && res == ReadRecordResult::InputEmpty {
                    return Err(self.open_quote(outlen, endlen));
                }
            } else {
                self.lines.advance(buf.get(..nin).unwrap_or_default());
                self.input.consume(nin);
            }
            outlen += nout;
            endlen += nend;
            match res {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    if self.out.len() >= self.max_bytes {
                        self.oversized = Some(Oversized::Bytes);
                        if first {
                            // Not a header: no need to read on.
                            self.done = true;
                            return Ok(true);
                        }
                        // Keep parsing to find the record's end, overwriting its bytes.
                        outlen = 0;
                    } else {
                        let len = (self.out.len() * 2).min(self.max_bytes);
                        self.out.resize(len, 0);
                    }
                }
                ReadRecordResult::OutputEndsFull => {
                    // One slot more than the limit: a record at the limit ending at the end of
                    // the input needs it.
                    if self.ends.len() > self.max_fields {
                        self.oversized = Some(Oversized::Fields);
                        if first {
                            self.done = true;
                            return Ok(true);
                        }
                        endlen = 0;
                    } else {
                        let len = (self.ends.len() * 2).min(self.max_fields + 1);
                        self.ends.resize(len, 0);
                    }
                }
                ReadRecordResult::Record => {
                    self.fields = endlen;
                    if endlen > self.max_fields {
                        self.oversized = Some(Oversized::Fields);
                    }
                    return Ok(true);
                }
                ReadRecordResult::End => {
                    self.done = true;
                    return Ok(false);
                }
            }
        }
    }

    /// The error for an input that ends inside a quoted field, the record so far being the first
    /// `outlen` bytes of `out` and `endlen` fields.
    fn open_quote(&self, outlen: usize, endlen: usize) -> ReadError {
        // The record's line breaks are all inside quoted fields, where they are kept: those
        // before the open field's first byte are those before its opening quote.
        let quote_line = if self.oversized.is_some() {
            self.line
        } else {
            let start = endlen
                .checked_sub(1)
                .and_then(|i| self.ends.get(i))
                .copied()
                .unwrap_or(0)
                .min(outlen);
            self.line + line_ends(self.out.get(..start).unwrap_or_default())
        };
        ReadError::OpenQuote {
            record_line: self.line,
            quote_line,
            last_line: self.lines.last_line(),
        }
    }

    /// Reads the record at the start of the input buffer on the quick path, if it can: it
    /// ends with a line break within the buffer and has no quote or escape byte. Its bytes
    /// are left in the buffer (see [`Records::quick`]).
    ///
    /// `csv-core` would give the same fields: without quotes and escapes, a record is its bytes
    /// up to the first `\r` or `\n`, split at each delimiter. It is not told about the record;
    /// its state after the last record it read (just past a line break) is the state it would
    /// have after this one, and its line count is unchanged (the record has no `\n`; the line
    /// break after it is skipped and counted by [`Records::skip_line_breaks`]).
    fn quick_record(&mut self) -> bool {
        let Some(scanner) = &self.scanner else {
            return false;
        };
        match scanner.scan(self.input.buffer(), &mut self.delimiters) {
            Some(len) => {
                self.quick = len;
                self.fields = self.delimiters.len() + 1;
                true
            }
            None => false,
        }
    }

    /// The bytes of the current record read on the quick path, delimiters included.
    fn quick_bytes(&self) -> &[u8] {
        self.input.buffer().get(..self.quick).unwrap_or_default()
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
            Err(e) => return Err(read_error(e, &path, records.line)),
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

/// The [`Error`] for a record that could not be read, the record starting on `line`.
fn read_error(e: ReadError, path: &Path, line: u64) -> Error {
    match e {
        ReadError::Io(source) => Error::Read {
            path: path.to_owned(),
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
                path: path.to_owned(),
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

/// The column names of the header record, or what is wrong with them.
fn header_columns(records: &Records) -> Result<Vec<String>, String> {
    let line = records.line;
    match records.oversized {
        Some(Oversized::Bytes) => {
            return Err(format!(
                "the header (line {line}) is longer than {} MiB; a header names the columns, \
                 and one this long is not a header (is this a CSV file? is a quote left open?)",
                MAX_HEADER_BYTES >> 20
            ))
        }
        Some(Oversized::Fields) => {
            return Err(format!(
                "the header (line {line}) has more than {MAX_COLUMNS} columns, the most a CSV \
                 model may have (is the delimiter right?)"
            ))
        }
        None => {}
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
        columns.push(name.to_owned());
    }
    // Duplicates, found with a hash map: a header may have thousands of columns.
    let mut seen = std::collections::HashMap::with_capacity(columns.len());
    for (i, name) in columns.iter().enumerate() {
        if let Some(first) = seen.insert(name.as_str(), i) {
            return Err(format!(
                "column `{}` appears twice in the header (line {line}), at positions {} and \
                 {}; column names must be unique",
                excerpt(name),
                first + 1,
                i + 1
            ));
        }
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
