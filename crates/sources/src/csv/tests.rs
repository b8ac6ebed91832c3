#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use sync_core::value::Value;

use super::*;

fn source(input: &[u8], opts: &CsvOptions) -> Result<CsvSource, Error> {
    CsvSource::from_reader(io::Cursor::new(input.to_vec()), "model.csv", opts)
}

/// One row as read: its number, and its cells or its defect.
type Row = (u64, Result<Vec<String>, String>);

/// Every row of `input`, as (number, cells or defect).
fn read(input: &[u8], opts: &CsvOptions) -> (Vec<String>, Vec<Row>) {
    let mut src = source(input, opts).unwrap();
    drain(&mut src)
}

fn drain(src: &mut CsvSource) -> (Vec<String>, Vec<Row>) {
    let (rows, err) = drain_to_error(src);
    if let Some(e) = err {
        panic!("{e}");
    }
    (src.columns().to_vec(), rows)
}

/// The rows of `input`, and the error that stopped them if one did.
fn read_to_error(input: &[u8], opts: &CsvOptions) -> (Vec<Row>, Option<Error>) {
    drain_to_error(&mut source(input, opts).unwrap())
}

/// The rows of `src`, and the error that stopped them if one did (after which the end is
/// sticky).
fn drain_to_error(src: &mut CsvSource) -> (Vec<Row>, Option<Error>) {
    let mut row = SourceRow::default();
    let mut out = Vec::new();
    let mut err = None;
    loop {
        match src.next_row(&mut row) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
        let cells = match &row.defect {
            Some(d) => {
                assert!(row.values.iter().all(|v| *v == Value::Null), "{row:?}");
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
        assert_eq!(row.values.len(), src.columns().len());
        out.push((row.number, cells));
    }
    // The end is sticky.
    assert!(!src.next_row(&mut row).unwrap());
    (out, err)
}

fn ok(number: u64, cells: &[&str]) -> Row {
    (number, Ok(cells.iter().map(|c| c.to_string()).collect()))
}

fn defect(number: u64, message: &str) -> Row {
    (number, Err(message.to_owned()))
}

fn header_error(input: &[u8]) -> String {
    match source(input, &CsvOptions::default()) {
        Err(Error::Header {
            model: Model::File(path),
            message,
        }) => {
            assert_eq!(path, Path::new("model.csv"));
            message
        }
        other => panic!("expected a header error, got {other:?}"),
    }
}

/// A reader that hands out one byte per read, to cross every buffer boundary.
struct OneByte(Vec<u8>, usize);

impl Read for OneByte {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match (self.0.get(self.1), buf.first_mut()) {
            (Some(&b), Some(slot)) => {
                *slot = b;
                self.1 += 1;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

#[test]
fn reads_header_and_rows_as_text() {
    let (columns, rows) = read(
        b"email,first_name,points\na@x.com,Ann,12\nb@x.com,,\n",
        &CsvOptions::default(),
    );
    assert_eq!(columns, ["email", "first_name", "points"]);
    assert_eq!(
        rows,
        [
            ok(2, &["a@x.com", "Ann", "12"]),
            ok(3, &["b@x.com", "", ""])
        ]
    );
}

#[test]
fn last_record_needs_no_line_break() {
    let (_, rows) = read(b"a,b\n1,2", &CsvOptions::default());
    assert_eq!(rows, [ok(2, &["1", "2"])]);
}

#[test]
fn header_is_trimmed_of_whitespace_and_bom() {
    let input = "\u{feff} email ,\tname\t, city\n1,2,3\n".as_bytes();
    let (columns, rows) = read(input, &CsvOptions::default());
    assert_eq!(columns, ["email", "name", "city"]);
    assert_eq!(rows, [ok(2, &["1", "2", "3"])]);

    // The same when the BOM arrives one byte at a time (the parser cannot strip it then).
    let mut src = CsvSource::from_reader(
        OneByte(input.to_vec(), 0),
        "model.csv",
        &CsvOptions::default(),
    )
    .unwrap();
    let (columns, rows) = drain(&mut src);
    assert_eq!(columns, ["email", "name", "city"]);
    assert_eq!(rows, [ok(2, &["1", "2", "3"])]);
}

#[test]
fn cells_are_not_trimmed() {
    let (_, rows) = read(b"a,b\n  x , y\t\n", &CsvOptions::default());
    assert_eq!(rows, [ok(2, &["  x ", " y\t"])]);
}

#[test]
fn duplicate_column_names_are_rejected() {
    let message = header_error(b"email,name,email\n");
    assert!(
        message.contains("column `email` appears twice") && message.contains("positions 1 and 3"),
        "{message}"
    );
    // Equal once trimmed.
    let message = header_error(b"id, name ,name\n");
    assert!(
        message.contains("`name`") && message.contains("positions 2 and 3"),
        "{message}"
    );
}

#[test]
fn empty_column_names_are_rejected() {
    let message = header_error(b"email,,name\n1,2,3\n");
    assert!(
        message.contains("column 2 of the header (line 1) has no name"),
        "{message}"
    );
    let message = header_error(b"email,name,\n");
    assert!(message.contains("column 3"), "{message}");
    let message = header_error(b"email,   \n");
    assert!(message.contains("column 2"), "{message}");
}

#[test]
fn a_file_without_header_is_rejected() {
    for input in [&b""[..], b"\n", b"\r\n\r\n\n", "\u{feff}".as_bytes()] {
        let message = header_error(input);
        assert!(
            message.contains("empty") && message.contains("header"),
            "{input:?}: {message}"
        );
    }
    let e = source(b"", &CsvOptions::default()).unwrap_err();
    assert!(e.to_string().contains("model.csv"), "{e}");
}

#[test]
fn invalid_utf8_in_the_header_is_rejected() {
    let message = header_error(b"email,n\xffme\n");
    assert!(
        message.contains("column 2") && message.contains("UTF-8"),
        "{message}"
    );
}

#[test]
fn a_header_alone_is_a_model_without_rows() {
    let (columns, rows) = read(b"email,name\n", &CsvOptions::default());
    assert_eq!(columns, ["email", "name"]);
    assert!(rows.is_empty());
}

#[test]
fn blank_lines_before_the_header_count() {
    let (columns, rows) = read(b"\n\nemail\nx\n", &CsvOptions::default());
    assert_eq!(columns, ["email"]);
    assert_eq!(rows, [ok(4, &["x"])]);
    let message = header_error(b"\n\na,a\n");
    assert!(message.contains("(line 3)"), "{message}");
    // Also after a byte-order mark.
    let (columns, rows) = read(
        "\u{feff}\r\n\nemail\nx\n".as_bytes(),
        &CsvOptions::default(),
    );
    assert_eq!(columns, ["email"]);
    assert_eq!(rows, [ok(4, &["x"])]);
    let message = header_error("\u{feff}\na,a\n".as_bytes());
    assert!(message.contains("(line 2)"), "{message}");
}

#[test]
fn semicolon_and_tab_delimiters() {
    let semicolon = CsvOptions {
        delimiter: b';',
        ..CsvOptions::default()
    };
    let (columns, rows) = read(b"email;amount\na@x.com;1,50\n", &semicolon);
    assert_eq!(columns, ["email", "amount"]);
    assert_eq!(rows, [ok(2, &["a@x.com", "1,50"])]);

    let tab = CsvOptions {
        delimiter: b'\t',
        ..CsvOptions::default()
    };
    let (columns, rows) = read(b"email\tname\na@x.com\tAnn, Jr\n", &tab);
    assert_eq!(columns, ["email", "name"]);
    assert_eq!(rows, [ok(2, &["a@x.com", "Ann, Jr"])]);
}

#[test]
fn quoted_fields() {
    let input = b"a,b,c\n\"x, y\",\"say \"\"hi\"\"\",\"\"\n";
    let (_, rows) = read(input, &CsvOptions::default());
    assert_eq!(rows, [ok(2, &["x, y", "say \"hi\"", ""])]);

    let single = CsvOptions {
        quote: b'\'',
        ..CsvOptions::default()
    };
    let (_, rows) = read(b"a,b\n'x,y',\"z\"\n", &single);
    assert_eq!(rows, [ok(2, &["x,y", "\"z\""])]);
}

#[test]
fn escaped_quotes() {
    let backslash = CsvOptions {
        escape: Some(b'\\'),
        double_quote: false,
        ..CsvOptions::default()
    };
    let (_, rows) = read(b"a,b\n\"say \\\"hi\\\"\",2\n", &backslash);
    assert_eq!(rows, [ok(2, &["say \"hi\"", "2"])]);
}

#[test]
fn line_numbers_follow_multi_line_fields_blank_lines_and_crlf() {
    let input = b"id,note\n1,\"two\nlines\"\n\n2,plain\n3,\"a\r\nb\r\nc\"\n4,x\n";
    let (_, rows) = read(input, &CsvOptions::default());
    assert_eq!(
        rows,
        [
            ok(2, &["1", "two\nlines"]),
            ok(5, &["2", "plain"]),
            ok(6, &["3", "a\r\nb\r\nc"]),
            ok(9, &["4", "x"]),
        ]
    );

    let crlf = b"id,note\r\n1,a\r\n\r\n\r\n2,\"b\r\nc\"\r\n3,d\r\n";
    let (_, rows) = read(crlf, &CsvOptions::default());
    assert_eq!(
        rows,
        [
            ok(2, &["1", "a"]),
            ok(5, &["2", "b\r\nc"]),
            ok(7, &["3", "d"])
        ]
    );

    // Old Mac line ends: see `cr_only_line_ends_numbered_every_row_line_1`.
    let (_, rows) = read(b"id\r1\r2\r", &CsvOptions::default());
    assert_eq!(rows, [ok(2, &["1"]), ok(3, &["2"])]);
}

#[test]
fn ragged_rows_are_defects_and_reading_goes_on() {
    let input = b"a,b,c\n1,2,3\n1,2\n\"x\ny\",2,3,4\n7,8,9\n1\n";
    let (_, rows) = read(input, &CsvOptions::default());
    assert_eq!(
        rows,
        [
            ok(2, &["1", "2", "3"]),
            defect(3, "line 3 has 2 fields; the header has 3"),
            defect(
                4,
                "lines 4 to 5 are one record (a quoted field holds their line breaks) with 4 \
                 fields; the header has 3. Is a quote left open on line 4?"
            ),
            ok(6, &["7", "8", "9"]),
            defect(7, "line 7 has 1 field; the header has 3"),
        ]
    );
}

#[test]
fn invalid_utf8_is_a_defect_naming_line_and_column() {
    let input =
        b"email,city,zip\na@x.com,Paris,75001\nb@x.com,S\xe3o Paulo,01000\nc@x.com,Lyon,69001\n";
    let (_, rows) = read(input, &CsvOptions::default());
    assert_eq!(
        rows,
        [
            ok(2, &["a@x.com", "Paris", "75001"]),
            defect(3, "line 3, column `city`: not valid UTF-8"),
            ok(4, &["c@x.com", "Lyon", "69001"]),
        ]
    );
}

#[test]
fn a_character_split_by_a_delimiter_is_invalid_utf8() {
    // "é" is C3 A9; split by the delimiter, the whole record bytes "\xc3\xa9" look valid.
    let (_, rows) = read(b"a,b\nx\xc3,\xa9y\n", &CsvOptions::default());
    assert_eq!(rows, [defect(2, "line 2, column `a`: not valid UTF-8")]);
    let (_, rows) = read(b"a,b\nok,\xa9y\n", &CsvOptions::default());
    assert_eq!(rows, [defect(2, "line 2, column `b`: not valid UTF-8")]);
}

#[test]
fn unicode_cells() {
    let (_, rows) = read(
        "name,city\nZoë 😀,東京\n".as_bytes(),
        &CsvOptions::default(),
    );
    assert_eq!(rows, [ok(2, &["Zoë 😀", "東京"])]);
}

#[test]
fn rows_reuse_buffers_without_leaking_values() {
    let mut src = source(b"a,b\nlong value,x\n\n1,2,3\ny,\n", &CsvOptions::default()).unwrap();
    let mut row = SourceRow::default();
    assert!(src.next_row(&mut row).unwrap());
    assert_eq!(
        row.values,
        [Value::Text("long value".into()), Value::Text("x".into())]
    );
    assert!(src.next_row(&mut row).unwrap());
    assert!(row.defect.is_some());
    assert!(src.next_row(&mut row).unwrap());
    assert_eq!(row.defect, None);
    assert_eq!(row.number, 5);
    assert_eq!(
        row.values,
        [Value::Text("y".into()), Value::Text(String::new())]
    );
    assert!(!src.next_row(&mut row).unwrap());
}

#[test]
fn an_overlong_record_is_a_defect() {
    // A quote open too long (closed by a stray quote much later): past the limit the record is
    // cut off, and reading goes on after it.
    let mut input = b"a,b\n1,2\n\"open,3\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES + 10));
    input.extend(b"\"\n4,5\n");
    let (_, rows) = read(&input, &CsvOptions::default());
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0], ok(2, &["1", "2"]));
    assert_eq!(
        rows[1],
        defect(
            3,
            "line 3: the record is longer than 1 MiB (it ends on line 4); is a quote left open?"
        )
    );
    assert_eq!(rows[2], ok(5, &["4", "5"]));

    // Left open to the end of the file, it is an error naming the record's line.
    let mut input = b"a,b\n1,2\n\"open,3\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES + 10));
    let (rows, err) = read_to_error(&input, &CsvOptions::default());
    assert_eq!(rows, [ok(2, &["1", "2"])]);
    assert!(
        matches!(err, Some(Error::Record { line: 3, .. })),
        "{err:?}"
    );

    // Within the limit a long field is fine, and the reading goes on.
    let mut input = b"a,b\n\"".to_vec();
    input.extend(std::iter::repeat_n(b'y', MAX_RECORD_BYTES / 2));
    input.extend(b"\",2\n3,4\n");
    let (_, rows) = read(&input, &CsvOptions::default());
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1], ok(3, &["3", "4"]));
}

#[test]
fn impossible_options_are_rejected() {
    let cases = [
        CsvOptions {
            delimiter: b'"',
            ..CsvOptions::default()
        },
        CsvOptions {
            delimiter: b'\n',
            ..CsvOptions::default()
        },
        CsvOptions {
            escape: Some(b','),
            ..CsvOptions::default()
        },
        CsvOptions {
            escape: Some(b'"'),
            ..CsvOptions::default()
        },
    ];
    for opts in cases {
        match source(b"a\n", &opts) {
            Err(e @ Error::Options { .. }) => assert!(e.to_string().contains("model.csv"), "{e}"),
            other => panic!("{opts:?}: {other:?}"),
        }
    }
}

#[test]
fn sources_can_move_to_another_thread() {
    fn send<T: Send>() {}
    send::<CsvSource>();
    send::<Error>();
}

#[test]
fn open_reads_a_file_and_names_a_missing_one() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(b"email\na@x.com\n").unwrap();
    let mut src = CsvSource::open(file.path(), &CsvOptions::default()).unwrap();
    assert_eq!(drain(&mut src).1, [ok(2, &["a@x.com"])]);

    let missing = file.path().with_extension("missing");
    match CsvSource::open(&missing, &CsvOptions::default()) {
        Err(e @ Error::Open { .. }) => {
            assert!(e.to_string().contains(&*missing.to_string_lossy()), "{e}");
            assert!(std::error::Error::source(&e).is_some());
        }
        other => panic!("{other:?}"),
    }
}

/// Serves `data`, then fails.
struct FailsAfter(io::Cursor<Vec<u8>>);

impl Read for FailsAfter {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.read(buf)? {
            0 => Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection lost",
            )),
            n => Ok(n),
        }
    }
}

#[test]
fn an_io_error_stops_the_read() {
    let reader = FailsAfter(io::Cursor::new(b"a,b\n1,2\n3,".to_vec()));
    let mut src = CsvSource::from_reader(reader, "remote.csv", &CsvOptions::default()).unwrap();
    let mut row = SourceRow::default();
    assert!(src.next_row(&mut row).unwrap());
    match src.next_row(&mut row) {
        Err(e @ Error::Read { line: Some(3), .. }) => {
            assert!(e.to_string().contains("remote.csv at line 3"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!src.next_row(&mut row).unwrap());

    let reader = FailsAfter(io::Cursor::new(Vec::new()));
    let e = CsvSource::from_reader(reader, "remote.csv", &CsvOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Read { .. }), "{e:?}");
}

/// Generates a CSV of `rows` rows of 22 columns on the fly, counting the bytes handed out.
struct Generated {
    next_row: usize,
    rows: usize,
    pending: Vec<u8>,
    pos: usize,
    produced: Arc<AtomicUsize>,
}

impl Generated {
    const COLUMNS: usize = 22;

    fn new(rows: usize) -> (Self, Arc<AtomicUsize>) {
        let produced = Arc::new(AtomicUsize::new(0));
        let mut pending = Vec::new();
        let names: Vec<String> = (0..Self::COLUMNS).map(|c| format!("col{c}")).collect();
        writeln!(pending, "{}", names.join(",")).unwrap();
        let g = Generated {
            next_row: 0,
            rows,
            pending,
            pos: 0,
            produced: produced.clone(),
        };
        (g, produced)
    }

    fn cell(row: usize, col: usize) -> String {
        match col {
            0 => format!("user{row}@example.com"),
            1 => format!("\"Name, {row}\""),
            _ => format!("{}", row * 31 + col),
        }
    }
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.pending.len() {
            if self.next_row == self.rows {
                return Ok(0);
            }
            self.pending.clear();
            self.pos = 0;
            let row = self.next_row;
            let cells: Vec<String> = (0..Self::COLUMNS).map(|c| Self::cell(row, c)).collect();
            writeln!(self.pending, "{}", cells.join(",")).unwrap();
            self.next_row += 1;
        }
        let n = (&self.pending[self.pos..]).read(buf)?;
        self.pos += n;
        self.produced.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }
}

#[test]
fn streams_a_large_input() {
    const ROWS: usize = 200_000;
    let (input, produced) = Generated::new(ROWS);
    let mut src = CsvSource::from_reader(input, "big.csv", &CsvOptions::default()).unwrap();
    assert_eq!(src.columns().len(), Generated::COLUMNS);
    let mut row = SourceRow::default();
    assert!(src.next_row(&mut row).unwrap());
    // Only about one buffer has been read for the first row.
    let early = produced.load(Ordering::Relaxed);
    assert!(
        early <= 2 * crate::BUFFER_CAPACITY,
        "{early} bytes read for one row"
    );
    let mut count: usize = 1;
    while src.next_row(&mut row).unwrap() {
        count += 1;
        assert_eq!(row.defect, None);
        if count.is_multiple_of(50_000) {
            let n = count - 1;
            assert_eq!(row.number, count as u64 + 1);
            assert_eq!(row.values[0], Value::Text(format!("user{n}@example.com")));
            assert_eq!(row.values[1], Value::Text(format!("Name, {n}")));
            assert_eq!(row.values[21], Value::Text(format!("{}", n * 31 + 21)));
        }
    }
    assert_eq!(count, ROWS);
    let total = produced.load(Ordering::Relaxed);
    assert!(
        total > 40 * early,
        "the input ({total} bytes) was read ahead of the rows"
    );
}

#[test]
fn streams_a_large_file() {
    const ROWS: usize = 200_000;
    let mut file = tempfile::NamedTempFile::new().unwrap();
    {
        let mut w = io::BufWriter::new(file.as_file_mut());
        writeln!(w, "email,name,points").unwrap();
        for i in 0..ROWS {
            writeln!(w, "u{i}@x.com,\"N, {i}\",{i}").unwrap();
        }
        w.flush().unwrap();
    }
    let mut src = CsvSource::open(file.path(), &CsvOptions::default()).unwrap();
    let mut row = SourceRow::default();
    let mut count = 0u64;
    while src.next_row(&mut row).unwrap() {
        count += 1;
        assert_eq!(row.number, count + 1);
        assert_eq!(row.defect, None);
    }
    assert_eq!(count, ROWS as u64);
    assert_eq!(row.values[2], Value::Text(format!("{}", ROWS - 1)));
}

fn column_name() -> impl Strategy<Value = String> {
    "\\PC{0,8}".prop_map(|s| s.replace('\u{feff}', "").trim().to_owned())
}

fn cell() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[,;\"'\r\n \t a-zé😀]{0,8}",
        Just(String::new()),
    ]
}

fn table() -> impl Strategy<Value = (Vec<String>, Vec<Vec<String>>)> {
    (1usize..6).prop_flat_map(|ncols| {
        (
            proptest::collection::vec(column_name(), ncols).prop_map(|names| {
                // Unique and non-empty.
                names
                    .into_iter()
                    .enumerate()
                    .map(|(i, n)| format!("c{i}{n}"))
                    .collect::<Vec<_>>()
            }),
            proptest::collection::vec(proptest::collection::vec(cell(), ncols), 0..12),
        )
    })
}

proptest! {
    #[test]
    fn reads_back_what_the_csv_crate_writes(
        (columns, table) in table(),
        crlf in any::<bool>(),
        semicolon in any::<bool>(),
    ) {
        let delimiter = if semicolon { b';' } else { b',' };
        let terminator = if crlf { ::csv::Terminator::CRLF } else { ::csv::Terminator::Any(b'\n') };
        let mut w = ::csv::WriterBuilder::new()
            .delimiter(delimiter)
            .terminator(terminator)
            .from_writer(Vec::new());
        w.write_record(&columns).unwrap();
        let mut lines = Vec::new();
        for record in &table {
            w.flush().unwrap();
            let before = w.get_ref();
            lines.push(1 + naive_line_ends(before));
            w.write_record(record).unwrap();
        }
        let bytes = w.into_inner().unwrap();

        let opts = CsvOptions { delimiter, ..CsvOptions::default() };
        let (read_columns, rows) = read(&bytes, &opts);
        prop_assert_eq!(read_columns, columns);
        let expected: Vec<_> = table
            .iter()
            .zip(&lines)
            .map(|(cells, &line)| (line, Ok(cells.clone())))
            .collect();
        prop_assert_eq!(rows, expected);
    }
}

/// A reader that hands out `size` bytes per read, so records cross buffer refills.
struct Chunks(Vec<u8>, usize, usize);

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (data, at, size) = (&self.0, self.1, self.2);
        let chunk = data
            .get(at..data.len().min(at.saturating_add(size)))
            .unwrap_or_default();
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        self.1 += n;
        Ok(n)
    }
}

/// Everything a source makes of `input`: its header error, or its columns, its rows and the
/// error that ended them. With `quick` off, every record goes through `csv-core`.
#[allow(clippy::type_complexity)]
fn everything(
    input: &[u8],
    chunk: usize,
    opts: &CsvOptions,
    quick: bool,
) -> Result<(Vec<String>, Vec<Row>, Option<String>), String> {
    let mut src = CsvSource::from_reader(Chunks(input.to_vec(), 0, chunk), "model.csv", opts)
        .map_err(|e| e.to_string())?;
    if !quick {
        src.records.scanner = None;
    }
    let (rows, err) = drain_to_error(&mut src);
    Ok((src.columns().to_vec(), rows, err.map(|e| e.to_string())))
}

#[test]
fn plain_records_take_the_quick_path() {
    let mut src = source(b"a,b\n1,2\n\"3\",4\n", &CsvOptions::default()).unwrap();
    let mut row = SourceRow::default();
    assert!(src.next_row(&mut row).unwrap());
    assert_eq!(src.records.quick, 3);
    assert!(src.next_row(&mut row).unwrap());
    assert_eq!(
        src.records.quick, 0,
        "a quoted record goes through csv-core"
    );
    assert_eq!(
        row.values,
        [Value::Text("3".into()), Value::Text("4".into())]
    );
}

#[test]
fn a_non_ascii_delimiter_never_takes_the_quick_path() {
    let opts = CsvOptions {
        delimiter: 0xa9,
        ..CsvOptions::default()
    };
    let mut src = source(b"a\xa9b\nx\xc3\xa9y\n", &opts).unwrap();
    assert!(src.records.scanner.is_none());
    let (_, rows) = drain(&mut src);
    // The delimiter cuts "é" (C3 A9): the first field is not valid UTF-8.
    assert_eq!(rows, [defect(2, "line 2, column `a`: not valid UTF-8")]);
}

fn csv_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => prop::sample::select(b"ab,;\t\"'\\\r\n ".to_vec()),
        1 => prop::sample::select(vec![0xc3, 0xa9, 0xef, 0xbb, 0xbf, 0xfe, 0x00]),
        1 => any::<u8>(),
    ]
}

fn csv_options() -> impl Strategy<Value = CsvOptions> {
    (
        prop::sample::select(vec![b',', b';', b'\t', 0xfe, 0xa9]),
        prop::sample::select(vec![b'"', b'\'']),
        prop::option::of(Just(b'\\')),
        any::<bool>(),
    )
        .prop_map(|(delimiter, quote, escape, double_quote)| CsvOptions {
            delimiter,
            quote,
            escape,
            double_quote,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn the_quick_path_reads_what_csv_core_reads(
        input in proptest::collection::vec(csv_byte(), 0..160),
        opts in csv_options(),
        chunk in 1usize..40,
    ) {
        let reference = everything(&input, usize::MAX, &opts, false);
        prop_assert_eq!(&everything(&input, usize::MAX, &opts, true), &reference);
        prop_assert_eq!(&everything(&input, chunk, &opts, true), &reference);
        prop_assert_eq!(&everything(&input, chunk, &opts, false), &reference);
    }
}

/// What [`Scanner::scan`] finds, byte by byte.
fn scan_naively(scanner: &Scanner, buf: &[u8]) -> (Option<usize>, Vec<usize>) {
    let mut delimiters = Vec::new();
    for (i, &b) in buf.iter().enumerate() {
        if scanner.stops.contains(&b) {
            let end = (i > 0 && (b == b'\r' || b == b'\n')).then_some(i);
            return (end, delimiters);
        }
        if b == scanner.delimiter {
            delimiters.push(i);
        }
    }
    (None, delimiters)
}

#[test]
fn bytes_equal_marks_exactly_the_equal_bytes() {
    for byte in 0..=255u8 {
        for other in [0u8, 1, 0x7f, 0x80, 0xff, byte ^ 1, byte ^ 0x80, byte] {
            let word = u64::from_le_bytes([byte, other, 0, 0xff, other, byte, 0x80, other]);
            let mask = bytes_equal(word, byte);
            for (i, b) in word.to_le_bytes().into_iter().enumerate() {
                let marked = mask >> (8 * i) & 0xff;
                assert_eq!(
                    marked,
                    if b == byte { 0x80 } else { 0 },
                    "{byte:#x} {word:#x}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn the_scanner_finds_what_a_byte_loop_finds(
        buf in proptest::collection::vec(csv_byte(), 0..80),
        opts in csv_options(),
    ) {
        if let Some(scanner) = Scanner::new(&opts) {
            let mut delimiters = vec![99];
            let end = scanner.scan(&buf, &mut delimiters);
            let (naive_end, naive_delimiters) = scan_naively(&scanner, &buf);
            prop_assert_eq!(end, naive_end);
            if end.is_some() {
                prop_assert_eq!(delimiters, naive_delimiters);
            }
        }
    }
}

/// Line ends in `bytes` the obvious way: `\r\n`, `\n`, `\r`.
fn naive_line_ends(bytes: &[u8]) -> u64 {
    let mut n = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                n += 1;
                i += 1;
            }
            b'\r' | b'\n' => n += 1,
            _ => {}
        }
        i += 1;
    }
    n
}

// ---- regression tests: issue 12 (hostile input) ----

/// A reader of `header` repeated forever, counting the bytes handed out.
struct Endless(&'static [u8], Arc<AtomicUsize>);

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.1.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }
}

#[test]
fn an_unterminated_quote_mid_file_hid_the_rest_of_the_file() {
    // It read "2 rows", saying nothing of the quote: line 3's quote took lines 3 to 6 as one
    // value. Now the file is refused, naming the line where the quote opened.
    let input =
        b"email,tier\na@x.com,gold\nb@x.com,\"silver\nc@x.com,gold\nd@x.com,bronze\ne@x.com,gold\n";
    for chunk in [usize::MAX, 1, 7] {
        let mut src = CsvSource::from_reader(
            Chunks(input.to_vec(), 0, chunk),
            "model.csv",
            &CsvOptions::default(),
        )
        .unwrap();
        let (rows, err) = drain_to_error(&mut src);
        assert_eq!(rows, [ok(2, &["a@x.com", "gold"])], "chunk {chunk}");
        let err = err.expect("an error, not a value");
        assert!(matches!(err, Error::Record { line: 3, .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the model file model.csv, line 3: the quoted field that starts on line 3 is never \
             closed: the file ends inside it, so the rest of the file (lines 3 to 6) would be \
             one value. Nothing of the file is synced until it is fixed: close the quote (a \
             quote inside a quoted field is written twice, \"\")"
        );
    }
}

#[test]
fn a_quote_left_open_at_eof_was_read_as_a_value() {
    let (rows, err) = read_to_error(
        b"email,tier\na@x.com,gold\nb@x.com,\"silver",
        &CsvOptions::default(),
    );
    assert_eq!(rows, [ok(2, &["a@x.com", "gold"])]);
    let err = err.expect("an error");
    assert!(matches!(err, Error::Record { line: 3, .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("the rest of the line would be a value"),
        "{err}"
    );

    // The quote opens on a later line of a record that a quoted field already spans.
    let input = b"a,b,c\n\"x\ny\",2,\"open\nmore\n";
    let (rows, err) = read_to_error(input, &CsvOptions::default());
    assert_eq!(rows, []);
    let err = err.expect("an error");
    assert!(matches!(err, Error::Record { line: 3, .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("the record that starts on line 2 (on line 3)"),
        "{err}"
    );

    // Closed quotes, doubled quotes, escapes and a closing quote last are fine.
    let (_, rows) = read(b"a,b\n\"x\"\"\",\"y\"", &CsvOptions::default());
    assert_eq!(rows, [ok(2, &["x\"", "y"])]);
    let backslash = CsvOptions {
        escape: Some(b'\\'),
        double_quote: false,
        ..CsvOptions::default()
    };
    let (_, rows) = read(b"a\n\"x\\\"\"\n", &backslash);
    assert_eq!(rows, [ok(2, &["x\""])]);
    let (rows, err) = read_to_error(b"a\n\"x\\\"\n", &backslash);
    assert_eq!(rows, []);
    assert!(
        matches!(err, Some(Error::Record { line: 2, .. })),
        "{err:?}"
    );

    // In the header too.
    match source(b"email,\"tier\n1,2\n", &CsvOptions::default()) {
        Err(e @ Error::Record { line: 1, .. }) => {
            assert!(e.to_string().contains("lines 1 to 2"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn cr_only_line_ends_numbered_every_row_line_1() {
    // Run rows are keyed by line: a 5-row run recorded one row while its counts said 2
    // rejected.
    let input = b"email,tier\ra@x.com,gold\rb@x.com\r\rc@x.com,gold\rd@x.com,x,y\re@x.com,\"multi\rline\"\rf@x.com,gold";
    let (_, rows) = read(input, &CsvOptions::default());
    assert_eq!(
        rows,
        [
            ok(2, &["a@x.com", "gold"]),
            defect(3, "line 3 has 1 field; the header has 2"),
            ok(5, &["c@x.com", "gold"]),
            defect(6, "line 6 has 3 fields; the header has 2"),
            ok(7, &["e@x.com", "multi\rline"]),
            ok(9, &["f@x.com", "gold"]),
        ]
    );
    // A `\r\n` split across reads is one line end.
    let mut src = CsvSource::from_reader(
        OneByte(b"a\r\n1\r\n\r\n2\r\n".to_vec(), 0),
        "model.csv",
        &CsvOptions::default(),
    )
    .unwrap();
    let (_, rows) = drain(&mut src);
    assert_eq!(rows, [ok(2, &["1"]), ok(4, &["2"])]);
}

#[test]
fn a_50_mb_header_line_was_read_whole_and_echoed() {
    // It used 1.85 GB and printed 629 MB. Now reading stops past 1 MiB, with a short error.
    let counted = Arc::new(AtomicUsize::new(0));
    let e = CsvSource::from_reader(
        Endless(b"abcdefgh", counted.clone()),
        "model.csv",
        &CsvOptions::default(),
    )
    .unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains("the header (line 1) is longer than 1 MiB"),
        "{message}"
    );
    assert!(message.len() < 300, "{message}");
    assert!(counted.load(Ordering::Relaxed) < MAX_HEADER_BYTES + 2 * crate::BUFFER_CAPACITY);

    // Too many columns, within the bytes.
    let counted = Arc::new(AtomicUsize::new(0));
    let e = CsvSource::from_reader(
        Endless(b"a,", counted.clone()),
        "model.csv",
        &CsvOptions::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("has more than {MAX_COLUMNS} columns")),
        "{e}"
    );
    assert!(counted.load(Ordering::Relaxed) < MAX_HEADER_BYTES);

    // At the limit, a header is fine.
    let names: Vec<String> = (0..MAX_COLUMNS).map(|i| format!("c{i}")).collect();
    let header = names.join(",");
    let (columns, rows) = read(format!("{header}\n").as_bytes(), &CsvOptions::default());
    assert_eq!(columns.len(), MAX_COLUMNS);
    assert_eq!(rows, []);
    let (columns, _) = read(header.as_bytes(), &CsvOptions::default());
    assert_eq!(columns.len(), MAX_COLUMNS, "without a line break");

    // A duplicate among long names is named in short.
    let long = "n".repeat(100_000);
    let message = header_error(format!("{long},x,{long}\n").as_bytes());
    assert!(message.len() < 300, "{message}");
    assert!(message.contains("at positions 1 and 3"), "{message}");
}

/// One line-break style.
fn line_break() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["\n", "\r\n", "\r"])
}

proptest! {
    /// The same table written with `\n`, `\r\n` or `\r` line ends (inside quoted fields too,
    /// and in blank lines) reads as the same rows on the same lines.
    #[test]
    fn line_numbers_do_not_depend_on_the_line_break_style(
        records in proptest::collection::vec(
            (0usize..3, proptest::collection::vec("[a-z,\"]{0,3}(⏎[a-z]{0,2})?", 2)),
            0..10,
        ),
        style in line_break(),
        quick in any::<bool>(),
        chunk in 1usize..20,
    ) {
        let mut input = format!("a,b{style}");
        let mut expected = Vec::new();
        let mut line = 2u64;
        for (blank, cells) in &records {
            for _ in 0..*blank {
                input.push_str(style);
                line += 1;
            }
            let fields: Vec<String> = cells
                .iter()
                .map(|c| {
                    if c.contains([',', '"', '⏎']) {
                        format!("\"{}\"", c.replace('"', "\"\"").replace('⏎', style))
                    } else {
                        c.clone()
                    }
                })
                .collect();
            input.push_str(&fields.join(","));
            input.push_str(style);
            let values: Vec<String> = cells.iter().map(|c| c.replace('⏎', style)).collect();
            expected.push((line, Ok(values)));
            line += 1 + cells.iter().map(|c| c.matches('⏎').count() as u64).sum::<u64>();
        }
        let (columns, rows, err) = everything(input.as_bytes(), chunk, &CsvOptions::default(), quick)
            .map_err(TestCaseError::fail)?;
        prop_assert_eq!(columns, ["a", "b"]);
        prop_assert_eq!(err, None);
        prop_assert_eq!(rows, expected);
    }
}
