//! # skein-dsn — delivery status notifications (RFC 3464)
//!
//! Builds the message the scheduler queues when a recipient fails, is
//! delayed past the warning time, or asked for a success report: a
//! `multipart/report; report-type=delivery-status` (RFC 6522) with three
//! parts, in the order the RFC requires:
//!
//! 1. a human-readable `text/plain` explanation listing every recipient
//!    and why;
//! 2. the machine-readable `message/delivery-status` (per-message fields,
//!    then one block per recipient);
//! 3. the original message as `message/rfc822` (`RET=FULL`) or only its
//!    header section as `text/rfc822-headers` (`RET=HDRS`, or when the
//!    original is larger than [`DsnRequest::max_full_size`]).
//!
//! Headers and the multipart structure are written by `mail-builder`; the
//! delivery-status body and the attached original are written by this crate
//! and handed to it as raw (not re-encoded) parts, because `message/*`
//! bodies must never be base64- or quoted-printable-encoded (RFC 2046
//! §5.2.1) and the delivery-status fields have their own folding rules.
//!
//! When a field of the report is not ASCII (an SMTPUTF8 address or a UTF-8
//! diagnostic), the report is `message/global-delivery-status` and the
//! original `message/global` / `message/global-headers` as RFC 6533 asks;
//! such a report must be relayed with `SMTPUTF8`, which
//! [`needs_smtputf8`] tells the caller.
//!
//! **What it reads and writes.** Nothing: it is a pure function from a
//! [`DsnRequest`] to bytes. It opens no file and no socket.
//!
//! **Whom it trusts.** Nobody. Diagnostics come from remote SMTP servers
//! and addresses from senders: every value is reduced to one line (CR, LF
//! and other control characters become spaces) before it is placed in a
//! header or a field, so that no value can start a header of its own or a
//! MIME part, and over-long values are folded, then cut, to keep every line
//! under RFC 5322's 998 characters. The MIME boundary is checked against
//! every part so that an attached original cannot end the report early.
//!
//! **On failure.** It cannot fail: any input yields a well-formed message.
//! A status code that is not `class.subject.detail` is replaced by the
//! generic code of the recipient's action (`5.0.0`, `4.0.0`, `2.0.0`); a
//! report with no recipients still parses, but the caller should not send
//! one.
//!
//! **Configuration.** None of its own: the caller fills in `hostname`
//! (`Reporting-MTA`), the sender and [`DsnRequest::max_full_size`].

#![warn(missing_docs)]

mod fields;
mod original;
mod sanitize;
mod text;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::mime::{BodyPart, MimePart, make_boundary};
use skein_mail::EnhancedCode;

pub use sanitize::one_line;

/// A sensible [`DsnRequest::max_full_size`]: a bounce returns at most this
/// much of the original in full, so that a bounced 50 MB message does not
/// travel back whole; above it only the headers are returned.
pub const DEFAULT_MAX_FULL_SIZE: usize = 256 * 1024;

/// What the report is about; decides the subject and the explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DsnKind {
    /// Some recipients failed for good (a bounce).
    Failure,
    /// Some recipients are still being retried (a delay warning).
    Delay,
    /// Delivery succeeded (`NOTIFY=SUCCESS`).
    Success,
}

impl DsnKind {
    /// The `Subject:` of a report of this kind.
    pub fn subject(self) -> &'static str {
        match self {
            DsnKind::Failure => "Undelivered Mail Returned to Sender",
            DsnKind::Delay => "Delayed Mail (still being retried)",
            DsnKind::Success => "Successful Mail Delivery Report",
        }
    }

    fn keyword(self) -> &'static str {
        match self {
            DsnKind::Failure => "failure",
            DsnKind::Delay => "delay",
            DsnKind::Success => "success",
        }
    }
}

/// The `Action` of one recipient (RFC 3464 §2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Could not be delivered and will not be retried.
    Failed,
    /// Not delivered yet; still being retried.
    Delayed,
    /// Delivered into the recipient's mailbox.
    Delivered,
    /// Handed to a system that does not return DSNs.
    Relayed,
    /// Delivered to the recipient and forwarded to other addresses.
    Expanded,
}

impl Action {
    /// The field's keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }

    /// The generic status code of the action (`5.0.0`, `4.0.0` or
    /// `2.0.0`), used when the given one is not a valid
    /// `class.subject.detail`.
    pub fn generic_status(self) -> EnhancedCode {
        match self {
            Action::Failed => EnhancedCode::PERMANENT,
            Action::Delayed => EnhancedCode::TRANSIENT,
            Action::Delivered | Action::Relayed | Action::Expanded => EnhancedCode::SUCCESS,
        }
    }
}

/// One recipient of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnRecipient {
    /// The address delivery was attempted to (`RCPT TO`), without angle
    /// brackets.
    pub final_recipient: String,
    /// The `ORCPT` parameter as received, e.g. `rfc822;user@example.org`;
    /// a bare address is taken as `rfc822`.
    pub original_recipient: Option<String>,
    /// What happened.
    pub action: Action,
    /// The enhanced status code, e.g. `5.1.1`, as text: text that is not
    /// a valid RFC 3463 code is reported as the action's
    /// [generic code](Action::generic_status).
    pub status: String,
    /// The host name of the remote MTA that gave the diagnostic, if any.
    pub remote_mta: Option<String>,
    /// The diagnostic, typed: `smtp; 550 5.1.1 no such user`. Text with no
    /// type gets `X-Skein;`.
    pub diagnostic_code: Option<String>,
    /// When the last attempt was made (seconds since the epoch).
    pub last_attempt_unix: Option<i64>,
    /// Until when a delayed recipient will be retried.
    pub will_retry_until_unix: Option<i64>,
}

/// How much of the original message to return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginalPart {
    /// The whole message (`RET=FULL`, and the default for failures); only
    /// its headers are returned when it is larger than
    /// [`DsnRequest::max_full_size`].
    Full(Vec<u8>),
    /// The header section only (`RET=HDRS`); a body after it is dropped.
    Headers(Vec<u8>),
    /// Nothing is attached, for the reason given (one line, told to the
    /// reader): the spool's copy failed its checks, and a report must not
    /// return bytes the sender did not write. The report then has two
    /// parts (RFC 6522 §3 makes the third optional).
    Withheld(String),
}

/// Everything a report says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnRequest {
    /// This MTA's host name (`Reporting-MTA: dns; …`).
    pub reporting_mta: String,
    /// The `From:` address, e.g. `MAILER-DAEMON@mx.example.org`.
    pub from: String,
    /// The `To:` address: the original sender, or postmaster when the
    /// report is about a report.
    pub to: String,
    /// What the report is about.
    pub kind: DsnKind,
    /// The original envelope's `ENVID`, decoded from xtext.
    pub envid: Option<String>,
    /// When the original message arrived (seconds since the epoch).
    pub arrival_unix: i64,
    /// The original message's queue id (`X-Skein-Queue-ID`).
    pub original_queue_id: String,
    /// The recipients reported on, in order.
    pub recipients: Vec<DsnRecipient>,
    /// The original message or its headers.
    pub original: OriginalPart,
    /// Above this many bytes a [`OriginalPart::Full`] original is returned
    /// as headers only; `None` for no limit. See
    /// [`DEFAULT_MAX_FULL_SIZE`].
    pub max_full_size: Option<usize>,
}

/// Builds the whole report message, headers included, with CRLF line
/// endings, ready to be written into the spool.
pub fn build(request: &DsnRequest) -> Vec<u8> {
    let host = sanitize::one_line(&request.reporting_mta);
    let original = original::prepare(&request.original, request.max_full_size);
    let status = fields::render(request);
    let explanation = text::render(
        request,
        &host,
        original.as_ref().is_some_and(|o| o.truncated),
    );

    let status_type = if status.global {
        "message/global-delivery-status"
    } else {
        "message/delivery-status"
    };
    let status_encoding = if status.global { "8bit" } else { "7bit" };
    let parts_text = [
        explanation.as_bytes(),
        status.body.as_bytes(),
        original.as_ref().map_or(&[][..], |o| o.bytes.as_slice()),
    ];
    let boundary = unique_boundary(&parts_text);

    let report = MimePart::new(
        ContentType::new("multipart/report")
            .attribute("report-type", "delivery-status")
            .attribute("boundary", boundary),
        BodyPart::Multipart(
            [
                MimePart::new(
                    ContentType::new("text/plain").attribute("charset", "utf-8"),
                    BodyPart::Text(explanation.into()),
                )
                .header("Content-Description", Raw::new("Notification")),
                MimePart::new(
                    ContentType::new(status_type),
                    BodyPart::Binary(status.body.into_bytes().into()),
                )
                .header("Content-Description", Raw::new("Delivery report"))
                .transfer_encoding(status_encoding),
            ]
            .into_iter()
            .chain(original.map(|original| {
                MimePart::new(
                    ContentType::new(original.content_type),
                    BodyPart::Binary(original.bytes.into()),
                )
                .header(
                    "Content-Description",
                    Raw::new(if original.headers_only {
                        "Undelivered Message Headers"
                    } else {
                        "Undelivered Message"
                    }),
                )
                .transfer_encoding(original.encoding)
            }))
            .collect(),
        ),
    );

    let from = sanitize::address(&request.from);
    let to = sanitize::address(&request.to);
    let message = MessageBuilder::new()
        .header("Date", Raw::new(skein_mail::date::now_local()))
        .from(Address::new_address(
            Some("Mail Delivery System"),
            from.as_str(),
        ))
        .subject(Text::new(request.kind.subject()))
        .to(Address::new_address(None::<&str>, to.as_str()))
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .header(
            "Message-ID",
            Raw::new(message_id(request.kind, &request.original_queue_id, &host)),
        )
        .body(report);
    let mut out = Vec::new();
    message.serialize(&mut out);
    out
}

/// Whether a built report contains 8-bit text in its headers or its
/// delivery-status part, so that it must be relayed with `SMTPUTF8`
/// (RFC 6533): true for any non-ASCII byte outside the attached original.
/// The caller may simply check [`needs_8bit`] for `BODY=8BITMIME` and this
/// for `SMTPUTF8`.
pub fn needs_smtputf8(request: &DsnRequest) -> bool {
    fields::render(request).global || !sanitize::address(&request.to).is_ascii()
}

/// Whether a built message contains any byte above 127, so that it must
/// be relayed with `BODY=8BITMIME`.
pub fn needs_8bit(message: &[u8]) -> bool {
    !message.is_ascii()
}

/// A boundary that occurs in none of `parts`. `make_boundary` is already
/// unpredictable enough that this loop runs once; the check is there
/// because the attached original is someone else's text.
fn unique_boundary(parts: &[&[u8]]) -> String {
    let mut attempt = 0u32;
    loop {
        let candidate = format!("skein-dsn={}", make_boundary("_"));
        let clash = parts
            .iter()
            .any(|part| contains(part, candidate.as_bytes()));
        attempt += 1;
        // After a few clashes (which means someone is trying), add a
        // counter: the parts are finite, so some suffix must be absent.
        if !clash {
            return candidate;
        }
        if attempt > 8 {
            let suffixed = format!("{candidate}.{attempt}");
            if !parts.iter().any(|part| contains(part, suffixed.as_bytes())) {
                return suffixed;
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len().max(1))
        .any(|window| window == needle)
}

static MESSAGE_ID_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A Message-ID unique across reports of this process (counter) and of
/// processes (pid and time), naming the original for whoever reads logs.
fn message_id(kind: DsnKind, queue_id: &str, host: &str) -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let counter = MESSAGE_ID_COUNTER.fetch_add(1, Ordering::Relaxed);
    let atext = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            .collect()
    };
    let mut host = atext(host);
    if host.is_empty() {
        host.push_str("localhost");
    }
    format!(
        "<{}.{}.{micros}.{}.{counter}@{host}>",
        atext(queue_id),
        kind.keyword(),
        std::process::id()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_avoids_clashes() {
        let b = unique_boundary(&[b"hello", b"world"]);
        assert!(b.starts_with("skein-dsn="));
        assert!(contains(b"abcdef", b"cde"));
        assert!(!contains(b"abcdef", b"xyz"));
    }

    #[test]
    fn message_ids_are_unique_and_clean() {
        let a = message_id(DsnKind::Failure, "Q1\r\nBcc: x", "mx.example.org");
        let b = message_id(DsnKind::Failure, "Q1", "mx.example.org");
        assert_ne!(a, b);
        assert!(a.starts_with("<Q1Bccx.failure."), "{a}");
        assert!(a.ends_with("@mx.example.org>"), "{a}");
        assert!(message_id(DsnKind::Delay, "Q", "\r\n").ends_with("@localhost>"));
    }

    #[test]
    fn subjects() {
        for (kind, subject) in [
            (DsnKind::Failure, "Undelivered Mail Returned to Sender"),
            (DsnKind::Delay, "Delayed Mail (still being retried)"),
            (DsnKind::Success, "Successful Mail Delivery Report"),
        ] {
            assert_eq!(kind.subject(), subject);
        }
    }
}
