//! Telling the scheduler about routed messages: `Submitted { queue_id }`
//! on `<spool>/run/scheduler.sock` (`Spool::scheduler_socket`), one
//! connection kept open and reused.
//!
//! The notification only saves the scheduler a wait: it scans `transport/`
//! at start and periodically, so a notification that is lost (scheduler
//! not running, restarting, hung) delays a message, never loses it. Hence
//! nothing here is an error for the router: failures are logged (at debug
//! level when the scheduler simply is not running) and routing goes on.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use skein_proto::{
    ControlRequest, ControlResponse, Framed, Hello, ProtoError, Role, handshake_as_connector,
};
use tokio::net::UnixStream;
use tokio::time::{Instant, timeout};

/// Bounds connecting plus the handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds one request and its answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// After a scheduler that answered wrongly or not at all, notifications are
/// skipped this long, so that a hung scheduler costs the router one timeout
/// per period rather than one per message.
const QUIET_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// The router's connection to the scheduler's control socket.
#[derive(Debug)]
pub struct SchedulerLink {
    path: PathBuf,
    conn: Option<Framed<UnixStream>>,
    quiet_until: Option<Instant>,
}

enum Failure {
    /// Nobody listens: the scheduler is not running.
    Absent(io::Error),
    /// Something else went wrong: worth a warning.
    Broken(String),
}

impl SchedulerLink {
    /// A link to the control socket at `path`; nothing is connected yet.
    pub fn new(path: PathBuf) -> SchedulerLink {
        SchedulerLink {
            path,
            conn: None,
            quiet_until: None,
        }
    }

    /// Tells the scheduler that `queue_id` is routed. Returns whether it
    /// acknowledged.
    pub async fn submitted(&mut self, queue_id: &str) -> bool {
        self.submitted_all(&[queue_id.to_owned()]).await == 1
    }

    /// Tells the scheduler that every message of `queue_ids` is routed,
    /// pipelined: all the requests are written, then all the answers read,
    /// so a batch costs one round trip. Returns how many it acknowledged.
    pub async fn submitted_all(&mut self, queue_ids: &[String]) -> usize {
        if queue_ids.is_empty() || self.quiet_until.is_some_and(|until| Instant::now() < until) {
            return 0;
        }
        self.quiet_until = None;
        let requests: Vec<ControlRequest> = queue_ids
            .iter()
            .map(|queue_id| ControlRequest::Submitted {
                queue_id: queue_id.clone(),
            })
            .collect();
        // A kept connection may have died with a previous scheduler: one
        // retry on a fresh connection tells that apart from a real failure.
        let reused = self.conn.is_some();
        let mut result = self.requests(&requests).await;
        if result.is_err() && reused {
            result = self.requests(&requests).await;
        }
        let first = queue_ids[0].as_str();
        let responses = match result {
            Ok(responses) => responses,
            Err(Failure::Absent(e)) => {
                tracing::debug!(queue_id = first, messages = queue_ids.len(), error = %e, "scheduler not running; it will find the messages when it starts");
                return 0;
            }
            Err(Failure::Broken(why)) => {
                self.quiet_until = Some(Instant::now() + QUIET_AFTER_FAILURE);
                tracing::warn!(
                    queue_id = first,
                    messages = queue_ids.len(),
                    error = why.as_str(),
                    "cannot notify the scheduler; it will find the messages on its next scan"
                );
                return 0;
            }
        };
        let mut acknowledged = 0;
        for (queue_id, response) in queue_ids.iter().zip(responses) {
            let queue_id = queue_id.as_str();
            match response {
                ControlResponse::Ok { .. } => {
                    tracing::debug!(queue_id, "scheduler notified");
                    acknowledged += 1;
                }
                ControlResponse::Error(e) => {
                    tracing::warn!(queue_id, kind = ?e.kind, error = e.message.as_str(), "scheduler refused the notification");
                }
                other => {
                    self.conn = None;
                    tracing::warn!(queue_id, response = ?other, "unexpected answer from the scheduler; dropping the connection");
                    break;
                }
            }
        }
        acknowledged
    }

    /// Writes every request, then reads one answer per request.
    async fn requests(
        &mut self,
        requests: &[ControlRequest],
    ) -> Result<Vec<ControlResponse>, Failure> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        let exchange = async {
            for request in requests {
                conn.send(request).await?;
            }
            let mut responses = Vec::with_capacity(requests.len());
            while responses.len() < requests.len() {
                match conn.recv::<ControlResponse>().await? {
                    Some(response) => responses.push(response),
                    None => return Ok(None),
                }
            }
            Ok::<_, ProtoError>(Some(responses))
        };
        match timeout(REPLY_TIMEOUT, exchange).await {
            Ok(Ok(Some(responses))) => {
                self.conn = Some(conn);
                Ok(responses)
            }
            Ok(Ok(None)) => Err(Failure::Broken(
                "the scheduler closed the connection".into(),
            )),
            Ok(Err(e)) => Err(Failure::Broken(e.to_string())),
            Err(_) => Err(Failure::Broken(format!(
                "no answer within {} s",
                REPLY_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn connect(&self) -> Result<Framed<UnixStream>, Failure> {
        let handshake = async {
            let stream = UnixStream::connect(&self.path)
                .await
                .map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                        Failure::Absent(e)
                    }
                    _ => Failure::Broken(format!("connect {}: {e}", self.path.display())),
                })?;
            let mut framed = Framed::new(stream);
            let hello = Hello::new(
                Role::Router,
                concat!("skein-router ", env!("CARGO_PKG_VERSION")),
            );
            match handshake_as_connector(&mut framed, &hello).await {
                Ok(_) => Ok(framed),
                Err(ProtoError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                    Err(Failure::Absent(e))
                }
                Err(e) => Err(Failure::Broken(format!("handshake: {e}"))),
            }
        };
        match timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Broken(format!(
                "no handshake within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_proto::{ControlError, ControlErrorKind, handshake_as_listener};
    use tokio::net::UnixListener;

    /// A scheduler stand-in: accepts connections, answers each `Submitted`
    /// with `answer(queue_id)`, and reports the ids it saw.
    fn fake_scheduler(
        listener: UnixListener,
        answer: fn(&str) -> ControlResponse,
    ) -> tokio::sync::mpsc::UnboundedReceiver<(usize, String)> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut connection = 0;
            while let Ok((stream, _)) = listener.accept().await {
                connection += 1;
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut framed = Framed::new(stream);
                    let ours = Hello::new(Role::Scheduler, "fake");
                    if handshake_as_listener(&mut framed, &ours, |peer| {
                        (peer.role == Role::Router)
                            .then_some(())
                            .ok_or("not the router".to_owned())
                    })
                    .await
                    .is_err()
                    {
                        return;
                    }
                    while let Ok(Some(ControlRequest::Submitted { queue_id })) =
                        framed.recv::<ControlRequest>().await
                    {
                        let _ = tx.send((connection, queue_id.clone()));
                        if framed.send(&answer(&queue_id)).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        rx
    }

    /// The scheduler's socket in a fresh spool under `d`.
    fn socket_in(d: &tempfile::TempDir) -> PathBuf {
        skein_spool::Spool::open(d.path())
            .unwrap()
            .scheduler_socket()
    }

    fn ok(_: &str) -> ControlResponse {
        ControlResponse::Ok {
            message: String::new(),
        }
    }

    #[tokio::test]
    async fn absent_scheduler_is_not_an_error() {
        let d = tempfile::tempdir().unwrap();
        let mut link = SchedulerLink::new(socket_in(&d));
        assert!(!link.submitted("X").await);
        assert!(
            link.quiet_until.is_none(),
            "absence is not a failure to back off from"
        );
    }

    #[tokio::test]
    async fn one_connection_is_reused_and_replaced_when_it_dies() {
        let d = tempfile::tempdir().unwrap();
        let path = socket_in(&d);
        let listener = UnixListener::bind(&path).unwrap();
        let mut seen = fake_scheduler(listener, ok);
        let mut link = SchedulerLink::new(path.clone());
        assert!(link.submitted("A").await);
        assert!(link.submitted("B").await);
        assert_eq!(seen.recv().await.unwrap(), (1, "A".to_owned()));
        assert_eq!(seen.recv().await.unwrap(), (1, "B".to_owned()));

        // The scheduler restarts: the kept connection is dead, a new one
        // is made for the same notification.
        let (a, _b) = UnixStream::pair().unwrap();
        let dead = Framed::new(a);
        link.conn = Some(dead);
        drop(_b);
        assert!(link.submitted("C").await);
        assert_eq!(seen.recv().await.unwrap(), (2, "C".to_owned()));
    }

    #[tokio::test]
    async fn a_batch_is_pipelined_on_one_connection_and_counted() {
        let d = tempfile::tempdir().unwrap();
        let path = socket_in(&d);
        let listener = UnixListener::bind(&path).unwrap();
        // Every id with a 'x' in it is refused.
        let mut seen = fake_scheduler(listener, |id| {
            if id.contains('x') {
                ControlResponse::Error(ControlError {
                    kind: ControlErrorKind::UnknownId,
                    message: "no such message".into(),
                })
            } else {
                ok(id)
            }
        });
        let mut link = SchedulerLink::new(path);
        let ids: Vec<String> = (0..300)
            .map(|i| {
                if i % 100 == 7 {
                    format!("x{i}")
                } else {
                    format!("M{i}")
                }
            })
            .collect();
        assert_eq!(link.submitted_all(&ids).await, 297);
        for id in &ids {
            assert_eq!(seen.recv().await.unwrap(), (1, id.clone()));
        }
        assert_eq!(link.submitted_all(&[]).await, 0);
        assert!(link.conn.is_some());
    }

    #[tokio::test]
    async fn refusals_are_reported() {
        let d = tempfile::tempdir().unwrap();
        let path = socket_in(&d);
        let listener = UnixListener::bind(&path).unwrap();
        let _seen = fake_scheduler(listener, |_| {
            ControlResponse::Error(ControlError {
                kind: ControlErrorKind::UnknownId,
                message: "no such message".into(),
            })
        });
        let mut link = SchedulerLink::new(path);
        assert!(!link.submitted("A").await);
        assert!(link.conn.is_some(), "an error answer keeps the connection");
    }

    #[tokio::test]
    async fn a_listener_that_is_not_a_scheduler_is_a_failure() {
        let d = tempfile::tempdir().unwrap();
        let path = socket_in(&d);
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let mut framed = Framed::new(stream);
                let _ = framed.send(&Hello::new(Role::Tool, "impostor")).await;
            }
        });
        let mut link = SchedulerLink::new(path);
        assert!(!link.submitted("A").await);
        assert!(link.quiet_until.is_some(), "backs off after a real failure");
        assert!(!link.submitted("B").await, "quiet period");
    }
}
