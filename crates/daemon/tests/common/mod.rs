//! Shared by the skeleton's integration tests: the demo services a child
//! process runs under [`skein_daemon::run`], and the parent's tools to start
//! such a child, signal it, and watch its log lines and notifications.
//!
//! Each test file is its own `harness = false` binary whose `main` either
//! runs the scenarios (parent) or, when `SKEIN_DAEMON_TEST_ROLE` is set,
//! becomes a daemon by returning `run(…)` from `main` — exactly as a skein
//! binary does, so the exit status checked is the real one.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use skein_daemon::{Context, DaemonOptions, LogFormat, ServiceError, run};

/// Selects the child's demo service.
pub const ROLE_ENV: &str = "SKEIN_DAEMON_TEST_ROLE";
/// The pid file the child should hold, if any.
pub const PID_FILE_ENV: &str = "SKEIN_DAEMON_TEST_PID_FILE";
/// The `prog=` of the demo daemon's log lines.
pub const PROGRAM: &str = "skein-daemon-demo";

/// Only a guard against a hung child turning into a hung test run; no
/// assertion depends on how fast anything happens.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// Runs the scenarios in the parent, or the demo daemon in a child.
pub fn main_with(scenarios: &[(&str, fn())]) -> ExitCode {
    if let Some(role) = std::env::var_os(ROLE_ENV) {
        return child_main(role);
    }
    for (name, scenario) in scenarios {
        print!("test {name} ... ");
        scenario();
        println!("ok");
    }
    ExitCode::SUCCESS
}

fn child_main(role: OsString) -> ExitCode {
    let options = DaemonOptions {
        program: PROGRAM,
        log_format: LogFormat::from_env(),
        user: None,
        pid_file: std::env::var_os(PID_FILE_ENV).map(PathBuf::from),
        worker_threads: Some(2),
    };
    match role.to_str() {
        Some("serve") => run(options, serve),
        Some("fail") => run(options, |_context| async {
            Err::<(), ServiceError>("demo failure: disk on fire".into())
        }),
        Some("panic") => run(options, |_context| async {
            tokio::task::yield_now().await;
            panic!("demo bug");
        }),
        Some("stubborn") => run(options, |context: Context| async move {
            context.ready();
            // Ignores the stop request: only a second signal ends it.
            std::future::pending::<()>().await;
            Ok(())
        }),
        other => {
            eprintln!("unknown test role {other:?}");
            ExitCode::FAILURE
        }
    }
}

/// A well-behaved service: ready, logs each reload, stops when asked.
async fn serve(context: Context) -> Result<(), ServiceError> {
    context.drop_privileges()?;
    let shutdown = context.shutdown();
    let mut reloads = context.reloads();
    context.ready();
    loop {
        tokio::select! {
            () = shutdown.wait() => break,
            changed = reloads.changed() => {
                changed?;
                let generation = *reloads.borrow_and_update();
                tracing::info!(generation, "demo reloaded");
            }
        }
    }
    tracing::info!("demo drained");
    Ok(())
}

/// A demo daemon running in a child process.
pub struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    /// Starts this test binary as the demo daemon `role`, logging logfmt.
    pub fn spawn(role: &str, configure: impl FnOnce(&mut Command)) -> Daemon {
        let mut command = Command::new(std::env::current_exe().expect("test binary"));
        command
            .env(ROLE_ENV, role)
            .env("SKEIN_LOG_FORMAT", "logfmt")
            .env("SKEIN_LOG", "info")
            // Whatever runs the tests must not leak its own service manager
            // into the child.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove(PID_FILE_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        configure(&mut command);
        let mut child = command.spawn().expect("spawn demo daemon");
        let stderr = child.stderr.take().expect("child stderr");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: Signal) {
        let pid = i32::try_from(self.child.id()).expect("pid fits in i32");
        signal::kill(Pid::from_raw(pid), signal).expect("signal the child");
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        if let Some(line) = self.seen.iter().find(|line| line.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line containing {needle:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for the child to exit; returns its status and every log line.
    pub fn wait_exit(mut self) -> (i32, Vec<String>) {
        let deadline = Instant::now() + HANG_GUARD;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("daemon did not exit; saw:\n{}", self.seen.join("\n"));
            }
            thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at EOF, which follows the exit.
        self.seen.extend(self.lines.iter());
        let code = status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {status:?}"));
        (code, std::mem::take(&mut self.seen))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A failed assertion must not leave a daemon behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A stand-in for systemd's notification socket.
pub struct NotifyListener {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl NotifyListener {
    /// Binds a datagram socket in a fresh temporary directory.
    pub fn new() -> NotifyListener {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        socket
            .set_read_timeout(Some(HANG_GUARD))
            .expect("read timeout");
        NotifyListener {
            socket,
            path,
            _dir: dir,
        }
    }

    /// The address to put in `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for a notification carrying the line `state` (e.g. `READY=1`),
    /// skipping others such as watchdog pings; returns the whole message.
    pub fn expect(&self, state: &str) -> String {
        let mut buffer = [0u8; 4096];
        let mut others = Vec::new();
        loop {
            let length = self
                .socket
                .recv(&mut buffer)
                .unwrap_or_else(|e| panic!("no {state} notification ({e}); got {others:?}"));
            let message = String::from_utf8_lossy(&buffer[..length]).into_owned();
            if message.lines().any(|line| line == state) {
                return message;
            }
            others.push(message);
        }
    }
}

/// Asserts that `line` has the logfmt shape: the fixed fields, in order.
pub fn assert_logfmt_line(line: &str) {
    let prefix = format!(" prog={PROGRAM} target=");
    // `ts=2026-11-29T00:00:00.123456Z level=`
    let timestamp = line
        .strip_prefix("ts=")
        .and_then(|rest| rest.split_once(' '))
        .map(|(ts, _)| ts);
    let ok = timestamp
        .is_some_and(|ts| ts.len() == 27 && ts.as_bytes()[10] == b'T' && ts.ends_with('Z'))
        && line.contains(" level=")
        && line.contains(&prefix);
    assert!(ok, "not a logfmt line: {line:?}");
}
