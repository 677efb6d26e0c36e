//! The one error type of this crate.
//!
//! A configuration error is nearly always the operator's fault (a typo, a
//! wrong type, an impossible combination); the only exception is a file that
//! cannot be read at all, which is a local resource failing. [`ErrorKind`]
//! says which, and `Display` always leads with `file:line: key:` so that an
//! editor or a terminal can jump straight to the mistake.

use std::fmt;

/// What kind of mistake a [`ConfigError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The file could not be read (missing, unreadable, not UTF-8): a local
    /// resource failing rather than a mistake inside the file.
    Read,
    /// The text is not valid TOML.
    Syntax,
    /// A key that skein does not know: almost always a typo, so it is an
    /// error rather than silently ignored.
    UnknownKey,
    /// A value of the wrong TOML type, e.g. a string where a number belongs.
    WrongType,
    /// A required key is absent.
    Missing,
    /// A value of the right type that is still unusable: a bad duration, an
    /// invalid CIDR, `maxthr = 0`, `tls.cert` without `tls.key`, …
    Invalid,
}

/// A configuration error, located as precisely as the mistake allows.
///
/// `Display` renders `file:line: key: message`, leaving out the parts that
/// are unknown, e.g.
/// `/etc/skein.toml:12: scheduler.expiry: invalid duration "5x" (…)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// What kind of mistake this is.
    pub kind: ErrorKind,
    /// The file, as the operator named it, or `(embedded default)`.
    pub file: String,
    /// 1-based line of the offending key or value, when there is one.
    pub line: Option<usize>,
    /// Dotted path of the offending key, e.g. `smtpd.relay_networks[1]` or
    /// `route[0].channel`, when there is one.
    pub key: Option<String>,
    /// What is wrong, and where it helps, what would be right.
    pub message: String,
}

impl ConfigError {
    /// An error about the file as a whole (it could not be read).
    pub(crate) fn read(file: &str, message: String) -> Self {
        ConfigError {
            kind: ErrorKind::Read,
            file: file.to_owned(),
            line: None,
            key: None,
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The line of each key a configuration file sets, by dotted path
/// (`smtpd.submission`, `route[0].channel`), for errors found after
/// parsing: a file a key names that cannot be read is reported at the
/// key. Empty for the embedded default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLines(pub(crate) std::collections::BTreeMap<String, usize>);

impl KeyLines {
    /// The line `key` is set on, if the file sets it.
    pub fn line(&self, key: &str) -> Option<usize> {
        self.0.get(key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_leaves_out_unknown_parts() {
        let full = ConfigError {
            kind: ErrorKind::Invalid,
            file: "/etc/skein.toml".into(),
            line: Some(12),
            key: Some("scheduler.expiry".into()),
            message: "bad".into(),
        };
        let cases = [
            (full.clone(), "/etc/skein.toml:12: scheduler.expiry: bad"),
            (
                ConfigError {
                    key: None,
                    ..full.clone()
                },
                "/etc/skein.toml:12: bad",
            ),
            (
                ConfigError {
                    line: None,
                    ..full.clone()
                },
                "/etc/skein.toml: scheduler.expiry: bad",
            ),
            (
                ConfigError::read("x.toml", "cannot read: gone".into()),
                "x.toml: cannot read: gone",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
        }
    }
}
