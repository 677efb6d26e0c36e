//! Fuzz target: the SMTP server's command reader. Arbitrary bytes are cut
//! into command lines by `CommandLines` (fed whole, and in chunks of a
//! size the first byte picks) and every line parsed by
//! `ServerCommand::parse`. Nothing may panic, no line may exceed the
//! limit, and the chunking must not change what is read.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skein_smtp_codec::server::{CommandLines, LineEvent, ServerCommand};

const MAX_LINE: usize = 512;

/// The events, as owned values, of `input` fed in chunks of `size`.
fn read(input: &[u8], size: usize) -> Vec<Option<Vec<u8>>> {
    let mut lines = CommandLines::new(MAX_LINE);
    let mut buf: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    for chunk in input.chunks(size) {
        buf.extend_from_slice(chunk);
        loop {
            let (used, event) = lines.next(&buf);
            let event = event.map(|e| match e {
                LineEvent::Line(line, _) => {
                    assert!(line.len() < MAX_LINE, "line over the limit");
                    let _ = ServerCommand::parse(line);
                    Some(line.to_vec())
                }
                LineEvent::TooLong => None,
            });
            buf.drain(..used);
            match event {
                Some(e) => events.push(e),
                None => break,
            }
        }
        assert!(buf.len() < MAX_LINE, "buffered past the limit");
    }
    events
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let whole = read(input, input.len().max(1));
    let chunked = read(input, usize::from(seed) + 1);
    assert_eq!(whole, chunked);
});
