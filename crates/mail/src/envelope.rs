//! The ESMTP envelope parameters that travel with a message from the SMTP
//! server through the spool to the SMTP client: `RET` and `NOTIFY` of DSN
//! (RFC 3461) and `BODY` (RFC 6152, RFC 3030).
//!
//! Each type parses the parameter text and displays back to it, once for
//! the whole code base: the SMTP codec, the spool files and `sendmail -N`
//! all go through here.
//!
//! These types are also part of the agent protocol (`skein-proto`, which
//! re-exports them): their serde layout, documented on each type, must not
//! change without a protocol version bump.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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

impl Ret {
    /// The parameter value, as SMTP and the spool write it: `FULL`, `HDRS`.
    pub const fn keyword(self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Headers => "HDRS",
        }
    }

    /// Parses a `RET=` value, in any case.
    pub fn from_keyword(s: &str) -> Option<Ret> {
        [Ret::Full, Ret::Headers]
            .into_iter()
            .find(|r| r.keyword().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Ret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword())
    }
}

/// The message body type announced to the next hop (`BODY=` of RFC 6152
/// and RFC 3030). The default is what no `BODY=` parameter means.
///
/// Layout: variant index `0` = `SevenBit`, `1` = `EightBitMime`,
/// `2` = `BinaryMime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum BodyType {
    /// `BODY=7BIT`, or no `BODY=` parameter.
    #[default]
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
    /// `BODY=BINARYMIME`: needs `CHUNKING` at the next hop.
    BinaryMime,
}

impl BodyType {
    /// The parameter value, as SMTP and the spool write it: `7BIT`,
    /// `8BITMIME`, `BINARYMIME`.
    pub const fn keyword(self) -> &'static str {
        match self {
            BodyType::SevenBit => "7BIT",
            BodyType::EightBitMime => "8BITMIME",
            BodyType::BinaryMime => "BINARYMIME",
        }
    }

    /// Parses a `BODY=` value, in any case.
    pub fn from_keyword(s: &str) -> Option<BodyType> {
        [
            BodyType::SevenBit,
            BodyType::EightBitMime,
            BodyType::BinaryMime,
        ]
        .into_iter()
        .find(|b| b.keyword().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for BodyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword())
    }
}

/// DSN `NOTIFY` (RFC 3461) of one recipient.
///
/// `never` excludes the three others. [`Notify::default`] is what RFC 3461
/// says applies when the parameter is absent: failure and delay.
///
/// Text: [`FromStr`] takes the SMTP parameter value exactly as RFC 3461
/// writes it, [`Notify::parse_relaxed`] also the looser list that
/// `sendmail -N` accepts (and that older spool files hold), and
/// [`Display`](fmt::Display) writes `NEVER` or the conditions in the order
/// `SUCCESS,FAILURE,DELAY` — on the wire and in the spool alike.
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

/// Why a string is not a `NOTIFY` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseNotifyError(String);

impl fmt::Display for ParseNotifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not a NOTIFY value (NEVER, or a list of SUCCESS, FAILURE, DELAY): {:?}",
            self.0
        )
    }
}

impl std::error::Error for ParseNotifyError {}

impl Notify {
    /// `NOTIFY=NEVER`.
    pub const NEVER: Notify = Notify {
        never: true,
        success: false,
        failure: false,
        delay: false,
    };

    /// The conditions in display order, with their keywords.
    fn conditions(self) -> [(bool, &'static str); 3] {
        [
            (self.success, "SUCCESS"),
            (self.failure, "FAILURE"),
            (self.delay, "DELAY"),
        ]
    }

    /// Parses `NEVER` or a comma-separated list of `SUCCESS`, `FAILURE`
    /// and `DELAY`, in any case. `relaxed` also allows white space around
    /// the list's words and a word given twice.
    fn parse(text: &str, relaxed: bool) -> Result<Notify, ParseNotifyError> {
        let err = || ParseNotifyError(text.to_owned());
        if text.eq_ignore_ascii_case("NEVER") {
            return Ok(Notify::NEVER);
        }
        let mut n = Notify {
            never: false,
            ..Notify::NEVER
        };
        for word in text.split(',') {
            let word = if relaxed { word.trim() } else { word };
            let slot = if word.eq_ignore_ascii_case("SUCCESS") {
                &mut n.success
            } else if word.eq_ignore_ascii_case("FAILURE") {
                &mut n.failure
            } else if word.eq_ignore_ascii_case("DELAY") {
                &mut n.delay
            } else {
                return Err(err());
            };
            if *slot && !relaxed {
                return Err(err());
            }
            *slot = true;
        }
        Ok(n)
    }

    /// Parses `NOTIFY` as `sendmail -N` takes it: like [`FromStr`], but
    /// the list's words may be surrounded by white space and repeated
    /// (`success, failure,success`). `NEVER` must still stand alone.
    ///
    /// Older spool files hold exactly what `sendmail -N` was given,
    /// upper-cased and trimmed, in the user's order and with its repeats:
    /// the spool reads NOTIFY with this function so that they keep their
    /// meaning.
    pub fn parse_relaxed(text: &str) -> Result<Notify, ParseNotifyError> {
        Notify::parse(text, true)
    }
}

impl FromStr for Notify {
    type Err = ParseNotifyError;

    /// Parses the SMTP parameter value (RFC 3461 §4.1): `NEVER`, or one or
    /// more of `SUCCESS`, `FAILURE`, `DELAY` separated by commas, each at
    /// most once, in any case, without white space.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Notify::parse(s, false)
    }
}

impl fmt::Display for Notify {
    /// `NEVER`, or the conditions in the order `SUCCESS,FAILURE,DELAY`. A
    /// value with no condition at all (which no parser returns) is
    /// written `NEVER`, which is what it means.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words = self
            .conditions()
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, word)| word);
        match (self.never, words.next()) {
            (false, Some(first)) => {
                f.write_str(first)?;
                for word in words {
                    write!(f, ",{word}")?;
                }
                Ok(())
            }
            _ => f.write_str("NEVER"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(success: bool, failure: bool, delay: bool) -> Notify {
        Notify {
            never: false,
            success,
            failure,
            delay,
        }
    }

    #[test]
    fn notify_default_is_rfc3461() {
        let n = Notify::default();
        assert!(!n.never && !n.success && n.failure && n.delay);
    }

    #[test]
    fn notify_parse_table() {
        /// Input, strict result, relaxed result.
        type Case = (&'static str, Option<Notify>, Option<Notify>);
        let table: &[Case] = &[
            ("NEVER", Some(Notify::NEVER), Some(Notify::NEVER)),
            ("never", Some(Notify::NEVER), Some(Notify::NEVER)),
            (
                "SUCCESS",
                Some(n(true, false, false)),
                Some(n(true, false, false)),
            ),
            (
                "success,Failure,DELAY",
                Some(n(true, true, true)),
                Some(n(true, true, true)),
            ),
            (
                "DELAY,SUCCESS",
                Some(n(true, false, true)),
                Some(n(true, false, true)),
            ),
            ("DELAY,DELAY", None, Some(n(false, false, true))),
            ("success, failure", None, Some(n(true, true, false))),
            ("DELAY,SUCCESS,SUCCESS", None, Some(n(true, false, true))),
            ("NEVER,SUCCESS", None, None),
            ("NEVER,NEVER", None, None),
            (" NEVER", None, None),
            ("", None, None),
            ("SUCCESS,", None, None),
            ("sometimes", None, None),
            ("SUCCESS FAILURE", None, None),
        ];
        for (text, strict, relaxed) in table {
            assert_eq!(text.parse::<Notify>().ok(), *strict, "strict {text:?}");
            assert_eq!(
                Notify::parse_relaxed(text).ok(),
                *relaxed,
                "relaxed {text:?}"
            );
        }
    }

    #[test]
    fn notify_display() {
        let table = [
            (Notify::NEVER, "NEVER"),
            (Notify::default(), "FAILURE,DELAY"),
            (n(true, true, true), "SUCCESS,FAILURE,DELAY"),
            (n(true, false, true), "SUCCESS,DELAY"),
            (n(false, false, false), "NEVER"),
            (
                Notify {
                    never: true,
                    ..n(true, false, false)
                },
                "NEVER",
            ),
        ];
        for (notify, text) in table {
            assert_eq!(notify.to_string(), text, "{notify:?}");
        }
        // Every value a parser can return (NEVER alone, or at least one
        // condition) displays as text that parses back to it.
        for bits in 0..16u8 {
            let v = Notify {
                never: bits & 8 != 0,
                ..n(bits & 1 != 0, bits & 2 != 0, bits & 4 != 0)
            };
            if v.never != (bits & 7 != 0) {
                assert_eq!(v.to_string().parse::<Notify>(), Ok(v));
            }
        }
    }

    #[test]
    fn keywords() {
        for ret in [Ret::Full, Ret::Headers] {
            assert_eq!(Ret::from_keyword(ret.keyword()), Some(ret));
            assert_eq!(
                Ret::from_keyword(&ret.keyword().to_ascii_lowercase()),
                Some(ret)
            );
            assert_eq!(ret.to_string(), ret.keyword());
        }
        for body in [
            BodyType::SevenBit,
            BodyType::EightBitMime,
            BodyType::BinaryMime,
        ] {
            assert_eq!(BodyType::from_keyword(body.keyword()), Some(body));
            assert_eq!(
                BodyType::from_keyword(&body.keyword().to_ascii_lowercase()),
                Some(body)
            );
            assert_eq!(body.to_string(), body.keyword());
        }
        assert_eq!(Ret::from_keyword("HEADERS"), None);
        assert_eq!(BodyType::from_keyword("8BIT"), None);
        assert_eq!(BodyType::default(), BodyType::SevenBit);
    }
}
