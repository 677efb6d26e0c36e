//! Local recipients checked at `RCPT TO` (`smtpd.verify_local_recipients`).
//!
//! Without this check the server would accept any address at a local
//! domain, and the router would later bounce the unknown ones (5.1.1) to
//! the envelope sender — backscatter, when the sender is forged. Instead,
//! for a recipient whose domain is local, the server runs the router's
//! routing ([`skein_routing::route::Router`], the same code with the same
//! aliases and the same user lookup) on a one-recipient envelope, and
//! refuses the recipient with `550` and the router's status and
//! diagnostic when the router would fail it: the two can never disagree.
//!
//! The aliases are the router's file (`router.aliases`), kept in force by
//! [`WatchedAliases`]: looked at for changes before a lookup (at most once
//! per [`RECHECK_INTERVAL`]) and reloaded on SIGHUP. The user lookup
//! (`getpwnam`) may block, so a lookup runs on tokio's blocking pool;
//! one that fails or takes longer than [`LOOKUP_LIMIT`] gives `451 4.3.0`.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use skein_config::Config;
use skein_mail::Mailbox;
use skein_routing::aliases::{AliasError, AliasTable, WatchedAliases};
use skein_routing::route::{Failure, Router};
use skein_routing::users::{SystemUsers, Users};
use skein_spool::{Envelope, Recipient};

/// How often, at most, the aliases' files are looked at for a change.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How long one recipient's lookup may take before the client is told to
/// try again later (a user database that does not answer).
pub const LOOKUP_LIMIT: Duration = Duration::from_secs(30);

/// What the check says about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Deliverable, or not local (not this check's business): accept.
    Accept,
    /// The router would fail it: refuse (`550`) with this status and
    /// diagnostic.
    Refuse(Failure),
    /// The answer is unknown right now (the user database failed or did
    /// not answer in time): `451 4.3.0`, the client may try again. The
    /// text is for the log.
    Unavailable(String),
}

/// The aliases in force and when their files were last looked at.
#[derive(Debug)]
struct Watched {
    aliases: WatchedAliases,
    checked: Instant,
}

/// Checks recipients at local domains against the router's routing.
pub struct RecipientCheck {
    config: Config,
    users: Box<dyn Users + Send + Sync>,
    aliases: Mutex<Watched>,
    /// Set by SIGHUP: reload the aliases before the next lookup.
    reload: AtomicBool,
    recheck: Duration,
}

impl std::fmt::Debug for RecipientCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecipientCheck")
            .field("aliases", &self.aliases)
            .finish_non_exhaustive()
    }
}

impl RecipientCheck {
    /// The check for `config`: its local domains and routes, the aliases
    /// file `router.aliases` (read now: a broken file is an error, as it
    /// is for the router), and the users of the system and of
    /// `local.maildir_root`.
    pub fn new(config: &Config) -> Result<RecipientCheck, AliasError> {
        let users = SystemUsers::new(config.local.maildir_root.clone());
        RecipientCheck::with_users(config, Box::new(users), RECHECK_INTERVAL)
    }

    fn with_users(
        config: &Config,
        users: Box<dyn Users + Send + Sync>,
        recheck: Duration,
    ) -> Result<RecipientCheck, AliasError> {
        let aliases = WatchedAliases::load(config.router.aliases.clone())?;
        Ok(RecipientCheck {
            config: config.clone(),
            users,
            aliases: Mutex::new(Watched {
                aliases,
                checked: Instant::now(),
            }),
            reload: AtomicBool::new(false),
            recheck,
        })
    }

    /// Asks for the aliases to be reloaded before the next lookup (SIGHUP).
    pub fn request_reload(&self) {
        self.reload.store(true, Ordering::Relaxed);
    }

    /// Whether this check routes as `config` does: the same routes, local
    /// domains, aliases file, user rules and Maildir root. A reload that
    /// leaves all of them alone keeps the check (and the aliases it has
    /// read), asking it to read the aliases again; otherwise a new check
    /// is made for the new sessions.
    pub fn routes_as(&self, config: &Config) -> bool {
        let old = &self.config;
        old.hostname == config.hostname
            && old.router == config.router
            && old.route == config.route
            && old.local == config.local
    }

    /// Number of aliases in force.
    pub fn alias_count(&self) -> usize {
        self.lock().aliases.table().len()
    }

    /// Whether `address` (already checked by the relay policy) is at a
    /// local domain: the router's own decision. No I/O.
    pub fn is_local(&self, address: &str, smtputf8: bool) -> bool {
        let Ok(mailbox) = Mailbox::parse(address, smtputf8) else {
            return false;
        };
        let none = AliasTable::empty();
        Router::new(&self.config, &none, self.users.as_ref()).is_local_domain(mailbox.domain())
    }

    /// Routes `address` as the router would, alone in an envelope, and
    /// returns its failure when *nothing* of it is deliverable (`None`:
    /// at least one result is; an alias with some bad members is accepted,
    /// the router bounces those, as a mailing list's owner expects).
    /// Blocking: it may look at the aliases' files and ask the user
    /// database. An error means the user database could not answer.
    pub fn check(&self, address: &str, smtputf8: bool) -> io::Result<Option<Failure>> {
        let aliases = self.aliases();
        let envelope = Envelope {
            recipients: vec![Recipient::new(address)],
            smtputf8,
            ..Envelope::default()
        };
        let routed =
            Router::new(&self.config, &aliases, self.users.as_ref()).route(&envelope, 0, false)?;
        if routed.iter().any(|r| r.failure.is_none()) {
            return Ok(None);
        }
        Ok(routed.into_iter().find_map(|r| r.failure))
    }

    /// [`check`](Self::check) for a recipient at a local domain, on the
    /// blocking pool and within [`LOOKUP_LIMIT`]; other recipients are
    /// accepted without a lookup.
    pub async fn verify(self: &Arc<Self>, address: &str, smtputf8: bool) -> Outcome {
        if !self.is_local(address, smtputf8) {
            return Outcome::Accept;
        }
        let check = Arc::clone(self);
        let address = address.to_owned();
        let lookup = tokio::task::spawn_blocking(move || check.check(&address, smtputf8));
        match tokio::time::timeout(LOOKUP_LIMIT, lookup).await {
            Ok(Ok(Ok(None))) => Outcome::Accept,
            Ok(Ok(Ok(Some(failure)))) => Outcome::Refuse(failure),
            Ok(Ok(Err(e))) => Outcome::Unavailable(format!("user lookup failed: {e}")),
            Ok(Err(e)) => Outcome::Unavailable(format!("lookup task failed: {e}")),
            Err(_) => Outcome::Unavailable(format!(
                "user lookup took more than {}s",
                LOOKUP_LIMIT.as_secs()
            )),
        }
    }

    /// The table in force, after reloading it if asked to or (at most once
    /// per `recheck`) if one of its files changed. The lock is held only
    /// for that: routing goes on with the returned handle.
    fn aliases(&self) -> Arc<AliasTable> {
        let mut watched = self.lock();
        let force = self.reload.swap(false, Ordering::Relaxed);
        if force || watched.checked.elapsed() >= self.recheck {
            watched.aliases.refresh(force);
            watched.checked = Instant::now();
        }
        watched.aliases.shared()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Watched> {
        // A panic while reloading leaves a usable table behind (the old
        // one or the new one): go on with it.
        self.aliases.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The text of a `550` reply for `address` refused with `diagnostic`:
/// control characters (an aliases file is free text) become `?`, and the
/// whole stays well within the 512 octets of a reply line (RFC 5321
/// §4.5.3.1.5).
pub fn refusal_text(address: &str, diagnostic: &str) -> String {
    const MAX: usize = 400;
    let mut text = String::with_capacity(address.len() + diagnostic.len() + 4);
    for c in format!("<{address}>: {diagnostic}").chars() {
        if text.len() + c.len_utf8() > MAX {
            text.push_str("...");
            break;
        }
        text.push(if c.is_control() { '?' } else { c });
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_routing::users::ListedUsers;
    use std::path::Path;

    /// `brokendb` makes the lookup fail (see `ListedUsers`).
    const USERS: ListedUsers = ListedUsers(&["ann", "bob", "root"]);

    fn config(dir: &Path, aliases: Option<&Path>) -> Config {
        let aliases = aliases.map_or(String::new(), |p| format!("aliases = {:?}\n", p));
        let text = format!(
            "hostname = \"mx.test\"\n[router]\nlocal_domains = [\"localhost\", \"example.org\"]\n{aliases}\
             [local]\nmaildir_root = {:?}\n",
            dir.join("mail")
        );
        Config::from_toml_str(&text, "test", Path::new("/")).expect("test config")
    }

    fn check_with(dir: &Path, aliases: &str, recheck: Duration) -> RecipientCheck {
        let path = dir.join("aliases");
        std::fs::write(&path, aliases).unwrap();
        RecipientCheck::with_users(&config(dir, Some(&path)), Box::new(USERS), recheck).unwrap()
    }

    fn status(check: &RecipientCheck, address: &str) -> Option<String> {
        check
            .check(address, true)
            .expect("lookup")
            .map(|f| f.status.to_string())
    }

    const ALIASES: &str = "\
staff: ann, bob
mixed: ann, nobody
allbad: nobody, gone
prog: \"|/bin/cat\"
empty: :include:empty.list
";

    #[test]
    fn the_routers_verdict_per_recipient() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("empty.list"), "# nobody\n").unwrap();
        let check = check_with(d.path(), ALIASES, RECHECK_INTERVAL);
        assert_eq!(check.alias_count(), 5);
        let table = [
            ("ann@localhost", None),
            ("Ann@LOCALHOST", None),
            ("ann+tag@example.org", None),
            ("ann@mx.test", None),
            ("postmaster@mx.test", None),
            ("staff@localhost", None),
            ("x@localhost", Some("5.1.1")),
            ("x@mx.test", Some("5.1.1")),
            // One good member is enough: the router bounces the others.
            ("mixed@localhost", None),
            ("allbad@localhost", Some("5.1.1")),
            ("prog@localhost", Some("5.7.1")),
            ("empty@localhost", Some("5.2.4")),
            // Not local: routed elsewhere, never a failure.
            ("x@elsewhere.example", None),
        ];
        for (address, want) in table {
            assert_eq!(status(&check, address).as_deref(), want, "{address}");
        }
        let failure = check.check("x@localhost", false).unwrap().unwrap();
        assert_eq!(failure.diagnostic, "no such local user: x");
        assert!(
            check.check("brokendb@localhost", false).is_err(),
            "a failing user database is an error, not a refusal"
        );
    }

    #[test]
    fn local_is_the_routers_decision() {
        let d = tempfile::tempdir().unwrap();
        let check =
            RecipientCheck::with_users(&config(d.path(), None), Box::new(USERS), RECHECK_INTERVAL)
                .unwrap();
        for (address, local) in [
            ("a@localhost", true),
            ("a@LocalHost", true),
            ("a@example.org", true),
            ("a@mx.test", true),
            ("a@sub.example.org", false),
            ("a@elsewhere.example", false),
            ("a@[127.0.0.1]", false),
            ("not an address", false),
        ] {
            assert_eq!(check.is_local(address, false), local, "{address}");
        }
        assert_eq!(check.alias_count(), 0);
    }

    #[test]
    fn a_broken_aliases_file_is_an_error_at_start() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("aliases");
        std::fs::write(&path, "broken\n").unwrap();
        let e = RecipientCheck::new(&config(d.path(), Some(&path))).unwrap_err();
        assert!(e.to_string().contains("aliases:1:"), "{e}");
    }

    #[test]
    fn follows_the_aliases_file() {
        let d = tempfile::tempdir().unwrap();
        let check = check_with(d.path(), "staff: ann\n", Duration::ZERO);
        assert_eq!(status(&check, "team@localhost").as_deref(), Some("5.1.1"));
        let tmp = d.path().join("aliases.new");
        std::fs::write(&tmp, "team: bob\n").unwrap();
        std::fs::rename(&tmp, d.path().join("aliases")).unwrap();
        assert_eq!(
            status(&check, "team@localhost").as_deref(),
            None,
            "new alias"
        );
        assert_eq!(
            status(&check, "staff@localhost").as_deref(),
            Some("5.1.1"),
            "gone"
        );
        // A broken file keeps the table in force.
        std::fs::write(&tmp, "team: bob\nbroken\n").unwrap();
        std::fs::rename(&tmp, d.path().join("aliases")).unwrap();
        assert_eq!(status(&check, "team@localhost").as_deref(), None);
    }

    #[test]
    fn changes_are_looked_for_at_most_once_per_interval_unless_asked() {
        let d = tempfile::tempdir().unwrap();
        let check = check_with(d.path(), "staff: ann\n", Duration::from_secs(3600));
        let tmp = d.path().join("aliases.new");
        std::fs::write(&tmp, "team: bob\n").unwrap();
        std::fs::rename(&tmp, d.path().join("aliases")).unwrap();
        assert_eq!(
            status(&check, "team@localhost").as_deref(),
            Some("5.1.1"),
            "not looked at yet"
        );
        check.request_reload();
        assert_eq!(
            status(&check, "team@localhost").as_deref(),
            None,
            "SIGHUP reloads"
        );
    }

    #[tokio::test]
    async fn verify_gives_the_reply_class() {
        let d = tempfile::tempdir().unwrap();
        let check = Arc::new(check_with(d.path(), ALIASES, RECHECK_INTERVAL));
        assert_eq!(check.verify("ann@localhost", false).await, Outcome::Accept);
        assert_eq!(
            check.verify("staff@localhost", false).await,
            Outcome::Accept
        );
        assert_eq!(
            check.verify("x@elsewhere.example", false).await,
            Outcome::Accept
        );
        match check.verify("x@localhost", false).await {
            Outcome::Refuse(f) => {
                assert_eq!(
                    (f.status.to_string().as_str(), f.diagnostic.as_str()),
                    ("5.1.1", "no such local user: x")
                )
            }
            v => panic!("{v:?}"),
        }
        match check.verify("brokendb@localhost", false).await {
            Outcome::Unavailable(why) => assert!(why.contains("unavailable"), "{why}"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn refusal_texts_are_safe_reply_lines() {
        assert_eq!(
            refusal_text("x@localhost", "no such local user: x"),
            "<x@localhost>: no such local user: x"
        );
        assert_eq!(refusal_text("a@b", "bad\r\nline\t"), "<a@b>: bad??line?");
        let long = refusal_text("a@b", &"é".repeat(1000));
        assert!(long.len() <= 403 && long.ends_with("..."), "{}", long.len());
    }
}
