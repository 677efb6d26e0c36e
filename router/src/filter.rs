//! Content filters for local submissions (`router.milters`, Postfix's
//! `non_smtpd_milters`): mail from `skein sendmail`, whether it wrote
//! `incoming/` itself or came through `maildrop/` and the pickup, goes
//! through the filters before it is routed. Mail from the smtpd has been
//! through `smtpd.milters` already and bounces are skein's own; neither is
//! filtered here. This runs in the router, as the router's unprivileged
//! user, never with privilege.
//!
//! The filters see a connection from `localhost [127.0.0.1]` that says
//! `HELO localhost`, as Postfix presents its non-SMTP mail, then the
//! message ([`skein_milter::filter`]). What they decide:
//!
//! | verdict | what happens |
//! |---|---|
//! | accept, unchanged | routed as it is |
//! | accept, changed | `incoming/<id>` is replaced by the changed message, marked `filtered` (so a router that crashes before routing it does not filter it twice), then routed |
//! | quarantine | as changed, marked to be queued held |
//! | reject (5xx) | every recipient fails with the filter's reply: the sender gets a bounce, since `sendmail` has already said "queued" |
//! | a recipient refused at RCPT | that recipient fails with the reply (a bounce for it); the others go on |
//! | tempfail (4xx), or a failed filter under `tempfail` | left in `incoming/` and filtered again [`RETRY`] later |
//! | discard | removed, logged |
//!
//! **Cost.** One connection per filter per message, each message in turn,
//! its text held in memory while it is filtered (as the smtpd holds it):
//! local submissions are few next to SMTP mail. With no filters
//! configured nothing here runs and no message file is opened.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use skein_mail::EnhancedCode;
use skein_milter::filter::{self, Milters, Outcome, Reply};
use skein_routing::route::{Failure, Routed};
use skein_spool::{Area, FileLock, MessageInfo, QueueId, Recipient, Spool};
use tracing::{error, info, warn};

/// How long a message whose filters said "try again later" waits before
/// it is filtered again.
pub const RETRY: Duration = Duration::from_secs(60);

/// Whether mail of this origin is a local submission, for the router's
/// filters: `sendmail` writing the spool itself, or the pickup of a drop
/// file.
pub fn is_local_submission(origin: &str) -> bool {
    origin.starts_with("sendmail ") || origin.starts_with("pickup ")
}

/// The router's filters and what they left to do.
#[derive(Debug, Default)]
pub struct Filtering {
    milters: Milters,
    /// Messages a filter deferred, and when they may be filtered again.
    later: HashMap<QueueId, Instant>,
}

/// A message to filter, read from `incoming/`.
#[derive(Debug)]
pub struct Candidate {
    info: MessageInfo,
    text: Vec<u8>,
}

/// The recipients of one message that the filters refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejected {
    /// Every recipient fails with this reply (the message was refused).
    pub all: Option<Reply>,
    /// These recipients fail (refused at RCPT), each with its reply.
    pub some: Vec<(String, Reply)>,
}

/// What the filters decided about a batch.
#[derive(Debug, Default)]
pub struct Decided {
    /// Messages to leave out of this pass (deferred, discarded, or not
    /// replaced for an error).
    pub skip: Vec<QueueId>,
    /// Messages a filter deferred: filtered again [`RETRY`] later.
    pub deferred: Vec<QueueId>,
    /// Messages with recipients that fail, and the filter's replies.
    pub rejected: HashMap<QueueId, Rejected>,
    /// Messages to replace in `incoming/` before they are routed.
    pub replace: Vec<(MessageInfo, skein_spool::Envelope, Vec<u8>)>,
    /// Messages to remove.
    pub discard: Vec<QueueId>,
}

impl Filtering {
    /// The filters `list` names, with the `smtpd.milter_*` settings.
    pub fn new(list: &[skein_config::MilterSpec], smtpd: &skein_config::SmtpdConfig) -> Filtering {
        Filtering {
            milters: Milters::configured(list, smtpd),
            later: HashMap::new(),
        }
    }

    /// New filters (a reload); deferrals stay.
    pub fn set(&mut self, list: &[skein_config::MilterSpec], smtpd: &skein_config::SmtpdConfig) {
        self.milters = Milters::configured(list, smtpd);
    }

    /// Whether any filter is configured.
    pub fn is_active(&self) -> bool {
        !self.milters.is_empty()
    }

    /// The filters in force, for the asynchronous part of a pass.
    pub fn milters(&self) -> Milters {
        self.milters.clone()
    }

    /// Of `pending` (every message in `incoming/`), those deferred by a
    /// filter a moment ago, to leave out of this pass. Forgets deferrals
    /// whose wait is over or whose message is no longer pending.
    pub fn waiting(&mut self, pending: &[QueueId], now: Instant) -> Vec<QueueId> {
        self.later
            .retain(|id, until| *until > now && pending.contains(id));
        pending
            .iter()
            .filter(|id| self.later.contains_key(*id))
            .cloned()
            .collect()
    }

    /// Remembers that `id` was deferred.
    pub fn defer(&mut self, id: QueueId, now: Instant) {
        self.later.insert(id, now + RETRY);
    }
}

/// Reads the local submissions among `ids` that the filters have not yet
/// seen. A message that cannot be read is left to the routing, which sets
/// a corrupt one aside and logs why.
pub fn candidates(spool: &Spool, ids: &[QueueId]) -> Vec<Candidate> {
    ids.iter()
        .filter_map(|id| {
            let path = spool.path(Area::Incoming, id);
            let (info, _) = skein_spool::read_header(&path).ok()?;
            if info.filtered || !is_local_submission(&info.envelope.origin) {
                return None;
            }
            let (info, text) = skein_spool::read_message(&path).ok()?;
            Some(Candidate { info, text })
        })
        .collect()
}

/// Runs every candidate through `milters`; `hostname` is `j`.
pub async fn decide(milters: &Milters, hostname: &str, candidates: Vec<Candidate>) -> Decided {
    let mut decided = Decided::default();
    for Candidate { info, text } in candidates {
        let id = info.id.clone();
        let mut message = filter::Message {
            sender: info.envelope.sender.clone(),
            recipients: info
                .envelope
                .recipients
                .iter()
                .map(|r| r.address.clone())
                .collect(),
            text,
        };
        let queue_id = id.to_string();
        let ctx = filter::Context {
            peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_name: "localhost",
            helo: "localhost",
            hostname,
            queue_id: &queue_id,
            auth: None,
            tls: None,
        };
        let (outcome, refused) = filter::run(milters, &ctx, &mut message).await;
        for (rcpt, reply) in &refused {
            info!(queue_id = %id, rcpt = rcpt.as_str(), code = reply.code, text = reply.text.as_str(), "recipient refused by a content filter: it fails");
        }
        if !refused.is_empty() {
            decided.rejected.entry(id.clone()).or_default().some = refused.clone();
        }
        match outcome {
            Outcome::Accept {
                changed: false,
                quarantine: None,
            } => {}
            Outcome::Accept { quarantine, .. } => {
                let mut envelope = info.envelope.clone();
                envelope.sender = message.sender;
                // The refused recipients stay in the envelope: they fail
                // when routed, so that the sender hears of them.
                let mut kept = message.recipients;
                kept.extend(refused.into_iter().map(|(rcpt, _)| rcpt));
                envelope.recipients = Recipient::after_filter(&info.envelope.recipients, &kept);
                let mut info = info;
                info.filtered = true;
                if quarantine.is_some() {
                    info.quarantine = quarantine;
                }
                decided.replace.push((info, envelope, message.text));
            }
            Outcome::Discard => {
                info!(queue_id = %id, origin = info.envelope.origin.as_str(), "discarded by a content filter");
                decided.discard.push(id.clone());
                decided.skip.push(id);
            }
            Outcome::Refuse(reply) if reply.code / 100 == 5 => {
                info!(queue_id = %id, code = reply.code, text = reply.text.as_str(), "refused by a content filter: its recipients fail");
                decided.rejected.entry(id).or_default().all = Some(reply);
            }
            Outcome::Refuse(reply) => {
                info!(
                    queue_id = %id,
                    code = reply.code,
                    text = reply.text.as_str(),
                    retry_in = RETRY.as_secs(),
                    "deferred by a content filter: it stays in incoming/"
                );
                decided.deferred.push(id.clone());
                decided.skip.push(id);
            }
        }
    }
    decided
}

/// Makes the file-system part of `decided` happen: replaced messages are
/// written (fsynced; the rename is made durable with the batch's control
/// files, as the DKIM signer's are) and discarded ones removed. A message
/// that cannot be replaced is left out of this pass, to be filtered again.
pub fn apply(spool: &Spool, decided: &mut Decided) {
    for (info, envelope, text) in std::mem::take(&mut decided.replace) {
        let path = spool.path(Area::Incoming, &info.id);
        let replaced = FileLock::open(&path)
            .and_then(|_lock| spool.replace_incoming(&info, &envelope, &text).map(drop));
        if let Err(e) = replaced {
            error!(queue_id = %info.id, error = %e, "cannot write what the content filters made of a message; it is filtered again later");
            decided.skip.push(info.id.clone());
        }
    }
    for id in &decided.discard {
        let path = spool.path(Area::Incoming, id);
        let removed = FileLock::open(&path).and_then(|_lock| {
            std::fs::remove_file(&path).map_err(|e| skein_spool::SpoolError::io("remove", &path, e))
        });
        if let Err(e) = removed {
            warn!(queue_id = %id, error = %e, "cannot remove a discarded message");
        }
    }
}

/// The failure a filter's `reply` makes of a recipient.
fn failure(reply: &Reply) -> Failure {
    let status = reply
        .enhanced
        .parse::<EnhancedCode>()
        .ok()
        .filter(|c| c.class == 5)
        .unwrap_or(EnhancedCode::NOT_AUTHORIZED);
    Failure {
        status,
        diagnostic: format!(
            "refused by a content filter: {} {} {}",
            reply.code, reply.enhanced, reply.text
        ),
    }
}

/// `routed` with the recipients the filters refused failed: every one
/// for a refused message, else those refused at RCPT (matched by the
/// envelope recipient each routed address came from: its ORCPT, or the
/// address itself).
pub fn fail_refused(routed: Vec<Routed>, rejected: &Rejected) -> Vec<Routed> {
    routed
        .into_iter()
        .map(|mut r| {
            let reply = rejected.all.as_ref().or_else(|| {
                rejected
                    .some
                    .iter()
                    .find(|(rcpt, _)| {
                        r.address.eq_ignore_ascii_case(rcpt)
                            || r.orcpt.as_deref().is_some_and(|o| {
                                o.strip_prefix("rfc822;")
                                    .is_some_and(|o| o.eq_ignore_ascii_case(rcpt))
                            })
                    })
                    .map(|(_, reply)| reply)
            });
            if let Some(reply) = reply {
                r.failure = Some(failure(reply));
            }
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_submissions_are_filtered_here() {
        let cases = [
            ("sendmail uid=1000 user=joe", true),
            ("pickup uid=1000 user=joe", true),
            ("smtp [192.0.2.1] helo=client.example", false),
            ("bounce", false),
            ("", false),
            ("sendmailer", false),
        ];
        for (origin, local) in cases {
            assert_eq!(is_local_submission(origin), local, "{origin:?}");
        }
    }

    #[test]
    fn a_deferred_message_waits_its_retry_and_is_forgotten_once_gone() {
        let mut f = Filtering::default();
        let a = QueueId::generate();
        let b = QueueId::generate();
        let now = Instant::now();
        f.defer(a.clone(), now);
        let pending = [a.clone(), b.clone()];
        assert_eq!(f.waiting(&pending, now), std::slice::from_ref(&a));
        assert_eq!(
            f.waiting(&pending, now + RETRY / 2),
            std::slice::from_ref(&a)
        );
        assert!(
            f.waiting(&pending, now + RETRY).is_empty(),
            "its wait is over"
        );
        f.defer(a.clone(), now);
        assert!(f.waiting(&[b], now).is_empty(), "no longer pending");
        assert!(f.later.is_empty());
    }

    #[test]
    fn a_recipient_refused_at_rcpt_fails_alone() {
        let routed = |address: &str, orcpt: Option<&str>| Routed {
            channel: "local".into(),
            host: "localhost".into(),
            address: address.into(),
            nexthop: None,
            notify: None,
            orcpt: orcpt.map(str::to_owned),
            failure: None,
        };
        let rejected = Rejected {
            all: None,
            some: vec![(
                "list@localhost".into(),
                Reply {
                    code: 550,
                    enhanced: "5.7.1".into(),
                    text: "not for you".into(),
                },
            )],
        };
        let out = fail_refused(
            vec![
                routed("ann@localhost", None),
                // An alias expansion of the refused recipient.
                routed("joe@localhost", Some("rfc822;list@localhost")),
                routed("LIST@localhost", None),
            ],
            &rejected,
        );
        let failed: Vec<bool> = out.iter().map(|r| r.failure.is_some()).collect();
        assert_eq!(failed, [false, true, true]);
    }

    #[test]
    fn a_reject_fails_every_recipient_with_the_filters_reply() {
        let routed = |address: &str| Routed {
            channel: "smtp".into(),
            host: "example.net".into(),
            address: address.into(),
            nexthop: None,
            notify: None,
            orcpt: None,
            failure: None,
        };
        let cases = [
            ("5.7.1", "5.7.1"),
            ("5.7.0", "5.7.0"),
            // Not a permanent code: the filter's own class is 5.
            ("4.7.1", "5.7.1"),
            ("junk", "5.7.1"),
        ];
        for (given, want) in cases {
            let reply = Reply {
                code: 550,
                enhanced: given.into(),
                text: "Infected: Eicar-Test".into(),
            };
            let rejected = Rejected {
                all: Some(reply),
                some: Vec::new(),
            };
            let failed = fail_refused(
                vec![routed("a@example.net"), routed("b@example.net")],
                &rejected,
            );
            assert_eq!(failed.len(), 2);
            for r in failed {
                let f = r.failure.expect("failed");
                assert_eq!(f.status.to_string(), want, "{given}");
                assert!(
                    f.diagnostic.contains("Infected: Eicar-Test"),
                    "{}",
                    f.diagnostic
                );
            }
        }
    }
}
