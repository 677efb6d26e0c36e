//! Delivery status notifications (RFC 3464) and requeueing, built from the
//! queue, the spool and the configuration: both write a
//! new message into `incoming/` through the normal path (T1 of
//! docs/spool.md) and only then journal that they did (T4), so a crash in
//! between repeats a DSN but never loses one.
//!
//! Loop prevention: a DSN has the null sender. When a message with the
//! null sender fails, its DSN goes to the postmaster, marked as a
//! double bounce in its origin; a failing double bounce is only logged.

use std::io::Read;

use skein_config::Config;
use skein_dsn::{Action, DsnKind, DsnRecipient, DsnRequest, OriginalPart};
use skein_spool::{Envelope, Recipient, Record, Spool, SpoolError, Wakeable};

use crate::clock::now_micros;
use crate::message::{Msg, RState};
use crate::queue::Queue;

const DOUBLE_BOUNCE: &str = "dsn double-bounce";

fn qualify_domain(c: &Config) -> String {
    c.router
        .local_domains
        .first()
        .cloned()
        .unwrap_or_else(|| c.hostname.clone())
}

/// The message bytes for a report's third part, verified like an agent
/// verifies them before sending (a report must not return bytes the
/// sender did not write): `Ok(Err(what was found))` when the file is
/// damaged or missing.
fn read_original(m: &Msg) -> Result<Result<Vec<u8>, String>, SpoolError> {
    let path = &m.message_path;
    let f = match skein_spool::open_verified(path, m.control.offset, m.control.size) {
        Ok(f) => f,
        Err(SpoolError::Corrupt { reason, .. }) => return Ok(Err(reason)),
        Err(e) if e.is_not_found() => {
            return Ok(Err(format!(
                "the message file {} is missing",
                path.display()
            )));
        }
        Err(e) => return Err(e),
    };
    // Never more than a bounded amount: the DSN attaches headers only
    // beyond DEFAULT_MAX_FULL_SIZE anyway.
    let limit = (m.control.size as usize).min(skein_dsn::DEFAULT_MAX_FULL_SIZE + 1);
    let mut bytes = Vec::with_capacity(limit);
    f.take(limit as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| SpoolError::io("read", path, e))?;
    Ok(Ok(bytes))
}

fn headers_only(bytes: &[u8]) -> Vec<u8> {
    match bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(p) => bytes[..p + 2].to_vec(),
        None => bytes.to_vec(),
    }
}

/// What [`send_dsn`] did: the report's queue id, and what it found wrong
/// with the message file if it found it damaged (the report then went out
/// without the original; the caller marks the message damaged).
struct Sent {
    dsn: String,
    damage: Option<String>,
}

/// Builds and queues a DSN about `rcpts` of message `id`.
fn send_dsn(
    (spool, config): (&Spool, &Config),
    m: &Msg,
    kind: DsnKind,
    rcpts: &[u32],
    to: &str,
    double_bounce: bool,
) -> Result<Sent, SpoolError> {
    let id = m.id();
    let original = match &m.damaged {
        Some(why) => Err(why.clone()),
        None => read_original(m)?,
    };
    let full = m.control.size as usize <= skein_dsn::DEFAULT_MAX_FULL_SIZE
        && m.control.envelope.ret != Some(skein_spool::Ret::Headers);
    let (original, damage) = match original {
        Ok(bytes) if full => (OriginalPart::Full(bytes), None),
        Ok(bytes) => (OriginalPart::Headers(headers_only(&bytes)), None),
        Err(why) => (
            OriginalPart::Withheld(format!(
                "the copy in this system's queue was damaged ({why}) and was set aside."
            )),
            m.damaged.is_none().then_some(why),
        ),
    };
    let expiry = config.scheduler.expiry.as_secs() as i64;
    let arrival_unix = (m.control.arrival_micros / 1_000_000) as i64;
    let recipients = rcpts
        .iter()
        .map(|&i| {
            let cr = &m.control.recipients[i as usize];
            let r = &m.rcpts[i as usize];
            let action = match kind {
                DsnKind::Failure => Action::Failed,
                DsnKind::Delay => Action::Delayed,
                DsnKind::Success => Action::Delivered,
            };
            let diagnostic_code = match (&r.reply, &r.diagnostic) {
                (Some(reply), _) => Some(format!("smtp; {}", reply.trim_end())),
                (None, Some(d)) if !d.is_empty() => Some(format!("x-skein; {d}")),
                _ => None,
            };
            DsnRecipient {
                final_recipient: cr.address.clone(),
                original_recipient: cr.orcpt.clone(),
                action,
                status: r.status.unwrap_or(action.generic_status()).to_string(),
                remote_mta: r
                    .remote_mta
                    .as_deref()
                    .map(|relay| skein_proto::remote_host(relay).to_owned()),
                diagnostic_code,
                last_attempt_unix: (r.last_attempt > 0)
                    .then_some((r.last_attempt / 1_000_000) as i64),
                will_retry_until_unix: (kind == DsnKind::Delay).then_some(arrival_unix + expiry),
            }
        })
        .collect();
    let host = config.hostname.clone();
    let request = DsnRequest {
        reporting_mta: host.clone(),
        from: format!("MAILER-DAEMON@{host}"),
        to: to.to_string(),
        kind,
        envid: m.control.envelope.envid.clone(),
        arrival_unix,
        original_queue_id: id.to_string(),
        recipients,
        original,
        max_full_size: None,
    };
    let bytes = skein_dsn::build(&request);
    let envelope = Envelope {
        sender: String::new(),
        recipients: vec![Recipient::new(to)],
        origin: if double_bounce {
            format!("{DOUBLE_BOUNCE} for {id}")
        } else {
            format!(
                "dsn {} for {id}",
                match kind {
                    DsnKind::Failure => "failure",
                    DsnKind::Delay => "delay",
                    DsnKind::Success => "success",
                }
            )
        },
        smtputf8: !to.is_ascii(),
        ..Default::default()
    };
    let mut w = spool.create_incoming(&envelope)?;
    w.write_message(&bytes)?;
    let new_id = w.commit()?;
    spool.wake(Wakeable::Router);
    Ok(Sent {
        dsn: new_id.to_string(),
        damage,
    })
}

/// Marks message `id` damaged when a report found it so.
fn note_damage(queue: &mut Queue, id: &str, damage: Option<String>) {
    if let Some(why) = damage {
        tracing::error!(queue_id = id, reason = %why, "message file damaged in the spool: found while writing a report; the message will be set aside");
        if let Some(m) = queue.get_mut(id) {
            m.damaged = Some(why);
        }
    }
}

fn record_notified(queue: &mut Queue, id: &str, rcpts: Vec<u32>, what: &str, dsn: &str) -> bool {
    let rec = Record::Notified {
        rcpts: rcpts.clone(),
        at: now_micros(),
        what: what.to_string(),
        dsn: dsn.to_string(),
    };
    if let Err(e) = queue.append(id, rec) {
        tracing::error!(queue_id = id, error = %e, "cannot record a notification");
        return false;
    }
    if let Some(m) = queue.get_mut(id) {
        for i in rcpts {
            let r = &mut m.rcpts[i as usize];
            match what {
                "failure" => r.state = RState::Failed { notified: true },
                "delay" => r.delay_notified = true,
                _ => r.success_dsn_due = false,
            }
        }
    }
    true
}

/// Bounces the failed recipients of `id` not yet notified.
pub fn failures(queue: &mut Queue, spool: &Spool, config: &Config, id: &str) {
    let Some(m) = queue.get(id) else { return };
    let failed: Vec<u32> = (0..m.rcpts.len() as u32)
        .filter(|&i| m.rcpts[i as usize].state == RState::Failed { notified: false })
        .collect();
    if failed.is_empty() {
        return;
    }
    let wanted: Vec<u32> = failed
        .iter()
        .copied()
        .filter(|&i| {
            let n = m.notify(i as usize);
            n.failure && !n.never
        })
        .collect();
    let sender = m.control.envelope.sender.clone();
    let origin = m.control.envelope.origin.clone();
    let target = if !sender.is_empty() {
        Some((sender, false))
    } else if origin.starts_with(DOUBLE_BOUNCE) {
        None
    } else {
        Some((format!("postmaster@{}", qualify_domain(config)), true))
    };
    let dsn = match target {
        Some((to, double)) if !wanted.is_empty() => {
            match send_dsn((spool, config), m, DsnKind::Failure, &wanted, &to, double) {
                Ok(Sent { dsn, damage }) => {
                    tracing::info!(queue_id = id, dsn_id = %dsn, to = %to, recipients = wanted.len(), "sender non-delivery notification");
                    note_damage(queue, id, damage);
                    dsn
                }
                Err(e) => {
                    // Not recorded: tried again on the next settle.
                    tracing::error!(queue_id = id, error = %e, "cannot queue a bounce");
                    return;
                }
            }
        }
        Some(_) => String::new(), // NOTIFY said not to
        None => {
            tracing::warn!(
                queue_id = id,
                "undeliverable double bounce dropped (logged only, never looped)"
            );
            String::new()
        }
    };
    record_notified(queue, id, failed, "failure", &dsn);
}

/// Sends success reports asked for with NOTIFY=SUCCESS.
pub fn successes(queue: &mut Queue, spool: &Spool, config: &Config, id: &str) {
    let Some(m) = queue.get(id) else { return };
    let due: Vec<u32> = (0..m.rcpts.len() as u32)
        .filter(|&i| {
            let r = &m.rcpts[i as usize];
            r.state == RState::Delivered && r.success_dsn_due
        })
        .collect();
    if due.is_empty() {
        return;
    }
    let sender = m.control.envelope.sender.clone();
    let dsn = if sender.is_empty() {
        String::new()
    } else {
        match send_dsn((spool, config), m, DsnKind::Success, &due, &sender, false) {
            Ok(Sent { dsn, damage }) => {
                note_damage(queue, id, damage);
                dsn
            }
            Err(e) => {
                tracing::error!(queue_id = id, error = %e, "cannot queue a success report");
                return;
            }
        }
    };
    record_notified(queue, id, due, "success", &dsn);
}

/// Sends a "still trying" report for deferred recipients that ask for one.
pub fn delay_warning(queue: &mut Queue, spool: &Spool, config: &Config, id: &str) {
    let Some(m) = queue.get(id) else { return };
    let due: Vec<u32> = (0..m.rcpts.len() as u32)
        .filter(|&i| {
            let r = &m.rcpts[i as usize];
            r.state == RState::Deferred && !r.delay_notified && m.notify(i as usize).delay
        })
        .collect();
    let sender = m.control.envelope.sender.clone();
    if due.is_empty() {
        return;
    }
    let dsn = if sender.is_empty() {
        String::new()
    } else {
        match send_dsn((spool, config), m, DsnKind::Delay, &due, &sender, false) {
            Ok(Sent { dsn, damage }) => {
                note_damage(queue, id, damage);
                dsn
            }
            Err(e) => {
                tracing::error!(queue_id = id, error = %e, "cannot queue a delay warning");
                return;
            }
        }
    };
    record_notified(queue, id, due, "delay", &dsn);
}

/// Writes a copy of message `id` into `incoming/` addressed to the
/// recipients that are not final. `None` when there are none.
pub fn requeue_copy(spool: &Spool, m: &Msg) -> Result<Option<String>, SpoolError> {
    let id = m.id();
    let recipients: Vec<Recipient> = m
        .control
        .recipients
        .iter()
        .zip(&m.rcpts)
        .filter(|(_, r)| !r.state.is_final() && !matches!(r.state, RState::Failed { .. }))
        .map(|(cr, _)| Recipient {
            address: cr.address.clone(),
            notify: cr.notify,
            orcpt: cr.orcpt.clone(),
        })
        .collect();
    if recipients.is_empty() {
        return Ok(None);
    }
    let mut envelope = m.control.envelope.clone();
    envelope.recipients = recipients;
    envelope.origin = format!("requeue of {id} ({})", envelope.origin);
    let path = &m.message_path;
    // Verified first: a copy would carry damaged bytes under a fresh,
    // valid checksum.
    let mut f = skein_spool::open_verified(path, m.control.offset, m.control.size)?;
    let mut w = spool.create_incoming(&envelope)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = m.control.size;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = f
            .read(&mut buf[..want])
            .map_err(|e| SpoolError::io("read", path, e))?;
        if n == 0 {
            return Err(SpoolError::corrupt(
                path.clone(),
                "message file shorter than its size",
            ));
        }
        w.write_message(&buf[..n])?;
        left -= n as u64;
    }
    Ok(Some(w.commit()?.to_string()))
}
