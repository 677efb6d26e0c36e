//! `skein-proto`: the control protocol of skein — every message that
//! passes between the scheduler, the transport agents, the router and the
//! spool tools, its framing and its handshake. The grammar, with the exact
//! byte layout, is `docs/agent-protocol.md`.
//!
//! **What it is.** A library, no process. Its core is sans-IO: a frame is a
//! 4-byte big-endian length followed by a bincode 2 payload
//! (`config::standard()`: little endian, varint integers); [`FrameDecoder`]
//! takes bytes and returns whole frames, with "need more bytes" as a normal
//! answer, and [`encode_frame`] does the reverse. A thin tokio adapter
//! ([`Framed`], [`FrameReader`], [`FrameWriter`]) and the async handshake
//! helpers sit on top.
//!
//! **What it reads and writes.** Only the streams its caller hands it: an
//! agent's socketpair, or the control socket `<spool>/run/scheduler.sock`.
//! It opens no file and no socket itself.
//!
//! **Whom it trusts.** Nobody on the other end of a stream. Every length is
//! bounded before anything is allocated (a frame above the maximum is
//! refused on its header; bincode runs with a byte budget so that a
//! garbage length inside a payload cannot reserve gigabytes), every payload
//! must decode exactly, and nothing from the peer can make it panic (a
//! fuzz target, `fuzz/fuzz_targets/frame_decoder.rs`, checks that).
//!
//! **On failure.** Every error is a [`ProtoError`] that says whose fault it
//! is. This crate never decides what happens to mail: the scheduler turns
//! any error on an agent's connection into *deferred* for every recipient
//! the agent has not reported.
//!
//! **Configuration.** None of its own. The frame maximum
//! ([`DEFAULT_MAX_FRAME`], 16 MiB) can be set per codec.
//!
//! **Compatibility.** [`Hello`] and [`HandshakeReply`] are frozen forever;
//! everything after the handshake belongs to [`PROTOCOL_VERSION`], which
//! must be bumped for any change of layout (reordering fields or variants
//! included).

#![warn(missing_docs)]

mod agent;
mod control;
mod envelope;
mod error;
mod frame;
mod handshake;
mod io;
mod reply;
mod selection;
mod stats;

pub use agent::{
    AgentToScheduler, Job, JobRecipient, Outcome, SchedulerToAgent, Status, remote_host,
};
pub use control::{
    ControlError, ControlErrorKind, ControlRequest, ControlResponse, FeedState, FlushTarget,
    GroupInfo, MessageDetail, MessageSummary, RecipientState, RecipientSummary, SchedulerStatus,
    ThreadInfo,
};
pub use envelope::{JobId, ThreadKey};
pub use error::{ProtoError, Result};
pub use frame::{
    DEFAULT_MAX_FRAME, FrameDecoder, HEADER_LEN, MAX_FRAME_CEILING, decode_payload, encode_frame,
    frame_payload,
};
pub use handshake::{
    AGENT_SOCKET_FD, HandshakeReply, Hello, PROTOCOL_NAME, PROTOCOL_VERSION, Role, decode_hello,
    expect_scheduler, handshake_as_connector, handshake_as_listener, refusal_for,
};
pub use io::{FrameReader, FrameWriter, Framed};
pub use reply::SmtpReply;
pub use selection::{BulkAction, SelectState, Selection};
/// Defined in `skein-mail`, shared with the spool and the SMTP codec; part
/// of this protocol all the same (see [`PROTOCOL_VERSION`]).
pub use skein_mail::{BodyType, EnhancedCode, Notify, ParseEnhancedCodeError, Ret};
pub use stats::SmtpdStats;
