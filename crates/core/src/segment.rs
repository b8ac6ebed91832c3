//! Segments of file models: a small predicate language over a row's columns.
//!
//! SQL models are narrowed inside their database (the runner wraps the query in a `WHERE`);
//! file models (CSV, JSONL, Parquet) are narrowed with this language instead:
//!
//! ```text
//! filter     = or
//! or         = and { "or" and }
//! and        = unary { "and" unary }
//! unary      = "not" unary | "(" filter ")" | comparison
//! comparison = column ( op literal
//!                     | [ "not" ] "in" "(" literal { "," literal } ")"
//!                     | "is" [ "not" ] "null" )
//! op         = "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
//! column     = name | "quoted name"            (double quotes; "" inside is one ")
//! literal    = 'text' | number | true | false  (single quotes; '' inside is one ')
//! ```
//!
//! Keywords are case-insensitive. `(` and `not` nest at most [`MAX_NESTING`] deep; a chain
//! of `and`s or `or`s is one node however long it is, so no filter the parser accepts can
//! exhaust the stack when it is bound, evaluated, written back, cloned or dropped.
//!
//! Evaluation follows SQL's three-valued logic, so a filter
//! means the same on a file as in a `WHERE`: a comparison with a null cell (SQL `NULL`, JSON
//! `null`, a missing key, or an empty or blank text cell) is *unknown*, `not unknown` is
//! unknown, and a row is in the segment only when the filter is *true*.
//!
//! The literal decides how a cell is compared:
//! - text: the cell's text (trimmed), `=`/`!=` exactly, `<`/`>` by Unicode code points, which
//!   orders ISO-8601 dates and times correctly;
//! - number: numerically; integers exactly, other numbers as 64-bit floats. A text cell must
//!   read as a number;
//! - `true`/`false`: a boolean cell, or text as the mapping reads booleans (`yes`, `0`...).
//!
//! A cell that cannot be compared that way (text `abc` against `ltv > 100`) is bad input: the
//! row is rejected with the column, the value and the rule, rather than silently left out.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::value::{SourceRow, Value};

/// How deep `(` and `not` may nest in a filter. Past it the filter is a syntax error: real
/// filters nest a few levels, and the limit keeps every recursive walk of a filter (parsing,
/// binding, evaluating, writing it back, dropping it) far from the end of the stack.
pub const MAX_NESTING: usize = 64;

/// A parsed filter, not yet checked against a model's columns.
///
/// A chain `a and b and c` is one [`Filter::And`] of its operands (likewise `or`), so a long
/// chain is a wide node, not a deep tree. The parser makes `And` and `Or` of at least two
/// operands and never an `And` directly inside an `And` without parentheses (or `Or` in `Or`);
/// other shapes evaluate as expected (an empty `And` is true, an empty `Or` false) but do not
/// write back to text that parses to themselves.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every operand holds.
    And(Vec<Filter>),
    /// Some operand holds.
    Or(Vec<Filter>),
    /// The operand does not hold.
    Not(Box<Filter>),
    /// `column op literal`.
    Compare {
        /// The column compared.
        column: String,
        /// How.
        op: CompareOp,
        /// With what.
        literal: Literal,
    },
    /// `column [not] in (literal, ...)`.
    In {
        /// The column.
        column: String,
        /// `not in`.
        negated: bool,
        /// The values.
        literals: Vec<Literal>,
    },
    /// `column is [not] null`.
    IsNull {
        /// The column.
        column: String,
        /// `is not null`.
        negated: bool,
    },
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `=`
    Eq,
    /// `!=` (or `<>`)
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CompareOp {
    fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "=",
            CompareOp::Ne => "!=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        }
    }

    fn holds(self, ord: Ordering) -> bool {
        match self {
            CompareOp::Eq => ord == Ordering::Equal,
            CompareOp::Ne => ord != Ordering::Equal,
            CompareOp::Lt => ord == Ordering::Less,
            CompareOp::Le => ord != Ordering::Greater,
            CompareOp::Gt => ord == Ordering::Greater,
            CompareOp::Ge => ord != Ordering::Less,
        }
    }
}

/// A constant in a filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A quoted string.
    Text(String),
    /// As written; always parses as a finite number.
    Number(String),
    /// `true` or `false`.
    Bool(bool),
}

/// A filter that cannot be parsed or bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// The text is not a filter. `at` is the character position (0-based) of the problem.
    /// The message shows the text around it (at most [`CARET_CONTEXT`] characters each side).
    #[error("{message} at character {}:\n{}", at + 1, caret(text, *at))]
    Syntax {
        /// The filter's text.
        text: String,
        /// Where the problem is.
        at: usize,
        /// What is wrong there.
        message: String,
    },
    /// `column` and `available` are cut for messages (see [`crate::message`]).
    #[error("the filter names column `{column}`, which is not in the model; its columns are: {available}")]
    UnknownColumn {
        /// The column the filter names.
        column: String,
        /// The model's columns.
        available: String,
    },
}

/// How many characters of a filter a syntax error shows each side of the problem.
pub const CARET_CONTEXT: usize = 40;

/// The text around character `at` on one line, `…` where it is cut, and a caret under `at` on
/// the next.
fn caret(text: &str, at: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    let start = at.saturating_sub(CARET_CONTEXT);
    let end = chars.len().min(at.saturating_add(CARET_CONTEXT));
    let (before, after) = (
        if start > 0 { "…" } else { "" },
        if end < chars.len() { "…" } else { "" },
    );
    let shown: String = chars.get(start..end).unwrap_or_default().iter().collect();
    let pad = " ".repeat(before.chars().count() + at - start.min(at));
    format!("  {before}{shown}{after}\n  {pad}^")
}

/// A cell the filter could not compare: the row is rejected with this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterProblem {
    /// The column compared.
    pub column: String,
    /// The raw value, as the source gave it.
    pub value: String,
    /// Why it could not be compared.
    pub rule: String,
}

impl Filter {
    /// Parses a filter; errors point at the character where it goes wrong.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let tokens = lex(text)?;
        let mut p = Parser {
            text,
            tokens,
            pos: 0,
            nesting: 0,
        };
        let f = p.or()?;
        match p.peek() {
            None => Ok(f),
            Some(t) => Err(p.error(
                t.at,
                format!(
                    "expected `and`, `or` or the end of the filter, found {}",
                    t.kind.describe()
                ),
            )),
        }
    }

    /// Checks every column against the model's and resolves them to positions.
    pub fn bind(&self, columns: &[String]) -> Result<BoundFilter, Vec<FilterError>> {
        let mut binder = Binder {
            columns,
            positions: HashMap::with_capacity(columns.len()),
            unknown: HashSet::new(),
            errors: Vec::new(),
        };
        for (i, c) in columns.iter().enumerate().rev() {
            binder.positions.insert(c.as_str(), i);
        }
        let node = binder.node(self);
        let errors = binder.errors;
        if errors.is_empty() {
            Ok(BoundFilter {
                text: self.to_string(),
                node,
            })
        } else {
            Err(errors)
        }
    }

    fn columns<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Filter::And(operands) | Filter::Or(operands) => {
                for o in operands {
                    o.columns(out);
                }
            }
            Filter::Not(a) => a.columns(out),
            Filter::Compare { column, .. }
            | Filter::In { column, .. }
            | Filter::IsNull { column, .. } => out.push(column),
        }
    }
}

/// Resolves a filter's columns to positions, noting each unknown column once.
struct Binder<'c> {
    columns: &'c [String],
    /// Each name's first position.
    positions: HashMap<&'c str, usize>,
    unknown: HashSet<String>,
    errors: Vec<FilterError>,
}

impl Binder<'_> {
    fn index(&mut self, column: &str) -> usize {
        if let Some(&i) = self.positions.get(column) {
            return i;
        }
        if self.unknown.insert(column.to_owned()) {
            self.errors.push(FilterError::UnknownColumn {
                column: crate::message::excerpt(column).into_owned(),
                available: crate::message::name_list(self.columns),
            });
        }
        0
    }

    fn node(&mut self, f: &Filter) -> Node {
        match f {
            Filter::And(operands) => Node::And(operands.iter().map(|o| self.node(o)).collect()),
            Filter::Or(operands) => Node::Or(operands.iter().map(|o| self.node(o)).collect()),
            Filter::Not(a) => Node::Not(Box::new(self.node(a))),
            Filter::Compare {
                column,
                op,
                literal,
            } => Node::Compare {
                index: self.index(column),
                column: column.clone(),
                op: *op,
                literal: BoundLiteral::new(literal),
            },
            Filter::In {
                column,
                negated,
                literals,
            } => Node::In {
                index: self.index(column),
                column: column.clone(),
                negated: *negated,
                literals: literals.iter().map(BoundLiteral::new).collect(),
            },
            Filter::IsNull { column, negated } => Node::IsNull {
                index: self.index(column),
                negated: *negated,
            },
        }
    }
}

/// Writes the filter back in its canonical form, which parses to the same filter.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn operand(f: &mut fmt::Formatter<'_>, node: &Filter, parent: u8) -> fmt::Result {
            let own = match node {
                Filter::Or(..) => 1,
                Filter::And(..) => 2,
                _ => 3,
            };
            if own < parent {
                write!(f, "({node})")
            } else {
                write!(f, "{node}")
            }
        }
        // An operand of `or` that is an `or` itself (or of `and` that is an `and`) was written
        // in parentheses: without them it would have joined the chain.
        match self {
            Filter::Or(operands) => {
                for (i, o) in operands.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" or ")?;
                    }
                    operand(f, o, 2)?;
                }
                Ok(())
            }
            Filter::And(operands) => {
                for (i, o) in operands.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" and ")?;
                    }
                    operand(f, o, 3)?;
                }
                Ok(())
            }
            Filter::Not(a) => {
                f.write_str("not ")?;
                operand(f, a, 3)
            }
            Filter::Compare {
                column,
                op,
                literal,
            } => write!(f, "{} {} {literal}", Column(column), op.as_str()),
            Filter::In {
                column,
                negated,
                literals,
            } => {
                write!(
                    f,
                    "{} {}in (",
                    Column(column),
                    if *negated { "not " } else { "" }
                )?;
                for (i, l) in literals.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{l}")?;
                }
                f.write_str(")")
            }
            Filter::IsNull { column, negated } => write!(
                f,
                "{} is {}null",
                Column(column),
                if *negated { "not " } else { "" }
            ),
        }
    }
}

struct Column<'a>(&'a str);

impl fmt::Display for Column<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = self
            .0
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && self
                .0
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            && keyword(self.0).is_none();
        if plain {
            f.write_str(self.0)
        } else {
            write!(f, "\"{}\"", self.0.replace('"', "\"\""))
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Literal::Number(n) => f.write_str(n),
            Literal::Bool(b) => write!(f, "{b}"),
        }
    }
}

// ---- lexing ----

#[derive(Debug, Clone, PartialEq)]
enum TokenKind {
    Name(String),
    Keyword(Keyword),
    Text(String),
    Number(String),
    Op(CompareOp),
    Open,
    Close,
    Comma,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    And,
    Or,
    Not,
    In,
    Is,
    Null,
    True,
    False,
}

fn keyword(word: &str) -> Option<Keyword> {
    Some(match word.to_ascii_lowercase().as_str() {
        "and" => Keyword::And,
        "or" => Keyword::Or,
        "not" => Keyword::Not,
        "in" => Keyword::In,
        "is" => Keyword::Is,
        "null" => Keyword::Null,
        "true" => Keyword::True,
        "false" => Keyword::False,
        _ => return None,
    })
}

impl TokenKind {
    fn describe(&self) -> String {
        match self {
            TokenKind::Name(n) => format!("column `{n}`"),
            TokenKind::Keyword(k) => format!("`{}`", format!("{k:?}").to_ascii_lowercase()),
            TokenKind::Text(t) => format!("text '{t}'"),
            TokenKind::Number(n) => format!("number {n}"),
            TokenKind::Op(op) => format!("`{}`", op.as_str()),
            TokenKind::Open => "`(`".into(),
            TokenKind::Close => "`)`".into(),
            TokenKind::Comma => "`,`".into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokenKind,
    /// Character position.
    at: usize,
}

fn syntax(text: &str, at: usize, message: impl Into<String>) -> FilterError {
    FilterError::Syntax {
        text: text.to_owned(),
        at,
        message: message.into(),
    }
}

fn lex(text: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let at = i;
        let kind = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => {
                i += 1;
                TokenKind::Open
            }
            ')' => {
                i += 1;
                TokenKind::Close
            }
            ',' => {
                i += 1;
                TokenKind::Comma
            }
            '=' => {
                i += if chars.get(i + 1) == Some(&'=') { 2 } else { 1 };
                TokenKind::Op(CompareOp::Eq)
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                i += 2;
                TokenKind::Op(CompareOp::Ne)
            }
            '<' | '>' => {
                let next = chars.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    ('<', Some('=')) => (CompareOp::Le, 2),
                    ('<', Some('>')) => (CompareOp::Ne, 2),
                    ('<', _) => (CompareOp::Lt, 1),
                    (_, Some('=')) => (CompareOp::Ge, 2),
                    _ => (CompareOp::Gt, 1),
                };
                i += len;
                TokenKind::Op(op)
            }
            '\'' | '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            let what = if c == '\'' { "text" } else { "quoted column name" };
                            return Err(syntax(text, at, format!("this {what} is not closed")));
                        }
                        Some(&q) if q == c => {
                            if chars.get(i + 1) == Some(&c) {
                                s.push(c);
                                i += 2;
                            } else {
                                i += 1;
                                break;
                            }
                        }
                        Some(&other) => {
                            s.push(other);
                            i += 1;
                        }
                    }
                }
                if c == '\'' {
                    TokenKind::Text(s)
                } else if s.is_empty() {
                    return Err(syntax(text, at, "a quoted column name must not be empty"));
                } else {
                    TokenKind::Name(s)
                }
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => {
                let start = i;
                i += 1;
                while let Some(&d) = chars.get(i) {
                    let exponent_sign =
                        (d == '-' || d == '+') && matches!(chars.get(i - 1), Some('e' | 'E'));
                    if d.is_ascii_alphanumeric() || d == '.' || exponent_sign {
                        i += 1;
                    } else {
                        break;
                    }
                }
                let n: String = chars[start..i].iter().collect();
                if !is_number(&n) {
                    return Err(syntax(text, at, format!("`{n}` is not a number")));
                }
                TokenKind::Number(n)
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|d| d.is_alphanumeric() || *d == '_' || *d == '.')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                match keyword(&word) {
                    Some(k) => TokenKind::Keyword(k),
                    None => TokenKind::Name(word),
                }
            }
            other => {
                return Err(syntax(
                    text,
                    at,
                    format!("unexpected `{other}`; a filter compares columns with values, e.g. tier = 'gold' and ltv > 100"),
                ))
            }
        };
        tokens.push(Token { kind, at });
    }
    Ok(tokens)
}

/// A finite decimal number: optional sign, digits with an optional fraction, optional exponent.
fn is_number(s: &str) -> bool {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = (!int.is_empty() || !frac.is_empty()) && digits(int) && digits(frac);
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok && s.parse::<f64>().is_ok_and(f64::is_finite)
}

// ---- parsing ----

struct Parser<'t> {
    text: &'t str,
    tokens: Vec<Token>,
    pos: usize,
    /// How many `(` and `not` enclose the current position.
    nesting: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn end(&self) -> usize {
        self.text.chars().count()
    }

    fn error(&self, at: usize, message: String) -> FilterError {
        syntax(self.text, at, message)
    }

    fn keyword(&mut self, k: Keyword) -> bool {
        if matches!(self.peek(), Some(Token { kind: TokenKind::Keyword(x), .. }) if *x == k) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, want: &TokenKind, what: &str) -> Result<(), FilterError> {
        match self.peek() {
            Some(t) if &t.kind == want => {
                self.pos += 1;
                Ok(())
            }
            Some(t) => Err(self.error(
                t.at,
                format!("expected {what}, found {}", t.kind.describe()),
            )),
            None => Err(self.error(self.end(), format!("expected {what}, found the end"))),
        }
    }

    fn or(&mut self) -> Result<Filter, FilterError> {
        let first = self.and()?;
        if !self.keyword(Keyword::Or) {
            return Ok(first);
        }
        let mut operands = vec![first];
        loop {
            operands.push(self.and()?);
            if !self.keyword(Keyword::Or) {
                return Ok(Filter::Or(operands));
            }
        }
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let first = self.unary()?;
        if !self.keyword(Keyword::And) {
            return Ok(first);
        }
        let mut operands = vec![first];
        loop {
            operands.push(self.unary()?);
            if !self.keyword(Keyword::And) {
                return Ok(Filter::And(operands));
            }
        }
    }

    /// One more level of `(` or `not`, at character `at`; an error past [`MAX_NESTING`].
    fn nest(&mut self, at: usize) -> Result<(), FilterError> {
        if self.nesting >= MAX_NESTING {
            return Err(self.error(
                at,
                format!(
                    "`(` and `not` nest more than {MAX_NESTING} deep here; a filter may nest                      them at most {MAX_NESTING} deep (a chain of `and`s or `or`s needs no                      parentheses)"
                ),
            ));
        }
        self.nesting += 1;
        self.pos += 1;
        Ok(())
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        let Some(&Token { ref kind, at }) = self.peek() else {
            return self.comparison();
        };
        match kind {
            TokenKind::Keyword(Keyword::Not) => {
                self.nest(at)?;
                let inner = self.unary()?;
                self.nesting -= 1;
                Ok(Filter::Not(Box::new(inner)))
            }
            TokenKind::Open => {
                self.nest(at)?;
                let inner = self.or()?;
                self.expect(&TokenKind::Close, "`)`")?;
                self.nesting -= 1;
                Ok(inner)
            }
            _ => self.comparison(),
        }
    }

    fn comparison(&mut self) -> Result<Filter, FilterError> {
        let column = match self.peek() {
            Some(Token {
                kind: TokenKind::Name(n),
                ..
            }) => n.clone(),
            Some(t) => {
                let hint = if matches!(t.kind, TokenKind::Keyword(_)) {
                    " (a column named like a keyword goes in double quotes)"
                } else {
                    ""
                };
                return Err(self.error(
                    t.at,
                    format!("expected a column name, found {}{hint}", t.kind.describe()),
                ));
            }
            None => {
                return Err(self.error(self.end(), "expected a column name, found the end".into()))
            }
        };
        self.pos += 1;
        if self.keyword(Keyword::Is) {
            let negated = self.keyword(Keyword::Not);
            if !self.keyword(Keyword::Null) {
                let (at, found) = self.found();
                return Err(self.error(at, format!("expected `null` after `is`, found {found}")));
            }
            return Ok(Filter::IsNull { column, negated });
        }
        let negated = self.keyword(Keyword::Not);
        if self.keyword(Keyword::In) {
            self.expect(&TokenKind::Open, "`(` after `in`")?;
            let mut literals = vec![self.literal()?];
            while matches!(
                self.peek(),
                Some(Token {
                    kind: TokenKind::Comma,
                    ..
                })
            ) {
                self.pos += 1;
                literals.push(self.literal()?);
            }
            self.expect(&TokenKind::Close, "`,` or `)`")?;
            return Ok(Filter::In {
                column,
                negated,
                literals,
            });
        }
        if negated {
            let (at, found) = self.found();
            return Err(self.error(at, format!("expected `in` after `not`, found {found}")));
        }
        let op = match self.peek() {
            Some(Token {
                kind: TokenKind::Op(op),
                ..
            }) => *op,
            _ => {
                let (at, found) = self.found();
                return Err(self.error(
                    at,
                    format!("expected a comparison (=, !=, <, <=, >, >=, in, is null) after column `{column}`, found {found}"),
                ));
            }
        };
        self.pos += 1;
        let literal = self.literal()?;
        Ok(Filter::Compare {
            column,
            op,
            literal,
        })
    }

    fn found(&self) -> (usize, String) {
        match self.peek() {
            Some(t) => (t.at, t.kind.describe()),
            None => (self.end(), "the end".into()),
        }
    }

    fn literal(&mut self) -> Result<Literal, FilterError> {
        let lit = match self.peek().map(|t| &t.kind) {
            Some(TokenKind::Text(s)) => Literal::Text(s.clone()),
            Some(TokenKind::Number(n)) => Literal::Number(n.clone()),
            Some(TokenKind::Keyword(Keyword::True)) => Literal::Bool(true),
            Some(TokenKind::Keyword(Keyword::False)) => Literal::Bool(false),
            Some(TokenKind::Keyword(Keyword::Null)) => {
                let at = self.peek().map_or(0, |t| t.at);
                return Err(self.error(
                    at,
                    "nothing equals null; write `column is null` or `column is not null`".into(),
                ));
            }
            Some(TokenKind::Name(n)) => {
                let at = self.peek().map_or(0, |t| t.at);
                return Err(self.error(
                    at,
                    format!("expected a value, found column `{n}` (text values go in single quotes: '{n}')"),
                ));
            }
            _ => {
                let (at, found) = self.found();
                return Err(self.error(
                    at,
                    format!("expected a value ('text', a number, true or false), found {found}"),
                ));
            }
        };
        self.pos += 1;
        Ok(lit)
    }
}

// ---- evaluation ----

/// A filter bound to a model's columns: what the planner evaluates.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundFilter {
    /// The canonical text, for messages.
    text: String,
    node: Node,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Compare {
        index: usize,
        column: String,
        op: CompareOp,
        literal: BoundLiteral,
    },
    In {
        index: usize,
        column: String,
        negated: bool,
        literals: Vec<BoundLiteral>,
    },
    IsNull {
        index: usize,
        negated: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum BoundLiteral {
    Text(String),
    Number(Num),
    Bool(bool),
}

impl BoundLiteral {
    fn new(l: &Literal) -> Self {
        match l {
            Literal::Text(s) => BoundLiteral::Text(s.clone()),
            Literal::Number(n) => BoundLiteral::Number(Num::parse(n).unwrap_or(Num::Float(0.0))),
            Literal::Bool(b) => BoundLiteral::Bool(*b),
        }
    }
}

/// A number compared exactly when both sides are integers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn parse(s: &str) -> Option<Num> {
        let s = s.trim();
        if let Ok(i) = s.strip_prefix('+').unwrap_or(s).parse::<i128>() {
            return Some(Num::Int(i));
        }
        if !is_number(s) {
            return None;
        }
        s.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Num::Float)
    }

    #[allow(clippy::cast_precision_loss)]
    fn cmp(self, other: Num) -> Ordering {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a.cmp(&b),
            (a, b) => {
                let f = |n| match n {
                    Num::Int(i) => i as f64,
                    Num::Float(x) => x,
                };
                f(a).total_cmp(&f(b))
            }
        }
    }
}

/// SQL's three-valued truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Truth {
    True,
    False,
    Unknown,
}

impl Truth {
    fn from(b: bool) -> Truth {
        if b {
            Truth::True
        } else {
            Truth::False
        }
    }
}

fn is_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Text(t) => t.trim().is_empty(),
        _ => false,
    }
}

impl BoundFilter {
    /// The filter as text (canonical form).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// `Ok(true)` when the row is in the segment. `Err` when a cell the filter needs cannot be
    /// compared with its literal (the row is bad input).
    pub fn matches(&self, row: &SourceRow) -> Result<bool, FilterProblem> {
        Ok(self.eval(&self.node, row)? == Truth::True)
    }

    fn eval(&self, node: &Node, row: &SourceRow) -> Result<Truth, FilterProblem> {
        Ok(match node {
            // Left to right, stopping at the first operand that decides: a cell after it is
            // not read (and cannot be a problem).
            Node::And(operands) => {
                let mut all = Truth::True;
                for o in operands {
                    match self.eval(o, row)? {
                        Truth::False => return Ok(Truth::False),
                        Truth::Unknown => all = Truth::Unknown,
                        Truth::True => {}
                    }
                }
                all
            }
            Node::Or(operands) => {
                let mut any = Truth::False;
                for o in operands {
                    match self.eval(o, row)? {
                        Truth::True => return Ok(Truth::True),
                        Truth::Unknown => any = Truth::Unknown,
                        Truth::False => {}
                    }
                }
                any
            }
            Node::Not(a) => match self.eval(a, row)? {
                Truth::True => Truth::False,
                Truth::False => Truth::True,
                Truth::Unknown => Truth::Unknown,
            },
            Node::IsNull { index, negated } => {
                let null = row.values.get(*index).is_none_or(is_null);
                Truth::from(null != *negated)
            }
            Node::Compare {
                index,
                column,
                op,
                literal,
            } => match row.values.get(*index) {
                None => Truth::Unknown,
                Some(v) if is_null(v) => Truth::Unknown,
                Some(v) => Truth::from(op.holds(self.compare(column, v, literal)?)),
            },
            Node::In {
                index,
                column,
                negated,
                literals,
            } => match row.values.get(*index) {
                None => Truth::Unknown,
                Some(v) if is_null(v) => Truth::Unknown,
                Some(v) => {
                    let mut found = false;
                    for l in literals {
                        if self.compare(column, v, l)? == Ordering::Equal {
                            found = true;
                            break;
                        }
                    }
                    Truth::from(found != *negated)
                }
            },
        })
    }

    fn compare(
        &self,
        column: &str,
        v: &Value,
        literal: &BoundLiteral,
    ) -> Result<Ordering, FilterProblem> {
        let problem = |want: &str| FilterProblem {
            column: column.to_owned(),
            value: v.to_string(),
            rule: format!(
                "the segment filter `{}` compares this column with {want}, and this {} is not one",
                self.text,
                v.kind()
            ),
        };
        match literal {
            BoundLiteral::Text(t) => Ok(match v {
                Value::Text(s) => s.trim().cmp(t.as_str()),
                other => other.to_string().as_str().cmp(t.as_str()),
            }),
            BoundLiteral::Number(n) => {
                let cell = match v {
                    Value::Int(i) => Some(Num::Int(i128::from(*i))),
                    Value::Number(s) | Value::Text(s) => Num::parse(s),
                    _ => None,
                };
                cell.map(|c| c.cmp(*n)).ok_or_else(|| problem("a number"))
            }
            BoundLiteral::Bool(b) => {
                let cell = match v {
                    Value::Bool(x) => Some(*x),
                    Value::Int(0) => Some(false),
                    Value::Int(1) => Some(true),
                    Value::Text(s) => crate::normalize::boolean(s.trim()),
                    _ => None,
                };
                cell.map(|c| c.cmp(b))
                    .ok_or_else(|| problem("true or false"))
            }
        }
    }
}

/// The columns a filter names, in order of first appearance.
pub fn columns(filter: &Filter) -> Vec<&str> {
    let mut out = Vec::new();
    filter.columns(&mut out);
    let mut seen = std::collections::HashSet::new();
    out.retain(|c| seen.insert(*c));
    out
}

#[cfg(test)]
mod tests;
