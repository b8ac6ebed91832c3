//! Typing SQLite values (as the reader thread copied them) into model values.

use super::*;

/// How many bytes of a blob are shown in [`Value::Unsupported`].
pub(super) const BLOB_PREVIEW_BYTES: usize = 32;

/// Types one SQLite value into `slot`, reusing its allocation where it can. `Err` when text
/// is not valid UTF-8 (the slot is then null).
pub(super) fn set_value(
    slot: &mut Value,
    value: ValueRef<'_>,
    declared: Declared,
) -> Result<(), ()> {
    match value {
        ValueRef::Null => *slot = Value::Null,
        ValueRef::Integer(i) => {
            *slot = match (declared, i) {
                (Declared::Bool, 0 | 1) => Value::Bool(i == 1),
                _ => Value::Int(i),
            }
        }
        ValueRef::Real(f) => set_float(slot, f),
        ValueRef::Text(bytes) => {
            let Ok(text) = std::str::from_utf8(bytes) else {
                *slot = Value::Null;
                return Err(());
            };
            set_text_value(slot, text, declared);
        }
        ValueRef::Blob(bytes) => {
            *slot = Value::Unsupported {
                kind: "blob",
                text: hex_preview(bytes),
            }
        }
    }
    Ok(())
}

/// Types a SQLite text value into `slot`.
pub(super) fn set_text_value(slot: &mut Value, text: &str, declared: Declared) {
    match declared {
        Declared::Date => match iso_date(text) {
            Some(d) => *slot = Value::Date(d),
            None => set_text(slot, text),
        },
        Declared::Timestamp => match timestamp_utc(text) {
            Some(at) => crate::timestamp::set_utc(slot, &at),
            None => set_text(slot, text),
        },
        Declared::Bool | Declared::Other => set_text(slot, text),
    }
}

/// `x'0102…'`: the first bytes of a blob, in hex.
pub(super) fn hex_preview(bytes: &[u8]) -> String {
    typed::hex_preview(bytes, BLOB_PREVIEW_BYTES, "x'", "'")
}

/// A `YYYY-MM-DD` date (surrounding whitespace ignored).
pub(super) fn iso_date(text: &str) -> Option<NaiveDate> {
    let t = text.trim();
    let b = t.as_bytes();
    let shaped = b.len() == 10
        && b.get(4) == Some(&b'-')
        && b.get(7) == Some(&b'-')
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shaped {
        return None;
    }
    // Every byte of the ranges is an ASCII digit (checked above).
    let n = |r: std::ops::Range<usize>| {
        b.get(r).map(|d| {
            d.iter()
                .fold(0u32, |n, &c| n * 10 + u32::from(c.wrapping_sub(b'0')))
        })
    };
    let year = i32::try_from(n(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(year, n(5..7)?, n(8..10)?)
}

/// A SQLite date-time (`YYYY-MM-DD`, then optionally `T` or a space, `HH:MM[:SS[.fff…]]`, and
/// `Z` or `±HH:MM`), as UTC text `YYYY-MM-DDTHH:MM:SS[.fff]Z`. No offset means UTC.
#[cfg(test)]
pub(super) fn timestamp(text: &str) -> Option<String> {
    timestamp_utc(text).map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// [`timestamp`] as a point in time.
pub(super) fn timestamp_utc(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let t = text.trim();
    let date = iso_date(t.get(..10)?)?;
    let rest = t.get(10..)?;
    let naive = if rest.is_empty() {
        date.and_time(NaiveTime::MIN)
    } else {
        let rest = rest.strip_prefix(['T', 't', ' '])?;
        let (time, offset) = split_offset(rest)?;
        let time = match plain_time(time) {
            Some(time) => time,
            None => NaiveTime::parse_from_str(time, "%H:%M:%S%.f")
                .or_else(|_| NaiveTime::parse_from_str(time, "%H:%M"))
                .ok()?,
        };
        let local = NaiveDateTime::new(date, time);
        local.checked_sub_signed(chrono::TimeDelta::try_seconds(offset)?)?
    };
    Some(naive.and_utc())
}

/// A time of day written exactly `HH:MM:SS` or `HH:MM:SS.f` (1 to 9 digits), within
/// 00:00:00–23:59:59, read without `chrono`'s format parser (the common case, and the same
/// time that parser reads from it). `None` for anything else, which the parser then reads.
pub(super) fn plain_time(time: &str) -> Option<NaiveTime> {
    let b = time.as_bytes();
    let digit = |i: usize| -> Option<u32> {
        let d = b.get(i)?.wrapping_sub(b'0');
        (d < 10).then_some(u32::from(d))
    };
    let two = |i: usize| Some(digit(i)? * 10 + digit(i + 1)?);
    if b.len() < 8 || b.get(2) != Some(&b':') || b.get(5) != Some(&b':') {
        return None;
    }
    let (hour, minute, second) = (two(0)?, two(3)?, two(6)?);
    let mut nanos = 0;
    if let Some(fraction) = b.get(8..).filter(|f| !f.is_empty()) {
        let digits = fraction.get(1..).filter(|d| (1..=9).contains(&d.len()))?;
        if fraction.first() != Some(&b'.') {
            return None;
        }
        for (i, _) in digits.iter().enumerate() {
            nanos = nanos * 10 + digit(9 + i)?;
        }
        nanos *= 10u32.pow(9 - digits.len() as u32);
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)
}

/// Splits a time of day from its UTC offset (`Z`, `±HH:MM`, `±HHMM`, `±HH`), in seconds.
pub(super) fn split_offset(time: &str) -> Option<(&str, i64)> {
    if let Some(t) = time.strip_suffix(['Z', 'z']) {
        return Some((t, 0));
    }
    let Some(at) = time.rfind(['+', '-']) else {
        return Some((time, 0));
    };
    let (t, offset) = time.split_at(at);
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let digits: String = offset.get(1..)?.chars().filter(|&c| c != ':').collect();
    if !(digits.len() == 2 || digits.len() == 4) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i64 = digits.get(..2)?.parse().ok()?;
    let minutes: i64 = digits
        .get(2..)
        .filter(|m| !m.is_empty())
        .map_or(Ok(0), str::parse)
        .ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((t.trim_end(), sign * (hours * 3600 + minutes * 60)))
}
