//! Who a local recipient is, and whether that user exists.
//!
//! The router puts local recipients on thread `local/<user>`, the user
//! being the lower-cased local part without its `+extension`; the agent
//! takes the user from the thread and only derives it from the address
//! itself when the thread does not name one (see [`user_for`]). Whether
//! the name is acceptable and whether the user exists (a Maildir, a
//! system account, or `postmaster`) is decided by `skein_routing::users`,
//! exactly as the router and the SMTP server decide it; this module maps
//! the answers to the agent's errors.

use skein_proto::Job;
pub use skein_routing::users::{Known, SystemUsers};

use crate::error::LocalError;

/// The user whose Maildir receives `address`, a recipient of `job`.
///
/// The thread's host is the user, as the router routes local mail —
/// unless the job came by a static route (it has a next hop, or its host
/// is the address's domain: `[[route]] channel = "local"` without a next
/// hop), in which case the user is derived from the address the way the
/// router does.
pub fn user_for(job: &Job, address: &str) -> String {
    let host = job.thread.host.as_str();
    let domain = address.rsplit_once('@').map_or("", |(_, domain)| domain);
    let routed_by_domain = job.nexthop.is_some() || host.eq_ignore_ascii_case(domain);
    if !host.is_empty() && !routed_by_domain {
        host.to_owned()
    } else {
        user_from_address(address)
    }
}

/// The user of an address: its local part, unquoted, lower-cased, without
/// a `+extension`. `"Joe.Bloggs+lists"@example.org` → `joe.bloggs`.
pub fn user_from_address(address: &str) -> String {
    let local = address.rsplit_once('@').map_or(address, |(local, _)| local);
    let local = match local
        .strip_prefix('"')
        .and_then(|quoted| quoted.strip_suffix('"'))
    {
        Some(quoted) => unquote(quoted),
        None => local.to_owned(),
    };
    let user = local
        .split_once('+')
        .map_or(local.as_str(), |(user, _)| user);
    user.to_lowercase()
}

/// The content of a quoted string: `\x` stands for `x`.
fn unquote(quoted: &str) -> String {
    let mut out = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// Refuses user names that cannot safely be one directory under the
/// Maildir root: the name comes from a remote sender's address. The rule
/// is the one the router and the SMTP server apply
/// ([`skein_routing::users::check_user_name`]); a refusal here fails with
/// 5.1.3.
pub fn check_user_name(user: &str) -> Result<(), LocalError> {
    skein_routing::users::check_user_name(user).map_err(|bad| LocalError::BadUserName {
        user: user.to_owned(),
        why: bad.why(),
    })
}

/// Whether `user` (already checked with [`check_user_name`]) exists, by
/// the lookup the router and the SMTP server use
/// ([`SystemUsers::lookup`]): unknown fails with 5.1.1, a user database
/// that does not answer defers.
pub fn lookup(users: &SystemUsers, user: &str) -> Result<Known, LocalError> {
    match users.lookup(user) {
        Ok(Some(known)) => Ok(known),
        Ok(None) => Err(LocalError::UnknownUser(user.to_owned())),
        Err(source) => Err(LocalError::UserLookup {
            user: user.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_agent::testing::job;
    use skein_proto::ThreadKey;

    #[test]
    fn users_from_addresses() {
        let table = [
            ("alice@localhost", "alice"),
            ("Alice@LOCALHOST", "alice"),
            ("alice+lists@localhost", "alice"),
            ("Joe.Bloggs+a+b@example.org", "joe.bloggs"),
            ("\"joe\\\"q\"@example.org", "joe\"q"),
            ("\"a b+c\"@example.org", "a b"),
            ("postmaster", "postmaster"),
            ("weird\"@x@example.org", "weird\"@x"),
        ];
        for (address, user) in table {
            assert_eq!(user_from_address(address), user, "{address}");
        }
    }

    #[test]
    fn the_thread_names_the_user_unless_routed_by_domain() {
        let thread = |host: &str| ThreadKey::new("local", host);
        let mut j = job(1, thread("alice"), "/m", 0, 0, &["root@localhost"]);
        // An alias expanded by the router: the thread decides.
        assert_eq!(user_for(&j, "root@localhost"), "alice");
        // A static route to the local channel: the host is the domain.
        j.thread = thread("lists.example.org");
        assert_eq!(user_for(&j, "Bob+x@Lists.Example.org"), "bob");
        j.thread = thread("relay:25");
        j.nexthop = Some("relay:25".into());
        assert_eq!(user_for(&j, "carol@example.org"), "carol");
        j.nexthop = None;
        j.thread = thread("");
        assert_eq!(user_for(&j, "dave+x@localhost"), "dave");
    }

    #[test]
    fn unsafe_names_are_refused() {
        let table = [
            ("alice", true),
            ("joe.bloggs", true),
            // Refused since the rule is the router's too (it was accepted
            // here alone, and looked up).
            ("a b", false),
            ("", false),
            (".", false),
            ("..", false),
            (".hidden", false),
            ("../etc", false),
            ("a/b", false),
            ("a\nb", false),
            ("a\0b", false),
        ];
        for (user, ok) in table {
            assert_eq!(check_user_name(user).is_ok(), ok, "{user:?}");
        }
        assert!(check_user_name(&"x".repeat(256)).is_err());
        assert!(check_user_name(&"x".repeat(255)).is_ok());
        match check_user_name("a/b") {
            Err(LocalError::BadUserName { user, why }) => {
                assert_eq!((user.as_str(), why), ("a/b", "contains a slash"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn who_exists() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("virtual")).expect("mkdir");
        let table = [
            ("virtual", Some(Known::Maildir)),
            ("root", Some(Known::Account)),
            ("postmaster", Some(Known::Account)),
            ("no-such-user-skein-test", None),
        ];
        let users = SystemUsers::new(root.path().to_path_buf());
        for (user, known) in table {
            let got = lookup(&users, user);
            match known {
                Some(known) => assert_eq!(got.ok(), Some(known), "{user}"),
                None => assert!(
                    matches!(got, Err(LocalError::UnknownUser(_))),
                    "{user}: {got:?}"
                ),
            }
        }
    }
}
