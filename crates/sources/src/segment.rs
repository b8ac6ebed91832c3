//! Segments of SQL models: the model's query narrowed by a condition, which the database
//! evaluates.
//!
//! The condition is wrapped as `SELECT * FROM (query) AS attentive_sync_segment WHERE (
//! condition )`, on lines of its own, so that it stays one condition: [`check_condition`]
//! refuses a condition that closes a parenthesis it did not open, holds a `;`, or leaves a
//! quote, a comment or a parenthesis open (any of which could end the `WHERE` and escape the
//! segment, as in `x UNION SELECT ...` without the parentheses). The database reports
//! everything else (an unknown column, bad syntax) when the query is prepared.

/// The model query narrowed by a SQL condition. A trailing `;` of the query is dropped.
pub fn segment_query(query: &str, condition: &str) -> String {
    let query = query
        .trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    format!("SELECT * FROM (\n{query}\n) AS attentive_sync_segment WHERE (\n{condition}\n)")
}

/// Why a SQL segment condition cannot be one condition, if it cannot; see the module docs.
pub fn check_condition(condition: &str) -> Result<(), String> {
    let bytes = condition.as_bytes();
    let mut depth: usize = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"' | b'`') => {
                // A quoted literal or name; a doubled quote stands for itself.
                let start = i;
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => {
                            return Err(format!(
                                "leaves the quote at character {} open",
                                char_position(condition, start)
                            ))
                        }
                        Some(&b) if b == quote && bytes.get(i + 1) == Some(&quote) => i += 2,
                        Some(&b) if b == quote => break,
                        Some(_) => i += 1,
                    }
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let start = i;
                match condition[i + 2..].find("*/") {
                    Some(end) => i += 2 + end + 1,
                    None => {
                        return Err(format!(
                            "leaves the comment at character {} open",
                            char_position(condition, start)
                        ))
                    }
                }
            }
            b'(' => depth += 1,
            b')' => {
                depth = depth.checked_sub(1).ok_or_else(|| {
                    format!(
                        "closes a parenthesis it did not open (character {}): a filter is one \
                         condition and cannot end the segment's WHERE",
                        char_position(condition, i)
                    )
                })?;
            }
            b';' => {
                return Err(format!(
                    "holds a `;` (character {}): a filter is one condition, not a statement",
                    char_position(condition, i)
                ))
            }
            _ => {}
        }
        i += 1;
    }
    match depth {
        0 => Ok(()),
        n => Err(format!(
            "leaves {n} parenthes{} open",
            if n == 1 { "is" } else { "es" }
        )),
    }
}

/// The 1-based character position of byte offset `at`.
fn char_position(s: &str, at: usize) -> usize {
    s.get(..at).map_or(at, |p| p.chars().count()) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_wraps_the_query_without_its_trailing_semicolon() {
        assert_eq!(
            segment_query("select * from customers;  \n", "tier = 'gold'"),
            "SELECT * FROM (\nselect * from customers\n) AS attentive_sync_segment WHERE (\ntier = 'gold'\n)"
        );
    }

    #[test]
    fn ordinary_conditions_pass() {
        for ok in [
            "tier = 'gold'",
            "tier in ('gold', 'platinum') and (ltv >= 100 or vip)",
            "name = 'O''Brien' and note = ')' and \"weird ) col\" is not null",
            "ltv > 100 -- the big ones )",
            "ltv > 100 /* ) ; ' */ and tier = 'x'",
            "lower(email) like '%@example.com'",
        ] {
            check_condition(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    /// Issue 13: the filter was appended unparenthesised, so `x UNION SELECT ...` escaped its
    /// scope. Now it is parenthesised, and what could still end the WHERE is refused.
    #[test]
    fn conditions_that_would_escape_the_segment_are_refused() {
        for (bad, says) in [
            (
                "1=1) UNION SELECT * FROM secrets (",
                "closes a parenthesis it did not open",
            ),
            ("1=1; DROP TABLE customers", "holds a `;`"),
            ("tier = 'gold", "leaves the quote at character 8 open"),
            ("tier = 'gold' /* ", "leaves the comment"),
            ("(tier = 'gold'", "leaves 1 parenthesis open"),
        ] {
            let e = check_condition(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_sqlite_segment_is_filtered_by_the_database_and_a_union_does_not_escape_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("m.db");
        let conn = rusqlite::Connection::open(&db).expect("open");
        conn.execute_batch(
            "CREATE TABLE c (email TEXT, tier TEXT); \
             INSERT INTO c VALUES ('a@x.com', 'gold'), ('b@x.com', 'silver'), ('c@x.com', NULL);",
        )
        .expect("seed");
        let query = "SELECT email, tier FROM c ORDER BY email;";
        let read = |condition: &str| -> Result<Vec<String>, crate::Error> {
            use sync_core::ports::ModelSource as _;
            let mut source = crate::SqliteSource::open(&db, &segment_query(query, condition))?;
            let mut row = sync_core::value::SourceRow::default();
            let mut emails = Vec::new();
            while source.next_row(&mut row)? {
                emails.push(row.values[0].to_string());
            }
            Ok(emails)
        };
        assert_eq!(
            read("tier = 'gold' OR tier IS NULL").unwrap(),
            ["a@x.com", "c@x.com"]
        );
        // A trailing comment cannot swallow the closing parenthesis.
        assert_eq!(read("tier = 'silver' -- only silver").unwrap(), ["b@x.com"]);
        // Inside the parentheses a UNION is a syntax error, not a second query.
        assert!(read("tier = 'gold' UNION SELECT email, tier FROM c").is_err());
        let err = read("tierr = 1").expect_err("unknown column");
        assert!(err.to_string().contains("tierr"), "{err}");
    }
}
