//! Reports built by skein-dsn, parsed back with mail-parser: the MIME
//! structure, every field of the delivery-status part, the attached
//! original, and that hostile input cannot add headers or parts.

use mail_parser::{MessageParser, MimeHeaders, PartType};
use skein_dsn::{Action, DsnKind, DsnRecipient, DsnRequest, OriginalPart, build};

const ARRIVAL: i64 = 1_796_000_378;
const ATTEMPT: i64 = 1_796_003_978;
const UNTIL: i64 = 1_796_432_378;

const ORIGINAL: &[u8] = b"From: sender@example.org\r\nTo: u@remote.example\r\nSubject: hello\r\nMessage-ID: <orig@example.org>\r\n\r\nHi there.\r\n";

fn request(kind: DsnKind, recipients: Vec<DsnRecipient>, original: OriginalPart) -> DsnRequest {
    DsnRequest {
        reporting_mta: "mx.example.org".into(),
        from: "MAILER-DAEMON@mx.example.org".into(),
        to: "sender@example.org".into(),
        kind,
        envid: Some("ENV-42".into()),
        arrival_unix: ARRIVAL,
        original_queue_id: "0ABCDEFGHJK0000100A".into(),
        recipients,
        original,
        max_full_size: None,
    }
}

fn failed(address: &str) -> DsnRecipient {
    DsnRecipient {
        final_recipient: address.into(),
        original_recipient: Some(format!("rfc822;{address}")),
        action: Action::Failed,
        status: "5.1.1".into(),
        remote_mta: Some("mx.remote.example".into()),
        diagnostic_code: Some("smtp; 550 5.1.1 no such user".into()),
        last_attempt_unix: Some(ATTEMPT),
        will_retry_until_unix: None,
    }
}

/// What a test expects of one report.
struct Expect {
    subject: &'static str,
    status_type: &'static str,
    original_type: &'static str,
    /// The attached original must equal this.
    original: Vec<u8>,
    /// Per-message fields (name, unfolded value); dates are checked
    /// separately.
    per_message: Vec<(&'static str, String)>,
    /// Per-recipient fields, one list per recipient, all of them.
    recipients: Vec<Vec<(&'static str, String)>>,
    /// Lines the human-readable part must contain.
    text: Vec<String>,
}

/// The fields of a delivery-status block, unfolded, in order.
fn fields(block: &str) -> Vec<(String, String)> {
    let unfolded = block.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (name, value) = line.split_once(':').expect("a field has a colon");
            (name.to_owned(), value.trim().to_owned())
        })
        .collect()
}

/// A date field's value parsed by mail-parser as a `Date:` header.
fn timestamp(value: &str) -> i64 {
    let message = format!("Date: {value}\r\n\r\n");
    let parsed = MessageParser::default()
        .parse(message.as_bytes())
        .expect("parses");
    parsed.date().expect("a valid RFC 5322 date").to_timestamp()
}

fn check(name: &str, req: &DsnRequest, want: &Expect) {
    let bytes = build(req);
    for line in bytes.split(|&b| b == b'\n') {
        assert!(line.len() <= 999, "{name}: line of {} bytes", line.len());
    }
    assert!(
        !bytes.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
        "{name}: bare LF"
    );
    let message = MessageParser::default()
        .parse(&bytes)
        .unwrap_or_else(|| panic!("{name}: does not parse"));

    // Top-level headers.
    assert_eq!(message.subject(), Some(want.subject), "{name}");
    assert_eq!(
        message
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address()),
        Some("MAILER-DAEMON@mx.example.org"),
        "{name}"
    );
    // A hostile `To` is mangled into one harmless address; the header
    // check below proves it added nothing.
    if !req.to.contains('\n') {
        assert_eq!(
            message
                .to()
                .and_then(|a| a.first())
                .and_then(|a| a.address()),
            Some(req.to.trim()),
            "{name}"
        );
    }
    assert_eq!(
        message.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied"),
        "{name}"
    );
    assert!(message.date().is_some(), "{name}: Date");
    assert!(message.message_id().is_some(), "{name}: Message-ID");
    let known = [
        "Date",
        "From",
        "Subject",
        "To",
        "Auto-Submitted",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
    ];
    for header in message.headers() {
        assert!(
            known.iter().any(|k| k.eq_ignore_ascii_case(header.name())),
            "{name}: unexpected header {}",
            header.name()
        );
    }

    // The report's structure.
    let root = message.content_type().expect("Content-Type");
    assert_eq!(root.ctype(), "multipart");
    assert_eq!(root.subtype(), Some("report"));
    assert_eq!(root.attribute("report-type"), Some("delivery-status"));
    let PartType::Multipart(children) = &message.root_part().body else {
        panic!("{name}: root is not multipart");
    };
    assert_eq!(children.len(), 3, "{name}: three parts");
    let part = |i: usize| &message.parts[children[i] as usize];
    let full_type = |i: usize| {
        let ct = part(i).content_type().expect("part Content-Type");
        format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
    };

    // 1: the explanation.
    assert_eq!(full_type(0), "text/plain", "{name}");
    let text = part(0).text_contents().expect("text");
    for line in &want.text {
        assert!(
            text.contains(line.as_str()),
            "{name}: {line:?} not in {text:?}"
        );
    }

    // 2: the delivery status.
    assert_eq!(full_type(1), want.status_type, "{name}");
    let status = std::str::from_utf8(part(1).contents()).expect("utf-8 status");
    let blocks: Vec<&str> = status.trim_end_matches("\r\n").split("\r\n\r\n").collect();
    assert_eq!(blocks.len(), 1 + want.recipients.len(), "{name}: {status}");
    let per_message = fields(blocks[0]);
    let arrival = per_message
        .iter()
        .find(|(n, _)| n == "Arrival-Date")
        .map(|(_, v)| timestamp(v));
    assert_eq!(arrival, Some(req.arrival_unix), "{name}: Arrival-Date");
    let got: Vec<(&str, &str)> = per_message
        .iter()
        .filter(|(n, _)| n != "Arrival-Date")
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let expected: Vec<(&str, &str)> = want
        .per_message
        .iter()
        .map(|(n, v)| (*n, v.as_str()))
        .collect();
    assert_eq!(got, expected, "{name}: per-message fields");

    for (i, (block, want_fields)) in blocks[1..].iter().zip(&want.recipients).enumerate() {
        let got = fields(block);
        let r = &req.recipients[i];
        let mut plain = Vec::new();
        for (field, value) in &got {
            match field.as_str() {
                "Last-Attempt-Date" => {
                    assert_eq!(Some(timestamp(value)), r.last_attempt_unix, "{name}")
                }
                "Will-Retry-Until" => {
                    assert_eq!(Some(timestamp(value)), r.will_retry_until_unix, "{name}")
                }
                _ => plain.push((field.as_str(), value.as_str())),
            }
        }
        assert_eq!(
            got.iter().any(|(f, _)| f == "Last-Attempt-Date"),
            r.last_attempt_unix.is_some(),
            "{name}"
        );
        assert_eq!(
            got.iter().any(|(f, _)| f == "Will-Retry-Until"),
            r.will_retry_until_unix.is_some(),
            "{name}"
        );
        let expected: Vec<(&str, &str)> =
            want_fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_eq!(plain, expected, "{name}: recipient {i}");
    }

    // 3: the original.
    assert_eq!(full_type(2), want.original_type, "{name}");
    let original = match &part(2).body {
        PartType::Message(inner) => inner.raw_message().to_vec(),
        _ => part(2).contents().to_vec(),
    };
    assert_eq!(
        String::from_utf8_lossy(&original),
        String::from_utf8_lossy(&want.original),
        "{name}: attached original"
    );
}

fn s(v: &str) -> String {
    v.to_owned()
}

#[test]
fn reports_parse_back_field_by_field() {
    let headers_of_original = b"From: sender@example.org\r\nTo: u@remote.example\r\nSubject: hello\r\nMessage-ID: <orig@example.org>\r\n".to_vec();
    let per_message = || {
        vec![
            ("Original-Envelope-Id", s("ENV-42")),
            ("Reporting-MTA", s("dns; mx.example.org")),
            ("X-Skein-Queue-ID", s("0ABCDEFGHJK0000100A")),
        ]
    };
    let failed_fields = |a: &str| {
        vec![
            ("Original-Recipient", format!("rfc822;{a}")),
            ("Final-Recipient", format!("rfc822;{a}")),
            ("Action", s("failed")),
            ("Status", s("5.1.1")),
            ("Remote-MTA", s("dns; mx.remote.example")),
            ("Diagnostic-Code", s("smtp; 550 5.1.1 no such user")),
        ]
    };

    let mut cases: Vec<(&str, DsnRequest, Expect)> = Vec::new();

    cases.push((
        "failure, RET=FULL",
        request(
            DsnKind::Failure,
            vec![failed("u@remote.example")],
            OriginalPart::Full(ORIGINAL.to_vec()),
        ),
        Expect {
            subject: "Undelivered Mail Returned to Sender",
            status_type: "message/delivery-status",
            original_type: "message/rfc822",
            original: ORIGINAL.to_vec(),
            per_message: per_message(),
            recipients: vec![failed_fields("u@remote.example")],
            text: vec![
                s("This is the mail system at host mx.example.org."),
                s("<u@remote.example>: host mx.remote.example said: 550 5.1.1 no such user"),
                s("could not"),
            ],
        },
    ));

    let mut delayed = failed("slow@remote.example");
    delayed.action = Action::Delayed;
    delayed.status = "4.4.1".into();
    delayed.diagnostic_code = Some("smtp; 451 4.4.1 try again later".into());
    delayed.will_retry_until_unix = Some(UNTIL);
    delayed.original_recipient = None;
    let mut local = delayed.clone();
    local.final_recipient = "bob@localhost".into();
    local.remote_mta = None;
    local.diagnostic_code = Some("mailbox is full".into());
    local.last_attempt_unix = None;
    let mut no_envid = request(
        DsnKind::Delay,
        vec![delayed, local],
        OriginalPart::Headers(ORIGINAL.to_vec()),
    );
    no_envid.envid = None;
    cases.push((
        "delay, RET=HDRS, two recipients",
        no_envid,
        Expect {
            subject: "Delayed Mail (still being retried)",
            status_type: "message/delivery-status",
            original_type: "text/rfc822-headers",
            original: headers_of_original.clone(),
            per_message: per_message().into_iter().skip(1).collect(),
            recipients: vec![
                vec![
                    ("Final-Recipient", s("rfc822;slow@remote.example")),
                    ("Action", s("delayed")),
                    ("Status", s("4.4.1")),
                    ("Remote-MTA", s("dns; mx.remote.example")),
                    ("Diagnostic-Code", s("smtp; 451 4.4.1 try again later")),
                ],
                vec![
                    ("Final-Recipient", s("rfc822;bob@localhost")),
                    ("Action", s("delayed")),
                    ("Status", s("4.4.1")),
                    ("Diagnostic-Code", s("X-Skein; mailbox is full")),
                ],
            ],
            text: vec![
                s("<bob@localhost>: mailbox is full"),
                s("you do not need"),
                format!("It will give up on {}", date(UNTIL)),
            ],
        },
    ));

    cases.push((
        "success",
        request(
            DsnKind::Success,
            vec![DsnRecipient {
                final_recipient: "bob@localhost".into(),
                original_recipient: None,
                action: Action::Delivered,
                status: "2.0.0".into(),
                remote_mta: None,
                diagnostic_code: None,
                last_attempt_unix: Some(ATTEMPT),
                will_retry_until_unix: None,
            }],
            OriginalPart::Headers(headers_of_original.clone()),
        ),
        Expect {
            subject: "Successful Mail Delivery Report",
            status_type: "message/delivery-status",
            original_type: "text/rfc822-headers",
            original: headers_of_original.clone(),
            per_message: per_message(),
            recipients: vec![vec![
                ("Final-Recipient", s("rfc822;bob@localhost")),
                ("Action", s("delivered")),
                ("Status", s("2.0.0")),
            ]],
            text: vec![s("<bob@localhost>: delivered (status 2.0.0)")],
        },
    ));

    let mut too_big = request(
        DsnKind::Failure,
        vec![failed("u@remote.example")],
        OriginalPart::Full(ORIGINAL.to_vec()),
    );
    too_big.max_full_size = Some(ORIGINAL.len() - 1);
    cases.push((
        "failure, original above max_full_size",
        too_big,
        Expect {
            subject: "Undelivered Mail Returned to Sender",
            status_type: "message/delivery-status",
            original_type: "text/rfc822-headers",
            original: headers_of_original.clone(),
            per_message: per_message(),
            recipients: vec![failed_fields("u@remote.example")],
            text: vec![s("too large")],
        },
    ));

    // Hostile input everywhere: CRLF to start a header or a MIME part,
    // a fake boundary in the original, a bad status code, a long reply.
    let mut hostile_rcpt = failed("u@remote.example\r\nBcc: victim@example.org");
    hostile_rcpt.original_recipient = None;
    hostile_rcpt.status = "5.1.1\r\nX-Evil: 1".into();
    hostile_rcpt.remote_mta = Some("mx\r\n\r\n--boundary\r\n".into());
    let long_reply = format!(
        "smtp; 550-5.7.1 {}\r\n550 5.7.1 Bcc: injected@example.org",
        "blocked ".repeat(40)
    );
    hostile_rcpt.diagnostic_code = Some(long_reply);
    let original =
        b"Subject: fake\r\n\r\n--skein-dsn=\r\nContent-Type: text/plain\r\n\r\n--skein-dsn=--\r\n"
            .to_vec();
    let mut hostile = request(
        DsnKind::Failure,
        vec![hostile_rcpt],
        OriginalPart::Full(original.clone()),
    );
    hostile.envid = Some("id\r\nSubject: spoofed".into());
    hostile.to = "sender@example.org\r\nBcc: victim@example.org".into();
    cases.push((
        "hostile input",
        hostile,
        Expect {
            subject: "Undelivered Mail Returned to Sender",
            status_type: "message/delivery-status",
            original_type: "message/rfc822",
            original,
            per_message: vec![
                ("Original-Envelope-Id", s("id Subject: spoofed")),
                ("Reporting-MTA", s("dns; mx.example.org")),
                ("X-Skein-Queue-ID", s("0ABCDEFGHJK0000100A")),
            ],
            recipients: vec![vec![
                (
                    "Final-Recipient",
                    s("rfc822;u@remote.example Bcc: victim@example.org"),
                ),
                ("Action", s("failed")),
                ("Status", s("5.0.0")),
                ("Remote-MTA", s("dns; mx --boundary")),
                (
                    "Diagnostic-Code",
                    format!(
                        "smtp; 550-5.7.1 {}550 5.7.1 Bcc: injected@example.org",
                        "blocked ".repeat(40)
                    ),
                ),
            ]],
            text: vec![],
        },
    ));

    let mut intl = failed("usér@exämple.org");
    intl.original_recipient = None;
    intl.diagnostic_code = Some("smtp; 550 5.1.1 bōx unknown".into());
    let utf8_original = "From: sénder@example.org\r\nSubject: héllo\r\n\r\nbödy\r\n"
        .as_bytes()
        .to_vec();
    let mut intl_req = request(
        DsnKind::Failure,
        vec![intl],
        OriginalPart::Full(utf8_original.clone()),
    );
    intl_req.to = "sénder@example.org".into();
    cases.push((
        "internationalised (RFC 6533)",
        intl_req,
        Expect {
            subject: "Undelivered Mail Returned to Sender",
            status_type: "message/global-delivery-status",
            original_type: "message/global",
            original: utf8_original,
            per_message: per_message(),
            recipients: vec![vec![
                ("Final-Recipient", s("utf-8;usér@exämple.org")),
                ("Action", s("failed")),
                ("Status", s("5.1.1")),
                ("Remote-MTA", s("dns; mx.remote.example")),
                ("Diagnostic-Code", s("smtp; 550 5.1.1 bōx unknown")),
            ]],
            text: vec![s(
                "<usér@exämple.org>: host mx.remote.example said: 550 5.1.1 bōx unknown",
            )],
        },
    ));

    for (name, req, want) in &cases {
        check(name, req, want);
    }
}

fn date(unix: i64) -> String {
    skein_mail_date(unix)
}

/// The same rendering the crate uses, recomputed here from the public
/// pieces so the test does not depend on the machine's time zone.
fn skein_mail_date(unix: i64) -> String {
    let report = build(&request(
        DsnKind::Delay,
        vec![DsnRecipient {
            final_recipient: "x@y".into(),
            original_recipient: None,
            action: Action::Delayed,
            status: "4.0.0".into(),
            remote_mta: None,
            diagnostic_code: None,
            last_attempt_unix: None,
            will_retry_until_unix: Some(unix),
        }],
        OriginalPart::Headers(b"Subject: x\r\n".to_vec()),
    ));
    let text = String::from_utf8_lossy(&report).into_owned();
    let field = text
        .split("\r\n")
        .find_map(|l| l.strip_prefix("Will-Retry-Until: "))
        .expect("Will-Retry-Until")
        .to_owned();
    assert_eq!(timestamp(&field), unix);
    field
}

#[test]
fn the_original_is_attached_byte_for_byte_with_crlf() {
    // A message stored with bare LF (not skein's own spool format, but a
    // caller may hand one) comes back with CRLF line endings.
    let lf = b"Subject: lf\nX: y\n\nline one\nline two\n".to_vec();
    let req = request(
        DsnKind::Failure,
        vec![failed("u@remote.example")],
        OriginalPart::Full(lf),
    );
    let bytes = build(&req);
    let message = MessageParser::default().parse(&bytes).expect("parses");
    let inner = message
        .attachments()
        .find_map(|p| match &p.body {
            PartType::Message(m) => Some(m.raw_message().to_vec()),
            _ => None,
        })
        .expect("a message/rfc822 part");
    assert_eq!(
        inner,
        b"Subject: lf\r\nX: y\r\n\r\nline one\r\nline two\r\n".to_vec()
    );
}

#[test]
fn reports_are_seven_bit_unless_they_must_not_be() {
    let ascii = build(&request(
        DsnKind::Failure,
        vec![failed("u@remote.example")],
        OriginalPart::Full(ORIGINAL.to_vec()),
    ));
    assert!(!skein_dsn::needs_8bit(&ascii));
    // Wrapped explanation: no part needed an encoding.
    let text = String::from_utf8_lossy(&ascii);
    assert!(!text.contains("quoted-printable"), "{text}");
    assert!(!text.contains("base64"), "{text}");
    let eight = build(&request(
        DsnKind::Failure,
        vec![failed("u@remote.example")],
        OriginalPart::Full("Subject: x\r\n\r\nbödy\r\n".as_bytes().to_vec()),
    ));
    assert!(skein_dsn::needs_8bit(&eight));
    let text = String::from_utf8_lossy(&eight);
    assert!(text.contains("Content-Transfer-Encoding: 8bit"), "{text}");
    assert!(!skein_dsn::needs_smtputf8(&request(
        DsnKind::Failure,
        vec![failed("u@remote.example")],
        OriginalPart::Full(Vec::new()),
    )));
    assert!(skein_dsn::needs_smtputf8(&request(
        DsnKind::Failure,
        vec![failed("ü@remote.example")],
        OriginalPart::Full(Vec::new()),
    )));
}

#[test]
fn a_withheld_original_leaves_two_parts_and_says_why() {
    let req = request(
        DsnKind::Failure,
        vec![failed("u@remote.example")],
        OriginalPart::Withheld("the spool's copy failed its checksum".into()),
    );
    let bytes = build(&req);
    let message = MessageParser::default().parse(&bytes).expect("parses");
    assert_eq!(message.parts.len(), 3, "the multipart and its two parts");
    assert!(
        message
            .attachments()
            .all(|p| !matches!(p.body, PartType::Message(_))),
        "no message part"
    );
    let text = message.body_text(0).expect("explanation");
    assert!(
        text.contains("The message is not attached: the spool's copy failed its checksum"),
        "{text}"
    );
    let report = String::from_utf8_lossy(&bytes);
    assert!(report.contains("message/delivery-status"), "{report}");
    assert!(!report.contains("text/rfc822-headers"), "{report}");
}
