//! The wake-up socket `<spool>/run/router.wake`
//! ([`skein_spool::rendezvous::wake_socket`]): a Unix datagram socket to
//! which `skein sendmail` and the SMTP server send one byte
//! ([`skein_spool::WAKE`], by `Spool::wake(Wakeable::Router)`) after each
//! message they put in `incoming/`, and the scheduler after each DSN or
//! requeued copy.
//!
//! A task reads the datagrams as they come, whatever the router is doing,
//! and turns any number of them into one pending wake-up. Reading them at
//! once matters: a sender's `send` blocks when the socket's queue is full,
//! so a router that left datagrams queued while routing a burst would stall
//! the very submissions that make up the burst.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use skein_spool::rendezvous::SOCKET_MODE;
use tokio::net::UnixDatagram;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::error::RouterError;

/// The bound wake-up socket. Dropping it stops the reader and removes the
/// socket file, so that senders fail fast instead of queueing datagrams
/// nobody reads.
#[derive(Debug)]
pub struct WakeSocket {
    path: PathBuf,
    notify: Arc<Notify>,
    reader: JoinHandle<()>,
}

impl WakeSocket {
    /// Binds `path`, replacing a stale socket left by a previous router
    /// (the caller holds the router's pid file, so no live router owns it).
    pub fn bind(path: &Path) -> Result<WakeSocket, RouterError> {
        let socket_error = |op, source| RouterError::Socket {
            op,
            path: path.to_path_buf(),
            source,
        };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(socket_error("remove stale socket", e)),
        }
        let socket = UnixDatagram::bind(path).map_err(|e| socket_error("bind", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
            .map_err(|e| socket_error("chmod", e))?;
        let notify = Arc::new(Notify::new());
        let reader = tokio::spawn(read_wakeups(socket, Arc::clone(&notify)));
        Ok(WakeSocket {
            path: path.to_path_buf(),
            notify,
            reader,
        })
    }

    /// Resolves when at least one datagram arrived since the last call
    /// returned (at once if one is already pending).
    pub async fn woken(&self) {
        self.notify.notified().await;
    }
}

impl Drop for WakeSocket {
    fn drop(&mut self) {
        self.reader.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn read_wakeups(socket: UnixDatagram, notify: Arc<Notify>) {
    let mut buf = [0u8; 64];
    loop {
        match socket.recv(&mut buf).await {
            // The content does not matter (senders send `WAKE`): any
            // datagram means "look".
            Ok(_) => notify.notify_one(),
            Err(e) => {
                // Nothing a datagram socket returns here is expected; the
                // periodic scan covers the gap while it lasts.
                tracing::warn!(error = %e, "reading the wake-up socket failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    // Two workers: the blocking sends below occupy one, the reader the
    // other.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn datagrams_coalesce_into_wakeups() {
        let d = tempfile::tempdir().unwrap();
        let path = skein_spool::rendezvous::wake_socket(d.path(), skein_spool::Wakeable::Router);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "stale").unwrap();
        let wake = WakeSocket::bind(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, SOCKET_MODE);

        // Far more datagrams than a socket queues (the default is a few
        // hundred): a blocking sender would hang if they were not read.
        let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
        for _ in 0..5000 {
            sender.send_to(&[skein_spool::WAKE], &path).unwrap();
        }
        wake.woken().await;
        drop(wake);
        assert!(!path.exists(), "removed on drop");
    }
}
