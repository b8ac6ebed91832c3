//! Splitting CSV bytes into records and fields: the quick path for plain one-line records,
//! csv-core for the rest, with exact line numbers.

use super::*;

/// [`u64`] with every byte 0x01.
pub(super) const ONES: u64 = 0x0101_0101_0101_0101;
/// [`u64`] with every byte 0x7f.
pub(super) const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// The high bit of every byte of `word` equal to `byte` (exactly: no false positives).
#[inline(always)]
pub(super) fn bytes_equal(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    // A byte of `x` is zero exactly when adding 0x7f to its low 7 bits leaves its high bit
    // clear and its own high bit is clear; no carry crosses bytes.
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// Finds the plain records that the quick path reads: one line of fields without quotes or
/// escapes, delimited by an ASCII delimiter. Scans 8 bytes at a time.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scanner {
    pub(super) delimiter: u8,
    /// The bytes that end a plain record (`\r`, `\n`) or rule it out (the quote, the escape;
    /// the quote twice when there is no escape).
    pub(super) stops: [u8; 4],
}

impl Scanner {
    /// `None` when the delimiter is not ASCII: its byte could then be part of a character,
    /// and splitting text at it could cut one.
    pub(super) fn new(opts: &CsvOptions) -> Option<Scanner> {
        opts.delimiter.is_ascii().then(|| Scanner {
            delimiter: opts.delimiter,
            stops: [b'\r', b'\n', opts.quote, opts.escape.unwrap_or(opts.quote)],
        })
    }

    pub(super) fn is_stop(&self, b: u8) -> bool {
        let [a, c, d, e] = self.stops;
        b == a || b == c || b == d || b == e
    }

    /// The length of the plain record at the start of `buf`, its bytes up to a line break
    /// within `buf`; the positions of its delimiters go to `delimiters` (cleared first). `None`
    /// when the record is not plain (a quote or an escape comes before the line break), is
    /// empty, or does not end within `buf`.
    pub(super) fn scan(&self, buf: &[u8], delimiters: &mut Vec<usize>) -> Option<usize> {
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
    pub(super) fn end(&self, buf: &[u8], at: usize) -> Option<usize> {
        let b = *buf.get(at)?;
        (at > 0 && (b == b'\r' || b == b'\n')).then_some(at)
    }
}

/// Pushes `base` plus the index of every byte whose high bit is set in `mask`.
#[inline(always)]
pub(super) fn push_positions(mut mask: u64, base: usize, out: &mut Vec<usize>) {
    while mask != 0 {
        out.push(base + (mask.trailing_zeros() / 8) as usize);
        mask &= mask - 1;
    }
}

/// Counts lines over the bytes consumed from an input: a line ends at `\n`, at `\r\n` and at
/// a `\r` alone (old Mac files), as records do.
#[derive(Debug, Clone, Copy)]
pub(super) struct LineCounter {
    /// The line of the next byte (1-based).
    pub(super) line: u64,
    /// The last byte counted was a `\r`: a `\n` next belongs to its line end.
    pub(super) after_cr: bool,
    /// The last byte counted was a line break.
    pub(super) at_line_start: bool,
}

impl LineCounter {
    pub(super) fn new() -> Self {
        LineCounter {
            line: 1,
            after_cr: false,
            at_line_start: true,
        }
    }

    /// Counts the line ends in `bytes`, the next bytes of the input.
    pub(super) fn advance(&mut self, bytes: &[u8]) {
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
    pub(super) fn last_line(&self) -> u64 {
        self.line - u64::from(self.at_line_start && self.line > 1)
    }
}

/// The line ends in `bytes`, counted as [`LineCounter`] counts them.
pub(super) fn line_ends(bytes: &[u8]) -> u64 {
    let mut c = LineCounter::new();
    c.advance(bytes);
    c.line - 1
}

/// Why a record could not be read.
#[derive(Debug)]
pub(super) enum ReadError {
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
pub(super) enum Oversized {
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
pub(super) struct Records {
    pub(super) input: Input,
    pub(super) core: csv_core::Reader,
    /// For the quick path; `None` when it cannot be used.
    pub(super) scanner: Option<Scanner>,
    /// The length of the current record when the quick path read it: its bytes are the first
    /// `quick` bytes of the input buffer, consumed when the next record is read. 0 when
    /// `csv-core` read it (into `out` and `ends`).
    pub(super) quick: usize,
    /// Where the delimiters of a quick record are, in its bytes.
    pub(super) delimiters: Vec<usize>,
    /// The unescaped bytes of the current record's fields, back to back.
    pub(super) out: Vec<u8>,
    /// Where each field of the current record ends in `out`.
    pub(super) ends: Vec<usize>,
    /// How many fields the current record has.
    pub(super) fields: usize,
    /// The current record did not fit `max_bytes` or `max_fields`; its fields are lost.
    pub(super) oversized: Option<Oversized>,
    /// The limits of the current record: [`MAX_HEADER_BYTES`] and [`MAX_COLUMNS`] for the
    /// header, which stops reading when it is over them; [`MAX_RECORD_BYTES`] and
    /// [`MAX_FIELDS`] then.
    pub(super) max_bytes: usize,
    pub(super) max_fields: usize,
    /// Lines of the bytes consumed so far.
    pub(super) lines: LineCounter,
    /// The line the current (or last) record starts on.
    pub(super) line: u64,
    /// Whether reading has begun.
    pub(super) started: bool,
    pub(super) done: bool,
}

impl Records {
    pub(super) fn new(input: Box<dyn Read + Send>, opts: &CsvOptions) -> Self {
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
    pub(super) fn skip_line_breaks(&mut self) -> io::Result<()> {
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
    pub(super) fn read(&mut self) -> Result<bool, ReadError> {
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

    pub(super) fn read_inner(&mut self) -> Result<bool, ReadError> {
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
    pub(super) fn open_quote(&self, outlen: usize, endlen: usize) -> ReadError {
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
    pub(super) fn quick_record(&mut self) -> bool {
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
    pub(super) fn quick_bytes(&self) -> &[u8] {
        self.input.buffer().get(..self.quick).unwrap_or_default()
    }

    /// The ends of the current record's fields.
    pub(super) fn ends(&self) -> &[usize] {
        self.ends.get(..self.fields).unwrap_or_default()
    }

    /// The fields of the current record, as bytes.
    pub(super) fn fields(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends().iter().map(move |&end| {
            let field = self.out.get(start..end).unwrap_or_default();
            start = end;
            field
        })
    }

    /// All the field bytes of the current record, back to back.
    pub(super) fn all_bytes(&self) -> &[u8] {
        let end = self.ends().last().copied().unwrap_or(0);
        self.out.get(..end).unwrap_or_default()
    }
}
