//! The router's errors, by whose fault they are.

use std::fmt;
use std::io;
use std::path::PathBuf;

use skein_daemon::DaemonError;
use skein_spool::{QueueId, SpoolError};

use skein_routing::aliases::AliasError;

/// What can stop the router, or the routing of one message.
#[derive(Debug)]
pub enum RouterError {
    /// The operator's: the aliases file is broken (at start the router
    /// refuses to run; later the previous table stays in force).
    Aliases(AliasError),
    /// A local resource: the spool failed (disk full, permissions, I/O).
    /// For one message: it stays in `incoming/` and is tried again at the
    /// next scan.
    Spool(SpoolError),
    /// A local resource: the user database could not say whether a local
    /// user exists. The message stays in `incoming/` and is tried again.
    UserLookup {
        /// The message being routed.
        id: QueueId,
        /// What the lookup reported.
        source: io::Error,
    },
    /// A local resource: a socket of the router could not be set up.
    Socket {
        /// What we were doing.
        op: &'static str,
        /// The socket's path.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The daemon skeleton refused (privilege drop, pid file: another
    /// router runs on this spool).
    Daemon(DaemonError),
    /// A bug: a routing task panicked or was cancelled.
    Bug(String),
}

impl fmt::Display for RouterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouterError::Aliases(e) => write!(f, "aliases: {e}"),
            RouterError::Spool(e) => e.fmt(f),
            RouterError::UserLookup { id, source } => {
                write!(f, "{id}: cannot look up local users: {source}")
            }
            RouterError::Socket { op, path, source } => {
                write!(f, "{op} {}: {source}", path.display())
            }
            RouterError::Daemon(e) => e.fmt(f),
            RouterError::Bug(what) => write!(f, "internal error (a bug): {what}"),
        }
    }
}

impl std::error::Error for RouterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RouterError::Aliases(e) => Some(e),
            RouterError::Spool(e) => Some(e),
            RouterError::UserLookup { source, .. } | RouterError::Socket { source, .. } => {
                Some(source)
            }
            RouterError::Daemon(e) => Some(e),
            RouterError::Bug(_) => None,
        }
    }
}

impl From<SpoolError> for RouterError {
    fn from(e: SpoolError) -> Self {
        RouterError::Spool(e)
    }
}

impl From<AliasError> for RouterError {
    fn from(e: AliasError) -> Self {
        RouterError::Aliases(e)
    }
}

impl From<DaemonError> for RouterError {
    fn from(e: DaemonError) -> Self {
        RouterError::Daemon(e)
    }
}
