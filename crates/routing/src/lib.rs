//! # skein-routing — where a recipient goes, and whether a local user exists
//!
//! **Job.** Decides, for one envelope recipient, the thread `(channel,
//! host)` it is delivered on — or the failure it bounces with, and its
//! enhanced status code: local domains, `/etc/aliases` expansion with
//! `:include:` lists, `[[route]]`s, and the one rule for local user names
//! and the one user lookup.
//!
//! **Reads.** The aliases file and its `:include:` files (when an
//! [`AliasTable`](aliases::AliasTable) is loaded or reloaded, never while
//! routing), the user database (`getpwnam`) and the Maildir root (does
//! `<local.maildir_root>/<user>` exist). **Writes** nothing. It is pure of
//! spool I/O: it takes an [`Envelope`](skein_spool::Envelope) value and
//! returns [`Routed`](route::Routed) values; reading and writing spool
//! files is its callers' business.
//!
//! **Used by** the router (`skein-router`, which routes every accepted
//! message with it), the SMTP server (`skein-smtpd`, which runs the same
//! routing on each `RCPT TO` at a local domain, so that it refuses exactly
//! what the router would fail) and the local agent (`skein-local`, which
//! checks the user it delivers to with the same name rule and lookup), so
//! that the three can never disagree about a local recipient.
//!
//! **Trust.** Addresses are hostile (they come from SMTP): they are
//! checked with `skein_mail::Mailbox` before use, and a local user name
//! becomes a path component only after [`users::check_user_name`]. The
//! aliases file is trusted as the operator's; `|command` and `/file`
//! targets are refused unless the configuration allows them.
//!
//! **Configuration** (read from the [`skein_config::Config`] the caller
//! passes): `hostname`, `router.local_domains`, `router.aliases`,
//! `router.allow_pipe_targets`, `router.allow_file_targets`, `[[route]]`,
//! `local.maildir_root`.

pub mod aliases;
pub mod route;
pub mod users;
