//! Command lines out of a byte stream, bounded.

/// How a command line ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnd {
    /// `CR LF`, as RFC 5321 §2.3.8 requires.
    Crlf,
    /// A lone `LF`. Servers that take it as a line end are what SMTP
    /// smuggling exploits, so the server refuses the line instead.
    BareLf,
}

/// One step of [`CommandLines::next`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineEvent<'a> {
    /// A complete line, without its line end.
    Line(&'a [u8], LineEnd),
    /// A line longer than the limit has ended (its bytes were discarded
    /// as they came, so it cost no memory).
    TooLong,
}

/// Splits a client's byte stream into command lines of at most `max_line`
/// bytes, line end included.
///
/// The caller owns the buffer: it appends what it reads, calls
/// [`next`](Self::next), and drops the `consumed` bytes from the front
/// each time. A line that outgrows the limit is discarded while it
/// arrives, and reported once, as [`LineEvent::TooLong`], when its LF
/// comes: the server answers it once rather than once per buffer.
#[derive(Debug, Clone)]
pub struct CommandLines {
    max_line: usize,
    discarding: bool,
}

impl CommandLines {
    /// A splitter for lines of at most `max_line` bytes (at least 3, so
    /// that an empty CRLF line fits).
    pub fn new(max_line: usize) -> CommandLines {
        CommandLines {
            max_line: max_line.max(3),
            discarding: false,
        }
    }

    /// Whether an over-long line is being discarded.
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }

    /// Looks for the next line at the start of `buf`. Returns how many
    /// bytes of `buf` were used (to be dropped by the caller) and the event,
    /// if any; `(0, None)` means "read more".
    pub fn next<'a>(&mut self, buf: &'a [u8]) -> (usize, Option<LineEvent<'a>>) {
        if self.discarding {
            return match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.discarding = false;
                    (i + 1, Some(LineEvent::TooLong))
                }
                None => (buf.len(), None),
            };
        }
        let window = &buf[..buf.len().min(self.max_line)];
        match window.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let (line, end) = match buf[..i].strip_suffix(b"\r") {
                    Some(line) => (line, LineEnd::Crlf),
                    None => (&buf[..i], LineEnd::BareLf),
                };
                (i + 1, Some(LineEvent::Line(line, end)))
            }
            None if buf.len() >= self.max_line => {
                // Over the limit: drop what we have and look for the end
                // of the line in the rest.
                self.discarding = true;
                let (used, event) = self.next(&buf[self.max_line..]);
                (self.max_line + used, event)
            }
            None => (0, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line and its end, or `Err` for a too-long line.
    type Seen = Result<(Vec<u8>, LineEnd), ()>;

    /// Feeds `input` in chunks of `size` and collects the events.
    fn events(max: usize, input: &[u8], size: usize) -> Vec<Seen> {
        let mut lines = CommandLines::new(max);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for chunk in input.chunks(size) {
            buf.extend_from_slice(chunk);
            loop {
                let (used, event) = lines.next(&buf);
                let ev = event.map(|e| match e {
                    LineEvent::Line(l, end) => Ok((l.to_vec(), end)),
                    LineEvent::TooLong => Err(()),
                });
                buf.drain(..used);
                match ev {
                    Some(e) => out.push(e),
                    None => break,
                }
            }
        }
        out
    }

    #[test]
    fn table() {
        let long = [b'x'; 100];
        let mut with_long = b"NOOP\r\n".to_vec();
        with_long.extend_from_slice(&long);
        with_long.extend_from_slice(b"\r\nQUIT\r\n");
        let cases: Vec<(&[u8], Vec<Seen>)> = vec![
            (b"", vec![]),
            (b"NOOP", vec![]),
            (b"NOOP\r\n", vec![Ok((b"NOOP".to_vec(), LineEnd::Crlf))]),
            (b"NOOP\n", vec![Ok((b"NOOP".to_vec(), LineEnd::BareLf))]),
            (b"\r\n", vec![Ok((b"".to_vec(), LineEnd::Crlf))]),
            (b"NO\rOP\r\n", vec![Ok((b"NO\rOP".to_vec(), LineEnd::Crlf))]),
            (
                &with_long,
                vec![
                    Ok((b"NOOP".to_vec(), LineEnd::Crlf)),
                    Err(()),
                    Ok((b"QUIT".to_vec(), LineEnd::Crlf)),
                ],
            ),
        ];
        for (input, want) in cases {
            for size in 1..=input.len().max(1) {
                assert_eq!(events(32, input, size), want, "{input:?} by {size}");
            }
        }
    }

    #[test]
    fn limit_counts_the_line_end() {
        // 30 bytes + CRLF = 32: fits; 31 + CRLF = 33: too long.
        let ok = [b"a".repeat(30), b"\r\n".to_vec()].concat();
        assert_eq!(
            events(32, &ok, 64),
            vec![Ok((b"a".repeat(30), LineEnd::Crlf))]
        );
        let long = [b"a".repeat(31), b"\r\n".to_vec()].concat();
        assert_eq!(events(32, &long, 64), vec![Err(())]);
    }
}
