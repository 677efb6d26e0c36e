//! SMTP replies, as agents report them. Their RFC 3463 enhanced status
//! codes are [`EnhancedCode`], defined in `skein-mail`.

use std::fmt;

use serde::{Deserialize, Serialize};
use skein_mail::EnhancedCode;

/// An SMTP reply as received from a remote server (or synthesised by an
/// agent that never got one, e.g. a local delivery).
///
/// `text` is the reply text without the code and enhanced code; lines of a
/// multi-line reply are joined with `\n`. The code is not validated here:
/// the SMTP codec that parsed it has.
///
/// Layout: `code` varint `u16`, `enhanced` as an `Option`, `text` string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpReply {
    /// The three-digit reply code, e.g. 250.
    pub code: u16,
    /// The enhanced status code the server sent, if any.
    pub enhanced: Option<EnhancedCode>,
    /// The human-readable text.
    pub text: String,
}

impl fmt::Display for SmtpReply {
    /// `550 5.1.1 no such user`, the way logs and DSN `Diagnostic-Code`
    /// fields show a reply; continuation lines are joined with one space
    /// (empty ones left out, each trimmed) so that a log line stays one
    /// line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(enhanced) = &self.enhanced {
            write!(f, " {enhanced}")?;
        }
        // One space between the parts, whatever the server put around its
        // lines: an empty continuation line (`550-`) or padding would
        // otherwise leave double spaces in logs and DSNs.
        for line in self.text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            write!(f, " {line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_display() {
        let table = [
            (
                SmtpReply {
                    code: 550,
                    enhanced: EnhancedCode::new(5, 1, 1),
                    text: "no such user".into(),
                },
                "550 5.1.1 no such user",
            ),
            (
                SmtpReply {
                    code: 421,
                    enhanced: None,
                    text: "busy\ntry later".into(),
                },
                "421 busy try later",
            ),
            (
                SmtpReply {
                    code: 250,
                    enhanced: None,
                    text: String::new(),
                },
                "250",
            ),
            // An empty first line, padding, an empty line between.
            (
                SmtpReply {
                    code: 550,
                    enhanced: EnhancedCode::new(5, 7, 1),
                    text: "\n  rejected  \n\nsee https://example.org/why ".into(),
                },
                "550 5.7.1 rejected see https://example.org/why",
            ),
        ];
        for (reply, want) in table {
            assert_eq!(reply.to_string(), want);
        }
    }
}
