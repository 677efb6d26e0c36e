//! # skein-mail — message and address syntax shared by every process
//!
//! Pure functions, no I/O: the RFC 5321 mailbox syntax (with RFC 6531
//! SMTPUTF8) used to check envelope addresses in `sendmail`, the SMTP
//! server and the router. Hostile input goes through here, so nothing in
//! it panics or allocates without bound.

pub mod address;
pub mod date;

pub use address::{AddressError, Mailbox, valid_domain};
