//! How a daemon's end maps to its exit status, seen from outside: a
//! service error exits 1, a panic 70 with a one-line log instead of the
//! default panic text, a second SIGTERM cuts a slow stop short with 1, and
//! a held pid file stops a second instance before it starts.

mod common;

use std::process::ExitCode;

use common::{Daemon, NotifyListener, PID_FILE_ENV, assert_logfmt_line};
use nix::sys::signal::Signal;
use skein_daemon::{EXIT_FAILURE, EXIT_SOFTWARE, PidFile};

fn main() -> ExitCode {
    common::main_with(&[
        ("service_error_exits_1", service_error_exits_1),
        ("service_panic_exits_70", service_panic_exits_70),
        ("second_stop_signal_exits_now", second_stop_signal_exits_now),
        (
            "held_pid_file_refuses_to_start",
            held_pid_file_refuses_to_start,
        ),
    ])
}

fn service_error_exits_1() {
    let (status, lines) = Daemon::spawn("fail", |_| {}).wait_exit();
    assert_eq!(status, i32::from(EXIT_FAILURE), "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|line| line.contains(
            "level=error prog=skein-daemon-demo target=skein_daemon::skeleton msg=\"service failed\" error=\"demo failure: disk on fire\""
        )),
        "{}",
        lines.join("\n")
    );
    assert!(
        lines
            .iter()
            .any(|line| line.ends_with("msg=stopped status=1"))
    );
    lines.iter().for_each(|line| assert_logfmt_line(line));
}

fn service_panic_exits_70() {
    let (status, lines) = Daemon::spawn("panic", |command| {
        command.env_remove("RUST_BACKTRACE");
    })
    .wait_exit();
    assert_eq!(status, i32::from(EXIT_SOFTWARE), "{}", lines.join("\n"));
    // The hook's line says where; the skeleton's says what it did about it.
    let hook = lines
        .iter()
        .find(|line| line.contains("msg=panic panic=\"demo bug\""))
        .unwrap_or_else(|| panic!("no panic line in:\n{}", lines.join("\n")));
    assert!(
        hook.contains(" location=") && hook.contains("common/mod.rs"),
        "{hook}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.contains("msg=\"service panicked\" panic=\"demo bug\""))
    );
    // No multi-line default panic text: every line is a log line.
    lines.iter().for_each(|line| assert_logfmt_line(line));
}

fn second_stop_signal_exits_now() {
    let notify = NotifyListener::new();
    let mut daemon = Daemon::spawn("stubborn", |command| {
        command.env("NOTIFY_SOCKET", notify.path());
    });
    notify.expect("READY=1");
    daemon.signal(Signal::SIGTERM);
    notify.expect("STOPPING=1");
    daemon.wait_for_line("msg=stopping reason=signal");
    daemon.signal(Signal::SIGTERM);
    let (status, lines) = daemon.wait_exit();
    assert_eq!(status, i32::from(EXIT_FAILURE), "{}", lines.join("\n"));
    assert!(
        lines
            .iter()
            .any(|line| line.contains("level=warn") && line.contains("second stop signal"))
    );
    assert!(!lines.iter().any(|line| line.contains("msg=stopped")));
}

fn held_pid_file_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_path = dir.path().join("demo.pid");
    let held = PidFile::acquire(&pid_path).expect("parent takes the pid file");
    let notify = NotifyListener::new();
    let (status, lines) = Daemon::spawn("serve", |command| {
        command
            .env("NOTIFY_SOCKET", notify.path())
            .env(PID_FILE_ENV, &pid_path);
    })
    .wait_exit();
    assert_eq!(status, i32::from(EXIT_FAILURE), "{}", lines.join("\n"));
    let expected = format!("is locked by pid {}", std::process::id());
    assert!(
        lines
            .iter()
            .any(|line| line.contains("msg=\"cannot start\"") && line.contains(&expected)),
        "{}",
        lines.join("\n")
    );
    assert!(!lines.iter().any(|line| line.contains("msg=ready")));
    // The refused instance must not have touched the holder's file.
    assert_eq!(PidFile::read_running(&pid_path), Some(std::process::id()));
    drop(held);
}
