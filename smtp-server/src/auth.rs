//! AUTH (RFC 4954) for the submission service: SASL PLAIN (RFC 4616) and
//! LOGIN, checked against `smtpd.password_file` — lines `user:hash` with
//! argon2id PHC hashes (`$argon2id$v=19$m=…`), `#` comments and blank
//! lines ignored.

use std::collections::HashMap;
use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use base64ct::{Base64, Encoding};

use crate::error::SmtpdError;

/// The password file, checked when loaded.
#[derive(Debug, Clone, Default)]
pub struct Passwords {
    users: HashMap<String, String>,
}

/// A hash verified when the user is unknown, so that an unknown user
/// costs as much time as a wrong password and cannot be told apart.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2tlaW5kdW1teXNhbHQ$lK4ZMDhybgirvQc4kcmi387i81YwshKo3GLuD3L6D9M";

impl Passwords {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<Passwords, SmtpdError> {
        let text = std::fs::read_to_string(path).map_err(|e| SmtpdError::PasswordFile {
            detail: format!("{}: {e}", path.display()),
        })?;
        Passwords::parse(&text).map_err(|detail| SmtpdError::PasswordFile {
            detail: format!("{}: {detail}", path.display()),
        })
    }

    /// Parses the file's text; the error names the line.
    pub fn parse(text: &str) -> Result<Passwords, String> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(format!("line {}: expected user:hash", n + 1));
            };
            if PasswordHash::new(hash).is_err() || !hash.starts_with("$argon2") {
                return Err(format!("line {}: not an argon2 PHC hash", n + 1));
            }
            users.insert(user.to_owned(), hash.to_owned());
        }
        Ok(Passwords { users })
    }

    /// Whether `password` is `user`'s. Slow on purpose (argon2): call it
    /// off the async threads.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        let (hash, known) = match self.users.get(user) {
            Some(hash) => (hash.as_str(), true),
            None => (DUMMY_HASH, false),
        };
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let matches = argon2::Argon2::default()
            .verify_password(password, &parsed)
            .is_ok();
        known && matches
    }
}

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

    const ALICE: &str = "alice:$argon2id$v=19$m=19456,t=2,p=1$c2tlaW50ZXN0c2FsdA$77ZdsPAZDWO3u43UcM/8Ht5yMkbFtrndFzoqolotwUg";

    #[test]
    fn file_and_verify() {
        let p = Passwords::parse(&format!("# users\n\n{ALICE}\n")).expect("parses");
        assert!(p.verify("alice", b"s3cret pass"));
        assert!(!p.verify("alice", b"wrong"));
        assert!(!p.verify("bob", b"s3cret pass"));
        assert!(Passwords::parse("alice").unwrap_err().contains("line 1"));
        assert!(
            Passwords::parse("\nalice:plaintext")
                .unwrap_err()
                .contains("line 2")
        );
    }

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
