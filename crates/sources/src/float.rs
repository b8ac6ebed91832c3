//! Floats as model values, shared by the typed sources.

use std::fmt::{self, Write as _};

use sync_core::Value;

/// A float or double as [`Value::Number`] with its shortest round-trip text (`412.5`, `3.0`,
/// `1e-7`), reusing the slot's buffer; NaN and infinities are [`Value::Unsupported`].
pub(crate) fn set_float<F: fmt::Debug + fmt::Display + Into<f64> + Copy>(slot: &mut Value, x: F) {
    if !x.into().is_finite() {
        *slot = Value::Unsupported {
            kind: "non-finite number",
            text: x.to_string(),
        };
        return;
    }
    if let Value::Number(buf) = slot {
        buf.clear();
        let _ = write!(buf, "{x:?}");
    } else {
        *slot = Value::Number(format!("{x:?}"));
    }
}
