//! Parquet models: one file or a folder of files, read row group by row group (see
//! [`ParquetSource`]).

use std::fmt;

use crate::float::set_float;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};

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

use crate::columns::{name_problem, NameProblem};
use crate::error::{Error, Model};
use crate::readahead::{Feed, Next, ReadAhead};
use crate::typed;
use crate::{set_defect, set_text};

mod columns;
mod decode;

use columns::*;
use decode::*;

/// Rows decoded per column at a time.
const BATCH_ROWS: usize = 1024;

/// How many decoded batches may wait while the decoding thread decodes the next one. Enough
/// that the threads rarely wait on each other, which matters on a busy machine, where every
/// wait can cost a scheduling delay.
const BATCHES_IN_FLIGHT: usize = 8;

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
    /// The decoding thread, a few batches ahead.
    ahead: ReadAhead<Batch, Failure>,
    /// Tells the decoding thread to open the next file.
    go: Sender<()>,
    /// How many files the decoding thread has been told to open.
    opened: usize,
    /// Whether the file being read has ended (or none was opened yet).
    between_files: bool,
    batch: Batch,
    /// The next row of `batch` to hand out.
    next: usize,
    /// Where that row starts in each column of `batch`.
    cursors: Vec<Cursor>,
    /// The number of the last record handed out.
    number: u64,
    done: bool,
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
            model: Model::File(path.to_owned()),
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
                        model: Model::File(file.clone()),
                        message,
                    })?;
                    reference = Some((file, shapes));
                }
                Some((first, expected)) => {
                    if let Some(difference) = schema_difference(expected, &shapes, first) {
                        return Err(Error::Header {
                            model: Model::File(file.clone()),
                            message: difference,
                        });
                    }
                }
            }
        }
        let shapes = reference.map(|(_, shapes)| shapes).unwrap_or_default();
        let columns: Vec<String> = shapes.iter().map(|s| s.name.clone()).collect();
        let (go, go_rx) = mpsc::channel();
        let thread_files = files.clone();
        let ahead = ReadAhead::spawn("parquet-model", BATCHES_IN_FLIGHT, move |feed| {
            decode_thread(&thread_files, &shapes, &go_rx, feed)
        })
        .map_err(|source| Error::Open {
            model: Model::File(path.to_owned()),
            source,
        })?;
        Ok(ParquetSource {
            path: path.to_owned(),
            files,
            cursors: vec![Cursor::default(); columns.len()],
            columns,
            ahead,
            go,
            opened: 0,
            between_files: true,
            batch: Batch::default(),
            next: 0,
            number: 0,
            done: false,
        })
    }
}

impl ModelSource for ParquetSource {
    type Error = Error;

    /// It reads on its own thread (`crate::readahead::ReadAhead`).
    fn reads_ahead(&self) -> bool {
        true
    }

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
                self.ahead.recycle(std::mem::take(&mut self.batch));
            }
            if self.between_files && self.opened < self.files.len() {
                self.opened += 1;
                self.between_files = false;
                // If the thread is gone, `next` below says so.
                let _ = self.go.send(());
            }
            // Past the last file's end, the thread's next word is the end.
            let failure = match self.ahead.next() {
                Next::Batch(batch) if batch.end_of_file => {
                    self.ahead.recycle(batch);
                    self.between_files = true;
                    continue;
                }
                Next::Batch(mut batch) => {
                    let Batch { plans, columns, .. } = &mut batch;
                    for (column, plan) in columns.iter_mut().zip(plans.iter()) {
                        column.copy_text(plan.conv);
                    }
                    self.batch = batch;
                    self.next = 0;
                    self.cursors.fill(Cursor::default());
                    continue;
                }
                Next::End => {
                    self.finish();
                    return Ok(false);
                }
                Next::Failed(Failure::Open(e)) => e,
                Next::Failed(Failure::Read(path, e)) => Error::Read {
                    model: Model::File(path),
                    line: Some(self.number + 1),
                    source: io::Error::new(io::ErrorKind::InvalidData, e),
                },
                Next::Stopped => Error::Read {
                    model: Model::File(self.path.clone()),
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
    /// The decoding thread has nothing more to say, or is to say no more.
    fn finish(&mut self) {
        self.done = true;
        self.batch = Batch::default();
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
        model: Model::File(dir.to_owned()),
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
        model: Model::File(path.to_owned()),
        source,
    })?;
    guarded(|| SerializedFileReader::new(file)).map_err(|e| Error::Open {
        model: Model::File(path.to_owned()),
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

/// What the decoding thread sends.
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
    /// Whether this batch only says that the file has ended (it holds no rows).
    end_of_file: bool,
    /// How the fields of that file are read.
    plans: Vec<Plan>,
    /// One per top-level field.
    columns: Vec<ColumnBatch>,
    rows: usize,
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
    feed: Feed<Batch, Failure>,
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
                feed.fail(Failure::Open(e));
                return;
            }
        };
        loop {
            let mut batch = feed.batch();
            batch.file = index;
            match guarded(|| file.decode(&mut batch)) {
                Ok(true) => {
                    batch.end_of_file = false;
                    if !feed.send(batch) {
                        return;
                    }
                }
                Ok(false) => {
                    batch.end_of_file = true;
                    batch.rows = 0;
                    if !feed.send(batch) {
                        return;
                    }
                    break;
                }
                Err(e) => {
                    feed.fail(Failure::Read(path.clone(), e));
                    return;
                }
            }
        }
    }
    feed.end();
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
                model: Model::File(path.to_owned()),
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

#[cfg(test)]
mod tests;
