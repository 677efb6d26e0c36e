//! The AUTH command (RFC 4954), on the submission port under TLS: when it
//! may be used, the SASL PLAIN (RFC 4616) and LOGIN exchanges, and their
//! replies.
//!
//! The exchange is an [`Exchange`], without I/O: it says which `334`
//! challenge to send, takes the client's response line and ends with the
//! credentials or a refusal. The session sends, reads and, for the
//! credentials, asks [`Passwords`](crate::auth::Passwords) (argon2, off
//! the async threads). Decoding SASL messages is `crate::auth`'s.

use skein_smtp_codec::server::{LineEnd, LineEvent};

use super::{Flow, Phase, Port, Session, Wait};
use crate::auth::{decode_base64, encode_base64, split_plain};
use crate::error::SessionEnd;
use crate::policy::Refusal;

/// Which response an AUTH exchange waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Exchange {
    /// PLAIN after its empty challenge: `authzid NUL authcid NUL passwd`.
    Plain,
    /// LOGIN: the user name.
    LoginUser,
    /// LOGIN: the password; the user name (still base64) came before.
    LoginPassword {
        /// The user name as the client sent it.
        user: Vec<u8>,
    },
}

/// What an exchange needs next.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Send `334 challenge`, then give the client's line to `next`.
    Challenge { challenge: String, next: Exchange },
    /// The credentials are complete: check them.
    Check { user: String, password: Vec<u8> },
    /// The exchange is over without credentials: answer this.
    Refuse(Refusal),
}

/// The client's answer to a challenge.
#[derive(Debug)]
enum Response {
    /// A line, CRLF taken off.
    Line(Vec<u8>),
    /// A bare LF or an over-long line: no response at all.
    Unusable,
}

impl Exchange {
    /// `AUTH mechanism [initial-response]`.
    fn start(mechanism: &str, initial: Option<String>) -> Step {
        match (mechanism, initial) {
            ("PLAIN", Some(response)) => plain(response.as_bytes()),
            ("PLAIN", None) => Step::Challenge {
                challenge: String::new(),
                next: Exchange::Plain,
            },
            ("LOGIN", Some(user)) => Step::Challenge {
                challenge: encode_base64(b"Password:"),
                next: Exchange::LoginPassword {
                    user: user.into_bytes(),
                },
            },
            ("LOGIN", None) => Step::Challenge {
                challenge: encode_base64(b"Username:"),
                next: Exchange::LoginUser,
            },
            _ => Step::Refuse(Refusal::new(
                504,
                "5.5.4",
                "Unrecognized authentication mechanism",
            )),
        }
    }

    /// The client's response to the challenge: `*` (or no usable line)
    /// cancels (RFC 4954 §4).
    fn respond(self, response: Response) -> Step {
        let line = match response {
            Response::Line(line) if line != b"*" => line,
            Response::Line(_) | Response::Unusable => {
                return Step::Refuse(Refusal::new(501, "5.0.0", "Authentication cancelled"));
            }
        };
        match self {
            Exchange::Plain => plain(&line),
            Exchange::LoginUser => Step::Challenge {
                challenge: encode_base64(b"Password:"),
                next: Exchange::LoginPassword { user: line },
            },
            Exchange::LoginPassword { user } => {
                let user = decode_base64(&user).and_then(|u| String::from_utf8(u).ok());
                match (user, decode_base64(&line)) {
                    (Some(user), Some(password)) => Step::Check { user, password },
                    _ => undecodable(),
                }
            }
        }
    }
}

/// A PLAIN response; `=` is the empty one (RFC 4954 §4), which holds no
/// credentials.
fn plain(response: &[u8]) -> Step {
    let decoded = if response == b"=" {
        Some(Vec::new())
    } else {
        decode_base64(response)
    };
    match decoded.and_then(|plain| split_plain(&plain)) {
        Some((user, password)) => Step::Check { user, password },
        None => undecodable(),
    }
}

fn undecodable() -> Step {
    Step::Refuse(Refusal::new(501, "5.5.2", "Cannot decode the response"))
}

impl Session {
    /// AUTH is offered on the submission port only, and only under TLS
    /// (RFC 4954 §4: no plaintext passwords on the wire).
    pub(super) fn offers_auth(&self) -> bool {
        self.port == Port::Submission
            && self.tls.is_some()
            && self.server.passwords.is_some()
            && self.authenticated.is_none()
    }

    /// Why AUTH cannot be used now, if it cannot.
    fn auth_refusal(&self, phase: &Phase) -> Option<Refusal> {
        match phase {
            _ if self.port != Port::Submission || self.server.passwords.is_none() => {
                Some(Refusal::new(502, "5.5.1", "AUTH not available"))
            }
            Phase::Fresh => Some(Refusal::new(503, "5.5.1", "Send EHLO first")),
            Phase::Mail(..) => Some(Refusal::new(
                503,
                "5.5.1",
                "AUTH not allowed during a transaction",
            )),
            _ if self.authenticated.is_some() => {
                Some(Refusal::new(503, "5.5.1", "Already authenticated"))
            }
            _ if self.tls.is_none() => Some(Refusal::new(
                538,
                "5.7.11",
                "Encryption required: STARTTLS first",
            )),
            _ => None,
        }
    }

    /// AUTH PLAIN / LOGIN: the exchange, then the check of the
    /// credentials, `235` or `535`.
    pub(super) async fn auth(
        &mut self,
        phase: Phase,
        mechanism: &str,
        initial: Option<String>,
    ) -> (Phase, Flow) {
        if let Some(r) = self.auth_refusal(&phase) {
            return (phase, self.refuse(r));
        }
        let mut step = Exchange::start(mechanism, initial);
        let (user, password) = loop {
            match step {
                Step::Challenge { challenge, next } => {
                    self.push(334, None, &challenge);
                    match self.sasl_response().await {
                        Ok(response) => step = next.respond(response),
                        Err(end) => return (phase, Flow::Close(end)),
                    }
                }
                Step::Check { user, password } => break (user, password),
                Step::Refuse(r) => return (phase, self.refuse(r)),
            }
        };
        let Some(passwords) = self.server.passwords.clone() else {
            return (phase, Flow::Continue);
        };
        let checked_user = user.clone();
        // argon2 is slow by design: keep it off the async threads.
        let ok = tokio::task::spawn_blocking(move || passwords.verify(&checked_user, &password))
            .await
            .unwrap_or(false);
        if ok {
            tracing::info!(client = %self.peer, user = user.as_str(), "authenticated");
            self.authenticated = Some(user);
            self.push(235, Some("2.7.0"), "Authentication successful");
            (phase, Flow::Continue)
        } else {
            tracing::warn!(client = %self.peer, user = user.as_str(), "authentication failed");
            let r = Refusal::new(535, "5.7.8", "Authentication credentials invalid");
            (phase, self.refuse(r))
        }
    }

    /// Writes the challenge (with whatever else is queued) and reads the
    /// client's response line.
    async fn sasl_response(&mut self) -> Result<Response, SessionEnd> {
        loop {
            let (used, event) = self.lines.next(&self.input[self.pos..]);
            let response = event.map(|e| match e {
                LineEvent::Line(line, LineEnd::Crlf) => Response::Line(line.to_vec()),
                _ => Response::Unusable,
            });
            self.pos += used;
            match response {
                Some(response) => {
                    self.command_since = None;
                    return Ok(response);
                }
                None => self.need_more(Wait::Command).await?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays `AUTH mechanism [initial]` and the client's lines (`None`: an
    /// unusable line); returns the challenges sent and the end.
    fn transcript(mechanism: &str, initial: Option<&str>, lines: &[Option<&str>]) -> Vec<String> {
        let mut said = Vec::new();
        let mut lines = lines.iter();
        let mut step = Exchange::start(mechanism, initial.map(str::to_owned));
        loop {
            match step {
                Step::Challenge { challenge, next } => {
                    said.push(format!("334 {challenge}"));
                    let response = match lines.next() {
                        Some(Some(line)) => Response::Line(line.as_bytes().to_vec()),
                        Some(None) => Response::Unusable,
                        None => {
                            said.push("(waiting)".into());
                            return said;
                        }
                    };
                    step = next.respond(response);
                }
                Step::Check { user, password } => {
                    let password = String::from_utf8_lossy(&password);
                    said.push(format!("check {user} {password}"));
                    break;
                }
                Step::Refuse(r) => {
                    said.push(format!("{} {} {}", r.code, r.enhanced, r.text));
                    break;
                }
            }
        }
        assert!(lines.next().is_none(), "lines left over: {said:?}");
        said
    }

    /// `AUTH mechanism initial`, the client's lines, the transcript.
    type Row = (
        &'static str,
        Option<&'static str>,
        &'static [Option<&'static str>],
        &'static [&'static str],
    );

    #[test]
    fn exchanges() {
        // base64 of "\0alice\0pw", "alice", "pw", "bob\0alice\0pw".
        const PLAIN: &str = "AGFsaWNlAHB3";
        const ALICE: &str = "YWxpY2U=";
        const PW: &str = "cHc=";
        const OTHER_AUTHZ: &str = "Ym9iAGFsaWNlAHB3";
        let table: &[Row] = &[
            ("PLAIN", Some(PLAIN), &[], &["check alice pw"]),
            ("PLAIN", None, &[Some(PLAIN)], &["334 ", "check alice pw"]),
            ("PLAIN", None, &[], &["334 ", "(waiting)"]),
            (
                "PLAIN",
                None,
                &[Some("*")],
                &["334 ", "501 5.0.0 Authentication cancelled"],
            ),
            (
                "PLAIN",
                None,
                &[None],
                &["334 ", "501 5.0.0 Authentication cancelled"],
            ),
            // An initial response is never a cancellation: `*` is just
            // not base64.
            (
                "PLAIN",
                Some("*"),
                &[],
                &["501 5.5.2 Cannot decode the response"],
            ),
            (
                "PLAIN",
                Some("="),
                &[],
                &["501 5.5.2 Cannot decode the response"],
            ),
            (
                "PLAIN",
                None,
                &[Some("not base64!")],
                &["334 ", "501 5.5.2 Cannot decode the response"],
            ),
            (
                "PLAIN",
                Some(OTHER_AUTHZ),
                &[],
                &["501 5.5.2 Cannot decode the response"],
            ),
            (
                "LOGIN",
                None,
                &[Some(ALICE), Some(PW)],
                &["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", "check alice pw"],
            ),
            (
                "LOGIN",
                Some(ALICE),
                &[Some(PW)],
                &["334 UGFzc3dvcmQ6", "check alice pw"],
            ),
            // A user name that does not decode is found out only once the
            // password is in, as before: the exchange runs its course.
            (
                "LOGIN",
                None,
                &[Some("!!"), Some(PW)],
                &[
                    "334 VXNlcm5hbWU6",
                    "334 UGFzc3dvcmQ6",
                    "501 5.5.2 Cannot decode the response",
                ],
            ),
            (
                "LOGIN",
                None,
                &[Some(ALICE), Some("*")],
                &[
                    "334 VXNlcm5hbWU6",
                    "334 UGFzc3dvcmQ6",
                    "501 5.0.0 Authentication cancelled",
                ],
            ),
            (
                "LOGIN",
                Some("*"),
                &[Some(PW)],
                &["334 UGFzc3dvcmQ6", "501 5.5.2 Cannot decode the response"],
            ),
            (
                "LOGIN",
                None,
                &[Some("*")],
                &["334 VXNlcm5hbWU6", "501 5.0.0 Authentication cancelled"],
            ),
            (
                "CRAM-MD5",
                None,
                &[],
                &["504 5.5.4 Unrecognized authentication mechanism"],
            ),
            (
                "CRAM-MD5",
                Some(PLAIN),
                &[],
                &["504 5.5.4 Unrecognized authentication mechanism"],
            ),
        ];
        for &(mechanism, initial, lines, want) in table {
            assert_eq!(
                transcript(mechanism, initial, lines),
                want,
                "AUTH {mechanism} {initial:?} then {lines:?}"
            );
        }
    }
}
