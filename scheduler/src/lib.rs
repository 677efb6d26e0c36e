//! # skein-scheduler — owns delivery
//!
//! **Job.** Groups every pending recipient into *threads*, one per
//! `(channel, host)`; starts transport agents named by the configuration's
//! scheduler clauses and feeds them jobs (one job = one message's
//! recipients in one thread), several ahead (overfeed), with at most
//! `maxthr` agents per thread, `maxring` per clause, `maxchannel` per
//! channel and `maxta` in all; records every per-recipient outcome durably
//! before acting on it; retries deferred threads on the `retries`
//! schedule; fails recipients past `expiry`; queues bounces (RFC 3464
//! DSNs) and removes a message once every recipient is final.
//!
//! **Reads and writes.** `transport/` (control files: reads, appends
//! journal records, rewrites a torn one, removes finished ones), `queue/`
//! (reads message files for DSNs and requeues; removes finished ones),
//! `incoming/` (writes DSNs and requeued copies), `corrupt/` (sets aside
//! control files that fail their checks), `run/scheduler.lock` (held for
//! life: one scheduler per spool) and `run/scheduler.sock` (mode 0660: the
//! router and the spool tools).
//!
//! **Trust and privilege.** Runs as the skein user (drops privileges to
//! `user` when started as root). Trusts the spool (files it or the router
//! wrote, each checked on read). Does not trust agents: a malformed frame,
//! an outcome for a recipient an agent does not hold, or silence past
//! `scheduler.agent_timeout` gets the agent killed, and every recipient it
//! had not reported is *deferred* — never failed, never lost. Tools on the
//! control socket are trusted as far as the socket's mode lets them in.
//!
//! **On failure.** A journal append that fails is logged and the state
//! moves on in memory: after a restart that recipient is tried again
//! (at-least-once delivery). A control file that does not parse is moved
//! to `corrupt/` and reported. An agent that cannot be started is retried
//! after 30 s. Restart rebuilds everything from `transport/` alone.
//!
//! **Configuration.** `spool.dir`, `hostname`, `router.local_domains` (the
//! postmaster's domain for double bounces), `scheduler.retries`,
//! `scheduler.expiry`, `scheduler.delay_warning`, `scheduler.maxta`,
//! `scheduler.agent_timeout`, and per `[[scheduler.clause]]`: `match`,
//! `command`, `args`, `maxthr`, `maxring`, `maxchannel`, `overfeed`,
//! `idlemax`.

//!
//! **Modules**, each one concept, none importing one above it:
//!
//! | module | holds |
//! |---|---|
//! | `engine` | the event loop's state and reactions: wires the others |
//! | `admin`, `report` | hold/delete/flush/requeue; the views for the spool tools |
//! | `bounce` | DSNs and requeued copies, from the queue, the spool and the configuration |
//! | `policy` | the pure decisions: limits, which thread an agent gets, how many jobs to feed, hung and idle agents |
//! | `agents` | agent bookkeeping; process start-up behind the `Launcher` trait |
//! | `process` | the real launcher: fork/exec with fd 3, the per-agent I/O tasks |
//! | `control` | the control socket |
//! | `queue` | messages and threads, the journal writes, handing out jobs |
//! | `load` | reading the queue back from the spool; finishing interrupted removals |
//! | `message` | one message's state folded from its journal, its recipients by thread |
//! | `group` | thread groups (clauses) and their limits |
//! | `event`, `clock`, `error` | what the engine reacts to; spool time; whose fault |

mod admin;
mod agents;
mod bounce;
mod clock;
mod control;
mod engine;
mod error;
mod event;
mod group;
mod load;
mod message;
mod policy;
mod process;
mod queue;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use skein_config::Config;
use skein_daemon::{Context, ServiceError};
use skein_spool::{FileLock, Spool};
use tokio::sync::mpsc;

use crate::agents::Agents;
use crate::engine::Engine;
pub use crate::error::SchedulerError;
use crate::event::Event;
use crate::process::Processes;

/// How long agents get to finish their jobs when the scheduler stops.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Runs the scheduler until SIGTERM. `config_path` is passed on to agents.
pub async fn serve(
    ctx: Context,
    config: Config,
    config_path: Option<PathBuf>,
) -> Result<(), ServiceError> {
    // Root is dropped before the spool is touched: everything the
    // scheduler creates — its lock, its control socket, the journal —
    // belongs to `user`, so the router and the tools of the skein group can
    // reach it (a socket bound as root stays root's, whatever its mode).
    ctx.drop_privileges()?;
    let spool = Spool::open(&config.spool.dir)?;
    let lock_path = spool.scheduler_lock();
    let _lock = FileLock::create(&lock_path).map_err(|e| match e {
        skein_spool::SpoolError::Locked { .. } => SchedulerError::Config(format!(
            "another scheduler is already running on {}",
            spool.root().display()
        )),
        e => SchedulerError::Spool(e),
    })?;
    let report = spool.clean_stale_tmp()?;
    if !report.removed.is_empty() {
        tracing::info!(
            removed = report.removed.len(),
            "cleaned stale temporary files"
        );
    }
    match spool.trim_free() {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "trimmed the pool of reusable files"),
        Err(e) => tracing::warn!(error = %e, "cannot trim the pool of reusable files"),
    }
    let socket = spool.scheduler_socket();
    let listener = control::bind(&socket)?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let agents = Agents::new(Box::new(Processes::new(tx.clone())), config_path);
    let mut engine = Engine::new(config, spool, agents);
    engine.scan();
    engine.dispatch();
    tokio::spawn(control::accept_loop(listener, tx.clone()));
    let ticker = tx.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if ticker.send(Event::Tick).is_err() {
                break;
            }
        }
    });
    ctx.ready();
    let shutdown = ctx.shutdown();
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => {
                    engine.handle(ev);
                    if rx.is_empty() {
                        engine.publish_retired();
                    }
                }
                None => break,
            },
            () = shutdown.wait() => break,
        }
    }
    // Let agents report what they hold, then stop them.
    engine.shutdown_agents();
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while engine.agent_count() > 0 {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev @ (Event::AgentMsg { .. } | Event::AgentGone { .. }))) => engine.handle(ev),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    engine.kill_agents();
    engine.publish_retired();
    let _ = std::fs::remove_file(&socket);
    Ok(())
}
