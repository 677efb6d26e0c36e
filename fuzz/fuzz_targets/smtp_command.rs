//! Fuzz target: arbitrary bytes parsed as one SMTP command line. Nothing
//! may panic, and a command that parses renders to a line that parses back
//! to the same command.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skein_smtp_codec::Command;

fuzz_target!(|data: &[u8]| {
    let Ok(command) = Command::parse(data) else {
        return;
    };
    // Parsing is more tolerant than rendering (a path the parser took may
    // be refused on output); what renders must read back the same.
    if let Ok(bytes) = command.to_bytes() {
        assert!(bytes.ends_with(b"\r\n"));
        assert_eq!(Command::parse(&bytes).expect("a rendered command parses"), command);
    }
});
