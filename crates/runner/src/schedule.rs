//! Activation schedules: a cron expression evaluated in an IANA time zone.
//!
//! Five fields (`minute hour day-of-month month weekday`, as crontab) or six, with seconds
//! first (`*/2 * * * * *`: every two seconds). Times are computed in the activation's time
//! zone, so `0 9 * * *` in `America/New_York` is 9:00 in New York all year round, across
//! daylight-saving changes.

use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// A parsed, time-zone aware schedule.
#[derive(Clone)]
pub struct Schedule {
    expression: String,
    timezone: Tz,
    cron: croner::Cron,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("expression", &self.expression)
            .field("timezone", &self.timezone.name())
            .finish()
    }
}

/// Why a schedule or time zone is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// Not 5 or 6 fields.
    #[error(
        "{expression:?} has {fields} field{}; a schedule has 5 (minute hour day-of-month month \
         weekday) or 6 (seconds first, e.g. \"*/30 * * * * *\")",
        if *fields == 1 { "" } else { "s" }
    )]
    FieldCount { expression: String, fields: usize },
    /// The cron parser refused it.
    #[error("{expression:?} is not a valid cron expression: {reason}")]
    Invalid { expression: String, reason: String },
    /// Not an IANA time zone name.
    #[error("{name:?} is not an IANA time zone (like \"UTC\" or \"America/New_York\")")]
    TimeZone { name: String },
}

impl Schedule {
    /// Parses a 5- or 6-field cron expression, to be evaluated in `timezone`.
    pub fn parse(expression: &str, timezone: Tz) -> Result<Schedule, ScheduleError> {
        let expression = expression.trim();
        let fields = expression.split_whitespace().count();
        if !(fields == 5 || fields == 6) {
            return Err(ScheduleError::FieldCount {
                expression: expression.to_owned(),
                fields,
            });
        }
        // croner reads an empty list item (`,` or `5,,10`) as matching nothing, then spends
        // seconds searching for a date that never comes (found by fuzzing the config).
        if let Some((i, field)) = expression
            .split_whitespace()
            .enumerate()
            .find(|(_, f)| f.split(',').any(str::is_empty))
        {
            return Err(ScheduleError::Invalid {
                expression: expression.to_owned(),
                reason: format!("field {} (`{field}`) has an empty list item", i + 1),
            });
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|e| ScheduleError::Invalid {
                expression: expression.to_owned(),
                reason: e.to_string(),
            })?;
        let schedule = Schedule {
            expression: expression.to_owned(),
            timezone,
            cron,
        };
        // A pattern that never matches (`0 0 31 2 *`) is a mistake worth naming now.
        if schedule.next_after(Utc::now()).is_none() {
            return Err(ScheduleError::Invalid {
                expression: expression.to_owned(),
                reason: "it never matches a date".to_owned(),
            });
        }
        Ok(schedule)
    }

    /// Parses an IANA time zone name (any case: `america/new_york` is `America/New_York`).
    pub fn parse_time_zone(name: &str) -> Result<Tz, ScheduleError> {
        let trimmed = name.trim();
        trimmed
            .parse::<Tz>()
            .or_else(|_| Tz::from_str_insensitive(trimmed))
            .map_err(|_| ScheduleError::TimeZone {
                name: name.to_owned(),
            })
    }

    /// The expression as written (trimmed).
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone the expression is evaluated in.
    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// Whether the expression has a seconds field.
    pub fn has_seconds(&self) -> bool {
        self.expression.split_whitespace().count() == 6
    }

    /// The first time strictly after `after` that the schedule matches, in UTC; `None` when
    /// it never matches again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // The parser keeps the fraction of a second it is given (12:00:01.7 would give
        // 12:00:02.7); occurrences are whole seconds, and the next whole-second occurrence
        // after the truncated time is also after `after`.
        let whole = DateTime::<Utc>::from_timestamp(after.timestamp(), 0).unwrap_or(after);
        let local = whole.with_timezone(&self.timezone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {

    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Regression (fuzzing, config target): `, */6 * * *` took 2 s to validate in a debug
    /// build (a libFuzzer timeout), croner searching for a date an empty minute list never
    /// matches. Empty list items are refused at once, naming the field.
    #[test]
    fn an_empty_list_item_is_refused_at_once() {
        for expression in [", */6 * * *", "0,,5 * * * *", "5, * * * *", "0 0 ,1 * *"] {
            let started = std::time::Instant::now();
            let err = Schedule::parse(expression, chrono_tz::UTC)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("has an empty list item"),
                "{expression}: {err}"
            );
            assert!(
                started.elapsed() < std::time::Duration::from_millis(100),
                "{expression}"
            );
        }
        assert!(Schedule::parse("0,30 */6 * * *", chrono_tz::UTC).is_ok());
    }
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn five_fields_in_utc() {
        let s = Schedule::parse("0 */6 * * *", Tz::UTC).unwrap();
        assert!(!s.has_seconds());
        assert_eq!(
            s.next_after(utc(2026, 1, 10, 7, 30, 0)),
            Some(utc(2026, 1, 10, 12, 0, 0))
        );
        // Strictly after: a due time is not due again.
        assert_eq!(
            s.next_after(utc(2026, 1, 10, 12, 0, 0)),
            Some(utc(2026, 1, 10, 18, 0, 0))
        );
    }

    #[test]
    fn six_fields_have_seconds_first() {
        let s = Schedule::parse("*/2 * * * * *", Tz::UTC).unwrap();
        assert!(s.has_seconds());
        assert_eq!(
            s.next_after(utc(2026, 1, 10, 7, 30, 1)),
            Some(utc(2026, 1, 10, 7, 30, 2))
        );
        assert_eq!(
            s.next_after(utc(2026, 1, 10, 7, 30, 2)),
            Some(utc(2026, 1, 10, 7, 30, 4))
        );
        // Occurrences fall on whole seconds, whatever the fraction of `after`.
        let t = utc(2026, 1, 10, 7, 30, 1) + chrono::Duration::milliseconds(686);
        assert_eq!(s.next_after(t), Some(utc(2026, 1, 10, 7, 30, 2)));
        let t = utc(2026, 1, 10, 7, 30, 2) + chrono::Duration::milliseconds(1);
        assert_eq!(s.next_after(t), Some(utc(2026, 1, 10, 7, 30, 4)));
        let m = Schedule::parse("* * * * *", Tz::UTC).unwrap();
        let t = utc(2026, 1, 10, 7, 30, 0) + chrono::Duration::milliseconds(1);
        assert_eq!(m.next_after(t), Some(utc(2026, 1, 10, 7, 31, 0)));
    }

    #[test]
    fn time_zones_follow_daylight_saving() {
        let ny = Schedule::parse_time_zone("america/new_york").unwrap();
        assert_eq!(ny, Tz::America__New_York);
        let s = Schedule::parse("0 9 * * *", ny).unwrap();
        // Winter: 9:00 EST is 14:00 UTC.
        assert_eq!(
            s.next_after(utc(2026, 3, 7, 15, 0, 0)),
            Some(utc(2026, 3, 8, 13, 0, 0)),
            "8 March 2026 is the first day of EDT: 9:00 is 13:00 UTC"
        );
        assert_eq!(
            s.next_after(utc(2026, 3, 6, 15, 0, 0)),
            Some(utc(2026, 3, 7, 14, 0, 0))
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_named() {
        let e = Schedule::parse("0 */6 * *", Tz::UTC).unwrap_err();
        assert!(
            matches!(e, ScheduleError::FieldCount { fields: 4, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("has 4 fields"), "{e}");
        let e = Schedule::parse("61 * * * *", Tz::UTC).unwrap_err();
        assert!(matches!(e, ScheduleError::Invalid { .. }), "{e}");
        let e = Schedule::parse("* * * * * * *", Tz::UTC).unwrap_err();
        assert!(
            matches!(e, ScheduleError::FieldCount { fields: 7, .. }),
            "{e}"
        );
        let e = Schedule::parse_time_zone("Mars/Olympus").unwrap_err();
        assert!(e.to_string().contains("\"Mars/Olympus\""), "{e}");
    }
}
