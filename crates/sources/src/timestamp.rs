//! Timestamps as model values, shared by the typed sources.

use chrono::{DateTime, Datelike, NaiveDateTime, SecondsFormat, Timelike, Utc};
use sync_core::value::Value;

/// Sets `slot` to [`Value::Timestamp`] with `at` as `to_rfc3339_opts(SecondsFormat::AutoSi,
/// true)` writes it (`2024-05-01T12:00:00Z`, `…:00.250Z`, `…:00.000001Z`), reusing the slot's
/// buffer. Years 1–9999 are written here, digit by digit; others by `chrono`.
pub(crate) fn set_utc(slot: &mut Value, at: &DateTime<Utc>) {
    let naive = at.naive_utc();
    let year = naive.year();
    if !(1..=9999).contains(&year) {
        *slot = Value::Timestamp(at.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        return;
    }
    let mut buf = match std::mem::replace(slot, Value::Null) {
        Value::Timestamp(mut buf) => {
            buf.clear();
            buf
        }
        _ => String::with_capacity(30),
    };
    push_date_time(&mut buf, &naive);
    let nanos = naive.nanosecond();
    if nanos != 0 {
        buf.push('.');
        if nanos.is_multiple_of(1_000_000) {
            push_padded(&mut buf, nanos / 1_000_000, 3);
        } else if nanos.is_multiple_of(1_000) {
            push_padded(&mut buf, nanos / 1_000, 6);
        } else {
            push_padded(&mut buf, nanos, 9);
        }
    }
    buf.push('Z');
    *slot = Value::Timestamp(buf);
}

/// Pushes `at` as `YYYY-MM-DDTHH:MM:SS` (as `chrono` formats `%Y-%m-%dT%H:%M:%S` for the
/// years 0–9999; other years lose their sign and fifth digit, so callers keep to those).
pub(crate) fn push_date_time(buf: &mut String, at: &NaiveDateTime) {
    let two = |buf: &mut String, n: u32| push_padded(buf, n, 2);
    push_padded(buf, at.year().unsigned_abs(), 4);
    buf.push('-');
    two(buf, at.month());
    buf.push('-');
    two(buf, at.day());
    buf.push('T');
    two(buf, at.hour());
    buf.push(':');
    two(buf, at.minute());
    buf.push(':');
    two(buf, at.second());
}

/// Pushes `n` in decimal, zero-padded to `width` digits (at most 10).
pub(crate) fn push_padded(buf: &mut String, mut n: u32, width: usize) {
    let mut digits = [b'0'; 10];
    let width = width.clamp(1, digits.len());
    let mut at = digits.len();
    while at > 0 && (n > 0 || digits.len() - at < width) {
        at -= 1;
        if let Some(d) = digits.get_mut(at) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
    }
    for &d in digits.get(at..).unwrap_or_default() {
        buf.push(char::from(d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_times_are_what_chrono_formats() {
        let mut buf = String::new();
        for secs in (-62_135_596_800i64..253_402_300_799).step_by(7_777_777) {
            let Some(at) = DateTime::from_timestamp(secs, 0) else {
                continue;
            };
            buf.clear();
            push_date_time(&mut buf, &at.naive_utc());
            assert_eq!(buf, at.format("%Y-%m-%dT%H:%M:%S").to_string());
        }
    }

    #[test]
    fn writes_what_chrono_writes() {
        let mut slot = Value::Text("reused".into());
        let mut state = 7u64;
        for i in 0..200_000u64 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let secs = (state >> 20) as i64 % 400_000_000_000 - 100_000_000_000;
            let nanos = match i % 4 {
                0 => 0,
                1 => (state % 1000) as u32 * 1_000_000,
                2 => (state % 1_000_000) as u32 * 1_000,
                _ => (state % 1_000_000_000) as u32,
            };
            let Some(at) = DateTime::from_timestamp(secs, nanos) else {
                continue;
            };
            set_utc(&mut slot, &at);
            assert_eq!(
                slot,
                Value::Timestamp(at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            );
        }
        for (secs, nanos) in [(0, 0), (-62_135_596_800, 0), (253_402_300_799, 999_999_999)] {
            let at = DateTime::from_timestamp(secs, nanos).unwrap_or_default();
            set_utc(&mut slot, &at);
            assert_eq!(
                slot,
                Value::Timestamp(at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            );
        }
    }
}
