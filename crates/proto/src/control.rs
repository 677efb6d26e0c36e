//! Messages on the control socket (`<spool>/run/scheduler.sock`, named by
//! `skein_spool::rendezvous::scheduler_socket`): the router and the spool
//! tools ask, the scheduler answers.
//!
//! After the handshake the client sends [`ControlRequest`]s and the
//! scheduler answers each with exactly one [`ControlResponse`], in order.
//! A connection may carry any number of requests (the router keeps one
//! open for `Submitted`).

use serde::{Deserialize, Serialize};
use skein_mail::{BodyType, Ret};

use crate::envelope::ThreadKey;

/// A request to the scheduler.
///
/// Layout: variant index in declaration order (`Submitted` = 0 …
/// `Bulk` = 10), then the fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// From the router: the control file of a new message is durable in
    /// the spool; schedule it. Answered with `Ok` (an unknown id is an
    /// error: the scheduler found no control file).
    Submitted {
        /// The spool's name of the message.
        queue_id: String,
    },
    /// Counters and identity of the scheduler: answered with `Status`.
    Status,
    /// Every message in the queue: answered with `Queue`.
    ListQueue,
    /// Every thread group and its threads: answered with `Threads`.
    ListThreads,
    /// One message in detail: answered with `Message`.
    Show {
        /// The message.
        queue_id: String,
    },
    /// Stop delivering the message until released (jobs in flight are
    /// cancelled). Answered with `Ok`.
    Hold {
        /// The message.
        queue_id: String,
    },
    /// Undo `Hold`. Answered with `Ok`.
    Release {
        /// The message.
        queue_id: String,
    },
    /// Remove the message from the queue without delivering it or sending
    /// a bounce. Answered with `Ok`.
    Delete {
        /// The message.
        queue_id: String,
    },
    /// Retry now, ignoring back-off. Answered with `Ok`.
    Flush(FlushTarget),
    /// Re-route the message: the router processes it again (after an
    /// alias or route change) and its pending recipients may move to other
    /// threads. Answered with `Ok`.
    Requeue {
        /// The message.
        queue_id: String,
    },
    /// Apply `action` to every message `selection` selects (`queue delete
    /// ALL`, `--domain`, ids on standard input). Answered with `Ok`
    /// saying how many were selected and acted on; a selection that
    /// matches nothing is not an error.
    Bulk {
        /// What to do to each.
        action: crate::selection::BulkAction,
        /// Which.
        selection: crate::selection::Selection,
    },
}

impl ControlRequest {
    /// The request's name, the one place it is spelled: its variant's
    /// name (`"Submitted"`, `"Hold"`, `"Flush"` …), as
    /// docs/agent-protocol.md writes it, for logs and error messages
    /// ("the scheduler answered Hold with Queue"). Not on the wire, which
    /// carries the variant index.
    pub fn name(&self) -> &'static str {
        match self {
            ControlRequest::Submitted { .. } => "Submitted",
            ControlRequest::Status => "Status",
            ControlRequest::ListQueue => "ListQueue",
            ControlRequest::ListThreads => "ListThreads",
            ControlRequest::Show { .. } => "Show",
            ControlRequest::Hold { .. } => "Hold",
            ControlRequest::Release { .. } => "Release",
            ControlRequest::Delete { .. } => "Delete",
            ControlRequest::Flush(_) => "Flush",
            ControlRequest::Requeue { .. } => "Requeue",
            ControlRequest::Bulk { .. } => "Bulk",
        }
    }
}

/// What a `Flush` applies to.
///
/// Layout: variant index `0` = `All`, `1` = `Message` + queue id string,
/// `2` = `Thread` + [`ThreadKey`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlushTarget {
    /// Every deferred recipient.
    All,
    /// The deferred recipients of one message (by queue id).
    Message(String),
    /// One thread.
    Thread(ThreadKey),
}

/// The scheduler's answer to one [`ControlRequest`].
///
/// Layout: variant index in declaration order (`Ok` = 0 … `Error` = 5),
/// then the fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlResponse {
    /// Done; `message` says what was done, for the tool to print.
    Ok {
        /// Human-readable confirmation, may be empty.
        message: String,
    },
    /// Answer to `Status`.
    Status(SchedulerStatus),
    /// Answer to `ListQueue`, oldest message first.
    Queue(Vec<MessageSummary>),
    /// Answer to `ListThreads`, in clause order.
    Threads(Vec<GroupInfo>),
    /// Answer to `Show`.
    Message(MessageDetail),
    /// The request failed.
    Error(ControlError),
}

impl ControlResponse {
    /// The response's name: its variant's name (`"Ok"`, `"Queue"` …), as
    /// [`ControlRequest::name`] is the request's.
    pub fn name(&self) -> &'static str {
        match self {
            ControlResponse::Ok { .. } => "Ok",
            ControlResponse::Status(_) => "Status",
            ControlResponse::Queue(_) => "Queue",
            ControlResponse::Threads(_) => "Threads",
            ControlResponse::Message(_) => "Message",
            ControlResponse::Error(_) => "Error",
        }
    }
}

/// Identity and counters of the running scheduler.
///
/// Layout: the fields in declaration order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerStatus {
    /// The scheduler's process id.
    pub pid: u32,
    /// Its version string (the crate version).
    pub version: String,
    /// Seconds since it started.
    pub uptime_secs: u64,
    /// Messages in the queue.
    pub messages: u64,
    /// Recipients without a final outcome.
    pub recipients: u64,
    /// Threads with pending recipients.
    pub threads: u64,
    /// Running transport agents.
    pub agents: u64,
}

/// One message as `skein mailq` lists it.
///
/// Layout: the fields in declaration order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSummary {
    /// The spool's name of the message.
    pub queue_id: String,
    /// Size of the message in bytes.
    pub size: u64,
    /// When it was accepted, in seconds since the Unix epoch.
    pub arrival_unix: i64,
    /// The reverse-path; `""` is the null reverse-path.
    pub sender: String,
    /// Whether an administrator holds it.
    pub held: bool,
    /// Its recipients, in control-file order, final ones included.
    pub recipients: Vec<RecipientSummary>,
}

/// One recipient of a [`MessageSummary`].
///
/// Layout: the fields in declaration order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientSummary {
    /// Its index in the control file.
    pub index: u32,
    /// The forward-path.
    pub address: String,
    /// The thread it is routed to.
    pub thread: ThreadKey,
    /// Where it stands.
    pub state: RecipientState,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// The diagnostic of the last attempt, if any.
    pub last_diagnostic: Option<String>,
    /// When the next attempt is due (seconds since the epoch), if one is
    /// scheduled.
    pub next_attempt_unix: Option<i64>,
}

/// Where one recipient stands.
///
/// Layout: variant index in declaration order (`Pending` = 0 …
/// `Failed` = 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecipientState {
    /// Waiting for its first attempt.
    Pending,
    /// Handed to an agent right now.
    InProgress,
    /// Tried, to be tried again.
    Deferred,
    /// Final: delivered.
    Delivered,
    /// Final: failed (its bounce is queued).
    Failed,
}

/// One thread group (scheduler clause) as `skein mailq --threads` shows it.
///
/// Layout: the fields in declaration order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// The clause's `match` glob, e.g. `smtp/*`.
    pub clause: String,
    /// Process ids of the agents running for the group.
    pub agents: Vec<u32>,
    /// The group's threads with pending recipients.
    pub threads: Vec<ThreadInfo>,
}

/// One thread as `skein mailq --threads` shows it.
///
/// Layout: the fields in declaration order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadInfo {
    /// The thread.
    pub key: ThreadKey,
    /// Messages with pending recipients in the thread.
    pub messages: u64,
    /// Pending recipients in the thread.
    pub recipients: u64,
    /// Consecutive failed attempts of the thread (its back-off step).
    pub attempts: u32,
    /// Agents currently fed from this thread.
    pub agent_pids: Vec<u32>,
    /// Seconds until the next attempt; negative when it is overdue, `None`
    /// when the thread is being fed or held.
    pub next_attempt_in_secs: Option<i64>,
    /// What the scheduler is doing with it.
    pub feed: FeedState,
    /// Age of its oldest message, in seconds.
    pub oldest_age_secs: u64,
    /// The diagnostic of its last failed attempt, if any.
    pub last_diagnostic: Option<String>,
}

/// What the scheduler is doing with a thread.
///
/// Layout: variant index in declaration order (`Idle` = 0 … `Held` = 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FeedState {
    /// Nothing to do now.
    Idle,
    /// Due, waiting for an agent (a limit is reached).
    Queued,
    /// Being fed to an agent.
    Running,
    /// Waiting out its back-off.
    Retrying,
    /// Every pending message in it is held.
    Held,
}

/// One message in detail (`skein queue show`).
///
/// Layout: the fields in declaration order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageDetail {
    /// What `mailq` shows of it.
    pub summary: MessageSummary,
    /// DSN `ENVID`.
    pub envid: Option<String>,
    /// DSN `RET`.
    pub ret: Option<Ret>,
    /// Body type.
    pub body: BodyType,
    /// Whether it needs `SMTPUTF8`.
    pub smtputf8: bool,
    /// Absolute path of the message file.
    pub message_path: String,
    /// Absolute path of its control file.
    pub control_path: String,
}

/// A failed control request.
///
/// Layout: `kind` (variant index), then `message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlError {
    /// The class of failure, so that a tool can choose its exit status.
    pub kind: ControlErrorKind,
    /// What went wrong, for people.
    pub message: String,
}

/// The class of a [`ControlError`].
///
/// Layout: variant index in declaration order (`UnknownId` = 0 …
/// `Internal` = 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ControlErrorKind {
    /// No such message (or thread) in the queue.
    UnknownId,
    /// The request makes no sense (e.g. releasing a message not held).
    Invalid,
    /// The scheduler cannot do it now (shutting down, spool unavailable);
    /// trying later may work.
    Unavailable,
    /// The scheduler failed; its log says more.
    Internal,
    /// The client may not make this request: only root, the skein account
    /// and members of its group may change the queue (any local user may
    /// list it).
    Forbidden,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each name is its variant's (so the names in logs and errors are
    /// the ones docs/agent-protocol.md uses), and no two are alike.
    #[test]
    fn names_are_the_variant_names() {
        fn variant(debug: &str) -> &str {
            debug
                .split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or_default()
        }
        let id = || "0ABCDEFGHJK0000100A".to_owned();
        let requests = [
            ControlRequest::Submitted { queue_id: id() },
            ControlRequest::Status,
            ControlRequest::ListQueue,
            ControlRequest::ListThreads,
            ControlRequest::Show { queue_id: id() },
            ControlRequest::Hold { queue_id: id() },
            ControlRequest::Release { queue_id: id() },
            ControlRequest::Delete { queue_id: id() },
            ControlRequest::Flush(FlushTarget::All),
            ControlRequest::Requeue { queue_id: id() },
        ];
        let mut names: Vec<&str> = requests.iter().map(ControlRequest::name).collect();
        for (request, name) in requests.iter().zip(&names) {
            let debug = format!("{request:?}");
            assert_eq!(variant(&debug), *name, "{debug}");
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), requests.len());

        let responses = [
            ControlResponse::Ok {
                message: String::new(),
            },
            ControlResponse::Status(SchedulerStatus {
                pid: 1,
                version: String::new(),
                uptime_secs: 0,
                messages: 0,
                recipients: 0,
                threads: 0,
                agents: 0,
            }),
            ControlResponse::Queue(Vec::new()),
            ControlResponse::Threads(Vec::new()),
            ControlResponse::Message(MessageDetail {
                summary: MessageSummary {
                    queue_id: id(),
                    size: 0,
                    arrival_unix: 0,
                    sender: String::new(),
                    held: false,
                    recipients: Vec::new(),
                },
                envid: None,
                ret: None,
                body: BodyType::SevenBit,
                smtputf8: false,
                message_path: String::new(),
                control_path: String::new(),
            }),
            ControlResponse::Error(ControlError {
                kind: ControlErrorKind::Internal,
                message: String::new(),
            }),
        ];
        let mut names: Vec<&str> = responses.iter().map(ControlResponse::name).collect();
        for (response, name) in responses.iter().zip(&names) {
            let debug = format!("{response:?}");
            assert_eq!(variant(&debug), *name, "{debug}");
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), responses.len());
    }
}
