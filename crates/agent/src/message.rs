//! The one way an agent opens a job's message: verified first, so that no
//! agent sends or delivers a byte the sender did not write.

use std::fs::File;
use std::path::Path;

use skein_proto::{EnhancedCode, Job};
use skein_spool::SpoolError;

use crate::Delivery;

/// Why a job's message could not be opened for sending.
///
/// | variant | fault | what the agent does |
/// |---|---|---|
/// | [`Damaged`](Self::Damaged) | the spool: the file is not what the sender wrote (cut short, emptied, a changed byte, another format version, or missing) | sends nothing; reports [`Reporter::damaged`](crate::Reporter::damaged) |
/// | [`Unreadable`](Self::Unreadable) | this machine: an I/O error reading it | sends nothing; defers the recipients ([`MessageError::deferral`]) |
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageError {
    /// The file failed its checks: what was found.
    Damaged(String),
    /// The file could not be read: the system's error.
    Unreadable(String),
}

impl MessageError {
    /// The outcome for each recipient of an [`Unreadable`](Self::Unreadable)
    /// message (deferred 4.3.0), or of a damaged one when the agent cannot
    /// say `Damaged`.
    pub fn deferral(&self) -> Delivery {
        Delivery::deferred(EnhancedCode::SYSTEM_TROUBLE, self.to_string(), None)
    }
}

impl std::fmt::Display for MessageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageError::Damaged(why) => write!(f, "the message file is damaged: {why}"),
            MessageError::Unreadable(why) => write!(f, "cannot read the message file: {why}"),
        }
    }
}

impl std::error::Error for MessageError {}

/// Opens `job`'s message file and checks it against the job before any of
/// it is used (docs/agent-protocol.md, rule 6): the header must parse in
/// this format version and place the message at the job's offset with the
/// job's size, and the CRC-32 of the message bytes must match. Returns the
/// file positioned at the message's first byte; read exactly `job.size`
/// bytes from it.
///
/// Costs one extra sequential read of the file (from the page cache, as a
/// rule) per job; docs/spool.md, "What is checked where", has the figures.
/// A file damaged after this check and before the agent reads it again is
/// not caught here: the window is the time of one job.
pub fn open_message(job: &Job) -> Result<File, MessageError> {
    let path = Path::new(&job.message_path);
    skein_spool::open_verified(path, job.message_offset, job.size).map_err(|e| match e {
        SpoolError::Corrupt { reason, .. } => MessageError::Damaged(reason),
        e if e.is_not_found() => {
            MessageError::Damaged(format!("{} does not exist", path.display()))
        }
        e => MessageError::Unreadable(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{job, message_file};
    use skein_proto::ThreadKey;
    use std::io::Read;

    #[test]
    fn a_good_file_opens_at_the_message_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let (offset, size) = message_file(&path, b"Subject: x\r\n\r\nbody\r\n");
        let p = path.to_str().unwrap();
        let j = job(1, ThreadKey::new("smtp", "h"), p, offset, size, &["a@h"]);
        let mut bytes = Vec::new();
        open_message(&j).unwrap().read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, b"Subject: x\r\n\r\nbody\r\n");

        let mut damaged = std::fs::read(&path).unwrap();
        let last = damaged.len() - 3;
        damaged[last] ^= 1;
        std::fs::write(&path, &damaged).unwrap();
        match open_message(&j) {
            Err(MessageError::Damaged(why)) => assert!(why.contains("crc32"), "{why}"),
            other => panic!("expected Damaged, got {other:?}"),
        }
        std::fs::remove_file(&path).unwrap();
        match open_message(&j) {
            Err(MessageError::Damaged(why)) => assert!(why.contains("does not exist"), "{why}"),
            other => panic!("expected Damaged, got {other:?}"),
        }
        // A directory cannot be read as a file: an I/O error, not damage.
        let d = job(
            2,
            ThreadKey::new("smtp", "h"),
            dir.path().to_str().unwrap(),
            0,
            1,
            &["a@h"],
        );
        assert!(matches!(open_message(&d), Err(MessageError::Unreadable(_))));
    }
}
