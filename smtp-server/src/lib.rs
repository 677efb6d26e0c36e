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
//! user database (`getpwnam`) and the Maildir root. With `smtpd.milters`,
//! it talks to those content filters (docs/milter.md), whose answers are
//! as hostile as a client's.
//! **Writes.** `<spool>/tmp/` then `<spool>/incoming/<id>` (envelope with
//! every DSN parameter, `origin = "smtp [ip] helo=…"`, a `Received:` field
//! and the message); `run/smtpd.pid`; one datagram to `run/router.wake`
//! per accepted message; `run/smtpd.stats`, its counters for the
//! scheduler's metrics endpoint ([`stats`]).
//!
//! **Trust and privilege.** Everything a client sends is hostile: command
//! lines are bounded (`smtpd.max_line_length`) before they are buffered,
//! parsed by the sans-IO codec (`skein-smtp-codec`, fuzzed), and message
//! text is streamed to disk, never held whole in memory — except with
//! content filters, which get the whole text at its end (at most
//! `smtpd.max_message_size` per message being filtered). Started as root,
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
//! ([`SmtpdError`]); once running, a broken aliases file — or a reload
//! whose file, certificate, password file or new listener fails — is
//! logged and what was in force stays. On SIGTERM the server stops accepting,
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
//! and `local.maildir_root`. SIGHUP (`skein reload`) re-reads them all
//! but `spool.dir` and `user` ([`serve`]'s reload): sessions that start
//! after it get the new settings, open ones keep theirs and are never
//! dropped, new listeners are bound and removed ones closed; a file that
//! fails the start's checks is refused and the configuration in force
//! stays. The aliases also follow their files (looked at once a second).

pub mod auth;
mod conn;
mod error;
mod gate;
pub mod milter;
pub mod policy;
mod received;
pub mod recipients;
mod session;
mod sink;
pub mod stats;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use skein_config::{Config, Loaded};
use skein_daemon::{Context, DaemonOptions, PidFile, ServiceError, Shutdown};
use skein_spool::{Daemon, Spool};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

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
    /// The counters (`run/smtpd.stats`), shared like the gate.
    pub stats: Arc<stats::Stats>,
    /// The content filters of each listener (`smtpd.milters`,
    /// `smtpd.submission_milters`).
    pub milters: milter::Filters,
}

impl Server {
    /// The server for `config`, writing into `spool`, offering STARTTLS
    /// with `tls` (see [`tls::server_config`]) and AUTH on submission
    /// against `passwords`, checking local recipients with `recipients`,
    /// counting its connections at `gate` (shared by every generation of
    /// settings a reload makes).
    pub fn new(
        config: &Config,
        spool: Spool,
        tls: Option<Arc<rustls::ServerConfig>>,
        passwords: Option<Arc<auth::Passwords>>,
        recipients: Option<Arc<RecipientCheck>>,
        gate: Arc<Gate>,
        stats: Arc<stats::Stats>,
    ) -> Server {
        let smtpd = &config.smtpd;
        Server {
            milters: milter::Filters::new(smtpd),
            recipients,
            passwords,
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
            gate,
            stats,
        }
    }
}

/// The service, given what [`skein_preflight::check`] loaded in `main`
/// (the certificate and password file, read with the start-up
/// privileges, so they may be root's alone): binds `smtpd.listen` and
/// `smtpd.submission`, drops privileges, opens the spool, and serves
/// until the stop request, reloading its configuration on each SIGHUP
/// ([`reload`]). (The configuration parser has already made sure that
/// submission has TLS and a password file.)
pub async fn serve(
    loaded: Loaded,
    checked: skein_preflight::Checked,
    ctx: Context,
) -> Result<(), ServiceError> {
    let config = loaded.config.clone();
    if config.smtpd.listen.is_empty() && config.smtpd.submission.is_empty() {
        return Err(SmtpdError::NothingToListenOn.into());
    }
    for warning in &checked.warnings {
        tracing::warn!(warning = warning.as_str(), "configuration");
    }
    let mut bound = Vec::new();
    for (addr, port) in wanted_listeners(&config) {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SmtpdError::Bind { addr, source })?;
        bound.push(((addr, port), listener));
    }
    ctx.drop_privileges().map_err(SmtpdError::Privileges)?;
    let spool = Spool::open(&config.spool.dir).map_err(SmtpdError::Spool)?;
    let _pid_file = PidFile::acquire(spool.pid_file(Daemon::Smtpd))?;
    // Read as the configured user, like the router reads it.
    let recipients = recipient_check(&config).map_err(SmtpdError::Aliases)?;
    let gate = Gate::new(GateLimits::from_config(&config.smtpd));
    let server = Arc::new(Server::new(
        &config,
        spool.clone(),
        checked.tls,
        checked.passwords,
        recipients,
        Arc::clone(&gate),
        Arc::new(stats::Stats::default()),
    ));
    tokio::spawn(stats::publish(
        Arc::clone(&server.stats),
        Arc::clone(&gate),
        skein_spool::rendezvous::smtpd_stats(server.spool.root()),
        ctx.shutdown(),
    ));
    let (servers, current_server) = watch::channel(server);
    let shutdown = ctx.shutdown();
    let mut running = Running {
        spool,
        gate: Arc::clone(&gate),
        servers,
        current_server,
        shutdown: shutdown.clone(),
        listeners: Vec::new(),
    };
    for (key, listener) in bound {
        running.listen(key, listener);
    }
    ctx.ready();
    ctx.status(&running.status());
    let mut current = loaded;
    let mut reloads = ctx.reloads();
    loop {
        tokio::select! {
            () = shutdown.wait() => break,
            changed = reloads.changed() => {
                if changed.is_err() {
                    // The skeleton is going away; the stop request follows.
                    shutdown.wait().await;
                    break;
                }
                ctx.reloading();
                match reload(&current, &mut running).await {
                    Ok(next) => current = next,
                    Err(why) => tracing::error!(
                        error = why.as_str(),
                        "reload refused: the configuration in force stays"
                    ),
                }
                ctx.ready();
                ctx.status(&running.status());
            }
        }
    }
    for listener in running.listeners.drain(..) {
        let _ = listener.task.await;
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

/// The listeners a configuration asks for, SMTP first.
fn wanted_listeners(config: &Config) -> Vec<(SocketAddr, Port)> {
    let smtpd = &config.smtpd;
    smtpd
        .listen
        .iter()
        .map(|&a| (a, Port::Smtp))
        .chain(smtpd.submission.iter().map(|&a| (a, Port::Submission)))
        .collect()
}

/// The check of local recipients, when `smtpd.verify_local_recipients`
/// is on (its aliases read now).
fn recipient_check(
    config: &Config,
) -> Result<Option<Arc<RecipientCheck>>, skein_routing::aliases::AliasError> {
    if !config.smtpd.verify_local_recipients {
        return Ok(None);
    }
    let check = RecipientCheck::new(config)?;
    tracing::info!(
        aliases = check.alias_count(),
        "local recipients are checked at RCPT TO"
    );
    Ok(Some(Arc::new(check)))
}

/// What a running server holds across reloads.
struct Running {
    spool: Spool,
    /// One gate for every generation of settings: the counts of open
    /// connections survive a reload, the limits are replaced.
    gate: Arc<Gate>,
    /// The settings new sessions get; a session keeps the ones it started
    /// with until it ends.
    servers: watch::Sender<Arc<Server>>,
    current_server: watch::Receiver<Arc<Server>>,
    shutdown: Shutdown,
    listeners: Vec<Listener>,
}

/// One listening socket and its accept loop.
struct Listener {
    /// The configured address (port 0 stays 0 here: the key a reload
    /// compares).
    configured: (SocketAddr, Port),
    /// Where it listens.
    local: Option<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn listen(&mut self, configured: (SocketAddr, Port), listener: TcpListener) {
        let local = listener.local_addr().ok();
        if let Some(addr) = local {
            tracing::info!(listen = %addr, service = ?configured.1, "listening");
        }
        let task = tokio::spawn(accept_loop(
            listener,
            configured.1,
            self.current_server.clone(),
            Arc::clone(&self.gate),
            self.shutdown.clone(),
        ));
        self.listeners.push(Listener {
            configured,
            local,
            task,
        });
    }

    fn status(&self) -> String {
        let names: Vec<String> = self
            .listeners
            .iter()
            .filter_map(|l| l.local.map(|a| a.to_string()))
            .collect();
        format!("listening on {}", names.join(" "))
    }
}

/// Applies the configuration file as it is now, or refuses it (the error
/// says why) and changes nothing.
///
/// Everything is checked and prepared before anything changes: the file
/// passes the start's checks ([`skein_preflight::reload`], as this
/// process's user: a certificate only root may read is refused here, as a
/// restart would need), the aliases load, and every new listening address
/// is bound. Then the new settings go to new sessions (sessions already
/// open keep theirs and are never dropped), the gate takes the new limits,
/// and listeners no longer configured stop accepting. `spool.*` and
/// `user` need a restart ([`skein_config::RESTART_ONLY`]): they keep
/// their old values, and the log says so.
async fn reload(current: &Loaded, running: &mut Running) -> Result<Loaded, String> {
    let skein_config::Reload {
        loaded,
        applied,
        need_restart,
    } = current.reload().map_err(|e| e.to_string())?;
    let checked = {
        let in_force = running.current_server.borrow();
        check_secrets(current, &loaded, &in_force)?
    };
    let config = &loaded.config;
    let wanted = wanted_listeners(config);
    if wanted.is_empty() {
        return Err(SmtpdError::NothingToListenOn.to_string());
    }
    // The check of local recipients: kept (every open session shares it,
    // so they see the aliases read again) unless what it routes by
    // changed, then made anew for the new sessions.
    let in_force = running.current_server.borrow().recipients.clone();
    let recipients = match in_force {
        Some(check) if config.smtpd.verify_local_recipients && check.routes_as(config) => {
            Some(check)
        }
        _ => recipient_check(config).map_err(|e| e.to_string())?,
    };
    let mut fresh = Vec::new();
    for key in &wanted {
        if running.listeners.iter().any(|l| l.configured == *key) {
            continue;
        }
        let listener = TcpListener::bind(key.0).await.map_err(|e| {
            format!(
                "cannot listen on {} ({e}); a port below 1024 can be bound only with the start's privilege (restart skein)",
                key.0
            )
        })?;
        fresh.push((*key, listener));
    }
    for warning in &checked.warnings {
        tracing::warn!(warning = warning.as_str(), "configuration");
    }
    // (Taken before the send below: a borrow held across it would
    // deadlock the watch.)
    let stats = Arc::clone(&running.current_server.borrow().stats);
    // Committed from here on: nothing below can fail.
    if let Some(check) = &recipients {
        check.request_reload();
        tracing::info!("the aliases are read again before the next lookup");
    }
    running
        .gate
        .set_limits(GateLimits::from_config(&config.smtpd));
    running.servers.send_replace(Arc::new(Server::new(
        config,
        running.spool.clone(),
        checked.tls,
        checked.passwords,
        recipients,
        Arc::clone(&running.gate),
        stats,
    )));
    running.listeners.retain(|l| {
        let keep = wanted.contains(&l.configured);
        if !keep {
            l.task.abort();
            if let Some(addr) = l.local {
                tracing::info!(listen = %addr, service = ?l.configured.1, "no longer listening");
            }
        }
        keep
    });
    for (key, listener) in fresh {
        running.listen(key, listener);
    }
    skein_daemon::log_reloaded(&loaded, &applied, &need_restart);
    Ok(loaded)
}

/// What the TLS certificate, the password file and the aliases of a
/// reloaded configuration give ([`skein_preflight::check`], as this
/// process's user), with one allowance: a daemon started as root that has
/// since dropped to `user` may no longer be able to read a key or password
/// file only root may read. When such a file's setting is unchanged, the
/// one loaded at start stays in force (a warning says so, and that a
/// renewed certificate then needs a restart, or a key the skein group may
/// read); a changed setting must be readable now, or the reload is
/// refused.
fn check_secrets(
    current: &Loaded,
    loaded: &Loaded,
    in_force: &Server,
) -> Result<skein_preflight::Checked, String> {
    use skein_preflight::Reader;
    let first = match skein_preflight::check(loaded, Reader::Smtpd) {
        Ok(checked) => return Ok(checked),
        Err(e) => e,
    };
    let denied = first.message.contains("Permission denied")
        && matches!(
            first.key.as_deref(),
            Some("tls.cert" | "tls.key" | "smtpd.password_file")
        );
    let (old, new) = (&current.config, &loaded.config);
    let keep_tls = old.tls == new.tls && in_force.tls.is_some();
    let keep_passwords =
        old.smtpd.password_file == new.smtpd.password_file && in_force.passwords.is_some();
    if !denied || !(keep_tls || keep_passwords) {
        return Err(first.to_string());
    }
    let mut stripped = loaded.clone();
    if keep_tls {
        stripped.config.tls.cert = None;
        stripped.config.tls.key = None;
    }
    if keep_passwords {
        stripped.config.smtpd.password_file = None;
    }
    let mut checked =
        skein_preflight::check(&stripped, Reader::Smtpd).map_err(|e| e.to_string())?;
    checked.warnings.push(format!(
        "{first}: as {} now, it cannot be read again; what was read at start stays in force (a renewed certificate or changed password file needs a restart, or let the skein group read it)",
        current.config.run_as()
    ));
    if keep_tls {
        checked.tls.clone_from(&in_force.tls);
    }
    if keep_passwords {
        checked.passwords.clone_from(&in_force.passwords);
    }
    Ok(checked)
}

async fn accept_loop(
    listener: TcpListener,
    port: Port,
    servers: watch::Receiver<Arc<Server>>,
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
        // The settings in force now: a reload changes them for the
        // sessions that start after it.
        let server = Arc::clone(&servers.borrow());
        match gate.enter(peer.ip(), tokio::time::Instant::now()) {
            Ok(ticket) => {
                server.stats.connection();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let _ticket = ticket;
                    run_session(server, stream, peer, port, shutdown).await;
                });
            }
            Err(full) => {
                server.stats.refused();
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
