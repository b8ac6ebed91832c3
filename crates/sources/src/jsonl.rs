//! JSON Lines models: one JSON object per line, read line by line (see [`JsonlSource`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use sync_core::message::excerpt;
use sync_core::ports::ModelSource;
use sync_core::value::{SourceRow, Value};

use crate::error::{Error, Model};
use crate::typed;
use crate::{buffered, max_record_size, set_defect, Input, BOM, MAX_COLUMNS, MAX_RECORD_BYTES};

mod columns;
mod decode;

use columns::*;
use decode::*;

/// How many non-blank lines are read to learn the columns.
const SAMPLE_LINES: usize = 1000;

/// The lines of one input.
struct Lines {
    input: Input,
    /// The number of the last line read.
    line: u64,
    done: bool,
}

/// One line as read: its number, and whether it was cut because it is too long.
#[derive(Debug, Clone, Copy)]
struct LineInfo {
    number: u64,
    too_long: bool,
}

impl Lines {
    /// Reads the next line into `buf` (cleared first), without its line break. `Ok(None)` at
    /// the end of the input. A line longer than [`MAX_RECORD_BYTES`] is skipped and comes back
    /// empty with `too_long` set.
    fn next(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<LineInfo>> {
        buf.clear();
        if self.done {
            return Ok(None);
        }
        let result = self.next_inner(buf);
        if result.is_err() {
            self.done = true;
        }
        result
    }

    fn next_inner(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<LineInfo>> {
        let mut any = false;
        let mut too_long = false;
        loop {
            let chunk = self.input.fill_buf()?;
            if chunk.is_empty() {
                self.done = true;
                if !any {
                    return Ok(None);
                }
                break;
            }
            any = true;
            let newline = chunk.iter().position(|&b| b == b'\n');
            let take = newline.unwrap_or(chunk.len());
            let part = chunk.get(..take).unwrap_or_default();
            if !too_long {
                if buf.len() + part.len() > MAX_RECORD_BYTES {
                    too_long = true;
                    buf.clear();
                } else {
                    buf.extend_from_slice(part);
                }
            }
            let consumed = take + usize::from(newline.is_some());
            self.input.consume(consumed);
            if newline.is_some() {
                break;
            }
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        if self.line == 0 && buf.starts_with(BOM) {
            buf.drain(..BOM.len());
        }
        self.line += 1;
        Ok(Some(LineInfo {
            number: self.line,
            too_long,
        }))
    }
}

/// The first non-blank lines, held while the columns are learnt and then served first.
#[derive(Default)]
struct Sample {
    bytes: Vec<u8>,
    /// Each line and where it is in `bytes`.
    lines: Vec<(LineInfo, usize, usize)>,
    /// How many of `lines` have been served.
    next: usize,
}

/// A JSONL model, read one line at a time.
///
/// The columns are the keys of the first 1,000 non-blank lines, in the order they first appear.
/// Those lines are held in memory while the columns are learnt, then every line is streamed from
/// the start. In later lines, keys that are not columns are ignored and missing keys are
/// [`Value::Null`]. Blank lines are skipped; [`SourceRow::number`] is the line number (1-based).
///
/// Values are typed from their JSON text, never through a float: `null` → [`Value::Null`],
/// `true`/`false` → [`Value::Bool`], a string → [`Value::Text`], a number → [`Value::Int`] when
/// it fits an `i64` and otherwise [`Value::Number`] with its digits as written, an array or an
/// object → [`Value::Unsupported`] holding its first 200 characters.
///
/// A line that is not valid JSON, not an object, or not valid UTF-8, or whose object has a
/// column's key twice (`{"email": "a@x.com", "email": "b@x.com"}`: which one is meant is
/// unknown), comes back as a row with [`SourceRow::defect`] set, and reading goes on.
pub struct JsonlSource {
    path: PathBuf,
    columns: Vec<String>,
    index: HashMap<String, usize>,
    lines: Lines,
    sample: Sample,
    buf: Vec<u8>,
    /// Which columns the current line has set.
    seen: Vec<bool>,
}

impl fmt::Debug for JsonlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonlSource")
            .field("path", &self.path)
            .field("columns", &self.columns)
            .field("line", &self.lines.line)
            .finish_non_exhaustive()
    }
}

impl JsonlSource {
    /// Opens the JSONL file at `path` and learns its columns from its first 1,000 non-blank
    /// lines.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(|source| Error::Open {
            model: Model::File(path.to_owned()),
            source,
        })?;
        Self::with_input(Box::new(file), path.to_owned())
    }

    /// Reads JSONL from `reader` and learns its columns from its first 1,000 non-blank lines
    /// (held in memory until they are read); `name` stands for the file in messages.
    pub fn from_reader<R: Read + Send + 'static>(reader: R, name: &str) -> Result<Self, Error> {
        Self::with_input(Box::new(reader), PathBuf::from(name))
    }

    fn with_input(input: Box<dyn Read + Send>, path: PathBuf) -> Result<Self, Error> {
        let mut lines = Lines {
            input: buffered(input),
            line: 0,
            done: false,
        };
        let mut sample = Sample::default();
        let mut buf = Vec::new();
        let mut columns = Vec::new();
        let mut index = HashMap::new();
        let mut keys = Vec::new();
        let mut first_defect = None;
        while sample.lines.len() < SAMPLE_LINES {
            let info = match lines.next(&mut buf) {
                Ok(Some(info)) => info,
                Ok(None) => break,
                Err(source) => {
                    return Err(Error::Read {
                        model: Model::File(path),
                        line: Some(lines.line + 1),
                        source,
                    })
                }
            };
            if !info.too_long && buf.trim_ascii().is_empty() {
                continue;
            }
            let start = sample.bytes.len();
            sample.bytes.extend_from_slice(&buf);
            sample.lines.push((info, start, sample.bytes.len()));
            match line_keys(&buf, info, &mut keys) {
                Ok(()) => {
                    for key in keys.drain(..) {
                        if !index.contains_key(&key) {
                            index.insert(key.clone(), columns.len());
                            columns.push(key);
                        }
                    }
                    if columns.len() > MAX_COLUMNS {
                        return Err(Error::Json {
                            model: Model::File(path),
                            message: format!(
                                "its first {} non-blank lines have more than {MAX_COLUMNS} \
                                 distinct keys, the most a JSONL model may have as columns \
                                 (line {} has the key past the limit)",
                                sample.lines.len(),
                                info.number
                            ),
                        });
                    }
                }
                Err(defect) => {
                    first_defect.get_or_insert(defect);
                }
            }
        }
        if columns.is_empty() {
            let message = if sample.lines.is_empty() {
                "the file is empty (or blank); a JSONL model needs one JSON object per line, \
                 whose keys name the columns"
                    .to_owned()
            } else {
                let example = first_defect.map(|d| format!(" ({d})")).unwrap_or_default();
                format!(
                    "none of its first {} non-blank lines is a JSON object with keys{example}; \
                     a JSONL model needs one JSON object per line, whose keys name the columns",
                    sample.lines.len()
                )
            };
            return Err(Error::Json {
                model: Model::File(path),
                message,
            });
        }
        let ncols = columns.len();
        Ok(JsonlSource {
            path,
            columns,
            index,
            lines,
            sample,
            buf,
            seen: vec![false; ncols],
        })
    }
}

impl ModelSource for JsonlSource {
    type Error = Error;

    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_row(&mut self, row: &mut SourceRow) -> Result<bool, Error> {
        // The sampled lines first, then the rest of the input.
        if let Some(&(info, start, end)) = self.sample.lines.get(self.sample.next) {
            self.sample.next += 1;
            self.buf.clear();
            self.buf
                .extend_from_slice(self.sample.bytes.get(start..end).unwrap_or_default());
            if self.sample.next == self.sample.lines.len() {
                self.sample = Sample::default();
            }
            self.fill_row(info, row);
            return Ok(true);
        }
        loop {
            let info = match self.lines.next(&mut self.buf) {
                Ok(Some(info)) => info,
                Ok(None) => return Ok(false),
                Err(source) => {
                    return Err(Error::Read {
                        model: Model::File(self.path.clone()),
                        line: Some(self.lines.line + 1),
                        source,
                    })
                }
            };
            if info.too_long || !self.buf.trim_ascii().is_empty() {
                self.fill_row(info, row);
                return Ok(true);
            }
        }
    }
}

impl JsonlSource {
    /// Types the line in `buf` into `row`, or marks it as a defect.
    fn fill_row(&mut self, info: LineInfo, row: &mut SourceRow) {
        row.reset(info.number, self.columns.len());
        let text = match line_text(&self.buf, info) {
            Ok(text) => text,
            Err(defect) => return set_defect(row, defect),
        };
        self.seen.fill(false);
        let mut de = serde_json::Deserializer::from_str(text);
        let mut duplicate = None;
        let seed = RowSeed {
            columns: &self.columns,
            index: &self.index,
            values: &mut row.values,
            seen: &mut self.seen,
            duplicate: &mut duplicate,
        };
        match seed.deserialize(&mut de).and_then(|()| de.end()) {
            Ok(()) => {
                for (value, seen) in row.values.iter_mut().zip(&self.seen) {
                    if !seen {
                        *value = Value::Null;
                    }
                }
            }
            Err(e) => {
                let defect = match duplicate {
                    Some(key) => format!(
                        "line {}: the key `{}` appears twice in the object (the second one ends at \
                         column {}); which value is meant is unknown, so the line is not read \
                         (write each key once)",
                        info.number,
                        excerpt(&key),
                        e.column()
                    ),
                    None => json_defect(info.number, &e),
                };
                set_defect(row, defect);
            }
        }
    }
}

#[cfg(test)]
mod tests;
