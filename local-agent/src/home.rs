//! Delivery to a system account's own Maildir, as that account
//! (`local.home_mailbox`, like Postfix's `home_mailbox = Maildir/`).
//!
//! **Privilege.** Writing `~ann/Maildir/` as `ann` needs the right to
//! become `ann`. skein-local is the only skein process given it, as file
//! capabilities: `CAP_SETUID` and `CAP_SETGID` (`setcap
//! cap_setuid,cap_setgid+ep`, the binary mode 0750 `root:skein` so that
//! nobody else can run it). It never runs as root and never uses them in
//! its own process: at start it drops every capability but those two, or
//! all of them when `local.home_mailbox` is unset ([`limit_capabilities`]).
//! For each such delivery it starts a writer, `skein-local-writer DIR
//! HOSTNAME` (installed next to it, mode 0755: it can do nothing its user
//! could not), switching to the account (its groups, its gid, its uid)
//! and setting `no_new_privs` between fork and exec, so that the writer
//! holds no capability at all: only the account's own rights, in the
//! account's home. The writer refuses to run
//! as root; an account with uid 0 never gets here (its mail goes to the
//! Maildir root, see [`account`]).
//!
//! **Data.** The agent reads the message from the spool (as skein) and
//! pipes `Return-Path`, `Delivered-To` and the message to the writer's
//! standard input; the writer creates the Maildir if needed (directories
//! 0700, the file 0600, by the Maildir rules of [`crate::maildir`]),
//! prints the delivered file's path and exits 0 only after the last
//! `fsync`. Without the capabilities (the quick start, or an install that
//! left them out), delivery to another account is deferred with a
//! diagnostic saying what to install; delivery to the agent's own account
//! needs no switch and is done in-process.

use std::ffi::CString;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::unistd::{Gid, Uid, User};

use crate::error::LocalError;
use crate::maildir::{DeliverError, Maildir};

/// The writer's executable, found next to skein-local's.
pub const WRITER: &str = "skein-local-writer";

/// Writer exit status: delivered.
const WRITER_OK: i32 = 0;
/// Writer exit status: the disk or quota is full.
const WRITER_FULL: i32 = 74;
/// Writer exit status: any other failure.
const WRITER_FAILED: i32 = 75;

/// A system account that gets its mail in its home.
#[derive(Debug, Clone)]
pub struct Account {
    /// The user name.
    pub name: String,
    /// Its uid (never 0).
    pub uid: Uid,
    /// Its primary gid.
    pub gid: Gid,
    /// Its home directory.
    pub home: PathBuf,
}

/// The account `user` if its mail goes to its home: a system account
/// with a home directory, other than root (mail for root, which skein
/// never delivers as, stays under the Maildir root — alias it to a
/// person). `None` for a name that is not a system account.
pub fn account(user: &str) -> Result<Option<Account>, LocalError> {
    let found = User::from_name(user).map_err(|e| LocalError::UserLookup {
        user: user.to_owned(),
        source: io::Error::from(e),
    })?;
    Ok(found
        .filter(|u| !u.uid.is_root() && u.dir.is_absolute())
        .map(|u| Account {
            name: u.name,
            uid: u.uid,
            gid: u.gid,
            home: u.dir,
        }))
}

/// Delivers into `<home>/<home_mailbox>` as `account`: `write` fills the
/// message (headers included). Returns the delivered file's path.
pub fn deliver(
    account: &Account,
    home_mailbox: &str,
    hostname: &str,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<PathBuf, LocalError> {
    let dir = account.home.join(home_mailbox);
    if account.uid == nix::unistd::geteuid() {
        // Our own account: nothing to switch.
        let maildir = Maildir::ensure(&dir)?;
        return maildir
            .deliver(hostname, |out| write(out))
            .map_err(|e| match e {
                DeliverError::Mailbox(e) => e,
                DeliverError::Content(io) => LocalError::mailbox("write", dir.join("tmp"), io),
            });
    }
    let as_user = |problem: String, full: bool| LocalError::AsUser {
        user: account.name.clone(),
        problem,
        full,
    };
    let exe = std::env::current_exe()
        .map_err(|e| as_user(format!("cannot find skein-local's executable: {e}"), false))?
        .with_file_name(WRITER);
    let name = CString::new(account.name.as_str())
        .map_err(|_| as_user("a user name with a NUL byte".into(), false))?;
    let groups = nix::unistd::getgrouplist(&name, account.gid).map_err(|e| {
        as_user(
            format!("cannot list the groups of {}: {e}", account.name),
            false,
        )
    })?;
    let (uid, gid) = (account.uid, account.gid);
    let mut command = Command::new(&exe);
    command
        .arg(&dir)
        .arg(hostname)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec the closure makes only system calls
    // (setgroups, setgid, setuid, prctl) on values computed before the
    // fork: nothing that allocates or takes a lock.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::setgroups(&groups)?;
            nix::unistd::setgid(gid)?;
            nix::unistd::setuid(uid)?;
            // No exec from here on may gain a privilege: the file
            // capabilities of skein-local itself are ignored for the
            // writer, which so holds none.
            if nix::libc::prctl(nix::libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| {
        let hint = if e.raw_os_error() == Some(nix::libc::EPERM) {
            " (skein-local may not switch users: install it with `setcap cap_setuid,cap_setgid+ep` — docs/operations.md, \"Delivery to system users\")"
        } else {
            ""
        };
        as_user(format!("cannot start the writer as {}: {e}{hint}", account.name), false)
    })?;
    let fed = child
        .stdin
        .take()
        .map(|mut stdin| write(&mut stdin))
        .unwrap_or(Ok(()));
    let output = child
        .wait_with_output()
        .map_err(|e| as_user(format!("cannot wait for the writer: {e}"), false))?;
    let said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    match output.status.code() {
        Some(WRITER_OK) if fed.is_ok() => {
            let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            Ok(PathBuf::from(path))
        }
        Some(WRITER_OK) => Err(as_user(
            format!(
                "the writer did not take the whole message: {}",
                fed.unwrap_err()
            ),
            false,
        )),
        Some(WRITER_FULL) => Err(as_user(said, true)),
        Some(code) => Err(as_user(
            if said.is_empty() {
                format!("the writer exited {code}")
            } else {
                said
            },
            false,
        )),
        None => Err(as_user("the writer was killed".into(), false)),
    }
}

/// The writer: `skein-local-writer DIR HOSTNAME`, run by
/// [`deliver`] as the account. Copies standard input into a new message
/// in the Maildir `DIR` (created if missing), prints its path, and exits
/// 0 once it is durable; 74 for a full disk or quota, 75 otherwise, 64 for
/// a bad command line, 77 when run as root.
pub fn writer_main(args: &[String]) -> i32 {
    let [dir, hostname] = args else {
        eprintln!("usage: {WRITER} DIR HOSTNAME");
        return 64;
    };
    if nix::unistd::geteuid().is_root() || nix::unistd::getuid().is_root() {
        eprintln!("skein-local never delivers as root");
        return 77;
    }
    let dir = Path::new(dir);
    let result = Maildir::ensure(dir).and_then(|maildir| {
        maildir
            .deliver(hostname, |out| {
                io::copy(&mut io::stdin().lock(), out).map(drop)
            })
            .map_err(|e| match e {
                DeliverError::Mailbox(e) => e,
                DeliverError::Content(io) => LocalError::mailbox("write", dir.join("tmp"), io),
            })
    });
    match result {
        Ok(path) => {
            println!("{}", path.display());
            WRITER_OK
        }
        Err(e) => {
            eprintln!("{e}");
            match &e {
                LocalError::Mailbox { source, .. } if crate::error::is_full(source) => WRITER_FULL,
                _ => WRITER_FAILED,
            }
        }
    }
}

/// Keeps only `CAP_SETUID` and `CAP_SETGID` (when `home_delivery`), or
/// no capability at all, in every set of this process. A skein-local
/// without file capabilities has none to drop, and this does nothing.
pub fn limit_capabilities(home_delivery: bool) -> io::Result<()> {
    // The kernel's capability ABI, version 3 (two 32-bit words).
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_SETGID: u32 = 6;
    const CAP_SETUID: u32 = 7;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut now = [Data::default(); 2];
    // SAFETY: capget(2) with a version-3 header writes two Data structs.
    if unsafe { nix::libc::syscall(nix::libc::SYS_capget, &mut header, now.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let keep = if home_delivery {
        (1 << CAP_SETUID) | (1 << CAP_SETGID)
    } else {
        0
    };
    let wanted = [
        Data {
            effective: now[0].effective & keep,
            permitted: now[0].permitted & keep,
            inheritable: 0,
        },
        Data::default(),
    ];
    if now[0].permitted == wanted[0].permitted
        && now[1].permitted == 0
        && now[0].inheritable == 0
        && now[1].inheritable == 0
    {
        return Ok(());
    }
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    // SAFETY: capset(2) reads a version-3 header and two Data structs;
    // dropping capabilities is always allowed.
    if unsafe { nix::libc::syscall(nix::libc::SYS_capset, &mut header, wanted.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The permitted capabilities of this process, as `/proc` shows them
/// (`CapPrm`, hexadecimal): for tests and the start-up log.
pub fn permitted_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapPrm:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Reads what a writer would read, for a test of the writer's stdin.
#[cfg(test)]
fn read_all(mut input: impl std::io::Read) -> Vec<u8> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes).expect("read");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_unknown_names_do_not_get_home_delivery() {
        assert!(account("root").expect("lookup").is_none());
        assert!(account("skein-no-such-user-5d1").expect("lookup").is_none());
    }

    #[test]
    fn our_own_account_is_delivered_in_process_with_private_modes() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let home = tempfile::tempdir().expect("tempdir");
        let me = User::from_uid(nix::unistd::geteuid())
            .expect("lookup")
            .expect("own account");
        let account = Account {
            name: me.name,
            uid: me.uid,
            gid: me.gid,
            home: home.path().to_path_buf(),
        };
        let path = deliver(&account, "Maildir/", "host.example", |out| {
            out.write_all(b"Subject: hi\n\nbody\n")
        })
        .expect("delivered");
        assert!(
            path.starts_with(home.path().join("Maildir/new")),
            "{}",
            path.display()
        );
        assert_eq!(
            read_all(std::fs::File::open(&path).expect("open")),
            b"Subject: hi\n\nbody\n"
        );
        let meta = std::fs::metadata(&path).expect("stat");
        assert_eq!((meta.uid(), meta.mode() & 0o777), (me.uid.as_raw(), 0o600));
        for dir in ["Maildir", "Maildir/tmp", "Maildir/new", "Maildir/cur"] {
            let meta = std::fs::metadata(home.path().join(dir)).expect("dir");
            assert_eq!(meta.permissions().mode() & 0o777, 0o700, "{dir}");
        }
    }

    #[test]
    fn without_capabilities_another_account_is_deferred_saying_why() {
        if nix::unistd::geteuid().is_root() {
            // Root may switch users: what this shows needs an ordinary one.
            return;
        }
        let home = tempfile::tempdir().expect("tempdir");
        let other = Account {
            name: "nobody".into(),
            uid: Uid::from_raw(65534),
            gid: Gid::from_raw(65534),
            home: home.path().to_path_buf(),
        };
        let error = deliver(&other, "Maildir/", "host.example", |out| {
            out.write_all(b"x")
        })
        .unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("delivery as nobody failed: cannot start the writer as nobody"),
            "{text}"
        );
        assert!(text.contains("setcap cap_setuid,cap_setgid+ep"), "{text}");
        assert!(matches!(error, LocalError::AsUser { full: false, .. }));
        assert!(!home.path().join("Maildir").exists());
    }
}
