//! `maildrop/`: how a local user who may not write the spool submits mail.
//!
//! Postfix's way, with skein's file format. The spool belongs to the skein
//! account; an ordinary user's `skein sendmail` cannot write `tmp/` or
//! `incoming/`. Instead it renders the submission — envelope and message —
//! as an ordinary message file ([`render`]) and pipes it to
//! [`POSTDROP`], a small program installed setgid to the drop group
//! (default [`DEFAULT_DROP_GROUP`]). That program writes the bytes as they
//! come into `maildrop/` and nothing else: under a partial name
//! ([`partial_name`], starting with a dot), fsynced, then renamed to its
//! final name and the directory fsynced — only then does `sendmail` exit
//! 0. It checks only the size.
//!
//! The router, unprivileged, picks each complete file up ([`read`]):
//! the file's owner is who submitted it (the kernel sets it; the content
//! cannot lie about it), the content is parsed and checked like any spool
//! file (format, size field, CRC), then re-checked as a submission (a
//! recipient at least, the size limit). A good one becomes a message in
//! `incoming/` with a `Received:` line naming the user's uid, and the drop
//! file is removed; a bad one is set aside in `corrupt/` with its reason.
//!
//! Modes ([`DROP_DIR_MODE`], [`DROP_FILE_MODE`]): `maildrop/` is owned by
//! the skein account and the drop group, `rwxrwx---` with the setgid and
//! sticky bits. The group's only member is the setgid program (no user is
//! in it: a process has it only while running that program), which
//! creates files and opens the directory to `fsync` it, and never lists
//! it; everyone else cannot enter it, so a user cannot read, change or
//! remove another's submission, nor his own once it is handed over. Files get
//! the drop group (the directory's setgid bit) and mode 0444, which lets
//! the router (the directory's owner, not in the group) read them.
//! The same directory holds the router's wake-up socket for pickups,
//! [`wake_socket`] (its group is the drop group too, mode 0660).

use std::path::{Path, PathBuf};

use crate::message::{Envelope, MessageInfo, read_message, render_file};
use crate::{Area, QueueId, SpoolError};

/// The setgid submission program.
pub const POSTDROP: &str = "skein-postdrop";

/// The group `skein-postdrop` is setgid to, unless `spool.drop_group`
/// says otherwise.
pub const DEFAULT_DROP_GROUP: &str = "skeindrop";

/// `maildrop/`'s mode on an installation with a drop group: setgid (new
/// entries get the group) and sticky (only a file's owner, or the
/// directory's, removes it), the owner and the group all, others nothing.
pub const DROP_DIR_MODE: u32 = 0o3770;

/// A drop file's mode: readable by the router, writable by nobody (the
/// writer holds an open descriptor).
pub const DROP_FILE_MODE: u32 = 0o444;

/// What a drop file may hold beyond its message: the envelope lines of a
/// message file (a few thousand recipients).
pub const MAX_ENVELOPE: u64 = 1024 * 1024;

/// A drop file left partial (its writer died) is removed after this long.
pub const STALE_PARTIAL_SECS: u64 = 24 * 3600;

/// `<root>/maildrop`.
pub fn dir(root: &Path) -> PathBuf {
    root.join(Area::Maildrop.dir_name())
}

/// `<root>/maildrop/.wake`: the router's wake-up socket for pickups
/// (Unix datagram, mode 0660), in `maildrop/` because the setgid program
/// cannot enter `run/`. Skipped by the pickup (a dot name).
pub fn wake_socket(root: &Path) -> PathBuf {
    dir(root).join(".wake")
}

/// A fresh partial name: `.<queue id>` (unique: a queue id carries the
/// time and the pid).
pub fn partial_name() -> String {
    format!(".{}", QueueId::generate())
}

/// Whether `name` is a complete drop file's name (not partial, not the
/// socket): a queue id.
pub fn is_complete_name(name: &str) -> bool {
    name.parse::<QueueId>().is_ok()
}

/// The submission `skein sendmail` pipes to [`POSTDROP`]: a message file
/// with a fresh queue id, in memory.
pub fn render(env: &Envelope, message: &[u8]) -> Result<Vec<u8>, SpoolError> {
    render_file(&QueueId::generate(), env, message)
}

/// A drop file, read and checked.
#[derive(Debug)]
pub struct Submission {
    /// Who submitted it: the file's owner.
    pub uid: u32,
    /// Its header (envelope, size, id).
    pub info: MessageInfo,
    /// The message bytes.
    pub message: Vec<u8>,
}

/// Why a drop file cannot be taken.
#[derive(Debug)]
pub enum Problem {
    /// The user's fault (or a writer's bug): the file is set aside in
    /// `corrupt/` with this reason.
    Refused(String),
    /// Ours: the file could not be read; it stays for the next pickup.
    Io(SpoolError),
}

/// Reads the drop file at `path` as a submission with at most `limit`
/// message bytes (0: no limit).
pub fn read(path: &Path, limit: u64) -> Result<Submission, Problem> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| Problem::Io(SpoolError::io("stat", path, e)))?;
    if !meta.is_file() {
        return Err(Problem::Refused("not a regular file".into()));
    }
    let allowed = if limit == 0 {
        u64::MAX
    } else {
        limit.saturating_add(MAX_ENVELOPE)
    };
    if meta.len() > allowed {
        return Err(Problem::Refused(format!(
            "too large: {} bytes, more than the size limit of {limit} bytes and its envelope",
            meta.len()
        )));
    }
    let (info, message) = read_message(path).map_err(|e| match e {
        SpoolError::Corrupt { reason, .. } => Problem::Refused(format!("malformed: {reason}")),
        e => Problem::Io(e),
    })?;
    if limit > 0 && info.size > limit {
        return Err(Problem::Refused(format!(
            "too large: the message has {} bytes, the size limit is {limit}",
            info.size
        )));
    }
    if info.envelope.recipients.is_empty() {
        return Err(Problem::Refused("malformed: no recipients".into()));
    }
    Ok(Submission {
        uid: meta.uid(),
        info,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Recipient;

    fn envelope() -> Envelope {
        Envelope {
            sender: "ann@example.org".into(),
            recipients: vec![Recipient::new("bob@example.org")],
            origin: "sendmail".into(),
            ..Envelope::default()
        }
    }

    #[test]
    fn a_rendered_submission_reads_back_with_its_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(QueueId::generate().as_str());
        let message = b"Subject: hi\r\n\r\nbody\r\n";
        std::fs::write(&path, render(&envelope(), message).expect("render")).expect("write");
        let got = read(&path, 1000).expect("read");
        assert_eq!(got.message, message);
        assert_eq!(got.info.envelope.recipients, envelope().recipients);
        assert_eq!(got.uid, nix::unistd::geteuid().as_raw());
    }

    #[test]
    fn each_kind_of_bad_file_is_refused_with_its_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = render(&envelope(), b"x\r\n").expect("render");
        let mut cut = good.clone();
        cut.truncate(good.len() - 2);
        let mut flipped = good.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x20;
        let no_rcpt = render(
            &Envelope {
                recipients: Vec::new(),
                ..envelope()
            },
            b"x\r\n",
        )
        .expect("render");
        let big = render(&envelope(), &vec![b'a'; 2000]).expect("render");
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("garbage", b"hello world\n".to_vec(), "malformed"),
            ("empty", Vec::new(), "malformed"),
            ("truncated", cut, "malformed"),
            ("flipped bit", flipped, "malformed"),
            ("no recipient", no_rcpt, "malformed"),
            ("over the limit", big, "too large"),
        ];
        for (what, bytes, want) in cases {
            let path = dir.path().join(what.replace(' ', "_"));
            std::fs::write(&path, bytes).expect("write");
            match read(&path, 1000) {
                Err(Problem::Refused(why)) => assert!(why.starts_with(want), "{what}: {why}"),
                other => panic!("{what}: {other:?}"),
            }
        }
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("garbage", &link).expect("symlink");
        assert!(
            matches!(read(&link, 1000), Err(Problem::Refused(why)) if why == "not a regular file")
        );
        assert!(matches!(
            read(&dir.path().join("absent"), 1000),
            Err(Problem::Io(_))
        ));
    }

    #[test]
    fn names() {
        let partial = partial_name();
        assert!(partial.starts_with('.'));
        assert!(!is_complete_name(&partial));
        assert!(is_complete_name(&partial[1..]));
        assert!(!is_complete_name(".wake"));
        assert_eq!(
            wake_socket(Path::new("/var/spool/skein")),
            Path::new("/var/spool/skein/maildrop/.wake")
        );
    }
}
