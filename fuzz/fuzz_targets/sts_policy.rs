//! Fuzz target: arbitrary bytes as an MTA-STS policy body (what an HTTPS
//! server of the recipient's domain sends) and as an `_mta-sts` TXT
//! record. Nothing may panic; a parsed policy keeps `max_age` within a
//! year and has an `mx` unless its mode is `none`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skein_smtp::sts::{MAX_AGE_LIMIT, Mode, parse_policy, parse_txt};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_txt(&text);
    if let Ok(policy) = parse_policy(&text, "id", 0) {
        assert!(policy.max_age <= MAX_AGE_LIMIT);
        assert!(policy.mode == Mode::None || !policy.mx.is_empty());
        let _ = policy.allows("mx.example.org");
    }
});
