//! STARTTLS with an rcgen certificate: EHLO again over TLS, a message
//! whose Received field names the TLS session; input pipelined after
//! STARTTLS is discarded; and a handshake of garbage ends only that
//! session.

mod smtpd_support;

use std::io::{Read, Write};

use smtpd_support::{Smtpd, certificate};

#[test]
fn starttls_then_ehlo_again() {
    let pems = skein_integration_tests::tempdir();
    let (tls, der) = certificate(pems.path());
    let smtpd = Smtpd::start("", &tls);

    let mut c = smtpd.client();
    c.send(b"EHLO tls.example\r\n");
    let ehlo = c.expect(250, "");
    assert!(ehlo.contains("STARTTLS\r\n"), "{ehlo}");
    // RSET pipelined behind STARTTLS came in the clear: it must vanish.
    c.send(b"STARTTLS\r\nRSET\r\n");
    c.expect(220, "2.0.0");
    c.start_tls(der.clone());
    // The EHLO state was forgotten: MAIL first is refused.
    c.send(b"MAIL FROM:<a@tls.example>\r\n");
    c.expect(503, "5.5.1");
    c.send(b"EHLO tls.example\r\n");
    let ehlo = c.expect(250, "");
    assert!(!ehlo.contains("STARTTLS"), "no STARTTLS under TLS: {ehlo}");
    assert!(ehlo.contains("PIPELINING"), "{ehlo}");
    c.send(b"STARTTLS\r\n");
    c.expect(503, "5.5.1");
    c.send(b"MAIL FROM:<a@tls.example>\r\nRCPT TO:<joe@localhost>\r\nDATA\r\nSubject: secret\r\n\r\nover TLS\r\n.\r\nQUIT\r\n");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(354, "");
    c.expect(250, "2.0.0 Ok: queued as");
    c.expect(221, "");

    let files = smtpd.incoming();
    assert_eq!(files.len(), 1);
    let (_, bytes) = skein_spool::read_message(&files[0]).expect("message");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains(" with ESMTPS id "), "{text}");
    assert!(text.contains("\r\n\t(TLSv1."), "{text}");
    assert!(
        text.ends_with("Subject: secret\r\n\r\nover TLS\r\n"),
        "{text}"
    );

    // A handshake of garbage: that session ends, the server serves on.
    let mut c = smtpd.client();
    c.send(b"EHLO tls.example\r\nSTARTTLS\r\n");
    c.expect(250, "");
    c.expect(220, "2.0.0");
    let mut raw = c.stream.try_clone().expect("clone");
    raw.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0xff, 0xfe])
        .expect("garbage");
    let mut rest = Vec::new();
    // An alert then EOF, or a reset: either way it ends.
    let _ = raw.read_to_end(&mut rest);
    assert!(!rest.windows(3).any(|w| w == b"250"), "{rest:?}");
    drop(c);
    smtpd.assert_serving();

    // No certificate configured: no STARTTLS.
    let plain = Smtpd::start("", "");
    let mut c = plain.client();
    c.send(b"EHLO x.example\r\nSTARTTLS\r\n");
    let ehlo = c.expect(250, "");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    c.expect(502, "5.5.1");
}
