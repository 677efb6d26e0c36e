//! Why the server, or one session of it, stops.

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// Why `skein-smtpd` cannot start or keep running. A session's problems
/// never become one of these: they end that session only
/// ([`SessionEnd`]).
#[derive(Debug)]
pub enum SmtpdError {
    /// Ours to fix (configuration or environment): a listen address cannot
    /// be bound (in use, or a privileged port without the capability).
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        source: io::Error,
    },
    /// A local resource: the spool cannot be opened.
    Spool(skein_spool::SpoolError),
    /// Ours: switching to the configured user failed; the process may be
    /// half-dropped and must stop.
    Privileges(skein_daemon::DaemonError),
    /// The configuration names nothing to listen on.
    NothingToListenOn,
    /// Ours: `router.aliases` does not load, and
    /// `smtpd.verify_local_recipients` needs it (the router refuses to
    /// start on it too).
    Aliases(skein_routing::aliases::AliasError),
}

impl fmt::Display for SmtpdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SmtpdError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            SmtpdError::Spool(e) => write!(f, "spool: {e}"),
            SmtpdError::Privileges(e) => write!(f, "cannot drop privileges: {e}"),
            SmtpdError::NothingToListenOn => {
                f.write_str("smtpd.listen and smtpd.submission are both empty")
            }
            SmtpdError::Aliases(e) => write!(f, "aliases (for smtpd.verify_local_recipients): {e}"),
        }
    }
}

impl std::error::Error for SmtpdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SmtpdError::Bind { source, .. } => Some(source),
            SmtpdError::Spool(e) => Some(e),
            SmtpdError::Privileges(e) => Some(e),
            SmtpdError::Aliases(e) => Some(e),
            SmtpdError::NothingToListenOn => None,
        }
    }
}

/// How a session ended, for its log line. Only [`SessionEnd::Io`] is
/// unexpected, and even that is the network's or the peer's doing.
#[derive(Debug)]
pub enum SessionEnd {
    /// The client said QUIT.
    Quit,
    /// The client closed the connection (mid-transaction or not; an
    /// unfinished message is discarded, never queued).
    PeerClosed,
    /// The client said nothing for the state's timeout (421 4.4.2 sent).
    Timeout,
    /// Message text came slower than `smtpd.min_data_rate` (421 4.4.2
    /// sent).
    TooSlow,
    /// The client made more errors than `smtpd.max_errors` (421 4.7.0 sent).
    TooManyErrors,
    /// The server is stopping (421 4.3.2 sent).
    Shutdown,
    /// The TLS handshake after STARTTLS failed (the peer's doing: garbage,
    /// or no common version or cipher).
    Tls(String),
    /// Reading or writing the socket failed.
    Io(io::Error),
}

impl fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionEnd::Quit => f.write_str("quit"),
            SessionEnd::PeerClosed => f.write_str("client closed the connection"),
            SessionEnd::Timeout => f.write_str("timeout"),
            SessionEnd::TooSlow => f.write_str("message text too slow"),
            SessionEnd::TooManyErrors => f.write_str("too many errors"),
            SessionEnd::Shutdown => f.write_str("server stopping"),
            SessionEnd::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            SessionEnd::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}
