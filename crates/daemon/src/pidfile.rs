//! The pid file, which is also the "one instance at a time" lock.
//!
//! The file holds the daemon's pid for tools (`skein status`, `kill`), and
//! an exclusive `flock` on it says the daemon is alive. The lock, not the
//! file's existence, is the truth: the kernel drops it when the process
//! dies, even by `kill -9`, so a stale file never blocks a restart and a
//! reader can tell a live pid from a leftover one.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use crate::DaemonError;

/// How many times [`PidFile::acquire`] tries before deciding the lock is
/// really held. A reader ([`PidFile::read_running`]) holds a shared lock for
/// the length of one system call, and a previous owner may be between
/// unlinking the file and releasing its lock; neither must make a start
/// fail, so a busy lock is retried briefly.
const ACQUIRE_ATTEMPTS: u32 = 5;
const ACQUIRE_RETRY_DELAY: Duration = Duration::from_millis(20);

/// A held pid file. The lock is held until this is dropped; dropping it
/// removes the file (or, when the directory no longer lets us, empties it).
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    file: File,
}

impl PidFile {
    /// Creates or opens `path`, locks it exclusively without waiting, and
    /// writes our pid into it (truncate, write, fsync).
    ///
    /// Fails with [`DaemonError::AlreadyRunning`] when a live process holds
    /// the lock. A symlink at `path` is refused, so that a directory writable
    /// by someone else cannot redirect a root-owned write.
    pub fn acquire(path: impl AsRef<Path>) -> Result<PidFile, DaemonError> {
        let path = path.as_ref();
        let failed = |source| DaemonError::PidFile {
            path: path.to_owned(),
            source,
        };
        for attempt in 1..=ACQUIRE_ATTEMPTS {
            let file = open(path, true).map_err(failed)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) if attempt < ACQUIRE_ATTEMPTS => {
                    thread::sleep(ACQUIRE_RETRY_DELAY);
                    continue;
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(DaemonError::AlreadyRunning {
                        path: path.to_owned(),
                        pid: read_pid(&file),
                    });
                }
                Err(TryLockError::Error(source)) => return Err(failed(source)),
            }
            // We hold the lock on the inode we opened, but a previous owner
            // may have unlinked that inode before releasing its lock; a
            // process opening the path now would create a new file and lock
            // that one too. Only the inode the path names counts.
            if !names_same_file(path, &file).map_err(failed)? {
                continue;
            }
            let pid = format!("{}\n", std::process::id());
            file.set_len(0).map_err(failed)?;
            file.write_all_at(pid.as_bytes(), 0).map_err(failed)?;
            file.sync_all().map_err(failed)?;
            return Ok(PidFile {
                path: path.to_owned(),
                file,
            });
        }
        Err(failed(io::Error::other(
            "the pid file kept being replaced while locking it",
        )))
    }

    /// The pid of the live process holding the pid file at `path`, or
    /// `None` when there is no file, nobody holds its lock (a leftover from
    /// a killed process), or the holder has not written its pid yet.
    pub fn read_running(path: impl AsRef<Path>) -> Option<u32> {
        let file = open(path.as_ref(), false).ok()?;
        match file.try_lock_shared() {
            // We got the lock, so nobody holds it: not running. Closing the
            // file releases our lock at once.
            Ok(()) => None,
            Err(TryLockError::WouldBlock) => read_pid(&file),
            Err(TryLockError::Error(_)) => None,
        }
    }

    /// Where the pid file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Remove the file while still holding the lock, and only if the path
        // still names our file. After a privilege drop the directory may not
        // let us unlink; then empty the file through the descriptor so that
        // it no longer names a pid. Either way the lock goes with the close.
        let removed = matches!(names_same_file(&self.path, &self.file), Ok(true))
            && fs::remove_file(&self.path).is_ok();
        if !removed {
            let _ = self.file.set_len(0);
        }
    }
}

fn open(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

fn names_same_file(path: &Path, file: &File) -> io::Result<bool> {
    let ours = file.metadata()?;
    match fs::symlink_metadata(path) {
        Ok(named) => Ok(named.dev() == ours.dev() && named.ino() == ours.ino()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

/// Reads the pid a holder wrote. A pid file is a few bytes; more than that
/// is not a pid file, so the read is bounded.
fn read_pid(file: &File) -> Option<u32> {
    let mut buffer = [0u8; 32];
    let length = file.read_at(&mut buffer, 0).ok()?;
    std::str::from_utf8(&buffer[..length])
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|&pid| pid > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    /// Set in a child process to make the `in_child` tests act as the
    /// second process.
    const CHILD_PATH_ENV: &str = "SKEIN_DAEMON_TEST_PIDFILE";

    fn child(test: &str, path: &Path) -> Command {
        let mut command = Command::new(std::env::current_exe().expect("test binary"));
        command
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(CHILD_PATH_ENV, path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        command
    }

    #[test]
    fn acquire_writes_pid_and_drop_removes_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("skein.pid");
        let held = PidFile::acquire(&path).expect("acquire");
        assert_eq!(held.path(), path);
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            format!("{}\n", std::process::id())
        );
        assert_eq!(PidFile::read_running(&path), Some(std::process::id()));
        drop(held);
        assert!(!path.exists());
        assert_eq!(PidFile::read_running(&path), None);
    }

    #[test]
    fn second_acquire_in_the_same_process_is_refused() {
        // flock locks belong to the open file, so a second open conflicts
        // even within one process.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("skein.pid");
        let _held = PidFile::acquire(&path).expect("acquire");
        match PidFile::acquire(&path) {
            Err(DaemonError::AlreadyRunning { pid, path: named }) => {
                assert_eq!(pid, Some(std::process::id()));
                assert_eq!(named, path);
            }
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
    }

    #[test]
    fn leftover_file_without_lock_is_taken_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("skein.pid");
        // A long stale pid and trailing junk: truncation must remove both.
        fs::write(&path, "4000000000000\njunk junk junk\n").expect("write");
        assert_eq!(PidFile::read_running(&path), None);
        let _held = PidFile::acquire(&path).expect("acquire");
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            format!("{}\n", std::process::id())
        );
    }

    #[test]
    fn read_running_cases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pid");
        assert_eq!(PidFile::read_running(&missing), None);
        let unlocked = dir.path().join("unlocked.pid");
        fs::write(&unlocked, "123\n").expect("write");
        assert_eq!(PidFile::read_running(&unlocked), None);
    }

    #[test]
    fn pid_parsing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            ("123\n", Some(123)),
            ("  77  ", Some(77)),
            ("0\n", None),
            ("", None),
            ("abc", None),
            ("-5", None),
            ("99999999999999999999", None),
        ];
        for (content, expected) in cases {
            let path = dir.path().join("p");
            fs::write(&path, content).expect("write");
            let file = File::open(&path).expect("open");
            assert_eq!(read_pid(&file), expected, "for {content:?}");
        }
    }

    #[test]
    fn symlink_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        let link = dir.path().join("skein.pid");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let result = PidFile::acquire(&link);
        assert!(
            matches!(result, Err(DaemonError::PidFile { .. })),
            "{result:?}"
        );
        assert!(!target.exists());
    }

    /// The parent holds the lock; a child process must be refused and must
    /// read the parent's pid from the file.
    #[test]
    fn second_acquire_in_child_process_is_refused() {
        if let Some(path) = std::env::var_os(CHILD_PATH_ENV) {
            let outcome = match PidFile::acquire(&path) {
                Err(DaemonError::AlreadyRunning { pid, .. }) => format!("already-running {pid:?}"),
                other => format!("unexpected {other:?}"),
            };
            println!("CHILD-REPORT {outcome}");
            std::process::exit(0);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("skein.pid");
        let held = PidFile::acquire(&path).expect("acquire");
        let output = child(
            "pidfile::tests::second_acquire_in_child_process_is_refused",
            &path,
        )
        .output()
        .expect("run child");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains(&format!(
                "CHILD-REPORT already-running Some({})",
                std::process::id()
            )),
            "{stdout}"
        );
        drop(held);
    }

    /// A child takes the lock and is killed with SIGKILL: no destructor
    /// runs, the file stays, and yet the lock is gone, so the pid file no
    /// longer reports it and can be acquired again.
    #[test]
    fn lock_dies_with_a_killed_holder() {
        if let Some(path) = std::env::var_os(CHILD_PATH_ENV) {
            let held = PidFile::acquire(&path);
            println!("CHILD-REPORT holding {}", held.is_ok());
            let _ = io::stdout().flush();
            // Hold the lock until the parent kills us (or closes stdin).
            let mut line = String::new();
            let _ = io::stdin().read_line(&mut line);
            std::process::exit(0);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("skein.pid");
        let mut holder = child("pidfile::tests::lock_dies_with_a_killed_holder", &path)
            .spawn()
            .expect("spawn child");
        let stdout = holder.stdout.take().expect("child stdout");
        let report = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| Some(line.split_once("CHILD-REPORT ")?.1.to_owned()));
        assert_eq!(report.as_deref(), Some("holding true"));
        assert_eq!(PidFile::read_running(&path), Some(holder.id()));
        assert!(matches!(
            PidFile::acquire(&path),
            Err(DaemonError::AlreadyRunning { pid: Some(pid), .. }) if pid == holder.id()
        ));

        holder.kill().expect("SIGKILL the child");
        holder.wait().expect("reap the child");
        assert!(path.exists(), "a killed holder leaves its file behind");
        assert_eq!(PidFile::read_running(&path), None);
        let _held = PidFile::acquire(&path).expect("acquire after the holder died");
        assert_eq!(PidFile::read_running(&path), Some(std::process::id()));
    }
}
