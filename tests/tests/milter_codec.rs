//! The milter codec (`skein-milter`, issue 15's first step) against a
//! filter nobody here wrote: Debian's OpenDKIM in milter mode, started on
//! a loopback port with its own configuration (verifying, adding an
//! `Authentication-Results` field to every message). A whole session —
//! option negotiation, macros, connect, HELO, MAIL, RCPT, DATA, header
//! fields, end of header, body, end of body — is spoken with
//! `Command::encode` and read with `Decoder`; OpenDKIM's answers parse,
//! and its end-of-message modification is the header field it promises.
//! (The smtpd through it: `smtpd_milter.rs`, `milter_opendkim.rs`.)

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use skein_integration_tests::KillOnDrop;
use skein_milter::{Command, Decoder, Family, Response, Stage, VERSION, action, protocol};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Reads until one verdict arrives; returns it with the modifications
/// before it.
fn answer(stream: &mut TcpStream, decoder: &mut Decoder) -> (Vec<Response>, Response) {
    let mut modifications = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(response) = decoder.next_response().expect("a well-formed response") {
            if response.is_verdict() {
                return (modifications, response);
            }
            if response != Response::Progress {
                modifications.push(response);
            }
        }
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "opendkim closed the connection");
        decoder.push(&buf[..n]);
    }
}

#[test]
fn a_whole_session_with_opendkim() {
    let dir = skein_integration_tests::tempdir();
    let port = free_port();
    let conf = dir.path().join("opendkim.conf");
    std::fs::write(
        &conf,
        format!(
            "Syslog no\nMode v\nSocket inet:{port}@127.0.0.1\nBackground no\nAlwaysAddARHeader yes\nAuthservID mx.test\nPidFile {}\n",
            dir.path().join("opendkim.pid").display()
        ),
    )
    .expect("conf");
    let child = Process::new("opendkim")
        .arg("-f")
        .arg("-x")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("opendkim (apt install opendkim: bench/ci-deps-milter.sh)");
    let _daemon = KillOnDrop(child);
    let end = Instant::now() + Duration::from_secs(60);
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("opendkim does not listen: {e}"),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut decoder = Decoder::new();
    let send = |stream: &mut TcpStream, command: Command| {
        stream.write_all(&command.encode()).expect("write");
    };
    send(
        &mut stream,
        Command::OptNeg {
            version: VERSION,
            actions: action::ALL,
            protocol: protocol::ALL,
        },
    );
    let (_, negotiated) = answer(&mut stream, &mut decoder);
    let Response::OptNeg {
        version,
        actions,
        protocol: steps,
        ..
    } = negotiated
    else {
        panic!("not an option negotiation: {negotiated:?}")
    };
    assert_eq!(version, VERSION);
    assert!(
        actions & action::ADD_HEADERS != 0,
        "opendkim adds headers: {actions:#x}"
    );
    // Each step opendkim did not opt out of is sent; its answer read
    // unless it said it would not answer.
    let step = |stream: &mut TcpStream,
                decoder: &mut Decoder,
                command: Command,
                skip: u32,
                no_reply: u32|
     -> Option<Response> {
        if steps & skip != 0 {
            return None;
        }
        stream.write_all(&command.encode()).expect("write");
        if steps & no_reply != 0 {
            return None;
        }
        Some(answer(stream, decoder).1)
    };
    send(
        &mut stream,
        Command::Macros {
            stage: Stage::Connect,
            macros: vec![
                ("j".into(), "mx.test".into()),
                ("{daemon_name}".into(), "skein".into()),
                ("{client_addr}".into(), "192.0.2.7".into()),
            ],
        },
    );
    let connect = Command::Connect {
        hostname: "client.example".into(),
        family: Family::Inet("192.0.2.7".parse().expect("ip"), 40000),
    };
    for reply in [
        step(
            &mut stream,
            &mut decoder,
            connect,
            protocol::NO_CONNECT,
            protocol::NR_CONNECT,
        ),
        step(
            &mut stream,
            &mut decoder,
            Command::Helo("client.example".into()),
            protocol::NO_HELO,
            protocol::NR_HELO,
        ),
    ]
    .into_iter()
    .flatten()
    {
        assert_eq!(reply, Response::Continue);
    }
    send(
        &mut stream,
        Command::Macros {
            stage: Stage::Mail,
            macros: vec![("i".into(), "1K1TQ0000000000000".into())],
        },
    );
    for reply in [
        step(
            &mut stream,
            &mut decoder,
            Command::Mail(vec!["<joe@example.org>".into()]),
            protocol::NO_MAIL,
            protocol::NR_MAIL,
        ),
        step(
            &mut stream,
            &mut decoder,
            Command::Rcpt(vec!["<ann@mx.test>".into()]),
            protocol::NO_RCPT,
            protocol::NR_RCPT,
        ),
        step(
            &mut stream,
            &mut decoder,
            Command::Data,
            protocol::NO_DATA,
            protocol::NR_DATA,
        ),
    ]
    .into_iter()
    .flatten()
    {
        assert_eq!(reply, Response::Continue);
    }
    for (name, value) in [
        ("From", " Joe <joe@example.org>"),
        ("To", " ann@mx.test"),
        ("Subject", " milter"),
    ] {
        if let Some(reply) = step(
            &mut stream,
            &mut decoder,
            Command::Header(name.into(), value.into()),
            protocol::NO_HEADERS,
            protocol::NR_HEADER,
        ) {
            assert_eq!(reply, Response::Continue);
        }
    }
    if let Some(reply) = step(
        &mut stream,
        &mut decoder,
        Command::EndOfHeader,
        protocol::NO_EOH,
        protocol::NR_EOH,
    ) {
        assert_eq!(reply, Response::Continue);
    }
    if let Some(reply) = step(
        &mut stream,
        &mut decoder,
        Command::Body(b"hello\r\n".to_vec()),
        protocol::NO_BODY,
        protocol::NR_BODY,
    ) {
        assert!(
            matches!(reply, Response::Continue | Response::Skip),
            "{reply:?}"
        );
    }
    send(&mut stream, Command::EndOfBody);
    let (modifications, verdict) = answer(&mut stream, &mut decoder);
    assert!(
        matches!(verdict, Response::Accept | Response::Continue),
        "{verdict:?}"
    );
    let ar = modifications.iter().find_map(|m| match m {
        Response::InsertHeader(_, name, value) | Response::AddHeader(name, value)
            if name == "Authentication-Results" =>
        {
            Some(value.clone())
        }
        _ => None,
    });
    let ar = ar.unwrap_or_else(|| panic!("no Authentication-Results in {modifications:?}"));
    assert!(ar.contains("mx.test") && ar.contains("dkim=none"), "{ar}");
    send(&mut stream, Command::Quit);
}
