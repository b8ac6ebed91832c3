#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;

fn source(input: &[u8]) -> Result<JsonlSource, Error> {
    JsonlSource::from_reader(io::Cursor::new(input.to_vec()), "model.jsonl")
}

type Row = (u64, Result<Vec<Value>, String>);

fn drain(src: &mut JsonlSource) -> Vec<Row> {
    let mut row = SourceRow::default();
    let mut out = Vec::new();
    while src.next_row(&mut row).unwrap() {
        assert_eq!(row.values.len(), src.columns().len());
        let r = match &row.defect {
            Some(d) => {
                assert!(row.values.iter().all(|v| *v == Value::Null), "{row:?}");
                Err(d.clone())
            }
            None => Ok(row.values.clone()),
        };
        out.push((row.number, r));
    }
    assert!(!src.next_row(&mut row).unwrap());
    out
}

fn read(input: &str) -> (Vec<String>, Vec<Row>) {
    let mut src = source(input.as_bytes()).unwrap();
    let rows = drain(&mut src);
    (src.columns().to_vec(), rows)
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn json_error(input: &[u8]) -> String {
    match source(input) {
        Err(Error::Json {
            model: Model::File(path),
            message,
        }) => {
            assert_eq!(path, Path::new("model.jsonl"));
            message
        }
        other => panic!("expected a JSON error, got {other:?}"),
    }
}

#[test]
fn types_each_kind_of_value() {
    let big = "12345678901234567890.123";
    let input = format!(
        r#"{{"n":null,"t":true,"f":false,"s":"hi \"you\"\n\u00e9","i":-42,"d":412.50,"big":{big},"huge":12345678901234567890,"e":1e3,"arr":[1,{{"a":2}}],"obj":{{"a":[1,2]}}}}"#
    );
    let (columns, rows) = read(&input);
    assert_eq!(
        columns,
        ["n", "t", "f", "s", "i", "d", "big", "huge", "e", "arr", "obj"]
    );
    let expected = vec![
        Value::Null,
        Value::Bool(true),
        Value::Bool(false),
        text("hi \"you\"\né"),
        Value::Int(-42),
        Value::Number("412.50".into()),
        Value::Number(big.into()),
        Value::Number("12345678901234567890".into()),
        Value::Number("1e3".into()),
        Value::Unsupported {
            kind: "array",
            text: r#"[1,{"a":2}]"#.into(),
        },
        Value::Unsupported {
            kind: "object",
            text: r#"{"a":[1,2]}"#.into(),
        },
    ];
    assert_eq!(rows, [(1, Ok(expected))]);
}

#[test]
fn integer_bounds() {
    let (_, rows) = read(
        r#"{"a":9223372036854775807,"b":-9223372036854775808,"c":9223372036854775808,"d":-0}"#,
    );
    assert_eq!(
        rows,
        [(
            1,
            Ok(vec![
                Value::Int(i64::MAX),
                Value::Int(i64::MIN),
                Value::Number("9223372036854775808".into()),
                Value::Int(0),
            ])
        )]
    );
}

#[test]
fn long_nested_values_are_cut_to_200_characters() {
    let long: Vec<String> = (0..100).map(|i| format!("\"é{i}\"")).collect();
    let raw = format!("[{}]", long.join(","));
    let (_, rows) = read(&format!("{{\"tags\":{raw}}}"));
    let (_, Ok(values)) = &rows[0] else {
        panic!("{rows:?}")
    };
    let Value::Unsupported { kind, text } = &values[0] else {
        panic!("{values:?}")
    };
    assert_eq!(*kind, "array");
    assert_eq!(text.chars().count(), 200);
    assert!(raw.starts_with(text.as_str()));
}

#[test]
fn columns_are_the_union_of_keys_in_order_of_appearance() {
    let input = "{\"email\":\"a@x.com\",\"name\":\"Ann\"}\n\
                 {\"city\":\"Paris\",\"email\":\"b@x.com\"}\n\
                 {\"name\":\"Cy\",\"zip\":\"75001\",\"email\":\"c@x.com\"}\n";
    let (columns, rows) = read(input);
    assert_eq!(columns, ["email", "name", "city", "zip"]);
    assert_eq!(
        rows,
        [
            (
                1,
                Ok(vec![text("a@x.com"), text("Ann"), Value::Null, Value::Null])
            ),
            (
                2,
                Ok(vec![
                    text("b@x.com"),
                    Value::Null,
                    text("Paris"),
                    Value::Null
                ])
            ),
            (
                3,
                Ok(vec![
                    text("c@x.com"),
                    text("Cy"),
                    Value::Null,
                    text("75001")
                ])
            ),
        ]
    );
}

#[test]
fn keys_after_the_sample_are_ignored_and_missing_keys_are_null() {
    let mut input = String::new();
    for i in 0..SAMPLE_LINES {
        input.push_str(&format!("{{\"id\":{i},\"name\":\"n{i}\"}}\n"));
    }
    input.push_str("{\"id\":1000,\"late\":\"ignored\"}\n");
    input.push_str("{\"name\":\"last\",\"id\":1001}\n");
    let (columns, rows) = read(&input);
    assert_eq!(columns, ["id", "name"]);
    assert_eq!(rows.len(), SAMPLE_LINES + 2);
    assert_eq!(rows[999], (1000, Ok(vec![Value::Int(999), text("n999")])));
    assert_eq!(rows[1000], (1001, Ok(vec![Value::Int(1000), Value::Null])));
    assert_eq!(rows[1001], (1002, Ok(vec![Value::Int(1001), text("last")])));
}

#[test]
fn escaped_keys_match_columns() {
    let (columns, rows) = read("{\"a\\u0062\":1}\n{\"ab\":2}\n{\"\\\"q\\\"\":3}\n");
    assert_eq!(columns, ["ab", "\"q\""]);
    assert_eq!(
        rows,
        [
            (1, Ok(vec![Value::Int(1), Value::Null])),
            (2, Ok(vec![Value::Int(2), Value::Null])),
            (3, Ok(vec![Value::Null, Value::Int(3)])),
        ]
    );
}

#[test]
fn blank_lines_are_skipped_but_counted() {
    let (_, rows) = read("\n{\"a\":1}\r\n   \n\t\r\n{\"a\":2}\n\n");
    assert_eq!(
        rows,
        [(2, Ok(vec![Value::Int(1)])), (5, Ok(vec![Value::Int(2)]))]
    );
}

#[test]
fn a_leading_byte_order_mark_is_dropped() {
    let (columns, rows) = read("\u{feff}{\"a\":1}\n{\"a\":2}\n");
    assert_eq!(columns, ["a"]);
    assert_eq!(
        rows,
        [(1, Ok(vec![Value::Int(1)])), (2, Ok(vec![Value::Int(2)]))]
    );
}

#[test]
fn sources_can_move_to_another_thread() {
    fn send<T: Send>() {}
    send::<JsonlSource>();
}

#[test]
fn last_line_needs_no_line_break() {
    let (_, rows) = read("{\"a\":1}\n{\"a\":2}");
    assert_eq!(
        rows,
        [(1, Ok(vec![Value::Int(1)])), (2, Ok(vec![Value::Int(2)]))]
    );
}

#[test]
fn bad_lines_are_defects_and_reading_goes_on() {
    let mut input = b"{\"a\":1,\"b\":\"x\"}\n".to_vec();
    input.extend(b"{\"a\":2,\"b\":}\n"); // line 2
    input.extend(b"[1,2]\n"); // line 3
    input.extend(b"42\n"); // line 4
    input.extend(b"{\"a\":3} trailing\n"); // line 5
    input.extend(b"{\"a\":\"caf\xe9\"}\n"); // line 6
    input.extend(b"{\"a\":4,\"b\":\"y\"}\n"); // line 7
    input.extend(b"{\"a\":5\n"); // line 8
    let mut src = source(&input).unwrap();
    assert_eq!(src.columns(), ["a", "b"]);
    let rows = drain(&mut src);
    assert_eq!(rows.len(), 8);
    assert_eq!(rows[0], (1, Ok(vec![Value::Int(1), text("x")])));
    assert_eq!(
        rows[1],
        (
            2,
            Err("line 2: not a JSON object: expected value at column 12".into())
        )
    );
    let (3, Err(m)) = &rows[2] else {
        panic!("{:?}", rows[2])
    };
    assert!(
        m.starts_with("line 3: not a JSON object: invalid type: sequence"),
        "{m}"
    );
    let (4, Err(m)) = &rows[3] else {
        panic!("{:?}", rows[3])
    };
    assert!(
        m.starts_with("line 4: not a JSON object: invalid type: integer `42`"),
        "{m}"
    );
    assert_eq!(
        rows[4],
        (
            5,
            Err("line 5: not a JSON object: trailing characters at column 9".into())
        )
    );
    assert_eq!(rows[5], (6, Err("line 6: not valid UTF-8".into())));
    assert_eq!(rows[6], (7, Ok(vec![Value::Int(4), text("y")])));
    let (8, Err(m)) = &rows[7] else {
        panic!("{:?}", rows[7])
    };
    assert!(
        m.starts_with("line 8: not a JSON object: EOF while parsing an object"),
        "{m}"
    );
}

/// Fuzzing finding (`jsonl_source`): `RawValue` does not check that a `\u` escape pairs
/// its surrogates, so `"\ud41d\ude00"` (a lone low surrogate) came back as the text
/// `"\ud41d\ude00"`, quotes and backslashes included, and would have been sent as such.
#[test]
fn a_string_with_a_lone_surrogate_escape_is_a_defect() {
    let (columns, rows) = read(concat!(
        r#"{"a":"\ud41d\ude00","b":1}"#,
        "\n",
        r#"{"a":"\ud800","b":2}"#,
        "\n",
        r#"{"a":"\ud83d\ude00 \u00e9","b":3}"#,
        "\n",
    ));
    assert_eq!(columns, ["a", "b"]);
    assert_eq!(rows.len(), 3);
    for (i, row) in rows.iter().take(2).enumerate() {
        let (_, Err(m)) = row else { panic!("{row:?}") };
        assert!(
            m.starts_with(&format!(
                "line {}: not a JSON object: a string that is not valid text (",
                i + 1
            )),
            "{m}"
        );
    }
    assert_eq!(rows[2], (3, Ok(vec![text("\u{1f600} é"), Value::Int(3)])));
}

#[test]
fn keys_of_broken_lines_do_not_become_columns() {
    let (columns, rows) = read("{\"a\":1,\"b\":}\n{\"a\":2}\n");
    assert_eq!(columns, ["a"]);
    assert_eq!(rows[1], (2, Ok(vec![Value::Int(2)])));
}

#[test]
fn a_model_without_columns_is_an_error() {
    let message = json_error(b"");
    assert!(message.contains("the file is empty"), "{message}");
    let message = json_error(b"\n  \n\r\n");
    assert!(message.contains("the file is empty"), "{message}");
    let message = json_error(b"[1]\n{}\nnope\n");
    assert!(
        message.contains("none of its first 3 non-blank lines is a JSON object with keys")
            && message.contains("line 1: not a JSON object"),
        "{message}"
    );
}

#[test]
fn an_overlong_line_is_a_defect() {
    let mut input = b"{\"a\":1}\n{\"a\":\"".to_vec();
    input.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES + 1));
    input.extend(b"\"}\n{\"a\":3}\n");
    let (columns, rows) = {
        let mut src = source(&input).unwrap();
        let rows = drain(&mut src);
        (src.columns().to_vec(), rows)
    };
    assert_eq!(columns, ["a"]);
    assert_eq!(
        rows,
        [
            (1, Ok(vec![Value::Int(1)])),
            (2, Err("line 2: longer than 1 MiB".into())),
            (3, Ok(vec![Value::Int(3)])),
        ]
    );
}

#[test]
fn open_reads_a_file_and_names_a_missing_one() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(b"{\"email\":\"a@x.com\"}\n").unwrap();
    let mut src = JsonlSource::open(file.path()).unwrap();
    assert_eq!(src.columns(), ["email"]);
    assert_eq!(drain(&mut src), [(1, Ok(vec![text("a@x.com")]))]);

    let missing = file.path().with_extension("missing");
    assert!(matches!(
        JsonlSource::open(&missing),
        Err(Error::Open { .. })
    ));
}

/// Serves `data`, then fails.
struct FailsAfter(io::Cursor<Vec<u8>>);

impl Read for FailsAfter {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.read(buf)? {
            0 => Err(io::Error::other("disk gone")),
            n => Ok(n),
        }
    }
}

#[test]
fn an_io_error_stops_the_read() {
    let reader = FailsAfter(io::Cursor::new(b"{\"a\":1}\n".to_vec()));
    let e = JsonlSource::from_reader(reader, "m.jsonl").unwrap_err();
    assert!(matches!(e, Error::Read { line: Some(2), .. }), "{e:?}");
}

/// Generates JSONL of `rows` lines on the fly, counting the bytes handed out.
struct Generated {
    next_row: usize,
    rows: usize,
    pending: Vec<u8>,
    pos: usize,
    produced: Arc<AtomicUsize>,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.pending.len() {
            if self.next_row == self.rows {
                return Ok(0);
            }
            self.pending.clear();
            self.pos = 0;
            let i = self.next_row;
            writeln!(
                self.pending,
                r#"{{"email":"user{i}@example.com","points":{i},"spent":{i}.25,"vip":{}}}"#,
                i.is_multiple_of(2)
            )
            .unwrap();
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
    let produced = Arc::new(AtomicUsize::new(0));
    let input = Generated {
        next_row: 0,
        rows: ROWS,
        pending: Vec::new(),
        pos: 0,
        produced: produced.clone(),
    };
    let mut src = JsonlSource::from_reader(input, "big.jsonl").unwrap();
    assert_eq!(src.columns(), ["email", "points", "spent", "vip"]);
    let early = produced.load(Ordering::Relaxed);
    // The sample (1,000 lines) and about one buffer.
    assert!(
        early <= 2 * crate::BUFFER_CAPACITY,
        "{early} bytes read to learn the columns"
    );
    let mut row = SourceRow::default();
    let mut count: usize = 0;
    while src.next_row(&mut row).unwrap() {
        count += 1;
        assert_eq!(row.defect, None);
        if count.is_multiple_of(50_000) {
            let i = count - 1;
            assert_eq!(row.number, count as u64);
            assert_eq!(
                row.values,
                [
                    text(&format!("user{i}@example.com")),
                    Value::Int(i as i64),
                    Value::Number(format!("{i}.25")),
                    Value::Bool(i.is_multiple_of(2)),
                ]
            );
        }
    }
    assert_eq!(count, ROWS);
}

/// A cell of the generated tables.
#[derive(Debug, Clone)]
enum Cell {
    Missing,
    Null,
    Bool(bool),
    Int(i64),
    Decimal(String),
    Float(f64),
    Text(String),
}

impl Cell {
    fn expected(&self) -> Value {
        match self {
            Cell::Missing | Cell::Null => Value::Null,
            Cell::Bool(b) => Value::Bool(*b),
            Cell::Int(i) => Value::Int(*i),
            Cell::Decimal(d) => Value::Number(d.clone()),
            Cell::Float(f) => Value::Number(serde_json::to_string(f).unwrap()),
            Cell::Text(t) => Value::Text(t.clone()),
        }
    }

    fn json(&self) -> String {
        match self {
            Cell::Missing | Cell::Null => "null".to_owned(),
            Cell::Bool(b) => b.to_string(),
            Cell::Int(i) => i.to_string(),
            Cell::Decimal(d) => d.clone(),
            Cell::Float(f) => serde_json::to_string(f).unwrap(),
            Cell::Text(t) => serde_json::to_string(t).unwrap(),
        }
    }
}

fn cell() -> impl Strategy<Value = Cell> {
    prop_oneof![
        Just(Cell::Missing),
        Just(Cell::Null),
        any::<bool>().prop_map(Cell::Bool),
        any::<i64>().prop_map(Cell::Int),
        "-?[1-9][0-9]{19,30}(\\.[0-9]{1,6})?".prop_map(Cell::Decimal),
        // Floats are written with a fraction or exponent, so they are never read back as Int.
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Cell::Float),
        any::<String>().prop_map(Cell::Text),
        "[\"\\\\,\r\n\t é😀{}\\[\\]]{0,8}".prop_map(Cell::Text),
    ]
}

fn table() -> impl Strategy<Value = (Vec<String>, Vec<Vec<Cell>>)> {
    (1usize..6).prop_flat_map(|ncols| {
        (
            proptest::collection::vec(any::<String>(), ncols).prop_map(|names| {
                names
                    .into_iter()
                    .enumerate()
                    .map(|(i, n)| format!("{n}#{i}"))
                    .collect::<Vec<_>>()
            }),
            proptest::collection::vec(proptest::collection::vec(cell(), ncols), 0..12),
        )
    })
}

proptest! {
    #[test]
    fn reads_back_what_serde_json_writes((columns, table) in table()) {
        // The first line names every column, in order; the others may leave keys out and
        // list them in another order.
        let mut input = String::from("{");
        for (i, name) in columns.iter().enumerate() {
            if i > 0 {
                input.push(',');
            }
            input.push_str(&serde_json::to_string(name).unwrap());
            input.push_str(":\"first\"");
        }
        input.push_str("}\n");
        for (r, cells) in table.iter().enumerate() {
            let mut fields: Vec<String> = columns
                .iter()
                .zip(cells)
                .filter(|(_, c)| !matches!(c, Cell::Missing))
                .map(|(name, c)| format!("{}:{}", serde_json::to_string(name).unwrap(), c.json()))
                .collect();
            if r.is_multiple_of(2) {
                fields.reverse();
            }
            input.push('{');
            input.push_str(&fields.join(","));
            input.push_str("}\n");
        }

        let (read_columns, rows) = read(&input);
        prop_assert_eq!(&read_columns, &columns);
        let mut expected = vec![(1, Ok(vec![text("first"); columns.len()]))];
        for (r, cells) in table.iter().enumerate() {
            expected.push((r as u64 + 2, Ok(cells.iter().map(Cell::expected).collect())));
        }
        prop_assert_eq!(rows, expected);
    }
}

// ---- regression tests: issue 12 (hostile input) ----

#[test]
fn duplicate_keys_silently_took_the_last_value() {
    // `{"email": "a@x.com", ..., "email": "b@x.com"}` was read as b@x.com: the identifier
    // itself could change without a word. Now the line is a defect naming the key.
    let input = concat!(
        r#"{"email":"a@x.com","tier":"gold"}"#,
        "\n",
        r#"{"email":"a@x.com","tier":"gold","email":"b@x.com"}"#,
        "\n",
        r#"{"tier":"silver","em\u0061il":"c@x.com","email":"d@x.com"}"#,
        "\n",
        r#"{"email":"e@x.com","tier":null,"extra":1,"extra":2}"#,
        "\n",
        r#"{"email":"f@x.com","tier":"gold"}"#,
        "\n",
    );
    let (columns, rows) = read(input);
    assert_eq!(columns, ["email", "tier", "extra"]);
    assert_eq!(rows.len(), 5);
    assert_eq!(
        rows[1],
        (
            2,
            Err(
                "line 2: the key `email` appears twice in the object (the second one ends at \
                 column 40); which value is meant is unknown, so the line is not read (write \
                 each key once)"
                    .into()
            )
        )
    );
    let (3, Err(m)) = &rows[2] else {
        panic!("{:?}", rows[2])
    };
    assert!(
        m.starts_with("line 3: the key `email` appears twice"),
        "escaped spellings are the same key: {m}"
    );
    let (4, Err(m)) = &rows[3] else {
        panic!("{:?}", rows[3])
    };
    assert!(
        m.starts_with("line 4: the key `extra` appears twice"),
        "{m}"
    );
    assert_eq!(
        rows[4],
        (5, Ok(vec![text("f@x.com"), text("gold"), Value::Null]))
    );

    // A long duplicate key is named in short.
    let key = "k".repeat(100_000);
    let (_, rows) = read(&format!("{{\"{key}\":1,\"{key}\":2}}\n"));
    let (1, Err(m)) = &rows[0] else {
        panic!("{:?}", rows[0])
    };
    assert!(m.len() < 400, "{m}");
}

#[test]
fn a_line_with_a_million_keys_made_a_million_columns() {
    let keys: Vec<String> = (0..=MAX_COLUMNS).map(|i| format!("\"k{i}\":1")).collect();
    let input = format!("{{\"email\":\"a@x.com\"}}\n{{{}}}\n", keys.join(","));
    let message = json_error(input.as_bytes());
    assert!(
        message.contains(&format!("more than {MAX_COLUMNS} distinct keys"))
            && message.contains("line 2 has the key past the limit"),
        "{message}"
    );
    assert!(message.len() < 400, "{message}");
}

#[test]
fn deeply_nested_values_do_not_overflow_the_stack() {
    // serde_json skips and captures values without recursing past its limit: a line nested
    // 100,000 deep is a value or a defect, never a crash.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let input =
        format!("{{\"a\":1,\"b\":2}}\n{{\"a\":{deep},\"b\":3}}\n{{\"zz\":{deep}}}\n{{\"a\":4}}\n");
    std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || {
            let (columns, rows) = read(&input);
            assert_eq!(columns[..2], ["a", "b"]);
            assert_eq!(rows.len(), 4);
            let (4, Ok(values)) = &rows[3] else {
                panic!("{:?}", rows[3])
            };
            assert_eq!(values[0], Value::Int(4));
        })
        .unwrap()
        .join()
        .unwrap();
}
