//! Running the services and keeping them running until told to stop.
//!
//! Each service gets a task: start the child, wait for it; if it exits
//! while we are not stopping, log why (exit status or signal) and start it
//! again after its back-off. On the stop request every task sends its
//! child SIGTERM and waits; a child still alive after the grace period gets
//! SIGKILL, sent to its whole process group so that nothing it started
//! outlives it.
//!
//! Children run in process groups of their own, so that a Ctrl-C on the
//! terminal reaches only the supervisor, which then stops them in order
//! (SIGTERM lets the scheduler shut its agents down cleanly, which a
//! terminal's SIGINT to everyone at once would not). And each child asks
//! the kernel for SIGTERM should the supervisor die (`PR_SET_PDEATHSIG`),
//! so that a `kill -9` of the supervisor does not leave orphans holding
//! the services' pid files against the next `skein start`.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use skein_daemon::Shutdown;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::backoff::{Backoff, Policy, Restart};

/// One service to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Its name in logs (`skein-router`).
    pub name: String,
    /// The executable.
    pub program: PathBuf,
    /// Its arguments (`-c FILE`).
    pub args: Vec<OsString>,
}

/// What happened to one service while it was supervised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceReport {
    /// The service's name.
    pub name: String,
    /// How many times a child was started.
    pub starts: u32,
    /// Why each child that ended on its own ended (`exit status 3`,
    /// `killed by signal 11 (SIGSEGV)`, `cannot start: …`), in order.
    pub exits: Vec<String>,
    /// The back-off waited (or begun) before each restart, in order.
    pub restart_delays: Vec<Duration>,
    /// How the last child ended when it was stopped, if one was running.
    pub stopped: Option<String>,
    /// The service exited `EX_CONFIG` (78): it refused its configuration,
    /// which a restart cannot fix; it was not restarted and every other
    /// service was stopped.
    pub refused_config: bool,
}

/// The exit status with which a daemon refuses its configuration
/// (sysexits' `EX_CONFIG`); systemd's units say the same with
/// `RestartPreventExitStatus=78`.
pub const EX_CONFIG: i32 = 78;

/// Runs every service until `shutdown` fires or one of them refuses its
/// configuration (exits [`EX_CONFIG`]), then stops them all and returns
/// what happened to each, in the order given.
pub async fn supervise(
    services: Vec<ServiceSpec>,
    policy: Policy,
    shutdown: Shutdown,
) -> Vec<ServiceReport> {
    // Set by a service that refuses its configuration: every service
    // stops, as on the stop request.
    let (refused, _) = watch::channel(false);
    let refused = std::sync::Arc::new(refused);
    let tasks: Vec<_> = services
        .into_iter()
        .map(|spec| {
            let name = spec.name.clone();
            let stop = Stop {
                shutdown: shutdown.clone(),
                refused: std::sync::Arc::clone(&refused),
            };
            let task = tokio::spawn(run_service(spec, policy, stop));
            (name, task)
        })
        .collect();
    let mut reports = Vec::with_capacity(tasks.len());
    for (name, task) in tasks {
        match task.await {
            Ok(report) => reports.push(report),
            Err(e) => {
                // A panicked task is our bug. Its child, if one was
                // running, is left alone: it gets SIGTERM from the kernel
                // when the supervisor exits (PR_SET_PDEATHSIG).
                error!(service = name.as_str(), error = %e, "supervisor task failed (a bug)");
                reports.push(ServiceReport {
                    name,
                    exits: vec![format!("supervisor task failed: {e}")],
                    ..ServiceReport::default()
                });
            }
        }
    }
    reports
}

/// What ends a service's supervision: the stop request, or another
/// service's refusal of the configuration.
struct Stop {
    shutdown: Shutdown,
    refused: std::sync::Arc<watch::Sender<bool>>,
}

impl Stop {
    fn is_triggered(&self) -> bool {
        self.shutdown.is_triggered() || *self.refused.borrow()
    }

    async fn wait(&self) {
        let mut refused = self.refused.subscribe();
        tokio::select! {
            () = self.shutdown.wait() => {}
            _ = refused.wait_for(|&r| r) => {}
        }
    }
}

async fn run_service(spec: ServiceSpec, policy: Policy, shutdown: Stop) -> ServiceReport {
    let name = spec.name.as_str();
    let mut report = ServiceReport {
        name: spec.name.clone(),
        ..ServiceReport::default()
    };
    let mut backoff = Backoff::new(policy);
    while !shutdown.is_triggered() {
        let started = Instant::now();
        match spawn(&spec) {
            Ok(mut child) => {
                report.starts += 1;
                let pid = child.id().unwrap_or(0);
                info!(service = name, pid, "started");
                // `Child::wait` is cancel-safe: losing the race to the stop
                // request loses no exit status.
                let exited = tokio::select! {
                    status = child.wait() => Some(status),
                    () = shutdown.wait() => None,
                };
                match exited {
                    Some(status) => {
                        let refused = matches!(&status, Ok(s) if s.code() == Some(EX_CONFIG));
                        let why = match status {
                            Ok(status) => describe(status),
                            Err(e) => format!("cannot wait for it: {e}"),
                        };
                        if refused {
                            error!(
                                service = name,
                                pid,
                                status = why.as_str(),
                                "refused its configuration (its error is above): not restarted; \
                                 stopping every service (fix it, run `skein config check`, start again)"
                            );
                            report.exits.push(why);
                            report.refused_config = true;
                            shutdown.refused.send_replace(true);
                            break;
                        }
                        warn!(
                            service = name,
                            pid,
                            status = why.as_str(),
                            ran_secs = started.elapsed().as_secs(),
                            "exited unexpectedly"
                        );
                        report.exits.push(why);
                    }
                    None => {
                        report.stopped = Some(stop(&mut child, name, policy.stop_grace).await);
                        break;
                    }
                }
            }
            Err(e) => {
                error!(
                    service = name,
                    program = %spec.program.display(),
                    error = %e,
                    "cannot start"
                );
                report.exits.push(format!("cannot start: {e}"));
            }
        }
        let Restart { delay, why } = backoff.after_exit(started.elapsed());
        report.restart_delays.push(delay);
        let why = why.to_string();
        if delay.is_zero() {
            info!(service = name, why = why.as_str(), "restarting at once");
        } else {
            warn!(
                service = name,
                delay_ms = delay.as_millis() as u64,
                why = why.as_str(),
                "restarting after back-off"
            );
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.wait() => break,
        }
    }
    report
}

/// Starts one child: stdin `/dev/null`, stdout and stderr inherited (the
/// services log to stderr), its own process group, SIGTERM if we die.
///
/// Linux sends the death signal when the *thread* that forked the child
/// exits; here that is a runtime worker thread, and the runtime outlives
/// every child it supervises, so the signal comes only with the process's
/// own end.
fn spawn(spec: &ServiceSpec) -> io::Result<Child> {
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .stdin(Stdio::null())
        .process_group(0);
    let supervisor = std::process::id();
    // SAFETY: between fork and exec the closure calls only prctl(2) and
    // getppid(2), both async-signal-safe, and allocates nothing (the error
    // paths build io::Errors from raw codes, which do not allocate).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The supervisor may have died before the prctl took effect:
            // then nobody would ever stop this child.
            if libc::getppid() as u32 != supervisor {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Stops a running child: SIGTERM, then after `grace` SIGKILL to its
/// process group. Returns how it ended.
async fn stop(child: &mut Child, name: &str, grace: Duration) -> String {
    let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) else {
        return "already exited".into();
    };
    info!(service = name, pid, "stopping (SIGTERM)");
    // ESRCH: it is exiting on its own; the wait below collects it.
    let _ = signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(status)) => {
            let why = describe(status);
            info!(service = name, pid, status = why.as_str(), "stopped");
            why
        }
        Ok(Err(e)) => format!("cannot wait for it: {e}"),
        Err(_) => {
            warn!(
                service = name,
                pid,
                grace_secs = grace.as_secs(),
                "did not stop in time: SIGKILL to its process group"
            );
            // The child has not been reaped (the wait did not finish), so
            // its pid, and the group id equal to it, cannot have been
            // reused by another process.
            let _ = signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
            match child.wait().await {
                Ok(status) => format!("killed after {:?}: {}", grace, describe(status)),
                Err(e) => format!("cannot wait for it: {e}"),
            }
        }
    }
}

/// `exit status 3`, or `killed by signal 11 (SIGSEGV)` (with `, core
/// dumped` when it did).
pub fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(number) => {
            let name = Signal::try_from(number)
                .map(Signal::as_str)
                .unwrap_or("unknown signal");
            let core = if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            };
            format!("killed by signal {number} ({name}){core}")
        }
        None => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_daemon::Context;
    use std::path::Path;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn quick_policy() -> Policy {
        Policy {
            initial_backoff: ms(10),
            max_backoff: ms(40),
            healthy_after: Duration::from_secs(3600),
            stop_grace: Duration::from_secs(20),
        }
    }

    /// A service that runs `script` with `sh -c`.
    fn sh(name: &str, script: String) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Polls until `done` (generous deadline: a loaded machine must not
    /// fail the test, a broken supervisor must not hang it).
    async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..6000 {
            if done() {
                return;
            }
            tokio::time::sleep(ms(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[test]
    fn describes_statuses() {
        let table = [
            (ExitStatus::from_raw(0), "exit status 0"),
            (ExitStatus::from_raw(3 << 8), "exit status 3"),
            (ExitStatus::from_raw(9), "killed by signal 9 (SIGKILL)"),
            (
                ExitStatus::from_raw(11 | 0x80),
                "killed by signal 11 (SIGSEGV), core dumped",
            ),
        ];
        for (status, want) in table {
            assert_eq!(describe(status), want);
        }
    }

    #[tokio::test]
    async fn a_crashing_child_is_restarted_with_growing_backoff() {
        let dir = tempfile::tempdir().expect("tempdir");
        let starts = dir.path().join("starts");
        let crashing = sh(
            "crasher",
            format!("echo started >> '{}'; exit 3", starts.display()),
        );
        let (context, control) = Context::standalone("test");
        let supervisor = tokio::spawn(supervise(
            vec![crashing],
            quick_policy(),
            context.shutdown(),
        ));
        wait_until("five starts", || lines(&starts).len() >= 5).await;
        control.trigger_shutdown();
        let reports = supervisor.await.expect("supervisor finished");
        let report = &reports[0];
        assert_eq!(report.name, "crasher");
        assert!(report.starts >= 5, "{report:?}");
        assert!(report.exits.len() >= 4, "{report:?}");
        assert!(
            report.exits.iter().all(|why| why == "exit status 3"),
            "{report:?}"
        );
        assert_eq!(
            report.restart_delays[..4],
            [ms(10), ms(20), ms(40), ms(40)],
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn a_child_that_ran_well_is_restarted_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let starts = dir.path().join("starts");
        let crashing = sh(
            "crasher",
            format!("echo started >> '{}'; exit 1", starts.display()),
        );
        let policy = Policy {
            healthy_after: Duration::ZERO,
            ..quick_policy()
        };
        let (context, control) = Context::standalone("test");
        let supervisor = tokio::spawn(supervise(vec![crashing], policy, context.shutdown()));
        wait_until("four starts", || lines(&starts).len() >= 4).await;
        control.trigger_shutdown();
        let reports = supervisor.await.expect("supervisor finished");
        assert!(
            reports[0].restart_delays.iter().all(|d| d.is_zero()),
            "{reports:?}"
        );
    }

    #[tokio::test]
    async fn a_service_refusing_its_configuration_stops_all_and_is_not_restarted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let starts = dir.path().join("starts");
        let refusing = sh(
            "refuser",
            format!("echo started >> '{}'; sleep 0.2; exit 78", starts.display()),
        );
        let running = sh("runner", "exec sleep 60".into());
        let (context, _control) = Context::standalone("test");
        // No stop request: the refusal alone ends the supervision.
        let reports = supervise(vec![refusing, running], quick_policy(), context.shutdown()).await;
        assert_eq!(lines(&starts).len(), 1, "not restarted");
        assert!(reports[0].refused_config, "{reports:?}");
        assert_eq!(reports[0].exits, ["exit status 78"], "{reports:?}");
        assert!(reports[0].restart_delays.is_empty(), "{reports:?}");
        assert!(!reports[1].refused_config, "{reports:?}");
        assert_eq!(reports[1].starts, 1, "{reports:?}");
        assert!(
            reports[1]
                .stopped
                .as_deref()
                .is_some_and(|s| s.contains("SIGTERM") || s.contains("signal 15")),
            "the other service was stopped: {reports:?}"
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_retried_not_fatal() {
        let (context, control) = Context::standalone("test");
        let missing = ServiceSpec {
            name: "ghost".into(),
            program: "/nonexistent/skein-ghost".into(),
            args: vec![],
        };
        let supervisor = tokio::spawn(supervise(vec![missing], quick_policy(), context.shutdown()));
        tokio::time::sleep(ms(100)).await;
        control.trigger_shutdown();
        let reports = supervisor.await.expect("supervisor finished");
        let report = &reports[0];
        assert_eq!(report.starts, 0);
        assert!(!report.exits.is_empty());
        assert!(report.exits[0].starts_with("cannot start: "), "{report:?}");
        assert_eq!(report.stopped, None);
    }

    #[tokio::test]
    async fn stop_sends_sigterm_to_every_child_and_waits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = |n: &str| dir.path().join(n);
        let polite = |name: &str| {
            let file = log(name);
            sh(
                name,
                format!(
                    "trap 'echo term >> \"{f}\"; exit 0' TERM; echo up >> \"{f}\"; while :; do sleep 0.05; done",
                    f = file.display()
                ),
            )
        };
        let (context, control) = Context::standalone("test");
        let supervisor = tokio::spawn(supervise(
            vec![polite("one"), polite("two")],
            quick_policy(),
            context.shutdown(),
        ));
        wait_until("both children up", || {
            lines(&log("one")) == ["up"] && lines(&log("two")) == ["up"]
        })
        .await;
        control.trigger_shutdown();
        let reports = supervisor.await.expect("supervisor finished");
        for (report, name) in reports.iter().zip(["one", "two"]) {
            assert_eq!(report.name, name);
            assert_eq!(report.starts, 1, "{report:?}");
            assert!(report.exits.is_empty(), "{report:?}");
            assert_eq!(
                report.stopped.as_deref(),
                Some("exit status 0"),
                "{report:?}"
            );
            assert_eq!(lines(&log(name)), ["up", "term"]);
        }
    }

    #[tokio::test]
    async fn a_child_ignoring_sigterm_is_killed_with_its_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let up = dir.path().join("up");
        let grandchild = dir.path().join("grandchild");
        let stubborn = sh(
            "stubborn",
            format!(
                "trap '' TERM; sleep 1000 & echo $! > '{g}'; echo up > '{u}'; while :; do sleep 0.05; done",
                g = grandchild.display(),
                u = up.display()
            ),
        );
        let policy = Policy {
            stop_grace: ms(200),
            ..quick_policy()
        };
        let (context, control) = Context::standalone("test");
        let supervisor = tokio::spawn(supervise(vec![stubborn], policy, context.shutdown()));
        wait_until("the child up", || {
            up.exists() && !lines(&grandchild).is_empty()
        })
        .await;
        let grandchild: i32 = lines(&grandchild)[0].parse().expect("a pid");
        control.trigger_shutdown();
        let reports = supervisor.await.expect("supervisor finished");
        let stopped = reports[0].stopped.clone().unwrap_or_default();
        assert!(
            stopped.starts_with("killed after") && stopped.ends_with("(SIGKILL)"),
            "{stopped}"
        );
        // The grandchild was in the group: it is gone, or a zombie waiting
        // for whoever adopted it to reap it — dead either way.
        let dead = || match std::fs::read_to_string(format!("/proc/{grandchild}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z')),
        };
        wait_until("the grandchild dead", dead).await;
    }
}
