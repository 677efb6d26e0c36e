//! One connection to one filter (tokio): open it, negotiate, and take it
//! through a session's steps, honouring what the filter negotiated (steps
//! it does not want are not sent, steps it does not answer are not waited
//! for) and the macros it asked for, each read bounded by a timeout.
//!
//! Any failure — the filter cannot be reached, hangs past its timeout,
//! closes, or sends something that is not the protocol — is a
//! [`MilterError`]; the caller applies its default action for that
//! message only and opens a new connection for the next one. Nothing
//! here decides what a verdict does to the SMTP session.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::{Command, Decoder, ProtocolError, Response, Stage, VERSION, action, protocol};

/// Where a filter listens: `unix:/path` or `inet:host:port` (Postfix's
/// spelling; sendmail's `inet:port@host` is accepted too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A Unix-domain socket.
    Unix(PathBuf),
    /// A TCP address.
    Inet(SocketAddr),
}

impl std::str::FromStr for Address {
    type Err = String;

    fn from_str(text: &str) -> Result<Address, String> {
        if let Some(path) = text
            .strip_prefix("unix:")
            .or_else(|| text.strip_prefix("local:"))
        {
            if path.is_empty() {
                return Err(format!("{text:?}: no socket path"));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        let Some(rest) = text.strip_prefix("inet:") else {
            return Err(format!("{text:?}: expected unix:/path or inet:host:port"));
        };
        let addr = match rest.split_once('@') {
            Some((port, host)) => format!("{host}:{port}"),
            None => rest.to_owned(),
        };
        let addr = addr.replace("localhost:", "127.0.0.1:");
        addr.parse::<SocketAddr>()
            .map(Address::Inet)
            .map_err(|_| format!("{text:?}: expected inet:ADDRESS:PORT (an IP address)"))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Inet(addr) => write!(f, "inet:{addr}"),
        }
    }
}

/// A filter's timeouts (Postfix's `milter_connect_timeout`,
/// `milter_command_timeout`, `milter_content_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting and negotiating.
    pub connect: Duration,
    /// Each command before the message content.
    pub command: Duration,
    /// Header, body and end-of-message steps.
    pub content: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(30),
            command: Duration::from_secs(30),
            content: Duration::from_secs(300),
        }
    }
}

/// Why a filter could not be used for a message.
#[derive(Debug)]
pub enum MilterError {
    /// Connecting failed.
    Connect(std::io::Error),
    /// It did not answer in time.
    Timeout(&'static str),
    /// It closed the connection, or the socket failed.
    Lost(String),
    /// It broke the protocol.
    Protocol(ProtocolError),
    /// Its option negotiation is unusable (a version below 2, or an
    /// answer that is not one).
    Negotiation(String),
}

impl fmt::Display for MilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MilterError::Connect(e) => write!(f, "cannot connect: {e}"),
            MilterError::Timeout(what) => write!(f, "no answer to {what} in time"),
            MilterError::Lost(why) => write!(f, "connection lost: {why}"),
            MilterError::Protocol(e) => write!(f, "protocol error: {e}"),
            MilterError::Negotiation(why) => write!(f, "option negotiation: {why}"),
        }
    }
}

impl std::error::Error for MilterError {}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// What a step came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on (also: the step was not sent, or not answered).
    Continue,
    /// Accept: no more steps for this message (or connection).
    Accept,
    /// Discard the message, reporting success to the client.
    Discard,
    /// Reject: 5xx, with the filter's checked reply when it gave one.
    Reject(Option<String>),
    /// Temporary failure: 4xx, with the filter's checked reply if any.
    Tempfail(Option<String>),
    /// Skip the rest of the body.
    Skip,
}

/// The end of a message: the modifications to apply, then the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndOfMessage {
    /// Header, body, recipient, sender and quarantine changes, in order.
    pub modifications: Vec<Response>,
    /// The verdict.
    pub verdict: Verdict,
}

/// An open, negotiated connection to one filter.
pub struct Connection {
    stream: Box<dyn Stream>,
    decoder: Decoder,
    timeouts: Timeouts,
    /// The [`action`] bits granted.
    pub actions: u32,
    /// The [`protocol`] bits in force.
    pub protocol: u32,
    /// Macros the filter asked for, per stage (`None`: the caller's
    /// defaults).
    pub macros: Vec<(Stage, Vec<String>)>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("actions", &self.actions)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

/// The [`protocol`] bits an MTA that has all steps can offer.
pub const OFFERED_PROTOCOL: u32 = protocol::ALL & !protocol::RCPT_REJ;

impl Connection {
    /// Connects to `address` and negotiates: the MTA offers every action
    /// and every protocol option, and keeps what the filter asks for.
    pub async fn open(address: &Address, timeouts: Timeouts) -> Result<Connection, MilterError> {
        let connect = async {
            let stream: Box<dyn Stream> = match address {
                Address::Unix(path) => Box::new(UnixStream::connect(path).await?),
                Address::Inet(addr) => Box::new(TcpStream::connect(addr).await?),
            };
            Ok::<_, std::io::Error>(stream)
        };
        let stream = tokio::time::timeout(timeouts.connect, connect)
            .await
            .map_err(|_| MilterError::Timeout("the connection"))?
            .map_err(MilterError::Connect)?;
        let mut connection = Connection {
            stream,
            decoder: Decoder::new(),
            timeouts,
            actions: 0,
            protocol: 0,
            macros: Vec::new(),
        };
        connection
            .send(&Command::OptNeg {
                version: VERSION,
                actions: action::ALL,
                protocol: OFFERED_PROTOCOL,
            })
            .await?;
        match connection
            .read(timeouts.connect, "option negotiation")
            .await?
        {
            Response::OptNeg {
                version,
                actions,
                protocol,
                macros,
            } => {
                if version < 2 {
                    return Err(MilterError::Negotiation(format!("version {version}")));
                }
                connection.actions = actions & action::ALL;
                connection.protocol = protocol & OFFERED_PROTOCOL;
                connection.macros = macros;
                Ok(connection)
            }
            other => Err(MilterError::Negotiation(format!("answered {other:?}"))),
        }
    }

    async fn send(&mut self, command: &Command) -> Result<(), MilterError> {
        let bytes = command.encode();
        tokio::time::timeout(self.timeouts.command, self.stream.write_all(&bytes))
            .await
            .map_err(|_| MilterError::Timeout("a write"))?
            .map_err(|e| MilterError::Lost(e.to_string()))
    }

    /// The next response; a `Progress` restarts the timeout.
    async fn read(&mut self, limit: Duration, what: &'static str) -> Result<Response, MilterError> {
        let mut buf = [0u8; 8192];
        loop {
            match self
                .decoder
                .next_response()
                .map_err(MilterError::Protocol)?
            {
                Some(Response::Progress) => continue,
                Some(response) => return Ok(response),
                None => {}
            }
            let n = tokio::time::timeout(limit, self.stream.read(&mut buf))
                .await
                .map_err(|_| MilterError::Timeout(what))?
                .map_err(|e| MilterError::Lost(e.to_string()))?;
            if n == 0 {
                return Err(MilterError::Lost(format!(
                    "closed while waiting for {what}"
                )));
            }
            self.decoder.push(&buf[..n]);
        }
    }

    /// The macros to send at `stage`: those the filter asked for, else
    /// `defaults`, each looked up with `value`.
    pub fn macros_for(
        &self,
        stage: Stage,
        defaults: &[&str],
        value: &dyn Fn(&str) -> Option<String>,
    ) -> Vec<(String, String)> {
        let names: Vec<String> = match self.macros.iter().find(|(s, _)| *s == stage) {
            Some((_, names)) => names.clone(),
            None => defaults.iter().map(|n| (*n).to_owned()).collect(),
        };
        names
            .into_iter()
            .filter_map(|name| value(&name).map(|v| (name, v)))
            .collect()
    }

    /// Sends `macros` then `command` (unless the filter negotiated
    /// `skip` away) and reads its verdict (unless it negotiated
    /// `no_reply`). A reply text is checked first: one that fails the
    /// check becomes a plain reject or tempfail of the MTA's own words.
    pub async fn step(
        &mut self,
        stage: Option<Stage>,
        macros: Vec<(String, String)>,
        command: Command,
        skip: u32,
        no_reply: u32,
        content: bool,
    ) -> Result<Verdict, MilterError> {
        if self.protocol & skip != 0 {
            return Ok(Verdict::Continue);
        }
        if let Some(stage) = stage
            && !macros.is_empty()
        {
            self.send(&Command::Macros { stage, macros }).await?;
        }
        self.send(&command).await?;
        if self.protocol & no_reply != 0 {
            return Ok(Verdict::Continue);
        }
        let limit = if content {
            self.timeouts.content
        } else {
            self.timeouts.command
        };
        let response = self.read(limit, "a command").await?;
        verdict(response)
    }

    /// End of body: the modifications the filter sends, then its verdict.
    pub async fn end_of_message(
        &mut self,
        macros: Vec<(String, String)>,
    ) -> Result<EndOfMessage, MilterError> {
        if !macros.is_empty() {
            self.send(&Command::Macros {
                stage: Stage::EndOfMessage,
                macros,
            })
            .await?;
        }
        self.send(&Command::EndOfBody).await?;
        let mut modifications = Vec::new();
        loop {
            let response = self.read(self.timeouts.content, "end of message").await?;
            if response.is_verdict() {
                return Ok(EndOfMessage {
                    modifications,
                    verdict: verdict(response)?,
                });
            }
            modifications.push(response);
        }
    }

    /// Ends the transaction (the connection stays).
    pub async fn abort(&mut self) -> Result<(), MilterError> {
        self.send(&Command::Abort).await
    }

    /// Ends the connection.
    pub async fn quit(mut self) {
        let _ = self.send(&Command::Quit).await;
    }
}

fn verdict(response: Response) -> Result<Verdict, MilterError> {
    Ok(match response {
        Response::Continue => Verdict::Continue,
        Response::Accept => Verdict::Accept,
        Response::Discard => Verdict::Discard,
        Response::Skip => Verdict::Skip,
        Response::Reject => Verdict::Reject(None),
        Response::Tempfail | Response::ConnectionFail => Verdict::Tempfail(None),
        Response::ReplyCode(text) => match crate::checked_reply(&text) {
            Ok(reply) if reply.starts_with('4') => Verdict::Tempfail(Some(reply)),
            Ok(reply) => Verdict::Reject(Some(reply)),
            // A text that cannot go to the client: the filter still said
            // no, by its first digit if it has one.
            Err(_) if text.starts_with('4') => Verdict::Tempfail(None),
            Err(_) => Verdict::Reject(None),
        },
        other => {
            return Err(MilterError::Protocol(ProtocolError::Malformed(
                '?',
                match other {
                    Response::OptNeg { .. } => "option negotiation out of turn",
                    _ => "a modification outside end of message",
                },
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let cases = [
            (
                "unix:/run/opendkim/opendkim.sock",
                Ok(Address::Unix("/run/opendkim/opendkim.sock".into())),
            ),
            (
                "inet:127.0.0.1:11332",
                Ok(Address::Inet("127.0.0.1:11332".parse().unwrap())),
            ),
            (
                "inet:8891@127.0.0.1",
                Ok(Address::Inet("127.0.0.1:8891".parse().unwrap())),
            ),
            (
                "inet:localhost:8891",
                Ok(Address::Inet("127.0.0.1:8891".parse().unwrap())),
            ),
            (
                "inet:[::1]:8891",
                Ok(Address::Inet("[::1]:8891".parse().unwrap())),
            ),
            ("unix:", Err("no socket path")),
            ("tcp:1.2.3.4:5", Err("expected unix:/path")),
            ("inet:mail.example:25", Err("an IP address")),
        ];
        for (text, want) in cases {
            match (text.parse::<Address>(), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{want} in {got}"),
                (got, want) => panic!("{text}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn verdicts() {
        let cases = [
            (Response::Continue, Verdict::Continue),
            (Response::Accept, Verdict::Accept),
            (Response::Discard, Verdict::Discard),
            (Response::Reject, Verdict::Reject(None)),
            (Response::Tempfail, Verdict::Tempfail(None)),
            (Response::ConnectionFail, Verdict::Tempfail(None)),
            (
                Response::ReplyCode("554 5.7.1 no thanks".into()),
                Verdict::Reject(Some("554 5.7.1 no thanks".into())),
            ),
            (
                Response::ReplyCode("421 4.7.0 later".into()),
                Verdict::Tempfail(Some("421 4.7.0 later".into())),
            ),
            // An injected line: refused, but the filter's "no" stands.
            (
                Response::ReplyCode("550 ok\r\n250 injected".into()),
                Verdict::Reject(None),
            ),
        ];
        for (response, want) in cases {
            assert_eq!(
                verdict(response.clone()).expect("a verdict"),
                want,
                "{response:?}"
            );
        }
        assert!(verdict(Response::AddHeader("a".into(), "b".into())).is_err());
    }
}
