//! Messages between the scheduler and a transport agent, after the
//! handshake.
//!
//! The conversation, from the agent's side: say [`AgentToScheduler::Want`]
//! for as many jobs as it is willing to hold (overfeed), receive
//! [`SchedulerToAgent::Job`]s, report one [`Outcome`] per recipient, then
//! [`AgentToScheduler::JobDone`] per job; say [`AgentToScheduler::Idle`]
//! when it has nothing left; exit after [`SchedulerToAgent::Shutdown`] once
//! everything it holds has been reported. Whatever is unreported when an
//! agent exits, hangs or sends garbage is deferred by the scheduler.

use serde::{Deserialize, Serialize};
use skein_mail::{BodyType, EnhancedCode, Notify, Ret};

use crate::envelope::{JobId, ThreadKey};
use crate::reply::SmtpReply;

/// One message's worth of recipients for one thread, handed to one agent.
///
/// Layout: the fields in declaration order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The scheduler's number for this job; outcomes refer to it.
    pub id: JobId,
    /// The spool's name of the message, for logs.
    pub queue_id: String,
    /// The thread the recipients belong to.
    pub thread: ThreadKey,
    /// A static next hop `host:port` from a route: the agent connects there
    /// and does no MX lookup. `None`: resolve `thread.host` as usual.
    pub nexthop: Option<String>,
    /// The reverse-path (`MAIL FROM`); `""` is the null reverse-path `<>`.
    pub sender: String,
    /// DSN `ENVID`, passed on unchanged.
    pub envid: Option<String>,
    /// DSN `RET`, passed on unchanged.
    pub ret: Option<Ret>,
    /// The body type to announce.
    pub body: BodyType,
    /// Whether the message needs `SMTPUTF8`.
    pub smtputf8: bool,
    /// Absolute path of the spool file holding the message. The agent only
    /// reads it.
    pub message_path: String,
    /// Byte offset in that file where the RFC 5322 message starts.
    pub message_offset: u64,
    /// Length of the message in bytes, from `message_offset`.
    pub size: u64,
    /// How many times these recipients have been tried before (0 on the
    /// first attempt), for logs and `Received`-loop heuristics.
    pub attempt: u32,
    /// The recipients; never empty.
    pub recipients: Vec<JobRecipient>,
}

/// One recipient of a [`Job`].
///
/// Layout: the fields in declaration order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecipient {
    /// The recipient's index in the message's control file: the key its
    /// [`Outcome`] is reported under.
    pub index: u32,
    /// The forward-path (`RCPT TO`), without angle brackets.
    pub address: String,
    /// DSN `ORCPT`, as received (`rfc822;user@example.org`).
    pub orcpt: Option<String>,
    /// DSN `NOTIFY`.
    pub notify: Notify,
}

/// What became of one recipient.
///
/// Layout: variant index `0` = `Delivered`, `1` = `Deferred` followed by
/// its `Option<u64>`, `2` = `Failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// The remote side (or the mailbox) has taken responsibility. Never
    /// reported before that moment: a crash must repeat a delivery rather
    /// than lose one.
    Delivered,
    /// Try again later. `retry_after_secs` is a hint from the agent (e.g.
    /// the remote asked for it); the scheduler's retry schedule applies
    /// when `None`, and it may apply its own bounds either way.
    Deferred {
        /// Suggested delay before the next attempt, in seconds.
        retry_after_secs: Option<u64>,
    },
    /// Permanent failure: the scheduler will bounce the recipient.
    Failed,
}

/// The final word of an attempt on one recipient of one job.
///
/// Layout: the fields in declaration order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The job the recipient was handed in.
    pub job: JobId,
    /// The recipient's [`JobRecipient::index`].
    pub recipient: u32,
    /// Delivered, deferred or failed.
    pub status: Status,
    /// The remote reply that decided it, if there was one (none for a
    /// connection failure or a local delivery).
    pub reply: Option<SmtpReply>,
    /// Always present: an agent must classify every outcome, even one with
    /// no reply. Its class should agree with `status` (2 delivered,
    /// 4 deferred, 5 failed); DSNs use it as the `Status:` field.
    pub enhanced: EnhancedCode,
    /// Human-readable detail for logs and the DSN `Diagnostic-Code`, e.g.
    /// `"connect to mx.example.org[192.0.2.1]:25: connection refused"`.
    pub diagnostic: String,
    /// The server that gave the reply, `name[address]:port`
    /// (`mx.example.org[192.0.2.1]:25`): the log's `relay=`, and, its name
    /// alone ([`remote_host`]), the DSN's `Remote-MTA`. `None` when no
    /// server answered (a connection failure, a local delivery).
    pub remote_mta: Option<String>,
    /// Microseconds the agent spent setting up the connection this
    /// recipient went over (DNS, TCP, greeting, EHLO, STARTTLS) — 0 on a
    /// connection it already had, and for a delivery without one (a
    /// Maildir). The delivery log's `delays=` third figure (Postfix's
    /// "connection set-up"); the scheduler counts the rest of the agent's
    /// time as transmission. For a connection that failed, the time the
    /// attempt took.
    pub connect_micros: u64,
    /// (Version 2.) The TLS session of that connection, told once: on the
    /// outcomes of the first job over a new connection, `Some(true)` when
    /// STARTTLS succeeded, `Some(false)` when the TLS handshake or the
    /// certificate check failed (the attempt's outcomes then carry it,
    /// for its first job only). `None` otherwise: a reused or plaintext
    /// connection, a delivery without one. The scheduler counts outbound
    /// TLS sessions from it (`skein_outbound_tls_sessions_total`).
    pub tls: Option<bool>,
}

/// Messages from the scheduler to an agent.
///
/// Layout: variant index `0` = `Job` followed by the [`Job`],
/// `1` = `Shutdown`, `2` = `Cancel` followed by its `JobId`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every message is a Job: boxing would add an allocation per job and save nothing"
)]
pub enum SchedulerToAgent {
    /// A job to deliver. Sent only after the agent asked with `Want`.
    Job(Job),
    /// Finish what you hold, report it, then exit. No more jobs will come.
    Shutdown,
    /// An administrator deleted or held the message: drop the job if its
    /// delivery has not started; otherwise finish or abort it as is safe
    /// and report each unfinished recipient as deferred. Either way, the
    /// job ends with `JobDone` (outcomes already sent stand).
    Cancel {
        /// The job to cancel.
        job: JobId,
    },
}

/// Messages from an agent to the scheduler.
///
/// Layout: variant index `0` = `Want`, `1` = `Outcome`, `2` = `JobDone`,
/// `3` = `Idle`, `4` = `Damaged`, each followed by its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentToScheduler {
    /// Ask for up to this many more jobs (overfeed). Credits add up; the
    /// scheduler never sends more jobs than were asked for.
    Want {
        /// Number of additional jobs the agent can take.
        jobs: u32,
    },
    /// The outcome of one recipient. Exactly one per recipient of a job.
    Outcome(Outcome),
    /// Every recipient of the job has been reported; the scheduler forgets
    /// the job. Unreported recipients of a job at `JobDone` are deferred.
    JobDone {
        /// The finished job.
        job: JobId,
    },
    /// The agent holds no job. `connected_to` names the host it still has a
    /// connection to (if any), so the scheduler can prefer handing it a
    /// thread to that host.
    Idle {
        /// The host of the connection the agent keeps open, if any.
        connected_to: Option<String>,
    },
    /// The job's message file failed its checks (format, size, checksum:
    /// `skein_spool::open_verified`) before a byte of it was sent, so the
    /// agent sent nothing. This ends the job like `JobDone`: its
    /// recipients not yet reported are left to the scheduler, which checks
    /// the file itself and, if it agrees, sets the message aside in
    /// `corrupt/` and tells the sender (docs/spool.md, "What is checked
    /// where"). An unreadable file (an I/O error) is not damage: report
    /// the recipients deferred instead.
    Damaged {
        /// The job whose message is damaged.
        job: JobId,
        /// What the check found, for the log.
        reason: String,
    },
}

/// The host name in an [`Outcome::remote_mta`]: `mx.example.org` for
/// `mx.example.org[192.0.2.1]:25`. RFC 3464 §2.3.5 wants a host name in
/// `Remote-MTA: dns; …`, not an address and port. A value without the
/// bracket (an agent's own form) is taken whole.
pub fn remote_host(remote_mta: &str) -> &str {
    match remote_mta.find('[') {
        Some(0) | None => remote_mta,
        Some(at) => &remote_mta[..at],
    }
}

#[cfg(test)]
mod remote_host_tests {
    use super::remote_host;

    #[test]
    fn the_name_before_the_address_and_port() {
        for (given, want) in [
            ("mx.example.org[192.0.2.1]:25", "mx.example.org"),
            ("127.0.0.1[127.0.0.1]:47225", "127.0.0.1"),
            ("mx.example.org[2001:db8::1]:587", "mx.example.org"),
            ("mx.example.org", "mx.example.org"),
            ("[192.0.2.1]:25", "[192.0.2.1]:25"),
        ] {
            assert_eq!(remote_host(given), want, "{given}");
        }
    }
}
