//! What the router learns from a message's header section: how many
//! `Received` fields it carries (a mail loop shows as too many) and its
//! `Message-ID` (for the log line).
//!
//! The header is hostile input. Only the header section is read, at most
//! [`MAX_HEADER_SCAN`] bytes of it, and it is handed to mail-parser, which
//! never panics on malformed input; every field but `Message-ID` is kept
//! raw, so nothing is decoded that the router does not use.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use mail_parser::{HeaderName, MessageParser};
use skein_spool::MessageInfo;

/// More `Received` fields than this means the message is looping
/// (RFC 5321 §6.3 suggests a limit of at least 100 hops).
pub const MAX_RECEIVED: usize = 100;

/// The most header bytes read. A hundred `Received` fields take some
/// tens of kilobytes; a header section larger than this is scanned only
/// this far, which can only under-count.
pub const MAX_HEADER_SCAN: u64 = 1 << 20;

/// Facts from the header section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderFacts {
    /// Number of `Received` fields.
    pub received: usize,
    /// The `Message-ID`, without angle brackets.
    pub message_id: Option<String>,
}

impl HeaderFacts {
    /// Whether the message has been through too many hops.
    pub fn is_looping(&self) -> bool {
        self.received > MAX_RECEIVED
    }
}

/// The header section at the start of `message`: everything up to and
/// including the empty line that ends it (or all of it, when there is no
/// body). Bare LF line ends are tolerated.
pub fn header_section(message: &[u8]) -> &[u8] {
    let mut start = 0;
    while start < message.len() {
        let end = match message[start..].iter().position(|&b| b == b'\n') {
            Some(i) => start + i + 1,
            None => message.len(),
        };
        let line = &message[start..end];
        if line == b"\r\n" || line == b"\n" {
            return &message[..end];
        }
        start = end;
    }
    message
}

/// Scans a header section.
pub fn scan(header: &[u8]) -> HeaderFacts {
    let parser = MessageParser::new().header_id(HeaderName::MessageId);
    let Some(parsed) = parser.parse_headers(header) else {
        return HeaderFacts::default();
    };
    HeaderFacts {
        received: parsed
            .headers()
            .iter()
            .filter(|h| h.name == HeaderName::Received)
            .count(),
        message_id: parsed.message_id().map(str::to_owned),
    }
}

/// Reads the header section of a message file (its message starts at
/// `info.offset`) and scans it.
pub fn read_facts(file: &mut File, info: &MessageInfo) -> io::Result<HeaderFacts> {
    file.seek(SeekFrom::Start(info.offset))?;
    let mut head = Vec::new();
    file.take(info.size.min(MAX_HEADER_SCAN))
        .read_to_end(&mut head)?;
    Ok(scan(header_section(&head)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_section_ends_at_the_empty_line() {
        let cases: [(&[u8], &[u8]); 6] = [
            (b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\n", b"A: 1\r\nB: 2\r\n\r\n"),
            (b"A: 1\n\nbody", b"A: 1\n\n"),
            (b"A: 1\r\n", b"A: 1\r\n"),
            (b"\r\nbody", b"\r\n"),
            (b"", b""),
            (b"A: no newline", b"A: no newline"),
        ];
        for (message, want) in cases {
            assert_eq!(header_section(message), want, "{:?}", message);
        }
    }

    #[test]
    fn counts_received_and_finds_message_id() {
        let mut text = String::new();
        for i in 0..7 {
            text.push_str(&format!(
                "Received: from h{i} by x;\r\n\tMon, 1 Jan 2024 00:00:00 +0000\r\n"
            ));
        }
        text.push_str("received: lower case counts too\r\n");
        text.push_str("X-Received: does not count\r\n");
        text.push_str(
            "Message-ID: <abc@example.org>\r\nSubject: hi\r\n\r\nReceived: in the body\r\n",
        );
        let facts = scan(header_section(text.as_bytes()));
        assert_eq!(
            facts,
            HeaderFacts {
                received: 8,
                message_id: Some("abc@example.org".into())
            }
        );
        assert!(!facts.is_looping());
        let many = "Received: x\r\n".repeat(MAX_RECEIVED + 1) + "\r\n";
        assert!(scan(header_section(many.as_bytes())).is_looping());
        let exactly = "Received: x\r\n".repeat(MAX_RECEIVED) + "\r\n";
        assert!(!scan(header_section(exactly.as_bytes())).is_looping());
    }

    #[test]
    fn garbage_does_not_panic() {
        for input in [
            &b""[..],
            b"\r\n",
            b"\xff\xfe: \x00\r\n\r\n",
            b"Received",
            b":::\r\n \r\n\t\r\n",
            b"Message-ID: <unterminated\r\n",
        ] {
            let _ = scan(header_section(input));
        }
    }
}
