//! BDAT (RFC 3030) in several chunks of odd sizes, ending with
//! `BDAT 0 LAST`; the chunks' bytes are taken as they are (no dot
//! handling), and the message lands in incoming/ intact.

mod smtpd_support;

use smtpd_support::Smtpd;

#[test]
fn chunks_then_bdat_0_last() {
    let smtpd = Smtpd::start("", "");
    let message: Vec<u8> = [
        &b"Subject: chunked\r\n\r\n"[..],
        b"a line\r\n.\r\n",
        b"..not stuffed\r\n",
        &b"0123456789abcdef"
            .repeat(6)
            .iter()
            .chain(b"\r\n")
            .copied()
            .collect::<Vec<u8>>()
            .repeat(2000),
        b"\r\nend\r\n",
    ]
    .concat();
    let mut c = smtpd.client();
    c.send(b"EHLO chunker.example\r\nMAIL FROM:<> \r\nRCPT TO:<joe@localhost>\r\n");
    c.expect(250, "");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    // Chunks of 1, 7, 12 bytes, then the rest split at an odd place, the
    // first group pipelined in one write.
    let cuts = [1, 8, 20, 100_003, message.len()];
    let mut start = 0;
    let mut group = Vec::new();
    for &end in &cuts[..3] {
        group.extend_from_slice(format!("BDAT {}\r\n", end - start).as_bytes());
        group.extend_from_slice(&message[start..end]);
        start = end;
    }
    c.send(&group);
    for &end in &cuts[..3] {
        let _ = end;
        c.expect(250, "2.0.0");
    }
    for &end in &cuts[3..] {
        c.send(format!("BDAT {}\r\n", end - start).as_bytes());
        c.send(&message[start..end]);
        let text = c.expect(250, "2.0.0");
        assert!(text.contains(&format!("{} octets", end - start)), "{text}");
        start = end;
    }
    c.send(b"BDAT 0 LAST\r\n");
    let queued = c.expect(250, "2.0.0 Ok: queued as");

    // A second message in the same session: one BDAT LAST, and a chunk
    // holding what would end a DATA.
    c.send(b"MAIL FROM:<b@chunker.example>\r\nRCPT TO:<ann@localhost>\r\nBDAT 10 LAST\r\nhi\r\n.\r\nx\r\n");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(250, "2.0.0 Ok: queued as");
    // BDAT without a transaction: its bytes are still skipped.
    c.send(b"BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n");
    c.expect(503, "5.5.1");
    c.expect(250, "2.0.0");
    c.send(b"QUIT\r\n");
    c.expect(221, "2.0.0");

    let files = smtpd.incoming();
    assert_eq!(files.len(), 2, "{files:?}");
    let mut bodies = Vec::new();
    for f in &files {
        let (info, bytes) = skein_spool::read_message(f).expect("message file");
        let body = smtpd_support::after_received(&bytes).to_vec();
        bodies.push((info, body));
    }
    bodies.sort_by_key(|(info, _)| info.envelope.sender.clone());
    let (first, first_body) = &bodies[0];
    assert_eq!(first.envelope.sender, "");
    assert!(queued.contains(first.id.as_str()));
    assert_eq!(first_body, &message, "first message intact");
    let (second, second_body) = &bodies[1];
    assert_eq!(second.envelope.sender, "b@chunker.example");
    assert_eq!(second_body, b"hi\r\n.\r\nx\r\n");
}
