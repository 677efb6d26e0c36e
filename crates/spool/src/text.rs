//! The escaping used by every line-oriented spool record.
//!
//! A record is a keyword and space-separated fields on one line. A field
//! may hold anything a `str` can (a quoted local part with spaces, a remote
//! server's reply with control characters), so `%`, space, and every
//! character below 0x21 or equal to 0x7f are written as `%XX`. The empty
//! string is written as a lone `%`, which escaping never produces otherwise
//! (an escaped `%` is always followed by two hex digits).

/// Escapes one field.
pub fn escape(value: &str) -> String {
    if value.is_empty() {
        return "%".to_string();
    }
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '%' | ' ' | '\u{0}'..='\u{20}' | '\u{7f}' => {
                out.push_str(&format!("%{:02X}", c as u32));
            }
            _ => out.push(c),
        }
    }
    out
}

/// Undoes [`escape`]. `None` when the field is not a valid escape.
pub fn unescape(field: &str) -> Option<String> {
    if field == "%" {
        return Some(String::new());
    }
    if field.is_empty() {
        return None;
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = field.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(hex, 16).ok()?;
            if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return None;
            }
            out.push(v);
            i += 3;
        } else if b <= b' ' || b == 0x7f {
            return None;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for v in [
            "",
            "a",
            "john doe@example.org",
            "\"quoted local\"@x",
            "100%",
            "%",
            "line\r\nbreak\ttab\u{7f}",
            "üser@bücher.example",
            "-",
        ] {
            let e = escape(v);
            assert!(!e.is_empty());
            assert!(!e.contains(' ') && !e.contains('\n'), "{e:?}");
            assert_eq!(unescape(&e).as_deref(), Some(v), "{v:?} -> {e:?}");
        }
    }

    #[test]
    fn rejects_bad_escapes() {
        for bad in ["", "%4", "%zz", "a b", "%+1", "tab\t"] {
            assert_eq!(unescape(bad), None, "{bad:?}");
        }
    }
}
