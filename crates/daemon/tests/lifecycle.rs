//! A daemon's normal life under the skeleton, seen from outside: it
//! announces READY=1 to the notification socket, holds its pid file,
//! handles SIGHUP as a reload, and on SIGTERM sends STOPPING=1, drains,
//! releases the pid file and exits 0 — all with logfmt lines on stderr.

mod common;

use std::process::ExitCode;

use common::{Daemon, NotifyListener, PID_FILE_ENV, assert_logfmt_line};
use nix::sys::signal::Signal;
use skein_daemon::PidFile;

fn main() -> ExitCode {
    common::main_with(&[("ready_reload_stop", ready_reload_stop)])
}

fn ready_reload_stop() {
    let notify = NotifyListener::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_path = dir.path().join("demo.pid");
    let mut daemon = Daemon::spawn("serve", |command| {
        command
            .env("NOTIFY_SOCKET", notify.path())
            .env(PID_FILE_ENV, &pid_path);
    });

    assert_eq!(notify.expect("READY=1"), "READY=1");
    daemon.wait_for_line("msg=ready");
    assert_eq!(PidFile::read_running(&pid_path), Some(daemon.pid()));

    daemon.signal(Signal::SIGHUP);
    let line = daemon.wait_for_line("msg=\"reload requested\"");
    assert!(line.contains(" generation=1"), "{line}");
    let line = daemon.wait_for_line("msg=\"demo reloaded\"");
    assert!(
        line.ends_with(" msg=\"demo reloaded\" generation=1"),
        "{line}"
    );

    daemon.signal(Signal::SIGTERM);
    assert_eq!(notify.expect("STOPPING=1"), "STOPPING=1");
    let (status, lines) = daemon.wait_exit();
    assert_eq!(status, 0, "{}", lines.join("\n"));

    for line in &lines {
        assert_logfmt_line(line);
    }
    // The life story, in order.
    let order = [
        "msg=starting",
        "msg=ready",
        "msg=\"reload requested\"",
        "msg=\"demo reloaded\"",
        "msg=stopping reason=signal",
        "msg=\"demo drained\"",
        "msg=stopped status=0",
    ];
    let mut position = 0;
    for needle in order {
        let found = lines[position..]
            .iter()
            .position(|line| line.contains(needle))
            .unwrap_or_else(|| {
                panic!(
                    "{needle:?} missing or out of order in:\n{}",
                    lines.join("\n")
                )
            });
        position += found + 1;
    }
    assert_eq!(PidFile::read_running(&pid_path), None);
    assert!(!pid_path.exists(), "a clean stop removes the pid file");
}
