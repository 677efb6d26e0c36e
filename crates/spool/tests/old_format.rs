//! Spool files written by an older skein must read the same forever: a
//! queue survives upgrades. The files in `fixtures/` are real bytes, written
//! by the spool code at commit 06947a7 (`MessageWriter` through
//! `Spool::create_incoming`, and `ControlFile::render`), never edited by
//! hand:
//!
//! - `message-v1`, `control-v1`: every header field and every kind of
//!   journal record, with the DSN parameters as the SMTP server writes
//!   them;
//! - `message-v1-sendmail`, `control-v1-sendmail`: `sendmail -N
//!   delay,success,success -R hdrs`, whose NOTIFY was stored in the user's
//!   order, upper-cased, repeats kept (and copied as is by the router).
//!
//! Each test checks every field of what it reads, and that what the
//! current code writes for the same values is the same bytes (but for the
//! control file's header checksum line, which came later).

use std::path::{Path, PathBuf};

use skein_spool::{
    Area, BodyType, ControlFile, ControlRecipient, Envelope, Notify, OutcomeKind, QueueId,
    Recipient, Record, Ret, Spool, read_message,
};

const MESSAGE_V1: &[u8] = include_bytes!("fixtures/message-v1");
const CONTROL_V1: &[u8] = include_bytes!("fixtures/control-v1");
const MESSAGE_V1_SENDMAIL: &[u8] = include_bytes!("fixtures/message-v1-sendmail");
const CONTROL_V1_SENDMAIL: &[u8] = include_bytes!("fixtures/control-v1-sendmail");

/// The fixture as a file in a fresh spool's `incoming/`.
fn in_spool(bytes: &[u8], id: &str) -> (tempfile::TempDir, Spool, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let path = spool.path(Area::Incoming, &id.parse().unwrap());
    std::fs::write(&path, bytes).unwrap();
    (dir, spool, path)
}

fn id(s: &str) -> QueueId {
    s.parse().unwrap()
}

/// NOTIFY with these conditions (not `NEVER`).
fn notify(success: bool, failure: bool, delay: bool) -> Notify {
    Notify {
        never: false,
        success,
        failure,
        delay,
    }
}

/// The header lines after `id` and `arrival`, which a new write changes.
fn header_after_arrival(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes);
    let start = text.find("\nsender ").unwrap() + 1;
    text[start..].as_bytes().to_vec()
}

/// Writes `envelope` and `body` with the current code and checks that the
/// file equals `old` from the `sender` line on.
fn rewrites_identically(spool: &Spool, envelope: &Envelope, body: &[u8], old: &[u8]) {
    let mut w = spool.create_incoming(envelope).unwrap();
    w.write_message(body).unwrap();
    let new_id = w.commit().unwrap();
    let new = std::fs::read(spool.path(Area::Incoming, &new_id)).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&header_after_arrival(&new)),
        String::from_utf8_lossy(&header_after_arrival(old))
    );
}

fn message_v1_envelope() -> Envelope {
    Envelope {
        sender: "joe@example.org".into(),
        recipients: vec![
            Recipient {
                address: "\"ann smith\"@example.net".into(),
                notify: Some(notify(true, true, false)),
                orcpt: Some("rfc822;ann+2Bsmith@example.net".into()),
            },
            Recipient {
                address: "bob@example.net".into(),
                notify: Some(Notify::NEVER),
                orcpt: None,
            },
            Recipient {
                address: "carol@example.net".into(),
                notify: Some(notify(false, false, true)),
                orcpt: None,
            },
            Recipient {
                address: "dave@bücher.example".into(),
                notify: None,
                orcpt: None,
            },
        ],
        envid: Some("QQ 314%159".into()),
        ret: Some(Ret::Headers),
        body: BodyType::EightBitMime,
        smtputf8: true,
        origin: "smtp [192.0.2.1] helo=client.example".into(),
    }
}

#[test]
fn message_file_v1_reads_identically() {
    let (_dir, spool, path) = in_spool(MESSAGE_V1, "1K1NG1XRRWP00G6K000");
    let (info, body) = read_message(&path).unwrap();
    let want_body = b"From: joe@example.org\r\nSubject: fixture\r\n\r\nHello.\r\n";
    assert_eq!(info.id, id("1K1NG1XRRWP00G6K000"));
    assert_eq!(info.arrival_micros, 1_796_241_287_308_495);
    assert_eq!(info.envelope, message_v1_envelope());
    assert_eq!(info.offset, (MESSAGE_V1.len() - want_body.len()) as u64);
    assert_eq!(info.size, want_body.len() as u64);
    assert_eq!(info.crc32, 0x882b_97d6);
    assert!(!info.eightbit);
    assert_eq!(body, want_body);
    rewrites_identically(&spool, &info.envelope, &body, MESSAGE_V1);
}

fn sendmail_recipients() -> Vec<Recipient> {
    ["ann@example.net", "bob@localhost"]
        .into_iter()
        .map(|address| Recipient {
            address: address.into(),
            notify: Some(notify(true, false, true)),
            orcpt: None,
        })
        .collect()
}

#[test]
fn message_file_v1_from_sendmail_reads_identically() {
    let (_dir, _spool, path) = in_spool(MESSAGE_V1_SENDMAIL, "1K1NG1XS0BX00G6K000");
    let (info, body) = read_message(&path).unwrap();
    assert_eq!(info.id, id("1K1NG1XS0BX00G6K000"));
    assert_eq!(info.arrival_micros, 1_796_241_287_316_248);
    assert_eq!(
        info.envelope,
        Envelope {
            sender: "joe@example.org".into(),
            recipients: sendmail_recipients(),
            envid: None,
            ret: Some(Ret::Headers),
            body: BodyType::SevenBit,
            smtputf8: false,
            origin: "sendmail uid=1000 user=joe".into(),
        }
    );
    assert_eq!(info.offset, (MESSAGE_V1_SENDMAIL.len() - 17) as u64);
    assert_eq!(info.size, 17);
    assert_eq!(info.crc32, 0x44e3_a152);
    assert!(!info.eightbit);
    assert_eq!(body, b"Subject: s\r\n\r\nx\r\n");
}

fn outcome(
    rcpt: u32,
    at: u64,
    kind: OutcomeKind,
    attempt: u32,
    status: &str,
    retry_at: Option<u64>,
) -> Record {
    Record::Outcome {
        rcpt,
        at,
        kind,
        attempt,
        status: status.parse().unwrap(),
        retry_at,
        reply: None,
        remote_mta: None,
        diagnostic: String::new(),
    }
}

fn with(mut record: Record, reply: Option<&str>, mta: Option<&str>, diag: &str) -> Record {
    if let Record::Outcome {
        reply: r,
        remote_mta,
        diagnostic,
        ..
    } = &mut record
    {
        *r = reply.map(Into::into);
        *remote_mta = mta.map(Into::into);
        *diagnostic = diag.into();
    }
    record
}

fn control_recipient(
    index: u32,
    (channel, host, address): (&str, &str, &str),
    nexthop: Option<&str>,
    notify: Option<Notify>,
    orcpt: Option<&str>,
) -> ControlRecipient {
    ControlRecipient {
        index,
        channel: channel.into(),
        host: host.into(),
        address: address.into(),
        nexthop: nexthop.map(Into::into),
        notify,
        orcpt: orcpt.map(Into::into),
    }
}

fn control_v1() -> ControlFile {
    use OutcomeKind::{Deferred, Delivered, Failed};
    ControlFile {
        id: id("1J4P51A5D600044J007"),
        arrival_micros: 1_764_377_978_123_456,
        envelope: Envelope {
            sender: String::new(),
            recipients: Vec::new(),
            envid: None,
            ret: Some(Ret::Full),
            body: BodyType::BinaryMime,
            smtputf8: false,
            origin: "sendmail uid=1000 user=joe".into(),
        },
        message: "queue/0SV3K8Q7J1M000A4R000".into(),
        offset: 412,
        size: 4096,
        recipients: vec![
            control_recipient(0, ("local", "ann", "ann@localhost"), None, None, None),
            control_recipient(
                1,
                ("smtp", "example.net", "\"b b\"@example.net"),
                Some("127.0.0.1:2600"),
                Some(notify(false, true, true)),
                Some("rfc822;b+20b@example.net"),
            ),
            control_recipient(
                2,
                ("smtp", "example.org", "carol@example.org"),
                None,
                Some(Notify::NEVER),
                None,
            ),
            control_recipient(
                3,
                ("error", "router", "nobody@localhost"),
                None,
                Some(notify(true, true, true)),
                Some("rfc822;nobody@localhost"),
            ),
            control_recipient(
                4,
                ("smtp", "example.com", "dan@example.com"),
                None,
                Some(notify(true, false, false)),
                None,
            ),
        ],
        records: vec![
            with(
                outcome(3, 1_764_377_978_200_000, Failed, 0, "5.1.1", None),
                None,
                None,
                "no such local user: nobody",
            ),
            with(
                outcome(
                    1,
                    1_764_377_990_000_000,
                    Deferred,
                    1,
                    "4.4.1",
                    Some(1_764_378_050_000_000),
                ),
                None,
                Some("example.net"),
                "connection refused",
            ),
            with(
                outcome(0, 1_764_377_990_100_000, Delivered, 1, "2.0.0", None),
                None,
                None,
                "delivered to maildir",
            ),
            with(
                outcome(2, 1_764_377_991_000_000, Failed, 1, "5.1.10", None),
                Some("550 5.1.10 no mail here\r\n"),
                Some("mx.example.org"),
                "",
            ),
            with(
                outcome(
                    4,
                    1_764_377_992_000_000,
                    Deferred,
                    1,
                    "4.3.0",
                    Some(1_764_378_052_000_000),
                ),
                None,
                None,
                "transport agent failed: exit status 1",
            ),
            Record::Notified {
                rcpts: vec![3, 2],
                at: 1_764_377_993_000_000,
                what: "failure".into(),
                dsn: "0SV3K8Q7J1M000A4S000".into(),
            },
            Record::Held {
                at: 1_764_377_994_000_000,
            },
            Record::Released {
                at: 1_764_377_995_000_000,
            },
            with(
                outcome(1, 1_764_810_000_000_000, Failed, 2, "4.4.7", None),
                None,
                None,
                "message expired after 5.0 days in the queue; last error: connection refused",
            ),
            Record::Notified {
                rcpts: vec![1],
                at: 1_764_810_000_100_000,
                what: "failure".into(),
                dsn: String::new(),
            },
        ],
    }
}

#[test]
fn control_file_v1_reads_identically() {
    let (control, torn) = ControlFile::parse(CONTROL_V1, Path::new("control-v1")).unwrap();
    assert!(!torn);
    assert_eq!(control, control_v1());
    assert_eq!(
        without_header_crc(&control.render().unwrap()),
        String::from_utf8_lossy(CONTROL_V1)
    );
}

/// What the current code writes, less the header checksum line that
/// files written before it lack (and that readers take either way): the
/// rest must be the old bytes. The new file reads back the same.
fn without_header_crc(rendered: &str) -> String {
    let (again, _) = ControlFile::parse(rendered.as_bytes(), Path::new("rendered")).unwrap();
    assert_eq!(again.render().unwrap(), rendered);
    let lines: Vec<&str> = rendered.split_inclusive('\n').collect();
    let crc_lines = lines.iter().filter(|l| l.starts_with("crc32 ")).count();
    assert_eq!(crc_lines, 1, "{rendered}");
    lines
        .into_iter()
        .filter(|l| !l.starts_with("crc32 "))
        .collect()
}

#[test]
fn control_file_v1_from_sendmail_reads_identically() {
    let (control, torn) =
        ControlFile::parse(CONTROL_V1_SENDMAIL, Path::new("control-v1-sendmail")).unwrap();
    assert!(!torn);
    let recipients = sendmail_recipients();
    let queue_id = id("1K1NG1XS0BX00G6K000");
    assert_eq!(
        control,
        ControlFile {
            id: queue_id.clone(),
            arrival_micros: queue_id.micros(),
            envelope: Envelope {
                sender: "joe@example.org".into(),
                recipients: Vec::new(),
                envid: None,
                ret: Some(Ret::Headers),
                body: BodyType::SevenBit,
                smtputf8: false,
                origin: "sendmail uid=1000 user=joe".into(),
            },
            message: "queue/1K1NG1XS0BX00G6K000".into(),
            offset: 200,
            size: 15,
            recipients: vec![
                ControlRecipient {
                    notify: recipients[0].notify,
                    ..control_recipient(
                        0,
                        ("smtp", "example.net", "ann@example.net"),
                        None,
                        None,
                        None
                    )
                },
                ControlRecipient {
                    notify: recipients[1].notify,
                    ..control_recipient(1, ("local", "bob", "bob@localhost"), None, None, None)
                },
            ],
            records: vec![with(
                outcome(
                    1,
                    queue_id.micros() + 1000,
                    OutcomeKind::Delivered,
                    1,
                    "2.0.0",
                    None
                ),
                None,
                None,
                "delivered to maildir",
            )],
        }
    );
    // Written back, NOTIFY takes its one spelling; nothing else changes.
    let old = String::from_utf8_lossy(CONTROL_V1_SENDMAIL);
    assert_eq!(
        without_header_crc(&control.render().unwrap()),
        old.replace("notify=DELAY,SUCCESS,SUCCESS", "notify=SUCCESS,DELAY")
    );
}
