//! The few file-system operations every spool transition is made of:
//! fsync of a directory, a rename that never replaces, and advisory locks.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::SpoolError;

/// Makes a directory's entries (a rename or unlink in it) durable.
pub fn fsync_dir(dir: &Path) -> Result<(), SpoolError> {
    let f = File::open(dir).map_err(|e| SpoolError::io("open directory", dir, e))?;
    f.sync_all()
        .map_err(|e| SpoolError::io("fsync directory", dir, e))
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
