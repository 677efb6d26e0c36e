//! Relay policy: a client outside `smtpd.relay_networks` may send to local
//! and relay domains only; anything else is refused 554 5.7.1.

mod smtpd_support;

use smtpd_support::Smtpd;

#[test]
fn relay_refused_outside_relay_networks() {
    // 127.0.0.1 is not in these networks: this client is "the internet".
    let smtpd = Smtpd::start(
        "relay_networks = [\"192.0.2.0/24\"]\nrelay_domains = [\"relayed.example\"]",
        "[router]\nlocal_domains = [\"localhost\", \"mail.example\"]\n",
    );
    let mut c = smtpd.client();
    c.send(b"EHLO outsider.example\r\nMAIL FROM:<spammer@outsider.example>\r\n");
    c.expect(250, "");
    c.expect(250, "2.1.0");
    let cases: &[(&str, u16, &str)] = &[
        ("victim@elsewhere.example", 554, "5.7.1"),
        ("joe@mail.example", 250, "2.1.5"),
        ("joe@MAIL.EXAMPLE", 250, "2.1.5"),
        ("joe@localhost", 250, "2.1.5"),
        ("joe@test.example", 250, "2.1.5"), // the hostname
        ("joe@relayed.example", 250, "2.1.5"),
        ("joe@sub.relayed.example", 554, "5.7.1"),
        ("joe@mail.example.evil.example", 554, "5.7.1"),
        ("joe@[127.0.0.1]", 554, "5.7.1"),
        ("\"joe@mail.example\"@elsewhere.example", 554, "5.7.1"),
        ("postmaster", 250, "2.1.5"),
    ];
    for (rcpt, code, enhanced) in cases {
        c.send(format!("RCPT TO:<{rcpt}>\r\n").as_bytes());
        let text = c.expect(*code, enhanced);
        if *code == 554 {
            assert!(text.contains("Relay access denied"), "{text}");
        }
    }
    c.send(b"DATA\r\nSubject: x\r\n\r\nx\r\n.\r\nQUIT\r\n");
    c.expect(354, "");
    c.expect(250, "2.0.0");
    c.expect(221, "");
    let files = smtpd.incoming();
    assert_eq!(files.len(), 1);
    let (info, _) = skein_spool::read_message(&files[0]).expect("message file");
    let rcpts: Vec<&str> = info
        .envelope
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(
        rcpts,
        [
            "joe@mail.example",
            "joe@MAIL.EXAMPLE",
            "joe@localhost",
            "joe@test.example",
            "joe@relayed.example",
            "postmaster@test.example"
        ]
    );
}

#[test]
fn relay_allowed_from_relay_networks() {
    // The default relay_networks hold loopback.
    let smtpd = Smtpd::start("", "");
    let mut c = smtpd.client();
    c.send(b"EHLO insider.example\r\nMAIL FROM:<a@insider.example>\r\nRCPT TO:<b@elsewhere.example>\r\nRSET\r\n");
    c.expect(250, "");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(250, "");
    // AUTH= belongs to the AUTH extension, which port 25 does not offer.
    c.send(b"MAIL FROM:<a@insider.example> AUTH=<>\r\nQUIT\r\n");
    c.expect(555, "5.5.4");
    c.expect(221, "");
}
