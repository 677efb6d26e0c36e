//! The high level: a whole agent around one delivery function.
//!
//! [`run_simple`] is an agent's `main`: logging, a runtime, the socket on
//! fd 3, the handshake, and then [`serve`], which keeps the scheduler's
//! credit topped up, hands each job to the [`Deliver`] handler one at a
//! time, reports every recipient exactly once, ends each job with
//! `JobDone`, says `Idle` when it holds nothing, and returns on
//! `Shutdown`, end of stream or a stop signal.
//!
//! The one rule it enforces on the handler: anything the handler does not
//! say — a recipient it returned no [`Delivery`] for, or every recipient
//! of a job whose handler panicked — is reported *deferred*, never failed
//! and never left out. Mail is only bounced when a handler said so.

use std::any::Any;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll};
use std::time::Duration;

use skein_daemon::{EXIT_FAILURE, LogFormat, init_logging};
use skein_proto::{EnhancedCode, Job, JobId};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{debug, error, info, warn};

use crate::connection::{AgentConnection, Event, Reporter};
use crate::delivery::Delivery;
use crate::error::{AgentError, Result};
use crate::message::{MessageError, open_message};

/// How long the runtime waits, after the agent is done, for blocking
/// tasks a handler left behind (a delivery whose job was abandoned when
/// the scheduler went away). Their results can no longer be reported, so
/// there is no point in waiting long.
const BLOCKING_GRACE: Duration = Duration::from_secs(5);

/// What an agent does with one job: deliver it and say, for each of
/// `job.recipients` in order, what became of it.
///
/// The returned vector is matched to `job.recipients` by position. A
/// recipient without an entry (the vector is short) is reported deferred;
/// entries beyond the last recipient are ignored with a warning. A
/// panicking handler defers the whole job.
///
/// Implemented by every async closure taking `&Job`, and by any type
/// that implements it with an `async fn`:
///
/// ```no_run
/// use skein_agent::proto::Job;
/// use skein_agent::{Deliver, Delivery, run_simple};
///
/// // A closure…
/// # fn closure() -> std::process::ExitCode {
/// run_simple("null", "null-agent", 1, async |job: &Job| {
///     job.recipients.iter().map(|_| Delivery::delivered(None, "discarded")).collect()
/// })
/// # }
///
/// // …or a type holding what the agent needs.
/// struct Null {
///     reason: String,
/// }
///
/// impl Deliver for Null {
///     async fn deliver(&self, job: &Job) -> Vec<Delivery> {
///         let done = Delivery::delivered(None, self.reason.as_str());
///         job.recipients.iter().map(|_| done.clone()).collect()
///     }
/// }
/// # fn by_type() -> std::process::ExitCode {
/// run_simple("null", "null-agent", 1, Null { reason: "discarded".into() })
/// # }
/// ```
pub trait Deliver {
    /// Delivers `job`; see the trait's documentation for what to return.
    fn deliver(&self, job: &Job) -> impl Future<Output = Vec<Delivery>>;
}

impl<F> Deliver for F
where
    F: AsyncFn(&Job) -> Vec<Delivery>,
{
    fn deliver(&self, job: &Job) -> impl Future<Output = Vec<Delivery>> {
        self(job)
    }
}

/// Runs a whole transport agent and returns its exit status; an agent's
/// `main` can end in it.
///
/// - starts logging ([`skein_daemon::init_logging`], `SKEIN_LOG` and
///   `SKEIN_LOG_FORMAT` apply) and a single-threaded tokio runtime;
/// - adopts fd 3 and handshakes for the channel in `SKEIN_CHANNEL`, or
///   `default_channel` ([`AgentConnection::from_fd3`]);
/// - [`serve`]s with `ahead` jobs of credit, `handler` delivering;
/// - SIGTERM or SIGINT asks it to stop as `Shutdown` does (finish the
///   current job, give the others back as deferred); a second one exits
///   at once.
///
/// Exit status 0 after `Shutdown`, a stop signal, or the scheduler closing
/// the connection; 1 when the agent could not start (fd 3 is not a socket,
/// the handshake failed) or the scheduler sent garbage.
pub fn run_simple<H: Deliver>(
    default_channel: &str,
    program: &'static str,
    ahead: u32,
    handler: H,
) -> ExitCode {
    init_logging(program, LogFormat::from_env());
    install_panic_hook();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(source) => {
            let failure = AgentError::Local {
                what: "building the async runtime",
                source,
            };
            error!(error = %failure, "cannot start");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(async {
        let stop = stop_signals()?;
        let connection = AgentConnection::from_fd3(default_channel, program).await?;
        info!(
            channel = connection.channel(),
            scheduler = connection.scheduler().program.as_str(),
            pid = std::process::id(),
            "connected to the scheduler"
        );
        serve(connection, ahead, &handler, stop).await
    });
    runtime.shutdown_timeout(BLOCKING_GRACE);
    match result {
        Ok(()) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            let failure: &(dyn std::error::Error + 'static) = &failure;
            error!(error = failure, "agent failed");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT, and from then on exits the
/// process on the second: a handler that hangs must not make the agent
/// unstoppable short of SIGKILL.
fn stop_signals() -> Result<impl Future<Output = ()>> {
    let handler = |kind: SignalKind| {
        signal(kind).map_err(|source| AgentError::Local {
            what: "installing a signal handler",
            source,
        })
    };
    let mut terminate = handler(SignalKind::terminate())?;
    let mut interrupt = handler(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        info!("stop signal: finishing the current job, deferring the others");
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            warn!("second stop signal: exiting now");
            std::process::exit(EXIT_FAILURE.into());
        });
    })
}

/// The job loop of [`run_simple`], on a connection the caller made; for
/// tests and for agents that need their own set-up around it. `stop`
/// resolving has the effect of a `Shutdown` from the scheduler.
///
/// Jobs are delivered one at a time, in the order they came; `ahead` (at
/// least 1) is how many the agent holds at once, the one being delivered
/// included, so that the next job is already there when one finishes.
///
/// Returns `Ok` after `Shutdown` or `stop` (once the current job is
/// reported and every waiting job given back as deferred), and when the
/// scheduler closes the connection (the current job is then abandoned:
/// nobody is left to report to). Returns the error when the scheduler
/// sends garbage.
pub async fn serve<H: Deliver + ?Sized>(
    connection: AgentConnection,
    ahead: u32,
    handler: &H,
    stop: impl Future<Output = ()>,
) -> Result<()> {
    match job_loop(connection, ahead.max(1), handler, stop).await {
        Err(e) if e.is_disconnect() => {
            info!(error = %e, "the scheduler went away");
            Ok(())
        }
        other => other,
    }
}

/// A job being delivered: the handler's future, which owns the job.
struct Running<'h> {
    id: JobId,
    cancelled: bool,
    future: Pin<Box<dyn Future<Output = (Job, HandlerResult)> + 'h>>,
}

/// What a handler produced, or the message of its panic.
type HandlerResult = std::result::Result<Vec<Delivery>, String>;

fn start<'h, H: Deliver + ?Sized>(handler: &'h H, job: Job) -> Running<'h> {
    debug!(
        job = job.id.0,
        queue_id = job.queue_id.as_str(),
        thread = %job.thread,
        recipients = job.recipients.len(),
        "delivering"
    );
    let id = job.id;
    let future = Box::pin(async move {
        // The call itself is inside the caught future, so a handler that
        // panics before its first await is caught too.
        let result = CatchUnwind(Box::pin(async { handler.deliver(&job).await })).await;
        (
            job,
            result.map_err(|payload| panic_message(payload.as_ref())),
        )
    });
    Running {
        id,
        cancelled: false,
        future,
    }
}

/// Waits for the running job, or forever when there is none (a disabled
/// `select!` branch still needs a future).
async fn finished(running: &mut Option<Running<'_>>) -> (Job, HandlerResult) {
    match running {
        Some(running) => running.future.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn job_loop<H: Deliver + ?Sized>(
    connection: AgentConnection,
    ahead: u32,
    handler: &H,
    stop: impl Future<Output = ()>,
) -> Result<()> {
    let (mut receiver, reporter) = connection.split();
    reporter.want(ahead).await?;
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut running: Option<Running<'_>> = None;
    let mut stopping = false;
    // Nothing to be idle about before the first job: the scheduler started
    // this agent to give it one.
    let mut idle_said = true;
    let mut stop = std::pin::pin!(stop);
    loop {
        if running.is_none()
            && let Some(job) = waiting.pop_front()
        {
            idle_said = false;
            // Verified before the handler sees it (docs/agent-protocol.md,
            // rule 6): a handler never delivers a damaged message.
            match open_message(&job) {
                Ok(_) => running = Some(start(handler, job)),
                Err(MessageError::Damaged(why)) => {
                    warn!(
                        job = job.id.0,
                        queue_id = job.queue_id.as_str(),
                        reason = why.as_str(),
                        "the message file is damaged: nothing delivered"
                    );
                    reporter.damaged(job.id, why).await?;
                    if !stopping {
                        reporter.want(1).await?;
                    }
                    continue;
                }
                Err(e @ MessageError::Unreadable(_)) => {
                    warn!(job = job.id.0, queue_id = job.queue_id.as_str(), error = %e, "cannot read the message: deferring the job");
                    give_back(&reporter, job, EnhancedCode::SYSTEM_TROUBLE, &e.to_string()).await?;
                    if !stopping {
                        reporter.want(1).await?;
                    }
                    continue;
                }
            }
        }
        if running.is_none() {
            if stopping {
                return Ok(());
            }
            if !idle_said {
                reporter.idle(None).await?;
                idle_said = true;
            }
        }
        tokio::select! {
            (job, result) = finished(&mut running) => {
                let cancelled = running.take().is_some_and(|r| r.cancelled);
                report_job(&reporter, &job, result, cancelled).await?;
                if !stopping {
                    reporter.want(1).await?;
                }
            }
            event = receiver.next() => match event? {
                Event::Job(job) if stopping => {
                    // Only possible after a stop signal: the scheduler has
                    // not heard that we are stopping.
                    give_back(&reporter, job, EnhancedCode::NOT_ACCEPTING, "the agent is stopping").await?;
                }
                Event::Job(job) => {
                    debug!(job = job.id.0, queue_id = job.queue_id.as_str(), "job received");
                    waiting.push_back(job);
                }
                Event::Cancel(id) => {
                    if let Some(at) = waiting.iter().position(|job| job.id == id) {
                        if let Some(job) = waiting.remove(at) {
                            let why = "the job was cancelled before its delivery started";
                            give_back(&reporter, job, EnhancedCode::TRANSIENT, why).await?;
                            if !stopping {
                                reporter.want(1).await?;
                            }
                        }
                    } else if let Some(running) = running.as_mut().filter(|r| r.id == id) {
                        // Stopping a delivery halfway is not known to be
                        // safe for an arbitrary handler: let it finish, its
                        // outcomes stand.
                        running.cancelled = true;
                        info!(job = id.0, "cancel for a job being delivered: letting it finish");
                    } else {
                        debug!(job = id.0, "cancel for a job not held: ignored");
                    }
                }
                Event::Shutdown => {
                    info!(waiting = waiting.len(), "shutdown requested by the scheduler");
                    stopping = true;
                    give_back_all(&reporter, &mut waiting).await?;
                }
                Event::Closed => {
                    if let Some(running) = &running {
                        info!(job = running.id.0, "the scheduler closed the connection: abandoning the job being delivered");
                    } else {
                        debug!("the scheduler closed the connection");
                    }
                    return Ok(());
                }
            },
            () = &mut stop, if !stopping => {
                stopping = true;
                give_back_all(&reporter, &mut waiting).await?;
            }
        }
    }
}

/// Reports a finished job: one outcome per recipient, filling the gaps
/// the handler left with deferrals, then `JobDone`.
async fn report_job(
    reporter: &Reporter,
    job: &Job,
    result: HandlerResult,
    cancelled: bool,
) -> Result<()> {
    let (deliveries, gap) = match result {
        Ok(deliveries) => {
            if deliveries.len() > job.recipients.len() {
                warn!(
                    job = job.id.0,
                    queue_id = job.queue_id.as_str(),
                    returned = deliveries.len(),
                    recipients = job.recipients.len(),
                    "the handler returned more results than the job has recipients: extra ignored (an agent bug)"
                );
            } else if deliveries.len() < job.recipients.len() {
                warn!(
                    job = job.id.0,
                    queue_id = job.queue_id.as_str(),
                    returned = deliveries.len(),
                    recipients = job.recipients.len(),
                    "the handler returned no result for some recipients: they are deferred (an agent bug)"
                );
            }
            (
                deliveries,
                "the agent reported no outcome for this recipient".to_owned(),
            )
        }
        Err(panic) => {
            error!(
                job = job.id.0,
                queue_id = job.queue_id.as_str(),
                panic = panic.as_str(),
                "the delivery handler panicked: the job's recipients are deferred"
            );
            (Vec::new(), format!("the agent failed: {panic}"))
        }
    };
    let mut deliveries = deliveries.into_iter();
    for recipient in &job.recipients {
        let delivery = deliveries
            .next()
            .unwrap_or_else(|| Delivery::deferred(EnhancedCode::SYSTEM_TROUBLE, gap.clone(), None));
        debug!(
            job = job.id.0,
            queue_id = job.queue_id.as_str(),
            to = recipient.address.as_str(),
            status = ?delivery.status,
            enhanced = %delivery.enhanced,
            diagnostic = delivery.diagnostic.as_str(),
            "outcome"
        );
        reporter
            .report(delivery.into_outcome(job.id, recipient.index))
            .await?;
    }
    if cancelled {
        debug!(job = job.id.0, "cancelled job finished");
    }
    reporter.job_done(job.id).await
}

/// Hands a job that was never started back to the scheduler: every
/// recipient deferred, then `JobDone`.
async fn give_back(reporter: &Reporter, job: Job, code: EnhancedCode, why: &str) -> Result<()> {
    debug!(
        job = job.id.0,
        queue_id = job.queue_id.as_str(),
        why,
        "giving the job back"
    );
    for recipient in &job.recipients {
        let delivery = Delivery::deferred(code, why, None);
        reporter
            .report(delivery.into_outcome(job.id, recipient.index))
            .await?;
    }
    reporter.job_done(job.id).await
}

async fn give_back_all(reporter: &Reporter, waiting: &mut VecDeque<Job>) -> Result<()> {
    while let Some(job) = waiting.pop_front() {
        give_back(
            reporter,
            job,
            EnhancedCode::NOT_ACCEPTING,
            "the agent is stopping",
        )
        .await?;
    }
    Ok(())
}

/// Polls a future, turning a panic into an `Err` with its payload, so that
/// one bad job cannot take the others down with it.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::result::Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // AssertUnwindSafe is sound here: after a panic the future is never
        // polled again, only dropped, so no broken invariant is observed.
        match panic::catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// One log line per panic instead of the default multi-line message, so
/// that a handler's panic reads like any other error in the logs.
fn install_panic_hook() {
    panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        error!(
            panic = panic_message(info.payload()).as_str(),
            location, "panic"
        );
    }));
}
