//! The queue: every message the scheduler holds and the threads its
//! recipients wait in.
//!
//! A *thread* is every waiting recipient, across all messages, of one
//! `(channel, host)`; retry backoff is per thread. A message reaches its
//! threads through its legs ([`crate::message::Leg`]); a thread keeps the
//! messages that have a recipient waiting in it, in queue-id (arrival)
//! order, so handing out the next job looks at the oldest first.
//!
//! The queue writes the journal of each message (`transport/<id>`): an
//! outcome is *written* at once and *synced* when the message settles
//! ([`Queue::sync_journal`]); a process crash cannot lose a written
//! record, a power loss before the sync gets the recipient tried again
//! (at-least-once: docs/spool.md, T3). Administrative records (hold,
//! notifications) are appended with their own fdatasync.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use skein_config::SchedulerConfig;
use skein_proto::{EnhancedCode, Job, JobId, JobRecipient, ThreadKey};
use skein_spool::{Journal, OutcomeKind, Record, Spool, SpoolError};

use crate::clock::{micros_after, now_micros};
use crate::event::AgentId;
use crate::group::{GroupId, Groups};
use crate::message::{Msg, RState};

/// Retired files are published at the latest when this many wait (else
/// whenever the scheduler has no event waiting).
const PUBLISH_AT: usize = 256;

/// One thread's state.
#[derive(Debug)]
pub struct Thread {
    /// Its group; `None` when no clause matches (nothing can deliver it).
    pub group: Option<GroupId>,
    /// Messages with a recipient waiting here (pending or deferred, not in
    /// flight, not final), in queue-id order.
    waiting: BTreeSet<String>,
    /// Earliest next attempt of the thread (retry backoff), micros.
    pub next_attempt: u64,
    /// Consecutive failed attempts (reset by a delivery).
    pub failures: u32,
    /// Attempts made (jobs handed out).
    pub attempts: u32,
    /// The last diagnostic of an attempt in this thread.
    pub last_diag: Option<String>,
    /// The agents working it.
    pub agents: Vec<AgentId>,
}

impl Thread {
    fn new(group: Option<GroupId>) -> Thread {
        Thread {
            group,
            waiting: BTreeSet::new(),
            next_attempt: 0,
            failures: 0,
            attempts: 0,
            last_diag: None,
            agents: Vec::new(),
        }
    }

    /// How many messages have a recipient waiting here.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The messages with a recipient waiting here, oldest first.
    pub fn waiting_ids(&self) -> impl Iterator<Item = &str> {
        self.waiting.iter().map(String::as_str)
    }

    /// Backing off until a later time than `now`.
    pub fn is_backing_off(&self, now: u64) -> bool {
        self.next_attempt > now
    }

    /// Counts one more failed attempt of the thread and pushes the next
    /// one back by the retry schedule — once per attempt: the other jobs
    /// of the same round (an agent works several messages of a thread on
    /// one connection) find the thread backing off already and do not step
    /// the schedule again, which would skip its entries.
    fn back_off(&mut self, schedule: &SchedulerConfig, now: u64) {
        if self.is_backing_off(now) {
            return;
        }
        self.failures += 1;
        let delay = schedule.retry_delay(self.failures as usize);
        self.next_attempt = micros_after(now, delay);
    }

    /// A delivery in the thread: the destination works, so its failures
    /// and its backoff are over (each deferred recipient still waits for
    /// its own retry time).
    pub fn delivered(&mut self) {
        self.failures = 0;
        self.next_attempt = 0;
    }
}

/// What [`Queue::record`] recorded, for the metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The recipient's channel.
    pub channel: String,
    /// Delivered, deferred or failed.
    pub kind: OutcomeKind,
    /// Seconds since the message arrived.
    pub delay: f64,
}

/// One attempt's result for one recipient, as it is journaled.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The recipient's position in its message.
    pub rcpt: u32,
    /// Delivered, deferred or failed.
    pub kind: OutcomeKind,
    /// The enhanced status code.
    pub status: EnhancedCode,
    /// The remote server's reply, if one decided.
    pub reply: Option<String>,
    /// The server that answered, for logs and DSNs.
    pub remote_mta: Option<String>,
    /// What happened, in words.
    pub diagnostic: String,
    /// For a deferral: when to retry instead of the retry schedule.
    pub retry: Option<Duration>,
    /// For an agent's outcome: when the job was handed over and how long
    /// the agent took to set up its connection (`delays=` b, c and d);
    /// `None` for what the scheduler decides alone (expiry, damage).
    pub timing: Option<Timing>,
}

/// An agent attempt's timing, for the delivery log's `delays=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    /// When the job was handed to the agent, microseconds since the epoch.
    pub handed_micros: u64,
    /// The agent's connection set-up (`Outcome::connect_micros`).
    pub connect_micros: u64,
}

/// Postfix's `delays=a/b/c/d` for an outcome recorded at `now`: before
/// the queue (arrival to the scheduler loading the message), in the queue
/// (to the job handed to an agent, retries' waits included), connection
/// set-up, transmission (the rest of the agent's time). Each is clamped so
/// that the four add up to the `delay=` (now − arrival) whatever clocks or
/// agents say. Seconds.
pub fn delays(arrival: u64, queued: u64, timing: Option<Timing>, now: u64) -> [f64; 4] {
    let now = now.max(arrival);
    let queued = queued.clamp(arrival, now);
    let handed = timing.map_or(now, |t| t.handed_micros).clamp(queued, now);
    let connect = timing.map_or(0, |t| t.connect_micros).min(now - handed);
    let secs = |micros: u64| micros as f64 / 1e6;
    [
        secs(queued - arrival),
        secs(handed - queued),
        secs(connect),
        secs(now - handed - connect),
    ]
}

/// `delays=` as Postfix prints it: two decimals, trailing zeros dropped.
pub fn format_delays(d: [f64; 4]) -> String {
    d.iter()
        .map(|x| {
            let text = format!("{x:.2}");
            let text = text.trim_end_matches('0').trim_end_matches('.');
            if text.is_empty() {
                "0".to_owned()
            } else {
                text.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl Attempt {
    /// The same attempt, made by an agent that was handed its job at
    /// `handed_micros` (and reported no connection set-up).
    pub fn handed_at(mut self, handed_micros: u64) -> Attempt {
        self.timing = Some(Timing {
            handed_micros,
            connect_micros: 0,
        });
        self
    }

    /// The permanent failure of a recipient whose message file is damaged
    /// (`why`: what the check found): `5.3.0`, no reply.
    pub fn damaged(rcpt: u32, why: &str) -> Attempt {
        Attempt {
            rcpt,
            kind: OutcomeKind::Failed,
            status: EnhancedCode::DAMAGED_IN_SPOOL,
            reply: None,
            remote_mta: None,
            diagnostic: format!("the message was damaged in the spool and was not sent: {why}"),
            retry: None,
            timing: None,
        }
    }

    /// A deferral decided here, not by an agent (the agent died, or ended
    /// the job without a word about this recipient): `4.3.0`, no reply.
    pub fn deferred_here(rcpt: u32, diagnostic: String) -> Attempt {
        Attempt {
            rcpt,
            kind: OutcomeKind::Deferred,
            status: EnhancedCode::SYSTEM_TROUBLE,
            reply: None,
            remote_mta: None,
            diagnostic,
            retry: None,
            timing: None,
        }
    }
}

/// Whether a removed message's files may be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Retire them into `free/` (docs/spool.md, "Recycled files").
    Files,
    /// Unlink them: an agent may still read the message file.
    Never,
}

/// Every message and thread.
#[derive(Debug, Default)]
pub struct Queue {
    msgs: HashMap<String, Msg>,
    threads: BTreeMap<ThreadKey, Thread>,
}

impl Queue {
    /// An empty queue.
    pub fn new() -> Queue {
        Queue::default()
    }

    /// Whether message `id` is queued.
    pub fn contains(&self, id: &str) -> bool {
        self.msgs.contains_key(id)
    }

    /// Message `id`.
    pub fn get(&self, id: &str) -> Option<&Msg> {
        self.msgs.get(id)
    }

    /// Message `id`, to change.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Msg> {
        self.msgs.get_mut(id)
    }

    /// Every message, in no order.
    pub fn messages(&self) -> impl Iterator<Item = &Msg> {
        self.msgs.values()
    }

    /// Every message, to change, in no order.
    pub fn messages_mut(&mut self) -> impl Iterator<Item = &mut Msg> {
        self.msgs.values_mut()
    }

    /// Thread `key`.
    pub fn thread(&self, key: &ThreadKey) -> Option<&Thread> {
        self.threads.get(key)
    }

    /// Thread `key`, to change.
    pub fn thread_mut(&mut self, key: &ThreadKey) -> Option<&mut Thread> {
        self.threads.get_mut(key)
    }

    /// Every thread, in key order.
    pub fn threads(&self) -> impl Iterator<Item = (&ThreadKey, &Thread)> {
        self.threads.iter()
    }

    /// Every thread, to change.
    pub fn threads_mut(&mut self) -> impl Iterator<Item = &mut Thread> {
        self.threads.values_mut()
    }

    /// How many threads exist.
    pub fn thread_count(&self) -> usize {
        self.threads.len()
    }

    /// Puts every thread in the group of the first clause that matches it
    /// under `groups` (a reload changed the clauses); returns how many
    /// threads changed group.
    pub fn regroup(&mut self, groups: &Groups) -> usize {
        let mut moved = 0;
        for (key, thread) in &mut self.threads {
            let group = groups.of(key);
            if thread.group != group {
                thread.group = group;
                moved += 1;
            }
        }
        moved
    }

    /// Adds a loaded message and enters its waiting recipients in their
    /// threads.
    pub fn insert(&mut self, msg: Msg, groups: &Groups) {
        let id = msg.id().to_string();
        for leg in &msg.legs {
            if leg
                .rcpts
                .iter()
                .any(|&i| msg.rcpts[i as usize].state.is_waiting())
            {
                self.thread_entry(&leg.thread, groups)
                    .waiting
                    .insert(id.clone());
            }
        }
        self.msgs.insert(id, msg);
    }

    fn thread_entry(&mut self, key: &ThreadKey, groups: &Groups) -> &mut Thread {
        if !self.threads.contains_key(key) {
            self.threads
                .insert(key.clone(), Thread::new(groups.of(key)));
        }
        self.threads.get_mut(key).expect("just inserted")
    }

    /// Journals one attempt's outcome, applies it and logs the delivery
    /// line. A deferral is retried after `attempt.retry`, or after the
    /// schedule's delay for the recipient's attempt count.
    pub fn record(
        &mut self,
        queue_id: &str,
        attempt: Attempt,
        schedule: &SchedulerConfig,
        groups: &Groups,
    ) -> Option<Recorded> {
        let now = now_micros();
        let msg = self.msgs.get_mut(queue_id)?;
        let i = attempt.rcpt as usize;
        let r = msg.rcpts.get_mut(i)?;
        let tries = r.attempts;
        let kind = attempt.kind;
        let retry_at = (kind == OutcomeKind::Deferred).then(|| {
            micros_after(
                now,
                attempt
                    .retry
                    .unwrap_or_else(|| schedule.retry_delay(tries.max(1) as usize)),
            )
        });
        let record = Record::Outcome {
            rcpt: attempt.rcpt,
            at: now,
            kind,
            attempt: tries,
            status: attempt.status,
            retry_at,
            reply: attempt.reply.clone(),
            remote_mta: attempt.remote_mta.clone(),
            diagnostic: attempt.diagnostic.clone(),
        };
        // Written now, made durable when the message settles
        // (`sync_journal`): a process crash cannot lose it, a power loss
        // before that fdatasync gets the recipient tried again.
        match Journal::open(&msg.control_path).and_then(|mut j| j.write(&[record])) {
            Ok(()) => msg.unsynced = true,
            // Not recorded: after a restart the recipient is simply tried
            // again (at-least-once). Keep going in memory.
            Err(e) => tracing::error!(queue_id, error = %e, "cannot record an outcome"),
        }
        let notify = msg.control.recipients[i].notify.unwrap_or_default();
        let r = &mut msg.rcpts[i];
        r.status = Some(attempt.status);
        r.diagnostic = Some(attempt.diagnostic.clone());
        r.reply = attempt.reply.clone();
        r.remote_mta = attempt.remote_mta.clone();
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
        let delay = now.saturating_sub(msg.control.arrival_micros) as f64 / 1e6;
        let delays = format_delays(delays(
            msg.control.arrival_micros,
            msg.queued_micros,
            attempt.timing,
            now,
        ));
        let word = match kind {
            OutcomeKind::Delivered => "sent",
            OutcomeKind::Deferred => "deferred",
            OutcomeKind::Failed => "bounced",
        };
        let sender = &msg.control.envelope.sender;
        tracing::info!(
            target: "skein::delivery",
            queue_id,
            from = if sender.is_empty() { "<>" } else { sender.as_str() },
            to = %cr.address,
            orig_to = cr.orcpt.as_deref().unwrap_or(""),
            size = msg.control.size,
            nrcpt = msg.control.recipients.len(),
            channel = %cr.channel,
            // Postfix's forms: the server that answered, `local` for the
            // local channel, `none` when no server answered.
            relay = attempt.remote_mta.as_deref().unwrap_or(if cr.channel.as_str() == "local" {
                "local"
            } else {
                "none"
            }),
            delay = format!("{delay:.2}"),
            delays = delays.as_str(),
            attempt = tries,
            status = word,
            dsn = %attempt.status,
            reply = attempt.reply.as_deref().unwrap_or(""),
            diag = %attempt.diagnostic,
            "delivery"
        );
        let recorded = Recorded {
            channel: cr.channel.to_string(),
            kind,
            delay,
        };
        let thread = msg.thread_of(i).clone();
        if kind == OutcomeKind::Deferred {
            let t = self.thread_entry(&thread, groups);
            t.waiting.insert(queue_id.to_string());
            t.last_diag = Some(attempt.diagnostic);
        } else if let Some(t) = self.threads.get_mut(&thread) {
            t.last_diag = Some(attempt.diagnostic);
        }
        Some(recorded)
    }

    /// Whether thread `key` has a recipient that may be tried at `now`.
    pub fn has_ready(&self, key: &ThreadKey, now: u64) -> bool {
        let Some(t) = self.threads.get(key) else {
            return false;
        };
        !t.is_backing_off(now)
            && t.waiting.iter().any(|id| {
                self.msgs
                    .get(id)
                    .is_some_and(|m| !m.ready_in(key, now).is_empty())
            })
    }

    /// Takes the next job of thread `key`: the oldest message with
    /// recipients ready at `now`, those recipients now in flight. Messages
    /// with nothing waiting in the thread any more leave its list on the
    /// way. `None` when nothing is ready.
    pub fn hand_out(&mut self, key: &ThreadKey, now: u64, job: JobId) -> Option<(Job, Vec<u32>)> {
        let t = self.threads.get(key)?;
        let mut exhausted = Vec::new();
        let mut found = None;
        for id in &t.waiting {
            let Some(m) = self.msgs.get(id) else {
                exhausted.push(id.clone());
                continue;
            };
            let ready = m.ready_in(key, now);
            if !ready.is_empty() {
                found = Some((id.clone(), ready));
                break;
            }
            if !m.waits_in(key) {
                exhausted.push(id.clone());
            }
        }
        let t = self.threads.get_mut(key)?;
        for id in exhausted {
            t.waiting.remove(&id);
        }
        let (queue_id, rcpts) = found?;
        let m = self.msgs.get_mut(&queue_id)?;
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
                notify: cr.notify.unwrap_or_default(),
            });
        }
        let env = &m.control.envelope;
        let job = Job {
            id: job,
            queue_id: queue_id.clone(),
            thread: key.clone(),
            nexthop: m.control.recipients[rcpts[0] as usize].nexthop.clone(),
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
        let still_waiting = m.waits_in(key);
        t.attempts += 1;
        if !still_waiting {
            t.waiting.remove(&queue_id);
        }
        Some((job, rcpts))
    }

    /// A job is over: when every one of its recipients was deferred, the
    /// thread backs off by the retry schedule.
    pub fn job_over(
        &mut self,
        queue_id: &str,
        thread: &ThreadKey,
        rcpts: &[u32],
        schedule: &SchedulerConfig,
    ) {
        let Some(msg) = self.msgs.get(queue_id) else {
            return;
        };
        let all_deferred = rcpts
            .iter()
            .all(|&r| msg.rcpts[r as usize].state == RState::Deferred);
        if all_deferred && let Some(t) = self.threads.get_mut(thread) {
            t.back_off(schedule, now_micros());
        }
    }

    /// An agent of thread `key` died unexpectedly: unless the thread is
    /// already backing off, it does now, so that an agent that dies before
    /// doing anything is not restarted in a tight loop.
    pub fn agent_failed(&mut self, key: &ThreadKey, reason: &str, schedule: &SchedulerConfig) {
        let now = now_micros();
        if let Some(t) = self.threads.get_mut(key)
            && !t.is_backing_off(now)
        {
            t.failures += 1;
            let delay = schedule.retry_delay(t.failures as usize);
            t.next_attempt = micros_after(now, delay);
            t.last_diag = Some(format!("transport agent failed: {reason}"));
        }
    }

    /// Removes a thread that has nothing waiting and no agent.
    pub fn drop_thread_if_idle(&mut self, key: &ThreadKey) {
        if self
            .threads
            .get(key)
            .is_some_and(|t| t.waiting.is_empty() && t.agents.is_empty())
        {
            self.threads.remove(key);
        }
    }

    /// Makes the outcomes written to `id`'s journal durable, if any are
    /// not yet. On failure they stay in the page cache: a power loss
    /// before the next sync gets those recipients tried again.
    pub fn sync_journal(&mut self, id: &str) {
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

    /// Appends a record to a message's journal, durably. The append's
    /// fdatasync also makes durable the outcomes written before it.
    pub fn append(&mut self, id: &str, record: Record) -> Result<(), SpoolError> {
        let m = self
            .msgs
            .get_mut(id)
            .ok_or_else(|| SpoolError::Invalid(format!("no message {id}")))?;
        Journal::open(&m.control_path)?.append(&[record])?;
        m.unsynced = false;
        Ok(())
    }

    /// Removes a message (T5: control file first, then the message file)
    /// and takes it out of its threads. With [`Reuse::Files`] its files
    /// are retired into `free/` for reuse: only for a message none of
    /// whose jobs is still held by an agent.
    pub fn remove(&mut self, spool: &Spool, id: &str, why: &str, reuse: Reuse) {
        let Some(m) = self.msgs.remove(id) else {
            return;
        };
        for leg in &m.legs {
            if let Some(t) = self.threads.get_mut(&leg.thread) {
                t.waiting.remove(id);
            }
            self.drop_thread_if_idle(&leg.thread);
        }
        // The files are retired into free/ for reuse (docs/spool.md,
        // "Recycled files"), which is a removal as far as the queue is
        // concerned. No fsync: a removal that a power loss undoes only
        // brings back a message whose journal says every recipient is
        // final, or that is delivered again (at-least-once), and loading a
        // finished message removes it again (see `Engine::load`). The
        // control file goes first so that a message file is never left
        // looking alive without its journal.
        let result = match reuse {
            Reuse::Files => spool.retire(&m.control_path, &m.message_path, id),
            Reuse::Never => std::fs::remove_file(&m.control_path)
                .map_err(|e| SpoolError::io("unlink", &m.control_path, e))
                .and_then(|()| {
                    std::fs::remove_file(&m.message_path)
                        .map_err(|e| SpoolError::io("unlink", &m.message_path, e))
                }),
        };
        if spool.retired() >= PUBLISH_AT {
            // Busy without a pause: do not let the pool run dry meanwhile.
            publish_retired(spool);
        }
        match result {
            Ok(()) => tracing::info!(queue_id = id, why, "removed"),
            Err(e) => tracing::error!(queue_id = id, error = %e, "cannot remove finished message"),
        }
    }
}

impl Queue {
    /// Takes a damaged message out of the queue like [`Queue::remove`],
    /// but moves its files into `corrupt/` with a `.why` each (invariant
    /// 5) instead of unlinking them: the message file first, so that a
    /// crash in between leaves a control file without its message, which
    /// loading sets aside too (`load::read`).
    pub fn quarantine(&mut self, spool: &Spool, id: &str, why: &str) {
        let Some(m) = self.msgs.remove(id) else {
            return;
        };
        for leg in &m.legs {
            if let Some(t) = self.threads.get_mut(&leg.thread) {
                t.waiting.remove(id);
            }
            self.drop_thread_if_idle(&leg.thread);
        }
        // A missing message file (one kind of damage) has nothing to move.
        let message = match m.message_path.exists() {
            true => spool.quarantine(&m.message_path, why).map(Some),
            false => Ok(None),
        };
        let result = message.and_then(|_| {
            spool.quarantine(
                &m.control_path,
                &format!("its message file was damaged: {why}"),
            )
        });
        match result {
            Ok(_) => tracing::info!(queue_id = id, why, "removed: set aside in corrupt/"),
            Err(e) => {
                tracing::error!(queue_id = id, error = %e, "cannot set a damaged message aside")
            }
        }
    }
}

/// Makes the files of removed messages reusable (see
/// [`Spool::publish_retired`]): called when no event is waiting, so that
/// one pair of directory fsyncs covers every removal of a busy moment.
pub fn publish_retired(spool: &Spool) {
    if spool.retired() == 0 {
        return;
    }
    if let Err(e) = spool.publish_retired() {
        tracing::warn!(error = %e, "cannot publish retired files for reuse; trying again later");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_config::{Clause, Config};
    use skein_spool::QueueId;

    fn msg(n: u64, hosts: &[&str]) -> Msg {
        let control = crate::message::fixture::control(n, hosts);
        Msg::load(control, "/nonexistent/t".into(), "/nonexistent/q".into())
    }

    #[test]
    fn delays_add_up_to_the_delay_and_are_printed_as_postfix_does() {
        let t = |handed_micros, connect_micros| {
            Some(Timing {
                handed_micros,
                connect_micros,
            })
        };
        let table = [
            // arrival 0, queued 0.1 s, handed 0.5 s, 0.2 s set-up, now 1 s.
            (
                (0, 100_000, t(500_000, 200_000), 1_000_000),
                "0.1/0.4/0.2/0.3",
            ),
            // A reused connection: no set-up.
            ((0, 0, t(0, 0), 2_000_000), "0/0/0/2"),
            // Expiry: no agent; all of it in the queue.
            ((0, 10_000, None, 3_600_010_000), "0.01/3600/0/0"),
            // Clocks that disagree are clamped, never negative.
            ((1_000, 0, t(0, 9_999_999), 500), "0/0/0/0"),
            ((0, 0, t(100, 9_999_999), 1_000_000), "0/0/1/0"),
        ];
        for ((arrival, queued, timing, now), want) in table {
            let d = delays(arrival, queued, timing, now);
            assert_eq!(
                format_delays(d),
                want,
                "{arrival} {queued} {timing:?} {now}"
            );
            let sum: f64 = d.iter().sum();
            let delay = now.saturating_sub(arrival) as f64 / 1e6;
            assert!((sum - delay).abs() < 1e-6, "{d:?} adds up to {delay}");
        }
    }

    fn groups() -> Groups {
        let mut c = Config::embedded_default(std::path::Path::new("/")).scheduler;
        c.clause = vec![Clause::new("smtp/*", "skein-smtp")];
        Groups::new(&c)
    }

    #[test]
    fn jobs_come_oldest_first_one_leg_at_a_time() {
        let g = groups();
        let mut q = Queue::new();
        q.insert(msg(2, &["b", "a", "b"]), &g);
        q.insert(msg(1, &["b"]), &g);
        let b = ThreadKey::new("smtp", "b");
        assert_eq!(q.thread(&b).unwrap().waiting(), 2);
        assert_eq!(q.thread(&b).unwrap().group, Some(GroupId(0)));
        assert!(q.has_ready(&b, 0));
        let (job, rcpts) = q.hand_out(&b, 0, JobId(7)).unwrap();
        assert_eq!((job.id, rcpts), (JobId(7), vec![0]));
        assert_eq!(job.queue_id, QueueId::from_parts(1, 2, 1).to_string());
        let (job, rcpts) = q.hand_out(&b, 0, JobId(8)).unwrap();
        assert_eq!(rcpts, vec![0, 2], "both recipients of the leg in one job");
        assert_eq!(job.recipients.len(), 2);
        assert_eq!(job.attempt, 1);
        assert!(q.hand_out(&b, 0, JobId(9)).is_none());
        assert_eq!(q.thread(&b).unwrap().waiting(), 0);
        assert_eq!(q.thread(&b).unwrap().attempts, 2);
        // The other leg of the second message is untouched.
        let a = ThreadKey::new("smtp", "a");
        assert_eq!(q.thread(&a).unwrap().waiting(), 1);
        assert!(q.has_ready(&a, 0));
    }

    #[test]
    fn one_round_of_deferrals_steps_the_retry_schedule_once() {
        let g = groups();
        let mut q = Queue::new();
        q.insert(msg(1, &["a"]), &g);
        q.insert(msg(2, &["a"]), &g);
        let a = ThreadKey::new("smtp", "a");
        let mut schedule =
            skein_config::Config::embedded_default(std::path::Path::new("/")).scheduler;
        schedule.retries = vec![Duration::from_secs(60), Duration::from_secs(3600)];
        let before = now_micros();
        // One agent, two jobs, one round: both deferred.
        let jobs: Vec<_> = (0..2)
            .map(|n| q.hand_out(&a, 0, JobId(n)).expect("a job"))
            .collect();
        for (job, rcpts) in &jobs {
            let m = q.get_mut(&job.queue_id).expect("message");
            for &r in rcpts {
                m.rcpts[r as usize].state = RState::Deferred;
            }
            q.job_over(&job.queue_id, &a, rcpts, &schedule);
        }
        let t = q.thread(&a).expect("thread");
        assert_eq!(t.failures, 1, "one failed attempt, not one per job");
        let wait = t.next_attempt.saturating_sub(before);
        assert!(
            (55_000_000..=65_000_000).contains(&wait),
            "the first entry (60s), not the second: {wait} µs"
        );
        // The next round fails too: the second entry.
        let t = q.thread_mut(&a).expect("thread");
        t.next_attempt = 0;
        q.insert(msg(3, &["a"]), &g);
        let (job, rcpts) = q.hand_out(&a, 0, JobId(9)).expect("a job");
        q.get_mut(&job.queue_id).expect("message").rcpts[rcpts[0] as usize].state =
            RState::Deferred;
        q.job_over(&job.queue_id, &a, &rcpts, &schedule);
        let t = q.thread(&a).expect("thread");
        assert_eq!(t.failures, 2);
        assert!(
            t.next_attempt.saturating_sub(before) > 3_000_000_000,
            "the second entry, 1h"
        );
        // A delivery ends the backoff.
        q.thread_mut(&a).expect("thread").delivered();
        let t = q.thread(&a).expect("thread");
        assert_eq!((t.failures, t.next_attempt), (0, 0));
    }

    #[test]
    fn a_thread_backing_off_or_a_held_message_has_nothing_ready() {
        let g = groups();
        let mut q = Queue::new();
        q.insert(msg(1, &["a"]), &g);
        let a = ThreadKey::new("smtp", "a");
        q.thread_mut(&a).unwrap().next_attempt = 100;
        assert!(!q.has_ready(&a, 99));
        assert!(q.has_ready(&a, 100));
        q.get_mut(&QueueId::from_parts(1, 2, 1).to_string())
            .unwrap()
            .held = true;
        assert!(!q.has_ready(&a, 100));
        assert!(q.hand_out(&a, 100, JobId(1)).is_none());
        assert_eq!(q.thread(&a).unwrap().waiting(), 1, "held, still waiting");
    }
}
