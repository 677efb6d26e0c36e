//! Recycled files: `free/`.
//!
//! Every message costs the spool two files (its message file and its
//! control file) that are created, then removed when it is finished. At a
//! high message rate that churn is expensive on a file system in its own
//! right: on ext4 without a journal in particular, allocating an inode
//! skips every inode freed in the last few seconds, so that a create scans
//! further the more files were recently removed, and holds the directory's
//! lock meanwhile. So the files of finished messages are not removed but
//! *retired* into `free/`, and new message and control files are made by
//! *taking* a retired file and truncating it, when one is there.
//!
//! Reusing an inode is only safe once no directory can still name it after
//! a power loss. Hence the protocol (docs/spool.md, "Recycled files"):
//!
//! 1. **Retire** (the scheduler, removing a finished message): rename
//!    `transport/<id>` to `free/.<id>.c` and `queue/<id>` to `free/.<id>.m`.
//!    A leading dot means *staged*: nobody takes it yet.
//! 2. **Publish** (the scheduler, for all its staged files at once, when it
//!    has nothing else to do or has staged many): fsync every directory
//!    the staged files came from, so that their old names are gone for
//!    good, then rename each staged file to its published name
//!    (`free/<id>.c`, `free/<id>.m`).
//! 3. **Take** (a writer that needs a new file): rename a published file
//!    of the right kind to its own temporary name in `tmp/`, open it, check
//!    that its link count is 1 (it has no other name: after a power loss and
//!    a file-system check, a stale `free/` entry could otherwise alias a
//!    live file), write the new content over the old and cut the file to
//!    its new length. Any failure falls back to creating a new file, so the
//!    pool only ever saves work. Before the file is committed
//!    (renamed to its visible name), `free/` is fsynced, so that no power
//!    loss can bring back its old name in `free/` once something durable
//!    refers to it.
//!
//! The pool is bounded: the scheduler trims `free/` to [`POOL_MAX`] files.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::SpoolError;
use crate::durable::{self, GroupSync, fsync_dir, rename_noreplace};

/// Most files kept in `free/`; the scheduler removes the excess.
pub const POOL_MAX: usize = 4096;

/// After finding no published file of a kind, a writer lists `free/` again
/// no sooner than this: an empty pool must not cost a directory read per
/// new file.
const RELIST_AFTER: Duration = Duration::from_millis(100);

/// What a recycled file was, and will be again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A message file (`incoming/`, `queue/`).
    Message,
    /// A control file (`transport/`).
    Control,
}

impl Kind {
    fn suffix(self) -> &'static str {
        match self {
            Kind::Message => ".m",
            Kind::Control => ".c",
        }
    }

    fn of(name: &str) -> Option<Kind> {
        if name.starts_with('.') {
            None
        } else if name.ends_with(".m") {
            Some(Kind::Message)
        } else if name.ends_with(".c") {
            Some(Kind::Control)
        } else {
            None
        }
    }
}

/// Published names of one kind this process has seen in `free/` and not
/// yet tried, and when it last looked.
#[derive(Debug, Default)]
struct Seen {
    names: Vec<String>,
    /// When a listing last found none of the kind (cleared by a listing
    /// that finds some).
    found_none: Option<Instant>,
}

/// One process's view of `free/`.
#[derive(Debug)]
pub(crate) struct Pool {
    dir: PathBuf,
    /// Group commit of the takes of this process's threads.
    taken: GroupSync,
    messages: Mutex<Seen>,
    controls: Mutex<Seen>,
    /// Staged files of this process: their published name, and the
    /// directory they were retired from.
    staged: Mutex<Vec<(String, PathBuf)>>,
}

impl Pool {
    pub(crate) fn new(dir: PathBuf) -> Pool {
        Pool {
            taken: GroupSync::new(dir.clone()),
            dir,
            messages: Mutex::default(),
            controls: Mutex::default(),
            staged: Mutex::default(),
        }
    }

    fn seen(&self, kind: Kind) -> &Mutex<Seen> {
        match kind {
            Kind::Message => &self.messages,
            Kind::Control => &self.controls,
        }
    }

    /// Step 1: stages `path` (a file of a finished message, named `id` in
    /// its directory) for reuse. On any failure the file is removed
    /// instead, as it would be without a pool.
    pub(crate) fn retire(&self, path: &Path, id: &str, kind: Kind) -> Result<(), SpoolError> {
        let published = format!("{id}{}", kind.suffix());
        let staged = self.dir.join(format!(".{published}"));
        match rename_noreplace(path, &staged) {
            Ok(true) => {
                let from = durable::parent(path).to_path_buf();
                lock(&self.staged).push((published, from));
                Ok(())
            }
            Ok(false) | Err(_) => {
                std::fs::remove_file(path).map_err(|e| SpoolError::io("unlink", path, e))
            }
        }
    }

    /// How many files wait to be published.
    pub(crate) fn staged(&self) -> usize {
        lock(&self.staged).len()
    }

    /// Step 2: makes the retirement of every staged file durable, then
    /// publishes them. Returns how many were published. If a directory
    /// cannot be synced, nothing is published (the files stay staged and
    /// are tried again next time).
    pub(crate) fn publish(&self) -> Result<usize, SpoolError> {
        let staged = std::mem::take(&mut *lock(&self.staged));
        if staged.is_empty() {
            return Ok(0);
        }
        let dirs: HashSet<&PathBuf> = staged.iter().map(|(_, from)| from).collect();
        for dir in dirs {
            if let Err(e) = fsync_dir(dir) {
                lock(&self.staged).extend(staged);
                return Err(e);
            }
        }
        let mut published = 0;
        for (name, _) in &staged {
            let from = self.dir.join(format!(".{name}"));
            let to = self.dir.join(name);
            match rename_noreplace(&from, &to) {
                Ok(true) => published += 1,
                // Should not happen (ids are unique): drop the file.
                Ok(false) | Err(_) => {
                    let _ = std::fs::remove_file(&from);
                }
            }
        }
        // This process's writers need not wait out RELIST_AFTER to see
        // them.
        lock(&self.messages).found_none = None;
        lock(&self.controls).found_none = None;
        Ok(published)
    }

    /// Makes the taking of files durable (fsync `free/`).
    pub(crate) fn sync(&self) -> Result<(), SpoolError> {
        self.taken.sync()
    }

    /// Step 3: takes a published file of `kind`, renamed to `tmp` (a name
    /// of the caller's in `tmp/`), or `None` if there is none to take (the
    /// caller then creates a new file). The file still holds its old
    /// content: the caller writes from offset 0 and then cuts the file to
    /// the length it wrote (`set_len`). Before anything durable refers to
    /// it (before the rename that commits it) the caller calls
    /// [`Pool::sync`]: until then `free/` may still name it after a power
    /// loss.
    pub(crate) fn take(&self, kind: Kind, tmp: &Path) -> Option<File> {
        loop {
            let name = self.next_name(kind)?;
            let from = self.dir.join(&name);
            match rename_noreplace(&from, tmp) {
                Ok(true) => {}
                // Taken by another writer, or the tmp name is in use.
                Ok(false) | Err(_) => continue,
            }
            return match self.prepare(tmp) {
                Ok(file) => Some(file),
                Err(_) => {
                    // Unusable (a second name, no permission): out of the
                    // pool with it.
                    let _ = std::fs::remove_file(tmp);
                    None
                }
            };
        }
    }

    fn prepare(&self, tmp: &Path) -> io::Result<File> {
        let file = std::fs::OpenOptions::new().write(true).open(tmp)?;
        if file.metadata()?.nlink() != 1 {
            return Err(io::Error::other("the file has another name"));
        }
        // Not truncated here: the new content is written over the old
        // (reusing its blocks, where a truncation would free them and the
        // writes allocate them again) and the writer cuts the file to its
        // new length before syncing it.
        Ok(file)
    }

    fn next_name(&self, kind: Kind) -> Option<String> {
        let mut seen = lock(self.seen(kind));
        if let Some(name) = seen.names.pop() {
            return Some(name);
        }
        if seen
            .found_none
            .is_some_and(|at| at.elapsed() < RELIST_AFTER)
        {
            return None;
        }
        seen.names = self
            .published()
            .ok()?
            .into_iter()
            .filter(|name| Kind::of(name) == Some(kind))
            .collect();
        seen.found_none = seen.names.is_empty().then(Instant::now);
        seen.names.pop()
    }

    /// The published names in `free/`.
    fn published(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            if let Some(name) = entry?.file_name().to_str()
                && Kind::of(name).is_some()
            {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    /// Brings `free/` back to at most `max` published files, and removes
    /// staged files that are not this process's (left by a scheduler that
    /// stopped before publishing them; only the scheduler stages, and only
    /// one runs). Returns how many files were removed.
    pub(crate) fn trim(&self, max: usize) -> Result<usize, SpoolError> {
        let ours: HashSet<String> = lock(&self.staged)
            .iter()
            .map(|(name, _)| format!(".{name}"))
            .collect();
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| SpoolError::io("read directory", &self.dir, e))?;
        let mut published = Vec::new();
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| SpoolError::io("read directory", &self.dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if Kind::of(&name).is_some() {
                published.push(name);
            } else if name.starts_with('.')
                && !ours.contains(&name)
                && std::fs::remove_file(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
        for name in published.iter().skip(max) {
            if std::fs::remove_file(self.dir.join(name)).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these lists inconsistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
