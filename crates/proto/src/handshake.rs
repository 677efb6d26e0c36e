//! The versioned handshake that opens every connection. Its layout is
//! frozen for all versions to come: only what follows it may change.
//!
//! The listening side (the scheduler, on an agent's socketpair or on the
//! control socket) sends its [`Hello`] first. The connecting side checks
//! the protocol name and version; on a mismatch it still sends its own
//! `Hello`, so that the scheduler can log the mismatch too, and gives up.
//! Otherwise it sends its `Hello`, and the listener answers with a
//! [`HandshakeReply`] after checking it (version, role, channel).
//!
//! The version check reads only the first two fields of a `Hello`,
//! `(protocol, version)`, so that a future version may change the rest and
//! still be told apart with a clear error.

use std::fmt;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{ProtoError, Result};
use crate::frame::{decode_payload, decode_prefix};
use crate::io::Framed;

/// The protocol name every `Hello` starts with.
pub const PROTOCOL_NAME: &str = "skein";

/// The protocol version this crate speaks. 2 added `Outcome::connect_micros`
/// (docs/agent-protocol.md, "Versions").
pub const PROTOCOL_VERSION: u16 = 2;

/// The file descriptor on which a transport agent finds its end of the
/// socketpair to the scheduler. The scheduler puts it there when it starts
/// the agent; stdin is `/dev/null`, stdout and stderr are for logs.
pub const AGENT_SOCKET_FD: i32 = 3;

/// Who a process is, as it announces itself in its [`Hello`].
///
/// Layout: variant index `0` = `Scheduler`, `1` = `Agent` followed by the
/// channel string, `2` = `Router`, `3` = `Tool`. Frozen.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// The scheduler: always the listening side.
    Scheduler,
    /// A transport agent for one channel (`smtp`, `local`, …).
    Agent {
        /// The channel the agent delivers for.
        channel: String,
    },
    /// The router, announcing new messages on the control socket.
    Router,
    /// A spool tool (`skein mailq`, `skein queue …`).
    Tool,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Scheduler => f.write_str("scheduler"),
            Role::Agent { channel } => write!(f, "agent for channel {channel:?}"),
            Role::Router => f.write_str("router"),
            Role::Tool => f.write_str("tool"),
        }
    }
}

/// The first message each side sends.
///
/// Layout: `protocol` string, `version` varint `u16`, `role`, `program`
/// string. Frozen: `protocol` and `version` must stay the first two fields
/// in every version, so that any two versions can tell each other apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`PROTOCOL_NAME`].
    pub protocol: String,
    /// The sender's protocol version.
    pub version: u16,
    /// Who the sender is.
    pub role: Role,
    /// The sender's program name and version, for logs (`skein-smtp 0.1.0`).
    pub program: String,
}

impl Hello {
    /// Our `Hello`: this crate's protocol name and version.
    pub fn new(role: Role, program: impl Into<String>) -> Self {
        Hello {
            protocol: PROTOCOL_NAME.to_owned(),
            version: PROTOCOL_VERSION,
            role,
            program: program.into(),
        }
    }
}

/// The listener's verdict on the connecting side's `Hello`.
///
/// Layout: variant index `0` = `Accepted`, `1` = `Refused` followed by the
/// reason string. Frozen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandshakeReply {
    /// Go ahead: the conversation of the role starts.
    Accepted,
    /// The listener will close the connection; `reason` says why.
    Refused {
        /// Why, for the connecting side's error message.
        reason: String,
    },
}

impl HandshakeReply {
    /// `Ok` when accepted, [`ProtoError::Refused`] otherwise.
    pub fn into_result(self) -> Result<()> {
        match self {
            HandshakeReply::Accepted => Ok(()),
            HandshakeReply::Refused { reason } => Err(ProtoError::Refused(reason)),
        }
    }
}

/// Decodes a peer's `Hello` payload, checking protocol name and version
/// before the rest so that a peer of another version gets
/// [`ProtoError::VersionMismatch`] (or [`ProtoError::WrongProtocol`])
/// rather than a confusing decode error.
pub fn decode_hello(payload: &[u8]) -> Result<Hello> {
    let ((protocol, version), _) = decode_prefix::<(String, u16)>(payload)?;
    if protocol != PROTOCOL_NAME {
        return Err(ProtoError::WrongProtocol {
            ours: PROTOCOL_NAME.to_owned(),
            theirs: protocol,
        });
    }
    if version != PROTOCOL_VERSION {
        return Err(ProtoError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: version,
        });
    }
    decode_payload(payload)
}

/// The reply a listener sends when the connecting side's `Hello` failed to
/// decode or to pass the version check: the reason is written from the
/// listener's point of view ("we" is the listener, "you" the peer).
pub fn refusal_for(err: &ProtoError) -> HandshakeReply {
    let reason = match err {
        ProtoError::VersionMismatch { ours, theirs } => format!(
            "protocol version mismatch: we speak {PROTOCOL_NAME}/{ours}, you speak {PROTOCOL_NAME}/{theirs}"
        ),
        ProtoError::WrongProtocol { ours, theirs } => {
            format!("wrong protocol: we speak {ours:?}, you speak {theirs:?}")
        }
        other => format!("bad hello: {other}"),
    };
    HandshakeReply::Refused { reason }
}

/// Checks that the listener of a connection is the scheduler, as it always
/// is in skein.
pub fn expect_scheduler(peer: &Hello) -> Result<()> {
    if peer.role == Role::Scheduler {
        Ok(())
    } else {
        Err(ProtoError::UnexpectedRole(format!(
            "expected the scheduler to listen, but {} ({}) did",
            peer.role, peer.program
        )))
    }
}

fn closed_during_handshake() -> ProtoError {
    ProtoError::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "peer closed the connection during the handshake",
    ))
}

/// The listening side's handshake: send `ours`, read the peer's `Hello`,
/// check its version and then `check` it (which returns the reason for a
/// refusal), answer, and return the peer's `Hello`.
///
/// On any failure the peer is sent a `Refused` with the reason (if it can
/// still hear us) and the error is returned: `VersionMismatch` or
/// `WrongProtocol` for a peer of another protocol version,
/// [`ProtoError::UnexpectedRole`] carrying `check`'s reason. No timeout is
/// applied here; wrap the call in `tokio::time::timeout`.
pub async fn handshake_as_listener<S>(
    framed: &mut Framed<S>,
    ours: &Hello,
    check: impl FnOnce(&Hello) -> std::result::Result<(), String>,
) -> Result<Hello>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    framed.send(ours).await?;
    let payload = framed
        .recv_payload()
        .await?
        .ok_or_else(closed_during_handshake)?;
    let peer = match decode_hello(&payload) {
        Ok(peer) => peer,
        Err(err) => {
            // Best effort: the peer may already be gone, and our own error
            // is the one that matters.
            let _ = framed.send(&refusal_for(&err)).await;
            return Err(err);
        }
    };
    if let Err(reason) = check(&peer) {
        let _ = framed
            .send(&HandshakeReply::Refused {
                reason: reason.clone(),
            })
            .await;
        return Err(ProtoError::UnexpectedRole(reason));
    }
    framed.send(&HandshakeReply::Accepted).await?;
    Ok(peer)
}

/// The connecting side's handshake: read the listener's `Hello`, check
/// its version and that it is the scheduler, send `ours`, and wait for the
/// verdict. Returns the listener's `Hello`.
///
/// On a version or protocol mismatch `ours` is still sent, so that the
/// listener can log the mismatch, and the mismatch is returned. A refusal
/// is [`ProtoError::Refused`] with the listener's reason. No timeout is
/// applied here; wrap the call in `tokio::time::timeout`.
pub async fn handshake_as_connector<S>(framed: &mut Framed<S>, ours: &Hello) -> Result<Hello>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let payload = framed
        .recv_payload()
        .await?
        .ok_or_else(closed_during_handshake)?;
    let peer = match decode_hello(&payload) {
        Ok(peer) => peer,
        Err(err @ (ProtoError::VersionMismatch { .. } | ProtoError::WrongProtocol { .. })) => {
            let _ = framed.send(ours).await;
            return Err(err);
        }
        Err(err) => return Err(err),
    };
    expect_scheduler(&peer)?;
    framed.send(ours).await?;
    framed
        .recv::<HandshakeReply>()
        .await?
        .ok_or_else(closed_during_handshake)?
        .into_result()?;
    Ok(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{DEFAULT_MAX_FRAME, encode_frame};

    /// The handshake is frozen: these bytes must never change.
    #[test]
    fn golden_hello_bytes() {
        let hello = Hello::new(
            Role::Agent {
                channel: "smtp".into(),
            },
            "skein-smtp",
        );
        let frame = encode_frame(&hello, DEFAULT_MAX_FRAME).unwrap();
        #[rustfmt::skip]
        let want: &[u8] = &[
            0x00, 0x00, 0x00, 0x18,                    // payload length 24
            0x05, b's', b'k', b'e', b'i', b'n',        // protocol "skein"
            0x02,                                      // version 2
            0x01, 0x04, b's', b'm', b't', b'p',        // Role::Agent { channel: "smtp" }
            0x0a, b's', b'k', b'e', b'i', b'n', b'-',  // program "skein-smtp"
                  b's', b'm', b't', b'p',
        ];
        assert_eq!(frame, want);
        assert_eq!(decode_hello(&frame[4..]).unwrap(), hello);
    }

    #[test]
    fn golden_reply_and_roles() {
        let table: [(Vec<u8>, &[u8]); 5] = [
            (enc(&HandshakeReply::Accepted), &[0x00]),
            (
                enc(&HandshakeReply::Refused {
                    reason: "no".into(),
                }),
                &[0x01, 0x02, b'n', b'o'],
            ),
            (enc(&Role::Scheduler), &[0x00]),
            (enc(&Role::Router), &[0x02]),
            (enc(&Role::Tool), &[0x03]),
        ];
        for (got, want) in table {
            assert_eq!(got, want);
        }
    }
    fn enc<T: Serialize>(msg: &T) -> Vec<u8> {
        encode_frame(msg, DEFAULT_MAX_FRAME).unwrap()[4..].to_vec()
    }

    #[test]
    fn hello_prefix_is_checked_first() {
        // A future Hello: version 3, a different role encoding and an
        // extra field. Only the prefix must be readable.
        let future: Vec<u8> = [&[0x05][..], b"skein", &[0x03, 0x09, 0xff, 0xff, 0xff]].concat();
        let err = decode_hello(&future).unwrap_err();
        assert!(
            matches!(err, ProtoError::VersionMismatch { ours: 2, theirs: 3 }),
            "{err}"
        );

        let other: Vec<u8> = [&[0x04][..], b"lmtp", &[0x01, 0x00, 0x00]].concat();
        assert!(matches!(
            decode_hello(&other).unwrap_err(),
            ProtoError::WrongProtocol { .. }
        ));

        // Version 1 with trailing garbage is malformed, not accepted.
        let mut trailing = enc(&Hello::new(Role::Tool, "t"));
        trailing.push(0);
        assert!(matches!(
            decode_hello(&trailing).unwrap_err(),
            ProtoError::Malformed(_)
        ));

        // Not even a prefix.
        assert!(matches!(
            decode_hello(&[0x09, b's']).unwrap_err(),
            ProtoError::Malformed(_)
        ));
    }

    #[test]
    fn refusals_name_both_sides() {
        let table = [
            (
                ProtoError::VersionMismatch { ours: 1, theirs: 2 },
                "protocol version mismatch: we speak skein/1, you speak skein/2",
            ),
            (
                ProtoError::WrongProtocol {
                    ours: "skein".into(),
                    theirs: "x".into(),
                },
                "wrong protocol: we speak \"skein\", you speak \"x\"",
            ),
            (
                ProtoError::Malformed("eof".into()),
                "bad hello: malformed message: eof",
            ),
        ];
        for (err, want) in table {
            assert_eq!(
                refusal_for(&err),
                HandshakeReply::Refused {
                    reason: want.into()
                }
            );
        }
    }

    #[test]
    fn only_the_scheduler_listens() {
        assert!(expect_scheduler(&Hello::new(Role::Scheduler, "s")).is_ok());
        let err = expect_scheduler(&Hello::new(Role::Tool, "skein")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected peer: expected the scheduler to listen, but tool (skein) did"
        );
    }
}
