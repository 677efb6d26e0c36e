//! RFC 3339 UTC timestamps, computed by hand.
//!
//! Pulling in a date crate for one `YYYY-MM-DDTHH:MM:SS.ffffffZ` string per
//! log line is not worth its weight; the civil-date conversion below is
//! Howard Hinnant's `civil_from_days`, exact for the proleptic Gregorian
//! calendar.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// How many fractional-second digits to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Precision {
    /// `.123`: enough for a human reading a terminal.
    Millis,
    /// `.123456`: what machine-read logs carry, to order events of one burst.
    Micros,
}

/// Appends `time` as an RFC 3339 UTC timestamp (`2026-11-29T00:00:00.123456Z`).
///
/// A clock set before 1970 prints as the epoch rather than failing: a log
/// line with a wrong time is more useful than no log line.
pub(crate) fn write_rfc3339(out: &mut String, time: SystemTime, precision: Precision) {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let second_of_day = secs % 86_400;
    let (hour, minute, second) = (
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
    );
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}"
    );
    let _ = match precision {
        Precision::Millis => write!(out, ".{:03}Z", since_epoch.subsec_millis()),
        Precision::Micros => write!(out, ".{:06}Z", since_epoch.subsec_micros()),
    };
}

/// Converts days since 1970-01-01 to `(year, month, day)`.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so that leap days fall at the end of a
    // "year" and every 400-year era has the same shape.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn formats_known_instants() {
        // Expected values from `date -u -d @N`.
        let cases = [
            (0, 0, Precision::Micros, "1970-01-01T00:00:00.000000Z"),
            (
                951_782_400,
                0,
                Precision::Micros,
                "2000-02-29T00:00:00.000000Z",
            ),
            (
                951_868_799,
                0,
                Precision::Micros,
                "2000-02-29T23:59:59.000000Z",
            ),
            (
                1_709_164_800,
                0,
                Precision::Micros,
                "2024-02-29T00:00:00.000000Z",
            ),
            (
                1_795_910_400,
                123_456_789,
                Precision::Micros,
                "2026-11-29T00:00:00.123456Z",
            ),
            (
                1_795_910_400,
                123_456_789,
                Precision::Millis,
                "2026-11-29T00:00:00.123Z",
            ),
            (
                1_234_567_890,
                999_999,
                Precision::Micros,
                "2009-02-13T23:31:30.000999Z",
            ),
            (
                4_102_444_799,
                0,
                Precision::Millis,
                "2099-12-31T23:59:59.000Z",
            ),
            (
                253_402_300_799,
                0,
                Precision::Millis,
                "9999-12-31T23:59:59.000Z",
            ),
        ];
        for (secs, nanos, precision, expected) in cases {
            let mut out = String::new();
            write_rfc3339(&mut out, at(secs, nanos), precision);
            assert_eq!(out, expected, "for {secs}.{nanos:09}");
        }
    }

    #[test]
    fn before_epoch_prints_epoch() {
        let mut out = String::new();
        write_rfc3339(
            &mut out,
            UNIX_EPOCH - Duration::from_secs(5),
            Precision::Millis,
        );
        assert_eq!(out, "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn every_day_boundary_round_trips_over_four_centuries() {
        // Walk day by day from 1970 through 2400 and check that the civil
        // date advances exactly as a calendar does.
        let days_in_month = |year: u64, month: u64| match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            _ if (year.is_multiple_of(4) && !year.is_multiple_of(100))
                || year.is_multiple_of(400) =>
            {
                29
            }
            _ => 28,
        };
        let (mut year, mut month, mut day) = (1970, 1, 1);
        for days in 0..157_000 {
            assert_eq!(civil_from_days(days), (year, month, day), "day {days}");
            day += 1;
            if day > days_in_month(year, month) {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
    }
}
