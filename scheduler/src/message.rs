//! A message as the scheduler holds it: the control file plus, for each
//! recipient, the state folded from the journal, and the message's
//! recipients grouped by thread (its *legs*).
//!
//! Everything here is rebuilt from the control file alone (invariant 4):
//! [`Msg::load`] replays the journal records in order. Nothing here does
//! I/O; [`crate::queue`] writes the journal.

use std::path::PathBuf;

use skein_proto::{EnhancedCode, Notify, ThreadKey};
use skein_spool::{ControlFile, OutcomeKind, Record, SpoolError};

/// Where one recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RState {
    /// Never tried.
    Pending,
    /// In a job held by an agent.
    InFlight,
    /// Tried, to be tried again.
    Deferred,
    /// Done.
    Delivered,
    /// Permanently failed; `notified` once its DSN is durably queued.
    Failed {
        /// The failure DSN (or the decision that none is due) is recorded.
        notified: bool,
    },
}

impl RState {
    /// Delivered, or failed with its bounce recorded: nothing left to do.
    pub fn is_final(self) -> bool {
        matches!(self, RState::Delivered | RState::Failed { notified: true })
    }

    /// Waiting for an attempt: never tried, or deferred.
    pub fn is_waiting(self) -> bool {
        matches!(self, RState::Pending | RState::Deferred)
    }
}

/// One recipient's state.
#[derive(Debug, Clone)]
pub struct Rcpt {
    /// Where it stands.
    pub state: RState,
    /// Attempts made.
    pub attempts: u32,
    /// Earliest next attempt (deferred only), microseconds.
    pub retry_at: u64,
    /// Last enhanced status code (none before the first outcome).
    pub status: Option<EnhancedCode>,
    /// Last diagnostic.
    pub diagnostic: Option<String>,
    /// Last remote reply.
    pub reply: Option<String>,
    /// Last remote MTA.
    pub remote_mta: Option<String>,
    /// When the last attempt ended, microseconds.
    pub last_attempt: u64,
    /// A success DSN was asked for and is still to be sent.
    pub success_dsn_due: bool,
    /// A delay DSN was already sent for this recipient.
    pub delay_notified: bool,
    /// Which of the message's [`Leg`]s (threads) it belongs to.
    pub leg: usize,
}

impl Rcpt {
    fn new(leg: usize) -> Rcpt {
        Rcpt {
            state: RState::Pending,
            attempts: 0,
            retry_at: 0,
            status: None,
            diagnostic: None,
            reply: None,
            remote_mta: None,
            last_attempt: 0,
            success_dsn_due: false,
            delay_notified: false,
            leg,
        }
    }

    /// Waiting, and its retry time (if deferred) has come.
    pub fn is_ready(&self, now: u64) -> bool {
        self.state == RState::Pending || (self.state == RState::Deferred && self.retry_at <= now)
    }
}

/// The recipients of one message that share one thread: the routing never
/// changes while a message is queued, so this index is built once, at
/// load, and a thread finds its recipients here instead of comparing
/// `(channel, host)` for every recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    /// The thread.
    pub thread: ThreadKey,
    /// Positions of its recipients in the control file, ascending.
    pub rcpts: Vec<u32>,
}

/// A message in the queue.
#[derive(Debug)]
pub struct Msg {
    /// The control file as last read (header; `records` is not kept up to
    /// date after loading — the journal on disk is the truth).
    pub control: ControlFile,
    /// `transport/<id>`.
    pub control_path: PathBuf,
    /// `queue/<id>`.
    pub message_path: PathBuf,
    /// Per recipient, same order as `control.recipients`.
    pub rcpts: Vec<Rcpt>,
    /// The message's recipients by thread, in order of first appearance.
    pub legs: Vec<Leg>,
    /// Held by an administrator.
    pub held: bool,
    /// The message file failed its checks (an agent said so and
    /// [`Msg::check_file`] agreed): no job is handed out any more, and
    /// once nothing is in flight the waiting recipients fail and the
    /// message is set aside in `corrupt/` (`Engine::settle`). Not
    /// journaled: after a restart the next agent finds the damage again.
    pub damaged: Option<String>,
    /// Outcomes were written to the journal since its last fdatasync.
    pub unsynced: bool,
    /// When this scheduler loaded it, microseconds since the epoch: the
    /// end of the delivery log's "before the queue" (`delays=` a).
    pub queued_micros: u64,
}

impl Msg {
    /// Builds the state from a parsed control file.
    pub fn load(control: ControlFile, control_path: PathBuf, message_path: PathBuf) -> Msg {
        let mut legs: Vec<Leg> = Vec::new();
        let mut rcpts = Vec::with_capacity(control.recipients.len());
        for (i, cr) in control.recipients.iter().enumerate() {
            let leg = match legs
                .iter()
                .position(|l| l.thread.channel == cr.channel && l.thread.host == cr.host)
            {
                Some(leg) => leg,
                None => {
                    legs.push(Leg {
                        thread: ThreadKey::new(cr.channel.clone(), cr.host.clone()),
                        rcpts: Vec::new(),
                    });
                    legs.len() - 1
                }
            };
            legs[leg].rcpts.push(i as u32);
            rcpts.push(Rcpt::new(leg));
        }
        let mut held = false;
        for rec in &control.records {
            match rec {
                Record::Outcome {
                    rcpt,
                    at,
                    kind,
                    attempt,
                    status,
                    retry_at,
                    reply,
                    remote_mta,
                    diagnostic,
                } => {
                    let Some(r) = rcpts.get_mut(*rcpt as usize) else {
                        continue; // the parser already refuses these
                    };
                    r.attempts = r.attempts.max(*attempt);
                    r.status = Some(*status);
                    r.diagnostic = Some(diagnostic.clone());
                    r.reply = reply.clone();
                    r.remote_mta = remote_mta.clone();
                    r.last_attempt = *at;
                    r.state = match kind {
                        OutcomeKind::Delivered => {
                            r.success_dsn_due = control.recipients[*rcpt as usize]
                                .notify
                                .unwrap_or_default()
                                .success;
                            RState::Delivered
                        }
                        OutcomeKind::Deferred => {
                            r.retry_at = retry_at.unwrap_or(*at);
                            RState::Deferred
                        }
                        OutcomeKind::Failed => RState::Failed { notified: false },
                    };
                }
                Record::Notified {
                    rcpts: which, what, ..
                } => {
                    for i in which {
                        if let Some(r) = rcpts.get_mut(*i as usize) {
                            match what.as_str() {
                                "failure" => {
                                    if let RState::Failed { .. } = r.state {
                                        r.state = RState::Failed { notified: true };
                                    }
                                }
                                "delay" => r.delay_notified = true,
                                "success" => r.success_dsn_due = false,
                                _ => {}
                            }
                        }
                    }
                }
                Record::Held { .. } => held = true,
                Record::Released { .. } => held = false,
            }
        }
        Msg {
            control,
            control_path,
            message_path,
            rcpts,
            legs,
            held,
            damaged: None,
            unsynced: false,
            queued_micros: crate::clock::now_micros(),
        }
    }

    /// Checks the message file as an agent does before sending
    /// ([`skein_spool::open_verified`]): `Some(what was found)` when it is
    /// damaged or missing, `None` when it is sound — or cannot be read at
    /// all, which is not proof of damage.
    pub fn check_file(&self) -> Option<String> {
        match skein_spool::open_verified(&self.message_path, self.control.offset, self.control.size)
        {
            Ok(_) => None,
            Err(SpoolError::Corrupt { reason, .. }) => Some(reason),
            Err(e) if e.is_not_found() => Some(format!(
                "the message file {} is missing",
                self.message_path.display()
            )),
            Err(e) => {
                tracing::warn!(queue_id = self.id(), error = %e, "cannot check the message file");
                None
            }
        }
    }

    /// The queue id as text.
    pub fn id(&self) -> &str {
        self.control.id.as_str()
    }

    /// The thread of recipient `i`.
    pub fn thread_of(&self, i: usize) -> &ThreadKey {
        &self.legs[self.rcpts[i].leg].thread
    }

    /// The recipients of this message in `thread` (empty if none).
    pub fn rcpts_in(&self, thread: &ThreadKey) -> &[u32] {
        self.legs
            .iter()
            .find(|l| l.thread == *thread)
            .map_or(&[], |l| l.rcpts.as_slice())
    }

    /// The recipients of `thread` that may be tried at `now`: waiting, past
    /// their retry time, and the message not held.
    pub fn ready_in(&self, thread: &ThreadKey, now: u64) -> Vec<u32> {
        if self.held || self.damaged.is_some() {
            return Vec::new();
        }
        self.rcpts_in(thread)
            .iter()
            .copied()
            .filter(|&i| self.rcpts[i as usize].is_ready(now))
            .collect()
    }

    /// Whether some recipient of `thread` is waiting (pending or deferred),
    /// whatever its retry time.
    pub fn waits_in(&self, thread: &ThreadKey) -> bool {
        self.rcpts_in(thread)
            .iter()
            .any(|&i| self.rcpts[i as usize].state.is_waiting())
    }

    /// The NOTIFY of recipient `i` (absent = the RFC 3461 default: failure
    /// and delay).
    pub fn notify(&self, i: usize) -> Notify {
        self.control.recipients[i].notify.unwrap_or_default()
    }

    /// True when nothing is left to do for any recipient.
    pub fn is_done(&self) -> bool {
        self.rcpts
            .iter()
            .all(|r| r.state.is_final() && !r.success_dsn_due)
    }

    /// True while some recipient is in flight or untried: the message is
    /// settled (DSNs, removal) only once a whole round is over.
    pub fn is_mid_round(&self) -> bool {
        self.rcpts
            .iter()
            .any(|r| matches!(r.state, RState::InFlight | RState::Pending))
    }
}

/// Control files for the scheduler's unit tests.
#[cfg(test)]
pub mod fixture {
    use skein_spool::{ControlFile, ControlRecipient, Envelope, QueueId};

    /// Message number `n` from `s@example.org`, one `smtp` recipient
    /// `r<i>@<host>` per host, its message at `queue/<id>` (16 bytes).
    pub fn control(n: u64, hosts: &[&str]) -> ControlFile {
        let id = QueueId::from_parts(1, 2, n);
        ControlFile {
            message: format!("queue/{id}"),
            id,
            arrival_micros: crate::clock::now_micros(),
            envelope: Envelope {
                sender: "s@example.org".into(),
                ..Default::default()
            },
            offset: 0,
            size: 16,
            recipients: hosts
                .iter()
                .enumerate()
                .map(|(i, h)| ControlRecipient {
                    index: i as u32,
                    channel: "smtp".into(),
                    host: h.to_string(),
                    address: format!("r{i}@{h}"),
                    nexthop: None,
                    notify: None,
                    orcpt: None,
                })
                .collect(),
            records: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_spool::{ControlRecipient, Envelope, QueueId};

    fn control(records: Vec<Record>) -> ControlFile {
        ControlFile {
            id: QueueId::from_parts(1, 2, 3),
            arrival_micros: 1,
            envelope: Envelope::default(),
            message: "queue/x".into(),
            offset: 0,
            size: 0,
            recipients: (0..3)
                .map(|i| ControlRecipient {
                    index: i,
                    channel: "local".into(),
                    host: format!("u{i}"),
                    address: format!("u{i}@localhost"),
                    nexthop: None,
                    notify: (i == 2).then(|| "SUCCESS".parse().unwrap()),
                    orcpt: None,
                })
                .collect(),
            records,
        }
    }

    fn outcome(rcpt: u32, kind: OutcomeKind, attempt: u32) -> Record {
        Record::Outcome {
            rcpt,
            at: 10,
            kind,
            attempt,
            status: skein_proto::EnhancedCode::TRANSIENT,
            retry_at: Some(99),
            reply: None,
            remote_mta: None,
            diagnostic: "d".into(),
        }
    }

    #[test]
    fn journal_replay_folds_to_the_last_word() {
        let m = Msg::load(
            control(vec![
                outcome(0, OutcomeKind::Deferred, 1),
                outcome(0, OutcomeKind::Delivered, 2),
                outcome(1, OutcomeKind::Deferred, 1),
                outcome(1, OutcomeKind::Failed, 2),
                outcome(2, OutcomeKind::Deferred, 1),
                Record::Held { at: 1 },
            ]),
            "t".into(),
            "q".into(),
        );
        assert_eq!(m.rcpts[0].state, RState::Delivered);
        assert_eq!(m.rcpts[0].attempts, 2);
        assert_eq!(m.rcpts[1].state, RState::Failed { notified: false });
        assert_eq!(m.rcpts[2].state, RState::Deferred);
        assert_eq!(m.rcpts[2].retry_at, 99);
        assert!(m.held);
        assert!(!m.is_done());
    }

    #[test]
    fn notified_failures_and_success_reports_complete_a_message() {
        let mut recs = vec![
            outcome(0, OutcomeKind::Delivered, 1),
            outcome(1, OutcomeKind::Failed, 1),
            outcome(2, OutcomeKind::Delivered, 1),
            Record::Notified {
                rcpts: vec![1],
                at: 2,
                what: "failure".into(),
                dsn: "X".into(),
            },
        ];
        let m = Msg::load(control(recs.clone()), "t".into(), "q".into());
        assert!(
            m.rcpts[2].success_dsn_due,
            "NOTIFY=SUCCESS asks for a report"
        );
        assert!(!m.is_done());
        recs.push(Record::Notified {
            rcpts: vec![2],
            at: 3,
            what: "success".into(),
            dsn: "Y".into(),
        });
        recs.push(Record::Released { at: 4 });
        let m = Msg::load(control(recs), "t".into(), "q".into());
        assert!(m.is_done());
        assert!(!m.held);
    }

    #[test]
    fn legs_index_the_recipients_of_each_thread() {
        let mut c = control(vec![
            outcome(0, OutcomeKind::Deferred, 1),
            outcome(2, OutcomeKind::Delivered, 1),
        ]);
        // u0 and u2 share a thread; u1 has its own.
        c.recipients[2].host = "u0".into();
        let m = Msg::load(c, "t".into(), "q".into());
        let (a, b) = (ThreadKey::new("local", "u0"), ThreadKey::new("local", "u1"));
        assert_eq!(
            m.legs,
            vec![
                Leg {
                    thread: a.clone(),
                    rcpts: vec![0, 2]
                },
                Leg {
                    thread: b.clone(),
                    rcpts: vec![1]
                },
            ]
        );
        assert_eq!(m.thread_of(2), &a);
        assert_eq!(m.rcpts_in(&ThreadKey::new("smtp", "u0")), &[] as &[u32]);
        // Recipient 0 is deferred until 99: waiting, but not ready before.
        assert!(m.waits_in(&a));
        assert_eq!(m.ready_in(&a, 98), Vec::<u32>::new());
        assert_eq!(m.ready_in(&a, 99), vec![0]);
        assert_eq!(m.ready_in(&b, 0), vec![1]);
        assert!(m.is_mid_round(), "recipient 1 was never tried");
        assert!(m.notify(2).success && !m.notify(0).success);
    }
}
