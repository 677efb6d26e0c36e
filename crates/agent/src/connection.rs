//! The low level: one agent's connection to the scheduler, handshake done,
//! as a stream of [`Event`]s in and typed reports out.

use std::sync::Arc;

use skein_proto::{
    AgentToScheduler, FrameReader, FrameWriter, Framed, Hello, Job, JobId, Outcome, ProtoError,
    Role, SchedulerToAgent, handshake_as_connector,
};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Mutex;

use crate::delivery::check_outcome;
use crate::error::{AgentError, Result};
use crate::fd3;

/// The environment variable in which the scheduler names the channel an
/// agent was started for.
pub const CHANNEL_ENV: &str = "SKEIN_CHANNEL";

/// What the scheduler said, as an agent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every event is a Job: boxing would add an allocation per job and save nothing"
)]
pub enum Event {
    /// A job to deliver (only ever after a `Want` made room for it).
    Job(Job),
    /// An administrator held or deleted the message of this job: drop it if
    /// its delivery has not started, else finish or abort it as is safe;
    /// either way report every unreported recipient (as deferred) and end
    /// it with `JobDone`. A cancel for a job no longer held is ignored.
    Cancel(JobId),
    /// No more jobs will come: finish or abandon (as deferred) what is
    /// held, report it, and exit 0.
    Shutdown,
    /// The scheduler closed the connection: nobody is left to report to,
    /// so stop. Whatever was unreported has been deferred by the scheduler.
    /// Every later call returns `Closed` again.
    Closed,
}

/// An agent's connection to the scheduler, after a successful handshake.
///
/// `next` reads; the other methods write. To read in one task and write
/// in others, [`split`](Self::split) it.
#[derive(Debug)]
pub struct AgentConnection {
    receiver: JobReceiver,
    reporter: Reporter,
    channel: String,
    scheduler: Hello,
}

impl AgentConnection {
    /// Connects the way the scheduler starts agents: adopts file
    /// descriptor 3 ([`AGENT_SOCKET_FD`](skein_proto::AGENT_SOCKET_FD)) and
    /// handshakes on it as an agent for the channel named by
    /// `SKEIN_CHANNEL`, or `default_channel` when that is unset or empty.
    /// `program` goes into the `Hello` for the scheduler's logs
    /// (`"skein-local 0.1.0"`).
    ///
    /// Must be called inside a tokio runtime, at most once per process.
    /// Fails with [`AgentError::NotStartedByScheduler`] when fd 3 is not a
    /// socket (someone ran the agent by hand).
    pub async fn from_fd3(default_channel: &str, program: &str) -> Result<AgentConnection> {
        let channel = std::env::var(CHANNEL_ENV)
            .ok()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| default_channel.to_owned());
        let stream = fd3::take()?;
        stream
            .set_nonblocking(true)
            .map_err(|source| AgentError::Local {
                what: "making the scheduler socket non-blocking",
                source,
            })?;
        let stream = UnixStream::from_std(stream).map_err(|source| AgentError::Local {
            what: "registering the scheduler socket with the runtime",
            source,
        })?;
        AgentConnection::from_stream(stream, &channel, program).await
    }

    /// Handshakes on `stream` as an agent for `channel`: the scheduler
    /// speaks first, we answer, it accepts or refuses. For tests and for
    /// agents that get their socket some other way.
    pub async fn from_stream(
        stream: UnixStream,
        channel: &str,
        program: &str,
    ) -> Result<AgentConnection> {
        let mut framed = Framed::new(stream);
        let ours = Hello::new(
            Role::Agent {
                channel: channel.to_owned(),
            },
            program,
        );
        let scheduler = handshake_as_connector(&mut framed, &ours)
            .await
            .map_err(AgentError::Handshake)?;
        // The reader keeps whatever followed the handshake in its buffer:
        // the scheduler may already have sent something.
        let (reader, writer) = framed.into_split();
        Ok(AgentConnection {
            receiver: JobReceiver {
                reader,
                closed: false,
            },
            reporter: Reporter::new(writer),
            channel: channel.to_owned(),
            scheduler,
        })
    }

    /// The channel this agent announced.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The scheduler's `Hello` (its `program` names it and its version).
    pub fn scheduler(&self) -> &Hello {
        &self.scheduler
    }

    /// The next event; see [`JobReceiver::next`].
    pub async fn next(&mut self) -> Result<Event> {
        self.receiver.next().await
    }

    /// Asks for `jobs` more jobs; see [`Reporter::want`].
    pub async fn want(&self, jobs: u32) -> Result<()> {
        self.reporter.want(jobs).await
    }

    /// Reports one recipient's outcome; see [`Reporter::report`].
    pub async fn report(&self, outcome: Outcome) -> Result<()> {
        self.reporter.report(outcome).await
    }

    /// Says a job is finished; see [`Reporter::job_done`].
    pub async fn job_done(&self, job: JobId) -> Result<()> {
        self.reporter.job_done(job).await
    }

    /// Says the agent holds no job; see [`Reporter::idle`].
    pub async fn idle(&self, connected_to: Option<String>) -> Result<()> {
        self.reporter.idle(connected_to).await
    }

    /// Says a job's message is damaged; see [`Reporter::damaged`].
    pub async fn damaged(&self, job: JobId, reason: String) -> Result<()> {
        self.reporter.damaged(job, reason).await
    }

    /// A handle for writing, to hand to other tasks while this connection
    /// keeps reading.
    pub fn reporter(&self) -> Reporter {
        self.reporter.clone()
    }

    /// The reading and the writing half, for use from different tasks.
    pub fn split(self) -> (JobReceiver, Reporter) {
        (self.receiver, self.reporter)
    }
}

/// The reading half of an [`AgentConnection`].
#[derive(Debug)]
pub struct JobReceiver {
    reader: FrameReader<OwnedReadHalf>,
    closed: bool,
}

impl JobReceiver {
    /// The next event from the scheduler. End of stream is
    /// [`Event::Closed`], not an error; garbage or a stream cut inside a
    /// frame is [`AgentError::Protocol`].
    ///
    /// Cancel-safe: dropping the future (in a `select!`) loses nothing.
    pub async fn next(&mut self) -> Result<Event> {
        if self.closed {
            return Ok(Event::Closed);
        }
        let message = match self.reader.recv::<SchedulerToAgent>().await {
            Ok(message) => message,
            // A reset socket is the scheduler dying, which for an agent is
            // the same news as a clean close.
            Err(ProtoError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                None
            }
            Err(e) => return Err(AgentError::Protocol(e)),
        };
        Ok(match message {
            Some(SchedulerToAgent::Job(job)) => Event::Job(job),
            Some(SchedulerToAgent::Cancel { job }) => Event::Cancel(job),
            Some(SchedulerToAgent::Shutdown) => Event::Shutdown,
            None => {
                self.closed = true;
                Event::Closed
            }
        })
    }
}

/// The writing half of an [`AgentConnection`]. Cheap to clone; clones
/// share the socket and send whole frames one at a time, so tasks may
/// report concurrently.
///
/// Do not cancel a send halfway (drop its future in a `select!`): that
/// would leave part of a frame on the wire. The reporter notices and
/// refuses to send anything more ([`AgentError::Interrupted`]) rather than
/// let the scheduler read garbage.
#[derive(Debug, Clone)]
pub struct Reporter {
    inner: Arc<Mutex<WriterState>>,
}

#[derive(Debug)]
struct WriterState {
    writer: FrameWriter<OwnedWriteHalf>,
    /// Set while a frame is being written; still set afterwards only if
    /// that write never finished.
    in_flight: bool,
}

impl Reporter {
    fn new(writer: FrameWriter<OwnedWriteHalf>) -> Reporter {
        Reporter {
            inner: Arc::new(Mutex::new(WriterState {
                writer,
                in_flight: false,
            })),
        }
    }

    async fn send(&self, message: &AgentToScheduler) -> Result<()> {
        let mut state = self.inner.lock().await;
        if state.in_flight {
            return Err(AgentError::Interrupted);
        }
        state.in_flight = true;
        match state.writer.send(message).await {
            Ok(()) => {
                state.in_flight = false;
                Ok(())
            }
            // Encoding happens before the first byte is written: the
            // stream is still in step, the message was just not sendable.
            Err(e @ (ProtoError::Encode(_) | ProtoError::Oversized { .. })) => {
                state.in_flight = false;
                Err(AgentError::InvalidOutcome(e.to_string()))
            }
            Err(e) => Err(AgentError::Protocol(e)),
        }
    }

    /// Credit: "I can take `jobs` more jobs". Credits add up; the
    /// scheduler sends no job it was not asked for. Asking for several
    /// jobs ahead (overfeed) lets an agent pipeline one behind the other.
    pub async fn want(&self, jobs: u32) -> Result<()> {
        self.send(&AgentToScheduler::Want { jobs }).await
    }

    /// Reports one recipient. Exactly one outcome per recipient of a job,
    /// and `Delivered` only once the destination has taken responsibility.
    /// An outcome with an invalid enhanced status code is refused here
    /// ([`AgentError::InvalidOutcome`], nothing sent) because the scheduler
    /// would drop the whole connection over it.
    pub async fn report(&self, outcome: Outcome) -> Result<()> {
        check_outcome(&outcome).map_err(AgentError::InvalidOutcome)?;
        self.send(&AgentToScheduler::Outcome(outcome)).await
    }

    /// Every recipient of `job` has been reported; the scheduler forgets
    /// the job (and defers any recipient that was not reported).
    pub async fn job_done(&self, job: JobId) -> Result<()> {
        self.send(&AgentToScheduler::JobDone { job }).await
    }

    /// The agent holds no job. `connected_to` names a host it keeps a
    /// connection open to, so that the scheduler can prefer that thread.
    pub async fn idle(&self, connected_to: Option<String>) -> Result<()> {
        self.send(&AgentToScheduler::Idle { connected_to }).await
    }

    /// The job's message failed its checks ([`crate::open_message`]), so
    /// nothing of it was sent. This ends the job as `JobDone` would: the
    /// recipients not yet reported are left to the scheduler, which checks
    /// the file itself and sets the message aside if it agrees. Send no
    /// `JobDone` for the job after this.
    pub async fn damaged(&self, job: JobId, reason: String) -> Result<()> {
        self.send(&AgentToScheduler::Damaged { job, reason }).await
    }

    /// Closes the writing direction: the scheduler reads a clean end of
    /// stream. Later sends fail.
    pub async fn close(&self) -> Result<()> {
        let mut state = self.inner.lock().await;
        state.writer.shutdown().await.map_err(AgentError::Protocol)
    }
}
