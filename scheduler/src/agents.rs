//! Agent bookkeeping: which agents run, for which group and channel, the
//! thread each works, the jobs each holds and what they have reported.
//!
//! Starting a process is behind the [`Launcher`] trait: the real one
//! ([`crate::process::Processes`]) forks the clause's command with a
//! socketpair on fd 3; tests use one that records the starts and hands
//! back a channel, so the engine can be driven without child processes.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use skein_proto::{Job, JobId, SchedulerToAgent, ThreadKey};
use tokio::sync::mpsc;

use crate::error::SchedulerError;
use crate::event::AgentId;
use crate::group::{GroupId, ThreadGroup};
use crate::policy::{Census, Idle};

/// After a failure to start an agent, wait this long before trying again.
pub const START_BACKOFF: Duration = Duration::from_secs(30);

/// What it takes to start an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spawn {
    /// The clause's `command`: a path, or a bare name the launcher
    /// resolves.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The channel it serves (its `SKEIN_CHANNEL`).
    pub channel: String,
    /// The configuration file to pass on, if any.
    pub config_path: Option<PathBuf>,
}

/// A started agent, before its handshake.
#[derive(Debug)]
pub struct Launched {
    /// Its pid (for logs, `mailq --threads` and kills).
    pub pid: u32,
    /// Frames to send it.
    pub tx: mpsc::UnboundedSender<SchedulerToAgent>,
}

/// Starts and kills agent processes. Whatever a started agent says, and
/// its end, come back to the engine as events for `id`.
pub trait Launcher {
    /// Starts an agent. An error is local (fork or exec failed): the
    /// group waits [`START_BACKOFF`] and the thread's mail waits with it.
    fn launch(&mut self, id: AgentId, spec: &Spawn) -> io::Result<Launched>;
    /// Kills an agent (hung, or it broke the protocol).
    fn kill(&mut self, pid: u32);
}

/// A job handed to an agent and not yet done.
#[derive(Debug)]
pub struct JobInFlight {
    /// Its message.
    pub queue_id: String,
    /// Its thread.
    pub thread: ThreadKey,
    /// The recipients in it (positions in the message).
    pub rcpts: Vec<u32>,
    /// Which of them the agent has reported on.
    pub reported: Vec<bool>,
    /// The administrator deleted its message: what comes for it is ignored.
    pub cancelled: bool,
    /// When it was handed to the agent, microseconds since the epoch (the
    /// delivery log's `delays=`: the end of the time in the queue).
    pub handed_micros: u64,
    /// Its outbound TLS session (`Outcome::tls`) is counted already.
    pub tls_counted: bool,
}

impl JobInFlight {
    /// The recipients the agent has not reported on.
    pub fn unreported(&self) -> Vec<u32> {
        self.rcpts
            .iter()
            .zip(&self.reported)
            .filter(|(_, rep)| !**rep)
            .map(|(r, _)| *r)
            .collect()
    }
}

/// One agent.
#[derive(Debug)]
pub struct Agent {
    /// Its pid.
    pub pid: u32,
    /// Its group.
    pub group: GroupId,
    /// Its channel.
    pub channel: String,
    /// The thread it works, if any.
    pub thread: Option<ThreadKey>,
    /// Its handshake is done.
    pub up: bool,
    /// Jobs it asked for and was not given yet.
    pub credit: u32,
    /// The jobs it holds.
    pub jobs: HashMap<JobId, JobInFlight>,
    /// When it last sent a frame, or was given a job.
    pub last_heard: Instant,
    /// When it last left a thread (or started).
    pub idle_since: Instant,
    /// The host it says it is still connected to.
    pub connected_to: Option<String>,
    /// It was told to stop, or killed.
    pub stopping: bool,
    tx: mpsc::UnboundedSender<SchedulerToAgent>,
}

impl Agent {
    /// Queues a frame for it. A send error means its writer is gone; its
    /// reader reports the end and its jobs are deferred then.
    pub fn send(&self, msg: SchedulerToAgent) {
        let _ = self.tx.send(msg);
    }

    /// Live and without a thread: may be given one of its group.
    pub fn is_idle(&self) -> bool {
        self.thread.is_none() && !self.stopping
    }
}

/// Every agent.
pub struct Agents {
    map: HashMap<AgentId, Agent>,
    next_id: u64,
    next_job: u64,
    launcher: Box<dyn Launcher>,
    blocked_until: HashMap<GroupId, Instant>,
    config_path: Option<PathBuf>,
}

impl Agents {
    /// No agents yet; they are started with `launcher` and told of
    /// `config_path`.
    pub fn new(launcher: Box<dyn Launcher>, config_path: Option<PathBuf>) -> Agents {
        Agents {
            map: HashMap::new(),
            next_id: 1,
            next_job: 1,
            launcher,
            blocked_until: HashMap::new(),
            config_path,
        }
    }

    /// How many are alive.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Agent `id`.
    pub fn get(&self, id: AgentId) -> Option<&Agent> {
        self.map.get(&id)
    }

    /// Agent `id`, to change.
    pub fn get_mut(&mut self, id: AgentId) -> Option<&mut Agent> {
        self.map.get_mut(&id)
    }

    /// Every agent's id, ascending.
    pub fn ids(&self) -> Vec<AgentId> {
        let mut ids: Vec<AgentId> = self.map.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Forgets an agent whose connection has ended.
    pub fn remove(&mut self, id: AgentId) -> Option<Agent> {
        self.map.remove(&id)
    }

    /// The live agents, counted for the limits.
    pub fn census(&self) -> Census {
        let mut c = Census::default();
        for a in self.map.values().filter(|a| !a.stopping) {
            c.count(a.group, &a.channel);
        }
        c
    }

    /// The idle agents, as the dispatch plan sees them.
    pub fn idle(&self) -> Vec<Idle<'_>> {
        self.map
            .iter()
            .filter(|(_, a)| a.is_idle())
            .map(|(id, a)| Idle {
                id: *id,
                group: a.group,
                channel: &a.channel,
                connected_to: a.connected_to.as_deref(),
            })
            .collect()
    }

    /// How many live agents work `thread` among `agents`.
    pub fn live_among(&self, agents: &[AgentId]) -> usize {
        agents
            .iter()
            .filter(|a| self.map.get(a).is_some_and(|a| !a.stopping))
            .count()
    }

    /// Whether `group`'s agent failed to start less than
    /// [`START_BACKOFF`] before `now`.
    pub fn is_blocked(&self, group: GroupId, now: Instant) -> bool {
        self.blocked_until.get(&group).is_some_and(|t| now < *t)
    }

    /// Starts an agent of `group` for `channel`. On failure the group is
    /// blocked for [`START_BACKOFF`].
    pub fn start(
        &mut self,
        group: &ThreadGroup,
        channel: &str,
        now: Instant,
    ) -> Result<AgentId, SchedulerError> {
        let spec = Spawn {
            command: group.command.clone(),
            args: group.args.clone(),
            channel: channel.to_string(),
            config_path: self.config_path.clone(),
        };
        let id = AgentId(self.next_id);
        self.next_id += 1;
        match self.launcher.launch(id, &spec) {
            Ok(started) => {
                self.map.insert(
                    id,
                    Agent {
                        pid: started.pid,
                        group: group.id,
                        channel: channel.to_string(),
                        thread: None,
                        up: false,
                        credit: 0,
                        jobs: HashMap::new(),
                        last_heard: now,
                        idle_since: now,
                        connected_to: None,
                        stopping: false,
                        tx: started.tx,
                    },
                );
                Ok(id)
            }
            Err(error) => {
                self.blocked_until.insert(group.id, now + START_BACKOFF);
                Err(SchedulerError::AgentStart {
                    command: spec.command,
                    error,
                })
            }
        }
    }

    /// A new job id.
    pub fn next_job_id(&mut self) -> JobId {
        let id = JobId(self.next_job);
        self.next_job += 1;
        id
    }

    /// Hands agent `id` a job: one credit spent, the job held.
    pub fn send_job(&mut self, id: AgentId, job: Job, rcpts: Vec<u32>, now: Instant) {
        let Some(a) = self.map.get_mut(&id) else {
            return;
        };
        a.credit = a.credit.saturating_sub(1);
        a.last_heard = now;
        let n = rcpts.len();
        a.jobs.insert(
            job.id,
            JobInFlight {
                queue_id: job.queue_id.clone(),
                thread: job.thread.clone(),
                rcpts,
                reported: vec![false; n],
                cancelled: false,
                handed_micros: crate::clock::now_micros(),
                tls_counted: false,
            },
        );
        a.send(SchedulerToAgent::Job(job));
    }

    /// Cancels every job of message `queue_id` (deleted): the agents are
    /// told, and whatever they report for it is ignored.
    pub fn cancel_jobs_of(&mut self, queue_id: &str) {
        for a in self.map.values_mut() {
            for (job_id, j) in a.jobs.iter_mut() {
                if j.queue_id == queue_id && !j.cancelled {
                    j.cancelled = true;
                    let _ = a.tx.send(SchedulerToAgent::Cancel { job: *job_id });
                }
            }
        }
    }

    /// Kills agent `id` and marks it stopping.
    pub fn kill(&mut self, id: AgentId) {
        if let Some(a) = self.map.get_mut(&id) {
            a.stopping = true;
            self.launcher.kill(a.pid);
        }
    }

    /// Asks every agent to finish and exit.
    pub fn shutdown_all(&mut self) {
        for a in self.map.values_mut() {
            a.stopping = true;
            a.send(SchedulerToAgent::Shutdown);
        }
    }

    /// After a reload: every live agent finishes the jobs it holds and
    /// exits (agents read the configuration at their start, so only new
    /// ones see the new one), new agents are started under the new
    /// clauses, and no group stays blocked by an old command's failure.
    /// Returns how many agents were asked to stop, and from now on agents
    /// are started with `config_path`.
    pub fn retire_all(&mut self, config_path: Option<PathBuf>) -> usize {
        self.config_path = config_path;
        self.blocked_until.clear();
        let mut retired = 0;
        for a in self.map.values_mut().filter(|a| !a.stopping) {
            a.stopping = true;
            a.send(SchedulerToAgent::Shutdown);
            retired += 1;
        }
        retired
    }

    /// Kills whatever agent is still there.
    pub fn kill_all(&mut self) {
        for a in self.map.values() {
            self.launcher.kill(a.pid);
        }
    }

    /// The pids of `group`'s agents, ascending.
    pub fn pids_of_group(&self, group: GroupId) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .map
            .values()
            .filter(|a| a.group == group)
            .map(|a| a.pid)
            .collect();
        v.sort_unstable();
        v
    }
}
