//! The accounting of a pipelined session, without I/O: the commands to
//! write and in what order, the reply each written command awaits, and
//! what every reply decides for every recipient.
//!
//! The [`Ledger`] is fed the transactions to start, the server's replies
//! and the end of the connection; it answers with what to write next
//! ([`Write`]) and with [`Decision`]s: each recipient's outcome, the
//! recipients to retry in a new transaction, the warning that a message
//! may be delivered twice. It reads no socket, no file and no clock: the
//! message body is an opaque `B` it hands back when the body's turn
//! comes, and the byte offsets it compares are the ones the writer counts.
//!
//! Every command written leaves an expectation in a queue; each reply pops
//! the oldest one and is applied to its transaction. A transaction ends
//! when all its replies are in. Whatever is unanswered when the connection
//! breaks is deferred, and a transaction whose end of data had been
//! written is reported as a possible duplicate.

use std::collections::{BTreeMap, VecDeque};

use skein_agent::Delivery;
use skein_proto::{EnhancedCode, Job, JobId, Status};
use skein_smtp_codec::{Command, Extensions, Reply};

use crate::envelope;
use crate::error::SmtpError;

/// A transaction, numbered in the order it was started on its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxnId(u64);

/// The command a reply is awaited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaited {
    /// `RSET` before a transaction.
    Rset,
    /// `MAIL FROM`.
    Mail,
    /// `RCPT TO` for this recipient (its position in the job).
    Rcpt(usize),
    /// `DATA`: the 354.
    Data,
    /// The reply after the final dot; `ignore` when nobody's outcome
    /// depends on it (a 354 came although every RCPT was refused).
    DataEnd {
        /// Whether the reply decides nothing.
        ignore: bool,
    },
    /// `BDAT n LAST`, whose reply comes after its chunk.
    Bdat,
    /// `QUIT`.
    Quit,
}

impl Awaited {
    /// For logs and for "timed out waiting for …".
    pub fn describe(self) -> &'static str {
        match self {
            Awaited::Rset => "the RSET reply",
            Awaited::Mail => "the MAIL FROM reply",
            Awaited::Rcpt(_) => "the RCPT TO reply",
            Awaited::Data => "the DATA reply",
            Awaited::DataEnd { .. } => "the reply to the end of data",
            Awaited::Bdat => "the BDAT reply",
            Awaited::Quit => "the QUIT reply",
        }
    }
}

/// What to write next, in order.
#[derive(Debug)]
pub enum Write<B> {
    /// A command line, CRLF included. Its reply is awaited from now on.
    Command(Vec<u8>),
    /// The message of `txn`: `size` bytes of `body`, dot-stuffed and
    /// followed by the final `.` when `dot_stuffed` (DATA), as they are
    /// otherwise (BDAT). Nothing else is written until the writer says
    /// [`Ledger::body_written`].
    Body {
        /// The transaction.
        txn: TxnId,
        /// What [`Ledger::start`] was given to produce the message.
        body: B,
        /// The message size, before stuffing.
        size: u64,
        /// DATA rather than BDAT.
        dot_stuffed: bool,
    },
}

/// What the replies (or the loss of the connection) decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The outcome of recipient `rcpt` (a position in the job's
    /// recipients) of `job`. Each recipient gets exactly one.
    Outcome {
        /// The job.
        job: JobId,
        /// The recipient's position in `job.recipients`.
        rcpt: usize,
        /// Delivered, deferred or failed, with the reply that said so.
        delivery: Delivery,
    },
    /// These recipients were refused as too many (`452`) in a transaction
    /// that accepted others: they go in a new transaction, before any other.
    Retry {
        /// The job.
        job: JobId,
        /// Positions in `job.recipients`.
        rcpts: Vec<usize>,
    },
    /// The connection was lost after the end of data of a transaction of
    /// `job` was written and before its reply: the server may have taken
    /// the message for `recipients` recipients, which are deferred and
    /// will get it again.
    MaybeDuplicate {
        /// The job.
        job: JobId,
        /// How many recipients had been accepted.
        recipients: usize,
    },
}

/// What the end of the connection meant.
#[derive(Debug, PartialEq, Eq)]
pub enum Loss {
    /// QUIT was sent and no transaction was owed anything: a clean end.
    Clean,
    /// Nothing was in flight: a server closing an idle connection (its own
    /// idle timeout) is not a failure.
    Idle,
    /// Transactions were in flight: every recipient they had not decided
    /// yet is deferred.
    InFlight {
        /// How many transactions.
        transactions: usize,
        /// The outcomes (and warnings), in transaction order.
        decisions: Vec<Decision>,
    },
}

#[derive(Debug, Clone, Copy)]
struct Expect {
    txn: Option<TxnId>,
    kind: Awaited,
}

/// Something to write, queued.
#[derive(Debug)]
enum Segment<B> {
    Command { bytes: Vec<u8>, expect: Expect },
    Body(QueuedBody<B>),
}

#[derive(Debug)]
struct QueuedBody<B> {
    txn: TxnId,
    body: B,
    size: u64,
    dot_stuffed: bool,
    /// The reply awaited once the body is written (DATA's final reply;
    /// BDAT's was queued with the command).
    on_end: Option<Expect>,
}

/// One transaction: some recipients of one job.
#[derive(Debug)]
struct Txn<B> {
    job: JobId,
    /// Positions (in the job's recipients) this transaction answers for.
    rcpts: Vec<usize>,
    rcpts_sent: usize,
    rcpt_replies: usize,
    accepted: Vec<usize>,
    /// Refused with "too many recipients": for the next transaction.
    leftover: Vec<usize>,
    too_many: Option<Reply>,
    /// Positions already given their outcome.
    decided: Vec<usize>,
    mail_failed: bool,
    /// DATA not yet answered: no other transaction may start (DATA ends a
    /// pipelined group).
    envelope_open: bool,
    expects_left: usize,
    bytes: u64,
    /// Stream offset just past the end of data, once it is queued.
    end_at: Option<u64>,
    final_seen: bool,
    /// For DATA: the body, until the 354 lets it go.
    waiting_body: Option<B>,
    /// The message size.
    size: u64,
}

impl<B> Txn<B> {
    fn decide(&mut self, pos: usize, delivery: Delivery, out: &mut Vec<Decision>) {
        self.decided.push(pos);
        out.push(Decision::Outcome {
            job: self.job,
            rcpt: pos,
            delivery,
        });
    }
}

/// The accounting of one connection's transaction phase. `B` is whatever
/// produces a message body (the spool file, in the agent).
#[derive(Debug)]
pub struct Ledger<B> {
    ext: Extensions,
    /// `name[ip]`, for every outcome's `remote_mta`.
    remote: String,
    /// The TLS session, named in the diagnostic of each delivery.
    tls: Option<String>,
    /// `smtp.window`: bytes of transactions in flight at most.
    window: u64,
    segments: VecDeque<Segment<B>>,
    /// Written, awaiting their replies, oldest first.
    pending: VecDeque<Expect>,
    /// The body handed out by [`next_write`](Self::next_write) and not yet
    /// written whole, with the reply to await after it.
    body_out: Option<(TxnId, Option<Expect>)>,
    txns: BTreeMap<TxnId, Txn<B>>,
    next_txn: u64,
    /// A pipelined DATA awaits its 354: nothing more may be written.
    gate: bool,
    needs_rset: bool,
    in_flight_bytes: u64,
    completed: u64,
    quitting: bool,
    /// A `421` came: the server answered everything before it and takes
    /// nothing after it, so no message in flight can have been delivered.
    closed_by_server: bool,
}

impl<B> Ledger<B> {
    /// The ledger of a connection to `remote` offering `ext`, encrypted
    /// with `tls` if that is `Some`, keeping at most `window` bytes of
    /// transactions in flight.
    pub fn new(ext: Extensions, remote: String, tls: Option<String>, window: u64) -> Ledger<B> {
        Ledger {
            ext,
            remote,
            tls,
            window: window.max(1),
            segments: VecDeque::new(),
            pending: VecDeque::new(),
            body_out: None,
            txns: BTreeMap::new(),
            next_txn: 0,
            gate: false,
            needs_rset: false,
            in_flight_bytes: 0,
            completed: 0,
            quitting: false,
            closed_by_server: false,
        }
    }

    /// What the server offers.
    pub fn extensions(&self) -> &Extensions {
        &self.ext
    }

    /// Transactions that delivered (a 2xx after their data).
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Whether QUIT has been queued.
    pub fn quitting(&self) -> bool {
        self.quitting
    }

    /// Nothing to write, nothing awaited, no transaction open.
    pub fn is_quiet(&self) -> bool {
        self.txns.is_empty() && self.segments.is_empty() && self.pending.is_empty()
    }

    /// The command whose reply comes next, if a reply is awaited.
    pub fn awaiting(&self) -> Option<Awaited> {
        self.pending.front().map(|e| e.kind)
    }

    /// Whether a new transaction may be started now: always on an idle
    /// connection; with PIPELINING while the window has room, and (with
    /// DATA) once the previous DATA has its 354, which lets the next
    /// envelope follow that body.
    pub fn may_start(&self) -> bool {
        if self.txns.is_empty() {
            return true;
        }
        if !self.ext.pipelining {
            return false;
        }
        if self.in_flight_bytes >= self.window {
            return false;
        }
        self.ext.chunking || !self.txns.values().any(|t| t.envelope_open)
    }

    /// Queues a transaction for recipients `rcpts` (positions) of `job`:
    /// `[RSET] MAIL RCPT… BDAT` and the body, or `MAIL RCPT… DATA` with
    /// the body waiting for the 354. An error (an address that cannot be
    /// put on a command line) leaves the ledger as it was.
    #[cfg(test)]
    pub fn start(&mut self, job: &Job, rcpts: &[usize], body: B) -> Result<TxnId, SmtpError> {
        self.start_sized(job, rcpts, body, job.size)
    }

    /// Starts a transaction for a body of `size` bytes (the job's, or
    /// that of the message converted to 7 bits for this server).
    pub fn start_sized(
        &mut self,
        job: &Job,
        rcpts: &[usize],
        body: B,
        size: u64,
    ) -> Result<TxnId, SmtpError> {
        let id = TxnId(self.next_txn);
        let expect = |kind| Expect {
            txn: Some(id),
            kind,
        };
        let render = |c: &Command| c.to_bytes().map_err(|e| SmtpError::Config(e.to_string()));
        let mut commands: Vec<(Vec<u8>, Expect)> = Vec::new();
        if self.needs_rset {
            commands.push((b"RSET\r\n".to_vec(), expect(Awaited::Rset)));
        }
        commands.push((
            render(&envelope::mail_sized(job, &self.ext, size))?,
            expect(Awaited::Mail),
        ));
        for &pos in rcpts {
            let command = envelope::rcpt(&job.recipients[pos], &self.ext);
            commands.push((render(&command)?, expect(Awaited::Rcpt(pos))));
        }
        let mut queued_body = None;
        let mut waiting_body = None;
        if self.ext.chunking {
            let command = Command::Bdat { size, last: true };
            commands.push((render(&command)?, expect(Awaited::Bdat)));
            queued_body = Some(QueuedBody {
                txn: id,
                body,
                size,
                dot_stuffed: false,
                on_end: None,
            });
            // The next transaction cannot know how this one ends.
            self.needs_rset = self.ext.pipelining;
        } else {
            commands.push((b"DATA\r\n".to_vec(), expect(Awaited::Data)));
            waiting_body = Some(body);
            self.needs_rset = false;
        }
        self.next_txn += 1;
        // The body counts towards the window from now on (for DATA before
        // it goes), so that its room is reserved.
        let bytes = size + commands.iter().map(|(b, _)| b.len() as u64).sum::<u64>();
        let txn = Txn {
            job: job.id,
            rcpts: rcpts.to_vec(),
            rcpts_sent: rcpts.len(),
            rcpt_replies: 0,
            accepted: Vec::new(),
            leftover: Vec::new(),
            too_many: None,
            decided: Vec::new(),
            mail_failed: false,
            envelope_open: !self.ext.chunking,
            expects_left: commands.len(),
            bytes,
            end_at: None,
            final_seen: false,
            waiting_body,
            size,
        };
        for (bytes, expect) in commands {
            self.segments.push_back(Segment::Command { bytes, expect });
        }
        if let Some(body) = queued_body {
            self.segments.push_back(Segment::Body(body));
        }
        self.in_flight_bytes += bytes;
        self.txns.insert(id, txn);
        Ok(id)
    }

    /// Queues QUIT.
    pub fn quit(&mut self) {
        self.quitting = true;
        self.segments.push_back(Segment::Command {
            bytes: b"QUIT\r\n".to_vec(),
            expect: Expect {
                txn: None,
                kind: Awaited::Quit,
            },
        });
    }

    /// Whether something may be written now: a body always (it follows
    /// its BDAT or its 354); a command unless a DATA awaits its 354, and
    /// without PIPELINING only when every reply is in. Nothing while a
    /// body handed out is still being written.
    pub fn can_write(&self) -> bool {
        if self.body_out.is_some() {
            return false;
        }
        match self.segments.front() {
            None => false,
            Some(Segment::Body(_)) => true,
            Some(Segment::Command { .. }) => {
                !self.gate && (self.ext.pipelining || self.pending.is_empty())
            }
        }
    }

    /// The next thing to write, if [`can_write`](Self::can_write).
    pub fn next_write(&mut self) -> Option<Write<B>> {
        if !self.can_write() {
            return None;
        }
        match self.segments.pop_front()? {
            Segment::Command { bytes, expect } => {
                if expect.kind == Awaited::Data && self.ext.pipelining {
                    self.gate = true;
                }
                self.pending.push_back(expect);
                Some(Write::Command(bytes))
            }
            Segment::Body(body) => {
                self.body_out = Some((body.txn, body.on_end));
                Some(Write::Body {
                    txn: body.txn,
                    body: body.body,
                    size: body.size,
                    dot_stuffed: body.dot_stuffed,
                })
            }
        }
    }

    /// The last byte of the body of `txn` (and, for DATA, its final dot)
    /// is queued for the server, at stream offset `end` (bytes of the
    /// session's stream up to and including it).
    pub fn body_written(&mut self, txn: TxnId, end: u64) {
        let Some((out, on_end)) = self.body_out.take() else {
            return;
        };
        debug_assert_eq!(out, txn, "the body written is the one handed out");
        if let Some(t) = self.txns.get_mut(&txn) {
            t.end_at = Some(end);
        }
        if let Some(expect) = on_end {
            self.pending.push_back(expect);
        }
    }

    /// Applies one reply to the oldest command awaiting one. An error when
    /// the session cannot go on: a `421` (the server is closing), or a
    /// reply nobody asked for; the caller then ends the connection and
    /// calls [`lost`](Self::lost).
    pub fn on_reply(&mut self, reply: Reply) -> Result<Vec<Decision>, SmtpError> {
        let Some(expect) = self.pending.pop_front() else {
            return Err(SmtpError::Lost {
                detail: format!("reply without a command: {reply}"),
            });
        };
        if reply.code == 421 && expect.kind != Awaited::Quit {
            // Whatever the server has not answered is deferred with this
            // reply. Like any 4xx it says the command's action did not
            // happen, and the server closes without reading further: the
            // transactions in flight cannot have been delivered.
            self.closed_by_server = true;
            return Err(SmtpError::Refused {
                stage: expect.kind.describe(),
                reply,
            });
        }
        let mut out = Vec::new();
        let Some(id) = expect.txn else {
            return Ok(out);
        };
        let Some(txn) = self.txns.get_mut(&id) else {
            return Ok(out);
        };
        match expect.kind {
            Awaited::Rset | Awaited::Quit => {}
            Awaited::Mail => {
                if !reply.is_positive() {
                    txn.mail_failed = true;
                    let delivery = refusal(&self.remote, &reply);
                    for pos in txn.rcpts.clone() {
                        txn.decide(pos, delivery.clone(), &mut out);
                    }
                    self.cancel_unsent(id);
                }
            }
            Awaited::Rcpt(pos) => {
                txn.rcpt_replies += 1;
                if !txn.mail_failed {
                    if reply.is_positive() {
                        txn.accepted.push(pos);
                    } else if too_many_recipients(&reply) {
                        txn.leftover.push(pos);
                        txn.too_many = Some(reply.clone());
                    } else {
                        txn.decide(pos, refusal(&self.remote, &reply), &mut out);
                    }
                }
                if txn.rcpt_replies == txn.rcpts_sent && !txn.mail_failed {
                    self.rcpts_complete(id, &mut out);
                }
            }
            Awaited::Data => {
                self.gate = false;
                txn.envelope_open = false;
                let body = txn.waiting_body.take();
                if reply.code == 354 {
                    txn.expects_left += 1;
                    match body {
                        Some(body) if !txn.accepted.is_empty() => {
                            self.segments.push_front(Segment::Body(QueuedBody {
                                txn: id,
                                body,
                                size: txn.size,
                                dot_stuffed: true,
                                on_end: Some(Expect {
                                    txn: Some(id),
                                    kind: Awaited::DataEnd { ignore: false },
                                }),
                            }));
                        }
                        _ => {
                            // A 354 although no recipient was accepted:
                            // end the (empty) data and ignore the reply
                            // (RFC 2920 §3.1).
                            self.segments.push_front(Segment::Command {
                                bytes: b".\r\n".to_vec(),
                                expect: Expect {
                                    txn: Some(id),
                                    kind: Awaited::DataEnd { ignore: true },
                                },
                            });
                        }
                    }
                } else {
                    let delivery = if reply.is_positive() {
                        Delivery::deferred(
                            EnhancedCode::PROTOCOL_TROUBLE,
                            format!("unexpected reply to DATA: {reply}"),
                            None,
                        )
                        .with_reply(reply.to_smtp_reply())
                        .with_remote_mta(self.remote.clone())
                    } else {
                        refusal(&self.remote, &reply)
                    };
                    for pos in std::mem::take(&mut txn.accepted) {
                        txn.decide(pos, delivery.clone(), &mut out);
                    }
                    self.needs_rset = true;
                }
            }
            Awaited::DataEnd { ignore } => {
                txn.final_seen = true;
                if !ignore {
                    self.final_reply(id, &reply, &mut out);
                }
            }
            Awaited::Bdat => {
                txn.final_seen = true;
                if !reply.is_positive() && !self.ext.pipelining {
                    self.needs_rset = true;
                }
                self.final_reply(id, &reply, &mut out);
            }
        }
        if let Some(txn) = self.txns.get_mut(&id) {
            txn.expects_left = txn.expects_left.saturating_sub(1);
            if txn.expects_left == 0 {
                self.finish(id);
            }
        }
        Ok(out)
    }

    /// Every RCPT has been answered: recipients refused for being too many
    /// go to a new transaction (unless none at all was accepted, which
    /// means the server takes none now), and a transaction nobody was
    /// accepted in sends no data if that is still avoidable.
    fn rcpts_complete(&mut self, id: TxnId, out: &mut Vec<Decision>) {
        let Some(txn) = self.txns.get_mut(&id) else {
            return;
        };
        let leftover = std::mem::take(&mut txn.leftover);
        let nobody = txn.accepted.is_empty();
        if !leftover.is_empty() {
            if nobody {
                let delivery = match &txn.too_many {
                    Some(r) => refusal(&self.remote, r),
                    None => {
                        Delivery::deferred(EnhancedCode::TRANSIENT, "too many recipients", None)
                    }
                };
                for pos in leftover {
                    txn.decide(pos, delivery.clone(), out);
                }
            } else {
                txn.rcpts.retain(|p| !leftover.contains(p));
                out.push(Decision::Retry {
                    job: txn.job,
                    rcpts: leftover,
                });
            }
        }
        if nobody {
            self.cancel_unsent(id);
            self.needs_rset = true;
        }
    }

    /// The reply after the data decides for every accepted recipient.
    fn final_reply(&mut self, id: TxnId, reply: &Reply, out: &mut Vec<Decision>) {
        let Some(txn) = self.txns.get_mut(&id) else {
            return;
        };
        let accepted = std::mem::take(&mut txn.accepted);
        if accepted.is_empty() {
            return;
        }
        let mut delivery =
            Delivery::from_reply(reply.to_smtp_reply()).with_remote_mta(self.remote.clone());
        if delivery.status == Status::Delivered {
            self.completed += 1;
            if let Some(tls) = &self.tls {
                delivery.diagnostic = format!("{} ({tls})", delivery.diagnostic);
            }
        }
        for pos in accepted {
            txn.decide(pos, delivery.clone(), out);
        }
    }

    /// Drops the commands of transaction `id` not yet written (and a BDAT
    /// body whose command goes with them): they would only be refused.
    fn cancel_unsent(&mut self, id: TxnId) {
        let mut dropped = 0;
        let mut bdat_dropped = false;
        self.segments.retain(|segment| match segment {
            Segment::Command { expect, .. } if expect.txn == Some(id) => {
                dropped += 1;
                bdat_dropped |= expect.kind == Awaited::Bdat;
                false
            }
            Segment::Body(body) if body.txn == id && bdat_dropped => false,
            _ => true,
        });
        if let Some(txn) = self.txns.get_mut(&id) {
            txn.expects_left = txn.expects_left.saturating_sub(dropped);
            if dropped > 0 && txn.envelope_open {
                // The DATA never went: nothing to gate on.
                txn.envelope_open = false;
            }
            if txn.expects_left == 0 {
                self.finish(id);
            }
        }
    }

    fn finish(&mut self, id: TxnId) {
        if let Some(txn) = self.txns.remove(&id) {
            self.in_flight_bytes = self.in_flight_bytes.saturating_sub(txn.bytes);
        }
    }

    /// The connection is gone, for the reason `failure` gives every
    /// recipient it hits, after `written` bytes of the stream reached the
    /// server: every recipient in flight is deferred (failed, if `failure`
    /// says so). Nothing is awaited or written afterwards.
    pub fn lost(&mut self, failure: Delivery, written: u64) -> Loss {
        if self.quitting && self.txns.is_empty() {
            return Loss::Clean;
        }
        if self.txns.is_empty() && self.segments.is_empty() {
            return Loss::Idle;
        }
        let base = failure.with_remote_mta(self.remote.clone());
        let txns = std::mem::take(&mut self.txns);
        let transactions = txns.len();
        let mut decisions = Vec::new();
        for (_, txn) in txns {
            let data_gone = txn.end_at.is_some_and(|end| written >= end)
                && !self.closed_by_server
                && !txn.final_seen
                && !txn.accepted.is_empty();
            let mut delivery = base.clone();
            if data_gone {
                decisions.push(Decision::MaybeDuplicate {
                    job: txn.job,
                    recipients: txn.accepted.len(),
                });
                delivery.diagnostic = format!(
                    "{} after the end of data (the message may have been delivered; it will be sent again)",
                    delivery.diagnostic
                );
            }
            // Leftovers not yet turned into a retry were never answered
            // either; they go with the rest.
            for &pos in txn.rcpts.iter().chain(&txn.leftover) {
                if !txn.decided.contains(&pos) {
                    decisions.push(Decision::Outcome {
                        job: txn.job,
                        rcpt: pos,
                        delivery: delivery.clone(),
                    });
                }
            }
        }
        self.segments.clear();
        self.pending.clear();
        self.body_out = None;
        self.in_flight_bytes = 0;
        Loss::InFlight {
            transactions,
            decisions,
        }
    }
}

/// The outcome of a refusing reply to MAIL, RCPT or DATA.
fn refusal(remote: &str, reply: &Reply) -> Delivery {
    Delivery::from_reply(reply.to_smtp_reply()).with_remote_mta(remote.to_owned())
}

/// `452` or an `X.5.3` code: "too many recipients" (RFC 5321
/// §4.5.3.1.10), not a verdict on the recipient.
fn too_many_recipients(reply: &Reply) -> bool {
    reply.code == 452
        || reply
            .enhanced
            .is_some_and(|e| e.class != 2 && e.subject == 5 && e.detail == 3)
}

#[cfg(test)]
mod tests;
