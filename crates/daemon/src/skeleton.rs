//! The one function every skein daemon's `main` ends in.
//!
//! [`run`] does, in order: logging, the pid file lock, the async runtime,
//! signal handlers, then the service. While the service runs it turns
//! SIGTERM/SIGINT into the [`crate::Shutdown`] request and SIGHUP into a
//! reload tick; when the service returns it maps the outcome to the exit
//! status a supervisor reads:
//!
//! | status | meaning |
//! |---|---|
//! | 0 | the service returned `Ok` (normally after a stop request) |
//! | 1 ([`EXIT_FAILURE`]) | the service returned an error, start-up failed (pid file held, runtime), or a second stop signal cut the shutdown short |
//! | 70 ([`EXIT_SOFTWARE`]) | the service panicked: a bug |

use std::any::Any;
use std::backtrace::{Backtrace, BacktraceStatus};
use std::error::Error;
use std::ffi::OsString;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::{error, info, warn};

use crate::context::Context;
use crate::logging::{LogFormat, init_logging};
use crate::notify::{socket_from_env, watchdog_interval};
use crate::pidfile::PidFile;
use crate::signals::{Signal, Signals};

/// Exit status for a failed service or a failed start.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for a panicked service (`EX_SOFTWARE` from `sysexits.h`).
pub const EXIT_SOFTWARE: u8 = 70;

/// How long tasks the service left behind get to finish after it returned.
/// Work that matters (a spool write) is awaited by the service itself; this
/// only bounds the wait for stragglers such as a blocking `fsync`.
const RUNTIME_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The error type a service returns.
pub type ServiceError = Box<dyn Error + Send + Sync>;

/// How to run a daemon.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The program name for log lines (`prog=`) and thread names, e.g.
    /// `skein-router`.
    pub program: &'static str,
    /// The log line format; usually [`LogFormat::from_env`].
    pub log_format: LogFormat,
    /// The user to become when [`Context::drop_privileges`] is called as
    /// root; `None` keeps the current user.
    pub user: Option<String>,
    /// A pid file to hold for the life of the process; `None` for none.
    pub pid_file: Option<PathBuf>,
    /// Runtime worker threads; `None` for one per CPU.
    pub worker_threads: Option<usize>,
}

impl DaemonOptions {
    /// Options for `program` with the log format from the environment and
    /// no user, pid file or thread count.
    pub fn new(program: &'static str) -> DaemonOptions {
        DaemonOptions {
            program,
            log_format: LogFormat::from_env(),
            user: None,
            pid_file: None,
            worker_threads: None,
        }
    }
}

/// Runs `service` as a daemon and returns the exit status for `main`.
///
/// The service is called inside the runtime with its [`Context`]; it should
/// bind its sockets, call [`Context::drop_privileges`] and
/// [`Context::ready`], then serve until [`Context::shutdown`] resolves and
/// return. A second SIGTERM/SIGINT while it is stopping exits the process
/// at once with status 1.
pub fn run<F, Fut>(opts: DaemonOptions, service: F) -> ExitCode
where
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = Result<(), ServiceError>>,
{
    bound_malloc_arenas();
    init_logging(opts.program, opts.log_format);
    install_panic_hook();
    ExitCode::from(run_logged(opts, service))
}

/// How many malloc arenas a daemon uses (glibc's default is 8 per core).
pub const MALLOC_ARENAS: i32 = 2;

/// Bounds glibc's malloc arenas to [`MALLOC_ARENAS`].
///
/// glibc gives threads that allocate at the same time arenas of their
/// own, up to 8 per core, and keeps what is freed in each for reuse. A
/// daemon whose work moves between runtime workers and blocking threads
/// (the spool's fsyncs run on tokio's blocking pool) then sees its
/// resident memory creep up for hundreds of thousands of messages with no
/// leak at all: in `bench/soak`, skein-smtpd's anonymous memory grew from
/// 4.2 MB at 20 000 messages to 5.8 MB at 200 000, while heaptrack found
/// 72 kB live at exit after 40 000 (docs/performance.md, "Memory over a
/// long run"). With two arenas the freed memory is found again instead.
/// `MALLOC_ARENA_MAX` in the environment still decides, for an admin who
/// wants otherwise.
/// Returns the allocator's free memory to the kernel (glibc's
/// `malloc_trim`): for a daemon that has just gone idle (the smtpd when
/// its last session ends), so that what a burst needed is not kept
/// resident until the next one. A no-op elsewhere than glibc.
pub fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim(3) only releases free pages; any thread may
    // call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn bound_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt(3) sets an allocator parameter; it is called
        // before the runtime starts any thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

fn run_logged<F, Fut>(opts: DaemonOptions, service: F) -> u8
where
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = Result<(), ServiceError>>,
{
    info!(pid = std::process::id(), "starting");
    // The pid file comes first: a second instance must not even build a
    // runtime, let alone bind sockets, before learning it is a duplicate.
    let pid_file = match opts.pid_file.as_deref().map(PidFile::acquire).transpose() {
        Ok(pid_file) => pid_file,
        Err(failure) => {
            let failure: &(dyn Error + 'static) = &failure;
            error!(error = failure, "cannot start");
            return EXIT_FAILURE;
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name(opts.program);
    if let Some(threads) = opts.worker_threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(source) => {
            let failure = crate::DaemonError::Runtime { source };
            let failure: &(dyn Error + 'static) = &failure;
            error!(error = failure, "cannot start");
            return EXIT_FAILURE;
        }
    };
    let status = runtime.block_on(serve(opts.program, opts.user, socket_from_env(), service));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
    // Release the pid file before saying "stopped", so that whoever waits
    // for that line can start a new instance at once.
    drop(pid_file);
    info!(status, "stopped");
    status
}

async fn serve<F, Fut>(
    program: &'static str,
    user: Option<String>,
    notify_socket: Option<OsString>,
    service: F,
) -> u8
where
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = Result<(), ServiceError>>,
{
    // Handlers go in before the service starts, so that a signal sent as
    // soon as READY=1 is seen is never the default (fatal) action.
    let mut signals = match Signals::new() {
        Ok(signals) => signals,
        Err(failure) => {
            let failure: &(dyn Error + 'static) = &failure;
            error!(error = failure, "cannot start");
            return EXIT_FAILURE;
        }
    };
    let (context, control) = Context::new(program, user, notify_socket);
    start_watchdog(&context);

    let mut service = match panic::catch_unwind(AssertUnwindSafe(|| service(context.clone()))) {
        Ok(future) => CatchUnwind(Box::pin(future)),
        Err(payload) => return report_outcome(Err(payload)),
    };
    let mut stopping = false;
    let outcome = loop {
        tokio::select! {
            outcome = &mut service => break outcome,
            signal = signals.recv() => match signal {
                Some(Signal::Terminate) if !stopping => {
                    stopping = true;
                    info!(reason = "signal", "stopping");
                    context.notify(&[NotifyState::Stopping]);
                    control.trigger_shutdown();
                }
                Some(Signal::Terminate) => {
                    warn!("second stop signal while stopping: exiting now");
                    std::process::exit(EXIT_FAILURE.into());
                }
                Some(Signal::Reload) => {
                    let generation = control.trigger_reload();
                    info!(generation, "reload requested");
                }
                // The signal driver is gone; only the service is left to
                // wait for.
                None => break (&mut service).await,
            },
        }
    };
    let status = report_outcome(outcome);
    if !stopping {
        info!(reason = "service returned", "stopping");
        context.notify(&[NotifyState::Stopping]);
    }
    status
}

/// How a service ended: returned (well or not), or panicked with a payload.
type Outcome = Result<Result<(), ServiceError>, Box<dyn Any + Send>>;

/// Logs how the service ended and returns the matching exit status.
fn report_outcome(outcome: Outcome) -> u8 {
    match outcome {
        Ok(Ok(())) => 0,
        Ok(Err(failure)) => {
            let failure: &(dyn Error + 'static) = &*failure;
            error!(error = failure, "service failed");
            EXIT_FAILURE
        }
        Err(payload) => {
            error!(panic = panic_message(payload.as_ref()), "service panicked");
            EXIT_SOFTWARE
        }
    }
}

/// Pings systemd's watchdog at half its timeout while the runtime lives.
/// This proves the runtime schedules tasks, not that the service makes
/// progress; a service that can tell should send its own heartbeats.
fn start_watchdog(context: &Context) {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    let Some(period) = watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id())
    else {
        return;
    };
    let context = context.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        loop {
            ticks.tick().await;
            context.notify(&[NotifyState::Watchdog]);
        }
    });
}

/// Replaces the default panic message — several lines on stderr — with one
/// log line, so that a panic shows up in the logs like any other error.
fn install_panic_hook() {
    panic::set_hook(Box::new(|info| {
        let message = panic_message(info.payload());
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        // Honours RUST_BACKTRACE like the default hook.
        let backtrace = Backtrace::capture();
        if backtrace.status() == BacktraceStatus::Captured {
            error!(panic = message, location, thread, backtrace = %backtrace, "panic");
        } else {
            error!(panic = message, location, thread, "panic");
        }
    }));
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "non-string panic payload"
    }
}

/// Polls a future, turning a panic into an `Err` with its payload. Unlike
/// `tokio::spawn`, this needs neither `Send` nor `'static` from the service.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        // AssertUnwindSafe is sound here: after a panic the future is never
        // polled again, only dropped, so no broken invariant is observed.
        match panic::catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_exit_statuses() {
        let cases: Vec<(Outcome, u8)> = vec![
            (Ok(Ok(())), 0),
            (Ok(Err("listener closed".into())), EXIT_FAILURE),
            (Err(Box::new("bug")), EXIT_SOFTWARE),
            (Err(Box::new(String::from("bug"))), EXIT_SOFTWARE),
            (Err(Box::new(7_u32)), EXIT_SOFTWARE),
        ];
        for (outcome, expected) in cases {
            assert_eq!(report_outcome(outcome), expected);
        }
    }

    #[test]
    fn panic_messages() {
        let cases: Vec<(Box<dyn Any + Send>, &str)> = vec![
            (Box::new("static"), "static"),
            (Box::new(String::from("owned")), "owned"),
            (Box::new(1_i32), "non-string panic payload"),
        ];
        for (payload, expected) in cases {
            assert_eq!(panic_message(payload.as_ref()), expected);
        }
    }

    #[tokio::test]
    async fn catch_unwind_returns_output_or_payload() {
        let fine = CatchUnwind(Box::pin(async { 5 })).await;
        assert_eq!(fine.ok(), Some(5));
        let panicked = CatchUnwind(Box::pin(async {
            tokio::task::yield_now().await;
            panic!("service bug");
        }))
        .await;
        let payload = panicked.expect_err("panic caught");
        assert_eq!(panic_message(payload.as_ref()), "service bug");
    }
}
