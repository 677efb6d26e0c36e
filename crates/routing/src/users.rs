//! Which local users exist, and which names can be local users at all.
//!
//! One rule for names ([`check_user_name`]) and one lookup
//! ([`SystemUsers::lookup`]), used by the router when it routes, by the
//! SMTP server when it checks a `RCPT TO` and by the local agent before it
//! delivers: the three cannot disagree about whether a user exists or is a
//! valid name.
//!
//! A local user exists when it has a Maildir directory
//! `<local.maildir_root>/<user>` (so that skein serves virtual users
//! without system accounts, and tests run without creating any), when it
//! is a system account (`getpwnam`), or when it is `postmaster`, which
//! RFC 5321 §4.5.1 requires to exist (the local agent creates its Maildir
//! on first delivery).

use std::fmt;
use std::io;
use std::path::PathBuf;

/// The longest user name, in bytes: `NAME_MAX`, the longest file name on
/// Linux file systems (the name is one directory under the Maildir root),
/// which is also the longest name `getpwnam` can match there
/// (`LOGIN_NAME_MAX` is 256 with the terminating NUL).
pub const MAX_USER_NAME: usize = 255;

/// The user every mail system must have (RFC 5321 §4.5.1).
pub const POSTMASTER: &str = "postmaster";

/// Why a name cannot be a local user: the sender's fault, since the name
/// comes from an address (a router that let one through would be a bug).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadUserName {
    why: &'static str,
}

impl BadUserName {
    /// What is wrong with the name (`"contains a slash"`, …), for
    /// diagnostics.
    pub fn why(&self) -> &'static str {
        self.why
    }
}

impl fmt::Display for BadUserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.why)
    }
}

impl std::error::Error for BadUserName {}

/// Checks that `user` can be a local user: one safe directory name under
/// the Maildir root, and a name `getpwnam` can answer for.
///
/// The rule: not empty; at most [`MAX_USER_NAME`] (255) bytes; only
/// letters and digits of any script (`char::is_alphanumeric`), `.`, `-`
/// and `_`; not starting with `.` or `-`; and already in lower case.
///
/// Why this rule. It merges the router's, which allowed exactly these
/// characters but at most 64 bytes, and the local agent's, which allowed
/// anything but `/`, control characters and a leading `.`, up to 255
/// bytes:
///
/// - *Path safety* needs no `/`, no NUL, no leading `.` (`.`, `..` and
///   hidden entries such as a Maildir's own `.Folder`s), and at most
///   `NAME_MAX` bytes. The character set gives the first two; the length
///   bound is NAME_MAX, not the 64 octets of an RFC 5321 local part: the
///   local part's limit is enforced on the address already, and folding
///   it to lower case can make it longer (`Ⱥ`, 2 bytes, becomes `ⱥ`, 3),
///   which must not turn a valid address into an invalid user.
/// - *A plain token.* The name becomes the thread `local/<user>` in
///   control files, logs and `mailq`, and an argument to tools that
///   operators run over the Maildir root: no blanks, quotes, shell
///   metacharacters, control or bidirectional-override characters, and no
///   leading `-` (read as an option; `useradd` refuses it too). Letters of
///   any script stay allowed for SMTPUTF8 users (`jürgen`); the POSIX
///   portable user name set (`A-Za-z0-9._-`) is a subset.
/// - *Lower case.* All delivery decisions are made on the local part
///   folded to lower case, as Postfix's local(8) does; a name that folding
///   would change has skipped that step, and looking it up would find a
///   different Maildir than the rest of the system does. (A letter without
///   a lower-case form, such as `𝐀`, is lower case for this purpose.)
pub fn check_user_name(user: &str) -> Result<(), BadUserName> {
    let why = if user.is_empty() {
        "empty"
    } else if user.len() > MAX_USER_NAME {
        "longer than 255 bytes"
    } else if user.starts_with('.') {
        "starts with a dot"
    } else if user.contains('/') {
        "contains a slash"
    } else if user.chars().any(char::is_control) {
        "contains a control character"
    } else if user.starts_with('-') {
        "starts with a hyphen"
    } else if !user
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        "contains a character other than a letter, a digit, '.', '-' or '_'"
    } else if user.to_lowercase() != user {
        "not in lower case"
    } else {
        return Ok(());
    };
    Err(BadUserName { why })
}

/// Whether [`check_user_name`] accepts `user`.
pub fn is_safe_user_name(user: &str) -> bool {
    check_user_name(user).is_ok()
}

/// The question routing asks about local users. A trait so that the
/// routing tables can be tested without the machine's user database.
pub trait Users {
    /// Whether `user` (a name [`check_user_name`] accepts) exists. An
    /// error means the answer is unknown right now (the user database
    /// failed): the message is routed later rather than bounced.
    fn exists(&self, user: &str) -> io::Result<bool>;
}

/// How an existing user is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Its Maildir directory exists (whether or not it is a system
    /// account).
    Maildir,
    /// A system account, or `postmaster`, without a Maildir yet: the local
    /// agent creates it.
    Account,
}

/// The machine's users plus the Maildirs under the root: the lookup
/// behind every "does this local user exist".
#[derive(Debug, Clone)]
pub struct SystemUsers {
    maildir_root: PathBuf,
}

impl SystemUsers {
    /// Users known to the system or with a Maildir under `maildir_root`
    /// (`local.maildir_root`).
    pub fn new(maildir_root: PathBuf) -> SystemUsers {
        SystemUsers { maildir_root }
    }

    /// The Maildir of `user`: `<maildir_root>/<user>`. Only for a name
    /// [`check_user_name`] accepts.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.maildir_root.join(user)
    }

    /// How `user` is known, or `None` when there is no such user. A name
    /// [`check_user_name`] refuses is never a user (and never becomes a
    /// path). An error: the user database failed, the answer is unknown.
    pub fn lookup(&self, user: &str) -> io::Result<Option<Known>> {
        if !is_safe_user_name(user) {
            return Ok(None);
        }
        // The Maildir first: it needs no NSS round trip, and a virtual user
        // then does not depend on the user database answering.
        if self.maildir(user).is_dir() {
            return Ok(Some(Known::Maildir));
        }
        if user == POSTMASTER {
            return Ok(Some(Known::Account));
        }
        match nix::unistd::User::from_name(user) {
            Ok(found) => Ok(found.map(|_| Known::Account)),
            Err(errno) => Err(io::Error::from(errno)),
        }
    }
}

impl Users for SystemUsers {
    fn exists(&self, user: &str) -> io::Result<bool> {
        Ok(self.lookup(user)?.is_some())
    }
}

/// A fixed list of users: for tests of code that routes (the router's own
/// and the SMTP server's recipient check), and for a setup whose users are
/// known in advance. Exactly the names listed exist (`postmaster` only if
/// listed). The name `brokendb` stands for a user database that does not
/// answer: looking it up is an error.
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
        assert!(!is_safe_user_name(&"a".repeat(256)));
    }

    /// The merged rule, row by row: name, accepted, and for a refusal the
    /// reason given (the local agent's 5.1.3 diagnostic).
    #[test]
    fn the_one_user_name_rule() {
        let at_limit = "a".repeat(MAX_USER_NAME);
        let over_limit = "a".repeat(MAX_USER_NAME + 1);
        // 85 three-byte letters: 255 bytes; one more two-byte letter: 257.
        let wide_at_limit = "ⱥ".repeat(85);
        let wide_over_limit = format!("{wide_at_limit}é");
        // What the router used to refuse for length: 65 bytes.
        let over_64 = "b".repeat(65);
        // A valid 64-byte local part that grows to 96 bytes when folded.
        let folded = "Ⱥ".repeat(32).to_lowercase();
        let table: Vec<(&str, Option<&str>)> = vec![
            // Plain names and the POSIX portable set.
            ("ann", None),
            ("john.doe", None),
            ("a_b-c9", None),
            ("0", None),
            ("trailing.", None),
            ("a..b", None),
            // Any script, already in lower case.
            ("jürgen", None),
            ("δοκιμή", None),
            ("用户", None),
            ("𝐀nn", None), // no lower-case form: folding leaves it
            // Length: bytes, not characters; the limit is NAME_MAX.
            (&at_limit, None),
            (&wide_at_limit, None),
            (&over_64, None),
            (&folded, None),
            (&over_limit, Some("longer than 255 bytes")),
            (&wide_over_limit, Some("longer than 255 bytes")),
            ("", Some("empty")),
            // Dots: never first (".", "..", hidden entries).
            (".", Some("starts with a dot")),
            ("..", Some("starts with a dot")),
            (".hidden", Some("starts with a dot")),
            ("../etc", Some("starts with a dot")),
            // Slashes, NUL and other controls.
            ("a/b", Some("contains a slash")),
            ("/", Some("contains a slash")),
            ("a\0b", Some("contains a control character")),
            ("a\nb", Some("contains a control character")),
            ("a\u{85}b", Some("contains a control character")),
            // A leading hyphen reads as an option.
            ("-rf", Some("starts with a hyphen")),
            ("a-", None),
            // Anything but letters, digits, '.', '-', '_'.
            ("a b", Some(OTHER)),
            ("a+b", Some(OTHER)),
            ("\"a\"", Some(OTHER)),
            ("o'brien", Some(OTHER)),
            ("a@b", Some(OTHER)),
            ("a\\b", Some(OTHER)),
            ("a$", Some(OTHER)),
            ("a\u{202e}b", Some(OTHER)), // right-to-left override
            ("a\u{0301}", Some(OTHER)),  // a combining mark
            ("a\u{ff0f}b", Some(OTHER)), // a fullwidth solidus
            // Upper case: the callers fold first.
            ("Ann", Some("not in lower case")),
            ("ANN", Some("not in lower case")),
            ("Jürgen", Some("not in lower case")),
            ("ΣΑΣ", Some("not in lower case")),
        ];
        for (name, refusal) in table {
            assert_eq!(
                check_user_name(name).err().map(|e| e.why()),
                refusal,
                "{name:?}"
            );
            assert_eq!(is_safe_user_name(name), refusal.is_none(), "{name:?}");
        }
    }

    const OTHER: &str = "contains a character other than a letter, a digit, '.', '-' or '_'";

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

    #[test]
    fn how_users_are_known() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("virtual")).unwrap();
        std::fs::create_dir(d.path().join("Upper")).unwrap();
        std::fs::create_dir(d.path().join("a b")).unwrap();
        let users = SystemUsers::new(d.path().to_path_buf());
        assert_eq!(users.maildir("virtual"), d.path().join("virtual"));
        for (user, known) in [
            ("virtual", Some(Known::Maildir)),
            ("root", Some(Known::Account)),
            ("postmaster", Some(Known::Account)),
            ("no-such-user-skein-test", None),
            // A Maildir whose name the rule refuses is not a user.
            ("Upper", None),
            ("a b", None),
            ("..", None),
        ] {
            assert_eq!(users.lookup(user).unwrap(), known, "{user}");
        }
        std::fs::create_dir(d.path().join("postmaster")).unwrap();
        assert_eq!(users.lookup("postmaster").unwrap(), Some(Known::Maildir));
    }
}
