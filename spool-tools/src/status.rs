//! `skein status`: is the supervisor running (the lock on its pid file,
//! `run/skein.pid`), and what does the scheduler say
//! (`ControlRequest::Status` on `run/scheduler.sock`; both named by
//! `skein_spool::rendezvous`).
//!
//! It also lists skein's processes and the account each runs as (read from
//! `/proc`): the supervisor, the router and the SMTP server by their pid
//! files, the scheduler by its own answer, and the transport agents as the
//! scheduler's children — so that an admin sees at a glance that nothing
//! but the supervisor is root.
//!
//! Exit status: 0 when either runs (a scheduler under systemd has no
//! supervisor; a supervisor may be between two starts of the scheduler),
//! 69 when neither does, or the client error's own status when no
//! supervisor runs and the scheduler's socket answered badly.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use skein_daemon::PidFile;
use skein_proto::{ControlRequest, ControlResponse};
use skein_spool::{Daemon, rendezvous};

use crate::control::{self, ClientError};
use crate::queue::{exit_for, json, text};
use crate::sysexits::EX_OK;

/// What `skein status --json` prints.
#[derive(Debug, Serialize)]
struct StatusView<'a> {
    /// The supervisor's pid, if it runs.
    supervisor_pid: Option<u32>,
    /// The scheduler's answer, if it gave one.
    scheduler: Option<json::SchedulerView<'a>>,
    /// Why the scheduler gave none.
    scheduler_error: Option<String>,
    /// The socket asked.
    scheduler_socket: String,
    /// skein's running processes and their users.
    processes: Vec<Process>,
}

/// One running skein process, as `/proc` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Process {
    /// Its program (`skein-router`; `skein` for the supervisor).
    pub program: String,
    /// Its pid.
    pub pid: u32,
    /// Its effective uid.
    pub uid: u32,
    /// That uid's user name (`uid<N>` when it has none).
    pub user: String,
}

impl Process {
    /// The process `pid`, if it is alive and `/proc` can be read; its
    /// program is the kernel's name for it (`comm`).
    pub fn read(pid: u32) -> Option<Process> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(str::trim)
        };
        let program = field("Name:")?.to_owned();
        // Uid: real effective saved filesystem.
        let uid: u32 = field("Uid:")?.split_whitespace().nth(1)?.parse().ok()?;
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(|| format!("uid{uid}"), |u| u.name);
        Some(Process {
            program,
            pid,
            uid,
            user,
        })
    }

    /// The live children of `parent`, in pid order.
    pub fn children(parent: u32) -> Vec<Process> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut pids: Vec<u32> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&pid| parent_of(pid) == Some(parent))
            .collect();
        pids.sort_unstable();
        pids.into_iter().filter_map(Process::read).collect()
    }
}

/// The parent pid in `/proc/<pid>/stat` (after the `(comm)` field, which
/// may itself contain spaces and parentheses).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// skein's processes on the spool at `spool`: those with pid files, then
/// the scheduler (`scheduler_pid`, from its status answer) and its agents.
pub fn processes(spool: &Path, scheduler_pid: Option<u32>) -> Vec<Process> {
    let mut found: Vec<Process> = [Daemon::Supervisor, Daemon::Router, Daemon::Smtpd]
        .into_iter()
        .filter_map(|daemon| PidFile::read_running(rendezvous::pid_file(spool, daemon)))
        .filter_map(Process::read)
        .collect();
    if let Some(pid) = scheduler_pid
        && let Some(scheduler) = Process::read(pid)
    {
        found.push(scheduler);
        found.extend(Process::children(pid));
    }
    found
}

/// The text lines for [`processes`].
fn processes_text(processes: &[Process]) -> String {
    if processes.is_empty() {
        return String::new();
    }
    let mut lines = "processes:\n".to_owned();
    for p in processes {
        lines.push_str(&format!(
            "  {:<16} pid {:<8} user {} (uid {})\n",
            text::one_line(&p.program),
            p.pid,
            text::one_line(&p.user),
            p.uid
        ));
    }
    lines
}

/// Reports on the supervisor of the spool at `spool` (its pid file) and
/// the scheduler at `socket`.
pub fn run(
    spool: &Path,
    socket: &Path,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let supervisor = PidFile::read_running(rendezvous::pid_file(spool, Daemon::Supervisor));
    let answer = control::request_blocking(socket, &ControlRequest::Status);
    // The scheduler's status, or why there is none and the exit status
    // that goes with it.
    let (status, failure) = match answer {
        Ok(ControlResponse::Status(status)) => (Some(status), None),
        Ok(ControlResponse::Error(e)) => (
            None,
            Some((
                format!("the scheduler refused: {}", text::one_line(&e.message)),
                exit_for(e.kind),
            )),
        ),
        Ok(other) => {
            let e = ClientError::Unexpected {
                request: ControlRequest::Status.name(),
                got: control::response_name(&other),
            };
            (None, Some((e.to_string(), e.exit_code())))
        }
        Err(e) => (None, Some((e.to_string(), e.exit_code()))),
    };
    let running = processes(spool, status.as_ref().map(|s| s.pid));
    let printed = if json {
        json::render(&StatusView {
            supervisor_pid: supervisor,
            scheduler: status.as_ref().map(json::SchedulerView::from),
            scheduler_error: failure.as_ref().map(|(why, _)| why.clone()),
            scheduler_socket: socket.display().to_string(),
            processes: running,
        })
    } else {
        let mut lines = match supervisor {
            Some(pid) => format!("supervisor: running (pid {pid})\n"),
            None => "supervisor: not running\n".to_owned(),
        };
        if let Some(status) = &status {
            lines.push_str(&text::scheduler_status(status));
        }
        if let Some((why, _)) = &failure {
            lines.push_str(&format!("scheduler: {why}\n"));
        }
        lines.push_str(&processes_text(&running));
        lines
    };
    let _ = out.write_all(printed.as_bytes());
    match failure {
        Some((why, code)) if supervisor.is_none() => {
            let _ = writeln!(err, "skein: {why}");
            code
        }
        _ => EX_OK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::fake::{FakeScheduler, Script};
    use skein_proto::{ControlError, ControlErrorKind, SchedulerStatus};

    fn status() -> SchedulerStatus {
        SchedulerStatus {
            // Above any pid_max: no process to list.
            pid: u32::MAX,
            version: "0.1.0".into(),
            uptime_secs: 61,
            messages: 1,
            recipients: 2,
            threads: 3,
            agents: 4,
        }
    }

    fn supervisor_pid_file(spool: &Path) -> std::path::PathBuf {
        rendezvous::pid_file(spool, Daemon::Supervisor)
    }

    fn run_with(spool: &Path, socket: &Path, json: bool) -> (u8, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(spool, socket, json, &mut out, &mut err);
        (
            code,
            String::from_utf8(out).expect("utf-8"),
            String::from_utf8(err).expect("utf-8"),
        )
    }

    #[test]
    fn nothing_running_is_69() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = rendezvous::scheduler_socket(dir.path());
        let (code, out, err) = run_with(dir.path(), &socket, false);
        assert_eq!(code, 69);
        assert_eq!(
            out,
            format!(
                "supervisor: not running\nscheduler: the scheduler is not running ({})\n",
                socket.display()
            )
        );
        assert_eq!(
            err,
            format!(
                "skein: the scheduler is not running ({})\n",
                socket.display()
            )
        );
    }

    #[test]
    fn supervisor_alone_is_running() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = supervisor_pid_file(dir.path());
        std::fs::create_dir_all(rendezvous::run_dir(dir.path())).expect("run/");
        let _held = PidFile::acquire(&pid_file).expect("pid file");
        let socket = rendezvous::scheduler_socket(dir.path());
        let (code, out, err) = run_with(dir.path(), &socket, false);
        assert_eq!((code, err.as_str()), (0, ""));
        assert!(
            out.starts_with(&format!(
                "supervisor: running (pid {})\n",
                std::process::id()
            )),
            "{out}"
        );
        // The holder of the pid file is listed with its user.
        let me = Process::read(std::process::id()).expect("own /proc entry");
        assert_eq!(me.uid, nix::unistd::geteuid().as_raw());
        assert!(
            out.contains(&format!(
                "processes:\n  {:<16} pid {:<8} user {} (uid {})\n",
                me.program, me.pid, me.user, me.uid
            )),
            "{out}"
        );
    }

    #[test]
    fn scheduler_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        for json in [false, true] {
            let fake =
                FakeScheduler::start(Script::Answer(vec![ControlResponse::Status(status())]));
            let (code, out, err) = run_with(dir.path(), &fake.socket, json);
            assert_eq!((code, err.as_str()), (0, ""));
            if json {
                let value: serde_json::Value = serde_json::from_str(&out).expect("JSON");
                assert_eq!(value["supervisor_pid"], serde_json::Value::Null);
                assert_eq!(value["scheduler"]["pid"], u32::MAX);
                assert_eq!(value["processes"], serde_json::json!([]));
                assert_eq!(value["scheduler"]["agents"], 4);
                assert_eq!(value["scheduler_error"], serde_json::Value::Null);
            } else {
                assert_eq!(
                    out,
                    format!(
                        "supervisor: not running\n{}",
                        text::scheduler_status(&status())
                    )
                );
            }
            assert_eq!(fake.requests(), vec![ControlRequest::Status]);
        }
    }

    #[test]
    fn scheduler_refusing_without_supervisor_is_its_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake =
            FakeScheduler::start(Script::Answer(vec![ControlResponse::Error(ControlError {
                kind: ControlErrorKind::Unavailable,
                message: "shutting down".into(),
            })]));
        let (code, _, err) = run_with(dir.path(), &fake.socket, false);
        assert_eq!(code, 75);
        assert_eq!(err, "skein: the scheduler refused: shutting down\n");
    }

    #[test]
    fn children_are_found_with_their_program() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let children = Process::children(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            children
                .iter()
                .any(|p| p.pid == child.id() && p.program == "sleep"),
            "{children:?}"
        );
        assert_eq!(parent_of(child.id()), None, "reaped: gone from /proc");
    }
}
