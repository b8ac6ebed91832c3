//! Decoding PostgreSQL's binary wire form into model values.

use super::*;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
pub(super) const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from 0001-01-01 (day 1 of the common era) to 2000-01-01.
pub(super) const PG_EPOCH_DAYS_FROM_CE: i32 = 730_120;

/// One value of a fetched row, undecoded: its wire bytes, or `None` for SQL `NULL`.
pub(super) struct Cell<'a>(pub(super) Option<&'a [u8]>);

impl<'a> FromSql<'a> for Cell<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Cell(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Cell(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Decodes the wire (binary) form `raw` of a value of type `ty` into `value`.
pub(super) fn decode(ty: ColumnType, raw: &[u8], value: &mut Value) -> Result<(), String> {
    match ty {
        ColumnType::Text => set_text(value, utf8(raw)?),
        ColumnType::Int2 => *value = Value::Int(i64::from(i16::from_be_bytes(fixed(raw)?))),
        ColumnType::Int4 => *value = Value::Int(i64::from(i32::from_be_bytes(fixed(raw)?))),
        ColumnType::Int8 => *value = Value::Int(i64::from_be_bytes(fixed(raw)?)),
        ColumnType::Bool => *value = Value::Bool(fixed::<1>(raw)? != [0]),
        ColumnType::Float4 => set_float(value, f32::from_be_bytes(fixed(raw)?)),
        ColumnType::Float8 => set_float(value, f64::from_be_bytes(fixed(raw)?)),
        ColumnType::Numeric => {
            let mut buf = take_string(value);
            *value = match numeric_text(raw, &mut buf)? {
                Numeric::Finite => Value::Number(buf),
                Numeric::NaN => Value::Unsupported {
                    kind: "NaN",
                    text: "NaN".to_owned(),
                },
                Numeric::Infinity(negative) => infinity("infinity", negative, "Infinity"),
            };
        }
        ColumnType::Date => {
            *value = match i32::from_be_bytes(fixed(raw)?) {
                i32::MAX => infinity("infinite date", false, "infinity"),
                i32::MIN => infinity("infinite date", true, "infinity"),
                days => match date_from_pg(days) {
                    Some(date) if (1..=9999).contains(&date.year()) => Value::Date(date),
                    Some(date) => Value::Unsupported {
                        kind: "out-of-range date",
                        text: date_text(date, ""),
                    },
                    None => Value::Unsupported {
                        kind: "out-of-range date",
                        text: format!("{days} days after 2000-01-01"),
                    },
                },
            };
        }
        ColumnType::Timestamp => {
            let micros = i64::from_be_bytes(fixed(raw)?);
            *value = match micros {
                i64::MAX => infinity("infinite timestamp", false, "infinity"),
                i64::MIN => infinity("infinite timestamp", true, "infinity"),
                _ => {
                    let mut buf = take_string(value);
                    match timestamp_text(micros, &mut buf) {
                        Ok(()) => Value::Timestamp(buf),
                        Err(text) => Value::Unsupported {
                            kind: "out-of-range timestamp",
                            text,
                        },
                    }
                }
            };
        }
        ColumnType::Uuid => {
            let bytes: [u8; 16] = fixed(raw)?;
            let mut buf = take_string(value);
            typed::push_uuid(&mut buf, &bytes);
            *value = Value::Text(buf);
        }
        ColumnType::Json => set_json(value, utf8(raw)?)?,
        ColumnType::Jsonb => match raw.split_first() {
            Some((1, text)) => set_json(value, utf8(text)?)?,
            Some((version, _)) => return Err(format!("unknown jsonb format version {version}")),
            None => return Err("empty jsonb value".to_owned()),
        },
    }
    Ok(())
}

pub(super) fn utf8(raw: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(raw).map_err(|_| "not valid UTF-8".to_owned())
}

/// `raw` as exactly `N` bytes.
pub(super) fn fixed<const N: usize>(raw: &[u8]) -> Result<[u8; N], String> {
    raw.try_into()
        .map_err(|_| format!("{} bytes where {N} were expected", raw.len()))
}

/// Empties `value`, handing back its string buffer (when it has one) for reuse.
pub(super) fn take_string(value: &mut Value) -> String {
    match std::mem::replace(value, Value::Null) {
        Value::Text(mut s)
        | Value::Number(mut s)
        | Value::Timestamp(mut s)
        | Value::Unsupported { text: mut s, .. } => {
            s.clear();
            s
        }
        _ => String::new(),
    }
}

pub(super) fn infinity(kind: &'static str, negative: bool, word: &str) -> Value {
    Value::Unsupported {
        kind,
        text: format!("{}{word}", if negative { "-" } else { "" }),
    }
}

/// What a `numeric` value is.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Numeric {
    /// A number, whose text was written.
    Finite,
    NaN,
    /// `Infinity`, or `-Infinity` when `true`.
    Infinity(bool),
}

/// Writes the decimal text of a binary `numeric` into `out` (cleared first), as PostgreSQL
/// prints it: every digit, and exactly the value's scale after the point.
///
/// The wire form is: digit count, weight (of the first digit, in powers of 10,000), sign,
/// display scale (digits after the point), then the base-10,000 digits, all big-endian 16-bit.
pub(super) fn numeric_text(raw: &[u8], out: &mut String) -> Result<Numeric, String> {
    let word = |i: usize| -> Option<u16> {
        let bytes = raw.get(2 * i..2 * i + 2)?;
        Some(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]))
    };
    let bad = || format!("malformed numeric value ({} bytes)", raw.len());
    let (Some(ndigits), Some(weight), Some(sign), Some(dscale)) =
        (word(0), word(1), word(2), word(3))
    else {
        return Err(bad());
    };
    let ndigits = usize::from(ndigits);
    let weight = i64::from(weight as i16);
    if raw.len() != 8 + 2 * ndigits {
        return Err(bad());
    }
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok(Numeric::NaN),
        0xD000 => return Ok(Numeric::Infinity(false)),
        0xF000 => return Ok(Numeric::Infinity(true)),
        _ => return Err(bad()),
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        match word(4 + i) {
            Some(d) if d < 10_000 => digits.push(d),
            _ => return Err(bad()),
        }
    }
    let digit = |g: i64| -> u16 {
        usize::try_from(g)
            .ok()
            .and_then(|g| digits.get(g).copied())
            .unwrap_or(0)
    };
    out.clear();
    if sign == 0x4000 && digits.iter().any(|&d| d != 0) {
        out.push('-');
    }
    // The integer part, without leading zeros.
    let int_start = out.len();
    for g in 0..=weight {
        crate::timestamp::push_padded(out, u32::from(digit(g)), 4);
    }
    let leading = out
        .get(int_start..)
        .map_or(0, |int| int.len() - int.trim_start_matches('0').len());
    out.replace_range(int_start..int_start + leading, "");
    if out.len() == int_start {
        out.push('0');
    }
    // Exactly `dscale` digits after the point.
    let dscale = usize::from(dscale & 0x3FFF);
    if dscale > 0 {
        out.push('.');
        let frac_start = out.len();
        let mut g = weight + 1;
        while out.len() - frac_start < dscale {
            crate::timestamp::push_padded(out, u32::from(digit(g)), 4);
            g += 1;
        }
        out.truncate(frac_start + dscale);
    }
    Ok(Numeric::Finite)
}

/// The date `days` after 2000-01-01.
pub(super) fn date_from_pg(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(PG_EPOCH_DAYS_FROM_CE.checked_add(days)?)
}

/// A date as PostgreSQL writes it (`10000-01-01`, `0044-03-15 BC`), with `time` after it.
pub(super) fn date_text(date: NaiveDate, time: &str) -> String {
    let (year, era) = match date.year() {
        y if y >= 1 => (i64::from(y), ""),
        y => (1 - i64::from(y), " BC"),
    };
    format!("{year:04}-{:02}-{:02}{time}{era}", date.month(), date.day())
}

/// Writes the UTC time `micros` after 2000-01-01 as `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`; a time
/// outside the years 1–9999 comes back as `Err` with its text.
pub(super) fn timestamp_text(micros: i64, out: &mut String) -> Result<(), String> {
    let time = micros
        .checked_add(PG_EPOCH_MICROS)
        .and_then(DateTime::<Utc>::from_timestamp_micros);
    let Some(time) = time else {
        return Err(format!("{micros} microseconds after 2000-01-01"));
    };
    if !(1..=9999).contains(&time.year()) {
        return Err(date_text(
            time.date_naive(),
            &time.format("T%H:%M:%S%.fZ").to_string(),
        ));
    }
    out.clear();
    crate::timestamp::push_date_time(out, &time.naive_utc());
    let fraction = time.timestamp_subsec_micros();
    if fraction != 0 {
        out.push('.');
        crate::timestamp::push_padded(out, fraction, 6);
    }
    out.push('Z');
    Ok(())
}

/// Sets a JSON value as every source does ([`typed::set_json`]): scalars typed, arrays and
/// objects unsupported.
pub(super) fn set_json(value: &mut Value, text: &str) -> Result<(), String> {
    let raw: &serde_json::value::RawValue =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    match raw.get().trim() {
        "" => Err("empty JSON value".to_owned()),
        raw => {
            typed::set_json(value, raw);
            Ok(())
        }
    }
}
