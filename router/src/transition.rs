//! Transition T2 of `docs/spool.md`: `incoming/<id>` becomes
//! `transport/<id>` + `queue/<id>`. The argument that every crash point is
//! safe is in `docs/router.md`; the order of the steps here, per message,
//! is what it relies on:
//!
//! 1. lock `incoming/<id>` (skip it if another process holds it);
//! 2. read and verify it (a corrupt file is set aside, never retried);
//! 3. route, and write the control file with `Spool::create_controls`,
//!    which never replaces one: if one exists, an earlier run got this far
//!    (state S1') and its control file stands;
//! 4. move the message into `queue/` without replacing anything, then
//!    fsync `queue/`. If `queue/<id>` already exists the move happened
//!    before and the incoming name is a leftover: unlink it.
//!
//! [`route_batch`] takes many messages through these steps together — a
//! group commit: steps 1-3 for each, one durable write of all their
//! control files, every move, one fsync of `queue/` — so a batch costs
//! three fsync latencies rather than three per message. No message's
//! step 4 starts before its own step 3 is durable.

use std::collections::BTreeSet;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use skein_spool::durable::{fsync_dir, rename_noreplace};
use skein_spool::{
    Area, ControlFile, ControlRecipient, Envelope, FileLock, MessageInfo, OutcomeKind, QueueId,
    Record, Spool, SpoolError, read_header, verify_body,
};

use crate::error::RouterError;
use crate::header::{self, HeaderFacts};
use skein_dkim::Signer;
use skein_routing::route::Routed;

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
    /// Where it came from (`sendmail uid=1000 user=joe`, `smtp …`).
    pub origin: String,
    /// Its size in bytes.
    pub size: u64,
    /// The DKIM signature the router added: `d=example.org s=s2026
    /// a=ed25519-sha256`; empty when it signed nothing.
    pub dkim: String,
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
                    .map(|r| (r.address.clone(), status.to_string(), diagnostic.clone())),
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
            origin: control.envelope.origin.clone(),
            size: control.size,
            dkim: String::new(),
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
    route: impl FnMut(&MessageInfo, &HeaderFacts) -> io::Result<Vec<Routed>>,
) -> Result<Outcome, RouterError> {
    route_batch(spool, std::slice::from_ref(id), None, route)
        .pop()
        .map(|(_, outcome)| outcome)
        .unwrap_or_else(|| Err(RouterError::Bug("a batch of one gave no outcome".into())))
}

/// Routes a batch of messages as one group commit (each step of the
/// module's list done for the whole batch before the next one starts):
/// every message is locked, checked and routed and its control file
/// written; the control files are made durable together and `transport/`
/// is fsynced once ([`Spool::create_controls`]); then every message is
/// moved into `queue/` and `queue/` is fsynced once. A batch thus costs
/// about three fsync latencies however many messages it holds, where one
/// message at a time costs three each. The order per message, and so the
/// crash argument, is that of [`route_incoming`]. One outcome per id, in
/// order; one message's failure does not hold up the others.
pub fn route_batch(
    spool: &Spool,
    ids: &[QueueId],
    signer: Option<&Signer>,
    mut route: impl FnMut(&MessageInfo, &HeaderFacts) -> io::Result<Vec<Routed>>,
) -> Vec<(QueueId, Result<Outcome, RouterError>)> {
    // Step 1-3 (reading and routing) per message; `write` holds the control
    // files still to be written, `ready` what is left to finish.
    let mut outcomes: Vec<Option<Result<Outcome, RouterError>>> = Vec::with_capacity(ids.len());
    let mut ready = Vec::new();
    let mut write = Vec::new();
    let mut rewritten = Vec::new();
    for (index, id) in ids.iter().enumerate() {
        outcomes.push(None);
        match prepare(spool, id, signer, &mut route) {
            Ok(Prepared::Done(outcome)) => outcomes[index] = Some(Ok(outcome)),
            Ok(Prepared::Resumed { lock, summary }) => ready.push((index, lock, summary)),
            Ok(Prepared::New {
                lock,
                control,
                summary,
            }) => {
                if !summary.dkim.is_empty() {
                    rewritten.push(index);
                }
                write.push((index, control));
                ready.push((index, lock, summary));
            }
            Err(e) => outcomes[index] = Some(Err(e)),
        }
    }
    // Step 2b, for the batch: the signed copies renamed over their
    // incoming names are made durable before any control file describes
    // them (a control file must never outlive the file it describes).
    if !rewritten.is_empty()
        && let Err(e) = fsync_dir(&spool.dir(Area::Incoming))
    {
        let why = e.to_string();
        write.retain(|(index, _)| !rewritten.contains(index));
        ready.retain(|(index, _, _)| !rewritten.contains(index));
        for index in rewritten {
            outcomes[index] = Some(Err(RouterError::Bug(format!(
                "the signed copy of {} is not durable: {why}",
                ids[index]
            ))));
        }
    }
    // Step 3, for the batch: the new control files, durably.
    let controls: Vec<&ControlFile> = write.iter().map(|(_, control)| &**control).collect();
    let written = spool.create_controls(&controls);
    let mut failed = BTreeSet::new();
    for ((index, control), result) in write.iter().zip(written) {
        let error = match result {
            Ok(true) => continue,
            // Nobody but the router writes transport/<id> before the
            // message is queued, and this router holds the message's lock.
            Ok(false) => RouterError::Bug(format!(
                "a control file for {} appeared while its message was locked",
                control.id
            )),
            Err(e) => e.into(),
        };
        outcomes[*index] = Some(Err(error));
        failed.insert(*index);
    }
    // Step 4, for the batch: into queue/, then one fsync of queue/.
    let mut moved = Vec::new();
    for (index, lock, summary) in ready {
        if failed.contains(&index) {
            continue;
        }
        match move_to_queue(spool, &ids[index]) {
            Ok(renamed) => moved.push((index, lock, summary, renamed)),
            Err(e) => outcomes[index] = Some(Err(e)),
        }
    }
    let synced = if moved.iter().any(|(_, _, _, renamed)| *renamed) {
        fsync_dir(&spool.dir(Area::Queue)).map_err(|e| e.to_string())
    } else {
        Ok(())
    };
    for (index, lock, summary, renamed) in moved {
        outcomes[index] = Some(match (&synced, renamed) {
            (Err(why), true) => Err(RouterError::Bug(format!(
                "{} moved into queue/ but not made durable: {why}",
                ids[index]
            ))),
            _ => Ok(Outcome::Routed(summary)),
        });
        // The lock is held until the message is in queue/ for good.
        drop(lock);
    }
    ids.iter()
        .cloned()
        .zip(outcomes)
        .map(|(id, outcome)| {
            let outcome = outcome.unwrap_or_else(|| {
                Err(RouterError::Bug(format!(
                    "{id} was left without an outcome"
                )))
            });
            (id, outcome)
        })
        .collect()
}

/// A message after steps 1-3 of the module's list, before its control
/// file is durable.
enum Prepared {
    /// Nothing more to do (skipped or set aside).
    Done(Outcome),
    /// Its control file exists from an earlier run (S1'): only the move is
    /// left.
    Resumed { lock: FileLock, summary: Summary },
    /// Routed: `control` is to be written, then the message moved.
    New {
        lock: FileLock,
        control: Box<ControlFile>,
        summary: Summary,
    },
}

/// Steps 1-3 for one message, short of writing its control file.
fn prepare(
    spool: &Spool,
    id: &QueueId,
    signer: Option<&Signer>,
    route: &mut impl FnMut(&MessageInfo, &HeaderFacts) -> io::Result<Vec<Routed>>,
) -> Result<Prepared, RouterError> {
    let path = spool.path(Area::Incoming, id);
    // Held until the message has left incoming/: the lock follows the
    // inode through the rename.
    let lock = match FileLock::open(&path) {
        Ok(lock) => lock,
        Err(SpoolError::Locked { .. }) => {
            return Ok(Prepared::Done(Outcome::Skipped(
                "locked by another process",
            )));
        }
        Err(e) if e.is_not_found() => return Ok(Prepared::Done(Outcome::Skipped("gone"))),
        Err(e) => return Err(e.into()),
    };
    let (info, mut file) = match read_header(&path) {
        Ok(read) => read,
        Err(e) => return set_aside(spool, id, &path, e).map(Prepared::Done),
    };
    if let Err(e) = verify_body(&info, &mut file, &path) {
        return set_aside(spool, id, &path, e).map(Prepared::Done);
    }
    if info.id != *id {
        let reason = format!("its header names message {} (file name {id})", info.id);
        let e = SpoolError::Corrupt {
            path: path.clone(),
            reason,
        };
        return set_aside(spool, id, &path, e).map(Prepared::Done);
    }
    let facts = header::read_facts(&mut file, &info).map_err(|source| SpoolError::Io {
        op: "read",
        path: path.clone(),
        source,
    })?;
    if let Some(existing) = existing_control(spool, id)? {
        let summary = Summary::new(&existing, &facts, true);
        return Ok(Prepared::Resumed { lock, summary });
    }
    let routed = route(&info, &facts).map_err(|source| RouterError::UserLookup {
        id: id.clone(),
        source,
    })?;
    let (info, lock, dkim) = match signer {
        Some(signer) if leaves_this_host(&routed) => {
            sign_in_place(spool, &path, info, file, lock, signer)?
        }
        _ => (info, lock, String::new()),
    };
    let mut control = control_file(&info, routed, now_micros());
    // A content filter asked for the message to be held (quarantine):
    // it is queued held, as `skein queue hold` would leave it, until an
    // administrator releases or deletes it.
    if let Some(reason) = &info.quarantine {
        tracing::info!(queue_id = %info.id, reason = %reason, "held: quarantined by a content filter");
        control.records.push(Record::Held { at: now_micros() });
    }
    let mut summary = Summary::new(&control, &facts, false);
    summary.dkim = dkim;
    Ok(Prepared::New {
        lock,
        control: Box::new(control),
        summary,
    })
}

/// Whether some recipient goes to another host: a channel other than
/// `local`, not failed. Only such mail is signed.
fn leaves_this_host(routed: &[Routed]) -> bool {
    routed
        .iter()
        .any(|r| r.failure.is_none() && r.channel != "local")
}

/// Step 2b: signs the message with its `From:` domain's key and replaces
/// `incoming/<id>` by the signed copy ([`Spool::replace_incoming`]), so
/// that every attempt sends the same signed bytes. Returns the new file's
/// header and lock and what was signed (`d=… s=… a=…`), or the old ones
/// and `""` when nothing was. A message already signed by its entry (an
/// earlier run got this far and stopped) is not signed again. A signature
/// the library fails to make is logged and the message goes unsigned:
/// holding mail back for it would only delay it until it expired.
fn sign_in_place(
    spool: &Spool,
    path: &Path,
    info: MessageInfo,
    mut file: std::fs::File,
    lock: FileLock,
    signer: &Signer,
) -> Result<(MessageInfo, FileLock, String), RouterError> {
    let io_error = |op: &'static str, source: io::Error| SpoolError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    file.seek(SeekFrom::Start(info.offset))
        .map_err(|e| io_error("seek", e))?;
    let mut message = Vec::with_capacity(info.size as usize);
    file.read_to_end(&mut message)
        .map_err(|e| io_error("read", e))?;
    // An 8-bit body is made 7-bit first and the 7-bit form is signed, so
    // that a server without 8BITMIME gets the signed bytes unchanged (a
    // conversion after signing would break the body hash). A message
    // that needs SMTPUTF8 stays as it is (it cannot go to such a server
    // anyway), and so does one that cannot be converted (the SMTP agent
    // fails it 5.6.3 for such a server, and sends it as it is elsewhere).
    let mut envelope = info.envelope.clone();
    if info.eightbit && !envelope.smtputf8 {
        match skein_mail::downgrade::to_seven_bit(&message) {
            Ok(converted) => {
                if let std::borrow::Cow::Owned(converted) = converted {
                    tracing::info!(
                        queue_id = %info.id,
                        size = message.len(),
                        converted = converted.len(),
                        "8-bit message converted to 7 bits before signing"
                    );
                    message = converted;
                }
                envelope.body = skein_mail::BodyType::SevenBit;
            }
            Err(e) => {
                tracing::info!(queue_id = %info.id, reason = %e, "8-bit message signed as it is: it cannot be converted to 7 bits");
            }
        }
    }
    let signed = match signer.sign(&message) {
        Ok(Ok(signed)) => signed,
        Ok(Err(why)) => {
            tracing::debug!(queue_id = %info.id, ?why, "not signed");
            return Ok((info, lock, String::new()));
        }
        Err(e) => {
            tracing::error!(queue_id = %info.id, error = %e, "DKIM signing failed: the message goes unsigned");
            return Ok((info, lock, String::new()));
        }
    };
    let mut bytes = signed.field.into_bytes();
    bytes.extend_from_slice(&message);
    let (new_info, new_lock) = spool.replace_incoming(&info, &envelope, &bytes)?;
    // The old file's lock goes with the old inode; the new one was locked
    // before it took the name.
    drop(lock);
    let what = format!(
        "d={} s={} a={}",
        signed.domain, signed.selector, signed.algorithm
    );
    Ok((new_info, new_lock, what))
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
                status: failure.status,
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

/// Step 3's check: the control file an earlier run wrote for `id` before
/// it could move the message (S1'), which stands. One that does not parse
/// cannot have been written by `create_control` (it renames only whole,
/// fsynced files), so it is damage: it is set aside and the message is
/// routed afresh, which still leaves one control file for it.
fn existing_control(spool: &Spool, id: &QueueId) -> Result<Option<ControlFile>, RouterError> {
    let path = spool.path(Area::Transport, id);
    match ControlFile::read(&path) {
        Ok((existing, _torn)) => Ok(Some(existing)),
        Err(SpoolError::Corrupt { reason, .. }) => {
            spool.quarantine(
                &path,
                &format!("control file of a message not yet queued: {reason}"),
            )?;
            Ok(None)
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Step 4: `incoming/<id>` → `queue/<id>`. Returns whether it renamed,
/// in which case the caller fsyncs `queue/` before it reports the message
/// routed: once the new name is durable the message cannot be lost,
/// whatever happens to the old one.
fn move_to_queue(spool: &Spool, id: &QueueId) -> Result<bool, RouterError> {
    let from = spool.path(Area::Incoming, id);
    let to = spool.path(Area::Queue, id);
    if rename_noreplace(&from, &to)? {
        return Ok(true);
    }
    // queue/<id> exists: an earlier move got as far as the link of the
    // link + unlink fallback. Same file; drop the old name.
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
    // No fsync of incoming/: if a power loss undoes the removal of the old
    // name, the message is found in incoming/ with its control file and
    // finished again as state S1' — nothing is lost or routed twice.
    Ok(false)
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
    use skein_routing::route::Failure;
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
                    status: "5.1.1".parse().unwrap(),
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
            [Record::Outcome { rcpt: 1, kind: OutcomeKind::Failed, attempt: 0, status, .. }] if status.to_string() == "5.1.1"
        ));
    }

    fn remote_route(_: &MessageInfo, _: &HeaderFacts) -> io::Result<Vec<Routed>> {
        Ok(vec![Routed {
            channel: "smtp".into(),
            host: "remote.test".into(),
            address: "bob@remote.test".into(),
            nexthop: None,
            notify: None,
            orcpt: None,
            failure: None,
        }])
    }

    /// A signer for `From: …@example.org` with a fresh Ed25519 key.
    fn signer(dir: &Path) -> Signer {
        let key = skein_dkim::generate(skein_config::DkimAlgorithm::Ed25519Sha256).unwrap();
        let path = dir.join("ed.key");
        std::fs::write(&path, key.pem).unwrap();
        Signer::load(&[skein_config::DkimKey {
            domain: "example.org".into(),
            selector: "s1".into(),
            signing_domain: String::new(),
            key: path,
            algorithm: skein_config::DkimAlgorithm::Ed25519Sha256,
            headers: vec!["From".into(), "Subject".into()],
            canonicalization: (
                skein_config::Canonicalization::Relaxed,
                skein_config::Canonicalization::Relaxed,
            ),
        }])
        .unwrap()
    }

    const FROM_US: &[u8] = b"From: joe@example.org\r\nSubject: hi\r\n\r\nbody\r\n";

    fn signatures(bytes: &[u8]) -> usize {
        String::from_utf8_lossy(bytes)
            .lines()
            .filter(|l| l.starts_with("DKIM-Signature:"))
            .count()
    }

    #[test]
    fn mail_for_another_host_is_queued_signed_and_the_control_file_describes_the_signed_file() {
        let d = tempfile::tempdir().unwrap();
        let spool = Spool::open(d.path().join("spool")).unwrap();
        let signer = signer(d.path());
        let remote = submit(&spool, &["bob@remote.test"], FROM_US);
        let local = submit(&spool, &["ann@localhost"], FROM_US);
        let (before, _) = read_header(&spool.path(Area::Incoming, &remote)).unwrap();
        let outcomes = route_batch(
            &spool,
            std::slice::from_ref(&remote),
            Some(&signer),
            remote_route,
        );
        let Ok(Outcome::Routed(summary)) = &outcomes[0].1 else {
            panic!("{outcomes:?}")
        };
        assert_eq!(summary.dkim, "d=example.org s=s1 a=ed25519-sha256");
        let (info, bytes) = skein_spool::read_message(&spool.path(Area::Queue, &remote)).unwrap();
        assert_eq!(signatures(&bytes), 1);
        assert!(
            bytes.ends_with(FROM_US),
            "the message follows the signature"
        );
        assert_eq!(info.arrival_micros, before.arrival_micros, "arrival kept");
        assert_eq!(info.envelope, before.envelope);
        let (control, _) = ControlFile::read(&spool.path(Area::Transport, &remote)).unwrap();
        assert_eq!((control.offset, control.size), (info.offset, info.size));
        // Local mail only: left as it came.
        let outcomes = route_batch(
            &spool,
            std::slice::from_ref(&local),
            Some(&signer),
            simple_route,
        );
        let Ok(Outcome::Routed(summary)) = &outcomes[0].1 else {
            panic!("{outcomes:?}")
        };
        assert_eq!(summary.dkim, "");
        let (_, bytes) = skein_spool::read_message(&spool.path(Area::Queue, &local)).unwrap();
        assert_eq!(bytes, FROM_US);
        assert!(
            std::fs::read_dir(spool.dir(Area::Tmp))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn crash_after_the_signed_copy_replaced_the_incoming_file_signs_nothing_twice() {
        let d = tempfile::tempdir().unwrap();
        let spool = Spool::open(d.path().join("spool")).unwrap();
        let signer = signer(d.path());
        let id = submit(&spool, &["bob@remote.test"], FROM_US);
        // An earlier run signed the message and renamed the copy over
        // incoming/<id>, then died before writing the control file.
        let path = spool.path(Area::Incoming, &id);
        let (info, bytes) = skein_spool::read_message(&path).unwrap();
        let signed = signer.sign(&bytes).unwrap().unwrap();
        let mut copy = signed.field.clone().into_bytes();
        copy.extend_from_slice(&bytes);
        let (_, lock) = spool
            .replace_incoming(&info, &info.envelope, &copy)
            .unwrap();
        drop(lock);
        let outcomes = route_batch(
            &spool,
            std::slice::from_ref(&id),
            Some(&signer),
            remote_route,
        );
        let Ok(Outcome::Routed(summary)) = &outcomes[0].1 else {
            panic!("{outcomes:?}")
        };
        assert_eq!(summary.dkim, "", "already signed: not signed again");
        let (_, queued) = skein_spool::read_message(&spool.path(Area::Queue, &id)).unwrap();
        assert_eq!(queued, copy, "the earlier run's signed copy, as it was");
        assert_eq!(signatures(&queued), 1);
    }

    #[test]
    fn crash_while_writing_the_signed_copy_leaves_the_message_as_it_was() {
        let d = tempfile::tempdir().unwrap();
        let spool = Spool::open(d.path().join("spool")).unwrap();
        let signer = signer(d.path());
        let id = submit(&spool, &["bob@remote.test"], FROM_US);
        // A half-written copy in tmp/ of a writer that is gone (pid 0 is
        // never a live process): incoming/<id> is untouched.
        let stale = spool.dir(Area::Tmp).join(format!("0.{id}.new"));
        std::fs::write(&stale, b"SKEIN-MESSAGE 1\nid ").unwrap();
        let cleaned = spool.clean_stale_tmp().unwrap();
        assert_eq!(cleaned.removed, vec![stale]);
        let outcomes = route_batch(
            &spool,
            std::slice::from_ref(&id),
            Some(&signer),
            remote_route,
        );
        let Ok(Outcome::Routed(summary)) = &outcomes[0].1 else {
            panic!("{outcomes:?}")
        };
        assert!(!summary.dkim.is_empty());
        let (_, queued) = skein_spool::read_message(&spool.path(Area::Queue, &id)).unwrap();
        assert_eq!(signatures(&queued), 1);
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
    fn a_batch_gives_one_outcome_per_message_in_order() {
        let d = tempfile::tempdir().unwrap();
        let spool = Spool::open(d.path()).unwrap();
        let ids: Vec<QueueId> = (0..6)
            .map(|_| submit(&spool, &["ann@localhost"], MESSAGE))
            .collect();
        // 1 is locked by someone else, 2 is damaged, 3 was half routed by
        // an earlier run (S1'), 5 fails its user lookup.
        let lock = FileLock::open(&spool.path(Area::Incoming, &ids[1])).unwrap();
        let damaged = spool.path(Area::Incoming, &ids[2]);
        let mut bytes = std::fs::read(&damaged).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x20;
        std::fs::write(&damaged, bytes).unwrap();
        let (info, _) = read_header(&spool.path(Area::Incoming, &ids[3])).unwrap();
        let earlier = control_file(&info, vec![routed("earlier@localhost", None)], 1);
        assert!(spool.create_control(&earlier).unwrap());
        let failing = ids[5].clone();
        let outcomes = route_batch(&spool, &ids, None, |info, facts| {
            if info.id == failing {
                Err(io::Error::other("nss down"))
            } else {
                simple_route(info, facts)
            }
        });
        let got: Vec<&QueueId> = outcomes.iter().map(|(id, _)| id).collect();
        assert_eq!(got, ids.iter().collect::<Vec<_>>(), "in order");
        let kinds: Vec<String> = outcomes
            .iter()
            .map(|(_, o)| match o {
                Ok(Outcome::Routed(s)) => format!("routed resumed={}", s.resumed),
                Ok(Outcome::Skipped(why)) => format!("skipped {why}"),
                Ok(Outcome::Quarantined) => "quarantined".into(),
                Err(RouterError::UserLookup { .. }) => "lookup failed".into(),
                Err(e) => format!("error {e}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "routed resumed=false",
                "skipped locked by another process",
                "quarantined",
                "routed resumed=true",
                "routed resumed=false",
                "lookup failed",
            ]
        );
        for i in [0, 3, 4] {
            assert!(spool.path(Area::Queue, &ids[i]).exists(), "{i} queued");
            assert!(!spool.path(Area::Incoming, &ids[i]).exists());
            ControlFile::read(&spool.path(Area::Transport, &ids[i])).unwrap();
        }
        let (control, _) = ControlFile::read(&spool.path(Area::Transport, &ids[3])).unwrap();
        assert_eq!(control, earlier, "an earlier control file stands");
        for i in [1, 5] {
            assert!(
                spool.path(Area::Incoming, &ids[i]).exists(),
                "{i} left for later"
            );
            assert!(!spool.path(Area::Transport, &ids[i]).exists());
        }
        drop(lock);
        assert!(route_batch(&spool, &[], None, simple_route).is_empty());
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
