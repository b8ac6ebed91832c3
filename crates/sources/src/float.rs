//! Floats as model values, shared by the typed sources.
//!
//! A float is written as the shortest decimal text that reads back as the same float, which
//! is what Rust's `{:?}` and `{}` write. The `fmt` machinery that finds those digits is
//! general and slow for the common case, a float read from a decimal with few digits
//! (`412.5`, `13195.32`); [`Decimal::shortest`] finds the digits of such floats directly and
//! leaves every other float to `fmt`.

use std::fmt::{self, Write as _};

use sync_core::value::Value;

/// A float type whose value can be written through [`Decimal::shortest`]: `f64` can; `f32`
/// cannot (its shortest digits are those of an `f32`), and always goes through `fmt`.
pub(crate) trait Float: fmt::Debug + fmt::Display + Into<f64> + Copy {
    /// The value, when its shortest digits are those of this `f64`.
    fn as_f64(self) -> Option<f64>;
}

impl Float for f64 {
    fn as_f64(self) -> Option<f64> {
        Some(self)
    }
}

impl Float for f32 {
    fn as_f64(self) -> Option<f64> {
        None
    }
}

/// A float or double as [`Value::Number`] with its shortest round-trip text (`412.5`, `3.0`,
/// `1e-7`), reusing the slot's buffer; NaN and infinities are [`Value::Unsupported`].
pub(crate) fn set_float<F: Float>(slot: &mut Value, x: F) {
    if !x.into().is_finite() {
        *slot = Value::Unsupported {
            kind: "non-finite number",
            text: x.to_string(),
        };
        return;
    }
    let buf = match slot {
        Value::Number(buf) => {
            buf.clear();
            buf
        }
        _ => {
            *slot = Value::Number(String::new());
            match slot {
                Value::Number(buf) => buf,
                _ => return,
            }
        }
    };
    match x.as_f64().and_then(Decimal::shortest) {
        // `{:?}` always writes a fraction (`3.0`).
        Some(d) => d.write(buf, true),
        None => {
            let _ = write!(buf, "{x:?}");
        }
    }
}

/// Powers of ten that an `f64` holds exactly.
const POW10: [u128; 23] = {
    let mut p = [1u128; 23];
    let mut i = 1;
    while i < p.len() {
        p[i] = p[i - 1] * 10;
        i += 1;
    }
    p
};

/// The most fraction digits tried (the exact powers of ten of an `f64` go to 10^22).
const MAX_SCALE: usize = 22;

/// Integers below this are exact in an `f64`.
const EXACT_INT: u64 = 1 << 53;

/// An `f64` holds 10^22 exactly, and no higher power of ten.
const _: () = assert!(POW10[MAX_SCALE] == 10u128.pow(22));

/// `negative` `digits` × 10^-`scale`: a float's shortest decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decimal {
    negative: bool,
    digits: u64,
    scale: usize,
}

impl Decimal {
    /// The shortest decimal that reads back as `x` (the digits `{:?}` and `{}` write), found
    /// directly, for finite `x` with 10^-4 ≤ |x| < 2^53; `None` for other floats and for the
    /// rare ones it cannot settle quickly, which `fmt` then writes.
    ///
    /// The shortest decimal has the fewest fraction digits (in this range its integer part is
    /// fixed). For 0, 1, 2... fraction digits `k` it takes the two decimals with `k` digits
    /// around `x` (the floor and the ceiling of `x`·10^`k`, computed exactly in integers), and
    /// keeps the first `k` where one of them reads back as `x`, that is, lies within half a
    /// unit in the last place of `x` (exactly half counts when the mantissa of `x` is even:
    /// reading rounds ties to even). When both read back it gives up (`fmt` picks the closer).
    /// Exact powers of two are left to `fmt` too: the interval of decimals that read back as
    /// them is lopsided.
    pub(crate) fn shortest(x: f64) -> Option<Decimal> {
        let bits = x.to_bits();
        let negative = bits >> 63 == 1;
        let biased = ((bits >> 52) & 0x7ff) as i64;
        let fraction = bits & ((1 << 52) - 1);
        let abs = x.abs();
        if !(1e-4..EXACT_INT as f64).contains(&abs) || fraction == 0 {
            return None;
        }
        // abs = mantissa × 2^-shift exactly (a normal float in this range: shift is 1..=66;
        // an integer ≥ 2^52 has shift 0).
        let mantissa = fraction | (1 << 52);
        let shift = u32::try_from(1075 - biased).ok()?;
        if shift == 0 {
            return Some(Decimal {
                negative,
                digits: mantissa,
                scale: 0,
            });
        }
        let one = 1u128 << shift;
        let even = mantissa.is_multiple_of(2);
        for (scale, &pow) in POW10.iter().enumerate().take(MAX_SCALE + 1) {
            // abs × 10^scale = scaled / 2^shift = floor + rest / 2^shift.
            let scaled = u128::from(mantissa) * pow;
            let floor = scaled >> shift;
            if floor >= u128::from(EXACT_INT) {
                return None;
            }
            let rest = scaled & (one - 1);
            let floor = floor as u64;
            if rest == 0 {
                // abs × 10^scale is an integer: the decimal is exact.
                return Some(Decimal {
                    negative,
                    digits: floor,
                    scale,
                });
            }
            // A decimal d × 10^-scale reads back as abs when |d × 10^-scale - abs| is less than
            // half the float spacing 2^-shift (or equal, with an even mantissa); multiplied by
            // 2^(shift+1) × 10^scale: when 2 × (distance in units of 2^-shift) ≤ 10^scale.
            let within =
                |twice_distance: u128| twice_distance < pow || (even && twice_distance == pow);
            let ceil = floor + 1;
            match (
                within(2 * rest),
                ceil < EXACT_INT && within(2 * (one - rest)),
            ) {
                (true, false) => {
                    return Some(Decimal {
                        negative,
                        digits: floor,
                        scale,
                    })
                }
                (false, true) => {
                    return Some(Decimal {
                        negative,
                        digits: ceil,
                        scale,
                    })
                }
                (true, true) => return None,
                (false, false) => {}
            }
        }
        None
    }

    /// Writes the decimal as `{}` does (`412.5`, `3`), or as `{:?}` does when `fraction` is set
    /// (`3.0`).
    pub(crate) fn write(self, buf: &mut String, fraction: bool) {
        if self.negative {
            buf.push('-');
        }
        // The digits are below 2^53: a power of ten beyond u64 leaves no integer part.
        let (int, frac) = match POW10.get(self.scale).map(|&p| u64::try_from(p)) {
            Some(Ok(pow)) => (self.digits / pow, self.digits % pow),
            _ => (0, self.digits),
        };
        push_digits(buf, int, 1);
        if self.scale > 0 {
            buf.push('.');
            push_digits(buf, frac, self.scale);
        } else if fraction {
            buf.push_str(".0");
        }
    }
}

/// Pushes `n` in decimal, zero-padded to `width` digits.
fn push_digits(buf: &mut String, mut n: u64, width: usize) {
    let mut digits = [b'0'; 24];
    let mut at = digits.len();
    while n > 0 || digits.len() - at < width {
        at -= 1;
        if let Some(d) = digits.get_mut(at) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if at == 0 {
            break;
        }
    }
    for &d in digits.get(at..).unwrap_or_default() {
        buf.push(char::from(d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debug_text(x: f64) -> String {
        let mut slot = Value::Null;
        set_float(&mut slot, x);
        match slot {
            Value::Number(s) => s,
            other => panic!("{other:?}"),
        }
    }

    /// Checks the fast path against `{:?}` and `{}`; returns whether it took the fast path.
    fn check(x: f64) -> bool {
        if !x.is_finite() {
            return false;
        }
        assert_eq!(debug_text(x), format!("{x:?}"), "{:#x}", x.to_bits());
        match Decimal::shortest(x) {
            Some(d) => {
                let mut display = String::new();
                d.write(&mut display, false);
                assert_eq!(display, format!("{x}"), "{:#x}", x.to_bits());
                true
            }
            None => false,
        }
    }

    /// A deterministic generator (SplitMix64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    /// Floats read from decimals of every length, their neighbours, and random bit patterns
    /// in and around the fast range, against `fmt`.
    fn compare(cases: usize, seed: u64) {
        let mut rng = Rng(seed);
        let mut fast = 0;
        for _ in 0..cases {
            let digits = rng.next() % 10u64.pow(1 + (rng.next() % 17) as u32);
            let scale = (rng.next() % 20) as i32;
            let decimal: f64 = format!("{digits}e-{scale}").parse().unwrap_or(0.0);
            for x in [decimal, -decimal, decimal.next_up(), decimal.next_down()] {
                fast += usize::from(check(x));
            }
            let exponent = 1023 - 16 + rng.next() % 72;
            let random = f64::from_bits((exponent << 52) | (rng.next() >> 12));
            check(random);
            check(f64::from_bits(rng.next()));
        }
        assert!(fast > cases, "the fast path was taken {fast} times");
    }

    #[test]
    fn shortest_decimals_are_what_fmt_writes() {
        compare(100_000, 1);
    }

    /// The same over many more floats: `cargo test --release -p sources -- --ignored floats`.
    #[test]
    #[ignore]
    fn many_floats_are_written_as_fmt_writes_them() {
        compare(20_000_000, 2);
    }

    #[test]
    fn edges() {
        for x in [
            0.0,
            -0.0,
            1e-4,
            0.000_099_999,
            1e-5,
            0.1,
            0.2,
            0.3,
            0.1 + 0.2,
            1.0,
            2.0,
            3.0,
            0.5,
            412.5,
            13195.32,
            47.964,
            1e15,
            1e16,
            9_007_199_254_740_991.0,
            9_007_199_254_740_992.0,
            4_503_599_627_370_497.0,
            4_503_599_627_370_495.5,
            123_456_789.123_456_78,
            1e21,
            1e22,
            1e300,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
        ] {
            check(x);
            check(-x);
        }
        assert!(check(13195.32));
        assert!(check(3.0));
        assert!(!check(2.0), "a power of two goes through fmt");
        assert!(!check(1e-5), "below 1e-4 goes through fmt");
    }

    #[test]
    fn non_finite_and_f32() {
        let mut slot = Value::Null;
        set_float(&mut slot, f64::NAN);
        assert_eq!(
            slot,
            Value::Unsupported {
                kind: "non-finite number",
                text: "NaN".into()
            }
        );
        set_float(&mut slot, 0.1f32);
        assert_eq!(slot, Value::Number("0.1".into()));
        set_float(&mut slot, 412.5f64);
        assert_eq!(slot, Value::Number("412.5".into()));
    }
}
