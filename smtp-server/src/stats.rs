//! The server's counters ([`Stats`]), shared by every generation of
//! settings a reload makes, and their publication to
//! `run/smtpd.stats` for the scheduler's metrics endpoint
//! ([`publish`]; the format is `skein_proto::SmtpdStats`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use skein_daemon::Shutdown;
use skein_proto::SmtpdStats;

use crate::Gate;

/// How often the file is brought up to date (when something changed).
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// Counters since the start. Relaxed atomics: each is a tally, read as a
/// whole only for the file.
#[derive(Debug, Default)]
pub struct Stats {
    connections_total: AtomicU64,
    connections_refused_total: AtomicU64,
    messages_total: AtomicU64,
    message_bytes_total: AtomicU64,
    tls_ok_total: AtomicU64,
    tls_failed_total: AtomicU64,
    milter_refused_total: AtomicU64,
    milter_rcpt_refused_total: AtomicU64,
    milter_discarded_total: AtomicU64,
    milter_quarantined_total: AtomicU64,
    milter_failures_total: AtomicU64,
}

/// A content filter's verdict, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MilterVerdict {
    /// A transaction (at MAIL) or a message (at its end) refused.
    Refused,
    /// A recipient refused at RCPT.
    RcptRefused,
    /// A message discarded.
    Discarded,
    /// A message quarantined.
    Quarantined,
}

impl Stats {
    /// A connection was let in.
    pub fn connection(&self) {
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was turned away at the door.
    pub fn refused(&self) {
        self.connections_refused_total
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A message of `bytes` was accepted.
    pub fn message(&self, bytes: u64) {
        self.messages_total.fetch_add(1, Ordering::Relaxed);
        self.message_bytes_total.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A STARTTLS handshake ended.
    pub fn tls(&self, ok: bool) {
        let counter = if ok {
            &self.tls_ok_total
        } else {
            &self.tls_failed_total
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A content filter's verdict.
    pub fn milter(&self, verdict: MilterVerdict) {
        let counter = match verdict {
            MilterVerdict::Refused => &self.milter_refused_total,
            MilterVerdict::RcptRefused => &self.milter_rcpt_refused_total,
            MilterVerdict::Discarded => &self.milter_discarded_total,
            MilterVerdict::Quarantined => &self.milter_quarantined_total,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Content filters failed `n` times (their default action applied).
    pub fn milter_failures(&self, n: u64) {
        if n > 0 {
            self.milter_failures_total.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The counters now, with `open` sessions.
    pub fn snapshot(&self, open: usize) -> SmtpdStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SmtpdStats {
            connections_open: open as u64,
            connections_total: get(&self.connections_total),
            connections_refused_total: get(&self.connections_refused_total),
            messages_total: get(&self.messages_total),
            message_bytes_total: get(&self.message_bytes_total),
            tls_ok_total: get(&self.tls_ok_total),
            tls_failed_total: get(&self.tls_failed_total),
            milter_refused_total: get(&self.milter_refused_total),
            milter_rcpt_refused_total: get(&self.milter_rcpt_refused_total),
            milter_discarded_total: get(&self.milter_discarded_total),
            milter_quarantined_total: get(&self.milter_quarantined_total),
            milter_failures_total: get(&self.milter_failures_total),
        }
    }
}

/// Writes `path` (temporary file, then rename) at once and then every
/// [`PUBLISH_INTERVAL`] in which something changed, until the stop
/// request; then removes it. A write that fails is logged once, and
/// tried again at the next change.
pub async fn publish(stats: Arc<Stats>, gate: Arc<Gate>, path: PathBuf, shutdown: Shutdown) {
    let mut written: Option<SmtpdStats> = None;
    let mut failing = false;
    loop {
        let now = stats.snapshot(gate.open());
        if written != Some(now) {
            let tmp = path.with_extension("stats.tmp");
            let result =
                write_file(&tmp, &now.to_text()).and_then(|()| std::fs::rename(&tmp, &path));
            match result {
                Ok(()) => {
                    written = Some(now);
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(file = %path.display(), error = %e, "cannot write the counters for the metrics endpoint");
                    }
                    failing = true;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(PUBLISH_INTERVAL) => {}
            () = shutdown.wait() => break,
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// `text` into a new `path`, mode 0640 (the skein group: the scheduler).
fn write_file(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(path)?
        .write_all(text.as_bytes())
}
