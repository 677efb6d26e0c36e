//! # `skein-postdrop` — the one door into `maildrop/`
//!
//! **Job.** Copies one submission from standard input into
//! `<spool>/maildrop/` and makes it durable: a partial name, `fsync`, the
//! final name, `fsync` of the directory; then wakes the router. It exits 0
//! only after that, which is what lets `skein sendmail` exit 0 only once
//! the message is on stable storage. It does not parse what it copies —
//! the router, unprivileged, does ([`skein_spool::drop`]) — and checks
//! only the size.
//!
//! **Privilege.** Installed setgid to `spool.drop_group` (mode 2755,
//! `root:skeindrop`); it runs as the user who calls it, with that group
//! as its effective group and nothing else. The group can do one thing:
//! create files in `maildrop/` (mode 3770, the skein account's). The file
//! it creates belongs to the calling user — the kernel's word for who
//! submitted it, which the router records. It never runs with more: it
//! does not open the spool's other areas, the control socket or any file
//! but its configuration, standard input and the drop file.
//!
//! **Trust.** The caller is not trusted. The configuration is the
//! administrator's: `-c FILE` or `SKEIN_CONFIG` is used only when the file
//! and every directory above it belong to root and no one else may write
//! them (a sticky directory such as `/tmp` excepted), unless the caller is
//! root; otherwise — and by default — `/etc/skein/skein.toml`, under the
//! same rule. Relative paths in it are taken against its own directory,
//! never the caller's working directory. The environment is ignored
//! except `SKEIN_CONFIG`.
//!
//! **On failure.** One line on standard error and a sysexits code, with
//! any partial file removed: 65 when the submission is larger than
//! `smtpd.max_message_size` plus [`skein_spool::drop::MAX_ENVELOPE`], 66
//! when standard input cannot be read, 73 when `maildrop/` cannot be
//! written (not installed setgid, or no such spool), 75 when a write or
//! `fsync` fails, 78 for a configuration it cannot use or will not trust.
//! A partial file left by a killed writer is removed by the router after a
//! day.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use skein_config::Config;
use skein_spool::drop;

pub use crate::sysexits::Failure;
use crate::sysexits::{
    EX_CANTCREAT, EX_CONFIG, EX_DATAERR, EX_NOINPUT, EX_TEMPFAIL, EX_USAGE, fail,
};

/// The configuration used when none is named.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/skein/skein.toml";

/// Runs with `args` (without argv\[0\]) and `env_config` (the value of
/// `SKEIN_CONFIG`), reading the submission from `input`. Returns the drop
/// file's path.
pub fn run(
    args: &[OsString],
    env_config: Option<OsString>,
    input: &mut dyn Read,
) -> Result<PathBuf, Failure> {
    let named = match args {
        [] => env_config.filter(|v| !v.is_empty()).map(PathBuf::from),
        [flag, path] if flag == "-c" => Some(PathBuf::from(path)),
        _ => {
            return Err(fail(
                EX_USAGE,
                "usage: skein-postdrop [-c config] < submission",
            ));
        }
    };
    let caller_is_root = nix::unistd::getuid().is_root();
    let path = named.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    let path = if path.is_absolute() {
        path
    } else {
        std::env::current_dir()
            .map_err(|e| fail(EX_CONFIG, format!("cannot find the working directory: {e}")))?
            .join(path)
    };
    if !caller_is_root {
        trusted(&path)
            .map_err(|why| fail(EX_CONFIG, format!("will not use {}: {why}", path.display())))?;
    }
    let base = path.parent().unwrap_or(Path::new("/"));
    let loaded =
        Config::load_with(Some(&path), None, base).map_err(|e| fail(EX_CONFIG, e.to_string()))?;
    let config = loaded.config;
    let limit = config.smtpd.max_message_size.bytes();
    write_drop(&config.spool.dir, limit, input)
}

/// Whether `path` and every directory above it can only have been written
/// by root: owned by uid 0 and not writable by group or others (a sticky
/// directory is allowed to be: its other users cannot replace root's
/// entries). Symlinks are resolved first.
pub fn trusted(path: &Path) -> Result<(), String> {
    let real = path
        .canonicalize()
        .map_err(|e| format!("cannot resolve it: {e}"))?;
    for (i, component) in real.ancestors().enumerate() {
        let meta = std::fs::metadata(component)
            .map_err(|e| format!("cannot stat {}: {e}", component.display()))?;
        if meta.uid() != 0 {
            return Err(format!(
                "{} does not belong to root (uid {})",
                component.display(),
                meta.uid()
            ));
        }
        let sticky_dir = meta.is_dir() && meta.mode() & 0o1000 != 0 && i > 0;
        if meta.mode() & 0o022 != 0 && !sticky_dir {
            return Err(format!(
                "{} may be written by others than root (mode {:o})",
                component.display(),
                meta.mode() & 0o7777
            ));
        }
    }
    Ok(())
}

/// Copies `input` into a new file in `<spool>/maildrop/`, durably, and
/// wakes the router.
pub fn write_drop(spool: &Path, limit: u64, input: &mut dyn Read) -> Result<PathBuf, Failure> {
    let dir = drop::dir(spool);
    let partial = dir.join(drop::partial_name());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(drop::DROP_FILE_MODE)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&partial)
        .map_err(|e| {
            fail(
                EX_CANTCREAT,
                format!(
                    "cannot create a file in {}: {e} (is skein-postdrop installed setgid to spool.drop_group? see docs/operations.md)",
                    dir.display()
                ),
            )
        })?;
    let result = copy_and_sync(file, &partial, limit, input).and_then(|()| {
        let name = partial
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix('.'))
            .ok_or_else(|| fail(EX_TEMPFAIL, "bad partial name"))?;
        let complete = dir.join(name);
        std::fs::rename(&partial, &complete).map_err(|e| {
            fail(
                EX_TEMPFAIL,
                format!("cannot rename {}: {e}", partial.display()),
            )
        })?;
        skein_spool::durable::fsync_dir(&dir).map_err(|e| fail(EX_TEMPFAIL, e.to_string()))?;
        Ok(complete)
    });
    match result {
        Ok(complete) => {
            skein_spool::rendezvous::send_wake(&drop::wake_socket(spool));
            Ok(complete)
        }
        Err(failure) => {
            let _ = std::fs::remove_file(&partial);
            Err(failure)
        }
    }
}

fn copy_and_sync(
    mut file: std::fs::File,
    path: &Path,
    limit: u64,
    input: &mut dyn Read,
) -> Result<(), Failure> {
    let allowed = if limit == 0 {
        u64::MAX
    } else {
        limit.saturating_add(drop::MAX_ENVELOPE)
    };
    let mut buffer = vec![0u8; 64 * 1024];
    let mut written: u64 = 0;
    loop {
        let n = match input.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(fail(EX_NOINPUT, format!("cannot read the submission: {e}")));
            }
        };
        written += n as u64;
        if written > allowed {
            return Err(fail(
                EX_DATAERR,
                format!(
                    "message refused: larger than the size limit of {limit} bytes (smtpd.max_message_size)"
                ),
            ));
        }
        file.write_all(&buffer[..n])
            .map_err(|e| fail(EX_TEMPFAIL, format!("cannot write {}: {e}", path.display())))?;
    }
    if written == 0 {
        return Err(fail(EX_NOINPUT, "empty submission"));
    }
    file.sync_all()
        .map_err(|e| fail(EX_TEMPFAIL, format!("cannot sync {}: {e}", path.display())))
}

/// `main` of `skein-postdrop`.
pub fn main(args: Vec<OsString>) -> u8 {
    let env_config = std::env::var_os(skein_config::CONFIG_ENV);
    match run(&args, env_config, &mut io::stdin().lock()) {
        Ok(_) => 0,
        Err(failure) => {
            eprintln!("skein-postdrop: {}", failure.message);
            failure.code
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_configurations_are_named_with_the_reason() {
        // The test's own temporary directory: root's only when the tests
        // run as root; either way a file in it that others may write is
        // refused.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("skein.toml");
        std::fs::write(&file, "").expect("write");
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .expect("chmod");
        let why = trusted(&file).unwrap_err();
        if nix::unistd::geteuid().is_root() {
            assert!(why.contains("may be written by others"), "{why}");
        } else {
            assert!(why.contains("does not belong to root"), "{why}");
        }
        assert!(
            trusted(&dir.path().join("absent"))
                .unwrap_err()
                .starts_with("cannot resolve")
        );
        // /etc/hostname: root's, in root's directories.
        if Path::new("/etc/hostname").exists() {
            assert_eq!(trusted(Path::new("/etc/hostname")), Ok(()));
        }
    }

    #[test]
    fn a_drop_is_written_whole_and_renamed_or_not_at_all() {
        let spool = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(drop::dir(spool.path())).expect("maildrop");
        let path = write_drop(spool.path(), 100, &mut &b"a submission"[..]).expect("written");
        assert_eq!(std::fs::read(&path).expect("read"), b"a submission");
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(drop::is_complete_name(name), "{name}");
        let mode = std::fs::metadata(&path).expect("stat").mode() & 0o777;
        assert_eq!(mode, drop::DROP_FILE_MODE);

        // Larger than the limit and its envelope: refused, nothing left.
        let big = vec![b'x'; (100 + drop::MAX_ENVELOPE + 1) as usize];
        let failure = write_drop(spool.path(), 100, &mut &big[..]).unwrap_err();
        assert_eq!(failure.code, EX_DATAERR);
        assert!(
            failure.message.contains("size limit of 100 bytes"),
            "{}",
            failure.message
        );
        let failure = write_drop(spool.path(), 100, &mut &b""[..]).unwrap_err();
        assert_eq!(failure.code, EX_NOINPUT);
        let left: Vec<_> = std::fs::read_dir(drop::dir(spool.path()))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");

        // No maildrop/: 73 with the hint.
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let failure = write_drop(elsewhere.path(), 100, &mut &b"x"[..]).unwrap_err();
        assert_eq!(failure.code, EX_CANTCREAT);
        assert!(failure.message.contains("setgid"), "{}", failure.message);
    }

    #[test]
    fn usage() {
        let failure = run(&["-x".into()], None, &mut &b""[..]).unwrap_err();
        assert_eq!(failure.code, EX_USAGE);
    }
}
