//! The codec's errors, sorted by whose fault they are.

use std::fmt;

/// Why bytes from a server are not a valid SMTP reply. Always the peer's
/// fault: a client that gets one cannot trust the stream any more and
/// should drop the connection (and defer whatever was unacknowledged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// A line longer than the limit, CRLF included, or no line end within
    /// the limit.
    LineTooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// More continuation lines than the limit.
    TooManyLines {
        /// The limit in lines.
        limit: usize,
    },
    /// A line that does not start with a three-digit reply code followed
    /// by a space, a hyphen or the line end. The line's start is shown,
    /// escaped.
    BadLine(String),
    /// A continuation line with another code than the first line.
    CodeMismatch {
        /// The code of the reply's first line.
        first: u16,
        /// The code of the offending line.
        got: u16,
    },
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::LineTooLong { limit } => {
                write!(f, "reply line longer than {limit} bytes")
            }
            ReplyError::TooManyLines { limit } => {
                write!(f, "reply with more than {limit} lines")
            }
            ReplyError::BadLine(line) => write!(f, "malformed reply line {line}"),
            ReplyError::CodeMismatch { first, got } => {
                write!(f, "reply code {got} in the continuation of a {first} reply")
            }
        }
    }
}

impl std::error::Error for ReplyError {}

/// Why a command cannot be parsed or rendered.
///
/// | variant | fault |
/// |---|---|
/// | [`LineTooLong`](Self::LineTooLong), [`Syntax`](Self::Syntax), [`UnknownCommand`](Self::UnknownCommand), [`UnknownParameter`](Self::UnknownParameter), [`BadParameter`](Self::BadParameter) | the peer (a client sent it); the server answers 500/501/555 |
/// | [`Unrenderable`](Self::Unrenderable) | **ours**: a caller asked to send an address or domain that would break the command line (CR, LF, other control characters) |
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// The command line is longer than the limit.
    LineTooLong {
        /// The limit in bytes, CRLF included.
        limit: usize,
    },
    /// The command is known but its arguments are not valid.
    Syntax(String),
    /// The verb is not one this codec knows.
    UnknownCommand(String),
    /// A MAIL or RCPT parameter this codec does not know.
    UnknownParameter(String),
    /// A known parameter with an invalid value.
    BadParameter(String),
    /// A value that cannot be put on a command line.
    Unrenderable(String),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::LineTooLong { limit } => {
                write!(f, "command line longer than {limit} bytes")
            }
            CommandError::Syntax(why) => write!(f, "syntax error: {why}"),
            CommandError::UnknownCommand(verb) => write!(f, "unknown command {verb}"),
            CommandError::UnknownParameter(p) => write!(f, "unknown parameter {p}"),
            CommandError::BadParameter(p) => write!(f, "invalid parameter {p}"),
            CommandError::Unrenderable(why) => write!(f, "cannot render command: {why}"),
        }
    }
}

impl std::error::Error for CommandError {}

/// Up to 40 bytes of `line`, escaped for a log line.
pub(crate) fn show(line: &[u8]) -> String {
    let cut = &line[..line.len().min(40)];
    let mut s = String::from("\"");
    s.extend(cut.escape_ascii().map(char::from));
    if line.len() > cut.len() {
        s.push('…');
    }
    s.push('"');
    s
}
