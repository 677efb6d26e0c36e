//! Reads standard input as lines, normalised to CRLF (the spool stores
//! messages in SMTP's canonical form), in pieces of bounded size so that
//! a huge line cannot exhaust memory, and stops at a lone `.` line unless
//! `-i` was given.

use std::io::{self, BufRead, Read};

/// Longest piece returned at once; longer lines come in several pieces.
const PIECE: u64 = 64 * 1024;

/// What [`LineReader::next_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// Bytes to store, ending in CRLF when they end a line.
    Data(Vec<u8>),
    /// End of input (or a lone `.` line).
    End,
}

/// See the module documentation.
pub struct LineReader<'a> {
    input: &'a mut dyn BufRead,
    dot_ends: bool,
    at_line_start: bool,
    pending_cr: bool,
    done: bool,
}

impl<'a> LineReader<'a> {
    /// `dot_ends`: a line holding only `.` ends the message (no `-i`).
    pub fn new(input: &'a mut dyn BufRead, dot_ends: bool) -> Self {
        LineReader {
            input,
            dot_ends,
            at_line_start: true,
            pending_cr: false,
            done: false,
        }
    }

    /// The next line or piece of a line.
    pub fn next_line(&mut self) -> io::Result<Line> {
        if self.done {
            return Ok(Line::End);
        }
        let mut buf = Vec::with_capacity(128);
        if self.pending_cr {
            buf.push(b'\r');
            self.pending_cr = false;
        }
        let started_line = self.at_line_start && buf.is_empty();
        let n = (&mut *self.input).take(PIECE).read_until(b'\n', &mut buf)?;
        if n == 0 {
            self.done = true;
            if buf.is_empty() {
                return Ok(Line::End);
            }
            // A CR held back at the end of input: it ends the last line.
            buf.pop();
            buf.extend_from_slice(b"\r\n");
            return Ok(Line::Data(buf));
        }
        if buf.last() == Some(&b'\n') {
            if started_line && self.dot_ends && (buf == b".\n" || buf == b".\r\n") {
                self.done = true;
                return Ok(Line::End);
            }
            if buf.len() < 2 || buf[buf.len() - 2] != b'\r' {
                buf.pop();
                buf.extend_from_slice(b"\r\n");
            }
            self.at_line_start = true;
        } else if n < PIECE as usize {
            // End of input without a final newline.
            self.done = true;
            if started_line && self.dot_ends && buf == b"." {
                return Ok(Line::End);
            }
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            buf.extend_from_slice(b"\r\n");
        } else {
            // A piece of a long line. Hold back a trailing CR: it may be
            // the first half of a CRLF split across pieces.
            if buf.last() == Some(&b'\r') {
                buf.pop();
                self.pending_cr = true;
            }
            self.at_line_start = false;
        }
        Ok(Line::Data(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], dot_ends: bool) -> Vec<u8> {
        let mut r = input;
        let mut lr = LineReader::new(&mut r, dot_ends);
        let mut out = Vec::new();
        while let Line::Data(d) = lr.next_line().unwrap() {
            out.extend(d);
        }
        out
    }

    #[test]
    fn normalises_and_stops_at_dot() {
        let cases: &[(&[u8], bool, &[u8])] = &[
            (b"a\nb\n", true, b"a\r\nb\r\n"),
            (b"a\r\nb\r\n", true, b"a\r\nb\r\n"),
            (b"a\nb", true, b"a\r\nb\r\n"),
            (b"a\n.\nafter\n", true, b"a\r\n"),
            (b"a\n.\r\nafter\n", true, b"a\r\n"),
            (b"a\n.", true, b"a\r\n"),
            (b"a\n.\nafter\n", false, b"a\r\n.\r\nafter\r\n"),
            (b"..\n. \n", true, b"..\r\n. \r\n"),
            (b"", true, b""),
            (b"x\r", true, b"x\r\n"),
        ];
        for (input, dot, want) in cases {
            assert_eq!(
                all(input, *dot),
                want.to_vec(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn long_lines_come_in_pieces_and_keep_crlf_across_a_split() {
        let mut line = vec![b'x'; PIECE as usize - 1];
        line.extend_from_slice(b"\r\n.\n");
        // The CR is the last byte of the first piece.
        let out = all(&line, true);
        let mut want = vec![b'x'; PIECE as usize - 1];
        want.extend_from_slice(b"\r\n");
        assert_eq!(out, want);
        // A dot that is not at a line start does not end the message.
        let mut long = vec![b'y'; PIECE as usize];
        long.extend_from_slice(b".\nz\n");
        let out = all(&long, true);
        assert!(out.ends_with(b".\r\nz\r\n"));
    }
}
