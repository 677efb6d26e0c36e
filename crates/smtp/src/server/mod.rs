//! Server-side pieces of the codec, sans-IO like the rest: what
//! `skein-smtpd` needs on top of [`Command`](crate::Command).
//!
//! - [`CommandLines`]: splits the client's byte stream into command lines,
//!   bounded, telling a CRLF line from one ended by a bare LF, and turning
//!   an over-long line into one [`LineEvent::TooLong`] however long it is.
//! - [`ServerCommand`]: every verb a server answers — the [`Command`]s
//!   the client side renders plus `VRFY`, `EXPN`, `HELP` and `AUTH`.
//! - [`ContentCheck`]: watches message text (un-stuffed DATA or BDAT
//!   chunks) for what a server refuses: bare CR, bare LF, NUL bytes and
//!   over-long lines.
//!
//! [`Command`]: crate::Command

mod content;
mod line;
mod verb;

pub use content::{ContentCheck, ContentViolation};
pub use line::{CommandLines, LineEnd, LineEvent};
pub use verb::ServerCommand;
