//! Dropping root privileges for good.
//!
//! A daemon that must bind port 25 starts as root, binds, and then becomes
//! an unprivileged user before it reads a single byte from the network:
//! whatever a hostile peer achieves afterwards, it achieves as that user.
//! The drop is the classic sequence — supplementary groups, then the group,
//! then the user, because after `setuid` the process could no longer change
//! its groups — followed by a check that the way back is really closed.

use std::ffi::CString;

use nix::unistd::{self, Gid, Uid, User};

use crate::DaemonError;

/// What [`drop_privileges`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// The process was not running as root: there was nothing to drop and
    /// nothing was changed. Normal for development and tests.
    NotRoot,
    /// No user was configured ([`crate::Context::drop_privileges`] only):
    /// the process keeps whatever it runs as.
    NoUserConfigured,
    /// The process now runs as `user` and cannot become root again.
    Switched {
        /// The user name.
        user: String,
        /// Its uid, now the real, effective and saved uid.
        uid: u32,
        /// Its primary gid, now the real, effective and saved gid.
        gid: u32,
    },
}

/// Becomes `user` when running as root; does nothing otherwise.
///
/// On success the real, effective and saved ids are the user's and the
/// supplementary groups are exactly the user's groups. An error other than
/// [`DaemonError::UnknownUser`], [`DaemonError::RootUserRefused`] or
/// [`DaemonError::UserLookup`] may leave the process half-dropped: the
/// caller must exit.
///
/// The ids change for every thread of the process: glibc and musl apply
/// `setuid`/`setgid`/`setgroups` to all threads, as POSIX requires, so the
/// drop is safe after the async runtime has started its workers.
pub fn drop_privileges(user: &str) -> Result<Dropped, DaemonError> {
    if !unistd::geteuid().is_root() {
        return Ok(Dropped::NotRoot);
    }
    let account = account(user)?;
    // A user name with a NUL byte cannot have come from the user database.
    let name = CString::new(user).map_err(|_| DaemonError::UnknownUser {
        user: user.to_owned(),
    })?;
    let step = |step| move |source| DaemonError::PrivilegeDrop { step, source };
    unistd::initgroups(&name, account.gid).map_err(step("initgroups"))?;
    unistd::setgid(account.gid).map_err(step("setgid"))?;
    unistd::setuid(account.uid).map_err(step("setuid"))?;
    verify_dropped(account.uid, account.gid)?;
    Ok(Dropped::Switched {
        user: user.to_owned(),
        uid: account.uid.as_raw(),
        gid: account.gid.as_raw(),
    })
}

/// The unprivileged account `user`, as [`drop_privileges`] would switch
/// to it: [`DaemonError::UnknownUser`] when there is none,
/// [`DaemonError::RootUserRefused`] when it is root. For a process that
/// keeps root but acts for the account (`skein start` preparing the spool
/// for it) and must refuse before anything starts.
pub fn account(user: &str) -> Result<User, DaemonError> {
    let account = User::from_name(user)
        .map_err(|source| DaemonError::UserLookup {
            user: user.to_owned(),
            source,
        })?
        .ok_or_else(|| DaemonError::UnknownUser {
            user: user.to_owned(),
        })?;
    if account.uid.is_root() {
        return Err(DaemonError::RootUserRefused {
            user: user.to_owned(),
        });
    }
    Ok(account)
}

/// Checks that the process is `uid`/`gid` and cannot get root back.
fn verify_dropped(uid: Uid, gid: Gid) -> Result<(), DaemonError> {
    let ids = (
        unistd::getuid(),
        unistd::geteuid(),
        unistd::getgid(),
        unistd::getegid(),
    );
    if ids != (uid, uid, gid, gid) {
        return Err(DaemonError::PrivilegesNotDropped {
            detail: format!(
                "expected uid {uid} gid {gid}, have uid {} euid {} gid {} egid {}",
                ids.0, ids.1, ids.2, ids.3
            ),
        });
    }
    // The real test: if a saved uid of 0 survived somewhere, this succeeds.
    if unistd::setuid(Uid::from_raw(0)).is_ok() || unistd::seteuid(Uid::from_raw(0)).is_ok() {
        return Err(DaemonError::PrivilegesNotDropped {
            detail: "setuid(0) still succeeds".to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Set in the child that performs the real drop.
    const CHILD_ENV: &str = "SKEIN_DAEMON_TEST_DROP_TO";

    fn running_as_root() -> bool {
        unistd::geteuid().is_root()
    }

    #[test]
    fn unknown_user_is_refused_before_anything_changes() {
        let result = drop_privileges("skein-no-such-user-3c7f");
        if running_as_root() {
            assert!(
                matches!(result, Err(DaemonError::UnknownUser { ref user }) if user == "skein-no-such-user-3c7f"),
                "{result:?}"
            );
            assert!(unistd::geteuid().is_root());
        } else {
            assert_eq!(result.ok(), Some(Dropped::NotRoot));
        }
    }

    #[test]
    fn root_as_target_is_refused() {
        let result = drop_privileges("root");
        if running_as_root() {
            assert!(
                matches!(result, Err(DaemonError::RootUserRefused { .. })),
                "{result:?}"
            );
        } else {
            assert_eq!(result.ok(), Some(Dropped::NotRoot));
        }
    }

    /// Dropping is irreversible, so as root it happens in a child: this
    /// same test binary, re-run with an environment variable that makes
    /// this test do the drop and report the ids it ends up with.
    #[test]
    fn drop_to_nobody_in_child() {
        if let Ok(user) = std::env::var(CHILD_ENV) {
            child_drop_and_report(&user);
        }
        if !running_as_root() {
            assert_eq!(drop_privileges("nobody").ok(), Some(Dropped::NotRoot));
            return;
        }
        let nobody = User::from_name("nobody")
            .expect("user database")
            .expect("the test needs a `nobody` user");
        let output = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "privileges::tests::drop_to_nobody_in_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "nobody")
            .output()
            .expect("run child");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let report = stdout
            .lines()
            // The harness prints the test's name on the same line first.
            .find_map(|line| Some(line.split_once("CHILD-REPORT ")?.1))
            .unwrap_or_else(|| {
                panic!(
                    "child gave no report; stdout: {stdout}\nstderr: {}",
                    String::from_utf8_lossy(&output.stderr)
                )
            });
        let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());
        let groups = group_list(
            unistd::getgrouplist(&CString::new("nobody").expect("name"), nobody.gid)
                .expect("group list"),
        );
        assert_eq!(
            report,
            format!(
                "dropped={{user=nobody uid={uid} gid={gid}}} uid={uid} euid={uid} gid={gid} egid={gid} groups={groups} setuid0=refused"
            )
        );
        assert_eq!(output.status.code(), Some(0));
    }

    /// Sorted, deduplicated, comma-separated: the kernel's order is not the
    /// group database's.
    fn group_list(groups: Vec<Gid>) -> String {
        let mut groups: Vec<u32> = groups.iter().map(|g| g.as_raw()).collect();
        groups.sort_unstable();
        groups.dedup();
        groups
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The child's half: drop, then print one line the parent compares.
    fn child_drop_and_report(user: &str) -> ! {
        let dropped = match drop_privileges(user) {
            Ok(Dropped::Switched { user, uid, gid }) => {
                format!("{{user={user} uid={uid} gid={gid}}}")
            }
            other => format!("{other:?}"),
        };
        let groups = group_list(unistd::getgroups().unwrap_or_default());
        let setuid0 = if unistd::setuid(Uid::from_raw(0)).is_ok() {
            "succeeded"
        } else {
            "refused"
        };
        println!(
            "CHILD-REPORT dropped={dropped} uid={} euid={} gid={} egid={} groups={groups} setuid0={setuid0}",
            unistd::getuid(),
            unistd::geteuid(),
            unistd::getgid(),
            unistd::getegid(),
        );
        // Exit here so the harness prints nothing after the report — with
        // _exit(2), not exit(3): this is a test thread, the harness's main
        // thread is still running, and glibc's exit handlers racing it
        // crashed the child now and then (SIGSEGV after the report).
        use std::io::Write;
        let _ = std::io::stdout().flush();
        // SAFETY: _exit ends the process at once; nothing is left to run.
        unsafe { libc::_exit(0) }
    }
}
