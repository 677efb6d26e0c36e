//! The scheduler's decisions, as pure functions: no processes, no clock,
//! no spool. The engine gathers what they need, calls them and carries
//! out the actions they return.
//!
//! - [`start_verdict`]: may another agent be started for a thread? The
//!   limits are checked `maxta` (all agents) → `maxchannel` (agents of the
//!   channel, across groups) → `maxring` (agents of the group) → `maxthr`
//!   (agents on the thread); the first that binds is the answer.
//! - [`plan`]: which threads get an agent now, and whether that agent is
//!   an idle one of the group (preferably one still connected to the
//!   thread's host) or a new one: a list of [`Action`]s.
//! - [`feed`]: how many jobs to hand an agent now.
//! - [`check_agent`]: whether an agent is hung or idle past its time.

use std::collections::BTreeMap;
use std::time::Duration;

use skein_proto::ThreadKey;

use crate::event::AgentId;
use crate::group::{GroupId, Groups, ThreadGroup};

/// The limit that stops an agent from being started or assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `scheduler.maxta`: agents in all.
    Maxta,
    /// The clause's `maxchannel`: agents of the channel.
    Maxchannel,
    /// The clause's `maxring`: agents of the group.
    Maxring,
    /// The clause's `maxthr`: agents on the thread.
    Maxthr,
    /// As many agents on the thread as messages waiting in it: another
    /// would only idle.
    NoMoreWork,
}

/// The live agents (not stopping), counted for the limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// In all.
    pub total: usize,
    /// By channel.
    pub by_channel: BTreeMap<String, usize>,
    /// By group.
    pub by_group: BTreeMap<GroupId, usize>,
}

impl Census {
    /// Counts one more live agent.
    pub fn count(&mut self, group: GroupId, channel: &str) {
        self.total += 1;
        *self.by_channel.entry(channel.to_string()).or_default() += 1;
        *self.by_group.entry(group).or_default() += 1;
    }

    fn in_channel(&self, channel: &str) -> usize {
        self.by_channel.get(channel).copied().unwrap_or(0)
    }

    fn in_group(&self, group: GroupId) -> usize {
        self.by_group.get(&group).copied().unwrap_or(0)
    }
}

/// May a thread of `group` in `channel`, worked by `busy` agents and with
/// `waiting` messages, take one more agent, ignoring the limits on how
/// many agents run (an idle agent of the group is already counted)?
pub fn thread_has_room(group: &ThreadGroup, busy: usize, waiting: usize) -> Result<(), Limit> {
    if busy >= group.maxthr {
        return Err(Limit::Maxthr);
    }
    // More agents than messages waiting would idle.
    if busy > 0 && busy >= waiting {
        return Err(Limit::NoMoreWork);
    }
    Ok(())
}

/// May a new agent be started for such a thread? `maxta` → `maxchannel` →
/// `maxring` → `maxthr`, then whether there is work for it.
pub fn start_verdict(
    maxta: usize,
    group: &ThreadGroup,
    channel: &str,
    census: &Census,
    busy: usize,
    waiting: usize,
) -> Result<(), Limit> {
    if census.total >= maxta {
        return Err(Limit::Maxta);
    }
    if group
        .maxchannel
        .is_some_and(|max| census.in_channel(channel) >= max)
    {
        return Err(Limit::Maxchannel);
    }
    if census.in_group(group.id) >= group.maxring {
        return Err(Limit::Maxring);
    }
    thread_has_room(group, busy, waiting)
}

/// A thread with recipients ready now, as [`plan`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand<'a> {
    /// The thread.
    pub key: &'a ThreadKey,
    /// Its group.
    pub group: GroupId,
    /// Live agents working it.
    pub busy: usize,
    /// Messages with a recipient waiting in it.
    pub waiting: usize,
}

/// A live agent without a thread, as [`plan`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idle<'a> {
    /// Which.
    pub id: AgentId,
    /// Its group.
    pub group: GroupId,
    /// Its channel.
    pub channel: &'a str,
    /// The host it is still connected to, if any.
    pub connected_to: Option<&'a str>,
}

/// What the engine should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Give an idle agent this thread.
    Assign {
        /// The agent.
        agent: AgentId,
        /// The thread.
        thread: ThreadKey,
    },
    /// Start a new agent of the group for this thread.
    Start {
        /// The group whose command to start.
        group: GroupId,
        /// The thread it is for.
        thread: ThreadKey,
    },
}

/// Gives threads with work an agent, in thread order: each thread takes
/// agents while it has room ([`thread_has_room`]); an idle agent of its
/// group and channel comes first, one connected to the thread's host
/// before any other (then the oldest), else a new one if
/// [`start_verdict`] allows it and `blocked` does not hold the group
/// back. `census` counts the live agents; the plan counts the agents it
/// starts as it goes.
pub fn plan(
    groups: &Groups,
    mut census: Census,
    demand: &[Demand<'_>],
    idle: &[Idle<'_>],
    blocked: &dyn Fn(GroupId) -> bool,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut taken = vec![false; idle.len()];
    for d in demand {
        let Some(group) = groups.get(d.group) else {
            continue; // no clause matches: nothing can deliver it
        };
        let mut busy = d.busy;
        while thread_has_room(group, busy, d.waiting).is_ok() {
            let pick = idle
                .iter()
                .enumerate()
                .filter(|(i, a)| !taken[*i] && a.group == d.group && a.channel == d.key.channel)
                .min_by_key(|(_, a)| (a.connected_to != Some(d.key.host.as_str()), a.id))
                .map(|(i, a)| (i, a.id));
            if let Some((i, agent)) = pick {
                taken[i] = true;
                actions.push(Action::Assign {
                    agent,
                    thread: d.key.clone(),
                });
            } else if !blocked(d.group)
                && start_verdict(
                    groups.maxta(),
                    group,
                    &d.key.channel,
                    &census,
                    busy,
                    d.waiting,
                )
                .is_ok()
            {
                census.count(d.group, &d.key.channel);
                actions.push(Action::Start {
                    group: d.group,
                    thread: d.key.clone(),
                });
            } else {
                break;
            }
            busy += 1;
        }
    }
    actions
}

/// An agent as [`feed`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appetite {
    /// It has finished its handshake.
    pub up: bool,
    /// It has been told to stop (or killed).
    pub stopping: bool,
    /// Jobs it asked for and has not been given.
    pub credit: u32,
    /// Jobs it holds.
    pub held: usize,
    /// Its group's `overfeed`.
    pub overfeed: usize,
}

/// How to feed an agent that has a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// Nothing now: it cannot take a job (not up, stopping, no credit, or
    /// holding `overfeed` jobs).
    Wait,
    /// Its thread is backing off: it leaves the thread once it holds no
    /// job, and may be given another of its group.
    Release,
    /// Hand it up to this many jobs; if the thread runs out, it leaves
    /// the thread as for [`Feed::Release`].
    Send(usize),
}

/// How many jobs to hand an agent whose thread is (or is not)
/// `backing_off`.
pub fn feed(agent: Appetite, backing_off: bool) -> Feed {
    if !agent.up || agent.stopping || agent.credit == 0 || agent.held >= agent.overfeed {
        return Feed::Wait;
    }
    if backing_off {
        return Feed::Release;
    }
    Feed::Send((agent.credit as usize).min(agent.overfeed - agent.held))
}

/// An agent as [`check_agent`] sees it, once a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pulse {
    /// It has finished its handshake.
    pub up: bool,
    /// It has been told to stop (or killed).
    pub stopping: bool,
    /// It holds jobs.
    pub holds_jobs: bool,
    /// It has a thread.
    pub has_thread: bool,
    /// Since its last frame (or its last job).
    pub silent_for: Duration,
    /// Since it left its last thread (or started).
    pub idle_for: Duration,
}

/// What to do about an agent's silence or idleness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing.
    Fine,
    /// It holds jobs and has said nothing past `scheduler.agent_timeout`:
    /// kill it (its unreported recipients are deferred).
    Hung,
    /// It has had nothing to do past its group's `idlemax`: tell it to
    /// shut down.
    Idle,
}

/// Judges one agent against `agent_timeout` and its group's `idlemax`.
pub fn check_agent(p: Pulse, agent_timeout: Duration, idlemax: Duration) -> Verdict {
    // Silence while holding jobs is a hang even for an agent told to
    // stop (retired by a reload, it finishes its jobs first): killed, its
    // recipients are deferred rather than held in flight for ever.
    if p.holds_jobs && p.silent_for > agent_timeout {
        return Verdict::Hung;
    }
    if p.stopping {
        return Verdict::Fine;
    }
    if p.up && !p.has_thread && !p.holds_jobs && p.idle_for > idlemax {
        return Verdict::Idle;
    }
    Verdict::Fine
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_config::{Clause, Config, SchedulerConfig};

    /// Group 0: `smtp/*` with the given limits; group 1: `local/*`,
    /// defaults but maxring 5; `maxta` as given.
    fn groups(maxta: u32, maxthr: u32, maxring: u32, maxchannel: u32) -> Groups {
        let mut smtp = Clause::new("smtp/*", "skein-smtp");
        smtp.maxthr = maxthr;
        smtp.maxring = maxring;
        smtp.maxchannel = maxchannel;
        let mut local = Clause::new("local/*", "skein-local");
        local.maxring = 5;
        let config = SchedulerConfig {
            maxta,
            clause: vec![smtp, local],
            ..Config::embedded_default(std::path::Path::new("/")).scheduler
        };
        Groups::new(&config)
    }

    fn census(agents: &[(usize, &str)]) -> Census {
        let mut c = Census::default();
        for (g, ch) in agents {
            c.count(GroupId(*g), ch);
        }
        c
    }

    #[test]
    fn limits_are_checked_maxta_maxchannel_maxring_maxthr() {
        // (maxta, maxthr, maxring, maxchannel, live agents (group,
        // channel), busy on the thread, messages waiting) → verdict for a
        // new smtp agent.
        type Row = (
            u32,
            u32,
            u32,
            u32,
            &'static [(usize, &'static str)],
            usize,
            usize,
        );
        let table: &[(Row, Result<(), Limit>)] = &[
            ((0, 1, 20, 0, &[], 0, 1), Ok(())),
            ((1, 1, 20, 0, &[(1, "local")], 0, 1), Err(Limit::Maxta)),
            ((2, 1, 20, 0, &[(1, "local")], 0, 1), Ok(())),
            // maxta binds before maxchannel, maxring and maxthr.
            ((1, 1, 1, 1, &[(0, "smtp")], 1, 5), Err(Limit::Maxta)),
            (
                (0, 1, 20, 2, &[(0, "smtp"), (0, "smtp")], 0, 1),
                Err(Limit::Maxchannel),
            ),
            // maxchannel counts the channel across groups.
            ((0, 1, 20, 1, &[(1, "smtp")], 0, 1), Err(Limit::Maxchannel)),
            // another channel does not count.
            ((0, 1, 20, 1, &[(0, "local")], 0, 1), Ok(())),
            // maxchannel binds before maxring.
            ((0, 1, 1, 1, &[(0, "smtp")], 0, 1), Err(Limit::Maxchannel)),
            (
                (0, 1, 2, 0, &[(0, "smtp"), (0, "smtp")], 0, 1),
                Err(Limit::Maxring),
            ),
            // maxring counts the group, not the channel.
            ((0, 1, 2, 0, &[(1, "smtp"), (1, "smtp")], 0, 1), Ok(())),
            // maxring binds before maxthr.
            ((0, 1, 1, 0, &[(0, "smtp")], 1, 5), Err(Limit::Maxring)),
            ((0, 1, 20, 0, &[(0, "smtp")], 1, 5), Err(Limit::Maxthr)),
            ((0, 2, 20, 0, &[(0, "smtp")], 1, 5), Ok(())),
            (
                (0, 2, 20, 0, &[(0, "smtp"), (0, "smtp")], 2, 5),
                Err(Limit::Maxthr),
            ),
            // a second agent for a thread with one message would idle.
            ((0, 2, 20, 0, &[(0, "smtp")], 1, 1), Err(Limit::NoMoreWork)),
            // but the first agent always comes.
            ((0, 2, 20, 0, &[], 0, 0), Ok(())),
            // automatic maxta is 100.
            ((0, 1, 200, 0, &[(0, "smtp"); 99], 0, 1), Ok(())),
            ((0, 1, 200, 0, &[(0, "smtp"); 100], 0, 1), Err(Limit::Maxta)),
        ];
        for (row, want) in table {
            let (maxta, maxthr, maxring, maxchannel, live, busy, waiting) = *row;
            let g = groups(maxta, maxthr, maxring, maxchannel);
            let got = start_verdict(
                g.maxta(),
                g.get(GroupId(0)).unwrap(),
                "smtp",
                &census(live),
                busy,
                waiting,
            );
            assert_eq!(got, *want, "row {row:?}");
        }
    }

    fn key(s: &str) -> ThreadKey {
        let (c, h) = s.split_once('/').unwrap();
        ThreadKey::new(c, h)
    }

    fn assign(agent: u64, thread: &str) -> Action {
        Action::Assign {
            agent: AgentId(agent),
            thread: key(thread),
        }
    }

    fn start(group: usize, thread: &str) -> Action {
        Action::Start {
            group: GroupId(group),
            thread: key(thread),
        }
    }

    #[test]
    fn plans_give_threads_idle_agents_first_then_new_ones_within_limits() {
        struct Case {
            what: &'static str,
            /// (maxta, maxthr, maxring, maxchannel) of the smtp group.
            limits: (u32, u32, u32, u32),
            /// Live agents (group, channel), idle or not.
            live: &'static [(usize, &'static str)],
            /// Threads with work: (thread, busy, waiting).
            demand: &'static [(&'static str, usize, usize)],
            /// Idle agents: (id, group, channel, connected to).
            idle: &'static [(u64, usize, &'static str, Option<&'static str>)],
            /// Groups whose agents failed to start a moment ago.
            blocked: &'static [usize],
            want: Vec<Action>,
        }
        let cases = [
            Case {
                what: "one thread, nothing running: one new agent",
                limits: (0, 1, 20, 0),
                live: &[],
                demand: &[("smtp/a", 0, 3)],
                idle: &[],
                blocked: &[],
                want: vec![start(0, "smtp/a")],
            },
            Case {
                what: "maxthr 1: a thread already worked gets nothing",
                limits: (0, 1, 20, 0),
                live: &[(0, "smtp")],
                demand: &[("smtp/a", 1, 3)],
                idle: &[],
                blocked: &[],
                want: vec![],
            },
            Case {
                what: "maxthr 2 and work for two: a second agent",
                limits: (0, 2, 20, 0),
                live: &[(0, "smtp")],
                demand: &[("smtp/a", 1, 3)],
                idle: &[],
                blocked: &[],
                want: vec![start(0, "smtp/a")],
            },
            Case {
                what: "maxthr 3 from nothing: three agents at once",
                limits: (0, 3, 20, 0),
                live: &[],
                demand: &[("smtp/a", 0, 3)],
                idle: &[],
                blocked: &[],
                want: vec![start(0, "smtp/a"), start(0, "smtp/a"), start(0, "smtp/a")],
            },
            Case {
                what: "maxthr 3 but two messages: two agents",
                limits: (0, 3, 20, 0),
                live: &[],
                demand: &[("smtp/a", 0, 2)],
                idle: &[],
                blocked: &[],
                want: vec![start(0, "smtp/a"), start(0, "smtp/a")],
            },
            Case {
                what: "maxring 3 over five threads: the first three, in order",
                limits: (0, 1, 3, 0),
                live: &[],
                demand: &[
                    ("smtp/a", 0, 1),
                    ("smtp/b", 0, 1),
                    ("smtp/c", 0, 1),
                    ("smtp/d", 0, 1),
                    ("smtp/e", 0, 1),
                ],
                idle: &[],
                blocked: &[],
                want: vec![start(0, "smtp/a"), start(0, "smtp/b"), start(0, "smtp/c")],
            },
            Case {
                what: "an idle agent of the group is reused before one is started",
                limits: (0, 1, 1, 0),
                live: &[(0, "smtp")],
                demand: &[("smtp/b", 0, 1)],
                idle: &[(4, 0, "smtp", None)],
                blocked: &[],
                want: vec![assign(4, "smtp/b")],
            },
            Case {
                what: "the idle agent connected to the host is preferred",
                limits: (0, 1, 20, 0),
                live: &[(0, "smtp"), (0, "smtp"), (0, "smtp")],
                demand: &[("smtp/b", 0, 1)],
                idle: &[
                    (1, 0, "smtp", Some("a")),
                    (2, 0, "smtp", Some("b")),
                    (3, 0, "smtp", None),
                ],
                blocked: &[],
                want: vec![assign(2, "smtp/b")],
            },
            Case {
                what: "without a connected one, the oldest idle agent",
                limits: (0, 1, 20, 0),
                live: &[(0, "smtp"), (0, "smtp")],
                demand: &[("smtp/c", 0, 1)],
                idle: &[(7, 0, "smtp", Some("a")), (5, 0, "smtp", None)],
                blocked: &[],
                want: vec![assign(5, "smtp/c")],
            },
            Case {
                what: "an idle agent of another group is never used",
                limits: (0, 1, 20, 0),
                live: &[(1, "local")],
                demand: &[("smtp/a", 0, 1)],
                idle: &[(1, 1, "local", None)],
                blocked: &[],
                want: vec![start(0, "smtp/a")],
            },
            Case {
                what: "an idle agent of the group for another channel is never used",
                limits: (0, 1, 20, 0),
                live: &[(0, "smtp")],
                demand: &[("smtp/a", 0, 1)],
                idle: &[(1, 0, "lmtp", None)],
                blocked: &[],
                want: vec![start(0, "smtp/a")],
            },
            Case {
                what: "one idle agent, two threads: the first thread gets it, the second a new one",
                limits: (0, 1, 20, 0),
                live: &[(0, "smtp")],
                demand: &[("smtp/a", 0, 1), ("smtp/b", 0, 1)],
                idle: &[(3, 0, "smtp", None)],
                blocked: &[],
                want: vec![assign(3, "smtp/a"), start(0, "smtp/b")],
            },
            Case {
                what: "maxta counts every group; idle agents may still be assigned",
                limits: (2, 1, 20, 0),
                live: &[(1, "local"), (0, "smtp")],
                demand: &[("smtp/a", 0, 1), ("smtp/b", 0, 1)],
                idle: &[(2, 0, "smtp", None)],
                blocked: &[],
                want: vec![assign(2, "smtp/a")],
            },
            Case {
                what: "maxchannel counts the agents the plan starts",
                limits: (0, 1, 20, 2),
                live: &[(0, "smtp")],
                demand: &[("smtp/a", 0, 1), ("smtp/b", 0, 1), ("smtp/c", 0, 1)],
                idle: &[],
                blocked: &[],
                want: vec![start(0, "smtp/a")],
            },
            Case {
                what: "a group whose agent failed to start waits; others go on",
                limits: (0, 1, 20, 0),
                live: &[],
                demand: &[("local/ann", 0, 1), ("smtp/a", 0, 1)],
                idle: &[],
                blocked: &[0],
                want: vec![start(1, "local/ann")],
            },
            Case {
                what: "a blocked group still reuses its idle agents",
                limits: (0, 1, 20, 0),
                live: &[(0, "smtp")],
                demand: &[("smtp/a", 0, 1), ("smtp/b", 0, 1)],
                idle: &[(9, 0, "smtp", None)],
                blocked: &[0],
                want: vec![assign(9, "smtp/a")],
            },
            Case {
                what: "a thread of no group gets nothing",
                limits: (0, 1, 20, 0),
                live: &[],
                demand: &[("pipe/x", 0, 1)],
                idle: &[],
                blocked: &[],
                want: vec![],
            },
        ];
        for case in &cases {
            let (maxta, maxthr, maxring, maxchannel) = case.limits;
            let g = groups(maxta, maxthr, maxring, maxchannel);
            let keys: Vec<ThreadKey> = case.demand.iter().map(|d| key(d.0)).collect();
            let demand: Vec<Demand> = case
                .demand
                .iter()
                .zip(&keys)
                .map(|(d, k)| Demand {
                    key: k,
                    group: g.of(k).unwrap_or(GroupId(usize::MAX)),
                    busy: d.1,
                    waiting: d.2,
                })
                .collect();
            let idle: Vec<Idle> = case
                .idle
                .iter()
                .map(|&(id, group, channel, connected_to)| Idle {
                    id: AgentId(id),
                    group: GroupId(group),
                    channel,
                    connected_to,
                })
                .collect();
            let blocked = |group: GroupId| case.blocked.contains(&group.0);
            let got = plan(&g, census(case.live), &demand, &idle, &blocked);
            assert_eq!(got, case.want, "{}", case.what);
        }
    }

    #[test]
    fn agents_are_fed_up_to_their_credit_and_overfeed() {
        let a = |up, stopping, credit, held, overfeed| Appetite {
            up,
            stopping,
            credit,
            held,
            overfeed,
        };
        // (agent, thread backing off) → decision
        let table = [
            ((a(true, false, 2, 0, 150), false), Feed::Send(2)),
            ((a(true, false, 200, 0, 150), false), Feed::Send(150)),
            ((a(true, false, 200, 149, 150), false), Feed::Send(1)),
            ((a(true, false, 5, 150, 150), false), Feed::Wait),
            ((a(true, false, 0, 0, 150), false), Feed::Wait),
            ((a(false, false, 5, 0, 150), false), Feed::Wait),
            ((a(true, true, 5, 0, 150), false), Feed::Wait),
            ((a(true, false, 5, 0, 1), false), Feed::Send(1)),
            ((a(true, false, 5, 1, 1), false), Feed::Wait),
            ((a(true, false, 5, 0, 150), true), Feed::Release),
            ((a(true, false, 0, 0, 150), true), Feed::Wait),
            ((a(false, false, 0, 0, 150), true), Feed::Wait),
        ];
        for ((agent, backing_off), want) in table {
            assert_eq!(feed(agent, backing_off), want, "{agent:?} {backing_off}");
        }
    }

    #[test]
    fn hung_and_idle_agents_are_found() {
        let s = Duration::from_secs;
        let p = |up, stopping, holds_jobs, has_thread, silent, idle| Pulse {
            up,
            stopping,
            holds_jobs,
            has_thread,
            silent_for: s(silent),
            idle_for: s(idle),
        };
        // timeout 600 s, idlemax 240 s
        let table = [
            (p(true, false, true, true, 601, 0), Verdict::Hung),
            (p(true, false, true, true, 600, 0), Verdict::Fine),
            (p(false, false, true, true, 601, 0), Verdict::Hung),
            (p(true, true, true, true, 9999, 0), Verdict::Hung),
            (p(true, true, true, true, 600, 0), Verdict::Fine),
            (p(true, false, false, true, 9999, 9999), Verdict::Fine),
            (p(true, false, false, false, 0, 241), Verdict::Idle),
            (p(true, false, false, false, 0, 240), Verdict::Fine),
            (p(false, false, false, false, 0, 9999), Verdict::Fine),
            (p(true, true, false, false, 0, 9999), Verdict::Fine),
            (p(true, false, true, false, 0, 9999), Verdict::Fine),
            (p(true, false, true, false, 601, 9999), Verdict::Hung),
            (p(true, false, false, true, 0, 9999), Verdict::Fine),
        ];
        for (pulse, want) in table {
            assert_eq!(check_agent(pulse, s(600), s(240)), want, "{pulse:?}");
        }
    }
}
