//! SMTP replies and RFC 3463 enhanced status codes, as agents report them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An RFC 3463 enhanced status code, `class.subject.detail`.
///
/// Valid codes have class 2, 4 or 5 and subject and detail in `0..=999`.
/// [`new`](Self::new) and [`FromStr`] check that; decoding a message
/// containing an invalid code fails as malformed, because an agent that
/// cannot classify an outcome is broken. The fields are public for pattern
/// matching; a code built by hand with bad values is reported by
/// [`is_valid`](Self::is_valid) and refused by the receiving side.
///
/// Layout: `class` as one byte, then `subject` and `detail` as varint `u16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawEnhancedCode")]
pub struct EnhancedCode {
    /// 2 (success), 4 (persistent transient failure), 5 (permanent failure).
    pub class: u8,
    /// The probable source of the condition: 0 other, 1 address, 2 mailbox,
    /// 3 mail system, 4 network and routing, 5 mail delivery protocol,
    /// 6 message content, 7 security or policy.
    pub subject: u16,
    /// The precise condition within the subject.
    pub detail: u16,
}

/// The wire shape of [`EnhancedCode`], decoded first and then validated.
#[derive(Deserialize)]
struct RawEnhancedCode {
    class: u8,
    subject: u16,
    detail: u16,
}

impl TryFrom<RawEnhancedCode> for EnhancedCode {
    type Error = String;

    fn try_from(raw: RawEnhancedCode) -> Result<Self, String> {
        EnhancedCode::new(raw.class, raw.subject, raw.detail).ok_or_else(|| {
            format!(
                "invalid enhanced status code {}.{}.{}",
                raw.class, raw.subject, raw.detail
            )
        })
    }
}

impl EnhancedCode {
    /// `2.0.0`: success, nothing more to say.
    pub const SUCCESS: EnhancedCode = EnhancedCode::known(2, 0, 0);
    /// `4.0.0`: a transient failure with no better classification.
    pub const TRANSIENT: EnhancedCode = EnhancedCode::known(4, 0, 0);
    /// `5.0.0`: a permanent failure with no better classification.
    pub const PERMANENT: EnhancedCode = EnhancedCode::known(5, 0, 0);
    /// `4.4.1`: no answer from host (connection refused or timed out).
    pub const NO_ANSWER: EnhancedCode = EnhancedCode::known(4, 4, 1);
    /// `4.4.2`: bad connection (dropped in the middle of a transaction).
    pub const BAD_CONNECTION: EnhancedCode = EnhancedCode::known(4, 4, 2);
    /// `4.4.3`: directory server failure (DNS temporarily unavailable).
    pub const ROUTING_SERVER_FAILURE: EnhancedCode = EnhancedCode::known(4, 4, 3);
    /// `5.1.1`: bad destination mailbox address.
    pub const BAD_MAILBOX: EnhancedCode = EnhancedCode::known(5, 1, 1);
    /// `5.1.2`: bad destination system address (no such domain, null MX).
    pub const BAD_SYSTEM: EnhancedCode = EnhancedCode::known(5, 1, 2);

    const fn known(class: u8, subject: u16, detail: u16) -> Self {
        EnhancedCode {
            class,
            subject,
            detail,
        }
    }

    /// A code, if `class` is 2, 4 or 5 and `subject` and `detail` are at
    /// most 999.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Option<Self> {
        let code = EnhancedCode {
            class,
            subject,
            detail,
        };
        if code.is_valid() { Some(code) } else { None }
    }

    /// True for the codes RFC 3463 allows.
    pub const fn is_valid(&self) -> bool {
        matches!(self.class, 2 | 4 | 5) && self.subject <= 999 && self.detail <= 999
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// Why a string is not an enhanced status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseEnhancedCodeError(String);

impl fmt::Display for ParseEnhancedCodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not an enhanced status code: {:?}", self.0)
    }
}

impl std::error::Error for ParseEnhancedCodeError {}

impl FromStr for EnhancedCode {
    type Err = ParseEnhancedCodeError;

    /// Parses `class.subject.detail` exactly as RFC 3463 writes it: class
    /// `2`, `4` or `5`; subject and detail of one to three digits without
    /// leading zeros; no white space.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseEnhancedCodeError(s.to_owned());
        let mut parts = s.split('.');
        let (Some(class), Some(subject), Some(detail), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err());
        };
        let class = match class {
            "2" => 2,
            "4" => 4,
            "5" => 5,
            _ => return Err(err()),
        };
        let subject = sub_code(subject).ok_or_else(err)?;
        let detail = sub_code(detail).ok_or_else(err)?;
        Ok(EnhancedCode {
            class,
            subject,
            detail,
        })
    }
}

/// `1*3digit` without leading zeros (RFC 3463 section 2).
fn sub_code(s: &str) -> Option<u16> {
    let ok = (1..=3).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if ok { s.parse().ok() } else { None }
}

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
    /// fields show a reply; continuation lines are joined with a space so
    /// that a log line stays one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(enhanced) = &self.enhanced {
            write!(f, " {enhanced}")?;
        }
        if !self.text.is_empty() {
            f.write_str(" ")?;
            let mut lines = self.text.lines();
            if let Some(first) = lines.next() {
                f.write_str(first)?;
            }
            for line in lines {
                write!(f, " {line}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        /// Input, then `(class, subject, detail)` if it is valid.
        type Case = (&'static str, Option<(u8, u16, u16)>);
        let table: &[Case] = &[
            ("2.0.0", Some((2, 0, 0))),
            ("5.1.1", Some((5, 1, 1))),
            ("4.7.999", Some((4, 7, 999))),
            ("5.999.10", Some((5, 999, 10))),
            ("3.0.0", None),
            ("6.1.1", None),
            ("5.1", None),
            ("5.1.1.1", None),
            ("5.01.1", None),
            ("5.1.00", None),
            ("5.1000.1", None),
            ("5.1.1 ", None),
            (" 5.1.1", None),
            ("5.+1.1", None),
            ("5..1", None),
            ("", None),
            ("5.1.١", None),
        ];
        for (input, want) in table {
            let got = input.parse::<EnhancedCode>().ok();
            let want = want.map(|(c, s, d)| EnhancedCode::new(c, s, d).unwrap());
            assert_eq!(got, want, "{input:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["2.0.0", "4.4.1", "5.7.26", "5.999.999"] {
            assert_eq!(s.parse::<EnhancedCode>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn validity() {
        let table = [
            ((2, 0, 0), true),
            ((4, 999, 999), true),
            ((5, 1000, 0), false),
            ((5, 0, 1000), false),
            ((0, 0, 0), false),
            ((3, 1, 1), false),
        ];
        for ((c, s, d), ok) in table {
            assert_eq!(EnhancedCode::new(c, s, d).is_some(), ok, "{c}.{s}.{d}");
        }
        for k in [
            EnhancedCode::SUCCESS,
            EnhancedCode::TRANSIENT,
            EnhancedCode::PERMANENT,
            EnhancedCode::NO_ANSWER,
            EnhancedCode::BAD_CONNECTION,
            EnhancedCode::ROUTING_SERVER_FAILURE,
            EnhancedCode::BAD_MAILBOX,
            EnhancedCode::BAD_SYSTEM,
        ] {
            assert!(k.is_valid(), "{k}");
        }
    }

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
        ];
        for (reply, want) in table {
            assert_eq!(reply.to_string(), want);
        }
    }
}
