//! From a job and the server's extensions to MAIL and RCPT commands, and
//! the checks that fail a message at once rather than send it to a server
//! that cannot take it.

use skein_agent::Delivery;
use skein_proto::{BodyType, EnhancedCode, Job, JobRecipient, Notify};
use skein_smtp_codec::{Command, Extensions, MailParams, Orcpt, RcptParams};

/// Why `job` cannot go to a server with `ext`, as the outcome of all its
/// recipients: too large for its SIZE (5.3.4), 8-bit or binary content it
/// cannot take (5.6.3), internationalised addresses without SMTPUTF8
/// (5.6.7). These are permanent: the same server will say the same.
///
/// An 8-bit message to a server without 8BITMIME is not refused here: it
/// is converted to 7 bits before it is sent ([`needs_downgrade`],
/// `skein_mail::downgrade`), as RFC 6152 §3 allows; what cannot be
/// converted fails then (5.6.3).
pub fn check(job: &Job, ext: &Extensions, server: &str) -> Result<(), Delivery> {
    if let Some(limit) = ext.size_limit()
        && job.size > limit
    {
        return Err(Delivery::failed(
            EnhancedCode::TOO_BIG,
            format!(
                "message of {} bytes exceeds the {limit} bytes {server} accepts (SIZE)",
                job.size
            ),
        ));
    }
    match job.body {
        BodyType::BinaryMime if !(ext.binarymime && ext.chunking) => {
            return Err(Delivery::failed(
                EnhancedCode::CONVERSION_REQUIRED,
                format!("binary message and {server} does not offer BINARYMIME with CHUNKING"),
            ));
        }
        _ => {}
    }
    if job.smtputf8 && !ext.smtputf8 {
        return Err(Delivery::failed(
            EnhancedCode::UTF8_REQUIRED,
            format!("message needs SMTPUTF8 and {server} does not offer it"),
        ));
    }
    Ok(())
}

/// Whether `job` must be converted to 7 bits for a server with `ext`:
/// an 8-bit message (one that needs SMTPUTF8 fails in [`check`] first)
/// to a server without 8BITMIME.
pub fn needs_downgrade(job: &Job, ext: &Extensions) -> bool {
    job.body == BodyType::EightBitMime && !ext.eightbitmime
}

/// `MAIL FROM` for `job`, with the parameters the server understands.
#[cfg(test)]
pub fn mail(job: &Job, ext: &Extensions) -> Command {
    mail_sized(job, ext, job.size)
}

/// `MAIL FROM` for `job`, with the parameters the server understands,
/// for a message of `size` bytes (`SIZE=`): the converted one.
pub fn mail_sized(job: &Job, ext: &Extensions, size: u64) -> Command {
    let body = match job.body {
        BodyType::SevenBit => None,
        BodyType::EightBitMime => Some(BodyType::EightBitMime),
        BodyType::BinaryMime => Some(BodyType::BinaryMime),
    };
    Command::Mail {
        reverse_path: job.sender.clone(),
        params: MailParams {
            size: ext.size.map(|_| size),
            body: body.filter(|_| ext.eightbitmime || ext.binarymime),
            ret: job.ret.filter(|_| ext.dsn),
            envid: job.envid.clone().filter(|_| ext.dsn),
            smtputf8: job.smtputf8 && ext.smtputf8,
            // skein does not authenticate to next hops: nothing to assert.
            auth: None,
        },
    }
}

/// `RCPT TO` for `r`. `NOTIFY` goes only when it differs from what RFC
/// 3461 assumes without it (failure and delay), and DSN parameters only to
/// a server that announced DSN. An `ORCPT` that is not valid xtext is
/// dropped rather than sent broken.
pub fn rcpt(r: &JobRecipient, ext: &Extensions) -> Command {
    let (notify, orcpt) = if ext.dsn {
        (
            Some(r.notify).filter(|n| *n != Notify::default()),
            r.orcpt.as_deref().and_then(Orcpt::parse),
        )
    } else {
        (None, None)
    };
    Command::Rcpt {
        forward_path: r.address.clone(),
        params: RcptParams { notify, orcpt },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_proto::{JobId, Ret, Status, ThreadKey};

    fn job() -> Job {
        Job {
            id: JobId(1),
            queue_id: "Q".into(),
            thread: ThreadKey::new("smtp", "example.org"),
            nexthop: None,
            sender: "s@example.net".into(),
            envid: Some("E 1".into()),
            ret: Some(Ret::Headers),
            body: BodyType::EightBitMime,
            smtputf8: false,
            message_path: "/x".into(),
            message_offset: 0,
            size: 1000,
            attempt: 0,
            recipients: vec![JobRecipient {
                index: 0,
                address: "r@example.org".into(),
                orcpt: Some("rfc822;o+2Bx@example.org".into()),
                notify: Notify {
                    never: false,
                    success: true,
                    failure: true,
                    delay: false,
                },
            }],
        }
    }

    fn line(c: &Command) -> String {
        String::from_utf8(c.to_bytes().expect("renders")).expect("ascii")
    }

    #[test]
    fn parameters_follow_the_extensions() {
        let j = job();
        let none = Extensions::default();
        let all = Extensions {
            size: Some(0),
            eightbitmime: true,
            dsn: true,
            ..Extensions::default()
        };
        assert_eq!(line(&mail(&j, &none)), "MAIL FROM:<s@example.net>\r\n");
        assert_eq!(
            line(&mail(&j, &all)),
            "MAIL FROM:<s@example.net> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=E+201\r\n"
        );
        assert_eq!(
            line(&rcpt(&j.recipients[0], &none)),
            "RCPT TO:<r@example.org>\r\n"
        );
        assert_eq!(
            line(&rcpt(&j.recipients[0], &all)),
            "RCPT TO:<r@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;o+2Bx@example.org\r\n"
        );
        let mut plain = j.recipients[0].clone();
        plain.notify = Notify::default();
        plain.orcpt = Some("bad".into());
        assert_eq!(line(&rcpt(&plain, &all)), "RCPT TO:<r@example.org>\r\n");
    }

    #[test]
    fn checks() {
        let eight = Extensions {
            eightbitmime: true,
            ..Extensions::default()
        };
        let mut j = job();
        assert!(check(&j, &eight, "mx").is_ok());
        let small = Extensions {
            size: Some(999),
            ..eight.clone()
        };
        let d = check(&j, &small, "mx").expect_err("too big");
        assert_eq!(
            (d.status, d.enhanced.to_string()),
            (Status::Failed, "5.3.4".into())
        );
        // 8-bit to a server without 8BITMIME: passes, to be converted.
        assert!(check(&j, &Extensions::default(), "mx").is_ok());
        assert!(needs_downgrade(&j, &Extensions::default()));
        assert!(!needs_downgrade(&j, &eight));
        // One that also needs SMTPUTF8 cannot be converted: 5.6.7.
        j.smtputf8 = true;
        let d = check(&j, &Extensions::default(), "mx").expect_err("utf8");
        assert_eq!(d.enhanced.to_string(), "5.6.7");
        j.smtputf8 = false;
        j.body = BodyType::SevenBit;
        assert!(!needs_downgrade(&j, &Extensions::default()));
        j.smtputf8 = true;
        let d = check(&j, &Extensions::default(), "mx").expect_err("utf8");
        assert_eq!(d.enhanced.to_string(), "5.6.7");
        j.smtputf8 = false;
        j.body = BodyType::BinaryMime;
        assert!(check(&j, &eight, "mx").is_err());
        let binary = Extensions {
            binarymime: true,
            chunking: true,
            ..Extensions::default()
        };
        assert!(check(&j, &binary, "mx").is_ok());
    }
}
