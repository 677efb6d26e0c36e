//! Fuzz target: the SMTP server's message text reader. Arbitrary bytes go
//! through `DataDecoder` (DATA) and `ContentCheck` (DATA and BDAT), once
//! whole and once in chunks of a size the first byte picks: nothing may
//! panic, and the chunking must change neither where the data ends, nor
//! the text, nor the verdict.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skein_smtp_codec::DataDecoder;
use skein_smtp_codec::server::{ContentCheck, ContentViolation};

const MAX_LINE: usize = 80;

fn data(input: &[u8], size: usize) -> (Option<usize>, Vec<u8>, Option<ContentViolation>) {
    let mut decoder = DataDecoder::new();
    let mut check = ContentCheck::new(MAX_LINE);
    let mut text = Vec::new();
    let mut fed = 0;
    let mut end = None;
    for chunk in input.chunks(size) {
        let before = text.len();
        let done = decoder.decode(chunk, &mut text);
        check.feed(&text[before..]);
        if let Some(n) = done {
            end = Some(fed + n);
            break;
        }
        fed += chunk.len();
    }
    (end, text, check.finish())
}

fn bdat(input: &[u8], size: usize) -> Option<ContentViolation> {
    let mut check = ContentCheck::new(MAX_LINE);
    for chunk in input.chunks(size) {
        check.feed(chunk);
    }
    check.finish()
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&seed, input)) = bytes.split_first() else {
        return;
    };
    let size = usize::from(seed) + 1;
    let whole = input.len().max(1);
    assert_eq!(data(input, whole), data(input, size));
    assert_eq!(bdat(input, whole), bdat(input, size));
});
