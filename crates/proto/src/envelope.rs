//! Identifiers and envelope attributes shared by the agent and control
//! messages.

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

/// DSN `RET` (RFC 3461): how much of the message a failure report returns.
///
/// Layout: variant index `0` = `Full`, `1` = `Headers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Ret {
    /// `RET=FULL`: the whole message.
    Full,
    /// `RET=HDRS`: the headers only.
    Headers,
}

/// The message body type announced to the next hop (`BODY=` of RFC 6152
/// and RFC 3030).
///
/// Layout: variant index `0` = `SevenBit`, `1` = `EightBitMime`,
/// `2` = `BinaryMime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BodyType {
    /// `BODY=7BIT`, or no `BODY=` parameter.
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
    /// `BODY=BINARYMIME`: needs `CHUNKING` at the next hop.
    BinaryMime,
}

/// DSN `NOTIFY` (RFC 3461) of one recipient.
///
/// `never` excludes the three others. [`Notify::default`] is what RFC 3461
/// says applies when the parameter is absent: failure and delay.
///
/// Layout: four `bool`s (one byte each, 0 or 1) in field order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Notify {
    /// `NOTIFY=NEVER`.
    pub never: bool,
    /// Report successful delivery.
    pub success: bool,
    /// Report failure.
    pub failure: bool,
    /// Report delay.
    pub delay: bool,
}

impl Default for Notify {
    fn default() -> Self {
        Notify {
            never: false,
            success: false,
            failure: true,
            delay: true,
        }
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

    #[test]
    fn notify_default_is_rfc3461() {
        let n = Notify::default();
        assert!(!n.never && !n.success && n.failure && n.delay);
    }
}
