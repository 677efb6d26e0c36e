//! What a server refuses in message text.

use std::fmt;

/// The first thing wrong with a message's text, in the order found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentViolation {
    /// A LF not preceded by CR: some receivers take it as a line end,
    /// which is how SMTP smuggling hides a second message in the first.
    BareLf,
    /// A CR not followed by LF.
    BareCr,
    /// A NUL byte (RFC 5321 §4.5.2, RFC 6152 §3: not in 8BITMIME text).
    Nul,
    /// A line longer than the limit, CRLF included.
    LineTooLong {
        /// The limit in bytes.
        limit: usize,
    },
}

impl fmt::Display for ContentViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContentViolation::BareLf => f.write_str("bare LF in message text"),
            ContentViolation::BareCr => f.write_str("bare CR in message text"),
            ContentViolation::Nul => f.write_str("NUL byte in message text"),
            ContentViolation::LineTooLong { limit } => {
                write!(f, "message text line longer than {limit} bytes")
            }
        }
    }
}

/// Watches message text as it streams by (after un-stuffing, or BDAT
/// chunks as they are) and remembers the first [`ContentViolation`].
/// It keeps three words of state, whatever the message size.
#[derive(Debug, Clone)]
pub struct ContentCheck {
    max_line: usize,
    line_len: usize,
    after_cr: bool,
    first: Option<ContentViolation>,
}

impl ContentCheck {
    /// A check for lines of at most `max_line` bytes, CRLF included.
    pub fn new(max_line: usize) -> ContentCheck {
        ContentCheck {
            max_line,
            line_len: 0,
            after_cr: false,
            first: None,
        }
    }

    /// Looks at the next bytes of the text.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.first.is_some() {
            return;
        }
        for &b in bytes {
            let violation = match b {
                b'\n' if !self.after_cr => Some(ContentViolation::BareLf),
                b'\n' => {
                    self.line_len = 0;
                    self.after_cr = false;
                    continue;
                }
                _ if self.after_cr => Some(ContentViolation::BareCr),
                0 => Some(ContentViolation::Nul),
                _ => None,
            };
            if violation.is_some() {
                self.first = violation;
                return;
            }
            self.after_cr = b == b'\r';
            self.line_len += 1;
            // The shortest this line can still end up, CRLF included.
            let shortest = self.line_len + if self.after_cr { 1 } else { 2 };
            if shortest > self.max_line {
                self.first = Some(ContentViolation::LineTooLong {
                    limit: self.max_line,
                });
                return;
            }
        }
    }

    /// The text has ended: a CR left waiting for its LF is a bare CR.
    /// Returns the first violation, if any.
    pub fn finish(&mut self) -> Option<ContentViolation> {
        if self.first.is_none() && self.after_cr {
            self.first = Some(ContentViolation::BareCr);
        }
        self.first
    }

    /// The first violation so far.
    pub fn violation(&self) -> Option<ContentViolation> {
        self.first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(max: usize, text: &[u8]) -> Option<ContentViolation> {
        // Any chunking gives the same answer.
        let mut answers = Vec::new();
        for size in 1..=text.len().max(1) {
            let mut c = ContentCheck::new(max);
            for chunk in text.chunks(size) {
                c.feed(chunk);
            }
            answers.push(c.finish());
        }
        answers.dedup();
        assert_eq!(answers.len(), 1, "{text:?}: {answers:?}");
        answers[0]
    }

    #[test]
    fn table() {
        use ContentViolation::*;
        let long = LineTooLong { limit: 8 };
        let cases: &[(&[u8], Option<ContentViolation>)] = &[
            (b"", None),
            (b"a\r\nb\r\n", None),
            (b"no end", None),
            (b"a\nb\r\n", Some(BareLf)),
            (b"a\rb\r\n", Some(BareCr)),
            (b"a\r", Some(BareCr)),
            (b"a\r\r\n", Some(BareCr)),
            (b"a\0b\r\n", Some(Nul)),
            (b"\xff\xfe\r\n", None),
            // 6 bytes + CRLF = 8: fits; 7 + CRLF = 9 does not.
            (b"123456\r\n", None),
            (b"1234567\r\n", Some(long)),
            (b"123456789", Some(long)),
            (b"1234567\r", Some(long)),
            (b"123456\r\n123456\r\n", None),
        ];
        for (text, want) in cases {
            assert_eq!(check(8, text), *want, "{text:?}");
        }
    }
}
