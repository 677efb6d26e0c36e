//! Durations and byte sizes as operators write them: `"1h30m"`, `"50M"`.
//!
//! Both also accept a plain TOML integer (seconds, bytes), and both format
//! back to the shortest exact spelling, so that `Config::to_toml` output is
//! readable and parses back to the same value.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A value that could not be parsed; its `Display` is the whole message,
/// ready to follow `file:line: key:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError(pub(crate) String);

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ValueError {}

const SECOND: u64 = 1;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
const WEEK: u64 = 7 * DAY;

/// Largest unit first: `format_duration` relies on this order.
const DURATION_UNITS: [(char, u64); 5] = [
    ('w', WEEK),
    ('d', DAY),
    ('h', HOUR),
    ('m', MINUTE),
    ('s', SECOND),
];

fn duration_error(text: &str) -> ValueError {
    ValueError(format!(
        "invalid duration {text:?} (expected a number with s, m, h, d or w, e.g. \"30s\" or \"5d\")"
    ))
}

/// The error for a number without a unit: `expiry = 5` read as seconds
/// once meant five seconds to an operator who thought days.
pub(crate) fn unitless_duration_error(number: &str) -> ValueError {
    ValueError(format!(
        "a duration needs a unit: write \"{number}s\" for seconds (or \"{number}m\", \"{number}h\", \"{number}d\", \"{number}w\")"
    ))
}

/// Parses `"30s"`, `"5m"`, `"2h"`, `"5d"`, `"1w"` and combinations such as
/// `"1h30m"` or `"1d 12h"`. A bare number (`"90"`) is refused: which unit
/// it meant is a guess ([`unitless_duration_error`]); `"0"` alone is
/// accepted, since zero is zero in every unit.
///
/// Units are lower case only: `M` means mega in sizes, and a duration that
/// silently meant minutes when the operator thought months would be worse
/// than an error.
pub fn parse_duration(text: &str) -> Result<Duration, ValueError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(duration_error(text));
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit()) {
        if trimmed.bytes().all(|b| b == b'0') {
            return Ok(Duration::ZERO);
        }
        return Err(unitless_duration_error(trimmed));
    }
    let mut total: u64 = 0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(duration_error(text));
        }
        let number: u64 = rest[..digits].parse().map_err(|_| duration_error(text))?;
        rest = &rest[digits..];
        let unit = rest.chars().next().ok_or_else(|| duration_error(text))?;
        let scale = DURATION_UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, scale)| *scale)
            .ok_or_else(|| duration_error(text))?;
        total = number
            .checked_mul(scale)
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| ValueError(format!("duration {text:?} is too long")))?;
        rest = rest[unit.len_utf8()..].trim_start();
    }
    Ok(Duration::from_secs(total))
}

/// Formats a duration in the shortest exact form `parse_duration` accepts:
/// `"5d"`, `"1h30m"`, `"0s"`. Fractions of a second are dropped; no
/// configuration key holds any.
pub fn format_duration(duration: Duration) -> String {
    let mut secs = duration.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (name, scale) in DURATION_UNITS {
        if secs >= scale {
            out.push_str(&(secs / scale).to_string());
            out.push(name);
            secs %= scale;
        }
    }
    out
}

/// A number of bytes, written `"50M"`, `"10k"`, `"1G"` or as a plain
/// integer. Units are powers of 1024 and case-insensitive; a trailing `B`
/// is tolerated (`"50MB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

/// Largest unit first: `Display` relies on this order.
const SIZE_UNITS: [(char, u64); 3] = [('G', 1 << 30), ('M', 1 << 20), ('k', 1 << 10)];

fn size_error(text: &str) -> ValueError {
    ValueError(format!(
        "invalid size {text:?} (expected a number of bytes, optionally with k, M or G, e.g. \"10k\" or \"50M\")"
    ))
}

impl FromStr for ByteSize {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(size_error(text));
        }
        let number: u64 = trimmed[..digits].parse().map_err(|_| size_error(text))?;
        let mut suffix = trimmed[digits..].trim_start().to_ascii_lowercase();
        if suffix.ends_with('b') {
            suffix.pop();
        }
        let scale = match suffix.as_str() {
            "" => 1,
            "k" => 1 << 10,
            "m" => 1 << 20,
            "g" => 1 << 30,
            _ => return Err(size_error(text)),
        };
        number
            .checked_mul(scale)
            .map(ByteSize)
            .ok_or_else(|| ValueError(format!("size {text:?} is too large")))
    }
}

impl fmt::Display for ByteSize {
    /// The largest unit that divides the size exactly: `"50M"`, `"1536k"`,
    /// `"1000"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, scale) in SIZE_UNITS {
            if self.0 != 0 && self.0.is_multiple_of(scale) {
                return write!(f, "{}{name}", self.0 / scale);
            }
        }
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        let cases: &[(&str, u64)] = &[
            ("30s", 30),
            ("5m", 300),
            ("2h", 7200),
            ("5d", 5 * 86400),
            ("1w", 7 * 86400),
            ("1h30m", 5400),
            ("1d 12h", 86400 + 12 * 3600),
            ("0", 0),
            ("0s", 0),
            ("  4m  ", 240),
            ("1w1d1h1m1s", WEEK + DAY + HOUR + MINUTE + 1),
        ];
        for (text, secs) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(*secs)),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_durations_are_rejected() {
        for text in [
            "", " ", "5x", "s", "m5", "5M", "1.5h", "-5s", "5s5", "1h-", "5 s x", "5μs",
        ] {
            let err = parse_duration(text).expect_err(text);
            assert!(
                err.to_string().contains("invalid duration"),
                "{text}: {err}"
            );
        }
        for text in ["90", "5", " 300 "] {
            let err = parse_duration(text).expect_err(text);
            assert!(err.to_string().contains("needs a unit"), "{text}: {err}");
            assert!(
                err.to_string().contains(&format!("\"{}s\"", text.trim())),
                "{err}"
            );
        }
        let too_long = parse_duration("99999999999999999w").expect_err("overflow");
        assert!(too_long.to_string().contains("too long"), "{too_long}");
        assert!(parse_duration("99999999999999999999999").is_err());
    }

    #[test]
    fn durations_format_shortest_and_round_trip() {
        let cases: &[(u64, &str)] = &[
            (0, "0s"),
            (30, "30s"),
            (90, "1m30s"),
            (300, "5m"),
            (5400, "1h30m"),
            (5 * DAY, "5d"),
            (WEEK, "1w"),
            (WEEK + DAY + 1, "1w1d1s"),
        ];
        for (secs, text) in cases {
            let formatted = format_duration(Duration::from_secs(*secs));
            assert_eq!(formatted, *text);
            assert_eq!(parse_duration(&formatted), Ok(Duration::from_secs(*secs)));
        }
    }

    #[test]
    fn sizes_parse() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("1000", 1000),
            ("10k", 10 * 1024),
            ("10K", 10 * 1024),
            ("50M", 50 << 20),
            ("50m", 50 << 20),
            ("1G", 1 << 30),
            ("1g", 1 << 30),
            ("50MB", 50 << 20),
            ("64 kb", 64 << 10),
            (" 7 ", 7),
        ];
        for (text, bytes) in cases {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(*bytes)), "{text}");
        }
        for text in ["", "M", "5x", "1.5M", "-1", "5T", "5 M B x", "k10"] {
            let err = text.parse::<ByteSize>().expect_err(text);
            assert!(err.to_string().contains("invalid size"), "{text}: {err}");
        }
        assert!("99999999999999G".parse::<ByteSize>().is_err());
    }

    #[test]
    fn sizes_format_with_largest_exact_unit() {
        let cases: &[(u64, &str)] = &[
            (0, "0"),
            (1000, "1000"),
            (1024, "1k"),
            (1536 * 1024, "1536k"),
            (50 << 20, "50M"),
            (3 << 30, "3G"),
        ];
        for (bytes, text) in cases {
            assert_eq!(ByteSize(*bytes).to_string(), *text);
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(*bytes)));
        }
    }
}
