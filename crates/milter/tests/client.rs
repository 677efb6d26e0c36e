//! `client::Connection` against scripted filters on real sockets (TCP and
//! Unix): negotiation, each verdict, end-of-message modifications, a
//! filter that hangs past its timeout, one that closes mid-message, one
//! that sends garbage — each an error the caller can act on, never a hang.

use std::time::Duration;

use skein_milter::client::{Address, Connection, MilterError, Timeouts, Verdict};
use skein_milter::{Command, Response, Stage, protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn packet(code: u8, data: &[u8]) -> Vec<u8> {
    let mut out = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    out.push(code);
    out.extend_from_slice(data);
    out
}

fn optneg(protocol_bits: u32, symlist: Option<(u32, &str)>) -> Vec<u8> {
    let mut data = Vec::new();
    data.extend_from_slice(&6u32.to_be_bytes());
    data.extend_from_slice(&0x1ffu32.to_be_bytes());
    data.extend_from_slice(&protocol_bits.to_be_bytes());
    if let Some((stage, names)) = symlist {
        data.extend_from_slice(&stage.to_be_bytes());
        data.extend_from_slice(names.as_bytes());
        data.push(0);
    }
    packet(b'O', &data)
}

/// Reads one packet: (command byte, data).
async fn read_packet(s: &mut tokio::net::TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.ok()?;
    Some((body[0], body[1..].to_vec()))
}

/// A filter that negotiates `negotiation`, then for each command it
/// receives writes what `script` returns (possibly nothing); it records
/// the command bytes it saw.
async fn filter(
    negotiation: Vec<u8>,
    script: impl Fn(u8) -> Option<Vec<u8>> + Send + 'static,
) -> (Address, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut seen = Vec::new();
        let (code, _) = read_packet(&mut s).await.expect("optneg");
        assert_eq!(code, b'O');
        s.write_all(&negotiation).await.expect("write");
        while let Some((code, _)) = read_packet(&mut s).await {
            seen.push(code);
            if let Some(bytes) = script(code) {
                if bytes.is_empty() {
                    // Close mid-conversation.
                    return seen;
                }
                let _ = s.write_all(&bytes).await;
            }
        }
        seen
    });
    (Address::Inet(addr), task)
}

const T: Timeouts = Timeouts {
    connect: Duration::from_secs(10),
    command: Duration::from_secs(10),
    content: Duration::from_secs(10),
};

#[tokio::test]
async fn steps_follow_the_negotiation_and_verdicts_come_back() {
    // The filter wants no HELO, will not answer headers, and asks for
    // two macros at MAIL.
    let (addr, task) = filter(
        optneg(
            protocol::NO_HELO | protocol::NR_HEADER,
            Some((2, "{mail_addr} i")),
        ),
        |code| match code {
            b'D' | b'L' => None,
            b'M' => Some(packet(b'c', b"")),
            b'R' => Some(packet(b'y', b"550 5.7.1 not this one\0")),
            b'E' => Some(
                [
                    packet(b'p', b""),
                    packet(b'h', b"X-Filtered\0yes\0"),
                    packet(b'i', b"\0\0\0\0Authentication-Results\0mx; none\0"),
                    packet(b'-', b"<gone@x.test>\0"),
                    packet(b'q', b"suspicious\0"),
                    packet(b'a', b""),
                ]
                .concat(),
            ),
            _ => Some(packet(b'c', b"")),
        },
    )
    .await;
    let mut c = Connection::open(&addr, T).await.expect("open");
    assert_eq!(c.protocol & protocol::NO_HELO, protocol::NO_HELO);
    let defaults = ["i"];
    let value = |name: &str| Some(format!("value-of-{name}"));
    let macros = c.macros_for(Stage::Mail, &defaults, &value);
    assert_eq!(
        macros,
        [
            ("{mail_addr}".to_owned(), "value-of-{mail_addr}".to_owned()),
            ("i".to_owned(), "value-of-i".to_owned())
        ],
        "the filter's list, not the defaults"
    );
    let helo = c
        .step(
            Some(Stage::Helo),
            vec![],
            Command::Helo("x".into()),
            protocol::NO_HELO,
            protocol::NR_HELO,
            false,
        )
        .await
        .expect("helo");
    assert_eq!(helo, Verdict::Continue, "not sent at all");
    let mail = c
        .step(
            Some(Stage::Mail),
            macros,
            Command::Mail(vec!["<a@b.test>".into()]),
            protocol::NO_MAIL,
            protocol::NR_MAIL,
            false,
        )
        .await
        .expect("mail");
    assert_eq!(mail, Verdict::Continue);
    let rcpt = c
        .step(
            Some(Stage::Rcpt),
            vec![],
            Command::Rcpt(vec!["<r@x.test>".into()]),
            protocol::NO_RCPT,
            protocol::NR_RCPT,
            false,
        )
        .await
        .expect("rcpt");
    assert_eq!(rcpt, Verdict::Reject(Some("550 5.7.1 not this one".into())));
    let header = c
        .step(
            None,
            vec![],
            Command::Header("Subject".into(), "x".into()),
            protocol::NO_HEADERS,
            protocol::NR_HEADER,
            true,
        )
        .await
        .expect("header");
    assert_eq!(header, Verdict::Continue, "not answered, as negotiated");
    let end = c.end_of_message(vec![]).await.expect("eom");
    assert_eq!(end.verdict, Verdict::Accept);
    assert_eq!(
        end.modifications,
        [
            Response::AddHeader("X-Filtered".into(), "yes".into()),
            Response::InsertHeader(0, "Authentication-Results".into(), "mx; none".into()),
            Response::DeleteRcpt("<gone@x.test>".into()),
            Response::Quarantine("suspicious".into()),
        ]
    );
    c.quit().await;
    let seen = task.await.expect("filter");
    assert_eq!(
        seen,
        [b'D', b'M', b'R', b'L', b'E', b'Q'],
        "no H: the filter opted out"
    );
}

#[tokio::test]
async fn a_filter_that_hangs_closes_or_babbles_is_an_error_not_a_hang() {
    // Hangs: never answers MAIL.
    let (addr, _task) = filter(optneg(0, None), |code| match code {
        b'M' => None,
        _ => Some(packet(b'c', b"")),
    })
    .await;
    let short = Timeouts {
        command: Duration::from_millis(300),
        ..T
    };
    let mut c = Connection::open(&addr, short).await.expect("open");
    let err = c
        .step(
            Some(Stage::Mail),
            vec![],
            Command::Mail(vec!["<a@b>".into()]),
            protocol::NO_MAIL,
            protocol::NR_MAIL,
            false,
        )
        .await
        .expect_err("timeout");
    assert!(matches!(err, MilterError::Timeout(_)), "{err}");

    // Closes at end of message.
    let (addr, _task) = filter(optneg(0, None), |code| match code {
        b'E' => Some(Vec::new()),
        _ => Some(packet(b'c', b"")),
    })
    .await;
    let mut c = Connection::open(&addr, T).await.expect("open");
    let err = c.end_of_message(vec![]).await.expect_err("lost");
    assert!(matches!(err, MilterError::Lost(_)), "{err}");

    // Garbage instead of an answer.
    let (addr, _task) = filter(optneg(0, None), |_| Some(b"\xff\xff\xff\xffjunk".to_vec())).await;
    let mut c = Connection::open(&addr, T).await.expect("open");
    let err = c
        .step(
            None,
            vec![],
            Command::Data,
            protocol::NO_DATA,
            protocol::NR_DATA,
            false,
        )
        .await
        .expect_err("garbage");
    assert!(matches!(err, MilterError::Protocol(_)), "{err}");

    // Nobody listening.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = Address::Inet(listener.local_addr().expect("addr"));
    drop(listener);
    let err = Connection::open(&addr, T).await.expect_err("refused");
    assert!(matches!(err, MilterError::Connect(_)), "{err}");
}

#[tokio::test]
async fn unix_sockets_work_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("milter.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.expect("len");
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).await.expect("body");
        s.write_all(&optneg(0, None)).await.expect("write");
    });
    let c = Connection::open(&Address::Unix(path), T)
        .await
        .expect("open");
    assert_eq!(c.actions, 0x1ff);
    task.await.expect("filter");
}
