//! RFC 5322 date-time (`Sun, 29 Nov 2026 00:39:38 +0000`), for Date:,
//! Received: and DSN fields. Hand-written to keep a calendar crate out of
//! the tree; the arithmetic is the civil-from-days algorithm.

/// Formats `unix_secs` (seconds since the epoch) with a UTC offset of
/// `offset_secs` (e.g. 3600 for +0100).
pub fn rfc5322(unix_secs: i64, offset_secs: i32) -> String {
    let local = unix_secs + i64::from(offset_secs);
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    let sign = if offset_secs < 0 { '-' } else { '+' };
    let off = offset_secs.unsigned_abs() / 60;
    format!(
        "{weekday}, {d} {month} {y} {:02}:{:02}:{:02} {sign}{:02}{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        off / 60,
        off % 60
    )
}

/// The current time in the local time zone of the machine.
pub fn now_local() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    rfc5322(now, local_offset(now))
}

/// The machine's UTC offset at `unix_secs`, in seconds (0 if unknown).
pub fn local_offset(unix_secs: i64) -> i32 {
    let t = unix_secs as libc::time_t;
    // SAFETY: localtime_r writes into the zeroed struct we own.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            0
        } else {
            tm.tm_gmtoff as i32
        }
    }
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        for (secs, off, want) in [
            (0, 0, "Thu, 1 Jan 1970 00:00:00 +0000"),
            (1_796_000_378, 0, "Mon, 30 Nov 2026 00:59:38 +0000"),
            (951_782_400, 0, "Tue, 29 Feb 2000 00:00:00 +0000"),
            (1_796_000_378, -18_000, "Sun, 29 Nov 2026 19:59:38 -0500"),
            (1_796_000_378, 19_800, "Mon, 30 Nov 2026 06:29:38 +0530"),
            (4_102_444_800, 0, "Fri, 1 Jan 2100 00:00:00 +0000"),
        ] {
            assert_eq!(rfc5322(secs, off), want);
        }
    }
}
