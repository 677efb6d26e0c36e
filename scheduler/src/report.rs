//! Views of the scheduler's state for the spool tools (`skein mailq`,
//! `skein mailq --threads`, `skein queue show`, `skein status`).

use skein_proto::{
    FeedState, GroupInfo, MessageDetail, MessageSummary, RecipientState, RecipientSummary,
    SchedulerStatus, ThreadInfo, ThreadKey,
};

use crate::core::Core;
use crate::state::{Msg, RState, now_micros};

/// One thread, as gathered for `mailq --threads`.
#[derive(Debug)]
pub struct ThreadView {
    /// The thread.
    pub key: ThreadKey,
    /// Index of its clause.
    pub clause: usize,
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
            clause: 0,
            messages: 0,
            recipients: 0,
            attempts: 0,
            agent_pids: Vec::new(),
            next_attempt_in: None,
            oldest_arrival: 0,
            last_diag: None,
            held: false,
            running: false,
        }
    }
}

pub(crate) fn status(core: &Core) -> SchedulerStatus {
    let msgs: Vec<&Msg> = core.messages().collect();
    SchedulerStatus {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: core.uptime().as_secs(),
        messages: msgs.len() as u64,
        recipients: msgs
            .iter()
            .flat_map(|m| &m.rcpts)
            .filter(|r| !r.state.is_final())
            .count() as u64,
        threads: core.thread_count() as u64,
        agents: core.agent_count() as u64,
    }
}

pub(crate) fn summary(m: &Msg) -> MessageSummary {
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
            .map(|(cr, r)| RecipientSummary {
                index: cr.index,
                address: cr.address.clone(),
                thread: ThreadKey::new(cr.channel.clone(), cr.host.clone()),
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
                    .then_some((r.retry_at / 1_000_000) as i64),
            })
            .collect(),
    }
}

pub(crate) fn queue(core: &Core) -> Vec<MessageSummary> {
    let mut v: Vec<MessageSummary> = core.messages().map(summary).collect();
    v.sort_by(|a, b| a.queue_id.cmp(&b.queue_id));
    v
}

pub(crate) fn detail(core: &Core, m: &Msg) -> MessageDetail {
    let env = &m.control.envelope;
    let _ = core;
    MessageDetail {
        summary: summary(m),
        envid: env.envid.clone(),
        ret: env.ret,
        body: env.body,
        smtputf8: env.smtputf8,
        message_path: m.message_path.display().to_string(),
        control_path: m.control_path.display().to_string(),
    }
}

pub(crate) fn threads(core: &Core) -> Vec<GroupInfo> {
    let now = now_micros();
    let clauses = &core.config().scheduler.clause;
    let mut groups: Vec<GroupInfo> = clauses
        .iter()
        .enumerate()
        .map(|(i, c)| GroupInfo {
            clause: c.pattern.clone(),
            agents: core.agent_pids_of_clause(i),
            threads: Vec::new(),
        })
        .collect();
    let mut unmatched = GroupInfo {
        clause: "(no clause matches)".into(),
        agents: Vec::new(),
        threads: Vec::new(),
    };
    for v in core.thread_view() {
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
        match groups.get_mut(v.clause) {
            Some(g) => g.threads.push(info),
            None => unmatched.threads.push(info),
        }
    }
    if !unmatched.threads.is_empty() {
        groups.push(unmatched);
    }
    groups
}
