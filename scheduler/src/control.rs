//! The control socket, `<spool>/run/scheduler.sock`: the router says
//! `Submitted`, the spool tools ask and command. Each connection is
//! handshaken (only `Router` and `Tool` peers are accepted), then every
//! request goes to the core and its answer comes back, in order.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use skein_proto::{ControlRequest, ControlResponse, Framed, Hello, Role};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::event::Event;

/// Binds the socket (replacing a stale one: we hold the scheduler lock,
/// so no live scheduler owns it) with mode 0660.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(skein_spool::rendezvous::CONTROL_SOCKET_MODE),
    )?;
    Ok(listener)
}

/// Accepts connections for ever.
pub async fn accept_loop(listener: UnixListener, events: mpsc::UnboundedSender<Event>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let access = match stream.peer_cred() {
                    Ok(peer) => Access::of(peer.uid(), peer.gid()),
                    Err(e) => {
                        tracing::warn!(error = %e, "control client without credentials: read-only");
                        Access::ReadOnly
                    }
                };
                tokio::spawn(serve(stream, access, events.clone()));
            }
            Err(e) => {
                tracing::error!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What a control client may ask, decided from the kernel's word on who
/// it is (`SO_PEERCRED`), not from anything it says. The socket is open to
/// every local user (mode 0666, in a `run/` anyone may enter but not
/// list) so that `mailq` works for all, as Postfix's showq does; changing
/// the queue stays with root, the scheduler's own account and the members
/// of its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every request.
    Full,
    /// [`Access::allows`] only the listings: `Status`, `ListQueue`,
    /// `ListThreads`.
    ReadOnly,
}

impl Access {
    /// The access of a peer with `uid` and primary group `gid`.
    pub fn of(uid: u32, gid: u32) -> Access {
        let (own_uid, own_gid) = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        if uid == 0 || uid == own_uid || gid == own_gid || in_group(uid, own_gid) {
            Access::Full
        } else {
            Access::ReadOnly
        }
    }

    /// Whether `req` may be made with this access.
    pub fn allows(self, req: &ControlRequest) -> bool {
        match self {
            Access::Full => true,
            Access::ReadOnly => matches!(
                req,
                ControlRequest::Status | ControlRequest::ListQueue | ControlRequest::ListThreads
            ),
        }
    }
}

/// Whether the user `uid` has `gid` among its groups (the user database's
/// answer: a process cannot add itself to a group).
fn in_group(uid: u32, gid: u32) -> bool {
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else {
        return false;
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return false;
    };
    nix::unistd::getgrouplist(&name, user.gid)
        .is_ok_and(|groups| groups.iter().any(|g| g.as_raw() == gid))
}

async fn serve(stream: UnixStream, access: Access, events: mpsc::UnboundedSender<Event>) {
    let mut framed = Framed::new(stream);
    let hello = Hello::new(
        Role::Scheduler,
        format!("skein-scheduler {}", env!("CARGO_PKG_VERSION")),
    );
    let handshake =
        skein_proto::handshake_as_listener(&mut framed, &hello, |peer| match peer.role {
            Role::Tool | Role::Router => Ok(()),
            ref other => Err(format!(
                "the control socket serves the router and the spool tools, not {other:?}"
            )),
        });
    match tokio::time::timeout(Duration::from_secs(10), handshake).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "control client refused");
            return;
        }
        Err(_) => return,
    }
    loop {
        let req = match framed.recv::<ControlRequest>().await {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "bad request on the control socket");
                return;
            }
        };
        if !access.allows(&req) {
            let refusal = ControlResponse::Error(skein_proto::ControlError {
                kind: skein_proto::ControlErrorKind::Forbidden,
                message: format!(
                    "{}: only root, the skein account and its group may change the queue; any user may list it",
                    req.name()
                ),
            });
            if framed.send::<ControlResponse>(&refusal).await.is_err() {
                return;
            }
            continue;
        }
        let (tx, rx) = oneshot::channel();
        if events.send(Event::Control { req, reply: tx }).is_err() {
            return;
        }
        let Ok(resp) = rx.await else { return };
        if let Err(e) = framed.send::<ControlResponse>(&resp).await {
            tracing::debug!(error = %e, "control client went away");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_proto::{BulkAction, FlushTarget, Selection};

    #[test]
    fn read_only_peers_may_list_and_nothing_else() {
        let id = || "0ABCDEFGHJK0000100A".to_owned();
        let table = [
            (ControlRequest::Status, true),
            (ControlRequest::ListQueue, true),
            (ControlRequest::ListThreads, true),
            (ControlRequest::Hold { queue_id: id() }, false),
            (ControlRequest::Delete { queue_id: id() }, false),
            (ControlRequest::Flush(FlushTarget::All), false),
            (ControlRequest::Submitted { queue_id: id() }, false),
            (
                ControlRequest::Bulk {
                    action: BulkAction::Delete,
                    selection: Selection::all(),
                },
                false,
            ),
        ];
        for (req, read_only) in table {
            assert_eq!(Access::ReadOnly.allows(&req), read_only, "{}", req.name());
            assert!(Access::Full.allows(&req), "{}", req.name());
        }
    }
}
