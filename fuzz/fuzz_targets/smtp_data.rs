//! Fuzz target: an arbitrary message dot-stuffed in arbitrary chunks, then
//! un-stuffed in other arbitrary chunks. The end of the data must be found
//! exactly at the end of the stuffed stream, and the message must come back
//! with only its line ends made canonical (bare LF as CRLF, a final CRLF
//! added when missing). Arbitrary bytes fed straight to the decoder must
//! not panic either.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skein_smtp_codec::{DataDecoder, DotStuffer};

fuzz_target!(|data: &[u8]| {
    let Some((&seed, message)) = data.split_first() else {
        return;
    };
    let a = usize::from(seed & 0x0f) + 1;
    let b = usize::from(seed >> 4) + 1;
    let mut stuffer = DotStuffer::new();
    let mut wire = Vec::new();
    for chunk in message.chunks(a) {
        stuffer.stuff(chunk, &mut wire);
    }
    stuffer.finish(&mut wire);

    let mut decoder = DataDecoder::new();
    let mut back = Vec::new();
    let mut end = None;
    let mut fed = 0;
    for chunk in wire.chunks(b) {
        if let Some(n) = decoder.decode(chunk, &mut back) {
            end = Some(fed + n);
            break;
        }
        fed += chunk.len();
    }
    assert_eq!(end, Some(wire.len()));
    assert_eq!(back, canonical(message));

    let mut raw = DataDecoder::new();
    let mut sink = Vec::new();
    if let Some(n) = raw.decode(message, &mut sink) {
        assert!(n <= message.len());
    }
});

fn canonical(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev = 0u8;
    for &byte in m {
        if byte == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(byte);
        prev = byte;
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        if prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b'\n');
    }
    out
}
