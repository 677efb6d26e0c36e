//! EHLO keywords (RFC 5321 §4.1.1.1): what a server can do.

use crate::reply::Reply;

/// The service extensions a server announced in its EHLO reply, as far as
/// skein uses them. Keywords are case-insensitive; unknown ones are kept
/// in `other` (upper-cased, with their parameters) for logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// `PIPELINING` (RFC 2920).
    pub pipelining: bool,
    /// `CHUNKING`: `BDAT` (RFC 3030).
    pub chunking: bool,
    /// `BINARYMIME` (RFC 3030).
    pub binarymime: bool,
    /// `8BITMIME` (RFC 6152).
    pub eightbitmime: bool,
    /// `SIZE` (RFC 1870): `None` when not announced, `Some(0)` when
    /// announced without a fixed limit, else the limit in bytes.
    pub size: Option<u64>,
    /// `ENHANCEDSTATUSCODES` (RFC 2034).
    pub enhanced_status_codes: bool,
    /// `DSN` (RFC 3461).
    pub dsn: bool,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `STARTTLS` (RFC 3207).
    pub starttls: bool,
    /// Every other keyword line, upper-cased keyword then its parameters.
    pub other: Vec<String>,
}

impl Extensions {
    /// The extensions of a positive EHLO reply: every line after the first
    /// (which is the server's name and greeting) is one keyword with
    /// optional parameters.
    pub fn from_ehlo(reply: &Reply) -> Extensions {
        let mut ext = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => ext.pipelining = true,
                "CHUNKING" => ext.chunking = true,
                "BINARYMIME" => ext.binarymime = true,
                "8BITMIME" => ext.eightbitmime = true,
                "ENHANCEDSTATUSCODES" => ext.enhanced_status_codes = true,
                "DSN" => ext.dsn = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "STARTTLS" => ext.starttls = true,
                // A SIZE whose parameter is not a number still announces
                // the extension; treat it as "no fixed limit" rather than
                // guess one.
                "SIZE" => ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                upper => {
                    let rest: Vec<&str> = words.collect();
                    ext.other.push(if rest.is_empty() {
                        upper.to_owned()
                    } else {
                        format!("{upper} {}", rest.join(" "))
                    });
                }
            }
        }
        ext
    }

    /// The largest message the server takes, when it said so.
    pub fn size_limit(&self) -> Option<u64> {
        self.size.filter(|&n| n > 0)
    }

    /// The EHLO reply a server with these extensions sends: `250`, the
    /// first line `greeting` (the server's name, then any text), then one
    /// line per keyword.
    pub fn to_reply(&self, greeting: &str) -> Reply {
        let mut lines = vec![greeting.to_owned()];
        let flags = [
            (self.pipelining, "PIPELINING"),
            (self.chunking, "CHUNKING"),
            (self.binarymime, "BINARYMIME"),
            (self.eightbitmime, "8BITMIME"),
            (self.enhanced_status_codes, "ENHANCEDSTATUSCODES"),
            (self.dsn, "DSN"),
            (self.smtputf8, "SMTPUTF8"),
            (self.starttls, "STARTTLS"),
        ];
        lines.extend(
            flags
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, k)| (*k).to_owned()),
        );
        match self.size {
            Some(0) => lines.push("SIZE".to_owned()),
            Some(n) => lines.push(format!("SIZE {n}")),
            None => {}
        }
        lines.extend(self.other.iter().cloned());
        Reply {
            code: 250,
            enhanced: None,
            lines,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::{Limits, parse_reply};

    fn ehlo(bytes: &[u8]) -> Extensions {
        let (reply, _) = parse_reply(bytes, &Limits::default())
            .expect("valid")
            .expect("complete");
        Extensions::from_ehlo(&reply)
    }

    #[test]
    fn keywords_table() {
        let table: &[(&[u8], Extensions)] = &[
            (b"250 mx.example.org\r\n", Extensions::default()),
            (
                b"250-mx.example.org hi\r\n250-pipelining\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n250 CHUNKING\r\n",
                Extensions {
                    pipelining: true,
                    size: Some(10_240_000),
                    eightbitmime: true,
                    chunking: true,
                    ..Extensions::default()
                },
            ),
            (
                b"250-x\r\n250-SIZE\r\n250-DSN\r\n250-SMTPUTF8\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-BINARYMIME\r\n250 AUTH PLAIN LOGIN\r\n",
                Extensions {
                    size: Some(0),
                    dsn: true,
                    smtputf8: true,
                    starttls: true,
                    enhanced_status_codes: true,
                    binarymime: true,
                    other: vec!["AUTH PLAIN LOGIN".into()],
                    ..Extensions::default()
                },
            ),
            (
                b"250-x\r\n250-SIZE lots\r\n250 \r\n",
                Extensions {
                    size: Some(0),
                    ..Extensions::default()
                },
            ),
            // The first line is the greeting, never a keyword.
            (b"250 PIPELINING\r\n", Extensions::default()),
        ];
        for (input, want) in table {
            assert_eq!(&ehlo(input), want, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn size_limit() {
        let mut e = Extensions::default();
        assert_eq!(e.size_limit(), None);
        e.size = Some(0);
        assert_eq!(e.size_limit(), None);
        e.size = Some(5);
        assert_eq!(e.size_limit(), Some(5));
    }

    #[test]
    fn round_trip() {
        let all = Extensions {
            pipelining: true,
            chunking: true,
            binarymime: true,
            eightbitmime: true,
            size: Some(52_428_800),
            enhanced_status_codes: true,
            dsn: true,
            smtputf8: true,
            starttls: true,
            other: vec!["AUTH PLAIN".into(), "VRFY".into()],
        };
        for ext in [
            Extensions::default(),
            all.clone(),
            Extensions {
                size: Some(0),
                ..all
            },
        ] {
            let bytes = ext.to_reply("mx.example.org ready").to_bytes();
            assert_eq!(ehlo(&bytes), ext);
        }
    }
}
