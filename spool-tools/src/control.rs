//! The spool tools' side of the control socket,
//! `<spool.dir>/run/scheduler.sock`
//! ([`skein_spool::rendezvous::scheduler_socket`]): connect, handshake as a
//! [`Role::Tool`], send one [`ControlRequest`], read one
//! [`ControlResponse`].
//!
//! Every failure is a [`ClientError`] naming the socket and mapping to a
//! sysexits code, so that each command can end with one line and the right
//! status: "not running" (69) is the case scripts test for.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use skein_proto::{ControlRequest, ControlResponse, Framed, Hello, ProtoError, Role};
use tokio::net::UnixStream;

use crate::sysexits::{EX_SOFTWARE, EX_TEMPFAIL, EX_UNAVAILABLE};

/// sysexits `EX_OSERR`: an operating-system error (no runtime).
pub const EX_OSERR: u8 = 71;
/// sysexits `EX_PROTOCOL`: the remote side answered something unexpected.
pub const EX_PROTOCOL: u8 = 76;
/// sysexits `EX_NOPERM`: not allowed (the socket is mode 0660).
pub const EX_NOPERM: u8 = 77;

/// Connecting and the handshake: the scheduler answers these at once
/// from its accept loop, so a slow one is a stuck one.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The answer to one request. Listing a very large queue takes the
/// scheduler a while; a minute means it is not coming.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request got no answer.
#[derive(Debug)]
pub enum ClientError {
    /// Nobody listens: the socket does not exist or refuses connections.
    /// The scheduler is not running; nobody's fault.
    NotRunning {
        /// The socket tried.
        socket: PathBuf,
    },
    /// The connection failed for another local reason (permissions, a
    /// path that is not a socket).
    Connect {
        /// The socket tried.
        socket: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
    /// The scheduler accepted but did not answer in time.
    Timeout {
        /// The socket used.
        socket: PathBuf,
        /// What we were waiting for.
        waiting_for: &'static str,
        /// How long we waited.
        after: Duration,
    },
    /// The scheduler closed the connection before answering (it may be
    /// stopping).
    Closed {
        /// The socket used.
        socket: PathBuf,
    },
    /// The peer broke the protocol, speaks another version, or refused our
    /// handshake: its fault, or a version skew an operator must fix.
    Protocol {
        /// The socket used.
        socket: PathBuf,
        /// What went wrong.
        source: ProtoError,
    },
    /// The scheduler answered with a response of the wrong kind for the
    /// request: its bug (or ours).
    Unexpected {
        /// The request sent, by its [`ControlRequest::name`].
        request: &'static str,
        /// The response received, for the error message.
        got: String,
    },
    /// No async runtime could be built: a local resource failed.
    Runtime(io::Error),
}

impl ClientError {
    /// The sysexits code a command exits with.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::NotRunning { .. } => EX_UNAVAILABLE,
            ClientError::Connect { source, .. }
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                EX_NOPERM
            }
            ClientError::Connect { .. } => EX_UNAVAILABLE,
            ClientError::Timeout { .. } | ClientError::Closed { .. } => EX_TEMPFAIL,
            ClientError::Protocol { .. } => EX_PROTOCOL,
            ClientError::Unexpected { .. } => EX_SOFTWARE,
            ClientError::Runtime(_) => EX_OSERR,
        }
    }

    /// True when the scheduler is simply not running.
    pub fn is_not_running(&self) -> bool {
        matches!(self, ClientError::NotRunning { .. })
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NotRunning { socket } => {
                write!(f, "the scheduler is not running ({})", socket.display())
            }
            ClientError::Connect { socket, source } => write!(
                f,
                "cannot connect to the scheduler ({}): {source}",
                socket.display()
            ),
            ClientError::Timeout {
                socket,
                waiting_for,
                after,
            } => write!(
                f,
                "the scheduler did not send {waiting_for} within {}s ({})",
                after.as_secs(),
                socket.display()
            ),
            ClientError::Closed { socket } => write!(
                f,
                "the scheduler closed the connection without answering ({})",
                socket.display()
            ),
            ClientError::Protocol { socket, source } => {
                write!(
                    f,
                    "talking to the scheduler ({}): {source}",
                    socket.display()
                )
            }
            ClientError::Unexpected { request, got } => {
                write!(f, "the scheduler answered {request} with {got} (a bug)")
            }
            ClientError::Runtime(e) => write!(f, "cannot start the async runtime: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Sends `request` to the scheduler listening on `socket` and returns its
/// answer; runs its own current-thread runtime, for the synchronous CLI.
pub fn request_blocking(
    socket: &Path,
    request: &ControlRequest,
) -> Result<ControlResponse, ClientError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClientError::Runtime)?;
    runtime.block_on(request_async(socket, request))
}

/// [`request_blocking`] inside a runtime.
pub async fn request_async(
    socket: &Path,
    request: &ControlRequest,
) -> Result<ControlResponse, ClientError> {
    let mut framed = tokio::time::timeout(HANDSHAKE_TIMEOUT, connect(socket))
        .await
        .map_err(|_| ClientError::Timeout {
            socket: socket.to_owned(),
            waiting_for: "its handshake",
            after: HANDSHAKE_TIMEOUT,
        })??;
    let protocol = |source| ClientError::Protocol {
        socket: socket.to_owned(),
        source,
    };
    framed.send(request).await.map_err(protocol)?;
    match tokio::time::timeout(ANSWER_TIMEOUT, framed.recv::<ControlResponse>()).await {
        Err(_) => Err(ClientError::Timeout {
            socket: socket.to_owned(),
            waiting_for: "an answer",
            after: ANSWER_TIMEOUT,
        }),
        Ok(Ok(Some(response))) => Ok(response),
        Ok(Ok(None)) => Err(ClientError::Closed {
            socket: socket.to_owned(),
        }),
        Ok(Err(source)) => Err(protocol(source)),
    }
}

async fn connect(socket: &Path) -> Result<Framed<UnixStream>, ClientError> {
    let stream = UnixStream::connect(socket).await.map_err(|source| {
        match source.kind() {
            // No socket file, or a file nobody listens on (a scheduler that
            // died without removing it): not running either way.
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NotRunning {
                socket: socket.to_owned(),
            },
            _ => ClientError::Connect {
                socket: socket.to_owned(),
                source,
            },
        }
    })?;
    let mut framed = Framed::new(stream);
    let hello = Hello::new(Role::Tool, format!("skein {}", env!("CARGO_PKG_VERSION")));
    match skein_proto::handshake_as_connector(&mut framed, &hello).await {
        Ok(_) => Ok(framed),
        // The listener vanished between accept and hello: it is stopping.
        Err(ProtoError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Err(ClientError::Closed {
                socket: socket.to_owned(),
            })
        }
        Err(source) => Err(ClientError::Protocol {
            socket: socket.to_owned(),
            source,
        }),
    }
}

/// A response as an error message names it: [`ControlResponse::name`],
/// and for an `Error` its kind too (`Error(Internal)`).
pub fn response_name(response: &ControlResponse) -> String {
    match response {
        ControlResponse::Error(e) => format!("{}({:?})", response.name(), e.kind),
        other => other.name().to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A fake scheduler for tests: listens on a socket in a temporary
    //! directory, handshakes as the listener, and answers canned responses.

    use std::path::PathBuf;
    use std::thread::JoinHandle;

    use skein_proto::{ControlRequest, ControlResponse, Framed, Hello, Role};
    use tokio::net::UnixListener;

    /// How the fake behaves on its one connection.
    pub enum Script {
        /// Accept the handshake, then answer each request in turn.
        Answer(Vec<ControlResponse>),
        /// Refuse the handshake with this reason.
        Refuse(String),
        /// Accept the handshake, read the request, and hang up.
        HangUp,
        /// Send garbage instead of a hello.
        Garbage,
    }

    pub struct FakeScheduler {
        /// Holds the socket's directory for the fake's lifetime.
        _dir: tempfile::TempDir,
        pub socket: PathBuf,
        thread: Option<JoinHandle<Vec<ControlRequest>>>,
    }

    impl FakeScheduler {
        pub fn start(script: Script) -> FakeScheduler {
            let dir = tempfile::tempdir().expect("tempdir");
            let socket = skein_spool::Spool::open(dir.path())
                .expect("spool")
                .scheduler_socket();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            // Bound before the thread starts, so the client cannot race it.
            let listener = {
                let _guard = runtime.enter();
                UnixListener::bind(&socket).expect("bind")
            };
            let thread = std::thread::spawn(move || {
                runtime.block_on(async move { serve(listener, script).await })
            });
            FakeScheduler {
                _dir: dir,
                socket,
                thread: Some(thread),
            }
        }

        /// The requests the fake received (waits for it to finish).
        pub fn requests(mut self) -> Vec<ControlRequest> {
            self.thread
                .take()
                .map(|t| t.join().expect("fake scheduler panicked"))
                .unwrap_or_default()
        }
    }

    async fn serve(listener: UnixListener, script: Script) -> Vec<ControlRequest> {
        let (stream, _) = listener.accept().await.expect("accept");
        let mut framed = Framed::new(stream);
        let hello = Hello::new(Role::Scheduler, "fake-scheduler");
        let mut received = Vec::new();
        match script {
            Script::Garbage => {
                framed.send_payload(b"\xff\xff\xff").await.expect("send");
            }
            Script::Refuse(reason) => {
                let _ =
                    skein_proto::handshake_as_listener(
                        &mut framed,
                        &hello,
                        |_| Err(reason.clone()),
                    )
                    .await;
            }
            Script::HangUp => {
                skein_proto::handshake_as_listener(&mut framed, &hello, |_| Ok(()))
                    .await
                    .expect("handshake");
                if let Ok(Some(req)) = framed.recv::<ControlRequest>().await {
                    received.push(req);
                }
            }
            Script::Answer(responses) => {
                let peer = skein_proto::handshake_as_listener(&mut framed, &hello, |peer| {
                    if peer.role == Role::Tool {
                        Ok(())
                    } else {
                        Err(format!("expected a tool, got {:?}", peer.role))
                    }
                })
                .await
                .expect("handshake");
                assert!(peer.program.starts_with("skein "), "{}", peer.program);
                for response in responses {
                    match framed.recv::<ControlRequest>().await {
                        Ok(Some(req)) => received.push(req),
                        _ => break,
                    }
                    framed.send(&response).await.expect("send");
                }
            }
        }
        received
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{FakeScheduler, Script};
    use super::*;
    use skein_proto::ControlErrorKind;

    #[test]
    fn asks_and_gets_the_answer() {
        let fake = FakeScheduler::start(Script::Answer(vec![ControlResponse::Ok {
            message: "fine".into(),
        }]));
        let got = request_blocking(&fake.socket, &ControlRequest::ListQueue).expect("answer");
        assert_eq!(
            got,
            ControlResponse::Ok {
                message: "fine".into()
            }
        );
        assert_eq!(fake.requests(), vec![ControlRequest::ListQueue]);
    }

    #[test]
    fn responses_are_named_with_their_error_kind() {
        let error = |kind| {
            ControlResponse::Error(skein_proto::ControlError {
                kind,
                message: "m".into(),
            })
        };
        let table = [
            (
                ControlResponse::Ok {
                    message: "x".into(),
                },
                "Ok",
            ),
            (ControlResponse::Queue(vec![]), "Queue"),
            (error(ControlErrorKind::UnknownId), "Error(UnknownId)"),
            (error(ControlErrorKind::Internal), "Error(Internal)"),
        ];
        for (response, want) in table {
            assert_eq!(response_name(&response), want);
        }
    }

    #[test]
    fn failures_have_their_exit_codes() {
        // No socket at all.
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = skein_spool::rendezvous::scheduler_socket(dir.path());
        let err = request_blocking(&missing, &ControlRequest::Status).unwrap_err();
        assert!(err.is_not_running());
        assert_eq!(err.exit_code(), 69);
        assert_eq!(
            err.to_string(),
            format!("the scheduler is not running ({})", missing.display())
        );

        // A socket file left behind by a dead scheduler.
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
        let err = request_blocking(&stale, &ControlRequest::Status).unwrap_err();
        assert!(err.is_not_running(), "{err}");

        // A plain file where the socket should be.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "x").expect("write");
        let err = request_blocking(&plain, &ControlRequest::Status).unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::NotRunning { .. } | ClientError::Connect { .. }
            ),
            "{err:?}"
        );
        assert_eq!(err.exit_code(), 69);

        let refused = FakeScheduler::start(Script::Refuse("go away".into()));
        let err = request_blocking(&refused.socket, &ControlRequest::Status).unwrap_err();
        assert_eq!(err.exit_code(), EX_PROTOCOL, "{err}");
        assert!(err.to_string().contains("go away"), "{err}");

        let hangs_up = FakeScheduler::start(Script::HangUp);
        let err = request_blocking(&hangs_up.socket, &ControlRequest::Status).unwrap_err();
        assert!(matches!(err, ClientError::Closed { .. }), "{err:?}");
        assert_eq!(err.exit_code(), EX_TEMPFAIL);
        assert_eq!(hangs_up.requests(), vec![ControlRequest::Status]);

        let garbage = FakeScheduler::start(Script::Garbage);
        let err = request_blocking(&garbage.socket, &ControlRequest::Status).unwrap_err();
        assert_eq!(err.exit_code(), EX_PROTOCOL, "{err:?}");
    }
}
