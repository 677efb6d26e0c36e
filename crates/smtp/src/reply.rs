//! SMTP replies (RFC 5321 §4.2) with RFC 3463 enhanced status codes
//! (RFC 2034 §4): parsing, incrementally and bounded, and rendering.

use skein_mail::EnhancedCode;
use skein_proto::SmtpReply;

use crate::error::{ReplyError, show};

/// Bounds on what a reply may be, checked before bytes are buffered past
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest line in bytes, CRLF included. RFC 5321 §4.5.3.1.5 sets
    /// 512; real servers send longer text, so the default is 4096.
    pub max_line: usize,
    /// The most lines in one reply. EHLO replies are the longest in
    /// practice (a few dozen lines); the default is 256.
    pub max_lines: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 4096,
            max_lines: 256,
        }
    }
}

/// One SMTP reply, possibly of several lines.
///
/// `lines` holds the text of each line without the code, the separator and
/// the enhanced status code (which is in `enhanced` when the first line
/// carried one whose class agrees with `code`); it is never empty. Bytes
/// that are not UTF-8 are replaced (U+FFFD): reply text is for logs and
/// DSNs, and EHLO keywords are ASCII.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code, 200 to 599.
    pub code: u16,
    /// The enhanced status code of the first line, if it had one.
    pub enhanced: Option<EnhancedCode>,
    /// The text of each line; at least one (possibly empty) line.
    pub lines: Vec<String>,
}

impl Reply {
    /// A reply from its code, enhanced code and text; `text` is split into
    /// lines at `\n`.
    pub fn new(code: u16, enhanced: Option<EnhancedCode>, text: &str) -> Reply {
        Reply {
            code,
            enhanced,
            lines: text.split('\n').map(str::to_owned).collect(),
        }
    }

    /// The first digit of the code: 2 success, 3 intermediate (354, 334),
    /// 4 transient failure, 5 permanent failure.
    pub fn class(&self) -> u16 {
        self.code / 100
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        self.class() == 2
    }

    /// 3xx.
    pub fn is_intermediate(&self) -> bool {
        self.class() == 3
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        self.class() == 4
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        self.class() == 5
    }

    /// The lines joined with `\n`.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The reply as the agent protocol carries it.
    pub fn to_smtp_reply(&self) -> SmtpReply {
        SmtpReply {
            code: self.code,
            enhanced: self.enhanced,
            text: self.text(),
        }
    }

    /// Renders the reply as a server sends it: every line with the code,
    /// `-` on all but the last, and the enhanced code (when there is one)
    /// repeated on every line as RFC 2034 asks. A line containing CR or LF
    /// would break the framing, so those bytes are replaced by spaces.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        let empty = [String::new()];
        let lines: &[String] = if self.lines.is_empty() {
            &empty
        } else {
            &self.lines
        };
        for (i, line) in lines.iter().enumerate() {
            out.extend_from_slice(format!("{:03}", self.code % 1000).as_bytes());
            out.push(if i == last { b' ' } else { b'-' });
            if let Some(code) = self.enhanced {
                out.extend_from_slice(code.to_string().as_bytes());
                if !line.is_empty() {
                    out.push(b' ');
                }
            }
            out.extend(
                line.bytes()
                    .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
            );
            out.extend_from_slice(b"\r\n");
        }
    }

    /// [`write_to`](Self::write_to) into a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

impl std::fmt::Display for Reply {
    /// One line, as logs show it: `550 5.1.1 no such user`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_smtp_reply().fmt(f)
    }
}

/// Parses one whole reply from the start of `buf`.
///
/// `Ok(None)`: the reply is not complete yet (and no bound is exceeded);
/// call again with more bytes. `Ok(Some((reply, n)))`: the reply used the
/// first `n` bytes. Lines end in CRLF; a bare LF is accepted too, because
/// refusing it would gain nothing.
pub fn parse_reply(buf: &[u8], limits: &Limits) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut pos = 0;
    let mut code = 0u16;
    let mut enhanced = None;
    let mut lines = Vec::new();
    loop {
        let rest = &buf[pos..];
        let window = &rest[..rest.len().min(limits.max_line)];
        let Some(lf) = window.iter().position(|&b| b == b'\n') else {
            if rest.len() >= limits.max_line {
                return Err(ReplyError::LineTooLong {
                    limit: limits.max_line,
                });
            }
            return Ok(None);
        };
        let mut line = &rest[..lf];
        if let [head @ .., b'\r'] = line {
            line = head;
        }
        pos += lf + 1;
        if lines.len() >= limits.max_lines {
            return Err(ReplyError::TooManyLines {
                limit: limits.max_lines,
            });
        }
        let (line_code, more, text) = split_line(line)?;
        if lines.is_empty() {
            code = line_code;
            let (e, t) = take_enhanced(code, text);
            enhanced = e;
            lines.push(String::from_utf8_lossy(t).into_owned());
        } else {
            if line_code != code {
                return Err(ReplyError::CodeMismatch {
                    first: code,
                    got: line_code,
                });
            }
            // RFC 2034 repeats the enhanced code on every line; it is the
            // first line's that counts, the others only lose it.
            let t = if enhanced.is_some() {
                take_enhanced(code, text).1
            } else {
                text
            };
            lines.push(String::from_utf8_lossy(t).into_owned());
        }
        if !more {
            return Ok(Some((
                Reply {
                    code,
                    enhanced,
                    lines,
                },
                pos,
            )));
        }
    }
}

/// `(code, continued, text)` of one line without its line end.
fn split_line(line: &[u8]) -> Result<(u16, bool, &[u8]), ReplyError> {
    let bad = || ReplyError::BadLine(show(line));
    let (digits, rest) = line.split_at_checked(3).ok_or_else(bad)?;
    let [a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9'] = *digits else {
        return Err(bad());
    };
    let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
    match rest.split_first() {
        None => Ok((code, false, rest)),
        Some((b' ', text)) => Ok((code, false, text)),
        Some((b'-', text)) => Ok((code, true, text)),
        Some(_) => Err(bad()),
    }
}

/// Takes a leading enhanced status code off `text` when its class is the
/// reply's (RFC 3463: a `5.x.x` in a `250` is not believed, and stays
/// text).
fn take_enhanced(code: u16, text: &[u8]) -> (Option<EnhancedCode>, &[u8]) {
    let end = text.iter().position(|&b| b == b' ').unwrap_or(text.len());
    let Ok(token) = std::str::from_utf8(&text[..end]) else {
        return (None, text);
    };
    match token.parse::<EnhancedCode>() {
        Ok(e) if u16::from(e.class) == code / 100 => {
            let rest = &text[end..];
            (Some(e), rest.strip_prefix(b" ").unwrap_or(rest))
        }
        _ => (None, text),
    }
}

/// An incremental reply decoder: push bytes as they arrive, take replies
/// off as they complete. A client that pipelines gets many replies in one
/// read; each [`next_reply`](Self::next_reply) returns the next.
///
/// An error is final: the stream cannot be resynchronised, and every later
/// call returns it again.
#[derive(Debug, Clone, Default)]
pub struct ReplyDecoder {
    buf: Vec<u8>,
    start: usize,
    limits: Limits,
    failed: Option<ReplyError>,
}

impl ReplyDecoder {
    /// A decoder with the default [`Limits`].
    pub fn new() -> ReplyDecoder {
        ReplyDecoder::default()
    }

    /// A decoder with the given limits.
    pub fn with_limits(limits: Limits) -> ReplyDecoder {
        ReplyDecoder {
            limits,
            ..ReplyDecoder::default()
        }
    }

    /// Appends bytes read from the server.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete reply, `Ok(None)` if more bytes are needed.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ReplyError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match parse_reply(&self.buf[self.start..], &self.limits) {
            Ok(Some((reply, used))) => {
                self.start += used;
                Ok(Some(reply))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Bytes received and not yet part of a returned reply.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Takes the bytes not yet decoded (after STARTTLS, anything the server
    /// sent past its 220 must be discarded: RFC 3207 §6).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.start);
        self.buf.clear();
        self.start = 0;
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> EnhancedCode {
        s.parse().expect("test code")
    }

    #[test]
    fn parse_table() {
        type Want = Option<(u16, Option<&'static str>, &'static [&'static str], usize)>;
        let table: &[(&[u8], Want)] = &[
            (b"250 ok\r\n", Some((250, None, &["ok"], 8))),
            (b"250 2.1.0 ok\r\n", Some((250, Some("2.1.0"), &["ok"], 14))),
            (b"250\r\n", Some((250, None, &[""], 5))),
            (b"250 \r\n", Some((250, None, &[""], 6))),
            (b"250 2.0.0\r\n", Some((250, Some("2.0.0"), &[""], 11))),
            // A wrong-class enhanced code stays text.
            (b"250 5.1.1 odd\r\n", Some((250, None, &["5.1.1 odd"], 15))),
            (
                b"550 5.1.1 no\r\nnext",
                Some((550, Some("5.1.1"), &["no"], 14)),
            ),
            (b"220 hi\n", Some((220, None, &["hi"], 7))),
            (
                b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n",
                Some((250, None, &["mx.example", "PIPELINING", "SIZE 100"], 46)),
            ),
            (
                b"451-4.7.1 one\r\n451 4.7.1 two\r\n",
                Some((451, Some("4.7.1"), &["one", "two"], 30)),
            ),
            (b"250-a\r\n250-", None),
            (b"250 ok", None),
            (b"", None),
            (b"25", None),
            (b"250-\r\n250 x\r\n", Some((250, None, &["", "x"], 13))),
        ];
        for (input, want) in table {
            let got = parse_reply(input, &Limits::default()).expect("valid");
            match (got, want) {
                (None, None) => {}
                (Some((r, n)), Some((c, e, lines, used))) => {
                    assert_eq!(r.code, *c, "{input:?}");
                    assert_eq!(r.enhanced, e.map(code), "{input:?}");
                    assert_eq!(r.lines, *lines, "{input:?}");
                    assert_eq!(n, *used, "{input:?}");
                }
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn errors_table() {
        let limits = Limits {
            max_line: 16,
            max_lines: 3,
        };
        let table: &[(&[u8], ReplyError)] = &[
            (b"hello\r\n", ReplyError::BadLine("\"hello\"".into())),
            (b"2500 x\r\n", ReplyError::BadLine("\"2500 x\"".into())),
            (b"650 x\r\n", ReplyError::BadLine("\"650 x\"".into())),
            (b"25\r\n", ReplyError::BadLine("\"25\"".into())),
            (
                b"250-a\r\n251 b\r\n",
                ReplyError::CodeMismatch {
                    first: 250,
                    got: 251,
                },
            ),
            (
                b"250 0123456789abcdef\r\n",
                ReplyError::LineTooLong { limit: 16 },
            ),
            // No line end within the limit is enough to know.
            (
                b"250 0123456789abcdef",
                ReplyError::LineTooLong { limit: 16 },
            ),
            (
                b"250-a\r\n250-b\r\n250-c\r\n250 d\r\n",
                ReplyError::TooManyLines { limit: 3 },
            ),
        ];
        for (input, want) in table {
            assert_eq!(parse_reply(input, &limits).as_ref(), Err(want), "{input:?}");
        }
    }

    #[test]
    fn decoder_takes_pipelined_replies_one_by_one() {
        let mut d = ReplyDecoder::new();
        d.push(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no\r\n35");
        let codes: Vec<u16> = std::iter::from_fn(|| d.next_reply().expect("valid"))
            .map(|r| r.code)
            .collect();
        assert_eq!(codes, [250, 250, 550]);
        assert_eq!(d.buffered(), 2);
        d.push(b"4 go\r\n");
        assert_eq!(d.next_reply().expect("valid").map(|r| r.code), Some(354));
        assert_eq!(d.next_reply().expect("valid"), None);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn decoder_errors_stick() {
        let mut d = ReplyDecoder::new();
        d.push(b"xyz\r\n250 ok\r\n");
        assert!(d.next_reply().is_err());
        assert!(d.next_reply().is_err());
    }

    #[test]
    fn byte_by_byte_equals_whole() {
        let input = b"250-mx.example.org greets you\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 2.0.0 CHUNKING\r\n221 2.0.0 bye\r\n";
        let mut whole = ReplyDecoder::new();
        whole.push(input);
        let mut a = Vec::new();
        while let Some(r) = whole.next_reply().expect("valid") {
            a.push(r);
        }
        let mut bytewise = ReplyDecoder::new();
        let mut b = Vec::new();
        for byte in input {
            bytewise.push(&[*byte]);
            while let Some(r) = bytewise.next_reply().expect("valid") {
                b.push(r);
            }
        }
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn render_round_trips() {
        let table = [
            Reply::new(250, None, "ok"),
            Reply::new(250, Some(code("2.1.5")), "recipient ok"),
            Reply::new(250, None, "mx.example.org\nPIPELINING\nCHUNKING"),
            Reply::new(451, Some(code("4.7.1")), "greylisted\ncome back later"),
            Reply::new(221, Some(code("2.0.0")), ""),
            Reply::new(354, None, ""),
            Reply::new(552, Some(code("5.3.4")), "too big"),
        ];
        for reply in table {
            let bytes = reply.to_bytes();
            let (back, used) = parse_reply(&bytes, &Limits::default())
                .expect("valid")
                .expect("complete");
            assert_eq!(back, reply, "{:?}", String::from_utf8_lossy(&bytes));
            assert_eq!(used, bytes.len());
        }
    }

    #[test]
    fn rendering_repeats_the_enhanced_code() {
        let r = Reply::new(550, Some(code("5.7.1")), "a\nb");
        assert_eq!(r.to_bytes(), b"550-5.7.1 a\r\n550 5.7.1 b\r\n");
        assert_eq!(r.to_string(), "550 5.7.1 a b");
        let smtp = r.to_smtp_reply();
        assert_eq!(smtp.text, "a\nb");
    }

    #[test]
    fn classes() {
        let r = |c| Reply::new(c, None, "");
        assert!(r(250).is_positive() && r(354).is_intermediate());
        assert!(r(421).is_transient() && r(554).is_permanent());
    }
}
