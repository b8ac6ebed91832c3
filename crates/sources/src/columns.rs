//! The column-name checks every source makes (CSV headers, Parquet schemas, SQLite and
//! PostgreSQL query results): a column needs a name, and no two columns share one. Each source
//! words the problem for its own kind of model.

use std::collections::HashMap;

/// What is wrong with a model's column names. Positions count from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NameProblem<'a> {
    /// The column at `position` has no name (empty or only whitespace).
    Unnamed { position: usize },
    /// `name` is the name of the columns at `first` and `second` (the first repeat).
    Twice {
        name: &'a str,
        first: usize,
        second: usize,
    },
}

/// The first problem of `names`, in column order; `None` when every column has a name of its
/// own. Found with a hash map: a header may have thousands of columns.
pub(crate) fn name_problem<'a>(
    names: impl ExactSizeIterator<Item = &'a str>,
) -> Option<NameProblem<'a>> {
    let mut seen = HashMap::with_capacity(names.len());
    for (i, name) in names.enumerate() {
        if name.trim().is_empty() {
            return Some(NameProblem::Unnamed { position: i + 1 });
        }
        if let Some(first) = seen.insert(name, i + 1) {
            return Some(NameProblem::Twice {
                name,
                first,
                second: i + 1,
            });
        }
    }
    None
}

/// Every repeat of a name seen before, in column order: `(name, position)`, for sources that
/// list every problem (PostgreSQL, whose columns are named by the server).
pub(crate) fn repeats<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> Vec<(&'a str, usize)> {
    let mut seen = HashMap::with_capacity(names.len());
    let mut out = Vec::new();
    for (i, name) in names.enumerate() {
        if seen.insert(name, i + 1).is_some() {
            out.push((name, i + 1));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_problem_in_column_order() {
        assert_eq!(name_problem(["a", "b"].into_iter()), None);
        assert_eq!(
            name_problem(["a", " ", "a"].into_iter()),
            Some(NameProblem::Unnamed { position: 2 })
        );
        assert_eq!(
            name_problem(["a", "b", "b", "a"].into_iter()),
            Some(NameProblem::Twice {
                name: "b",
                first: 2,
                second: 3
            })
        );
        assert_eq!(
            repeats(["a", "a", "b", "a"].into_iter()),
            [("a", 2), ("a", 4)]
        );
    }
}
