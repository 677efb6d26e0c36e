//! AUTH (RFC 4954) for the submission service: SASL PLAIN (RFC 4616) and
//! LOGIN, checked against `smtpd.password_file` — lines `user:hash` with
//! argon2id PHC hashes (`$argon2id$v=19$m=…`), `#` comments and blank
//! lines ignored.

use base64ct::{Base64, Encoding};

pub use skein_preflight::Passwords;

/// Decodes base64 (a SASL response); `None` if it is not base64.
pub fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(text).ok()?.trim();
    Base64::decode_vec(text).ok()
}

/// Encodes a SASL challenge.
pub fn encode_base64(bytes: &[u8]) -> String {
    Base64::encode_string(bytes)
}

/// Splits a PLAIN response `authzid NUL authcid NUL passwd` into the user
/// and the password. An authorization identity other than the user is
/// refused (`None`): acting for someone else is not supported.
pub fn split_plain(response: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut parts = response.split(|&b| b == 0);
    let authz = parts.next()?;
    let user = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    let password = parts.next()?.to_vec();
    if parts.next().is_some() || user.is_empty() {
        return None;
    }
    if !authz.is_empty() && authz != user.as_bytes() {
        return None;
    }
    Some((user, password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_table() {
        let ok = |r: &[u8]| split_plain(r).map(|(u, p)| (u, String::from_utf8(p).expect("utf8")));
        assert_eq!(ok(b"\0alice\0pw"), Some(("alice".into(), "pw".into())));
        assert_eq!(ok(b"alice\0alice\0pw"), Some(("alice".into(), "pw".into())));
        assert_eq!(ok(b"bob\0alice\0pw"), None);
        assert_eq!(ok(b"\0\0pw"), None);
        assert_eq!(ok(b"\0alice"), None);
        assert_eq!(ok(b"\0alice\0pw\0more"), None);
        assert_eq!(
            decode_base64(b"AGFsaWNlAHB3"),
            Some(b"\0alice\0pw".to_vec())
        );
        assert_eq!(decode_base64(b"not base64!"), None);
        assert_eq!(encode_base64(b"Username:"), "VXNlcm5hbWU6");
    }
}
