//! What became of one recipient, before it is addressed to a job: the
//! result a [`Deliver`](crate::Deliver) handler returns, and the
//! constructors that keep its enhanced status code in step with its
//! status.

use std::time::Duration;

use skein_proto::{EnhancedCode, JobId, Outcome, SmtpReply, Status};

/// The result of delivering to one recipient: an [`Outcome`] without the
/// job id and recipient index, which the runner fills in.
///
/// Build it with [`delivered`](Self::delivered),
/// [`deferred`](Self::deferred), [`failed`](Self::failed) or
/// [`from_reply`](Self::from_reply): they make sure the enhanced status
/// code is valid and that its class agrees with the status (2 delivered,
/// 4 deferred, 5 failed), which is what DSNs and logs rely on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Delivered, deferred or failed.
    pub status: Status,
    /// The remote reply that decided it, if there was one.
    pub reply: Option<SmtpReply>,
    /// The classification; always valid, class matching `status`.
    pub enhanced: EnhancedCode,
    /// Human-readable detail for logs and the DSN `Diagnostic-Code`.
    pub diagnostic: String,
    /// The host that answered, for logs and the DSN `Remote-MTA`.
    pub remote_mta: Option<String>,
    /// Microseconds spent setting up the connection it went over (0 on a
    /// reused connection and without one): `Outcome::connect_micros`.
    pub connect_micros: u64,
    /// The TLS session of a new connection, told once: `Outcome::tls`.
    pub tls: Option<bool>,
}

impl Delivery {
    /// The destination took responsibility for the message (the `250`
    /// after the data, or the `fsync` and rename of a Maildir file). Never
    /// say this earlier: a crash must repeat a delivery, not lose one.
    ///
    /// The enhanced code is the reply's when it has a class-2 one, else
    /// `2.0.0`.
    pub fn delivered(reply: impl Into<Option<SmtpReply>>, diagnostic: impl Into<String>) -> Self {
        let reply = reply.into();
        let enhanced = reply
            .as_ref()
            .and_then(|r| r.enhanced)
            .filter(|c| c.class == 2 && c.is_valid())
            .unwrap_or(EnhancedCode::SUCCESS);
        Delivery {
            status: Status::Delivered,
            reply,
            enhanced,
            diagnostic: diagnostic.into(),
            remote_mta: None,
            connect_micros: 0,
            tls: None,
        }
    }

    /// Try again later. `code` gets class 4 whatever class it came with
    /// (so `5.1.1` passed here becomes `4.1.1`: the status decides, the
    /// subject and detail still say what went wrong). `retry_after` is a
    /// hint, rounded up to whole seconds; the scheduler's retry schedule
    /// applies when it is `None`.
    pub fn deferred(
        code: EnhancedCode,
        diagnostic: impl Into<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        let retry_after_secs = retry_after.map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
        Delivery {
            status: Status::Deferred { retry_after_secs },
            reply: None,
            enhanced: with_class(code, 4, EnhancedCode::TRANSIENT),
            diagnostic: diagnostic.into(),
            remote_mta: None,
            connect_micros: 0,
            tls: None,
        }
    }

    /// Permanent failure: the scheduler will bounce the recipient. `code`
    /// gets class 5 whatever class it came with.
    pub fn failed(code: EnhancedCode, diagnostic: impl Into<String>) -> Self {
        Delivery {
            status: Status::Failed,
            reply: None,
            enhanced: with_class(code, 5, EnhancedCode::PERMANENT),
            diagnostic: diagnostic.into(),
            remote_mta: None,
            connect_micros: 0,
            tls: None,
        }
    }

    /// The outcome an SMTP reply implies: 2xx delivered, 5xx failed,
    /// anything else (4xx, or a code no server should send) deferred. The
    /// enhanced code is the reply's when it has one, else `X.0.0` of the
    /// outcome's class. The diagnostic is the reply itself.
    pub fn from_reply(reply: SmtpReply) -> Self {
        let diagnostic = reply.to_string();
        let code = reply.enhanced.unwrap_or(EnhancedCode::TRANSIENT);
        let delivery = match reply.code / 100 {
            2 => return Delivery::delivered(reply, diagnostic),
            5 => Delivery::failed(code, diagnostic),
            _ => Delivery::deferred(code, diagnostic, None),
        };
        delivery.with_reply(reply)
    }

    /// Attaches the remote reply that decided a deferral or failure.
    pub fn with_reply(mut self, reply: SmtpReply) -> Self {
        self.reply = Some(reply);
        self
    }

    /// Attaches the name of the host that answered
    /// (`mx.example.org[192.0.2.1]`).
    pub fn with_remote_mta(mut self, remote_mta: impl Into<String>) -> Self {
        self.remote_mta = Some(remote_mta.into());
        self
    }

    /// Records the connection set-up time it carries.
    pub fn with_connect(mut self, connect: std::time::Duration) -> Self {
        self.connect_micros = u64::try_from(connect.as_micros()).unwrap_or(u64::MAX);
        self
    }

    /// Records the TLS session of the new connection it went over (or
    /// whose TLS failed): see `Outcome::tls`.
    pub fn with_tls(mut self, tls: Option<bool>) -> Self {
        self.tls = tls;
        self
    }

    /// True for [`Status::Delivered`].
    pub fn is_delivered(&self) -> bool {
        self.status == Status::Delivered
    }

    /// The protocol message for recipient `recipient` (its
    /// [`JobRecipient::index`](skein_proto::JobRecipient::index)) of `job`.
    pub fn into_outcome(self, job: JobId, recipient: u32) -> Outcome {
        Outcome {
            job,
            recipient,
            status: self.status,
            reply: self.reply,
            enhanced: self.enhanced,
            diagnostic: self.diagnostic,
            remote_mta: self.remote_mta,
            connect_micros: self.connect_micros,
            tls: self.tls,
        }
    }
}

/// `code` with its class replaced; `fallback` if `code` was built by hand
/// with values no class can make valid.
fn with_class(code: EnhancedCode, class: u8, fallback: EnhancedCode) -> EnhancedCode {
    EnhancedCode::new(class, code.subject, code.detail).unwrap_or(fallback)
}

/// Why an outcome must not be sent: the scheduler would refuse the whole
/// frame as malformed and drop the agent.
pub(crate) fn check_outcome(outcome: &Outcome) -> Result<(), String> {
    if !outcome.enhanced.is_valid() {
        return Err(format!(
            "invalid enhanced status code {} for {} recipient {}",
            outcome.enhanced, outcome.job, outcome.recipient
        ));
    }
    if let Some(code) = outcome.reply.as_ref().and_then(|r| r.enhanced)
        && !code.is_valid()
    {
        return Err(format!(
            "invalid enhanced status code {code} in the reply for {} recipient {}",
            outcome.job, outcome.recipient
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> EnhancedCode {
        s.parse().expect("valid code in test table")
    }

    fn reply(code_: u16, enhanced: Option<&str>) -> SmtpReply {
        SmtpReply {
            code: code_,
            enhanced: enhanced.map(code),
            text: "text".into(),
        }
    }

    #[test]
    fn constructors_keep_class_and_status_in_step() {
        let table: Vec<(Delivery, Status, &str)> = vec![
            (Delivery::delivered(None, "ok"), Status::Delivered, "2.0.0"),
            (
                Delivery::delivered(reply(250, Some("2.6.0")), "ok"),
                Status::Delivered,
                "2.6.0",
            ),
            // A contradictory code in a 250 is not believed.
            (
                Delivery::delivered(reply(250, Some("4.2.2")), "ok"),
                Status::Delivered,
                "2.0.0",
            ),
            (
                Delivery::deferred(code("4.2.2"), "full", None),
                Status::Deferred {
                    retry_after_secs: None,
                },
                "4.2.2",
            ),
            (
                Delivery::deferred(code("5.1.1"), "odd", Some(Duration::from_millis(1500))),
                Status::Deferred {
                    retry_after_secs: Some(2),
                },
                "4.1.1",
            ),
            (
                Delivery::deferred(code("4.4.1"), "x", Some(Duration::from_secs(60))),
                Status::Deferred {
                    retry_after_secs: Some(60),
                },
                "4.4.1",
            ),
            (
                Delivery::failed(code("5.1.1"), "no such user"),
                Status::Failed,
                "5.1.1",
            ),
            (
                Delivery::failed(code("2.0.0"), "odd"),
                Status::Failed,
                "5.0.0",
            ),
        ];
        for (delivery, status, enhanced) in table {
            assert_eq!(delivery.status, status, "{delivery:?}");
            assert_eq!(delivery.enhanced.to_string(), enhanced, "{delivery:?}");
            assert!(delivery.enhanced.is_valid());
        }
    }

    #[test]
    fn hand_built_invalid_code_falls_back() {
        let bad = EnhancedCode {
            class: 4,
            subject: 1000,
            detail: 0,
        };
        assert_eq!(
            Delivery::deferred(bad, "x", None).enhanced,
            EnhancedCode::TRANSIENT
        );
        assert_eq!(Delivery::failed(bad, "x").enhanced, EnhancedCode::PERMANENT);
    }

    #[test]
    fn from_reply_classifies() {
        let table = [
            (reply(250, Some("2.0.0")), Status::Delivered, "2.0.0"),
            (reply(250, None), Status::Delivered, "2.0.0"),
            (
                reply(451, Some("4.7.1")),
                Status::Deferred {
                    retry_after_secs: None,
                },
                "4.7.1",
            ),
            (
                reply(421, None),
                Status::Deferred {
                    retry_after_secs: None,
                },
                "4.0.0",
            ),
            (reply(550, Some("5.1.1")), Status::Failed, "5.1.1"),
            (reply(554, None), Status::Failed, "5.0.0"),
            (
                reply(354, None),
                Status::Deferred {
                    retry_after_secs: None,
                },
                "4.0.0",
            ),
        ];
        for (r, status, enhanced) in table {
            let d = Delivery::from_reply(r.clone());
            assert_eq!(d.status, status, "{r}");
            assert_eq!(d.enhanced.to_string(), enhanced, "{r}");
            assert_eq!(d.reply.as_ref(), Some(&r));
            assert_eq!(d.diagnostic, r.to_string());
        }
    }

    #[test]
    fn into_outcome_addresses_it() {
        let o = Delivery::failed(code("5.1.1"), "no")
            .with_remote_mta("mx[192.0.2.1]")
            .into_outcome(JobId(7), 3);
        assert_eq!(o.job, JobId(7));
        assert_eq!(o.recipient, 3);
        assert_eq!(o.remote_mta.as_deref(), Some("mx[192.0.2.1]"));
        assert!(check_outcome(&o).is_ok());
    }

    #[test]
    fn invalid_outcomes_are_caught() {
        let mut o = Delivery::delivered(None, "").into_outcome(JobId(1), 0);
        o.enhanced = EnhancedCode {
            class: 3,
            subject: 0,
            detail: 0,
        };
        assert!(check_outcome(&o).is_err());
        let mut o = Delivery::delivered(None, "").into_outcome(JobId(1), 0);
        o.reply = Some(SmtpReply {
            code: 250,
            enhanced: Some(EnhancedCode {
                class: 2,
                subject: 0,
                detail: 5000,
            }),
            text: String::new(),
        });
        assert!(check_outcome(&o).is_err());
    }
}
