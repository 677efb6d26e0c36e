//! Why a local delivery did not happen, whose fault that is, and which
//! outcome it becomes.

use std::fmt;
use std::io;
use std::path::PathBuf;

use skein_agent::Delivery;
use skein_proto::EnhancedCode;

/// A failed local delivery.
///
/// | variant | fault | outcome |
/// |---|---|---|
/// | [`UnknownUser`](Self::UnknownUser) | the sender (no such mailbox) | failed `5.1.1` |
/// | [`BadUserName`](Self::BadUserName) | the sender (or the router, for letting it through) | failed `5.1.3` |
/// | [`Message`](Self::Message) | the local system: the spool file is missing or shorter than the job says | deferred `4.3.0` |
/// | [`Mailbox`](Self::Mailbox) | the local system: the Maildir cannot be written | deferred `4.2.2` for a full disk or quota, else `4.3.0` |
/// | [`UserLookup`](Self::UserLookup) | the local system: the user database failed | deferred `4.3.0` |
/// | [`AsUser`](Self::AsUser) | the local system: delivery as the account (`local.home_mailbox`) failed — the agent may not switch users, or the account's Maildir cannot be written | deferred `4.2.2` for a full disk or quota, else `4.3.0` |
#[derive(Debug)]
pub enum LocalError {
    /// Neither a system account nor an existing Maildir.
    UnknownUser(String),
    /// A user name that cannot be a Maildir directory name.
    BadUserName {
        /// The name.
        user: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// The message could not be read from the spool.
    Message {
        /// The spool file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// Writing into the Maildir failed.
    Mailbox {
        /// What was being done (`"create"`, `"write"`, `"fsync"`, …).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// `getpwnam` failed (not "no such user": the lookup itself).
    UserLookup {
        /// The user looked up.
        user: String,
        /// The system's error.
        source: io::Error,
    },
    /// Delivery into an account's home Maildir, as the account, failed.
    AsUser {
        /// The account.
        user: String,
        /// What went wrong, as the writer or the switch reported it.
        problem: String,
        /// The disk or the account's quota is full.
        full: bool,
    },
}

impl LocalError {
    /// A Maildir I/O failure.
    pub fn mailbox(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LocalError::Mailbox {
            op,
            path: path.into(),
            source,
        }
    }

    /// The outcome this error becomes. Only the sender's mistakes fail;
    /// everything the local system can recover from is deferred.
    pub fn to_delivery(&self) -> Delivery {
        let diagnostic = self.to_string();
        match self {
            LocalError::UnknownUser(_) => Delivery::failed(EnhancedCode::BAD_MAILBOX, diagnostic),
            LocalError::BadUserName { .. } => {
                Delivery::failed(EnhancedCode::BAD_MAILBOX_SYNTAX, diagnostic)
            }
            LocalError::Mailbox { source, .. } if is_full(source) => {
                Delivery::deferred(EnhancedCode::MAILBOX_FULL, diagnostic, None)
            }
            LocalError::AsUser { full: true, .. } => {
                Delivery::deferred(EnhancedCode::MAILBOX_FULL, diagnostic, None)
            }
            LocalError::Message { .. }
            | LocalError::Mailbox { .. }
            | LocalError::UserLookup { .. }
            | LocalError::AsUser { .. } => {
                Delivery::deferred(EnhancedCode::SYSTEM_TROUBLE, diagnostic, None)
            }
        }
    }
}

/// A full file system or an exhausted quota: the mailbox cannot grow.
pub(crate) fn is_full(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

impl fmt::Display for LocalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalError::UnknownUser(user) => write!(f, "no such user: {user}"),
            LocalError::BadUserName { user, why } => {
                write!(f, "invalid local user name {user:?}: {why}")
            }
            LocalError::Message { path, problem } => {
                write!(f, "cannot read the message {}: {problem}", path.display())
            }
            LocalError::Mailbox { op, path, source } => {
                write!(
                    f,
                    "maildir delivery failed: {op} {}: {source}",
                    path.display()
                )
            }
            LocalError::UserLookup { user, source } => {
                write!(f, "cannot look up user {user}: {source}")
            }
            LocalError::AsUser { user, problem, .. } => {
                write!(f, "delivery as {user} failed: {problem}")
            }
        }
    }
}

impl std::error::Error for LocalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LocalError::Mailbox { source, .. } | LocalError::UserLookup { source, .. } => {
                Some(source)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_proto::Status;

    #[test]
    fn errors_become_the_right_outcomes() {
        let os = io::Error::from_raw_os_error;
        let table: Vec<(LocalError, bool, &str)> = vec![
            (LocalError::UnknownUser("bob".into()), false, "5.1.1"),
            (
                LocalError::BadUserName {
                    user: "../x".into(),
                    why: "contains a slash",
                },
                false,
                "5.1.3",
            ),
            (
                LocalError::Message {
                    path: "/spool/queue/X".into(),
                    problem: "missing".into(),
                },
                true,
                "4.3.0",
            ),
            (
                LocalError::mailbox("write", "/m", os(libc::ENOSPC)),
                true,
                "4.2.2",
            ),
            (
                LocalError::mailbox("write", "/m", os(libc::EDQUOT)),
                true,
                "4.2.2",
            ),
            (
                LocalError::mailbox("fsync", "/m", os(libc::EIO)),
                true,
                "4.3.0",
            ),
            (
                LocalError::mailbox("create", "/m", os(libc::EACCES)),
                true,
                "4.3.0",
            ),
            (
                LocalError::UserLookup {
                    user: "bob".into(),
                    source: os(libc::EIO),
                },
                true,
                "4.3.0",
            ),
        ];
        for (error, deferred, enhanced) in table {
            let delivery = error.to_delivery();
            let is_deferred = matches!(delivery.status, Status::Deferred { .. });
            assert_eq!(is_deferred, deferred, "{error}");
            if !deferred {
                assert_eq!(delivery.status, Status::Failed, "{error}");
            }
            assert_eq!(delivery.enhanced.to_string(), enhanced, "{error}");
            assert_eq!(delivery.diagnostic, error.to_string());
        }
    }
}
