//! Bounded excerpts of input for messages.
//!
//! A message names the value, the column or the columns it is about, but input can be hostile:
//! a 50 MB header line is one "column name", a model can have a million columns. Every message
//! that echoes input goes through these helpers, so a message stays a few lines long whatever
//! the input is.

use std::borrow::Cow;

/// The most characters of one value or name a message shows.
pub const MAX_CHARS: usize = 80;

/// The most names a list in a message shows.
pub const MAX_NAMES: usize = 20;

/// `s` as it is when it has at most [`MAX_CHARS`] characters; otherwise its first
/// `MAX_CHARS - 1` characters and `…`.
pub fn excerpt(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(MAX_CHARS) {
        None => Cow::Borrowed(s),
        Some(_) => {
            let cut = s
                .char_indices()
                .nth(MAX_CHARS - 1)
                .map_or(s.len(), |(i, _)| i);
            let mut t = String::with_capacity(cut + '…'.len_utf8());
            t.push_str(s.get(..cut).unwrap_or(s));
            t.push('…');
            Cow::Owned(t)
        }
    }
}

/// `names` separated by `, `, each through [`excerpt`]; past [`MAX_NAMES`] names, the first
/// ones and `… and K more`.
pub fn name_list<S: AsRef<str>>(names: &[S]) -> String {
    let mut out = String::new();
    for (i, name) in names.iter().take(MAX_NAMES).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&excerpt(name.as_ref()));
    }
    if names.len() > MAX_NAMES {
        out.push_str(&format!(", … and {} more", names.len() - MAX_NAMES));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_keeps_short_text_and_cuts_long_text_at_a_character() {
        assert_eq!(excerpt("tier"), "tier");
        let exact = "é".repeat(MAX_CHARS);
        assert_eq!(excerpt(&exact), exact);
        let long = "é".repeat(MAX_CHARS + 1);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), MAX_CHARS);
        assert!(cut.ends_with('…'));
        assert!(cut.starts_with(&"é".repeat(MAX_CHARS - 1)));
    }

    #[test]
    fn name_list_shows_the_first_names_and_counts_the_rest() {
        assert_eq!(name_list(&["a", "b"]), "a, b");
        assert_eq!(name_list::<&str>(&[]), "");
        let many: Vec<String> = (0..MAX_NAMES + 5).map(|i| format!("c{i}")).collect();
        let list = name_list(&many);
        assert!(list.starts_with("c0, c1, "), "{list}");
        assert!(
            list.ends_with(&format!("c{}, … and 5 more", MAX_NAMES - 1)),
            "{list}"
        );
        let huge = vec!["x".repeat(1_000_000); 1_000];
        assert!(name_list(&huge).len() < 4 * MAX_CHARS * (MAX_NAMES + 1));
    }
}
