//! Starting transport agents as processes and carrying their frames: the
//! real [`Launcher`].
//!
//! An agent is the clause's `command` with its `args`, its end of a
//! socketpair on fd 3, `SKEIN_CHANNEL` and `SKEIN_CONFIG` in its
//! environment. One task per agent does the handshake and then turns every
//! frame it reads into an [`Event`] for the scheduler's core; another
//! writes what the core queues for it. Whatever goes wrong on the
//! connection (EOF, a malformed frame, a refused handshake) ends in exactly
//! one [`Event::AgentGone`], after which the core defers everything the
//! agent had not reported.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use skein_proto::{
    AGENT_SOCKET_FD, AgentToScheduler, Framed, Hello, PROTOCOL_VERSION, Role, SchedulerToAgent,
};
use tokio::sync::mpsc;

use crate::agents::{Launched, Launcher, Spawn};
use crate::event::{AgentId, Event};

/// How long an agent may take to start and answer the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts agents as child processes; their frames and their end come back
/// as [`Event`]s.
pub struct Processes {
    events: mpsc::UnboundedSender<Event>,
}

impl Processes {
    /// A launcher whose agents report on `events`.
    pub fn new(events: mpsc::UnboundedSender<Event>) -> Processes {
        Processes { events }
    }
}

impl Launcher for Processes {
    fn launch(&mut self, id: AgentId, spec: &Spawn) -> std::io::Result<Launched> {
        let program = resolve_command(&spec.command);
        let started = start(id, &program, spec, self.events.clone())?;
        tracing::debug!(agent_pid = started.pid, program = %program.display(), channel = %spec.channel, "started agent");
        Ok(started)
    }

    fn kill(&mut self, pid: u32) {
        kill(pid);
    }
}

/// Resolves a clause's command: a path as given; a bare name first in the
/// directory of the running scheduler, then along PATH.
fn resolve_command(command: &str) -> PathBuf {
    if command.contains('/') {
        return PathBuf::from(command);
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let candidate = dir.join(command);
        if candidate.is_file() {
            return candidate;
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(command);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from(command)
}

/// Starts the agent and its I/O tasks. Errors are local (fork/exec
/// failed): the caller defers and retries later.
fn start(
    id: AgentId,
    program: &std::path::Path,
    spec: &Spawn,
    events: mpsc::UnboundedSender<Event>,
) -> std::io::Result<Launched> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let theirs: OwnedFd = theirs.into();
    let child_fd = theirs.as_raw_fd();
    let mut cmd = std::process::Command::new(program);
    cmd.args(&spec.args)
        .env("SKEIN_CHANNEL", &spec.channel)
        .stdin(std::process::Stdio::null());
    match &spec.config_path {
        Some(p) => cmd.env("SKEIN_CONFIG", p),
        None => cmd.env_remove("SKEIN_CONFIG"),
    };
    // The agent is not a systemd service of its own.
    cmd.env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID");
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if child_fd == AGENT_SOCKET_FD {
                let flags = libc::fcntl(child_fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(child_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(child_fd, AGENT_SOCKET_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = tokio::process::Command::from(cmd).spawn()?;
    drop(theirs);
    let pid = child.id().unwrap_or(0);
    ours.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(ours)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let channel = spec.channel.clone();
    tokio::spawn(conversation(id, pid, channel, stream, child, rx, events));
    Ok(Launched { pid, tx })
}

async fn conversation(
    id: AgentId,
    pid: u32,
    channel: String,
    stream: tokio::net::UnixStream,
    mut child: tokio::process::Child,
    mut rx: mpsc::UnboundedReceiver<SchedulerToAgent>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut framed = Framed::new(stream);
    let hello = Hello::new(
        Role::Scheduler,
        format!("skein-scheduler {}", env!("CARGO_PKG_VERSION")),
    );
    let expected = channel.clone();
    let handshake =
        skein_proto::handshake_as_listener(&mut framed, &hello, move |peer| match &peer.role {
            Role::Agent { channel } if *channel == expected => Ok(()),
            Role::Agent { channel } => Err(format!(
                "this agent was started for channel {expected:?} but says it serves {channel:?}"
            )),
            other => Err(format!("expected a transport agent, got {other:?}")),
        });
    let reason = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Err(_) => Some(format!(
            "no handshake within {}s",
            HANDSHAKE_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Some(format!(
            "handshake failed: {e} (we speak skein/{PROTOCOL_VERSION})"
        )),
        Ok(Ok(_)) => None,
    };
    let reason = match reason {
        Some(r) => r,
        None => {
            let _ = events.send(Event::AgentUp { agent: id });
            let (mut reader, mut writer) = framed.into_split();
            let writer_task = tokio::spawn(async move {
                while let Some(msg) = rx.recv().await {
                    if writer.send(&msg).await.is_err() {
                        break;
                    }
                }
            });
            let reason = loop {
                match reader.recv::<AgentToScheduler>().await {
                    Ok(Some(msg)) => {
                        if events.send(Event::AgentMsg { agent: id, msg }).is_err() {
                            break "scheduler stopping".to_string();
                        }
                    }
                    Ok(None) => break "closed its connection".to_string(),
                    Err(e) => break format!("protocol error: {e}"),
                }
            };
            writer_task.abort();
            reason
        }
    };
    // Make sure it is gone: an agent that talks garbage may still be alive.
    let status = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(s)) => s.to_string(),
        _ => {
            let _ = child.start_kill();
            match child.wait().await {
                Ok(s) => format!("killed ({s})"),
                Err(e) => format!("could not be reaped: {e}"),
            }
        }
    };
    let _ = events.send(Event::AgentGone {
        agent: id,
        reason: format!("agent pid {pid} {reason}; {status}"),
    });
}

/// Kills an agent (hung past its timeout).
fn kill(pid: u32) {
    if pid > 0 {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
