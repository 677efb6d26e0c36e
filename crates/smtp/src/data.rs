//! Message content for `DATA` (RFC 5321 §4.5.2): dot-stuffing on the way
//! out and un-stuffing on the way in, both streaming, chunk by chunk, so
//! that a message is never held whole in memory.

/// Dot-stuffs a message as it is read: feed it any chunks with
/// [`stuff`](Self::stuff), then [`finish`](Self::finish) to end the data
/// with `.` on a line of its own.
///
/// The input is expected in SMTP's canonical form (CRLF line ends, as the
/// spool stores it). A bare LF is sent as CRLF, because a lone LF on the
/// wire is what RFC 5321 §2.3.8 forbids and some servers mistake for a line
/// end; a message that does not end with a line end gets one, because the
/// final `.` must be on a line of its own.
#[derive(Debug, Clone)]
pub struct DotStuffer {
    line_start: bool,
    after_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer::new()
    }
}

impl DotStuffer {
    /// A stuffer at the start of a message.
    pub fn new() -> DotStuffer {
        DotStuffer {
            line_start: true,
            after_cr: false,
        }
    }

    /// Appends the stuffed form of `input` to `out`.
    pub fn stuff(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut rest = input;
        out.reserve(input.len() + input.len() / 64 + 2);
        while let Some(&first) = rest.first() {
            if self.line_start {
                if first == b'.' {
                    out.push(b'.');
                }
                self.line_start = false;
            }
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let (line, tail) = rest.split_at(i);
                    out.extend_from_slice(line);
                    let cr_before = match line.last() {
                        Some(&b) => b == b'\r',
                        None => self.after_cr,
                    };
                    if !cr_before {
                        out.push(b'\r');
                    }
                    out.push(b'\n');
                    self.line_start = true;
                    self.after_cr = false;
                    rest = &tail[1..];
                }
                None => {
                    out.extend_from_slice(rest);
                    self.after_cr = rest.last() == Some(&b'\r');
                    rest = &[];
                }
            }
        }
    }

    /// Ends the data: a line end if the message lacked one, then `.` CRLF.
    pub fn finish(self, out: &mut Vec<u8>) {
        if !self.line_start {
            if !self.after_cr {
                out.push(b'\r');
            }
            out.push(b'\n');
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// Un-stuffs `DATA` content as a server receives it and finds its end
/// (`CRLF . CRLF`; the first CRLF belongs to the message).
#[derive(Debug, Clone)]
pub struct DataDecoder {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Inside a line; `after_cr` when the last byte was CR.
    Text { after_cr: bool },
    /// At the start of a line.
    LineStart,
    /// A `.` at the start of a line, not yet output.
    Dot,
    /// `.` CR at the start of a line.
    DotCr,
    /// The terminating line has been seen.
    Done,
}

impl Default for DataDecoder {
    fn default() -> Self {
        DataDecoder::new()
    }
}

impl DataDecoder {
    /// A decoder right after the `354`.
    pub fn new() -> DataDecoder {
        DataDecoder {
            state: State::LineStart,
        }
    }

    /// Appends the message bytes in `input` to `out`. Returns `Some(n)`
    /// when the terminating `.` line ended at `input[n - 1]` (bytes from
    /// `n` on are the client's next commands), `None` when all of `input`
    /// was message content and more is needed.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        for (i, &b) in input.iter().enumerate() {
            self.state = match (self.state, b) {
                (State::Done, _) => return Some(i),
                (State::LineStart, b'.') => State::Dot,
                (State::LineStart, _) | (State::Text { .. }, _) => {
                    let after_cr = matches!(self.state, State::Text { after_cr: true });
                    out.push(b);
                    match b {
                        b'\n' if after_cr => State::LineStart,
                        b'\r' => State::Text { after_cr: true },
                        _ => State::Text { after_cr: false },
                    }
                }
                (State::Dot, b'\r') => State::DotCr,
                // RFC 5321 §4.5.2: a leading dot is removed, whatever
                // follows it.
                (State::Dot, _) => {
                    out.push(b);
                    State::Text { after_cr: false }
                }
                (State::DotCr, b'\n') => {
                    self.state = State::Done;
                    return Some(i + 1);
                }
                (State::DotCr, _) => {
                    out.push(b'\r');
                    if b == b'\r' {
                        State::Text { after_cr: true }
                    } else {
                        out.push(b);
                        State::Text { after_cr: false }
                    }
                }
            };
        }
        (self.state == State::Done).then_some(input.len())
    }

    /// Whether the end of the data has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuff_whole(m: &[u8]) -> Vec<u8> {
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        s.stuff(m, &mut out);
        s.finish(&mut out);
        out
    }

    /// What the receiver gets back: line ends made CRLF, and one added at
    /// the end if missing.
    fn canonical(m: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev = 0u8;
        for &b in m {
            if b == b'\n' && prev != b'\r' {
                out.push(b'\r');
            }
            out.push(b);
            prev = b;
        }
        if !out.is_empty() && !out.ends_with(b"\n") {
            if prev != b'\r' {
                out.push(b'\r');
            }
            out.push(b'\n');
        }
        out
    }

    #[test]
    fn stuff_table() {
        let table: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"a\r\n.b\r\n..\r\n", b"a\r\n..b\r\n...\r\n.\r\n"),
            (b"a\n.b\n", b"a\r\n..b\r\n.\r\n"),
            (b"a.\r\n. .\r\n", b"a.\r\n.. .\r\n.\r\n"),
            (b"x\r", b"x\r\n.\r\n"),
            (b"\r\n\r\n", b"\r\n\r\n.\r\n"),
        ];
        for (input, want) in table {
            assert_eq!(
                stuff_whole(input),
                *want,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn chunking_does_not_matter() {
        let m = b"Subject: x\r\n\r\n.\r\n..x\r\nline\n.\r\nend.\r\n.";
        let whole = stuff_whole(m);
        for size in 1..m.len() {
            let mut s = DotStuffer::new();
            let mut out = Vec::new();
            for chunk in m.chunks(size) {
                s.stuff(chunk, &mut out);
            }
            s.finish(&mut out);
            assert_eq!(out, whole, "chunks of {size}");
        }
    }

    #[test]
    fn decode_table() {
        let table: &[(&[u8], &[u8], Option<usize>)] = &[
            (b".\r\n", b"", Some(3)),
            (b"a\r\n.\r\nQUIT\r\n", b"a\r\n", Some(6)),
            (b"..\r\n.\r\n", b".\r\n", Some(7)),
            (b"a\r\n.b\r\n.\r\n", b"a\r\nb\r\n", Some(10)),
            (b"a\n.\r\n", b"a\n.\r\n", None),
            (b"a\r\n.\rx\r\n", b"a\r\n\rx\r\n", None),
            (b"a\r\n.", b"a\r\n", None),
        ];
        for (input, want, end) in table {
            let mut d = DataDecoder::new();
            let mut out = Vec::new();
            assert_eq!(d.decode(input, &mut out), *end, "{input:?}");
            assert_eq!(out, *want, "{input:?}");
        }
    }

    #[test]
    fn round_trip_any_chunking() {
        let messages: &[&[u8]] = &[
            b"",
            b"Subject: t\r\n\r\nbody\r\n",
            b".\r\n.\r\n..\r\n",
            b"no newline at end",
            b"bare\nlf\n.\n",
            b"cr\r\r\n.x\r\n",
            &[0, 255, b'\r', b'\n', b'.', b'\r', b'\n'],
        ];
        for m in messages {
            let wire = stuff_whole(m);
            for size in 1..=wire.len() {
                let mut d = DataDecoder::new();
                let mut out = Vec::new();
                let mut end = None;
                let mut fed = 0;
                for chunk in wire.chunks(size) {
                    if let Some(n) = d.decode(chunk, &mut out) {
                        end = Some(fed + n);
                        break;
                    }
                    fed += chunk.len();
                }
                assert_eq!(end, Some(wire.len()), "{m:?} in chunks of {size}");
                assert_eq!(out, canonical(m), "{m:?} in chunks of {size}");
            }
        }
    }
}
