//! The engine driven by hand, without child processes: a [`Launcher`]
//! that records every start and kill and hands back the channel the
//! engine writes the agent's frames to; the events an agent would send
//! are fed to [`Engine::handle`] directly. The spool is real (a
//! temporary directory), so outcomes land in real journals.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use skein_config::Clause;
use skein_proto::{EnhancedCode, Job, Outcome, SchedulerToAgent, Status, ThreadKey};
use skein_spool::{ControlFile, Record};
use tokio::sync::mpsc;

use super::*;
use crate::agents::{Launched, Launcher, Spawn};

#[derive(Default)]
struct Log {
    starts: Vec<(AgentId, Spawn)>,
    kills: Vec<u32>,
    /// Frames the engine sent each agent.
    inboxes: Vec<(AgentId, mpsc::UnboundedReceiver<SchedulerToAgent>)>,
    fail_starts: bool,
}

struct Recorder(Rc<RefCell<Log>>);

impl Launcher for Recorder {
    fn launch(&mut self, id: AgentId, spec: &Spawn) -> io::Result<Launched> {
        let mut log = self.0.borrow_mut();
        if log.fail_starts {
            return Err(io::ErrorKind::NotFound.into());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        log.starts.push((id, spec.clone()));
        log.inboxes.push((id, rx));
        Ok(Launched {
            pid: 1000 + id.0 as u32,
            tx,
        })
    }

    fn kill(&mut self, pid: u32) {
        self.0.borrow_mut().kills.push(pid);
    }
}

struct Bench {
    _dir: tempfile::TempDir,
    spool: Spool,
    engine: Engine,
    log: Rc<RefCell<Log>>,
    next: u64,
}

impl Bench {
    /// An engine whose one `smtp/*` clause has these limits.
    fn new(maxthr: u32, maxring: u32) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::embedded_default(dir.path());
        let mut clause = Clause::new("smtp/*", "skein-smtp");
        clause.maxthr = maxthr;
        clause.maxring = maxring;
        clause.overfeed = 1;
        config.scheduler.clause = vec![clause];
        config.scheduler.retries = vec![Duration::from_secs(60)];
        let spool = Spool::open(dir.path().join("spool")).unwrap();
        let log = Rc::new(RefCell::new(Log::default()));
        let agents = Agents::new(Box::new(Recorder(log.clone())), None);
        let engine = Engine::new(config, Spool::open(spool.root()).unwrap(), agents);
        Bench {
            _dir: dir,
            spool,
            engine,
            log,
            next: 1,
        }
    }

    /// Queues a message to one recipient per host, as the router would
    /// leave it, and tells the engine.
    fn queue(&mut self, hosts: &[&str]) -> String {
        let mut control = crate::message::fixture::control(self.next, hosts);
        self.next += 1;
        let id = control.id.clone();
        let mut envelope = control.envelope.clone();
        envelope.recipients = control
            .recipients
            .iter()
            .map(|r| skein_spool::Recipient::new(r.address.clone()))
            .collect();
        let info = skein_spool::write_file(
            &self.spool.root().join(&control.message),
            &envelope,
            b"Subject: x\r\n\r\nx\r\n",
        )
        .unwrap();
        (control.offset, control.size) = (info.offset, info.size);
        assert!(self.spool.create_control(&control).unwrap());
        assert!(self.engine.load(&id));
        id.to_string()
    }

    fn starts(&self) -> usize {
        self.log.borrow().starts.len()
    }

    /// The agent finishes its handshake and asks for `jobs`.
    fn up(&mut self, agent: AgentId, jobs: u32) {
        self.engine.handle(Event::AgentUp { agent });
        self.engine.handle(Event::AgentMsg {
            agent,
            msg: AgentToScheduler::Want { jobs },
        });
    }

    /// The jobs the engine has sent `agent` since the last look.
    fn jobs_of(&mut self, agent: AgentId) -> Vec<Job> {
        let mut log = self.log.borrow_mut();
        let (_, rx) = log.inboxes.iter_mut().find(|(id, _)| *id == agent).unwrap();
        let mut jobs = Vec::new();
        while let Ok(frame) = rx.try_recv() {
            if let SchedulerToAgent::Job(job) = frame {
                jobs.push(job);
            }
        }
        jobs
    }

    /// The agent reports every recipient of `job` with `status`, then
    /// says it is done.
    fn finish(&mut self, agent: AgentId, job: &Job, status: Status, enhanced: EnhancedCode) {
        for r in &job.recipients {
            self.engine.handle(Event::AgentMsg {
                agent,
                msg: AgentToScheduler::Outcome(Outcome {
                    job: job.id,
                    recipient: r.index,
                    status,
                    reply: None,
                    enhanced,
                    diagnostic: "test".into(),
                    remote_mta: None,
                    connect_micros: 0,
                    tls: None,
                }),
            });
        }
        self.engine.handle(Event::AgentMsg {
            agent,
            msg: AgentToScheduler::JobDone { job: job.id },
        });
    }
}

impl Bench {
    /// Flips one message byte of `id`'s file in `queue/`.
    fn damage(&self, id: &str) {
        let path = self.spool.root().join(format!("queue/{id}"));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
    }

    fn damaged(&mut self, agent: AgentId, job: &Job) {
        self.engine.handle(Event::AgentMsg {
            agent,
            msg: AgentToScheduler::Damaged {
                job: job.id,
                reason: "crc32 mismatch (the agent's words)".into(),
            },
        });
    }

    /// The names in `area/`, sorted.
    fn files_in(&self, area: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.spool.root().join(area))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

fn thread(host: &str) -> ThreadKey {
    ThreadKey::new("smtp", host)
}

#[test]
fn maxring_bounds_the_agents_started_and_a_free_agent_takes_the_next_thread() {
    let mut b = Bench::new(1, 3);
    for h in ["a", "b", "c", "d", "e"] {
        b.queue(&[h]);
    }
    b.engine.dispatch();
    assert_eq!(b.starts(), 3, "maxring = 3");
    let first: Vec<AgentId> = b.log.borrow().starts.iter().map(|(id, _)| *id).collect();
    for (_, spec) in &b.log.borrow().starts {
        assert_eq!(
            (spec.command.as_str(), spec.channel.as_str()),
            ("skein-smtp", "smtp")
        );
    }
    for &a in &first {
        b.up(a, 1);
    }
    let mut hosts = Vec::new();
    let mut jobs = Vec::new();
    for &a in &first {
        let mut got = b.jobs_of(a);
        assert_eq!(got.len(), 1, "overfeed 1, one credit");
        hosts.push(got[0].thread.host.clone());
        jobs.push(got.remove(0));
    }
    assert_eq!(hosts, ["a", "b", "c"], "threads in order, one agent each");
    // The second agent's delivery frees it: it is given thread d at once
    // (it asked for another job), and no fourth agent is started.
    b.finish(first[1], &jobs[1], Status::Delivered, EnhancedCode::SUCCESS);
    b.engine.handle(Event::AgentMsg {
        agent: first[1],
        msg: AgentToScheduler::Want { jobs: 1 },
    });
    let next = b.jobs_of(first[1]);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].thread, thread("d"));
    assert_eq!(b.starts(), 3);
    assert_eq!(
        b.engine.queue.thread(&thread("e")).unwrap().agents.len(),
        0,
        "e waits"
    );
    let held = b.engine.agents.get(first[0]).unwrap().jobs.len();
    assert_eq!(held, 1, "overfeed 1: one job held");
}

#[test]
fn one_agent_per_thread_until_maxthr_allows_two() {
    for (maxthr, want) in [(1, 1), (2, 2), (5, 3)] {
        let mut b = Bench::new(maxthr, 20);
        for _ in 0..3 {
            b.queue(&["a"]);
        }
        b.engine.dispatch();
        assert_eq!(b.starts(), want, "maxthr {maxthr}, three messages");
        let t = b.engine.queue.thread(&thread("a")).unwrap();
        assert_eq!(t.agents.len(), want);
    }
}

#[test]
fn a_delivered_message_leaves_and_its_agent_moves_to_the_next_thread() {
    let mut b = Bench::new(1, 1);
    let first = b.queue(&["a"]);
    b.queue(&["b"]);
    b.engine.dispatch();
    assert_eq!(b.starts(), 1);
    let agent = b.log.borrow().starts[0].0;
    b.up(agent, 1);
    let jobs = b.jobs_of(agent);
    assert_eq!(jobs[0].queue_id, first);
    assert_eq!(jobs[0].thread, thread("a"));
    b.finish(agent, &jobs[0], Status::Delivered, EnhancedCode::SUCCESS);
    assert!(!b.engine.queue.contains(&first), "delivered: removed");
    assert!(!b.spool.root().join(format!("transport/{first}")).exists());
    b.engine.handle(Event::AgentMsg {
        agent,
        msg: AgentToScheduler::Want { jobs: 1 },
    });
    let jobs = b.jobs_of(agent);
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0].thread,
        thread("b"),
        "the same agent, the next thread"
    );
    assert_eq!(b.starts(), 1, "no second agent");
    assert!(
        b.engine.queue.thread(&thread("a")).is_none(),
        "empty thread dropped"
    );
}

#[test]
fn an_agent_that_dies_defers_its_recipients_and_the_thread_backs_off() {
    let mut b = Bench::new(1, 20);
    let id = b.queue(&["a", "a"]);
    b.engine.dispatch();
    let agent = b.log.borrow().starts[0].0;
    b.up(agent, 1);
    let jobs = b.jobs_of(agent);
    assert_eq!(jobs[0].recipients.len(), 2);
    b.engine.handle(Event::AgentGone {
        agent,
        reason: "crashed".into(),
    });
    let m = b.engine.queue.get(&id).unwrap();
    assert!(m.rcpts.iter().all(|r| r.state == RState::Deferred));
    let t = b.engine.queue.thread(&thread("a")).unwrap();
    assert!(t.is_backing_off(now_micros()), "no restart in a tight loop");
    assert_eq!(b.starts(), 1, "backing off: no new agent yet");
    // Both deferrals are in the journal, synced when the message settled.
    let (control, _) = ControlFile::read(&b.spool.root().join(format!("transport/{id}"))).unwrap();
    let deferred = control
        .records
        .iter()
        .filter(|r| matches!(r, Record::Outcome { kind: OutcomeKind::Deferred, diagnostic, .. } if diagnostic.contains("crashed")))
        .count();
    assert_eq!(deferred, 2);
    // A flush makes the thread due again: a new agent comes.
    b.engine.handle(Event::Control {
        req: ControlRequest::Flush(skein_proto::FlushTarget::All),
        reply: tokio::sync::oneshot::channel().0,
    });
    assert_eq!(b.starts(), 2);
}

#[test]
fn an_agent_that_breaks_the_protocol_is_killed() {
    let mut b = Bench::new(1, 20);
    b.queue(&["a"]);
    b.engine.dispatch();
    let agent = b.log.borrow().starts[0].0;
    b.up(agent, 1);
    let job = b.jobs_of(agent).remove(0);
    b.engine.handle(Event::AgentMsg {
        agent,
        msg: AgentToScheduler::JobDone {
            job: JobId(job.id.0 + 100),
        },
    });
    assert_eq!(b.log.borrow().kills, vec![1000 + agent.0 as u32]);
    assert!(b.engine.agents.get(agent).unwrap().stopping);
}

#[test]
fn a_group_whose_agent_cannot_start_waits_and_its_mail_stays() {
    let mut b = Bench::new(1, 20);
    b.log.borrow_mut().fail_starts = true;
    let id = b.queue(&["a"]);
    b.queue(&["b"]);
    b.engine.dispatch();
    assert_eq!(b.starts(), 0);
    b.log.borrow_mut().fail_starts = false;
    b.engine.dispatch();
    assert_eq!(b.starts(), 0, "blocked for 30 s after the failure");
    let m = b.engine.queue.get(&id).unwrap();
    assert_eq!(
        m.rcpts[0].state,
        RState::Pending,
        "nothing attempted, nothing lost"
    );
}

#[test]
fn a_held_message_gets_no_job_until_released() {
    let mut b = Bench::new(1, 20);
    let id = b.queue(&["a"]);
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    b.engine.handle(Event::Control {
        req: ControlRequest::Hold {
            queue_id: id.clone(),
        },
        reply: tx,
    });
    assert!(matches!(rx.try_recv(), Ok(ControlResponse::Ok { .. })));
    b.engine.dispatch();
    assert_eq!(b.starts(), 0, "nothing ready: no agent");
    let (tx, _rx) = tokio::sync::oneshot::channel();
    b.engine.handle(Event::Control {
        req: ControlRequest::Release { queue_id: id },
        reply: tx,
    });
    assert_eq!(b.starts(), 1);
}

#[test]
fn a_damaged_message_waits_for_its_other_job_then_is_set_aside_and_bounced() {
    let mut b = Bench::new(1, 2);
    let id = b.queue(&["a", "b"]);
    b.engine.dispatch();
    assert_eq!(b.starts(), 2, "one agent per thread");
    let agents: Vec<AgentId> = b.log.borrow().starts.iter().map(|(id, _)| *id).collect();
    for &a in &agents {
        b.up(a, 1);
    }
    let (ja, jb) = (
        b.jobs_of(agents[0]).remove(0),
        b.jobs_of(agents[1]).remove(0),
    );
    assert_eq!(
        (ja.thread.host.as_str(), jb.thread.host.as_str()),
        ("a", "b")
    );
    b.damage(&id);
    b.damaged(agents[0], &ja);
    // The recipient for a failed at once; b is still in flight, so the
    // message stays until its agent reports.
    let m = b.engine.queue.get(&id).expect("still queued");
    assert!(
        m.damaged.as_deref().unwrap().contains("crc32"),
        "{:?}",
        m.damaged
    );
    assert!(matches!(m.rcpts[0].state, RState::Failed { .. }));
    assert_eq!(m.rcpts[0].status, Some(EnhancedCode::DAMAGED_IN_SPOOL));
    assert_eq!(m.rcpts[1].state, RState::InFlight);
    assert!(b.files_in("corrupt").is_empty());
    // b had been sent before the damage: its delivery stands.
    b.finish(agents[1], &jb, Status::Delivered, EnhancedCode::SUCCESS);
    assert!(!b.engine.queue.contains(&id), "settled and gone");
    assert_eq!(
        b.files_in("corrupt"),
        [
            format!("queue.{id}"),
            format!("queue.{id}.why"),
            format!("transport.{id}"),
            format!("transport.{id}.why"),
        ]
    );
    assert!(b.files_in("queue").is_empty() && b.files_in("transport").is_empty());
    let why =
        std::fs::read_to_string(b.spool.root().join(format!("corrupt/queue.{id}.why"))).unwrap();
    assert!(why.contains("crc32"), "{why}");
    // One failure report, for the recipient that failed, without the
    // damaged bytes.
    let dsns = b.files_in("incoming");
    assert_eq!(dsns.len(), 1, "{dsns:?}");
    let (info, report) =
        skein_spool::read_message(&b.spool.root().join("incoming").join(&dsns[0])).unwrap();
    assert_eq!(info.envelope.recipients[0].address, "s@example.org");
    let report = String::from_utf8_lossy(&report);
    assert!(report.contains("Final-Recipient: rfc822;r0@a"), "{report}");
    assert!(!report.contains("r1@b"), "{report}");
    assert!(report.contains("Status: 5.3.0"), "{report}");
    assert!(report.contains("The message is not attached"), "{report}");
    assert!(!report.contains("Subject: x"), "{report}");
}

#[test]
fn damage_the_scheduler_does_not_find_only_defers() {
    let mut b = Bench::new(1, 20);
    let id = b.queue(&["a"]);
    b.engine.dispatch();
    let agent = b.log.borrow().starts[0].0;
    b.up(agent, 1);
    let job = b.jobs_of(agent).remove(0);
    b.damaged(agent, &job);
    let m = b.engine.queue.get(&id).expect("still queued");
    assert_eq!(m.damaged, None);
    assert_eq!(m.rcpts[0].state, RState::Deferred);
    assert!(
        m.rcpts[0]
            .diagnostic
            .as_deref()
            .unwrap()
            .contains("the scheduler's check did not"),
        "{:?}",
        m.rcpts[0].diagnostic
    );
    assert!(b.files_in("corrupt").is_empty());
    assert!(b.files_in("incoming").is_empty(), "no report");
}

#[test]
fn a_missing_message_file_is_damage_too() {
    let mut b = Bench::new(1, 20);
    let id = b.queue(&["a"]);
    b.engine.dispatch();
    let agent = b.log.borrow().starts[0].0;
    b.up(agent, 1);
    let job = b.jobs_of(agent).remove(0);
    std::fs::remove_file(b.spool.root().join(format!("queue/{id}"))).unwrap();
    b.damaged(agent, &job);
    assert!(!b.engine.queue.contains(&id));
    assert_eq!(
        b.files_in("corrupt"),
        [format!("transport.{id}"), format!("transport.{id}.why")]
    );
    assert_eq!(b.files_in("incoming").len(), 1, "the sender is told");
}

#[test]
fn a_reload_regroups_threads_retires_agents_and_new_ones_read_the_new_file() {
    let mut b = Bench::new(1, 20);
    let id = b.queue(&["a"]);
    b.queue(&["b.example.org"]);
    b.engine.dispatch();
    assert_eq!(b.starts(), 2);
    let old: Vec<AgentId> = b.log.borrow().starts.iter().map(|(id, _)| *id).collect();
    for &a in &old {
        b.up(a, 1);
    }
    let job = b.jobs_of(old[0]).remove(0);
    // The new file: example.org gets a clause of its own, first.
    let mut config = b.engine.config.clone();
    config
        .scheduler
        .clause
        .insert(0, Clause::new("smtp/*.example.org", "skein-smtp-special"));
    b.engine
        .reconfigure(config, Some(std::path::PathBuf::from("/run/agents.toml")));
    assert_eq!(
        b.engine
            .queue
            .thread(&thread("b.example.org"))
            .unwrap()
            .group,
        Some(crate::group::GroupId(0))
    );
    assert_eq!(
        b.engine.queue.thread(&thread("a")).unwrap().group,
        Some(crate::group::GroupId(1))
    );
    for &a in &old {
        assert!(b.engine.agents.get(a).unwrap().stopping, "{a} retired");
    }
    // The retired agent still holds its job: its report counts.
    b.finish(old[0], &job, Status::Delivered, EnhancedCode::SUCCESS);
    assert!(!b.engine.queue.contains(&id), "delivered across the reload");
    // New mail gets new agents, from the new clauses, reading the new file.
    b.queue(&["c.example.org"]);
    b.queue(&["d"]);
    b.engine.dispatch();
    let log = b.log.borrow();
    assert_eq!(log.starts.len(), 4, "{:?}", log.starts);
    let new: Vec<&Spawn> = log.starts[2..].iter().map(|(_, s)| s).collect();
    assert!(
        new.iter().any(|s| s.command == "skein-smtp-special"),
        "{:?}",
        log.starts
    );
    assert!(
        new.iter()
            .all(|s| s.config_path.as_deref() == Some(std::path::Path::new("/run/agents.toml")))
    );
    assert!(log.starts[..2].iter().all(|(_, s)| s.config_path.is_none()));
}
