//! The SMTP server's counters, as it publishes them for the scheduler's
//! metrics endpoint: `<spool>/run/smtpd.stats`, a few `name value` lines,
//! rewritten whole (temporary file, then rename) at most once a second
//! while something changes. The scheduler reads it at each scrape; a file
//! whose writer no longer holds `run/smtpd.pid` is stale and ignored.
//!
//! Counters count from the smtpd's start (a restart resets them, which
//! Prometheus's `rate()` understands); `connections_open` is a gauge.

use std::fmt::Write;

/// What `skein-smtpd` counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmtpdStats {
    /// Sessions open now.
    pub connections_open: u64,
    /// Connections admitted since start.
    pub connections_total: u64,
    /// Connections refused at the door (limits, rate, stress).
    pub connections_refused_total: u64,
    /// Messages accepted (on stable storage, 250 sent).
    pub messages_total: u64,
    /// Bytes of the messages accepted.
    pub message_bytes_total: u64,
    /// STARTTLS handshakes that succeeded.
    pub tls_ok_total: u64,
    /// STARTTLS handshakes that failed or timed out.
    pub tls_failed_total: u64,
    /// Content filters' verdicts: transactions refused at MAIL and
    /// messages refused at their end.
    pub milter_refused_total: u64,
    /// Recipients a content filter refused at RCPT.
    pub milter_rcpt_refused_total: u64,
    /// Messages a content filter discarded.
    pub milter_discarded_total: u64,
    /// Messages a content filter quarantined (queued held).
    pub milter_quarantined_total: u64,
    /// Content filters that failed (unreachable, timed out, closed, broke
    /// the protocol), each time their default action applied.
    pub milter_failures_total: u64,
}

impl SmtpdStats {
    /// Each field as `(name, value)`, in declaration order.
    pub fn fields(&self) -> [(&'static str, u64); 12] {
        [
            ("connections_open", self.connections_open),
            ("connections_total", self.connections_total),
            ("connections_refused_total", self.connections_refused_total),
            ("messages_total", self.messages_total),
            ("message_bytes_total", self.message_bytes_total),
            ("tls_ok_total", self.tls_ok_total),
            ("tls_failed_total", self.tls_failed_total),
            ("milter_refused_total", self.milter_refused_total),
            ("milter_rcpt_refused_total", self.milter_rcpt_refused_total),
            ("milter_discarded_total", self.milter_discarded_total),
            ("milter_quarantined_total", self.milter_quarantined_total),
            ("milter_failures_total", self.milter_failures_total),
        ]
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for (name, value) in self.fields() {
            let _ = writeln!(text, "{name} {value}");
        }
        text
    }

    /// Reads the file's text back. Unknown names are skipped (a newer
    /// writer); a line that is not `name number` makes the whole `None`,
    /// as does a missing field of the first seven (the `milter_*` ones
    /// came later: an older writer's file lacks them, and they read 0).
    pub fn parse(text: &str) -> Option<SmtpdStats> {
        let mut stats = SmtpdStats::default();
        let mut seen = 0u16;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (name, value) = line.split_once(' ')?;
            let value: u64 = value.trim().parse().ok()?;
            let (slot, bit) = match name {
                "connections_open" => (&mut stats.connections_open, 0),
                "connections_total" => (&mut stats.connections_total, 1),
                "connections_refused_total" => (&mut stats.connections_refused_total, 2),
                "messages_total" => (&mut stats.messages_total, 3),
                "message_bytes_total" => (&mut stats.message_bytes_total, 4),
                "tls_ok_total" => (&mut stats.tls_ok_total, 5),
                "tls_failed_total" => (&mut stats.tls_failed_total, 6),
                "milter_refused_total" => (&mut stats.milter_refused_total, 7),
                "milter_rcpt_refused_total" => (&mut stats.milter_rcpt_refused_total, 8),
                "milter_discarded_total" => (&mut stats.milter_discarded_total, 9),
                "milter_quarantined_total" => (&mut stats.milter_quarantined_total, 10),
                "milter_failures_total" => (&mut stats.milter_failures_total, 11),
                _ => continue,
            };
            *slot = value;
            seen |= 1 << bit;
        }
        (seen & 0x7f == 0x7f).then_some(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_round_trips_and_damage_is_refused() {
        let stats = SmtpdStats {
            connections_open: 3,
            connections_total: 10,
            connections_refused_total: 1,
            messages_total: 7,
            message_bytes_total: 7000,
            tls_ok_total: 2,
            tls_failed_total: 1,
            milter_refused_total: 5,
            milter_rcpt_refused_total: 6,
            milter_discarded_total: 7,
            milter_quarantined_total: 8,
            milter_failures_total: 9,
        };
        assert_eq!(SmtpdStats::parse(&stats.to_text()), Some(stats));
        // An older writer's file, without the milter counters: they read 0.
        let older: String = stats
            .to_text()
            .lines()
            .filter(|l| !l.starts_with("milter_"))
            .map(|l| format!("{l}\n"))
            .collect();
        let parsed = SmtpdStats::parse(&older).expect("an older file reads");
        assert_eq!(parsed.milter_failures_total, 0);
        assert_eq!(parsed.messages_total, 7);
        let newer = format!("{}auth_ok_total 4\n", stats.to_text());
        assert_eq!(
            SmtpdStats::parse(&newer),
            Some(stats),
            "unknown names skipped"
        );
        let table = [
            ("", None),
            ("connections_open 3\n", None),
            (&*stats.to_text().replace("7000", "lots"), None),
            (
                &*stats
                    .to_text()
                    .replace("messages_total 7", "messages_total"),
                None,
            ),
        ];
        for (text, want) in table {
            assert_eq!(SmtpdStats::parse(text), want, "{text:?}");
        }
    }
}
