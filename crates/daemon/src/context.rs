//! What a service gets from the skeleton: its stop request, its reload
//! ticks, and the calls it makes at the right moments of its start-up.

use std::ffi::OsString;

use sd_notify::NotifyState;
use tokio::sync::watch;

use crate::DaemonError;
use crate::notify::{message, notify_to, one_line};
use crate::privileges::{Dropped, drop_privileges};
use crate::shutdown::{Shutdown, ShutdownTrigger};

/// The service's handle on the daemon around it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Context {
    program: &'static str,
    user: Option<String>,
    /// Captured once at start: the environment is the process's, but where
    /// notifications go is this context's business (a standalone context
    /// sends none).
    notify_socket: Option<OsString>,
    shutdown: Shutdown,
    reloads: watch::Receiver<u64>,
}

/// The controlling side of a [`Context`]: what the skeleton does on
/// signals, available to tests and embedders through
/// [`Context::standalone`].
#[derive(Debug)]
pub struct ContextControl {
    shutdown: ShutdownTrigger,
    reloads: watch::Sender<u64>,
}

impl Context {
    pub(crate) fn new(
        program: &'static str,
        user: Option<String>,
        notify_socket: Option<OsString>,
    ) -> (Context, ContextControl) {
        let (trigger, shutdown) = Shutdown::channel();
        let (reload_sender, reloads) = watch::channel(0);
        (
            Context {
                program,
                user,
                notify_socket,
                shutdown,
                reloads,
            },
            ContextControl {
                shutdown: trigger,
                reloads: reload_sender,
            },
        )
    }

    /// A context outside the skeleton, for running a service in a test or
    /// inside another program: no signal handling, no notifications, no
    /// user to switch to. The returned control stands in for the signals.
    pub fn standalone(program: &'static str) -> (Context, ContextControl) {
        Context::new(program, None, None)
    }

    /// The program name given in [`crate::DaemonOptions`].
    pub fn program(&self) -> &'static str {
        self.program
    }

    /// The stop request: `.wait()` resolves on SIGTERM or SIGINT.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// A receiver whose `changed()` resolves on each SIGHUP after this call
    /// (several SIGHUPs before the service looks count as one). The value is
    /// the number of reloads requested so far.
    pub fn reloads(&self) -> watch::Receiver<u64> {
        let mut reloads = self.reloads.clone();
        reloads.mark_unchanged();
        reloads
    }

    /// Announces that the service is serving: logs `ready` and sends
    /// `READY=1` to systemd. Call once the listening sockets are bound and
    /// privileges are dropped, and again after a reload has taken effect if
    /// [`crate::notify_reloading`] was sent.
    ///
    /// A notification that cannot be sent is logged, not returned: the
    /// service is ready either way, and systemd will time the start out on
    /// its own if it never hears.
    pub fn ready(&self) {
        tracing::info!("ready");
        self.notify(&[NotifyState::Ready]);
    }

    /// Announces that a reload has begun (`RELOADING=1` with its
    /// `MONOTONIC_USEC` stamp): systemd shows the unit as reloading until
    /// the next [`Context::ready`], which the daemon sends once the new
    /// configuration is in force or has been refused.
    pub fn reloading(&self) {
        match crate::notify::reloading_states() {
            Ok(states) => self.notify(&states),
            Err(error) => {
                let error: &(dyn std::error::Error + 'static) = &error;
                tracing::warn!(error, "service manager notification failed");
            }
        }
    }

    /// Sets the line `systemctl status` shows (control characters become
    /// spaces so the text cannot inject other states).
    pub fn status(&self, status: &str) {
        let status = one_line(status);
        self.notify(&[NotifyState::Status(&status)]);
    }

    /// Switches to the configured unprivileged user, if running as root.
    /// Call after binding privileged ports and before reading anything from
    /// the network. Any error must end the service: the process may be
    /// half-dropped.
    pub fn drop_privileges(&self) -> Result<Dropped, DaemonError> {
        let Some(user) = &self.user else {
            if nix::unistd::geteuid().is_root() {
                tracing::warn!("no user configured: keeping root privileges");
            }
            return Ok(Dropped::NoUserConfigured);
        };
        let dropped = drop_privileges(user)?;
        match &dropped {
            Dropped::Switched { user, uid, gid } => {
                tracing::info!(user = user.as_str(), uid, gid, "dropped privileges");
            }
            Dropped::NotRoot | Dropped::NoUserConfigured => {
                tracing::debug!(
                    user = user.as_str(),
                    "not running as root: no privileges to drop"
                );
            }
        }
        Ok(dropped)
    }

    pub(crate) fn notify(&self, states: &[NotifyState<'_>]) {
        if let Some(socket) = &self.notify_socket
            && let Err(error) = notify_to(socket, &message(states))
        {
            let error: &(dyn std::error::Error + 'static) = &error;
            tracing::warn!(error, "service manager notification failed");
        }
    }
}

impl ContextControl {
    /// Requests the stop, as SIGTERM does.
    pub fn trigger_shutdown(&self) {
        self.shutdown.trigger();
    }

    /// Ticks every reload receiver, as SIGHUP does; returns how many reloads
    /// have been requested so far.
    pub fn trigger_reload(&self) -> u64 {
        let mut generation = 0;
        self.reloads.send_modify(|count| {
            *count += 1;
            generation = *count;
        });
        generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    #[tokio::test]
    async fn control_drives_shutdown_and_reloads() {
        let (context, control) = Context::standalone("skein-test");
        assert_eq!(context.program(), "skein-test");
        let shutdown = context.shutdown();
        let mut reloads = context.reloads();
        assert!(!reloads.has_changed().expect("sender alive"));

        assert_eq!(control.trigger_reload(), 1);
        assert_eq!(control.trigger_reload(), 2);
        reloads.changed().await.expect("tick");
        assert_eq!(*reloads.borrow_and_update(), 2, "two SIGHUPs, one tick");

        // A receiver taken after the ticks does not see old reloads.
        let late = context.reloads();
        assert!(!late.has_changed().expect("sender alive"));

        assert!(!shutdown.is_triggered());
        control.trigger_shutdown();
        shutdown.wait().await;
        assert!(context.shutdown().is_triggered());
    }

    #[test]
    fn standalone_context_drops_nothing() {
        let (context, _control) = Context::standalone("skein-test");
        assert_eq!(
            context.drop_privileges().ok(),
            Some(Dropped::NoUserConfigured)
        );
    }

    #[test]
    fn ready_and_status_reach_the_captured_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).expect("bind");
        listener
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let (context, _control) =
            Context::new("skein-test", None, Some(path.clone().into_os_string()));
        let mut buffer = [0u8; 256];
        context.ready();
        let length = listener.recv(&mut buffer).expect("datagram");
        assert_eq!(&buffer[..length], b"READY=1");
        context.status("2 sessions\nREADY=1");
        let length = listener.recv(&mut buffer).expect("datagram");
        assert_eq!(&buffer[..length], b"STATUS=2 sessions READY=1");
    }
}
