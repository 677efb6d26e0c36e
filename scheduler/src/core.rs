//! The scheduler's core: one task that owns every message, thread and
//! agent, and reacts to [`Event`]s one at a time. Nothing else mutates the
//! state, so there are no locks; agents and control clients talk to it
//! through channels.
//!
//! The order of every reaction is: record durably (journal append +
//! fdatasync), then change the state in memory, then act (log, tell a
//! tool, bounce, feed another job).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use skein_config::Config;
use skein_proto::{
    AgentToScheduler, ControlError, ControlErrorKind, ControlRequest, ControlResponse, FlushTarget,
    Job, JobId, JobRecipient, Outcome, SchedulerToAgent, Status, ThreadKey,
};
use skein_spool::{Area, ControlFile, Journal, OutcomeKind, QueueId, Record, Spool, SpoolError};
use tokio::sync::{mpsc, oneshot};

use crate::agent::{self, AgentId, Spawn};
use crate::bounce;
use crate::state::{Msg, RState, notify_of, now_micros};

/// `maxta = 0` means automatic: this many agents at most.
const AUTO_MAXTA: usize = 100;
/// After a failure to start an agent, wait this long before trying again.
const SPAWN_BACKOFF: Duration = Duration::from_secs(30);
/// Retired files are published at the latest when this many wait (else
/// whenever the scheduler has no event waiting).
const PUBLISH_AT: usize = 256;
/// How often the spool is rescanned for control files we were not told of.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(10);

/// Whether a removed message's files may be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reuse {
    /// Retire them into `free/` (docs/spool.md, "Recycled files").
    Files,
    /// Unlink them: an agent may still read the message file.
    Never,
}

/// What the core reacts to.
#[derive(Debug)]
pub enum Event {
    /// An agent finished its handshake.
    AgentUp {
        /// Which.
        agent: AgentId,
    },
    /// An agent sent a frame.
    AgentMsg {
        /// Which.
        agent: AgentId,
        /// What.
        msg: AgentToScheduler,
    },
    /// An agent's connection ended (exit, crash, garbage, kill).
    AgentGone {
        /// Which.
        agent: AgentId,
        /// Why, for the logs and the deferral diagnostic.
        reason: String,
    },
    /// A request on the control socket.
    Control {
        /// The request.
        req: ControlRequest,
        /// Where the answer goes.
        reply: oneshot::Sender<ControlResponse>,
    },
    /// Once a second: retries, expiry, timeouts.
    Tick,
}

struct JobInFlight {
    queue_id: String,
    thread: ThreadKey,
    rcpts: Vec<u32>,
    reported: Vec<bool>,
    cancelled: bool,
}

struct Agent {
    pid: u32,
    clause: usize,
    channel: String,
    thread: Option<ThreadKey>,
    up: bool,
    credit: u32,
    jobs: HashMap<u64, JobInFlight>,
    last_heard: Instant,
    idle_since: Instant,
    tx: mpsc::UnboundedSender<SchedulerToAgent>,
    connected_to: Option<String>,
    stopping: bool,
}

#[derive(Default)]
struct Thread {
    clause: usize,
    /// Messages with a recipient of this thread that is pending or
    /// deferred (not in flight, not final), in arrival order.
    pending: BTreeSet<String>,
    /// Earliest next attempt of the thread (retry backoff), micros.
    next_attempt: u64,
    /// Consecutive failed attempts (reset by a delivery).
    failures: u32,
    /// Attempts made (jobs handed out).
    attempts: u32,
    last_diag: Option<String>,
    agents: Vec<AgentId>,
}

/// The scheduler's state.
pub struct Core {
    config: Config,
    config_path: Option<PathBuf>,
    spool: Spool,
    msgs: HashMap<String, Msg>,
    threads: BTreeMap<ThreadKey, Thread>,
    agents: HashMap<AgentId, Agent>,
    next_agent: AgentId,
    next_job: u64,
    events: mpsc::UnboundedSender<Event>,
    started: Instant,
    last_rescan: Instant,
    spawn_blocked_until: HashMap<usize, Instant>,
}

fn micros_after(now: u64, d: Duration) -> u64 {
    now.saturating_add(d.as_micros() as u64)
}

impl Core {
    /// A core with nothing loaded yet.
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
        spool: Spool,
        events: mpsc::UnboundedSender<Event>,
    ) -> Core {
        Core {
            config,
            config_path,
            spool,
            msgs: HashMap::new(),
            threads: BTreeMap::new(),
            agents: HashMap::new(),
            next_agent: 1,
            next_job: 1,
            events,
            started: Instant::now(),
            last_rescan: Instant::now(),
            spawn_blocked_until: HashMap::new(),
        }
    }

    /// Number of agents alive.
    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }

    // ----- loading ------------------------------------------------------

    /// Loads every control file in `transport/` not yet known.
    pub fn scan(&mut self) {
        self.last_rescan = Instant::now();
        let ids = match self.spool.list(Area::Transport, |p| {
            tracing::warn!(file = %p.display(), "stray file in transport/ (not a queue id), left alone");
        }) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = %e, "cannot list transport/");
                return;
            }
        };
        for id in ids {
            if !self.msgs.contains_key(id.as_str()) {
                self.load(&id);
            }
        }
        self.remove_orphans();
    }

    /// Message files in `queue/` without a control file are what a crash in
    /// the middle of removing a finished message leaves (docs/spool.md T5).
    fn remove_orphans(&mut self) {
        let Ok(ids) = self.spool.list(Area::Queue, |_| {}) else {
            return;
        };
        for id in ids {
            if self.msgs.contains_key(id.as_str()) || self.spool.path(Area::Transport, &id).exists()
            {
                continue;
            }
            let path = self.spool.path(Area::Queue, &id);
            let old = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(60));
            if old && std::fs::remove_file(&path).is_ok() {
                tracing::info!(queue_id = %id, "removed message file left by an interrupted removal");
            }
        }
    }

    /// Loads one control file; returns whether the message is now known.
    pub fn load(&mut self, id: &QueueId) -> bool {
        let path = self.spool.path(Area::Transport, id);
        let (control, torn) = match ControlFile::read(&path) {
            Ok(x) => x,
            Err(e @ SpoolError::Corrupt { .. }) => {
                let _ = self.spool.quarantine(&path, &e.to_string());
                return false;
            }
            Err(e) if e.is_not_found() => return false,
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "cannot read control file");
                return false;
            }
        };
        if torn {
            // A crash in the middle of an append: drop the torn record
            // before anything is appended after it.
            if let Err(e) = self.spool.rewrite_control(&control) {
                tracing::error!(queue_id = %id, error = %e, "cannot repair control file");
                return false;
            }
            tracing::warn!(queue_id = %id, "dropped a torn journal record");
        }
        let message_path = self.spool.root().join(&control.message);
        let finished = Msg::load(control.clone(), path.clone(), message_path.clone()).is_done();
        if finished {
            // Every recipient is final: a removal that was interrupted (or
            // undone by a power loss). Finish it.
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(&message_path);
            tracing::info!(queue_id = %id, "removed an already finished message");
            return false;
        }
        if !message_path.exists() {
            if self.spool.path(Area::Incoming, id).exists() {
                // The router has written the control file but not yet
                // moved the message (S1'): it will tell us.
                return false;
            }
            let _ = self.spool.quarantine(
                &path,
                "its message file is missing from queue/ and incoming/",
            );
            return false;
        }
        let msg = Msg::load(control, path, message_path);
        let key = msg.id().to_string();
        for (i, r) in msg.rcpts.iter().enumerate() {
            if matches!(r.state, RState::Pending | RState::Deferred) {
                let thread = msg.thread_of(i);
                let clause = self.clause_index(&thread);
                let t = self.threads.entry(thread).or_insert_with(|| Thread {
                    clause,
                    ..Default::default()
                });
                t.pending.insert(key.clone());
            }
        }
        self.msgs.insert(key.clone(), msg);
        self.settle(&key);
        true
    }

    fn clause_index(&self, thread: &ThreadKey) -> usize {
        self.config
            .scheduler
            .clause
            .iter()
            .position(|c| c.matches(&thread.channel, &thread.host))
            .unwrap_or(usize::MAX)
    }

    // ----- events -------------------------------------------------------

    /// Reacts to one event.
    pub fn handle(&mut self, ev: Event) {
        match ev {
            Event::AgentUp { agent } => {
                if let Some(a) = self.agents.get_mut(&agent) {
                    a.up = true;
                    a.last_heard = Instant::now();
                }
            }
            Event::AgentMsg { agent, msg } => self.on_agent_msg(agent, msg),
            Event::AgentGone { agent, reason } => self.on_agent_gone(agent, &reason),
            Event::Control { req, reply } => {
                let resp = self.on_control(req);
                let _ = reply.send(resp);
            }
            Event::Tick => self.on_tick(),
        }
        self.dispatch();
    }

    fn on_agent_msg(&mut self, id: AgentId, msg: AgentToScheduler) {
        let Some(a) = self.agents.get_mut(&id) else {
            return;
        };
        a.last_heard = Instant::now();
        match msg {
            AgentToScheduler::Want { jobs } => a.credit = a.credit.saturating_add(jobs),
            AgentToScheduler::Idle { connected_to } => a.connected_to = connected_to,
            AgentToScheduler::Outcome(o) => self.on_outcome(id, o),
            AgentToScheduler::JobDone { job } => self.on_job_done(id, job),
        }
    }

    fn protocol_violation(&mut self, id: AgentId, what: &str) {
        if let Some(a) = self.agents.get_mut(&id) {
            tracing::error!(
                agent_pid = a.pid,
                violation = what,
                "agent broke the protocol; killing it"
            );
            a.stopping = true;
            agent::kill(a.pid);
        }
    }

    fn on_outcome(&mut self, id: AgentId, o: Outcome) {
        let Some(a) = self.agents.get_mut(&id) else {
            return;
        };
        let Some(job) = a.jobs.get_mut(&o.job.0) else {
            return self.protocol_violation(id, "outcome for a job it does not hold");
        };
        let Some(pos) = job.rcpts.iter().position(|&r| r == o.recipient) else {
            return self.protocol_violation(id, "outcome for a recipient not in the job");
        };
        if job.reported[pos] {
            return self.protocol_violation(id, "second outcome for one recipient");
        }
        job.reported[pos] = true;
        if job.cancelled {
            return;
        }
        let queue_id = job.queue_id.clone();
        let thread = job.thread.clone();
        let relay = o
            .remote_mta
            .clone()
            .or_else(|| a.connected_to.clone())
            .unwrap_or_else(|| thread.host.clone());
        let (kind, retry) = match o.status {
            Status::Delivered => (OutcomeKind::Delivered, None),
            Status::Failed => (OutcomeKind::Failed, None),
            Status::Deferred { retry_after_secs } => (OutcomeKind::Deferred, retry_after_secs),
        };
        self.record_outcome(
            &queue_id,
            o.recipient,
            kind,
            o.enhanced,
            o.reply.as_ref().map(|r| r.to_string()),
            Some(relay),
            o.diagnostic,
            retry.map(Duration::from_secs),
        );
        if kind == OutcomeKind::Delivered
            && let Some(t) = self.threads.get_mut(&thread)
        {
            t.failures = 0;
        }
    }

    /// Journals one outcome and applies it. `retry` overrides the retry
    /// schedule for a deferral.
    #[allow(clippy::too_many_arguments)]
    fn record_outcome(
        &mut self,
        queue_id: &str,
        rcpt: u32,
        kind: OutcomeKind,
        status: skein_proto::EnhancedCode,
        reply: Option<String>,
        remote_mta: Option<String>,
        diagnostic: String,
        retry: Option<Duration>,
    ) {
        let now = now_micros();
        let Some(msg) = self.msgs.get_mut(queue_id) else {
            return;
        };
        let i = rcpt as usize;
        let Some(r) = msg.rcpts.get_mut(i) else {
            return;
        };
        let attempt = r.attempts;
        let retry_at = (kind == OutcomeKind::Deferred).then(|| {
            micros_after(
                now,
                retry.unwrap_or_else(|| self.config.scheduler.retry_delay(attempt.max(1) as usize)),
            )
        });
        let record = Record::Outcome {
            rcpt,
            at: now,
            kind,
            attempt,
            status,
            retry_at,
            reply: reply.clone(),
            remote_mta: remote_mta.clone(),
            diagnostic: diagnostic.clone(),
        };
        // Written now, made durable when the message settles (see
        // `settle`): a process crash cannot lose it, a power loss before
        // that fdatasync gets the recipient tried again.
        match Journal::open(&msg.control_path).and_then(|mut j| j.write(&[record])) {
            Ok(()) => msg.unsynced = true,
            // Not recorded: after a restart the recipient is simply tried
            // again (at-least-once). Keep going in memory.
            Err(e) => tracing::error!(queue_id, error = %e, "cannot record an outcome"),
        }
        let notify = notify_of(msg.control.recipients[i].notify);
        r.status = Some(status);
        r.diagnostic = Some(diagnostic.clone());
        r.reply = reply.clone();
        r.remote_mta = remote_mta.clone();
        r.last_attempt = now;
        r.state = match kind {
            OutcomeKind::Delivered => {
                r.success_dsn_due = notify.success;
                RState::Delivered
            }
            OutcomeKind::Failed => RState::Failed { notified: false },
            OutcomeKind::Deferred => {
                r.retry_at = retry_at.unwrap_or(now);
                RState::Deferred
            }
        };
        let cr = &msg.control.recipients[i];
        let thread = ThreadKey::new(cr.channel.clone(), cr.host.clone());
        let delay = now.saturating_sub(msg.control.arrival_micros) as f64 / 1e6;
        let word = match kind {
            OutcomeKind::Delivered => "sent",
            OutcomeKind::Deferred => "deferred",
            OutcomeKind::Failed => "bounced",
        };
        tracing::info!(
            target: "skein::delivery",
            queue_id,
            to = %cr.address,
            orig_to = cr.orcpt.as_deref().unwrap_or(""),
            channel = %cr.channel,
            relay = remote_mta.as_deref().unwrap_or(&cr.host),
            delay = format!("{delay:.2}"),
            attempt,
            status = word,
            dsn = %status,
            reply = reply.as_deref().unwrap_or(""),
            diag = %diagnostic,
            "delivery"
        );
        if kind == OutcomeKind::Deferred {
            let clause = self.clause_index(&thread);
            let t = self.threads.entry(thread).or_insert_with(|| Thread {
                clause,
                ..Default::default()
            });
            t.pending.insert(queue_id.to_string());
            t.last_diag = Some(diagnostic);
        } else if let Some(t) = self.threads.get_mut(&thread) {
            t.last_diag = Some(diagnostic);
        }
    }

    fn on_job_done(&mut self, id: AgentId, job: JobId) {
        let Some(a) = self.agents.get_mut(&id) else {
            return;
        };
        let Some(j) = a.jobs.remove(&job.0) else {
            return self.protocol_violation(id, "JobDone for a job it does not hold");
        };
        let unreported: Vec<u32> = j
            .rcpts
            .iter()
            .zip(&j.reported)
            .filter(|(_, rep)| !**rep)
            .map(|(r, _)| *r)
            .collect();
        if !j.cancelled {
            for r in &unreported {
                self.record_outcome(
                    &j.queue_id,
                    *r,
                    OutcomeKind::Deferred,
                    skein_proto::EnhancedCode::SYSTEM_TROUBLE,
                    None,
                    None,
                    "the agent finished the job without reporting this recipient".into(),
                    None,
                );
            }
            self.after_job(&j);
        }
    }

    /// Thread backoff and message settling once a job is over.
    fn after_job(&mut self, j: &JobInFlight) {
        let now = now_micros();
        if let Some(msg) = self.msgs.get(&j.queue_id) {
            let all_deferred = j
                .rcpts
                .iter()
                .all(|&r| msg.rcpts[r as usize].state == RState::Deferred);
            if all_deferred && let Some(t) = self.threads.get_mut(&j.thread) {
                t.failures += 1;
                let delay = self.config.scheduler.retry_delay(t.failures as usize);
                t.next_attempt = t.next_attempt.max(micros_after(now, delay));
            }
        }
        self.settle(&j.queue_id);
    }

    fn on_agent_gone(&mut self, id: AgentId, reason: &str) {
        let Some(a) = self.agents.remove(&id) else {
            return;
        };
        if a.stopping && a.jobs.is_empty() {
            tracing::debug!(agent_pid = a.pid, reason, "agent exited");
        } else {
            tracing::warn!(agent_pid = a.pid, jobs = a.jobs.len(), reason, "agent gone");
        }
        if let Some(t) = a.thread.as_ref().and_then(|k| self.threads.get_mut(k)) {
            t.agents.retain(|x| *x != id);
        }
        let unexpected = !a.stopping || !a.jobs.is_empty();
        for (_, j) in a.jobs {
            if j.cancelled {
                continue;
            }
            for (r, rep) in j.rcpts.iter().zip(&j.reported) {
                if !rep {
                    self.record_outcome(
                        &j.queue_id,
                        *r,
                        OutcomeKind::Deferred,
                        skein_proto::EnhancedCode::SYSTEM_TROUBLE,
                        None,
                        None,
                        format!("transport agent failed: {reason}"),
                        None,
                    );
                }
            }
            self.after_job(&j);
        }
        if unexpected
            && let Some(t) = a.thread.as_ref().and_then(|k| self.threads.get_mut(k))
            && t.next_attempt <= now_micros()
        {
            // An agent that dies before doing anything must not be
            // restarted in a tight loop.
            t.failures += 1;
            let delay = self.config.scheduler.retry_delay(t.failures as usize);
            t.next_attempt = micros_after(now_micros(), delay);
            t.last_diag = Some(format!("transport agent failed: {reason}"));
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let timeout = self.config.scheduler.agent_timeout;
        for a in self.agents.values_mut() {
            if !a.jobs.is_empty() && now.duration_since(a.last_heard) > timeout && !a.stopping {
                tracing::warn!(
                    agent_pid = a.pid,
                    "agent silent past scheduler.agent_timeout; killing it"
                );
                a.stopping = true;
                agent::kill(a.pid);
            }
            if a.up && a.thread.is_none() && a.jobs.is_empty() && !a.stopping {
                let idlemax = self
                    .config
                    .scheduler
                    .clause
                    .get(a.clause)
                    .map(|c| c.idlemax)
                    .unwrap_or(Duration::from_secs(240));
                if now.duration_since(a.idle_since) > idlemax {
                    a.stopping = true;
                    let _ = a.tx.send(SchedulerToAgent::Shutdown);
                }
            }
        }
        self.expire();
        // Bounces that could not be queued before (spool trouble) are
        // tried again every tick until they are.
        let unsettled: Vec<String> = self
            .msgs
            .iter()
            .filter(|(_, m)| {
                m.rcpts
                    .iter()
                    .any(|r| r.state == RState::Failed { notified: false } || r.success_dsn_due)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in unsettled {
            self.settle(&id);
        }
        if now.duration_since(self.last_rescan) > RESCAN_INTERVAL {
            self.scan();
            match self.spool.trim_free() {
                Ok(0) => {}
                Ok(removed) => tracing::debug!(removed, "trimmed the pool of reusable files"),
                Err(e) => tracing::warn!(error = %e, "cannot trim the pool of reusable files"),
            }
        }
    }

    /// Fails recipients past `scheduler.expiry`, and sends delay warnings.
    fn expire(&mut self) {
        let now = now_micros();
        let expiry = self.config.scheduler.expiry.as_micros() as u64;
        let warn_after = self
            .config
            .scheduler
            .delay_warning
            .map(|d| d.as_micros() as u64);
        let mut expired: Vec<(String, u32, String)> = Vec::new();
        let mut warn: Vec<String> = Vec::new();
        for (id, m) in &self.msgs {
            if m.held {
                continue;
            }
            let age = now.saturating_sub(m.control.arrival_micros);
            if age > expiry {
                for (i, r) in m.rcpts.iter().enumerate() {
                    if matches!(r.state, RState::Pending | RState::Deferred) {
                        let last = r
                            .diagnostic
                            .clone()
                            .unwrap_or_else(|| "never attempted".into());
                        expired.push((id.clone(), i as u32, last));
                    }
                }
            } else if let Some(w) = warn_after
                && age > w
                && m.rcpts.iter().enumerate().any(|(i, r)| {
                    r.state == RState::Deferred
                        && !r.delay_notified
                        && notify_of(m.control.recipients[i].notify).delay
                })
            {
                warn.push(id.clone());
            }
        }
        let days = self.config.scheduler.expiry.as_secs_f64() / 86400.0;
        let mut touched = BTreeSet::new();
        for (id, i, last) in expired {
            self.record_outcome(
                &id,
                i,
                OutcomeKind::Failed,
                skein_proto::EnhancedCode::EXPIRED,
                None,
                None,
                format!("message expired after {days:.1} days in the queue; last error: {last}"),
                None,
            );
            touched.insert(id);
        }
        for id in touched {
            self.settle(&id);
        }
        for id in warn {
            bounce::delay_warning(self, &id);
        }
    }

    // ----- settling: bounces and removal ----------------------------------

    /// Sends the DSNs that are due and removes the message once every
    /// recipient is final. Runs only when none of its recipients is in
    /// flight or untried, so that one DSN covers a whole round.
    fn settle(&mut self, id: &str) {
        let Some(m) = self.msgs.get(id) else {
            return;
        };
        if m.rcpts
            .iter()
            .any(|r| matches!(r.state, RState::InFlight | RState::Pending))
        {
            return;
        }
        if m.is_done() {
            // Nothing to notify: the removal is the last word, and it
            // needs the journal no more durable than it is itself (see
            // `remove`), so the message's outcomes are never synced.
            return self.remove(id, "delivered", Reuse::Files);
        }
        // Outcomes are made durable before anything acts on them: a DSN is
        // sent only for a failure that a power loss cannot undo, a
        // deferral outlives a power loss with its retry time.
        self.sync_journal(id);
        bounce::failures(self, id);
        bounce::successes(self, id);
        if self.msgs.get(id).is_some_and(Msg::is_done) {
            self.remove(id, "delivered", Reuse::Files);
        }
    }

    /// Makes the outcomes written to `id`'s journal durable, if any are
    /// not yet. On failure they stay in the page cache: a power loss
    /// before the next sync gets those recipients tried again.
    fn sync_journal(&mut self, id: &str) {
        let Some(m) = self.msgs.get_mut(id) else {
            return;
        };
        if !m.unsynced {
            return;
        }
        match Journal::open(&m.control_path).and_then(|mut j| j.sync()) {
            Ok(()) => m.unsynced = false,
            Err(e) => tracing::error!(queue_id = id, error = %e, "cannot make outcomes durable"),
        }
    }

    /// Removes a message (T5: control file first, then the message file).
    /// With [`Reuse::Files`] its files are retired into `free/` for reuse:
    /// only for a message none of whose jobs is still held by an agent.
    fn remove(&mut self, id: &str, why: &str, reuse: Reuse) {
        let Some(m) = self.msgs.remove(id) else {
            return;
        };
        for (i, _) in m.rcpts.iter().enumerate() {
            let key = m.thread_of(i);
            if let Some(t) = self.threads.get_mut(&key) {
                t.pending.remove(id);
            }
            self.drop_thread_if_empty(&key);
        }
        // The files are retired into free/ for reuse (docs/spool.md,
        // "Recycled files"), which is a removal as far as the queue is
        // concerned. No fsync: a removal that a power loss undoes only
        // brings back a message whose journal says every recipient is
        // final, or that is delivered again (at-least-once), and loading a
        // finished message removes it again (see `load`). The control file
        // goes first so that a message file is never left looking alive
        // without its journal.
        let result = match reuse {
            Reuse::Files => self.spool.retire(&m.control_path, &m.message_path, id),
            Reuse::Never => std::fs::remove_file(&m.control_path)
                .map_err(|e| SpoolError::io("unlink", &m.control_path, e))
                .and_then(|()| {
                    std::fs::remove_file(&m.message_path)
                        .map_err(|e| SpoolError::io("unlink", &m.message_path, e))
                }),
        };
        if self.spool.retired() >= PUBLISH_AT {
            // Busy without a pause: do not let the pool run dry meanwhile.
            self.publish_retired();
        }
        match result {
            Ok(()) => tracing::info!(queue_id = id, why, "removed"),
            Err(e) => tracing::error!(queue_id = id, error = %e, "cannot remove finished message"),
        }
    }

    /// Makes the files of removed messages reusable (see
    /// [`Spool::publish_retired`]): called when no event is waiting, so
    /// that one pair of directory fsyncs covers every removal of a busy
    /// moment.
    pub fn publish_retired(&mut self) {
        if self.spool.retired() == 0 {
            return;
        }
        if let Err(e) = self.spool.publish_retired() {
            tracing::warn!(error = %e, "cannot publish retired files for reuse; trying again later");
        }
    }

    /// Appends a record to a message's journal.
    pub(crate) fn journal(&self, id: &str, record: Record) -> Result<(), SpoolError> {
        let m = self
            .msgs
            .get(id)
            .ok_or_else(|| SpoolError::Invalid(format!("no message {id}")))?;
        // The append's fdatasync also makes durable the outcomes written
        // before it.
        Journal::open(&m.control_path)?.append(&[record])
    }

    pub(crate) fn msg(&self, id: &str) -> Option<&Msg> {
        self.msgs.get(id)
    }

    pub(crate) fn msg_mut(&mut self, id: &str) -> Option<&mut Msg> {
        self.msgs.get_mut(id)
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn spool(&self) -> &Spool {
        &self.spool
    }

    // ----- dispatch -------------------------------------------------------

    fn ready_rcpts(&self, id: &str, thread: &ThreadKey, now: u64) -> Vec<u32> {
        let Some(m) = self.msgs.get(id) else {
            return Vec::new();
        };
        if m.held {
            return Vec::new();
        }
        m.control
            .recipients
            .iter()
            .zip(&m.rcpts)
            .filter(|(cr, r)| {
                cr.channel == thread.channel
                    && cr.host == thread.host
                    && (r.state == RState::Pending
                        || (r.state == RState::Deferred && r.retry_at <= now))
            })
            .map(|(cr, _)| cr.index)
            .collect()
    }

    fn has_ready(&self, key: &ThreadKey, now: u64) -> bool {
        let Some(t) = self.threads.get(key) else {
            return false;
        };
        t.next_attempt <= now
            && t.pending
                .iter()
                .any(|id| !self.ready_rcpts(id, key, now).is_empty())
    }

    fn can_spawn(&self, clause: usize, channel: &str) -> bool {
        let Some(c) = self.config.scheduler.clause.get(clause) else {
            return false;
        };
        if self
            .spawn_blocked_until
            .get(&clause)
            .is_some_and(|t| Instant::now() < *t)
        {
            return false;
        }
        let maxta = match self.config.scheduler.maxta {
            0 => AUTO_MAXTA,
            n => n as usize,
        };
        let live = self.agents.values().filter(|a| !a.stopping);
        let (mut total, mut in_channel, mut in_ring) = (0, 0, 0);
        for a in live {
            total += 1;
            in_channel += usize::from(a.channel == channel);
            in_ring += usize::from(a.clause == clause);
        }
        total < maxta
            && (c.maxchannel == 0 || in_channel < c.maxchannel as usize)
            && in_ring < c.maxring as usize
    }

    fn spawn(&mut self, clause: usize, channel: &str) -> Option<AgentId> {
        let c = self.config.scheduler.clause.get(clause)?;
        let spec = Spawn {
            program: agent::resolve_command(&c.command),
            args: c.args.clone(),
            channel: channel.to_string(),
            config_path: self.config_path.clone(),
        };
        let id = self.next_agent;
        self.next_agent += 1;
        match agent::start(id, &spec, self.events.clone()) {
            Ok(started) => {
                tracing::debug!(agent_pid = started.pid, program = %spec.program.display(), channel, "started agent");
                let now = Instant::now();
                self.agents.insert(
                    id,
                    Agent {
                        pid: started.pid,
                        clause,
                        channel: channel.to_string(),
                        thread: None,
                        up: false,
                        credit: 0,
                        jobs: HashMap::new(),
                        last_heard: now,
                        idle_since: now,
                        tx: started.tx,
                        connected_to: None,
                        stopping: false,
                    },
                );
                Some(id)
            }
            Err(e) => {
                tracing::error!(program = %spec.program.display(), error = %e, "cannot start transport agent; retrying in 30s");
                self.spawn_blocked_until
                    .insert(clause, Instant::now() + SPAWN_BACKOFF);
                None
            }
        }
    }

    /// Gives threads with work an agent, and agents with credit a job.
    pub fn dispatch(&mut self) {
        let now = now_micros();
        let keys: Vec<ThreadKey> = self
            .threads
            .iter()
            .filter(|(_, t)| t.next_attempt <= now && !t.pending.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for key in &keys {
            if !self.has_ready(key, now) {
                continue;
            }
            loop {
                let t = &self.threads[key];
                let Some(clause) = self.config.scheduler.clause.get(t.clause) else {
                    break; // no clause matches: nothing can deliver it
                };
                let busy = t
                    .agents
                    .iter()
                    .filter(|a| self.agents.get(a).is_some_and(|a| !a.stopping))
                    .count();
                if busy >= clause.maxthr as usize {
                    break;
                }
                // More agents than messages waiting would idle.
                if busy > 0 && busy >= t.pending.len() {
                    break;
                }
                let clause_idx = t.clause;
                let idle = self
                    .agents
                    .iter()
                    .filter(|(_, a)| {
                        a.thread.is_none()
                            && !a.stopping
                            && a.clause == clause_idx
                            && a.channel == key.channel
                    })
                    .max_by_key(|(_, a)| a.connected_to.as_deref() == Some(key.host.as_str()))
                    .map(|(id, _)| *id);
                let id = match idle {
                    Some(id) => id,
                    None if self.can_spawn(clause_idx, &key.channel) => {
                        match self.spawn(clause_idx, &key.channel) {
                            Some(id) => id,
                            None => break,
                        }
                    }
                    None => break,
                };
                if let Some(a) = self.agents.get_mut(&id) {
                    a.thread = Some(key.clone());
                }
                if let Some(t) = self.threads.get_mut(key) {
                    t.agents.push(id);
                }
            }
        }
        self.feed(now);
    }

    fn feed(&mut self, now: u64) {
        let ids: Vec<AgentId> = self.agents.keys().copied().collect();
        for id in ids {
            while let Some(a) = self.agents.get(&id) {
                let Some(key) = a.thread.clone() else { break };
                let overfeed = self
                    .config
                    .scheduler
                    .clause
                    .get(a.clause)
                    .map(|c| c.overfeed as usize)
                    .unwrap_or(1);
                if !a.up || a.stopping || a.credit == 0 || a.jobs.len() >= overfeed {
                    break;
                }
                if self.threads.get(&key).is_none_or(|t| t.next_attempt > now) {
                    self.release_if_idle(id);
                    break;
                }
                match self.next_job(&key, now) {
                    Some(job) => self.send_job(id, key, job),
                    None => {
                        self.release_if_idle(id);
                        break;
                    }
                }
            }
        }
    }

    /// An agent with nothing in hand leaves its thread and may be given
    /// another one of its group.
    fn release_if_idle(&mut self, id: AgentId) {
        let Some(a) = self.agents.get_mut(&id) else {
            return;
        };
        if !a.jobs.is_empty() {
            return;
        }
        if let Some(key) = a.thread.take() {
            a.idle_since = Instant::now();
            if let Some(t) = self.threads.get_mut(&key) {
                t.agents.retain(|x| *x != id);
            }
            self.drop_thread_if_empty(&key);
        }
    }

    fn drop_thread_if_empty(&mut self, key: &ThreadKey) {
        if self
            .threads
            .get(key)
            .is_some_and(|t| t.pending.is_empty() && t.agents.is_empty())
        {
            self.threads.remove(key);
        }
    }

    fn next_job(&mut self, key: &ThreadKey, now: u64) -> Option<(String, Vec<u32>)> {
        let t = self.threads.get(key)?;
        let mut exhausted = Vec::new();
        let mut found = None;
        for id in &t.pending {
            let ready = self.ready_rcpts(id, key, now);
            if !ready.is_empty() {
                found = Some((id.clone(), ready));
                break;
            }
            // Nothing of this message is waiting in this thread any more.
            let waiting = self.msgs.get(id).is_some_and(|m| {
                m.control.recipients.iter().zip(&m.rcpts).any(|(cr, r)| {
                    cr.channel == key.channel
                        && cr.host == key.host
                        && matches!(r.state, RState::Pending | RState::Deferred)
                })
            });
            if !waiting {
                exhausted.push(id.clone());
            }
        }
        if let Some(t) = self.threads.get_mut(key) {
            for id in exhausted {
                t.pending.remove(&id);
            }
        }
        found
    }

    fn send_job(
        &mut self,
        agent_id: AgentId,
        key: ThreadKey,
        (queue_id, rcpts): (String, Vec<u32>),
    ) {
        let job_id = self.next_job;
        self.next_job += 1;
        let Some(m) = self.msgs.get_mut(&queue_id) else {
            return;
        };
        let mut recipients = Vec::with_capacity(rcpts.len());
        let mut attempt = 0;
        for &i in &rcpts {
            let r = &mut m.rcpts[i as usize];
            r.state = RState::InFlight;
            r.attempts += 1;
            attempt = attempt.max(r.attempts);
            let cr = &m.control.recipients[i as usize];
            recipients.push(JobRecipient {
                index: i,
                address: cr.address.clone(),
                orcpt: cr.orcpt.clone(),
                notify: notify_of(cr.notify),
            });
        }
        let env = &m.control.envelope;
        let nexthop = m.control.recipients[rcpts[0] as usize].nexthop.clone();
        let job = Job {
            id: JobId(job_id),
            queue_id: queue_id.clone(),
            thread: key.clone(),
            nexthop,
            sender: env.sender.clone(),
            envid: env.envid.clone(),
            ret: env.ret,
            body: env.body,
            smtputf8: env.smtputf8,
            message_path: m.message_path.to_string_lossy().into_owned(),
            message_offset: m.control.offset,
            size: m.control.size,
            attempt,
            recipients,
        };
        let still_waiting = m.control.recipients.iter().zip(&m.rcpts).any(|(cr, r)| {
            cr.channel == key.channel
                && cr.host == key.host
                && matches!(r.state, RState::Pending | RState::Deferred)
        });
        if let Some(t) = self.threads.get_mut(&key) {
            t.attempts += 1;
            if !still_waiting {
                t.pending.remove(&queue_id);
            }
        }
        let Some(a) = self.agents.get_mut(&agent_id) else {
            return;
        };
        a.credit -= 1;
        a.last_heard = Instant::now();
        let n = rcpts.len();
        a.jobs.insert(
            job_id,
            JobInFlight {
                queue_id,
                thread: key,
                rcpts,
                reported: vec![false; n],
                cancelled: false,
            },
        );
        // A send error means the agent's writer is gone; its reader will
        // report AgentGone and the job is deferred then.
        let _ = a.tx.send(SchedulerToAgent::Job(job));
    }

    // ----- shutdown -------------------------------------------------------

    /// Asks every agent to finish and exit.
    pub fn shutdown_agents(&mut self) {
        for a in self.agents.values_mut() {
            a.stopping = true;
            let _ = a.tx.send(SchedulerToAgent::Shutdown);
        }
    }

    /// Kills whatever agent is still there.
    pub fn kill_agents(&mut self) {
        for a in self.agents.values() {
            agent::kill(a.pid);
        }
    }

    // ----- control requests -----------------------------------------------

    fn on_control(&mut self, req: ControlRequest) -> ControlResponse {
        match req {
            ControlRequest::Submitted { queue_id } => match queue_id.parse::<QueueId>() {
                Ok(id) => {
                    if !self.msgs.contains_key(id.as_str()) {
                        self.load(&id);
                    }
                    ok(format!("{id} queued"))
                }
                Err(e) => error(ControlErrorKind::Invalid, e.to_string()),
            },
            ControlRequest::Status => ControlResponse::Status(crate::report::status(self)),
            ControlRequest::ListQueue => ControlResponse::Queue(crate::report::queue(self)),
            ControlRequest::ListThreads => ControlResponse::Threads(crate::report::threads(self)),
            ControlRequest::Show { queue_id } => match self.msgs.get(&queue_id) {
                Some(m) => ControlResponse::Message(crate::report::detail(self, m)),
                None => unknown(&queue_id),
            },
            ControlRequest::Hold { queue_id } => self.hold(&queue_id, true),
            ControlRequest::Release { queue_id } => self.hold(&queue_id, false),
            ControlRequest::Delete { queue_id } => self.delete(&queue_id),
            ControlRequest::Flush(target) => self.flush(target),
            ControlRequest::Requeue { queue_id } => self.requeue(&queue_id),
        }
    }

    fn hold(&mut self, id: &str, hold: bool) -> ControlResponse {
        let Some(m) = self.msgs.get(id) else {
            return unknown(id);
        };
        if m.held == hold {
            return ok(format!(
                "{id} is already {}",
                if hold { "held" } else { "released" }
            ));
        }
        let at = now_micros();
        let rec = if hold {
            Record::Held { at }
        } else {
            Record::Released { at }
        };
        if let Err(e) = self.journal(id, rec) {
            return error(ControlErrorKind::Internal, e.to_string());
        }
        if let Some(m) = self.msgs.get_mut(id) {
            m.held = hold;
        }
        tracing::info!(queue_id = id, held = hold, "administrator changed hold");
        ok(format!("{id} {}", if hold { "held" } else { "released" }))
    }

    fn cancel_jobs_of(&mut self, id: &str) {
        for a in self.agents.values_mut() {
            for (job_id, j) in a.jobs.iter_mut() {
                if j.queue_id == id && !j.cancelled {
                    j.cancelled = true;
                    let _ = a.tx.send(SchedulerToAgent::Cancel {
                        job: JobId(*job_id),
                    });
                }
            }
        }
    }

    fn delete(&mut self, id: &str) -> ControlResponse {
        if !self.msgs.contains_key(id) {
            return unknown(id);
        }
        self.cancel_jobs_of(id);
        // An agent may still be reading the message for a cancelled job:
        // its file must not be reused under it.
        self.remove(id, "deleted by the administrator", Reuse::Never);
        ok(format!("{id} deleted"))
    }

    fn flush(&mut self, target: FlushTarget) -> ControlResponse {
        let mut count = 0;
        match &target {
            FlushTarget::All => {
                for t in self.threads.values_mut() {
                    t.next_attempt = 0;
                }
                for m in self.msgs.values_mut() {
                    for r in &mut m.rcpts {
                        r.retry_at = 0;
                    }
                    count += 1;
                }
            }
            FlushTarget::Message(id) => {
                let Some(m) = self.msgs.get_mut(id) else {
                    return unknown(id);
                };
                let mut keys = Vec::new();
                for (i, r) in m.rcpts.iter_mut().enumerate() {
                    r.retry_at = 0;
                    let cr = &m.control.recipients[i];
                    keys.push(ThreadKey::new(cr.channel.clone(), cr.host.clone()));
                }
                for k in keys {
                    if let Some(t) = self.threads.get_mut(&k) {
                        t.next_attempt = 0;
                    }
                }
                count = 1;
            }
            FlushTarget::Thread(key) => {
                let Some(t) = self.threads.get_mut(key) else {
                    return error(ControlErrorKind::UnknownId, format!("no thread {key}"));
                };
                t.next_attempt = 0;
                let ids: Vec<String> = t.pending.iter().cloned().collect();
                for id in ids {
                    if let Some(m) = self.msgs.get_mut(&id) {
                        for (i, r) in m.rcpts.iter_mut().enumerate() {
                            let cr = &m.control.recipients[i];
                            if cr.channel == key.channel && cr.host == key.host {
                                r.retry_at = 0;
                            }
                        }
                        count += 1;
                    }
                }
            }
        }
        ok(format!("flushed {count} message(s)"))
    }

    /// Sends a message back through the router with the recipients that
    /// are not final, under a new queue id; the old one is removed only
    /// once the new one is durable.
    fn requeue(&mut self, id: &str) -> ControlResponse {
        let Some(m) = self.msgs.get(id) else {
            return unknown(id);
        };
        if m.rcpts.iter().any(|r| r.state == RState::InFlight) {
            return error(
                ControlErrorKind::Invalid,
                format!("{id} is being delivered right now; try again in a moment"),
            );
        }
        match bounce::requeue_copy(self, id) {
            Ok(Some(new_id)) => {
                self.remove(id, &format!("requeued as {new_id}"), Reuse::Never);
                self.spool.kick("router");
                ok(format!("{id} requeued as {new_id}"))
            }
            Ok(None) => ok(format!("{id} has no recipient left to deliver")),
            Err(e) => error(ControlErrorKind::Internal, e.to_string()),
        }
    }

    // ----- views for reports ------------------------------------------------

    pub(crate) fn messages(&self) -> impl Iterator<Item = &Msg> {
        self.msgs.values()
    }

    pub(crate) fn thread_view(&self) -> Vec<crate::report::ThreadView> {
        use crate::report::ThreadView;
        let now = now_micros();
        let mut map: BTreeMap<ThreadKey, ThreadView> = BTreeMap::new();
        for m in self.msgs.values() {
            let mut seen_here: BTreeSet<ThreadKey> = BTreeSet::new();
            for (i, r) in m.rcpts.iter().enumerate() {
                if r.state.is_final() {
                    continue;
                }
                let key = m.thread_of(i);
                let v = map.entry(key.clone()).or_insert_with(|| ThreadView {
                    key: key.clone(),
                    clause: self.clause_index(&key),
                    ..Default::default()
                });
                v.recipients += 1;
                if seen_here.insert(key) {
                    v.messages += 1;
                    v.oldest_arrival = if v.oldest_arrival == 0 {
                        m.control.arrival_micros
                    } else {
                        v.oldest_arrival.min(m.control.arrival_micros)
                    };
                }
                v.held |= m.held;
                v.running |= r.state == RState::InFlight;
            }
        }
        for (key, t) in &self.threads {
            let v = map.entry(key.clone()).or_insert_with(|| ThreadView {
                key: key.clone(),
                clause: t.clause,
                ..Default::default()
            });
            v.attempts = t.attempts;
            v.next_attempt_in =
                (t.next_attempt > now).then(|| ((t.next_attempt - now) / 1_000_000) as i64);
            v.last_diag = t.last_diag.clone();
            v.agent_pids = t
                .agents
                .iter()
                .filter_map(|a| self.agents.get(a).map(|a| a.pid))
                .collect();
        }
        map.into_values().collect()
    }

    pub(crate) fn agent_pids_of_clause(&self, clause: usize) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .agents
            .values()
            .filter(|a| a.clause == clause)
            .map(|a| a.pid)
            .collect();
        v.sort_unstable();
        v
    }

    pub(crate) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub(crate) fn thread_count(&self) -> usize {
        self.threads.len()
    }
}

fn ok(message: String) -> ControlResponse {
    ControlResponse::Ok { message }
}

fn error(kind: ControlErrorKind, message: String) -> ControlResponse {
    ControlResponse::Error(ControlError { kind, message })
}

fn unknown(id: &str) -> ControlResponse {
    error(
        ControlErrorKind::UnknownId,
        format!("no message {id} in the queue"),
    )
}
