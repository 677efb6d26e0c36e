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
        std::fs::Permissions::from_mode(skein_spool::rendezvous::SOCKET_MODE),
    )?;
    Ok(listener)
}

/// Accepts connections for ever.
pub async fn accept_loop(listener: UnixListener, events: mpsc::UnboundedSender<Event>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, events.clone()));
            }
            Err(e) => {
                tracing::error!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve(stream: UnixStream, events: mpsc::UnboundedSender<Event>) {
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
