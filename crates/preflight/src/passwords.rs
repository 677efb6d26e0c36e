//! `smtpd.password_file`: lines `user:hash` with argon2id PHC hashes
//! (`$argon2id$v=19$m=…`), `#` comments and blank lines ignored; the
//! users the submission service lets AUTH.

use std::collections::HashMap;
use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordVerifier};

/// The password file, checked when loaded.
#[derive(Debug, Clone, Default)]
pub struct Passwords {
    users: HashMap<String, String>,
}

/// A hash verified when the user is unknown, so that an unknown user
/// costs as much time as a wrong password and cannot be told apart.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2tlaW5kdW1teXNhbHQ$lK4ZMDhybgirvQc4kcmi387i81YwshKo3GLuD3L6D9M";

impl Passwords {
    /// Reads and checks the file; the error names it (and the line).
    pub fn load(path: &Path) -> Result<Passwords, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Passwords::parse(&text).map_err(|detail| format!("{}: {detail}", path.display()))
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
}
