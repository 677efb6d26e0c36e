//! Identifiers shared by the agent and control messages.
//!
//! The envelope attributes they carry — [`Ret`](crate::Ret),
//! [`BodyType`](crate::BodyType), [`Notify`](crate::Notify) — and
//! [`EnhancedCode`](crate::EnhancedCode) are defined once for all of skein
//! in `skein-mail` and re-exported by this crate. Their layouts, documented
//! there, are part of this protocol: changing one needs a
//! [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION) bump like any type here.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The scheduler's number for one job handed to one agent. Unique for the
/// life of a scheduler process; never reused across jobs of that process.
///
/// Layout: the `u64` alone (varint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job#{}", self.0)
    }
}

/// A thread: all pending recipients, across messages, that share one
/// `(channel, host)`. Displayed as `channel/host`, the string scheduler
/// clauses match their globs against.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ThreadKey {
    /// The channel, named by its agent: `smtp`, `local`, …
    pub channel: String,
    /// The destination within the channel: a domain for `smtp`, a user or
    /// the local host name for `local`. May be empty for channels that have
    /// a single destination.
    pub host: String,
}

impl ThreadKey {
    /// A thread key from its two parts.
    pub fn new(channel: impl Into<String>, host: impl Into<String>) -> Self {
        ThreadKey {
            channel: channel.into(),
            host: host.into(),
        }
    }
}

impl fmt::Display for ThreadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.channel, self.host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays() {
        assert_eq!(
            ThreadKey::new("smtp", "example.org").to_string(),
            "smtp/example.org"
        );
        assert_eq!(ThreadKey::new("local", "").to_string(), "local/");
        assert_eq!(JobId(42).to_string(), "job#42");
    }
}
