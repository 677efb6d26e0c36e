//! The engine: one task that owns the queue, the agents and the groups,
//! and reacts to [`Event`]s one at a time. Nothing else mutates the state,
//! so there are no locks; agents and control clients talk to it through
//! one channel.
//!
//! Each reaction goes: write what happened to the message's journal,
//! change the state in memory, then act (log, answer a tool, bounce, feed
//! another job). An outcome is *written* to the journal at once and
//! *synced* (fdatasync) when its message settles, before any DSN about it
//! is queued and before a deferral is left waiting; a message that is
//! simply delivered is removed without a sync (docs/spool.md, T3 and T5,
//! argues why that is still at-least-once). Administrative records (hold,
//! notifications) are synced as they are appended.
//!
//! What to do is decided in [`crate::policy`] (pure functions); this file
//! gathers their inputs and carries out the actions they return.

use std::time::{Duration, Instant};

use skein_config::Config;
use skein_proto::{
    AgentToScheduler, BulkAction, ControlRequest, ControlResponse, FlushTarget, JobId, Outcome,
    SchedulerToAgent, Selection, Status,
};
use skein_spool::{Area, OutcomeKind, QueueId, Spool};

use crate::admin;
use crate::agents::{Agents, JobInFlight};
use crate::bounce;
use crate::clock::now_micros;
use crate::error::SchedulerError;
use crate::event::{AgentId, Event};
use crate::group::Groups;
use crate::load;
use crate::message::{Msg, RState};
use crate::metrics::Metrics;
use crate::policy::{self, Action, Appetite, Demand, Feed, Pulse, Verdict};
use crate::queue::{self, Attempt, Queue, Reuse};
use crate::report;

/// How often the spool is rescanned for control files we were not told of.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(10);

/// The scheduler's state and its reactions.
pub struct Engine {
    config: Config,
    groups: Groups,
    spool: Spool,
    queue: Queue,
    agents: Agents,
    started: Instant,
    last_rescan: Instant,
    metrics: Metrics,
    /// The first scan (the queue as the last run left it) is over: what
    /// is loaded from now on is new, and counted as received.
    scanned: bool,
    smtpd_files: crate::metrics::SmtpdFiles,
}

impl Engine {
    /// An engine with nothing loaded yet, starting agents with `agents`.
    pub fn new(config: Config, spool: Spool, agents: Agents) -> Engine {
        let smtpd_files = crate::metrics::SmtpdFiles {
            stats: skein_spool::rendezvous::smtpd_stats(spool.root()),
            pid: spool.pid_file(skein_spool::Daemon::Smtpd),
        };
        Engine {
            metrics: Metrics::new(),
            scanned: false,
            smtpd_files,
            groups: Groups::new(&config.scheduler),
            config,
            spool,
            queue: Queue::new(),
            agents,
            started: Instant::now(),
            last_rescan: Instant::now(),
        }
    }

    /// Puts a reloaded configuration in force: clauses and limits (each
    /// thread is matched against the new clauses), retries, expiry and
    /// bounce settings apply from the next decision on; agents started
    /// before finish their jobs and exit, and new ones, started with
    /// `agent_config` (the file holding this configuration), read it.
    /// Nothing queued is touched: a message keeps its recipients, their
    /// attempts and their next retry.
    pub fn reconfigure(&mut self, config: Config, agent_config: Option<std::path::PathBuf>) {
        self.groups = Groups::new(&config.scheduler);
        let moved = self.queue.regroup(&self.groups);
        self.config = config;
        let retired = self.agents.retire_all(agent_config);
        tracing::info!(
            threads_regrouped = moved,
            agents_retired = retired,
            "new settings in force: agents started before this finish their jobs and exit; new agents read the new configuration"
        );
        self.dispatch();
    }

    /// A scrape of the metrics endpoint: the gauges as of now, the smtpd's
    /// counters from its file. One pass over the queue.
    pub fn render_metrics(&mut self) -> String {
        let mut states = [
            ("active", 0u64),
            ("deferred", 0),
            ("held", 0),
            ("waiting", 0),
        ];
        let mut recipients = 0;
        for m in self.queue.messages() {
            let slot = if m.held {
                2
            } else if m.rcpts.iter().any(|r| r.state == RState::InFlight) {
                0
            } else if m.rcpts.iter().any(|r| r.state == RState::Deferred) {
                1
            } else {
                3
            };
            states[slot].1 += 1;
            recipients += m.rcpts.iter().filter(|r| !r.state.is_final()).count() as u64;
        }
        let mut agents: std::collections::BTreeMap<String, u64> = Default::default();
        let mut connections = 0;
        for id in self.agents.ids() {
            if let Some(a) = self.agents.get(id) {
                *agents.entry(a.channel.clone()).or_default() += 1;
                // An agent keeps a connection while it works a thread of a
                // remote channel, or after it, idle, when it says so.
                let remote = a.channel != "local";
                connections +=
                    u64::from(a.connected_to.is_some() || (remote && a.thread.is_some()));
            }
        }
        let gauges = crate::metrics::QueueGauges {
            messages: states,
            recipients,
            threads: self.queue.thread_count() as u64,
            agents: agents.into_iter().collect(),
            connections,
        };
        let smtpd = crate::metrics::read_smtpd(&self.smtpd_files.stats, &self.smtpd_files.pid);
        self.metrics.render(&gauges, smtpd)
    }

    /// The spool.
    pub fn spool(&self) -> &Spool {
        &self.spool
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
            if !self.queue.contains(id.as_str()) {
                self.load(&id);
            }
        }
        load::remove_orphans(&self.spool, |id| self.queue.contains(id));
        self.scanned = true;
    }

    /// Loads one control file; returns whether the message is now known.
    pub fn load(&mut self, id: &QueueId) -> bool {
        let Some(msg) = load::read(&self.spool, id) else {
            return false;
        };
        let key = msg.id().to_string();
        if self.scanned {
            self.metrics
                .received(&msg.control.envelope.origin, msg.control.size);
        }
        self.queue.insert(msg, &self.groups);
        self.settle(&key);
        true
    }

    // ----- events -------------------------------------------------------

    /// Reacts to one event, then gives out whatever work it made possible.
    pub fn handle(&mut self, ev: Event) {
        match ev {
            Event::AgentUp { agent } => {
                if let Some(a) = self.agents.get_mut(agent) {
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
            Event::Metrics { reply } => {
                let text = self.render_metrics();
                let _ = reply.send(text);
                return;
            }
        }
        self.dispatch();
    }

    fn on_agent_msg(&mut self, id: AgentId, msg: AgentToScheduler) {
        let Some(a) = self.agents.get_mut(id) else {
            return;
        };
        a.last_heard = Instant::now();
        match msg {
            AgentToScheduler::Want { jobs } => a.credit = a.credit.saturating_add(jobs),
            AgentToScheduler::Idle { connected_to } => a.connected_to = connected_to,
            AgentToScheduler::Outcome(o) => self.on_outcome(id, o),
            AgentToScheduler::JobDone { job } => self.on_job_done(id, job),
            AgentToScheduler::Damaged { job, reason } => self.on_damaged(id, job, &reason),
        }
    }

    fn protocol_violation(&mut self, id: AgentId, what: &str) {
        if let Some(a) = self.agents.get(id) {
            tracing::error!(
                agent_pid = a.pid,
                violation = what,
                "agent broke the protocol; killing it"
            );
            self.agents.kill(id);
        }
    }

    fn on_outcome(&mut self, id: AgentId, o: Outcome) {
        let Some(a) = self.agents.get_mut(id) else {
            return;
        };
        let Some(job) = a.jobs.get_mut(&o.job) else {
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
        let handed_micros = job.handed_micros;
        // One TLS session per job at most, however many recipients say so.
        let tls = o
            .tls
            .filter(|_| !std::mem::replace(&mut job.tls_counted, true));
        if let Some(established) = tls {
            self.metrics.outbound_tls(established);
        }
        // The server that answered this recipient, as the agent names it
        // (`name[addr]:port`), or `none` when none did (a connection
        // failure). Not the agent's idle connection (`connected_to`): on a
        // retry that may be another server than the one that failed.
        let relay = o.remote_mta.clone();
        let (kind, retry) = match o.status {
            Status::Delivered => (OutcomeKind::Delivered, None),
            Status::Failed => (OutcomeKind::Failed, None),
            Status::Deferred { retry_after_secs } => (OutcomeKind::Deferred, retry_after_secs),
        };
        let attempt = Attempt {
            rcpt: o.recipient,
            kind,
            status: o.enhanced,
            reply: o.reply.as_ref().map(|r| r.to_string()),
            remote_mta: relay,
            diagnostic: o.diagnostic,
            retry: retry.map(Duration::from_secs),
            timing: Some(crate::queue::Timing {
                handed_micros,
                connect_micros: o.connect_micros,
            }),
        };
        self.record(&queue_id, attempt);
        if kind == OutcomeKind::Delivered
            && let Some(t) = self.queue.thread_mut(&thread)
        {
            t.delivered();
        }
    }

    fn record(&mut self, queue_id: &str, attempt: Attempt) {
        let recorded = self
            .queue
            .record(queue_id, attempt, &self.config.scheduler, &self.groups);
        if let Some(r) = recorded {
            let status = match r.kind {
                skein_spool::OutcomeKind::Delivered => "delivered",
                skein_spool::OutcomeKind::Deferred => "deferred",
                skein_spool::OutcomeKind::Failed => "bounced",
            };
            self.metrics.outcome(&r.channel, status, r.delay);
        }
    }

    fn on_job_done(&mut self, id: AgentId, job: JobId) {
        let Some(a) = self.agents.get_mut(id) else {
            return;
        };
        let Some(j) = a.jobs.remove(&job) else {
            return self.protocol_violation(id, "JobDone for a job it does not hold");
        };
        if !j.cancelled {
            for r in j.unreported() {
                self.record(
                    &j.queue_id,
                    Attempt::deferred_here(
                        r,
                        "the agent finished the job without reporting this recipient".into(),
                    )
                    .handed_at(j.handed_micros),
                );
            }
            self.job_over(&j);
        }
    }

    /// An agent found the job's message file damaged and sent nothing
    /// (docs/agent-protocol.md, rule 6); this ends the job. The file is
    /// checked again here: only if this check agrees is the message
    /// marked damaged, its recipients in the job failed (5.3.0), and the
    /// rest settled by [`Engine::settle`]. An agent alone cannot make the
    /// scheduler bounce sound mail: if the file checks out, the job's
    /// recipients are deferred as after any agent trouble.
    fn on_damaged(&mut self, id: AgentId, job: JobId, reason: &str) {
        let Some(a) = self.agents.get_mut(id) else {
            return;
        };
        let Some(j) = a.jobs.remove(&job) else {
            return self.protocol_violation(id, "Damaged for a job it does not hold");
        };
        if j.cancelled {
            return;
        }
        let found = self.queue.get(&j.queue_id).and_then(Msg::check_file);
        match found {
            Some(found) => {
                tracing::error!(
                    queue_id = %j.queue_id,
                    reason = %found,
                    "message file damaged in the spool: not sent; the message will be set aside and its sender told"
                );
                for r in j.unreported() {
                    self.record(&j.queue_id, Attempt::damaged(r, &found));
                }
                if let Some(m) = self.queue.get_mut(&j.queue_id) {
                    m.damaged = Some(found);
                }
            }
            None => {
                tracing::warn!(
                    queue_id = %j.queue_id,
                    agent_reason = reason,
                    "an agent found the message file damaged, the scheduler's check did not: deferring"
                );
                for r in j.unreported() {
                    self.record(
                        &j.queue_id,
                        Attempt::deferred_here(
                            r,
                            format!("the agent found the message file damaged ({reason}); the scheduler's check did not"),
                        )
                        .handed_at(j.handed_micros),
                    );
                }
            }
        }
        self.job_over(&j);
    }

    /// Thread backoff and message settling once a job is over.
    fn job_over(&mut self, j: &JobInFlight) {
        self.queue
            .job_over(&j.queue_id, &j.thread, &j.rcpts, &self.config.scheduler);
        self.settle(&j.queue_id);
    }

    fn on_agent_gone(&mut self, id: AgentId, reason: &str) {
        let Some(a) = self.agents.remove(id) else {
            return;
        };
        if a.stopping && a.jobs.is_empty() {
            tracing::debug!(agent_pid = a.pid, reason, "agent exited");
        } else {
            tracing::warn!(agent_pid = a.pid, jobs = a.jobs.len(), reason, "agent gone");
        }
        if let Some(key) = &a.thread {
            tracing::debug!(agent_pid = a.pid, thread = %key, "agent left thread");
            if let Some(t) = self.queue.thread_mut(key) {
                t.agents.retain(|x| *x != id);
            }
        }
        let unexpected = !a.stopping || !a.jobs.is_empty();
        for j in a.jobs.into_values() {
            if j.cancelled {
                continue;
            }
            for r in j.unreported() {
                self.record(
                    &j.queue_id,
                    Attempt::deferred_here(r, format!("transport agent failed: {reason}"))
                        .handed_at(j.handed_micros),
                );
            }
            self.job_over(&j);
        }
        if unexpected && let Some(key) = &a.thread {
            self.queue.agent_failed(key, reason, &self.config.scheduler);
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let timeout = self.config.scheduler.agent_timeout;
        for id in self.agents.ids() {
            let Some(a) = self.agents.get(id) else {
                continue;
            };
            let idlemax = self
                .groups
                .get(a.group)
                .map(|g| g.idlemax)
                .unwrap_or(skein_config::Clause::DEFAULT_IDLEMAX);
            let pulse = Pulse {
                up: a.up,
                stopping: a.stopping,
                holds_jobs: !a.jobs.is_empty(),
                has_thread: a.thread.is_some(),
                silent_for: now.duration_since(a.last_heard),
                idle_for: now.duration_since(a.idle_since),
            };
            match policy::check_agent(pulse, timeout, idlemax) {
                Verdict::Fine => {}
                Verdict::Hung => {
                    tracing::warn!(
                        agent_pid = a.pid,
                        "agent silent past scheduler.agent_timeout; killing it"
                    );
                    self.agents.kill(id);
                }
                Verdict::Idle => {
                    if let Some(a) = self.agents.get_mut(id) {
                        a.stopping = true;
                        a.send(SchedulerToAgent::Shutdown);
                    }
                }
            }
        }
        self.expire();
        // Bounces that could not be queued before (spool trouble) are
        // tried again every tick until they are.
        let unsettled: Vec<String> = self
            .queue
            .messages()
            .filter(|m| {
                m.damaged.is_some()
                    || m.rcpts
                        .iter()
                        .any(|r| r.state == RState::Failed { notified: false } || r.success_dsn_due)
            })
            .map(|m| m.id().to_string())
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
        for m in self.queue.messages() {
            if m.held {
                continue;
            }
            let age = now.saturating_sub(m.control.arrival_micros);
            if age > expiry {
                for (i, r) in m.rcpts.iter().enumerate() {
                    if r.state.is_waiting() {
                        let last = r
                            .diagnostic
                            .clone()
                            .unwrap_or_else(|| "never attempted".into());
                        expired.push((m.id().to_string(), i as u32, last));
                    }
                }
            } else if let Some(w) = warn_after
                && age > w
                && m.rcpts.iter().enumerate().any(|(i, r)| {
                    r.state == RState::Deferred && !r.delay_notified && m.notify(i).delay
                })
            {
                warn.push(m.id().to_string());
            }
        }
        // In the unit the administrator wrote (`1h`, `5d`), not a
        // fraction of days ("0.0 days" for an hour).
        let expiry = skein_config::format_duration(self.config.scheduler.expiry);
        let mut touched = std::collections::BTreeSet::new();
        for (id, i, last) in expired {
            self.record(
                &id,
                Attempt {
                    rcpt: i,
                    kind: OutcomeKind::Failed,
                    status: skein_proto::EnhancedCode::EXPIRED,
                    reply: None,
                    remote_mta: None,
                    diagnostic: format!(
                        "message expired after {expiry} in the queue; last error: {last}"
                    ),
                    retry: None,
                    timing: None,
                },
            );
            touched.insert(id);
        }
        for id in touched {
            self.settle(&id);
        }
        for id in warn {
            bounce::delay_warning(&mut self.queue, &self.spool, &self.config, &id);
        }
    }

    // ----- settling: bounces and removal ----------------------------------

    /// Sends the DSNs that are due and removes the message once every
    /// recipient is final. Runs only when none of its recipients is in
    /// flight or untried, so that one DSN covers a whole round.
    fn settle(&mut self, id: &str) {
        let Some(m) = self.queue.get(id) else {
            return;
        };
        if let Some(why) = m.damaged.clone() {
            // Nothing more of it is sent: what waits fails now (what is in
            // flight elsewhere reports first, and is settled after it).
            let waiting: Vec<u32> = (0..m.rcpts.len() as u32)
                .filter(|&i| m.rcpts[i as usize].state.is_waiting())
                .collect();
            for i in waiting {
                self.record(id, Attempt::damaged(i, &why));
            }
        }
        let Some(m) = self.queue.get(id) else {
            return;
        };
        if m.is_mid_round() {
            return;
        }
        if let Some(why) = m.damaged.clone() {
            self.queue.sync_journal(id);
            bounce::failures(&mut self.queue, &self.spool, &self.config, id);
            bounce::successes(&mut self.queue, &self.spool, &self.config, id);
            if self.queue.get(id).is_some_and(Msg::is_done) {
                self.queue.quarantine(&self.spool, id, &why);
            }
            return;
        }
        if m.is_done() {
            // Nothing to notify: the removal is the last word, and it
            // needs the journal no more durable than it is itself (see
            // `Queue::remove`), so the message's outcomes are never synced.
            let why = finished_why(m);
            return self.queue.remove(&self.spool, id, &why, Reuse::Files);
        }
        // Outcomes are made durable before anything acts on them: a DSN is
        // sent only for a failure that a power loss cannot undo, a
        // deferral outlives a power loss with its retry time.
        self.queue.sync_journal(id);
        bounce::failures(&mut self.queue, &self.spool, &self.config, id);
        bounce::successes(&mut self.queue, &self.spool, &self.config, id);
        match self.queue.get(id) {
            Some(m) if m.damaged.is_some() => self.settle(id), // found while bouncing
            Some(m) if m.is_done() => {
                let why = finished_why(m);
                self.queue.remove(&self.spool, id, &why, Reuse::Files)
            }
            _ => {}
        }
    }

    /// Makes the files of removed messages reusable: called when no event
    /// is waiting, so that one pair of directory fsyncs covers every
    /// removal of a busy moment.
    pub fn publish_retired(&mut self) {
        queue::publish_retired(&self.spool);
    }

    // ----- dispatch -------------------------------------------------------

    /// Gives threads with work an agent ([`policy::plan`]), and agents
    /// with credit jobs ([`policy::feed`]). An agent that the feeding
    /// finds without work leaves its thread; the plan then runs once more,
    /// so that it is handed another thread of its group at once rather
    /// than at the next event.
    pub fn dispatch(&mut self) {
        let now = now_micros();
        self.assign(now);
        if self.feed(now) {
            self.assign(now);
            self.feed(now);
        }
    }

    fn assign(&mut self, now: u64) {
        let clock = Instant::now();
        let actions = {
            let demand: Vec<Demand> = self
                .queue
                .threads()
                .filter(|(_, t)| t.waiting() > 0 && !t.is_backing_off(now))
                .filter_map(|(key, t)| {
                    Some(Demand {
                        key,
                        group: t.group?,
                        busy: self.agents.live_among(&t.agents),
                        waiting: t.waiting(),
                    })
                })
                // A thread without room for another agent (the common
                // case: its one agent is at work) needs no plan; this
                // keeps the census off the path of every event.
                .filter(|d| {
                    self.groups
                        .get(d.group)
                        .is_some_and(|g| policy::thread_has_room(g, d.busy, d.waiting).is_ok())
                })
                .filter(|d| self.queue.has_ready(d.key, now))
                .collect();
            if demand.is_empty() {
                Vec::new()
            } else {
                let agents = &self.agents;
                policy::plan(
                    &self.groups,
                    agents.census(),
                    &demand,
                    &agents.idle(),
                    &|g| agents.is_blocked(g, clock),
                )
            }
        };
        for action in actions {
            let (agent, thread) = match action {
                Action::Assign { agent, thread } => (agent, thread),
                Action::Start { group, thread } => {
                    if self.agents.is_blocked(group, clock) {
                        continue; // an earlier start of this plan failed
                    }
                    let Some(g) = self.groups.get(group) else {
                        continue;
                    };
                    match self.agents.start(g, &thread.channel, clock) {
                        Ok(agent) => (agent, thread),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start transport agent; retrying in 30s");
                            continue;
                        }
                    }
                }
            };
            if let Some(a) = self.agents.get_mut(agent) {
                tracing::debug!(agent_pid = a.pid, thread = %thread, "agent assigned to thread");
                a.thread = Some(thread.clone());
            }
            if let Some(t) = self.queue.thread_mut(&thread) {
                t.agents.push(agent);
            }
        }
    }

    /// Feeds every agent that has a thread; true when one left its thread.
    fn feed(&mut self, now: u64) -> bool {
        let clock = Instant::now();
        let mut released = false;
        for id in self.agents.ids() {
            let Some(a) = self.agents.get(id) else {
                continue;
            };
            let Some(key) = a.thread.clone() else {
                continue;
            };
            let appetite = Appetite {
                up: a.up,
                stopping: a.stopping,
                credit: a.credit,
                held: a.jobs.len(),
                overfeed: self.groups.get(a.group).map_or(1, |g| g.overfeed),
            };
            let backing_off = self
                .queue
                .thread(&key)
                .is_none_or(|t| t.is_backing_off(now));
            match policy::feed(appetite, backing_off) {
                Feed::Wait => {}
                Feed::Release => released |= self.release_if_idle(id),
                Feed::Send(n) => {
                    for _ in 0..n {
                        let job_id = self.agents.next_job_id();
                        match self.queue.hand_out(&key, now, job_id) {
                            Some((job, rcpts)) => self.agents.send_job(id, job, rcpts, clock),
                            None => {
                                released |= self.release_if_idle(id);
                                break;
                            }
                        }
                    }
                }
            }
        }
        released
    }

    /// An agent with nothing in hand leaves its thread and may be given
    /// another one of its group; true if it left one.
    fn release_if_idle(&mut self, id: AgentId) -> bool {
        let Some(a) = self.agents.get_mut(id) else {
            return false;
        };
        if !a.jobs.is_empty() {
            return false;
        }
        if let Some(key) = a.thread.take() {
            tracing::debug!(agent_pid = a.pid, thread = %key, "agent left thread");
            a.idle_since = Instant::now();
            if let Some(t) = self.queue.thread_mut(&key) {
                t.agents.retain(|x| *x != id);
            }
            self.queue.drop_thread_if_idle(&key);
            return true;
        }
        false
    }

    // ----- shutdown -------------------------------------------------------

    /// Asks every agent to finish and exit.
    pub fn shutdown_agents(&mut self) {
        self.agents.shutdown_all();
    }

    /// Kills whatever agent is still there.
    pub fn kill_agents(&mut self) {
        self.agents.kill_all();
    }

    // ----- control requests -----------------------------------------------

    fn on_control(&mut self, req: ControlRequest) -> ControlResponse {
        let answer = match req {
            ControlRequest::Submitted { queue_id } => match queue_id.parse::<QueueId>() {
                Ok(id) => {
                    if !self.queue.contains(id.as_str()) {
                        self.load(&id);
                    }
                    Ok(format!("{id} queued"))
                }
                Err(e) => Err(SchedulerError::invalid(e.to_string())),
            },
            ControlRequest::Status => {
                return ControlResponse::Status(report::status(
                    &self.queue,
                    &self.agents,
                    self.started.elapsed(),
                ));
            }
            ControlRequest::ListQueue => return ControlResponse::Queue(report::queue(&self.queue)),
            ControlRequest::ListThreads => {
                return ControlResponse::Threads(report::threads(
                    &self.queue,
                    &self.agents,
                    &self.groups,
                ));
            }
            ControlRequest::Show { queue_id } => match self.queue.get(&queue_id) {
                Some(m) => return ControlResponse::Message(report::detail(&self.queue, m)),
                None => Err(SchedulerError::unknown_message(&queue_id)),
            },
            ControlRequest::Hold { queue_id } => admin::hold(&mut self.queue, &queue_id, true),
            ControlRequest::Release { queue_id } => admin::hold(&mut self.queue, &queue_id, false),
            ControlRequest::Delete { queue_id } => {
                admin::delete(&mut self.queue, &mut self.agents, &self.spool, &queue_id)
            }
            ControlRequest::Flush(target) => admin::flush(&mut self.queue, &target),
            ControlRequest::Requeue { queue_id } => {
                admin::requeue(&mut self.queue, &self.spool, &queue_id)
            }
            ControlRequest::Bulk { action, selection } => Ok(self.bulk(action, &selection)),
        };
        match answer {
            Ok(message) => ControlResponse::Ok { message },
            Err(e) => ControlResponse::Error(e.to_control()),
        }
    }
}

/// Why a finished message leaves the queue, for its `removed` line:
/// `delivered`, `bounced` (every recipient failed, its DSN sent), or both
/// counted.
fn finished_why(m: &Msg) -> String {
    let delivered = m
        .rcpts
        .iter()
        .filter(|r| r.state == crate::message::RState::Delivered)
        .count();
    let failed = m.rcpts.len() - delivered;
    match (delivered, failed) {
        (_, 0) => "delivered".to_owned(),
        (0, _) => "bounced".to_owned(),
        (d, f) => format!("{d} delivered, {f} bounced"),
    }
}

impl Engine {
    /// A bulk operation: the selected messages (selected as `mailq`
    /// lists them, [`skein_proto::Selection::matches`]), each acted on as
    /// its one-message request would be; one log line with the selection
    /// and the counts.
    fn bulk(&mut self, action: BulkAction, selection: &Selection) -> String {
        let now = (now_micros() / 1_000_000) as i64;
        let ids: Vec<String> = self
            .queue
            .messages()
            .filter(|m| selection.matches(&report::summary(&self.queue, m), now))
            .map(|m| m.id().to_string())
            .collect();
        let mut done = 0usize;
        let mut refused = Vec::new();
        for id in &ids {
            let result = match action {
                BulkAction::Hold => admin::hold(&mut self.queue, id, true),
                BulkAction::Release => admin::hold(&mut self.queue, id, false),
                BulkAction::Delete => {
                    admin::delete(&mut self.queue, &mut self.agents, &self.spool, id)
                }
                BulkAction::Flush => {
                    admin::flush(&mut self.queue, &FlushTarget::Message(id.clone()))
                }
                BulkAction::Requeue => admin::requeue(&mut self.queue, &self.spool, id),
            };
            match result {
                Ok(_) => done += 1,
                Err(e) => refused.push(format!("{id}: {}", e.to_control().message)),
            }
        }
        let what = selection.describe();
        tracing::info!(
            action = action.as_str(),
            selection = what.as_str(),
            selected = ids.len(),
            done,
            refused = refused.len(),
            "administrator acted on the queue"
        );
        let mut answer = format!(
            "{}: {} message(s) selected ({what}), {done} done",
            action.as_str(),
            ids.len()
        );
        for line in refused.iter().take(10) {
            answer.push_str(&format!("; not done: {line}"));
        }
        if refused.len() > 10 {
            answer.push_str(&format!("; … and {} more not done", refused.len() - 10));
        }
        answer
    }
}

#[cfg(test)]
mod tests;
