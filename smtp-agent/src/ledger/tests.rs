//! The ledger against scripted reply sequences: each row is a session —
//! the jobs it starts with, what the server sends, read by read — and
//! asserts what the agent writes after each read and every recipient's
//! outcome.

use std::collections::{BTreeMap, VecDeque};

use skein_proto::{BodyType, JobRecipient, Notify, ThreadKey};
use skein_smtp_codec::ReplyDecoder;

use super::*;

const REMOTE: &str = "mx.test[192.0.2.1]";

/// Every message of the table is this long.
const SIZE: u64 = 100;

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Neither PIPELINING nor CHUNKING.
    LockStep,
    /// PIPELINING, with DATA.
    Pipelining,
    /// PIPELINING and CHUNKING: BDAT.
    Chunking,
}

struct Case {
    name: &'static str,
    mode: Mode,
    window: u64,
    tls: Option<&'static str>,
    /// Queue QUIT once there is nothing left to do, as the agent does.
    quit: bool,
    /// One job per entry, recipients by local part (`a` is `a@x`); each
    /// job is one planned transaction.
    jobs: &'static [&'static [&'static str]],
    /// What the server sends, one read per entry (lines end with `\n`,
    /// sent as CRLF). `drop` closes the connection once everything
    /// written has arrived; `drop-short` one byte short of that.
    reads: &'static [&'static str],
    /// What the agent writes at the start and after each read it goes on
    /// after: commands without their CRLF, `<message N>` for job N's
    /// message as is (BDAT), `<message N>.` dot-stuffed and ended (DATA).
    sent: &'static [&'static str],
    /// Every recipient, in job order:
    /// `local status enhanced reply-code: diagnostic`.
    outcomes: &'static [&'static str],
    /// How the script left the session.
    end: &'static str,
}

const CASE: Case = Case {
    name: "",
    mode: Mode::Pipelining,
    window: 1 << 20,
    tls: None,
    quit: false,
    jobs: &[],
    reads: &[],
    sent: &[],
    outcomes: &[],
    end: "quiet",
};

fn table() -> Vec<Case> {
    vec![
        Case {
            name: "every reply positive",
            jobs: &[&["a", "b"]],
            reads: &["250 ok\n250 ok\n250 ok\n354 go\n", "250 2.0.0 queued\n"],
            sent: &[
                "MAIL FROM:<s@x>, RCPT TO:<a@x>, RCPT TO:<b@x>, DATA",
                "<message 1>.",
                "",
            ],
            outcomes: &[
                "a delivered 2.0.0 250: 250 2.0.0 queued",
                "b delivered 2.0.0 250: 250 2.0.0 queued",
            ],
            ..CASE
        },
        Case {
            name: "RCPT replies decide their recipients: 550 fails, 451 defers",
            jobs: &[&["a", "b", "c", "d"]],
            reads: &[
                "250 ok\n250 ok\n550 5.1.1 no such user\n451 4.7.1 greylisted\n250 ok\n354 go\n",
                "250 2.0.0 queued\n",
            ],
            sent: &[
                "MAIL FROM:<s@x>, RCPT TO:<a@x>, RCPT TO:<b@x>, RCPT TO:<c@x>, RCPT TO:<d@x>, DATA",
                "<message 1>.",
                "",
            ],
            outcomes: &[
                "a delivered 2.0.0 250: 250 2.0.0 queued",
                "b failed 5.1.1 550: 550 5.1.1 no such user",
                "c deferred 4.7.1 451: 451 4.7.1 greylisted",
                "d delivered 2.0.0 250: 250 2.0.0 queued",
            ],
            ..CASE
        },
        Case {
            name: "251 counts as accepted",
            jobs: &[&["a"]],
            reads: &[
                "250 ok\n251 2.1.5 will forward\n354 go\n",
                "250 2.0.0 queued\n",
            ],
            sent: &["MAIL FROM:<s@x>, RCPT TO:<a@x>, DATA", "<message 1>.", ""],
            outcomes: &["a delivered 2.0.0 250: 250 2.0.0 queued"],
            ..CASE
        },
        Case {
            name: "DATA: the next envelope follows the body, after the 354",
            jobs: &[&["a"], &["b"]],
            reads: &[
                "250 ok\n250 ok\n354 go\n",
                "250 2.0.0 queued\n250 ok\n250 ok\n354 go\n",
                "250 2.0.0 queued\n",
            ],
            sent: &[
                "MAIL FROM:<s@x>, RCPT TO:<a@x>, DATA",
                "<message 1>., MAIL FROM:<s@x>, RCPT TO:<b@x>, DATA",
                "<message 2>.",
                "",
            ],
            outcomes: &[
                "a delivered 2.0.0 250: 250 2.0.0 queued",
                "b delivered 2.0.0 250: 250 2.0.0 queued",
            ],
            ..CASE
        },
        Case {
            name: "452 mid-transaction: the refused go in a new transaction",
            jobs: &[&["a", "b", "c"]],
            reads: &[
                "250 ok\n250 ok\n452 4.5.3 too many recipients\n452 4.5.3 too many recipients\n354 go\n",
                "250 2.0.0 queued\n250 ok\n250 ok\n250 ok\n354 go\n",
                "250 2.0.0 queued\n",
            ],
            sent: &[
                "MAIL FROM:<s@x>, RCPT TO:<a@x>, RCPT TO:<b@x>, RCPT TO:<c@x>, DATA",
                "<message 1>., MAIL FROM:<s@x>, RCPT TO:<b@x>, RCPT TO:<c@x>, DATA",
                "<message 1>.",
                "",
            ],
            outcomes: &[
                "a delivered 2.0.0 250: 250 2.0.0 queued",
                "b delivered 2.0.0 250: 250 2.0.0 queued",
                "c delivered 2.0.0 250: 250 2.0.0 queued",
            ],
            ..CASE
        },
        Case {
            name: "452 to every RCPT: deferred, no message, RSET before the next",
            jobs: &[&["a", "b"], &["c"]],
            reads: &[
                "250 ok\n452 4.5.3 too many recipients\n452 4.5.3 too many recipients\n554 5.5.1 no valid recipients\n",
                "250 ok\n250 ok\n250 ok\n354 go\n",
                "250 2.0.0 queued\n",
            ],
            sent: &[
                "MAIL FROM:<s@x>, RCPT TO:<a@x>, RCPT TO:<b@x>, DATA",
                "RSET, MAIL FROM:<s@x>, RCPT TO:<c@x>, DATA",
                "<message 2>.",
                "",
            ],
            outcomes: &[
                "a deferred 4.5.3 452: 452 4.5.3 too many recipients",
                "b deferred 4.5.3 452: 452 4.5.3 too many recipients",
                "c delivered 2.0.0 250: 250 2.0.0 queued",
            ],
            ..CASE
        },
        Case {
            // Any 452 is "too many recipients" (RFC 5321 §4.5.3.1.10), a
            // full mailbox's 4.2.2 included: it is retried at once, and
            // deferred when it is the only one left.
            name: "452 4.2.2 (mailbox full) moves on like too many",
            jobs: &[&["a", "b"]],
            reads: &[
                "250 ok\n250 ok\n452 4.2.2 mailbox full\n354 go\n",
                "250 2.0.0 queued\n250 ok\n452 4.2.2 mailbox full\n554 5.5.1 no valid recipients\n",
            ],
            sent: &[
                "MAIL FROM:<s@x>, RCPT TO:<a@x>, RCPT TO:<b@x>, DATA",
                "<message 1>., MAIL FROM:<s@x>, RCPT TO:<b@x>, DATA",
                "",
            ],
            outcomes: &[
                "a delivered 2.0.0 250: 250 2.0.0 queued",
                "b deferred 4.2.2 452: 452 4.2.2 mailbox full",
            ],
            ..CASE
        },
        Case {
            name: "421 mid-pipeline defers everything unanswered",
            mode: Mode::Chunking,
            jobs: &[&["a", "b"], &["c"]],
            reads: &["250 ok\n250 ok\n421 4.3.2 shutting down\n"],
            sent: &[
                "MAIL FROM:<s@x>, RCPT TO:<a@x>, RCPT TO:<b@x>, BDAT 100 LAST, <message 1>, \
                 RSET, MAIL FROM:<s@x>, RCPT TO:<c@x>, BDAT 100 LAST, <message 2>",
            ],
            outcomes: &[
                "a deferred 4.3.2 421: the RCPT TO reply refused: 421 4.3.2 shutting down",
                "b deferred 4.3.2 421: the RCPT TO reply refused: 421 4.3.2 shutting down",
                "c deferred 4.3.2 421: the RCPT TO reply refused: 421 4.3.2 shutting down",
            ],
            // The first message was written whole, but the server said 421
            // before it: no duplicate is possible.
            end: "the RCPT TO reply refused: 421 4.3.2 shutting down; lost 2 in flight",
            ..CASE
        },
        Case {
            name: "421 as the reply to the end of data",
            jobs: &[&["a"]],
            reads: &["250 ok\n250 ok\n354 go\n", "421 4.3.2 shutting down\n"],
            sent: &["MAIL FROM:<s@x>, RCPT TO:<a@x>, DATA", "<message 1>."],
            outcomes: &[
                "a deferred 4.3.2 421: the reply to the end of data refused: 421 4.3.2 shutting down",
            ],
            end: "the reply to the end of data refused: 421 4.3.2 shutting down; lost 1 in flight",
            ..CASE
        },
        Case {
            // RFC 2920 §3.1: the data is ended at once and its reply
            // decides nothing, whatever it says.
            name: "354 after every RCPT was refused: an empty message, its reply ignored",
            jobs: &[&["a", "b"], &["c"]],
            reads: &[
                "250 ok\n550 5.1.1 no such user\n550 5.1.1 no such user\n354 go\n",
                "250 2.0.0 queued\n250 ok\n250 ok\n250 ok\n354 go\n",
                "250 2.0.0 queued\n",
            ],
            sent: &[
                "MAIL FROM:<s@x>, RCPT TO:<a@x>, RCPT TO:<b@x>, DATA",
                "., RSET, MAIL FROM:<s@x>, RCPT TO:<c@x>, DATA",
                "<message 2>.",
                "",
            ],
            outcomes: &[
                "a failed 5.1.1 550: 550 5.1.1 no such user",
                "b failed 5.1.1 550: 550 5.1.1 no such user",
                "c delivered 2.0.0 250: 250 2.0.0 queued",
            ],
            ..CASE
        },
        Case {
            name: "BDAT LAST refused 554",
            mode: Mode::Chunking,
            jobs: &[&["a", "b"]],
            reads: &["250 ok\n250 ok\n250 ok\n554 5.6.0 content refused\n"],
            sent: &[
                "MAIL FROM:<s@x>, RCPT TO:<a@x>, RCPT TO:<b@x>, BDAT 100 LAST, <message 1>",
                "",
            ],
            outcomes: &[
                "a failed 5.6.0 554: 554 5.6.0 content refused",
                "b failed 5.6.0 554: 554 5.6.0 content refused",
            ],
            ..CASE
        },
        Case {
            name: "DATA refused 451",
            jobs: &[&["a"]],
            reads: &["250 ok\n250 ok\n451 4.3.0 no data now\n"],
            sent: &["MAIL FROM:<s@x>, RCPT TO:<a@x>, DATA", ""],
            outcomes: &["a deferred 4.3.0 451: 451 4.3.0 no data now"],
            ..CASE
        },
        Case {
            name: "DATA answered 250 instead of 354",
            jobs: &[&["a"]],
            reads: &["250 ok\n250 ok\n250 ok\n"],
            sent: &["MAIL FROM:<s@x>, RCPT TO:<a@x>, DATA", ""],
            outcomes: &["a deferred 4.5.0 250: unexpected reply to DATA: 250 ok"],
            ..CASE
        },
        Case {
            name: "drop after the end of data was written: deferred, possible duplicate",
            jobs: &[&["a", "b"]],
            reads: &["250 ok\n250 ok\n250 ok\n354 go\n", "drop"],
            sent: &[
                "MAIL FROM:<s@x>, RCPT TO:<a@x>, RCPT TO:<b@x>, DATA",
                "<message 1>.",
            ],
            outcomes: &[
                "a deferred 4.4.2 -: lost connection: connection closed by the server after the end of data (the message may have been delivered; it will be sent again)",
                "b deferred 4.4.2 -: lost connection: connection closed by the server after the end of data (the message may have been delivered; it will be sent again)",
            ],
            end: "drop; lost 1 in flight; job 1 may be delivered twice to 2",
            ..CASE
        },
        Case {
            name: "drop before the end of data was all written: deferred",
            jobs: &[&["a", "b"]],
            reads: &["250 ok\n250 ok\n250 ok\n354 go\n", "drop-short"],
            sent: &[
                "MAIL FROM:<s@x>, RCPT TO:<a@x>, RCPT TO:<b@x>, DATA",
                "<message 1>.",
            ],
            outcomes: &[
                "a deferred 4.4.2 -: lost connection: connection closed by the server",
                "b deferred 4.4.2 -: lost connection: connection closed by the server",
            ],
            end: "drop; lost 1 in flight",
            ..CASE
        },
        Case {
            name: "MAIL refused 5xx: every recipient fails, the pipelined rest is ignored",
            jobs: &[&["a", "b"], &["c"]],
            reads: &[
                "550 5.7.1 sender refused\n503 5.5.1 need MAIL\n503 5.5.1 need MAIL\n503 5.5.1 need MAIL\n",
                "250 ok\n250 ok\n250 ok\n354 go\n",
                "250 2.0.0 queued\n",
            ],
            sent: &[
                "MAIL FROM:<s@x>, RCPT TO:<a@x>, RCPT TO:<b@x>, DATA",
                "RSET, MAIL FROM:<s@x>, RCPT TO:<c@x>, DATA",
                "<message 2>.",
                "",
            ],
            outcomes: &[
                "a failed 5.7.1 550: 550 5.7.1 sender refused",
                "b failed 5.7.1 550: 550 5.7.1 sender refused",
                "c delivered 2.0.0 250: 250 2.0.0 queued",
            ],
            ..CASE
        },
        Case {
            name: "MAIL refused 4xx in lock-step: nothing more is sent for it",
            mode: Mode::LockStep,
            jobs: &[&["a", "b"]],
            reads: &["451 4.3.0 try later\n"],
            sent: &["MAIL FROM:<s@x>", ""],
            outcomes: &[
                "a deferred 4.3.0 451: 451 4.3.0 try later",
                "b deferred 4.3.0 451: 451 4.3.0 try later",
            ],
            ..CASE
        },
        Case {
            name: "lock-step, every RCPT refused: no DATA, RSET before the next",
            mode: Mode::LockStep,
            jobs: &[&["a"], &["b"]],
            reads: &[
                "250 ok\n",
                "550 5.1.1 no such user\n",
                "250 ok\n",
                "250 ok\n",
                "250 ok\n",
                "354 go\n",
                "250 2.0.0 queued\n",
            ],
            sent: &[
                "MAIL FROM:<s@x>",
                "RCPT TO:<a@x>",
                "RSET",
                "MAIL FROM:<s@x>",
                "RCPT TO:<b@x>",
                "DATA",
                "<message 2>.",
                "",
            ],
            outcomes: &[
                "a failed 5.1.1 550: 550 5.1.1 no such user",
                "b delivered 2.0.0 250: 250 2.0.0 queued",
            ],
            ..CASE
        },
        Case {
            // The RSET only makes the server's state known; its reply
            // decides nothing, the MAIL reply after it does.
            name: "RSET refused: ignored, the MAIL reply decides",
            mode: Mode::Chunking,
            jobs: &[&["a"], &["b"]],
            reads: &[
                "250 ok\n250 ok\n250 2.0.0 queued\n500 5.5.1 no RSET\n250 ok\n250 ok\n250 2.0.0 queued\n",
            ],
            sent: &[
                "MAIL FROM:<s@x>, RCPT TO:<a@x>, BDAT 100 LAST, <message 1>, \
                 RSET, MAIL FROM:<s@x>, RCPT TO:<b@x>, BDAT 100 LAST, <message 2>",
                "",
            ],
            outcomes: &[
                "a delivered 2.0.0 250: 250 2.0.0 queued",
                "b delivered 2.0.0 250: 250 2.0.0 queued",
            ],
            ..CASE
        },
        Case {
            name: "three transactions in flight, the second's MAIL refused",
            mode: Mode::Chunking,
            jobs: &[&["a"], &["b"], &["c"]],
            reads: &["250 ok\n250 ok\n250 2.0.0 queued\n\
                 250 ok\n550 5.1.8 bad sender\n503 5.5.1 need MAIL\n503 5.5.1 need MAIL\n\
                 250 ok\n250 ok\n250 ok\n250 2.0.0 queued\n"],
            sent: &[
                "MAIL FROM:<s@x>, RCPT TO:<a@x>, BDAT 100 LAST, <message 1>, \
                 RSET, MAIL FROM:<s@x>, RCPT TO:<b@x>, BDAT 100 LAST, <message 2>, \
                 RSET, MAIL FROM:<s@x>, RCPT TO:<c@x>, BDAT 100 LAST, <message 3>",
                "",
            ],
            outcomes: &[
                "a delivered 2.0.0 250: 250 2.0.0 queued",
                "b failed 5.1.8 550: 550 5.1.8 bad sender",
                "c delivered 2.0.0 250: 250 2.0.0 queued",
            ],
            ..CASE
        },
        Case {
            name: "the window holds the next transaction back",
            mode: Mode::Chunking,
            window: 100,
            jobs: &[&["a"], &["b"]],
            reads: &[
                "250 ok\n250 ok\n250 2.0.0 queued\n",
                "250 ok\n250 ok\n250 ok\n250 2.0.0 queued\n",
            ],
            sent: &[
                "MAIL FROM:<s@x>, RCPT TO:<a@x>, BDAT 100 LAST, <message 1>",
                "RSET, MAIL FROM:<s@x>, RCPT TO:<b@x>, BDAT 100 LAST, <message 2>",
                "",
            ],
            outcomes: &[
                "a delivered 2.0.0 250: 250 2.0.0 queued",
                "b delivered 2.0.0 250: 250 2.0.0 queued",
            ],
            ..CASE
        },
        Case {
            name: "a reply beyond those awaited, mid-transaction: the session ends",
            mode: Mode::LockStep,
            jobs: &[&["a"]],
            reads: &["250 ok\n250 ok\n"],
            sent: &["MAIL FROM:<s@x>"],
            outcomes: &["a deferred 4.4.2 -: lost connection: reply without a command: 250 ok"],
            end: "lost connection: reply without a command: 250 ok; lost 1 in flight",
            ..CASE
        },
        Case {
            name: "a reply beyond those awaited, with nothing in flight",
            jobs: &[&["a"]],
            reads: &[
                "250 ok\n250 ok\n354 go\n",
                "250 2.0.0 queued\n250 2.0.0 more\n",
            ],
            sent: &["MAIL FROM:<s@x>, RCPT TO:<a@x>, DATA", "<message 1>."],
            outcomes: &["a delivered 2.0.0 250: 250 2.0.0 queued"],
            end: "lost connection: reply without a command: 250 2.0.0 more; idle",
            ..CASE
        },
        Case {
            name: "a delivery names the TLS session",
            mode: Mode::Chunking,
            tls: Some("TLSv1.3 TLS13_AES_128_GCM_SHA256"),
            jobs: &[&["a"]],
            reads: &["250 ok\n250 ok\n250 2.0.0 queued\n"],
            sent: &[
                "MAIL FROM:<s@x>, RCPT TO:<a@x>, BDAT 100 LAST, <message 1>",
                "",
            ],
            outcomes: &[
                "a delivered 2.0.0 250: 250 2.0.0 queued (TLSv1.3 TLS13_AES_128_GCM_SHA256)",
            ],
            ..CASE
        },
        Case {
            name: "a drop with nothing in flight is no failure",
            jobs: &[&["a"]],
            reads: &["250 ok\n250 ok\n354 go\n", "250 2.0.0 queued\n", "drop"],
            sent: &["MAIL FROM:<s@x>, RCPT TO:<a@x>, DATA", "<message 1>.", ""],
            outcomes: &["a delivered 2.0.0 250: 250 2.0.0 queued"],
            end: "drop; idle",
            ..CASE
        },
        Case {
            name: "421 to QUIT, then the drop: a clean end",
            quit: true,
            jobs: &[&["a"]],
            reads: &[
                "250 ok\n250 ok\n354 go\n",
                "250 2.0.0 queued\n",
                "421 4.3.2 closing\n",
                "drop",
            ],
            sent: &[
                "MAIL FROM:<s@x>, RCPT TO:<a@x>, DATA",
                "<message 1>.",
                "QUIT",
                "",
            ],
            outcomes: &["a delivered 2.0.0 250: 250 2.0.0 queued"],
            end: "drop; clean",
            ..CASE
        },
    ]
}

fn extensions(mode: Mode) -> Extensions {
    Extensions {
        pipelining: !matches!(mode, Mode::LockStep),
        chunking: matches!(mode, Mode::Chunking),
        ..Extensions::default()
    }
}

fn job(id: u64, rcpts: &[&str]) -> Job {
    Job {
        id: JobId(id),
        queue_id: format!("Q{id}"),
        thread: ThreadKey::new("smtp", "x"),
        nexthop: None,
        sender: "s@x".into(),
        envid: None,
        ret: None,
        body: BodyType::SevenBit,
        smtputf8: false,
        message_path: "/nonexistent".into(),
        message_offset: 0,
        size: SIZE,
        attempt: 0,
        recipients: rcpts
            .iter()
            .zip(0..)
            .map(|(local, index)| JobRecipient {
                index,
                address: format!("{local}@x"),
                orcpt: None,
                notify: Notify::default(),
            })
            .collect(),
    }
}

/// A session driven as the pipeline drives it: start what may start,
/// write what may be written, then take one read's replies.
struct Run {
    ledger: Ledger<JobId>,
    jobs: Vec<Job>,
    plans: VecDeque<(JobId, Vec<usize>)>,
    quit: bool,
    /// Bytes of the stream queued so far.
    queued: u64,
    sent: Vec<String>,
    outcomes: BTreeMap<(JobId, usize), Delivery>,
    warnings: Vec<String>,
}

impl Run {
    fn new(case: &Case) -> Run {
        let jobs: Vec<Job> = (1..)
            .zip(case.jobs)
            .map(|(id, rcpts)| job(id, rcpts))
            .collect();
        let plans = jobs
            .iter()
            .map(|j| (j.id, (0..j.recipients.len()).collect()))
            .collect();
        Run {
            ledger: Ledger::new(
                extensions(case.mode),
                REMOTE.into(),
                case.tls.map(str::to_owned),
                case.window,
            ),
            jobs,
            plans,
            quit: case.quit,
            queued: 0,
            sent: Vec::new(),
            outcomes: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    fn turn(&mut self) {
        let mut items = Vec::new();
        loop {
            while self.ledger.may_start() {
                let Some((id, rcpts)) = self.plans.pop_front() else {
                    break;
                };
                let job = &self.jobs[(id.0 - 1) as usize];
                self.ledger.start(job, &rcpts, id).expect("renders");
            }
            while let Some(write) = self.ledger.next_write() {
                match write {
                    Write::Command(bytes) => {
                        self.queued += bytes.len() as u64;
                        let line = String::from_utf8(bytes).expect("ascii");
                        let line = line.strip_suffix("\r\n").expect("CRLF");
                        items.push(line.to_owned());
                    }
                    Write::Body {
                        txn,
                        body,
                        size,
                        dot_stuffed,
                    } => {
                        assert_eq!(size, SIZE);
                        // The test messages need no stuffing: 3 for ".\r\n".
                        self.queued += size + if dot_stuffed { 3 } else { 0 };
                        let dot = if dot_stuffed { "." } else { "" };
                        items.push(format!("<message {}>{dot}", body.0));
                        self.ledger.body_written(txn, self.queued);
                    }
                }
            }
            if self.quit
                && self.plans.is_empty()
                && self.ledger.is_quiet()
                && !self.ledger.quitting()
            {
                self.ledger.quit();
                continue;
            }
            break;
        }
        self.sent.push(items.join(", "));
    }

    fn apply(&mut self, decisions: Vec<Decision>) {
        for decision in decisions {
            match decision {
                Decision::Outcome {
                    job,
                    rcpt,
                    delivery,
                } => {
                    assert_eq!(delivery.remote_mta.as_deref(), Some(REMOTE));
                    if let Some(first) = self.outcomes.insert((job, rcpt), delivery) {
                        panic!("second outcome for {job} #{rcpt}; the first: {first:?}");
                    }
                }
                Decision::Retry { job, rcpts } => self.plans.push_front((job, rcpts)),
                Decision::MaybeDuplicate { job, recipients } => self.warnings.push(format!(
                    "job {} may be delivered twice to {recipients}",
                    job.0
                )),
            }
        }
    }

    fn lost(&mut self, why: String, failure: Delivery, written: u64) -> String {
        let loss = match self.ledger.lost(failure, written) {
            Loss::Clean => "clean".to_owned(),
            Loss::Idle => "idle".to_owned(),
            Loss::InFlight {
                transactions,
                decisions,
            } => {
                self.apply(decisions);
                format!("lost {transactions} in flight")
            }
        };
        let mut end = vec![why, loss];
        end.append(&mut self.warnings);
        end.join("; ")
    }

    /// Plays the reads; returns how the session ended.
    fn play(&mut self, reads: &[&str]) -> String {
        self.turn();
        for read in reads {
            if let Some(short) = read.strip_prefix("drop") {
                let written = if short.is_empty() {
                    self.queued
                } else {
                    self.queued - 1
                };
                let error = SmtpError::Lost {
                    detail: "connection closed by the server".into(),
                };
                return self.lost("drop".into(), error.delivery(), written);
            }
            let mut decoder = ReplyDecoder::new();
            decoder.push(read.replace('\n', "\r\n").as_bytes());
            while let Some(reply) = decoder.next_reply().expect("a valid reply") {
                match self.ledger.on_reply(reply) {
                    Ok(decisions) => self.apply(decisions),
                    Err(error) => {
                        let queued = self.queued;
                        return self.lost(error.to_string(), error.delivery(), queued);
                    }
                }
            }
            assert_eq!(decoder.buffered(), 0, "a whole reply: {read:?}");
            self.turn();
        }
        match self.ledger.awaiting() {
            None if self.ledger.is_quiet() => "quiet".into(),
            None => "writing".into(),
            Some(awaited) => format!("awaiting {}", awaited.describe()),
        }
    }

    fn outcomes(&self) -> Vec<String> {
        let mut all = Vec::new();
        for job in &self.jobs {
            for (pos, r) in job.recipients.iter().enumerate() {
                let local = r.address.trim_end_matches("@x");
                let Some(d) = self.outcomes.get(&(job.id, pos)) else {
                    all.push(format!("{local} undecided"));
                    continue;
                };
                let status = match d.status {
                    Status::Delivered => "delivered",
                    Status::Deferred { .. } => "deferred",
                    Status::Failed => "failed",
                };
                let code = d.reply.as_ref().map_or("-".into(), |r| r.code.to_string());
                all.push(format!(
                    "{local} {status} {} {code}: {}",
                    d.enhanced, d.diagnostic
                ));
            }
        }
        all
    }
}

#[test]
fn reply_sequences() {
    let mut failures = Vec::new();
    for case in table() {
        let mut run = Run::new(&case);
        let end = run.play(case.reads);
        let outcomes = run.outcomes();
        if run.sent != case.sent || outcomes != case.outcomes || end != case.end {
            failures.push(format!(
                "{} ({:?}):\n  sent     {:#?}\n  outcomes {:#?}\n  end      {end:?}",
                case.name, case.mode, run.sent, outcomes
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
