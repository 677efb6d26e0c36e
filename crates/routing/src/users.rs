//! Which local users exist.
//!
//! A local user exists when it is a system account (`getpwnam`) or has a
//! Maildir directory `<local.maildir_root>/<user>`: the second form lets
//! skein serve virtual users without system accounts, and lets tests run
//! without creating any.

use std::io;
use std::path::PathBuf;

/// The question the router asks about local users. A trait so that the
/// routing tables can be tested without the machine's user database.
pub trait Users {
    /// Whether `user` (a lower-case, safe name: see [`is_safe_user_name`])
    /// exists. An error means the answer is unknown right now (the user
    /// database failed): the message is routed later rather than bounced.
    fn exists(&self, user: &str) -> io::Result<bool>;
}

/// The machine's users plus the Maildirs under the root.
#[derive(Debug, Clone)]
pub struct SystemUsers {
    maildir_root: PathBuf,
}

impl SystemUsers {
    /// Users known to the system or with a Maildir under `maildir_root`.
    pub fn new(maildir_root: PathBuf) -> SystemUsers {
        SystemUsers { maildir_root }
    }
}

impl Users for SystemUsers {
    fn exists(&self, user: &str) -> io::Result<bool> {
        // The Maildir first: it needs no NSS round trip, and a virtual user
        // then does not depend on the user database answering.
        if self.maildir_root.join(user).is_dir() {
            return Ok(true);
        }
        match nix::unistd::User::from_name(user) {
            Ok(found) => Ok(found.is_some()),
            Err(errno) => Err(io::Error::from(errno)),
        }
    }
}

/// A fixed list of users: for tests of code that routes (the router's own
/// and the SMTP server's recipient check), and for a setup whose users are
/// known in advance. The name `brokendb` stands for a user database that
/// does not answer: looking it up is an error.
#[derive(Debug, Clone, Copy)]
pub struct ListedUsers(pub &'static [&'static str]);

impl Users for ListedUsers {
    fn exists(&self, user: &str) -> io::Result<bool> {
        if user == "brokendb" {
            return Err(io::Error::other("user database unavailable"));
        }
        Ok(self.0.contains(&user))
    }
}

/// Whether `user` is safe as a single path component under the Maildir
/// root and plausible as an account name: letters (any script), digits,
/// `.`, `-` and `_`, not starting with `.` or `-`, at most 64 bytes.
pub fn is_safe_user_name(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 64
        && !user.starts_with(['.', '-'])
        && user
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_names() {
        for (name, ok) in [
            ("ann", true),
            ("john.doe", true),
            ("a_b-c9", true),
            ("jürgen", true),
            ("", false),
            (".", false),
            ("..", false),
            (".hidden", false),
            ("-rf", false),
            ("a/b", false),
            ("a+b", false),
            ("\"a\"", false),
            ("a b", false),
        ] {
            assert_eq!(is_safe_user_name(name), ok, "{name:?}");
        }
        assert!(!is_safe_user_name(&"a".repeat(65)));
    }

    #[test]
    fn maildir_or_system_account() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("virtual")).unwrap();
        std::fs::write(d.path().join("plainfile"), "").unwrap();
        let users = SystemUsers::new(d.path().to_path_buf());
        assert!(users.exists("virtual").unwrap());
        assert!(users.exists("root").unwrap(), "root is a system account");
        assert!(!users.exists("plainfile").unwrap());
        assert!(!users.exists("no-such-user-skein-test").unwrap());
    }
}
