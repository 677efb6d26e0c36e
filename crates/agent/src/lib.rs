//! skein-agent: the library that makes a skein transport agent in Rust a
//! few dozen lines.
//!
//! **Job.** A transport agent is a program the scheduler starts to deliver
//! one channel's mail (`smtp`, `local`, or one of your own). This crate
//! does everything but the delivery: it takes the socket the scheduler
//! left on file descriptor 3, handshakes on it (`Hello` for the channel in
//! `SKEIN_CHANNEL`), and then either hands the agent a typed stream of
//! events ([`AgentConnection`], the low level) or runs the whole job loop
//! around one delivery function ([`run_simple`] and [`serve`], the high
//! level). `docs/writing-an-agent.md` walks through writing one;
//! `docs/agent-protocol.md` is the protocol underneath.
//!
//! ```no_run
//! use skein_agent::proto::Job;
//! use skein_agent::{Delivery, run_simple};
//!
//! fn main() -> std::process::ExitCode {
//!     run_simple("devnull", "skein-devnull", 4, async |job: &Job| {
//!         job.recipients
//!             .iter()
//!             .map(|r| Delivery::delivered(None, format!("{} discarded", r.address)))
//!             .collect()
//!     })
//! }
//! ```
//!
//! **Reads and writes.** File descriptor 3 (the socketpair to the
//! scheduler) and nothing else; the handler reads the spool's message file
//! named in each job. Environment: `SKEIN_CHANNEL`, plus `SKEIN_LOG` and
//! `SKEIN_LOG_FORMAT` for logging. Logs go to stderr. A complete example
//! agent is `examples/archive.rs`.
//!
//! **Trusts.** The scheduler, which started the process: its jobs are
//! taken as given (paths, addresses). Its frames are still checked as
//! untrusted bytes by `skein-proto`; garbage ends the agent. The agent runs
//! with whatever privilege the scheduler gave it and drops none.
//!
//! **On failure.** Nothing an agent does can lose mail: whatever it leaves
//! unreported, the scheduler defers. This crate adds the same guarantee
//! inside the agent: a handler that panics, or returns no result for a
//! recipient, gets that recipient reported *deferred* — never failed,
//! never dropped. Jobs given back on shutdown are deferred too. An agent
//! that was not started by the scheduler (fd 3 is not a socket) says so
//! and exits 1.
//!
//! **Configuration.** None of its own; an agent loads the skein
//! configuration itself if it needs it (`SKEIN_CONFIG` names the file the
//! scheduler runs on).

#![warn(missing_docs)]

pub mod cli;
mod connection;
mod delivery;
mod error;
mod fd3;
mod message;
mod simple;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

/// The protocol crate, re-exported so that an agent needs one dependency
/// for the types its handler sees ([`proto::Job`],
/// [`proto::EnhancedCode`], [`proto::SmtpReply`], …).
pub use skein_proto as proto;

pub use connection::{AgentConnection, CHANNEL_ENV, Event, JobReceiver, Reporter};
pub use delivery::Delivery;
pub use error::{AgentError, Result};
pub use message::{MessageError, open_message};
pub use simple::{Deliver, run_simple, serve};
