//! The router's main loop: route everything in `incoming/`, then wait for a
//! wake-up datagram, the periodic scan, a SIGHUP or the stop request.
//!
//! The routing itself is blocking file-system work, done on tokio's
//! blocking pool in batches of up to 128 messages, each batch one group
//! commit (three fsync latencies for the batch, not three per message);
//! the loop only waits and talks to the scheduler, telling it of a whole
//! batch at once. A stop request is looked at between batches, so the
//! batch in hand is always finished first.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use skein_config::{Config, Loaded};
use skein_daemon::{Context, PidFile, ServiceError};
use skein_dkim::Signer;
use skein_routing::aliases::WatchedAliases;
use skein_routing::route::Router;
use skein_routing::users::SystemUsers;
use skein_spool::{Area, Daemon, QueueId, Spool, Wakeable};
use tracing::{debug, error, info, warn};

use crate::error::RouterError;
use crate::filter::{self, Filtering, Rejected};
use crate::notify::SchedulerLink;
use crate::transition::{self, Outcome, Summary};
use crate::wake::WakeSocket;

/// How often `incoming/` is scanned without a wake-up: the safety net for
/// a lost datagram (or a writer that does not send one).
/// The default of `router.scan_interval`.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(30);

/// Most messages routed as one group commit: enough to spread the three
/// fsyncs of a batch thin, few enough that the scheduler hears of the
/// first ones soon and a stop request is looked at often.
const BATCH: usize = 128;

/// Everything routing needs, owned by whichever thread routes right now.
#[derive(Debug)]
pub struct Engine {
    config: Config,
    spool: Spool,
    aliases: WatchedAliases,
    users: SystemUsers,
    force_reload: bool,
    /// The `[[dkim]]` keys in force (`None`: nothing is signed).
    signer: Option<Arc<Signer>>,
    /// The content filters for local submissions (`router.milters`).
    filtering: Filtering,
}

impl Engine {
    /// Cleans the spool's `tmp/` and loads the aliases. A broken aliases
    /// file is an error: the router does not start on a half-read table.
    pub fn new(
        config: Config,
        spool: Spool,
        signer: Option<Arc<Signer>>,
    ) -> Result<Engine, RouterError> {
        let cleaned = spool.clean_stale_tmp()?;
        if !cleaned.removed.is_empty() {
            info!(
                removed = cleaned.removed.len(),
                "cleaned stale temporary files"
            );
        }
        let aliases = WatchedAliases::load(config.router.aliases.clone())?;
        let users = SystemUsers::new(config.local.maildir_root.clone());
        let filtering = Filtering::new(&config.router.milters, &config.smtpd);
        Ok(Engine {
            aliases,
            filtering,
            config,
            spool,
            users,
            force_reload: false,
            signer,
        })
    }

    /// The spool.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Number of aliases in force.
    pub fn alias_count(&self) -> usize {
        self.aliases.table().len()
    }

    /// Asks for the aliases to be reloaded before the next message.
    pub fn request_reload(&mut self) {
        self.force_reload = true;
    }

    /// Applies the configuration file as it is now (SIGHUP, `skein
    /// reload`): routes, local domains, the aliases (read again even if
    /// unchanged), the Maildir root and the scan interval take effect for
    /// the next message. A file that fails the start's checks, or aliases
    /// that do not load, are refused: the configuration in force stays
    /// and the error says why. `spool.*` and `user` need a restart.
    pub fn reload(&mut self, current: &Loaded) -> Result<Loaded, String> {
        let reloaded = self.reload_checked(current)?;
        let config = &reloaded.loaded.config;
        if config.router.aliases == self.config.router.aliases {
            // The same file, read again whether it changed or not (its
            // check passed a moment ago: a failure now is a race with an
            // edit, and keeps the table in force, as any broken reload
            // of the aliases does).
            self.aliases.refresh(true);
        } else {
            let aliases = WatchedAliases::load(config.router.aliases.clone())
                .map_err(|e| format!("router.aliases: {e}"))?;
            info!(
                file = ?config.router.aliases,
                aliases = aliases.table().len(),
                "aliases loaded"
            );
            self.aliases = aliases;
        }
        self.users = SystemUsers::new(config.local.maildir_root.clone());
        self.signer.clone_from(&reloaded.checked.dkim);
        self.filtering.set(&config.router.milters, &config.smtpd);
        self.config = config.clone();
        self.force_reload = false;
        skein_daemon::log_reloaded(&reloaded.loaded, &reloaded.applied, &reloaded.need_restart);
        Ok(reloaded.loaded)
    }

    /// The reload's checks. DKIM keys that only root may read were read
    /// at start, before the privilege drop; if the `[[dkim]]` entries are
    /// unchanged and only that read fails now, the keys in force stay
    /// (with a warning), as the smtpd keeps a root-only TLS key.
    fn reload_checked(&self, current: &Loaded) -> Result<skein_preflight::Reloaded, String> {
        use skein_preflight::Reader;
        let first = match skein_preflight::reload(current, Reader::Router) {
            Ok(reloaded) => return Ok(reloaded),
            Err(e) => e,
        };
        let denied = first.message.contains("Permission denied")
            && first.key.as_deref().is_some_and(|k| k.starts_with("dkim["));
        let again = current.reload().map_err(|e| e.to_string())?;
        if !denied || again.loaded.config.dkim != self.config.dkim || self.signer.is_none() {
            return Err(first.to_string());
        }
        let mut stripped = again.loaded.clone();
        stripped.config.dkim.clear();
        let mut checked =
            skein_preflight::check(&stripped, Reader::Router).map_err(|e| e.to_string())?;
        checked.warnings.push(format!(
            "{first}: as {} now, it cannot be read again; the keys read at start stay in force (a new key needs a restart, or let the router's account read it)",
            current.config.run_as()
        ));
        checked.dkim.clone_from(&self.signer);
        for warning in &checked.warnings {
            warn!("{warning}");
        }
        Ok(skein_preflight::Reloaded {
            loaded: again.loaded,
            checked,
            applied: again.applied,
            need_restart: again.need_restart,
        })
    }

    /// The messages in `incoming/`, oldest first (after reloading the
    /// aliases if asked to or if they changed).
    pub fn pending(&mut self) -> Result<Vec<QueueId>, RouterError> {
        self.aliases.refresh(std::mem::take(&mut self.force_reload));
        let ids = self.spool.list(Area::Incoming, |stray| {
            debug!(path = %stray.display(), "ignoring a file that is not a queue id");
        })?;
        Ok(ids)
    }

    /// Routes a batch of messages as one group commit (transition T2 for
    /// each; see [`transition::route_batch`]). The recipients of a message
    /// in `rejected` that the content filters refused fail with their
    /// reply.
    pub fn route_batch(
        &mut self,
        ids: &[QueueId],
        rejected: &HashMap<QueueId, Rejected>,
    ) -> Vec<(QueueId, Result<Outcome, RouterError>)> {
        self.aliases.refresh(std::mem::take(&mut self.force_reload));
        let router = Router::new(&self.config, self.aliases.table(), &self.users);
        transition::route_batch(&self.spool, ids, self.signer.as_deref(), |info, facts| {
            let routed = router.route(&info.envelope, facts.received, facts.is_looping())?;
            Ok(match rejected.get(&info.id) {
                Some(rejected) => filter::fail_refused(routed, rejected),
                None => routed,
            })
        })
    }
}

/// Runs `f` on the engine in tokio's blocking pool and hands the engine
/// back.
async fn blocking<T: Send + 'static>(
    mut engine: Engine,
    f: impl FnOnce(&mut Engine) -> T + Send + 'static,
) -> Result<(Engine, T), RouterError> {
    tokio::task::spawn_blocking(move || {
        let out = f(&mut engine);
        (engine, out)
    })
    .await
    .map_err(|e| RouterError::Bug(format!("routing task failed: {e}")))
}

/// Runs the local submissions of `batch` through `router.milters`
/// ([`filter`]); returns the messages to route now and those whose
/// recipients fail.
async fn filter_batch(
    engine: Engine,
    batch: Vec<QueueId>,
) -> Result<(Engine, (Vec<QueueId>, HashMap<QueueId, Rejected>)), RouterError> {
    if !engine.filtering.is_active() {
        return Ok((engine, (batch, HashMap::new())));
    }
    let (mut engine, (batch, candidates)) = blocking(engine, move |e| {
        let candidates = filter::candidates(&e.spool, &batch);
        (batch, candidates)
    })
    .await?;
    if candidates.is_empty() {
        return Ok((engine, (batch, HashMap::new())));
    }
    let milters = engine.filtering.milters();
    let decided = filter::decide(&milters, &engine.config.hostname, candidates).await;
    let now = Instant::now();
    for id in &decided.deferred {
        engine.filtering.defer(id.clone(), now);
    }
    let (engine, decided) = blocking(engine, move |e| {
        let mut decided = decided;
        filter::apply(&e.spool, &mut decided);
        decided
    })
    .await?;
    let batch = batch
        .into_iter()
        .filter(|id| !decided.skip.contains(id))
        .collect();
    Ok((engine, (batch, decided.rejected)))
}

/// The router service, for [`skein_daemon::run`].
/// How long the router waits with nothing to route before it gives the
/// memory of the last burst back.
const IDLE_TRIM_AFTER: Duration = Duration::from_secs(1);

pub async fn serve(
    loaded: Loaded,
    signer: Option<Arc<Signer>>,
    ctx: Context,
) -> Result<(), ServiceError> {
    // Before anything else is read: message headers are hostile input.
    ctx.drop_privileges()?;
    let config = loaded.config.clone();
    let spool = Spool::open(&config.spool.dir)?;
    // One router per spool: a second one would steal the wake socket.
    let _pid_file = PidFile::acquire(spool.pid_file(Daemon::Router))?;
    let mut scan_interval = config.router.scan_interval;
    let engine = Engine::new(config, spool, signer)?;
    let wake = WakeSocket::bind(&engine.spool().wake_socket(Wakeable::Router))?;
    // skein-postdrop's wake-up, in maildrop/ (it cannot enter run/). A
    // pickup without it still happens, at each scan.
    let pickup_wake = match WakeSocket::bind(&skein_spool::drop::wake_socket(engine.spool().root()))
    {
        Ok(socket) => Some(socket),
        Err(e) => {
            tracing::warn!(error = %e, "no wake-up socket for maildrop/: submissions through skein-postdrop wait for the next scan");
            None
        }
    };
    let mut scheduler = SchedulerLink::new(engine.spool().scheduler_socket());
    info!(
        config = %loaded.source,
        spool = %engine.spool().root().display(),
        aliases = engine.alias_count(),
        dkim_keys = engine.signer.as_ref().map_or(0, |s| s.len()),
        "router started"
    );
    ctx.ready();

    let shutdown = ctx.shutdown();
    let mut reloads = ctx.reloads();
    let mut reloads_open = true;
    let mut engine = engine;
    let mut current = loaded;
    let mut routed_total: u64 = 0;
    // Whether memory has been used since it was last given back.
    let mut busy = false;
    loop {
        let (back, picked) = blocking(engine, |e| {
            skein_spool::drop::dir(e.spool().root()).is_dir().then(|| {
                crate::pickup::pick_up(
                    &e.spool,
                    &e.config.hostname,
                    e.config.smtpd.max_message_size.bytes(),
                )
            })
        })
        .await?;
        engine = back;
        if let Some(picked) = picked
            && picked.queued + picked.refused > 0
        {
            busy = true;
        }
        let (back, routed) = route_pending(engine, &mut scheduler, &ctx).await?;
        engine = back;
        if routed > 0 {
            routed_total += routed;
            busy = true;
            ctx.status(&format!("{routed_total} messages routed"));
        }
        if shutdown.is_triggered() {
            break;
        }
        tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            changed = reloads.changed(), if reloads_open => match changed {
                Ok(()) => {
                    ctx.reloading();
                    let before = current.clone();
                    let (back, outcome) = blocking(engine, move |e| e.reload(&before)).await?;
                    engine = back;
                    match outcome {
                        Ok(next) => {
                            scan_interval = next.config.router.scan_interval;
                            current = next;
                        }
                        Err(why) => error!(
                            error = why.as_str(),
                            "reload refused: the configuration in force stays"
                        ),
                    }
                    ctx.ready();
                }
                // The skeleton is going away; the stop request follows.
                Err(_) => reloads_open = false,
            },
            _ = wake.woken() => {}
            () = async {
                match &pickup_wake {
                    Some(socket) => socket.woken().await,
                    None => std::future::pending().await,
                }
            } => {}
            // A second with nothing to route after a burst: give what the
            // burst used back to the kernel (bench/soak: without it the
            // resident set keeps the busiest moment's size; heaptrack finds
            // no leak). The pass that follows finds nothing and is cheap.
            () = tokio::time::sleep(IDLE_TRIM_AFTER), if busy => {
                skein_daemon::give_back_free_memory();
                busy = false;
            }
            _ = tokio::time::sleep(scan_interval) => {}
        }
    }
    drop(wake);
    drop(pickup_wake);
    info!(routed = routed_total, "router stopping");
    Ok(())
}

/// Routes every message now in `incoming/`, stopping early (between
/// messages) on a stop request. Returns the engine and how many messages
/// were routed.
async fn route_pending(
    engine: Engine,
    scheduler: &mut SchedulerLink,
    ctx: &Context,
) -> Result<(Engine, u64), RouterError> {
    let (mut engine, pending) = blocking(engine, Engine::pending).await?;
    let ids = match pending {
        Ok(ids) => ids,
        Err(e) => {
            error!(error = %e, "cannot list incoming/; trying again at the next scan");
            return Ok((engine, 0));
        }
    };
    let shutdown = ctx.shutdown();
    let mut routed = 0;
    let waiting = engine.filtering.waiting(&ids, Instant::now());
    let ids: Vec<QueueId> = ids.into_iter().filter(|id| !waiting.contains(id)).collect();
    for batch in ids.chunks(BATCH) {
        if shutdown.is_triggered() {
            break;
        }
        let (back, (batch, rejected)) = filter_batch(engine, batch.to_vec()).await?;
        let (back, outcomes) = blocking(back, move |e| e.route_batch(&batch, &rejected)).await?;
        engine = back;
        let mut queued = Vec::new();
        for (id, outcome) in outcomes {
            match outcome {
                Ok(Outcome::Routed(summary)) => {
                    log_routed(&summary);
                    routed += 1;
                    queued.push(summary.id.to_string());
                }
                Ok(Outcome::Skipped(why)) => debug!(queue_id = %id, why, "message skipped"),
                // The spool logged it as an error already.
                Ok(Outcome::Quarantined) => {}
                Err(e) => error!(
                    queue_id = %id,
                    error = %e,
                    "cannot route message; it stays in incoming/ and is tried again at the next scan"
                ),
            }
        }
        // A stop request does not wait out a slow scheduler: the messages
        // are safe in the spool and found by its next scan.
        tokio::select! {
            _ = scheduler.submitted_all(&queued) => {}
            _ = shutdown.wait() => {
                debug!(messages = queued.len(), "stopping: scheduler notification abandoned");
            }
        }
    }
    Ok((engine, routed))
}

fn log_routed(summary: &Summary) {
    let sender = if summary.sender.is_empty() {
        "<>"
    } else {
        summary.sender.as_str()
    };
    // A local submission by `skein sendmail` (one that wrote the spool
    // itself) gets the line Postfix's pickup writes, with the submitter;
    // one through maildrop/ has had its own (`pickup.rs`).
    if let Some(who) = summary.origin.strip_prefix("sendmail ") {
        let field = |name: &str| {
            who.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or("")
                .to_owned()
        };
        info!(
            queue_id = %summary.id,
            uid = field("uid=").as_str(),
            user = field("user=").as_str(),
            sender,
            recipients = summary.recipients,
            size = summary.size,
            "picked up"
        );
    }
    info!(
        queue_id = %summary.id,
        sender,
        recipients = summary.recipients,
        failed = summary.failed.len(),
        message_id = summary.message_id.as_deref().unwrap_or(""),
        resumed = summary.resumed,
        dkim = summary.dkim.as_str(),
        "routed"
    );
    for (rcpt, status, diagnostic) in &summary.failed {
        info!(
            queue_id = %summary.id,
            rcpt = rcpt.as_str(),
            status = status.as_str(),
            diagnostic = diagnostic.as_str(),
            "recipient failed at routing; it will bounce"
        );
    }
}
