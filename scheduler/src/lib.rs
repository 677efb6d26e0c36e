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
//! life: one scheduler per spool), `run/scheduler.sock` (mode 0660: the
//! router and the spool tools), `run/agents.toml` (the configuration in
//! force, for the agents it starts: [`write_agent_config`]) and reads
//! `run/smtpd.stats` (the SMTP server's counters) for the metrics
//! endpoint, which `metrics.listen` turns on ([`metrics`]).
//!
//! **Trust and privilege.** Runs as the skein user (drops privileges to
//! `user` when started as root). Trusts the spool (files it or the router
//! wrote, each checked on read). Does not trust agents: a malformed frame,
//! an outcome for a recipient an agent does not hold, or silence past
//! `scheduler.agent_timeout` gets the agent killed, and every recipient it
//! had not reported is *deferred* — never failed, never lost. Tools on the
//! control socket are trusted as far as the socket's mode lets them in.
//! The metrics endpoint reads HTTP request heads from whoever connects
//! (bounded: 8 KiB, 10 s, 8 at once) and answers counts, never addresses.
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
//! `idlemax`. SIGHUP (`skein reload`) re-reads them all but `spool.dir`
//! and `user`: a file that does not parse is refused and the configuration
//! in force stays; otherwise threads are matched against the new clauses,
//! running agents finish their jobs and exit, and new agents read the new
//! settings. Queued messages keep their attempts and retries.

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
pub mod metrics;
mod policy;
mod process;
mod queue;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use skein_config::{Config, Loaded};
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

/// The file in `run/` that holds the configuration in force for the
/// scheduler's agents: see [`write_agent_config`].
pub const AGENT_CONFIG: &str = "agents.toml";

/// Writes the configuration in force (`Config::to_toml`: every key, every
/// path absolute) to `run/agents.toml`, atomically, and returns its path,
/// which the agents are started with (`SKEIN_CONFIG`). Agents read their
/// configuration at start; handing them this copy rather than the
/// administrator's file means they run on what the scheduler accepted —
/// after a refused reload the old configuration, not the file that was
/// refused.
pub fn write_agent_config(spool: &Spool, config: &Config) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = spool.scheduler_socket().with_file_name(AGENT_CONFIG);
    let tmp = path.with_extension("toml.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(&tmp)?;
    file.write_all(
        b"# Written by skein-scheduler: the configuration in force, for the agents it\n\
          # starts. Edit the real configuration file and run `skein reload` instead.\n",
    )?;
    file.write_all(config.to_toml().as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Runs the scheduler until SIGTERM, reloading on SIGHUP.
/// `loaded.source` names the file agents would read if the copy in `run/`
/// cannot be written.
pub async fn serve(ctx: Context, loaded: Loaded) -> Result<(), ServiceError> {
    let config = loaded.config.clone();
    let config_path = match &loaded.source {
        skein_config::Source::File(p) => Some(p.clone()),
        skein_config::Source::Embedded => None,
    };
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

    let config_path = match write_agent_config(&spool, &config) {
        Ok(path) => Some(path),
        Err(e) => {
            tracing::warn!(error = %e, "cannot write run/agents.toml: agents read the configuration file itself");
            config_path
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let agents = Agents::new(Box::new(Processes::new(tx.clone())), config_path);
    let current_metrics_addr = config.metrics.listen;
    let mut engine = Engine::new(config, spool, agents);
    engine.scan();
    engine.dispatch();
    tokio::spawn(control::accept_loop(listener, tx.clone()));
    if let Some(addr) = current_metrics_addr {
        let metrics = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            SchedulerError::Config(format!("metrics.listen: cannot listen on {addr}: {e}"))
        })?;
        tracing::info!(listen = %metrics.local_addr().unwrap_or(addr), "metrics at GET /metrics");
        tokio::spawn(metrics::serve(metrics, tx.clone()));
    }
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
    let mut reloads = ctx.reloads();
    let mut reloads_open = true;
    let mut current = loaded;
    loop {
        tokio::select! {
            changed = reloads.changed(), if reloads_open => match changed {
                Ok(()) => {
                    ctx.reloading();
                    match reload(&current, &mut engine) {
                        Ok(next) => current = next,
                        Err(why) => tracing::error!(
                            error = why.as_str(),
                            "reload refused: the configuration in force stays"
                        ),
                    }
                    ctx.ready();
                }
                // The skeleton is going away; the stop request follows.
                Err(_) => reloads_open = false,
            },
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

/// Applies the configuration file as it is now, or refuses it (the error
/// says why) and changes nothing: it must pass the start's checks, and
/// the agents' copy must be written before anything changes.
fn reload(current: &Loaded, engine: &mut Engine) -> Result<Loaded, String> {
    let reloaded = current.reload().map_err(|e| e.to_string())?;
    if reloaded.applied.is_empty() {
        skein_daemon::log_reloaded(&reloaded.loaded, &[], &reloaded.need_restart);
        return Ok(reloaded.loaded);
    }
    let agent_config = write_agent_config(engine.spool(), &reloaded.loaded.config)
        .map_err(|e| format!("cannot write run/{AGENT_CONFIG} for the agents: {e}"))?;
    skein_daemon::log_reloaded(&reloaded.loaded, &reloaded.applied, &reloaded.need_restart);
    engine.reconfigure(reloaded.loaded.config.clone(), Some(agent_config));
    Ok(reloaded.loaded)
}
