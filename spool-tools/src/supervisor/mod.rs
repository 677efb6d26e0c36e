//! # `skein start` and `skein stop` — the service supervisor
//!
//! **Job.** `skein start` runs skein's long-lived processes ([`SERVICES`])
//! in the foreground and restarts one that exits unexpectedly: at once if
//! it had run `supervisor.healthy_after` (10 s), else — a crash loop —
//! after a back-off of 1 s doubling to 60 s ([`backoff`] has the rule); it
//! logs why the child exited and why the restart waits as long as it
//! does. On SIGTERM or SIGINT it sends SIGTERM to
//! every child, waits for them (SIGKILL after 30 s) and exits 0. `skein
//! stop` sends the running supervisor SIGTERM and waits until it is gone.
//! Under systemd there is no supervisor: each process is its own unit.
//!
//! **Reads and writes.** The configuration (`spool.dir`, and the file's
//! path, passed on to every child as `-c FILE`); the pid file
//! `<spool.dir>/run/skein.pid` (`rendezvous::pid_file(_,
//! Daemon::Supervisor)`), held with a lock for as long as the
//! supervisor runs (that lock is what `skein stop` and `skein status`
//! look at); the service executables, found in the directory of the
//! running `skein` executable, else on `PATH`. It opens no socket and
//! reads no mail.
//!
//! **Trust and privilege.** It trusts the executables it starts and
//! nothing else. Started as root, it keeps root — the only skein process
//! that does — because its children need it at their start
//! (`skein-smtpd` binds port 25 as root); every child drops to `user`
//! (default `skein`) before it reads any input, and the supervisor itself
//! reads no input from the network, from messages or from users. Before
//! starting anything it refuses a missing account (exit 67) and prepares
//! the spool for the account ([`prepare`]), so that nothing in the spool
//! is root's but its own pid file.
//!
//! **On failure.** A configuration that does not parse, or names a file
//! a daemon could not load (`skein_preflight::check`, the daemons' own
//! check), is refused before anything starts (exit 78, the error with
//! file, line and key). A missing service executable is refused before
//! anything starts (exit 69). A child that exits 78 (`EX_CONFIG`: it
//! refused its configuration) is not restarted, since no restart can fix
//! that: every service is stopped and `skein start` exits 78. A child that
//! cannot be started later, or that keeps crashing otherwise, is retried
//! with back-off for ever, each failure logged — so that a transient
//! condition (a full disk, a port still in TIME_WAIT) heals by itself. A second SIGTERM while stopping exits at once (skein-daemon's
//! rule). Exit statuses are skein-daemon's: 0 after a stop, 1 when it
//! could not start (another supervisor holds the pid file).
//!
//! **Configuration keys.** `spool.dir`, `supervisor.restart_delay`,
//! `supervisor.restart_delay_max`, `supervisor.healthy_after`; the
//! children read the rest.

pub mod backoff;
pub mod prepare;
pub mod reload;
mod supervise;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use skein_config::{Config, Source};
use skein_daemon::{DaemonOptions, PidFile};
use skein_spool::{Daemon, Spool, rendezvous};

pub use backoff::{Backoff, Policy, Restart, Why};
pub use supervise::{ServiceReport, ServiceSpec, describe, supervise};

use crate::control::EX_NOPERM;
use crate::sysexits::{EX_CONFIG, EX_OK, EX_SOFTWARE, EX_TEMPFAIL, EX_UNAVAILABLE};

/// The services `skein start` runs, in start order: the router first so
/// that mail already in `incoming/` moves on, then the scheduler. Add
/// `skein-smtpd` here once it exists; nothing else needs to change.
pub const SERVICES: &[&str] = &["skein-router", "skein-scheduler", "skein-smtpd"];

pub use crate::sysexits::EX_CANTCREAT;

/// How long `skein stop` waits for the supervisor to go: its children's
/// grace period plus time to collect them.
pub const STOP_WAIT: Duration = Duration::from_secs(45);

/// Where an installation keeps the programs that are not commands (the
/// daemons, the agents, the setgid `skein-postdrop`), relative to the
/// directory of `skein` itself: `/usr/bin/skein` finds them in
/// `/usr/libexec/skein/`, the layout of the Debian package and of
/// `dist/install.sh` (docs/operations.md, "Installing").
pub const LIBEXEC_FROM_BIN: &str = "../libexec/skein";

/// Where to find service `name`: next to the running executable (a
/// development build finds its own `target/` siblings), then in the
/// installation's libexec directory beside it ([`LIBEXEC_FROM_BIN`]),
/// else the first match on `PATH`.
pub fn find_program(name: &str) -> Result<PathBuf, String> {
    let own_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    search_dirs(own_dir.as_deref(), &path_dirs)
        .iter()
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            format!(
                "cannot find {name}: not in {} nor {LIBEXEC_FROM_BIN} beside it nor on PATH",
                own_dir
                    .as_deref()
                    .map_or("(unknown directory)".into(), |d| d.display().to_string())
            )
        })
}

/// The directories [`find_program`] looks in, in order.
fn search_dirs(own_dir: Option<&Path>, path_dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(own) = own_dir {
        dirs.push(own.to_path_buf());
        // Lexically, so that /usr/bin gives /usr/libexec/skein whatever
        // /usr/bin is a link to (`/` has no parent, and no libexec).
        if let Some(up) = own.parent() {
            dirs.push(up.join(LIBEXEC_FROM_BIN.trim_start_matches("../")));
        }
    }
    dirs.extend(path_dirs.iter().cloned());
    dirs
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The services to run, each with `-c FILE` when the configuration came
/// from a file (children of a supervisor running on the embedded default
/// inherit its working directory and so resolve the same defaults).
pub fn service_specs(names: &[&str], source: &Source) -> Result<Vec<ServiceSpec>, String> {
    let args: Vec<OsString> = match source {
        Source::File(path) => vec!["-c".into(), path.clone().into_os_string()],
        Source::Embedded => Vec::new(),
    };
    names
        .iter()
        .map(|name| {
            Ok(ServiceSpec {
                name: (*name).to_owned(),
                program: find_program(name)?,
                args: args.clone(),
            })
        })
        .collect()
}

/// `skein start`: runs the services in the foreground until stopped.
pub fn start(config_path: Option<&Path>) -> u8 {
    let loaded = match Config::load(config_path) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("skein: {e}");
            return EX_CONFIG;
        }
    };
    // The files the services read at start, checked as they check them:
    // starting services that would refuse to run only to restart them
    // for ever helps no one.
    match skein_preflight::check(&loaded, skein_preflight::Reader::All) {
        Ok(checked) => {
            for warning in &checked.warnings {
                eprintln!("skein: warning: {warning}");
            }
        }
        Err(e) => {
            eprintln!("skein: {e}");
            return EX_CONFIG;
        }
    }
    // As root: the account the services become must exist, and own the
    // spool before any of them (or the pid file below) touches it.
    let account = match prepare::for_services(&loaded.config) {
        Ok(account) => account,
        Err(refusal) => {
            eprintln!("skein: {}", refusal.message);
            return refusal.code;
        }
    };
    let spool = match Spool::open(&loaded.config.spool.dir) {
        Ok(spool) => spool,
        Err(e) => {
            eprintln!("skein: {e}");
            return EX_CANTCREAT;
        }
    };
    let specs = match service_specs(SERVICES, &loaded.source) {
        Ok(specs) => specs,
        Err(e) => {
            eprintln!("skein: {e}");
            return EX_UNAVAILABLE;
        }
    };
    let mut options = DaemonOptions::new("skein");
    options.pid_file = Some(spool.pid_file(Daemon::Supervisor));
    // Waiting on a handful of children needs no more.
    options.worker_threads = Some(2);
    let source = loaded.source.to_string();
    let spool_dir = spool.root().to_path_buf();
    let restarts = &loaded.config.supervisor;
    let policy = Policy {
        initial_backoff: restarts.restart_delay,
        max_backoff: restarts.restart_delay_max,
        healthy_after: restarts.healthy_after,
        ..Policy::default()
    };
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refused_in = std::sync::Arc::clone(&refused);
    let code = skein_daemon::run(options, move |context| async move {
        tracing::info!(
            config = source.as_str(),
            services = SERVICES.join(" ").as_str(),
            run_as = account
                .as_ref()
                .map_or("(the invoking user)", |a| a.name.as_str()),
            "supervising"
        );
        context.ready();
        // A SIGHUP to the supervisor is a reload of every service.
        let mut reloads = context.reloads();
        let spool_dir = spool_dir.clone();
        tokio::spawn(async move {
            while reloads.changed().await.is_ok() {
                // Blocking: it asks the scheduler's control socket for its pid.
                let dir = spool_dir.clone();
                let Ok(signalled) =
                    tokio::task::spawn_blocking(move || reload::signal_daemons(&dir)).await
                else {
                    continue;
                };
                for s in signalled {
                    match s.result {
                        Ok(()) => {
                            tracing::info!(service = s.program, pid = s.pid, "reload requested")
                        }
                        Err(e) => {
                            tracing::warn!(service = s.program, pid = s.pid, error = %e, "cannot request a reload")
                        }
                    }
                }
            }
        });
        let reports = supervise(specs, policy, context.shutdown()).await;
        for report in &reports {
            tracing::info!(
                service = report.name.as_str(),
                starts = report.starts,
                unexpected_exits = report.exits.len(),
                "service stopped"
            );
        }
        if let Some(report) = reports.iter().find(|r| r.refused_config) {
            refused_in.store(true, std::sync::atomic::Ordering::SeqCst);
            eprintln!(
                "skein: {} refused its configuration (exit 78, its error is above): every service is stopped",
                report.name
            );
        }
        Ok(())
    });
    if refused.load(std::sync::atomic::Ordering::SeqCst) {
        return EX_CONFIG;
    }
    exit_status(code)
}

/// The number inside an `ExitCode`, which std does not expose: find the
/// `u8` that makes an equal one. skein-daemon only returns 0, 1 and 70.
fn exit_status(code: ExitCode) -> u8 {
    (0..=u8::MAX)
        .find(|&n| ExitCode::from(n) == code)
        .unwrap_or(EX_SOFTWARE)
}

/// `skein stop`: SIGTERM to the supervisor, then wait (bounded) until its
/// pid file lock is released. 0 when it stopped, 69 when none was running.
pub fn stop(config_path: Option<&Path>) -> u8 {
    let loaded = match Config::load(config_path) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("skein: {e}");
            return EX_CONFIG;
        }
    };
    let path = rendezvous::pid_file(&loaded.config.spool.dir, Daemon::Supervisor);
    let Some(pid) = PidFile::read_running(&path) else {
        eprintln!(
            "skein: skein is not running (no live process holds {})",
            path.display()
        );
        return EX_UNAVAILABLE;
    };
    // A pid above i32::MAX would become a negative pid, which kill(2)
    // reads as a process group: never send that.
    let Ok(raw) = i32::try_from(pid) else {
        eprintln!("skein: {} names an impossible pid {pid}", path.display());
        return EX_SOFTWARE;
    };
    match signal::kill(Pid::from_raw(raw), Signal::SIGTERM) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(Errno::EPERM) => {
            eprintln!("skein: not allowed to stop pid {pid} (run as its user or root)");
            return EX_NOPERM;
        }
        Err(e) => {
            eprintln!("skein: cannot signal pid {pid}: {e}");
            return EX_UNAVAILABLE;
        }
    }
    let deadline = Instant::now() + STOP_WAIT;
    while Instant::now() < deadline {
        if PidFile::read_running(&path) != Some(pid) {
            println!("skein: stopped (pid {pid})");
            return EX_OK;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "skein: pid {pid} is still running {}s after SIGTERM",
        STOP_WAIT.as_secs()
    );
    EX_TEMPFAIL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_recovers_the_number() {
        for n in [0u8, 1, 70, 255] {
            assert_eq!(exit_status(ExitCode::from(n)), n);
        }
    }

    #[test]
    fn specs_pass_the_configuration_file_on() {
        // `sh` is on PATH everywhere the tests run.
        let specs =
            service_specs(&["sh"], &Source::File("/etc/skein.toml".into())).expect("sh found");
        assert_eq!(specs[0].name, "sh");
        assert!(specs[0].program.ends_with("sh"));
        assert_eq!(
            specs[0].args,
            vec![OsString::from("-c"), "/etc/skein.toml".into()]
        );
        let specs = service_specs(&["sh"], &Source::Embedded).expect("sh found");
        assert!(specs[0].args.is_empty());
        let err = service_specs(&["skein-no-such-service"], &Source::Embedded).unwrap_err();
        assert!(
            err.starts_with("cannot find skein-no-such-service: not in "),
            "{err}"
        );
    }

    #[test]
    fn programs_are_sought_beside_skein_then_in_libexec_then_on_path() {
        assert_eq!(
            search_dirs(Some(Path::new("/usr/bin")), &[PathBuf::from("/opt/bin")]),
            vec![
                PathBuf::from("/usr/bin"),
                PathBuf::from("/usr/libexec/skein"),
                PathBuf::from("/opt/bin"),
            ]
        );
        assert_eq!(
            search_dirs(Some(Path::new("/")), &[]),
            vec![PathBuf::from("/")]
        );
        assert_eq!(
            search_dirs(None, &[PathBuf::from("/bin")]),
            vec![PathBuf::from("/bin")]
        );
    }

    #[test]
    fn pid_file_is_in_run() {
        assert_eq!(
            rendezvous::pid_file(Path::new("/var/spool/skein"), Daemon::Supervisor),
            Path::new("/var/spool/skein/run/skein.pid")
        );
    }
}
