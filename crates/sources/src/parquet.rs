//! Parquet models: one file or a folder of files, read row group by row group (see
//! [`ParquetSource`]).

use std::fmt::{self, Write as _};

use crate::float::set_float;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::{self, JoinHandle};

use ::parquet::basic::{ConvertedType, LogicalType, Repetition, TimeUnit, Type as PhysicalType};
use ::parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use ::parquet::data_type::{
    BoolType, ByteArray, ByteArrayType, DoubleType, FixedLenByteArray, FixedLenByteArrayType,
    FloatType, Int32Type, Int64Type, Int96, Int96Type,
};
use ::parquet::errors::ParquetError;
use ::parquet::file::reader::{FileReader, SerializedFileReader};
use ::parquet::schema::types::{ColumnDescriptor, SchemaDescriptor};
use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat, Utc};
use sync_core::ports::ModelSource;
use sync_core::value::{SourceRow, Value};

use crate::error::Error;
use crate::{set_defect, set_text};

/// Rows decoded per column at a time.
const BATCH_ROWS: usize = 1024;

/// How many decoded batches may wait while the decoding thread decodes the next one. Enough
/// that the threads rarely wait on each other, which matters on a busy machine, where every
/// wait can cost a scheduling delay.
const BATCHES_IN_FLIGHT: usize = 8;

/// How many bytes of a binary value are shown in [`Value::Unsupported`].
const BINARY_PREVIEW_BYTES: usize = 32;

/// Decimals with a larger scale are written with an exponent (`5e-500`), not 500 zeros.
const MAX_PLAIN_SCALE: i32 = 100;

/// Days from 0001-01-01 (day 1 of the common era) to 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// The Julian day of 1970-01-01, the epoch of INT96 timestamps.
const JULIAN_DAY_OF_UNIX_EPOCH: i64 = 2_440_588;

/// A Parquet model: one file, or a folder of `*.parquet` files read in file-name order.
///
/// The columns are the top-level fields of the schema. In a folder, every file must have the
/// same columns, in the same order and of the same types (a column may be required in one file
/// and optional in another); files whose names start with `.` or `_` (`_SUCCESS`,
/// `_metadata`) are skipped.
///
/// Reading is streamed: one file is open at a time, and of it one row group's column chunks,
/// decoded 1,024 rows at a time (pages are decompressed one by one by the `parquet` crate), so
/// memory stays flat however large the files are. A file is decoded on a thread of its own
/// (opened when the rows of the file before have all been handed out), at most eight batches
/// ahead of the rows handed out; values are typed as rows are handed out, on the caller's
/// thread, so the two threads share the work.
///
/// Values are typed by the Parquet logical type (or the legacy converted type) of their
/// column:
///
/// | Parquet type | value |
/// |---|---|
/// | null | [`Value::Null`] |
/// | `BOOLEAN` | [`Value::Bool`] |
/// | `INT32`, `INT64`, `INT(8/16/32/64, signed)`, `UINT_8/16/32` | [`Value::Int`] |
/// | `UINT_64` | [`Value::Int`], or [`Value::Number`] beyond `i64` |
/// | `DECIMAL` (`INT32`, `INT64`, `BINARY`, `FIXED_LEN_BYTE_ARRAY`) | [`Value::Number`] with the exact decimal text (`123.45`), never through a float |
/// | `FLOAT`, `DOUBLE`, `FLOAT16` | [`Value::Number`] with the shortest text that reads back as the same float; NaN and infinities are [`Value::Unsupported`] |
/// | `STRING`/`UTF8`, `ENUM`, `JSON` | [`Value::Text`] (JSON as its text) |
/// | `UUID` | [`Value::Text`], hyphenated lower-case hex |
/// | `DATE` | [`Value::Date`] |
/// | `TIMESTAMP` (millis, micros, nanos; UTC-adjusted or not), `INT96` | [`Value::Timestamp`] `YYYY-MM-DDTHH:MM:SS[.fff…]Z`, local timestamps taken as UTC |
/// | `TIME` | [`Value::Text`] `HH:MM:SS[.fff…]` |
/// | lists, repeated fields | [`Value::Unsupported`] `array` (text `[…]`), or null |
/// | maps, groups | [`Value::Unsupported`] `object` (text `{…}`), or null |
/// | `BINARY`/`FIXED_LEN_BYTE_ARRAY` without a logical type, `BSON`, geometries | [`Value::Unsupported`] `binary` |
/// | `INTERVAL` | [`Value::Unsupported`] `interval` |
///
/// A text value that is not valid UTF-8 makes its row a defect. A file that cannot be read
/// (not Parquet, truncated, corrupt) is an [`Error`] naming it.
///
/// [`SourceRow::number`] is the 1-based record number, counted across the files of a folder.
pub struct ParquetSource {
    /// The file or folder given, for messages.
    path: PathBuf,
    files: Vec<PathBuf>,
    columns: Vec<String>,
    receiver: Receiver<Message>,
    /// Tells the decoding thread to open the next file.
    go: Sender<()>,
    /// How many files the decoding thread has been told to open.
    opened: usize,
    /// Whether the file being read has ended (or none was opened yet).
    between_files: bool,
    /// Consumed batches, sent back to the decoding thread to be refilled.
    recycle: Sender<Batch>,
    batch: Batch,
    /// The next row of `batch` to hand out.
    next: usize,
    /// Where that row starts in each column of `batch`.
    cursors: Vec<Cursor>,
    /// The number of the last record handed out.
    number: u64,
    done: bool,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for ParquetSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParquetSource")
            .field("path", &self.path)
            .field("files", &self.files.len())
            .field("columns", &self.columns)
            .field("record", &self.number)
            .finish_non_exhaustive()
    }
}

impl ParquetSource {
    /// Opens the Parquet file at `path`, or the `*.parquet` files of the folder at `path`, and
    /// reads their schemas (their footers; no data yet).
    ///
    /// Errors: the path or a file cannot be opened, or a file is not Parquet
    /// ([`Error::Open`]); a folder has no `*.parquet` file ([`Error::Open`]); the schema has no
    /// column or two columns with the same name, or a file's columns differ from the first
    /// file's ([`Error::Header`], naming the file and the difference).
    pub fn open(path: &Path) -> Result<Self, Error> {
        let meta = std::fs::metadata(path).map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
        let files = if meta.is_dir() {
            folder_files(path)?
        } else {
            vec![path.to_owned()]
        };
        let mut reference: Option<(&Path, Vec<FieldShape>)> = None;
        for file in &files {
            let reader = open_reader(file)?;
            let shapes = field_shapes(reader.metadata().file_metadata().schema_descr());
            match &reference {
                None => {
                    check_names(&shapes).map_err(|message| Error::Header {
                        path: file.clone(),
                        message,
                    })?;
                    reference = Some((file, shapes));
                }
                Some((first, expected)) => {
                    if let Some(difference) = schema_difference(expected, &shapes, first) {
                        return Err(Error::Header {
                            path: file.clone(),
                            message: difference,
                        });
                    }
                }
            }
        }
        let shapes = reference.map(|(_, shapes)| shapes).unwrap_or_default();
        let columns: Vec<String> = shapes.iter().map(|s| s.name.clone()).collect();
        let (tx, receiver) = mpsc::sync_channel(BATCHES_IN_FLIGHT);
        let (recycle, recycled) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let thread_files = files.clone();
        let thread = thread::Builder::new()
            .name("parquet-model".to_owned())
            .spawn(move || decode_thread(&thread_files, &shapes, &go_rx, &tx, &recycled))
            .map_err(|source| Error::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(ParquetSource {
            path: path.to_owned(),
            files,
            cursors: vec![Cursor::default(); columns.len()],
            columns,
            receiver,
            go,
            opened: 0,
            between_files: true,
            recycle,
            batch: Batch::default(),
            next: 0,
            number: 0,
            done: false,
            thread: Some(thread),
        })
    }
}

impl ModelSource for ParquetSource {
    type Error = Error;

    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_row(&mut self, row: &mut SourceRow) -> Result<bool, Error> {
        loop {
            if self.next < self.batch.rows {
                self.number += 1;
                self.next += 1;
                self.fill(row);
                return Ok(true);
            }
            if self.done {
                return Ok(false);
            }
            if self.batch.rows > 0 {
                // The thread may be gone already; the batch is then simply dropped.
                let _ = self.recycle.send(std::mem::take(&mut self.batch));
            }
            if self.between_files {
                if self.opened >= self.files.len() {
                    self.finish();
                    return Ok(false);
                }
                self.opened += 1;
                self.between_files = false;
                // If the thread is gone, `recv` below says so.
                let _ = self.go.send(());
            }
            let failure = match self.receiver.recv() {
                Ok(Message::Rows(mut batch)) => {
                    let Batch { plans, columns, .. } = &mut batch;
                    for (column, plan) in columns.iter_mut().zip(plans.iter()) {
                        column.copy_text(plan.conv);
                    }
                    self.batch = batch;
                    self.next = 0;
                    self.cursors.fill(Cursor::default());
                    continue;
                }
                Ok(Message::FileEnd) => {
                    self.between_files = true;
                    continue;
                }
                Ok(Message::Failed(Failure::Open(e))) => e,
                Ok(Message::Failed(Failure::Read(path, e))) => Error::Read {
                    path,
                    line: Some(self.number + 1),
                    source: io::Error::new(io::ErrorKind::InvalidData, e),
                },
                Err(_) => Error::Read {
                    path: self.path.clone(),
                    line: Some(self.number + 1),
                    source: io::Error::other("the Parquet decoding thread stopped unexpectedly"),
                },
            };
            self.finish();
            return Err(failure);
        }
    }
}

impl ParquetSource {
    /// The decoding thread has nothing more to say: wait for it to end.
    fn finish(&mut self) {
        self.done = true;
        self.batch = Batch::default();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Types the next row of the current batch (`self.next` - 1) into `row`.
    fn fill(&mut self, row: &mut SourceRow) {
        let number = self.number;
        let batch = &self.batch;
        row.reset(number, batch.plans.len());
        let mut defect = None;
        let fields = batch
            .plans
            .iter()
            .zip(&batch.columns)
            .zip(&mut self.cursors);
        for (i, (((plan, column), cursor), slot)) in fields.zip(&mut row.values).enumerate() {
            if column.take(cursor, plan, slot).is_err() && defect.is_none() {
                defect = Some(i);
            }
        }
        if let Some(i) = defect {
            let name = self.columns.get(i).map_or("?", String::as_str);
            let path = self.files.get(batch.file).unwrap_or(&self.path);
            let file = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            set_defect(
                row,
                format!("record {number} ({file}), column `{name}`: not valid UTF-8"),
            );
        }
    }
}

/// The `*.parquet` files of a folder, in file-name order.
fn folder_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let open_error = |source| Error::Open {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(open_error)? {
        let entry = entry.map_err(open_error)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let hidden = name.starts_with('.') || name.starts_with('_');
        if hidden || !name.to_ascii_lowercase().ends_with(".parquet") {
            continue;
        }
        let path = entry.path();
        // Follows symbolic links.
        if path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(open_error(io::Error::new(
            io::ErrorKind::NotFound,
            "the folder has no *.parquet file",
        )));
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

fn open_reader(path: &Path) -> Result<SerializedFileReader<File>, Error> {
    let file = File::open(path).map_err(|source| Error::Open {
        path: path.to_owned(),
        source,
    })?;
    guarded(|| SerializedFileReader::new(file)).map_err(|e| Error::Open {
        path: path.to_owned(),
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a readable Parquet file: {e}"),
        ),
    })
}

/// Runs `f`, turning a panic into an error.
///
/// The `parquet` crate asserts on some corrupt files instead of returning an error (a data
/// page using a dictionary the column chunk does not have, for one); a model source must not
/// bring its caller down with it. After a caught panic the file is not read any further.
fn guarded<T>(f: impl FnOnce() -> Result<T, ParquetError>) -> Result<T, ParquetError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown failure".to_owned());
        Err(ParquetError::General(format!(
            "the file is corrupt; the Parquet reader failed: {what}"
        )))
    })
}

/// A top-level field as compared across the files of a folder.
struct FieldShape {
    name: String,
    /// The field as the `parquet` crate prints it, without its top-level `REQUIRED` or
    /// `OPTIONAL`, on one line: for messages.
    shape: String,
    /// What must be the same in every file: how a scalar's values are typed (so `INT32` and
    /// `INT64`, or `STRING` and legacy `UTF8`, are the same), or a nested field's shape.
    key: String,
}

fn field_shapes(schema: &SchemaDescriptor) -> Vec<FieldShape> {
    let plans = plans(schema);
    schema
        .root_schema()
        .get_fields()
        .iter()
        .zip(plans)
        .map(|(field, plan)| {
            let mut printed = Vec::new();
            ::parquet::schema::printer::print_schema(&mut printed, field);
            let printed = String::from_utf8_lossy(&printed);
            let one_line = printed.split_whitespace().collect::<Vec<_>>().join(" ");
            let shape = ["REQUIRED ", "OPTIONAL "]
                .iter()
                .find_map(|p| one_line.strip_prefix(p))
                .unwrap_or(&one_line)
                .to_owned();
            let key = match plan.conv {
                Conv::Nested(_) => shape.clone(),
                conv => format!("{conv:?}"),
            };
            FieldShape {
                name: field.name().to_owned(),
                shape,
                key,
            }
        })
        .collect()
}

/// What is wrong with the column names, if anything.
fn check_names(shapes: &[FieldShape]) -> Result<(), String> {
    if shapes.is_empty() {
        return Err("the schema has no columns".to_owned());
    }
    let mut seen = std::collections::HashMap::with_capacity(shapes.len());
    for (i, shape) in shapes.iter().enumerate() {
        let name = &shape.name;
        if name.trim().is_empty() {
            return Err(format!("column {} of the schema has no name", i + 1));
        }
        if let Some(first) = seen.insert(name.as_str(), i) {
            return Err(format!(
                "the schema has two columns named `{}`, at positions {} and {}",
                sync_core::message::excerpt(name),
                first + 1,
                i + 1
            ));
        }
    }
    Ok(())
}

/// How the columns of a file differ from those of `first`, if they do.
fn schema_difference(
    expected: &[FieldShape],
    found: &[FieldShape],
    first: &Path,
) -> Option<String> {
    let first = first.file_name().map_or_else(
        || first.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    // A schema can have thousands of fields: the list is cut (`… and K more`).
    let names = |shapes: &[FieldShape]| {
        use sync_core::message::{excerpt, MAX_NAMES};
        let mut list: Vec<String> = shapes
            .iter()
            .take(MAX_NAMES)
            .map(|s| format!("`{}`", excerpt(&s.name)))
            .collect();
        if shapes.len() > MAX_NAMES {
            list.push(format!("… and {} more", shapes.len() - MAX_NAMES));
        }
        list.join(", ")
    };
    for (i, (e, f)) in expected.iter().zip(found).enumerate() {
        if e.name != f.name {
            return Some(format!(
                "its columns differ from those of {first}, the first file of the folder: column \
                 {} is `{}` here but `{}` there; every file must have the same columns in the \
                 same order",
                i + 1,
                sync_core::message::excerpt(&f.name),
                sync_core::message::excerpt(&e.name)
            ));
        }
        if e.key != f.key {
            return Some(format!(
                "its columns differ from those of {first}, the first file of the folder: column \
                 `{}` is `{}` here but `{}` there; every file must have the same column types",
                sync_core::message::excerpt(&e.name),
                f.shape,
                e.shape
            ));
        }
    }
    if expected.len() != found.len() {
        return Some(format!(
            "its columns differ from those of {first}, the first file of the folder: it has {} \
             columns ({}) where {first} has {} ({}); every file must have the same columns",
            found.len(),
            names(found),
            expected.len(),
            names(expected)
        ));
    }
    None
}

/// How the values of a column become [`Value`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conv {
    Bool,
    /// Signed integers.
    Int,
    /// Unsigned integers, stored in an `INT32` or `INT64` of the same bits.
    UInt,
    /// The unscaled value of a decimal with this scale.
    Decimal(i32),
    Date,
    Time(Unit),
    Timestamp(Unit),
    /// A legacy `INT96` timestamp (nanoseconds of a Julian day).
    Int96,
    /// `FLOAT` or `DOUBLE`.
    Float,
    Float16,
    Text,
    Uuid,
    /// Bytes that are never sent: the kind of [`Value::Unsupported`].
    Binary(&'static str),
    /// A list, map or group: the kind of [`Value::Unsupported`]. Only its first leaf column is
    /// read, for its definition and repetition levels.
    Nested(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Millis,
    Micros,
    Nanos,
}

impl Unit {
    fn of(unit: &TimeUnit) -> Self {
        match unit {
            TimeUnit::MILLIS => Unit::Millis,
            TimeUnit::MICROS => Unit::Micros,
            TimeUnit::NANOS => Unit::Nanos,
        }
    }
}

/// How a top-level field is read.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// The leaf column read for it: the field itself, or the first leaf of a nested field
    /// (`None` for a group without leaves).
    leaf: Option<usize>,
    conv: Conv,
    max_def: i16,
    max_rep: i16,
    /// The definition level at which the field itself is present (1 when it is optional).
    present_def: i16,
}

/// How each top-level field of `schema` is read.
fn plans(schema: &SchemaDescriptor) -> Vec<Plan> {
    let fields = schema.root_schema().get_fields();
    let mut first_leaf = vec![None; fields.len()];
    for leaf in 0..schema.num_columns() {
        if let Some(slot) = first_leaf.get_mut(schema.get_column_root_idx(leaf)) {
            slot.get_or_insert(leaf);
        }
    }
    fields
        .iter()
        .zip(first_leaf)
        .map(|(field, leaf)| {
            let info = field.get_basic_info();
            let repetition = if info.has_repetition() {
                info.repetition()
            } else {
                Repetition::REQUIRED
            };
            let descr = leaf.map(|l| schema.column(l));
            let conv = match (&descr, field.is_group(), repetition) {
                (_, true, _) => {
                    let list = info.logical_type_ref() == Some(&LogicalType::List)
                        || info.converted_type() == ConvertedType::LIST;
                    Conv::Nested(if list { "array" } else { "object" })
                }
                (_, false, Repetition::REPEATED) => Conv::Nested("array"),
                (Some(d), false, _) => classify(d),
                (None, false, _) => Conv::Nested("object"),
            };
            Plan {
                leaf,
                conv,
                max_def: descr.as_ref().map_or(0, |d| d.max_def_level()),
                max_rep: descr.as_ref().map_or(0, |d| d.max_rep_level()),
                present_def: i16::from(repetition == Repetition::OPTIONAL),
            }
        })
        .collect()
}

/// How the values of a primitive, non-repeated column become [`Value`]s.
fn classify(d: &ColumnDescriptor) -> Conv {
    let logical = d.logical_type_ref();
    let converted = d.converted_type();
    match d.physical_type() {
        PhysicalType::BOOLEAN => Conv::Bool,
        PhysicalType::INT32 | PhysicalType::INT64 => match logical {
            Some(LogicalType::Decimal { .. }) => Conv::Decimal(d.type_scale()),
            Some(LogicalType::Date) => Conv::Date,
            Some(LogicalType::Time(t)) => Conv::Time(Unit::of(&t.unit)),
            Some(LogicalType::Timestamp(t)) => Conv::Timestamp(Unit::of(&t.unit)),
            Some(LogicalType::Integer(i)) if !i.is_signed => Conv::UInt,
            Some(LogicalType::Integer(_)) => Conv::Int,
            _ => match converted {
                ConvertedType::DECIMAL => Conv::Decimal(d.type_scale()),
                ConvertedType::DATE => Conv::Date,
                ConvertedType::TIME_MILLIS => Conv::Time(Unit::Millis),
                ConvertedType::TIME_MICROS => Conv::Time(Unit::Micros),
                ConvertedType::TIMESTAMP_MILLIS => Conv::Timestamp(Unit::Millis),
                ConvertedType::TIMESTAMP_MICROS => Conv::Timestamp(Unit::Micros),
                ConvertedType::UINT_8
                | ConvertedType::UINT_16
                | ConvertedType::UINT_32
                | ConvertedType::UINT_64 => Conv::UInt,
                _ => Conv::Int,
            },
        },
        PhysicalType::INT96 => Conv::Int96,
        PhysicalType::FLOAT | PhysicalType::DOUBLE => Conv::Float,
        PhysicalType::BYTE_ARRAY | PhysicalType::FIXED_LEN_BYTE_ARRAY => match logical {
            Some(LogicalType::String | LogicalType::Enum | LogicalType::Json) => Conv::Text,
            Some(LogicalType::Decimal { .. }) => Conv::Decimal(d.type_scale()),
            Some(LogicalType::Uuid) => Conv::Uuid,
            Some(LogicalType::Float16) => Conv::Float16,
            _ => match converted {
                ConvertedType::UTF8 | ConvertedType::ENUM | ConvertedType::JSON => Conv::Text,
                ConvertedType::DECIMAL => Conv::Decimal(d.type_scale()),
                ConvertedType::INTERVAL => Conv::Binary("interval"),
                _ => Conv::Binary("binary"),
            },
        },
    }
}

/// What the decoding thread sends.
enum Message {
    Rows(Batch),
    /// Every row of the file has been sent.
    FileEnd,
    /// Reading failed; nothing follows.
    Failed(Failure),
}

/// Why the decoding thread stopped early.
enum Failure {
    /// A file could not be opened, or its columns changed.
    Open(Error),
    /// A file could not be decoded.
    Read(PathBuf, ParquetError),
}

/// Up to [`BATCH_ROWS`] decoded rows of one file: each column's values and levels, undecoded
/// into model values yet.
#[derive(Default)]
struct Batch {
    /// The index of the file, in [`ParquetSource::files`].
    file: usize,
    /// How the fields of that file are read.
    plans: Vec<Plan>,
    /// One per top-level field.
    columns: Vec<ColumnBatch>,
    rows: usize,
}

/// The decoded batch of one column.
#[derive(Default)]
struct ColumnBatch {
    /// `None` for a group without leaves.
    values: Option<Values>,
    defs: Vec<i16>,
    reps: Vec<i16>,
    /// For a text column: its values, copied out of `values` (which is then emptied).
    text: Option<TextColumn>,
}

/// The values of a text column batch, copied out of their pages and checked as UTF-8 at once:
/// one string, each value a range of it.
#[derive(Default)]
struct TextColumn {
    text: String,
    /// Each value's range in `text`; an empty range starting past its end (`1..0`) for a value
    /// that is not valid UTF-8.
    spans: Vec<(usize, usize)>,
}

impl TextColumn {
    /// Replaces the values with those of `values`, checking them as UTF-8 all at once.
    fn fill<'a>(&mut self, values: impl Iterator<Item = &'a [u8]>) {
        let mut bytes = std::mem::take(&mut self.text).into_bytes();
        bytes.clear();
        self.spans.clear();
        for value in values {
            let start = bytes.len();
            bytes.extend_from_slice(value);
            self.spans.push((start, bytes.len()));
        }
        self.text = match String::from_utf8(bytes) {
            // Every value is valid exactly when its range has character bounds; a value
            // that is not valid UTF-8 alone has not (see `value`).
            Ok(text) => text,
            Err(e) => {
                // Some value is not valid UTF-8: check them one by one.
                let bytes = e.into_bytes();
                let mut text = String::with_capacity(bytes.len());
                for span in &mut self.spans {
                    match bytes.get(span.0..span.1).map(std::str::from_utf8) {
                        Some(Ok(value)) => {
                            let start = text.len();
                            text.push_str(value);
                            *span = (start, text.len());
                        }
                        _ => *span = (1, 0),
                    }
                }
                text
            }
        };
    }

    /// Value `i` (`None` past the last), or `Some(None)` when it is not valid UTF-8.
    fn value(&self, i: usize) -> Option<Option<&str>> {
        let &(start, end) = self.spans.get(i)?;
        Some(self.text.get(start..end))
    }
}

/// Where the next row of a [`ColumnBatch`] starts.
#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    level: usize,
    value: usize,
}

/// The decoded values of one column batch.
enum Values {
    Bool(Vec<bool>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Int96(Vec<Int96>),
    Float(Vec<f32>),
    Double(Vec<f64>),
    Bytes(Vec<ByteArray>),
    Fixed(Vec<FixedLenByteArray>),
}

/// A column reader of one row group.
enum Reader {
    Bool(ColumnReaderImpl<BoolType>),
    Int32(ColumnReaderImpl<Int32Type>),
    Int64(ColumnReaderImpl<Int64Type>),
    Int96(ColumnReaderImpl<Int96Type>),
    Float(ColumnReaderImpl<FloatType>),
    Double(ColumnReaderImpl<DoubleType>),
    Bytes(ColumnReaderImpl<ByteArrayType>),
    Fixed(ColumnReaderImpl<FixedLenByteArrayType>),
}

impl Reader {
    fn new(reader: ColumnReader) -> Self {
        match reader {
            ColumnReader::BoolColumnReader(r) => Reader::Bool(r),
            ColumnReader::Int32ColumnReader(r) => Reader::Int32(r),
            ColumnReader::Int64ColumnReader(r) => Reader::Int64(r),
            ColumnReader::Int96ColumnReader(r) => Reader::Int96(r),
            ColumnReader::FloatColumnReader(r) => Reader::Float(r),
            ColumnReader::DoubleColumnReader(r) => Reader::Double(r),
            ColumnReader::ByteArrayColumnReader(r) => Reader::Bytes(r),
            ColumnReader::FixedLenByteArrayColumnReader(r) => Reader::Fixed(r),
        }
    }

    /// Decodes the next `records` records into `column` (replacing what it held, and reusing
    /// its buffers when they are of this reader's type); returns how many were there.
    fn read(&mut self, records: usize, column: &mut ColumnBatch) -> Result<usize, ParquetError> {
        let ColumnBatch {
            values,
            defs,
            reps,
            text: _,
        } = column;
        defs.clear();
        reps.clear();
        macro_rules! read {
            ($reader:expr, $variant:ident) => {{
                if !matches!(values, Some(Values::$variant(_))) {
                    *values = Some(Values::$variant(Vec::new()));
                }
                match values {
                    Some(Values::$variant(v)) => {
                        v.clear();
                        $reader
                            .read_records(records, Some(defs), Some(reps), v)
                            .map(|(read, _, _)| read)
                    }
                    _ => Ok(0),
                }
            }};
        }
        match self {
            Reader::Bool(r) => read!(r, Bool),
            Reader::Int32(r) => read!(r, Int32),
            Reader::Int64(r) => read!(r, Int64),
            Reader::Int96(r) => read!(r, Int96),
            Reader::Float(r) => read!(r, Float),
            Reader::Double(r) => read!(r, Double),
            Reader::Bytes(r) => read!(r, Bytes),
            Reader::Fixed(r) => read!(r, Fixed),
        }
    }
}

/// The decoding thread: decodes the files in order, a batch at a time, and sends the batches
/// on `tx` until the end, a failure, or the receiver is gone. It opens a file when `go` says
/// so: when the rows of the file before have all been handed out, as a source without a
/// thread would.
fn decode_thread(
    files: &[PathBuf],
    shapes: &[FieldShape],
    go: &Receiver<()>,
    tx: &SyncSender<Message>,
    recycled: &Receiver<Batch>,
) {
    let Some(first) = files.first() else {
        return;
    };
    for (index, path) in files.iter().enumerate() {
        if go.recv().is_err() {
            return;
        }
        let mut file = match OpenFile::open(path, shapes, first) {
            Ok(file) => file,
            Err(e) => {
                let _ = tx.send(Message::Failed(Failure::Open(e)));
                return;
            }
        };
        loop {
            let mut batch = recycled.try_recv().unwrap_or_default();
            match guarded(|| file.decode(&mut batch)) {
                Ok(true) => {
                    batch.file = index;
                    if tx.send(Message::Rows(batch)).is_err() {
                        return;
                    }
                }
                Ok(false) => break,
                Err(e) => {
                    let _ = tx.send(Message::Failed(Failure::Read(path.clone(), e)));
                    return;
                }
            }
        }
        if tx.send(Message::FileEnd).is_err() {
            return;
        }
    }
}

/// The open file being decoded.
struct OpenFile {
    reader: SerializedFileReader<File>,
    plans: Vec<Plan>,
    /// One per top-level field (`None` for a group without leaves).
    columns: Vec<Option<Reader>>,
    /// The index of the next row group to start.
    next_group: usize,
    /// Rows of the current row group not decoded yet.
    group_rows_left: usize,
}

impl OpenFile {
    /// Opens a file of the model, which must still have the columns of the model's first file
    /// (`first`, whose columns are `expected`).
    fn open(path: &Path, expected: &[FieldShape], first: &Path) -> Result<Self, Error> {
        let reader = open_reader(path)?;
        let schema = reader.metadata().file_metadata().schema_descr();
        let found = field_shapes(schema);
        let difference = if path == first {
            (found.len() != expected.len()
                || found
                    .iter()
                    .zip(expected)
                    .any(|(f, e)| f.key != e.key || f.name != e.name))
            .then(|| "its columns changed since the model was opened".to_owned())
        } else {
            schema_difference(expected, &found, first)
                .map(|d| format!("{d} (the file changed since the model was opened)"))
        };
        if let Some(message) = difference {
            return Err(Error::Header {
                path: path.to_owned(),
                message,
            });
        }
        let plans = plans(schema);
        let columns = plans.iter().map(|_| None).collect();
        Ok(OpenFile {
            reader,
            plans,
            columns,
            next_group: 0,
            group_rows_left: 0,
        })
    }

    /// Decodes the next rows into `batch`; `Ok(false)` at the end of the file.
    fn decode(&mut self, batch: &mut Batch) -> Result<bool, ParquetError> {
        while self.group_rows_left == 0 {
            if self.next_group >= self.reader.num_row_groups() {
                return Ok(false);
            }
            self.start_group()?;
        }
        let n = self.group_rows_left.min(BATCH_ROWS);
        batch.plans.clone_from(&self.plans);
        batch
            .columns
            .resize_with(self.plans.len(), ColumnBatch::default);
        let fields = self.columns.iter_mut().zip(&self.plans);
        for (i, ((reader, plan), column)) in fields.zip(&mut batch.columns).enumerate() {
            let Some(reader) = reader else {
                column.values = None;
                column.defs.clear();
                column.reps.clear();
                continue;
            };
            let read = reader.read(n, column)?;
            if read != n {
                return Err(ParquetError::General(format!(
                    "row group {} ends early: column {} has {} fewer rows than the row \
                     group declares",
                    self.next_group,
                    i + 1,
                    n - read
                )));
            }
            if plan.max_def == 0 && plan.max_rep == 0 {
                // Levels are not stored for required, non-repeated columns.
                column.defs.clear();
            }
        }
        self.group_rows_left -= n;
        batch.rows = n;
        Ok(true)
    }

    /// Opens the column chunks of the next row group.
    fn start_group(&mut self) -> Result<(), ParquetError> {
        let index = self.next_group;
        self.next_group += 1;
        // The `parquet` crate asserts on negative offsets and sizes (see `guarded`): check
        // them first, for a plain error.
        let chunks = self.reader.metadata().row_group(index).columns();
        let negative = chunks.iter().any(|c| {
            c.data_page_offset() < 0
                || c.dictionary_page_offset().is_some_and(|o| o < 0)
                || c.compressed_size() < 0
        });
        if negative {
            return Err(ParquetError::General(format!(
                "row group {} has a column chunk at a negative offset or of a negative size",
                index + 1
            )));
        }
        let group = self.reader.get_row_group(index)?;
        let leaves = self
            .reader
            .metadata()
            .file_metadata()
            .schema_descr()
            .num_columns();
        if group.num_columns() != leaves {
            return Err(ParquetError::General(format!(
                "row group {} has {} column chunks; the schema has {leaves} columns",
                index + 1,
                group.num_columns()
            )));
        }
        let rows = group.metadata().num_rows();
        self.group_rows_left = usize::try_from(rows).map_err(|_| {
            ParquetError::General(format!(
                "row group {} has a negative row count ({rows})",
                index + 1
            ))
        })?;
        for (column, plan) in self.columns.iter_mut().zip(&self.plans) {
            *column = match plan.leaf {
                Some(leaf) => Some(Reader::new(group.get_column_reader(leaf)?)),
                None => None,
            };
        }
        Ok(())
    }
}

impl ColumnBatch {
    /// For a text column, copies the values into a [`TextColumn`] (done once per batch, as it
    /// arrives).
    fn copy_text(&mut self, conv: Conv) {
        let text = self.text.get_or_insert_with(TextColumn::default);
        match (&mut self.values, conv) {
            (Some(Values::Bytes(v)), Conv::Text) => {
                text.fill(v.iter().map(ByteArray::data));
            }
            (Some(Values::Fixed(v)), Conv::Text) => {
                text.fill(v.iter().map(|b| b.data()));
            }
            _ => self.text = None,
        }
    }

    /// Takes this column's value of the row at `cursor` into `slot`, and moves the cursor to
    /// the next row. `Err` when text is not valid UTF-8 (the slot is then null).
    fn take(&self, cursor: &mut Cursor, plan: &Plan, slot: &mut Value) -> Result<(), ()> {
        if let Conv::Nested(kind) = plan.conv {
            self.take_nested(cursor, plan, kind, slot);
            return Ok(());
        }
        let Some(values) = &self.values else {
            *slot = Value::Null;
            return Ok(());
        };
        if let Some(&def) = self.defs.get(cursor.level) {
            cursor.level += 1;
            if def < plan.max_def {
                *slot = Value::Null;
                return Ok(());
            }
        }
        let i = cursor.value;
        cursor.value += 1;
        if let Some(text) = &self.text {
            return match text.value(i) {
                Some(Some(t)) => {
                    set_text(slot, t);
                    Ok(())
                }
                Some(None) => {
                    *slot = Value::Null;
                    Err(())
                }
                // Not reached: a batch holds a value for every non-null level.
                None => {
                    *slot = Value::Null;
                    Ok(())
                }
            };
        }
        let set = match values {
            Values::Bool(v) => v.get(i).map(|&b| *slot = Value::Bool(b)),
            Values::Int32(v) => v
                .get(i)
                .map(|&x| set_int(slot, plan.conv, x.into(), x as u32 as u64)),
            Values::Int64(v) => v.get(i).map(|&x| set_int(slot, plan.conv, x, x as u64)),
            Values::Int96(v) => v.get(i).map(|x| *slot = int96_timestamp(x)),
            Values::Float(v) => v.get(i).map(|&x| set_float(slot, x)),
            Values::Double(v) => v.get(i).map(|&x| set_float(slot, x)),
            Values::Bytes(v) => match v.get(i) {
                Some(b) => return set_bytes(slot, plan.conv, b.data()),
                None => None,
            },
            Values::Fixed(v) => match v.get(i) {
                Some(b) => return set_bytes(slot, plan.conv, b.data()),
                None => None,
            },
        };
        if set.is_none() {
            // Not reached: a batch holds a value for every non-null level.
            *slot = Value::Null;
        }
        Ok(())
    }

    /// Takes the next record of a nested field: null, or unsupported.
    fn take_nested(&self, cursor: &mut Cursor, plan: &Plan, kind: &'static str, slot: &mut Value) {
        let first_def = self.defs.get(cursor.level).copied();
        if !self.defs.is_empty() || !self.reps.is_empty() {
            cursor.level += 1;
            // The record's other levels continue it (repetition level > 0).
            while self.reps.get(cursor.level).is_some_and(|&r| r > 0) {
                cursor.level += 1;
            }
        }
        let present = first_def.is_none_or(|d| d >= plan.present_def);
        *slot = if present {
            let text = if kind == "array" { "[…]" } else { "{…}" };
            Value::Unsupported {
                kind,
                text: text.to_owned(),
            }
        } else {
            Value::Null
        };
    }
}

/// An `INT32` or `INT64` value (`unsigned` holds the same bits, unsigned).
fn set_int(slot: &mut Value, conv: Conv, signed: i64, unsigned: u64) {
    *slot = match conv {
        Conv::UInt => match i64::try_from(unsigned) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Number(unsigned.to_string()),
        },
        Conv::Decimal(scale) => {
            let negative = signed < 0;
            let digits = signed.unsigned_abs().to_string();
            Value::Number(decimal_text(negative, &digits, scale))
        }
        Conv::Date => date(signed),
        Conv::Time(unit) => time_of_day(signed, unit),
        Conv::Timestamp(unit) => return set_timestamp(slot, signed, unit),
        _ => Value::Int(signed),
    };
}

fn date(days: i64) -> Value {
    let date = i32::try_from(days)
        .ok()
        .and_then(|d| d.checked_add(UNIX_EPOCH_DAYS_FROM_CE))
        .and_then(NaiveDate::from_num_days_from_ce_opt);
    match date {
        Some(d) => Value::Date(d),
        None => Value::Unsupported {
            kind: "out-of-range date",
            text: format!("{days} days after 1970-01-01"),
        },
    }
}

/// Splits a count of `unit` into seconds and nanoseconds (floored).
fn split(value: i64, unit: Unit) -> (i64, u32) {
    let per_second = match unit {
        Unit::Millis => 1_000,
        Unit::Micros => 1_000_000,
        Unit::Nanos => 1_000_000_000,
    };
    let nanos_per_unit = 1_000_000_000 / per_second;
    let nanos = value.rem_euclid(per_second) * nanos_per_unit;
    (
        value.div_euclid(per_second),
        u32::try_from(nanos).unwrap_or(0),
    )
}

fn time_of_day(value: i64, unit: Unit) -> Value {
    let (secs, nanos) = split(value, unit);
    let time = u32::try_from(secs)
        .ok()
        .and_then(|s| NaiveTime::from_num_seconds_from_midnight_opt(s, nanos));
    match time {
        Some(t) => Value::Text(t.format("%H:%M:%S%.f").to_string()),
        None => Value::Unsupported {
            kind: "out-of-range time",
            text: value.to_string(),
        },
    }
}

/// [`timestamp`] into `slot`, reusing its buffer.
fn set_timestamp(slot: &mut Value, value: i64, unit: Unit) {
    let (secs, nanos) = split(value, unit);
    match DateTime::from_timestamp(secs, nanos) {
        Some(at) => crate::timestamp::set_utc(slot, &at),
        None => *slot = utc_text(None, || value.to_string()),
    }
}

#[cfg(test)]
fn timestamp(value: i64, unit: Unit) -> Value {
    let (secs, nanos) = split(value, unit);
    utc_text(DateTime::from_timestamp(secs, nanos), || value.to_string())
}

fn utc_text(at: Option<DateTime<Utc>>, raw: impl FnOnce() -> String) -> Value {
    match at {
        Some(at) => Value::Timestamp(at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        None => Value::Unsupported {
            kind: "out-of-range timestamp",
            text: raw(),
        },
    }
}

/// A legacy `INT96` timestamp: nanoseconds of the day (8 bytes) then the Julian day (4 bytes),
/// little-endian.
fn int96_timestamp(x: &Int96) -> Value {
    let data = x.data();
    let word = |i: usize| data.get(i).copied().unwrap_or(0);
    let nanos_of_day = (u64::from(word(1)) << 32) | u64::from(word(0));
    let julian_day = i64::from(word(2) as i32);
    let at = i64::try_from(nanos_of_day).ok().and_then(|nanos| {
        let secs = (julian_day - JULIAN_DAY_OF_UNIX_EPOCH)
            .checked_mul(86_400)?
            .checked_add(nanos / 1_000_000_000)?;
        DateTime::from_timestamp(secs, u32::try_from(nanos % 1_000_000_000).ok()?)
    });
    utc_text(at, || format!("INT96 {data:?}"))
}

/// A `BINARY` or `FIXED_LEN_BYTE_ARRAY` value. `Err` when text is not valid UTF-8.
fn set_bytes(slot: &mut Value, conv: Conv, bytes: &[u8]) -> Result<(), ()> {
    match conv {
        Conv::Text => match std::str::from_utf8(bytes) {
            Ok(text) => set_text(slot, text),
            Err(_) => {
                *slot = Value::Null;
                return Err(());
            }
        },
        Conv::Decimal(scale) => {
            let (negative, digits) = twos_complement_digits(bytes);
            *slot = Value::Number(decimal_text(negative, &digits, scale));
        }
        Conv::Uuid if bytes.len() == 16 => {
            let mut text = String::with_capacity(36);
            for (i, b) in bytes.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    text.push('-');
                }
                let _ = write!(text, "{b:02x}");
            }
            *slot = Value::Text(text);
        }
        Conv::Float16 => match <[u8; 2]>::try_from(bytes) {
            Ok(b) => set_float(slot, f16_to_f32(u16::from_le_bytes(b))),
            Err(_) => *slot = binary("binary", bytes),
        },
        Conv::Binary(kind) => *slot = binary(kind, bytes),
        _ => *slot = binary("binary", bytes),
    }
    Ok(())
}

fn binary(kind: &'static str, bytes: &[u8]) -> Value {
    let mut text = String::with_capacity(2 + 2 * BINARY_PREVIEW_BYTES + 3);
    text.push_str("0x");
    for b in bytes.iter().take(BINARY_PREVIEW_BYTES) {
        let _ = write!(text, "{b:02x}");
    }
    if bytes.len() > BINARY_PREVIEW_BYTES {
        text.push('…');
    }
    Value::Unsupported { kind, text }
}

/// An IEEE half-precision float, widened exactly.
fn f16_to_f32(bits: u16) -> f32 {
    let negative = bits & 0x8000 != 0;
    let exponent = i32::from((bits >> 10) & 0x1f);
    let fraction = f32::from(bits & 0x3ff);
    let magnitude = match exponent {
        0 => fraction * 2f32.powi(-24),
        31 if fraction == 0.0 => f32::INFINITY,
        31 => f32::NAN,
        e => (1024.0 + fraction) * 2f32.powi(e - 25),
    };
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// The sign and decimal digits of a big-endian two's complement integer of any length.
fn twos_complement_digits(bytes: &[u8]) -> (bool, String) {
    let negative = bytes.first().is_some_and(|&b| b & 0x80 != 0);
    if bytes.len() <= 16 {
        let fill = if negative { 0xff } else { 0 };
        let mut buf = [fill; 16];
        if let Some(tail) = buf.get_mut(16 - bytes.len()..) {
            tail.copy_from_slice(bytes);
        }
        let n = i128::from_be_bytes(buf);
        return (negative, n.unsigned_abs().to_string());
    }
    // Longer: the magnitude (negated when negative) in base 10^9, least significant first.
    let mut magnitude: Vec<u8> = bytes.to_vec();
    if negative {
        for b in &mut magnitude {
            *b = !*b;
        }
        for b in magnitude.iter_mut().rev() {
            let (sum, carry) = b.overflowing_add(1);
            *b = sum;
            if !carry {
                break;
            }
        }
    }
    let mut limbs: Vec<u32> = Vec::new();
    for &byte in &magnitude {
        let mut carry = u64::from(byte);
        for limb in &mut limbs {
            let v = u64::from(*limb) * 256 + carry;
            *limb = (v % 1_000_000_000) as u32;
            carry = v / 1_000_000_000;
        }
        while carry > 0 {
            limbs.push((carry % 1_000_000_000) as u32);
            carry /= 1_000_000_000;
        }
    }
    let mut digits = match limbs.last() {
        Some(top) => top.to_string(),
        None => "0".to_owned(),
    };
    for limb in limbs.iter().rev().skip(1) {
        let _ = write!(digits, "{limb:09}");
    }
    (negative, digits)
}

/// The decimal text of an unscaled integer (`digits`, no sign) and a scale: `12345`, 2 →
/// `123.45`; `5`, 3 → `0.005`; a negative scale is an exponent (`12`, -3 → `12e3`).
fn decimal_text(negative: bool, digits: &str, scale: i32) -> String {
    let zero = digits.bytes().all(|b| b == b'0');
    let mut out = String::with_capacity(digits.len() + 4);
    if negative && !zero {
        out.push('-');
    }
    if scale <= 0 || scale > MAX_PLAIN_SCALE {
        out.push_str(digits);
        if scale > MAX_PLAIN_SCALE && !zero {
            let _ = write!(out, "e-{scale}");
            return out;
        }
        if scale < 0 && !zero {
            let _ = write!(out, "e{}", -i64::from(scale));
        }
        return out;
    }
    let scale = usize::try_from(scale).unwrap_or(0);
    if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        out.push_str(digits);
    }
    out
}

#[cfg(test)]
mod tests {
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
            let Error::Header { path, message } = &err else {
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
                let emails: Vec<String> =
                    ids.iter().map(|i| format!("user{i}@example.com")).collect();
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
}
