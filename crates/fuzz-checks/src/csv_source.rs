//! `csv_source`: [`sources::CsvSource`] read to the end through [`ModelSource`].
//!
//! The first input byte picks one of two modes:
//!
//! - **raw** (even): the options (delimiter, quote, escape, doubled quotes) come from the next
//!   bytes, any byte at all, and the rest is the file. Options the source documents as
//!   unusable must be refused with [`Error::Options`], the others accepted. Every row read has
//!   one value per column, all text or (a defect) all null; line numbers are ≥ 1, increase
//!   and never pass the lines the input has. The records must be those of the `csv` crate's
//!   reader over the same bytes with the same options (the same `csv-core` engine; the source
//!   reads most records on its own quick path, which must agree with it): the same number (no
//!   record lost or invented; a last record whose quoted field the input ends inside is
//!   refused with [`Error::Record`]), each with the same fields, or a defect when its field
//!   count differs from the header's or a field is not UTF-8.
//! - **round trip** (odd): N records of fuzzer-chosen text are written as a CSV writer would
//!   (quoting what needs it, blank lines between records, `\n`, `\r\n` or `\r` line ends),
//!   and must come back as exactly those N rows, without defects, each numbered with the line
//!   it starts on (a line ends at `\n`, `\r\n` or a lone `\r`, inside quotes too).
//!
//! In both modes the input is handed to the source a few bytes at a time when the fuzzer
//! says so, so that records cross buffer refills.

use std::io::Cursor;

use sources::{CsvOptions, CsvSource, Error};
use sync_core::ports::ModelSource;
use sync_core::value::{SourceRow, Value};

use crate::chunked::{chunk_size, Chunked};
use crate::Bytes;

const BOM: &[u8] = b"\xef\xbb\xbf";

pub fn check(data: &[u8]) {
    let mut b = Bytes::new(data);
    if b.byte() & 1 == 0 {
        raw(&mut b);
    } else {
        round_trip(&mut b);
    }
}

/// One row as read: its number, and its cells or its defect.
type Row = (u64, Result<Vec<String>, String>);

/// A line ends at `\n`, `\r\n` or a lone `\r`: how many line ends `bytes` has.
fn line_ends(bytes: &[u8]) -> u64 {
    let lone_cr = bytes
        .windows(2)
        .filter(|w| w[0] == b'\r' && w[1] != b'\n')
        .count();
    let last_cr = usize::from(bytes.last() == Some(&b'\r'));
    (bytes.iter().filter(|&&b| b == b'\n').count() + lone_cr + last_cr) as u64
}

/// Every row of the source, checking what holds of any row, and the line of the quoted field
/// left open at the end of the input if the read stopped there ([`Error::Record`]).
fn drain(src: &mut CsvSource, input: &[u8]) -> (Vec<Row>, Option<u64>) {
    let ncols = src.columns().len();
    // A record starts on a line the input has.
    let max_line = 1 + line_ends(input);
    let mut row = SourceRow::default();
    let mut rows: Vec<Row> = Vec::new();
    let mut open_quote = None;
    loop {
        match src.next_row(&mut row) {
            Ok(true) => {}
            Ok(false) => break,
            Err(Error::Record { line, message, .. }) => {
                assert!(!message.is_empty());
                assert!(line >= 1 && line <= max_line, "open quote on line {line}");
                open_quote = Some(line);
                break;
            }
            Err(e) => panic!("an in-memory CSV read failed: {e}"),
        }
        assert_eq!(row.values.len(), ncols, "one value per column: {row:?}");
        assert!(row.number >= 1, "line numbers start at 1: {row:?}");
        assert!(row.number <= max_line, "line {} of {max_line}", row.number);
        if let Some(&(last, _)) = rows.last() {
            // A record ends at a line break, so the next one starts on a later line.
            assert!(row.number > last, "line {} after line {last}", row.number);
        }
        let cells = match &row.defect {
            Some(d) => {
                assert!(row.values.iter().all(|v| *v == Value::Null), "{row:?}");
                assert!(!d.is_empty());
                Err(d.clone())
            }
            None => Ok(row
                .values
                .iter()
                .map(|v| match v {
                    Value::Text(t) => t.clone(),
                    other => panic!("CSV cells are text, got {other:?}"),
                })
                .collect()),
        };
        rows.push((row.number, cells));
    }
    // The end is sticky.
    assert!(matches!(src.next_row(&mut row), Ok(false)));
    (rows, open_quote)
}

fn open(input: &[u8], chunk: usize, opts: &CsvOptions) -> Result<CsvSource, Error> {
    if chunk == 0 {
        CsvSource::from_reader(Cursor::new(input.to_vec()), "fuzz.csv", opts)
    } else {
        CsvSource::from_reader(Chunked::new(input.to_vec(), chunk), "fuzz.csv", opts)
    }
}

/// What the source documents as unusable options.
fn options_unusable(o: &CsvOptions) -> bool {
    let breaks = |b: u8| b == b'\r' || b == b'\n';
    breaks(o.delimiter)
        || breaks(o.quote)
        || o.escape.is_some_and(breaks)
        || o.escape == Some(o.quote)
        || o.delimiter == o.quote
        || o.escape == Some(o.delimiter)
}

fn raw(b: &mut Bytes<'_>) {
    let delimiter = match b.byte() {
        x @ 0..=3 => [b',', b';', b'\t', b'|'][usize::from(x)],
        _ => b.byte(),
    };
    let quote = match b.byte() % 4 {
        0 | 1 => b'"',
        2 => b'\'',
        _ => b.byte(),
    };
    let escape = match b.byte() % 4 {
        0 | 1 => None,
        2 => Some(b'\\'),
        _ => Some(b.byte()),
    };
    let double_quote = b.byte() & 1 == 0;
    let chunk = chunk_size(b.byte());
    let input = b.rest();
    let opts = CsvOptions {
        delimiter,
        quote,
        escape,
        double_quote,
    };
    let mut src = match open(input, chunk, &opts) {
        Ok(src) => {
            assert!(!options_unusable(&opts), "{opts:?} were accepted");
            src
        }
        Err(Error::Options { .. }) => {
            assert!(options_unusable(&opts), "{opts:?} were refused");
            return;
        }
        // No header (empty file, empty, duplicate or non-UTF-8 name).
        Err(Error::Header { message, .. }) => {
            assert!(!message.is_empty());
            return;
        }
        // The header's quote is left open.
        Err(Error::Record { .. }) if input.contains(&quote) => return,
        Err(e) => panic!("unexpected error from an in-memory CSV: {e}"),
    };
    let columns = src.columns().to_vec();
    assert!(!columns.is_empty());
    for (i, c) in columns.iter().enumerate() {
        assert!(!c.is_empty() && c.trim() == c, "column name {c:?}");
        assert!(!columns[..i].contains(c), "column {c:?} twice");
    }
    let (rows, open_quote) = drain(&mut src, input);
    if open_quote.is_some() {
        assert!(input.contains(&quote), "an open quote without a quote");
    }

    // The reference: the `csv` crate over the same bytes, with the one byte-order mark and the
    // blank lines before the header that the source drops dropped.
    let body = input.strip_prefix(BOM).unwrap_or(input);
    let start = body
        .iter()
        .position(|&x| x != b'\r' && x != b'\n')
        .unwrap_or(body.len());
    let reference: Vec<csv::ByteRecord> = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .quote(quote)
        .escape(escape)
        .double_quote(double_quote)
        .from_reader(body.get(start..).unwrap_or_default())
        .into_byte_records()
        .map(|r| r.unwrap_or_else(|e| panic!("the csv crate failed in memory: {e}")))
        .collect();
    let Some((header, records)) = reference.split_first() else {
        panic!("the source found a header, the csv crate no record");
    };
    assert_eq!(header.len(), columns.len(), "header fields");
    // A quoted field left open runs to the end: that last record is refused, not read.
    let expected = records.len() - usize::from(open_quote.is_some());
    assert_eq!(
        rows.len(),
        expected,
        "rows read vs records of the csv crate:\n{rows:?}\n{records:?}"
    );
    let last = records.len().saturating_sub(1);
    for (i, ((line, cells), record)) in rows.iter().zip(records).enumerate() {
        let fields: Option<Vec<&str>> =
            record.iter().map(|f| std::str::from_utf8(f).ok()).collect();
        match (cells, fields) {
            (Ok(cells), Some(fields)) => {
                assert_eq!(cells, &fields, "line {line}");
            }
            (Ok(cells), None) => panic!("line {line}: {cells:?} read from invalid UTF-8"),
            (Err(_), None) => {}
            (Err(defect), Some(fields)) => {
                // A defect needs a reason: a wrong field count, or (the last record of an
                // input with a quote) a quote left open.
                let open_quote = i == last && input.contains(&quote);
                assert!(
                    fields.len() != columns.len() || open_quote,
                    "line {line}: a defect ({defect}) for the good record {fields:?}"
                );
            }
        }
    }
}

fn round_trip(b: &mut Bytes<'_>) {
    let ncols = 1 + b.below(4);
    let delimiter = [b',', b';', b'\t', b'|'][b.below(4)];
    let quote = if b.byte() & 1 == 0 { b'"' } else { b'\'' };
    let eol: &[u8] = [&b"\n"[..], b"\r\n", b"\r"][b.below(3)];
    let final_break = b.byte() & 1 == 0;
    let chunk = chunk_size(b.byte());

    let mut records: Vec<Vec<String>> = Vec::new();
    while !b.is_empty() && records.len() < 64 {
        let record: Vec<String> = (0..ncols)
            .map(|_| String::from_utf8_lossy(b.take(12)).into_owned())
            .collect();
        records.push(record);
    }

    let mut file: Vec<u8> = Vec::new();
    let header: Vec<String> = (0..ncols).map(|i| format!("c{i}")).collect();
    file.extend_from_slice(header.join(&char::from(delimiter).to_string()).as_bytes());
    let mut lines = Vec::new();
    for (i, record) in records.iter().enumerate() {
        file.extend_from_slice(eol);
        for _ in 0..(i % 3) {
            file.extend_from_slice(eol);
        }
        lines.push(1 + line_ends(&file));
        for (j, field) in record.iter().enumerate() {
            if j > 0 {
                file.push(delimiter);
            }
            let needs_quotes = field
                .bytes()
                .any(|x| x == delimiter || x == quote || x == b'\n' || x == b'\r' || x == b'\\')
                || (ncols == 1 && field.is_empty());
            if needs_quotes {
                file.push(quote);
                for x in field.bytes() {
                    if x == quote {
                        file.push(quote);
                    }
                    file.push(x);
                }
                file.push(quote);
            } else {
                file.extend_from_slice(field.as_bytes());
            }
        }
    }
    if final_break {
        file.extend_from_slice(eol);
    }

    let opts = CsvOptions {
        delimiter,
        quote,
        escape: None,
        double_quote: true,
    };
    let mut src = open(&file, chunk, &opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(src.columns(), header.as_slice());
    let (rows, open_quote) = drain(&mut src, &file);
    assert_eq!(open_quote, None);
    let want: Vec<Row> = lines
        .iter()
        .zip(&records)
        .map(|(&line, r)| (line, Ok(r.clone())))
        .collect();
    assert_eq!(rows, want, "file: {:?}", String::from_utf8_lossy(&file));
}
