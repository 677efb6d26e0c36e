//! The one error type of the agent library, sorted by whose fault it is.

use std::fmt;
use std::io;

use skein_proto::ProtoError;

/// Everything that can end an agent's conversation with the scheduler.
///
/// | variant | fault | what the agent should do |
/// |---|---|---|
/// | [`NotStartedByScheduler`](Self::NotStartedByScheduler) | the operator: the agent was run by hand, or by something that is not `skein-scheduler` | exit non-zero with the message |
/// | [`Handshake`](Self::Handshake) | usually nobody's: the scheduler and the agent are of different releases, or the scheduler refused the channel | exit non-zero; an operator must fix the configuration or upgrade |
/// | [`Protocol`](Self::Protocol) | the scheduler or the transport: garbage, a truncated frame, a broken socket | exit; the scheduler defers whatever was unreported |
/// | [`Local`](Self::Local) | the local system (no runtime, no signal handler) | exit non-zero |
/// | [`InvalidOutcome`](Self::InvalidOutcome) | **ours**: the agent built an outcome the protocol does not allow | a bug; nothing was sent, so the connection is still usable |
/// | [`Interrupted`](Self::Interrupted) | **ours**: a send was cancelled halfway, the stream is out of step | a bug; drop the connection |
///
/// Whatever the error, mail is safe: a recipient the agent has not
/// reported is deferred by the scheduler, never lost and never bounced.
#[derive(Debug)]
pub enum AgentError {
    /// File descriptor 3 is not a socket to the scheduler.
    NotStartedByScheduler(String),
    /// The handshake failed: version mismatch, wrong peer, or refused.
    Handshake(ProtoError),
    /// Reading or writing a frame failed after the handshake.
    Protocol(ProtoError),
    /// A local resource failed before the conversation could start.
    Local {
        /// What was being done.
        what: &'static str,
        /// The system's error.
        source: io::Error,
    },
    /// An outcome with an invalid enhanced status code (or one whose class
    /// contradicts its status) was about to be sent.
    InvalidOutcome(String),
    /// An earlier send was cancelled in the middle of a frame: the
    /// scheduler would read garbage, so nothing more is sent.
    Interrupted,
}

impl AgentError {
    /// True when the scheduler (or the socket to it) misbehaved, as opposed
    /// to the operator, the local system or this agent.
    pub fn is_peer_fault(&self) -> bool {
        match self {
            AgentError::Protocol(e) | AgentError::Handshake(e) => e.is_peer_fault(),
            _ => false,
        }
    }

    /// True when the scheduler is simply gone (the socket was closed or
    /// reset under us): an agent's normal way to learn that it should stop,
    /// not something to report as a failure.
    pub fn is_disconnect(&self) -> bool {
        let AgentError::Protocol(ProtoError::Io(e)) = self else {
            return false;
        };
        matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::UnexpectedEof
        )
    }
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentError::NotStartedByScheduler(why) => write!(
                f,
                "not started by skein-scheduler ({why}): a transport agent finds its socket \
                 to the scheduler on file descriptor 3"
            ),
            AgentError::Handshake(e) => write!(f, "handshake with the scheduler failed: {e}"),
            AgentError::Protocol(e) => write!(f, "connection to the scheduler failed: {e}"),
            AgentError::Local { what, source } => write!(f, "{what}: {source}"),
            AgentError::InvalidOutcome(why) => write!(f, "refusing to send an outcome: {why}"),
            AgentError::Interrupted => f.write_str(
                "an earlier send to the scheduler was cancelled halfway; the connection is unusable",
            ),
        }
    }
}

impl std::error::Error for AgentError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AgentError::Handshake(e) | AgentError::Protocol(e) => Some(e),
            AgentError::Local { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The library's result type.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_and_disconnects() {
        let table: Vec<(AgentError, bool, bool)> = vec![
            (
                AgentError::Protocol(ProtoError::Malformed("x".into())),
                true,
                false,
            ),
            (
                AgentError::Protocol(ProtoError::Io(io::ErrorKind::BrokenPipe.into())),
                false,
                true,
            ),
            (
                AgentError::Protocol(ProtoError::Io(io::ErrorKind::ConnectionReset.into())),
                false,
                true,
            ),
            (
                AgentError::Handshake(ProtoError::Refused("no".into())),
                true,
                false,
            ),
            (
                AgentError::Handshake(ProtoError::VersionMismatch { ours: 1, theirs: 2 }),
                false,
                false,
            ),
            (AgentError::NotStartedByScheduler("x".into()), false, false),
            (AgentError::InvalidOutcome("x".into()), false, false),
            (AgentError::Interrupted, false, false),
        ];
        for (err, peer, disconnect) in table {
            assert_eq!(err.is_peer_fault(), peer, "{err}");
            assert_eq!(err.is_disconnect(), disconnect, "{err}");
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = AgentError::NotStartedByScheduler("fd 3 is not open".into());
        assert!(e.to_string().contains("file descriptor 3"), "{e}");
    }
}
