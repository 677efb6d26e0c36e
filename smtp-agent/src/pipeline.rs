//! The pipelined part of a session: transactions written as fast as the
//! server's extensions allow, replies matched to them in order, and every
//! recipient's outcome decided from the reply that concerns it.
//!
//! Three ways to send, chosen from the EHLO reply:
//!
//! | server offers | a transaction is written as | in flight at once |
//! |---|---|---|
//! | PIPELINING and CHUNKING | `[RSET] MAIL RCPT… BDAT n LAST` + body, one stream | as many as fit in `smtp.window` bytes |
//! | PIPELINING | `MAIL RCPT… DATA` in one write; after the 354, the body, its final dot and the next transaction's `MAIL RCPT… DATA` in the same write (RFC 2920 §3.1) | two: one awaiting its final reply, the next awaiting its 354 |
//! | neither | one command, one reply | one |
//!
//! The bytes are produced here and handed in chunks to a writer task, so
//! that replies are read while a long body is still being written (no
//! deadlock when both sides' buffers fill) and a write never has to be
//! cancelled halfway.
//!
//! Accounting: every command sent leaves an [`Expect`] in a queue; each
//! reply pops the oldest one and is applied to its transaction. A
//! transaction ends when all its replies are in. Whatever is unanswered
//! when the connection breaks is deferred, and a transaction whose end of
//! data had been written is logged as a possible duplicate.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::time::Duration;

use skein_agent::{AgentError, Delivery};
use skein_config::SmtpConfig;
use skein_proto::{EnhancedCode, Job, JobId, Status};
use skein_smtp_codec::{Command, DotStuffer, Extensions, Reply, ReplyDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::agent::{Agent, Plan};
use crate::connect::{BoxStream, Established};
use crate::dest::Destination;
use crate::envelope;
use crate::error::SmtpError;

/// Bytes handed to the writer at a time. Large enough that a small
/// message's body, its end and the next envelope go in one write.
const CHUNK: usize = 64 << 10;

/// Chunks queued for the writer: bounds the agent's memory per
/// connection to a few chunks whatever the message size.
const CHUNKS_QUEUED: usize = 4;

/// How long QUIT waits for its reply: nothing depends on it.
const QUIT_WAIT: Duration = Duration::from_secs(10);

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// Closed on purpose (QUIT, or the scheduler went away).
    Done,
    /// The connection failed; whatever was in flight has been deferred.
    Lost {
        /// Whether at least one transaction had completed on it, so that a
        /// new connection is worth a try for the rest.
        productive: bool,
        /// What happened.
        error: SmtpError,
    },
}

/// What a reply was awaited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rset,
    Mail,
    Rcpt(usize),
    Data,
    /// The reply after the final dot; `ignore` when nobody's outcome
    /// depends on it (a 354 came although every RCPT was refused).
    DataEnd {
        ignore: bool,
    },
    Bdat,
    Quit,
}

#[derive(Debug, Clone, Copy)]
struct Expect {
    txn: Option<u64>,
    kind: Kind,
}

/// Something to write, in order.
enum Segment {
    Command { bytes: Vec<u8>, expect: Expect },
    Body(Body),
}

/// A message body being streamed from its spool file.
struct Body {
    txn: u64,
    file: File,
    remaining: u64,
    /// `Some` for DATA (dot-stuffed, ends with `.`), `None` for BDAT.
    stuffer: Option<DotStuffer>,
    /// The reply awaited once the body is written (DATA's final reply;
    /// BDAT's was queued with the command).
    on_end: Option<Expect>,
}

/// One transaction: some recipients of one job.
#[derive(Debug)]
struct Txn {
    job: JobId,
    /// Positions (in the job's recipients) this transaction answers for.
    rcpts: Vec<usize>,
    rcpts_sent: usize,
    rcpt_replies: usize,
    accepted: Vec<usize>,
    /// Refused with "too many recipients": for the next transaction.
    leftover: Vec<usize>,
    too_many: Option<Reply>,
    mail_failed: bool,
    /// DATA not yet answered: no other transaction may start (DATA ends a
    /// pipelined group).
    envelope_open: bool,
    expects_left: usize,
    bytes: u64,
    /// Stream offset just past the end of data, once it is queued.
    end_at: Option<u64>,
    final_seen: bool,
    /// For DATA: the spool file, until the 354 lets the body go.
    waiting_body: Option<File>,
    /// The message size.
    size: u64,
}

/// One connection in its transaction phase.
pub struct Pipeline {
    reader: ReadHalf<BoxStream>,
    chunks: mpsc::Sender<Vec<u8>>,
    progress: mpsc::UnboundedReceiver<io::Result<usize>>,
    decoder: ReplyDecoder,
    ext: Extensions,
    /// Where it goes.
    pub dest: Destination,
    /// The thread host of the jobs it serves, for `Idle`.
    thread_host: String,
    remote: String,
    tls: Option<String>,
    timeouts: SmtpConfig,
    window: u64,
    segments: VecDeque<Segment>,
    pending: VecDeque<Expect>,
    txns: BTreeMap<u64, Txn>,
    next_txn: u64,
    gate: bool,
    needs_rset: bool,
    in_flight_bytes: u64,
    queued_total: u64,
    written_total: u64,
    last_progress: Instant,
    completed: u64,
    quitting: bool,
}

impl Pipeline {
    /// The transaction phase of an established connection.
    pub fn new(
        established: Established,
        dest: Destination,
        thread_host: String,
        timeouts: &SmtpConfig,
    ) -> Pipeline {
        let (reader, writer) = tokio::io::split(established.stream);
        let (chunks, chunk_rx) = mpsc::channel(CHUNKS_QUEUED);
        let (progress_tx, progress) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(
            writer,
            chunk_rx,
            progress_tx,
            timeouts.data_block_timeout,
        ));
        info!(
            server = %established.remote,
            tls = established.tls.as_deref().unwrap_or("none"),
            pipelining = established.ext.pipelining,
            chunking = established.ext.chunking,
            size = established.ext.size_limit().unwrap_or(0),
            "session open"
        );
        Pipeline {
            reader,
            chunks,
            progress,
            decoder: established.decoder,
            ext: established.ext,
            dest,
            thread_host,
            remote: established.remote,
            tls: established.tls,
            timeouts: timeouts.clone(),
            window: timeouts.window.bytes().max(1),
            segments: VecDeque::new(),
            pending: VecDeque::new(),
            txns: BTreeMap::new(),
            next_txn: 0,
            gate: false,
            needs_rset: false,
            in_flight_bytes: 0,
            queued_total: 0,
            written_total: 0,
            last_progress: Instant::now(),
            completed: 0,
            quitting: false,
        }
    }

    /// Runs transactions for the agent's plans to this destination until
    /// there are none left and the connection has been idle for
    /// `smtp.idle_timeout`, a plan for another destination is waiting, the
    /// agent stops, or the connection fails.
    pub async fn serve(&mut self, agent: &mut Agent) -> Result<SessionEnd, AgentError> {
        let mut buf = vec![0u8; 16 << 10];
        let mut idle_since: Option<Instant> = None;
        loop {
            // Take every job already waiting before deciding what to
            // write, so that they share the first writes.
            while !agent.closed {
                match poll_once(agent.next_event()).await {
                    Some(event) => agent.handle(event?).await?,
                    None => break,
                }
            }
            if agent.closed {
                return Ok(SessionEnd::Done);
            }
            if !self.quitting {
                self.start_transactions(agent).await?;
            }
            let quiet = self.txns.is_empty() && self.segments.is_empty() && self.pending.is_empty();
            if quiet && self.quitting {
                return Ok(SessionEnd::Done);
            }
            if quiet {
                let elsewhere = agent.next_destination().is_some();
                let idle_over =
                    idle_since.is_some_and(|since| since.elapsed() >= self.timeouts.idle_timeout);
                if elsewhere || agent.stopping || idle_over {
                    self.queue_quit();
                    continue;
                }
                if idle_since.is_none() {
                    idle_since = Some(Instant::now());
                    agent.idle(Some(self.thread_host.clone())).await?;
                }
            } else {
                idle_since = None;
            }
            let deadline = match (self.pending.front(), idle_since) {
                (Some(head), _) => self.last_progress + self.timeout_for(head.kind),
                (None, Some(since)) => since + self.timeouts.idle_timeout,
                // Nothing awaited, nothing idle: only writing is going on,
                // and the writer has its own timeout.
                (None, None) => Instant::now() + Duration::from_secs(3600),
            };
            let writable = self.can_write();
            let chunks = self.chunks.clone();
            tokio::select! {
                read = self.reader.read(&mut buf) => {
                    let n = match read {
                        Ok(0) => return self.lost(agent, SmtpError::Lost {
                            detail: "connection closed by the server".into(),
                        }).await,
                        Ok(n) => n,
                        Err(e) => return self.lost(agent, SmtpError::Lost {
                            detail: format!("reading: {e}"),
                        }).await,
                    };
                    self.last_progress = Instant::now();
                    self.decoder.push(&buf[..n]);
                    loop {
                        match self.decoder.next_reply() {
                            Ok(Some(reply)) => {
                                if let Some(error) = self.on_reply(agent, reply).await? {
                                    return self.lost(agent, error).await;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => return self.lost(agent, SmtpError::Protocol(e)).await,
                        }
                    }
                }
                permit = chunks.reserve_owned(), if writable => {
                    let Ok(permit) = permit else {
                        return self.lost(agent, SmtpError::Lost {
                            detail: "the writer stopped".into(),
                        }).await;
                    };
                    match self.fill_chunk() {
                        Ok(chunk) => {
                            if !chunk.is_empty() {
                                permit.send(chunk);
                            }
                        }
                        Err(e) => return self.lost(agent, e).await,
                    }
                }
                progress = self.progress.recv() => match progress {
                    Some(Ok(n)) => {
                        self.written_total += n as u64;
                        self.last_progress = Instant::now();
                    }
                    Some(Err(e)) if e.kind() == io::ErrorKind::TimedOut => {
                        return self.lost(agent, SmtpError::Timeout {
                            waiting_for: "the server to take more data",
                        }).await;
                    }
                    Some(Err(e)) => return self.lost(agent, SmtpError::Lost {
                        detail: format!("writing: {e}"),
                    }).await,
                    None => return self.lost(agent, SmtpError::Lost {
                        detail: "the writer stopped".into(),
                    }).await,
                },
                event = agent.next_event(), if !agent.closed => {
                    let event = event?;
                    agent.handle(event).await?;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if self.pending.is_empty() {
                        // The idle time is over; the top of the loop says QUIT.
                        continue;
                    }
                    if self.quitting && self.txns.is_empty() {
                        return Ok(SessionEnd::Done);
                    }
                    let waiting_for = self.pending.front().map_or("a reply", |e| describe(e.kind));
                    return self.lost(agent, SmtpError::Timeout { waiting_for }).await;
                }
            }
        }
    }

    fn timeout_for(&self, kind: Kind) -> Duration {
        let t = &self.timeouts;
        match kind {
            Kind::Rset | Kind::Mail => t.mail_timeout,
            Kind::Rcpt(_) => t.rcpt_timeout,
            Kind::Data => t.data_init_timeout,
            Kind::DataEnd { .. } | Kind::Bdat => t.data_term_timeout,
            Kind::Quit => QUIT_WAIT.min(t.mail_timeout),
        }
    }

    fn queue_quit(&mut self) {
        self.quitting = true;
        self.segments.push_back(Segment::Command {
            bytes: b"QUIT\r\n".to_vec(),
            expect: Expect {
                txn: None,
                kind: Kind::Quit,
            },
        });
    }

    /// Whether a new transaction may be written now.
    fn may_start(&self) -> bool {
        if self.txns.is_empty() {
            return true;
        }
        if !self.ext.pipelining {
            return false;
        }
        if self.in_flight_bytes >= self.window {
            return false;
        }
        // With DATA, the next envelope may follow the previous body, but
        // only once that body is on its way (its DATA answered).
        self.ext.chunking || !self.txns.values().any(|t| t.envelope_open)
    }

    async fn start_transactions(&mut self, agent: &mut Agent) -> Result<(), AgentError> {
        while self.may_start() {
            let Some(plan) = agent.take_plan_for(&self.dest) else {
                return Ok(());
            };
            let Some(entry) = agent.jobs.get(&plan.job) else {
                continue;
            };
            let job = &entry.job;
            if let Err(delivery) = envelope::check(job, &self.ext, &self.remote) {
                let delivery = delivery.with_remote_mta(self.remote.clone());
                for pos in plan.rcpts {
                    agent.report(plan.job, pos, delivery.clone()).await?;
                }
                continue;
            }
            let file = match open_body(job) {
                Ok(file) => file,
                Err(e) => {
                    warn!(queue_id = %job.queue_id, error = %e, "cannot read the message");
                    let delivery = e.delivery();
                    for pos in plan.rcpts {
                        agent.report(plan.job, pos, delivery.clone()).await?;
                    }
                    continue;
                }
            };
            if let Err(e) = self.queue_txn(&plan, job, file) {
                // An address that cannot be put on a command line: the
                // router let something through it should not have.
                warn!(queue_id = %job.queue_id, error = %e, "cannot send the envelope");
                let delivery = Delivery::failed(
                    EnhancedCode::new(5, 1, 3).unwrap_or(EnhancedCode::PERMANENT),
                    format!("cannot send the envelope: {e}"),
                );
                for pos in plan.rcpts {
                    agent.report(plan.job, pos, delivery.clone()).await?;
                }
            }
        }
        Ok(())
    }

    /// Queues one transaction's commands (and, for BDAT, its body).
    fn queue_txn(&mut self, plan: &Plan, job: &Job, file: File) -> Result<(), SmtpError> {
        let id = self.next_txn;
        let expect = |kind| Expect {
            txn: Some(id),
            kind,
        };
        let mut commands: Vec<(Vec<u8>, Expect)> = Vec::new();
        let render = |c: &Command| c.to_bytes().map_err(|e| SmtpError::Config(e.to_string()));
        if self.needs_rset {
            commands.push((b"RSET\r\n".to_vec(), expect(Kind::Rset)));
        }
        commands.push((render(&envelope::mail(job, &self.ext))?, expect(Kind::Mail)));
        for &pos in &plan.rcpts {
            let command = envelope::rcpt(&job.recipients[pos], &self.ext);
            commands.push((render(&command)?, expect(Kind::Rcpt(pos))));
        }
        let mut bytes: u64 = 0;
        let mut body = None;
        let mut waiting_body = None;
        if self.ext.chunking {
            let command = Command::Bdat {
                size: job.size,
                last: true,
            };
            commands.push((render(&command)?, expect(Kind::Bdat)));
            bytes += job.size;
            body = Some(Body {
                txn: id,
                file,
                remaining: job.size,
                stuffer: None,
                on_end: None,
            });
            // The next transaction cannot know how this one ends.
            self.needs_rset = self.ext.pipelining;
        } else {
            commands.push((b"DATA\r\n".to_vec(), expect(Kind::Data)));
            // The body waits for the 354; the size counts towards the
            // window from now on, so that it is reserved.
            bytes += job.size;
            waiting_body = Some(file);
            self.needs_rset = false;
        }
        self.next_txn += 1;
        bytes += commands.iter().map(|(b, _)| b.len() as u64).sum::<u64>();
        let txn = Txn {
            job: plan.job,
            rcpts: plan.rcpts.clone(),
            rcpts_sent: plan.rcpts.len(),
            rcpt_replies: 0,
            accepted: Vec::new(),
            leftover: Vec::new(),
            too_many: None,
            mail_failed: false,
            envelope_open: !self.ext.chunking,
            expects_left: commands.len(),
            bytes,
            end_at: None,
            final_seen: false,
            waiting_body,
            size: job.size,
        };
        for (bytes, expect) in commands {
            self.segments.push_back(Segment::Command { bytes, expect });
        }
        if let Some(body) = body {
            self.segments.push_back(Segment::Body(body));
        }
        self.in_flight_bytes += bytes;
        self.txns.insert(id, txn);
        Ok(())
    }

    /// Whether the next segment may be written now: a body always (it
    /// follows its BDAT or its 354); a command unless a DATA awaits its
    /// 354, and without PIPELINING only when every reply is in.
    fn can_write(&self) -> bool {
        match self.segments.front() {
            None => false,
            Some(Segment::Body(_)) => true,
            Some(Segment::Command { .. }) => {
                !self.gate && (self.ext.pipelining || self.pending.is_empty())
            }
        }
    }

    /// The next chunk for the writer: segments in order, up to [`CHUNK`]
    /// bytes, as far as [`can_write`](Self::can_write) allows.
    fn fill_chunk(&mut self) -> Result<Vec<u8>, SmtpError> {
        let mut out = Vec::with_capacity(CHUNK + 1024);
        while out.len() < CHUNK && self.can_write() {
            let Some(front) = self.segments.front_mut() else {
                break;
            };
            match front {
                Segment::Command { .. } => {
                    let Some(Segment::Command { bytes, expect }) = self.segments.pop_front() else {
                        break;
                    };
                    out.extend_from_slice(&bytes);
                    if expect.kind == Kind::Data && self.ext.pipelining {
                        self.gate = true;
                    }
                    self.pending.push_back(expect);
                }
                Segment::Body(body) => {
                    let room = (CHUNK - out.len()).max(4096) as u64;
                    let want = body.remaining.min(room) as usize;
                    let mut piece = vec![0u8; want];
                    body.file
                        .read_exact(&mut piece)
                        .map_err(|source| SmtpError::Local {
                            what: "reading the message from the spool".into(),
                            source,
                        })?;
                    body.remaining -= want as u64;
                    match &mut body.stuffer {
                        Some(stuffer) => stuffer.stuff(&piece, &mut out),
                        None => out.extend_from_slice(&piece),
                    }
                    if body.remaining == 0 {
                        let Some(Segment::Body(body)) = self.segments.pop_front() else {
                            break;
                        };
                        if let Some(stuffer) = body.stuffer {
                            stuffer.finish(&mut out);
                        }
                        let end = self.queued_total + out.len() as u64;
                        if let Some(txn) = self.txns.get_mut(&body.txn) {
                            txn.end_at = Some(end);
                        }
                        if let Some(expect) = body.on_end {
                            self.pending.push_back(expect);
                        }
                    }
                }
            }
        }
        self.queued_total += out.len() as u64;
        Ok(out)
    }

    /// Applies one reply to the oldest command awaiting one. `Some(error)`
    /// when the session cannot go on (421, or a reply nobody asked for).
    async fn on_reply(
        &mut self,
        agent: &mut Agent,
        reply: Reply,
    ) -> Result<Option<SmtpError>, AgentError> {
        let Some(expect) = self.pending.pop_front() else {
            return Ok(Some(SmtpError::Lost {
                detail: format!("reply without a command: {reply}"),
            }));
        };
        debug!(server = %self.remote, kind = describe(expect.kind), %reply, "reply");
        if reply.code == 421 && expect.kind != Kind::Quit {
            // The server is closing the connection: whatever it has not
            // answered is deferred with this reply.
            return Ok(Some(SmtpError::Refused {
                stage: describe(expect.kind),
                reply,
            }));
        }
        let Some(id) = expect.txn else {
            return Ok(None);
        };
        let Some(txn) = self.txns.get_mut(&id) else {
            return Ok(None);
        };
        let job = txn.job;
        match expect.kind {
            Kind::Rset | Kind::Quit => {}
            Kind::Mail => {
                if !reply.is_positive() {
                    txn.mail_failed = true;
                    let rcpts = txn.rcpts.clone();
                    let delivery = self.refusal(&reply);
                    for pos in rcpts {
                        agent.report(job, pos, delivery.clone()).await?;
                    }
                    self.cancel_unsent(id);
                }
            }
            Kind::Rcpt(pos) => {
                txn.rcpt_replies += 1;
                if !txn.mail_failed {
                    if reply.is_positive() {
                        txn.accepted.push(pos);
                    } else if too_many_recipients(&reply) {
                        txn.leftover.push(pos);
                        txn.too_many = Some(reply.clone());
                    } else {
                        let delivery = self.refusal(&reply);
                        agent.report(job, pos, delivery).await?;
                    }
                }
                let Some(txn) = self.txns.get_mut(&id) else {
                    return Ok(None);
                };
                if txn.rcpt_replies == txn.rcpts_sent && !txn.mail_failed {
                    self.rcpts_complete(agent, id).await?;
                }
            }
            Kind::Data => {
                self.gate = false;
                txn.envelope_open = false;
                let file = txn.waiting_body.take();
                if reply.code == 354 {
                    let nobody = txn.accepted.is_empty();
                    match file {
                        Some(file) if !nobody => {
                            txn.expects_left += 1;
                            self.segments.push_front(Segment::Body(Body {
                                txn: id,
                                file,
                                remaining: txn.size,
                                stuffer: Some(DotStuffer::new()),
                                on_end: Some(Expect {
                                    txn: Some(id),
                                    kind: Kind::DataEnd { ignore: false },
                                }),
                            }));
                        }
                        _ => {
                            // A 354 although no recipient was accepted:
                            // end the (empty) data and ignore the reply
                            // (RFC 2920 §3.1).
                            txn.expects_left += 1;
                            self.segments.push_front(Segment::Command {
                                bytes: b".\r\n".to_vec(),
                                expect: Expect {
                                    txn: Some(id),
                                    kind: Kind::DataEnd { ignore: true },
                                },
                            });
                        }
                    }
                } else {
                    let accepted = std::mem::take(&mut txn.accepted);
                    let mut delivery = self.refusal(&reply);
                    if reply.is_positive() {
                        delivery = Delivery::deferred(
                            skein_proto::EnhancedCode::new(4, 5, 0)
                                .unwrap_or(EnhancedCode::TRANSIENT),
                            format!("unexpected reply to DATA: {reply}"),
                            None,
                        )
                        .with_reply(reply.to_smtp_reply())
                        .with_remote_mta(self.remote.clone());
                    }
                    for pos in accepted {
                        agent.report(job, pos, delivery.clone()).await?;
                    }
                    self.needs_rset = true;
                }
            }
            Kind::DataEnd { ignore } => {
                txn.final_seen = true;
                if !ignore {
                    self.final_reply(agent, id, &reply).await?;
                }
            }
            Kind::Bdat => {
                let Some(txn) = self.txns.get_mut(&id) else {
                    return Ok(None);
                };
                txn.final_seen = true;
                if !reply.is_positive() && !self.ext.pipelining {
                    self.needs_rset = true;
                }
                self.final_reply(agent, id, &reply).await?;
            }
        }
        if let Some(txn) = self.txns.get_mut(&id) {
            txn.expects_left = txn.expects_left.saturating_sub(1);
            if txn.expects_left == 0 {
                self.finish(id);
            }
        }
        Ok(None)
    }

    /// Every RCPT has been answered: recipients refused for being too many
    /// go to a new transaction (unless none at all was accepted, which
    /// means the server takes none now), and a transaction nobody was
    /// accepted in sends no data if that is still avoidable.
    async fn rcpts_complete(&mut self, agent: &mut Agent, id: u64) -> Result<(), AgentError> {
        let Some(txn) = self.txns.get_mut(&id) else {
            return Ok(());
        };
        let job = txn.job;
        let leftover = std::mem::take(&mut txn.leftover);
        let nobody = txn.accepted.is_empty();
        if !leftover.is_empty() {
            txn.rcpts.retain(|p| !leftover.contains(p));
            if nobody {
                let reply = txn.too_many.clone();
                txn.rcpts.extend(&leftover);
                let delivery = match reply {
                    Some(r) => self.refusal(&r),
                    None => {
                        Delivery::deferred(EnhancedCode::TRANSIENT, "too many recipients", None)
                    }
                };
                for pos in leftover {
                    agent.report(job, pos, delivery.clone()).await?;
                }
            } else {
                debug!(job = %job, count = leftover.len(), "too many recipients: the rest go in the next transaction");
                agent.plans.push_front(Plan {
                    job,
                    rcpts: leftover,
                });
            }
        }
        if nobody {
            self.cancel_unsent(id);
            self.needs_rset = true;
        }
        Ok(())
    }

    /// The reply after the data decides for every accepted recipient.
    async fn final_reply(
        &mut self,
        agent: &mut Agent,
        id: u64,
        reply: &Reply,
    ) -> Result<(), AgentError> {
        let Some(txn) = self.txns.get_mut(&id) else {
            return Ok(());
        };
        let job = txn.job;
        let accepted = std::mem::take(&mut txn.accepted);
        if accepted.is_empty() {
            return Ok(());
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
            agent.report(job, pos, delivery.clone()).await?;
        }
        Ok(())
    }

    /// The outcome of a refusing reply to MAIL, RCPT or DATA.
    fn refusal(&self, reply: &Reply) -> Delivery {
        Delivery::from_reply(reply.to_smtp_reply()).with_remote_mta(self.remote.clone())
    }

    /// Drops the commands of transaction `id` not yet written (and a BDAT
    /// body whose command goes with them): they would only be refused.
    fn cancel_unsent(&mut self, id: u64) {
        let mut dropped = 0;
        let mut bdat_dropped = false;
        self.segments.retain(|segment| match segment {
            Segment::Command { expect, .. } if expect.txn == Some(id) => {
                dropped += 1;
                bdat_dropped |= expect.kind == Kind::Bdat;
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

    fn finish(&mut self, id: u64) {
        if let Some(txn) = self.txns.remove(&id) {
            self.in_flight_bytes = self.in_flight_bytes.saturating_sub(txn.bytes);
        }
    }

    /// The connection is gone: every recipient in flight is deferred.
    async fn lost(
        &mut self,
        agent: &mut Agent,
        error: SmtpError,
    ) -> Result<SessionEnd, AgentError> {
        let quitting_cleanly = self.quitting && self.txns.is_empty();
        if quitting_cleanly {
            return Ok(SessionEnd::Done);
        }
        if self.txns.is_empty() && self.segments.is_empty() {
            // Nothing was in flight: a server closing an idle connection
            // (its own idle timeout) is not a failure.
            info!(server = %self.remote, detail = %error, "connection closed while idle");
            return Ok(SessionEnd::Done);
        }
        warn!(server = %self.remote, error = %error, in_flight = self.txns.len(), "session failed");
        // The writer reports each chunk right after the write returns, in
        // the same turn: what it wrote before the failure is in the
        // channel, even if the failure was seen first.
        while let Ok(progress) = self.progress.try_recv() {
            if let Ok(n) = progress {
                self.written_total += n as u64;
            }
        }
        let base = error.delivery().with_remote_mta(self.remote.clone());
        let txns = std::mem::take(&mut self.txns);
        for (_, txn) in txns {
            let data_gone = txn.end_at.is_some_and(|end| self.written_total >= end)
                && !txn.final_seen
                && !txn.accepted.is_empty();
            let mut delivery = base.clone();
            if data_gone {
                let queue_id = agent
                    .jobs
                    .get(&txn.job)
                    .map(|e| e.job.queue_id.clone())
                    .unwrap_or_default();
                warn!(
                    queue_id = %queue_id,
                    server = %self.remote,
                    recipients = txn.accepted.len(),
                    "connection lost after the end of data, before its reply: the message may be delivered twice"
                );
                delivery.diagnostic = format!(
                    "{} after the end of data (the message may have been delivered; it will be sent again)",
                    delivery.diagnostic
                );
            }
            // Leftovers not yet turned into a plan were never answered
            // either; they go with the rest.
            for pos in txn.rcpts.iter().chain(&txn.leftover) {
                if !agent.is_reported(txn.job, *pos) {
                    agent.report(txn.job, *pos, delivery.clone()).await?;
                }
            }
        }
        self.segments.clear();
        self.pending.clear();
        Ok(SessionEnd::Lost {
            productive: self.completed > 0,
            error,
        })
    }
}

/// `452` or an `X.5.3` code: "too many recipients" (RFC 5321
/// §4.5.3.1.10), not a verdict on the recipient.
fn too_many_recipients(reply: &Reply) -> bool {
    reply.code == 452
        || reply
            .enhanced
            .is_some_and(|e| e.class != 2 && e.subject == 5 && e.detail == 3)
}

fn describe(kind: Kind) -> &'static str {
    match kind {
        Kind::Rset => "the RSET reply",
        Kind::Mail => "the MAIL FROM reply",
        Kind::Rcpt(_) => "the RCPT TO reply",
        Kind::Data => "the DATA reply",
        Kind::DataEnd { .. } => "the reply to the end of data",
        Kind::Bdat => "the BDAT reply",
        Kind::Quit => "the QUIT reply",
    }
}

/// Opens the message file of `job` at the message, after checking that it
/// holds as many bytes as the job says (a BDAT promises them).
fn open_body(job: &Job) -> Result<File, SmtpError> {
    let local = |what: String| move |source| SmtpError::Local { what, source };
    let mut file =
        File::open(&job.message_path).map_err(local(format!("opening {}", job.message_path)))?;
    let len = file
        .metadata()
        .map_err(local(format!("reading {}", job.message_path)))?
        .len();
    if len < job.message_offset.saturating_add(job.size) {
        return Err(SmtpError::Local {
            what: format!(
                "{} holds {len} bytes, the job says {} from offset {}",
                job.message_path, job.size, job.message_offset
            ),
            source: io::ErrorKind::UnexpectedEof.into(),
        });
    }
    file.seek(SeekFrom::Start(job.message_offset))
        .map_err(local(format!("seeking in {}", job.message_path)))?;
    Ok(file)
}

/// The writer task: writes chunks in order, reports each one written, and
/// closes the stream when the session drops its sender.
async fn write_loop(
    mut writer: WriteHalf<BoxStream>,
    mut chunks: mpsc::Receiver<Vec<u8>>,
    progress: mpsc::UnboundedSender<io::Result<usize>>,
    block_timeout: Duration,
) {
    while let Some(chunk) = chunks.recv().await {
        let write = async {
            writer.write_all(&chunk).await?;
            if chunks.is_empty() {
                writer.flush().await?;
            }
            Ok::<(), io::Error>(())
        };
        let result = match tokio::time::timeout(block_timeout, write).await {
            Ok(Ok(())) => Ok(chunk.len()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no progress writing to the server",
            )),
        };
        let failed = result.is_err();
        if progress.send(result).is_err() || failed {
            return;
        }
    }
    // A clean end: FIN (or TLS close_notify, then FIN).
    let _ = tokio::time::timeout(QUIT_WAIT, writer.shutdown()).await;
}

/// Polls `future` once: its output if it is ready now, `None` if not (the
/// future is dropped, so it must be cancel-safe). Unlike
/// `tokio::time::timeout(Duration::ZERO, ..)`, which arms a timer that
/// fires only at the timer wheel's next millisecond tick, this never
/// waits: a pending event queue costs one poll, not a millisecond per
/// turn of the session loop.
async fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match future.as_mut().poll(cx) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        })
    })
    .await
}
