//! # skein-spool — the durable queue on disk
//!
//! One directory tree holds every message skein has accepted and not yet
//! finished with. This crate owns its layout, its file formats, and the
//! only operations allowed on it; `docs/spool.md` describes the states and
//! transitions and argues why each one is crash-safe.
//!
//! ```text
//! <spool>/
//!   tmp/         files being written: "<pid>.<queue id>" (never read by anyone)
//!   incoming/    accepted messages not yet routed: envelope + message
//!   queue/       routed message files (same format as incoming/)
//!   transport/   control files: routed recipients + outcome journal
//!   corrupt/     files set aside because they failed their checks
//!   run/         sockets, locks and pid files of the running daemons
//! ```
//!
//! Every transition into a visible state is: write into `tmp/`, `fsync`
//! the file, `rename` it (never replacing anything) into place, `fsync` the
//! directory. So a reader never sees a partial file under a visible name,
//! and a crash leaves at worst a stale file in `tmp/`, removed at the next
//! start by [`Spool::clean_stale_tmp`].
//!
//! Privilege: the library itself does nothing beyond the file operations
//! its caller asks for, with the caller's privileges. On failure it returns
//! a [`SpoolError`] saying whose fault it is: a local resource (retry), a
//! corrupt file (set it aside with [`Spool::quarantine`]), or a caller bug.

mod control;
pub mod durable;
mod error;
mod message;
mod queue_id;
pub mod text;

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use control::{ControlFile, ControlRecipient, Journal, OutcomeKind, Record};
pub use durable::FileLock;
pub use error::SpoolError;
pub use message::{
    BodyType, Envelope, MAX_HEADER, MessageInfo, MessageWriter, Recipient, Ret, parse_header,
    read_header, read_message, verify_body,
};
pub use queue_id::{InvalidQueueId, QUEUE_ID_LEN, QueueId};

/// The states a file can be in, named after their directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// `tmp/`: being written.
    Tmp,
    /// `incoming/`: accepted, not yet routed.
    Incoming,
    /// `queue/`: routed message files.
    Queue,
    /// `transport/`: control files.
    Transport,
    /// `corrupt/`: set aside.
    Corrupt,
    /// `run/`: sockets and locks.
    Run,
}

impl Area {
    /// Every area, in creation order.
    pub const ALL: [Area; 6] = [
        Area::Tmp,
        Area::Incoming,
        Area::Queue,
        Area::Transport,
        Area::Corrupt,
        Area::Run,
    ];

    /// The directory name.
    pub fn dir_name(self) -> &'static str {
        match self {
            Area::Tmp => "tmp",
            Area::Incoming => "incoming",
            Area::Queue => "queue",
            Area::Transport => "transport",
            Area::Corrupt => "corrupt",
            Area::Run => "run",
        }
    }
}

/// What [`Spool::clean_stale_tmp`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanReport {
    /// Temporary files removed (their writer is gone).
    pub removed: Vec<PathBuf>,
    /// Temporary files kept (their writer may still be running).
    pub kept: usize,
}

/// A temporary file older than this is removed even if a process with its
/// writer's pid exists (that pid was reused: no writer takes a day).
pub const STALE_TMP_AGE: Duration = Duration::from_secs(24 * 3600);

/// A spool directory tree.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
}

impl Spool {
    /// Opens the spool at `root`, creating any missing directory (mode
    /// 0750; `run/` 0750 too — the control socket sets its own mode).
    pub fn open(root: impl Into<PathBuf>) -> Result<Spool, SpoolError> {
        let root = root.into();
        let spool = Spool { root };
        for area in Area::ALL {
            let dir = spool.dir(area);
            match std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(&dir)
            {
                Ok(()) => {}
                Err(e) => return Err(SpoolError::io("create directory", dir, e)),
            }
            if !dir.is_dir() {
                return Err(SpoolError::io(
                    "open directory",
                    &dir,
                    io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
                ));
            }
        }
        Ok(spool)
    }

    /// The spool's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of an area.
    pub fn dir(&self, area: Area) -> PathBuf {
        self.root.join(area.dir_name())
    }

    /// The path of `id` in `area`.
    pub fn path(&self, area: Area, id: &QueueId) -> PathBuf {
        self.dir(area).join(id.as_str())
    }

    /// Starts writing a new message into `incoming/`.
    pub fn create_incoming(&self, envelope: &Envelope) -> Result<MessageWriter, SpoolError> {
        if envelope.recipients.is_empty() {
            return Err(SpoolError::Invalid("a message needs recipients".into()));
        }
        MessageWriter::create(&self.dir(Area::Tmp), &self.dir(Area::Incoming), envelope)
    }

    /// The queue ids in an area, oldest first. Names that are not queue
    /// ids are reported by `on_stray` and skipped (they are never deleted
    /// here: an administrator may have put them there).
    pub fn list(
        &self,
        area: Area,
        mut on_stray: impl FnMut(&Path),
    ) -> Result<Vec<QueueId>, SpoolError> {
        let dir = self.dir(area);
        let mut ids = Vec::new();
        let entries =
            std::fs::read_dir(&dir).map_err(|e| SpoolError::io("read directory", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| SpoolError::io("read directory", &dir, e))?;
            match entry.file_name().to_str().map(str::parse::<QueueId>) {
                Some(Ok(id)) => ids.push(id),
                _ => on_stray(&entry.path()),
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Writes a new control file into `transport/` atomically and durably.
    /// Returns `Ok(false)` (changing nothing) if one already exists for
    /// that id: a router that crashed after writing it must not write a
    /// second one.
    pub fn create_control(&self, control: &ControlFile) -> Result<bool, SpoolError> {
        let dest = self.path(Area::Transport, &control.id);
        let tmp = self.write_tmp(&control.id, control.render()?.as_bytes())?;
        let placed = durable::rename_noreplace(&tmp, &dest)?;
        if placed {
            durable::fsync_dir(&self.dir(Area::Transport))?;
        } else {
            let _ = std::fs::remove_file(&tmp);
        }
        Ok(placed)
    }

    /// Replaces a control file atomically (to drop a torn record or to
    /// compact its journal).
    pub fn rewrite_control(&self, control: &ControlFile) -> Result<(), SpoolError> {
        let dest = self.path(Area::Transport, &control.id);
        let tmp = self.write_tmp(&control.id, control.render()?.as_bytes())?;
        durable::rename_durable(&tmp, &dest)
    }

    fn write_tmp(&self, id: &QueueId, bytes: &[u8]) -> Result<PathBuf, SpoolError> {
        use std::io::Write;
        let tmp = self
            .dir(Area::Tmp)
            .join(format!("{}.{id}.ctl", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| SpoolError::io("create", &tmp, e))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| SpoolError::io("write", &tmp, e))?;
        Ok(tmp)
    }

    /// Removes temporary files whose writer is gone: the pid in the name is
    /// not a live process, or the file is older than [`STALE_TMP_AGE`], or
    /// the name is not one we write. Safe to run while other processes
    /// write: a live writer's files are kept.
    pub fn clean_stale_tmp(&self) -> Result<CleanReport, SpoolError> {
        let dir = self.dir(Area::Tmp);
        let mut report = CleanReport::default();
        let entries =
            std::fs::read_dir(&dir).map_err(|e| SpoolError::io("read directory", &dir, e))?;
        let now = SystemTime::now();
        for entry in entries {
            let entry = entry.map_err(|e| SpoolError::io("read directory", &dir, e))?;
            let path = entry.path();
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.split_once('.'))
                .and_then(|(p, _)| p.parse::<i32>().ok());
            let old = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > STALE_TMP_AGE);
            let writer_alive = pid.is_some_and(|p| p > 0 && process_alive(p));
            if writer_alive && !old {
                report.kept += 1;
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed stale temporary file");
                    report.removed.push(path);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(SpoolError::io("unlink", path, e)),
            }
        }
        if !report.removed.is_empty() {
            durable::fsync_dir(&dir)?;
        }
        Ok(report)
    }

    /// Moves a corrupt file out of the way into `corrupt/` (as
    /// `<area>.<name>`, with a `<area>.<name>.why` file saying why), logs
    /// it, and returns its new path. Never deletes anything.
    pub fn quarantine(&self, path: &Path, reason: &str) -> Result<PathBuf, SpoolError> {
        let area = path
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .unwrap_or("unknown");
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("unnamed");
        let corrupt = self.dir(Area::Corrupt);
        let mut dest = corrupt.join(format!("{area}.{name}"));
        let mut n = 1;
        while dest.exists() {
            dest = corrupt.join(format!("{area}.{name}.{n}"));
            n += 1;
        }
        let why = dest.with_file_name(format!(
            "{}.why",
            dest.file_name().and_then(|n| n.to_str()).unwrap_or("x")
        ));
        std::fs::write(&why, format!("{}: {reason}\n", path.display()))
            .map_err(|e| SpoolError::io("write", &why, e))?;
        std::fs::rename(path, &dest).map_err(|e| SpoolError::io("rename", &dest, e))?;
        durable::fsync_dir(&corrupt)?;
        if let Some(p) = path.parent() {
            durable::fsync_dir(p)?;
        }
        tracing::error!(
            file = %path.display(),
            moved_to = %dest.display(),
            reason,
            "corrupt spool file set aside"
        );
        Ok(dest)
    }

    /// Sends a one-byte wake-up datagram to `run/<name>.wake` (the router
    /// listens there). Best effort: a daemon that is not running is not an
    /// error, since it scans its directory when it starts.
    pub fn kick(&self, name: &str) {
        let path = self.dir(Area::Run).join(format!("{name}.wake"));
        // Non-blocking: a router that is not draining its socket must never
        // stall a submission (the wake-up is only a hint).
        if let Ok(sock) = std::os::unix::net::UnixDatagram::unbound()
            && sock.set_nonblocking(true).is_ok()
        {
            let _ = sock.send_to(b"!", &path);
        }
    }

    /// The owner uid of the spool root (daemons check they run as it).
    pub fn owner(&self) -> Result<u32, SpoolError> {
        std::fs::metadata(&self.root)
            .map(|m| m.uid())
            .map_err(|e| SpoolError::io("stat", &self.root, e))
    }
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope {
        Envelope {
            sender: "a@b".into(),
            recipients: vec![Recipient::new("c@d")],
            ..Default::default()
        }
    }

    #[test]
    fn open_creates_layout() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path().join("spool")).unwrap();
        for a in Area::ALL {
            assert!(s.dir(a).is_dir(), "{a:?}");
        }
    }

    #[test]
    fn open_fails_clearly_when_a_directory_is_a_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("s")).unwrap();
        std::fs::write(d.path().join("s/incoming"), "").unwrap();
        let e = Spool::open(d.path().join("s")).unwrap_err();
        assert!(e.to_string().contains("incoming"), "{e}");
    }

    #[test]
    fn incoming_listing_is_in_arrival_order() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        let mut ids = Vec::new();
        for i in 0..5 {
            let mut w = s.create_incoming(&env()).unwrap();
            w.write_message(format!("m{i}").as_bytes()).unwrap();
            ids.push(w.commit().unwrap());
        }
        std::fs::write(s.dir(Area::Incoming).join("README"), "x").unwrap();
        let mut strays = 0;
        assert_eq!(s.list(Area::Incoming, |_| strays += 1).unwrap(), ids);
        assert_eq!(strays, 1);
    }

    #[test]
    fn stale_tmp_files_of_dead_writers_are_removed_live_ones_kept() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        // A writer that is us (alive), one whose pid cannot exist, and junk.
        let live = s.dir(Area::Tmp).join(format!("{}.X", std::process::id()));
        let dead = s.dir(Area::Tmp).join("2147483646.X");
        let junk = s.dir(Area::Tmp).join("junk");
        for p in [&live, &dead, &junk] {
            std::fs::write(p, "partial").unwrap();
        }
        let r = s.clean_stale_tmp().unwrap();
        assert_eq!(r.kept, 1);
        assert_eq!(r.removed.len(), 2);
        assert!(live.exists() && !dead.exists() && !junk.exists());
    }

    #[test]
    fn control_file_is_created_once() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        let text = control::tests::sample();
        assert!(s.create_control(&text).unwrap());
        let mut other = text.clone();
        other.records.clear();
        assert!(!s.create_control(&other).unwrap());
        let (back, _) = ControlFile::read(&s.path(Area::Transport, &text.id)).unwrap();
        assert_eq!(back, text);
        assert!(
            std::fs::read_dir(s.dir(Area::Tmp))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn quarantine_moves_and_explains() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        let p = s.dir(Area::Incoming).join("0000000000000000000");
        std::fs::write(&p, "garbage").unwrap();
        let dest = s.quarantine(&p, "bad magic").unwrap();
        assert!(!p.exists());
        assert_eq!(std::fs::read(&dest).unwrap(), b"garbage");
        let why = std::fs::read_to_string(dest.with_file_name(format!(
            "{}.why",
            dest.file_name().unwrap().to_str().unwrap()
        )))
        .unwrap();
        assert!(why.contains("bad magic"));
        // A second file of the same name does not overwrite the first.
        std::fs::write(&p, "again").unwrap();
        let dest2 = s.quarantine(&p, "again").unwrap();
        assert_ne!(dest, dest2);
        assert_eq!(std::fs::read(&dest).unwrap(), b"garbage");
    }
}
