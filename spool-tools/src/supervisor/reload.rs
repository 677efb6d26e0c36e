//! `skein reload`: every running daemon re-reads the configuration.
//!
//! **Job.** Checks the configuration file the way `skein config check`
//! does (the same parser and [`skein_preflight::check`] for every
//! daemon), and only if it passes sends SIGHUP to each running daemon of
//! the spool: `skein-smtpd` and `skein-router` (their pid files in
//! `run/`) and `skein-scheduler` (its pid from its status answer on the
//! control socket). Each daemon then checks the file again itself, as its
//! own user, applies what it can without dropping a session or losing a
//! message, and logs `reloaded changed=N keys="…"` — or `reload refused`
//! with the file, line and key, keeping the configuration it had.
//! `skein start` forwards a SIGHUP it receives the same way
//! ([`signal_daemons`]); under systemd `systemctl reload skein.target`
//! reaches every unit (`PropagatesReloadTo=`), whose `ExecReload=` sends
//! the same signal.
//!
//! **Exit status.** 0 when every running daemon was signalled; 78 when
//! the file fails the check (nothing is signalled); 69 when no daemon
//! runs; 77 when one may not be signalled (run as its user or root).

use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use skein_config::Config;
use skein_daemon::PidFile;
use skein_proto::{ControlRequest, ControlResponse};
use skein_spool::rendezvous::{self, Daemon};

use crate::control::EX_NOPERM;
use crate::sysexits::*;

/// One daemon signalled, or not.
#[derive(Debug)]
pub struct Signalled {
    /// Its program name.
    pub program: &'static str,
    /// Its pid.
    pub pid: u32,
    /// What kill(2) said.
    pub result: Result<(), Errno>,
}

/// The daemons a reload signals, in the order it signals them.
pub const DAEMONS: [&str; 3] = ["skein-smtpd", "skein-router", "skein-scheduler"];

/// Sends SIGHUP to every skein daemon running on the spool at
/// `spool_dir`; the ones not running are left out.
pub fn signal_daemons(spool_dir: &Path) -> Vec<Signalled> {
    let scheduler = rendezvous::scheduler_socket(spool_dir);
    let scheduler_pid = match crate::control::request_blocking(&scheduler, &ControlRequest::Status)
    {
        Ok(ControlResponse::Status(status)) => Some(status.pid),
        _ => None,
    };
    let daemons = [
        (
            "skein-smtpd",
            PidFile::read_running(rendezvous::pid_file(spool_dir, Daemon::Smtpd)),
        ),
        (
            "skein-router",
            PidFile::read_running(rendezvous::pid_file(spool_dir, Daemon::Router)),
        ),
        ("skein-scheduler", scheduler_pid),
    ];
    daemons
        .into_iter()
        .filter_map(|(program, pid)| pid.map(|pid| (program, pid)))
        .map(|(program, pid)| Signalled {
            program,
            pid,
            // A pid above i32::MAX would be a process group to kill(2).
            result: i32::try_from(pid)
                .map_err(|_| Errno::ESRCH)
                .and_then(|raw| signal::kill(Pid::from_raw(raw), Signal::SIGHUP)),
        })
        .collect()
}

/// `skein reload`; see the module's header.
pub fn reload(config_path: Option<&Path>) -> u8 {
    let checked = Config::load(config_path).and_then(|loaded| {
        skein_preflight::check(&loaded, skein_preflight::Reader::All)
            .map(|checked| (loaded, checked))
    });
    let (loaded, checked) = match checked {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("skein: {e}");
            eprintln!("skein: reload not requested: the daemons keep the configuration they have");
            return EX_CONFIG;
        }
    };
    for warning in &checked.warnings {
        eprintln!("skein: warning: {warning}");
    }
    let signalled = signal_daemons(&loaded.config.spool.dir);
    if signalled.is_empty() {
        eprintln!(
            "skein: no skein daemon is running on {}",
            loaded.config.spool.dir.display()
        );
        return EX_UNAVAILABLE;
    }
    for program in DAEMONS {
        if !signalled.iter().any(|s| s.program == program) {
            println!("skein: {program} is not running here: not signalled");
        }
    }
    let mut status = EX_OK;
    for s in &signalled {
        match s.result {
            Ok(()) | Err(Errno::ESRCH) => {
                println!("skein: reload requested of {} (pid {})", s.program, s.pid)
            }
            Err(Errno::EPERM) => {
                eprintln!(
                    "skein: not allowed to signal {} (pid {}): run as its user or root",
                    s.program, s.pid
                );
                status = EX_NOPERM;
            }
            Err(e) => {
                eprintln!("skein: cannot signal {} (pid {}): {e}", s.program, s.pid);
                status = EX_UNAVAILABLE;
            }
        }
    }
    if status == EX_OK {
        println!(
            "skein: each daemon logs `reloaded` with the settings it changed, or `reload refused` with the reason"
        );
    }
    status
}
