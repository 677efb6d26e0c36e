//! The few file-system operations every spool transition is made of:
//! fsync of a directory, a rename that never replaces, and advisory locks.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::SpoolError;

/// Makes a directory's entries (a rename or unlink in it) durable.
pub fn fsync_dir(dir: &Path) -> Result<(), SpoolError> {
    let f = File::open(dir).map_err(|e| SpoolError::io("open directory", dir, e))?;
    f.sync_all()
        .map_err(|e| SpoolError::io("fsync directory", dir, e))
}

/// Group commit for one directory's fsync, shared by the threads of a
/// process: a thread that needs its changes to the directory (a rename
/// into it, say) made durable calls [`GroupSync::sync`]. If no fsync is
/// running it runs one; if one is running it waits for it and then for the
/// next one, which covers every change made before it started. So twenty
/// sessions committing at once cost one or two fsyncs of the directory, not
/// twenty in a row each holding the directory's lock.
#[derive(Debug)]
pub struct GroupSync {
    dir: PathBuf,
    state: std::sync::Mutex<GroupState>,
    done: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct GroupState {
    /// Tickets handed out (the last one).
    issued: u64,
    /// Every ticket up to this one is covered by a finished fsync.
    covered: u64,
    running: bool,
    /// Recent failed fsyncs: the tickets `(after, upto]` each covered.
    failures: std::collections::VecDeque<(u64, u64, String)>,
}

/// How many failed group fsyncs are remembered for their waiters.
const REMEMBERED_FAILURES: usize = 64;

impl GroupSync {
    /// Group commit for `dir`.
    pub fn new(dir: PathBuf) -> GroupSync {
        GroupSync {
            dir,
            state: std::sync::Mutex::default(),
            done: std::sync::Condvar::new(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns once an fsync of the directory that started after this call
    /// began has finished; its error if it failed. Blocks: call it from a
    /// thread that may block.
    pub fn sync(&self) -> Result<(), SpoolError> {
        let mut state = self.lock();
        state.issued += 1;
        let ticket = state.issued;
        loop {
            if state.covered >= ticket {
                return match state
                    .failures
                    .iter()
                    .find(|(after, upto, _)| *after < ticket && ticket <= *upto)
                {
                    None => Ok(()),
                    Some((_, _, why)) => Err(SpoolError::io(
                        "fsync directory",
                        &self.dir,
                        io::Error::other(why.clone()),
                    )),
                };
            }
            if state.running {
                state = self
                    .done
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            }
            // Run one fsync for every ticket issued so far.
            state.running = true;
            let after = state.covered;
            let upto = state.issued;
            drop(state);
            let result = fsync_dir(&self.dir);
            state = self.lock();
            state.running = false;
            state.covered = upto;
            if let Err(e) = result {
                if state.failures.len() == REMEMBERED_FAILURES {
                    state.failures.pop_front();
                }
                state.failures.push_back((after, upto, e.to_string()));
            }
            self.done.notify_all();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GroupState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Most threads [`sync_files`] uses at once.
const SYNC_THREADS: usize = 16;

/// Makes every file durable (`fsync`), the calls issued concurrently from
/// up to 16 threads: a journaling file system such as ext4 then commits
/// them together in a few journal transactions instead of one after the
/// other, so syncing a batch costs about as much as syncing one file. One
/// result per file, in order.
pub fn sync_files(files: &[&File]) -> Vec<io::Result<()>> {
    if files.len() <= 1 {
        return files.iter().map(|f| f.sync_all()).collect();
    }
    let threads = files.len().min(SYNC_THREADS);
    let mut results: Vec<Option<io::Result<()>>> = (0..files.len()).map(|_| None).collect();
    let chunk = |t: usize| {
        (t..files.len())
            .step_by(threads)
            .map(|i| (i, files[i].sync_all()))
            .collect::<Vec<_>>()
    };
    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(threads);
        for t in 0..threads {
            // A thread that cannot be started (resource limits) does its
            // share here instead: slower, never wrong.
            match std::thread::Builder::new().spawn_scoped(scope, move || chunk(t)) {
                Ok(handle) => handles.push(handle),
                Err(_) => chunk(t).into_iter().for_each(|(i, r)| results[i] = Some(r)),
            }
        }
        for handle in handles {
            match handle.join() {
                Ok(done) => done.into_iter().for_each(|(i, r)| results[i] = Some(r)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(io::Error::other("fsync not attempted"))))
        .collect()
}

fn cstring(path: &Path) -> Result<CString, SpoolError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| SpoolError::Invalid(format!("path with a NUL byte: {}", path.display())))
}

/// Renames `from` to `to` unless `to` exists. Returns `Ok(false)` when `to`
/// exists (nothing was changed). Uses `renameat2(RENAME_NOREPLACE)`; on a
/// file system without it, falls back to `link` + `unlink`, which gives the
/// same guarantee (a crash between the two leaves a stale temporary file,
/// which the start-up cleanup removes).
pub fn rename_noreplace(from: &Path, to: &Path) -> Result<bool, SpoolError> {
    let f = cstring(from)?;
    let t = cstring(to)?;
    // SAFETY: both pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EEXIST) => Ok(false),
        Some(libc::EINVAL) | Some(libc::ENOSYS) => match std::fs::hard_link(from, to) {
            Ok(()) => {
                std::fs::remove_file(from).map_err(|e| SpoolError::io("unlink", from, e))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(SpoolError::io("link", to, e)),
        },
        _ => Err(SpoolError::io("rename", to, err)),
    }
}

/// Renames `from` over `to` (replacing it) and makes it durable.
pub fn rename_durable(from: &Path, to: &Path) -> Result<(), SpoolError> {
    std::fs::rename(from, to).map_err(|e| SpoolError::io("rename", to, e))?;
    fsync_dir(parent(to))
}

pub(crate) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// An exclusive advisory lock (`flock`) on an open file, released when
/// dropped — or when the process dies, so a `kill -9` never leaves a stale
/// lock behind.
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// Takes the lock on an already open file without waiting.
    pub fn try_lock(file: File, path: &Path) -> Result<FileLock, SpoolError> {
        // SAFETY: flock on a valid, owned descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(FileLock {
                file,
                path: path.to_path_buf(),
            });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Err(SpoolError::Locked {
                path: path.to_path_buf(),
            })
        } else {
            Err(SpoolError::io("flock", path, err))
        }
    }

    /// Opens `path` read-only and locks it.
    pub fn open(path: &Path) -> Result<FileLock, SpoolError> {
        let file = File::open(path).map_err(|e| SpoolError::io("open", path, e))?;
        Self::try_lock(file, path)
    }

    /// Opens (creating it) `path` for writing and locks it: for lock files
    /// such as `run/scheduler.lock`.
    pub fn create(path: &Path) -> Result<FileLock, SpoolError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(crate::FILE_MODE)
            .open(path)
            .map_err(|e| SpoolError::io("create", path, e))?;
        Self::try_lock(file, path)
    }

    /// The locked file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The path it was opened under.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noreplace_refuses_existing_target() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        std::fs::write(&a, "A").unwrap();
        std::fs::write(&b, "B").unwrap();
        assert!(!rename_noreplace(&a, &b).unwrap());
        assert_eq!(std::fs::read(&b).unwrap(), b"B");
        std::fs::remove_file(&b).unwrap();
        assert!(rename_noreplace(&a, &b).unwrap());
        assert_eq!(std::fs::read(&b).unwrap(), b"A");
        assert!(!a.exists());
    }

    #[test]
    fn sync_files_reports_each_file_in_order() {
        let d = tempfile::tempdir().unwrap();
        // fsync of /dev/null fails (EINVAL): it marks where errors belong.
        let files: Vec<File> = (0..40)
            .map(|i| {
                if i % 13 == 5 {
                    File::open("/dev/null").unwrap()
                } else {
                    let p = d.path().join(format!("f{i}"));
                    std::fs::write(&p, "x").unwrap();
                    File::open(&p).unwrap()
                }
            })
            .collect();
        let refs: Vec<&File> = files.iter().collect();
        let results = sync_files(&refs);
        assert_eq!(results.len(), 40);
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.is_err(), i % 13 == 5, "file {i}: {r:?}");
        }
        assert!(sync_files(&[]).is_empty());
        assert!(sync_files(&refs[5..6])[0].is_err());
    }

    #[test]
    fn group_sync_answers_every_caller_and_remembers_whose_sync_failed() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("dir");
        let group = GroupSync::new(dir.clone());
        // No directory yet: every caller hears of the failure.
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| group.sync())).collect();
            for h in handles {
                let e = h.join().unwrap().unwrap_err();
                assert!(e.to_string().contains("fsync directory"), "{e}");
            }
        });
        // Later callers are covered by later syncs, which succeed.
        std::fs::create_dir(&dir).unwrap();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|_| scope.spawn(|| (0..20).try_for_each(|_| group.sync())))
                .collect();
            for h in handles {
                h.join().unwrap().unwrap();
            }
        });
        assert_eq!(group.dir(), dir);
    }

    #[test]
    fn lock_is_exclusive_across_open_file_descriptions() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let first = FileLock::create(&p).unwrap();
        assert!(matches!(
            FileLock::create(&p),
            Err(SpoolError::Locked { .. })
        ));
        drop(first);
        FileLock::create(&p).unwrap();
    }
}
