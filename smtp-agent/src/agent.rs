//! The agent's side of the conversation with the scheduler: the jobs it
//! holds, the transactions still to start, credit, and reporting each
//! recipient exactly once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use skein_agent::{AgentError, Delivery, Event, JobReceiver, Reporter};
use skein_config::Config;
use skein_proto::{EnhancedCode, Job, JobId, Status};
use tokio::signal::unix::Signal;
use tracing::{debug, info, warn};

use crate::dest::Destination;

/// A job held by the agent until every recipient is reported.
#[derive(Debug)]
pub struct JobEntry {
    /// The job as the scheduler sent it.
    pub job: Job,
    /// Where it goes.
    pub dest: Destination,
    /// Per recipient (by position in `job.recipients`): reported yet?
    reported: Vec<bool>,
    unreported: usize,
    /// The message failed its checks: the job ends with `Damaged`
    /// (carrying this reason) instead of `JobDone` once the recipients
    /// already in flight are reported.
    damaged: Option<String>,
    /// The set-up time of the connection its first transaction went over
    /// (0 when that connection was already open): `connect_micros` of
    /// each of its outcomes.
    connect: Duration,
    /// That connection's TLS session, told with its first outcomes.
    tls: Option<bool>,
}

/// Recipients of one job to go in one transaction, not started yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The job.
    pub job: JobId,
    /// Positions in the job's `recipients`.
    pub rcpts: Vec<usize>,
}

/// Everything the agent holds, and its line to the scheduler.
pub struct Agent {
    /// The configuration.
    pub config: Arc<Config>,
    events: JobReceiver,
    reporter: Reporter,
    sigterm: Option<Signal>,
    /// Jobs held, by id.
    pub jobs: HashMap<JobId, JobEntry>,
    /// Transactions to start, in order.
    pub plans: VecDeque<Plan>,
    /// No more jobs will come (Shutdown, SIGTERM, or the scheduler gone).
    pub stopping: bool,
    /// The scheduler closed the connection: nobody to report to.
    pub closed: bool,
    idle_sent: bool,
    /// The set-up time of the connection just opened and whether it
    /// negotiated TLS, for the first job whose transaction goes over it
    /// ([`Agent::take_plan_for`]).
    pub fresh_connection: Option<(Duration, Option<bool>)>,
}

impl Agent {
    /// An agent on an established connection.
    pub fn new(
        config: Arc<Config>,
        events: JobReceiver,
        reporter: Reporter,
        sigterm: Option<Signal>,
    ) -> Agent {
        Agent {
            config,
            events,
            reporter,
            sigterm,
            jobs: HashMap::new(),
            plans: VecDeque::new(),
            stopping: false,
            closed: false,
            idle_sent: false,
            fresh_connection: None,
        }
    }

    /// Asks for `n` more jobs.
    pub async fn want(&self, n: u32) -> Result<(), AgentError> {
        self.reporter.want(n).await
    }

    /// The next event from the scheduler; SIGTERM counts as `Shutdown`.
    /// Cancel-safe.
    pub async fn next_event(&mut self) -> Result<Event, AgentError> {
        match &mut self.sigterm {
            Some(signal) => tokio::select! {
                event = self.events.next() => event,
                _ = signal.recv() => {
                    self.sigterm = None;
                    Ok(Event::Shutdown)
                }
            },
            None => self.events.next().await,
        }
    }

    /// Acts on one event.
    pub async fn handle(&mut self, event: Event) -> Result<(), AgentError> {
        match event {
            Event::Job(job) => self.add_job(job).await,
            Event::Cancel(id) => {
                // Recipients already in a transaction finish there (that is
                // what is safe); those not started are given back.
                self.give_back(
                    |plan| plan.job == id,
                    "delivery cancelled by the administrator",
                )
                .await
            }
            Event::Shutdown => {
                info!("shutdown requested: finishing transactions in progress");
                self.stopping = true;
                self.give_back(|_| true, "agent shutting down").await
            }
            Event::Closed => {
                info!("the scheduler closed the connection");
                self.stopping = true;
                self.closed = true;
                self.plans.clear();
                Ok(())
            }
        }
    }

    async fn add_job(&mut self, job: Job) -> Result<(), AgentError> {
        self.idle_sent = false;
        let id = job.id;
        debug!(job = %id, queue_id = %job.queue_id, thread = %job.thread, recipients = job.recipients.len(), "job");
        let count = job.recipients.len();
        let dest = Destination::for_job(&self.config, &job);
        let entry = JobEntry {
            dest: match &dest {
                Ok(d) => d.clone(),
                // Never used: every recipient is reported below.
                Err(_) => Destination {
                    target: crate::dest::Target::Domain(String::new()),
                    tls: self.config.smtp.tls,
                    nexthop_dane: false,
                },
            },
            job,
            reported: vec![false; count],
            unreported: count,
            damaged: None,
            connect: Duration::ZERO,
            tls: None,
        };
        self.jobs.insert(id, entry);
        if count == 0 {
            self.jobs.remove(&id);
            self.reporter.job_done(id).await?;
            return self.replenish().await;
        }
        if let Err(e) = dest {
            warn!(job = %id, error = %e, "unusable job");
            let delivery = e.delivery();
            for pos in 0..count {
                self.report(id, pos, delivery.clone()).await?;
            }
            return Ok(());
        }
        let per = self.config.smtp.max_recipients_per_transaction.max(1) as usize;
        let positions: Vec<usize> = (0..count).collect();
        for chunk in positions.chunks(per) {
            self.plans.push_back(Plan {
                job: id,
                rcpts: chunk.to_vec(),
            });
        }
        Ok(())
    }

    /// Reports every recipient of the plans `which` selects as deferred
    /// (4.3.2) and drops those plans.
    async fn give_back(
        &mut self,
        which: impl Fn(&Plan) -> bool,
        why: &str,
    ) -> Result<(), AgentError> {
        let (gone, kept): (Vec<Plan>, Vec<Plan>) = self.plans.drain(..).partition(&which);
        self.plans = kept.into();
        for plan in gone {
            let delivery = Delivery::deferred(EnhancedCode::NOT_ACCEPTING, why, None);
            for pos in plan.rcpts {
                self.report(plan.job, pos, delivery.clone()).await?;
            }
        }
        Ok(())
    }

    /// Reports every recipient of the plans for `dest` with `delivery`
    /// (the connection to it failed).
    pub async fn fail_plans_for(
        &mut self,
        dest: &Destination,
        delivery: &Delivery,
    ) -> Result<(), AgentError> {
        let (gone, kept): (Vec<Plan>, Vec<Plan>) = self
            .plans
            .drain(..)
            .partition(|p| self.jobs.get(&p.job).is_some_and(|e| &e.dest == dest));
        self.plans = kept.into();
        let mut delivery = delivery.clone();
        for plan in gone {
            for pos in plan.rcpts {
                self.report(plan.job, pos, delivery.clone()).await?;
            }
            // A failed TLS session is told once, with the first job.
            delivery.tls = None;
        }
        Ok(())
    }

    /// The job's message failed its checks before `rcpts` were sent: they
    /// and every plan of the job not started yet are left to the
    /// scheduler (docs/agent-protocol.md, rule 6). Recipients of the job
    /// already in flight are still reported as they come; the job then
    /// ends with `Damaged` rather than `JobDone`.
    pub async fn damaged(
        &mut self,
        job: JobId,
        rcpts: Vec<usize>,
        reason: String,
    ) -> Result<(), AgentError> {
        let (dropped, kept): (Vec<Plan>, Vec<Plan>) =
            self.plans.drain(..).partition(|p| p.job == job);
        self.plans = kept.into();
        let Some(entry) = self.jobs.get_mut(&job) else {
            warn!(job = %job, "damage for a job no longer held (bug)");
            return Ok(());
        };
        warn!(queue_id = %entry.job.queue_id, reason = %reason, "the message file is damaged: nothing of it sent");
        for pos in rcpts
            .into_iter()
            .chain(dropped.into_iter().flat_map(|p| p.rcpts))
        {
            if let Some(done @ false) = entry.reported.get_mut(pos) {
                *done = true;
                entry.unreported -= 1;
            }
        }
        entry.damaged = Some(reason);
        if entry.unreported == 0 {
            self.finish(job).await?;
        }
        Ok(())
    }

    /// Ends a job whose every recipient is accounted for: `JobDone`, or
    /// `Damaged` for a damaged message.
    async fn finish(&mut self, job: JobId) -> Result<(), AgentError> {
        let Some(entry) = self.jobs.remove(&job) else {
            return Ok(());
        };
        if self.closed {
            return Ok(());
        }
        match entry.damaged {
            Some(reason) => self.reporter.damaged(job, reason).await?,
            None => self.reporter.job_done(job).await?,
        }
        self.replenish().await
    }

    /// The destination of the first plan.
    pub fn next_destination(&self) -> Option<Destination> {
        self.plans
            .iter()
            .find_map(|p| self.jobs.get(&p.job).map(|e| e.dest.clone()))
    }

    /// Takes the first plan for `dest` out of the queue.
    pub fn take_plan_for(&mut self, dest: &Destination) -> Option<Plan> {
        let i = self
            .plans
            .iter()
            .position(|p| self.jobs.get(&p.job).is_some_and(|e| &e.dest == dest))?;
        let plan = self.plans.remove(i)?;
        // The first transaction on a new connection carries its set-up.
        if let Some((setup, tls)) = self.fresh_connection.take()
            && let Some(entry) = self.jobs.get_mut(&plan.job)
        {
            entry.connect = setup;
            entry.tls = tls;
        }
        Some(plan)
    }

    /// Reports one recipient, once; ends the job when it was its last.
    pub async fn report(
        &mut self,
        job: JobId,
        pos: usize,
        delivery: Delivery,
    ) -> Result<(), AgentError> {
        let Some(entry) = self.jobs.get_mut(&job) else {
            warn!(job = %job, "outcome for a job no longer held (bug)");
            return Ok(());
        };
        match entry.reported.get_mut(pos) {
            Some(done @ false) => *done = true,
            _ => {
                warn!(job = %job, pos, "second outcome for a recipient (bug)");
                return Ok(());
            }
        }
        entry.unreported -= 1;
        let recipient = &entry.job.recipients[pos];
        let status = match delivery.status {
            Status::Delivered => "sent",
            Status::Deferred { .. } => "deferred",
            Status::Failed => "bounced",
        };
        // The delivery line is the scheduler's (one per recipient per
        // attempt, docs/operations.md "Logs"); this one is for debugging.
        debug!(
            queue_id = %entry.job.queue_id,
            to = %recipient.address,
            relay = delivery.remote_mta.as_deref().unwrap_or("none"),
            status,
            dsn = %delivery.enhanced,
            detail = %delivery.diagnostic,
            "outcome"
        );
        let delivery = if delivery.connect_micros == 0 {
            delivery.with_connect(entry.connect)
        } else {
            delivery
        };
        let delivery = match delivery.tls {
            None => delivery.with_tls(entry.tls),
            Some(_) => delivery,
        };
        let outcome = delivery.into_outcome(job, recipient.index);
        let finished = entry.unreported == 0;
        if self.closed {
            return Ok(());
        }
        self.reporter.report(outcome).await?;
        if finished {
            self.finish(job).await?;
        }
        Ok(())
    }

    /// One more job of credit for the one just finished, unless stopping.
    async fn replenish(&mut self) -> Result<(), AgentError> {
        if self.stopping {
            return Ok(());
        }
        self.reporter.want(1).await
    }

    /// Says `Idle` once per stretch of holding nothing.
    pub async fn idle(&mut self, connected_to: Option<String>) -> Result<(), AgentError> {
        if self.idle_sent || !self.jobs.is_empty() || self.closed {
            return Ok(());
        }
        self.idle_sent = true;
        self.reporter.idle(connected_to).await
    }
}
