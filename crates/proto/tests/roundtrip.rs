//! Round trips (encode → frame → decode) of every message variant, with
//! field values that exercise the encoding: empty strings, `None` and
//! `Some`, integers at the varint boundaries and at their maxima, non-ASCII.
//!
//! Each enum has an exhaustive `match` naming its variants, and the test
//! asserts every name was seen: adding a variant without a sample here
//! fails to compile or fails the test.

use std::collections::BTreeSet;
use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;
use skein_proto::*;

fn round_trip<T>(msg: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let frame = encode_frame(msg, DEFAULT_MAX_FRAME).unwrap();
    let mut dec = FrameDecoder::new();
    dec.push(&frame);
    let back: T = dec.decode().unwrap().expect("a whole frame");
    assert_eq!(&back, msg);
    assert!(!dec.is_mid_frame());
    // The sans-IO payload path agrees with the decoder.
    assert_eq!(&decode_payload::<T>(&frame[HEADER_LEN..]).unwrap(), msg);
}

fn thread(channel: &str, host: &str) -> ThreadKey {
    ThreadKey::new(channel, host)
}

fn job(id: u64, recipients: Vec<JobRecipient>) -> Job {
    Job {
        id: JobId(id),
        queue_id: "1kQ3xZ-000Abc".into(),
        thread: thread("smtp", "bücher.example"),
        nexthop: Some("[192.0.2.7]:2600".into()),
        sender: String::new(),
        envid: Some("ënvid+2B".into()),
        ret: Some(Ret::Headers),
        body: BodyType::BinaryMime,
        smtputf8: true,
        message_path: "/var/spool/skein/queue/1kQ3xZ-000Abc".into(),
        message_offset: u64::MAX,
        size: 250,
        attempt: u32::MAX,
        recipients,
    }
}

fn recipients() -> Vec<JobRecipient> {
    vec![
        JobRecipient {
            index: 0,
            address: "postmaster@bücher.example".into(),
            orcpt: None,
            notify: Notify::default(),
        },
        JobRecipient {
            index: 251,
            address: String::new(),
            orcpt: Some("rfc822;Ünïcode@example.org".into()),
            notify: Notify {
                never: true,
                success: false,
                failure: false,
                delay: false,
            },
        },
        JobRecipient {
            index: 65_536,
            address: "a@b".into(),
            orcpt: Some(String::new()),
            notify: Notify {
                never: false,
                success: true,
                failure: true,
                delay: true,
            },
        },
    ]
}

fn outcome(status: Status, reply: Option<SmtpReply>) -> Outcome {
    Outcome {
        job: JobId(u64::MAX),
        recipient: 251,
        status,
        reply,
        enhanced: "5.7.26".parse().unwrap(),
        diagnostic: "DMARC policy: rejet — réessayez".into(),
        remote_mta: Some("mx1.bücher.example[2001:db8::1]".into()),
        connect_micros: u64::MAX - 1,
        tls: Some(false),
    }
}

#[test]
fn scheduler_to_agent() {
    let samples = vec![
        SchedulerToAgent::Job(job(1, recipients())),
        SchedulerToAgent::Job(Job {
            nexthop: None,
            sender: "bounce+x@example.org".into(),
            envid: None,
            ret: None,
            body: BodyType::SevenBit,
            smtputf8: false,
            message_offset: 0,
            size: 0,
            attempt: 0,
            ..job(u64::from(u32::MAX) + 1, vec![])
        }),
        SchedulerToAgent::Job(Job {
            ret: Some(Ret::Full),
            body: BodyType::EightBitMime,
            ..job(250, recipients())
        }),
        SchedulerToAgent::Shutdown,
        SchedulerToAgent::Cancel { job: JobId(0) },
        SchedulerToAgent::Cancel {
            job: JobId(u64::MAX),
        },
    ];
    let mut seen = BTreeSet::new();
    for m in &samples {
        seen.insert(match m {
            SchedulerToAgent::Job(_) => "Job",
            SchedulerToAgent::Shutdown => "Shutdown",
            SchedulerToAgent::Cancel { .. } => "Cancel",
        });
        round_trip(m);
    }
    assert_eq!(seen.len(), 3);
}

#[test]
fn agent_to_scheduler() {
    let samples = vec![
        AgentToScheduler::Want { jobs: 0 },
        AgentToScheduler::Want { jobs: u32::MAX },
        AgentToScheduler::Outcome(outcome(Status::Delivered, None)),
        AgentToScheduler::Outcome(outcome(
            Status::Deferred {
                retry_after_secs: Some(u64::MAX),
            },
            Some(SmtpReply {
                code: 451,
                enhanced: None,
                text: "greylisted\nline two".into(),
            }),
        )),
        AgentToScheduler::Outcome(outcome(
            Status::Deferred {
                retry_after_secs: None,
            },
            None,
        )),
        AgentToScheduler::Outcome(Outcome {
            remote_mta: None,
            diagnostic: String::new(),
            ..outcome(
                Status::Failed,
                Some(SmtpReply {
                    code: 550,
                    enhanced: Some(EnhancedCode::new(5, 999, 999).unwrap()),
                    text: String::new(),
                }),
            )
        }),
        AgentToScheduler::JobDone { job: JobId(7) },
        AgentToScheduler::Idle { connected_to: None },
        AgentToScheduler::Idle {
            connected_to: Some("mx.bücher.example".into()),
        },
        AgentToScheduler::Damaged {
            job: JobId(u64::MAX),
            reason: "crc32 0badf00d vs 1c291ca3 — ünïcode".into(),
        },
    ];
    let mut seen = BTreeSet::new();
    for m in &samples {
        seen.insert(match m {
            AgentToScheduler::Want { .. } => "Want",
            AgentToScheduler::Outcome(o) => match o.status {
                Status::Delivered => "Outcome/Delivered",
                Status::Deferred { .. } => "Outcome/Deferred",
                Status::Failed => "Outcome/Failed",
            },
            AgentToScheduler::JobDone { .. } => "JobDone",
            AgentToScheduler::Idle { .. } => "Idle",
            AgentToScheduler::Damaged { .. } => "Damaged",
        });
        round_trip(m);
    }
    assert_eq!(seen.len(), 7);
}

#[test]
fn control_request() {
    let samples = vec![
        ControlRequest::Submitted {
            queue_id: "1kQ3xZ-000Abc".into(),
        },
        ControlRequest::Status,
        ControlRequest::ListQueue,
        ControlRequest::ListThreads,
        ControlRequest::Show {
            queue_id: String::new(),
        },
        ControlRequest::Hold {
            queue_id: "ü".into(),
        },
        ControlRequest::Release {
            queue_id: "x".repeat(300),
        },
        ControlRequest::Delete {
            queue_id: "d".into(),
        },
        ControlRequest::Flush(FlushTarget::All),
        ControlRequest::Flush(FlushTarget::Message("m".into())),
        ControlRequest::Flush(FlushTarget::Thread(thread("local", ""))),
        ControlRequest::Requeue {
            queue_id: "r".into(),
        },
        ControlRequest::Bulk {
            action: BulkAction::Delete,
            selection: Selection::all(),
        },
        ControlRequest::Bulk {
            action: BulkAction::Flush,
            selection: Selection {
                ids: Some(vec!["a".into(), "b".into()]),
                from: Some("@x.test".into()),
                to: Some("<>".into()),
                domain: Some("ü.test".into()),
                older_than_secs: Some(u64::MAX),
                state: Some(SelectState::Held),
                thread: Some(thread("smtp", "y.test")),
            },
        },
    ];
    let mut seen = BTreeSet::new();
    for m in &samples {
        seen.insert(match m {
            ControlRequest::Submitted { .. } => "Submitted",
            ControlRequest::Status => "Status",
            ControlRequest::ListQueue => "ListQueue",
            ControlRequest::ListThreads => "ListThreads",
            ControlRequest::Show { .. } => "Show",
            ControlRequest::Hold { .. } => "Hold",
            ControlRequest::Release { .. } => "Release",
            ControlRequest::Delete { .. } => "Delete",
            ControlRequest::Flush(FlushTarget::All) => "Flush/All",
            ControlRequest::Flush(FlushTarget::Message(_)) => "Flush/Message",
            ControlRequest::Flush(FlushTarget::Thread(_)) => "Flush/Thread",
            ControlRequest::Requeue { .. } => "Requeue",
            ControlRequest::Bulk { .. } => "Bulk",
        });
        round_trip(m);
    }
    assert_eq!(seen.len(), 13);
}

fn summary(held: bool) -> MessageSummary {
    let states = [
        RecipientState::Pending,
        RecipientState::InProgress,
        RecipientState::Deferred,
        RecipientState::Delivered,
        RecipientState::Failed,
    ];
    MessageSummary {
        queue_id: "1kQ3xZ-000Abc".into(),
        size: u64::MAX,
        arrival_unix: i64::MIN,
        sender: String::new(),
        held,
        recipients: states
            .iter()
            .enumerate()
            .map(|(i, state)| RecipientSummary {
                index: i as u32 * 1000,
                address: format!("user{i}@bücher.example"),
                thread: thread("smtp", "bücher.example"),
                state: *state,
                attempts: i as u32,
                last_diagnostic: (i % 2 == 0).then(|| "délai".to_string()),
                next_attempt_unix: (i % 2 == 1).then_some(-(i as i64)),
            })
            .collect(),
    }
}

fn thread_info(feed: FeedState) -> ThreadInfo {
    ThreadInfo {
        key: thread("smtp", "example.org"),
        messages: 1 << 40,
        recipients: 0,
        attempts: 3,
        agent_pids: vec![1, 65_535, u32::MAX],
        next_attempt_in_secs: Some(-5),
        feed,
        oldest_age_secs: 86_400 * 5,
        last_diagnostic: Some("connect: connection refused".into()),
    }
}

#[test]
fn control_response() {
    let samples = vec![
        ControlResponse::Ok {
            message: String::new(),
        },
        ControlResponse::Ok {
            message: "held 1kQ3xZ-000Abc".into(),
        },
        ControlResponse::Status(SchedulerStatus {
            pid: u32::MAX,
            version: "0.1.0".into(),
            uptime_secs: 0,
            messages: u64::MAX,
            recipients: 251,
            threads: 65_536,
            agents: 1,
        }),
        ControlResponse::Queue(vec![]),
        ControlResponse::Queue(vec![summary(true), summary(false)]),
        ControlResponse::Threads(vec![]),
        ControlResponse::Threads(vec![
            GroupInfo {
                clause: "smtp/*".into(),
                agents: vec![],
                threads: [
                    FeedState::Idle,
                    FeedState::Queued,
                    FeedState::Running,
                    FeedState::Retrying,
                    FeedState::Held,
                ]
                .into_iter()
                .map(thread_info)
                .collect(),
            },
            GroupInfo {
                clause: "local/*".into(),
                agents: vec![42],
                threads: vec![ThreadInfo {
                    next_attempt_in_secs: None,
                    last_diagnostic: None,
                    agent_pids: vec![],
                    ..thread_info(FeedState::Idle)
                }],
            },
        ]),
        ControlResponse::Message(MessageDetail {
            summary: summary(false),
            envid: None,
            ret: None,
            body: BodyType::SevenBit,
            smtputf8: false,
            message_path: "/spool/queue/a".into(),
            control_path: "/spool/transport/a".into(),
        }),
        ControlResponse::Message(MessageDetail {
            summary: summary(true),
            envid: Some("id".into()),
            ret: Some(Ret::Full),
            body: BodyType::EightBitMime,
            smtputf8: true,
            message_path: String::new(),
            control_path: "/späl/transport/ü".into(),
        }),
    ]
    .into_iter()
    .chain(
        [
            ControlErrorKind::UnknownId,
            ControlErrorKind::Invalid,
            ControlErrorKind::Unavailable,
            ControlErrorKind::Internal,
            ControlErrorKind::Forbidden,
        ]
        .into_iter()
        .map(|kind| {
            ControlResponse::Error(ControlError {
                kind,
                message: format!("{kind:?}: ça ne va pas"),
            })
        }),
    )
    .collect::<Vec<_>>();
    let mut seen = BTreeSet::new();
    for m in &samples {
        seen.insert(match m {
            ControlResponse::Ok { .. } => "Ok",
            ControlResponse::Status(_) => "Status",
            ControlResponse::Queue(_) => "Queue",
            ControlResponse::Threads(_) => "Threads",
            ControlResponse::Message(_) => "Message",
            ControlResponse::Error(_) => "Error",
        });
        round_trip(m);
    }
    assert_eq!(seen.len(), 6);
}

#[test]
fn handshake_messages() {
    for role in [
        Role::Scheduler,
        Role::Agent {
            channel: "smtp".into(),
        },
        Role::Agent {
            channel: String::new(),
        },
        Role::Router,
        Role::Tool,
    ] {
        round_trip(&Hello::new(role, "skein-ünï 0.1.0"));
    }
    round_trip(&HandshakeReply::Accepted);
    round_trip(&HandshakeReply::Refused {
        reason: "no clause for channel \"fax\"".into(),
    });
}

/// Feeding several frames one byte at a time yields each message once, in
/// order, and never an error.
#[test]
fn byte_at_a_time() {
    let msgs = vec![
        AgentToScheduler::Want { jobs: 150 },
        AgentToScheduler::Outcome(outcome(Status::Delivered, None)),
        AgentToScheduler::JobDone { job: JobId(1) },
        AgentToScheduler::Idle {
            connected_to: Some("mx.example.org".into()),
        },
    ];
    let stream: Vec<u8> = msgs
        .iter()
        .flat_map(|m| encode_frame(m, DEFAULT_MAX_FRAME).unwrap())
        .collect();
    let mut dec = FrameDecoder::new();
    let mut got = Vec::new();
    for (i, byte) in stream.iter().enumerate() {
        dec.push(std::slice::from_ref(byte));
        if let Some(m) = dec.decode::<AgentToScheduler>().unwrap() {
            got.push(m);
            // A frame completes exactly when its last byte arrives.
            assert!(!dec.is_mid_frame(), "at byte {i}");
        } else {
            assert!(dec.is_mid_frame(), "at byte {i}");
        }
    }
    assert_eq!(got, msgs);
}

/// The layout of a whole message, byte for byte, as the protocol document
/// shows it: an agent in another language must produce these bytes.
#[test]
fn golden_outcome_bytes() {
    let msg = AgentToScheduler::Outcome(Outcome {
        job: JobId(300),
        recipient: 2,
        status: Status::Deferred {
            retry_after_secs: Some(60),
        },
        reply: Some(SmtpReply {
            code: 451,
            enhanced: Some(EnhancedCode::new(4, 7, 1).unwrap()),
            text: "later".into(),
        }),
        enhanced: EnhancedCode::new(4, 7, 1).unwrap(),
        diagnostic: "grey".into(),
        remote_mta: None,
        connect_micros: 1500,
        tls: Some(true),
    });
    #[rustfmt::skip]
    let want: &[u8] = &[
        0x00, 0x00, 0x00, 0x24,             // payload length 36
        0x01,                               // AgentToScheduler::Outcome
        0xfb, 0x2c, 0x01,                   // job 300: u16 marker, 0x012c LE
        0x02,                               // recipient 2
        0x01, 0x01, 0x3c,                   // Status::Deferred, Some(60)
        0x01,                               // reply: Some
        0xfb, 0xc3, 0x01,                   //   code 451
        0x01, 0x04, 0x07, 0x01,             //   enhanced Some(4.7.1)
        0x05, b'l', b'a', b't', b'e', b'r', //   text "later"
        0x04, 0x07, 0x01,                   // enhanced 4.7.1
        0x04, b'g', b'r', b'e', b'y',       // diagnostic "grey"
        0x00,                               // remote_mta: None
        0xfb, 0xdc, 0x05,                   // connect_micros 1500: u16 marker, LE
        0x01, 0x01,                         // tls: Some(true)
    ];
    assert_eq!(encode_frame(&msg, DEFAULT_MAX_FRAME).unwrap(), want);
    round_trip(&msg);
}

#[test]
fn invalid_enhanced_code_is_malformed() {
    // Outcome with enhanced class 3: hand-edit the golden bytes above.
    let mut payload = encode_frame(&outcome(Status::Failed, None), DEFAULT_MAX_FRAME).unwrap()
        [HEADER_LEN..]
        .to_vec();
    // job u64::MAX (9 bytes), recipient 251 (3), status (1), reply None (1),
    // then the enhanced class byte.
    let class_at = 9 + 3 + 1 + 1;
    assert_eq!(payload[class_at], 5);
    payload[class_at] = 3;
    let err = decode_payload::<Outcome>(&payload).unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid enhanced status code 3.7.26"),
        "{err}"
    );
}

/// The worked examples of `docs/agent-protocol.md`: each block marked
/// `<!-- golden: NAME -->` is hex bytes (anything after `#` is a comment).
const PROTOCOL_DOC: &str = include_str!("../../../docs/agent-protocol.md");

fn doc_example(name: &str) -> Vec<u8> {
    let marker = format!("<!-- golden: {name} -->");
    let start = PROTOCOL_DOC.find(&marker).expect("example in the doc");
    let mut lines = PROTOCOL_DOC[start..].lines().skip(1);
    assert_eq!(lines.next(), Some("```text"), "{name}: fence");
    let mut bytes = Vec::new();
    for line in lines.take_while(|l| *l != "```") {
        let code = line.split('#').next().unwrap_or("");
        for token in code.split_whitespace() {
            bytes.push(u8::from_str_radix(token, 16).expect("hex byte"));
        }
    }
    bytes
}

#[test]
fn doc_examples_are_exact() {
    let hello = Hello::new(
        Role::Agent {
            channel: "smtp".into(),
        },
        "skein-smtp",
    );
    assert_eq!(
        doc_example("hello"),
        encode_frame(&hello, DEFAULT_MAX_FRAME).unwrap()
    );

    let job = SchedulerToAgent::Job(Job {
        id: JobId(7),
        queue_id: "Q1".into(),
        thread: thread("smtp", "example.org"),
        nexthop: None,
        sender: "a@b.c".into(),
        envid: None,
        ret: None,
        body: BodyType::SevenBit,
        smtputf8: false,
        message_path: "/s/q/Q1".into(),
        message_offset: 120,
        size: 300,
        attempt: 0,
        recipients: vec![JobRecipient {
            index: 0,
            address: "x@example.org".into(),
            orcpt: None,
            notify: Notify::default(),
        }],
    });
    assert_eq!(
        doc_example("job"),
        encode_frame(&job, DEFAULT_MAX_FRAME).unwrap()
    );

    let outcome = AgentToScheduler::Outcome(Outcome {
        job: JobId(300),
        recipient: 2,
        status: Status::Deferred {
            retry_after_secs: Some(60),
        },
        reply: Some(SmtpReply {
            code: 451,
            enhanced: Some(EnhancedCode::new(4, 7, 1).unwrap()),
            text: "later".into(),
        }),
        enhanced: EnhancedCode::new(4, 7, 1).unwrap(),
        diagnostic: "grey".into(),
        remote_mta: None,
        connect_micros: 1500,
        tls: Some(true),
    });
    assert_eq!(
        doc_example("outcome"),
        encode_frame(&outcome, DEFAULT_MAX_FRAME).unwrap()
    );

    let small: Vec<u8> = [
        AgentToScheduler::Want { jobs: 150 },
        AgentToScheduler::JobDone { job: JobId(7) },
        AgentToScheduler::Idle { connected_to: None },
        AgentToScheduler::Damaged {
            job: JobId(7),
            reason: "hi".into(),
        },
    ]
    .iter()
    .flat_map(|m| encode_frame(m, DEFAULT_MAX_FRAME).unwrap())
    .collect();
    assert_eq!(doc_example("small"), small);
}

/// What the doc promises about varints and signed integers.
#[test]
fn varint_rules_of_the_doc() {
    // (payload, decodes as JobDone with this id?)
    let table: &[(&[u8], Option<u64>)] = &[
        (&[0x02, 0xfa], Some(250)),
        (&[0x02, 0xfb, 0xfb, 0x00], Some(251)),
        (&[0x02, 0xfc, 0x00, 0x00, 0x01, 0x00], Some(65_536)),
        // A longer form than needed is accepted.
        (&[0x02, 0xfb, 0x07, 0x00], Some(7)),
        (&[0x02, 0xfd, 0x07, 0, 0, 0, 0, 0, 0, 0], Some(7)),
        // 0xfe (u128) does not fit a u64, 0xff is no marker.
        (
            &[0x02, 0xfe, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            None,
        ),
        (&[0x02, 0xff], None),
    ];
    for (payload, want) in table {
        let got = match decode_payload::<AgentToScheduler>(payload) {
            Ok(AgentToScheduler::JobDone { job }) => Some(job.0),
            Ok(other) => panic!("{other:?}"),
            Err(_) => None,
        };
        assert_eq!(got, *want, "{payload:02x?}");
    }
    // A u32 field (Want.jobs) refuses the u64 form.
    assert!(decode_payload::<AgentToScheduler>(&[0x00, 0xfd, 1, 0, 0, 0, 0, 0, 0, 0]).is_err());
    // i64 is zigzag: -1 is 01, 1 is 02.
    for (n, want) in [(-1i64, 0x01u8), (1, 0x02), (0, 0x00), (-2, 0x03)] {
        let info = ThreadInfo {
            next_attempt_in_secs: Some(n),
            ..thread_info(FeedState::Idle)
        };
        let bytes = encode_frame(&info, DEFAULT_MAX_FRAME).unwrap();
        let at = bytes
            .windows(2)
            .position(|w| w == [0x01, want])
            .expect("Some(n) zigzag-encoded");
        assert!(at > HEADER_LEN);
    }
}
