//! Opening a session: connect, greeting, EHLO (HELO fallback), STARTTLS
//! as the policy says. Lock-step by nature (each step depends on the last
//! reply), so it is written as plain sequential code; what follows, the
//! pipelined transactions, is `pipeline` (its I/O) and `ledger` (its
//! accounting).

use std::net::SocketAddr;
use std::time::Duration;

use skein_config::{Config, TlsPolicy};
use skein_smtp_codec::{Command, Extensions, Reply, ReplyDecoder};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::dane::Requirement;
use crate::dest::{Destination, Resolver, Target};
use crate::error::SmtpError;
use crate::tls;
use hickory_resolver::proto::rr::RecordType;

/// A byte stream to a server: TCP, or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A boxed [`Stream`].
pub type BoxStream = Box<dyn Stream>;

/// A session ready for transactions.
pub struct Established {
    /// The stream, after STARTTLS if there was one.
    pub stream: BoxStream,
    /// The reply decoder, holding nothing (RFC 3207: nothing may follow the
    /// 220 to STARTTLS, and the EHLO reply is the last thing read).
    pub decoder: ReplyDecoder,
    /// What the server offers (after STARTTLS, the second EHLO's).
    pub ext: Extensions,
    /// `name[ip]:port`, for logs (`relay=`) and, its name alone, the DSN's
    /// `Remote-MTA`.
    pub remote: String,
    /// `TLSv1.3 TLS13_AES_256_GCM_SHA384` when the session is encrypted.
    pub tls: Option<String>,
    /// Why this clear-text session follows a failed TLS handshake with
    /// the same server (opportunistic TLS only, RFC 7435 §3).
    pub tls_fallback: Option<String>,
}

/// Why no session could be had: the last server's error, and that server
/// (`name[ip]:port`) when the TCP connection to it was made — the log's
/// `relay=` and the DSN's `Remote-MTA` then name it, as for a reply.
#[derive(Debug)]
pub struct NoSession {
    /// What went wrong.
    pub error: SmtpError,
    /// The server it went wrong at; `None` when none was reached.
    pub server: Option<String>,
}

impl From<SmtpError> for NoSession {
    fn from(error: SmtpError) -> Self {
        NoSession {
            error,
            server: None,
        }
    }
}

/// Connects to the best server for `dest` that answers: candidates in
/// order (MX preference), each of their addresses in order, moving on
/// after a connection failure, a timeout or a refusing greeting.
pub async fn establish(
    config: &Config,
    resolver: &Resolver,
    dest: &Destination,
) -> Result<Established, NoSession> {
    let candidates = resolver.candidates(&dest.target).await?;
    // DANE (policy `dane`): whether the records that name the servers are
    // DNSSEC-secure, then, per server, what its TLSA records ask.
    let dane_base = if dest.tls == TlsPolicy::Dane && resolver.secure.available() {
        let secure = match &dest.target {
            Target::Domain(domain) => resolver.secure.is_secure(domain, RecordType::MX).await,
            // A static next hop gets DANE only when its route asks for it.
            Target::Static(_) if !dest.nexthop_dane => Ok(false),
            Target::Static(hop) if hop.host.parse::<std::net::IpAddr>().is_ok() => Ok(false),
            Target::Static(hop) => resolver.secure.is_secure(&hop.host, RecordType::A).await,
        };
        // The resolver just answered the ordinary lookups; if only the
        // DNSSEC question fails (a resolver that refuses EDNS, say), the
        // records are not known to be secure: no DANE, not no mail.
        Some(secure.unwrap_or_else(|detail| {
            warn!(destination = ?dest.target, error = %detail, "DANE: cannot tell whether the records are DNSSEC-signed; treating them as not signed");
            false
        }))
    } else {
        None
    };
    // MTA-STS (with `smtp.mta_sts`): the policy of an MX-routed domain.
    let sts_policy = match (&dest.target, &resolver.sts) {
        (Target::Domain(domain), Some(sts))
            if !matches!(dest.tls, TlsPolicy::Verify | TlsPolicy::None) =>
        {
            let txt_id = match resolver.txt(&format!("_mta-sts.{domain}")).await {
                Ok(records) => records.iter().find_map(|t| crate::sts::parse_txt(t)),
                Err(e) => {
                    debug!(domain = %domain, error = %e, "mta-sts: TXT lookup failed");
                    None
                }
            };
            let host = format!("mta-sts.{domain}");
            sts.policy(domain, txt_id.as_deref(), async || {
                resolver
                    .host_addresses(&host)
                    .await
                    .map(|ips| ips.into_iter().map(|ip| SocketAddr::new(ip, 443)).collect())
            })
            .await
            .filter(|p| p.mode != crate::sts::Mode::None)
            .map(|p| (domain.clone(), p))
        }
        _ => None,
    };
    let mut last: Option<NoSession> = None;
    for candidate in &candidates {
        let requirement = match dane_base {
            Some(base) => {
                let port = candidate
                    .addrs
                    .first()
                    .map_or(config.smtp.port, |a| a.port());
                match resolver
                    .secure
                    .requirement(base, &candidate.name, port)
                    .await
                {
                    Ok(requirement) => requirement,
                    Err(detail) => {
                        // Not trusted and not ignored: this server is not
                        // used at all (RFC 7672 §2.2); the next may be.
                        info!(server = %candidate.name, error = %detail, "cannot use server");
                        last = Some(
                            SmtpError::Tls {
                                detail: format!("DANE: {detail}"),
                            }
                            .into(),
                        );
                        continue;
                    }
                }
            }
            None => Requirement::None(String::new()),
        };
        // DANE wins where both exist (RFC 8461 §2).
        let requirement = match (&sts_policy, requirement) {
            (Some((domain, policy)), Requirement::None(_)) => {
                let enforce = policy.mode == crate::sts::Mode::Enforce;
                if !policy.allows(&candidate.name) {
                    info!(
                        domain = %domain,
                        policy_id = %policy.id,
                        mode = policy.mode.as_str(),
                        mx = %candidate.name,
                        result = "failure",
                        result_type = "validation-failure",
                        reason = "the MX is not one of the policy's",
                        "mta-sts"
                    );
                    if enforce {
                        last = Some(
                            SmtpError::Tls {
                                detail: format!(
                                    "MTA-STS policy of {domain} (enforce) does not list the MX {}",
                                    candidate.name
                                ),
                            }
                            .into(),
                        );
                        continue;
                    }
                    Requirement::None(String::new())
                } else {
                    Requirement::Sts {
                        domain: domain.clone(),
                        id: policy.id.clone(),
                        enforce,
                        roots: resolver.sts.as_ref().map(|s| s.roots()).unwrap_or_default(),
                    }
                }
            }
            (_, requirement) => requirement,
        };
        match &requirement {
            Requirement::Authenticate(owner, records) => info!(
                server = %candidate.name,
                tlsa = %owner,
                records = records.len(),
                "DANE: TLS is mandatory and the certificate must match the TLSA records"
            ),
            Requirement::Encrypt(owner) => info!(
                server = %candidate.name,
                tlsa = %owner,
                "DANE: TLSA records of no usable kind: TLS is mandatory, unauthenticated"
            ),
            Requirement::None(why) if !why.is_empty() => {
                debug!(server = %candidate.name, reason = %why, "DANE does not apply: opportunistic TLS")
            }
            Requirement::None(_) | Requirement::Sts { .. } => {}
        }
        // No clear text after a failed handshake where DANE or an
        // enforced MTA-STS policy applies.
        let no_clear_text = match &requirement {
            Requirement::None(_) => false,
            Requirement::Sts { enforce, .. } => *enforce,
            _ => true,
        };
        for &addr in &candidate.addrs {
            let first = attempt(config, dest, &candidate.name, addr, true, &requirement).await;
            let result = match first {
                // RFC 7435: opportunistic security is never worse than
                // clear text. A server that offers STARTTLS and then fails
                // every handshake (a broken key setup) would otherwise
                // never get mail; reconnect to the same address and
                // deliver without STARTTLS, as other MTAs do. Never under
                // `require` or `verify`, which exist to refuse exactly this.
                Err(NoSession {
                    error: SmtpError::Tls { detail },
                    ..
                }) if matches!(dest.tls, TlsPolicy::Opportunistic | TlsPolicy::Dane)
                    && !no_clear_text =>
                {
                    warn!(
                        server = %remote_name(&candidate.name, addr),
                        error = %detail,
                        "TLS handshake failed: reconnecting to deliver in clear text (opportunistic TLS)"
                    );
                    attempt(config, dest, &candidate.name, addr, false, &requirement)
                        .await
                        .map(|mut session| {
                            session.tls_fallback = Some(detail);
                            session
                        })
                }
                other => other,
            };
            match result {
                Ok(session) => return Ok(session),
                Err(e) => {
                    info!(server = %remote_name(&candidate.name, addr), error = %e.error, "cannot use server");
                    let go_on = e.error.try_next_host();
                    last = Some(e);
                    if !go_on {
                        break;
                    }
                }
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        SmtpError::Resolve {
            host: format!("{:?}", dest.target),
            detail: "no server to try".into(),
        }
        .into()
    }))
}

/// `name[ip]`, with `:port` unless it is 25.
pub fn remote_name(name: &str, addr: SocketAddr) -> String {
    // One format everywhere, the port included even when it is 25 (as
    // Postfix's `relay=`): `mx.example.org[192.0.2.1]:25`.
    format!("{name}[{}]:{}", addr.ip(), addr.port())
}

/// One session with the server at `addr`; `starttls: false` leaves
/// STARTTLS alone whatever the server offers (the clear-text retry after a
/// failed handshake).
async fn attempt(
    config: &Config,
    dest: &Destination,
    name: &str,
    addr: SocketAddr,
    starttls: bool,
    requirement: &Requirement,
) -> Result<Established, NoSession> {
    let smtp = &config.smtp;
    let remote = remote_name(name, addr);
    let tcp = match tokio::time::timeout(smtp.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(source)) => {
            return Err(SmtpError::Connect {
                server: remote,
                source,
            }
            .into());
        }
        Err(_) => {
            return Err(SmtpError::Timeout {
                waiting_for: "the TCP connection",
            }
            .into());
        }
    };
    session(config, dest, name, tcp, &remote, starttls, requirement)
        .await
        .map_err(|error| NoSession {
            error,
            server: Some(remote),
        })
}

/// The session over a connected `tcp`: greeting, EHLO, STARTTLS.
async fn session(
    config: &Config,
    dest: &Destination,
    name: &str,
    tcp: TcpStream,
    remote: &str,
    starttls: bool,
    requirement: &Requirement,
) -> Result<Established, SmtpError> {
    let smtp = &config.smtp;
    let remote = remote.to_owned();
    // What the session must have: opportunistic policies (and `dane`
    // without TLSA records) take clear text when TLS is not to be had.
    let (mandatory, policy_name) = match requirement {
        Requirement::Authenticate(..) | Requirement::Encrypt(_) => (true, "dane"),
        Requirement::Sts { enforce: true, .. } => (true, "mta-sts"),
        Requirement::Sts { enforce: false, .. } | Requirement::None(_) => (
            !matches!(
                dest.tls,
                TlsPolicy::None | TlsPolicy::Opportunistic | TlsPolicy::Dane
            ),
            dest.tls.as_str(),
        ),
    };
    // `none`: never STARTTLS.
    let starttls = starttls && dest.tls != TlsPolicy::None;
    // Pipelined groups are written whole and then answered whole: Nagle's
    // algorithm would only hold back the next group behind a delayed ACK.
    tcp.set_nodelay(true).map_err(|source| SmtpError::Local {
        what: "setting TCP_NODELAY".into(),
        source,
    })?;
    let mut conn = LineConn::new(tcp);
    let greeting = conn
        .read_reply(smtp.greeting_timeout, "the greeting")
        .await?;
    if !greeting.is_positive() {
        return Err(SmtpError::Refused {
            stage: "greeting",
            reply: greeting,
        });
    }
    let ext = conn.hello(&config.hostname, smtp.ehlo_timeout).await?;
    debug!(server = %remote, ?ext, "connected");
    let wants_tls = starttls && (ext.starttls || mandatory);
    if !wants_tls {
        return Ok(Established {
            stream: Box::new(conn.stream),
            decoder: conn.decoder,
            ext,
            remote,
            tls: None,
            tls_fallback: None,
        });
    }
    if !ext.starttls {
        // The policy forbids going on: say goodbye rather than hang up
        // (RFC 5321 §4.1.1.10), so the server logs a clean end.
        if let Requirement::Sts { domain, id, .. } = requirement {
            info!(
                domain = %domain,
                policy_id = %id,
                mode = "enforce",
                mx = %name,
                result = "failure",
                result_type = "starttls-not-supported",
                "mta-sts"
            );
        }
        conn.quit(smtp.ehlo_timeout).await;
        return Err(SmtpError::TlsUnavailable {
            policy: policy_name,
        });
    }
    let reply = conn
        .command(&Command::StartTls, smtp.ehlo_timeout, "the STARTTLS reply")
        .await?;
    if !reply.is_positive() {
        // Opportunistic: carry on in clear text, as the policy allows
        // (unless the server is closing the session anyway).
        if !mandatory && reply.code != 421 {
            info!(server = %remote, %reply, "STARTTLS refused: continuing without TLS");
            return Ok(Established {
                stream: Box::new(conn.stream),
                decoder: conn.decoder,
                ext,
                remote,
                tls: None,
                tls_fallback: None,
            });
        }
        if reply.code != 421 {
            conn.quit(smtp.ehlo_timeout).await;
        }
        return Err(SmtpError::Refused {
            stage: "STARTTLS",
            reply,
        });
    }
    // RFC 3207 §6: anything the server sent after its 220 was not
    // protected and must be ignored.
    drop(conn.decoder.take_buffered());
    let (stream, info) = match requirement {
        Requirement::Authenticate(owner, records) => {
            tls::connect_dane(conn.stream, name, owner, records.clone(), smtp.ehlo_timeout).await?
        }
        Requirement::Encrypt(_) => {
            tls::connect(conn.stream, name, TlsPolicy::Require, smtp.ehlo_timeout).await?
        }
        Requirement::Sts {
            domain,
            id,
            enforce,
            roots,
        } => {
            tls::connect_sts(
                conn.stream,
                name,
                domain,
                id,
                *enforce,
                roots,
                smtp.ehlo_timeout,
            )
            .await?
        }
        Requirement::None(_) => {
            tls::connect(conn.stream, name, dest.tls, smtp.ehlo_timeout).await?
        }
    };
    info!(server = %remote, tls = %info, "TLS established");
    let mut conn = LineConn::new(stream);
    let ext = conn.hello(&config.hostname, smtp.ehlo_timeout).await?;
    Ok(Established {
        stream: Box::new(conn.stream),
        decoder: conn.decoder,
        ext,
        remote,
        tls: Some(info),
        tls_fallback: None,
    })
}

/// A stream spoken to one command at a time.
struct LineConn<S> {
    stream: S,
    decoder: ReplyDecoder,
}

impl<S: AsyncRead + AsyncWrite + Unpin> LineConn<S> {
    fn new(stream: S) -> LineConn<S> {
        LineConn {
            stream,
            decoder: ReplyDecoder::new(),
        }
    }

    async fn read_reply(
        &mut self,
        limit: Duration,
        waiting_for: &'static str,
    ) -> Result<Reply, SmtpError> {
        let read = async {
            let mut buf = [0u8; 4096];
            loop {
                if let Some(reply) = self.decoder.next_reply().map_err(SmtpError::Protocol)? {
                    return Ok(reply);
                }
                let n = self
                    .stream
                    .read(&mut buf)
                    .await
                    .map_err(|e| SmtpError::Lost {
                        detail: format!("reading {waiting_for}: {e}"),
                    })?;
                if n == 0 {
                    return Err(SmtpError::Lost {
                        detail: format!("connection closed while waiting for {waiting_for}"),
                    });
                }
                self.decoder.push(&buf[..n]);
            }
        };
        tokio::time::timeout(limit, read)
            .await
            .map_err(|_| SmtpError::Timeout { waiting_for })?
    }

    async fn command(
        &mut self,
        command: &Command,
        limit: Duration,
        waiting_for: &'static str,
    ) -> Result<Reply, SmtpError> {
        let bytes = command
            .to_bytes()
            .map_err(|e| SmtpError::Config(e.to_string()))?;
        let write = async {
            self.stream.write_all(&bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(limit, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(SmtpError::Lost {
                    detail: format!("sending {}: {e}", waiting_for),
                });
            }
            Err(_) => return Err(SmtpError::Timeout { waiting_for }),
        }
        self.read_reply(limit, waiting_for).await
    }

    /// QUIT before hanging up, best effort: the reply is waited for (so
    /// the server reads the QUIT before the close) but not checked, and a
    /// failure changes nothing for the caller, which is giving up anyway.
    async fn quit(&mut self, limit: Duration) {
        if let Err(e) = self.command(&Command::Quit, limit, "the QUIT reply").await {
            debug!(error = %e, "QUIT not answered");
        }
    }

    /// EHLO, or HELO when the server does not know EHLO (a 5xx).
    async fn hello(&mut self, hostname: &str, limit: Duration) -> Result<Extensions, SmtpError> {
        let domain = hostname.to_owned();
        let ehlo = self
            .command(
                &Command::Ehlo {
                    domain: domain.clone(),
                },
                limit,
                "the EHLO reply",
            )
            .await?;
        if ehlo.is_positive() {
            return Ok(Extensions::from_ehlo(&ehlo));
        }
        if !ehlo.is_permanent() {
            return Err(SmtpError::Refused {
                stage: "EHLO",
                reply: ehlo,
            });
        }
        let helo = self
            .command(&Command::Helo { domain }, limit, "the HELO reply")
            .await?;
        if helo.is_positive() {
            Ok(Extensions::default())
        } else {
            Err(SmtpError::Refused {
                stage: "HELO",
                reply: helo,
            })
        }
    }
}
