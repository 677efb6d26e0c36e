//! Adopting the socket the scheduler leaves on file descriptor 3.
//!
//! The only `unsafe` of the crate is here: turning a raw descriptor number
//! into an owned socket is sound only if the descriptor is open, is a
//! socket, and nothing else in the process owns it. The first two are
//! checked with `fcntl` and `fstat`; the third is the contract of a
//! transport agent (fd 3 is the scheduler's) plus a flag that lets this
//! process adopt it once.

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};

use skein_proto::AGENT_SOCKET_FD;

use crate::error::{AgentError, Result};

static TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes ownership of fd 3 as a Unix stream socket, marking it
/// close-on-exec so that programs the agent runs do not inherit a line to
/// the scheduler.
pub(crate) fn take() -> Result<UnixStream> {
    let fd: RawFd = AGENT_SOCKET_FD;
    check(fd)?;
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(AgentError::NotStartedByScheduler(format!(
            "file descriptor {fd} was already adopted by this process"
        )));
    }
    // SAFETY: `check` proved the descriptor open and a socket, and `TAKEN`
    // guarantees this is the only place in the process that turns it into
    // an owner; by the agent contract no other code uses fd 3.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    Ok(stream)
}

fn check(fd: RawFd) -> Result<()> {
    // SAFETY: F_GETFD/F_SETFD take and return plain integers and touch no
    // memory; on a closed descriptor they fail with EBADF, nothing else.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags == -1 {
        return Err(AgentError::NotStartedByScheduler(format!(
            "file descriptor {fd} is not open"
        )));
    }
    // SAFETY: `stat` is plain old data, fully written by a successful
    // fstat and only read after one.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is to a live, writable `stat`.
    if unsafe { libc::fstat(fd, &mut stat) } == -1 {
        return Err(AgentError::NotStartedByScheduler(format!(
            "cannot stat file descriptor {fd}: {}",
            std::io::Error::last_os_error()
        )));
    }
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(AgentError::NotStartedByScheduler(format!(
            "file descriptor {fd} is not a socket"
        )));
    }
    if flags & libc::FD_CLOEXEC == 0 {
        // SAFETY: as for F_GETFD above.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } == -1 {
            return Err(AgentError::Local {
                what: "marking the scheduler socket close-on-exec",
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_regular_file_is_not_a_scheduler() {
        let file = std::fs::File::open("/dev/null").expect("open /dev/null");
        let err = check(file.as_raw_fd()).expect_err("a character device");
        assert!(err.to_string().contains("is not a socket"), "{err}");
    }

    #[test]
    fn a_socket_passes_and_becomes_close_on_exec() {
        let (a, _b) = UnixStream::pair().expect("socketpair");
        let fd = a.as_raw_fd();
        check(fd).expect("a socket");
        // SAFETY: F_GETFD on a descriptor we own.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
    }
}
