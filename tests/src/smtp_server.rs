//! A scripted SMTP server for tests, and the harness that drives the real
//! `skein-smtp` binary against it.
//!
//! [`ScriptedServer`] is a real TCP server on `127.0.0.1:0`: one thread per
//! connection, blocking I/O, commands parsed with `skein-smtp-codec` (so it
//! is strict where the codec is). It answers every command with a sensible
//! default unless its [`Script`] says otherwise — any reply text (several
//! lines too), a delay before it, a reply followed by closing, or closing
//! without a word. It can announce PIPELINING, CHUNKING, SIZE, 8BITMIME,
//! DSN, SMTPUTF8 and STARTTLS (with a certificate from [`tls_config`]),
//! or refuse EHLO so that the client falls back to HELO. It records every
//! byte received and how the bytes came in reads ([`Connection::reads`]),
//! un-stuffs DATA, reassembles BDAT chunks, and keeps each accepted message
//! ([`Received`]).
//!
//! [`SmtpTest`] puts a server, a configuration file and message files in a
//! temporary directory and starts `skein-smtp` with its socket on fd 3 and
//! a fake scheduler (`skein_agent::testing::FakeScheduler`) on the other
//! end, which checks the agent keeps the protocol's rules.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConnection, StreamOwned};
use skein_agent::testing::{FakeScheduler, spawn_with_fd3};
use skein_proto::{BodyType, Job, JobId, JobRecipient, Notify, Outcome, ThreadKey};
use skein_smtp_codec::{Command, DataDecoder, Extensions};

/// What the client just did, as a script sees it.
#[derive(Debug)]
pub enum Step<'a> {
    /// A connection was accepted: the greeting is due.
    Greeting,
    /// `EHLO domain`.
    Ehlo(&'a str),
    /// `HELO domain`.
    Helo(&'a str),
    /// `STARTTLS`.
    StartTls,
    /// `MAIL FROM:<address>` (the whole command line).
    Mail(&'a str),
    /// `RCPT TO:<address>`: the address.
    Rcpt(&'a str),
    /// `DATA`.
    Data,
    /// The end of the data: the un-stuffed message.
    DataEnd(&'a [u8]),
    /// A BDAT chunk was read whole; with `last`, `message` is the whole
    /// message.
    Bdat {
        /// The chunk's size.
        size: u64,
        /// `BDAT n LAST`.
        last: bool,
        /// Every chunk of the message so far.
        message: &'a [u8],
    },
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `QUIT`.
    Quit,
    /// A line the codec does not parse.
    Unknown(&'a str),
}

/// What the server does about a [`Step`].
#[derive(Debug, Clone)]
pub enum Response {
    /// The server's default reply (see [`ScriptedServer`]).
    Default,
    /// This reply; lines separated by `\n` (each gets its CRLF), e.g.
    /// `"250-first\n250 last"`.
    Reply(String),
    /// Wait, then respond.
    Delayed(Duration, Box<Response>),
    /// This reply, then close the connection.
    ReplyAndClose(String),
    /// Close the connection without replying.
    Drop,
}

impl Response {
    /// The reply text it sends ("" for [`Response::Default`], whose text
    /// the server chooses, and for [`Response::Drop`]).
    fn text(&self) -> &str {
        match self {
            Response::Reply(text) | Response::ReplyAndClose(text) => text,
            Response::Delayed(_, inner) => inner.text(),
            Response::Default | Response::Drop => "",
        }
    }
}

/// Where a step happens.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ctx {
    /// The connection's number, from 0.
    pub connection: usize,
    /// Messages accepted on this connection so far.
    pub messages: usize,
    /// `MAIL` commands seen on this connection so far (this one included).
    pub transactions: usize,
    /// Recipients accepted in the current transaction so far.
    pub rcpts: usize,
}

/// The script: the response to each step.
pub type Script = Arc<dyn Fn(&Ctx, &Step<'_>) -> Response + Send + Sync>;

/// How the server behaves.
#[derive(Clone)]
pub struct ServerOptions {
    /// Its name, in the greeting and the EHLO reply.
    pub name: String,
    /// Announce PIPELINING.
    pub pipelining: bool,
    /// Announce CHUNKING (and take BDAT).
    pub chunking: bool,
    /// Announce SIZE with this limit (0: no fixed limit).
    pub size: Option<u64>,
    /// Announce 8BITMIME.
    pub eightbitmime: bool,
    /// Announce DSN.
    pub dsn: bool,
    /// Announce SMTPUTF8.
    pub smtputf8: bool,
    /// Announce ENHANCEDSTATUSCODES.
    pub enhanced: bool,
    /// Answer EHLO (false: `502`, forcing HELO).
    pub ehlo: bool,
    /// Offer STARTTLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The script.
    pub script: Script,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            name: "scripted.test".into(),
            pipelining: false,
            chunking: false,
            size: None,
            eightbitmime: true,
            dsn: false,
            smtputf8: false,
            enhanced: true,
            ehlo: true,
            tls: None,
            script: Arc::new(|_, _| Response::Default),
        }
    }
}

impl ServerOptions {
    /// These options with `script`.
    pub fn with_script(
        mut self,
        script: impl Fn(&Ctx, &Step<'_>) -> Response + Send + Sync + 'static,
    ) -> Self {
        self.script = Arc::new(script);
        self
    }
}

/// A message the server accepted (its final reply was 2xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The connection it came on.
    pub connection: usize,
    /// The `MAIL FROM` line.
    pub mail_from: String,
    /// The recipients accepted.
    pub rcpt_to: Vec<String>,
    /// The message, un-stuffed (DATA) or reassembled (BDAT).
    pub data: Vec<u8>,
    /// Whether it came by BDAT.
    pub chunked: bool,
    /// Whether the connection was under TLS.
    pub tls: bool,
}

/// What happened on one connection.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Every `read` that returned bytes, in order (after STARTTLS: the
    /// decrypted reads).
    pub reads: Vec<Vec<u8>>,
    /// Every command line, without CRLF.
    pub commands: Vec<String>,
    /// Whether STARTTLS succeeded.
    pub tls: bool,
    /// Whether the connection is over.
    pub closed: bool,
}

impl Connection {
    /// All bytes received, in order.
    pub fn bytes(&self) -> Vec<u8> {
        self.reads.concat()
    }
}

#[derive(Default)]
struct State {
    connections: Vec<Connection>,
    messages: Vec<Received>,
}

/// A scripted SMTP server on a loopback port, stopped when dropped.
///
/// Default replies: greeting `220 <name> ESMTP scripted`; EHLO with the
/// announced extensions; `250` to HELO, MAIL, RCPT, RSET, NOOP, a BDAT
/// chunk; `354` to DATA when a recipient was accepted (`503` without MAIL,
/// `554` without recipients); `250 2.0.0 queued as <n>` after the data;
/// `221` to QUIT, then close; `500` to anything unparsable.
pub struct ScriptedServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl ScriptedServer {
    /// Starts a server on `127.0.0.1:0`.
    pub fn start(options: ServerOptions) -> ScriptedServer {
        ScriptedServer::start_on("127.0.0.1:0".parse().expect("address"), options)
    }

    /// Starts a server on `addr` (another loopback address, or a chosen
    /// port: MX hosts all listen on `smtp.port`).
    pub fn start_on(addr: SocketAddr, options: ServerOptions) -> ScriptedServer {
        let listener = TcpListener::bind(addr).expect("bind the scripted server");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (Arc::clone(&state), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let index = {
                    let mut s = lock(&st);
                    s.connections.push(Connection::default());
                    s.connections.len() - 1
                };
                let (st, options) = (Arc::clone(&st), options.clone());
                std::thread::spawn(move || {
                    let mut handler = Handler::new(stream, index, options, Arc::clone(&st));
                    handler.run();
                    drop(handler);
                    lock(&st).connections[index].closed = true;
                });
            }
        });
        ScriptedServer { addr, state, stop }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:<port>`, as a next hop.
    pub fn nexthop(&self) -> String {
        self.addr.to_string()
    }

    /// The messages accepted so far.
    pub fn messages(&self) -> Vec<Received> {
        lock(&self.state).messages.clone()
    }

    /// The connections so far.
    pub fn connections(&self) -> Vec<Connection> {
        lock(&self.state).connections.clone()
    }

    /// Polls `cond` on the server's record until it holds or `limit`
    /// passes (a guard against hanging, not a timing assertion).
    pub fn wait_for(
        &self,
        limit: Duration,
        cond: impl Fn(&[Connection], &[Received]) -> bool,
    ) -> bool {
        let end = Instant::now() + limit;
        loop {
            {
                let s = lock(&self.state);
                if cond(&s.connections, &s.messages) {
                    return true;
                }
            }
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The stream, before or after STARTTLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
    Gone,
}

impl Conn {
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Conn::Plain(s) => Some(s),
            Conn::Tls(s) => Some(&s.sock),
            Conn::Gone => None,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
            Conn::Gone => Ok(0),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
            Conn::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
            Conn::Gone => Ok(()),
        }
    }
}

enum Mode {
    Commands,
    Data(DataDecoder),
    Bdat {
        remaining: u64,
        size: u64,
        last: bool,
    },
}

#[derive(Default)]
struct Txn {
    mail: Option<String>,
    rcpts: Vec<String>,
    data: Vec<u8>,
    chunked: bool,
}

struct Handler {
    conn: Conn,
    index: usize,
    options: ServerOptions,
    state: Arc<Mutex<State>>,
    ctx: Ctx,
    txn: Txn,
    mode: Mode,
    buf: Vec<u8>,
    tls: bool,
    queued: usize,
}

/// Whether to go on after a response.
#[derive(PartialEq, Eq)]
enum Flow {
    Go,
    Close,
}

impl Handler {
    fn new(
        stream: TcpStream,
        index: usize,
        options: ServerOptions,
        state: Arc<Mutex<State>>,
    ) -> Handler {
        Handler {
            conn: Conn::Plain(stream),
            index,
            options,
            state,
            ctx: Ctx {
                connection: index,
                ..Ctx::default()
            },
            txn: Txn::default(),
            mode: Mode::Commands,
            buf: Vec::new(),
            tls: false,
            queued: 0,
        }
    }

    fn run(&mut self) {
        let greeting = format!("220 {} ESMTP scripted", self.options.name);
        let response = (self.options.script)(&self.ctx, &Step::Greeting);
        if self.respond(response, greeting).0 == Flow::Close {
            self.close();
            return;
        }
        let mut tmp = vec![0u8; 1 << 16];
        loop {
            let n = match self.conn.read(&mut tmp) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            lock(&self.state).connections[self.index]
                .reads
                .push(tmp[..n].to_vec());
            self.buf.extend_from_slice(&tmp[..n]);
            if self.process() == Flow::Close {
                break;
            }
        }
        self.close();
    }

    fn close(&mut self) {
        if let Some(tcp) = self.conn.tcp() {
            let _ = tcp.shutdown(Shutdown::Both);
        }
        self.conn = Conn::Gone;
    }

    /// Handles everything complete in the buffer.
    fn process(&mut self) -> Flow {
        loop {
            match &mut self.mode {
                Mode::Commands => {
                    let Some(lf) = self.buf.iter().position(|&b| b == b'\n') else {
                        return Flow::Go;
                    };
                    let line: Vec<u8> = self.buf.drain(..=lf).collect();
                    if self.command(&line) == Flow::Close {
                        return Flow::Close;
                    }
                }
                Mode::Data(decoder) => {
                    let mut out = Vec::new();
                    let end = decoder.decode(&self.buf, &mut out);
                    self.txn.data.extend_from_slice(&out);
                    match end {
                        Some(n) => {
                            self.buf.drain(..n);
                            self.mode = Mode::Commands;
                            if self.data_end(false) == Flow::Close {
                                return Flow::Close;
                            }
                        }
                        None => {
                            self.buf.clear();
                            return Flow::Go;
                        }
                    }
                }
                Mode::Bdat {
                    remaining,
                    size,
                    last,
                } => {
                    let take = (*remaining).min(self.buf.len() as u64) as usize;
                    self.txn.data.extend(self.buf.drain(..take));
                    *remaining -= take as u64;
                    if *remaining > 0 {
                        return Flow::Go;
                    }
                    let (size, last) = (*size, *last);
                    self.mode = Mode::Commands;
                    if self.bdat_end(size, last) == Flow::Close {
                        return Flow::Close;
                    }
                }
            }
        }
    }

    fn command(&mut self, raw: &[u8]) -> Flow {
        let text = String::from_utf8_lossy(raw)
            .trim_end_matches(['\r', '\n'])
            .to_owned();
        lock(&self.state).connections[self.index]
            .commands
            .push(text.clone());
        let script = Arc::clone(&self.options.script);
        let parsed = Command::parse(raw);
        let name = self.options.name.clone();
        match parsed {
            Ok(Command::Ehlo { domain }) => {
                let default = if self.options.ehlo {
                    self.extensions().to_reply(&name).to_bytes()
                } else {
                    b"502 5.5.2 EHLO not implemented\r\n".to_vec()
                };
                let default = String::from_utf8_lossy(&default)
                    .trim_end()
                    .replace("\r\n", "\n");
                self.txn = Txn::default();
                self.respond(script(&self.ctx, &Step::Ehlo(&domain)), default)
                    .0
            }
            Ok(Command::Helo { domain }) => {
                self.txn = Txn::default();
                self.respond(
                    script(&self.ctx, &Step::Helo(&domain)),
                    format!("250 {name}"),
                )
                .0
            }
            Ok(Command::StartTls) => {
                let offered = self.options.tls.is_some() && !self.tls;
                let default = if offered {
                    "220 2.0.0 ready to start TLS"
                } else {
                    "454 4.7.0 TLS not available"
                };
                let (flow, reply) =
                    self.respond(script(&self.ctx, &Step::StartTls), default.into());
                if flow == Flow::Close {
                    return flow;
                }
                if offered && reply.starts_with("220") {
                    self.start_tls()
                } else {
                    Flow::Go
                }
            }
            Ok(Command::Mail { .. }) => {
                self.ctx.transactions += 1;
                self.ctx.rcpts = 0;
                self.txn = Txn::default();
                let (flow, reply) =
                    self.respond(script(&self.ctx, &Step::Mail(&text)), "250 2.1.0 ok".into());
                if reply.starts_with('2') {
                    self.txn.mail = Some(text);
                }
                flow
            }
            Ok(Command::Rcpt { forward_path, .. }) => {
                let default = if self.txn.mail.is_some() {
                    "250 2.1.5 ok"
                } else {
                    "503 5.5.1 MAIL first"
                };
                let (flow, reply) = self.respond(
                    script(&self.ctx, &Step::Rcpt(&forward_path)),
                    default.into(),
                );
                if reply.starts_with('2') {
                    self.ctx.rcpts += 1;
                    self.txn.rcpts.push(forward_path);
                }
                flow
            }
            Ok(Command::Data) => {
                let default = if self.txn.mail.is_none() {
                    "503 5.5.1 MAIL first"
                } else if self.txn.rcpts.is_empty() {
                    "554 5.5.1 no valid recipients"
                } else {
                    "354 go ahead"
                };
                let (flow, reply) = self.respond(script(&self.ctx, &Step::Data), default.into());
                if reply.starts_with("354") {
                    self.txn.data.clear();
                    self.mode = Mode::Data(DataDecoder::new());
                }
                flow
            }
            Ok(Command::Bdat { size, last }) => {
                self.txn.chunked = true;
                self.mode = Mode::Bdat {
                    remaining: size,
                    size,
                    last,
                };
                Flow::Go
            }
            Ok(Command::Rset) => {
                self.txn = Txn::default();
                self.ctx.rcpts = 0;
                self.respond(script(&self.ctx, &Step::Rset), "250 2.0.0 ok".into())
                    .0
            }
            Ok(Command::Noop) => {
                self.respond(script(&self.ctx, &Step::Noop), "250 2.0.0 ok".into())
                    .0
            }
            Ok(Command::Quit) => {
                self.respond(script(&self.ctx, &Step::Quit), "221 2.0.0 bye".into());
                Flow::Close
            }
            Err(_) => {
                self.respond(
                    script(&self.ctx, &Step::Unknown(&text)),
                    "500 5.5.2 syntax error".into(),
                )
                .0
            }
        }
    }

    fn extensions(&self) -> Extensions {
        Extensions {
            pipelining: self.options.pipelining,
            chunking: self.options.chunking,
            binarymime: false,
            eightbitmime: self.options.eightbitmime,
            size: self.options.size,
            enhanced_status_codes: self.options.enhanced,
            dsn: self.options.dsn,
            smtputf8: self.options.smtputf8,
            starttls: self.options.tls.is_some() && !self.tls,
            other: Vec::new(),
        }
    }

    fn data_end(&mut self, chunked: bool) -> Flow {
        let data = std::mem::take(&mut self.txn.data);
        let script = Arc::clone(&self.options.script);
        self.queued += 1;
        let default = format!("250 2.0.0 queued as {}", self.queued);
        let response = script(&self.ctx, &Step::DataEnd(&data));
        // Recorded before the reply goes out: whoever has seen the 250
        // finds the message in `messages()`.
        let reply = self.settle(response, default);
        self.accept_if(reply.text().starts_with('2'), data, chunked);
        self.respond(reply, String::new()).0
    }

    fn bdat_end(&mut self, size: u64, last: bool) -> Flow {
        let script = Arc::clone(&self.options.script);
        let default = if self.txn.mail.is_none() {
            "503 5.5.1 MAIL first".to_owned()
        } else if self.txn.rcpts.is_empty() {
            "554 5.5.1 no valid recipients".to_owned()
        } else if last {
            self.queued += 1;
            format!("250 2.0.0 queued as {}", self.queued)
        } else {
            format!("250 2.0.0 {size} octets received")
        };
        let data = self.txn.data.clone();
        let step = Step::Bdat {
            size,
            last,
            message: &data,
        };
        let reply = self.settle(script(&self.ctx, &step), default);
        if last {
            let valid = self.txn.mail.is_some() && !self.txn.rcpts.is_empty();
            self.accept_if(valid && reply.text().starts_with('2'), data, true);
        }
        self.respond(reply, String::new()).0
    }

    /// The response with its delays waited out and the default filled in,
    /// not yet sent.
    fn settle(&mut self, response: Response, default: String) -> Response {
        match response {
            Response::Default => Response::Reply(default),
            Response::Delayed(pause, inner) => {
                std::thread::sleep(pause);
                self.settle(*inner, default)
            }
            other => other,
        }
    }

    fn accept_if(&mut self, ok: bool, data: Vec<u8>, chunked: bool) {
        let txn = std::mem::take(&mut self.txn);
        self.ctx.rcpts = 0;
        if !ok {
            return;
        }
        self.ctx.messages += 1;
        lock(&self.state).messages.push(Received {
            connection: self.index,
            mail_from: txn.mail.unwrap_or_default(),
            rcpt_to: txn.rcpts,
            data,
            chunked: chunked || txn.chunked,
            tls: self.tls,
        });
    }

    fn start_tls(&mut self) -> Flow {
        let Some(config) = self.options.tls.clone() else {
            return Flow::Close;
        };
        // RFC 3207: whatever the client pipelined after STARTTLS is
        // discarded.
        self.buf.clear();
        let Conn::Plain(tcp) = std::mem::replace(&mut self.conn, Conn::Gone) else {
            return Flow::Close;
        };
        let Ok(session) = ServerConnection::new(config) else {
            return Flow::Close;
        };
        let mut stream = StreamOwned::new(session, tcp);
        // Drive the handshake now, so that a failure is seen here.
        while stream.conn.is_handshaking() {
            if stream.conn.complete_io(&mut stream.sock).is_err() {
                let _ = stream.sock.shutdown(Shutdown::Both);
                return Flow::Close;
            }
        }
        self.conn = Conn::Tls(Box::new(stream));
        self.tls = true;
        lock(&self.state).connections[self.index].tls = true;
        Flow::Go
    }

    /// Sends the response (or `default`); returns whether to go on and the
    /// reply text that went out ("" when none did).
    fn respond(&mut self, response: Response, default: String) -> (Flow, String) {
        match response {
            Response::Default => (self.send(&default), default),
            Response::Reply(text) => (self.send(&text), text),
            Response::Delayed(pause, inner) => {
                std::thread::sleep(pause);
                self.respond(*inner, default)
            }
            Response::ReplyAndClose(text) => {
                self.send(&text);
                (Flow::Close, text)
            }
            Response::Drop => (Flow::Close, String::new()),
        }
    }

    fn send(&mut self, text: &str) -> Flow {
        let mut bytes = Vec::new();
        for line in text.split('\n') {
            bytes.extend_from_slice(line.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        match self.conn.write_all(&bytes).and_then(|()| self.conn.flush()) {
            Ok(()) => Flow::Go,
            Err(_) => Flow::Close,
        }
    }
}

/// A server configuration with a fresh self-signed certificate for
/// `names` (rcgen), as a test server's STARTTLS certificate.
pub fn tls_config(names: &[&str]) -> Arc<rustls::ServerConfig> {
    tls_identity(names).0
}

/// [`tls_config`] and the certificate it presents (DER): for tests that
/// publish it (DANE's TLSA records).
pub fn tls_identity(names: &[&str]) -> (Arc<rustls::ServerConfig>, Vec<u8>) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let certified = rcgen::generate_simple_self_signed(names).expect("generate a certificate");
    let cert = certified.cert.der().clone();
    let der = cert.as_ref().to_vec();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("certificate and key");
    (Arc::new(config), der)
}

/// A test certificate authority (rcgen): its certificate (PEM, for
/// `smtp.ca_file`) and server configurations with chains it signed.
pub struct TestCa {
    /// The CA certificate, PEM.
    pub pem: String,
    der: rustls::pki_types::CertificateDer<'static>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    /// A fresh CA.
    pub fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "skein test CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> &[u8] {
        self.der.as_ref()
    }

    /// A server configuration presenting a certificate for `names` signed
    /// by this CA (the chain: it, then the CA).
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone(), self.der.clone()], private)
        .expect("certificate and key");
        Arc::new(config)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// An HTTPS server on `127.0.0.1:0` answering every `GET` with `status`,
/// `Content-Type: text/plain` and `body` (an MTA-STS policy host); it
/// counts the requests. Stopped when dropped.
pub struct PolicyServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    answer: Arc<Mutex<(u16, String)>>,
    stop: Arc<AtomicBool>,
}

impl PolicyServer {
    /// Starts it with `tls` and the first answer.
    pub fn start(tls: Arc<rustls::ServerConfig>, status: u16, body: &str) -> PolicyServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(Mutex::new((status, body.to_owned())));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, a, sp) = (
            Arc::clone(&requests),
            Arc::clone(&answer),
            Arc::clone(&stop),
        );
        std::thread::spawn(move || {
            while !sp.load(Ordering::SeqCst) {
                let Ok((tcp, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = tcp.set_nonblocking(false);
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(session) = ServerConnection::new(Arc::clone(&tls)) else {
                    continue;
                };
                let mut stream = StreamOwned::new(session, tcp);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                r.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                let (status, body) = a.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes());
                let _ = stream.flush();
                stream.conn.send_close_notify();
                let _ = stream.flush();
            }
        });
        PolicyServer {
            addr,
            requests,
            answer,
            stop,
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The request lines received so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes what it answers.
    pub fn answer(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap_or_else(|e| e.into_inner()) = (status, body.to_owned());
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A server configuration that offers STARTTLS and fails every handshake:
/// it has no certificate to present (a broken key setup, as on a real
/// server whose key file went missing after it announced STARTTLS).
pub fn broken_tls_config() -> Arc<rustls::ServerConfig> {
    #[derive(Debug)]
    struct NoCertificate;
    impl rustls::server::ResolvesServerCert for NoCertificate {
        fn resolve(
            &self,
            _hello: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            None
        }
    }
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(NoCertificate));
    Arc::new(config)
}

/// A scripted server, a configuration and message files in a temporary
/// directory, for running `skein-smtp` against.
pub struct SmtpTest {
    /// The temporary directory.
    pub dir: tempfile::TempDir,
    /// The configuration file.
    pub config: PathBuf,
    /// The server.
    pub server: ScriptedServer,
}

/// What [`SmtpTest::message`] wrote: where a message is in its file.
#[derive(Debug, Clone)]
pub struct MessageFile {
    /// Absolute path.
    pub path: String,
    /// Where the message starts.
    pub offset: u64,
    /// Its length.
    pub size: u64,
}

impl SmtpTest {
    /// A server with `options` and a configuration whose `[smtp]` section
    /// holds `smtp_keys` (TOML lines), followed by `extra`.
    pub fn new(options: ServerOptions, smtp_keys: &str, extra: &str) -> SmtpTest {
        let dir = crate::tempdir();
        let config = dir.path().join("skein.toml");
        let text = format!(
            "hostname = \"client.test\"\n\n[spool]\ndir = \"{}\"\n\n[smtp]\n{smtp_keys}\n\n{extra}\n",
            dir.path().join("spool").display()
        );
        std::fs::write(&config, text).expect("write the configuration");
        SmtpTest {
            dir,
            config,
            server: ScriptedServer::start(options),
        }
    }

    /// Writes `message` into a message file as the spool would (after its
    /// envelope header, so that the agent must honour the offset; with
    /// size and checksum, which the agent verifies before sending).
    pub fn message(&self, name: &str, message: &[u8]) -> MessageFile {
        let path = self.dir.path().join(name);
        let (offset, size) = skein_agent::testing::message_file(&path, message);
        MessageFile {
            path: path.display().to_string(),
            offset,
            size,
        }
    }

    /// A job `id` for `message` to `recipients` through the server as a
    /// static next hop.
    pub fn job(&self, id: u64, message: &MessageFile, recipients: &[&str]) -> Job {
        let hop = self.server.nexthop();
        Job {
            id: JobId(id),
            queue_id: format!("Q{id}"),
            thread: ThreadKey::new("smtp", hop.clone()),
            nexthop: Some(hop),
            sender: "sender@client.test".into(),
            envid: None,
            ret: None,
            body: BodyType::SevenBit,
            smtputf8: false,
            message_path: message.path.clone(),
            message_offset: message.offset,
            size: message.size,
            attempt: 0,
            recipients: recipients
                .iter()
                .zip(0u32..)
                .map(|(address, index)| JobRecipient {
                    index,
                    address: (*address).to_owned(),
                    orcpt: None,
                    notify: Notify::default(),
                })
                .collect(),
        }
    }

    /// Starts `skein-smtp` the way the scheduler does (socket on fd 3,
    /// `SKEIN_CHANNEL`, `SKEIN_CONFIG`), its log in `agent.log`, and
    /// handshakes with it as a fake scheduler.
    pub async fn agent(&self) -> (Child, FakeScheduler) {
        let log = std::fs::File::create(self.dir.path().join("agent.log")).expect("log file");
        let mut command = Process::new(crate::bin("skein-smtp"));
        command
            .env("SKEIN_CONFIG", &self.config)
            .env("SKEIN_CHANNEL", "smtp")
            .env("SKEIN_LOG", "debug")
            .env("SKEIN_LOG_FORMAT", "logfmt")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let (child, socket) = spawn_with_fd3(&mut command).expect("start skein-smtp");
        socket.set_nonblocking(true).expect("non-blocking");
        let stream = tokio::net::UnixStream::from_std(socket).expect("tokio socket");
        let scheduler = FakeScheduler::accept(stream)
            .await
            .expect("handshake with skein-smtp");
        (child, scheduler)
    }

    /// Delivers `message` to `rcpt` by MX (no next hop: the thread's host
    /// is the recipient's domain) with a fresh agent, which is then shut
    /// down; returns the recipient's outcome. Panics (with the agent's
    /// log) if none comes within a minute or the agent does not stop.
    pub async fn deliver_by_mx(&self, rcpt: &str, message: &[u8]) -> Outcome {
        let limit = Duration::from_secs(60);
        let (mut child, mut scheduler) = self.agent().await;
        let file = self.message("m", message);
        let mut job = self.job(1, &file, &[rcpt]);
        let domain = rcpt.rsplit_once('@').expect("address").1;
        job.nexthop = None;
        job.thread = ThreadKey::new("smtp", domain);
        let mut outcomes = tokio::time::timeout(limit, scheduler.deliver(job))
            .await
            .unwrap_or_else(|_| panic!("no outcome:\n{}", self.agent_log()))
            .expect("job done");
        assert!(
            shutdown(&mut child, &mut scheduler, limit).await,
            "agent did not stop cleanly:\n{}",
            self.agent_log()
        );
        outcomes.remove(0)
    }

    /// The agent's log so far.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

/// Ends the agent: `Shutdown`, then waits for its exit (killing it if it
/// takes more than `limit`); returns whether it exited 0.
pub async fn shutdown(child: &mut Child, scheduler: &mut FakeScheduler, limit: Duration) -> bool {
    let _ = scheduler
        .send(&skein_proto::SchedulerToAgent::Shutdown)
        .await;
    let drain = tokio::time::timeout(limit, scheduler.wait_closed()).await;
    let end = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return drain.is_ok() && status.success();
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One record a [`DnsResponder`] serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsRecord {
    /// `MX preference exchange`; an exchange of `"."` is a null MX.
    Mx(u16, String),
    /// `A`.
    A(std::net::Ipv4Addr),
    /// `AAAA`.
    Aaaa(std::net::Ipv6Addr),
    /// `TXT`, one string (at most 255 bytes).
    Txt(String),
}

/// A small authoritative DNS server on a loopback UDP port for tests:
/// answers MX, A and AAAA queries from a table, NXDOMAIN for names not in
/// it, and an empty NOERROR answer for a name that has no record of the
/// type asked. Real DNS over loopback, so that the agent's resolver is
/// exercised as it is in production. Stopped when dropped.
pub struct DnsResponder {
    addr: SocketAddr,
    queries: Arc<Mutex<Vec<(String, u16)>>>,
    stop: Arc<AtomicBool>,
}

const TYPE_A: u16 = 1;
const TYPE_MX: u16 = 15;
const TYPE_AAAA: u16 = 28;
const TYPE_TXT: u16 = 16;

impl DnsResponder {
    /// Serves `records` (owner name, record) on `127.0.0.1:0`.
    pub fn start(records: Vec<(&str, DnsRecord)>) -> DnsResponder {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the DNS responder");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let addr = socket.local_addr().expect("local address");
        let table: Vec<(String, DnsRecord)> = records
            .into_iter()
            .map(|(name, r)| (name.trim_end_matches('.').to_ascii_lowercase(), r))
            .collect();
        let queries = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (q, sp) = (Arc::clone(&queries), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !sp.load(Ordering::SeqCst) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some((name, qtype, answer)) = dns_answer(&buf[..n], &table) {
                    q.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((name, qtype));
                    let _ = socket.send_to(&answer, peer);
                }
            }
        });
        DnsResponder {
            addr,
            queries,
            stop,
        }
    }

    /// Its address, for `smtp.nameservers`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The queries answered so far: (name, type).
    pub fn queries(&self) -> Vec<(String, u16)> {
        self.queries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for DnsResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The answer to one query, with the name and type asked; `None` for
/// anything that is not a plain query.
fn dns_answer(query: &[u8], table: &[(String, DnsRecord)]) -> Option<(String, u16, Vec<u8>)> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(pos)?);
        pos += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(query.get(pos..pos + len)?).to_ascii_lowercase());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*query.get(pos)?, *query.get(pos + 1)?]);
    let question_end = pos + 4;
    let question = query.get(12..question_end)?;
    let name = labels.join(".");
    let known = table.iter().any(|(n, _)| *n == name);
    let answers: Vec<&DnsRecord> = table
        .iter()
        .filter(|(n, r)| {
            *n == name
                && matches!(
                    (r, qtype),
                    (DnsRecord::Mx(..), TYPE_MX)
                        | (DnsRecord::A(_), TYPE_A)
                        | (DnsRecord::Aaaa(_), TYPE_AAAA)
                        | (DnsRecord::Txt(_), TYPE_TXT)
                )
        })
        .map(|(_, r)| r)
        .collect();
    let mut out = Vec::new();
    out.extend_from_slice(&query[..2]);
    // QR, AA, RD copied from the query, RA; RCODE 3 (NXDOMAIN) for an
    // unknown name.
    out.push(0x84 | (query[2] & 0x01));
    out.push(0x80 | if known { 0 } else { 3 });
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    for record in answers {
        out.extend_from_slice(&[0xc0, 0x0c]);
        let (rtype, rdata) = match record {
            DnsRecord::A(ip) => (TYPE_A, ip.octets().to_vec()),
            DnsRecord::Aaaa(ip) => (TYPE_AAAA, ip.octets().to_vec()),
            DnsRecord::Txt(text) => {
                let bytes = &text.as_bytes()[..text.len().min(255)];
                let mut d = vec![bytes.len() as u8];
                d.extend_from_slice(bytes);
                (TYPE_TXT, d)
            }
            DnsRecord::Mx(pref, exchange) => {
                let mut d = pref.to_be_bytes().to_vec();
                for label in exchange
                    .trim_end_matches('.')
                    .split('.')
                    .filter(|l| !l.is_empty())
                {
                    d.push(label.len() as u8);
                    d.extend_from_slice(label.as_bytes());
                }
                d.push(0);
                (TYPE_MX, d)
            }
        };
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&60u32.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    Some((name, qtype, out))
}
