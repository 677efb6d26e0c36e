//! The pipelined part of a session: transactions written as fast as the
//! server's extensions allow, and the replies read as they come, both at
//! once on one connection.
//!
//! Three ways to send, chosen from the EHLO reply:
//!
//! | server offers | a transaction is written as | in flight at once |
//! |---|---|---|
//! | PIPELINING and CHUNKING | `[RSET] MAIL RCPT… BDAT n LAST` + body, one stream | as many as fit in `smtp.window` bytes |
//! | PIPELINING | `MAIL RCPT… DATA` in one write; after the 354, the body, its final dot and the next transaction's `MAIL RCPT… DATA` in the same write (RFC 2920 §3.1) | two: one awaiting its final reply, the next awaiting its 354 |
//! | neither | one command, one reply | one |
//!
//! What to write, which reply is awaited and what each reply decides is
//! the [`Ledger`]'s (sans-IO, in `ledger.rs`); this module only moves
//! bytes and feeds it: replies from the socket, message bodies from the
//! spool, outcomes to the agent, and the deadline of the reply awaited.
//! The bytes are handed in chunks to a writer task, so that replies are
//! read while a long body is still being written (no deadlock when both
//! sides' buffers fill) and a write never has to be cancelled halfway.

use std::fs::File;
use std::io::{self, Read};
use std::time::Duration;

use skein_agent::{AgentError, Delivery, MessageError, open_message};
use skein_config::SmtpConfig;
use skein_proto::{EnhancedCode, Job};
use skein_smtp_codec::{DotStuffer, Extensions, ReplyDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::agent::{Agent, Plan};
use crate::connect::{BoxStream, Established};
use crate::dest::Destination;
use crate::envelope;
use crate::error::SmtpError;
use crate::ledger::{Awaited, Decision, Ledger, Loss, TxnId, Write};

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

/// What a transaction's body is read from: the spool file, or the
/// message converted to 7 bits in memory for a server without 8BITMIME.
pub enum Body {
    /// The spool file, positioned at the message.
    File(File),
    /// The converted message.
    Converted(std::io::Cursor<Vec<u8>>),
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Body::File(file) => Read::read(file, buf),
            Body::Converted(bytes) => Read::read(bytes, buf),
        }
    }
}

/// A message body being streamed from its spool file.
struct Streaming {
    txn: TxnId,
    file: Body,
    remaining: u64,
    /// `Some` for DATA (dot-stuffed, ends with `.`), `None` for BDAT.
    stuffer: Option<DotStuffer>,
}

/// The message of `job` (its spool file, verified) converted to 7 bits
/// for `server`, which lacks 8BITMIME (RFC 6152 §3: convert or refuse,
/// never send 8 bits to it). What cannot be converted, or comes out larger
/// than the server's SIZE, fails the recipients.
fn downgrade(
    job: &Job,
    mut file: File,
    server: &str,
    ext: &Extensions,
) -> Result<Vec<u8>, Delivery> {
    let mut message = Vec::with_capacity(usize::try_from(job.size).unwrap_or(0));
    if let Err(e) = file.read_to_end(&mut message) {
        return Err(Delivery::deferred(
            EnhancedCode::new(4, 3, 0).unwrap_or(EnhancedCode::TRANSIENT),
            format!("reading the message from the spool: {e}"),
            None,
        ));
    }
    let converted = match skein_mail::downgrade::to_seven_bit(&message) {
        Ok(converted) => converted.into_owned(),
        Err(e) => {
            return Err(Delivery::failed(
                EnhancedCode::CONVERSION_REQUIRED,
                format!(
                    "8-bit message, {server} does not offer 8BITMIME, and it cannot be converted to 7 bits: {e}"
                ),
            ));
        }
    };
    if let Some(limit) = ext.size_limit()
        && converted.len() as u64 > limit
    {
        return Err(Delivery::failed(
            EnhancedCode::TOO_BIG,
            format!(
                "message of {} bytes once converted to 7 bits exceeds the {limit} bytes {server} accepts (SIZE)",
                converted.len()
            ),
        ));
    }
    info!(
        queue_id = %job.queue_id,
        server = %server,
        size = job.size,
        converted = converted.len(),
        "8-bit message converted to 7 bits (quoted-printable/base64): the server does not offer 8BITMIME"
    );
    Ok(converted)
}

/// One connection in its transaction phase.
pub struct Pipeline {
    reader: ReadHalf<BoxStream>,
    chunks: mpsc::Sender<Vec<u8>>,
    progress: mpsc::UnboundedReceiver<io::Result<usize>>,
    decoder: ReplyDecoder,
    /// Where it goes.
    pub dest: Destination,
    /// The thread host of the jobs it serves, for `Idle`.
    thread_host: String,
    remote: String,
    timeouts: SmtpConfig,
    ledger: Ledger<Body>,
    /// The body being written, taken from the ledger.
    body: Option<Streaming>,
    queued_total: u64,
    written_total: u64,
    last_progress: Instant,
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
            tls = established.tls.as_deref().unwrap_or(match established.tls_fallback {
                Some(_) => "none (clear text after a failed handshake)",
                None => "none",
            }),
            pipelining = established.ext.pipelining,
            chunking = established.ext.chunking,
            size = established.ext.size_limit().unwrap_or(0),
            "session open"
        );
        let ledger = Ledger::new(
            established.ext,
            established.remote.clone(),
            established.tls,
            timeouts.window.bytes(),
        );
        Pipeline {
            reader,
            chunks,
            progress,
            decoder: established.decoder,
            dest,
            thread_host,
            remote: established.remote,
            timeouts: timeouts.clone(),
            ledger,
            body: None,
            queued_total: 0,
            written_total: 0,
            last_progress: Instant::now(),
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
            if !self.ledger.quitting() {
                self.start_transactions(agent).await?;
            }
            let quiet = self.ledger.is_quiet();
            if quiet && self.ledger.quitting() {
                return Ok(SessionEnd::Done);
            }
            if quiet {
                let elsewhere = agent.next_destination().is_some();
                let idle_over =
                    idle_since.is_some_and(|since| since.elapsed() >= self.timeouts.idle_timeout);
                if elsewhere || agent.stopping || idle_over {
                    self.ledger.quit();
                    continue;
                }
                if idle_since.is_none() {
                    idle_since = Some(Instant::now());
                    agent.idle(Some(self.thread_host.clone())).await?;
                }
            } else {
                idle_since = None;
            }
            let deadline = match (self.ledger.awaiting(), idle_since) {
                (Some(awaited), _) => self.last_progress + self.timeout_for(awaited),
                (None, Some(since)) => since + self.timeouts.idle_timeout,
                // Nothing awaited, nothing idle: only writing is going on,
                // and the writer has its own timeout.
                (None, None) => Instant::now() + Duration::from_secs(3600),
            };
            let writable = self.body.is_some() || self.ledger.can_write();
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
                                if let Some(awaited) = self.ledger.awaiting() {
                                    debug!(server = %self.remote, kind = awaited.describe(), %reply, "reply");
                                }
                                match self.ledger.on_reply(reply) {
                                    Ok(decisions) => self.apply(agent, decisions).await?,
                                    Err(error) => return self.lost(agent, error).await,
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
                    let Some(awaited) = self.ledger.awaiting() else {
                        // The idle time is over; the top of the loop says QUIT.
                        continue;
                    };
                    // (After QUIT with nothing owed, `lost` ends cleanly.)
                    let waiting_for = awaited.describe();
                    return self.lost(agent, SmtpError::Timeout { waiting_for }).await;
                }
            }
        }
    }

    /// The deadline for each reply (RFC 5321 §4.5.3.2), from `[smtp]`.
    fn timeout_for(&self, awaited: Awaited) -> Duration {
        let t = &self.timeouts;
        match awaited {
            Awaited::Rset | Awaited::Mail => t.mail_timeout,
            Awaited::Rcpt(_) => t.rcpt_timeout,
            Awaited::Data => t.data_init_timeout,
            Awaited::DataEnd { .. } | Awaited::Bdat => t.data_term_timeout,
            Awaited::Quit => QUIT_WAIT.min(t.mail_timeout),
        }
    }

    /// Starts as many of the agent's plans for this destination as the
    /// ledger takes now. A job the server cannot take, or whose message
    /// cannot be read, is decided here without a word to the server.
    async fn start_transactions(&mut self, agent: &mut Agent) -> Result<(), AgentError> {
        while self.ledger.may_start() {
            let Some(plan) = agent.take_plan_for(&self.dest) else {
                return Ok(());
            };
            let Some(entry) = agent.jobs.get(&plan.job) else {
                continue;
            };
            let job = &entry.job;
            if let Err(delivery) = envelope::check(job, self.ledger.extensions(), &self.remote) {
                let delivery = delivery.with_remote_mta(self.remote.clone());
                for pos in plan.rcpts {
                    agent.report(plan.job, pos, delivery.clone()).await?;
                }
                continue;
            }
            // Verified before a word of this transaction goes out
            // (docs/agent-protocol.md, rule 6).
            let file = match open_message(job) {
                Ok(file) => file,
                Err(MessageError::Damaged(why)) => {
                    agent.damaged(plan.job, plan.rcpts, why).await?;
                    continue;
                }
                Err(e @ MessageError::Unreadable(_)) => {
                    warn!(queue_id = %job.queue_id, error = %e, "cannot read the message");
                    let delivery = e.deferral();
                    for pos in plan.rcpts {
                        agent.report(plan.job, pos, delivery.clone()).await?;
                    }
                    continue;
                }
            };
            let (body, size) = if envelope::needs_downgrade(job, self.ledger.extensions()) {
                match downgrade(job, file, &self.remote, self.ledger.extensions()) {
                    Ok(converted) => {
                        let size = converted.len() as u64;
                        (Body::Converted(std::io::Cursor::new(converted)), size)
                    }
                    Err(delivery) => {
                        let delivery = delivery.with_remote_mta(self.remote.clone());
                        for pos in plan.rcpts {
                            agent.report(plan.job, pos, delivery.clone()).await?;
                        }
                        continue;
                    }
                }
            } else {
                (Body::File(file), job.size)
            };
            if let Err(e) = self.ledger.start_sized(job, &plan.rcpts, body, size) {
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

    /// The next chunk for the writer: what the ledger lets go, in order,
    /// up to [`CHUNK`] bytes, with the message bodies read from the spool
    /// (and dot-stuffed for DATA) as their turn comes.
    fn fill_chunk(&mut self) -> Result<Vec<u8>, SmtpError> {
        let mut out = Vec::with_capacity(CHUNK + 1024);
        while out.len() < CHUNK {
            let Some(body) = &mut self.body else {
                match self.ledger.next_write() {
                    None => break,
                    Some(Write::Command(bytes)) => out.extend_from_slice(&bytes),
                    Some(Write::Body {
                        txn,
                        body,
                        size,
                        dot_stuffed,
                    }) => {
                        self.body = Some(Streaming {
                            txn,
                            file: body,
                            remaining: size,
                            stuffer: dot_stuffed.then(DotStuffer::new),
                        });
                    }
                }
                continue;
            };
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
                let Some(body) = self.body.take() else {
                    break;
                };
                if let Some(stuffer) = body.stuffer {
                    stuffer.finish(&mut out);
                }
                let end = self.queued_total + out.len() as u64;
                self.ledger.body_written(body.txn, end);
            }
        }
        self.queued_total += out.len() as u64;
        Ok(out)
    }

    /// Passes the ledger's decisions on to the agent, in order.
    async fn apply(
        &mut self,
        agent: &mut Agent,
        decisions: Vec<Decision>,
    ) -> Result<(), AgentError> {
        for decision in decisions {
            match decision {
                Decision::Outcome {
                    job,
                    rcpt,
                    delivery,
                } => agent.report(job, rcpt, delivery).await?,
                Decision::Retry { job, rcpts } => {
                    debug!(job = %job, count = rcpts.len(), "too many recipients: the rest go in the next transaction");
                    agent.plans.push_front(Plan { job, rcpts });
                }
                Decision::MaybeDuplicate { job, recipients } => {
                    let queue_id = agent
                        .jobs
                        .get(&job)
                        .map(|e| e.job.queue_id.clone())
                        .unwrap_or_default();
                    warn!(
                        queue_id = %queue_id,
                        server = %self.remote,
                        recipients,
                        "connection lost after the end of data, before its reply: the message may be delivered twice"
                    );
                }
            }
        }
        Ok(())
    }

    /// The connection is gone: every recipient in flight is deferred.
    async fn lost(
        &mut self,
        agent: &mut Agent,
        error: SmtpError,
    ) -> Result<SessionEnd, AgentError> {
        // The writer reports each chunk right after the write returns, in
        // the same turn: what it wrote before the failure is in the
        // channel, even if the failure was seen first.
        while let Ok(progress) = self.progress.try_recv() {
            if let Ok(n) = progress {
                self.written_total += n as u64;
            }
        }
        self.body = None;
        match self.ledger.lost(error.delivery(), self.written_total) {
            Loss::Clean => Ok(SessionEnd::Done),
            Loss::Idle => {
                info!(server = %self.remote, detail = %error, "connection closed while idle");
                Ok(SessionEnd::Done)
            }
            Loss::InFlight {
                transactions,
                decisions,
            } => {
                warn!(server = %self.remote, error = %error, in_flight = transactions, "session failed");
                self.apply(agent, decisions).await?;
                Ok(SessionEnd::Lost {
                    productive: self.ledger.completed() > 0,
                    error,
                })
            }
        }
    }
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
