//! Wall-clock time as the spool records it: microseconds since the epoch.
//!
//! The journal stores times in these units, so retry times and expiry
//! survive a restart; the pure decisions in [`crate::policy`] take `now` as
//! an argument and never read a clock.

use std::time::Duration;

/// Microseconds since the epoch (0 if the clock is before it).
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// `now` plus `d`, in microseconds, saturating.
pub fn micros_after(now: u64, d: Duration) -> u64 {
    now.saturating_add(d.as_micros() as u64)
}
