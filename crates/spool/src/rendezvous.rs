//! The names in `run/` by which skein's processes find each other: the
//! scheduler's control socket and lock, the pid files, the router's
//! wake-up socket and the byte sent to it.
//!
//! Every one of them is spelled here and nowhere else in the code: the
//! daemons, the tools and the tests call these functions.
//! The free functions take the spool's root, for callers that have only
//! the configured path and must not open (create) the spool — the tools
//! asking whether skein runs; [`Spool`](crate::Spool) has the same names
//! as methods.
//!
//! The names are a contract with operators (`kill -HUP $(cat
//! <spool>/run/router.pid)`, scripts that test for the socket): changing
//! one is a user-visible change, which `tests` below pin.

use std::path::{Path, PathBuf};

use crate::Area;

/// The content of a wake-up datagram (one byte, `!`). The router ignores
/// what a datagram says — any datagram means "look at `incoming/`" — so
/// this is what the senders send, not something the reader checks.
pub const WAKE: u8 = b'!';

/// The mode of the sockets in `run/` ([`scheduler_socket`],
/// [`wake_socket`]): owner and group may connect, so that a setgid
/// submission program or an operator in the group can use them; others
/// cannot.
pub const SOCKET_MODE: u32 = 0o660;

/// The mode of [`scheduler_socket`]: every local user may connect, so
/// that `mailq` works for all; the scheduler decides what each may ask
/// from the peer's credentials (only root, the skein account and its group
/// may change the queue). Reaching it needs `o+x` on the spool root and
/// `run/` ([`crate::RUN_DIR_MODE`]).
pub const CONTROL_SOCKET_MODE: u32 = 0o666;

/// A process that holds a pid file in `run/`: its pid for `kill` and
/// `skein status`, and an exclusive `flock` that says it is alive and
/// keeps a second one from starting on the same spool
/// (`skein_daemon::PidFile`: mode 0644, removed — or emptied, when the
/// directory no longer lets it — when the process exits).
///
/// The scheduler is not one of them: it holds [`scheduler_lock`] instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Daemon {
    /// `skein start`: `run/skein.pid`, created by the supervisor before
    /// it starts any child, with the privilege it was started with; read
    /// by `skein stop` (whom to signal) and `skein status`.
    Supervisor,
    /// `skein-router`: `run/router.pid`, created by the router after its
    /// privilege drop, before it binds [`wake_socket`]; one router per
    /// spool, since a second would steal the wake-up socket.
    Router,
    /// `skein-smtpd`: `run/smtpd.pid`, created by the SMTP server after it
    /// has bound its ports and dropped privileges, so that it belongs to
    /// `user`.
    Smtpd,
}

impl Daemon {
    /// Every daemon with a pid file.
    pub const ALL: [Daemon; 3] = [Daemon::Supervisor, Daemon::Router, Daemon::Smtpd];

    /// The name its files in `run/` are called by (`skein` for the
    /// supervisor, which is the `skein` binary).
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Supervisor => "skein",
            Daemon::Router => "router",
            Daemon::Smtpd => "smtpd",
        }
    }
}

/// A daemon that binds a wake-up socket in `run/`: a Unix datagram socket
/// to which others send [`WAKE`] when they have given it work. Only the
/// router has one today; a type of its own keeps anyone from waking a
/// daemon that does not listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wakeable {
    /// `run/router.wake`: bound by the router (mode [`SOCKET_MODE`],
    /// replacing a stale one, removed when it stops); written to by `skein
    /// sendmail` and the SMTP server after each message they put in
    /// `incoming/`, and by the scheduler after queueing a DSN or a
    /// requeued copy.
    Router,
}

impl Wakeable {
    /// Every daemon with a wake-up socket.
    pub const ALL: [Wakeable; 1] = [Wakeable::Router];

    /// The daemon, whose name the socket bears.
    pub fn daemon(self) -> Daemon {
        match self {
            Wakeable::Router => Daemon::Router,
        }
    }

    /// The one with this name (`"router"`), if any.
    pub fn from_name(name: &str) -> Option<Wakeable> {
        Wakeable::ALL
            .into_iter()
            .find(|w| w.daemon().name() == name)
    }
}

/// `<root>/run`: sockets, locks and pid files of the running daemons.
pub fn run_dir(root: &Path) -> PathBuf {
    root.join(Area::Run.dir_name())
}

/// `<root>/run/scheduler.sock`, the control socket (a Unix stream
/// socket, mode [`SOCKET_MODE`]). Bound by the scheduler at start, while
/// it holds [`scheduler_lock`] (so a socket file already there is stale
/// and replaced), removed when it stops. Connected to by the router
/// (`Submitted`) and the spool tools (`skein mailq`, `queue`, `status`);
/// no socket file, or one nobody listens on, means the scheduler is not
/// running.
pub fn scheduler_socket(root: &Path) -> PathBuf {
    run_dir(root).join("scheduler.sock")
}

/// `<root>/run/smtpd.stats`, the SMTP server's counters for the
/// scheduler's metrics endpoint (`skein_proto::SmtpdStats`): written by
/// `skein-smtpd` (temporary file, then rename), read by the scheduler at
/// each scrape.
pub fn smtpd_stats(root: &Path) -> PathBuf {
    run_dir(root).join("smtpd.stats")
}

/// `<root>/run/scheduler.lock`, one scheduler per spool. Created by the
/// scheduler at start (mode 0666 less its umask; its content is empty)
/// and `flock`ed for its whole life; never removed — the lock, not the
/// file, is the truth, and it dies with the process. Nobody else opens
/// it: a second scheduler fails to lock it and refuses to start.
pub fn scheduler_lock(root: &Path) -> PathBuf {
    run_dir(root).join("scheduler.lock")
}

/// `<root>/run/<name>.pid`, the pid file of `daemon` (see [`Daemon`] for
/// who creates and who reads each).
pub fn pid_file(root: &Path, daemon: Daemon) -> PathBuf {
    run_dir(root).join(format!("{}.pid", daemon.name()))
}

/// `<root>/run/<name>.wake`, the wake-up socket of `daemon` (see
/// [`Wakeable`] for who binds it and who writes to it).
pub fn wake_socket(root: &Path, daemon: Wakeable) -> PathBuf {
    run_dir(root).join(format!("{}.wake", daemon.daemon().name()))
}

/// Sends [`WAKE`] to `socket`. Best effort and never blocking: a daemon
/// that is not running, or not draining its socket, must never stall the
/// sender (the wake-up is only a hint; the daemon scans its directory
/// when it starts, and periodically).
pub fn send_wake(socket: &Path) {
    if let Ok(sock) = std::os::unix::net::UnixDatagram::unbound()
        && sock.set_nonblocking(true).is_ok()
    {
        let _ = sock.send_to(&[WAKE], socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are a contract with operators and scripts (and
    /// docs/spool.md): they must not change by accident.
    #[test]
    fn the_names_are_the_documented_ones() {
        let root = Path::new("/var/spool/skein");
        let table: Vec<(PathBuf, &str)> = vec![
            (run_dir(root), "/var/spool/skein/run"),
            (
                scheduler_socket(root),
                "/var/spool/skein/run/scheduler.sock",
            ),
            (scheduler_lock(root), "/var/spool/skein/run/scheduler.lock"),
            (
                pid_file(root, Daemon::Supervisor),
                "/var/spool/skein/run/skein.pid",
            ),
            (
                pid_file(root, Daemon::Router),
                "/var/spool/skein/run/router.pid",
            ),
            (
                pid_file(root, Daemon::Smtpd),
                "/var/spool/skein/run/smtpd.pid",
            ),
            (
                wake_socket(root, Wakeable::Router),
                "/var/spool/skein/run/router.wake",
            ),
        ];
        for (got, want) in table {
            assert_eq!(got, Path::new(want));
        }
        assert_eq!(WAKE, b'!');
        assert_eq!(SOCKET_MODE, 0o660);
    }

    #[test]
    fn every_name_is_distinct() {
        let root = Path::new("s");
        let mut paths: Vec<PathBuf> = vec![scheduler_socket(root), scheduler_lock(root)];
        paths.extend(Daemon::ALL.map(|d| pid_file(root, d)));
        paths.extend(Wakeable::ALL.map(|w| wake_socket(root, w)));
        let count = paths.len();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), count, "{paths:?}");
    }

    #[test]
    fn wakeables_are_found_by_name() {
        assert_eq!(Wakeable::from_name("router"), Some(Wakeable::Router));
        assert_eq!(Wakeable::from_name("scheduler"), None);
        assert_eq!(Wakeable::from_name(""), None);
    }

    #[test]
    fn a_wake_reaches_a_bound_socket_and_nobody_is_not_an_error() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("w");
        send_wake(&path); // nobody there: nothing happens
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        send_wake(&path);
        let mut buf = [0u8; 8];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[WAKE]);
    }
}
