//! Decoding Parquet column batches into model values.

use std::fmt::Write as _;

use super::*;

/// How many bytes of a binary value are shown in [`Value::Unsupported`].
pub(super) const BINARY_PREVIEW_BYTES: usize = 32;

/// Decimals with a larger scale are written with an exponent (`5e-500`), not 500 zeros.
pub(super) const MAX_PLAIN_SCALE: i32 = 100;

/// Days from 0001-01-01 (day 1 of the common era) to 1970-01-01.
pub(super) const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// The Julian day of 1970-01-01, the epoch of INT96 timestamps.
pub(super) const JULIAN_DAY_OF_UNIX_EPOCH: i64 = 2_440_588;

/// The decoded batch of one column.
#[derive(Default)]
pub(super) struct ColumnBatch {
    /// `None` for a group without leaves.
    pub(super) values: Option<Values>,
    pub(super) defs: Vec<i16>,
    pub(super) reps: Vec<i16>,
    /// For a text column: its values, copied out of `values` (which is then emptied).
    pub(super) text: Option<TextColumn>,
}

/// The values of a text column batch, copied out of their pages and checked as UTF-8 at once:
/// one string, each value a range of it.
#[derive(Default)]
pub(super) struct TextColumn {
    pub(super) text: String,
    /// Each value's range in `text`; an empty range starting past its end (`1..0`) for a value
    /// that is not valid UTF-8.
    pub(super) spans: Vec<(usize, usize)>,
}

impl TextColumn {
    /// Replaces the values with those of `values`, checking them as UTF-8 all at once.
    pub(super) fn fill<'a>(&mut self, values: impl Iterator<Item = &'a [u8]>) {
        let mut bytes = std::mem::take(&mut self.text).into_bytes();
        bytes.clear();
        self.spans.clear();
        for value in values {
            let start = bytes.len();
            bytes.extend_from_slice(value);
            self.spans.push((start, bytes.len()));
        }
        self.text = match String::from_utf8(bytes) {
            // Every value is valid exactly when its range has character bounds; a value
            // that is not valid UTF-8 alone has not (see `value`).
            Ok(text) => text,
            Err(e) => {
                // Some value is not valid UTF-8: check them one by one.
                let bytes = e.into_bytes();
                let mut text = String::with_capacity(bytes.len());
                for span in &mut self.spans {
                    match bytes.get(span.0..span.1).map(std::str::from_utf8) {
                        Some(Ok(value)) => {
                            let start = text.len();
                            text.push_str(value);
                            *span = (start, text.len());
                        }
                        _ => *span = (1, 0),
                    }
                }
                text
            }
        };
    }

    /// Value `i` (`None` past the last), or `Some(None)` when it is not valid UTF-8.
    pub(super) fn value(&self, i: usize) -> Option<Option<&str>> {
        let &(start, end) = self.spans.get(i)?;
        Some(self.text.get(start..end))
    }
}

/// Where the next row of a [`ColumnBatch`] starts.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Cursor {
    pub(super) level: usize,
    pub(super) value: usize,
}

/// The decoded values of one column batch.
pub(super) enum Values {
    Bool(Vec<bool>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Int96(Vec<Int96>),
    Float(Vec<f32>),
    Double(Vec<f64>),
    Bytes(Vec<ByteArray>),
    Fixed(Vec<FixedLenByteArray>),
}

impl ColumnBatch {
    /// For a text column, copies the values into a [`TextColumn`] (done once per batch, as it
    /// arrives).
    pub(super) fn copy_text(&mut self, conv: Conv) {
        let text = self.text.get_or_insert_with(TextColumn::default);
        match (&mut self.values, conv) {
            (Some(Values::Bytes(v)), Conv::Text) => {
                text.fill(v.iter().map(ByteArray::data));
            }
            (Some(Values::Fixed(v)), Conv::Text) => {
                text.fill(v.iter().map(|b| b.data()));
            }
            _ => self.text = None,
        }
    }

    /// Takes this column's value of the row at `cursor` into `slot`, and moves the cursor to
    /// the next row. `Err` when text is not valid UTF-8 (the slot is then null).
    pub(super) fn take(
        &self,
        cursor: &mut Cursor,
        plan: &Plan,
        slot: &mut Value,
    ) -> Result<(), ()> {
        if let Conv::Nested(kind) = plan.conv {
            self.take_nested(cursor, plan, kind, slot);
            return Ok(());
        }
        let Some(values) = &self.values else {
            *slot = Value::Null;
            return Ok(());
        };
        if let Some(&def) = self.defs.get(cursor.level) {
            cursor.level += 1;
            if def < plan.max_def {
                *slot = Value::Null;
                return Ok(());
            }
        }
        let i = cursor.value;
        cursor.value += 1;
        if let Some(text) = &self.text {
            return match text.value(i) {
                Some(Some(t)) => {
                    set_text(slot, t);
                    Ok(())
                }
                Some(None) => {
                    *slot = Value::Null;
                    Err(())
                }
                // Not reached: a batch holds a value for every non-null level.
                None => {
                    *slot = Value::Null;
                    Ok(())
                }
            };
        }
        let set = match values {
            Values::Bool(v) => v.get(i).map(|&b| *slot = Value::Bool(b)),
            Values::Int32(v) => v
                .get(i)
                .map(|&x| set_int(slot, plan.conv, x.into(), x as u32 as u64)),
            Values::Int64(v) => v.get(i).map(|&x| set_int(slot, plan.conv, x, x as u64)),
            Values::Int96(v) => v.get(i).map(|x| *slot = int96_timestamp(x)),
            Values::Float(v) => v.get(i).map(|&x| set_float(slot, x)),
            Values::Double(v) => v.get(i).map(|&x| set_float(slot, x)),
            Values::Bytes(v) => match v.get(i) {
                Some(b) => return set_bytes(slot, plan.conv, b.data()),
                None => None,
            },
            Values::Fixed(v) => match v.get(i) {
                Some(b) => return set_bytes(slot, plan.conv, b.data()),
                None => None,
            },
        };
        if set.is_none() {
            // Not reached: a batch holds a value for every non-null level.
            *slot = Value::Null;
        }
        Ok(())
    }

    /// Takes the next record of a nested field: null, or unsupported.
    pub(super) fn take_nested(
        &self,
        cursor: &mut Cursor,
        plan: &Plan,
        kind: &'static str,
        slot: &mut Value,
    ) {
        let first_def = self.defs.get(cursor.level).copied();
        if !self.defs.is_empty() || !self.reps.is_empty() {
            cursor.level += 1;
            // The record's other levels continue it (repetition level > 0).
            while self.reps.get(cursor.level).is_some_and(|&r| r > 0) {
                cursor.level += 1;
            }
        }
        let present = first_def.is_none_or(|d| d >= plan.present_def);
        *slot = if present {
            let text = if kind == "array" { "[…]" } else { "{…}" };
            Value::Unsupported {
                kind,
                text: text.to_owned(),
            }
        } else {
            Value::Null
        };
    }
}

/// An `INT32` or `INT64` value (`unsigned` holds the same bits, unsigned).
pub(super) fn set_int(slot: &mut Value, conv: Conv, signed: i64, unsigned: u64) {
    *slot = match conv {
        Conv::UInt => match i64::try_from(unsigned) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Number(unsigned.to_string()),
        },
        Conv::Decimal(scale) => {
            let negative = signed < 0;
            let digits = signed.unsigned_abs().to_string();
            Value::Number(decimal_text(negative, &digits, scale))
        }
        Conv::Date => date(signed),
        Conv::Time(unit) => time_of_day(signed, unit),
        Conv::Timestamp(unit) => return set_timestamp(slot, signed, unit),
        _ => Value::Int(signed),
    };
}

pub(super) fn date(days: i64) -> Value {
    let date = i32::try_from(days)
        .ok()
        .and_then(|d| d.checked_add(UNIX_EPOCH_DAYS_FROM_CE))
        .and_then(NaiveDate::from_num_days_from_ce_opt);
    match date {
        Some(d) => Value::Date(d),
        None => Value::Unsupported {
            kind: "out-of-range date",
            text: format!("{days} days after 1970-01-01"),
        },
    }
}

/// Splits a count of `unit` into seconds and nanoseconds (floored).
pub(super) fn split(value: i64, unit: Unit) -> (i64, u32) {
    let per_second = match unit {
        Unit::Millis => 1_000,
        Unit::Micros => 1_000_000,
        Unit::Nanos => 1_000_000_000,
    };
    let nanos_per_unit = 1_000_000_000 / per_second;
    let nanos = value.rem_euclid(per_second) * nanos_per_unit;
    (
        value.div_euclid(per_second),
        u32::try_from(nanos).unwrap_or(0),
    )
}

pub(super) fn time_of_day(value: i64, unit: Unit) -> Value {
    let (secs, nanos) = split(value, unit);
    let time = u32::try_from(secs)
        .ok()
        .and_then(|s| NaiveTime::from_num_seconds_from_midnight_opt(s, nanos));
    match time {
        Some(t) => Value::Text(t.format("%H:%M:%S%.f").to_string()),
        None => Value::Unsupported {
            kind: "out-of-range time",
            text: value.to_string(),
        },
    }
}

/// [`timestamp`] into `slot`, reusing its buffer.
pub(super) fn set_timestamp(slot: &mut Value, value: i64, unit: Unit) {
    let (secs, nanos) = split(value, unit);
    match DateTime::from_timestamp(secs, nanos) {
        Some(at) => crate::timestamp::set_utc(slot, &at),
        None => *slot = utc_text(None, || value.to_string()),
    }
}

#[cfg(test)]
pub(super) fn timestamp(value: i64, unit: Unit) -> Value {
    let (secs, nanos) = split(value, unit);
    utc_text(DateTime::from_timestamp(secs, nanos), || value.to_string())
}

pub(super) fn utc_text(at: Option<DateTime<Utc>>, raw: impl FnOnce() -> String) -> Value {
    match at {
        Some(at) => Value::Timestamp(at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        None => Value::Unsupported {
            kind: "out-of-range timestamp",
            text: raw(),
        },
    }
}

/// A legacy `INT96` timestamp: nanoseconds of the day (8 bytes) then the Julian day (4 bytes),
/// little-endian.
pub(super) fn int96_timestamp(x: &Int96) -> Value {
    let data = x.data();
    let word = |i: usize| data.get(i).copied().unwrap_or(0);
    let nanos_of_day = (u64::from(word(1)) << 32) | u64::from(word(0));
    let julian_day = i64::from(word(2) as i32);
    let at = i64::try_from(nanos_of_day).ok().and_then(|nanos| {
        let secs = (julian_day - JULIAN_DAY_OF_UNIX_EPOCH)
            .checked_mul(86_400)?
            .checked_add(nanos / 1_000_000_000)?;
        DateTime::from_timestamp(secs, u32::try_from(nanos % 1_000_000_000).ok()?)
    });
    utc_text(at, || format!("INT96 {data:?}"))
}

/// A `BINARY` or `FIXED_LEN_BYTE_ARRAY` value. `Err` when text is not valid UTF-8.
pub(super) fn set_bytes(slot: &mut Value, conv: Conv, bytes: &[u8]) -> Result<(), ()> {
    match conv {
        Conv::Text => match std::str::from_utf8(bytes) {
            Ok(text) => set_text(slot, text),
            Err(_) => {
                *slot = Value::Null;
                return Err(());
            }
        },
        Conv::Decimal(scale) => {
            let (negative, digits) = twos_complement_digits(bytes);
            *slot = Value::Number(decimal_text(negative, &digits, scale));
        }
        Conv::Uuid if bytes.len() == 16 => {
            let mut text = String::with_capacity(36);
            typed::push_uuid(&mut text, bytes);
            *slot = Value::Text(text);
        }
        Conv::Float16 => match <[u8; 2]>::try_from(bytes) {
            Ok(b) => set_float(slot, f16_to_f32(u16::from_le_bytes(b))),
            Err(_) => *slot = binary("binary", bytes),
        },
        Conv::Binary(kind) => *slot = binary(kind, bytes),
        _ => *slot = binary("binary", bytes),
    }
    Ok(())
}

pub(super) fn binary(kind: &'static str, bytes: &[u8]) -> Value {
    Value::Unsupported {
        kind,
        text: typed::hex_preview(bytes, BINARY_PREVIEW_BYTES, "0x", ""),
    }
}

/// An IEEE half-precision float, widened exactly.
pub(super) fn f16_to_f32(bits: u16) -> f32 {
    let negative = bits & 0x8000 != 0;
    let exponent = i32::from((bits >> 10) & 0x1f);
    let fraction = f32::from(bits & 0x3ff);
    let magnitude = match exponent {
        0 => fraction * 2f32.powi(-24),
        31 if fraction == 0.0 => f32::INFINITY,
        31 => f32::NAN,
        e => (1024.0 + fraction) * 2f32.powi(e - 25),
    };
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// The sign and decimal digits of a big-endian two's complement integer of any length.
pub(super) fn twos_complement_digits(bytes: &[u8]) -> (bool, String) {
    let negative = bytes.first().is_some_and(|&b| b & 0x80 != 0);
    if bytes.len() <= 16 {
        let fill = if negative { 0xff } else { 0 };
        let mut buf = [fill; 16];
        if let Some(tail) = buf.get_mut(16 - bytes.len()..) {
            tail.copy_from_slice(bytes);
        }
        let n = i128::from_be_bytes(buf);
        return (negative, n.unsigned_abs().to_string());
    }
    // Longer: the magnitude (negated when negative) in base 10^9, least significant first.
    let mut magnitude: Vec<u8> = bytes.to_vec();
    if negative {
        for b in &mut magnitude {
            *b = !*b;
        }
        for b in magnitude.iter_mut().rev() {
            let (sum, carry) = b.overflowing_add(1);
            *b = sum;
            if !carry {
                break;
            }
        }
    }
    let mut limbs: Vec<u32> = Vec::new();
    for &byte in &magnitude {
        let mut carry = u64::from(byte);
        for limb in &mut limbs {
            let v = u64::from(*limb) * 256 + carry;
            *limb = (v % 1_000_000_000) as u32;
            carry = v / 1_000_000_000;
        }
        while carry > 0 {
            limbs.push((carry % 1_000_000_000) as u32);
            carry /= 1_000_000_000;
        }
    }
    let mut digits = match limbs.last() {
        Some(top) => top.to_string(),
        None => "0".to_owned(),
    };
    for limb in limbs.iter().rev().skip(1) {
        let _ = write!(digits, "{limb:09}");
    }
    (negative, digits)
}

/// The decimal text of an unscaled integer (`digits`, no sign) and a scale: `12345`, 2 →
/// `123.45`; `5`, 3 → `0.005`; a negative scale is an exponent (`12`, -3 → `12e3`).
pub(super) fn decimal_text(negative: bool, digits: &str, scale: i32) -> String {
    let zero = digits.bytes().all(|b| b == b'0');
    let mut out = String::with_capacity(digits.len() + 4);
    if negative && !zero {
        out.push('-');
    }
    if scale <= 0 || scale > MAX_PLAIN_SCALE {
        out.push_str(digits);
        if scale > MAX_PLAIN_SCALE && !zero {
            let _ = write!(out, "e-{scale}");
            return out;
        }
        if scale < 0 && !zero {
            let _ = write!(out, "e{}", -i64::from(scale));
        }
        return out;
    }
    let scale = usize::try_from(scale).unwrap_or(0);
    if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        out.push_str(digits);
    }
    out
}
