//! Opens the model source a config names.

use sources::{CsvOptions, CsvSource, JsonlSource, ParquetSource, PostgresSource, SqliteSource};
use sync_core::ports::ModelSource;

use crate::config::ModelSpec;

/// A model source of any supported kind.
pub type DynSource = Box<dyn ModelSource<Error = sources::Error> + Send>;

/// Opens the source; reading starts at the first row.
pub fn open(spec: &ModelSpec) -> Result<DynSource, sources::Error> {
    open_segment(spec, None)
}

/// Opens the source, SQL models narrowed by `sql_filter` inside the database (file models
/// ignore it: their rows are filtered by the planner).
pub fn open_segment(
    spec: &ModelSpec,
    sql_filter: Option<&str>,
) -> Result<DynSource, sources::Error> {
    let narrowed = |q: &String| match sql_filter {
        Some(condition) => sources::segment::segment_query(q, condition),
        None => q.clone(),
    };
    Ok(match spec {
        ModelSpec::Csv {
            path,
            delimiter,
            quote,
        } => {
            let opts = CsvOptions {
                delimiter: *delimiter,
                quote: *quote,
                ..CsvOptions::default()
            };
            Box::new(CsvSource::open(path, &opts)?)
        }
        ModelSpec::Jsonl { path } => Box::new(JsonlSource::open(path)?),
        ModelSpec::Parquet { path } => Box::new(ParquetSource::open(path)?),
        ModelSpec::Sqlite { path, query } => Box::new(SqliteSource::open(path, &narrowed(query))?),
        ModelSpec::Postgres { url, query } => {
            Box::new(PostgresSource::open(&url.0, &narrowed(query))?)
        }
    })
}
