//! # skein-tools — the administrator's command, `skein`
//!
//! One binary for the operator: `skein config check` validates and prints
//! the effective configuration; `skein sendmail` (also reached as
//! `sendmail` through argv\[0\], a symlink or a copy) submits a message
//! into the spool. The queue tools (`skein mailq`, also reached as
//! `mailq`, and `skein queue show|hold|release|delete|flush|requeue`) ask
//! the scheduler over its control socket ([`control`], [`queue`]);
//! `skein start`/`stop` run and stop the service supervisor
//! ([`supervisor`]) and `skein status` reports on both ([`status`]).
//!
//! Privilege: runs as whoever invokes it; it opens no socket to the
//! network. `sendmail` writes only into the spool's `tmp/` and
//! `incoming/` directories — or, for a user who may not, pipes the
//! submission to the setgid `skein-postdrop` ([`postdrop`], a second
//! binary of this crate); the queue tools connect to
//! `<spool.dir>/run/scheduler.sock` (mode 0666: the scheduler decides
//! from the peer's credentials what each user may ask) and write nothing;
//! `start` holds `<spool.dir>/run/skein.pid` and keeps the privilege it
//! was started with for its children. Configuration keys read:
//! `spool.dir`, `hostname`, `router.local_domains` (to qualify bare user
//! names) and `smtpd.max_message_size` (the size limit applies to local
//! submission too).
//!
//! On failure every command prints one line naming what went wrong and
//! exits with a sysexits(3) code.

pub mod cli;
pub mod control;
pub mod dkim;
pub mod postdrop;
pub mod queue;
pub mod sendmail;
pub mod status;
pub mod supervisor;
pub mod sysexits;
