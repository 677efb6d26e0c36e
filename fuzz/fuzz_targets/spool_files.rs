//! Fuzz target: arbitrary bytes as a spool message file header and as a
//! control file. Neither parser may panic; whatever the control file
//! parser accepts must render back to text that parses to the same value
//! (so a file the scheduler rewrites never changes meaning).

#![no_main]

use std::io::Cursor;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use skein_spool::{ControlFile, parse_header};

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz");
    let _ = parse_header(&mut Cursor::new(data), path, data.len() as u64);
    if let Ok((control, _torn)) = ControlFile::parse(data, path)
        && let Ok(text) = control.render()
    {
        let (again, torn) = ControlFile::parse(text.as_bytes(), path)
            .expect("a rendered control file parses");
        assert!(!torn, "a rendered control file has no torn record");
        assert_eq!(again, control, "render/parse round trip");
    }
});
