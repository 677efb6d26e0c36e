//! The malformed-input suite: each case gets the right reply, nothing bad
//! is queued, and the server goes on serving the next client.

mod smtpd_support;

use std::io::Write;
use std::time::Duration;

use smtpd_support::{Client, GUARD, Smtpd, USERS};

/// A session up to an accepted MAIL and RCPT.
fn in_transaction(smtpd: &Smtpd) -> Client {
    let mut c = smtpd.client();
    c.send(b"EHLO bad.example\r\nMAIL FROM:<a@bad.example>\r\nRCPT TO:<joe@localhost>\r\n");
    c.expect(250, "");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c
}

/// Sends DATA and `text` (which must end the data) and returns the reply
/// to the message.
fn data(c: &mut Client, text: &[u8]) -> String {
    c.send(b"DATA\r\n");
    c.expect(354, "");
    c.send(text);
    c.reply().expect("a reply to the message").text
}

#[test]
fn malformed_input_suite() {
    // Local users must exist: the first 1000 of the many recipients below
    // (the rest are over the limit, refused before any lookup) and åsa.
    let many: Vec<String> = (0..1000).map(|n| format!("user{n}")).collect();
    let mut users: Vec<&str> = many.iter().map(String::as_str).collect();
    users.extend(USERS);
    users.push("åsa");
    let smtpd = Smtpd::start_with_users("max_message_size = \"64k\"", "", &users);
    let mut queued = 0;

    // A 10 000-byte command line: refused once, the session goes on.
    let mut c = smtpd.client();
    c.send(b"EHLO bad.example\r\n");
    c.expect(250, "");
    let mut long = b"MAIL FROM:<".to_vec();
    long.extend_from_slice(&b"a".repeat(10_000));
    long.extend_from_slice(b"@x.example>\r\nNOOP\r\n");
    c.send(&long);
    c.expect(500, "5.5.2");
    c.expect(250, "2.0.0");
    drop(c);
    smtpd.assert_serving();
    queued += 1;

    // Bare LF and bare CR in commands; NUL bytes in a command.
    let mut c = smtpd.client();
    c.send(b"EHLO bad.example\n");
    c.expect(500, "5.5.2");
    c.send(b"NO\rOP\r\n");
    c.expect(500, "5.5.2");
    c.send(b"NOOP\0\r\nEH\0LO x\r\n");
    c.expect(500, "5.5.2");
    c.expect(500, "5.5.2");
    c.send(b"NOOP\r\n");
    c.expect(250, "2.0.0");
    drop(c);
    smtpd.assert_serving();
    queued += 1;

    // Bare LF, bare CR and NUL in message text: refused, nothing queued,
    // and the session can send the next message. `\n.\n` must not end the
    // data (SMTP smuggling).
    let refused: &[&[u8]] = &[
        b"Subject: x\r\n\r\nbare\nLF\r\n.\r\n",
        b"Subject: x\r\n\r\nsmuggled\r\n\n.\nMAIL FROM:<evil@x>\r\n.\r\n",
        b"Subject: x\r\n\r\nbare\rCR\r\n.\r\n",
        b"Subject: x\r\n\r\nNUL\0byte\r\n.\r\n",
    ];
    for text in refused {
        let mut c = in_transaction(&smtpd);
        let reply = data(&mut c, text);
        assert!(reply.starts_with("554 5.6.0 "), "{text:?}: {reply}");
        c.send(b"MAIL FROM:<a@bad.example>\r\nRCPT TO:<joe@localhost>\r\n");
        c.expect(250, "2.1.0");
        c.expect(250, "2.1.5");
        let reply = data(&mut c, b"Subject: fine\r\n\r\nfine\r\n.\r\n");
        assert!(reply.starts_with("250 2.0.0 "), "{reply}");
        queued += 1;
    }
    assert_eq!(smtpd.incoming().len(), queued);

    // A message line longer than max_line_length (1000).
    let mut c = in_transaction(&smtpd);
    let mut text = b"Subject: long\r\n\r\n".to_vec();
    text.extend_from_slice(&b"y".repeat(1500));
    text.extend_from_slice(b"\r\n.\r\n");
    let reply = data(&mut c, &text);
    assert!(reply.starts_with("500 5.5.6 "), "{reply}");
    drop(c);

    // Commands before EHLO.
    let mut c = smtpd.client();
    c.send(b"MAIL FROM:<a@bad.example>\r\nRCPT TO:<joe@localhost>\r\nDATA\r\nBDAT 3 LAST\r\nabcNOOP\r\n");
    c.expect(503, "5.5.1");
    c.expect(503, "5.5.1");
    c.expect(503, "5.5.1");
    c.expect(503, "5.5.1");
    c.expect(250, "2.0.0");
    drop(c);

    // MAIL without angle brackets; RCPT before MAIL; DATA without RCPT.
    let mut c = smtpd.client();
    c.send(b"EHLO bad.example\r\nMAIL FROM:a@bad.example\r\nRCPT TO:<joe@localhost>\r\nMAIL FROM:<a@bad.example>\r\nDATA\r\nRCPT TO:joe@localhost\r\nQUIT\r\n");
    c.expect(250, "");
    c.expect(501, "5.5.4");
    c.expect(503, "5.5.1");
    c.expect(250, "2.1.0");
    c.expect(503, "5.5.1");
    c.expect(501, "5.5.4");
    c.expect(221, "2.0.0");
    c.expect_closed();

    // 10 000 RCPTs in one write: the first max_recipients (1000) accepted,
    // the rest 452 4.5.3; the message goes to the first 1000. A writer
    // thread sends while we read, as a pipelining client must.
    let mut c = smtpd.client();
    let mut wire = b"EHLO bad.example\r\nMAIL FROM:<a@bad.example>\r\n".to_vec();
    for n in 0..10_000 {
        wire.extend_from_slice(format!("RCPT TO:<user{n}@localhost>\r\n").as_bytes());
    }
    wire.extend_from_slice(b"DATA\r\nSubject: many\r\n\r\nmany\r\n.\r\n");
    let mut writer = c.stream.try_clone().expect("clone");
    let sending = std::thread::spawn(move || writer.write_all(&wire));
    c.expect(250, "");
    c.expect(250, "2.1.0");
    for n in 0..10_000 {
        if n < 1000 {
            c.expect(250, "2.1.5");
        } else {
            c.expect(452, "4.5.3");
        }
    }
    c.expect(354, "");
    c.expect(250, "2.0.0");
    sending.join().expect("writer").expect("write");
    drop(c);
    queued += 1;
    let many = smtpd
        .incoming()
        .iter()
        .map(|f| skein_spool::read_message(f).expect("message").0)
        .find(|info| info.envelope.recipients.len() > 1)
        .expect("the message with many recipients");
    assert_eq!(many.envelope.recipients.len(), 1000);

    // Past the size limit: announced with SIZE, or just sent (DATA and
    // BDAT). Nothing is queued.
    let mut c = smtpd.client();
    c.send(b"EHLO bad.example\r\nMAIL FROM:<a@bad.example> SIZE=100000\r\n");
    c.expect(250, "");
    c.expect(552, "5.3.4");
    drop(c);
    let mut c = in_transaction(&smtpd);
    let mut text = b"Subject: big\r\n\r\n".to_vec();
    for _ in 0..2000 {
        text.extend_from_slice(&[b'z'; 78]);
        text.extend_from_slice(b"\r\n");
    }
    text.extend_from_slice(b".\r\n");
    let reply = data(&mut c, &text);
    assert!(reply.starts_with("552 5.3.4 "), "{reply}");
    c.send(b"MAIL FROM:<a@bad.example>\r\nRCPT TO:<joe@localhost>\r\nBDAT 100000 LAST\r\n");
    c.send(&vec![b'z'; 100_000]);
    c.send(b"NOOP\r\n");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(552, "5.3.4");
    c.expect(250, "2.0.0");
    drop(c);

    // Invalid UTF-8 in a command, and non-ASCII without SMTPUTF8.
    let mut c = smtpd.client();
    c.send(b"EHLO bad.example\r\nMAIL FROM:<\xff\xfe@bad.example>\r\nMAIL FROM:<j\xc3\xb6@bad.example>\r\nMAIL FROM:<j\xc3\xb6@bad.example> SMTPUTF8\r\nRCPT TO:<\xc3\xa5sa@localhost>\r\nRSET\r\n");
    c.expect(250, "");
    c.expect(500, "5.5.2");
    c.expect(553, "5.6.7");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(250, "2.0.0");
    c.send(b"MAIL FROM:<a@bad.example>\r\nRCPT TO:<\xc3\xa5sa@localhost>\r\n");
    c.expect(250, "2.1.0");
    c.expect(553, "5.6.7");
    drop(c);

    // A client that disconnects in the middle of DATA: nothing queued, no
    // temporary file left behind.
    let before = smtpd.incoming().len();
    let mut c = in_transaction(&smtpd);
    c.send(b"DATA\r\n");
    c.expect(354, "");
    c.send(b"Subject: cut\r\n\r\nhalf a mess");
    drop(c);
    let cleaned = smtpd
        .env
        .wait_for(GUARD, || smtpd.env.files("tmp").is_empty());
    assert!(cleaned, "tmp/ not cleaned: {:?}", smtpd.env.files("tmp"));
    // Same in the middle of a BDAT chunk.
    let mut c = in_transaction(&smtpd);
    c.send(b"BDAT 1000 LAST\r\nSubject: cut\r\n");
    drop(c);
    let cleaned = smtpd
        .env
        .wait_for(GUARD, || smtpd.env.files("tmp").is_empty());
    assert!(cleaned, "tmp/ not cleaned: {:?}", smtpd.env.files("tmp"));
    assert_eq!(smtpd.incoming().len(), before);

    // Too many errors: 421 4.7.0 and the connection is closed.
    let mut c = smtpd.client();
    c.send(&b"XYZZY\r\n".repeat(25));
    for _ in 0..19 {
        c.expect(500, "5.5.1");
    }
    c.expect(500, "5.5.1");
    c.expect(421, "4.7.0");
    c.expect_closed();

    smtpd.assert_serving();
    queued += 1;
    assert_eq!(smtpd.incoming().len(), queued);
    assert!(smtpd.daemon.log_text().contains("disconnect"));
}

#[test]
fn silent_client_times_out() {
    let smtpd = Smtpd::start("command_timeout = \"1s\"\ndata_timeout = \"1s\"", "");
    // Connects and sends nothing.
    let mut c = smtpd.client();
    c.expect(421, "4.4.2");
    c.expect_closed();
    // Stops sending in the middle of DATA.
    let mut c = in_transaction(&smtpd);
    c.send(b"DATA\r\n");
    c.expect(354, "");
    c.send(b"Subject: slow\r\n");
    c.expect(421, "4.4.2");
    c.expect_closed();
    assert!(smtpd.incoming().is_empty());
    // The timeout is per wait, not per session: a client that keeps
    // talking is served.
    let mut c = smtpd.client();
    c.send(b"NOOP\r\n");
    c.expect(250, "2.0.0");
    std::thread::sleep(Duration::from_millis(100));
    c.send(b"QUIT\r\n");
    c.expect(221, "2.0.0");
}

#[test]
fn connection_limits() {
    let smtpd = Smtpd::start("max_connections_per_client = 2", "");
    // The start-up probe's connection (connect, then drop) counts until
    // the server has seen it close: wait for its place to be free.
    let greeted = |what: &str| {
        for _ in 0..200 {
            let mut c = Client::connect(smtpd.port);
            let r = c.reply().expect("a greeting");
            if r.code == 220 {
                return c;
            }
            assert_eq!(r.code, 421, "{}", r.text);
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{what} never got a place");
    };
    let _a = greeted("the first client");
    let _b = greeted("the second client");
    // Both places are held now: the third is refused, whatever happened
    // before.
    let mut third = Client::connect(smtpd.port);
    third.expect(421, "4.7.0");
    third.expect_closed();
    drop(_a);
    // The freed place is given to the next client (after the server has
    // seen the close).
    greeted("a client after a place was freed by a closed connection");
}
