//! skein-daemon: the server skeleton every long-running skein process
//! shares.
//!
//! `skein-smtpd`, `skein-router`, `skein-scheduler` and the `skein start`
//! supervisor each end their `main` in one call to [`run`], in the Postfix
//! manner: the service code only binds, serves and stops, and everything
//! around it is done the same way everywhere:
//!
//! - **logging** ([`init_logging`]): one line per event on stderr, logfmt
//!   for machines or a compact form for terminals; values are escaped so
//!   that hostile input (SMTP, headers) can never forge a line;
//! - **signals** ([`Signals`]): SIGTERM/SIGINT become a [`Shutdown`]
//!   request, SIGHUP a reload tick; a second stop signal exits at once;
//! - **systemd** ([`notify_ready`] and friends): `READY=1`, `STOPPING=1`,
//!   watchdog pings, status; all no-ops outside systemd;
//! - **privileges** ([`drop_privileges`]): a root process becomes the
//!   configured user after binding its ports and proves it cannot go back;
//! - **pid file** ([`PidFile`]): one instance at a time, enforced by a
//!   `flock` that dies with the process.
//!
//! # Reads and writes
//!
//! Environment: `SKEIN_LOG`, `SKEIN_LOG_FORMAT`, `NOTIFY_SOCKET`,
//! `WATCHDOG_USEC`/`WATCHDOG_PID`, `JOURNAL_STREAM`. Files: the pid file
//! named in [`DaemonOptions::pid_file`]. Sockets: the systemd notification
//! datagram socket. Output: stderr only.
//!
//! # Security
//!
//! The skeleton runs with whatever privilege the process starts with. It
//! holds root only until the service calls [`Context::drop_privileges`];
//! the service must do so before it reads from the network. The pid file is
//! opened without following symlinks.
//!
//! # Failure
//!
//! Start-up failures (pid file held, no runtime, no signal handlers) are
//! logged and exit with status 1 before the service runs. A failing
//! notification is logged and ignored. A service error exits 1, a panic 70
//! (see [`run`] for the table).
//!
//! # Configuration
//!
//! None of its own: the caller fills in [`DaemonOptions`] from its
//! configuration (`user`, pid file, thread count) and the environment.

#![warn(missing_docs)]

pub mod cli;
mod context;
mod error;
mod logging;
mod notify;
mod pidfile;
mod privileges;
mod shutdown;
mod signals;
mod skeleton;

pub use context::{Context, ContextControl};
pub use error::DaemonError;
pub use logging::{LOG_FILTER_ENV, LOG_FORMAT_ENV, LogFormat, init_logging};
pub use notify::{
    NOTIFY_SOCKET_ENV, notify_ready, notify_reloading, notify_status, notify_stopping, notify_to,
    notify_watchdog,
};
pub use pidfile::PidFile;
pub use privileges::{Dropped, account, drop_privileges};
pub use shutdown::Shutdown;
pub use signals::{Signal, Signals};
pub use skeleton::{
    DaemonOptions, EXIT_FAILURE, EXIT_SOFTWARE, MALLOC_ARENAS, ServiceError, give_back_free_memory,
    run,
};

/// The log lines of a reload that passed, the same in every daemon:
/// `reloaded changed=N keys="…"` and, when some changed keys need a
/// restart, a warning naming them.
pub fn log_reloaded(loaded: &skein_config::Loaded, applied: &[String], need_restart: &[String]) {
    if !need_restart.is_empty() {
        tracing::warn!(
            keys = need_restart.join(" ").as_str(),
            "changed settings need a restart: their old values stay in force until then"
        );
    }
    tracing::info!(
        config = %loaded.source,
        changed = applied.len(),
        keys = applied.join(" ").as_str(),
        "reloaded"
    );
}
