//! Fuzz target: arbitrary text as an RFC 5321 mailbox, with and without
//! SMTPUTF8. Nothing may panic; an accepted mailbox prints back to the
//! same text, has no control characters, and re-parses to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skein_mail::Mailbox;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for utf8 in [false, true] {
        if let Ok(m) = Mailbox::parse(text, utf8) {
            let printed = m.to_string();
            assert_eq!(printed, text);
            assert!(!printed.chars().any(|c| c.is_control()));
            assert!(utf8 || printed.is_ascii());
            assert_eq!(Mailbox::parse(&printed, utf8), Ok(m));
        }
    }
});
