//! Fuzz target: arbitrary bytes as what a milter sends the MTA
//! (`skein_milter::Decoder`), fed in two pieces at an arbitrary split.
//! Nothing may panic; a reply text that passes `checked_reply` has no
//! bare CR or LF and only 4xx/5xx lines.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skein_milter::{Decoder, Response, checked_reply};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut decoder = Decoder::new();
    decoder.push(&data[..split]);
    let mut responses = 0;
    loop {
        match decoder.next_response() {
            Ok(Some(response)) => {
                responses += 1;
                if let Response::ReplyCode(text) = response
                    && let Ok(reply) = checked_reply(&text)
                {
                    for line in reply.split("\r\n") {
                        assert!(!line.contains(['\r', '\n']));
                        assert!(line.starts_with('4') || line.starts_with('5'));
                    }
                }
            }
            Ok(None) if split < data.len() && responses < 1_000_000 => {
                decoder.push(&data[split..]);
                // Only once: what is left after this is incomplete.
                while let Ok(Some(_)) = decoder.next_response() {}
                break;
            }
            _ => break,
        }
    }
});
