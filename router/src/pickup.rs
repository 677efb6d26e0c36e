//! Picking up `maildrop/`: the submissions of local users who may not
//! write the spool, written there by the setgid `skein-postdrop`
//! ([`skein_spool::drop`] has the whole path and its modes).
//!
//! Each complete drop file is read and checked as the router's own user —
//! the submitter's bytes are parsed only here, unprivileged — and the
//! submitter is the file's owner, which the kernel set: the content cannot
//! claim to come from someone else. A good submission becomes a message
//! in `incoming/` (its envelope as given, its origin `pickup uid=N
//! user=NAME`, a `Received:` line naming the uid, as Postfix's pickup
//! writes one) and the drop file is removed; one that is malformed, too
//! large or names a bad address is set aside in `corrupt/` with the
//! reason, and logged. Nothing is deleted that was not first made durable
//! elsewhere: a crash between the commit into `incoming/` and the removal
//! of the drop file delivers the message twice, never zero times.
//!
//! Partial files (a dot name: their writer is still writing, or was
//! killed) are left alone for a day ([`drop::STALE_PARTIAL_SECS`]), then
//! removed.

use std::path::Path;
use std::time::{Duration, SystemTime};

use skein_mail::Mailbox;
use skein_spool::{Spool, drop};
use tracing::{error, info, warn};

/// What one pickup pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PickedUp {
    /// Submissions now in `incoming/`.
    pub queued: usize,
    /// Drop files set aside in `corrupt/`.
    pub refused: usize,
}

/// Picks up every complete file in `maildrop/`. `hostname` names this
/// host in the Received line; `limit` is the size limit (0: none).
pub fn pick_up(spool: &Spool, hostname: &str, limit: u64) -> PickedUp {
    let dir = drop::dir(spool.root());
    let mut done = PickedUp::default();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => {
            error!(dir = %dir.display(), error = %e, "cannot list maildrop/; trying again at the next scan");
            return done;
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    // Queue ids sort by time: oldest submission first.
    names.sort();
    for name in names {
        let path = dir.join(&name);
        if name.starts_with('.') {
            remove_if_stale(&path);
            continue;
        }
        if !drop::is_complete_name(&name) {
            refuse(spool, &path, None, "not a drop file's name", &mut done);
            continue;
        }
        match drop::read(&path, limit) {
            Ok(submission) => match queue(spool, hostname, &submission) {
                Ok(id) => {
                    if let Err(e) = std::fs::remove_file(&path) {
                        // Queued already: a second pickup would send it
                        // twice, so this is worth an error line.
                        error!(drop = name.as_str(), queue_id = %id, error = %e, "queued, but cannot remove the drop file");
                    }
                    let sender = &submission.info.envelope.sender;
                    info!(
                        drop = name.as_str(),
                        queue_id = %id,
                        uid = submission.uid,
                        user = user_name(submission.uid).as_str(),
                        sender = if sender.is_empty() { "<>" } else { sender.as_str() },
                        recipients = submission.info.envelope.recipients.len(),
                        size = submission.info.size,
                        "picked up"
                    );
                    done.queued += 1;
                }
                Err(Refusal::Bad(why)) => {
                    refuse(spool, &path, Some(submission.uid), &why, &mut done);
                }
                Err(Refusal::Spool(e)) => {
                    error!(drop = name.as_str(), error = %e, "cannot queue a drop file; it stays for the next scan");
                }
            },
            Err(drop::Problem::Refused(why)) => {
                let owner = std::fs::metadata(&path)
                    .ok()
                    .map(|m| std::os::unix::fs::MetadataExt::uid(&m));
                refuse(spool, &path, owner, &why, &mut done);
            }
            Err(drop::Problem::Io(e)) => {
                error!(drop = name.as_str(), error = %e, "cannot read a drop file; it stays for the next scan");
            }
        }
    }
    done
}

enum Refusal {
    /// The submission's fault: set aside.
    Bad(String),
    /// Ours: try again later.
    Spool(skein_spool::SpoolError),
}

/// Writes `submission` into `incoming/`, durably.
fn queue(
    spool: &Spool,
    hostname: &str,
    submission: &drop::Submission,
) -> Result<skein_spool::QueueId, Refusal> {
    let mut envelope = submission.info.envelope.clone();
    if !envelope.sender.is_empty() {
        Mailbox::parse(&envelope.sender, true)
            .map_err(|e| Refusal::Bad(format!("bad sender {:?}: {e}", envelope.sender)))?;
    }
    for rcpt in &envelope.recipients {
        Mailbox::parse(&rcpt.address, true)
            .map_err(|e| Refusal::Bad(format!("bad recipient {:?}: {e}", rcpt.address)))?;
    }
    envelope.origin = format!(
        "pickup uid={} user={}",
        submission.uid,
        user_name(submission.uid)
    );
    let mut writer = spool.create_incoming(&envelope).map_err(Refusal::Spool)?;
    let received = format!(
        "Received: by {hostname} (skein pickup, from userid {})\r\n\tid {}; {}\r\n",
        submission.uid,
        writer.id(),
        skein_mail::date::now_local()
    );
    writer
        .write_message(received.as_bytes())
        .and_then(|()| writer.write_message(&submission.message))
        .map_err(Refusal::Spool)?;
    writer.commit().map_err(Refusal::Spool)
}

fn refuse(spool: &Spool, path: &Path, uid: Option<u32>, why: &str, done: &mut PickedUp) {
    let uid_text = uid.map_or_else(|| "unknown".to_owned(), |u| u.to_string());
    let user = uid.map_or_else(|| "unknown".to_owned(), user_name);
    let reason = format!("drop file of uid {uid_text} ({user}) refused: {why}");
    match spool.quarantine(path, &reason) {
        Ok(moved) => {
            warn!(path = %moved.display(), uid = uid_text.as_str(), user = user.as_str(), why, "drop file set aside");
            done.refused += 1;
        }
        Err(e) => {
            error!(path = %path.display(), error = %e, why, "cannot set a bad drop file aside")
        }
    }
}

fn remove_if_stale(path: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_file() {
        return; // the wake-up socket
    }
    let age = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default();
    if age > Duration::from_secs(drop::STALE_PARTIAL_SECS) {
        match std::fs::remove_file(path) {
            Ok(()) => {
                info!(path = %path.display(), "removed a partial drop file left by a killed writer")
            }
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot remove a stale partial drop file")
            }
        }
    }
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| format!("uid{uid}"), |u| u.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_spool::{Area, Envelope, Recipient};

    fn envelope(rcpt: &str) -> Envelope {
        Envelope {
            sender: "ann@example.org".into(),
            recipients: vec![Recipient::new(rcpt)],
            origin: "claims to be root".into(),
            ..Envelope::default()
        }
    }

    fn drop_file(spool: &Spool, bytes: &[u8]) -> String {
        let name = drop::partial_name()[1..].to_owned();
        std::fs::write(drop::dir(spool.root()).join(&name), bytes).expect("write");
        name
    }

    #[test]
    fn good_files_are_queued_with_their_owner_and_bad_ones_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path().join("spool")).expect("spool");
        let good = drop::render(&envelope("bob@example.org"), b"Subject: hi\r\n\r\nx\r\n")
            .expect("render");
        drop_file(&spool, &good);
        let bad_address = drop::render(&envelope("bob@@example.org"), b"x\r\n").expect("render");
        drop_file(&spool, &bad_address);
        drop_file(&spool, b"not a message file\n");
        let big = drop::render(&envelope("bob@example.org"), &vec![b'a'; 500]).expect("render");
        drop_file(&spool, &big);
        // A partial file is left alone (it is fresh).
        std::fs::write(
            drop::dir(spool.root()).join(drop::partial_name()),
            b"partial",
        )
        .expect("partial");

        let done = pick_up(&spool, "mx.example", 100);
        assert_eq!(
            done,
            PickedUp {
                queued: 1,
                refused: 3
            }
        );

        let queued = spool.list(Area::Incoming, |_| {}).expect("list");
        assert_eq!(queued.len(), 1);
        let (info, message) =
            skein_spool::read_message(&spool.path(Area::Incoming, &queued[0])).expect("read");
        let me = nix::unistd::geteuid().as_raw();
        assert!(
            info.envelope
                .origin
                .starts_with(&format!("pickup uid={me} user=")),
            "{}",
            info.envelope.origin
        );
        let text = String::from_utf8(message).expect("utf-8");
        assert!(
            text.starts_with(&format!(
                "Received: by mx.example (skein pickup, from userid {me})\r\n\tid {}; ",
                queued[0]
            )),
            "{text}"
        );
        assert!(text.ends_with("Subject: hi\r\n\r\nx\r\n"), "{text}");

        let corrupt: Vec<String> = std::fs::read_dir(spool.dir(Area::Corrupt))
            .expect("corrupt/")
            .map(|e| e.expect("entry").file_name().into_string().expect("name"))
            .collect();
        let whys: Vec<String> = corrupt
            .iter()
            .filter(|n| n.ends_with(".why"))
            .map(|n| std::fs::read_to_string(spool.dir(Area::Corrupt).join(n)).expect("why"))
            .collect();
        assert_eq!(whys.len(), 3, "{corrupt:?}");
        for want in [
            "bad recipient \"bob@@example.org\"",
            "malformed",
            "too large",
        ] {
            assert!(
                whys.iter()
                    .any(|w| w.contains(want) && w.contains(&format!("drop file of uid {me}"))),
                "{want}: {whys:?}"
            );
        }
        // Only the partial file (and nothing else) is left in maildrop/.
        let left: Vec<_> = std::fs::read_dir(drop::dir(spool.root()))
            .expect("maildrop/")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].to_string_lossy().starts_with('.'));
    }
}
