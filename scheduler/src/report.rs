//! Views of the scheduler's state for the spool tools (`skein mailq`,
//! `skein mailq --threads`, `skein queue show`, `skein status`): read
//! only, from the queue, the agents and the groups.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use skein_proto::{
    FeedState, GroupInfo, MessageDetail, MessageSummary, RecipientState, RecipientSummary,
    SchedulerStatus, ThreadInfo, ThreadKey,
};

use crate::agents::Agents;
use crate::clock::now_micros;
use crate::group::{GroupId, Groups};
use crate::message::{Msg, RState};
use crate::queue::Queue;

/// One thread, as gathered for `mailq --threads`.
#[derive(Debug)]
pub struct ThreadView {
    /// The thread.
    pub key: ThreadKey,
    /// Its group.
    pub group: Option<GroupId>,
    /// Messages with a non-final recipient in it.
    pub messages: u64,
    /// Non-final recipients in it.
    pub recipients: u64,
    /// Jobs handed out so far.
    pub attempts: u32,
    /// Pids of the agents working it.
    pub agent_pids: Vec<u32>,
    /// Seconds to the next attempt, when backing off.
    pub next_attempt_in: Option<i64>,
    /// When its first waiting recipient is due, micros (0: now).
    pub earliest_ready: Option<u64>,
    /// Arrival of its oldest message, micros.
    pub oldest_arrival: u64,
    /// Last diagnostic.
    pub last_diag: Option<String>,
    /// Some message in it is held.
    pub held: bool,
    /// Some recipient in it is in flight.
    pub running: bool,
}

impl Default for ThreadView {
    fn default() -> Self {
        ThreadView {
            key: ThreadKey::new("", ""),
            group: None,
            messages: 0,
            recipients: 0,
            attempts: 0,
            agent_pids: Vec::new(),
            next_attempt_in: None,
            earliest_ready: None,
            oldest_arrival: 0,
            last_diag: None,
            held: false,
            running: false,
        }
    }
}

/// `skein status`.
pub fn status(queue: &Queue, agents: &Agents, uptime: Duration) -> SchedulerStatus {
    let msgs: Vec<&Msg> = queue.messages().collect();
    SchedulerStatus {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: uptime.as_secs(),
        messages: msgs.len() as u64,
        recipients: msgs
            .iter()
            .flat_map(|m| &m.rcpts)
            .filter(|r| !r.state.is_final())
            .count() as u64,
        threads: queue.thread_count() as u64,
        agents: agents.len() as u64,
    }
}

/// When a waiting recipient of `m` (index `i`) is really tried next,
/// micros: not before its own retry time nor before its thread's backoff
/// ends (the same instant `mailq --threads` shows for the thread, within
/// the scheduler's one-second tick). 0: as soon as an agent is free.
pub fn next_attempt(queue: &Queue, m: &Msg, i: usize) -> u64 {
    let r = &m.rcpts[i];
    let own = if r.state == RState::Deferred {
        r.retry_at
    } else {
        0
    };
    let thread = queue.thread(m.thread_of(i)).map_or(0, |t| t.next_attempt);
    own.max(thread)
}

/// One message, as `mailq` lists it.
pub fn summary(queue: &Queue, m: &Msg) -> MessageSummary {
    MessageSummary {
        queue_id: m.id().to_string(),
        size: m.control.size,
        arrival_unix: (m.control.arrival_micros / 1_000_000) as i64,
        sender: m.control.envelope.sender.clone(),
        held: m.held,
        recipients: m
            .control
            .recipients
            .iter()
            .zip(&m.rcpts)
            .enumerate()
            .map(|(i, (cr, r))| RecipientSummary {
                index: cr.index,
                address: cr.address.clone(),
                thread: m.thread_of(cr.index as usize).clone(),
                state: match r.state {
                    RState::Pending => RecipientState::Pending,
                    RState::InFlight => RecipientState::InProgress,
                    RState::Deferred => RecipientState::Deferred,
                    RState::Delivered => RecipientState::Delivered,
                    RState::Failed { .. } => RecipientState::Failed,
                },
                attempts: r.attempts,
                last_diagnostic: r.diagnostic.clone(),
                next_attempt_unix: (r.state == RState::Deferred)
                    .then(|| (next_attempt(queue, m, i) / 1_000_000) as i64),
            })
            .collect(),
    }
}

/// `mailq`: every message, in queue-id order.
pub fn queue(queue: &Queue) -> Vec<MessageSummary> {
    let mut v: Vec<MessageSummary> = queue.messages().map(|m| summary(queue, m)).collect();
    v.sort_by(|a, b| a.queue_id.cmp(&b.queue_id));
    v
}

/// `skein queue show`.
pub fn detail(queue: &Queue, m: &Msg) -> MessageDetail {
    let env = &m.control.envelope;
    MessageDetail {
        summary: summary(queue, m),
        envid: env.envid.clone(),
        ret: env.ret,
        body: env.body,
        smtputf8: env.smtputf8,
        message_path: m.message_path.display().to_string(),
        control_path: m.control_path.display().to_string(),
    }
}

/// `mailq --threads`: the groups in clause order, each with its threads.
pub fn threads(queue: &Queue, agents: &Agents, groups: &Groups) -> Vec<GroupInfo> {
    let now = now_micros();
    let mut infos: Vec<GroupInfo> = groups
        .iter()
        .map(|g| GroupInfo {
            clause: g.pattern.clone(),
            agents: agents.pids_of_group(g.id),
            threads: Vec::new(),
        })
        .collect();
    let mut unmatched = GroupInfo {
        clause: "(no clause matches)".into(),
        agents: Vec::new(),
        threads: Vec::new(),
    };
    for v in thread_view(queue, agents, groups) {
        let feed = if v.held {
            FeedState::Held
        } else if v.running || !v.agent_pids.is_empty() {
            FeedState::Running
        } else if v.next_attempt_in.is_some() {
            FeedState::Retrying
        } else if v.recipients > 0 {
            FeedState::Queued
        } else {
            FeedState::Idle
        };
        let info = ThreadInfo {
            key: v.key,
            messages: v.messages,
            recipients: v.recipients,
            attempts: v.attempts,
            agent_pids: v.agent_pids,
            next_attempt_in_secs: v.next_attempt_in,
            feed,
            oldest_age_secs: if v.oldest_arrival == 0 {
                0
            } else {
                now.saturating_sub(v.oldest_arrival) / 1_000_000
            },
            last_diagnostic: v.last_diag,
        };
        match v.group.and_then(|g| infos.get_mut(g.0)) {
            Some(g) => g.threads.push(info),
            None => unmatched.threads.push(info),
        }
    }
    if !unmatched.threads.is_empty() {
        infos.push(unmatched);
    }
    infos
}

/// Every thread with a recipient that is not final, or that the
/// scheduler still keeps (backoff, agents), in key order.
fn thread_view(queue: &Queue, agents: &Agents, groups: &Groups) -> Vec<ThreadView> {
    let now = now_micros();
    let mut map: BTreeMap<ThreadKey, ThreadView> = BTreeMap::new();
    for m in queue.messages() {
        let mut seen_here: BTreeSet<&ThreadKey> = BTreeSet::new();
        for (i, r) in m.rcpts.iter().enumerate() {
            if r.state.is_final() {
                continue;
            }
            let key = m.thread_of(i);
            let v = map.entry(key.clone()).or_insert_with(|| ThreadView {
                key: key.clone(),
                group: groups.of(key),
                ..Default::default()
            });
            v.recipients += 1;
            if matches!(r.state, RState::Pending | RState::Deferred) {
                let ready = if r.state == RState::Deferred {
                    r.retry_at
                } else {
                    0
                };
                v.earliest_ready = Some(v.earliest_ready.map_or(ready, |e| e.min(ready)));
            }
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
    for (key, t) in queue.threads() {
        let v = map.entry(key.clone()).or_insert_with(|| ThreadView {
            key: key.clone(),
            group: t.group,
            ..Default::default()
        });
        v.attempts = t.attempts;
        // The thread is tried again once its backoff is over and one of
        // its recipients is due: the later of the two, as for each
        // recipient in `mailq` ([`next_attempt`]).
        let next = t.next_attempt.max(v.earliest_ready.unwrap_or(0));
        v.next_attempt_in = (next > now).then(|| ((next - now) / 1_000_000) as i64);
        v.last_diag = t.last_diag.clone();
        v.agent_pids = t
            .agents
            .iter()
            .filter_map(|a| agents.get(*a).map(|a| a.pid))
            .collect();
    }
    map.into_values().collect()
}
