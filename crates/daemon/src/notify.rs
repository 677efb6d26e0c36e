//! Readiness notification to systemd (`sd_notify`), without libsystemd.
//!
//! Under a `Type=notify` unit systemd passes a datagram socket address in
//! `NOTIFY_SOCKET`; the daemon sends newline-separated `KEY=VALUE` states to
//! it: `READY=1` once it serves, `STOPPING=1` when it begins to stop,
//! `WATCHDOG=1` as a heartbeat, `STATUS=…` for `systemctl status`. Outside
//! systemd the variable is unset and every call here is a successful no-op,
//! so the same binary runs under a terminal, `skein start` or systemd.
//!
//! The sending is done here rather than by the `sd-notify` crate because
//! that crate only sends to the address in the environment; taking the
//! address as a parameter is what makes [`notify_to`] testable without
//! mutating the environment. `sd-notify` still supplies the state names.

use std::env;
use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use sd_notify::NotifyState;

use crate::DaemonError;

/// The environment variable systemd uses to pass the notification socket.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Tells the service manager that start-up is complete (`READY=1`).
pub fn notify_ready() -> Result<(), DaemonError> {
    notify_env(&[NotifyState::Ready])
}

/// Tells the service manager that a reload has begun (`RELOADING=1` with
/// the `MONOTONIC_USEC` stamp systemd 253+ requires). Send
/// [`notify_ready`] again once the new configuration is in force.
pub fn notify_reloading() -> Result<(), DaemonError> {
    notify_env(&reloading_states()?)
}

/// Tells the service manager that the daemon is stopping (`STOPPING=1`).
pub fn notify_stopping() -> Result<(), DaemonError> {
    notify_env(&[NotifyState::Stopping])
}

/// Sets the one-line status shown by `systemctl status`.
///
/// Line breaks and other control characters would end the `STATUS=` state
/// early (and let the text inject other states), so they become spaces.
pub fn notify_status(status: &str) -> Result<(), DaemonError> {
    let status = one_line(status);
    notify_env(&[NotifyState::Status(&status)])
}

/// Sends a watchdog heartbeat (`WATCHDOG=1`).
pub fn notify_watchdog() -> Result<(), DaemonError> {
    notify_env(&[NotifyState::Watchdog])
}

/// Sends `message` (newline-separated states, e.g. `"READY=1"`) to the
/// notification socket `socket`.
///
/// `socket` is a filesystem path or, when it starts with `@`, a name in
/// Linux's abstract socket namespace, as systemd may pass either.
pub fn notify_to(socket: &OsStr, message: &str) -> Result<(), DaemonError> {
    let failed = |source| DaemonError::Notify {
        socket: socket.to_owned(),
        source,
    };
    let sender = UnixDatagram::unbound().map_err(failed)?;
    let bytes = socket.as_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            let address = SocketAddr::from_abstract_name(name).map_err(failed)?;
            sender.send_to_addr(message.as_bytes(), &address)
        }
        None => sender.send_to(message.as_bytes(), socket),
    }
    .map_err(failed)?;
    if sent != message.len() {
        return Err(failed(io::Error::new(
            io::ErrorKind::WriteZero,
            "notification datagram truncated",
        )));
    }
    Ok(())
}

/// The socket systemd passed, if any. An empty value counts as unset.
pub(crate) fn socket_from_env() -> Option<std::ffi::OsString> {
    env::var_os(NOTIFY_SOCKET_ENV).filter(|socket| !socket.is_empty())
}

/// Renders states as one notification message.
pub(crate) fn message(states: &[NotifyState<'_>]) -> String {
    states
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) fn reloading_states() -> Result<[NotifyState<'static>; 2], DaemonError> {
    let now = NotifyState::monotonic_usec_now().map_err(|source| DaemonError::Notify {
        socket: socket_from_env().unwrap_or_default(),
        source,
    })?;
    Ok([NotifyState::Reloading, now])
}

fn notify_env(states: &[NotifyState<'_>]) -> Result<(), DaemonError> {
    match socket_from_env() {
        Some(socket) => notify_to(&socket, &message(states)),
        None => Ok(()),
    }
}

/// Replaces control characters, which would end a state early, by spaces.
pub(crate) fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// How often to send `WATCHDOG=1`, from systemd's `WATCHDOG_USEC` and
/// `WATCHDOG_PID`: half the timeout, as `sd_watchdog_enabled(3)` advises.
/// `None` when no watchdog is set up for this process.
pub(crate) fn watchdog_interval(
    usec: Option<&str>,
    pid: Option<&str>,
    our_pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    // The variables are inherited by children; only the process systemd
    // named is meant to ping.
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok()? != our_pid
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buffer = [0u8; 4096];
        let length = socket.recv(&mut buffer).expect("datagram");
        String::from_utf8_lossy(&buffer[..length]).into_owned()
    }

    #[test]
    fn sends_to_a_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).expect("bind");
        for states in [
            vec![NotifyState::Ready],
            vec![NotifyState::Stopping],
            vec![NotifyState::Status("3 threads, 12 jobs")],
            vec![NotifyState::Watchdog],
        ] {
            let text = message(&states);
            notify_to(path.as_os_str(), &text).expect("send");
            assert_eq!(receive(&listener), text);
        }
    }

    #[test]
    fn sends_to_an_abstract_name() {
        let name = format!("skein-daemon-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("address");
        let listener = UnixDatagram::bind_addr(&address).expect("bind abstract");
        notify_to(OsStr::new(&format!("@{name}")), "READY=1").expect("send");
        assert_eq!(receive(&listener), "READY=1");
    }

    #[test]
    fn missing_socket_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent.sock");
        let error = notify_to(path.as_os_str(), "READY=1").expect_err("no listener");
        assert!(matches!(error, DaemonError::Notify { .. }));
        assert!(error.to_string().contains("absent.sock"), "{error}");
    }

    #[test]
    fn messages() {
        let reloading = reloading_states().expect("monotonic clock");
        let text = message(&reloading);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("RELOADING=1"));
        let stamp = lines
            .next()
            .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
            .and_then(|v| v.parse::<u64>().ok());
        assert!(stamp.is_some_and(|usec| usec > 0), "{text:?}");
        assert_eq!(message(&[NotifyState::Ready]), "READY=1");
    }

    #[test]
    fn status_is_kept_on_one_line() {
        let cases = [
            ("delivering", "delivering"),
            ("a\nREADY=1", "a READY=1"),
            ("tab\tcr\r", "tab cr "),
        ];
        for (input, expected) in cases {
            assert_eq!(one_line(input), expected);
        }
    }

    #[test]
    fn watchdog_intervals() {
        let cases = [
            (None, None, None),
            (Some("2000000"), None, Some(Duration::from_secs(1))),
            (Some("2000000"), Some("42"), Some(Duration::from_secs(1))),
            (Some("2000000"), Some("43"), None),
            (Some("2000000"), Some("junk"), None),
            (Some("0"), None, None),
            (Some("soon"), None, None),
        ];
        for (usec, pid, expected) in cases {
            assert_eq!(
                watchdog_interval(usec, pid, 42),
                expected,
                "usec={usec:?} pid={pid:?}"
            );
        }
    }
}
