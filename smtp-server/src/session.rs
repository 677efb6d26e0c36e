//! One SMTP session (RFC 5321) as a state machine.
//!
//! The states are [`Phase`]s, moved by value through each command so that
//! a transaction, once ended (by its message, RSET, EHLO or a failure),
//! cannot be used again. What the session waits for decides its timeout
//! ([`Wait`] and [`SessionLimits::timeout`]: the one table of them).
//!
//! Pipelining (RFC 2920): the session answers every complete command it
//! has buffered, in order, into one output buffer, and writes that buffer
//! only when it must wait for the client — so a pipelined group gets its
//! replies in one write. A message's final reply waits for its commit.
//!
//! This file is the command dispatch and the states; two exchanges that
//! take over the connection for a while have their own modules: `sasl`
//! (AUTH and its challenges) and `intake` (DATA and BDAT text into the
//! spool, and the end of data).

mod intake;
mod sasl;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use skein_daemon::Shutdown;
use skein_smtp_codec::server::{CommandLines, LineEnd, LineEvent, ServerCommand};
use skein_smtp_codec::{BodyType, Command, CommandError, Extensions, MailParams, RcptParams};
use skein_spool::Recipient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Server;
use crate::conn::Conn;
use crate::error::SessionEnd;
use crate::policy::{Refusal, Verdict};
use crate::recipients;
use crate::sink::MessageSink;
use crate::stats::MilterVerdict;

/// How much the session asks the socket for at a time.
const READ_CHUNK: usize = 64 * 1024;

/// The limits of a session, from `[smtpd]`.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// `smtpd.max_line_length`: commands and message text lines, CRLF
    /// included.
    pub max_line: usize,
    /// `smtpd.max_message_size`.
    pub max_message_size: u64,
    /// `smtpd.max_recipients`.
    pub max_recipients: usize,
    /// `smtpd.max_errors`.
    pub max_errors: u32,
    /// `smtpd.command_timeout`.
    pub command_timeout: Duration,
    /// `smtpd.data_timeout`.
    pub data_timeout: Duration,
    /// `smtpd.stress_command_timeout`.
    pub stress_command_timeout: Duration,
    /// `smtpd.stress_max_errors`.
    pub stress_max_errors: u32,
    /// `smtpd.min_data_rate`, bytes per second; 0 = none.
    pub min_data_rate: u32,
}

/// Which service a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// `smtpd.listen`: mail from anyone, relaying by network.
    Smtp,
    /// `smtpd.submission`: STARTTLS, then AUTH, then mail.
    Submission,
}

/// What the session is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The next command (or the client reading our replies).
    Command,
    /// More message text, after `354` or inside a `BDAT` chunk.
    Text,
}

impl SessionLimits {
    /// The per-state timeout table (RFC 5321 §4.5.3.2: 5 minutes for a
    /// command, 10 for a data block, by default); under stress, neither is
    /// longer than `stress_command_timeout`.
    pub fn timeout(&self, wait: Wait, stressed: bool) -> Duration {
        let normal = match wait {
            Wait::Command => self.command_timeout,
            Wait::Text => self.data_timeout,
        };
        if stressed {
            normal.min(self.stress_command_timeout)
        } else {
            normal
        }
    }

    /// Erroneous commands tolerated, lower under stress.
    pub fn max_errors(&self, stressed: bool) -> u32 {
        if stressed {
            self.max_errors.min(self.stress_max_errors)
        } else {
            self.max_errors
        }
    }

    /// When a wait must end.
    ///
    /// - A command: `since` (when the session began to wait for it) plus
    ///   the command timeout. The whole line must come in that time, so a
    ///   client trickling one byte at a time cannot stretch it.
    /// - Message text: each read within the data timeout of the last
    ///   (`now`), and, when `min_data_rate` is set, all of it within one
    ///   data timeout plus its size at that rate from the start of the
    ///   text (`since`, with `received` bytes read since). The second
    ///   deadline is what stops a sender that keeps the link just barely
    ///   alive.
    ///
    /// Returns the deadline and whether it is the rate's.
    pub fn deadline(
        &self,
        wait: Wait,
        stressed: bool,
        since: tokio::time::Instant,
        now: tokio::time::Instant,
        received: u64,
    ) -> (tokio::time::Instant, bool) {
        let timeout = self.timeout(wait, stressed);
        match wait {
            Wait::Command => (since + timeout, false),
            Wait::Text => {
                let idle = now + timeout;
                if self.min_data_rate == 0 {
                    return (idle, false);
                }
                let earned = Duration::from_secs(received / u64::from(self.min_data_rate));
                let rate = since + self.data_timeout + earned;
                if rate < idle {
                    (rate, true)
                } else {
                    (idle, false)
                }
            }
        }
    }
}

/// The client as it introduced itself.
#[derive(Debug, Clone)]
struct Client {
    helo: String,
    esmtp: bool,
}

/// A mail transaction, from MAIL to the end of its message.
#[derive(Debug)]
struct Transaction {
    sender: String,
    params: MailParams,
    recipients: Vec<Recipient>,
    rcpt_attempts: u32,
    /// The message being received in BDAT chunks, once the first came.
    chunks: Option<MessageSink>,
}

/// The session's states.
#[derive(Debug)]
enum Phase {
    /// Connected; no EHLO or HELO yet.
    Fresh,
    /// Greeted; no transaction.
    Ready(Client),
    /// MAIL accepted; recipients and possibly BDAT chunks coming.
    Mail(Client, Box<Transaction>),
}

impl Phase {
    /// The state after RSET or the end of a transaction.
    fn reset(self) -> Phase {
        match self {
            Phase::Fresh => Phase::Fresh,
            Phase::Ready(c) | Phase::Mail(c, _) => Phase::Ready(c),
        }
    }
}

/// Whether to go on after a command.
#[derive(Debug)]
enum Flow {
    Continue,
    Close(SessionEnd),
}

/// One command line as it came off the wire.
enum Event {
    Line(Vec<u8>, LineEnd),
    TooLong,
}

/// A session on a client connection.
pub struct Session {
    server: Arc<Server>,
    stream: Conn,
    /// The TLS version and cipher once STARTTLS has succeeded.
    tls: Option<String>,
    port: Port,
    /// The user, once AUTH succeeded.
    authenticated: Option<String>,
    /// The conversation with this listener's content filters, from the
    /// first MAIL on (`None` without filters, or before it).
    filters: Option<skein_milter::filter::Session>,
    peer: IpAddr,
    input: Vec<u8>,
    pos: usize,
    out: Vec<u8>,
    lines: CommandLines,
    errors: u32,
    messages: u32,
    shutdown: Shutdown,
    /// When the session began to wait for the command it is reading, and
    /// the count of stress onsets then; `None` once a line is complete.
    command_since: Option<(tokio::time::Instant, u64)>,
    /// When the message text (or BDAT chunk) being read began, the byte
    /// count read by then, and the count of stress onsets then; `None`
    /// outside text.
    text_since: Option<(tokio::time::Instant, u64, u64)>,
    /// Bytes read from the client in all.
    received: u64,
    /// The server's stress state, watched while the session waits.
    stress: tokio::sync::watch::Receiver<crate::gate::Stress>,
}

impl Session {
    /// A session with the client at `peer`.
    pub fn new(
        server: Arc<Server>,
        stream: Conn,
        peer: IpAddr,
        port: Port,
        shutdown: Shutdown,
    ) -> Session {
        let max_line = server.limits.max_line;
        let stress = server.gate.subscribe();
        Session {
            server,
            stream,
            tls: None,
            port,
            authenticated: None,
            filters: None,
            peer,
            input: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            out: Vec::with_capacity(4096),
            lines: CommandLines::new(max_line),
            errors: 0,
            messages: 0,
            shutdown,
            command_since: None,
            text_since: None,
            received: 0,
            stress,
        }
    }

    /// Messages accepted in this session so far.
    pub fn messages(&self) -> u32 {
        self.messages
    }

    /// Runs the session to its end and says why it ended.
    pub async fn run(&mut self) -> SessionEnd {
        let greeting = format!("{} ESMTP skein", self.server.hostname);
        self.push(220, None, &greeting);
        let mut phase = Phase::Fresh;
        loop {
            let (used, event) = self.lines.next(&self.input[self.pos..]);
            let event = event.map(|e| match e {
                LineEvent::Line(line, end) => Event::Line(line.to_vec(), end),
                LineEvent::TooLong => Event::TooLong,
            });
            self.pos += used;
            let Some(event) = event else {
                if let Err(end) = self.need_more(Wait::Command).await {
                    return end;
                }
                continue;
            };
            self.command_since = None;
            let (next, flow) = self.handle(phase, event).await;
            phase = next;
            if let Flow::Close(end) = flow {
                // Best effort: the last replies (221, 421) may not get out
                // to a client that is already gone.
                let _ = self.flush().await;
                // The content filters hear the session is over (each
                // write bounded by its command timeout).
                if let Some(filters) = self.filters.take() {
                    filters.close().await;
                }
                // TLS sends close_notify here: bounded like any write.
                let limit = self.limit(Wait::Command);
                let _ = tokio::time::timeout(limit, self.stream.shutdown()).await;
                return end;
            }
        }
    }

    async fn handle(&mut self, phase: Phase, event: Event) -> (Phase, Flow) {
        let line = match event {
            Event::TooLong => {
                return (
                    phase,
                    self.refuse(Refusal::new(500, "5.5.2", "Line too long")),
                );
            }
            Event::Line(_, LineEnd::BareLf) => {
                let r = Refusal::new(500, "5.5.2", "Bare LF in command; lines end with CRLF");
                return (phase, self.refuse(r));
            }
            Event::Line(line, LineEnd::Crlf) => line,
        };
        if line.iter().any(|&b| b == 0 || b == b'\r') || std::str::from_utf8(&line).is_err() {
            let r = Refusal::new(500, "5.5.2", "Syntax error: invalid characters in command");
            return (phase, self.refuse(r));
        }
        let command = match ServerCommand::parse(&line) {
            Ok(c) => c,
            Err(e) => {
                let r = match e {
                    CommandError::UnknownCommand(_) => {
                        Refusal::new(500, "5.5.1", "Command unrecognized")
                    }
                    CommandError::UnknownParameter(p) => {
                        Refusal::new(555, "5.5.4", format!("Unsupported parameter {p}"))
                    }
                    CommandError::BadParameter(p) => {
                        Refusal::new(501, "5.5.4", format!("Invalid parameter {p}"))
                    }
                    CommandError::LineTooLong { .. } => Refusal::new(500, "5.5.2", "Line too long"),
                    CommandError::Syntax(why) | CommandError::Unrenderable(why) => {
                        Refusal::new(501, "5.5.4", format!("Syntax error: {why}"))
                    }
                };
                return (phase, self.refuse(r));
            }
        };
        match command {
            ServerCommand::Core(Command::Ehlo { domain }) => {
                let reply = self.ehlo_extensions().to_reply(&self.server.hostname);
                reply.write_to(&mut self.out);
                let client = Client {
                    helo: domain,
                    esmtp: true,
                };
                (Phase::Ready(client), Flow::Continue)
            }
            ServerCommand::Core(Command::Helo { domain }) => {
                let text = self.server.hostname.clone();
                self.push(250, None, &text);
                let client = Client {
                    helo: domain,
                    esmtp: false,
                };
                (Phase::Ready(client), Flow::Continue)
            }
            ServerCommand::Core(Command::Mail {
                reverse_path,
                params,
            }) => self.mail(phase, reverse_path, params).await,
            ServerCommand::Core(Command::Rcpt {
                forward_path,
                params,
            }) => self.rcpt(phase, forward_path, params).await,
            ServerCommand::Core(Command::Data) => self.data(phase).await,
            ServerCommand::Core(Command::Bdat { size, last }) => self.bdat(phase, size, last).await,
            ServerCommand::Core(Command::Rset) => {
                if let Some(filters) = self.filters.as_mut() {
                    filters.abort().await;
                }
                self.push(250, Some("2.0.0"), "Ok");
                (phase.reset(), Flow::Continue)
            }
            ServerCommand::Core(Command::Noop) => {
                self.push(250, Some("2.0.0"), "Ok");
                (phase, Flow::Continue)
            }
            ServerCommand::Core(Command::Quit) => {
                let text = format!("{} closing connection", self.server.hostname);
                self.push(221, Some("2.0.0"), &text);
                (phase, Flow::Close(SessionEnd::Quit))
            }
            ServerCommand::Core(Command::StartTls) => self.starttls(phase).await,
            ServerCommand::Vrfy(_) => {
                self.push(
                    252,
                    Some("2.5.0"),
                    "Cannot VRFY user, but will accept message and attempt delivery",
                );
                (phase, Flow::Continue)
            }
            ServerCommand::Expn(_) => {
                let r = Refusal::new(502, "5.5.1", "EXPN not available");
                (phase, self.refuse(r))
            }
            ServerCommand::Help => {
                self.push(
                    214,
                    Some("2.0.0"),
                    "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP",
                );
                (phase, Flow::Continue)
            }
            ServerCommand::Auth { mechanism, initial } => {
                self.auth(phase, &mechanism, initial).await
            }
        }
    }

    fn ehlo_extensions(&self) -> Extensions {
        Extensions {
            pipelining: true,
            chunking: true,
            eightbitmime: true,
            size: Some(self.server.limits.max_message_size),
            enhanced_status_codes: true,
            dsn: true,
            smtputf8: true,
            starttls: self.server.tls.is_some() && self.tls.is_none(),
            other: if self.offers_auth() {
                vec!["AUTH PLAIN LOGIN".to_owned()]
            } else {
                Vec::new()
            },
            ..Extensions::default()
        }
    }

    /// STARTTLS (RFC 3207): 220, the handshake, and a fresh start — the
    /// client must say EHLO again, and nothing it said before counts.
    async fn starttls(&mut self, phase: Phase) -> (Phase, Flow) {
        let acceptor = match (&self.server.tls, &self.tls) {
            (None, _) => {
                let r = Refusal::new(502, "5.5.1", "STARTTLS not available");
                return (phase, self.refuse(r));
            }
            (Some(_), Some(_)) => {
                let r = Refusal::new(503, "5.5.1", "TLS already active");
                return (phase, self.refuse(r));
            }
            (Some(config), None) => tokio_rustls::TlsAcceptor::from(Arc::clone(config)),
        };
        self.push(220, Some("2.0.0"), "Ready to start TLS");
        if let Err(end) = self.flush().await {
            return (phase, Flow::Close(end));
        }
        // Whatever the client pipelined behind STARTTLS came in the clear:
        // taking it as said under TLS is the CVE-2011-0411 injection.
        if self.pos < self.input.len() {
            tracing::info!(
                client = %self.peer,
                bytes = self.input.len() - self.pos,
                "discarding input pipelined after STARTTLS"
            );
        }
        self.input.clear();
        self.pos = 0;
        let Conn::Plain(tcp) = std::mem::replace(&mut self.stream, Conn::Gone) else {
            return (
                Phase::Fresh,
                Flow::Close(SessionEnd::Tls("not a plain connection".into())),
            );
        };
        let limit = self.limit(Wait::Command);
        match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => {
                self.server.stats.tls(true);
                let described = crate::tls::describe(stream.get_ref().1);
                tracing::debug!(client = %self.peer, tls = described.as_str(), "TLS established");
                self.tls = Some(described);
                self.stream = Conn::Tls(Box::new(stream));
                (Phase::Fresh, Flow::Continue)
            }
            Ok(Err(e)) => {
                self.server.stats.tls(false);
                (Phase::Fresh, Flow::Close(SessionEnd::Tls(e.to_string())))
            }
            Err(_) => {
                self.server.stats.tls(false);
                (Phase::Fresh, Flow::Close(SessionEnd::Timeout))
            }
        }
    }

    async fn mail(
        &mut self,
        phase: Phase,
        reverse_path: String,
        params: MailParams,
    ) -> (Phase, Flow) {
        let client = match phase {
            Phase::Fresh => {
                let r = Refusal::new(503, "5.5.1", "Send EHLO or HELO first");
                return (phase, self.refuse(r));
            }
            Phase::Mail(..) => {
                let r = Refusal::new(503, "5.5.1", "Nested MAIL command");
                return (phase, self.refuse(r));
            }
            Phase::Ready(client) => client,
        };
        let refusal = if self.port == Port::Submission && self.authenticated.is_none() {
            Some(Refusal::new(530, "5.7.0", "Authentication required"))
        } else if !client.esmtp && params != MailParams::default() {
            Some(Refusal::new(555, "5.5.4", "MAIL parameters need EHLO"))
        } else if params.auth.is_some() && self.port != Port::Submission {
            // RFC 4954 §5: a parameter of the AUTH extension, which only
            // the submission port offers. There it is accepted and, as
            // skein does not pass it on, needs no more.
            Some(Refusal::new(
                555,
                "5.5.4",
                "AUTH= needs the AUTH extension (submission port)",
            ))
        } else if params.body == Some(BodyType::BinaryMime) {
            Some(Refusal::new(
                555,
                "5.5.4",
                "BODY=BINARYMIME is not supported",
            ))
        } else if params
            .size
            .is_some_and(|size| size > self.server.limits.max_message_size)
        {
            Some(Refusal::new(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            ))
        } else {
            match self
                .server
                .policy
                .check_sender(&reverse_path, params.smtputf8)
            {
                Verdict::Refuse(r) => Some(r),
                Verdict::Accept(_) => None,
            }
        };
        if let Some(r) = refusal {
            return (Phase::Ready(client), self.refuse(r));
        }
        if let Some(r) = self.filter_mail(&client.helo, &reverse_path).await {
            return (Phase::Ready(client), self.refuse(r));
        }
        self.push(250, Some("2.1.0"), "Ok");
        let tx = Box::new(Transaction {
            sender: reverse_path,
            params,
            recipients: Vec::new(),
            rcpt_attempts: 0,
            chunks: None,
        });
        (Phase::Mail(client, tx), Flow::Continue)
    }

    /// RCPT TO: the recipient limit, the relay policy, then (for a local
    /// domain, with `smtpd.verify_local_recipients`) the router's verdict.
    /// Awaited before the next command is looked at, so pipelined RCPTs
    /// are still answered in order.
    async fn rcpt(
        &mut self,
        phase: Phase,
        forward_path: String,
        params: RcptParams,
    ) -> (Phase, Flow) {
        let (client, mut tx) = match phase {
            Phase::Mail(client, tx) if tx.chunks.is_none() => (client, tx),
            Phase::Mail(..) => {
                let r = Refusal::new(503, "5.5.1", "RCPT after BDAT");
                return (phase, self.refuse(r));
            }
            _ => {
                let r = Refusal::new(503, "5.5.1", "Need MAIL before RCPT");
                return (phase, self.refuse(r));
            }
        };
        tx.rcpt_attempts = tx.rcpt_attempts.saturating_add(1);
        if tx.recipients.len() >= self.server.limits.max_recipients {
            // Not counted as an error: RFC 5321 §4.5.3.1.10 makes 452 the
            // normal way to tell a client to send the rest in another
            // transaction.
            self.push(452, Some("4.5.3"), "Too many recipients");
            return (Phase::Mail(client, tx), Flow::Continue);
        }
        if !client.esmtp && params != RcptParams::default() {
            let r = Refusal::new(555, "5.5.4", "RCPT parameters need EHLO");
            return (Phase::Mail(client, tx), self.refuse(r));
        }
        let verdict = self.server.policy.check_recipient(
            &forward_path,
            tx.params.smtputf8,
            self.peer,
            self.authenticated.is_some(),
        );
        match verdict {
            Verdict::Refuse(r) => (Phase::Mail(client, tx), self.refuse(r)),
            Verdict::Accept(address) => {
                if let Some(check) = &self.server.recipients {
                    match check.verify(&address, tx.params.smtputf8).await {
                        recipients::Outcome::Accept => {}
                        recipients::Outcome::Refuse(failure) => {
                            tracing::info!(
                                client = %self.peer,
                                rcpt = address.as_str(),
                                status = %failure.status,
                                diagnostic = failure.diagnostic.as_str(),
                                "recipient refused: the router would not deliver it"
                            );
                            let text = recipients::refusal_text(&address, &failure.diagnostic);
                            let r = Refusal::new(550, failure.status.to_string(), text);
                            return (Phase::Mail(client, tx), self.refuse(r));
                        }
                        recipients::Outcome::Unavailable(why) => {
                            tracing::warn!(
                                client = %self.peer,
                                rcpt = address.as_str(),
                                error = why.as_str(),
                                "cannot check a local recipient; told the client to try again later"
                            );
                            // Not the client's error: not counted against
                            // smtpd.max_errors.
                            let text = format!(
                                "<{address}>: Temporary failure looking up the recipient; try again later"
                            );
                            self.push(451, Some("4.3.0"), &text);
                            return (Phase::Mail(client, tx), Flow::Continue);
                        }
                    }
                }
                if let Some(r) = self.filter_rcpt(&client.helo, &tx.sender, &address).await {
                    return (Phase::Mail(client, tx), self.refuse(r));
                }
                tx.recipients.push(Recipient {
                    address,
                    notify: params.notify,
                    orcpt: params.orcpt.map(|o| o.to_param()),
                });
                self.push(250, Some("2.1.5"), "Ok");
                (Phase::Mail(client, tx), Flow::Continue)
            }
        }
    }

    /// The client's name for the filters: its address in brackets (skein
    /// does not look clients up in the reverse DNS).
    fn client_name(&self) -> String {
        format!("[{}]", self.peer)
    }

    /// What the content filters learn of this session.
    fn filter_context<'a>(
        &'a self,
        client_name: &'a str,
        helo: &'a str,
        queue_id: &'a str,
    ) -> skein_milter::filter::Context<'a> {
        skein_milter::filter::Context {
            peer: self.peer,
            client_name,
            helo,
            hostname: &self.server.hostname,
            queue_id,
            auth: self.authenticated.as_deref(),
            tls: self.tls.as_deref(),
        }
    }

    /// MAIL for this listener's content filters (connecting them at the
    /// session's first): their refusal, if one refused.
    async fn filter_mail(&mut self, helo: &str, sender: &str) -> Option<Refusal> {
        let milters = self.server.milters.on(self.port);
        if milters.is_empty() {
            return None;
        }
        let mut filters = self
            .filters
            .take()
            .unwrap_or_else(|| skein_milter::filter::Session::new(milters));
        let client_name = self.client_name();
        let ctx = self.filter_context(&client_name, helo, "");
        let step = filters.mail(&ctx, sender).await;
        self.server.stats.milter_failures(filters.take_failures());
        self.filters = Some(filters);
        match step {
            skein_milter::filter::Step::Go => None,
            skein_milter::filter::Step::Refuse(reply) => {
                self.server.stats.milter(MilterVerdict::Refused);
                Some(crate::milter::refusal(reply))
            }
        }
    }

    /// RCPT for the content filters: their refusal of this recipient.
    async fn filter_rcpt(&mut self, helo: &str, sender: &str, rcpt: &str) -> Option<Refusal> {
        let mut filters = self.filters.take()?;
        let client_name = self.client_name();
        let ctx = self.filter_context(&client_name, helo, "");
        let step = filters.rcpt(&ctx, sender, rcpt).await;
        self.server.stats.milter_failures(filters.take_failures());
        self.filters = Some(filters);
        match step {
            skein_milter::filter::Step::Go => None,
            skein_milter::filter::Step::Refuse(reply) => {
                self.server.stats.milter(MilterVerdict::RcptRefused);
                tracing::info!(client = %self.peer, rcpt, code = reply.code, text = reply.text.as_str(), "recipient refused by a content filter");
                Some(crate::milter::refusal(reply))
            }
        }
    }

    /// Queues a one-line reply.
    fn push(&mut self, code: u16, enhanced: Option<&str>, text: &str) {
        use std::fmt::Write as _;
        let mut line = String::with_capacity(text.len() + 16);
        let _ = match enhanced {
            Some(e) => write!(line, "{code} {e} {text}\r\n"),
            None => write!(line, "{code} {text}\r\n"),
        };
        self.out.extend_from_slice(line.as_bytes());
    }

    /// Queues a refusal and counts it; past `smtpd.max_errors`, adds the
    /// 421 and ends the session.
    fn refuse(&mut self, r: Refusal) -> Flow {
        self.push(r.code, Some(&r.enhanced), &r.text);
        self.errors += 1;
        if self.errors >= self.server.limits.max_errors(self.server.gate.stressed()) {
            let text = format!(
                "{} Too many errors; closing connection",
                self.server.hostname
            );
            self.push(421, Some("4.7.0"), &text);
            return Flow::Close(SessionEnd::TooManyErrors);
        }
        Flow::Continue
    }

    /// Writes the queued replies, then reads more input.
    async fn need_more(&mut self, wait: Wait) -> Result<(), SessionEnd> {
        self.flush().await?;
        self.fill(wait).await
    }

    async fn flush(&mut self) -> Result<(), SessionEnd> {
        if self.out.is_empty() {
            return Ok(());
        }
        let limit = self.limit(Wait::Command);
        match tokio::time::timeout(limit, self.stream.write_all(&self.out)).await {
            Ok(Ok(())) => {
                self.out.clear();
                Ok(())
            }
            Ok(Err(e)) => Err(SessionEnd::Io(e)),
            Err(_) => Err(SessionEnd::Timeout),
        }
    }

    /// The timeout of a wait now (shorter under stress).
    fn limit(&self, wait: Wait) -> Duration {
        self.server
            .limits
            .timeout(wait, self.server.gate.stressed())
    }

    /// Reads more input, within the wait's deadline
    /// ([`SessionLimits::deadline`]). Should stress begin while it waits,
    /// the deadline is shortened at once, and stays short until the wait
    /// ends even if the load has fallen by the time the session looks
    /// (see the gate's module header).
    async fn fill(&mut self, wait: Wait) -> Result<(), SessionEnd> {
        if self.pos > 0 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        if self.input.capacity() - self.input.len() < READ_CHUNK / 2 {
            self.input.reserve(READ_CHUNK);
        }
        let now = tokio::time::Instant::now();
        let onsets = self.stress.borrow().onsets;
        let (since, onsets_then) = match wait {
            Wait::Command => {
                self.text_since = None;
                *self.command_since.get_or_insert((now, onsets))
            }
            Wait::Text => {
                let (at, _, then) = *self.text_since.get_or_insert((now, self.received, onsets));
                (at, then)
            }
        };
        let text_start = self.text_since.map_or(self.received, |(_, at, _)| at);
        let mut watching = true;
        let read = loop {
            let stressed = self.stress.borrow_and_update().applies_since(onsets_then);
            let (deadline, by_rate) =
                self.server
                    .limits
                    .deadline(wait, stressed, since, now, self.received - text_start);
            tokio::select! {
                read = self.stream.read_buf(&mut self.input) => break Some(read),
                () = tokio::time::sleep_until(deadline) => {
                    let text = if by_rate {
                        format!(
                            "{} Message text too slow (under {} bytes a second); closing connection",
                            self.server.hostname, self.server.limits.min_data_rate
                        )
                    } else {
                        format!("{} Timeout; closing connection", self.server.hostname)
                    };
                    self.push(421, Some("4.4.2"), &text);
                    let _ = self.flush().await;
                    return Err(if by_rate { SessionEnd::TooSlow } else { SessionEnd::Timeout });
                }
                changed = self.stress.changed(), if watching => {
                    // The gate lives as long as the server: an error means
                    // it is going, and the deadline stays as it is.
                    watching = changed.is_ok();
                }
                () = self.shutdown.wait() => break None,
            }
        };
        match read {
            None => {
                let text = format!("{} Service shutting down", self.server.hostname);
                self.push(421, Some("4.3.2"), &text);
                let _ = self.flush().await;
                Err(SessionEnd::Shutdown)
            }
            Some(Ok(0)) => Err(SessionEnd::PeerClosed),
            Some(Ok(n)) => {
                self.received += n as u64;
                Ok(())
            }
            Some(Err(e)) => Err(SessionEnd::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn limits() -> SessionLimits {
        SessionLimits {
            max_line: 1000,
            max_message_size: 0,
            max_recipients: 100,
            max_errors: 20,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            stress_command_timeout: Duration::from_secs(10),
            stress_max_errors: 3,
            min_data_rate: 500,
        }
    }

    #[test]
    fn deadlines_table() {
        let s = Duration::from_secs;
        let start = Instant::now();
        let l = limits();
        // (wait, stressed, since, now, bytes received since, deadline
        // after start, by the rate)
        let table = [
            // A command: from when the wait began, whatever came since.
            (Wait::Command, false, s(0), s(0), 0, s(300), false),
            (Wait::Command, false, s(0), s(299), 7, s(300), false),
            (Wait::Command, true, s(0), s(5), 0, s(10), false),
            // Text: 10 minutes from the last read while the rate holds...
            (Wait::Text, false, s(0), s(0), 0, s(600), false),
            (Wait::Text, false, s(0), s(100), 1_000_000, s(700), false),
            // ...but never past one data timeout plus its size at 500 B/s.
            (Wait::Text, false, s(0), s(500), 1000, s(602), true),
            (Wait::Text, false, s(0), s(590), 0, s(600), true),
            // Under stress, 10 s from the last read.
            (Wait::Text, true, s(0), s(20), 1_000_000, s(30), false),
        ];
        for (i, (wait, stressed, since, now, received, want, by_rate)) in
            table.into_iter().enumerate()
        {
            let got = l.deadline(wait, stressed, start + since, start + now, received);
            assert_eq!(got, (start + want, by_rate), "row {i}");
        }
        let no_rate = SessionLimits {
            min_data_rate: 0,
            ..limits()
        };
        assert_eq!(
            no_rate.deadline(Wait::Text, false, start, start + s(5000), 0),
            (start + s(5600), false)
        );
        assert_eq!((l.max_errors(false), l.max_errors(true)), (20, 3));
    }
}
