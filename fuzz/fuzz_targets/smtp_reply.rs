//! Fuzz target: arbitrary bytes, cut at arbitrary points, fed to a
//! `ReplyDecoder` with small limits. Nothing may panic; errors stick; every
//! reply that comes out re-renders to bytes that parse back to the same
//! reply; and decoding the whole input at once gives the same replies as
//! decoding it piece by piece.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skein_smtp_codec::{Limits, Reply, ReplyDecoder, parse_reply};

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_line: 64,
        max_lines: 8,
    };
    let whole = decode(stream, limits, usize::MAX);
    let pieces = decode(stream, limits, usize::from(seed % 17) + 1);
    assert_eq!(whole, pieces);
    for reply in whole.0 {
        let bytes = reply.to_bytes();
        let big = Limits {
            max_line: 1 << 20,
            max_lines: 1 << 10,
        };
        let (back, used) = parse_reply(&bytes, &big)
            .expect("a rendered reply parses")
            .expect("a rendered reply is complete");
        assert_eq!(used, bytes.len());
        assert_eq!(back.code, reply.code);
        assert_eq!(back.lines.len(), reply.lines.len());
    }
});

/// The replies and whether decoding ended in an error.
fn decode(stream: &[u8], limits: Limits, piece: usize) -> (Vec<Reply>, bool) {
    let mut decoder = ReplyDecoder::with_limits(limits);
    let mut replies = Vec::new();
    for chunk in stream.chunks(piece.max(1)) {
        decoder.push(chunk);
        loop {
            match decoder.next_reply() {
                Ok(Some(reply)) => {
                    assert!(!reply.lines.is_empty() && (200..600).contains(&reply.code));
                    replies.push(reply);
                }
                Ok(None) => break,
                Err(_) => {
                    assert!(decoder.next_reply().is_err(), "errors must stick");
                    return (replies, true);
                }
            }
        }
    }
    (replies, false)
}
