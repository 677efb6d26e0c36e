//! Fuzz target: arbitrary bytes as `run/smtpd.stats`, the SMTP server's
//! counters as the scheduler reads them for /metrics. Nothing may panic,
//! and what parses must come back the same through its own text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skein_proto::SmtpdStats;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(stats) = SmtpdStats::parse(&text) {
        assert_eq!(SmtpdStats::parse(&stats.to_text()), Some(stats));
    }
});
