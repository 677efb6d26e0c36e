//! skein-milter: the Sendmail milter protocol (version 6, as libmilter and
//! Postfix speak it), sans-IO — the MTA's side: the commands an MTA sends
//! a filter ([`Command`], [`Command::encode`]) and the filter's answers
//! ([`Response`], read by [`Decoder`]); and [`client::Connection`], one
//! negotiated connection to a filter taken through a session's steps with
//! timeouts; and [`filter`], a message taken through a list of filters
//! with their verdicts and modifications applied (default actions, header
//! and recipient changes), for the smtpd and the router alike.
//!
//! # The wire
//!
//! Every packet is a 4-byte big-endian length (of what follows), a command
//! byte, and its data. Strings are NUL-terminated. A filter's packet may
//! not exceed [`MAX_PACKET`]; a larger length is a protocol error, so a
//! hostile or broken filter cannot make the MTA buffer without bound.
//!
//! # Security
//!
//! Everything a filter sends is untrusted: [`Decoder`] never panics on any
//! input (`fuzz/fuzz_targets/milter_response.rs`), and a reply a filter
//! wants sent to the SMTP client ([`Response::ReplyCode`]) is checked by
//! [`checked_reply`] — codes 4xx or 5xx only, every line with the same
//! code, no bare CR or LF, no control characters — before it can reach
//! the client.

#![warn(missing_docs)]

use std::fmt;

pub mod client;
pub mod filter;

/// The protocol version spoken (libmilter 8.14+, Postfix 2.6+).
pub const VERSION: u32 = 6;

/// The largest packet accepted from a filter: a body replacement chunk is
/// at most 65535 bytes (`MILTER_CHUNK_SIZE`); headers and recipients are
/// far smaller. libmilter's default data limit is 64 KiB; a little over 1
/// MiB leaves room for filters built with a larger one.
pub const MAX_PACKET: usize = 1 << 20;

/// A body chunk sent to a filter is at most this long (`MILTER_CHUNK_SIZE`).
pub const CHUNK: usize = 65535;

/// Actions a filter may take at end of message (`SMFIF_*`), offered by the
/// MTA in option negotiation and requested by the filter.
pub mod action {
    /// Add header fields.
    pub const ADD_HEADERS: u32 = 0x01;
    /// Replace the body.
    pub const CHANGE_BODY: u32 = 0x02;
    /// Add recipients.
    pub const ADD_RCPT: u32 = 0x04;
    /// Delete recipients.
    pub const DELETE_RCPT: u32 = 0x08;
    /// Change or delete header fields.
    pub const CHANGE_HEADERS: u32 = 0x10;
    /// Quarantine the message.
    pub const QUARANTINE: u32 = 0x20;
    /// Change the envelope sender.
    pub const CHANGE_FROM: u32 = 0x40;
    /// Add recipients with ESMTP arguments.
    pub const ADD_RCPT_PAR: u32 = 0x80;
    /// Ask for macros per stage.
    pub const SET_SYMLIST: u32 = 0x100;
    /// Everything above.
    pub const ALL: u32 = 0x1ff;
}

/// Protocol steps a filter does not want, or will not answer (`SMFIP_*`).
pub mod protocol {
    /// No connect information.
    pub const NO_CONNECT: u32 = 0x01;
    /// No HELO.
    pub const NO_HELO: u32 = 0x02;
    /// No MAIL.
    pub const NO_MAIL: u32 = 0x04;
    /// No RCPT.
    pub const NO_RCPT: u32 = 0x08;
    /// No body.
    pub const NO_BODY: u32 = 0x10;
    /// No header fields.
    pub const NO_HEADERS: u32 = 0x20;
    /// No end of header.
    pub const NO_EOH: u32 = 0x40;
    /// No reply to header fields.
    pub const NR_HEADER: u32 = 0x80;
    /// No unknown commands.
    pub const NO_UNKNOWN: u32 = 0x100;
    /// No DATA.
    pub const NO_DATA: u32 = 0x200;
    /// The MTA understands `SMFIR_SKIP`.
    pub const SKIP: u32 = 0x400;
    /// Send rejected recipients too.
    pub const RCPT_REJ: u32 = 0x800;
    /// No reply to connect.
    pub const NR_CONNECT: u32 = 0x1000;
    /// No reply to HELO.
    pub const NR_HELO: u32 = 0x2000;
    /// No reply to MAIL.
    pub const NR_MAIL: u32 = 0x4000;
    /// No reply to RCPT.
    pub const NR_RCPT: u32 = 0x8000;
    /// No reply to DATA.
    pub const NR_DATA: u32 = 0x10000;
    /// No reply to unknown commands.
    pub const NR_UNKNOWN: u32 = 0x20000;
    /// No reply to end of header.
    pub const NR_EOH: u32 = 0x40000;
    /// No reply to body chunks.
    pub const NR_BODY: u32 = 0x80000;
    /// Header values keep their leading space.
    pub const HEADER_LEADING_SPACE: u32 = 0x100000;
    /// Every step the MTA (skein) can leave out or take no reply for.
    pub const ALL: u32 = 0x1fffff;
}

/// The stages macros are sent at, in option negotiation's symbol lists
/// (`SMFIM_*`) and as the command a `SMFIC_MACRO` packet precedes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Connect.
    Connect,
    /// HELO/EHLO.
    Helo,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA.
    Data,
    /// End of message.
    EndOfMessage,
    /// End of header.
    EndOfHeader,
}

impl Stage {
    /// The number in symbol lists.
    pub fn number(self) -> u32 {
        match self {
            Stage::Connect => 0,
            Stage::Helo => 1,
            Stage::Mail => 2,
            Stage::Rcpt => 3,
            Stage::Data => 4,
            Stage::EndOfMessage => 5,
            Stage::EndOfHeader => 6,
        }
    }

    /// The stage of a symbol list number.
    pub fn from_number(n: u32) -> Option<Stage> {
        Some(match n {
            0 => Stage::Connect,
            1 => Stage::Helo,
            2 => Stage::Mail,
            3 => Stage::Rcpt,
            4 => Stage::Data,
            5 => Stage::EndOfMessage,
            6 => Stage::EndOfHeader,
            _ => return None,
        })
    }

    /// The command byte a macro packet for this stage names.
    fn command(self) -> u8 {
        match self {
            Stage::Connect => b'C',
            Stage::Helo => b'H',
            Stage::Mail => b'M',
            Stage::Rcpt => b'R',
            Stage::Data => b'T',
            Stage::EndOfMessage => b'E',
            Stage::EndOfHeader => b'N',
        }
    }
}

/// How the SMTP client is connected (`SMFIC_CONNECT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Family {
    /// Unknown (`U`): no address.
    Unknown,
    /// IPv4 (`4`) and port.
    Inet(std::net::Ipv4Addr, u16),
    /// IPv6 (`6`) and port.
    Inet6(std::net::Ipv6Addr, u16),
    /// A Unix socket (`L`), by path.
    Local(String),
}

/// What the MTA sends a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `O`: option negotiation, what the MTA offers.
    OptNeg {
        /// The version.
        version: u32,
        /// [`action`] bits the MTA can carry out.
        actions: u32,
        /// [`protocol`] bits the MTA can honour.
        protocol: u32,
    },
    /// `D`: macros for the command of `stage`, sent just before it.
    Macros {
        /// The stage.
        stage: Stage,
        /// `(name, value)`; names as libmilter spells them (`j`,
        /// `{client_addr}`).
        macros: Vec<(String, String)>,
    },
    /// `C`: the client's host name and address.
    Connect {
        /// The host name (or `[address]`).
        hostname: String,
        /// The address.
        family: Family,
    },
    /// `H`: the HELO/EHLO argument.
    Helo(String),
    /// `M`: the sender (`<addr>`) and its ESMTP arguments.
    Mail(Vec<String>),
    /// `R`: a recipient (`<addr>`) and its ESMTP arguments.
    Rcpt(Vec<String>),
    /// `T`: DATA.
    Data,
    /// `L`: one header field, name and value (unfolded as received).
    Header(String, String),
    /// `N`: end of header.
    EndOfHeader,
    /// `B`: a body chunk (at most [`CHUNK`] bytes).
    Body(Vec<u8>),
    /// `E`: end of body: the filter now answers with its modifications
    /// and a final verdict.
    EndOfBody,
    /// `A`: the transaction ends; the connection goes on.
    Abort,
    /// `Q`: the connection ends.
    Quit,
    /// `K`: this connection ends, another session will follow on it.
    QuitNewConnection,
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend(s.bytes().filter(|&b| b != 0));
    out.push(0);
}

impl Command {
    /// The packet: length, command byte, data.
    pub fn encode(&self) -> Vec<u8> {
        let mut data = Vec::new();
        let code = match self {
            Command::OptNeg {
                version,
                actions,
                protocol,
            } => {
                data.extend_from_slice(&version.to_be_bytes());
                data.extend_from_slice(&actions.to_be_bytes());
                data.extend_from_slice(&protocol.to_be_bytes());
                b'O'
            }
            Command::Macros { stage, macros } => {
                data.push(stage.command());
                for (name, value) in macros {
                    cstr(&mut data, name);
                    cstr(&mut data, value);
                }
                b'D'
            }
            Command::Connect { hostname, family } => {
                cstr(&mut data, hostname);
                match family {
                    Family::Unknown => data.push(b'U'),
                    Family::Inet(ip, port) => {
                        data.push(b'4');
                        data.extend_from_slice(&port.to_be_bytes());
                        cstr(&mut data, &ip.to_string());
                    }
                    Family::Inet6(ip, port) => {
                        data.push(b'6');
                        data.extend_from_slice(&port.to_be_bytes());
                        cstr(&mut data, &ip.to_string());
                    }
                    Family::Local(path) => {
                        data.push(b'L');
                        data.extend_from_slice(&0u16.to_be_bytes());
                        cstr(&mut data, path);
                    }
                }
                b'C'
            }
            Command::Helo(name) => {
                cstr(&mut data, name);
                b'H'
            }
            Command::Mail(args) => {
                for a in args {
                    cstr(&mut data, a);
                }
                b'M'
            }
            Command::Rcpt(args) => {
                for a in args {
                    cstr(&mut data, a);
                }
                b'R'
            }
            Command::Data => b'T',
            Command::Header(name, value) => {
                cstr(&mut data, name);
                cstr(&mut data, value);
                b'L'
            }
            Command::EndOfHeader => b'N',
            Command::Body(chunk) => {
                data.extend_from_slice(&chunk[..chunk.len().min(CHUNK)]);
                b'B'
            }
            Command::EndOfBody => b'E',
            Command::Abort => b'A',
            Command::Quit => b'Q',
            Command::QuitNewConnection => b'K',
        };
        let mut out = Vec::with_capacity(5 + data.len());
        out.extend_from_slice(&((data.len() + 1) as u32).to_be_bytes());
        out.push(code);
        out.extend_from_slice(&data);
        out
    }
}

/// What a filter answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `O`: the filter's side of option negotiation.
    OptNeg {
        /// Its version.
        version: u32,
        /// [`action`] bits it wants.
        actions: u32,
        /// [`protocol`] bits it wants.
        protocol: u32,
        /// Macros it asks for per stage (`SMFIF_SETSYMLIST`).
        macros: Vec<(Stage, Vec<String>)>,
    },
    /// `a`: accept the message (or connection); no more commands for it.
    Accept,
    /// `c`: go on.
    Continue,
    /// `d`: accept and throw the message away.
    Discard,
    /// `r`: reject (5xx).
    Reject,
    /// `t`: temporary failure (4xx).
    Tempfail,
    /// `y`: reject or tempfail with this reply (unchecked: see
    /// [`checked_reply`]).
    ReplyCode(String),
    /// `s`: skip the rest of the body.
    Skip,
    /// `p`: still working; the timeout starts again.
    Progress,
    /// `f`: close the SMTP connection (treated as tempfail).
    ConnectionFail,
    /// `h`: add a header field at the end.
    AddHeader(String, String),
    /// `i`: insert a header field at position `index` (0: first).
    InsertHeader(u32, String, String),
    /// `m`: change the `index`-th (1-based) field of that name; an empty
    /// value deletes it.
    ChangeHeader(u32, String, String),
    /// `b`: a chunk of the replacement body (chunks concatenate).
    ReplaceBody(Vec<u8>),
    /// `+`: add a recipient.
    AddRcpt(String),
    /// `2`: add a recipient with ESMTP arguments.
    AddRcptPar(String, String),
    /// `-`: delete a recipient.
    DeleteRcpt(String),
    /// `e`: change the sender (with ESMTP arguments).
    ChangeFrom(String, String),
    /// `q`: quarantine (hold) the message, with a reason.
    Quarantine(String),
}

impl Response {
    /// Whether this ends the filter's say on the current step (a verdict)
    /// rather than being a modification or progress report.
    pub fn is_verdict(&self) -> bool {
        matches!(
            self,
            Response::Accept
                | Response::Continue
                | Response::Discard
                | Response::Reject
                | Response::Tempfail
                | Response::ReplyCode(_)
                | Response::Skip
                | Response::ConnectionFail
                | Response::OptNeg { .. }
        )
    }
}

/// A packet a filter should not have sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The length is 0 or over [`MAX_PACKET`].
    BadLength(u32),
    /// An unknown response byte.
    UnknownResponse(u8),
    /// The data does not fit its command (missing NULs or integers).
    Malformed(char, &'static str),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::BadLength(n) => {
                write!(f, "packet length {n} (at most {MAX_PACKET}, at least 1)")
            }
            ProtocolError::UnknownResponse(b) => write!(f, "unknown response code 0x{b:02x}"),
            ProtocolError::Malformed(code, why) => write!(f, "malformed '{code}' response: {why}"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Reads a filter's packets from bytes as they arrive.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Adds bytes read from the filter.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole response, `Ok(None)` when more bytes are needed. An
    /// error leaves the decoder unusable: the connection must be dropped.
    pub fn next_response(&mut self) -> Result<Option<Response>, ProtocolError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        if len == 0 || len as usize > MAX_PACKET {
            return Err(ProtocolError::BadLength(len));
        }
        let total = 4 + len as usize;
        if self.buf.len() < total {
            return Ok(None);
        }
        let packet: Vec<u8> = self.buf.drain(..total).collect();
        parse(packet[4], &packet[5..]).map(Some)
    }
}

/// A cursor over a packet's data.
struct Fields<'a> {
    data: &'a [u8],
    code: char,
}

impl<'a> Fields<'a> {
    fn u32(&mut self, what: &'static str) -> Result<u32, ProtocolError> {
        if self.data.len() < 4 {
            return Err(ProtocolError::Malformed(self.code, what));
        }
        let (n, rest) = self.data.split_at(4);
        self.data = rest;
        Ok(u32::from_be_bytes([n[0], n[1], n[2], n[3]]))
    }

    fn string(&mut self, what: &'static str) -> Result<String, ProtocolError> {
        let end = self
            .data
            .iter()
            .position(|&b| b == 0)
            .ok_or(ProtocolError::Malformed(self.code, what))?;
        let s = String::from_utf8_lossy(&self.data[..end]).into_owned();
        self.data = &self.data[end + 1..];
        Ok(s)
    }

    /// An optional trailing string (ESMTP arguments), empty when absent.
    fn rest_string(&mut self) -> String {
        if self.data.is_empty() {
            return String::new();
        }
        let end = self
            .data
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.data.len());
        let s = String::from_utf8_lossy(&self.data[..end]).into_owned();
        self.data = &self.data[(end + 1).min(self.data.len())..];
        s
    }
}

fn parse(code: u8, data: &[u8]) -> Result<Response, ProtocolError> {
    let mut f = Fields {
        data,
        code: code as char,
    };
    Ok(match code {
        b'O' => {
            let version = f.u32("version")?;
            let actions = f.u32("actions")?;
            let protocol = f.u32("protocol")?;
            let mut macros = Vec::new();
            while f.data.len() >= 4 {
                let stage = f.u32("macro stage")?;
                let list = f.rest_string();
                if let Some(stage) = Stage::from_number(stage) {
                    macros.push((stage, list.split_whitespace().map(str::to_owned).collect()));
                }
            }
            Response::OptNeg {
                version,
                actions,
                protocol,
                macros,
            }
        }
        b'a' => Response::Accept,
        b'c' => Response::Continue,
        b'd' => Response::Discard,
        b'r' => Response::Reject,
        b't' => Response::Tempfail,
        b's' => Response::Skip,
        b'p' => Response::Progress,
        b'f' => Response::ConnectionFail,
        b'y' => Response::ReplyCode(f.string("reply text")?),
        b'h' => Response::AddHeader(f.string("header name")?, f.string("header value")?),
        b'i' => {
            let index = f.u32("index")?;
            Response::InsertHeader(index, f.string("header name")?, f.string("header value")?)
        }
        b'm' => {
            let index = f.u32("index")?;
            Response::ChangeHeader(index, f.string("header name")?, f.string("header value")?)
        }
        b'b' => Response::ReplaceBody(data.to_vec()),
        b'+' => Response::AddRcpt(f.string("recipient")?),
        b'2' => {
            let rcpt = f.string("recipient")?;
            Response::AddRcptPar(rcpt, f.rest_string())
        }
        b'-' => Response::DeleteRcpt(f.string("recipient")?),
        b'e' => {
            let from = f.string("sender")?;
            Response::ChangeFrom(from, f.rest_string())
        }
        b'q' => Response::Quarantine(f.string("reason")?),
        other => return Err(ProtocolError::UnknownResponse(other)),
    })
}

/// A filter's reply text made safe for the SMTP client, or why it is not:
/// one or more lines (CRLF or LF separated, as libmilter's multi-line
/// replies), each `4xx` or `5xx` with the same code, then a space or `-`
/// and printable text; no other control characters. The lines come back
/// as RFC 5321 wants them (`550-…` then `550 …`, CRLF each, the last
/// without its CRLF).
pub fn checked_reply(text: &str) -> Result<String, String> {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty())
        .collect();
    let Some(first) = lines.first() else {
        return Err("an empty reply".into());
    };
    let code = first.get(..3).unwrap_or("");
    if !(code.starts_with('4') || code.starts_with('5'))
        || !code.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("reply code {code:?} is not 4xx or 5xx"));
    }
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.get(..3) != Some(code) {
            return Err(format!("line {} does not carry code {code}", i + 1));
        }
        let rest = &line[3..];
        let text = rest
            .strip_prefix(' ')
            .or_else(|| rest.strip_prefix('-'))
            .unwrap_or(if rest.is_empty() { "" } else { rest });
        if text.chars().any(|c| c.is_control()) {
            return Err(format!(
                "line {} holds a control character (CR/LF injection?)",
                i + 1
            ));
        }
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        out.push(format!("{code}{sep}{}", text.trim_end()));
    }
    Ok(out.join("\r\n"))
}

#[cfg(test)]
mod tests;
