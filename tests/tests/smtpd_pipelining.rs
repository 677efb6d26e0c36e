//! A fully pipelined session sent in one write: every reply in order, and
//! the message in incoming/ intact, envelope and DSN parameters included.

mod smtpd_support;

use skein_spool::{BodyType, Ret};
use smtpd_support::Smtpd;

#[test]
fn whole_session_in_one_write() {
    let smtpd = Smtpd::start("", "");
    let mut c = smtpd.client();
    let message = b"From: a@client.example\r\nSubject: pipelined\r\n\r\nline one\r\n.leading dot\r\n..two dots\r\n8bit: \xc3\xa9\r\n";
    let mut wire = Vec::new();
    wire.extend_from_slice(b"EHLO client.example\r\n");
    wire.extend_from_slice(
        b"MAIL FROM:<a@client.example> SIZE=500 BODY=8BITMIME RET=HDRS ENVID=env+2B1\r\n",
    );
    wire.extend_from_slice(
        b"RCPT TO:<joe@localhost> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;joe@localhost\r\n",
    );
    wire.extend_from_slice(b"RCPT TO:<ann@test.example>\r\n");
    wire.extend_from_slice(b"RCPT TO:<far@elsewhere.example> NOTIFY=NEVER\r\n");
    wire.extend_from_slice(b"DATA\r\n");
    // Dot-stuffed on the wire.
    wire.extend_from_slice(b"From: a@client.example\r\nSubject: pipelined\r\n\r\nline one\r\n..leading dot\r\n...two dots\r\n8bit: \xc3\xa9\r\n.\r\n");
    wire.extend_from_slice(b"NOOP\r\nQUIT\r\n");
    c.send(&wire);

    let ehlo = c.expect(250, "");
    for keyword in [
        "PIPELINING",
        "CHUNKING",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "DSN",
        "SIZE 52428800",
    ] {
        assert!(
            ehlo.contains(&format!("250-{keyword}\r\n"))
                || ehlo.contains(&format!("250 {keyword}\r\n")),
            "{keyword} missing from {ehlo:?}"
        );
    }
    assert!(
        !ehlo.contains("STARTTLS"),
        "no certificate, no STARTTLS: {ehlo:?}"
    );
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(250, "2.1.5");
    c.expect(250, "2.1.5"); // loopback is in the default relay_networks
    c.expect(354, "");
    let queued = c.expect(250, "2.0.0 Ok: queued as ");
    c.expect(250, "2.0.0");
    c.expect(221, "2.0.0");
    c.expect_closed();

    let files = smtpd.incoming();
    assert_eq!(files.len(), 1, "{files:?}");
    let (info, bytes) = skein_spool::read_message(&files[0]).expect("valid message file");
    assert!(queued.contains(info.id.as_str()), "{queued} vs {}", info.id);
    let env = &info.envelope;
    assert_eq!(env.sender, "a@client.example");
    assert_eq!(env.body, BodyType::EightBitMime);
    assert_eq!(env.ret, Some(Ret::Headers));
    assert_eq!(env.envid.as_deref(), Some("env+1"));
    assert!(
        env.origin
            .starts_with("smtp [127.0.0.1] helo=client.example"),
        "{}",
        env.origin
    );
    // NOTIFY as the file spells it.
    let notify: Vec<Option<String>> = env
        .recipients
        .iter()
        .map(|r| r.notify.map(|n| n.to_string()))
        .collect();
    let rcpts: Vec<(&str, Option<&str>, Option<&str>)> = env
        .recipients
        .iter()
        .zip(&notify)
        .map(|(r, n)| (r.address.as_str(), n.as_deref(), r.orcpt.as_deref()))
        .collect();
    assert_eq!(
        rcpts,
        vec![
            (
                "joe@localhost",
                Some("SUCCESS,FAILURE"),
                Some("rfc822;joe@localhost")
            ),
            ("ann@test.example", None, None),
            ("far@elsewhere.example", Some("NEVER"), None),
        ]
    );
    // A Received field first, then the message exactly as sent, un-stuffed.
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("Received: from client.example ([127.0.0.1])\r\n\tby test.example (skein) with ESMTP id "), "{text}");
    assert!(
        !text.contains("\tfor <"),
        "several recipients: no 'for': {text}"
    );
    let end_of_received = text
        .find("\r\nFrom: ")
        .expect("message after the Received field")
        + 2;
    assert_eq!(&bytes[end_of_received..], &message[..]);
    assert!(info.eightbit);
}
