//! The submission port: STARTTLS before AUTH, AUTH PLAIN and LOGIN
//! against an argon2id password file, and an authenticated client may
//! relay where an unauthenticated one may not.

mod smtpd_support;

use skein_integration_tests::base64 as b64;
use smtpd_support::Client;

#[test]
fn auth_then_relay() {
    let files = skein_integration_tests::tempdir();
    let (smtpd, submission, der) = smtpd_support::submission_server(files.path());

    // Port 25 style: no AUTH, relay refused.
    let mut c = smtpd.client();
    c.send(b"EHLO client.example\r\nAUTH PLAIN AGFsaWNlAHMzY3JldCBwYXNz\r\nMAIL FROM:<alice@client.example>\r\nRCPT TO:<far@elsewhere.example>\r\n");
    let ehlo = c.expect(250, "");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    c.expect(502, "5.5.1");
    c.expect(250, "2.1.0");
    c.expect(554, "5.7.1");
    drop(c);

    let mut c = Client::connect(submission);
    c.expect(220, "");
    c.send(b"EHLO client.example\r\n");
    let ehlo = c.expect(250, "");
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"), "no AUTH before TLS: {ehlo}");
    c.send(b"MAIL FROM:<alice@client.example>\r\n");
    c.expect(530, "5.7.0");
    c.send(format!("AUTH PLAIN {}\r\n", b64(b"\0alice\0s3cret pass")).as_bytes());
    c.expect(538, "5.7.11");
    c.send(b"STARTTLS\r\n");
    c.expect(220, "2.0.0");
    c.start_tls(der.clone());
    c.send(b"EHLO client.example\r\n");
    let ehlo = c.expect(250, "");
    assert!(
        ehlo.contains("250-AUTH PLAIN LOGIN\r\n") || ehlo.contains("250 AUTH PLAIN LOGIN\r\n"),
        "{ehlo}"
    );
    c.send(b"MAIL FROM:<alice@client.example>\r\n");
    c.expect(530, "5.7.0");
    c.send(format!("AUTH PLAIN {}\r\n", b64(b"\0alice\0wrong")).as_bytes());
    c.expect(535, "5.7.8");
    c.send(format!("AUTH PLAIN {}\r\n", b64(b"\0mallory\0s3cret pass")).as_bytes());
    c.expect(535, "5.7.8");
    c.send(b"AUTH CRAM-MD5\r\n");
    c.expect(504, "5.5.4");
    c.send(b"AUTH PLAIN\r\n");
    c.expect(334, "");
    c.send(b"*\r\n");
    c.expect(501, "5.0.0");
    // PLAIN with the response after a 334.
    c.send(b"AUTH PLAIN\r\n");
    c.expect(334, "");
    c.send(format!("{}\r\n", b64(b"\0alice\0s3cret pass")).as_bytes());
    c.expect(235, "2.7.0");
    c.send(b"AUTH PLAIN =\r\n");
    c.expect(503, "5.5.1");
    // With the AUTH= parameter of RFC 4954 §5, as Postfix's smtp client
    // sends it when it relays through an authenticated submission server.
    c.send(b"MAIL FROM:<alice@client.example> AUTH=<>\r\nRCPT TO:<far@elsewhere.example>\r\nDATA\r\nSubject: relayed\r\n\r\nby AUTH\r\n.\r\nQUIT\r\n");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(354, "");
    c.expect(250, "2.0.0 Ok: queued as");
    c.expect(221, "");

    // LOGIN, step by step.
    let mut c = Client::connect(submission);
    c.expect(220, "");
    c.send(b"EHLO client.example\r\nSTARTTLS\r\n");
    c.expect(250, "");
    c.expect(220, "2.0.0");
    c.start_tls(der);
    c.send(b"EHLO client.example\r\nAUTH LOGIN\r\n");
    c.expect(250, "");
    assert_eq!(c.expect(334, ""), "334 VXNlcm5hbWU6\r\n");
    c.send(format!("{}\r\n", b64(b"alice")).as_bytes());
    assert_eq!(c.expect(334, ""), "334 UGFzc3dvcmQ6\r\n");
    c.send(format!("{}\r\n", b64(b"s3cret pass")).as_bytes());
    c.expect(235, "2.7.0");
    c.send(b"MAIL FROM:<alice@client.example>\r\nRCPT TO:<other@elsewhere.example>\r\nQUIT\r\n");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(221, "");

    let queued = smtpd.incoming();
    assert_eq!(queued.len(), 1);
    let (info, bytes) = skein_spool::read_message(&queued[0]).expect("message");
    assert_eq!(info.envelope.recipients[0].address, "far@elsewhere.example");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains(" with ESMTPSA id "), "{text}");
}

#[test]
fn base64_helper_is_right() {
    assert_eq!(b64(b"\0alice\0pw"), "AGFsaWNlAHB3");
    assert_eq!(b64(b"alice"), "YWxpY2U=");
    assert_eq!(b64(b"s3cret pass"), "czNjcmV0IHBhc3M=");
}
