//! skein-local: the transport agent that delivers the `local` channel into
//! Maildirs.
//!
//! **Job.** The scheduler starts it for threads `local/<user>` and hands
//! it jobs; for each recipient it writes the message into
//! `<local.maildir_root>/<user>/` by the Maildir rules (a unique file in
//! `tmp/`, `fsync`, link into `new/`, `fsync` of `new/`) with
//! `Return-Path: <sender>` and `Delivered-To: <recipient>` in front and
//! the spool's CRLF line endings turned into LF. It reports *delivered*
//! only after that last `fsync`.
//!
//! **Reads and writes.** Reads the spool's message files named in its jobs
//! (read-only, streamed in 64 KiB chunks) and the user database
//! (`getpwnam`, through `skein-routing`'s user lookup, the one the router
//! and the SMTP server use). Writes only under `local.maildir_root`: the
//! users' Maildirs, created (mode 0700) for a system account or
//! `postmaster` that has none yet. Talks to the scheduler on fd 3, logs on
//! stderr.
//!
//! **Trusts.** The scheduler and the spool it names. Recipient addresses
//! come from remote senders: a user name that is not a plain directory
//! name is refused by the user-name rule the router applies too
//! (`skein_routing::users::check_user_name`: letters, digits, `.`, `-`,
//! `_`, in lower case, not starting with `.` or `-`, at most 255 bytes),
//! so no address can write outside the Maildir root. It runs as the
//! scheduler's account and needs write access to the Maildirs; a Maildir
//! it creates under the root belongs to that account. With
//! `local.home_mailbox` it delivers a system account's mail into the
//! account's home, as the account, through `skein-local-writer`
//! ([`home`]): for that alone it holds `CAP_SETUID` and `CAP_SETGID`
//! (file capabilities), and drops every other capability at start — all
//! of them when `home_mailbox` is unset. It never delivers as root.
//!
//! **On failure.** An unknown user fails (`5.1.1`; an unusable name
//! `5.1.3`) and is bounced by the scheduler. Everything else is deferred:
//! a full disk or quota `4.2.2`, any other I/O error `4.3.0`, a message
//! file missing or shorter than the job says `4.3.0`. A crash before the
//! report leaves the delivery to be repeated (at worst a duplicate,
//! never a loss); a crash before the link into `new/` leaves only a stale
//! file in `tmp/`.
//!
//! **Configuration.** `local.maildir_root`, `local.home_mailbox`; the file comes from `-c FILE`
//! or `SKEIN_CONFIG` (which the scheduler sets), else the embedded default.

mod deliver;
mod error;
pub mod home;
mod maildir;
mod message;
mod users;

use std::process::ExitCode;
use std::sync::Arc;

use skein_agent::{Deliver, Delivery, run_simple};
use skein_config::Config;
use skein_proto::{EnhancedCode, Job};

pub use deliver::{Target, deliver_job};
pub use error::LocalError;

/// The agent's name, in logs and in its `Hello`.
pub const PROGRAM: &str = "skein-local";

/// The channel announced when `SKEIN_CHANNEL` is unset.
pub const DEFAULT_CHANNEL: &str = "local";

/// Jobs asked for ahead. Deliveries are sequential; holding a few more
/// jobs only spares the round trip to the scheduler between two of them,
/// and the scheduler's `overfeed` caps it anyway.
const AHEAD: u32 = 8;

/// Runs the agent on fd 3 until the scheduler says `Shutdown` or goes
/// away; returns the exit status.
pub fn run(config: &Config) -> ExitCode {
    let home_delivery = !config.local.home_mailbox.is_empty();
    // Whatever file capabilities this binary was given, keep only what
    // delivery as a system account needs, and nothing when it is off.
    if let Err(e) = home::limit_capabilities(home_delivery) {
        eprintln!("{PROGRAM}: cannot drop capabilities: {e}");
        return ExitCode::from(71);
    }
    let agent = LocalAgent {
        target: Arc::new(Target {
            maildir_root: config.local.maildir_root.clone(),
            hostname: skein_config::system_hostname(),
            home_mailbox: config.local.home_mailbox.clone(),
        }),
    };
    run_simple(DEFAULT_CHANNEL, PROGRAM, AHEAD, agent)
}

/// The [`Deliver`] handler: each job on a blocking thread, because every
/// step of a Maildir delivery (`open`, `write`, `fsync`, `link`) blocks.
#[derive(Debug, Clone)]
pub struct LocalAgent {
    target: Arc<Target>,
}

impl LocalAgent {
    /// A handler delivering into `target`.
    pub fn new(target: Target) -> LocalAgent {
        LocalAgent {
            target: Arc::new(target),
        }
    }
}

impl Deliver for LocalAgent {
    async fn deliver(&self, job: &Job) -> Vec<Delivery> {
        let target = Arc::clone(&self.target);
        let owned = job.clone();
        match tokio::task::spawn_blocking(move || deliver_job(&target, &owned)).await {
            Ok(deliveries) => deliveries,
            Err(e) => {
                let diagnostic = format!("local delivery failed: {e}");
                let trouble = EnhancedCode::SYSTEM_TROUBLE;
                job.recipients
                    .iter()
                    .map(|_| Delivery::deferred(trouble, diagnostic.clone(), None))
                    .collect()
            }
        }
    }
}
