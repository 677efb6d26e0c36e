//! The scheduler's error type, sorted by whose fault it is.
//!
//! | variant | fault | what the scheduler does |
//! |---|---|---|
//! | [`Spool`](SchedulerError::Spool) | the local system: a spool file could not be read, written, synced or renamed | logs it; the state moves on in memory and the step is retried (a bounce on the next settle, a removal on the next load); a tool's request gets `Internal` |
//! | [`AgentStart`](SchedulerError::AgentStart) | the configuration (a `command` that does not exist or cannot run) or the local system (fork failed) | logs it; the group waits 30 s before the next start, its mail waits meanwhile |
//! | [`Config`](SchedulerError::Config) | the installation: another scheduler holds the spool | refuses to start, saying so |
//! | [`Request`](SchedulerError::Request) | the tool that asked: no such message or thread, or a request that makes no sense now | answers `UnknownId` or `Invalid` |
//! | [`Bug`](SchedulerError::Bug) | ours | logs it and answers `Internal`; never a crash |
//!
//! An agent that misbehaves is not an error value here: it is killed and
//! its unreported recipients deferred (see [`crate::engine`]).

use std::fmt;
use std::io;

use skein_proto::{ControlError, ControlErrorKind};
use skein_spool::SpoolError;

/// Everything that can go wrong in the scheduler.
#[derive(Debug)]
pub enum SchedulerError {
    /// A spool operation failed.
    Spool(SpoolError),
    /// An agent's program could not be started.
    AgentStart {
        /// The clause's `command`.
        command: String,
        /// Why.
        error: io::Error,
    },
    /// The scheduler cannot run with this configuration or installation.
    Config(String),
    /// A control request that cannot be carried out as asked.
    Request {
        /// `UnknownId` or `Invalid`.
        kind: ControlErrorKind,
        /// What was wrong, for the tool to print.
        message: String,
    },
    /// A broken invariant of ours.
    Bug(String),
}

impl SchedulerError {
    /// The request named a message that is not queued.
    pub fn unknown_message(id: &str) -> SchedulerError {
        SchedulerError::Request {
            kind: ControlErrorKind::UnknownId,
            message: format!("no message {id} in the queue"),
        }
    }

    /// The request makes no sense now.
    pub fn invalid(message: String) -> SchedulerError {
        SchedulerError::Request {
            kind: ControlErrorKind::Invalid,
            message,
        }
    }

    /// The answer a spool tool gets.
    pub fn to_control(&self) -> ControlError {
        let kind = match self {
            SchedulerError::Request { kind, .. } => *kind,
            SchedulerError::Spool(_)
            | SchedulerError::AgentStart { .. }
            | SchedulerError::Config(_)
            | SchedulerError::Bug(_) => ControlErrorKind::Internal,
        };
        let message = match self {
            SchedulerError::Request { message, .. } => message.clone(),
            other => other.to_string(),
        };
        ControlError { kind, message }
    }
}

impl fmt::Display for SchedulerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchedulerError::Spool(e) => write!(f, "{e}"),
            SchedulerError::AgentStart { command, error } => {
                write!(f, "cannot start transport agent {command:?}: {error}")
            }
            SchedulerError::Config(why) => f.write_str(why),
            SchedulerError::Request { message, .. } => f.write_str(message),
            SchedulerError::Bug(why) => write!(f, "internal error (a bug): {why}"),
        }
    }
}

impl std::error::Error for SchedulerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SchedulerError::Spool(e) => Some(e),
            SchedulerError::AgentStart { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<SpoolError> for SchedulerError {
    fn from(e: SpoolError) -> Self {
        SchedulerError::Spool(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fault_becomes_the_right_answer() {
        let table: Vec<(SchedulerError, ControlErrorKind, &str)> = vec![
            (
                SchedulerError::unknown_message("1ABC"),
                ControlErrorKind::UnknownId,
                "no message 1ABC in the queue",
            ),
            (
                SchedulerError::invalid("busy".into()),
                ControlErrorKind::Invalid,
                "busy",
            ),
            (
                SchedulerError::Spool(SpoolError::Invalid("x".into())),
                ControlErrorKind::Internal,
                "x",
            ),
            (
                SchedulerError::AgentStart {
                    command: "skein-nope".into(),
                    error: io::ErrorKind::NotFound.into(),
                },
                ControlErrorKind::Internal,
                "cannot start transport agent \"skein-nope\": entity not found",
            ),
            (
                SchedulerError::Bug("two owners".into()),
                ControlErrorKind::Internal,
                "internal error (a bug): two owners",
            ),
        ];
        for (err, kind, text) in table {
            let c = err.to_control();
            assert_eq!(c.kind, kind, "{err:?}");
            assert!(
                c.message.contains(text),
                "{:?} does not say {text:?}",
                c.message
            );
        }
    }
}
