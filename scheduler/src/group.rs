//! Thread groups (ZMailer's rings): the threads that match one
//! `[[scheduler.clause]]`, with the clause's agent program and limits.
//!
//! A thread belongs to the group of the first clause whose `match` glob
//! matches its `channel/host`, or to none (then nothing can deliver it and
//! it waits, visible in `mailq --threads` as "no clause matches"). Agents
//! of a group are interchangeable among its threads: an idle one may be
//! handed any thread of its group and channel.

use std::fmt;
use std::time::Duration;

use skein_config::{Clause, SchedulerConfig};
use skein_proto::ThreadKey;

/// `maxta = 0` means automatic: this many agents at most.
pub const AUTO_MAXTA: usize = 100;

/// Which group: the position of its clause in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub usize);

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group#{}", self.0)
    }
}

/// One thread group and its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadGroup {
    /// Its position among the clauses.
    pub id: GroupId,
    /// The clause's `match` glob.
    pub pattern: String,
    /// The agent program (`command`) and its `args`.
    pub command: String,
    /// Extra arguments for `command`.
    pub args: Vec<String>,
    /// `maxthr`: agents on one thread at once (at least 1).
    pub maxthr: usize,
    /// `maxring`: agents of the whole group at once (at least 1).
    pub maxring: usize,
    /// `maxchannel`: agents of the channel across groups; `None` = no limit.
    pub maxchannel: Option<usize>,
    /// `overfeed`: jobs one agent may hold before it reports (at least 1).
    pub overfeed: usize,
    /// `idlemax`: how long an agent with nothing to do is kept.
    pub idlemax: Duration,
}

impl ThreadGroup {
    /// The group of clause number `id`.
    pub fn from_clause(id: GroupId, c: &Clause) -> ThreadGroup {
        ThreadGroup {
            id,
            pattern: c.pattern.clone(),
            command: c.command.clone(),
            args: c.args.clone(),
            maxthr: c.maxthr.max(1) as usize,
            maxring: c.maxring.max(1) as usize,
            maxchannel: (c.maxchannel > 0).then_some(c.maxchannel as usize),
            overfeed: c.overfeed.max(1) as usize,
            idlemax: c.idlemax,
        }
    }
}

/// Every group, in clause order, and the global limit.
#[derive(Debug, Clone)]
pub struct Groups {
    groups: Vec<ThreadGroup>,
    clauses: Vec<Clause>,
    maxta: usize,
}

impl Groups {
    /// The groups of a configuration.
    pub fn new(config: &SchedulerConfig) -> Groups {
        Groups {
            groups: config
                .clause
                .iter()
                .enumerate()
                .map(|(i, c)| ThreadGroup::from_clause(GroupId(i), c))
                .collect(),
            clauses: config.clause.clone(),
            maxta: match config.maxta {
                0 => AUTO_MAXTA,
                n => n as usize,
            },
        }
    }

    /// The group a thread belongs to: the first clause that matches.
    pub fn of(&self, thread: &ThreadKey) -> Option<GroupId> {
        self.clauses
            .iter()
            .position(|c| c.matches(&thread.channel, &thread.host))
            .map(GroupId)
    }

    /// A group by id.
    pub fn get(&self, id: GroupId) -> Option<&ThreadGroup> {
        self.groups.get(id.0)
    }

    /// Every group, in clause order.
    pub fn iter(&self) -> impl Iterator<Item = &ThreadGroup> {
        self.groups.iter()
    }

    /// `maxta`, resolved (automatic = [`AUTO_MAXTA`]).
    pub fn maxta(&self) -> usize {
        self.maxta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_clause_is_the_group() {
        let mut config = SchedulerConfig {
            clause: vec![
                Clause::new("smtp/*.example.org", "a"),
                Clause::new("smtp/*", "b"),
            ],
            ..skein_config::Config::embedded_default(std::path::Path::new("/")).scheduler
        };
        config.clause[0].maxchannel = 3;
        config.maxta = 0;
        let groups = Groups::new(&config);
        let table = [
            ("smtp", "mx.example.org", Some(GroupId(0))),
            ("smtp", "example.net", Some(GroupId(1))),
            ("local", "ann", None),
        ];
        for (channel, host, want) in table {
            assert_eq!(
                groups.of(&ThreadKey::new(channel, host)),
                want,
                "{channel}/{host}"
            );
        }
        assert_eq!(groups.maxta(), AUTO_MAXTA);
        assert_eq!(groups.get(GroupId(0)).unwrap().maxchannel, Some(3));
        assert_eq!(groups.get(GroupId(1)).unwrap().maxchannel, None);
        assert!(groups.get(GroupId(2)).is_none());
    }
}
