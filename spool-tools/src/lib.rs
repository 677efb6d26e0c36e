//! # skein-tools — the administrator's command, `skein`
//!
//! One binary for the operator: `skein config check` validates and prints
//! the effective configuration; `skein sendmail` (also reached as
//! `sendmail` through argv\[0\], a symlink or a copy) submits a message
//! into the spool. Queue tools (`mailq`, `queue …`) and the service
//! supervisor (`start`, `stop`, `status`) talk to the scheduler and arrive
//! with it.
//!
//! Privilege: runs as whoever invokes it; it opens no socket to the
//! network. `sendmail` writes only into the spool's `tmp/` and
//! `incoming/` directories. Configuration keys read: `spool.dir`,
//! `hostname`, `router.local_domains` (to qualify bare user names) and
//! `smtpd.max_message_size` (the size limit applies to local submission
//! too).
//!
//! On failure every command prints one line naming what went wrong and
//! exits with a sysexits(3) code.

pub mod cli;
pub mod sendmail;
pub mod sysexits;
