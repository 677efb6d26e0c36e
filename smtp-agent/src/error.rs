//! What can go wrong on the way to a remote server, sorted by whose fault
//! it is, and the outcome each becomes.

use std::fmt;
use std::io;

use skein_agent::Delivery;
use skein_proto::EnhancedCode;
use skein_smtp_codec::{Reply, ReplyError};

/// A failure of a connection or of a whole session. Every one becomes an
/// outcome for the recipients it hits ([`SmtpError::delivery`]); only a
/// refusing reply or a null MX can make that outcome permanent.
///
/// | variant | fault | outcome |
/// |---|---|---|
/// | `Resolve` | DNS or the network | deferred 4.4.3 |
/// | `NullMx` | nobody: the domain takes no mail | failed 5.1.10 |
/// | `NoSuchDomain` | the sender: the domain does not exist or has no mail host | failed 5.1.2 |
/// | `Loop` | the operator: this host is the domain's best MX but does not take its mail | failed 5.4.6 |
/// | `Connect` | the network or the server | deferred 4.4.1 |
/// | `Timeout`, `Lost` | the network or the server | deferred 4.4.2 |
/// | `Protocol` | the server sent garbage | deferred 4.5.0 |
/// | `Refused` | the server said no (greeting, EHLO/HELO, STARTTLS) | by the reply's class |
/// | `TlsUnavailable` | the server lacks STARTTLS the policy insists on | deferred 4.7.4 |
/// | `Tls` | the handshake or the certificate failed | deferred 4.7.5 |
/// | `Local` | this machine (spool file, sockets) | deferred 4.3.0 |
/// | `Config` | the operator (a next hop that does not parse) | deferred 4.3.5 |
#[derive(Debug)]
pub enum SmtpError {
    /// The name could not be resolved.
    Resolve {
        /// The name looked up.
        host: String,
        /// What the resolver said.
        detail: String,
    },
    /// The domain does not exist, or has neither MX nor address records.
    NoSuchDomain {
        /// The domain.
        domain: String,
        /// What DNS said.
        detail: String,
    },
    /// Every MX of the domain is this host or less preferred than it.
    Loop {
        /// The domain.
        domain: String,
    },
    /// The domain's only MX is `.` (RFC 7505).
    NullMx {
        /// The domain.
        domain: String,
    },
    /// No address answered.
    Connect {
        /// The server, as `name[ip]:port`.
        server: String,
        /// The system's error.
        source: io::Error,
    },
    /// The server did not answer in time.
    Timeout {
        /// What the agent was waiting for.
        waiting_for: &'static str,
    },
    /// The connection broke.
    Lost {
        /// What happened.
        detail: String,
    },
    /// The server's bytes are not SMTP.
    Protocol(ReplyError),
    /// The server refused the session.
    Refused {
        /// The step it refused.
        stage: &'static str,
        /// Its reply.
        reply: Reply,
    },
    /// STARTTLS was required and is not offered.
    TlsUnavailable {
        /// Why it was required.
        policy: &'static str,
    },
    /// The TLS handshake failed.
    Tls {
        /// What went wrong.
        detail: String,
    },
    /// A local resource failed.
    Local {
        /// What was being done.
        what: String,
        /// The system's error.
        source: io::Error,
    },
    /// The configuration or the job is unusable.
    Config(String),
}

impl SmtpError {
    /// The outcome this failure gives every recipient it hits.
    pub fn delivery(&self) -> Delivery {
        let diagnostic = self.to_string();
        match self {
            SmtpError::Resolve { .. } => {
                Delivery::deferred(EnhancedCode::ROUTING_SERVER_FAILURE, diagnostic, None)
            }
            SmtpError::NullMx { .. } => Delivery::failed(EnhancedCode::NULL_MX, diagnostic),
            SmtpError::NoSuchDomain { .. } => {
                Delivery::failed(EnhancedCode::BAD_SYSTEM, diagnostic)
            }
            SmtpError::Loop { .. } => Delivery::failed(EnhancedCode::ROUTING_LOOP, diagnostic),
            SmtpError::Connect { .. } => {
                Delivery::deferred(EnhancedCode::NO_ANSWER, diagnostic, None)
            }
            SmtpError::Timeout { .. } | SmtpError::Lost { .. } => {
                Delivery::deferred(EnhancedCode::BAD_CONNECTION, diagnostic, None)
            }
            SmtpError::Protocol(_) => {
                Delivery::deferred(EnhancedCode::PROTOCOL_TROUBLE, diagnostic, None)
            }
            SmtpError::Refused { reply, .. } => {
                let smtp = reply.to_smtp_reply();
                let enhanced = reply.enhanced;
                if reply.is_permanent() {
                    Delivery::failed(enhanced.unwrap_or(EnhancedCode::PERMANENT), diagnostic)
                        .with_reply(smtp)
                } else {
                    Delivery::deferred(
                        enhanced.unwrap_or(EnhancedCode::TRANSIENT),
                        diagnostic,
                        None,
                    )
                    .with_reply(smtp)
                }
            }
            SmtpError::TlsUnavailable { .. } => {
                Delivery::deferred(EnhancedCode::NO_SECURITY, diagnostic, None)
            }
            SmtpError::Tls { .. } => {
                Delivery::deferred(EnhancedCode::CRYPTO_FAILURE, diagnostic, None)
            }
            SmtpError::Local { .. } => {
                Delivery::deferred(EnhancedCode::SYSTEM_TROUBLE, diagnostic, None)
            }
            SmtpError::Config(_) => Delivery::deferred(EnhancedCode::BAD_CONFIG, diagnostic, None),
        }
    }

    /// Whether another address or MX host may do better: everything but a
    /// permanent refusal, a null MX and our own problems.
    pub fn try_next_host(&self) -> bool {
        !matches!(
            self,
            SmtpError::NullMx { .. }
                | SmtpError::NoSuchDomain { .. }
                | SmtpError::Loop { .. }
                | SmtpError::Local { .. }
                | SmtpError::Config(_)
        )
    }
}

impl fmt::Display for SmtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SmtpError::Resolve { host, detail } => write!(f, "cannot resolve {host}: {detail}"),
            SmtpError::NoSuchDomain { domain, detail } => write!(f, "{domain}: {detail}"),
            SmtpError::Loop { domain } => write!(
                f,
                "mail for {domain} loops back to myself (this host is its best MX)"
            ),
            SmtpError::NullMx { domain } => {
                write!(f, "{domain} does not accept mail (null MX, RFC 7505)")
            }
            SmtpError::Connect { server, source } => write!(f, "connect to {server}: {source}"),
            SmtpError::Timeout { waiting_for } => write!(f, "timed out waiting for {waiting_for}"),
            SmtpError::Lost { detail } => write!(f, "lost connection: {detail}"),
            SmtpError::Protocol(e) => write!(f, "protocol error: {e}"),
            SmtpError::Refused { stage, reply } => write!(f, "{stage} refused: {reply}"),
            SmtpError::TlsUnavailable { policy } => {
                write!(f, "TLS policy {policy}: the server does not offer STARTTLS")
            }
            SmtpError::Tls { detail } => write!(f, "TLS failed: {detail}"),
            SmtpError::Local { what, source } => write!(f, "{what}: {source}"),
            SmtpError::Config(what) => write!(f, "configuration: {what}"),
        }
    }
}

impl std::error::Error for SmtpError {}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_proto::Status;

    #[test]
    fn outcomes_by_fault() {
        let refused = |code_: u16| SmtpError::Refused {
            stage: "greeting",
            reply: Reply::new(code_, None, "go away"),
        };
        let table: Vec<(SmtpError, &str, bool)> = vec![
            (
                SmtpError::Resolve {
                    host: "x".into(),
                    detail: "no".into(),
                },
                "4.4.3",
                false,
            ),
            (SmtpError::NullMx { domain: "x".into() }, "5.1.10", true),
            (
                SmtpError::NoSuchDomain {
                    domain: "x".into(),
                    detail: "y".into(),
                },
                "5.1.2",
                true,
            ),
            (SmtpError::Loop { domain: "x".into() }, "5.4.6", true),
            (
                SmtpError::Connect {
                    server: "x".into(),
                    source: io::ErrorKind::ConnectionRefused.into(),
                },
                "4.4.1",
                false,
            ),
            (SmtpError::Timeout { waiting_for: "x" }, "4.4.2", false),
            (SmtpError::Lost { detail: "x".into() }, "4.4.2", false),
            (
                SmtpError::Protocol(ReplyError::BadLine("x".into())),
                "4.5.0",
                false,
            ),
            (refused(554), "5.0.0", true),
            (refused(421), "4.0.0", false),
            (
                SmtpError::TlsUnavailable { policy: "require" },
                "4.7.4",
                false,
            ),
            (SmtpError::Tls { detail: "x".into() }, "4.7.5", false),
            (SmtpError::Config("x".into()), "4.3.5", false),
        ];
        for (err, enhanced, permanent) in table {
            let d = err.delivery();
            assert_eq!(d.enhanced.to_string(), enhanced, "{err}");
            assert_eq!(d.status == Status::Failed, permanent, "{err}");
        }
    }
}
