//! Maildir delivery, as <https://cr.yp.to/proto/maildir.html> has it:
//! write the file under a unique name in `tmp/`, `fsync` it, link it into
//! `new/`, `fsync` `new/`, then remove the `tmp/` name. A reader sees a
//! message in `new/` only when it is complete and on stable storage, and
//! a crash at any point leaves at worst a stale file in `tmp/` (which mail
//! readers clean up after 36 hours) — never a partial message in `new/`.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::LocalError;

/// How many names are tried before giving up on a collision. Names are
/// unique by construction (time, pid, a counter); a collision means a
/// clock set back or a pid reused within the same microsecond.
const NAME_ATTEMPTS: usize = 8;

/// A counter making names of one process unique (the `Q<n>` of a name).
static DELIVERIES: AtomicU64 = AtomicU64::new(0);

/// One user's Maildir: a directory with `tmp/`, `new/` and `cur/`.
#[derive(Debug, Clone)]
pub struct Maildir {
    dir: PathBuf,
}

impl Maildir {
    /// The Maildir at `dir`, created (mode 0700, with any missing parent)
    /// if it or one of its subdirectories is missing. Each directory
    /// created is made durable (its parent is fsynced), so that a delivery
    /// into it cannot vanish with it in a crash.
    pub fn ensure(dir: &Path) -> Result<Maildir, LocalError> {
        if !dir.is_dir()
            && let Some(parent) = dir.parent()
            && !parent.is_dir()
        {
            DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|e| LocalError::mailbox("create", parent, e))?;
        }
        create_durably(dir)?;
        for sub in ["tmp", "new", "cur"] {
            create_durably(&dir.join(sub))?;
        }
        Ok(Maildir {
            dir: dir.to_path_buf(),
        })
    }

    /// The Maildir's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Delivers one message: `write` fills the file (its errors come back
    /// as they are, the `tmp/` file removed). Returns the message's path
    /// in `new/` once it is durable there.
    pub fn deliver<E>(
        &self,
        hostname: &str,
        write: impl FnOnce(&mut BufWriter<File>) -> Result<(), E>,
    ) -> Result<PathBuf, DeliverError<E>> {
        let (tmp_path, file) = self.create_tmp(hostname)?;
        // From here on the tmp file must go whatever happens, except once
        // it is linked into new/ (then removing it is merely tidying).
        let guard = RemoveOnDrop(Some(tmp_path.clone()));
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        write(&mut out).map_err(DeliverError::Content)?;
        let file = out
            .into_inner()
            .map_err(|e| LocalError::mailbox("write", &tmp_path, e.into_error()))?;
        let size = file
            .metadata()
            .map_err(|e| LocalError::mailbox("stat", &tmp_path, e))?
            .len();
        file.sync_all()
            .map_err(|e| LocalError::mailbox("fsync", &tmp_path, e))?;
        drop(file);
        let new_path = self.link_into_new(&tmp_path, hostname, size)?;
        let new_dir = self.dir.join("new");
        fsync_dir(&new_dir).map_err(|e| LocalError::mailbox("fsync", &new_dir, e))?;
        drop(guard);
        Ok(new_path)
    }

    fn create_tmp(&self, hostname: &str) -> Result<(PathBuf, File), LocalError> {
        let mut last = None;
        for _ in 0..NAME_ATTEMPTS {
            let path = self.dir.join("tmp").join(unique_name(hostname));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => return Ok((path, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some((path, e)),
                Err(e) => return Err(LocalError::mailbox("create", path, e)),
            }
        }
        let (path, e) =
            last.unwrap_or_else(|| (self.dir.join("tmp"), io::ErrorKind::AlreadyExists.into()));
        Err(LocalError::mailbox("create", path, e))
    }

    /// Links the finished file into `new/` as `<its name>,S=<size>`,
    /// never replacing anything: on a collision a fresh name is drawn.
    fn link_into_new(
        &self,
        tmp_path: &Path,
        hostname: &str,
        size: u64,
    ) -> Result<PathBuf, LocalError> {
        let base = tmp_path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
            .unwrap_or_else(|| unique_name(hostname));
        let mut name = base;
        let mut last = None;
        for _ in 0..NAME_ATTEMPTS {
            let new_path = self.dir.join("new").join(format!("{name},S={size}"));
            match std::fs::hard_link(tmp_path, &new_path) {
                Ok(()) => return Ok(new_path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    last = Some((new_path, e));
                    name = unique_name(hostname);
                }
                // Some file systems (FUSE, some network ones) have no hard
                // links. The name is unique and a rename is atomic too; it
                // only loses link()'s refusal to replace, which the unique
                // name makes moot.
                Err(e) if no_hard_links(&e) => {
                    if new_path.exists() {
                        last = Some((new_path, io::ErrorKind::AlreadyExists.into()));
                        name = unique_name(hostname);
                        continue;
                    }
                    std::fs::rename(tmp_path, &new_path)
                        .map_err(|e| LocalError::mailbox("rename", &new_path, e))?;
                    return Ok(new_path);
                }
                Err(e) => return Err(LocalError::mailbox("link", new_path, e)),
            }
        }
        let (path, e) =
            last.unwrap_or_else(|| (self.dir.join("new"), io::ErrorKind::AlreadyExists.into()));
        Err(LocalError::mailbox("link", path, e))
    }
}

/// A delivery's failure: the Maildir's, or that of the content writer.
#[derive(Debug)]
pub enum DeliverError<E> {
    /// Creating, syncing or linking the file failed.
    Mailbox(LocalError),
    /// The content writer failed.
    Content(E),
}

impl<E> From<LocalError> for DeliverError<E> {
    fn from(e: LocalError) -> Self {
        DeliverError::Mailbox(e)
    }
}

/// `<secs>.M<micros>P<pid>Q<n>.<host>`: the Maildir spec's unique name,
/// with `/` and `:` in the host name escaped as it asks.
pub fn unique_name(hostname: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let n = DELIVERIES.fetch_add(1, Ordering::Relaxed);
    let host = hostname.replace('/', "\\057").replace(':', "\\072");
    format!(
        "{}.M{}P{}Q{n}.{host}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id()
    )
}

fn no_hard_links(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS)
    )
}

/// Creates one directory (mode 0700) and fsyncs its parent; an existing
/// directory is left alone.
fn create_durably(dir: &Path) -> Result<(), LocalError> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {
            if let Some(parent) = dir.parent() {
                fsync_dir(parent).map_err(|e| LocalError::mailbox("fsync", parent, e))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(LocalError::mailbox("create", dir, e)),
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes a temporary file unless defused, so that every early return
/// of a delivery cleans up after itself.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take()
            && let Err(e) = std::fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a Maildir tmp file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn unique_names_follow_the_spec() {
        let a = unique_name("mx.example.org");
        let b = unique_name("odd/host:name");
        assert_ne!(a, unique_name("mx.example.org"));
        let (secs, rest) = a.split_once('.').expect("secs.");
        assert!(secs.bytes().all(|c| c.is_ascii_digit()), "{a}");
        assert!(rest.starts_with('M'), "{a}");
        assert!(rest.contains(&format!("P{}Q", std::process::id())), "{a}");
        assert!(a.ends_with(".mx.example.org"), "{a}");
        assert!(b.ends_with(".odd\\057host\\072name"), "{b}");
        assert!(!b.contains('/'));
    }

    #[test]
    fn ensure_creates_the_tree_and_keeps_an_existing_one() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("mail").join("alice");
        let maildir = Maildir::ensure(&dir).expect("create");
        assert_eq!(entries(maildir.path()), ["cur", "new", "tmp"]);
        std::fs::write(dir.join("new").join("keep"), b"x").expect("write");
        Maildir::ensure(&dir).expect("again");
        assert_eq!(entries(&dir.join("new")), ["keep"]);
    }

    #[test]
    fn delivery_lands_in_new_with_its_size() {
        let root = tempfile::tempdir().expect("tempdir");
        let maildir = Maildir::ensure(&root.path().join("bob")).expect("create");
        let path = maildir
            .deliver::<io::Error>("host", |out| out.write_all(b"hello\n"))
            .expect("deliver");
        assert_eq!(std::fs::read(&path).expect("read"), b"hello\n");
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(name.ends_with(".host,S=6"), "{name}");
        assert_eq!(path.parent(), Some(root.path().join("bob/new").as_path()));
        assert!(entries(&root.path().join("bob/tmp")).is_empty());
    }

    #[test]
    fn a_failing_writer_leaves_nothing_behind() {
        let root = tempfile::tempdir().expect("tempdir");
        let maildir = Maildir::ensure(&root.path().join("bob")).expect("create");
        let err = maildir
            .deliver("host", |out| {
                out.write_all(b"partial")?;
                Err(io::Error::other("source broke"))
            })
            .expect_err("fails");
        assert!(matches!(err, DeliverError::Content(_)));
        assert!(entries(&root.path().join("bob/tmp")).is_empty());
        assert!(entries(&root.path().join("bob/new")).is_empty());
    }

    #[test]
    fn a_broken_maildir_is_a_mailbox_error() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("carol");
        std::fs::create_dir(&dir).expect("mkdir");
        // new/ is a file: ensure refuses it. (Permissions cannot be used to
        // provoke errors: the tests may run as root.)
        std::fs::write(dir.join("new"), b"").expect("file");
        let err = Maildir::ensure(&dir).expect_err("new is not a directory");
        assert!(
            matches!(err, LocalError::Mailbox { op: "create", .. }),
            "{err}"
        );
    }
}
