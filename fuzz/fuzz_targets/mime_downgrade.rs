//! Fuzz target: arbitrary bytes as a message to downgrade to 7 bits
//! (`skein_mail::downgrade`). Nothing may panic; what converts is 7-bit,
//! a 7-bit input comes back unchanged, and converting the output again
//! changes nothing.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skein_mail::downgrade::to_seven_bit;

fuzz_target!(|data: &[u8]| {
    if let Ok(out) = to_seven_bit(data) {
        assert!(out.is_ascii());
        if data.is_ascii() {
            assert_eq!(&*out, data);
        }
        let again = to_seven_bit(&out).expect("7-bit input converts");
        assert_eq!(&*again, &*out);
    }
});
