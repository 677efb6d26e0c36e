//! # skein-smtpd — inbound SMTP into `incoming/`
//!
//! **Job.** Accepts mail over SMTP (RFC 5321 with PIPELINING, CHUNKING,
//! 8BITMIME, SMTPUTF8, SIZE, ENHANCEDSTATUSCODES and DSN), decides per
//! recipient whether to take it (the relay policy in [`policy`]), and
//! writes each accepted message durably into the spool's `incoming/`
//! (transition T1 of `docs/spool.md`) *before* answering 250; then wakes
//! the router. Each connection is one [`Session`], a state machine with a
//! per-state timeout table.
//!
//! **Local recipients.** With `smtpd.verify_local_recipients` (the
//! default), a recipient at a local domain is routed at `RCPT TO` by the
//! code the router routes with (`skein-routing`), on a one-recipient
//! envelope ([`recipients`]): one the router would fail (no such user 5.1.1, an alias to nothing 5.2.4, a
//! refused `|command` or `/file` target 5.7.1, a loop 5.4.6) is refused
//! `550` with that status and diagnostic — never accepted and bounced
//! later to a sender that may be forged (backscatter). A user database that
//! does not answer gives `451 4.3.0`. The aliases follow their files (looked
//! at for changes at most once a second) and SIGHUP.
//!
//! **Reads.** TCP connections on `smtpd.listen`; the configuration; for
//! the recipient check, the aliases file and its `:include:` files, the
//! user database (`getpwnam`) and the Maildir root.
//! **Writes.** `<spool>/tmp/` then `<spool>/incoming/<id>` (envelope with
//! every DSN parameter, `origin = "smtp [ip] helo=…"`, a `Received:` field
//! and the message); `run/smtpd.pid`; one datagram to `run/router.wake`
//! per accepted message.
//!
//! **Trust and privilege.** Everything a client sends is hostile: command
//! lines are bounded (`smtpd.max_line_length`) before they are buffered,
//! parsed by the sans-IO codec (`skein-smtp-codec`, fuzzed), and message
//! text is streamed to disk, never held whole in memory. Started as root,
//! the server binds its ports and switches to `user` before it accepts
//! anything; under systemd it runs as that user from the start, with only
//! `CAP_NET_BIND_SERVICE`. It never opens an open relay: without
//! configuration only loopback clients may relay.
//!
//! **On failure.** A session's problems (garbage, timeouts, a client that
//! vanishes mid-message) end that session only — its unfinished message is
//! discarded, nothing is queued — and the server goes on serving others. A
//! spool failure answers `451 4.3.0`, never 250. A port that cannot be
//! bound, a spool that cannot be opened, or (with the recipient check) an
//! aliases file that does not load stops the start with an error
//! ([`SmtpdError`]); once running, a broken aliases file is logged and the
//! previous aliases stay in force. On SIGTERM the server stops accepting,
//! tells idle and mid-message clients `421 4.3.2`, waits for messages
//! being committed, and exits.
//!
//! **Configuration.** `hostname`, `user`, `spool.dir`, `smtpd.listen`,
//! `smtpd.relay_networks`, `smtpd.relay_domains`, `router.local_domains`,
//! `smtpd.max_message_size`, `smtpd.max_line_length`,
//! `smtpd.max_recipients`, `smtpd.max_errors`, `smtpd.max_connections`,
//! `smtpd.max_connections_per_client`, `smtpd.command_timeout`,
//! `smtpd.data_timeout`, `smtpd.min_data_rate`, the flood limits
//! (`smtpd.reserved_connections_percent`, `smtpd.max_connection_rate`,
//! `smtpd.connection_rate_interval`, `smtpd.rate_limit_exceptions`,
//! `smtpd.stress_threshold_percent`, `smtpd.stress_command_timeout`,
//! `smtpd.stress_max_errors`: see `gate`), `tls.cert` and `tls.key` (STARTTLS, RFC 3207,
//! offered when both are set), `smtpd.submission` and
//! `smtpd.password_file` (the submission service: STARTTLS, then AUTH
//! PLAIN or LOGIN, then mail — and an authenticated client may relay),
//! `smtpd.verify_local_recipients` with the router's `router.aliases`,
//! `router.allow_pipe_targets`, `router.allow_file_targets`, `[[route]]`
//! and `local.maildir_root`. Read at start only, but for the aliases,
//! which SIGHUP (or a change of their files) reloads.

pub mod auth;
mod conn;
mod error;
mod gate;
pub mod policy;
mod received;
pub mod recipients;
mod session;
mod sink;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use skein_config::Config;
use skein_daemon::{Context, DaemonOptions, PidFile, ServiceError, Shutdown};
use skein_spool::{Daemon, Spool};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

pub use conn::Conn;
pub use error::{SessionEnd, SmtpdError};
pub use gate::{Full, Gate, GateLimits, Ticket, client_key};
pub use policy::Policy;
pub use received::Trace;
pub use recipients::RecipientCheck;
pub use session::{Port, Session, SessionLimits, Wait};

/// The program name, in logs.
pub const PROGRAM: &str = "skein-smtpd";

/// How long a stopping server waits for its sessions to end (they are
/// told to at once; this bounds a commit's fsync or a stuck write).
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How long a refused connection is given to read its 421.
const REFUSAL_WRITE_LIMIT: Duration = Duration::from_secs(10);

/// How the daemon skeleton runs the server: as the configured user. The
/// pid file (`run/smtpd.pid`) is taken by [`serve`] once the spool
/// exists, after the privilege drop, so that it belongs to that user.
pub fn daemon_options(config: &Config) -> DaemonOptions {
    let mut options = DaemonOptions::new(PROGRAM);
    options.user = Some(config.run_as().to_owned());
    options
}

/// What every session shares.
#[derive(Debug)]
pub struct Server {
    /// `hostname`.
    pub hostname: String,
    /// The spool.
    pub spool: Spool,
    /// The relay policy.
    pub policy: Policy,
    /// The session limits.
    pub limits: SessionLimits,
    /// The STARTTLS configuration, when `tls.cert` and `tls.key` are set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The AUTH credentials, when `smtpd.password_file` is set.
    pub passwords: Option<Arc<auth::Passwords>>,
    /// The check of local recipients at `RCPT TO`, when
    /// `smtpd.verify_local_recipients` is on.
    pub recipients: Option<Arc<RecipientCheck>>,
    /// The connection limits and the stress state.
    pub gate: Arc<Gate>,
}

impl Server {
    /// The server for `config`, writing into `spool`, offering STARTTLS
    /// with `tls` (see [`tls::server_config`]) and AUTH on submission
    /// against `passwords`, checking local recipients with `recipients`.
    pub fn new(
        config: &Config,
        spool: Spool,
        tls: Option<Arc<rustls::ServerConfig>>,
        passwords: Option<auth::Passwords>,
        recipients: Option<Arc<RecipientCheck>>,
    ) -> Server {
        let smtpd = &config.smtpd;
        Server {
            recipients,
            passwords: passwords.map(Arc::new),
            tls,
            hostname: config.hostname.clone(),
            spool,
            policy: Policy::new(config),
            limits: SessionLimits {
                max_line: smtpd.max_line_length as usize,
                max_message_size: smtpd.max_message_size.bytes(),
                max_recipients: smtpd.max_recipients.max(1) as usize,
                max_errors: smtpd.max_errors.max(1),
                command_timeout: smtpd.command_timeout,
                data_timeout: smtpd.data_timeout,
                stress_command_timeout: smtpd.stress_command_timeout,
                stress_max_errors: smtpd.stress_max_errors.max(1),
                min_data_rate: smtpd.min_data_rate,
            },
            gate: Gate::new(GateLimits::from_config(smtpd)),
        }
    }
}

/// The service, given what [`skein_preflight::check`] loaded in `main`
/// (the certificate and password file, read with the start-up
/// privileges, so they may be root's alone): binds `smtpd.listen` and
/// `smtpd.submission`, drops privileges, opens the spool, and serves
/// until the stop request. (The configuration parser has already made
/// sure that submission has TLS and a password file.)
pub async fn serve(
    config: Config,
    checked: skein_preflight::Checked,
    ctx: Context,
) -> Result<(), ServiceError> {
    if config.smtpd.listen.is_empty() && config.smtpd.submission.is_empty() {
        return Err(SmtpdError::NothingToListenOn.into());
    }
    for warning in &checked.warnings {
        tracing::warn!(warning = warning.as_str(), "configuration");
    }
    let tls_config = checked.tls;
    let passwords = checked.passwords;
    let mut listeners = Vec::new();
    let ports = config.smtpd.listen.iter().map(|&a| (a, Port::Smtp)).chain(
        config
            .smtpd
            .submission
            .iter()
            .map(|&a| (a, Port::Submission)),
    );
    for (addr, port) in ports {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SmtpdError::Bind { addr, source })?;
        listeners.push((listener, port));
    }
    ctx.drop_privileges().map_err(SmtpdError::Privileges)?;
    let spool = Spool::open(&config.spool.dir).map_err(SmtpdError::Spool)?;
    let _pid_file = PidFile::acquire(spool.pid_file(Daemon::Smtpd))?;
    // Read as the configured user, like the router reads it.
    let recipients = if config.smtpd.verify_local_recipients {
        let check = RecipientCheck::new(&config).map_err(SmtpdError::Aliases)?;
        tracing::info!(
            aliases = check.alias_count(),
            "local recipients are checked at RCPT TO"
        );
        Some(Arc::new(check))
    } else {
        None
    };
    if let Some(check) = &recipients {
        tokio::spawn(reload_on_sighup(
            Arc::clone(check),
            ctx.reloads(),
            ctx.shutdown(),
        ));
    }
    let server = Arc::new(Server::new(
        &config, spool, tls_config, passwords, recipients,
    ));
    let gate = Arc::clone(&server.gate);
    let shutdown = ctx.shutdown();
    let mut accepting = Vec::new();
    let mut names = Vec::new();
    for (listener, port) in listeners {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(listen = %addr, service = ?port, "listening");
            names.push(addr.to_string());
        }
        accepting.push(tokio::spawn(accept_loop(
            listener,
            port,
            Arc::clone(&server),
            Arc::clone(&gate),
            shutdown.clone(),
        )));
    }
    ctx.ready();
    ctx.status(&format!("listening on {}", names.join(" ")));
    shutdown.wait().await;
    for task in accepting {
        let _ = task.await;
    }
    // Sessions see the same stop request and end themselves.
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while gate.open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if gate.open() > 0 {
        tracing::warn!(sessions = gate.open(), "stopping with sessions still open");
    }
    Ok(())
}

/// Turns each SIGHUP into a reload of the aliases before the next lookup.
async fn reload_on_sighup(
    check: Arc<RecipientCheck>,
    mut reloads: tokio::sync::watch::Receiver<u64>,
    shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            changed = reloads.changed() => match changed {
                Ok(()) => {
                    check.request_reload();
                    tracing::info!("reload requested: the aliases are read again before the next lookup");
                }
                // The skeleton is going away; the stop request follows.
                Err(_) => return,
            },
            () = shutdown.wait() => return,
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    port: Port,
    server: Arc<Server>,
    gate: Arc<Gate>,
    shutdown: Shutdown,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.wait() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: wait a little
                // rather than spin; the listener itself is still good.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match gate.enter(peer.ip(), tokio::time::Instant::now()) {
            Ok(ticket) => {
                let server = Arc::clone(&server);
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let _ticket = ticket;
                    run_session(server, stream, peer, port, shutdown).await;
                });
            }
            Err(full) => {
                let text = match full {
                    Full::Total => "Too many connections; try again later".to_owned(),
                    Full::Client => {
                        "Too many connections from your address; try again later".to_owned()
                    }
                    Full::Reserved => "Too many connections from your address while the server is busy; try again later".to_owned(),
                    Full::Rate => format!(
                        "Too many connections from your address in the last {}; try again later",
                        skein_config::format_duration(gate.limits().rate_interval)
                    ),
                };
                tracing::info!(client = %peer, reason = text.as_str(), "connection refused");
                let reply = format!("421 4.7.0 {} {text}\r\n", server.hostname);
                tokio::spawn(refuse_connection(stream, reply));
            }
        }
    }
}

async fn run_session(
    server: Arc<Server>,
    stream: TcpStream,
    peer: SocketAddr,
    port: Port,
    shutdown: Shutdown,
) {
    tracing::debug!(client = %peer, "connect");
    let mut session = Session::new(server, Conn::Plain(stream), peer.ip(), port, shutdown);
    let end = session.run().await;
    tracing::info!(client = %peer, messages = session.messages(), end = %end, "disconnect");
}

async fn refuse_connection(mut stream: TcpStream, reply: String) {
    let _ = tokio::time::timeout(REFUSAL_WRITE_LIMIT, async {
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
