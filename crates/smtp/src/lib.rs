//! skein-smtp-codec: the SMTP wire codec, sans-IO, for both directions.
//!
//! **What it is.** A library, no process, no I/O: bytes in, typed values
//! out, and typed values rendered to bytes. "Need more bytes" is a normal
//! answer (`Ok(None)`), never an error. Every line it reads is bounded
//! ([`Limits`]) before anything is buffered beyond the bound, so that a
//! peer cannot make it allocate without limit.
//!
//! - [`Reply`], [`parse_reply`] and [`ReplyDecoder`]: server replies, one
//!   line or many (`250-…` continuations), with the RFC 3463 enhanced
//!   status code taken off the text when its class agrees with the reply
//!   code. [`Reply::write_to`] renders a reply (the server's direction).
//! - [`Extensions`]: the EHLO keywords that matter to skein (PIPELINING,
//!   CHUNKING, BINARYMIME, 8BITMIME, SIZE, ENHANCEDSTATUSCODES, DSN,
//!   SMTPUTF8, STARTTLS), parsed from an EHLO reply and rendered into one.
//! - [`Command`]: EHLO, HELO, MAIL FROM (SIZE, BODY, RET, ENVID, SMTPUTF8),
//!   RCPT TO (NOTIFY, ORCPT), DATA, BDAT, RSET, NOOP, QUIT, STARTTLS —
//!   rendered with [`Command::write_to`] and parsed back with
//!   [`Command::parse`] (the server side; issue 5 extends it).
//! - [`DotStuffer`] and [`DataDecoder`]: message content for `DATA`,
//!   stuffed chunk by chunk on the way out and un-stuffed on the way in,
//!   so a message is never held whole in memory.
//!
//! **Whom it trusts.** Nobody: every input may be hostile. Parsers return
//! errors that say whose fault it is ([`ReplyError`], [`CommandError`]);
//! nothing here panics on peer input (fuzz targets `smtp_reply`,
//! `smtp_command` and `smtp_data` in `fuzz/` check that).
//!
//! **Why our own codec.** `smtp-proto` (Stalwart) parses replies and
//! commands well, but has no streaming dot-stuffer, no bounded incremental
//! reply decoder of the shape the pipelining agent wants (many replies
//! queued in one read, each taken off as it completes), and would carry
//! types of its own where skein already has [`skein_mail::EnhancedCode`].
//! The codec is small enough to own, with table tests, round trips and
//! fuzz targets.

#![warn(missing_docs)]

mod command;
mod data;
mod ehlo;
mod error;
mod reply;
pub mod server;

pub use command::{Command, MailParams, Orcpt, RcptParams};
pub use data::{DataDecoder, DotStuffer};
pub use ehlo::Extensions;
pub use error::{CommandError, ReplyError};
pub use reply::{Limits, Reply, ReplyDecoder, parse_reply};

pub use skein_mail::{BodyType, EnhancedCode, Notify, Ret};
