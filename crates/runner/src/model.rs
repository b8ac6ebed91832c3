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

/// The model query narrowed by a SQL condition: the database filters the rows.
pub fn segment_query(query: &str, condition: &str) -> String {
    let query = query
        .trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    format!("SELECT * FROM (\n{query}\n) AS attentive_sync_segment WHERE {condition}")
}

/// Opens the source, SQL models narrowed by `sql_filter` inside the database (file models
/// ignore it: their rows are filtered by the planner).
pub fn open_segment(
    spec: &ModelSpec,
    sql_filter: Option<&str>,
) -> Result<DynSource, sources::Error> {
    let narrowed = |q: &String| match sql_filter {
        Some(condition) => segment_query(q, condition),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_wraps_the_query_without_its_trailing_semicolon() {
        assert_eq!(
            segment_query("select * from customers;  \n", "tier = 'gold'"),
            "SELECT * FROM (\nselect * from customers\n) AS attentive_sync_segment WHERE tier = 'gold'"
        );
    }

    #[test]
    fn a_sqlite_segment_is_filtered_by_the_database() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("m.db");
        let conn = rusqlite::Connection::open(&db).expect("open");
        conn.execute_batch(
            "CREATE TABLE c (email TEXT, tier TEXT); \
             INSERT INTO c VALUES ('a@x.com', 'gold'), ('b@x.com', 'silver'), ('c@x.com', NULL);",
        )
        .expect("seed");
        let spec = ModelSpec::Sqlite {
            path: db,
            query: "SELECT email, tier FROM c ORDER BY email;".into(),
        };
        let mut source = open_segment(&spec, Some("tier = 'gold' OR tier IS NULL")).expect("opens");
        assert_eq!(source.columns(), ["email", "tier"]);
        let mut row = sync_core::SourceRow::default();
        let mut emails = Vec::new();
        while source.next_row(&mut row).expect("reads") {
            emails.push(row.values[0].to_string());
        }
        assert_eq!(emails, ["a@x.com", "c@x.com"]);
        let err = open_segment(&spec, Some("tierr = 1"))
            .err()
            .expect("unknown column");
        assert!(err.to_string().contains("tierr"), "{err}");
    }
}
