//! skein-smtp: the SMTP transport agent — one connection per destination,
//! kept full with pipelining.
//!
//! **Job.** The scheduler starts it for threads of the `smtp` channel and
//! hands it jobs (one message's recipients for one destination). It
//! connects to the job's static next hop (`job.nexthop`, from a
//! `[[route]]`) or to the destination domain's servers, greets with EHLO
//! (HELO when the server knows no EHLO), upgrades with STARTTLS as the TLS
//! policy says, and sends the messages down that one connection as fast as
//! the server's extensions allow: with PIPELINING a transaction's envelope
//! goes in one write and the next transaction's envelope rides with the
//! previous message's end of data; with CHUNKING whole `BDAT n LAST`
//! transactions are kept in flight up to a window of unacknowledged bytes;
//! without either, lock-step. It keeps the connection for the next job to
//! the same destination, closes it with QUIT after `smtp.idle_timeout`
//! without work or when a job for another destination comes. The details
//! are in `docs/smtp-agent.md`.
//!
//! **Reads and writes.** Reads the spool's message files named in its jobs
//! (read-only, streamed: never a whole message in memory). Talks to the
//! scheduler on fd 3 (`skein-agent`), to SMTP servers over TCP, to the
//! system resolver; logs on stderr. Writes no file.
//!
//! **Trusts.** The scheduler and the spool it names. Nothing a remote
//! server sends: replies are parsed by `skein-smtp-codec` with bounded
//! lines, and anything unexpected ends the session with the recipients in
//! flight deferred. It needs no privilege and keeps whatever the scheduler
//! gave it.
//!
//! **On failure.** Every recipient gets exactly one outcome, decided by
//! the reply that concerns it: a 5xx to its RCPT fails it, a 4xx defers it,
//! a `452` (too many recipients) moves it to the next transaction, the
//! reply after the data applies to every accepted recipient. A connection
//! that fails, times out or says `421` defers whatever is unanswered; one
//! lost after the end of data but before its reply defers the recipients
//! and logs that the message may be delivered twice (at-least-once, never
//! lost). A message larger than the server's SIZE fails at once (5.3.4);
//! an 8-bit message to a server without 8BITMIME is converted to 7 bits
//! (quoted-printable, base64: `skein_mail::downgrade`); one that cannot
//! be, or needs BINARYMIME or SMTPUTF8 the server lacks, fails (5.6.3,
//! 5.6.7). Connection and TLS failures defer (4.4.x, 4.7.x).
//! A job it cannot read (spool file missing or short) is deferred (4.3.0).
//!
//! **Configuration.** `hostname` (EHLO), `[[route]]` `tls` overrides,
//! `smtp.tls`, `smtp.connect_timeout`, `smtp.greeting_timeout`,
//! `smtp.ehlo_timeout`, `smtp.mail_timeout`, `smtp.rcpt_timeout`,
//! `smtp.data_init_timeout`, `smtp.data_block_timeout`,
//! `smtp.data_term_timeout`, `smtp.idle_timeout`,
//! `smtp.max_recipients_per_transaction`, `smtp.window`. The file comes
//! from `-c FILE` or `SKEIN_CONFIG` (which the scheduler sets), else the
//! embedded default.

#![warn(missing_docs)]

mod agent;
mod connect;
mod dane;
mod dest;
mod envelope;
mod error;
mod ledger;
mod pipeline;
pub mod sts;
mod tls;

use std::process::ExitCode;
use std::sync::Arc;

use skein_agent::{AgentConnection, AgentError};
use skein_config::Config;
use skein_daemon::EXIT_FAILURE;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

pub use dest::{Candidate, Destination, Resolver, Target};
pub use error::SmtpError;

use crate::agent::Agent;
use crate::pipeline::{Pipeline, SessionEnd};

/// The agent's name, in logs and in its `Hello`.
pub const PROGRAM: &str = "skein-smtp";

/// The channel announced when `SKEIN_CHANNEL` is unset.
pub const DEFAULT_CHANNEL: &str = "smtp";

/// Jobs asked for ahead: enough small messages to fill the default window
/// (1 MiB of 4 KiB messages), bounded so that huge windows do not make the
/// agent hoard a thread's whole queue.
fn jobs_ahead(config: &Config) -> u32 {
    let by_window = config.smtp.window.bytes() / 4096;
    by_window.clamp(16, 1024) as u32
}

/// Runs the agent on fd 3 until the scheduler says `Shutdown` or goes
/// away; returns the exit status.
pub fn run(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(serve(Arc::new(config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_disconnect() => {
            info!("the scheduler went away");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!(error = %e, "agent failed");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

async fn serve(config: Arc<Config>) -> Result<(), AgentError> {
    let program = format!("{PROGRAM} {}", env!("CARGO_PKG_VERSION"));
    let connection = AgentConnection::from_fd3(DEFAULT_CHANNEL, &program).await?;
    let (events, reporter) = connection.split();
    let sigterm = match signal(SignalKind::terminate()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "cannot watch SIGTERM");
            None
        }
    };
    let mut agent = Agent::new(Arc::clone(&config), events, reporter, sigterm);
    let resolver = Resolver::new(&config);
    agent.want(jobs_ahead(&config)).await?;
    drive(&mut agent, &resolver).await
}

/// The outer loop: wait for work, connect to the destination of the next
/// transaction, run the session, and deal with a session that failed.
async fn drive(agent: &mut Agent, resolver: &Resolver) -> Result<(), AgentError> {
    loop {
        if agent.closed {
            return Ok(());
        }
        let Some(dest) = agent.next_destination() else {
            if agent.stopping && agent.jobs.is_empty() {
                return Ok(());
            }
            agent.idle(None).await?;
            let event = agent.next_event().await?;
            agent.handle(event).await?;
            continue;
        };
        let thread_host = agent
            .plans
            .front()
            .and_then(|p| agent.jobs.get(&p.job))
            .map(|e| e.job.thread.host.clone())
            .unwrap_or_default();
        let began = std::time::Instant::now();
        match connect::establish(&agent.config, resolver, &dest).await {
            Ok(established) => {
                // A clear-text session after a failed handshake counts as
                // a failed TLS session; one that never tried, as none.
                let tls = match (&established.tls, &established.tls_fallback) {
                    (Some(_), _) => Some(true),
                    (None, Some(_)) => Some(false),
                    (None, None) => None,
                };
                agent.fresh_connection = Some((began.elapsed(), tls));
                let mut pipeline =
                    Pipeline::new(established, dest.clone(), thread_host, &agent.config.smtp);
                match pipeline.serve(agent).await? {
                    SessionEnd::Done => {}
                    SessionEnd::Lost { productive, error } => {
                        // A connection that delivered something is worth
                        // another try for the rest; one that did not
                        // would likely fail the same way again now.
                        if !productive {
                            let delivery = error.delivery();
                            agent.fail_plans_for(&dest, &delivery).await?;
                        }
                    }
                }
            }
            Err(connect::NoSession { error, server }) => {
                warn!(destination = ?dest.target, error = %error, "no session");
                let tls_failed =
                    matches!(error, crate::error::SmtpError::Tls { .. }).then_some(false);
                let mut delivery = error
                    .delivery()
                    .with_connect(began.elapsed())
                    .with_tls(tls_failed);
                if let Some(server) = server {
                    delivery = delivery.with_remote_mta(server);
                }
                agent.fail_plans_for(&dest, &delivery).await?;
            }
        }
    }
}
