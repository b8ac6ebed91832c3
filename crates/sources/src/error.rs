//! Errors that stop reading a model.
//!
//! A record that cannot be read properly is not an error: it comes back as a row with
//! [`sync_core::value::SourceRow::defect`] set. These errors are for what makes the rest of the
//! model unreadable: the file cannot be opened, the read fails, the header is unusable, a
//! quote left open swallows the rest of a CSV file.

use std::io;
use std::path::PathBuf;

/// Why a model source could not be opened or read on.
///
/// Messages name the file (for sources built with `from_reader`, the name given there) and
/// what would be valid. The underlying I/O error, where there is one, is the
/// [`std::error::Error::source`], not part of the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model file could not be opened.
    #[error("cannot open the model file {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// Reading the model failed part way (I/O error, lost connection).
    #[error("reading the model file {}{} failed", path.display(), at_line(*line))]
    Read {
        /// The file.
        path: PathBuf,
        /// The line being read when it failed, when known.
        line: Option<u64>,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// The CSV header is missing or unusable.
    #[error("the model file {}: {message}", path.display())]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong and what would be valid.
        message: String,
    },

    /// A record breaks the rest of the file: a CSV quoted field that the file ends inside
    /// (a quote left open), so where the records after it start is unknown.
    #[error("the model file {}, line {line}: {message}", path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// Where the problem starts (for an open quote, the line of the quoted field).
        line: u64,
        /// What is wrong and what to do.
        message: String,
    },

    /// A JSONL model cannot be read at all (no column names could be found).
    #[error("the model file {}: {message}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong and what would be valid.
        message: String,
    },

    /// The reading options cannot work (e.g. the same byte as delimiter and quote).
    #[error("invalid options for the model file {}: {message}", path.display())]
    Options {
        /// The file.
        path: PathBuf,
        /// What is wrong and what would be valid.
        message: String,
    },
}

fn at_line(line: Option<u64>) -> String {
    line.map(|l| format!(" at line {l}")).unwrap_or_default()
}
