//! What `skein start` does as root before it starts anything: find the
//! account the services will run as, and make sure that account — not
//! root — owns what the services create.
//!
//! Every service drops root for the configured `user` (default
//! [`skein_config::DEFAULT_USER`]) before it touches the spool, so the
//! spool must be usable by that account: the supervisor creates the spool
//! root and the Maildir root when they are missing (owned by the account,
//! mode 0750), then forks a child that becomes the account and opens the
//! spool — creating its areas as the account — and writes and removes a
//! probe file in `tmp/`. A spool left with root-owned areas by an older
//! start, or one under a directory the account cannot enter, is refused
//! here with one line naming the path, instead of every service failing in
//! turn.
//!
//! Started as an ordinary user, none of this runs: the services stay who
//! they are, as in the quick start.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid, User, chown, fork};
use skein_config::Config;
use skein_spool::{Spool, drop};

use crate::sysexits::{EX_CANTCREAT, EX_NOUSER, EX_SOFTWARE};

/// The mode of the spool root and the Maildir root when `skein start`
/// creates them: the account and its group only.
pub const ROOT_DIR_MODE: u32 = 0o750;

/// Why the spool cannot be prepared: the exit status and the line to print.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    /// sysexits code: 67 when the account is missing (or is root), 73 when
    /// the spool or Maildir root cannot be made usable by it.
    pub code: u8,
    /// The line to print after `skein: `.
    pub message: String,
}

/// When running as root: the account the services will run as, with the
/// spool and Maildir roots ready for it. `None` when not root (nothing to
/// prepare).
pub fn for_services(config: &Config) -> Result<Option<User>, Refusal> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let account = skein_daemon::account(config.run_as()).map_err(|e| Refusal {
        code: EX_NOUSER,
        message: e.to_string(),
    })?;
    for dir in [&config.spool.dir, &config.local.maildir_root] {
        owned_dir(dir, account.uid, account.gid).map_err(|e| Refusal {
            code: EX_CANTCREAT,
            message: format!(
                "cannot create {} for user {}: {e}",
                dir.display(),
                account.name
            ),
        })?;
    }
    probe_as(&account, &config.spool.dir)?;
    drop_area(config).map_err(|message| Refusal {
        code: EX_CANTCREAT,
        message,
    })?;
    Ok(Some(account))
}

/// Gives `maildrop/` to `spool.drop_group` with [`drop::DROP_DIR_MODE`],
/// when that group exists: the setgid `skein-postdrop` can then write
/// there for every local user. Without the group the directory stays the
/// account's (mode 0750) and only the account, its group and root can
/// submit. Returns whether submission by others is set up.
fn drop_area(config: &Config) -> Result<bool, String> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(Some(group)) = nix::unistd::Group::from_name(&config.spool.drop_group) else {
        return Ok(false);
    };
    let dir = drop::dir(&config.spool.dir);
    chown(&dir, None, Some(group.gid))
        .map_err(|e| format!("cannot give {} to group {}: {e}", dir.display(), group.name))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(drop::DROP_DIR_MODE))
        .map_err(|e| format!("cannot set the mode of {}: {e}", dir.display()))?;
    Ok(true)
}

/// Creates `dir` owned by `uid`:`gid` with [`ROOT_DIR_MODE`] if it does
/// not exist (its missing parents are root's, mode 0755). An existing
/// directory is left as it is: the probe says whether it is usable.
fn owned_dir(dir: &Path, uid: Uid, gid: Gid) -> io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "exists and is not a directory",
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    std::fs::DirBuilder::new().mode(ROOT_DIR_MODE).create(dir)?;
    chown(dir, Some(uid), Some(gid)).map_err(io::Error::from)?;
    // The mode given to mkdir is masked by the umask: set it exactly.
    std::fs::set_permissions(
        dir,
        std::os::unix::fs::PermissionsExt::from_mode(ROOT_DIR_MODE),
    )
}

/// Becomes `account` in a child process and opens the spool as the
/// services will: creating its missing areas, then writing and removing
/// a file in `tmp/`. The child prints what failed; the parent turns its
/// exit into a [`Refusal`].
fn probe_as(account: &User, spool_dir: &Path) -> Result<(), Refusal> {
    // SAFETY: `skein start` calls this before it starts its runtime or any
    // thread, so the child is a copy of a single-threaded process and may
    // do anything the parent could.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let code = match probe(account, spool_dir) {
                Ok(()) => 0,
                Err(message) => {
                    eprintln!("skein: {message}");
                    EX_CANTCREAT
                }
            };
            // Leave without running the parent's exit handlers or flushing
            // its buffers a second time.
            // SAFETY: _exit ends this process at once; it is always safe.
            unsafe { nix::libc::_exit(i32::from(code)) }
        }
        Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) => Ok(()),
            Ok(WaitStatus::Exited(_, code)) => Err(Refusal {
                code: u8::try_from(code).unwrap_or(EX_CANTCREAT),
                message: format!(
                    "the spool {} is not usable by user {} (see the line above)",
                    spool_dir.display(),
                    account.name
                ),
            }),
            other => Err(Refusal {
                code: EX_SOFTWARE,
                message: format!("the spool check as user {} ended: {other:?}", account.name),
            }),
        },
        Err(e) => Err(Refusal {
            code: EX_SOFTWARE,
            message: format!("cannot fork to check the spool: {e}"),
        }),
    }
}

fn probe(account: &User, spool_dir: &Path) -> Result<(), String> {
    skein_daemon::drop_privileges(&account.name).map_err(|e| e.to_string())?;
    let spool = Spool::open(spool_dir).map_err(|e| format!("as user {}: {e}", account.name))?;
    let probe = spool
        .dir(skein_spool::Area::Tmp)
        .join(format!(".start-probe.{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| {
        format!(
            "as user {}: cannot write {}: {e} (the spool's areas must belong to {}: chown -R {}: {})",
            account.name,
            probe.display(),
            account.name,
            account.name,
            spool_dir.display()
        )
    })?;
    let owner = std::fs::metadata(&probe).map(|m| m.uid()).ok();
    let _ = std::fs::remove_file(&probe);
    if owner != Some(account.uid.as_raw()) {
        return Err(format!(
            "as user {}: {} was created with owner {owner:?}",
            account.name,
            probe.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_file_is_not_a_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, b"").expect("write");
        let error = owned_dir(&file, Uid::current(), Gid::current()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotADirectory);
    }

    #[test]
    fn a_missing_directory_is_created_with_its_mode_and_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("a/b/spool");
        owned_dir(&target, Uid::current(), Gid::current()).expect("created");
        let meta = std::fs::metadata(&target).expect("exists");
        assert_eq!(meta.permissions().mode() & 0o7777, ROOT_DIR_MODE);
        assert_eq!(meta.uid(), Uid::current().as_raw());
        // An existing directory is left alone.
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        owned_dir(&target, Uid::current(), Gid::current()).expect("exists");
        let meta = std::fs::metadata(&target).expect("exists");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
    }
}
