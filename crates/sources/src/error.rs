//! Errors that stop reading a model, whatever the source.
//!
//! A record that cannot be read properly is not an error: it comes back as a row with
//! [`sync_core::value::SourceRow::defect`] set. These errors are for what makes the rest of the
//! model unreadable: the file or the database cannot be opened, the read fails, the header or
//! the query's columns are unusable, a quote left open swallows the rest of a CSV file.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Which model an [`Error`] is about: a file (CSV, JSONL, Parquet, SQLite) or a database
/// (PostgreSQL, named by its URL with the password redacted).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Model {
    /// A model file (or, for Parquet, a folder of them); for sources built with
    /// `from_reader`, the name given there.
    File(PathBuf),
    /// A model database, by its redacted URL ([`crate::redact_url`]).
    Database(String),
}

impl Model {
    /// The model file at `path`.
    pub fn file(path: &Path) -> Model {
        Model::File(path.to_owned())
    }

    /// What a position in this model is called: a line of a file, a record of a query.
    fn position(&self) -> &'static str {
        match self {
            Model::File(_) => "line",
            Model::Database(_) => "record",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Model::File(path) => write!(f, "the model file {}", path.display()),
            Model::Database(url) => write!(f, "the model database {url}"),
        }
    }
}

/// Why a model source could not be opened or read on.
///
/// Messages name the model (a file, or a database by its redacted URL) and what would be
/// valid. The underlying I/O error, where there is one, is the
/// [`std::error::Error::source`], not part of the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model could not be opened (a file that cannot be opened, a server that cannot be
    /// reached or refuses the login, a query the database refuses).
    #[error("cannot open {model}")]
    Open {
        /// The model.
        model: Model,
        /// What the operating system or the database said.
        #[source]
        source: io::Error,
    },

    /// Reading the model failed part way (I/O error, lost connection).
    #[error("reading {model}{} failed", at(model, *line))]
    Read {
        /// The model.
        model: Model,
        /// The line (of a file) or record (of a query) being read when it failed, when known.
        line: Option<u64>,
        /// What the operating system or the database said.
        #[source]
        source: io::Error,
    },

    /// The header (CSV) or the columns (a schema, a query's result) are missing or unusable.
    #[error("{model}: {message}")]
    Header {
        /// The model.
        model: Model,
        /// What is wrong and what would be valid.
        message: String,
    },

    /// A record breaks the rest of the file: a CSV quoted field that the file ends inside
    /// (a quote left open), so where the records after it start is unknown.
    #[error("{model}, line {line}: {message}")]
    Record {
        /// The model.
        model: Model,
        /// Where the problem starts (for an open quote, the line of the quoted field).
        line: u64,
        /// What is wrong and what to do.
        message: String,
    },

    /// A JSONL model cannot be read at all (no column names could be found).
    #[error("{model}: {message}")]
    Json {
        /// The model.
        model: Model,
        /// What is wrong and what would be valid.
        message: String,
    },

    /// The reading options cannot work (e.g. the same byte as delimiter and quote, a URL that
    /// cannot be read, an empty query).
    #[error("invalid options for {model}: {message}")]
    Options {
        /// The model.
        model: Model,
        /// What is wrong and what would be valid.
        message: String,
    },
}

impl Error {
    /// The model the error is about.
    pub fn model(&self) -> &Model {
        match self {
            Error::Open { model, .. }
            | Error::Read { model, .. }
            | Error::Header { model, .. }
            | Error::Record { model, .. }
            | Error::Json { model, .. }
            | Error::Options { model, .. } => model,
        }
    }
}

fn at(model: &Model, line: Option<u64>) -> String {
    line.map(|l| format!(" at {} {l}", model.position()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_messages_name_the_file() {
        let e = Error::Open {
            model: Model::file(Path::new("m.csv")),
            source: io::Error::other("gone"),
        };
        assert_eq!(e.to_string(), "cannot open the model file m.csv");
        let e = Error::Read {
            model: Model::file(Path::new("m.csv")),
            line: Some(7),
            source: io::Error::other("gone"),
        };
        assert_eq!(
            e.to_string(),
            "reading the model file m.csv at line 7 failed"
        );
    }

    #[test]
    fn database_messages_name_the_database_not_a_file() {
        let model = Model::Database("postgres://ann:***@db/shop".to_owned());
        let e = Error::Open {
            model: model.clone(),
            source: io::Error::other("refused"),
        };
        assert_eq!(
            e.to_string(),
            "cannot open the model database postgres://ann:***@db/shop"
        );
        let e = Error::Read {
            model,
            line: Some(3),
            source: io::Error::other("lost"),
        };
        assert_eq!(
            e.to_string(),
            "reading the model database postgres://ann:***@db/shop at record 3 failed"
        );
    }
}
