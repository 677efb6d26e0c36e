//! The one error type of the daemon skeleton.
//!
//! Every variant says whose fault it is, because the reaction differs: a
//! configuration mistake needs the operator, a busy pid file means another
//! instance is alive, a failing system call is a local resource problem, and
//! privileges that can be regained are a bug (ours or the system's) that must
//! stop the process.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a daemon facility failed.
#[derive(Debug)]
pub enum DaemonError {
    /// Configuration: the user to run as does not exist.
    UnknownUser {
        /// The configured user name.
        user: String,
    },
    /// Configuration: the user to run as is root itself (uid 0), so there is
    /// no privilege to drop. Refused rather than silently keeping root.
    RootUserRefused {
        /// The configured user name.
        user: String,
    },
    /// Local resource: the user database could not be read.
    UserLookup {
        /// The configured user name.
        user: String,
        /// What the lookup reported.
        source: nix::Error,
    },
    /// Local resource: a step of the privilege drop was refused by the kernel.
    /// The process may be half-dropped and must exit.
    PrivilegeDrop {
        /// Which step failed: `initgroups`, `setgid` or `setuid`.
        step: &'static str,
        /// What the kernel said.
        source: nix::Error,
    },
    /// Bug: after the drop the process could still become root again, or its
    /// ids are not the ones asked for. The process must exit.
    PrivilegesNotDropped {
        /// What the verification found.
        detail: String,
    },
    /// Operator: another live process holds the pid file's lock.
    AlreadyRunning {
        /// The pid file.
        path: PathBuf,
        /// The holder's pid as written in the file; `None` when the holder
        /// has not written it yet or the file is unreadable.
        pid: Option<u32>,
    },
    /// Local resource: the pid file could not be created, locked or written.
    PidFile {
        /// The pid file.
        path: PathBuf,
        /// The underlying failure.
        source: io::Error,
    },
    /// Local resource: a readiness notification could not be sent to the
    /// service manager's socket.
    Notify {
        /// The `NOTIFY_SOCKET` address.
        socket: OsString,
        /// The underlying failure.
        source: io::Error,
    },
    /// Local resource: signal handlers could not be installed.
    Signals {
        /// The underlying failure.
        source: io::Error,
    },
    /// Local resource: the async runtime could not be built (threads, epoll).
    Runtime {
        /// The underlying failure.
        source: io::Error,
    },
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::UnknownUser { user } => write!(
                f,
                "started as root, but the account {user:?} to run as does not exist: \
                 create it (useradd --system --home-dir /var/spool/skein --shell \
                 /usr/sbin/nologin {user}), set `user` to another unprivileged account, \
                 or start skein as an ordinary user"
            ),
            DaemonError::RootUserRefused { user } => write!(
                f,
                "refusing to run as {user:?}: it is root, configure an unprivileged user"
            ),
            DaemonError::UserLookup { user, source } => {
                write!(f, "cannot look up user {user:?}: {source}")
            }
            DaemonError::PrivilegeDrop { step, source } => {
                write!(f, "cannot drop privileges: {step} failed: {source}")
            }
            DaemonError::PrivilegesNotDropped { detail } => {
                write!(f, "privileges were not dropped: {detail}")
            }
            DaemonError::AlreadyRunning { path, pid } => match pid {
                Some(pid) => write!(
                    f,
                    "already running: {} is locked by pid {pid}",
                    path.display()
                ),
                None => write!(
                    f,
                    "already running: {} is locked by another process",
                    path.display()
                ),
            },
            DaemonError::PidFile { path, source } => {
                write!(f, "pid file {}: {source}", path.display())
            }
            DaemonError::Notify { socket, source } => {
                write!(f, "cannot notify service manager at {socket:?}: {source}")
            }
            DaemonError::Signals { source } => {
                write!(f, "cannot install signal handlers: {source}")
            }
            DaemonError::Runtime { source } => write!(f, "cannot start async runtime: {source}"),
        }
    }
}

impl std::error::Error for DaemonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DaemonError::UserLookup { source, .. } | DaemonError::PrivilegeDrop { source, .. } => {
                Some(source)
            }
            DaemonError::PidFile { source, .. }
            | DaemonError::Notify { source, .. }
            | DaemonError::Signals { source }
            | DaemonError::Runtime { source } => Some(source),
            DaemonError::UnknownUser { .. }
            | DaemonError::RootUserRefused { .. }
            | DaemonError::PrivilegesNotDropped { .. }
            | DaemonError::AlreadyRunning { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_subject() {
        let cases: Vec<(DaemonError, &str)> = vec![
            (
                DaemonError::UnknownUser {
                    user: "skein".into(),
                },
                "started as root, but the account \"skein\" to run as does not exist: \
                 create it (useradd --system --home-dir /var/spool/skein --shell \
                 /usr/sbin/nologin skein), set `user` to another unprivileged account, \
                 or start skein as an ordinary user",
            ),
            (
                DaemonError::AlreadyRunning {
                    path: "/run/skein.pid".into(),
                    pid: Some(42),
                },
                "already running: /run/skein.pid is locked by pid 42",
            ),
            (
                DaemonError::AlreadyRunning {
                    path: "/run/skein.pid".into(),
                    pid: None,
                },
                "already running: /run/skein.pid is locked by another process",
            ),
            (
                DaemonError::PrivilegeDrop {
                    step: "setuid",
                    source: nix::Error::EPERM,
                },
                "cannot drop privileges: setuid failed: EPERM: Operation not permitted",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.to_string(), expected);
        }
    }

    #[test]
    fn source_is_kept_for_system_failures() {
        use std::error::Error as _;
        let error = DaemonError::PidFile {
            path: "x".into(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert!(error.source().is_some());
        let error = DaemonError::UnknownUser { user: "x".into() };
        assert!(error.source().is_none());
    }
}
