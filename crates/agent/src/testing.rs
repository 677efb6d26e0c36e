//! Helpers for testing an agent without a scheduler: a fake scheduler end
//! that speaks the protocol and checks the agent keeps its rules, a way to
//! start an agent binary with a socket on fd 3, and a job builder.
//!
//! Enabled by the `testing` feature (agents turn it on in their
//! `[dev-dependencies]`). The fake scheduler **panics** when the agent
//! breaks a rule of the protocol — a second outcome for a recipient, an
//! outcome for a recipient the job does not have, `JobDone` with
//! recipients unreported — and when the test itself sends a job the agent
//! gave no credit for, because in a test that is the failure to report.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use skein_proto::{
    AGENT_SOCKET_FD, AgentToScheduler, Framed, Hello, Job, JobId, JobRecipient, Notify, Outcome,
    ProtoError, Role, SchedulerToAgent, ThreadKey, handshake_as_listener,
};
use tokio::net::UnixStream;

/// The scheduler's side of one agent connection, for tests.
#[derive(Debug)]
pub struct FakeScheduler {
    framed: Framed<UnixStream>,
    agent: Hello,
    credit: u64,
    /// Jobs sent and not yet `JobDone`, with their recipients still
    /// unreported.
    open: BTreeMap<JobId, BTreeSet<u32>>,
    /// Every outcome received, in order.
    pub outcomes: Vec<Outcome>,
    /// Jobs finished with `JobDone`, in order.
    pub done: Vec<JobId>,
    /// How many `Idle` messages came.
    pub idles: usize,
    /// Jobs ended with `Damaged`, with the agent's reason, in order.
    pub damaged: Vec<(JobId, String)>,
}

impl FakeScheduler {
    /// Handshakes as the scheduler on `stream`, accepting an agent for any
    /// channel.
    pub async fn accept(stream: UnixStream) -> Result<FakeScheduler, ProtoError> {
        let mut framed = Framed::new(stream);
        let ours = Hello::new(Role::Scheduler, "fake-scheduler");
        let agent = handshake_as_listener(&mut framed, &ours, |peer| match &peer.role {
            Role::Agent { .. } => Ok(()),
            other => Err(format!("expected an agent, got {other}")),
        })
        .await?;
        Ok(FakeScheduler {
            framed,
            agent,
            credit: 0,
            open: BTreeMap::new(),
            outcomes: Vec::new(),
            done: Vec::new(),
            idles: 0,
            damaged: Vec::new(),
        })
    }

    /// The agent's `Hello`.
    pub fn agent(&self) -> &Hello {
        &self.agent
    }

    /// The channel the agent announced.
    pub fn channel(&self) -> &str {
        match &self.agent.role {
            Role::Agent { channel } => channel,
            _ => "",
        }
    }

    /// Jobs the agent has asked for and not been sent.
    pub fn credit(&self) -> u64 {
        self.credit
    }

    /// Jobs sent and not finished.
    pub fn open_jobs(&self) -> usize {
        self.open.len()
    }

    /// Sends a message; a `Job` uses up one credit (and panics without
    /// one: a real scheduler never sends a job unasked).
    pub async fn send(&mut self, message: &SchedulerToAgent) -> Result<(), ProtoError> {
        if let SchedulerToAgent::Job(job) = message {
            assert!(
                self.credit > 0,
                "test bug: sending {} without credit from the agent",
                job.id
            );
            self.credit -= 1;
            let indexes = job.recipients.iter().map(|r| r.index).collect();
            assert!(
                self.open.insert(job.id, indexes).is_none(),
                "test bug: {} sent twice",
                job.id
            );
        }
        self.framed.send(message).await
    }

    /// Sends a job, first reading messages until the agent has given
    /// credit for it.
    pub async fn send_job(&mut self, job: Job) -> Result<(), ProtoError> {
        while self.credit == 0 {
            if self.recv().await?.is_none() {
                return Err(ProtoError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the agent closed the connection while we waited for credit",
                )));
            }
        }
        self.send(&SchedulerToAgent::Job(job)).await
    }

    /// The next message from the agent (`None` at a clean end of stream),
    /// checked against the protocol's rules and recorded.
    pub async fn recv(&mut self) -> Result<Option<AgentToScheduler>, ProtoError> {
        let Some(message) = self.framed.recv::<AgentToScheduler>().await? else {
            return Ok(None);
        };
        match &message {
            AgentToScheduler::Want { jobs } => self.credit += u64::from(*jobs),
            AgentToScheduler::Outcome(outcome) => {
                let Some(pending) = self.open.get_mut(&outcome.job) else {
                    panic!("agent reported on {}, which it does not hold", outcome.job);
                };
                assert!(
                    pending.remove(&outcome.recipient),
                    "agent reported recipient {} of {} twice or without having it",
                    outcome.recipient,
                    outcome.job
                );
                self.outcomes.push(outcome.clone());
            }
            AgentToScheduler::JobDone { job } => {
                let Some(pending) = self.open.remove(job) else {
                    panic!("agent sent JobDone for {job}, which it does not hold");
                };
                assert!(
                    pending.is_empty(),
                    "agent sent JobDone for {job} with recipients {pending:?} unreported"
                );
                self.done.push(*job);
            }
            // Not checked against `open`: a job may be on its way to an
            // agent that has just said it holds nothing.
            AgentToScheduler::Idle { .. } => self.idles += 1,
            AgentToScheduler::Damaged { job, reason } => {
                assert!(
                    self.open.remove(job).is_some(),
                    "agent said {job} is damaged, but it does not hold it"
                );
                self.damaged.push((*job, reason.clone()));
                self.done.push(*job);
            }
        }
        Ok(Some(message))
    }

    /// Reads until `job` is done and returns its outcomes in the order
    /// they came.
    pub async fn wait_done(&mut self, job: JobId) -> Result<Vec<Outcome>, ProtoError> {
        while !self.done.contains(&job) {
            if self.recv().await?.is_none() {
                return Err(ProtoError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the agent closed the connection before finishing {job}"),
                )));
            }
        }
        Ok(self
            .outcomes
            .iter()
            .filter(|o| o.job == job)
            .cloned()
            .collect())
    }

    /// Sends `job` (waiting for credit) and returns its outcomes once the
    /// agent says `JobDone`.
    pub async fn deliver(&mut self, job: Job) -> Result<Vec<Outcome>, ProtoError> {
        let id = job.id;
        self.send_job(job).await?;
        self.wait_done(id).await
    }

    /// Reads until the agent closes the connection; returns how many
    /// messages came meanwhile.
    pub async fn wait_closed(&mut self) -> Result<usize, ProtoError> {
        let mut count = 0;
        while self.recv().await?.is_some() {
            count += 1;
        }
        Ok(count)
    }

    /// The raw connection, for tests that must misbehave on purpose.
    pub fn framed(&mut self) -> &mut Framed<UnixStream> {
        &mut self.framed
    }
}

/// Starts `command` the way the scheduler starts an agent: one end of a
/// new socketpair on its file descriptor 3, the other end returned (as a
/// std socket, so that this works outside a runtime; convert it with
/// `tokio::net::UnixStream::from_std` after `set_nonblocking(true)`).
/// Stdin, stdout, stderr and the environment are whatever `command` says.
pub fn spawn_with_fd3(command: &mut Command) -> io::Result<(Child, StdUnixStream)> {
    let (ours, theirs) = StdUnixStream::pair()?;
    let child_fd = theirs.as_raw_fd();
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls dup2 and fcntl, which are async-signal-safe, on descriptors
    // that exist in the child (inherited from us).
    unsafe {
        command.pre_exec(move || {
            if child_fd == AGENT_SOCKET_FD {
                // dup2 onto itself would keep close-on-exec set.
                let flags = libc::fcntl(child_fd, libc::F_GETFD);
                if flags == -1
                    || libc::fcntl(child_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) == -1
                {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(child_fd, AGENT_SOCKET_FD) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    // Our copy of the child's end must go, or we would never see its end
    // of stream.
    drop(theirs);
    Ok((child, ours))
}

/// A message file as the spool writes it, at `path`, holding `message`:
/// returns `(offset, size)` for [`job`]. Agents verify the file before
/// they send it ([`crate::open_message`]), so a test job needs a real one.
pub fn message_file(path: &std::path::Path, message: &[u8]) -> (u64, u64) {
    let envelope = skein_spool::Envelope {
        sender: "sender@example.org".into(),
        recipients: vec![skein_spool::Recipient::new("rcpt@example.org")],
        ..Default::default()
    };
    let info = skein_spool::write_file(path, &envelope, message).expect("write a message file");
    (info.offset, info.size)
}

/// A job with sensible defaults: thread `channel/host`, sender
/// `sender@example.org`, no DSN parameters, attempt 0, and one recipient
/// per address (indexes 0, 1, …) with the default `NOTIFY`.
pub fn job(
    id: u64,
    thread: ThreadKey,
    message_path: &str,
    message_offset: u64,
    size: u64,
    recipients: &[&str],
) -> Job {
    Job {
        id: JobId(id),
        queue_id: format!("TESTQ{id}"),
        thread,
        nexthop: None,
        sender: "sender@example.org".to_owned(),
        envid: None,
        ret: None,
        body: skein_proto::BodyType::SevenBit,
        smtputf8: false,
        message_path: message_path.to_owned(),
        message_offset,
        size,
        attempt: 0,
        recipients: recipients
            .iter()
            .zip(0u32..)
            .map(|(address, index)| JobRecipient {
                index,
                address: (*address).to_owned(),
                orcpt: None,
                notify: Notify::default(),
            })
            .collect(),
    }
}
