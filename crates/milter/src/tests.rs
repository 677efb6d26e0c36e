//! Table tests: the bytes of each command as libmilter expects them, each
//! response parsed from the bytes a filter sends, malformed and oversized
//! packets refused, and reply texts checked.

use super::*;

fn packet(code: u8, data: &[u8]) -> Vec<u8> {
    let mut out = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    out.push(code);
    out.extend_from_slice(data);
    out
}

#[test]
fn commands_encode_as_libmilter_reads_them() {
    let cases: Vec<(Command, Vec<u8>)> = vec![
        (
            Command::OptNeg {
                version: 6,
                actions: action::ALL,
                protocol: 0,
            },
            packet(b'O', &[0, 0, 0, 6, 0, 0, 1, 0xff, 0, 0, 0, 0]),
        ),
        (
            Command::Macros {
                stage: Stage::Connect,
                macros: vec![
                    ("j".into(), "mx.test".into()),
                    ("{daemon_name}".into(), "skein".into()),
                ],
            },
            packet(b'D', b"Cj\0mx.test\0{daemon_name}\0skein\0"),
        ),
        (
            Command::Connect {
                hostname: "client.example".into(),
                family: Family::Inet("192.0.2.7".parse().unwrap(), 2525),
            },
            packet(b'C', b"client.example\x004\x09\xdd192.0.2.7\0"),
        ),
        (
            Command::Connect {
                hostname: "[2001:db8::1]".into(),
                family: Family::Inet6("2001:db8::1".parse().unwrap(), 25),
            },
            packet(b'C', b"[2001:db8::1]\x006\x00\x192001:db8::1\0"),
        ),
        (
            Command::Connect {
                hostname: "localhost".into(),
                family: Family::Unknown,
            },
            packet(b'C', b"localhost\0U"),
        ),
        (
            Command::Helo("client.example".into()),
            packet(b'H', b"client.example\0"),
        ),
        (
            Command::Mail(vec!["<a@b.test>".into(), "SIZE=10".into()]),
            packet(b'M', b"<a@b.test>\0SIZE=10\0"),
        ),
        (
            Command::Rcpt(vec!["<r@x.test>".into()]),
            packet(b'R', b"<r@x.test>\0"),
        ),
        (Command::Data, packet(b'T', b"")),
        (
            Command::Header("Subject".into(), " hi".into()),
            packet(b'L', b"Subject\0 hi\0"),
        ),
        (Command::EndOfHeader, packet(b'N', b"")),
        (
            Command::Body(b"line\r\n".to_vec()),
            packet(b'B', b"line\r\n"),
        ),
        (Command::EndOfBody, packet(b'E', b"")),
        (Command::Abort, packet(b'A', b"")),
        (Command::Quit, packet(b'Q', b"")),
        (Command::QuitNewConnection, packet(b'K', b"")),
        // A NUL inside a string cannot end it early.
        (Command::Helo("a\0b".into()), packet(b'H', b"ab\0")),
    ];
    for (command, want) in cases {
        assert_eq!(command.encode(), want, "{command:?}");
    }
    // A body chunk is cut to the protocol's chunk size.
    let big = Command::Body(vec![b'x'; CHUNK + 10]).encode();
    assert_eq!(big.len(), 5 + CHUNK);
}

#[test]
fn responses_parse_from_a_filter_s_bytes() {
    let mut optneg = vec![0, 0, 0, 6, 0, 0, 0, 0x11, 0, 0, 0, 0x40];
    optneg.extend_from_slice(&[0, 0, 0, 2]);
    optneg.extend_from_slice(b"{mail_addr} i\0");
    optneg.extend_from_slice(&[0, 0, 0, 9]);
    optneg.extend_from_slice(b"ignored\0");
    let cases: Vec<(Vec<u8>, Response)> = vec![
        (
            packet(b'O', &optneg),
            Response::OptNeg {
                version: 6,
                actions: 0x11,
                protocol: 0x40,
                macros: vec![(Stage::Mail, vec!["{mail_addr}".into(), "i".into()])],
            },
        ),
        (packet(b'a', b""), Response::Accept),
        (packet(b'c', b""), Response::Continue),
        (packet(b'd', b""), Response::Discard),
        (packet(b'r', b""), Response::Reject),
        (packet(b't', b""), Response::Tempfail),
        (packet(b's', b""), Response::Skip),
        (packet(b'p', b""), Response::Progress),
        (packet(b'f', b""), Response::ConnectionFail),
        (
            packet(b'y', b"550 5.7.1 spam\0"),
            Response::ReplyCode("550 5.7.1 spam".into()),
        ),
        (
            packet(b'h', b"X-Spam\0yes\0"),
            Response::AddHeader("X-Spam".into(), "yes".into()),
        ),
        (
            packet(b'i', b"\0\0\0\0Authentication-Results\0mx; dkim=pass\0"),
            Response::InsertHeader(0, "Authentication-Results".into(), "mx; dkim=pass".into()),
        ),
        (
            packet(b'm', b"\0\0\0\x02Subject\0\0"),
            Response::ChangeHeader(2, "Subject".into(), String::new()),
        ),
        (
            packet(b'b', b"new body"),
            Response::ReplaceBody(b"new body".to_vec()),
        ),
        (
            packet(b'+', b"<new@x.test>\0"),
            Response::AddRcpt("<new@x.test>".into()),
        ),
        (
            packet(b'2', b"<new@x.test>\0NOTIFY=NEVER\0"),
            Response::AddRcptPar("<new@x.test>".into(), "NOTIFY=NEVER".into()),
        ),
        (
            packet(b'-', b"<old@x.test>\0"),
            Response::DeleteRcpt("<old@x.test>".into()),
        ),
        (
            packet(b'e', b"<s@x.test>\0"),
            Response::ChangeFrom("<s@x.test>".into(), String::new()),
        ),
        (
            packet(b'q', b"virus\0"),
            Response::Quarantine("virus".into()),
        ),
    ];
    for (bytes, want) in cases {
        // Whole, and a byte at a time: the same response, once.
        let mut d = Decoder::new();
        d.push(&bytes);
        assert_eq!(d.next_response(), Ok(Some(want.clone())), "{bytes:?}");
        assert_eq!(d.next_response(), Ok(None));
        let mut d = Decoder::new();
        for (i, b) in bytes.iter().enumerate() {
            d.push(&[*b]);
            let got = d.next_response().expect("no error");
            if i + 1 < bytes.len() {
                assert_eq!(got, None);
            } else {
                assert_eq!(got, Some(want.clone()));
            }
        }
    }
    // Two in one read.
    let mut d = Decoder::new();
    d.push(&[packet(b'h', b"A\0b\0"), packet(b'c', b"")].concat());
    assert_eq!(
        d.next_response(),
        Ok(Some(Response::AddHeader("A".into(), "b".into())))
    );
    assert_eq!(d.next_response(), Ok(Some(Response::Continue)));
    assert!(Response::Continue.is_verdict());
    assert!(!Response::AddHeader("A".into(), "b".into()).is_verdict());
    assert!(!Response::Progress.is_verdict());
}

#[test]
fn bad_packets_are_errors() {
    let cases: Vec<(Vec<u8>, ProtocolError)> = vec![
        (vec![0, 0, 0, 0], ProtocolError::BadLength(0)),
        (
            ((MAX_PACKET + 1) as u32).to_be_bytes().to_vec(),
            ProtocolError::BadLength(MAX_PACKET as u32 + 1),
        ),
        (packet(b'Z', b""), ProtocolError::UnknownResponse(b'Z')),
        (
            packet(b'y', b"550 no nul"),
            ProtocolError::Malformed('y', "reply text"),
        ),
        (
            packet(b'h', b"name only\0"),
            ProtocolError::Malformed('h', "header value"),
        ),
        (
            packet(b'i', b"\0\0"),
            ProtocolError::Malformed('i', "index"),
        ),
        (
            packet(b'O', &[0, 0, 0, 6]),
            ProtocolError::Malformed('O', "actions"),
        ),
    ];
    for (bytes, want) in cases {
        let mut d = Decoder::new();
        d.push(&bytes);
        assert_eq!(d.next_response(), Err(want), "{bytes:?}");
    }
}

#[test]
fn reply_texts_are_checked_before_they_reach_the_client() {
    let cases: [(&str, Result<&str, &str>); 9] = [
        ("550 5.7.1 Spam detected", Ok("550 5.7.1 Spam detected")),
        ("451 4.7.1 Try later ", Ok("451 4.7.1 Try later")),
        (
            "550-5.7.1 first\r\n550 5.7.1 second",
            Ok("550-5.7.1 first\r\n550 5.7.1 second"),
        ),
        (
            "550 5.7.1 a\n550 5.7.1 b\n",
            Ok("550-5.7.1 a\r\n550 5.7.1 b"),
        ),
        ("250 ok", Err("not 4xx or 5xx")),
        ("55x oops", Err("not 4xx or 5xx")),
        ("550 a\r\n451 b", Err("does not carry code 550")),
        ("550 a\rRSET", Err("control character")),
        ("", Err("empty")),
    ];
    for (text, want) in cases {
        match (checked_reply(text), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{text:?}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{want} in {got} ({text:?})"),
            (got, want) => panic!("{text:?}: {got:?}, want {want:?}"),
        }
    }
}
