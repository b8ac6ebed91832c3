//! The header of a CSV model: its column names, checked.

use super::*;

/// The column names of the header record, or what is wrong with them.
pub(super) fn header_columns(records: &Records) -> Result<Vec<String>, String> {
    let line = records.line;
    match records.oversized {
        Some(Oversized::Bytes) => {
            return Err(format!(
                "the header (line {line}) is longer than {} MiB; a header names the columns, \
                 and one this long is not a header (is this a CSV file? is a quote left open?)",
                MAX_HEADER_BYTES >> 20
            ))
        }
        Some(Oversized::Fields) => {
            return Err(format!(
                "the header (line {line}) has more than {MAX_COLUMNS} columns, the most a CSV \
                 model may have (is the delimiter right?)"
            ))
        }
        None => {}
    }
    let mut columns: Vec<String> = Vec::with_capacity(records.fields);
    for (i, field) in records.fields().enumerate() {
        let position = i + 1;
        let Ok(name) = std::str::from_utf8(field) else {
            return Err(format!(
                "column {position} of the header (line {line}) is not valid UTF-8; save the \
                 file as UTF-8"
            ));
        };
        let name = name.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
        if name.is_empty() {
            return Err(format!(
                "column {position} of the header (line {line}) has no name; every column needs \
                 a name (a trailing delimiter makes an empty last column)"
            ));
        }
        columns.push(name.to_owned());
    }
    // Names were checked above; what is left is duplicates.
    match name_problem(columns.iter().map(String::as_str)) {
        Some(NameProblem::Twice {
            name,
            first,
            second,
        }) => Err(format!(
            "column `{}` appears twice in the header (line {line}), at positions {first} and \
             {second}; column names must be unique",
            excerpt(name),
        )),
        Some(NameProblem::Unnamed { position }) => Err(format!(
            "column {position} of the header (line {line}) has no name; every column needs a \
             name (a trailing delimiter makes an empty last column)"
        )),
        None => Ok(columns),
    }
}

pub(super) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}
