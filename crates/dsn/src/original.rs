//! The third part of a report: the original message, or its headers.

use crate::OriginalPart;

/// RFC 5322's limit on a line, CRLF excluded.
const MAX_LINE: usize = 998;

/// The original, ready to be attached without re-encoding.
pub(crate) struct Original {
    /// The part's body: CRLF line endings, ending in CRLF.
    pub bytes: Vec<u8>,
    /// `message/rfc822`, `text/rfc822-headers`, or their RFC 6533
    /// `global` forms when the header section is not ASCII.
    pub content_type: &'static str,
    /// `7bit` or `8bit`: a `message/*` part may not be base64-encoded, so
    /// the encoding only declares what the bytes already are.
    pub encoding: &'static str,
    /// Only the header section is attached.
    pub headers_only: bool,
    /// The whole message was asked for but only its headers are attached
    /// (it was too large, or its body could only travel as binary); the
    /// explanation says so.
    pub truncated: bool,
}

/// `None` for [`OriginalPart::Withheld`]: nothing is attached.
pub(crate) fn prepare(part: &OriginalPart, max_full_size: Option<usize>) -> Option<Original> {
    let (raw, want_full) = match part {
        OriginalPart::Full(bytes) => (bytes, true),
        OriginalPart::Headers(bytes) => (bytes, false),
        OriginalPart::Withheld(_) => return None,
    };
    let normalized = crlf(raw);
    let too_big = want_full && max_full_size.is_some_and(|max| raw.len() > max);
    // A body with NUL bytes or lines over 998 bytes (BINARYMIME) cannot be
    // declared 7bit or 8bit, and re-encoding a message/rfc822 part is not
    // allowed: return its headers, which we can make safe.
    let binary = want_full && !fits_8bit(&normalized);
    let headers_only = !want_full || too_big || binary;
    let bytes = if headers_only {
        safe_headers(header_section(&normalized))
    } else {
        normalized
    };
    let global = !header_section(&bytes).is_ascii();
    let content_type = match (headers_only, global) {
        (false, false) => "message/rfc822",
        (false, true) => "message/global",
        (true, false) => "text/rfc822-headers",
        (true, true) => "message/global-headers",
    };
    Some(Original {
        encoding: if bytes.is_ascii() { "7bit" } else { "8bit" },
        content_type,
        headers_only,
        truncated: want_full && headers_only,
        bytes,
    })
}

/// `raw` with every line ending made CRLF (a bare LF or a bare CR counts
/// as one) and a final CRLF added if missing.
fn crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32 + 2);
    let mut bytes = raw.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        match b {
            b'\r' => {
                if bytes.peek() == Some(&b'\n') {
                    bytes.next();
                }
                out.extend_from_slice(b"\r\n");
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The header section of a CRLF message: everything before the first empty
/// line (the whole message when there is none), ending in CRLF.
fn header_section(message: &[u8]) -> &[u8] {
    if message.starts_with(b"\r\n") {
        return &[];
    }
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) => &message[..at + 2],
        None => message,
    }
}

/// Whether every line of a CRLF text is at most 998 bytes and it holds no
/// NUL: what `7bit` and `8bit` promise (RFC 2045 §2.7, §2.8).
fn fits_8bit(text: &[u8]) -> bool {
    !text.contains(&0)
        && text
            .split(|&b| b == b'\n')
            .all(|line| line.len() <= MAX_LINE + 1)
}

/// Header lines made to fit 8bit: NUL bytes become spaces and a line over
/// 998 bytes is folded (a CRLF and a space inserted), which a reader
/// unfolds into the same header with one extra space.
fn safe_headers(headers: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(headers.len() + 8);
    for line in headers.split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\r\n").unwrap_or(line);
        for (i, chunk) in body.chunks(MAX_LINE - 1).enumerate() {
            if i > 0 {
                out.extend_from_slice(b"\r\n ");
            }
            out.extend(chunk.iter().map(|&b| if b == 0 { b' ' } else { b }));
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_table() {
        let table: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"a", b"a\r\n"),
            (b"a\nb\n", b"a\r\nb\r\n"),
            (b"a\r\nb\r\n", b"a\r\nb\r\n"),
            (b"a\rb", b"a\r\nb\r\n"),
            (b"a\r\r\nb", b"a\r\n\r\nb\r\n"),
        ];
        for (input, want) in table {
            assert_eq!(crlf(input), *want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn header_section_table() {
        let table: &[(&[u8], &[u8])] = &[
            (b"A: 1\r\nB: 2\r\n\r\nbody\r\n", b"A: 1\r\nB: 2\r\n"),
            (b"A: 1\r\n", b"A: 1\r\n"),
            (b"\r\nbody only\r\n", b""),
            (b"", b""),
        ];
        for (input, want) in table {
            assert_eq!(header_section(input), *want);
        }
    }

    /// (what was asked, limit) → (content type, encoding, headers only,
    /// truncated).
    #[test]
    fn choice_table() {
        let ascii = b"Subject: hi\r\n\r\nbody\r\n".to_vec();
        let eight = "Subject: hi\r\n\r\nbödy\r\n".as_bytes().to_vec();
        let utf8_header = "Subject: hé\r\n\r\nbody\r\n".as_bytes().to_vec();
        let long_line = [
            b"Subject: x\r\n\r\n".to_vec(),
            vec![b'x'; 1200],
            b"\r\n".to_vec(),
        ]
        .concat();
        let with_nul = b"Subject: x\r\n\r\na\0b\r\n".to_vec();
        type Row = (
            OriginalPart,
            Option<usize>,
            (&'static str, &'static str, bool, bool),
        );
        let table: Vec<Row> = vec![
            (
                OriginalPart::Full(ascii.clone()),
                None,
                ("message/rfc822", "7bit", false, false),
            ),
            (
                OriginalPart::Full(ascii.clone()),
                Some(1000),
                ("message/rfc822", "7bit", false, false),
            ),
            (
                OriginalPart::Full(ascii.clone()),
                Some(5),
                ("text/rfc822-headers", "7bit", true, true),
            ),
            (
                OriginalPart::Headers(ascii.clone()),
                None,
                ("text/rfc822-headers", "7bit", true, false),
            ),
            (
                OriginalPart::Full(eight.clone()),
                None,
                ("message/rfc822", "8bit", false, false),
            ),
            (
                OriginalPart::Headers(eight),
                None,
                ("text/rfc822-headers", "7bit", true, false),
            ),
            (
                OriginalPart::Full(utf8_header.clone()),
                None,
                ("message/global", "8bit", false, false),
            ),
            (
                OriginalPart::Headers(utf8_header),
                None,
                ("message/global-headers", "8bit", true, false),
            ),
            (
                OriginalPart::Full(long_line),
                None,
                ("text/rfc822-headers", "7bit", true, true),
            ),
            (
                OriginalPart::Full(with_nul),
                None,
                ("text/rfc822-headers", "7bit", true, true),
            ),
        ];
        for (i, (part, limit, want)) in table.into_iter().enumerate() {
            let got = prepare(&part, limit).expect("attached");
            assert_eq!(
                (
                    got.content_type,
                    got.encoding,
                    got.headers_only,
                    got.truncated
                ),
                want,
                "row {i}"
            );
            assert!(fits_8bit(&got.bytes), "row {i}");
            assert!(got.bytes.ends_with(b"\r\n"), "row {i}");
        }
        assert!(prepare(&OriginalPart::Withheld("damaged".into()), None).is_none());
    }

    #[test]
    fn headers_are_made_safe() {
        let long = [
            b"X-Long: ".to_vec(),
            vec![b'y'; 2500],
            b"\r\nA: b\0c\r\n".to_vec(),
        ]
        .concat();
        let safe = safe_headers(&long);
        assert!(fits_8bit(&safe));
        let text = String::from_utf8(safe).unwrap();
        assert!(text.ends_with("\r\nA: b c\r\n"), "{text}");
        let unfolded = text.replace("\r\n ", " ");
        assert_eq!(unfolded.lines().count(), 2);
    }
}
