//! Spool errors, by whose fault they are.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// What went wrong with the spool.
#[derive(Debug)]
pub enum SpoolError {
    /// A local resource failed (disk full, permission, I/O error). The
    /// operation can be retried later; SMTP answers 451 4.3.0, `sendmail`
    /// exits EX_TEMPFAIL.
    Io {
        /// What we were doing ("fsync", "rename", …).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A spool file does not parse or fails its checks. It is set aside
    /// into `corrupt/` by whoever finds it; never retried as is.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why it is considered corrupt.
        reason: String,
    },
    /// Another process holds the lock on this file.
    Locked {
        /// The locked file.
        path: PathBuf,
    },
    /// The caller asked for something that cannot be written (a bug in the
    /// caller, such as a recipient with a newline in it).
    Invalid(String),
}

impl SpoolError {
    /// A local I/O failure while doing `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SpoolError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// A corrupt file.
    pub fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        SpoolError::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// True for a missing file (another process took it first).
    pub fn is_not_found(&self) -> bool {
        matches!(self, SpoolError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

impl fmt::Display for SpoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpoolError::Io { op, path, source } => {
                write!(f, "spool: {op} {}: {source}", path.display())
            }
            SpoolError::Corrupt { path, reason } => {
                write!(f, "spool: corrupt file {}: {reason}", path.display())
            }
            SpoolError::Locked { path } => {
                write!(f, "spool: {} is locked by another process", path.display())
            }
            SpoolError::Invalid(why) => write!(f, "spool: refusing to write: {why}"),
        }
    }
}

impl std::error::Error for SpoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpoolError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
