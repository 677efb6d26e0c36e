//! # skein-mail — message, envelope and status syntax shared by every process
//!
//! Pure functions and plain types, no I/O, no other skein crate (it sits
//! at the bottom of the dependency graph, so that the protocol, the spool,
//! the SMTP codec and the daemons can all share one definition):
//!
//! - [`address`]: the RFC 5321 mailbox syntax (with RFC 6531 SMTPUTF8)
//!   used to check envelope addresses in `sendmail`, the SMTP server and
//!   the router;
//! - [`date`]: RFC 5322 dates for Date:, Received: and DSN fields;
//! - [`envelope`]: the envelope parameters `RET`, `NOTIFY` (RFC 3461) and
//!   `BODY` (RFC 6152, RFC 3030), parsed from and displayed as their
//!   parameter text in one place for the wire and the spool;
//! - [`xtext`]: the RFC 3461 xtext encoding of `ENVID`, `ORCPT` and `AUTH=`;
//! - [`status`]: RFC 3463 enhanced status codes, and the named codes skein
//!   reports, each checked when the program is compiled.
//!
//! The types of `envelope` and `status` are also part of the agent
//! protocol (`skein-proto` re-exports them); their serde layout is
//! documented on each and must not change without a protocol version bump.
//!
//! Hostile input goes through here, so nothing in it panics (except
//! [`EnhancedCode::must`], meant for constants) or allocates without bound.

pub mod address;
pub mod date;
pub mod downgrade;
pub mod envelope;
pub mod status;
pub mod xtext;

pub use address::{AddressError, Mailbox, valid_domain};
pub use envelope::{BodyType, Notify, ParseNotifyError, Ret};
pub use status::{EnhancedCode, ParseEnhancedCodeError};
