//! Normalization and validation: raw cells → the canonical values Attentive is sent.
//!
//! Every function here is pure and idempotent: feeding a canonical value back in returns it
//! unchanged, so a cosmetic edit in the model (`" Ann "` → `"Ann"`) never causes a send.
//! A failure is an [`Invalid`] whose text names the rule, for a person to act on.

use std::collections::HashMap;
use std::sync::OnceLock;

use chrono::{Datelike, NaiveDate};

use crate::mapping::{CustomType, DateOrder, IdentifierKind, NormalizeOptions, StandardField};
use crate::value::{Canonical, NumberText, Value};

/// Why a value was refused: the rule it broke, in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid<T>(rule: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid(rule.into()))
}

/// Longest email Attentive accepts.
pub const MAX_EMAIL_CHARS: usize = 100;
/// Longest free-text standard field accepted.
pub const MAX_TEXT_CHARS: usize = 255;

/// The text of a cell for text-based rules; `None` for null or blank.
fn text_of(v: &Value) -> Result<Option<std::borrow::Cow<'_, str>>, Invalid> {
    use std::borrow::Cow;
    Ok(match v {
        Value::Null => None,
        Value::Text(s) | Value::Number(s) | Value::Timestamp(s) => {
            let t = s.trim();
            (!t.is_empty()).then_some(Cow::Borrowed(t))
        }
        Value::Int(i) => Some(Cow::Owned(i.to_string())),
        Value::Bool(b) => Some(Cow::Owned(b.to_string())),
        Value::Date(d) => Some(Cow::Owned(d.format("%Y-%m-%d").to_string())),
        Value::Unsupported { kind, .. } => {
            return invalid(format!(
                "{kind} values are not sent to Attentive; map a scalar column"
            ))
        }
    })
}

/// Normalizes an identifier value. `Ok(None)` means the cell is empty.
pub fn identifier(
    kind: IdentifierKind,
    v: &Value,
    opts: &NormalizeOptions,
) -> Result<Option<String>, Invalid> {
    let Some(t) = text_of(v)? else {
        return Ok(None);
    };
    match kind {
        IdentifierKind::Email => email(&t).map(Some),
        IdentifierKind::Phone => phone(&t, opts).map(Some),
    }
}

/// Trims and lower-cases an email and checks its syntax.
pub fn email(raw: &str) -> Result<String, Invalid> {
    let t = raw.trim();
    if t.is_ascii() {
        if let Some(e) = plain_ascii_email(t) {
            return Ok(e);
        }
    }
    email_slow(t)
}

/// The common case in one pass over the bytes: ASCII, exactly one `@`, no space or forbidden
/// character, no misplaced dots, a dotted domain. `None` sends the address to the full check,
/// which names the rule it breaks.
fn plain_ascii_email(t: &str) -> Option<String> {
    let b = t.as_bytes();
    if b.len() > MAX_EMAIL_CHARS {
        return None;
    }
    let mut at = None;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'@' if at.is_none() => at = Some(i),
            b'@' => return None,
            b'<' | b'>' | b'(' | b')' | b'[' | b']' | b',' | b';' | b':' | b'\\' | b'"' => {
                return None
            }
            c if c <= b' ' || c == 0x7f => return None,
            _ => {}
        }
    }
    let at = at?;
    let (local, domain) = (&t[..at], &t[at + 1..]);
    let local_ok = !local.is_empty()
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    let domain_ok = domain.contains('.')
        && domain
            .split('.')
            .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'));
    (local_ok && domain_ok).then(|| t.to_ascii_lowercase())
}

fn email_slow(t: &str) -> Result<String, Invalid> {
    let e = t.to_lowercase();
    let len = e.chars().count();
    if len > MAX_EMAIL_CHARS {
        return invalid(format!(
            "email is {len} characters long; Attentive accepts at most {MAX_EMAIL_CHARS}"
        ));
    }
    if e.chars().any(char::is_whitespace) {
        return invalid("email must not contain spaces");
    }
    let mut parts = e.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return invalid("email must contain exactly one @");
    };
    if local.is_empty() {
        return invalid("email has nothing before the @");
    }
    if domain.is_empty() {
        return invalid("email has no domain after the @");
    }
    if e.chars().any(|c| {
        c.is_control()
            || matches!(
                c,
                '<' | '>' | '(' | ')' | '[' | ']' | ',' | ';' | ':' | '\\' | '"'
            )
    }) {
        return invalid("email contains a character that is not allowed (<>()[],;:\\\")");
    }
    let labels_ok = domain.contains('.')
        && domain
            .split('.')
            .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'));
    if !labels_ok {
        return invalid(format!(
            "email domain {domain:?} is not a domain name (like example.com)"
        ));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return invalid("email has a misplaced dot before the @");
    }
    Ok(e)
}

/// A contact as a person types it to look it up: an email, or a phone in international form
/// (`+` country code and number; no default region applies), normalized as the snapshot
/// keys it.
pub fn contact_key(raw: &str) -> Result<String, Invalid> {
    if raw.contains('@') {
        email(raw)
    } else {
        phone(raw, &NormalizeOptions::default())
            .map_err(|e| Invalid(format!("{e} (give phones as +country code and number)")))
    }
}

/// Parses a phone number and formats it as E.164 (`+14155550100`).
pub fn phone(raw: &str, opts: &NormalizeOptions) -> Result<String, Invalid> {
    let t = raw.trim();
    let international = t.starts_with('+') || t.starts_with("00");
    let region = if international {
        None
    } else {
        match opts.default_phone_region {
            Some(r) => Some(r),
            None => return invalid(
                "phone is in national format (no +country code) and no default_phone_region is set",
            ),
        }
    };
    // `00` international prefix: let libphonenumber read it as `+`.
    let owned;
    let input = if let Some(rest) = t.strip_prefix("00") {
        owned = format!("+{rest}");
        owned.as_str()
    } else {
        t
    };
    let parsed = match phonenumber::parse(region, input) {
        Ok(p) => p,
        Err(e) => return invalid(format!("phone is not a phone number ({e})")),
    };
    if !phonenumber::is_valid(&parsed) {
        return invalid(match region {
            Some(r) => format!("phone is not a valid number for region {r:?}"),
            None => "phone is not a valid number for its country code".to_owned(),
        });
    }
    Ok(parsed.format().mode(phonenumber::Mode::E164).to_string())
}

/// Trims and collapses inner runs of whitespace to one space; checks the length.
pub fn text(raw: &str, max_chars: usize) -> Result<String, Invalid> {
    let mut out = String::with_capacity(raw.len());
    for word in raw.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    let n = out.chars().count();
    if n > max_chars {
        return invalid(format!(
            "text is {n} characters long; at most {max_chars} are accepted"
        ));
    }
    Ok(out)
}

/// Canonical country: ISO 3166-1 alpha-2, from alpha-2, alpha-3 or English short name.
pub fn country(raw: &str) -> Result<String, Invalid> {
    let t = raw.trim();
    let up = t.to_uppercase();
    let found = match up.len() {
        2 => rust_iso3166::from_alpha2(&up),
        3 => rust_iso3166::from_alpha3(&up),
        _ => None,
    }
    .or_else(|| country_names().get(t.to_lowercase().as_str()).copied());
    match found {
        Some(c) => Ok(c.alpha2.to_owned()),
        None => invalid(
            "country is not an ISO 3166-1 code (US, USA) or an English short name (United States of America)",
        ),
    }
}

fn country_names() -> &'static HashMap<String, rust_iso3166::CountryCode> {
    static NAMES: OnceLock<HashMap<String, rust_iso3166::CountryCode>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut m: HashMap<String, rust_iso3166::CountryCode> = rust_iso3166::ALL
            .iter()
            .map(|c| (c.name.to_lowercase(), *c))
            .collect();
        // Common English names that differ from the ISO short name.
        for (alias, code) in [
            ("united states", "US"),
            ("usa", "US"),
            ("united kingdom", "GB"),
            ("uk", "GB"),
            ("great britain", "GB"),
            ("south korea", "KR"),
            ("russia", "RU"),
            ("vietnam", "VN"),
            ("iran", "IR"),
            ("bolivia", "BO"),
            ("venezuela", "VE"),
            ("tanzania", "TZ"),
            ("syria", "SY"),
            ("laos", "LA"),
            ("moldova", "MD"),
            ("taiwan", "TW"),
            ("czech republic", "CZ"),
            ("netherlands", "NL"),
        ] {
            if let Some(c) = rust_iso3166::from_alpha2(code) {
                m.entry(alias.to_owned()).or_insert(c);
            }
        }
        m
    })
}

/// Canonical region: an ISO 3166-2 code (`US-NY`), upper case, of a known country.
pub fn region(raw: &str) -> Result<String, Invalid> {
    let up = raw.trim().to_uppercase();
    let well_formed = match up.split_once('-') {
        Some((cc, sub)) => {
            cc.len() == 2
                && cc.bytes().all(|b| b.is_ascii_uppercase())
                && (1..=3).contains(&sub.len())
                && sub.bytes().all(|b| b.is_ascii_alphanumeric())
                && rust_iso3166::from_alpha2(cc).is_some()
        }
        None => false,
    };
    if well_formed {
        Ok(up)
    } else {
        invalid("region is not an ISO 3166-2 code of a known country (like US-NY or AU-NSW)")
    }
}

/// Latitude or longitude: a number within ±`limit`, sent as the text given (trimmed).
pub fn coordinate(raw: &str, limit: f64, what: &str) -> Result<String, Invalid> {
    let t = raw.trim();
    let ok_form = NumberText::parse(t).is_some() && !t.contains(['e', 'E']);
    match t.parse::<f64>() {
        Ok(x) if ok_form && x.is_finite() && x.abs() <= limit => {
            Ok(t.trim_start_matches('+').to_owned())
        }
        Ok(x) if ok_form && x.is_finite() => {
            invalid(format!("{what} must be between -{limit} and {limit}"))
        }
        _ => invalid(format!("{what} is not a decimal number")),
    }
}

/// Parses a date in the forms the activation allows.
pub fn date(v: &Value, order: DateOrder) -> Result<NaiveDate, Invalid> {
    match v {
        Value::Date(d) => return Ok(*d),
        Value::Timestamp(s) => {
            if let Some(d) = s
                .get(..10)
                .and_then(|p| NaiveDate::parse_from_str(p, "%Y-%m-%d").ok())
            {
                return Ok(d);
            }
        }
        _ => {}
    }
    let Some(t) = text_of(v)? else {
        return invalid("date is empty");
    };
    let t = t.as_ref();
    // ISO-8601 datetime: take the date part.
    let date_part = match t.find(['T', 't', ' ']) {
        Some(10) => &t[..10],
        _ => t,
    };
    for fmt in ["%Y-%m-%d", "%Y/%m/%d"] {
        if let Ok(d) = NaiveDate::parse_from_str(date_part, fmt) {
            return Ok(d);
        }
    }
    let numeric: Vec<&str> = date_part.split(['/', '-', '.']).collect();
    let shaped = numeric.len() == 3
        && numeric[0].len() <= 2
        && numeric[1].len() <= 2
        && numeric[2].len() == 4
        && numeric
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if shaped {
        let n = |i: usize| numeric[i].parse::<u32>().unwrap_or(0);
        let year = numeric[2].parse::<i32>().unwrap_or(0);
        let (m, d) = match order {
            DateOrder::Mdy => (n(0), n(1)),
            DateOrder::Dmy => (n(1), n(0)),
            DateOrder::Iso => {
                return invalid(format!(
                    "date {t:?} is ambiguous (month/day or day/month?); set date_order = \"mdy\" or \"dmy\", or use YYYY-MM-DD"
                ))
            }
        };
        return NaiveDate::from_ymd_opt(year, m, d).map_or_else(
            || invalid(format!("date {t:?} is not a real calendar date")),
            Ok,
        );
    }
    invalid(format!(
        "date {t:?} is not in a known form (YYYY-MM-DD, YYYY/MM/DD, ISO-8601{})",
        match order {
            DateOrder::Iso => "",
            DateOrder::Mdy => ", MM/DD/YYYY",
            DateOrder::Dmy => ", DD/MM/YYYY",
        }
    ))
}

/// Date of birth: a real date, not in the future, as `YYYY-MM-DD`.
pub fn date_of_birth(v: &Value, opts: &NormalizeOptions) -> Result<String, Invalid> {
    let d = date(v, opts.date_order)?;
    let today = opts
        .today
        .unwrap_or_else(|| chrono::Utc::now().date_naive());
    if d > today {
        return invalid("date of birth is in the future");
    }
    if d.year() < 1850 {
        return invalid("date of birth is before 1850");
    }
    Ok(d.format("%Y-%m-%d").to_string())
}

/// Age: a whole number from 0 to 150.
pub fn age(v: &Value) -> Result<i64, Invalid> {
    let n = match v {
        Value::Int(i) => *i,
        other => {
            let Some(t) = text_of(other)? else {
                return invalid("age is empty");
            };
            let Some(num) = NumberText::parse(&t) else {
                return invalid("age is not a number");
            };
            match num.as_str().parse::<i64>() {
                Ok(i) => i,
                Err(_) => return invalid("age must be a whole number"),
            }
        }
    };
    if n < 0 {
        return invalid("age must not be negative");
    }
    if n > 150 {
        return invalid("age must be at most 150");
    }
    Ok(n)
}

/// Time zone: an IANA name in any case, returned as its canonical spelling.
pub fn time_zone(raw: &str) -> Result<String, Invalid> {
    match chrono_tz::Tz::from_str_insensitive(raw.trim()) {
        Ok(tz) => Ok(tz.name().to_owned()),
        Err(_) => invalid("time zone is not an IANA time zone name (like America/New_York)"),
    }
}

/// Language: ISO 639 code or BCP-47 tag; lower-case language, title-case script, upper-case
/// region (`en-US`, `zh-Hant-TW`).
pub fn language(raw: &str) -> Result<String, Invalid> {
    let t = raw.trim();
    let mut parts = t.split(['-', '_']);
    let lang = parts.next().unwrap_or("").to_lowercase();
    let known = match lang.len() {
        2 => isolang::Language::from_639_1(&lang).is_some(),
        3 => isolang::Language::from_639_3(&lang).is_some(),
        _ => false,
    };
    if !known {
        return invalid("language is not a known ISO 639 language code (like en or en-US)");
    }
    let mut out = lang;
    let mut seen_region = false;
    for sub in parts {
        let fixed =
            if sub.len() == 4 && sub.bytes().all(|b| b.is_ascii_alphabetic()) && !seen_region {
                let mut s = sub.to_lowercase();
                s[..1].make_ascii_uppercase();
                s
            } else if sub.len() == 2
                && rust_iso3166::from_alpha2(&sub.to_uppercase()).is_some()
                && !seen_region
            {
                seen_region = true;
                sub.to_uppercase()
            } else if sub.len() == 3 && sub.bytes().all(|b| b.is_ascii_digit()) && !seen_region {
                seen_region = true;
                sub.to_owned()
            } else {
                return invalid(format!(
                    "language tag {t:?} has a part {sub:?} that is not a script or a known region"
                ));
            };
        out.push('-');
        out.push_str(&fixed);
    }
    Ok(out)
}

/// Website: a URL with a scheme; `https://` is added when it has none.
pub fn website(raw: &str) -> Result<String, Invalid> {
    let t = raw.trim();
    let with_scheme = match t.split_once("://") {
        Some((scheme, rest)) => {
            let scheme = scheme.to_ascii_lowercase();
            if scheme != "http" && scheme != "https" {
                return invalid("website must be an http or https URL");
            }
            format!("{scheme}://{rest}")
        }
        None => format!("https://{t}"),
    };
    match url::Url::parse(&with_scheme) {
        Ok(u)
            if u.host_str().is_some_and(|h| h.contains('.'))
                && !t.contains(char::is_whitespace) =>
        {
            Ok(with_scheme)
        }
        _ => invalid("website is not a URL (like https://example.com)"),
    }
}

/// Normalizes a standard field. `Ok(None)` means null or blank.
pub fn standard(
    field: StandardField,
    v: &Value,
    opts: &NormalizeOptions,
) -> Result<Option<Canonical>, Invalid> {
    use StandardField as F;
    if matches!(v, Value::Null) {
        return Ok(None);
    }
    // Typed values that have their own rules first.
    match field {
        F::Age => {
            if text_of(v)?.is_none() {
                return Ok(None);
            }
            return age(v).map(|a| Some(Canonical::Int(a)));
        }
        F::DateOfBirth => {
            if !matches!(v, Value::Date(_)) && text_of(v)?.is_none() {
                return Ok(None);
            }
            return date_of_birth(v, opts).map(|d| Some(Canonical::Text(d)));
        }
        _ => {}
    }
    let Some(t) = text_of(v)? else {
        return Ok(None);
    };
    let s = match field {
        F::Email => email(&t)?,
        F::Phone => phone(&t, opts)?,
        F::FirstName
        | F::LastName
        | F::Address
        | F::City
        | F::State
        | F::Organization
        | F::Title => text(&t, MAX_TEXT_CHARS)?,
        F::ZipCode => text(&t, 32)?,
        F::Country => country(&t)?,
        F::Region => region(&t)?,
        F::Latitude => coordinate(&t, 90.0, "latitude")?,
        F::Longitude => coordinate(&t, 180.0, "longitude")?,
        F::TimeZone => time_zone(&t)?,
        F::Language => language(&t)?,
        F::Website => website(&t)?,
        F::Age | F::DateOfBirth => unreachable_field(field)?,
    };
    Ok(Some(Canonical::Text(s)))
}

fn unreachable_field(field: StandardField) -> Result<String, Invalid> {
    invalid(format!("internal: {field} handled above"))
}

/// A number as its canonical value: integers that fit `i64` are `Int`, others `Number`.
pub fn number(n: NumberText) -> Canonical {
    match n.as_str().parse::<i64>() {
        Ok(i) => Canonical::Int(i),
        Err(_) => Canonical::Number(n),
    }
}

pub(crate) fn boolean(t: &str) -> Option<bool> {
    match t.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" => Some(true),
        "false" | "f" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// ISO-8601 datetime in UTC (`2024-05-01T12:00:00Z`, fractional seconds kept).
pub fn datetime(v: &Value) -> Result<String, Invalid> {
    use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
    if let Value::Date(d) = v {
        return Ok(format!("{}T00:00:00Z", d.format("%Y-%m-%d")));
    }
    let Some(t) = text_of(v)? else {
        return invalid("datetime is empty");
    };
    let t = t.as_ref();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt
            .with_timezone(&Utc)
            .to_rfc3339_opts(SecondsFormat::AutoSi, true));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(n.and_utc().to_rfc3339_opts(SecondsFormat::AutoSi, true));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(format!("{}T00:00:00Z", d.format("%Y-%m-%d")));
    }
    invalid(format!(
        "{t:?} is not an ISO-8601 datetime (like 2024-05-01T12:00:00Z)"
    ))
}

/// Normalizes a custom attribute value. `Ok(None)` means null or blank.
pub fn custom(
    v: &Value,
    declared: Option<CustomType>,
    opts: &NormalizeOptions,
) -> Result<Option<Canonical>, Invalid> {
    if matches!(v, Value::Null) {
        return Ok(None);
    }
    if let Value::Text(s) = v {
        if s.trim().is_empty() {
            return Ok(None);
        }
    }
    let out = match declared {
        None => match v {
            Value::Bool(b) => Canonical::Bool(*b),
            Value::Int(i) => Canonical::Int(*i),
            Value::Number(n) => match NumberText::parse(n) {
                Some(n) => number(n),
                None => return invalid(format!("{n:?} is not a number")),
            },
            Value::Text(s) => Canonical::Text(s.trim().to_owned()),
            Value::Date(d) => Canonical::Text(d.format("%Y-%m-%d").to_string()),
            Value::Timestamp(_) => Canonical::Text(datetime(v)?),
            Value::Null => return Ok(None),
            Value::Unsupported { kind, .. } => {
                return invalid(format!(
                    "{kind} values are not accepted by Attentive (only text, numbers, booleans and dates)"
                ))
            }
        },
        Some(CustomType::String) => match text_of(v)? {
            Some(t) => Canonical::Text(t.into_owned()),
            None => return Ok(None),
        },
        Some(CustomType::Number) => match v {
            Value::Int(i) => Canonical::Int(*i),
            other => {
                let t = text_of(other)?.unwrap_or_default();
                match NumberText::parse(&t) {
                    Some(n) if !matches!(other, Value::Bool(_) | Value::Date(_)) => number(n),
                    _ => return invalid(format!("{t:?} is not a number (declared type number)")),
                }
            }
        },
        Some(CustomType::Bool) => match v {
            Value::Bool(b) => Canonical::Bool(*b),
            Value::Int(0) => Canonical::Bool(false),
            Value::Int(1) => Canonical::Bool(true),
            other => {
                let t = text_of(other)?.unwrap_or_default();
                match boolean(&t) {
                    Some(b) => Canonical::Bool(b),
                    None => {
                        return invalid(format!(
                            "{t:?} is not a boolean (declared type bool: true/false, yes/no, 1/0)"
                        ))
                    }
                }
            }
        },
        Some(CustomType::Date) => {
            Canonical::Text(date(v, opts.date_order)?.format("%Y-%m-%d").to_string())
        }
        Some(CustomType::Datetime) => Canonical::Text(datetime(v)?),
    };
    Ok(Some(out))
}

#[cfg(test)]
mod tests;
