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
//!   run/         sockets, locks and pid files of the running daemons,
//!                named by the `rendezvous` module
//!   free/        files of finished messages, kept for reuse (see `pool`)
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
pub mod drop;
pub mod durable;
mod error;
mod message;
mod pool;
mod queue_id;
pub mod rendezvous;
pub mod text;

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use control::{ControlFile, ControlRecipient, Journal, OutcomeKind, Record};
pub use durable::FileLock;
pub use error::SpoolError;
pub use message::{
    Envelope, MAX_HEADER, MessageInfo, MessageWriter, Recipient, open_verified, parse_header,
    read_header, read_message, render_file, render_file_at, verify_body, write_file,
};
pub use pool::{Kind as FileKind, POOL_MAX};
pub use queue_id::{InvalidQueueId, QUEUE_ID_LEN, QueueId};
pub use rendezvous::{Daemon, WAKE, Wakeable};
/// The types of envelope and journal fields, defined in `skein-mail` and
/// shared with the SMTP codec and the agent protocol. On disk they are
/// written as their text (`HDRS`, `8BITMIME`, `SUCCESS,DELAY`, `5.1.1`).
pub use skein_mail::{BodyType, EnhancedCode, Notify, Ret};

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
    /// `run/`: sockets, locks and pid files (named in [`rendezvous`]).
    Run,
    /// `free/`: files of finished messages kept for reuse.
    Free,
    /// `maildrop/`: submissions of local users who may not write the
    /// spool, written by the setgid `skein-postdrop` and picked up by the
    /// router ([`drop`]).
    Maildrop,
}

impl Area {
    /// Every area, in creation order.
    pub const ALL: [Area; 8] = [
        Area::Tmp,
        Area::Incoming,
        Area::Queue,
        Area::Transport,
        Area::Corrupt,
        Area::Run,
        Area::Free,
        Area::Maildrop,
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
            Area::Free => "free",
            Area::Maildrop => "maildrop",
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

/// The mode of the spool's areas: its owner (the skein account) and its
/// group (operators in the skein group), nobody else.
pub const DIR_MODE: u32 = 0o750;

/// The mode of the spool's root and of `run/` when skein creates them:
/// as [`DIR_MODE`], and others may pass through (not list) to reach the
/// control socket, which is open to every local user for `mailq`
/// ([`rendezvous::CONTROL_SOCKET_MODE`]). Every file others could name
/// there is either a socket meant for them or not readable by them.
pub const RUN_DIR_MODE: u32 = 0o751;

/// The mode of every file skein writes into the spool — message files,
/// control files, `.why` notes, the scheduler's lock: written by the
/// account alone (every daemon runs as it), readable by its group for an
/// operator's inspection, not by others. Set at creation, whatever the
/// umask of whoever started skein.
pub const FILE_MODE: u32 = 0o640;

/// A spool directory tree.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
    pool: std::sync::Arc<pool::Pool>,
    incoming: std::sync::Arc<durable::GroupSync>,
}

impl Spool {
    /// Opens the spool at `root`, creating any missing directory: the
    /// root and `run/` mode [`RUN_DIR_MODE`], the areas [`DIR_MODE`]
    /// (exactly, whatever the umask); existing ones are left as they are.
    pub fn open(root: impl Into<PathBuf>) -> Result<Spool, SpoolError> {
        let root = root.into();
        let pool = std::sync::Arc::new(pool::Pool::new(root.join(Area::Free.dir_name())));
        let incoming = std::sync::Arc::new(durable::GroupSync::new(
            root.join(Area::Incoming.dir_name()),
        ));
        let spool = Spool {
            root,
            pool,
            incoming,
        };
        if let Some(parent) = spool.root.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .create(parent)
                .map_err(|e| SpoolError::io("create directory", parent, e))?;
        }
        let root_dir = spool.root.clone();
        let wanted =
            std::iter::once((root_dir, RUN_DIR_MODE)).chain(Area::ALL.into_iter().map(|area| {
                let mode = if area == Area::Run {
                    RUN_DIR_MODE
                } else {
                    DIR_MODE
                };
                (spool.dir(area), mode)
            }));
        for (dir, mode) in wanted {
            match std::fs::DirBuilder::new().mode(mode).create(&dir) {
                // Created here: the exact mode, whatever the umask.
                Ok(()) => std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| SpoolError::io("chmod", &dir, e))?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
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
        MessageWriter::create(
            &self.dir(Area::Tmp),
            &self.dir(Area::Incoming),
            envelope,
            Some(&self.pool),
            Some(&self.incoming),
        )
    }

    /// Replaces the message file `incoming/<id>` of `info` by one with
    /// the same id and arrival, `envelope` (the old one, or its body type
    /// changed) and the message `message` (the router's signed copy, or
    /// what its content filters made), with `info`'s marks (`quarantine`,
    /// `filtered`). The new file is written in `tmp/`, fsynced,
    /// locked, and renamed over the old name; the returned lock is on the
    /// new file, taken before anyone could see it. The rename is not yet
    /// durable: the caller fsyncs `incoming/` ([`fsync_dir`]) before it
    /// writes anything that relies on the new file (its control file).
    /// A crash before the rename leaves the old file and a stale
    /// temporary file, removed at the next start.
    pub fn replace_incoming(
        &self,
        info: &MessageInfo,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<(MessageInfo, FileLock), SpoolError> {
        use std::io::Write;
        let bytes = message::render_file_at(
            &info.id,
            info.arrival_micros,
            envelope,
            message,
            info.quarantine.as_deref(),
            info.filtered,
        )?;
        let tmp = self
            .dir(Area::Tmp)
            .join(format!("{}.{}.new", std::process::id(), info.id));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .map_err(|e| SpoolError::io("create", &tmp, e))?;
        let written = file
            .write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| SpoolError::io("write", &tmp, e));
        let result = written.and_then(|()| {
            let target = self.path(Area::Incoming, &info.id);
            let reader = std::fs::File::open(&tmp).map_err(|e| SpoolError::io("open", &tmp, e))?;
            let lock = FileLock::try_lock(reader, &target)?;
            std::fs::rename(&tmp, &target).map_err(|e| SpoolError::io("rename", &tmp, e))?;
            let (new_info, _) = read_header(&target)?;
            Ok((new_info, lock))
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
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
        self.create_controls(&[control])
            .pop()
            .unwrap_or_else(|| Err(SpoolError::Invalid("no control file written".into())))
    }

    /// [`Spool::create_control`] for many messages as one group commit:
    /// every file is written to `tmp/`, all of them are made durable
    /// together (their fsyncs issued at once, so the file system commits
    /// them in one go), then each is renamed into `transport/` without
    /// replacing anything, and `transport/` is fsynced once for them all.
    /// One result per control file, in order; a control file is placed
    /// (`Ok(true)`) only once that last fsync has succeeded.
    pub fn create_controls(&self, controls: &[&ControlFile]) -> Vec<Result<bool, SpoolError>> {
        let mut results = Vec::with_capacity(controls.len());
        let mut written = Vec::new();
        let mut recycled = false;
        for control in controls {
            let tmp = control
                .render()
                .and_then(|text| self.write_tmp(&control.id, text.as_bytes()));
            match tmp {
                Ok((file, tmp, from_pool)) => {
                    recycled |= from_pool;
                    written.push((results.len(), file, tmp));
                    results.push(Ok(false));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let files: Vec<&std::fs::File> = written.iter().map(|(_, file, _)| file).collect();
        let mut synced = durable::sync_files(&files);
        if recycled && let Err(e) = self.pool.sync() {
            let why = e.to_string();
            synced = synced
                .into_iter()
                .map(|_| Err(io::Error::other(why.clone())))
                .collect();
        }
        let mut placed = Vec::new();
        for ((index, _, tmp), sync) in written.into_iter().zip(synced) {
            let dest = self.path(Area::Transport, &controls[index].id);
            let outcome = sync
                .map_err(|e| SpoolError::io("fsync", &tmp, e))
                .and_then(|()| durable::rename_noreplace(&tmp, &dest));
            match outcome {
                Ok(true) => placed.push(index),
                Ok(false) => {
                    let _ = std::fs::remove_file(&tmp);
                    results[index] = Ok(false);
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    results[index] = Err(e);
                }
            }
        }
        if !placed.is_empty() {
            let dir = self.dir(Area::Transport);
            match durable::fsync_dir(&dir) {
                Ok(()) => placed.iter().for_each(|&i| results[i] = Ok(true)),
                Err(e) => {
                    // The names may or may not survive a power loss: report
                    // failure, and leave them for the next attempt, which
                    // finds them (state S1') and keeps them.
                    let why = e.to_string();
                    for &i in &placed {
                        results[i] = Err(SpoolError::Invalid(format!(
                            "control file {} placed but not made durable: {why}",
                            controls[i].id
                        )));
                    }
                }
            }
        }
        results
    }

    /// Retires the files of a finished message for reuse (step 1 of the
    /// protocol in docs/spool.md, "Recycled files"): its control file
    /// first, then its message file, each renamed into `free/` (or removed
    /// if that fails). Like a removal, this is not synced: a power loss
    /// may bring the message back, finished, and the scheduler then
    /// removes it again.
    pub fn retire(&self, control: &Path, message: &Path, id: &str) -> Result<(), SpoolError> {
        self.pool.retire(control, id, FileKind::Control)?;
        self.pool.retire(message, id, FileKind::Message)
    }

    /// How many retired files wait for [`Spool::publish_retired`].
    pub fn retired(&self) -> usize {
        self.pool.staged()
    }

    /// Makes the files retired by this process reusable (step 2): fsyncs
    /// the directories they left, then publishes them in `free/`. Returns
    /// how many were published.
    pub fn publish_retired(&self) -> Result<usize, SpoolError> {
        self.pool.publish()
    }

    /// Brings `free/` back to at most [`POOL_MAX`] files and removes files
    /// left staged by an earlier process. Returns how many were removed.
    pub fn trim_free(&self) -> Result<usize, SpoolError> {
        self.pool.trim(POOL_MAX)
    }

    /// Replaces a control file atomically (to drop a torn record or to
    /// compact its journal).
    pub fn rewrite_control(&self, control: &ControlFile) -> Result<(), SpoolError> {
        let dest = self.path(Area::Transport, &control.id);
        let (file, tmp, recycled) = self.write_tmp(&control.id, control.render()?.as_bytes())?;
        let synced = file
            .sync_all()
            .map_err(|e| SpoolError::io("fsync", &tmp, e))
            .and_then(|()| if recycled { self.pool.sync() } else { Ok(()) });
        if let Err(e) = synced {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        durable::rename_durable(&tmp, &dest)
    }

    /// Writes `bytes` to a file in `tmp/` — a recycled one if the pool
    /// has one (the third value says so) — not yet synced: the caller
    /// syncs the file (and, for a recycled one, `free/`) before renaming it
    /// anywhere.
    fn write_tmp(
        &self,
        id: &QueueId,
        bytes: &[u8],
    ) -> Result<(std::fs::File, PathBuf, bool), SpoolError> {
        use std::io::Write;
        let tmp = self
            .dir(Area::Tmp)
            .join(format!("{}.{id}.ctl", std::process::id()));
        let (mut f, recycled) = match self.pool.take(FileKind::Control, &tmp) {
            Some(file) => (file, true),
            None => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(FILE_MODE)
                    .open(&tmp)
                    .map_err(|e| SpoolError::io("create", &tmp, e))?;
                (f, false)
            }
        };
        // A recycled file still has its old content: cut it to the new.
        let written = f.write_all(bytes).and_then(|()| {
            if recycled {
                f.set_len(bytes.len() as u64)
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(SpoolError::io("write", &tmp, e));
        }
        Ok((f, tmp, recycled))
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
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&why)
            .and_then(|mut f| {
                std::io::Write::write_all(
                    &mut f,
                    format!("{}: {reason}\n", path.display()).as_bytes(),
                )
            })
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

    /// The scheduler's control socket, `run/scheduler.sock`
    /// ([`rendezvous::scheduler_socket`]).
    pub fn scheduler_socket(&self) -> PathBuf {
        rendezvous::scheduler_socket(&self.root)
    }

    /// The scheduler's lock, `run/scheduler.lock`
    /// ([`rendezvous::scheduler_lock`]).
    pub fn scheduler_lock(&self) -> PathBuf {
        rendezvous::scheduler_lock(&self.root)
    }

    /// The pid file of `daemon`, `run/<name>.pid`
    /// ([`rendezvous::pid_file`]).
    pub fn pid_file(&self, daemon: Daemon) -> PathBuf {
        rendezvous::pid_file(&self.root, daemon)
    }

    /// The wake-up socket of `daemon`, `run/<name>.wake`
    /// ([`rendezvous::wake_socket`]).
    pub fn wake_socket(&self, daemon: Wakeable) -> PathBuf {
        rendezvous::wake_socket(&self.root, daemon)
    }

    /// Sends the one-byte wake-up datagram ([`WAKE`]) to `daemon`'s
    /// wake-up socket. Best effort: a daemon that is not running is not an
    /// error, since it scans its directory when it starts; and it never
    /// blocks, since a daemon that is not draining its socket must never
    /// stall a submission.
    pub fn wake(&self, daemon: Wakeable) {
        rendezvous::send_wake(&self.wake_socket(daemon));
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
    fn control_files_are_created_as_one_batch() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        let controls: Vec<ControlFile> = (0..40)
            .map(|i| {
                let mut c = control::tests::sample();
                c.id = QueueId::from_parts(1_764_377_978_123_456 + i, 42, i);
                c
            })
            .collect();
        // One of them exists already: it is kept, the others are placed.
        let mut earlier = controls[7].clone();
        earlier.records.clear();
        assert!(s.create_control(&earlier).unwrap());
        let refs: Vec<&ControlFile> = controls.iter().collect();
        let results = s.create_controls(&refs);
        assert_eq!(results.len(), 40);
        for (i, (result, control)) in results.into_iter().zip(&controls).enumerate() {
            assert_eq!(result.unwrap(), i != 7, "control file {i}");
            let (back, torn) = ControlFile::read(&s.path(Area::Transport, &control.id)).unwrap();
            assert!(!torn);
            assert_eq!(
                back,
                if i == 7 {
                    earlier.clone()
                } else {
                    control.clone()
                }
            );
        }
        assert!(tmp_is_empty(&s));
        assert!(s.create_controls(&[]).is_empty());
    }

    fn tmp_is_empty(s: &Spool) -> bool {
        std::fs::read_dir(s.dir(Area::Tmp))
            .unwrap()
            .next()
            .is_none()
    }

    fn inode(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().ino()
    }

    fn free_names(s: &Spool) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(s.dir(Area::Free))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// Queues a message with a long body and a long control file, as the
    /// router leaves them.
    fn queued(s: &Spool, body: &[u8]) -> (QueueId, PathBuf, PathBuf) {
        let mut w = s.create_incoming(&env()).unwrap();
        w.write_message(body).unwrap();
        let id = w.commit().unwrap();
        let message = s.path(Area::Queue, &id);
        std::fs::rename(s.path(Area::Incoming, &id), &message).unwrap();
        let mut control = control::tests::sample();
        control.id = id.clone();
        assert!(s.create_control(&control).unwrap());
        let control_path = s.path(Area::Transport, &id);
        (id, control_path, message)
    }

    #[test]
    fn retired_files_are_reused_only_once_published() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        let long = vec![b'x'; 20_000];
        let (id, control, message) = queued(&s, &long);
        let (control_ino, message_ino) = (inode(&control), inode(&message));
        s.retire(&control, &message, id.as_str()).unwrap();
        assert!(!control.exists() && !message.exists());
        assert_eq!(s.retired(), 2);
        assert_eq!(
            free_names(&s),
            vec![format!(".{id}.c"), format!(".{id}.m")],
            "staged, not yet published"
        );

        // Staged files are not taken: a new message gets a new file.
        let mut w = s.create_incoming(&env()).unwrap();
        w.write_message(b"short\r\n").unwrap();
        let staged_time = w.commit().unwrap();
        assert_ne!(inode(&s.path(Area::Incoming, &staged_time)), message_ino);

        assert_eq!(s.publish_retired().unwrap(), 2);
        assert_eq!(s.retired(), 0);
        assert_eq!(free_names(&s), vec![format!("{id}.c"), format!("{id}.m")]);

        // Published: the next message and control file reuse them, cut to
        // their new, shorter length.
        let mut w = s.create_incoming(&env()).unwrap();
        w.write_message(b"Subject: short\r\n\r\nbody\r\n").unwrap();
        let new_id = w.commit().unwrap();
        let path = s.path(Area::Incoming, &new_id);
        assert_eq!(inode(&path), message_ino);
        let (info, bytes) = read_message(&path).unwrap();
        assert_eq!(bytes, b"Subject: short\r\n\r\nbody\r\n");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            info.offset + info.size
        );
        let mut next = control::tests::sample();
        next.id = new_id.clone();
        next.records.clear();
        assert!(s.create_control(&next).unwrap());
        let next_path = s.path(Area::Transport, &new_id);
        assert_eq!(inode(&next_path), control_ino);
        let (back, torn) = ControlFile::read(&next_path).unwrap();
        assert_eq!((back, torn), (next, false));
        assert!(free_names(&s).is_empty());
        assert!(tmp_is_empty(&s));
    }

    #[test]
    fn another_process_sees_newly_published_files_at_once() {
        let d = tempfile::tempdir().unwrap();
        // Two handles on one spool stand for two processes: the scheduler
        // (publishing) and a writer (taking), each with its own pool view.
        let scheduler = Spool::open(d.path()).unwrap();
        let writer = Spool::open(d.path()).unwrap();
        for round in 0..3 {
            let (id, control, message) = queued(&scheduler, b"text\r\n");
            let ino = inode(&message);
            scheduler.retire(&control, &message, id.as_str()).unwrap();
            assert_eq!(scheduler.publish_retired().unwrap(), 2);
            // The writer's last look found a file, so it looks again now
            // rather than waiting out the empty-pool pause.
            let mut w = writer.create_incoming(&env()).unwrap();
            w.write_message(b"next\r\n").unwrap();
            let new_id = w.commit().unwrap();
            let path = writer.path(Area::Incoming, &new_id);
            assert_eq!(inode(&path), ino, "round {round}");
            std::fs::remove_file(path).unwrap();
        }
    }

    #[test]
    fn a_free_file_with_a_second_name_is_never_reused() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        let (id, control, message) = queued(&s, b"text\r\n");
        s.retire(&control, &message, id.as_str()).unwrap();
        s.publish_retired().unwrap();
        // As after a power loss and a file-system check: the free file's
        // inode is also a live message's.
        let live = d.path().join("live");
        std::fs::hard_link(s.dir(Area::Free).join(format!("{id}.m")), &live).unwrap();
        let before = std::fs::read(&live).unwrap();
        let mut w = s.create_incoming(&env()).unwrap();
        w.write_message(b"other\r\n").unwrap();
        let new_id = w.commit().unwrap();
        assert_ne!(inode(&s.path(Area::Incoming, &new_id)), inode(&live));
        assert_eq!(std::fs::read(&live).unwrap(), before, "left alone");
        assert_eq!(
            std::fs::metadata(&live).unwrap().nlink(),
            1,
            "its free name is gone"
        );
        assert_eq!(free_names(&s), vec![format!("{id}.c")]);
    }

    #[test]
    fn the_pool_is_trimmed_and_stale_staged_files_removed() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        // This process's own staged files: kept.
        let (id, control, message) = queued(&s, b"text\r\n");
        s.retire(&control, &message, id.as_str()).unwrap();
        let free = s.dir(Area::Free);
        for i in 0..(POOL_MAX + 10) {
            std::fs::write(free.join(format!("{i:019}.m")), "").unwrap();
        }
        // Left staged by a scheduler that stopped: removed.
        std::fs::write(free.join(".0000000000000000001.c"), "").unwrap();
        assert_eq!(s.trim_free().unwrap(), 11);
        let names = free_names(&s);
        assert_eq!(names.len(), POOL_MAX + 2);
        assert!(names.contains(&format!(".{id}.c")) && names.contains(&format!(".{id}.m")));
        assert_eq!(s.publish_retired().unwrap(), 2);
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
        assert!(tmp_is_empty(&s));
    }

    #[test]
    fn the_run_names_and_the_wake_up() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        // The methods name what the free functions name.
        let root = d.path();
        assert_eq!(s.scheduler_socket(), rendezvous::scheduler_socket(root));
        assert_eq!(s.scheduler_lock(), rendezvous::scheduler_lock(root));
        for daemon in Daemon::ALL {
            assert_eq!(s.pid_file(daemon), rendezvous::pid_file(root, daemon));
        }
        let path = s.wake_socket(Wakeable::Router);
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        s.wake(Wakeable::Router);
        s.wake(Wakeable::Router);
        let mut buf = [0u8; 8];
        for _ in 0..2 {
            let n = listener.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[WAKE]);
        }
        assert!(listener.recv(&mut buf).is_err(), "nothing else arrived");
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
