//! Administration: what `skein queue hold|release|delete|flush|requeue`
//! asks of the scheduler. Each command changes the queue (and the journal
//! where the change must survive a restart) and returns the text the tool
//! prints; the read-only views are in [`crate::report`].
//!
//! Hold and release are journaled (`Held`/`Released` records, fdatasync)
//! before they take effect. Delete cancels the message's jobs and unlinks
//! its files (never retired for reuse: an agent may still be reading the
//! message). Flush only moves retry times in memory. Requeue writes a copy
//! into `incoming/` through the normal path before the old message goes.

use skein_proto::{FlushTarget, ThreadKey};
use skein_spool::{Record, Spool, SpoolError, Wakeable};

use crate::agents::Agents;
use crate::bounce;
use crate::clock::now_micros;
use crate::error::SchedulerError;
use crate::message::RState;
use crate::queue::{Queue, Reuse};

/// What a command answers on success.
pub type Answer = Result<String, SchedulerError>;

/// Holds (`hold`) or releases a message: a held message gets no new job.
pub fn hold(queue: &mut Queue, id: &str, hold: bool) -> Answer {
    let m = queue
        .get(id)
        .ok_or_else(|| SchedulerError::unknown_message(id))?;
    if m.held == hold {
        return Ok(format!(
            "{id} is already {}",
            if hold { "held" } else { "released" }
        ));
    }
    let at = now_micros();
    let rec = if hold {
        Record::Held { at }
    } else {
        Record::Released { at }
    };
    queue.append(id, rec)?;
    if let Some(m) = queue.get_mut(id) {
        m.held = hold;
    }
    tracing::info!(queue_id = id, held = hold, "administrator changed hold");
    Ok(format!("{id} {}", if hold { "held" } else { "released" }))
}

/// Deletes a message: its jobs are cancelled, its files unlinked.
pub fn delete(queue: &mut Queue, agents: &mut Agents, spool: &Spool, id: &str) -> Answer {
    if !queue.contains(id) {
        return Err(SchedulerError::unknown_message(id));
    }
    agents.cancel_jobs_of(id);
    // An agent may still be reading the message for a cancelled job: its
    // file must not be reused under it.
    queue.remove(spool, id, "deleted by the administrator", Reuse::Never);
    Ok(format!("{id} deleted"))
}

/// Makes the target's recipients and threads due now.
pub fn flush(queue: &mut Queue, target: &FlushTarget) -> Answer {
    let mut count = 0;
    match target {
        FlushTarget::All => {
            for t in queue.threads_mut() {
                t.next_attempt = 0;
            }
            for m in queue.messages_mut() {
                for r in &mut m.rcpts {
                    r.retry_at = 0;
                }
                count += 1;
            }
        }
        FlushTarget::Message(id) => {
            let m = queue
                .get_mut(id)
                .ok_or_else(|| SchedulerError::unknown_message(id))?;
            for r in &mut m.rcpts {
                r.retry_at = 0;
            }
            let keys: Vec<ThreadKey> = m.legs.iter().map(|l| l.thread.clone()).collect();
            for k in keys {
                if let Some(t) = queue.thread_mut(&k) {
                    t.next_attempt = 0;
                }
            }
            count = 1;
        }
        FlushTarget::Thread(key) => {
            let t = queue
                .thread_mut(key)
                .ok_or_else(|| SchedulerError::Request {
                    kind: skein_proto::ControlErrorKind::UnknownId,
                    message: format!("no thread {key}"),
                })?;
            t.next_attempt = 0;
            let ids: Vec<String> = t.waiting_ids().map(str::to_string).collect();
            for id in ids {
                if let Some(m) = queue.get_mut(&id) {
                    for i in m.rcpts_in(key).to_vec() {
                        m.rcpts[i as usize].retry_at = 0;
                    }
                    count += 1;
                }
            }
        }
    }
    let what = match target {
        FlushTarget::All => "all".to_owned(),
        FlushTarget::Message(id) => id.clone(),
        FlushTarget::Thread(key) => format!("thread {key}"),
    };
    tracing::info!(
        target = what.as_str(),
        messages = count,
        "administrator flushed the queue"
    );
    Ok(format!("flushed {count} message(s)"))
}

/// Sends a message back through the router with the recipients that are
/// not final, under a new queue id; the old one is removed only once the
/// new one is durable.
pub fn requeue(queue: &mut Queue, spool: &Spool, id: &str) -> Answer {
    let m = queue
        .get(id)
        .ok_or_else(|| SchedulerError::unknown_message(id))?;
    if m.rcpts.iter().any(|r| r.state == RState::InFlight) {
        return Err(SchedulerError::invalid(format!(
            "{id} is being delivered right now; try again in a moment"
        )));
    }
    let copy = match bounce::requeue_copy(spool, m) {
        Err(SpoolError::Corrupt { reason, .. }) => {
            // Never copied: the copy would carry the damage under a fresh
            // checksum. The message is set aside as an agent's check would.
            tracing::error!(queue_id = id, reason = %reason, "message file damaged in the spool: not requeued; the message will be set aside");
            if let Some(m) = queue.get_mut(id) {
                m.damaged = Some(reason.clone());
            }
            return Err(SchedulerError::invalid(format!(
                "{id} is damaged in the spool ({reason}): not requeued; it will be set aside in corrupt/"
            )));
        }
        other => other?,
    };
    match copy {
        Some(new_id) => {
            queue.remove(spool, id, &format!("requeued as {new_id}"), Reuse::Never);
            spool.wake(Wakeable::Router);
            Ok(format!("{id} requeued as {new_id}"))
        }
        None => Ok(format!("{id} has no recipient left to deliver")),
    }
}
