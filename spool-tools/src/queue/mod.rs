//! `skein mailq` and `skein queue show|hold|release|delete|flush|requeue`:
//! one request to the scheduler over its control socket, one answer
//! printed.
//!
//! Reads the configuration (for `spool.dir`) and talks only to
//! `<spool.dir>/run/scheduler.sock`; it reads no spool file itself, so
//! what it prints is what the scheduler believes. Queue ids are checked
//! locally before anything is sent (exit 64 for a malformed one).
//!
//! Exit codes: 0 done; 1 the scheduler refused (unknown id, or a request
//! that makes no sense for the message); 64 a bad command line; 69 the
//! scheduler is not running; 70 the scheduler failed or answered out of
//! turn; 75 it could not do it now, or did not answer in time; 76 it broke
//! the protocol; 77 the socket is not ours to use; 78 a broken
//! configuration.

pub mod json;
pub mod text;

use std::io::Write;
use std::path::Path;

use skein_proto::{
    BulkAction, ControlErrorKind, ControlRequest, ControlResponse, FlushTarget, Selection,
    ThreadKey,
};
use skein_spool::{QUEUE_ID_LEN, QueueId};

use crate::control::{self, ClientError};
use crate::sysexits::{EX_OK, EX_SOFTWARE, EX_TEMPFAIL};
use text::Clock;

/// Exit status when the scheduler refuses a request (unknown id, or a
/// request that makes no sense for the message).
pub const EX_REFUSED: u8 = 1;

/// One queue command, its arguments checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueCommand {
    /// List the queue (`threads`: list thread groups instead).
    Mailq {
        /// `--threads`: per group and per thread.
        threads: bool,
        /// `--json`.
        json: bool,
        /// Only the messages these selectors select (`--domain`, …).
        selection: Option<Selection>,
        /// `--ages`: destinations by age (Postfix's qshape) instead.
        ages: bool,
    },
    /// Show one message.
    Show {
        /// The message.
        id: QueueId,
        /// `--json`.
        json: bool,
    },
    /// Hold a message.
    Hold(QueueId),
    /// Release a held message.
    Release(QueueId),
    /// Delete a message without a bounce.
    Delete(QueueId),
    /// Retry now.
    Flush(FlushTarget),
    /// Route a message again.
    Requeue(QueueId),
    /// One action on every message a selection selects.
    Bulk(BulkAction, Selection),
}

impl QueueCommand {
    /// The request this command sends.
    pub fn request(&self) -> ControlRequest {
        let id = |id: &QueueId| id.as_str().to_owned();
        match self {
            QueueCommand::Mailq { threads: false, .. } => ControlRequest::ListQueue,
            QueueCommand::Mailq { threads: true, .. } => ControlRequest::ListThreads,
            QueueCommand::Show { id: q, .. } => ControlRequest::Show { queue_id: id(q) },
            QueueCommand::Hold(q) => ControlRequest::Hold { queue_id: id(q) },
            QueueCommand::Release(q) => ControlRequest::Release { queue_id: id(q) },
            QueueCommand::Delete(q) => ControlRequest::Delete { queue_id: id(q) },
            QueueCommand::Flush(target) => ControlRequest::Flush(target.clone()),
            QueueCommand::Requeue(q) => ControlRequest::Requeue { queue_id: id(q) },
            QueueCommand::Bulk(action, selection) => ControlRequest::Bulk {
                action: *action,
                selection: selection.clone(),
            },
        }
    }

    /// What to print when the scheduler confirms with an empty message.
    fn confirmation(&self) -> String {
        match self {
            QueueCommand::Hold(q) => format!("{q}: held"),
            QueueCommand::Release(q) => format!("{q}: released"),
            QueueCommand::Delete(q) => format!("{q}: deleted"),
            QueueCommand::Requeue(q) => format!("{q}: requeued"),
            QueueCommand::Flush(FlushTarget::All) => "flushing the whole queue".into(),
            QueueCommand::Flush(FlushTarget::Message(q)) => format!("{q}: flushed"),
            QueueCommand::Flush(FlushTarget::Thread(key)) => format!("thread {key}: flushed"),
            QueueCommand::Bulk(action, selection) => {
                format!("{}: {}", action.as_str(), selection.describe())
            }
            QueueCommand::Mailq { .. } | QueueCommand::Show { .. } => "done".into(),
        }
    }
}

/// A queue id from the command line. Crockford base32 is case-blind, so
/// lower case is accepted and made upper case.
pub fn parse_queue_id(text: &str) -> Result<QueueId, String> {
    text.trim().to_ascii_uppercase().parse::<QueueId>().map_err(|_| {
        format!(
            "invalid queue id {text:?}: expected {QUEUE_ID_LEN} characters of 0-9 and A-Z (no I, L, O, U)"
        )
    })
}

/// A thread as `channel/host` (the host may be empty, the channel not).
pub fn parse_thread(text: &str) -> Result<ThreadKey, String> {
    match text.split_once('/') {
        Some((channel, host)) if !channel.is_empty() && !channel.contains(char::is_whitespace) => {
            Ok(ThreadKey::new(channel, host))
        }
        _ => Err(format!(
            "invalid thread {text:?}: expected channel/host, e.g. smtp/example.org"
        )),
    }
}

/// The exit status for a refusal from the scheduler.
pub fn exit_for(kind: ControlErrorKind) -> u8 {
    match kind {
        ControlErrorKind::UnknownId | ControlErrorKind::Invalid => EX_REFUSED,
        ControlErrorKind::Unavailable => EX_TEMPFAIL,
        ControlErrorKind::Internal => EX_SOFTWARE,
        ControlErrorKind::Forbidden => crate::control::EX_NOPERM,
    }
}

/// Runs `command` against the scheduler at `socket`; `prog` prefixes error
/// messages (`skein`, or `mailq` when called by that name). Returns the
/// exit status.
pub fn run(
    command: &QueueCommand,
    socket: &Path,
    prog: &str,
    clock: &Clock,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let request = command.request();
    let response = match control::request_blocking(socket, &request) {
        Ok(response) => response,
        Err(e) => {
            let _ = writeln!(err, "{prog}: {e}");
            return e.exit_code();
        }
    };
    let printed = match (command, response) {
        (_, ControlResponse::Error(e)) => {
            let message = text::one_line(&e.message);
            let _ = if message.is_empty() {
                writeln!(err, "{prog}: the scheduler refused: {:?}", e.kind)
            } else {
                writeln!(err, "{prog}: {message}")
            };
            return exit_for(e.kind);
        }
        (
            QueueCommand::Mailq {
                threads: false,
                json,
                selection,
                ages,
            },
            ControlResponse::Queue(mut queue),
        ) => {
            // The selectors select as the scheduler's bulk operations do.
            if let Some(selection) = selection {
                queue.retain(|m| selection.matches(m, clock.now_unix));
            }
            if *ages {
                let rows = text::age_rows(&queue, clock.now_unix);
                if *json {
                    let views: Vec<_> = rows.iter().map(json::AgeView::from).collect();
                    json::render(&views)
                } else {
                    text::ages(&queue, clock)
                }
            } else if *json {
                let views: Vec<_> = queue.iter().map(json::MessageView::from).collect();
                json::render(&views)
            } else {
                text::mailq(&queue, clock)
            }
        }
        (
            QueueCommand::Mailq {
                threads: true,
                json,
                ..
            },
            ControlResponse::Threads(groups),
        ) => {
            if *json {
                let views: Vec<_> = groups.iter().map(json::GroupView::from).collect();
                json::render(&views)
            } else {
                text::threads(&groups)
            }
        }
        (QueueCommand::Show { json, .. }, ControlResponse::Message(detail)) => {
            if *json {
                json::render(&json::DetailView::from(&detail))
            } else {
                text::show(&detail, clock)
            }
        }
        (
            QueueCommand::Hold(_)
            | QueueCommand::Release(_)
            | QueueCommand::Delete(_)
            | QueueCommand::Flush(_)
            | QueueCommand::Requeue(_)
            | QueueCommand::Bulk(..),
            ControlResponse::Ok { message },
        ) => {
            let message = text::one_line(&message);
            if message.is_empty() {
                format!("{}\n", command.confirmation())
            } else {
                format!("{message}\n")
            }
        }
        (_, other) => {
            let e = ClientError::Unexpected {
                request: request.name(),
                got: control::response_name(&other),
            };
            let _ = writeln!(err, "{prog}: {e}");
            return e.exit_code();
        }
    };
    let _ = out.write_all(printed.as_bytes());
    EX_OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::fake::{FakeScheduler, Script};
    use skein_proto::{ControlError, MessageSummary};

    const ID: &str = "0ABCDEFGHJK0000100A";

    fn id() -> QueueId {
        ID.parse().expect("valid id")
    }

    fn clock() -> Clock {
        Clock {
            now_unix: 1_796_000_378,
            utc: true,
        }
    }

    /// Runs `command` against a fake scheduler answering `response`;
    /// returns (exit, stdout, stderr, requests seen).
    fn against_fake(
        command: &QueueCommand,
        response: ControlResponse,
    ) -> (u8, String, String, Vec<ControlRequest>) {
        let fake = FakeScheduler::start(Script::Answer(vec![response]));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(command, &fake.socket, "skein", &clock(), &mut out, &mut err);
        (
            code,
            String::from_utf8(out).expect("utf-8"),
            String::from_utf8(err).expect("utf-8"),
            fake.requests(),
        )
    }

    fn ok(message: &str) -> ControlResponse {
        ControlResponse::Ok {
            message: message.into(),
        }
    }

    fn refused(kind: ControlErrorKind, message: &str) -> ControlResponse {
        ControlResponse::Error(ControlError {
            kind,
            message: message.into(),
        })
    }

    #[test]
    fn every_command_sends_its_request_and_prints_the_answer() {
        let q = || ID.to_owned();
        let queue = vec![MessageSummary {
            queue_id: q(),
            size: 2048,
            arrival_unix: 1_796_000_000,
            sender: "a@b".into(),
            held: false,
            recipients: vec![],
        }];
        let table: Vec<(
            QueueCommand,
            ControlResponse,
            ControlRequest,
            u8,
            &str,
            &str,
        )> = vec![
            (
                QueueCommand::Mailq {
                    threads: false,
                    json: false,
                    selection: None,
                    ages: false,
                },
                ControlResponse::Queue(vec![]),
                ControlRequest::ListQueue,
                0,
                "Mail queue is empty\n",
                "",
            ),
            (
                QueueCommand::Mailq {
                    threads: false,
                    json: false,
                    selection: None,
                    ages: false,
                },
                ControlResponse::Queue(queue.clone()),
                ControlRequest::ListQueue,
                0,
                "-- 2 Kbytes in 1 Request.\n",
                "",
            ),
            (
                QueueCommand::Mailq {
                    threads: false,
                    json: true,
                    selection: None,
                    ages: false,
                },
                ControlResponse::Queue(queue),
                ControlRequest::ListQueue,
                0,
                "\"queue_id\": \"0ABCDEFGHJK0000100A\"",
                "",
            ),
            (
                QueueCommand::Mailq {
                    threads: true,
                    json: false,
                    selection: None,
                    ages: false,
                },
                ControlResponse::Threads(vec![]),
                ControlRequest::ListThreads,
                0,
                "No threads: nothing is waiting for delivery\n",
                "",
            ),
            (
                QueueCommand::Mailq {
                    threads: true,
                    json: true,
                    selection: None,
                    ages: false,
                },
                ControlResponse::Threads(vec![]),
                ControlRequest::ListThreads,
                0,
                "[]\n",
                "",
            ),
            (
                QueueCommand::Hold(id()),
                ok(""),
                ControlRequest::Hold { queue_id: q() },
                0,
                "0ABCDEFGHJK0000100A: held\n",
                "",
            ),
            (
                QueueCommand::Release(id()),
                ok("released it\r\n"),
                ControlRequest::Release { queue_id: q() },
                0,
                "released it\n",
                "",
            ),
            (
                QueueCommand::Delete(id()),
                ok(""),
                ControlRequest::Delete { queue_id: q() },
                0,
                "0ABCDEFGHJK0000100A: deleted\n",
                "",
            ),
            (
                QueueCommand::Requeue(id()),
                ok(""),
                ControlRequest::Requeue { queue_id: q() },
                0,
                "0ABCDEFGHJK0000100A: requeued\n",
                "",
            ),
            (
                QueueCommand::Flush(FlushTarget::All),
                ok(""),
                ControlRequest::Flush(FlushTarget::All),
                0,
                "flushing the whole queue\n",
                "",
            ),
            (
                QueueCommand::Flush(FlushTarget::Message(q())),
                ok(""),
                ControlRequest::Flush(FlushTarget::Message(q())),
                0,
                "0ABCDEFGHJK0000100A: flushed\n",
                "",
            ),
            (
                QueueCommand::Flush(FlushTarget::Thread(ThreadKey::new("smtp", "x.org"))),
                ok(""),
                ControlRequest::Flush(FlushTarget::Thread(ThreadKey::new("smtp", "x.org"))),
                0,
                "thread smtp/x.org: flushed\n",
                "",
            ),
            (
                QueueCommand::Hold(id()),
                refused(
                    ControlErrorKind::UnknownId,
                    "no message 0ABCDEFGHJK0000100A",
                ),
                ControlRequest::Hold { queue_id: q() },
                1,
                "",
                "skein: no message 0ABCDEFGHJK0000100A\n",
            ),
            (
                QueueCommand::Release(id()),
                refused(ControlErrorKind::Invalid, "not held"),
                ControlRequest::Release { queue_id: q() },
                1,
                "",
                "skein: not held\n",
            ),
            (
                QueueCommand::Show {
                    id: id(),
                    json: false,
                },
                refused(ControlErrorKind::Unavailable, "shutting down"),
                ControlRequest::Show { queue_id: q() },
                75,
                "",
                "skein: shutting down\n",
            ),
            (
                QueueCommand::Delete(id()),
                refused(ControlErrorKind::Internal, ""),
                ControlRequest::Delete { queue_id: q() },
                70,
                "",
                "skein: the scheduler refused: Internal\n",
            ),
            (
                QueueCommand::Hold(id()),
                ControlResponse::Queue(vec![]),
                ControlRequest::Hold { queue_id: q() },
                70,
                "",
                "skein: the scheduler answered Hold with Queue (a bug)\n",
            ),
        ];
        for (i, (command, response, want_request, want_code, want_out, want_err)) in
            table.into_iter().enumerate()
        {
            let (code, out, err, requests) = against_fake(&command, response);
            assert_eq!(requests, vec![want_request], "row {i}");
            assert_eq!(code, want_code, "row {i}: {err}");
            if want_out.is_empty() {
                assert_eq!(out, "", "row {i}");
            } else {
                assert!(out.contains(want_out), "row {i}: {out:?}");
            }
            assert_eq!(err, want_err, "row {i}");
        }
    }

    #[test]
    fn show_prints_the_detail() {
        let detail = skein_proto::MessageDetail {
            summary: MessageSummary {
                queue_id: ID.into(),
                size: 1,
                arrival_unix: 1_796_000_000,
                sender: "a@b".into(),
                held: false,
                recipients: vec![],
            },
            envid: None,
            ret: None,
            body: skein_proto::BodyType::SevenBit,
            smtputf8: false,
            message_path: "/q".into(),
            control_path: "/t".into(),
        };
        for json in [false, true] {
            let (code, out, err, _) = against_fake(
                &QueueCommand::Show { id: id(), json },
                ControlResponse::Message(detail.clone()),
            );
            assert_eq!((code, err.as_str()), (0, ""));
            let want = if json {
                json::render(&json::DetailView::from(&detail))
            } else {
                text::show(&detail, &clock())
            };
            assert_eq!(out, want);
        }
    }

    #[test]
    fn not_running_is_69_with_the_socket_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = skein_spool::rendezvous::scheduler_socket(dir.path());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(
            &QueueCommand::Mailq {
                threads: false,
                json: false,
                selection: None,
                ages: false,
            },
            &socket,
            "mailq",
            &clock(),
            &mut out,
            &mut err,
        );
        assert_eq!(code, 69);
        assert!(out.is_empty());
        assert_eq!(
            String::from_utf8(err).expect("utf-8"),
            format!(
                "mailq: the scheduler is not running ({})\n",
                socket.display()
            )
        );
    }

    #[test]
    fn arguments_are_checked_locally() {
        assert_eq!(parse_queue_id(ID), Ok(id()));
        assert_eq!(parse_queue_id(&ID.to_ascii_lowercase()), Ok(id()));
        for bad in ["", "short", "0ABCDEFGHJK0000100I", "0ABCDEFGHJK0000100A0"] {
            let e = parse_queue_id(bad).unwrap_err();
            assert!(
                e.starts_with(&format!("invalid queue id {bad:?}: expected 19")),
                "{e}"
            );
        }
        let table: &[(&str, Option<(&str, &str)>)] = &[
            ("smtp/example.org", Some(("smtp", "example.org"))),
            ("smtp/127.0.0.1:2600", Some(("smtp", "127.0.0.1:2600"))),
            ("local/bob", Some(("local", "bob"))),
            ("error/", Some(("error", ""))),
            ("smtp", None),
            ("/example.org", None),
            ("sm tp/x", None),
        ];
        for (text, want) in table {
            let got = parse_thread(text).ok();
            let want = want.map(|(c, h)| ThreadKey::new(c, h));
            assert_eq!(got, want, "{text}");
        }
    }
}
