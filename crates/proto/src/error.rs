//! The one error type of the control protocol, sorted by whose fault it is.

use std::fmt;
use std::io;

/// Everything that can go wrong while framing, decoding or handshaking.
///
/// Whose fault it is, so that a caller knows whether to blame the peer
/// (log, drop the connection, treat the agent's unreported recipients as
/// deferred), the local system, or itself:
///
/// | variant | fault |
/// |---|---|
/// | [`Io`](Self::Io) | the local system or the transport (socket closed, `EPIPE`, …) |
/// | [`Truncated`](Self::Truncated) | the peer: it stopped in the middle of a frame |
/// | [`Oversized`](Self::Oversized) | the peer when decoding; **ours** when returned by an encoder (the message is too big to send, the caller may send something smaller) |
/// | [`Malformed`](Self::Malformed) | the peer: the payload is not a valid message |
/// | [`EmptyFrame`](Self::EmptyFrame) | the peer: a zero length prefix |
/// | [`WrongProtocol`](Self::WrongProtocol) | the peer: it is not a skein process at all |
/// | [`VersionMismatch`](Self::VersionMismatch) | nobody's: two releases that cannot talk; an operator must upgrade one side |
/// | [`Refused`](Self::Refused) | the peer refused us during the handshake (its reason is attached) |
/// | [`UnexpectedRole`](Self::UnexpectedRole) | the peer: its `Hello` announced a role or channel that this side does not accept |
/// | [`Encode`](Self::Encode) | **ours**: a message that cannot be encoded is a bug |
#[derive(Debug)]
pub enum ProtoError {
    /// Reading from or writing to the transport failed.
    Io(io::Error),
    /// The stream ended inside a frame: `got` bytes of a frame that needed
    /// `expected` bytes (the 4-byte length prefix included; while the prefix
    /// itself is incomplete, `expected` is 4).
    Truncated {
        /// Bytes the frame needs, length prefix included.
        expected: u64,
        /// Bytes received before the end of the stream.
        got: u64,
    },
    /// A frame longer than the codec's maximum. A decoder reports it as soon
    /// as it has read the length prefix, before it buffers the payload.
    Oversized {
        /// The payload length that was announced (decoding) or produced (encoding).
        len: u64,
        /// The maximum payload length of the codec.
        max: u64,
    },
    /// The payload is not a valid encoding of the expected message: unknown
    /// enum tag, invalid UTF-8, a length pointing past the end, trailing
    /// bytes, an invalid enhanced status code…
    Malformed(String),
    /// A frame whose length prefix is zero. No message encodes to zero
    /// bytes, so this is never a valid frame.
    EmptyFrame,
    /// The peer's `Hello` names another protocol.
    WrongProtocol {
        /// The protocol name this side speaks ([`crate::PROTOCOL_NAME`]).
        ours: String,
        /// The protocol name the peer announced.
        theirs: String,
    },
    /// The peer speaks another version of this protocol.
    VersionMismatch {
        /// The version this side speaks ([`crate::PROTOCOL_VERSION`]).
        ours: u16,
        /// The version the peer announced.
        theirs: u16,
    },
    /// The listening side refused our `Hello`; the string is its reason.
    Refused(String),
    /// The peer's `Hello` did not pass this side's check (wrong role, wrong
    /// channel); the string says what was expected and what came.
    UnexpectedRole(String),
    /// A message could not be encoded. Our bug, never the peer's.
    Encode(String),
}

impl ProtoError {
    /// True when the error is the peer's doing (garbage, truncation, a
    /// refused or unexpected handshake), as opposed to a local failure or a
    /// bug of ours. The scheduler uses this to decide whether to blame an
    /// agent in its logs; either way the agent's unreported recipients
    /// become deferred.
    pub fn is_peer_fault(&self) -> bool {
        match self {
            ProtoError::Truncated { .. }
            | ProtoError::Malformed(_)
            | ProtoError::EmptyFrame
            | ProtoError::WrongProtocol { .. }
            | ProtoError::Refused(_)
            | ProtoError::UnexpectedRole(_) => true,
            // An oversized frame is the peer's fault only when we decoded
            // it, which the variant alone cannot tell; callers that care
            // know which side they were on.
            ProtoError::Oversized { .. } => true,
            ProtoError::Io(_) | ProtoError::VersionMismatch { .. } | ProtoError::Encode(_) => false,
        }
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::Io(e) => write!(f, "i/o error: {e}"),
            ProtoError::Truncated { expected, got } => write!(
                f,
                "connection closed in the middle of a frame: got {got} of {expected} bytes"
            ),
            ProtoError::Oversized { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max} bytes")
            }
            ProtoError::Malformed(why) => write!(f, "malformed message: {why}"),
            ProtoError::EmptyFrame => f.write_str("malformed frame: zero length"),
            ProtoError::WrongProtocol { ours, theirs } => write!(
                f,
                "wrong protocol: we speak {ours:?}, peer speaks {theirs:?}"
            ),
            ProtoError::VersionMismatch { ours, theirs } => write!(
                f,
                "protocol version mismatch: we speak {name}/{ours}, peer speaks {name}/{theirs}",
                name = crate::PROTOCOL_NAME
            ),
            ProtoError::Refused(reason) => write!(f, "handshake refused by peer: {reason}"),
            ProtoError::UnexpectedRole(why) => write!(f, "unexpected peer: {why}"),
            ProtoError::Encode(why) => write!(f, "cannot encode message (bug): {why}"),
        }
    }
}

impl std::error::Error for ProtoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProtoError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ProtoError {
    fn from(e: io::Error) -> Self {
        ProtoError::Io(e)
    }
}

/// The result type of this crate.
pub type Result<T, E = ProtoError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_says_what_happened() {
        let table: &[(ProtoError, &str)] = &[
            (
                ProtoError::VersionMismatch { ours: 1, theirs: 2 },
                "protocol version mismatch: we speak skein/1, peer speaks skein/2",
            ),
            (
                ProtoError::Truncated {
                    expected: 10,
                    got: 3,
                },
                "connection closed in the middle of a frame: got 3 of 10 bytes",
            ),
            (
                ProtoError::Oversized { len: 20, max: 16 },
                "frame of 20 bytes exceeds the maximum of 16 bytes",
            ),
            (ProtoError::EmptyFrame, "malformed frame: zero length"),
            (
                ProtoError::WrongProtocol {
                    ours: "skein".into(),
                    theirs: "zmailer".into(),
                },
                "wrong protocol: we speak \"skein\", peer speaks \"zmailer\"",
            ),
            (
                ProtoError::Refused("no such channel".into()),
                "handshake refused by peer: no such channel",
            ),
        ];
        for (err, want) in table {
            assert_eq!(err.to_string(), *want);
        }
    }

    #[test]
    fn fault_is_attributed() {
        let table: &[(ProtoError, bool)] = &[
            (ProtoError::Io(io::ErrorKind::BrokenPipe.into()), false),
            (ProtoError::Encode("x".into()), false),
            (ProtoError::VersionMismatch { ours: 1, theirs: 2 }, false),
            (ProtoError::Malformed("x".into()), true),
            (ProtoError::EmptyFrame, true),
            (
                ProtoError::Truncated {
                    expected: 5,
                    got: 1,
                },
                true,
            ),
            (ProtoError::UnexpectedRole("x".into()), true),
        ];
        for (err, peer) in table {
            assert_eq!(err.is_peer_fault(), *peer, "{err}");
        }
    }
}
