//! RFC 3461 §4 xtext: how `ENVID`, `ORCPT` and `AUTH=` values travel.
//! Printable ASCII other than `+` and `=` as is; every other byte as `+XX`
//! (upper-case hex).

/// Encodes bytes as xtext.
pub fn encode(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// Decodes xtext; `None` when it is not valid xtext (a byte outside
/// `!`..`~`, `=`, or a `+` not followed by two upper-case hex digits).
pub fn decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        match b {
            b'+' => {
                let hi = hex(*text.get(i + 1)?)?;
                let lo = hex(*text.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'=' => return None,
            33..=126 => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    Some(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let table: &[(&[u8], &str)] = &[
            (b"", ""),
            (b"user@example.org", "user@example.org"),
            (b"a+b=c", "a+2Bb+3Dc"),
            (b"two words", "two+20words"),
            (b"\x00\x7f\xff", "+00+7F+FF"),
            ("é".as_bytes(), "+C3+A9"),
        ];
        for (raw, coded) in table {
            assert_eq!(encode(raw), *coded);
            assert_eq!(decode(coded.as_bytes()).as_deref(), Some(*raw));
        }
    }

    #[test]
    fn invalid() {
        for bad in ["+", "+4", "+4g", "+4a", "a=b", "a b", "\u{7f}"] {
            assert_eq!(decode(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(encode(&all).as_bytes()), Some(all));
    }
}
