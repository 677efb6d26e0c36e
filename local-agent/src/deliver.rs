//! One job, start to finish: read the message from the spool once per
//! recipient and write it into that recipient's Maildir with
//! `Return-Path` and `Delivered-To` in front.

use std::io::Write;
use std::path::{Path, PathBuf};

use skein_agent::Delivery;
use skein_proto::{Job, JobRecipient};
use tracing::{debug, warn};

use crate::error::LocalError;
use crate::maildir::{DeliverError, Maildir};
use crate::message::{CopyError, MessageSource};
use crate::users::{SystemUsers, check_user_name, lookup, user_for};

/// What a delivery needs to know besides the job.
#[derive(Debug, Clone)]
pub struct Target {
    /// `local.maildir_root`: user `u`'s Maildir is `<maildir_root>/u`.
    pub maildir_root: PathBuf,
    /// The machine's host name, for unique Maildir file names.
    pub hostname: String,
    /// `local.home_mailbox`: empty, or the Maildir under a system
    /// account's home that its mail goes to, written as the account
    /// ([`crate::home`]).
    pub home_mailbox: String,
}

/// Delivers every recipient of `job`; one result per recipient, in
/// order. Blocking: run it off the async threads.
pub fn deliver_job(target: &Target, job: &Job) -> Vec<Delivery> {
    let source = match MessageSource::open(
        Path::new(&job.message_path),
        job.message_offset,
        job.size,
    ) {
        Ok(source) => source,
        Err(e) => {
            warn!(queue_id = job.queue_id.as_str(), error = %e, "cannot read the message: deferring the job");
            let delivery = e.to_delivery();
            return job.recipients.iter().map(|_| delivery.clone()).collect();
        }
    };
    job.recipients
        .iter()
        .map(
            |recipient| match deliver_one(target, job, &source, recipient) {
                Ok(path) => {
                    debug!(
                        queue_id = job.queue_id.as_str(),
                        to = recipient.address.as_str(),
                        path = %path.display(),
                        "delivered"
                    );
                    Delivery::delivered(None, format!("delivered to maildir as {}", path.display()))
                }
                Err(e) => {
                    debug!(
                        queue_id = job.queue_id.as_str(),
                        to = recipient.address.as_str(),
                        error = %e,
                        "not delivered"
                    );
                    e.to_delivery()
                }
            },
        )
        .collect()
}

fn deliver_one(
    target: &Target,
    job: &Job,
    source: &MessageSource,
    recipient: &JobRecipient,
) -> Result<PathBuf, LocalError> {
    let user = user_for(job, &recipient.address);
    check_user_name(&user)?;
    let users = SystemUsers::new(target.maildir_root.clone());
    lookup(&users, &user)?;
    let header = format!(
        "Return-Path: <{}>\nDelivered-To: {}\n",
        one_line(&job.sender),
        one_line(&recipient.address)
    );
    if !target.home_mailbox.is_empty()
        && let Some(account) = crate::home::account(&user)?
    {
        return crate::home::deliver(
            &account,
            &target.home_mailbox,
            &target.hostname,
            |mut out| {
                out.write_all(header.as_bytes())?;
                source.copy_as_lf(&mut out).map(drop).map_err(|e| match e {
                    CopyError::Write(io) => io,
                    CopyError::Read(e) => std::io::Error::other(e.to_string()),
                })
            },
        );
    }
    let maildir = Maildir::ensure(&users.maildir(&user))?;
    let result = maildir.deliver(&target.hostname, |out| {
        out.write_all(header.as_bytes()).map_err(CopyError::Write)?;
        source.copy_as_lf(out).map(drop)
    });
    result.map_err(|e| match e {
        DeliverError::Mailbox(e) | DeliverError::Content(CopyError::Read(e)) => e,
        DeliverError::Content(CopyError::Write(io)) => {
            LocalError::mailbox("write", maildir.path().join("tmp"), io)
        }
    })
}

/// The spool refuses line breaks in addresses; should one get through
/// anyway, it must not become a header of its own.
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_agent::testing::job;
    use skein_proto::{Status, ThreadKey};

    struct Fixture {
        dir: tempfile::TempDir,
        target: Target,
        message: PathBuf,
    }

    /// A spool-like file: 4 bytes of "header", then the message.
    const MESSAGE: &[u8] = b"Subject: hi\r\nX: y\r\n\r\nline one\r\nline two\r\n";

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let message = dir.path().join("queued");
        let mut bytes = b"HDR\n".to_vec();
        bytes.extend_from_slice(MESSAGE);
        std::fs::write(&message, bytes).expect("write");
        let target = Target {
            maildir_root: dir.path().join("mail"),
            hostname: "test.example".into(),
            home_mailbox: String::new(),
        };
        Fixture {
            dir,
            target,
            message,
        }
    }

    impl Fixture {
        fn job(&self, user: &str, recipients: &[&str]) -> Job {
            let path = self.message.to_str().expect("utf-8 path");
            job(
                1,
                ThreadKey::new("local", user),
                path,
                4,
                MESSAGE.len() as u64,
                recipients,
            )
        }

        fn new_files(&self, user: &str) -> Vec<PathBuf> {
            let new = self.target.maildir_root.join(user).join("new");
            let mut files: Vec<PathBuf> = std::fs::read_dir(new)
                .map(|rd| rd.map(|e| e.expect("entry").path()).collect())
                .unwrap_or_default();
            files.sort();
            files
        }
    }

    #[test]
    fn delivers_with_return_path_and_delivered_to_in_lf() {
        let f = fixture();
        std::fs::create_dir_all(f.target.maildir_root.join("alice")).expect("virtual user");
        let job = f.job("alice", &["alice@localhost", "Alice+x@localhost"]);
        let results = deliver_job(&f.target, &job);
        assert_eq!(results.len(), 2);
        for r in &results {
            assert_eq!(r.status, Status::Delivered, "{r:?}");
            assert_eq!(r.enhanced.to_string(), "2.0.0");
        }
        let files = f.new_files("alice");
        assert_eq!(files.len(), 2);
        let mut bodies: Vec<String> = files
            .iter()
            .map(|p| String::from_utf8(std::fs::read(p).expect("read")).expect("utf-8"))
            .collect();
        bodies.sort();
        assert_eq!(
            bodies,
            [
                "Return-Path: <sender@example.org>\nDelivered-To: Alice+x@localhost\n\
                 Subject: hi\nX: y\n\nline one\nline two\n",
                "Return-Path: <sender@example.org>\nDelivered-To: alice@localhost\n\
                 Subject: hi\nX: y\n\nline one\nline two\n",
            ]
        );
        for file in &files {
            let name = file.file_name().and_then(|n| n.to_str()).expect("name");
            let size = std::fs::metadata(file).expect("stat").len();
            assert!(name.ends_with(&format!(",S={size}")), "{name}");
            assert!(name.contains(".test.example,"), "{name}");
        }
        assert!(
            std::fs::read_dir(f.target.maildir_root.join("alice/tmp"))
                .expect("tmp")
                .next()
                .is_none()
        );
    }

    #[test]
    fn null_sender_is_an_empty_return_path() {
        let f = fixture();
        std::fs::create_dir_all(f.target.maildir_root.join("bob")).expect("user");
        let mut job = f.job("bob", &["bob@localhost"]);
        job.sender = String::new();
        assert_eq!(deliver_job(&f.target, &job)[0].status, Status::Delivered);
        let body = std::fs::read_to_string(&f.new_files("bob")[0]).expect("read");
        assert!(body.starts_with("Return-Path: <>\n"), "{body}");
    }

    #[test]
    fn system_accounts_and_postmaster_get_a_maildir_created() {
        let f = fixture();
        for user in ["root", "postmaster"] {
            let job = f.job(user, &[&format!("{user}@localhost")]);
            assert_eq!(deliver_job(&f.target, &job)[0].status, Status::Delivered);
            assert_eq!(f.new_files(user).len(), 1, "{user}");
            for sub in ["tmp", "new", "cur"] {
                assert!(f.target.maildir_root.join(user).join(sub).is_dir());
            }
        }
    }

    #[test]
    fn unknown_and_unsafe_users_fail_permanently() {
        let f = fixture();
        let job = f.job("no-such-user-skein", &["no-such-user-skein@localhost"]);
        let r = &deliver_job(&f.target, &job)[0];
        assert_eq!(r.status, Status::Failed);
        assert_eq!(r.enhanced.to_string(), "5.1.1");
        assert!(!f.target.maildir_root.join("no-such-user-skein").exists());

        let job = f.job("../etc", &["x@localhost"]);
        let r = &deliver_job(&f.target, &job)[0];
        assert_eq!(r.status, Status::Failed);
        assert_eq!(r.enhanced.to_string(), "5.1.3");
    }

    /// The router routes a local user to `local/<user>` exactly when this
    /// agent delivers to that user: one name rule, one lookup. Maildirs
    /// exist for names the rule refuses, to show they do not count.
    #[test]
    fn the_router_and_the_agent_agree_on_every_user() {
        use skein_config::Config;
        use skein_routing::aliases::AliasTable;
        use skein_routing::route::Router;
        use skein_spool::{Envelope, Recipient};

        let f = fixture();
        let root = &f.target.maildir_root;
        for dir in ["ann", "o'brien", "-x", "Upper", "a b"] {
            std::fs::create_dir_all(root.join(dir)).expect("maildir");
        }
        let text = format!("hostname = \"mx.test\"\n[local]\nmaildir_root = {root:?}\n");
        let config = Config::from_toml_str(&text, "test", Path::new("/")).expect("config");
        let aliases = AliasTable::from_text("pm: \\postmaster\n", Path::new("/")).expect("aliases");
        let users = SystemUsers::new(root.clone());
        let router = Router::new(&config, &aliases, &users);
        let table = [
            ("ann@localhost", "ann", true),
            ("Ann+x@localhost", "ann", true),
            ("root@mx.test", "root", true),
            ("pm@localhost", "postmaster", true),
            ("no-such-user-skein@localhost", "no-such-user-skein", false),
            ("Upper@localhost", "upper", false),
            ("o'brien@localhost", "o'brien", false),
            ("-x@localhost", "-x", false),
            ("\"a b\"@localhost", "\"a b\"", false),
        ];
        for (address, user, deliverable) in table {
            let envelope = Envelope {
                recipients: vec![Recipient::new(address)],
                ..Envelope::default()
            };
            let routed = router.route(&envelope, 0, false).expect("lookup");
            let to_user = routed
                .iter()
                .any(|r| r.failure.is_none() && r.channel == "local" && r.host == user);
            assert_eq!(to_user, deliverable, "router, {address}: {routed:?}");
            // The agent, handed that user's thread (a user the router
            // refused can only reach it through a bug or a hand-made job).
            let job = f.job(user, &[address]);
            let status = &deliver_job(&f.target, &job)[0].status;
            assert_eq!(
                *status == Status::Delivered,
                deliverable,
                "agent, {address}: {status:?}"
            );
        }
    }

    #[test]
    fn a_missing_or_short_message_defers_every_recipient() {
        let f = fixture();
        std::fs::create_dir_all(f.target.maildir_root.join("alice")).expect("user");
        let mut job = f.job("alice", &["alice@localhost", "alice+b@localhost"]);
        job.size += 1;
        let results = deliver_job(&f.target, &job);
        for r in &results {
            assert!(matches!(r.status, Status::Deferred { .. }), "{r:?}");
            assert_eq!(r.enhanced.to_string(), "4.3.0");
            assert!(r.diagnostic.contains("queued"), "{}", r.diagnostic);
        }
        job.message_path = f.dir.path().join("gone").display().to_string();
        job.size -= 1;
        let results = deliver_job(&f.target, &job);
        assert_eq!(results.len(), 2);
        assert!(results[0].diagnostic.contains("does not exist"));
        assert!(f.new_files("alice").is_empty());
    }

    #[test]
    fn an_unwritable_maildir_defers() {
        let f = fixture();
        let dir = f.target.maildir_root.join("dave");
        std::fs::create_dir_all(dir.join("tmp")).expect("tmp");
        std::fs::write(dir.join("new"), b"not a directory").expect("file");
        let job = f.job("dave", &["dave@localhost"]);
        let r = &deliver_job(&f.target, &job)[0];
        assert!(matches!(r.status, Status::Deferred { .. }), "{r:?}");
        assert_eq!(r.enhanced.to_string(), "4.3.0");
    }
}
