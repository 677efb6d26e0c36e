//! RFC 3463 enhanced status codes (`class.subject.detail`), and the named
//! codes skein itself reports.
//!
//! Every code skein writes — in an agent's outcome, a spool journal
//! record, a log line or a DSN — is an [`EnhancedCode`], never a string, so
//! that an invalid one cannot be formed. The codes skein chooses itself
//! are the associated constants below, one place for all of them; each is
//! built by [`EnhancedCode::must`], which makes an invalid constant a
//! compile error rather than a silent fallback:
//!
//! ```compile_fail,E0080
//! use skein_mail::EnhancedCode;
//! // Class 3 does not exist: the build fails here.
//! const ODD: EnhancedCode = EnhancedCode::must(3, 1, 1);
//! # let _ = ODD;
//! ```
//!
//! ```compile_fail,E0080
//! use skein_mail::EnhancedCode;
//! // Subject and detail have at most three digits.
//! const LONG: EnhancedCode = EnhancedCode::must(5, 1, 1000);
//! # let _ = LONG;
//! ```
//!
//! ```
//! use skein_mail::EnhancedCode;
//! const GREYLISTED: EnhancedCode = EnhancedCode::must(4, 7, 1);
//! assert_eq!(GREYLISTED.to_string(), "4.7.1");
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An RFC 3463 enhanced status code, `class.subject.detail`.
///
/// Valid codes have class 2, 4 or 5 and subject and detail in `0..=999`.
/// [`new`](Self::new), [`must`](Self::must) and [`FromStr`] check that;
/// decoding a protocol message containing an invalid code fails as
/// malformed, because an agent that cannot classify an outcome is broken.
/// The fields are public for pattern matching; a code built by hand with
/// bad values is reported by [`is_valid`](Self::is_valid) and refused by
/// the receiving side.
///
/// [`Display`](fmt::Display) writes `class.subject.detail` in decimal
/// without leading zeros, the form [`FromStr`] reads back.
///
/// Layout (agent protocol): `class` as one byte, then `subject` and
/// `detail` as varint `u16`.
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

/// The codes skein reports itself, by RFC 3463 name (RFC 7505 and
/// RFC 6531 for the two that came later). Which condition maps to which
/// code is documented where the code is used.
impl EnhancedCode {
    /// `2.0.0`: success, nothing more to say.
    pub const SUCCESS: EnhancedCode = EnhancedCode::must(2, 0, 0);
    /// `4.0.0`: a transient failure with no better classification.
    pub const TRANSIENT: EnhancedCode = EnhancedCode::must(4, 0, 0);
    /// `5.0.0`: a permanent failure with no better classification.
    pub const PERMANENT: EnhancedCode = EnhancedCode::must(5, 0, 0);
    /// `5.1.1`: bad destination mailbox address.
    pub const BAD_MAILBOX: EnhancedCode = EnhancedCode::must(5, 1, 1);
    /// `5.1.2`: bad destination system address (no such domain, null MX).
    pub const BAD_SYSTEM: EnhancedCode = EnhancedCode::must(5, 1, 2);
    /// `5.1.3`: bad destination mailbox address syntax.
    pub const BAD_MAILBOX_SYNTAX: EnhancedCode = EnhancedCode::must(5, 1, 3);
    /// `5.1.10`: the domain publishes a null MX and takes no mail
    /// (RFC 7505).
    pub const NULL_MX: EnhancedCode = EnhancedCode::must(5, 1, 10);
    /// `4.2.2`: mailbox full.
    pub const MAILBOX_FULL: EnhancedCode = EnhancedCode::must(4, 2, 2);
    /// `5.2.4`: mailing list expansion problem.
    pub const LIST_EXPANSION: EnhancedCode = EnhancedCode::must(5, 2, 4);
    /// `4.3.0`: other or undefined mail system status — a local problem
    /// (the spool, the system, an agent that failed).
    pub const SYSTEM_TROUBLE: EnhancedCode = EnhancedCode::must(4, 3, 0);
    /// `5.3.0`: other mail system status, permanent — the spool's copy of
    /// the message failed its checks (size, checksum, format), so it can
    /// never be sent as the sender wrote it.
    pub const DAMAGED_IN_SPOOL: EnhancedCode = EnhancedCode::must(5, 3, 0);
    /// `4.3.2`: system not accepting network messages (an agent that is
    /// stopping, a cancelled job).
    pub const NOT_ACCEPTING: EnhancedCode = EnhancedCode::must(4, 3, 2);
    /// `5.3.4`: message too big for the system.
    pub const TOO_BIG: EnhancedCode = EnhancedCode::must(5, 3, 4);
    /// `4.3.5`: system incorrectly configured.
    pub const BAD_CONFIG: EnhancedCode = EnhancedCode::must(4, 3, 5);
    /// `4.4.1`: no answer from host (connection refused or timed out).
    pub const NO_ANSWER: EnhancedCode = EnhancedCode::must(4, 4, 1);
    /// `4.4.2`: bad connection (dropped in the middle of a transaction).
    pub const BAD_CONNECTION: EnhancedCode = EnhancedCode::must(4, 4, 2);
    /// `4.4.3`: directory server failure (DNS temporarily unavailable).
    pub const ROUTING_SERVER_FAILURE: EnhancedCode = EnhancedCode::must(4, 4, 3);
    /// `4.4.7`: delivery time expired (the message stayed in the queue
    /// past `scheduler.expiry`).
    pub const EXPIRED: EnhancedCode = EnhancedCode::must(4, 4, 7);
    /// `5.4.6`: routing loop detected.
    pub const ROUTING_LOOP: EnhancedCode = EnhancedCode::must(5, 4, 6);
    /// `4.5.0`: other or undefined protocol status (the peer broke the
    /// protocol).
    pub const PROTOCOL_TROUBLE: EnhancedCode = EnhancedCode::must(4, 5, 0);
    /// `5.6.3`: conversion required but not supported.
    pub const CONVERSION_REQUIRED: EnhancedCode = EnhancedCode::must(5, 6, 3);
    /// `5.6.7`: non-ASCII addresses not permitted: the message needs
    /// SMTPUTF8 and the next hop lacks it (RFC 6531).
    pub const UTF8_REQUIRED: EnhancedCode = EnhancedCode::must(5, 6, 7);
    /// `5.7.1`: delivery not authorized, message refused.
    pub const NOT_AUTHORIZED: EnhancedCode = EnhancedCode::must(5, 7, 1);
    /// `4.7.4`: security features not supported (no STARTTLS where the
    /// policy insists on it).
    pub const NO_SECURITY: EnhancedCode = EnhancedCode::must(4, 7, 4);
    /// `4.7.5`: cryptographic failure (the TLS handshake or the
    /// certificate check failed).
    pub const CRYPTO_FAILURE: EnhancedCode = EnhancedCode::must(4, 7, 5);
}

impl EnhancedCode {
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

    /// A code known to be valid, for constants:
    /// `const X: EnhancedCode = EnhancedCode::must(4, 7, 1);`. Evaluated
    /// in a constant, an invalid code is a compile error (see the module
    /// documentation); there is no fallback.
    ///
    /// # Panics
    ///
    /// When the code is not valid (see [`new`](Self::new)). Use `new` for
    /// values only known at run time.
    pub const fn must(class: u8, subject: u16, detail: u16) -> Self {
        match EnhancedCode::new(class, subject, detail) {
            Some(code) => code,
            None => panic!(
                "invalid RFC 3463 enhanced status code: class must be 2, 4 or 5, subject and detail at most 999"
            ),
        }
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
    fn named_codes_are_the_rfc_numbers() {
        let table = [
            (EnhancedCode::SUCCESS, "2.0.0"),
            (EnhancedCode::TRANSIENT, "4.0.0"),
            (EnhancedCode::PERMANENT, "5.0.0"),
            (EnhancedCode::BAD_MAILBOX, "5.1.1"),
            (EnhancedCode::BAD_SYSTEM, "5.1.2"),
            (EnhancedCode::BAD_MAILBOX_SYNTAX, "5.1.3"),
            (EnhancedCode::NULL_MX, "5.1.10"),
            (EnhancedCode::MAILBOX_FULL, "4.2.2"),
            (EnhancedCode::LIST_EXPANSION, "5.2.4"),
            (EnhancedCode::SYSTEM_TROUBLE, "4.3.0"),
            (EnhancedCode::DAMAGED_IN_SPOOL, "5.3.0"),
            (EnhancedCode::NOT_ACCEPTING, "4.3.2"),
            (EnhancedCode::TOO_BIG, "5.3.4"),
            (EnhancedCode::BAD_CONFIG, "4.3.5"),
            (EnhancedCode::NO_ANSWER, "4.4.1"),
            (EnhancedCode::BAD_CONNECTION, "4.4.2"),
            (EnhancedCode::ROUTING_SERVER_FAILURE, "4.4.3"),
            (EnhancedCode::EXPIRED, "4.4.7"),
            (EnhancedCode::ROUTING_LOOP, "5.4.6"),
            (EnhancedCode::PROTOCOL_TROUBLE, "4.5.0"),
            (EnhancedCode::CONVERSION_REQUIRED, "5.6.3"),
            (EnhancedCode::UTF8_REQUIRED, "5.6.7"),
            (EnhancedCode::NOT_AUTHORIZED, "5.7.1"),
            (EnhancedCode::NO_SECURITY, "4.7.4"),
            (EnhancedCode::CRYPTO_FAILURE, "4.7.5"),
        ];
        for (code, text) in table {
            assert_eq!(code.to_string(), text);
            assert_eq!(text.parse(), Ok(code));
        }
    }

    #[test]
    #[should_panic(expected = "invalid RFC 3463 enhanced status code")]
    fn must_refuses_an_invalid_code_at_run_time_too() {
        let class = std::hint::black_box(3);
        let _ = EnhancedCode::must(class, 0, 0);
    }
}
