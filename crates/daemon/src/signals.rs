//! The signals a daemon answers, as an async stream.
//!
//! SIGTERM (systemd, `skein stop`) and SIGINT (Ctrl-C at a terminal) both
//! ask for an orderly stop; SIGHUP asks to reload configuration, as it does
//! for every Unix daemon. Handling them as values in the event loop, rather
//! than in a signal handler, lets the service finish what it is doing.

use tokio::signal::unix::{self, SignalKind};

use crate::DaemonError;

/// What a received signal asks the daemon to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: stop accepting work, finish, exit.
    Terminate,
    /// SIGHUP: reread configuration.
    Reload,
}

/// The daemon's signal listener.
///
/// Creating it replaces the default actions of SIGTERM, SIGINT and SIGHUP
/// (which would kill the process) for the rest of the process's life.
pub struct Signals {
    terminate: unix::Signal,
    interrupt: unix::Signal,
    hangup: unix::Signal,
}

impl Signals {
    /// Installs the handlers. Must be called inside a tokio runtime.
    pub fn new() -> Result<Signals, DaemonError> {
        let listen = |kind| unix::signal(kind).map_err(|source| DaemonError::Signals { source });
        Ok(Signals {
            terminate: listen(SignalKind::terminate())?,
            interrupt: listen(SignalKind::interrupt())?,
            hangup: listen(SignalKind::hangup())?,
        })
    }

    /// Waits for the next signal. Signals of one kind that arrive before
    /// this is polled are merged into one, which is what both stop and
    /// reload want.
    ///
    /// Returns `None` only when the runtime is shutting down and no signal
    /// can be received any more.
    pub async fn recv(&mut self) -> Option<Signal> {
        tokio::select! {
            received = self.terminate.recv() => received.map(|()| Signal::Terminate),
            received = self.interrupt.recv() => received.map(|()| Signal::Terminate),
            received = self.hangup.recv() => received.map(|()| Signal::Reload),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::{self as nix_signal, Signal as NixSignal};

    #[tokio::test]
    async fn each_signal_maps_to_its_meaning() {
        let mut signals = Signals::new().expect("install handlers");
        let cases = [
            (NixSignal::SIGHUP, Signal::Reload),
            (NixSignal::SIGTERM, Signal::Terminate),
            (NixSignal::SIGINT, Signal::Terminate),
            (NixSignal::SIGHUP, Signal::Reload),
        ];
        for (raw, expected) in cases {
            // raise() runs the handler before it returns, so the signal is
            // pending for recv() by now; no sleep needed.
            nix_signal::raise(raw).expect("raise");
            assert_eq!(signals.recv().await, Some(expected), "for {raw}");
        }
    }
}
