//! # skein-router — from `incoming/` to the scheduler
//!
//! **Job.** Takes each accepted message from `<spool>/incoming/`, checks
//! it, reads its header section, has every recipient routed by
//! [`skein_routing`] (aliases expanded, each recipient sent to a thread
//! `(channel, host)` — or to a failure with its enhanced status code) and
//! performs spool transition T2: the control file into `transport/<id>`,
//! the message into `queue/<id>`, then a `Submitted` notification to the
//! scheduler. `docs/router.md` describes the rules and argues crash safety
//! step by step.
//!
//! **Reads.** `incoming/<id>` (locked with `flock` while routed); the
//! configuration; the aliases file and its `:include:` files; the user
//! database (`getpwnam`) and the Maildir root (does `<root>/<user>`
//! exist). **Writes.** `tmp/` then `transport/<id>` (never replacing one),
//! `queue/<id>` (by rename), `corrupt/` (files that fail their checks),
//! `run/router.pid`, `run/router.wake` (a datagram socket, mode 0660).
//! **Talks to** the scheduler on `run/scheduler.sock` (one connection,
//! kept open).
//!
//! **Trust and privilege.** Runs as the skein user: when started as root
//! it switches to `user` before reading anything. Message headers and
//! envelope addresses are hostile (they come from SMTP): headers are only
//! scanned by mail-parser, bounded to 1 MiB, for `Received` fields and the
//! `Message-ID`; addresses are checked with `skein_mail::Mailbox` before
//! use, and a local user name becomes a path component only after
//! [`skein_routing::users::is_safe_user_name`]. The aliases file is
//! trusted as the operator's; `|command` and `/file` targets are refused
//! unless the configuration allows them.
//!
//! **On failure.** A corrupt message is moved to `corrupt/` and logged,
//! never retried. A message that cannot be routed for a local reason (disk,
//! user database) stays in `incoming/` and is tried again at the next scan.
//! A broken aliases file stops the start with an error naming file and
//! line; once running, the previous aliases stay in force and the error is
//! logged. A scheduler that is not running is not an error (it scans
//! `transport/` when it starts). A crash at any point loses nothing and
//! never makes two control files for one message.
//!
//! **Configuration.** `spool.dir`, `hostname` (a local domain too),
//! `user`, `router.local_domains`, `router.aliases`,
//! `router.allow_pipe_targets`, `router.allow_file_targets`, `[[route]]`,
//! `local.maildir_root`, `router.milters` (content filters for local
//! submissions: [`filter`]). The rescan interval is `router.scan_interval` (default [`SCAN_INTERVAL`]). Aliases
//! are reloaded when one of their files changes. SIGHUP re-reads the
//! whole file (`Engine::reload`): everything but `spool.dir`
//! and `user` applies from the next message, and a file that fails the
//! start's checks is refused, the old configuration staying in force.

mod error;
pub mod filter;
pub mod header;
mod notify;
pub mod pickup;
mod service;
pub mod transition;
mod wake;

use skein_config::Config;
use skein_daemon::DaemonOptions;

pub use error::RouterError;
pub use notify::SchedulerLink;
pub use service::{Engine, SCAN_INTERVAL, serve};
pub use wake::WakeSocket;

/// The program name, in logs and in the handshake.
pub const PROGRAM: &str = "skein-router";

/// How the daemon skeleton runs the router: as the configured user, with
/// a small runtime (routing is sequential; its blocking work runs on
/// tokio's blocking pool).
pub fn daemon_options(config: &Config) -> DaemonOptions {
    let mut options = DaemonOptions::new(PROGRAM);
    options.user = Some(config.run_as().to_owned());
    options.worker_threads = Some(2);
    options
}
