//! Normalization and validation: raw cells → the canonical values Attentive is sent.
//!
//! Every function here is pure and idempotent: feeding a canonical value back in returns it
//! unchanged, so a cosmetic edit in the model (`" Ann "` → `"Ann"`) never causes a send.
//! A failure is an [`Invalid`] whose text names the rule, for a person to act on.

use std::collections::HashMap;
use std::sync::OnceLock;

use chrono::{Datelike, NaiveDate};

use crate::mapping::{CustomType, DateOrder, IdentifierKind, NormalizeOptions, StandardField};
use crate::value::{Canonical, NumberError, NumberText, Value};

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

/// Refuses control characters (Unicode category Cc: NUL and the other C0 controls, DEL, C1
/// controls) other than tab, line feed and carriage return: they are never part of a real
/// value, and sent along they corrupt what Attentive stores.
pub fn check_controls(t: &str) -> Result<(), Invalid> {
    match t
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        Some((i, c)) => invalid(format!(
            "contains the control character U+{:04X} at character {}; text values must not contain control characters (other than tab, line feed and carriage return)",
            u32::from(c),
            i + 1
        )),
        None => Ok(()),
    }
}

/// Whether `c` is a format character (Unicode category Cf: zero-width space, joiners,
/// direction marks, byte-order mark, tags...): invisible when printed. Table from Unicode 16.
pub fn is_format_char(c: char) -> bool {
    matches!(
        u32::from(c),
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x890..=0x891
            | 0x8E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// The text of a cell for text-based rules; `None` for null or blank.
fn text_of(v: &Value) -> Result<Option<std::borrow::Cow<'_, str>>, Invalid> {
    use std::borrow::Cow;
    Ok(match v {
        Value::Null => None,
        Value::Text(s) | Value::Number(s) | Value::Timestamp(s) => {
            let t = s.trim();
            check_controls(t)?;
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
    if let Some(c) = e.chars().find(|&c| c.is_control() || is_format_char(c)) {
        return invalid(format!(
            "email contains the invisible or control character U+{:04X}; an address has none",
            u32::from(c)
        ));
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
    let e164 = parsed.format().mode(phonenumber::Mode::E164).to_string();
    // libphonenumber's metadata lets some countries (DE) have national numbers so long that
    // with the country code they pass the 15 digits E.164 allows.
    let digits = e164.bytes().filter(u8::is_ascii_digit).count();
    if digits > MAX_PHONE_DIGITS {
        return invalid(format!(
            "phone has {digits} digits with its country code; E.164 numbers have at most {MAX_PHONE_DIGITS}"
        ));
    }
    Ok(e164)
}

/// The most digits an E.164 number has, country code included.
pub const MAX_PHONE_DIGITS: usize = 15;

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

/// Latitude or longitude: a decimal number within ±`limit` degrees, compared exactly (no
/// float rounding), sent as the text given (trimmed, without a leading `+`).
pub fn coordinate(raw: &str, limit: u32, what: &str) -> Result<String, Invalid> {
    let t = raw.trim();
    let not_decimal = || invalid(format!("{what} is not a decimal number"));
    if t.contains(['e', 'E']) {
        return not_decimal();
    }
    // Without an exponent the canonical text is as long as the input at most, and exact.
    let canonical = match NumberText::parse_checked(t) {
        Ok(n) => n.as_str().to_owned(),
        Err(NumberError::NotANumber) => return not_decimal(),
        Err(NumberError::OutOfRange) => String::new(),
        // A non-zero value below 1e-308 degrees is within range; it is sent as text.
        Err(NumberError::Underflow) => "0".to_owned(),
    };
    let magnitude = canonical.trim_start_matches('-');
    let (int, frac) = magnitude.split_once('.').unwrap_or((magnitude, ""));
    let within = match int.parse::<u32>() {
        Ok(i) => i < limit || (i == limit && frac.is_empty()),
        Err(_) => false,
    };
    if !within {
        return invalid(format!("{what} must be between -{limit} and {limit}"));
    }
    Ok(t.trim_start_matches('+').to_owned())
}

/// `YYYY-MM-DD` (or with `/` when `slash`): the year exactly four digits, month and day one or
/// two, one kind of separator. `None` when `t` is not of this shape; `Some(None)` when it is but
/// names no real day (`1990-02-29`, month 13).
fn ymd(t: &str, slash: bool) -> Option<Option<NaiveDate>> {
    let sep = [b'-', b'/']
        .into_iter()
        .take(if slash { 2 } else { 1 })
        .find(|s| t.as_bytes().get(4) == Some(s))?;
    let mut parts = t.split(char::from(sep));
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let digits = |p: &str, lens: std::ops::RangeInclusive<usize>| {
        lens.contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
    };
    if !(digits(y, 4..=4) && digits(m, 1..=2) && digits(d, 1..=2)) {
        return None;
    }
    let n = |p: &str| p.parse::<u32>().unwrap_or(0);
    Some(NaiveDate::from_ymd_opt(y.parse().unwrap_or(0), n(m), n(d)))
}

/// Largest UTC offset accepted in a datetime (real offsets are within −12:00 and +14:00).
const MAX_OFFSET_SECONDS: i32 = 18 * 3600;

/// An ISO-8601 datetime: `YYYY-MM-DD`, then `T` (or `t`, or a space) and a time (hours
/// 00–23, minutes 00–59, seconds optional, a fraction allowed), then `Z` or an offset
/// `±hh:mm` within ±18:00, or no offset (UTC). `Err(true)` when it has this shape but names
/// no real day; `Err(false)` otherwise.
fn parse_datetime(t: &str) -> Result<chrono::DateTime<chrono::Utc>, bool> {
    use chrono::{DateTime, NaiveDateTime, Utc};
    let (Some(day), Some(sep)) = (t.get(..10), t.as_bytes().get(10)) else {
        return Err(false);
    };
    if day.len() != 10 || !matches!(sep, b'T' | b't' | b' ') {
        return Err(false);
    }
    match ymd(day, false) {
        None => return Err(false),
        Some(None) => return Err(true),
        Some(Some(_)) => {}
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        if dt.offset().local_minus_utc().abs() > MAX_OFFSET_SECONDS {
            return Err(false);
        }
        return Ok(dt.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(&t.replacen('t', "T", 1), fmt) {
            return Ok(n.and_utc());
        }
    }
    Err(false)
}

/// A date that `YYYY-MM-DD` can write: years 0000 to 9999. Typed sources can hold others
/// (PostgreSQL dates go from 4713 BC to 5874897 AD), which chrono writes `-0648-11-29` or
/// `+10000-01-01`: sent, they would not be the dates the field is documented to send, and
/// they would not read back.
fn four_digit_year(d: NaiveDate) -> Result<NaiveDate, Invalid> {
    if (0..=9999).contains(&d.year()) {
        Ok(d)
    } else {
        invalid(format!(
            "date {d} is outside the years 0000 to 9999 (YYYY-MM-DD)"
        ))
    }
}

/// Parses a date in the forms the activation allows.
pub fn date(v: &Value, order: DateOrder) -> Result<NaiveDate, Invalid> {
    if let Value::Date(d) = v {
        return four_digit_year(*d);
    }
    let Some(t) = text_of(v)? else {
        return invalid("date is empty");
    };
    let t = t.as_ref();
    let not_real = || invalid(format!("date {t:?} is not a real calendar date"));
    // An ISO-8601 datetime: the date part as written, once the whole datetime is checked.
    let (date_part, time_part) = match t.find(['T', 't', ' ']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    match (ymd(date_part, true), time_part) {
        (Some(None), _) => return not_real(),
        (Some(Some(d)), None) => return Ok(d),
        (Some(Some(d)), Some(time)) => {
            let iso = format!("{}T{time}", d.format("%Y-%m-%d"));
            return match parse_datetime(&iso) {
                Ok(_) => Ok(d),
                Err(_) => invalid(format!(
                    "date {t:?} has a time part that is not a valid ISO-8601 time (hours 00-23, minutes and seconds 00-59, offset Z or \u{b1}hh:mm within \u{b1}18:00)"
                )),
            };
        }
        (None, _) => {}
    }
    let numeric: Vec<&str> = t.split(['/', '-', '.']).collect();
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
        return NaiveDate::from_ymd_opt(year, m, d).map_or_else(not_real, Ok);
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

/// Date of birth: a real date, not after [`NormalizeOptions::today`], as `YYYY-MM-DD`.
pub fn date_of_birth(v: &Value, opts: &NormalizeOptions) -> Result<String, Invalid> {
    let d = date(v, opts.date_order)?;
    // The caller gives the day (this crate reads no clock).
    if opts.today.is_some_and(|today| d > today) {
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
            let num = match NumberText::parse_checked(&t) {
                Ok(num) => num,
                Err(NumberError::NotANumber) => return invalid("age is not a number"),
                Err(NumberError::OutOfRange) if t.starts_with('-') => {
                    return invalid("age must not be negative")
                }
                Err(NumberError::OutOfRange) => return invalid("age is out of range: at most 150"),
                Err(NumberError::Underflow) => return invalid("age must be a whole number"),
            };
            let text = num.as_str();
            if text.contains('.') {
                return invalid("age must be a whole number");
            }
            match text.parse::<i64>() {
                Ok(i) => i,
                // A whole number beyond i64: its sign says which end of the range it is off.
                Err(_) if text.starts_with('-') => i64::MIN,
                Err(_) => i64::MAX,
            }
        }
    };
    if n < 0 {
        return invalid("age must not be negative");
    }
    if n > 150 {
        return invalid("age is out of range: at most 150");
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
        F::Latitude => coordinate(&t, 90, "latitude")?,
        F::Longitude => coordinate(&t, 180, "longitude")?,
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
    use chrono::SecondsFormat;
    if let Value::Date(d) = v {
        return Ok(format!(
            "{}T00:00:00Z",
            four_digit_year(*d)?.format("%Y-%m-%d")
        ));
    }
    let Some(t) = text_of(v)? else {
        return invalid("datetime is empty");
    };
    let t = t.as_ref();
    let not_real = || invalid(format!("{t:?} is not a real calendar date"));
    match parse_datetime(t) {
        Ok(dt) => {
            // An offset can move a datetime of year 0000 or 9999 out of four digits in UTC.
            four_digit_year(dt.date_naive())?;
            return Ok(dt.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        }
        Err(true) => return not_real(),
        Err(false) => {}
    }
    match ymd(t, false) {
        Some(Some(d)) => return Ok(format!("{}T00:00:00Z", d.format("%Y-%m-%d"))),
        Some(None) => return not_real(),
        None => {}
    }
    invalid(format!(
        "{t:?} is not an ISO-8601 datetime (like 2024-05-01T12:00:00Z; hours 00-23, offset Z or \u{b1}hh:mm within \u{b1}18:00)"
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
            Value::Number(n) => match NumberText::parse_checked(n) {
                Ok(n) => number(n),
                Err(e) => return invalid(format!("{:?} {}", n.trim(), e.rule())),
            },
            Value::Text(s) => {
                check_controls(s.trim())?;
                Canonical::Text(s.trim().to_owned())
            }
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
                match NumberText::parse_checked(&t) {
                    Ok(n) if !matches!(other, Value::Bool(_) | Value::Date(_)) => number(n),
                    Ok(_) => {
                        return invalid(format!(
                            "{t:?} {} (declared type number)",
                            NumberError::NotANumber.rule()
                        ))
                    }
                    Err(e) => return invalid(format!("{t:?} {} (declared type number)", e.rule())),
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
