//! Exit codes of sysexits(3), which scripts calling `sendmail` test for.

/// Success.
pub const EX_OK: u8 = 0;
/// The command was used incorrectly.
pub const EX_USAGE: u8 = 64;
/// The input data was incorrect (no recipients, bad address, too large).
pub const EX_DATAERR: u8 = 65;
/// The input could not be read.
pub const EX_NOINPUT: u8 = 66;
/// The user named does not exist (`skein start` as root: the account to
/// run the services as).
pub const EX_NOUSER: u8 = 67;
/// A service is unavailable (e.g. the scheduler is not running).
pub const EX_UNAVAILABLE: u8 = 69;
/// An internal software error (a bug).
pub const EX_SOFTWARE: u8 = 70;
/// A file or directory cannot be created (the spool).
pub const EX_CANTCREAT: u8 = 73;
/// An input or output error (`sendmail -bs`: the session's stream).
pub const EX_IOERR: u8 = 74;
/// A temporary failure: try again later (the spool cannot take mail now).
pub const EX_TEMPFAIL: u8 = 75;
/// Something was wrong in the configuration.
pub const EX_CONFIG: u8 = 78;

/// A failure of `sendmail` or `skein-postdrop`: its sysexits code and the
/// line to print after the program's name.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    /// sysexits code.
    pub code: u8,
    /// What went wrong.
    pub message: String,
}

/// A [`Failure`] with `code` and `message`.
pub fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}
