//! Reading the queue back from the spool (invariant 4: restart rebuilds
//! everything from `transport/` alone), and finishing what a crash left
//! half done.
//!
//! | what is found | what is done |
//! |---|---|
//! | a control file that fails its checks | moved to `corrupt/` with its reason, and its message file in `queue/` with it |
//! | a torn last journal record (a crash mid-append) | the file is rewritten without it before anything is appended |
//! | a control file whose recipients are all final | the interrupted removal is finished (T5) |
//! | a control file whose message is still in `incoming/` | left alone: the router has not moved the message yet (S1') and will say so |
//! | a control file without any message file | moved to `corrupt/` |
//! | a message file in `queue/` without a control file, over a minute old | removed: an interrupted removal (T5) |

use std::time::Duration;

use skein_spool::{Area, ControlFile, QueueId, Spool, SpoolError};

use crate::message::Msg;

/// Reads the message of control file `transport/<id>`; `None` when it is
/// not (or no longer) a message to schedule, as the table above says.
pub fn read(spool: &Spool, id: &QueueId) -> Option<Msg> {
    let path = spool.path(Area::Transport, id);
    let (control, torn) = match ControlFile::read(&path) {
        Ok(x) => x,
        Err(e @ SpoolError::Corrupt { .. }) => {
            let _ = spool.quarantine(&path, &e.to_string());
            // Its message goes with it: without a journal nobody can say
            // which recipients it still owes, and left alone it would be
            // removed as an orphan (`remove_orphans`).
            let message = spool.path(Area::Queue, id);
            if message.exists() {
                let _ = spool.quarantine(
                    &message,
                    &format!("its control file transport/{id} was set aside: {e}"),
                );
            }
            return None;
        }
        Err(e) if e.is_not_found() => return None,
        Err(e) => {
            tracing::error!(queue_id = %id, error = %e, "cannot read control file");
            return None;
        }
    };
    if torn {
        // A crash in the middle of an append: drop the torn record before
        // anything is appended after it.
        if let Err(e) = spool.rewrite_control(&control) {
            tracing::error!(queue_id = %id, error = %e, "cannot repair control file");
            return None;
        }
        tracing::warn!(queue_id = %id, "dropped a torn journal record");
    }
    let message_path = spool.root().join(&control.message);
    let msg = Msg::load(control, path.clone(), message_path.clone());
    if msg.is_done() {
        // Every recipient is final: a removal that was interrupted (or
        // undone by a power loss). Finish it.
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&message_path);
        tracing::info!(queue_id = %id, "removed an already finished message");
        return None;
    }
    let incoming = spool.path(Area::Incoming, id);
    match whereabouts(|area| match area {
        Area::Incoming => incoming.exists(),
        _ => message_path.exists(),
    }) {
        Whereabouts::Queue => Some(msg),
        // The router has written the control file but not yet moved the
        // message (S1'): it will tell us.
        Whereabouts::Incoming => None,
        Whereabouts::Neither => {
            let _ = spool.quarantine(
                &path,
                "its message file is missing from queue/ and incoming/",
            );
            None
        }
    }
}

/// Where the message of a control file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Whereabouts {
    Queue,
    Incoming,
    Neither,
}

/// Finds the message of a control file, given a test of whether it is in
/// an area now. The router moves a message from `incoming/` to `queue/`
/// (one rename) while the scheduler may be looking, so the order of the
/// two looks matters: `incoming/` first. Looking in `queue/` first, a
/// rename between the two looks finds it in neither, and the control file
/// of a message acknowledged to its sender was set aside (and its message
/// then removed as an orphan): `bench/soak` lost one of 180 000 that way.
fn whereabouts(mut exists: impl FnMut(Area) -> bool) -> Whereabouts {
    if exists(Area::Incoming) {
        Whereabouts::Incoming
    } else if exists(Area::Queue) {
        Whereabouts::Queue
    } else {
        Whereabouts::Neither
    }
}

/// Message files in `queue/` without a control file are what a crash in
/// the middle of removing a finished message leaves (docs/spool.md T5).
/// `known` says whether a queue id is a message the scheduler holds.
pub fn remove_orphans(spool: &Spool, known: impl Fn(&str) -> bool) {
    let Ok(ids) = spool.list(Area::Queue, |_| {}) else {
        return;
    };
    for id in ids {
        if known(id.as_str()) || spool.path(Area::Transport, &id).exists() {
            continue;
        }
        let path = spool.path(Area::Queue, &id);
        let old = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(60));
        if old && std::fs::remove_file(&path).is_ok() {
            tracing::info!(queue_id = %id, "removed message file left by an interrupted removal");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The router's rename of the message from `incoming/` to `queue/`
    /// lands before the first look, between the two, or after both: the
    /// message is found every time.
    #[test]
    fn a_message_moving_to_queue_while_looked_for_is_never_lost() {
        for moved_after_looks in 0..=2 {
            let mut looks = 0;
            let found = whereabouts(|area| {
                let moved = looks >= moved_after_looks;
                looks += 1;
                match area {
                    Area::Incoming => !moved,
                    _ => moved,
                }
            });
            assert_ne!(
                found,
                Whereabouts::Neither,
                "moved after {moved_after_looks} looks"
            );
        }
        assert_eq!(whereabouts(|_| false), Whereabouts::Neither);
        assert_eq!(whereabouts(|a| a == Area::Queue), Whereabouts::Queue);
    }
}
