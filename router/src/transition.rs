//! Transition T2 of `docs/spool.md` for one message: `incoming/<id>`
//! becomes `transport/<id>` + `queue/<id>`. The argument that every crash
//! point is safe is in `docs/router.md`; the order of the steps here is
//! what it relies on:
//!
//! 1. lock `incoming/<id>` (skip it if another process holds it);
//! 2. read and verify it (a corrupt file is set aside, never retried);
//! 3. route, and write the control file with `Spool::create_control`,
//!    which never replaces one: if one exists, an earlier run got this far
//!    (state S1') and its control file stands;
//! 4. move the message into `queue/` without replacing anything, fsync
//!    `queue/` then `incoming/`. If `queue/<id>` already exists the move
//!    happened before and the incoming name is a leftover: unlink it.

use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use skein_spool::durable::{fsync_dir, rename_noreplace};
use skein_spool::{
    Area, ControlFile, ControlRecipient, Envelope, FileLock, MessageInfo, OutcomeKind, QueueId,
    Record, Spool, SpoolError, read_header, verify_body,
};

use crate::error::RouterError;
use crate::header::{self, HeaderFacts};
use crate::route::Routed;

/// What became of one incoming message.
#[derive(Debug)]
pub enum Outcome {
    /// Its control file and message file are in place (state S2).
    Routed(Summary),
    /// Left alone: another process holds its lock, or it is gone.
    Skipped(&'static str),
    /// It failed its checks and was moved into `corrupt/`.
    Quarantined,
}

/// The routed message, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The queue id.
    pub id: QueueId,
    /// The envelope sender (empty for the null sender).
    pub sender: String,
    /// Routed recipients, failed ones included.
    pub recipients: usize,
    /// Failed recipients: `(address, status, diagnostic)`.
    pub failed: Vec<(String, String, String)>,
    /// The header's Message-ID, if any.
    pub message_id: Option<String>,
    /// The control file was already there (a previous run stopped
    /// between writing it and moving the message): it was kept as is.
    pub resumed: bool,
}

impl Summary {
    fn new(control: &ControlFile, facts: &HeaderFacts, resumed: bool) -> Summary {
        let failed = control
            .records
            .iter()
            .filter_map(|record| match record {
                Record::Outcome {
                    rcpt,
                    kind: OutcomeKind::Failed,
                    status,
                    diagnostic,
                    ..
                } => control
                    .recipients
                    .get(*rcpt as usize)
                    .map(|r| (r.address.clone(), status.clone(), diagnostic.clone())),
                _ => None,
            })
            .collect();
        Summary {
            id: control.id.clone(),
            sender: control.envelope.sender.clone(),
            recipients: control.recipients.len(),
            failed,
            message_id: facts.message_id.clone(),
            resumed,
        }
    }
}

/// Routes `incoming/<id>` with `route`, which gets the message's header and
/// what the header section says. An error leaves the message in
/// `incoming/` (it is tried again later); a crash at any point leaves a
/// state the next run completes.
pub fn route_incoming(
    spool: &Spool,
    id: &QueueId,
    route: impl FnOnce(&MessageInfo, &HeaderFacts) -> io::Result<Vec<Routed>>,
) -> Result<Outcome, RouterError> {
    let path = spool.path(Area::Incoming, id);
    // Held until the message has left incoming/: the lock follows the
    // inode through the rename.
    let _lock = match FileLock::open(&path) {
        Ok(lock) => lock,
        Err(SpoolError::Locked { .. }) => return Ok(Outcome::Skipped("locked by another process")),
        Err(e) if e.is_not_found() => return Ok(Outcome::Skipped("gone")),
        Err(e) => return Err(e.into()),
    };
    let (info, mut file) = match read_header(&path) {
        Ok(read) => read,
        Err(e) => return set_aside(spool, id, &path, e),
    };
    if let Err(e) = verify_body(&info, &mut file, &path) {
        return set_aside(spool, id, &path, e);
    }
    if info.id != *id {
        let reason = format!("its header names message {} (file name {id})", info.id);
        return set_aside(
            spool,
            id,
            &path,
            SpoolError::Corrupt {
                path: path.clone(),
                reason,
            },
        );
    }
    let facts = header::read_facts(&mut file, &info).map_err(|source| SpoolError::Io {
        op: "read",
        path: path.clone(),
        source,
    })?;
    let routed = route(&info, &facts).map_err(|source| RouterError::UserLookup {
        id: id.clone(),
        source,
    })?;
    let control = control_file(&info, routed, now_micros());
    let summary = match place_control(spool, &control)? {
        None => Summary::new(&control, &facts, false),
        Some(existing) => Summary::new(&existing, &facts, true),
    };
    move_to_queue(spool, id)?;
    Ok(Outcome::Routed(summary))
}

/// The control file for a routed message: failed recipients carry an
/// initial `failed` outcome (attempt 0) so that the scheduler bounces them.
pub fn control_file(info: &MessageInfo, routed: Vec<Routed>, now: u64) -> ControlFile {
    let mut recipients = Vec::with_capacity(routed.len());
    let mut records = Vec::new();
    for (index, r) in routed.into_iter().enumerate() {
        let index = index as u32;
        if let Some(failure) = r.failure {
            records.push(Record::Outcome {
                rcpt: index,
                at: now,
                kind: OutcomeKind::Failed,
                attempt: 0,
                status: failure.status.to_owned(),
                retry_at: None,
                reply: None,
                remote_mta: None,
                diagnostic: failure.diagnostic,
            });
        }
        recipients.push(ControlRecipient {
            index,
            channel: r.channel,
            host: r.host,
            address: r.address,
            nexthop: r.nexthop,
            notify: r.notify,
            orcpt: r.orcpt,
        });
    }
    ControlFile {
        id: info.id.clone(),
        arrival_micros: info.arrival_micros,
        envelope: Envelope {
            recipients: Vec::new(),
            ..info.envelope.clone()
        },
        message: format!("queue/{}", info.id),
        offset: info.offset,
        size: info.size,
        recipients,
        records,
    }
}

/// Step 3: write the control file unless one exists (S1'), in which case
/// that one is returned. An existing one that does not parse cannot have
/// been written by `create_control` (it renames only whole, fsynced
/// files), so it is damage: it is set aside and replaced, which still
/// leaves one control file for the message.
fn place_control(spool: &Spool, control: &ControlFile) -> Result<Option<ControlFile>, RouterError> {
    if spool.create_control(control)? {
        return Ok(None);
    }
    let path = spool.path(Area::Transport, &control.id);
    match ControlFile::read(&path) {
        Ok((existing, _torn)) => return Ok(Some(existing)),
        Err(SpoolError::Corrupt { reason, .. }) => {
            spool.quarantine(
                &path,
                &format!("control file of a message not yet queued: {reason}"),
            )?;
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    if spool.create_control(control)? {
        Ok(None)
    } else {
        // Nobody but the router writes transport/<id> before the message
        // is queued, and this router holds the message's lock.
        Err(RouterError::Bug(format!(
            "a control file for {} appeared while its message was locked",
            control.id
        )))
    }
}

/// Step 4: `incoming/<id>` → `queue/<id>`, durably.
fn move_to_queue(spool: &Spool, id: &QueueId) -> Result<(), RouterError> {
    let from = spool.path(Area::Incoming, id);
    let to = spool.path(Area::Queue, id);
    if rename_noreplace(&from, &to)? {
        // The new name first: once it is durable the message cannot be
        // lost whatever happens to the old one.
        fsync_dir(&spool.dir(Area::Queue))?;
    } else {
        // queue/<id> exists: an earlier move got as far as the link of
        // the link + unlink fallback. Same file; drop the old name.
        match std::fs::remove_file(&from) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(SpoolError::Io {
                    op: "unlink",
                    path: from,
                    source,
                }
                .into());
            }
        }
        tracing::info!(queue_id = %id, "removed the incoming name of a message already queued");
    }
    // No fsync of incoming/: if a power loss undoes the removal of the old
    // name, the message is found in incoming/ with its control file and
    // finished again as state S1' — nothing is lost or routed twice.
    Ok(())
}

/// A message that failed its checks goes to `corrupt/`, with the control
/// file of an interrupted earlier routing (useless without its message).
fn set_aside(
    spool: &Spool,
    id: &QueueId,
    path: &Path,
    error: SpoolError,
) -> Result<Outcome, RouterError> {
    match error {
        SpoolError::Corrupt { reason, .. } => {
            spool.quarantine(path, &reason)?;
            let control = spool.path(Area::Transport, id);
            if control.exists() && !spool.path(Area::Queue, id).exists() {
                spool.quarantine(&control, "its message file in incoming/ was corrupt")?;
            }
            Ok(Outcome::Quarantined)
        }
        e if e.is_not_found() => Ok(Outcome::Skipped("gone")),
        e => Err(e.into()),
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Failure;
    use skein_spool::Recipient;

    fn submit(spool: &Spool, rcpts: &[&str], message: &[u8]) -> QueueId {
        let envelope = Envelope {
            sender: "joe@example.net".into(),
            recipients: rcpts.iter().map(|r| Recipient::new(*r)).collect(),
            origin: "test".into(),
            ..Default::default()
        };
        let mut w = spool.create_incoming(&envelope).unwrap();
        w.write_message(message).unwrap();
        w.commit().unwrap()
    }

    fn routed(address: &str, failure: Option<Failure>) -> Routed {
        Routed {
            channel: if failure.is_some() { "error" } else { "local" }.into(),
            host: if failure.is_some() { "router" } else { "ann" }.into(),
            address: address.into(),
            nexthop: None,
            notify: None,
            orcpt: None,
            failure,
        }
    }

    fn simple_route(_: &MessageInfo, _: &HeaderFacts) -> io::Result<Vec<Routed>> {
        Ok(vec![
            routed("ann@localhost", None),
            routed(
                "x@localhost",
                Some(Failure {
                    status: "5.1.1",
                    diagnostic: "no such local user: x".into(),
                }),
            ),
        ])
    }

    const MESSAGE: &[u8] = b"Received: a\r\nReceived: b\r\nMessage-ID: <m1@x>\r\n\r\nbody\r\n";

    #[test]
    fn routes_into_transport_and_queue() {
        let d = tempfile::tempdir().unwrap();
        let spool = Spool::open(d.path()).unwrap();
        let id = submit(&spool, &["ann@localhost", "x@localhost"], MESSAGE);
        let mut seen = None;
        let outcome = route_incoming(&spool, &id, |info, facts| {
            seen = Some((info.id.clone(), facts.clone()));
            simple_route(info, facts)
        })
        .unwrap();
        let (seen_id, facts) = seen.unwrap();
        assert_eq!(seen_id, id);
        assert_eq!(facts.received, 2);
        let Outcome::Routed(summary) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(summary.recipients, 2);
        assert_eq!(
            summary.failed,
            vec![(
                "x@localhost".into(),
                "5.1.1".into(),
                "no such local user: x".into()
            )]
        );
        assert_eq!(summary.message_id.as_deref(), Some("m1@x"));
        assert!(!summary.resumed);
        assert!(!spool.path(Area::Incoming, &id).exists());
        let (info, bytes) = skein_spool::read_message(&spool.path(Area::Queue, &id)).unwrap();
        assert_eq!(bytes, MESSAGE);
        let (control, torn) = ControlFile::read(&spool.path(Area::Transport, &id)).unwrap();
        assert!(!torn);
        assert_eq!(control.message, format!("queue/{id}"));
        assert_eq!((control.offset, control.size), (info.offset, info.size));
        assert!(control.envelope.recipients.is_empty());
        assert_eq!(control.envelope.sender, "joe@example.net");
        assert_eq!(control.recipients.len(), 2);
        assert!(matches!(
            &control.records[..],
            [Record::Outcome { rcpt: 1, kind: OutcomeKind::Failed, attempt: 0, status, .. }] if status == "5.1.1"
        ));
    }

    #[test]
    fn an_existing_control_file_is_kept_and_the_move_completed() {
        let d = tempfile::tempdir().unwrap();
        let spool = Spool::open(d.path()).unwrap();
        let id = submit(&spool, &["ann@localhost"], MESSAGE);
        // State S1': an earlier run wrote the control file, then died.
        let (info, _) = read_header(&spool.path(Area::Incoming, &id)).unwrap();
        let earlier = control_file(&info, vec![routed("earlier@localhost", None)], 1);
        assert!(spool.create_control(&earlier).unwrap());
        let outcome = route_incoming(&spool, &id, simple_route).unwrap();
        let Outcome::Routed(summary) = outcome else {
            panic!("{outcome:?}")
        };
        assert!(summary.resumed);
        assert_eq!(summary.recipients, 1);
        let (control, _) = ControlFile::read(&spool.path(Area::Transport, &id)).unwrap();
        assert_eq!(control, earlier, "never rewritten");
        assert!(spool.path(Area::Queue, &id).exists());
        assert!(!spool.path(Area::Incoming, &id).exists());
    }

    #[test]
    fn a_leftover_incoming_name_of_a_queued_message_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let spool = Spool::open(d.path()).unwrap();
        let id = submit(&spool, &["ann@localhost"], MESSAGE);
        let (info, _) = read_header(&spool.path(Area::Incoming, &id)).unwrap();
        let earlier = control_file(&info, vec![routed("ann@localhost", None)], 1);
        assert!(spool.create_control(&earlier).unwrap());
        // The link of link + unlink happened, the unlink did not.
        std::fs::hard_link(
            spool.path(Area::Incoming, &id),
            spool.path(Area::Queue, &id),
        )
        .unwrap();
        let outcome = route_incoming(&spool, &id, simple_route).unwrap();
        assert!(matches!(
            outcome,
            Outcome::Routed(Summary { resumed: true, .. })
        ));
        assert!(!spool.path(Area::Incoming, &id).exists());
        skein_spool::read_message(&spool.path(Area::Queue, &id)).unwrap();
    }

    #[test]
    fn a_damaged_control_file_of_an_unqueued_message_is_replaced() {
        let d = tempfile::tempdir().unwrap();
        let spool = Spool::open(d.path()).unwrap();
        let id = submit(&spool, &["ann@localhost"], MESSAGE);
        std::fs::write(spool.path(Area::Transport, &id), "garbage\n").unwrap();
        let outcome = route_incoming(&spool, &id, simple_route).unwrap();
        assert!(matches!(
            outcome,
            Outcome::Routed(Summary {
                resumed: false,
                recipients: 2,
                ..
            })
        ));
        ControlFile::read(&spool.path(Area::Transport, &id)).unwrap();
        let corrupt = spool.dir(Area::Corrupt).join(format!("transport.{id}"));
        assert_eq!(std::fs::read_to_string(corrupt).unwrap(), "garbage\n");
    }

    #[test]
    fn corrupt_messages_are_set_aside_with_their_control_file() {
        let d = tempfile::tempdir().unwrap();
        let spool = Spool::open(d.path()).unwrap();
        let id = submit(&spool, &["ann@localhost"], MESSAGE);
        let path = spool.path(Area::Incoming, &id);
        let (info, _) = read_header(&path).unwrap();
        assert!(
            spool
                .create_control(&control_file(&info, vec![routed("a@b", None)], 1))
                .unwrap()
        );
        // Flip a byte of the message: the checksum no longer matches.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x20;
        std::fs::write(&path, bytes).unwrap();
        let mut called = false;
        let outcome = route_incoming(&spool, &id, |_, _| {
            called = true;
            Ok(vec![])
        })
        .unwrap();
        assert!(matches!(outcome, Outcome::Quarantined), "{outcome:?}");
        assert!(!called);
        assert!(!path.exists());
        assert!(!spool.path(Area::Transport, &id).exists());
        let corrupt = spool.dir(Area::Corrupt);
        assert!(corrupt.join(format!("incoming.{id}")).exists());
        assert!(corrupt.join(format!("incoming.{id}.why")).exists());
        assert!(corrupt.join(format!("transport.{id}")).exists());
        assert!(!spool.path(Area::Queue, &id).exists());
    }

    #[test]
    fn locked_and_vanished_messages_are_skipped() {
        let d = tempfile::tempdir().unwrap();
        let spool = Spool::open(d.path()).unwrap();
        let id = submit(&spool, &["ann@localhost"], MESSAGE);
        let lock = FileLock::open(&spool.path(Area::Incoming, &id)).unwrap();
        let outcome = route_incoming(&spool, &id, simple_route).unwrap();
        assert!(matches!(outcome, Outcome::Skipped(_)));
        assert!(spool.path(Area::Incoming, &id).exists());
        drop(lock);
        let gone = QueueId::from_parts(1, 2, 3);
        assert!(matches!(
            route_incoming(&spool, &gone, simple_route).unwrap(),
            Outcome::Skipped("gone")
        ));
    }

    #[test]
    fn a_routing_error_leaves_the_message_in_incoming() {
        let d = tempfile::tempdir().unwrap();
        let spool = Spool::open(d.path()).unwrap();
        let id = submit(&spool, &["ann@localhost"], MESSAGE);
        let e = route_incoming(&spool, &id, |_, _| Err(io::Error::other("nss down"))).unwrap_err();
        assert!(matches!(e, RouterError::UserLookup { .. }), "{e}");
        assert!(spool.path(Area::Incoming, &id).exists());
        assert!(!spool.path(Area::Transport, &id).exists());
    }
}
