//! The columns of a PostgreSQL model query: which types can be sent, how they are named in
//! messages, and the checks of the query's columns.

use super::*;
use crate::columns::repeats;

/// The column types a model query may return, as they are named in messages.
pub(super) const SUPPORTED_TYPES: &str =
    "text, varchar, char, name, citext, smallint, integer, bigint, \
     numeric, real, double precision, boolean, date, timestamp, timestamptz, uuid, json, jsonb";

/// How the values of one column are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ColumnType {
    Text,
    Int2,
    Int4,
    Int8,
    Numeric,
    Float4,
    Float8,
    Bool,
    Date,
    /// `timestamp` and `timestamptz`: both are microseconds from 2000-01-01 UTC on the wire.
    Timestamp,
    Uuid,
    Json,
    Jsonb,
}

impl ColumnType {
    pub(super) fn of(ty: &Type) -> Option<ColumnType> {
        const TYPES: [(Type, ColumnType); 17] = [
            (Type::TEXT, ColumnType::Text),
            (Type::VARCHAR, ColumnType::Text),
            (Type::BPCHAR, ColumnType::Text),
            (Type::NAME, ColumnType::Text),
            (Type::INT2, ColumnType::Int2),
            (Type::INT4, ColumnType::Int4),
            (Type::INT8, ColumnType::Int8),
            (Type::NUMERIC, ColumnType::Numeric),
            (Type::FLOAT4, ColumnType::Float4),
            (Type::FLOAT8, ColumnType::Float8),
            (Type::BOOL, ColumnType::Bool),
            (Type::DATE, ColumnType::Date),
            (Type::TIMESTAMP, ColumnType::Timestamp),
            (Type::TIMESTAMPTZ, ColumnType::Timestamp),
            (Type::UUID, ColumnType::Uuid),
            (Type::JSON, ColumnType::Json),
            (Type::JSONB, ColumnType::Jsonb),
        ];
        if let Some((_, column_type)) = TYPES.iter().find(|(t, _)| t == ty) {
            return Some(*column_type);
        }
        // citext (an extension, so its OID varies) is sent as text.
        (ty.name() == "citext" && matches!(ty.kind(), Kind::Simple)).then_some(ColumnType::Text)
    }
}

/// A type as named in messages: the SQL spelling people write (`integer`, `text[]`).
pub(super) fn type_name(ty: &Type) -> String {
    match ty.kind() {
        Kind::Array(inner) => format!("{}[]", type_name(inner)),
        Kind::Enum(_) => format!("{} (an enum)", ty.name()),
        Kind::Composite(_) => format!("{} (a composite type)", ty.name()),
        Kind::Range(_) | Kind::Multirange(_) => format!("{} (a range)", ty.name()),
        _ => match ty.name() {
            "int2" => "smallint",
            "int4" => "integer",
            "int8" => "bigint",
            "float4" => "real",
            "float8" => "double precision",
            "bool" => "boolean",
            "bpchar" => "char",
            "timetz" => "time with time zone",
            other => other,
        }
        .to_owned(),
    }
}

/// `name` as it can be written in SQL: bare when it is a plain lower-case identifier (and not
/// a keyword a column is likely to be named after), double-quoted otherwise.
pub(super) fn sql_identifier(name: &str) -> String {
    const KEYWORDS: &[&str] = &[
        "all",
        "and",
        "any",
        "array",
        "as",
        "asc",
        "between",
        "both",
        "by",
        "case",
        "cast",
        "check",
        "collate",
        "column",
        "constraint",
        "create",
        "current_date",
        "current_time",
        "current_timestamp",
        "current_user",
        "date",
        "default",
        "desc",
        "distinct",
        "do",
        "else",
        "end",
        "except",
        "false",
        "fetch",
        "for",
        "foreign",
        "from",
        "grant",
        "group",
        "having",
        "in",
        "interval",
        "into",
        "is",
        "join",
        "leading",
        "left",
        "like",
        "limit",
        "not",
        "null",
        "offset",
        "on",
        "only",
        "or",
        "order",
        "primary",
        "references",
        "right",
        "select",
        "table",
        "then",
        "time",
        "timestamp",
        "to",
        "trailing",
        "true",
        "union",
        "unique",
        "user",
        "using",
        "when",
        "where",
        "window",
        "with",
    ];
    let plain = !KEYWORDS.contains(&name)
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// The columns of a model query, checked: every type one that can be sent, every name its
/// own.
pub(super) struct QueryColumns {
    pub(super) names: Vec<String>,
    pub(super) types: Vec<ColumnType>,
    /// Each column's type as named in messages.
    pub(super) type_names: Vec<String>,
}

impl QueryColumns {
    /// Checks the columns the server described; `Err` lists every problem, in column order.
    pub(super) fn check(described: &[postgres::Column]) -> Result<QueryColumns, String> {
        let mut names = Vec::with_capacity(described.len());
        let mut types = Vec::with_capacity(described.len());
        let mut type_names = Vec::with_capacity(described.len());
        let mut problems = Vec::new();
        // Positions of the names another column had before, in order.
        let repeated: Vec<usize> = repeats(described.iter().map(|c| c.name()))
            .into_iter()
            .map(|(_, position)| position)
            .collect();
        for (i, column) in described.iter().enumerate() {
            let ty = column.type_();
            let shown = type_name(ty);
            match ColumnType::of(ty) {
                Some(t) => types.push(t),
                None => problems.push(format!(
                    "column `{}` has type {shown}, which attentive-sync cannot send; cast it in \
                     the query, e.g. {}::text",
                    column.name(),
                    sql_identifier(column.name())
                )),
            }
            if repeated.binary_search(&(i + 1)).is_ok() {
                problems.push(format!(
                    "the `query` returns more than one column named `{}`; give each column a \
                     name of its own (... AS another_name)",
                    column.name()
                ));
            }
            names.push(column.name().to_owned());
            type_names.push(shown);
        }
        if problems.is_empty() {
            return Ok(QueryColumns {
                names,
                types,
                type_names,
            });
        }
        let supported = if types.len() < names.len() {
            format!(" (supported types: {SUPPORTED_TYPES})")
        } else {
            String::new()
        };
        Err(format!("{}{supported}", problems.join("; ")))
    }
}
