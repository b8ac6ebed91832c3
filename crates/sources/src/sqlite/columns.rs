//! The columns of a SQLite model query: their names, checked, and their declared types,
//! which type their values.

use super::*;

/// The temporary view through which declared column types are learnt.
pub(super) const TYPES_VIEW: &str = "attentive_sync_model_columns";

/// How a column's declared type changes the typing of its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Declared {
    Other,
    Bool,
    Date,
    Timestamp,
}

impl Declared {
    pub(super) fn of(decl: &str) -> Self {
        let first = decl
            .trim()
            .split(|c: char| c.is_whitespace() || c == '(')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        match first.as_str() {
            "BOOLEAN" | "BOOL" => Declared::Bool,
            "DATE" => Declared::Date,
            "DATETIME" | "TIMESTAMP" | "TIMESTAMPTZ" => Declared::Timestamp,
            _ => Declared::Other,
        }
    }
}

/// What is wrong with the column names, if anything.
pub(super) fn check_names(columns: &[String]) -> Result<(), String> {
    match name_problem(columns.iter().map(String::as_str)) {
        Some(NameProblem::Unnamed { position }) => Err(format!(
            "column {position} of the query has no name; name it with `AS`"
        )),
        Some(NameProblem::Twice {
            name,
            first,
            second,
        }) => Err(format!(
            "the query returns two columns named `{name}`, at positions {first} and \
             {second}; give each a unique name with `AS`"
        )),
        None => Ok(()),
    }
}

/// The declared type of each result column of `query`.
///
/// `rusqlite` gives declared types only with its `column_decltype` feature; without it, the
/// query is wrapped in a temporary view (in memory: the database itself stays untouched),
/// whose columns SQLite types like `sqlite3_column_decltype` does. A query that cannot be a
/// view (a `PRAGMA`...) has no declared types.
pub(super) fn declared_types(conn: &Connection, query: &str, ncols: usize) -> Vec<Declared> {
    let mut declared = vec![Declared::Other; ncols];
    let query = query.trim().trim_end_matches(';');
    let _ = conn.execute_batch("PRAGMA temp_store = MEMORY");
    let create = format!("CREATE TEMP VIEW {TYPES_VIEW} AS {query}");
    if conn.execute(&create, []).is_err() {
        return declared;
    }
    let types: rusqlite::Result<Vec<String>> = conn
        .prepare(&format!("PRAGMA temp.table_info({TYPES_VIEW})"))
        .and_then(|mut stmt| {
            stmt.query_map([], |row| row.get::<_, Option<String>>(2))?
                .map(|t| t.map(Option::unwrap_or_default))
                .collect()
        });
    if let Ok(types) = types {
        if types.len() == ncols {
            for (d, t) in declared.iter_mut().zip(&types) {
                *d = Declared::of(t);
            }
        }
    }
    let _ = conn.execute_batch(&format!("DROP VIEW IF EXISTS temp.{TYPES_VIEW}"));
    declared
}
