//! Tests of the Parquet source.

use super::*;

use std::sync::Arc;

use ::parquet::basic::Compression;
use ::parquet::file::properties::WriterProperties;
use ::parquet::file::writer::SerializedFileWriter;
use ::parquet::schema::parser::parse_message_type;
use tempfile::TempDir;

/// The values of one column chunk.
enum Col {
    Bool(Vec<bool>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    I96(Vec<Int96>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes(Vec<ByteArray>),
    Fixed(Vec<FixedLenByteArray>),
}

/// One column chunk to write: its non-null values and its levels.
struct Chunk {
    col: Col,
    defs: Option<Vec<i16>>,
    reps: Option<Vec<i16>>,
}

fn req(col: Col) -> Chunk {
    Chunk {
        col,
        defs: None,
        reps: None,
    }
}

fn levels(col: Col, defs: &[i16], reps: &[i16]) -> Chunk {
    Chunk {
        col,
        defs: Some(defs.to_vec()),
        reps: (!reps.is_empty()).then(|| reps.to_vec()),
    }
}

/// An optional column from its cells.
fn opt<T: Clone>(cells: &[Option<T>], col: fn(Vec<T>) -> Col) -> Chunk {
    let defs = cells.iter().map(|c| i16::from(c.is_some())).collect();
    Chunk {
        col: col(cells.iter().flatten().cloned().collect()),
        defs: Some(defs),
        reps: None,
    }
}

fn strs(v: &[&str]) -> Vec<ByteArray> {
    v.iter().map(|s| ByteArray::from(*s)).collect()
}

fn bytes(v: &[&[u8]]) -> Vec<ByteArray> {
    v.iter().map(|b| ByteArray::from(b.to_vec())).collect()
}

fn fixed(v: &[&[u8]]) -> Vec<FixedLenByteArray> {
    v.iter()
        .map(|b| FixedLenByteArray::from(b.to_vec()))
        .collect()
}

fn write_props(path: &Path, schema: &str, groups: Vec<Vec<Chunk>>, props: WriterProperties) {
    let schema = Arc::new(parse_message_type(schema).unwrap());
    let file = File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(file, schema, Arc::new(props)).unwrap();
    for group in groups {
        let mut rg = writer.next_row_group().unwrap();
        for chunk in group {
            let mut cw = rg.next_column().unwrap().unwrap();
            let (d, r) = (chunk.defs.as_deref(), chunk.reps.as_deref());
            match &chunk.col {
                Col::Bool(v) => cw.typed::<BoolType>().write_batch(v, d, r),
                Col::I32(v) => cw.typed::<Int32Type>().write_batch(v, d, r),
                Col::I64(v) => cw.typed::<Int64Type>().write_batch(v, d, r),
                Col::I96(v) => cw.typed::<Int96Type>().write_batch(v, d, r),
                Col::F32(v) => cw.typed::<FloatType>().write_batch(v, d, r),
                Col::F64(v) => cw.typed::<DoubleType>().write_batch(v, d, r),
                Col::Bytes(v) => cw.typed::<ByteArrayType>().write_batch(v, d, r),
                Col::Fixed(v) => cw.typed::<FixedLenByteArrayType>().write_batch(v, d, r),
            }
            .unwrap();
            cw.close().unwrap();
        }
        rg.close().unwrap();
    }
    writer.close().unwrap();
}

fn write(path: &Path, schema: &str, groups: Vec<Vec<Chunk>>) {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    write_props(path, schema, groups, props);
}

fn read_all(src: &mut ParquetSource) -> Vec<SourceRow> {
    let mut rows = Vec::new();
    let mut row = SourceRow::default();
    while src.next_row(&mut row).unwrap() {
        rows.push(row.clone());
    }
    rows
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn num(s: &str) -> Value {
    Value::Number(s.to_owned())
}

fn ts(s: &str) -> Value {
    Value::Timestamp(s.to_owned())
}

fn date(y: i32, m: u32, d: u32) -> Value {
    Value::Date(NaiveDate::from_ymd_opt(y, m, d).unwrap())
}

fn unsupported(kind: &'static str, text: &str) -> Value {
    Value::Unsupported {
        kind,
        text: text.to_owned(),
    }
}

fn days(y: i32, m: u32, d: u32) -> i32 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
    let day = NaiveDate::from_ymd_opt(y, m, d).unwrap();
    i32::try_from((day - epoch).num_days()).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const ALL_TYPES: &str = "message m {
        required binary email (UTF8);
        optional int64 age;
        optional int32 small (INT_8);
        optional int32 u32 (UINT_32);
        optional int64 u64 (UINT_64);
        optional fixed_len_byte_array(16) id (UUID);
        required int32 d (DATE);
        optional int64 ts (TIMESTAMP(MICROS,true));
        optional int64 ts_ms (TIMESTAMP(MILLIS,false));
        optional int64 ts_ns (TIMESTAMP(NANOS,true));
        optional int64 amount (DECIMAL(18,2));
        optional int32 amount32 (DECIMAL(9,3));
        optional fixed_len_byte_array(20) big (DECIMAL(45,5));
        optional binary bdec (DECIMAL(10,2));
        optional float f;
        optional double dbl;
        optional boolean flag;
        optional binary raw;
        optional binary kind (ENUM);
        optional binary doc (JSON);
        optional int96 legacy;
        optional int32 t_ms (TIME(MILLIS,true));
        optional fixed_len_byte_array(2) half (FLOAT16);
        optional fixed_len_byte_array(12) span (INTERVAL);
        optional group tags (LIST) {
            repeated group list {
                optional binary element (UTF8);
            }
        }
        optional group address {
            optional binary city (UTF8);
            optional int32 zip;
        }
        optional group attrs (MAP) {
            repeated group key_value {
                required binary key (UTF8);
                optional binary value (UTF8);
            }
        }
        repeated int32 nums;
    }";

fn all_types_file(path: &Path) {
    let nines = hex("0000001d6329f1c35ca4bfabb9f560ffffffffff");
    let minus_nines = hex("ffffffe29cd60e3ca35b4054460a9f0000000001");
    let uuid: Vec<u8> = (0..16).collect();
    let mut legacy = Int96::new();
    // 2024-05-01T12:00:00.5Z: Julian day 2460432, 43,200.5 s into the day.
    let nanos: u64 = 43_200_500_000_000;
    legacy.set_data(nanos as u32, (nanos >> 32) as u32, 2_460_432);
    let group = vec![
        req(Col::Bytes(strs(&["a@x.io", "", "ü"]))),
        opt(&[Some(42), None, Some(i64::MIN)], Col::I64),
        opt(&[Some(-8), None, Some(127)], Col::I32),
        opt(&[Some(-1), None, Some(7)], Col::I32),
        opt(&[Some(-1), None, Some(5)], Col::I64),
        opt(&[Some(uuid.as_slice()), None, None], |v| {
            Col::Fixed(fixed(&v))
        }),
        req(Col::I32(vec![days(2024, 5, 1), 0, -1])),
        opt(&[Some(1_714_564_800_123_456), None, Some(-1)], Col::I64),
        opt(&[Some(1_714_564_800_500), None, None], Col::I64),
        opt(&[Some(1_714_564_800_000_000_001), None, None], Col::I64),
        opt(&[Some(12345), None, Some(0)], Col::I64),
        opt(&[Some(-5), None, Some(1000)], Col::I32),
        opt(
            &[Some(nines.as_slice()), None, Some(minus_nines.as_slice())],
            |v| Col::Fixed(fixed(&v)),
        ),
        opt(
            &[Some(hex("ffffcfc7").as_slice()), None, Some(&[0_u8][..])],
            |v| Col::Bytes(bytes(&v)),
        ),
        opt(&[Some(0.1_f32), None, Some(f32::NAN)], Col::F32),
        opt(&[Some(412.5), None, Some(f64::NEG_INFINITY)], Col::F64),
        opt(&[Some(true), None, Some(false)], Col::Bool),
        opt(&[Some(&[1_u8, 2, 255][..]), None, Some(&[][..])], |v| {
            Col::Bytes(bytes(&v))
        }),
        opt(&[Some("GOLD"), None, None], |v| Col::Bytes(strs(&v))),
        opt(&[Some("{\"a\":1}"), None, None], |v| Col::Bytes(strs(&v))),
        opt(&[Some(legacy), None, None], Col::I96),
        opt(&[Some(45_296_789), None, None], Col::I32),
        opt(&[Some(&[0x00_u8, 0x3e][..]), None, None], |v| {
            Col::Fixed(fixed(&v))
        }),
        opt(&[Some(&[0_u8; 12][..]), None, None], |v| {
            Col::Fixed(fixed(&v))
        }),
        // tags: ["a", "b"], null, []
        levels(Col::Bytes(strs(&["a", "b"])), &[3, 3, 0, 1], &[0, 1, 0, 0]),
        // address: {Paris, 75001}, null, {null, null}
        levels(Col::Bytes(strs(&["Paris"])), &[2, 0, 1], &[]),
        levels(Col::I32(vec![75001]), &[2, 0, 1], &[]),
        // attrs: {k: v}, null, {}
        levels(Col::Bytes(strs(&["k"])), &[2, 0, 1], &[0, 0, 0]),
        levels(Col::Bytes(strs(&["v"])), &[3, 0, 1], &[0, 0, 0]),
        // nums: [1, 2], [], [3]
        levels(Col::I32(vec![1, 2, 3]), &[1, 1, 0, 1], &[0, 1, 0, 0]),
    ];
    write(path, ALL_TYPES, vec![group]);
}

#[test]
fn text_columns_check_every_value() {
    let mut column = TextColumn::default();
    let values: [&[u8]; 6] = [b"ok", b"x\xc3", b"\xa9y", "é".as_bytes(), b"\xff", b""];
    column.fill(values.into_iter());
    let read: Vec<_> = (0..7).map(|i| column.value(i)).collect();
    assert_eq!(
        read,
        [
            Some(Some("ok")),
            Some(None),
            Some(None),
            Some(Some("é")),
            Some(None),
            Some(Some("")),
            None
        ]
    );
    // Valid as a whole, but a character is split between two values.
    column.fill([&b"x\xc3"[..], b"\xa9y", b"z"].into_iter());
    assert_eq!(column.value(0), Some(None));
    assert_eq!(column.value(1), Some(None));
    assert_eq!(column.value(2), Some(Some("z")));
    column.fill(["a", "b"].map(str::as_bytes).into_iter());
    assert_eq!(column.value(1), Some(Some("b")));
}

#[test]
fn is_send() {
    fn send<T: Send>() {}
    send::<ParquetSource>();
}

#[test]
fn types_each_parquet_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.parquet");
    all_types_file(&path);
    let mut src = ParquetSource::open(&path).unwrap();
    let names: Vec<&str> = ALL_TYPES
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("        ") && !l.starts_with("         "))
        .filter_map(|l| l.split_whitespace().nth(2))
        .map(|n| n.trim_end_matches(';'))
        .collect();
    assert_eq!(src.columns(), names);
    let rows = read_all(&mut src);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows.iter().map(|r| r.number).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(rows.iter().all(|r| r.defect.is_none()));
    let expected = [
        vec![
            text("a@x.io"),
            Value::Int(42),
            Value::Int(-8),
            Value::Int(4_294_967_295),
            num("18446744073709551615"),
            text("00010203-0405-0607-0809-0a0b0c0d0e0f"),
            date(2024, 5, 1),
            ts("2024-05-01T12:00:00.123456Z"),
            ts("2024-05-01T12:00:00.500Z"),
            ts("2024-05-01T12:00:00.000000001Z"),
            num("123.45"),
            num("-0.005"),
            num("99999999999999999999999999999999999.99999"),
            num("-123.45"),
            num("0.1"),
            num("412.5"),
            Value::Bool(true),
            unsupported("binary", "0x0102ff"),
            text("GOLD"),
            text("{\"a\":1}"),
            ts("2024-05-01T12:00:00.500Z"),
            text("12:34:56.789"),
            num("1.5"),
            unsupported("interval", "0x000000000000000000000000"),
            unsupported("array", "[…]"),
            unsupported("object", "{…}"),
            unsupported("object", "{…}"),
            unsupported("array", "[…]"),
        ],
        vec![
            text(""),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            date(1970, 1, 1),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            // An empty repeated field is an empty list, not null.
            unsupported("array", "[…]"),
        ],
        vec![
            text("ü"),
            Value::Int(i64::MIN),
            Value::Int(127),
            Value::Int(7),
            Value::Int(5),
            Value::Null,
            date(1969, 12, 31),
            ts("1969-12-31T23:59:59.999999Z"),
            Value::Null,
            Value::Null,
            num("0.00"),
            num("1.000"),
            num("-99999999999999999999999999999999999.99999"),
            num("0.00"),
            unsupported("non-finite number", "NaN"),
            unsupported("non-finite number", "-inf"),
            Value::Bool(false),
            unsupported("binary", "0x"),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            unsupported("array", "[…]"),
            unsupported("object", "{…}"),
            unsupported("object", "{…}"),
            unsupported("array", "[…]"),
        ],
    ];
    for (row, expected) in rows.iter().zip(expected) {
        for ((value, expected), name) in row.values.iter().zip(expected).zip(&names) {
            assert_eq!(*value, expected, "record {}, column {name}", row.number);
        }
        assert_eq!(row.values.len(), names.len());
    }
    let mut row = SourceRow::default();
    assert!(!src.next_row(&mut row).unwrap());
    assert!(!src.next_row(&mut row).unwrap());
}

fn id_name_file(path: &Path, groups: &[&[(i64, Option<&str>)]]) {
    let schema = "message m { required int64 id; optional binary name (UTF8); }";
    let groups = groups
        .iter()
        .map(|rows| {
            let ids = rows.iter().map(|r| r.0).collect();
            let names: Vec<Option<&str>> = rows.iter().map(|r| r.1).collect();
            vec![req(Col::I64(ids)), opt(&names, |v| Col::Bytes(strs(&v)))]
        })
        .collect();
    write(path, schema, groups);
}

fn ids_and_names(rows: &[SourceRow]) -> Vec<(u64, Value, Value)> {
    rows.iter()
        .map(|r| (r.number, r.values[0].clone(), r.values[1].clone()))
        .collect()
}

#[test]
fn reads_every_row_group() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("groups.parquet");
    id_name_file(
        &path,
        &[
            &[(1, Some("a")), (2, None)],
            &[],
            &[(3, Some("c"))],
            &[(4, None), (5, Some("e")), (6, Some("f"))],
        ],
    );
    let mut src = ParquetSource::open(&path).unwrap();
    assert_eq!(src.columns(), ["id", "name"]);
    let rows = read_all(&mut src);
    assert_eq!(
        ids_and_names(&rows),
        vec![
            (1, Value::Int(1), text("a")),
            (2, Value::Int(2), Value::Null),
            (3, Value::Int(3), text("c")),
            (4, Value::Int(4), Value::Null),
            (5, Value::Int(5), text("e")),
            (6, Value::Int(6), text("f")),
        ]
    );
}

#[test]
fn reads_a_folder_in_file_name_order() {
    let dir = tempfile::tempdir().unwrap();
    id_name_file(
        &dir.path().join("part-1.parquet"),
        &[&[(3, Some("c"))], &[(4, None)]],
    );
    // Required here, optional in part-1; INT32 here, INT64 there; STRING here, legacy UTF8
    // there: the same values, so the same column types.
    write(
        &dir.path().join("part-0.parquet"),
        "message m { required int32 id; required binary name (STRING); }",
        vec![vec![
            req(Col::I32(vec![1, 2])),
            req(Col::Bytes(strs(&["a", "b"]))),
        ]],
    );
    // Not model files.
    std::fs::write(dir.path().join("_SUCCESS"), "").unwrap();
    std::fs::write(dir.path().join(".part-0.parquet.crc"), "x").unwrap();
    std::fs::write(dir.path().join(".hidden.parquet"), "x").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
    std::fs::create_dir(dir.path().join("sub.parquet")).unwrap();
    let mut src = ParquetSource::open(dir.path()).unwrap();
    assert_eq!(src.columns(), ["id", "name"]);
    let rows = read_all(&mut src);
    assert_eq!(
        ids_and_names(&rows),
        vec![
            (1, Value::Int(1), text("a")),
            (2, Value::Int(2), text("b")),
            (3, Value::Int(3), text("c")),
            (4, Value::Int(4), Value::Null),
        ]
    );
}

#[test]
fn a_folder_with_mismatched_schemas_is_an_error_naming_the_file() {
    let cases = [
            (
                "message m { required binary id (UTF8); optional binary name (UTF8); }",
                "column `id` is `BYTE_ARRAY id (UTF8);` here but `INT64 id;` there",
            ),
            (
                "message m { required int64 id (TIMESTAMP(MICROS,true)); optional binary name (UTF8); }",
                "column `id` is `INT64 id (TIMESTAMP(MICROS,true));` here but `INT64 id;` there",
            ),
            (
                "message m { required int64 key; optional binary name (UTF8); }",
                "column 1 is `key` here but `id` there",
            ),
            (
                "message m { required int64 id; optional binary name (UTF8); optional int64 x; }",
                "it has 3 columns (`id`, `name`, `x`) where a.parquet has 2 (`id`, `name`)",
            ),
            (
                "message m { required int64 id; optional binary name; }",
                "column `name` is `BYTE_ARRAY name;` here but `BYTE_ARRAY name (UTF8);` there",
            ),
            (
                "message m { required int64 id; repeated binary name (UTF8); }",
                "column `name`",
            ),
        ];
    for (schema, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        id_name_file(&dir.path().join("a.parquet"), &[&[(1, Some("a"))]]);
        id_name_file(&dir.path().join("b.parquet"), &[&[(2, Some("b"))]]);
        write(&dir.path().join("c.parquet"), schema, vec![]);
        let err = ParquetSource::open(dir.path()).unwrap_err();
        let Error::Header {
            model: Model::File(path),
            message,
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(path, &dir.path().join("c.parquet"));
        assert!(message.contains("a.parquet"), "{message}");
        assert!(message.contains(expected), "{message}");
        assert!(err.to_string().contains("c.parquet"), "{err}");
    }
}

#[test]
fn a_file_changed_after_opening_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    id_name_file(&dir.path().join("a.parquet"), &[&[(1, Some("a"))]]);
    id_name_file(&dir.path().join("b.parquet"), &[&[(2, Some("b"))]]);
    let mut src = ParquetSource::open(dir.path()).unwrap();
    write(
        &dir.path().join("b.parquet"),
        "message m { required int64 id; }",
        vec![vec![req(Col::I64(vec![2]))]],
    );
    let mut row = SourceRow::default();
    assert!(src.next_row(&mut row).unwrap());
    let err = src.next_row(&mut row).unwrap_err();
    assert!(matches!(err, Error::Header { .. }), "{err:?}");
    assert!(err.to_string().contains("b.parquet"), "{err}");
    assert!(err.to_string().contains("changed since"), "{err}");
    assert!(!src.next_row(&mut row).unwrap());
}

#[test]
fn an_empty_folder_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.csv"), "a\n1\n").unwrap();
    let err = ParquetSource::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err:?}");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("no *.parquet file"), "{source}");
}

#[test]
fn a_missing_path_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = ParquetSource::open(&dir.path().join("nope.parquet")).unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.parquet"), "{err}");
}

/// Opens `path` and reads it to the end; the first error, if any.
fn first_error(path: &Path) -> Option<Error> {
    let mut src = match ParquetSource::open(path) {
        Ok(src) => src,
        Err(e) => return Some(e),
    };
    let mut row = SourceRow::default();
    loop {
        match src.next_row(&mut row) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => return Some(e),
        }
    }
}

#[test]
fn corrupt_files_are_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.parquet");
    std::fs::write(&garbage, b"PAR1 this is not parquet at all PAR1").unwrap();
    let empty = dir.path().join("empty.parquet");
    std::fs::write(&empty, b"").unwrap();
    let good = dir.path().join("good.parquet");
    // Without dictionaries: a data page damaged to claim dictionary encoding then makes
    // the `parquet` crate panic, which must come back as an error.
    write_props(
        &good,
        "message m { required int64 id; optional binary name (UTF8); }",
        vec![vec![
            req(Col::I64(vec![1, 2])),
            opt(&[Some("a"), None], |v| Col::Bytes(strs(&v))),
        ]],
        WriterProperties::builder()
            .set_dictionary_enabled(false)
            .build(),
    );
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.parquet");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    for path in [&garbage, &empty, &truncated] {
        let err = ParquetSource::open(path).unwrap_err();
        assert!(matches!(err, Error::Open { .. }), "{err:?}");
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(err.to_string().contains(name), "{err}");
    }
    // Damaged data pages behind an intact footer: every byte after the magic number in
    // turn, so that page headers, levels and values are all hit somewhere. Reading may
    // fail or not, but never panics, and a failure names the file.
    let damaged = dir.path().join("damaged.parquet");
    let data_end = bytes.len()
        - 8
        - bytes
            .get(bytes.len() - 8..bytes.len() - 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
            .unwrap();
    let mut failures = 0;
    for at in 4..data_end {
        for mask in [0xff, 0x01, 0x04, 0x10, 0x80] {
            let mut copy = bytes.clone();
            copy[at] ^= mask;
            std::fs::write(&damaged, &copy).unwrap();
            if let Some(err) = first_error(&damaged) {
                failures += 1;
                assert!(err.to_string().contains("damaged.parquet"), "{err}");
            }
        }
    }
    assert!(failures > 0);
}

#[test]
fn invalid_utf8_text_is_a_defect_and_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.parquet");
    write(
        &path,
        "message m { required int64 id; required binary name (UTF8); }",
        vec![vec![
            req(Col::I64(vec![1, 2, 3])),
            req(Col::Bytes(bytes(&[b"ok", b"\xff\xfe", b"fine"]))),
        ]],
    );
    let mut src = ParquetSource::open(&path).unwrap();
    let rows = read_all(&mut src);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].defect, None);
    assert_eq!(
        rows[1].defect.as_deref(),
        Some("record 2 (bad.parquet), column `name`: not valid UTF-8")
    );
    assert_eq!(rows[1].values, vec![Value::Null, Value::Null]);
    assert_eq!(rows[2].values, vec![Value::Int(3), text("fine")]);
    assert_eq!(rows[2].defect, None);
}

#[test]
fn duplicate_column_names_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dup.parquet");
    write(
        &path,
        "message m { required int64 id; optional int64 id; }",
        vec![],
    );
    let err = ParquetSource::open(&path).unwrap_err();
    assert!(matches!(err, Error::Header { .. }), "{err:?}");
    assert!(err.to_string().contains("two columns named `id`"), "{err}");
}

#[test]
fn streams_100_000_rows() {
    let dir: TempDir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.parquet");
    let schema = "message m {
            required int64 id;
            required binary email (UTF8);
            optional double score;
        }";
    let total = 100_000_i64;
    let groups = (0..total)
        .step_by(30_000)
        .map(|start| {
            let ids: Vec<i64> = (start..(start + 30_000).min(total)).collect();
            let emails: Vec<String> = ids.iter().map(|i| format!("user{i}@example.com")).collect();
            let scores: Vec<Option<f64>> = ids
                .iter()
                .map(|&i| (i % 7 != 0).then(|| i as f64 / 4.0))
                .collect();
            vec![
                req(Col::I64(ids)),
                req(Col::Bytes(
                    emails.iter().map(|e| ByteArray::from(e.as_str())).collect(),
                )),
                opt(&scores, Col::F64),
            ]
        })
        .collect();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(Default::default()))
        .set_data_page_row_count_limit(5_000)
        .build();
    write_props(&path, schema, groups, props);
    let mut src = ParquetSource::open(&path).unwrap();
    let mut row = SourceRow::default();
    let mut n = 0_i64;
    while src.next_row(&mut row).unwrap() {
        assert_eq!(row.number, n as u64 + 1);
        assert_eq!(row.values[0], Value::Int(n));
        assert_eq!(row.values[1], text(&format!("user{n}@example.com")));
        let score = if n % 7 == 0 {
            Value::Null
        } else {
            num(&format!("{:?}", n as f64 / 4.0))
        };
        assert_eq!(row.values[2], score);
        n += 1;
    }
    assert_eq!(n, total);
}

#[test]
fn decimals_are_exact() {
    let d = |neg, digits: &str, scale| decimal_text(neg, digits, scale);
    assert_eq!(d(false, "12345", 2), "123.45");
    assert_eq!(d(false, "5", 3), "0.005");
    assert_eq!(d(true, "5", 1), "-0.5");
    assert_eq!(d(false, "0", 2), "0.00");
    assert_eq!(d(true, "0", 0), "0");
    assert_eq!(d(false, "120", 0), "120");
    assert_eq!(d(false, "12", -3), "12e3");
    assert_eq!(d(false, "7", 1000), "7e-1000");
    let t = |b: &[u8]| twos_complement_digits(b);
    assert_eq!(t(&[]), (false, "0".to_owned()));
    assert_eq!(t(&[0xff]), (true, "1".to_owned()));
    assert_eq!(t(&[0x80]), (true, "128".to_owned()));
    assert_eq!(t(&[0x00, 0xff]), (false, "255".to_owned()));
    let mut min = vec![0x80];
    min.extend([0; 19]);
    // -2^159
    assert_eq!(
        t(&min),
        (
            true,
            "730750818665451459101842416358141509827966271488".to_owned()
        )
    );
    for n in [i128::MIN, i128::MAX, -1, 0, 1, 10_i128.pow(30)] {
        let mut long = if n < 0 { vec![0xff; 4] } else { vec![0; 4] };
        long.extend(n.to_be_bytes());
        let expected = (n < 0, n.unsigned_abs().to_string());
        assert_eq!(t(&n.to_be_bytes()), expected);
        assert_eq!(t(&long), expected);
    }
}

#[test]
fn half_floats_widen_exactly() {
    assert_eq!(f16_to_f32(0x3e00), 1.5);
    assert_eq!(f16_to_f32(0xc000), -2.0);
    assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
    assert_eq!(f16_to_f32(0x7bff), 65504.0);
    assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
    assert!(f16_to_f32(0x7e00).is_nan());
}

#[test]
fn timestamps_before_the_epoch_floor() {
    assert_eq!(timestamp(-1, Unit::Millis), ts("1969-12-31T23:59:59.999Z"));
    assert_eq!(
        timestamp(-1_000_000_000, Unit::Nanos),
        ts("1969-12-31T23:59:59Z")
    );
    assert_eq!(
        timestamp(i64::MAX, Unit::Millis),
        unsupported("out-of-range timestamp", &i64::MAX.to_string())
    );
    assert_eq!(time_of_day(-1, Unit::Millis).kind(), "out-of-range time");
    assert_eq!(super::date(i64::from(i32::MAX)).kind(), "out-of-range date");
}
