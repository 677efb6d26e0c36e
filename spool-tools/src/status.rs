//! `skein status`: is the supervisor running (the lock on its pid file,
//! `run/skein.pid`), and what does the scheduler say
//! (`ControlRequest::Status` on `run/scheduler.sock`; both named by
//! `skein_spool::rendezvous`).
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
}

/// Reports on the supervisor holding `pid_file` and the scheduler at
/// `socket`.
pub fn run(
    pid_file: &Path,
    socket: &Path,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let supervisor = PidFile::read_running(pid_file);
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
    let printed = if json {
        json::render(&StatusView {
            supervisor_pid: supervisor,
            scheduler: status.as_ref().map(json::SchedulerView::from),
            scheduler_error: failure.as_ref().map(|(why, _)| why.clone()),
            scheduler_socket: socket.display().to_string(),
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
    use skein_spool::{Daemon, rendezvous};

    fn status() -> SchedulerStatus {
        SchedulerStatus {
            pid: 4242,
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

    fn run_with(pid_file: &Path, socket: &Path, json: bool) -> (u8, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(pid_file, socket, json, &mut out, &mut err);
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
        let (code, out, err) = run_with(&supervisor_pid_file(dir.path()), &socket, false);
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
        let (code, out, err) = run_with(&pid_file, &socket, false);
        assert_eq!((code, err.as_str()), (0, ""));
        assert!(
            out.starts_with(&format!(
                "supervisor: running (pid {})\n",
                std::process::id()
            )),
            "{out}"
        );
    }

    #[test]
    fn scheduler_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = supervisor_pid_file(dir.path());
        for json in [false, true] {
            let fake =
                FakeScheduler::start(Script::Answer(vec![ControlResponse::Status(status())]));
            let (code, out, err) = run_with(&pid_file, &fake.socket, json);
            assert_eq!((code, err.as_str()), (0, ""));
            if json {
                let value: serde_json::Value = serde_json::from_str(&out).expect("JSON");
                assert_eq!(value["supervisor_pid"], serde_json::Value::Null);
                assert_eq!(value["scheduler"]["pid"], 4242);
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
        let (code, _, err) = run_with(&supervisor_pid_file(dir.path()), &fake.socket, false);
        assert_eq!(code, 75);
        assert_eq!(err, "skein: the scheduler refused: shutting down\n");
    }
}
